"""The parent's side of the sandbox: start the worker, send it one case at a time, and turn
whatever happens (an answer, an exception, a hang, a segfault, sys.exit, a runaway allocation)
into a plain reply dict. Nothing the child does can raise here.

A worker lives for one submission file, so the framework and the file are imported once, not per
case. A case that hangs or kills the process costs a restart for the cases after it.
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from triptych.crosscheck.sandbox import containment, isolation, loader

WORKER = Path(__file__).with_name("worker.py")
DEFAULT_TIMEOUT_S = 20.0
DEFAULT_MEMORY_BYTES = 4 * 1024**3
# Importing torch or JAX and the user's file can take several seconds on a loaded machine;
# the per-case limit starts only once the worker says it is ready.
LOAD_TIMEOUT_S = 60.0
_OUTPUT_KEEP = 4000  # characters of the user's own prints kept for the report


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration, ValueError):
        return 0


class Worker:
    """One child process running one user file. call() never raises for anything the child does."""

    def __init__(self, path: str, framework: str, timeout_s: float = DEFAULT_TIMEOUT_S,
                 memory_bytes: int = DEFAULT_MEMORY_BYTES, python: str | None = None, cwd: str | None = None,
                 isolate: bool = True):
        self.path, self.framework = os.path.abspath(path), framework
        self.timeout_s, self.memory_bytes = float(timeout_s), int(memory_bytes)
        # --python: the user's own interpreter (their torch, their packages); it needs only NumPy.
        self.python = python or sys.executable
        self.cwd = cwd or os.path.dirname(self.path)
        self.tmp = tempfile.TemporaryDirectory(prefix="triptych-check-")
        # in/: the cases' inputs, which the child may read; work/: its scratch folder and, isolated
        # (isolation.py, Linux), its cwd and the only folder it may write. The log of its prints stays
        # out of its reach, and so does every file this process writes: a symlink planted in work/
        # could otherwise turn our next write into a write anywhere.
        self.inbox, self.scratch = Path(self.tmp.name) / "in", Path(self.tmp.name) / "work"
        self.inbox.mkdir()
        self.scratch.mkdir()
        self.isolate = isolate and sys.platform.startswith("linux")
        self.cgroup: str | None = None
        self._next_count = 0.0
        self.proc: subprocess.Popen | None = None
        self.hello: dict | None = None
        self.case_fixes: list[str] = []  # modules found under a file name that differs in case
        self._n = 0

    # ------------------------------------------------------------ process management
    def start(self) -> dict:
        """Start the child and wait for its hello: {"ready": bool, "root", "skipped", "loaded", "error"?}."""
        self.close()
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        self._log = open(Path(self.tmp.name) / f"output-{self._n}.txt", "w+b")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON",))}
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1")
        cwd = self._isolation(env) if self.isolate else self.cwd
        try:
            with containment.LOCK:  # a sweep in another thread must not see this child before LIVE does
                proc = subprocess.Popen(
                    [self.python, "-I", str(WORKER), self.path, self.framework,
                     str(self.memory_bytes), str(req_r), str(rep_w)],
                    stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                    pass_fds=(req_r, rep_w), start_new_session=True, env=env, cwd=cwd,
                )
                containment.LIVE.add(proc.pid)
        except OSError as exc:  # the interpreter (--python) or the folder vanished since validation
            for fd in (req_r, req_w, rep_r, rep_w):
                os.close(fd)
            self._log.close()
            self._sweep()
            self.hello = {"ready": False, "error": {"type": "OSError", "message": str(exc), "frames": []}}
            return self.hello
        self.proc = proc
        os.close(req_r)
        os.close(rep_w)
        self._requests = os.fdopen(req_w, "w", encoding="utf-8")
        self._replies = rep_r
        self._buffer = b""
        hello = self._read(LOAD_TIMEOUT_S)
        if "died" in hello or "timeout" in hello:
            hello = {"ready": False, **hello}
        self.hello = hello
        return hello

    def close(self) -> None:
        if self.proc is None:
            return
        try:
            self._requests.write(json.dumps({"stop": True}) + "\n")
            self._requests.flush()
        except (OSError, ValueError):
            pass
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self._kill()
        for f in (self._requests,):
            try:
                f.close()
            except OSError:
                pass
        os.close(self._replies)
        self._log.close()
        with containment.LOCK:
            containment.LIVE.discard(self.proc.pid)
        self.proc = None
        self._sweep()

    def _isolation(self, env: dict) -> str:
        """The plan for the child's walls (isolation.py), in its environment; returns its cwd."""
        scratch = str(self.scratch)
        root, dotted, _ = loader.locate(self.path)
        whole = dotted is not None or loader.is_project(root)
        self.cgroup = containment.make_cgroup()
        containment.become_subreaper()
        plan = containment.plan(self.path, root, whole, scratch, self.cgroup, inputs=str(self.inbox))
        env[isolation.ENV] = json.dumps(plan)
        env[isolation.MARK] = "1"
        env.update(HOME=scratch, TMPDIR=scratch)
        return scratch

    def _over_budget(self) -> bool:
        """Where the kernel sets no ceiling on processes (root without a pids cgroup): count them,
        ten times a second."""
        if not (self.isolate and containment.needs_watch(self.cgroup)) or time.monotonic() < self._next_count:
            return False
        self._next_count = time.monotonic() + 0.1
        return containment.count(self.proc.pid) > isolation.PROCESS_BUDGET

    def _sweep(self) -> None:
        """Everything the submission started dies with its worker, a setsid'd daemon included."""
        if self.isolate:
            containment.sweep(self.cgroup)
            containment.remove_cgroup(self.cgroup)
            self.cgroup = None

    def _kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the whole group: threads and any children
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()

    def output(self) -> str:
        """What the user's code printed so far (last few thousand characters)."""
        try:
            self._log.flush()
            with open(self._log.name, "rb") as f:
                return f.read().decode("utf-8", "replace")[-_OUTPUT_KEEP:]
        except OSError:
            return ""

    def _read(self, timeout_s: float) -> dict:
        """One reply line, or {"timeout": s} / {"died": ...} / {"memory": bytes}."""
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                self._kill()
                return {"timeout": timeout_s}
            ready, _, _ = select.select([self._replies], [], [], min(left, 0.05))
            if not ready:
                # The address-space cap normally stops a runaway allocation inside the child; this
                # watch on resident memory is the second line (and the only one off Linux).
                if self.memory_bytes and _rss_bytes(self.proc.pid) > self.memory_bytes + (1 << 30):
                    self._kill()
                    return {"memory": self.memory_bytes}
                if self._over_budget():
                    self._kill()
                    return {"died": -9, "how": f"SIGKILL: more than {isolation.PROCESS_BUDGET} processes at once"}
                continue
            chunk = os.read(self._replies, 1 << 16)
            if not chunk:
                code = self.proc.wait()
                return {"died": code, "how": _signal_name(code) if code < 0 else f"exit code {code}"}
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            reply = json.loads(line)
            return reply if isinstance(reply, dict) else {"garbled": True}
        except ValueError:
            return {"garbled": True}

    # ------------------------------------------------------------ one case
    def call(self, target: dict, inputs: dict) -> dict:
        """Run target on inputs (NumPy arrays, dicts of arrays, JSON scalars) in the child.

        Returns {"ok": True, "outputs": [arrays or None], "types": [...], "tuple": bool,
        "inputs_after": {key: array}} or {"error": {...}} / {"timeout"} / {"died"} / {"memory"}
        / {"load_error": {...}}."""
        if self.proc is None or self.proc.poll() is not None:
            hello = self.start()
            if not hello.get("ready"):
                return {"load_error": hello}
        self._n += 1
        in_path, out_path = self.inbox / f"in-{self._n}.npz", self.scratch / f"out-{self._n}.npz"
        arrays, scalars = split_inputs(inputs)
        np.savez(in_path, **arrays)
        request = {"id": self._n, "target": target, "inputs": str(in_path), "scalars": scalars,
                   "framework": self.framework, "out": str(out_path)}
        try:
            self._requests.write(json.dumps(request) + "\n")
            self._requests.flush()
        except (OSError, ValueError):
            pass  # the child is gone; _read reports how
        reply = self._read(self.timeout_s)
        if self.isolate:
            containment.sweep()  # a daemon the case left behind (re-parented to us), not the worker's own children
        if reply.get("case_fixes"):
            self.case_fixes = reply["case_fixes"]
        if "timeout" in reply or "died" in reply or "memory" in reply or "garbled" in reply:
            if self.proc is not None and self.proc.poll() is None:
                self._kill()
            self.close()
            return reply
        if reply.get("error") or not reply.get("ok"):
            return {"error": reply.get("error") or {"type": "protocol", "message": "no answer"}}
        return read_outputs(out_path, reply)


