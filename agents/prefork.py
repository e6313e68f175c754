"""Agent processes forked from a warm parent instead of started cold.

Every agent actor imports torch, transformers and peft before it can load a model: about 7 CPU
seconds per process on a laptop core, more than a tiny agent's whole training. A run with many
small agents (sixteen teachers on two cores, a sweep's trials) spends most of its CPU there.

This module is a Ray `py_executable` (`runtime_env={"py_executable": command()}`): Ray starts it
instead of `python` with the worker's arguments. It hands them to a *zygote* on the same node, one
process that has imported the heavy modules once, which forks a child that runs Ray's own worker
entry point (`default_worker.py`) with this process's arguments, environment, working directory
and standard streams. The child imports nothing it does not already hold; its pages are shared
copy-on-write with the zygote.

The zygote is keyed by the worker environment (a new environment gets its own zygote, so an
import-time setting such as `HF_HUB_OFFLINE` is always the worker's own), lives in its own session
and ends with the node's raylet. This process stays as the worker's stand-in for Ray: signals sent
to it reach the child, its exit status is the child's, and when it is killed the child dies too.
Anything that goes wrong before the child runs (no zygote, a zygote that cannot import) falls back
to exec'ing the plain interpreter, so a worker always starts.
"""
from __future__ import annotations

import array
import atexit
import hashlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time

# what a zygote imports before it forks: everything an agent actor imports that costs time, except
# Ray. Ray's C++ library seeds its random-ID generator once per process, on first use: children
# forked after it was seeded made the same "random" object ids (two workers starting together then
# collided in their object-store warm-up and one aborted). Each child imports Ray itself (about
# 0.3 CPU s) and seeds its own; `serve` refuses to fork from a zygote that has loaded it.
WARM_MODULES = ("torch", "transformers", "peft", "agents.agent", "agents.reward_model")
NOT_PRELOADED = "ray._raylet"
# differ between workers that can share one zygote (each child gets its own values back). Not the
# job id: a zygote shared by two jobs gave the second job's workers the first job's id (Ray then
# ends them as workers of a finished job), so each job has its own zygote
NOT_KEYED = ("W2S_PREFORK_READY_S",)
# a zygote with no worker alive and no request for this long ends: its job may be over
IDLE_S = float(os.environ.get("W2S_PREFORK_IDLE_S", "120"))
# how long a worker waits for its zygote to be ready (the first one waits for its imports) before it
# starts the plain way: inside the time Ray gives a worker to register (60 s by default), with time
# left for the plain start
READY_S = float(os.environ.get("W2S_PREFORK_READY_S", "40"))
LEN = struct.Struct("!I")


ZYGOTE_ENV = "W2S_PREFORK_ZYGOTE"  # set in a forked worker: its zygote's pid


def forked_from_zygote() -> bool:
    """Whether this process is a worker forked from a zygote (else it was started the plain way)."""
    return os.environ.get(ZYGOTE_ENV) == str(os.getppid())


def command() -> str:
    """The `py_executable` that starts agent workers through a zygote (this interpreter)."""
    return f"{sys.executable} -m agents.prefork"


def zygote_address(env: dict[str, str]) -> str:
    """An abstract unix socket name (no file to clean up, no path length limit) unique to this
    interpreter, working directory, node (its raylet's pid is in the environment), job and environment."""
    shared = {k: v for k, v in env.items() if k not in NOT_KEYED}
    digest = hashlib.sha256(json.dumps([sys.executable, os.getcwd(), sorted(shared.items())]).encode()).hexdigest()[:24]
    return f"\0w2s-prefork-{digest}"


