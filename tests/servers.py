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
