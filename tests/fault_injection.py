"""Fault injection for whole potstill runs: a fork server whose children run the CLI with a
kill, a missing permission or a full disk at a chosen entry point (a `Point`). The matrix that
uses it, and why each mechanism, is tests/integration/test_fault_matrix.py.

    server = ForkServer(folder, "test_fault_matrix")   # that module's POINTS say where faults fire
    rc, stderr = server.run(case, ["run", "config.yaml"], in_process=True)   # warms every import
    rc, stderr = server.run(case, ["run", "config.yaml"], stage="curation", fault="kill")
"""
from __future__ import annotations

import ctypes
import functools
import importlib
import json
import logging
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
DISK = "8m"                # the full disk's size (the toy job needs well under 1 MB)
CHILD_TIMEOUT_S = 120
HARNESS_BROKE = 99         # a child's exit code when the harness itself failed


@dataclass(frozen=True)
class Point:
    """Where a fault fires: on entry to `at`, its `nth` call accepted by `when`, counted only
    once `arm` has been entered (a stage, not an earlier use of the same function)."""
    at: str                                   # "module:qualname"
    arm: str | None = None
    nth: int = 1
    when: Callable | None = None              # (args) -> bool
    target: Callable | None = None            # permission: (args) -> (path, new mode)


_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS, CLONE_NEWUSER = 0x00020000, 0x10000000
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    _check(_libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


def _own_mount_namespace() -> None:
    """A mount namespace of this process's own, in a user namespace of its own where it can
    (no privilege needed), else a plain one (root with CAP_SYS_ADMIN)."""
    uid, gid = os.getuid(), os.getgid()
    if _libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) == 0:
        Path("/proc/self/setgroups").write_text("deny")
        Path("/proc/self/uid_map").write_text(f"0 {uid} 1")
        Path("/proc/self/gid_map").write_text(f"0 {gid} 1")
    else:
        _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _mount("none", "/", None, MS_REC | MS_PRIVATE)  # nothing mounted here leaks out


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _obey_permission_bits() -> None:
    """Root ignores permission bits through CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH: drop both
    (a process may always give up its own capabilities)."""
    if os.geteuid() != 0:
        return
    header, data = _CapHeader(0x20080522, 0), (_CapData * 2)()  # _LINUX_CAPABILITY_VERSION_3
    _check(_libc.capget(ctypes.byref(header), data), "capget")
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        data[0].effective &= ~(1 << cap)
        data[0].permitted &= ~(1 << cap)
        data[0].inheritable &= ~(1 << cap)
    _check(_libc.capset(ctypes.byref(header), data), "capset")


def _fill(folder: Path) -> None:
    """Fill the filesystem under `folder` to the last byte."""
    with open(folder / ".filler", "wb", buffering=0) as fh:
        for chunk in (1 << 20, 4096, 1):
            try:
                while True:
                    fh.write(b"\0" * chunk)
            except OSError as err:
                assert err.errno == 28, err


def _resolve(point: str):
    module, _, qualname = point.partition(":")
    owner = importlib.import_module(module)
    *parents, name = qualname.split(".")
    for p in parents:
        owner = getattr(owner, p)
    return owner, name


def _install(point: Point, fire: Callable) -> None:
    """Wrap the entry point (and the arming one): `fire(args)` on the nth accepted call."""
    state = {"armed": point.arm is None, "calls": 0}
    if point.arm is not None:
        owner, name = _resolve(point.arm)
        arm_original = getattr(owner, name)

        @functools.wraps(arm_original)
        def arming(*args, **kwargs):
            state["armed"] = True
            return arm_original(*args, **kwargs)
        setattr(owner, name, arming)
    owner, name = _resolve(point.at)
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        if state["armed"] and (point.when is None or point.when(args)):
            state["calls"] += 1
            if state["calls"] == point.nth:
                fire(args)
        return original(*args, **kwargs)
    setattr(owner, name, wrapper)


def _copy_tree(src: Path, dst: Path) -> None:
    for p in src.iterdir():
        if p.is_dir() and not p.is_symlink():
            shutil.copytree(p, dst / p.name, symlinks=True)
        else:
            shutil.copy2(p, dst / p.name, follow_symlinks=False)


def _clear(folder: Path) -> None:
    for p in list(folder.iterdir()):
        if p.is_dir() and not p.is_symlink():
            for d, _, _ in os.walk(p):
                os.chmod(d, 0o755)
            shutil.rmtree(p)
        else:
            p.unlink()