def _send(sock: socket.socket, payload: dict, fds: list[int] = ()) -> None:
    data = json.dumps(payload).encode()
    msg = LEN.pack(len(data)) + data
    if fds:
        sock.sendmsg([msg], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        sock.sendall(msg)


def _recv(sock: socket.socket, with_fds: int = 0) -> tuple[dict | None, list[int]]:
    """One message (None when the peer closed) and any descriptors that came with it."""
    fds: list[int] = []
    head = b""
    while len(head) < LEN.size:
        if with_fds:
            chunk, ancdata, _, _ = sock.recvmsg(LEN.size - len(head), socket.CMSG_SPACE(with_fds * 4))
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.extend(array.array("i", payload[: len(payload) - len(payload) % 4]))
        else:
            chunk = sock.recv(LEN.size - len(head))
        if not chunk:
            return None, fds
        head += chunk
    (size,) = LEN.unpack(head)
    body = b""
    while len(body) < size:
        chunk = sock.recv(size - len(body))
        if not chunk:
            return None, fds
        body += chunk
    return json.loads(body), fds


# ---------------------------------------------------------------- the worker's stand-in (client)
def _exec_plain(argv: list[str]) -> None:
    os.execv(sys.executable, [sys.executable, *argv])


def _start_zygote(address: str, argv: list[str]) -> None:
    """Start a zygote for this address (several workers may race: all but one find the address
    taken and exit at once). Its log goes next to Ray's own logs of this session."""
    log_path = os.devnull
    options = dict(a.split("=", 1) for a in argv if a.startswith("--") and "=" in a)
    if options.get("--temp-dir") and options.get("--session-name"):
        logs = os.path.join(options["--temp-dir"], options["--session-name"], "logs")
        if os.path.isdir(logs):
            log_path = os.path.join(logs, f"w2s_prefork_{os.getpid()}.log")
    with open(log_path, "ab") as log:
        subprocess.Popen([sys.executable, "-m", "agents.prefork", "--zygote", address[1:]], stdin=subprocess.DEVNULL,
                         stdout=log, stderr=log, start_new_session=True, close_fds=True)


def _connect(address: str, argv: list[str]) -> socket.socket | None:
    deadline = time.monotonic() + 5  # refused only until a zygote has bound its address: at once
    started = False
    while time.monotonic() < deadline:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(address)
            return sock
        except (ConnectionRefusedError, FileNotFoundError):
            sock.close()
            if not started:
                _start_zygote(address, argv)
                started = True
            time.sleep(0.05)
        except OSError:  # no abstract unix sockets on this system: the plain way
            sock.close()
            return None
    return None


def run_worker(argv: list[str]) -> None:
    """Ask this node's zygote for a worker process running `argv`; stand in for it until it ends."""
    env = dict(os.environ)
    if not env.get("RAY_RAYLET_PID"):  # a zygote ends with its node's raylet: without one, none is started
        _exec_plain(argv)
    address = zygote_address(env)
    sock = _connect(address, argv)
    if sock is None:
        _exec_plain(argv)
    try:
        # two steps, so that a worker that gave up waiting is never forked as well: the zygote
        # forks only after this process has said "go", and it says so only while it still waits
        sock.settimeout(READY_S)
        _send(sock, {"argv": argv, "env": env, "cwd": os.getcwd(), "client": os.getpid()}, [0, 1, 2])
        ready, _ = _recv(sock)
        if ready and ready.get("ready"):
            sock.settimeout(None)
            _send(sock, {"go": True})
            answer, _ = _recv(sock)
        else:
            answer = None
    except OSError:  # no answer in time, or the zygote went away
        answer = None
    if not answer or "pid" not in answer:
        sock.close()
        _exec_plain(argv)  # this worker starts the plain way
    child = answer["pid"]

    def forward(signum, _frame):
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, forward)
    sock.settimeout(None)
    status, _ = _recv(sock)  # (a signal forwarded meanwhile does not interrupt it: PEP 475)
    if status is None:  # the zygote went away: wait for the child itself, whose exit code it kept
        wait_until_gone(child)
        status = {"code": 1}
    os._exit(status["code"])


def wait_until_gone(pid: int) -> None:
    """Block until a process that need not be our child has ended (its pidfd, else by polling)."""
    try:
        fd = os.pidfd_open(pid)
    except (OSError, AttributeError):
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.5)
    select.select([fd], [], [])


# ---------------------------------------------------------------- the zygote
def _watch_parent(client: int) -> None:
    """In the child: die with the stand-in Ray started (Ray may SIGKILL it, which cannot be forwarded)."""
    import threading

    def watch():
        wait_until_gone(client)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="w2s-prefork-parent", daemon=True).start()


