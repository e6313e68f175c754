"""Real servers for tests on 127.0.0.1, each started and ended by its own PID: ports, waiting, S3."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator


def reap_processes_under(root: str) -> int:
    """SIGKILL every process started from `root` (it has it in its environment, e.g. RAY_TMPDIR, or
    on its command line, e.g. --temp-dir); returns how many."""
    killed = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            marks = (proc / "environ").read_bytes() + (proc / "cmdline").read_bytes()
            if root.encode() in marks:
                os.kill(int(proc.name), signal.SIGKILL)
                killed += 1
        except (OSError, ProcessLookupError):
            continue
    return killed


def reap_stale_test_roots(prefix: str = "w2s-t-", tmp: str = "/tmp") -> list[str]:
    """Clear what killed test runs left behind: each run's Ray root (`{tmp}/{prefix}*`, see
    tests/conftest.py) holds the PID of the pytest that made it; where that process is gone, every
    process still running from that root (a Ray head, raylets, workers, servers) is killed and the
    folder removed. Returns the roots cleared."""
    cleared = []
    for root in Path(tmp).glob(f"{prefix}*"):
        try:
            owner = int((root / "owner.pid").read_text())
        except (OSError, ValueError):
            continue
        if Path(f"/proc/{owner}").exists():
            continue
        reap_processes_under(str(root))
        import shutil

        shutil.rmtree(root, ignore_errors=True)
        cleared.append(str(root))
    return cleared


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise TimeoutError(f"timed out waiting for {what}")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def s3_server(log_path: Path, bucket: str = "runs") -> Iterator[dict]:
    """moto's S3 server mode on a free port (as s3fs's own tests use it) with `bucket` created.
    Yields its endpoint, the standard AWS variables for it (`env`) and fsspec `options`."""
    port = free_port()
    log = open(log_path, "w")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: port_open(port), 60, "moto_server")
        import s3fs

        s3fs.S3FileSystem(endpoint_url=endpoint, key="testing", secret="testing").mkdir(bucket)
        yield {"endpoint": endpoint, "options": {"endpoint_url": endpoint, "key": "testing", "secret": "testing"},
               "env": {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # this server only
        proc.wait(timeout=30)
        log.close()