def _child(req: dict, points: dict) -> int:
    """One run: the fault (if any) installed, then the CLI, stdout and stderr into the case."""
    from potstill.beam_pipelines.cli import main

    logging.root.handlers.clear()  # the CLI's own logging setup, as in a fresh process

    case = Path(req["case"])
    os.chdir(case)
    for fd, name in ((1, "stdout"), (2, "stderr")):
        out = os.open(case / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(out, fd)
        os.close(out)
    record = case / "fault.json"
    fault, real = req.get("fault"), None
    out_root = case / "out"
    if fault is not None:
        point = points[(req["stage"], fault)]
        if fault == "full disk":
            real = case / ".real-out"
            real.mkdir()
            out_root.mkdir(exist_ok=True)
            _own_mount_namespace()
            _mount(str(out_root), str(real), None, MS_BIND)
            _mount("tmpfs", str(out_root), "tmpfs", 0, f"size={DISK}")
            _copy_tree(real, out_root)
        if fault == "permission":
            _obey_permission_bits()

        def fire(args) -> None:
            info = {"stage": req["stage"], "fault": fault}
            if fault == "permission":
                path, mode = point.target(args)
                info.update(path=str(path), mode=stat.S_IMODE(os.stat(path).st_mode))
            record.write_text(json.dumps(info))
            if fault == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            elif fault == "permission":
                os.chmod(path, mode)
            else:
                _fill(out_root)
        _install(point, fire)
    try:
        rc = main(req["argv"])
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        if real is not None:  # the disk is freed: what the job left goes back to the real folder
            (out_root / ".filler").unlink(missing_ok=True)
            _clear(real)
            _copy_tree(out_root, real)
    return rc


def _probe() -> dict:
    """Which fault mechanisms work here (each tried in a child of its own)."""
    found = {}
    for name in ("permission", "full disk"):
        probe = Path(tempfile.mkdtemp(prefix="potstill-probe-"))
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
                if name == "permission":
                    locked = probe / "locked"
                    locked.write_text("x")
                    locked.chmod(0)
                    _obey_permission_bits()
                    try:
                        locked.read_text()
                    except PermissionError:
                        code = 0
                else:
                    _own_mount_namespace()
                    _mount("tmpfs", str(probe), "tmpfs", 0, "size=64k")
                    try:
                        (probe / "x").write_bytes(b"\0" * (1 << 17))
                    except OSError as err:
                        code = 0 if err.errno == 28 else 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        shutil.rmtree(probe, ignore_errors=True)
        found[name] = os.waitstatus_to_exitcode(status) == 0
    return found


def _fork(req: dict, points: dict) -> int:
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        rc = HARNESS_BROKE
        try:
            rc = _child(req, points)
        except BaseException:  # noqa: BLE001 - the harness itself broke: say so in its stderr
            traceback.print_exc()
            sys.stderr.flush()
        finally:
            os._exit(rc)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() - start > CHILD_TIMEOUT_S:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)


def serve(points_module: str) -> None:
    """The fork server: one JSON request a line on stdin, one JSON reply a line on stdout."""
    points = importlib.import_module(points_module).POINTS
    proto = os.fdopen(os.dup(1), "w")
    log = os.open(os.environ["POTSTILL_FAULT_LOG"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    for line in sys.stdin:
        req = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        if req.get("probe"):
            reply = _probe()
        elif req.get("in_process"):  # the baseline: it also warms every lazy import for the children
            saved, here = (os.dup(1), os.dup(2)), os.getcwd()
            reply = {"rc": _child(req, points)}
            for fd, copy in zip((1, 2), saved):
                os.dup2(copy, fd)
                os.close(copy)
            os.chdir(here)
        else:
            reply = {"rc": _fork(req, points)}
        proto.write(json.dumps(reply) + "\n")
        proto.flush()


class ForkServer:
    """The test's end: starts the server (`serve`), asks it for runs and probes."""

    def __init__(self, folder: Path, points_module: str, points_dir: Path):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
               "POTSTILL_FAULT_LOG": str(folder / "server.log"),
               "POTSTILL_EMBEDDING_CACHE": str(folder / "embedding-cache")}
        code = (f"import sys; sys.path[:0] = [{str(ROOT / 'tests')!r}, {str(points_dir)!r}]; "
                f"import fault_injection; fault_injection.serve({points_module!r})")
        self.proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def ask(self, req: dict, timeout: float = CHILD_TIMEOUT_S + 30) -> dict:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        assert line, "the fork server did not answer"
        return json.loads(line)

    def run(self, case: Path, argv: list[str], stage: str | None = None,
            fault: str | None = None, in_process: bool = False) -> tuple[int, str]:
        reply = self.ask({"case": str(case), "argv": argv, "stage": stage, "fault": fault,
                          "in_process": in_process})
        err = (case / "stderr").read_text()
        assert reply["rc"] != HARNESS_BROKE, err[-3000:]
        return reply["rc"], err

    def probe(self) -> dict:
        """{"permission": bool, "full disk": bool}: which mechanisms work here."""
        return self.ask({"probe": True})

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