def split_inputs(inputs: dict) -> tuple[dict[str, np.ndarray], dict]:
    """Arrays (dicts of arrays flattened to 'params/w_q') go to the npz; the rest must be JSON."""
    arrays, scalars = {}, {}
    for key, value in inputs.items():
        if isinstance(value, np.ndarray):
            arrays[key] = value
        elif isinstance(value, dict):
            for k, v in value.items():
                arrays[f"{key}/{k}"] = np.asarray(v)
        else:
            scalars[key] = value.item() if isinstance(value, np.generic) else value
    return arrays, scalars


def read_outputs(out_path: Path, reply: dict) -> dict:
    """Load the child's npz without pickle; a file we cannot read is a verdict, not a crash."""
    described = reply.get("outputs") or {}
    items = described.get("items", []) if isinstance(described, dict) else []
    try:
        # Not through a symlink the child put in its place: the file it wrote, or nothing.
        with os.fdopen(os.open(out_path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)), "rb") as f, \
                np.load(f, allow_pickle=False) as data:
            stored = {k: data[k] for k in data.files}
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the submission's problem
        return {"error": {"type": "unreadable output", "message": str(exc)[:200], "frames": []}}
    outputs = [stored.get(f"out_{i}") for i in range(len(items))]
    after = {k[3:]: v for k, v in stored.items() if k.startswith("in/")}
    return {"ok": True, "outputs": outputs, "types": [str(it.get("type")) for it in items],
            "tuple": bool(described.get("tuple")) if isinstance(described, dict) else False,
            "inputs_after": after}
