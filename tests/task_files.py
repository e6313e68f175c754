"""Fixture preference files in the real datasets' formats, written by tests (never downloaded)."""
from __future__ import annotations

import json
from pathlib import Path


def write_jsonl(path: Path, rows: list, blank_after: int | None = None) -> str:
    lines = [json.dumps(r) if not isinstance(r, str) else r for r in rows]
    if blank_after is not None:
        lines.insert(blank_after, "")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def write_compressed(path: Path, rows: list) -> str:
    """JSON lines compressed by the file's suffix (.gz, .bz2, .xz, .zst), as HH-RLHF ships them."""
    import bz2
    import gzip
    import lzma

    data = ("\n".join(json.dumps(r) if not isinstance(r, str) else r for r in rows) + "\n").encode()
    suffix = path.suffix
    if suffix == ".zst":
        import zstandard

        packed = zstandard.ZstdCompressor().compress(data)
    else:
        packed = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}[suffix](data)
    path.write_bytes(packed)
    return str(path)


def hh_row(i: int, turns: int = 1) -> dict:
    history = "".join(f"\n\nHuman: q{i}.{t}\n\nAssistant: a{i}.{t}" for t in range(turns - 1))
    prefix = f"{history}\n\nHuman: last {i}\n\nAssistant:"
    return {"chosen": f"{prefix} good {i}", "rejected": f"{prefix}  bad {i} \n"}


def pku_row(i: int, better=1, safer=0) -> dict:
    return {"prompt": f"prompt {i}", "response_0": f"r0 {i}", "response_1": f"r1 {i}",
            "better_response_id": better, "safer_response_id": safer,
            "is_response_0_safe": True, "is_response_1_safe": False}


def trl_row(i: int) -> dict:
    return {"prompt": f"p{i}", "chosen": f"yes {i}", "rejected": f"no {i}"}
