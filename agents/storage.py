"""Where a run's files live: a local path or any fsspec URI (s3://, gs://, file://, memory://).

Clusters whose nodes share no filesystem keep runs on an object store; every process that writes a
part of the run (each agent its own adapters, the orchestrator its state) writes it there itself.
A URI is never taken for a local path: `is_uri` decides once, and a URI whose filesystem is not
installed or cannot be reached is one `StorageError` line before any model loads.

The file helpers below take local paths too (fsspec's local filesystem), so a caller that may hold
either needs no branch of its own.

Storage options (e.g. `endpoint_url`, `key`, `secret` for S3) come from the run's config; S3's
standard AWS variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_DEFAULT_REGION) are read by botocore itself. Each process sets the run's options once
(`configure`), so callers pass plain strings.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from agents.errors import BadInput

_OPTIONS: dict[str, Any] = {}
# the fsspec package that provides each common protocol, named in the install hint
_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs", "abfss": "adlfs"}


class StorageError(BadInput, RuntimeError):
    """A storage URI that cannot be used; the message names the URI and why."""


def configure(options: dict[str, Any] | None) -> None:
    """Set this process's storage options (the run config's `storage_options`)."""
    _OPTIONS.clear()
    _OPTIONS.update(options or {})


def is_uri(path: str | os.PathLike) -> bool:
    """`s3://b/x`, `file:///x`, `memory://x` are URIs; `/x`, `runs/x`, `~/x` are local paths."""
    return "://" in str(path)


def is_local(path: str | os.PathLike) -> bool:
    """A local path, or a file:// URI (both reachable with plain file operations on this node)."""
    return not is_uri(path) or str(path).startswith("file://")


def local_path(path: str | os.PathLike) -> str:
    """The plain path of a local path or file:// URI."""
    text = str(path)
    return os.path.expanduser(text[len("file://"):] if text.startswith("file://") else text)


def join(base: str, *parts: str) -> str:
    """Join path parts with '/' for URIs (os.path.join for local paths)."""
    if not is_uri(base):
        return os.path.join(base, *parts)
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def filesystem(uri: str):
    """(fsspec filesystem, path inside it) for `uri`, with this process's options; one line on failure."""
    import fsspec

    protocol = uri.split("://", 1)[0] if is_uri(uri) else "file"
    try:
        fs, path = fsspec.core.url_to_fs(uri, **(_OPTIONS if protocol not in ("file", "memory") else {}))
    except ImportError:
        package = _PACKAGES.get(protocol, f"the fsspec implementation of {protocol}://")
        raise StorageError(f"{uri}: the {protocol}:// filesystem is not installed; pip install {package} "
                           "(or pip install 'w2s-ray[storage]' for S3)") from None
    except ValueError as exc:
        raise StorageError(f"{uri}: {exc}") from None
    return fs, path


def check_writable(uri: str) -> None:
    """Write and delete a probe object under `uri`: a missing bucket, an unreachable endpoint or
    missing credentials become one line now, not a failure after an hour of training."""
    if not is_uri(uri) or is_local(uri):
        return
    fs, path = filesystem(uri)
    probe = f"{path.rstrip('/')}/.w2s-write-probe"
    try:
        fs.pipe_file(probe, b"ok")
        fs.rm_file(probe)
    except Exception as exc:  # noqa: BLE001 - any backend error is the same answer: not usable
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StorageError(f"{uri}: cannot write there ({type(exc).__name__}: {reason})") from None


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


def read_text(uri: str) -> str:
    fs, path = filesystem(uri)
    with fs.open(path, "r") as fh:
        return fh.read()


def write_bytes(uri: str, data: bytes) -> None:
    """One object written whole (an object store's PUT is atomic: readers see all or nothing)."""
    fs, path = filesystem(uri)
    fs.pipe_file(path, data)


def write_json(uri: str, data: Any) -> None:
    write_bytes(uri, json.dumps(data, indent=2).encode())


def upload(local_dir: str, uri: str) -> None:
    """Copy a local directory's files to `uri` (same relative layout)."""
    fs, path = filesystem(uri)
    for folder, _, files in os.walk(local_dir):
        for name in files:
            source = os.path.join(folder, name)
            relative = os.path.relpath(source, local_dir).replace(os.sep, "/")
            inside(local_dir, relative, what=f"file {source!r} for {uri}")  # a link out of the staging folder is refused
            fs.put_file(source, f"{path.rstrip('/')}/{relative}")


def upload_file(local_file: str, uri: str) -> None:
    fs, path = filesystem(uri)
    fs.put_file(local_file, path)


def download(uri: str, local_dir: str, skip: tuple[str, ...] = ()) -> str:
    """Copy every file under `uri` into `local_dir` (same relative layout), except those whose
    relative path starts with one of `skip`; returns local_dir."""
    fs, path = filesystem(uri)
    root = path.rstrip("/")
    for remote in fs.find(root):
        relative = remote[len(root):].strip("/")
        if relative.startswith(skip):
            continue
        target = inside(local_dir, relative, what=f"object {remote!r} under {uri}")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        fs.get_file(remote, target)
    return local_dir


def inside(base: str, relative: str, what: str) -> str:
    """`base`/`relative` as a local path, refused (StorageError) unless it stays inside `base`: an
    object or config value named `../../x` must never write or read outside a run directory."""
    base_real = os.path.realpath(base)
    target = os.path.realpath(os.path.join(base_real, *relative.split("/")))
    if os.path.isabs(relative) or os.path.commonpath([base_real, target]) != base_real or target == base_real:
        raise StorageError(f"{what}: the path {relative!r} leads outside {base}; refused")
    return target


def remove(uri: str) -> None:
    """Delete exactly the files under `uri` (and then its folders), never a pattern: `fs.rm` expands
    `[`, `]`, `*`, `?` as globs, so `runs/exp[1]/round_0` would delete `runs/exp1/round_0` instead."""
    if is_local(uri):
        import shutil

        target = local_path(uri)
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target)
        elif os.path.lexists(target):
            os.remove(target)
        return
    fs, path = filesystem(uri)
    root = path.rstrip("/")
    if not fs.exists(root):
        return
    if fs.isfile(root):
        fs.rm_file(root)
        return
    for obj in fs.find(root):  # find lists what is there; it never expands patterns
        fs.rm_file(obj)
    for folder in sorted(fs.find(root, withdirs=True), key=len, reverse=True) + [root]:
        try:  # object stores have no folders left by now; pseudo-folders (memory://) go one by one
            if fs.isdir(folder):
                fs.rmdir(folder)
        except (OSError, NotImplementedError):
            pass


def listdir(uri: str) -> list[str]:
    """Names directly under `uri` ([] when it does not exist)."""
    fs, path = filesystem(uri)
    try:
        return sorted(entry.rstrip("/").rsplit("/", 1)[-1] for entry in fs.ls(path, detail=False))
    except FileNotFoundError:
        return []


def scratch_dir(prefix: str) -> str:
    """A new node-local temporary directory (for staging files on their way to or from a URI)."""
    return tempfile.mkdtemp(prefix=prefix)