def _fresh_generators() -> None:
    """Fresh random generators, as a plain process starts with: torch's default generator and numpy's
    global one from new entropy (Python's `random` reseeds itself on fork). Without this every child
    would continue the zygote's streams from the same point. (Agents seed what their results depend on.)"""
    if "torch" in sys.modules:
        sys.modules["torch"].seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()


def _become_worker(request: dict, fds: list[int]) -> None:
    """In the forked child: take the stand-in's streams, environment and arguments, run Ray's worker."""
    import runpy

    os.setsid()  # its own process group: Ray signalling it never reaches the zygote or its siblings
    for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    for target, fd in enumerate(fds[:3]):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdout = open(1, "w", closefd=False)
    sys.stderr = open(2, "w", closefd=False)
    os.environ.clear()
    os.environ.update(request["env"], **{ZYGOTE_ENV: str(os.getppid())})
    os.chdir(request["cwd"])
    _fresh_generators()
    sys.argv = list(request["argv"])
    sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))
    _watch_parent(request["client"])
    code = 0
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - a worker's crash, reported like the interpreter would
        import traceback

        traceback.print_exc()
        code = 1
    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def serve(address: str) -> None:
    """Bind the address first (a second zygote for it exits here), import, then fork on request."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(address)
    except OSError:
        return  # another zygote holds it
    listener.listen(64)  # workers connecting while we import wait in the backlog
    raylet = int(os.environ.get("RAY_RAYLET_PID", "0") or 0)
    started = time.monotonic()
    import importlib

    for name in WARM_MODULES:
        importlib.import_module(name)
    if NOT_PRELOADED in sys.modules:  # its children would share one random-ID stream: workers start plain
        print(f"zygote {os.getpid()}: {NOT_PRELOADED} was imported with {WARM_MODULES}; not forking", flush=True)
        return
    print(f"zygote {os.getpid()} ready in {time.monotonic() - started:.1f}s", flush=True)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    watched = [listener, wake_r]
    if raylet:
        try:
            watched.append(os.pidfd_open(raylet))
        except OSError:
            pass
    waiting: dict[int, socket.socket] = {}  # child pid -> its stand-in's connection
    last_active = time.monotonic()
    while True:
        try:
            ready, _, _ = select.select(watched, [], [], IDLE_S)
        except InterruptedError:
            continue
        if not ready and not waiting and time.monotonic() - last_active >= IDLE_S:
            return  # nothing of this job runs here any more: a later worker starts a new zygote
        last_active = time.monotonic()
        if len(watched) > 2 and watched[2] in ready:
            return  # the raylet ended: so does this node's zygote
        if wake_r in ready:
            os.read(wake_r, 4096)
            while True:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                conn = waiting.pop(pid, None)
                if conn is not None:
                    try:
                        _send(conn, {"code": os.waitstatus_to_exitcode(status) % 256})
                    except OSError:
                        pass
                    conn.close()
        if listener in ready:
            conn, _ = listener.accept()
            request, fds, go = None, [], None
            try:
                conn.settimeout(10)
                request, fds = _recv(conn, with_fds=3)
                if request is not None and len(fds) == 3:
                    _send(conn, {"ready": True})
                    go, _ = _recv(conn)
            except OSError:
                pass
            if not go:  # a worker that gave up waiting (it started the plain way) or a broken request
                for fd in fds:
                    os.close(fd)
                conn.close()
                continue
            pid = os.fork()
            if pid == 0:
                listener.close()
                conn.close()
                for fd in watched[1:]:
                    if isinstance(fd, int):
                        os.close(fd)
                os.close(wake_w)
                _become_worker(request, fds)
            for fd in fds:
                os.close(fd)
            try:
                _send(conn, {"pid": pid})
                waiting[pid] = conn
            except OSError:
                conn.close()


def main(argv: list[str]) -> None:
    if argv[:1] == ["--zygote"]:
        serve("\0" + argv[1])
        return
    run_worker(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
