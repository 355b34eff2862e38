"""The checker's side of isolation.py: what a submission may touch, a pids cgroup for it, and the
sweep that kills whatever it leaves behind.

The checker is a child subreaper, so a daemon that double-forks and calls setsid is re-parented to
it rather than to init; sweep() kills every such orphan (known by no_new_privs, which Landlock needs
and no process can unset) with all its descendants after each case, and the worker's cgroup and
whole tree when the worker stops. Workers still running (LIVE) are never taken.
"""
from __future__ import annotations

import os
import signal
import sys
import threading

from triptych.crosscheck.sandbox import isolation
from triptych.crosscheck.sandbox.isolation import MARK, PROCESS_BUDGET

_PR_SET_CHILD_SUBREAPER = 36

LIVE: set = set()  # pids of running workers: never swept as someone's leftovers
LOCK = threading.Lock()
_SUBREAPER: list = []
_PROBES: dict = {}


def plan(path: str, root: str, whole_folder: bool, scratch: str, cgroup: str | None, inputs: str | None = None) -> dict:
    """What the child may touch: its scratch folder; the folder of its inputs, read only; the
    submission's package or project folder (whole_folder) or else its file and the helpers beside it
    that it imports, never the class folder it sits in, nor the home folder."""
    helpers = {} if whole_folder else helper_modules(path)
    readable = ([root] if whole_folder else [path, *(os.path.dirname(p) if p.endswith("__init__.py") else p
                                                     for p in helpers.values())]) + ([inputs] if inputs else [])
    protect = [os.path.dirname(os.path.abspath(root if whole_folder else path)), os.path.expanduser("~")]
    return {"scratch": scratch, "readable": readable, "protect": protect, "cgroup": cgroup, "helpers": helpers}


def helper_modules(path: str) -> dict[str, str]:
    """The modules and packages beside a lone file that it imports (`from utils import scale`) and
    that answer no exercise themselves: its author's helpers, readable by the child. A neighbour
    that defines an exercise name is another submission, and stays out of reach even when imported."""
    import ast

    from triptych.crosscheck import exercises
    from triptych.crosscheck.sandbox import loader

    folder = os.path.dirname(os.path.abspath(path))
    try:
        tree = ast.parse(loader.read_source(path)[0])
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return {}
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and not n.level}
    answers = {ex.defines for ex in exercises.all_exercises()}
    found = {}
    for name in sorted(names):
        for candidate in (os.path.join(folder, name + ".py"), os.path.join(folder, name, "__init__.py")):
            files = [candidate] if not candidate.endswith("__init__.py") else [
                os.path.join(here, f) for here, _, fs in os.walk(os.path.dirname(candidate)) for f in fs
                if f.endswith(".py")]
            if os.path.isfile(candidate) and all(_defines(f) is not None and not _defines(f) & answers for f in files):
                found[name] = candidate
    return found


def _defines(path: str) -> set | None:
    """Top-level names a file defines; None where it cannot be parsed (never taken for a helper)."""
    import ast
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError):
        return None
    return {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))} | {
        t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}


def become_subreaper() -> bool:
    """Orphans of the checker's descendants (a setsid'd daemon) come back to it, not to init."""
    if not _SUBREAPER:
        ok = sys.platform.startswith("linux") and isolation.load_libc().prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
        _SUBREAPER.append(ok)
    return _SUBREAPER[0]


def _pids_hierarchy() -> str | None:
    """The folder of this process's cgroup in the pids hierarchy (cgroup v1) or the unified one (v2)."""
    try:
        with open("/proc/self/cgroup") as f:
            mine = dict((line.split(":", 2)[1], line.split(":", 2)[2].strip()) for line in f if line.count(":") >= 2)
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split() for line in f]
    except OSError:
        return None
    for fields in mounts:
        tail = fields[fields.index("-") + 1:] if "-" in fields else []
        if len(tail) < 3:
            continue
        v1 = tail[0] == "cgroup" and "pids" in tail[2].split(",")
        if v1 or (tail[0] == "cgroup2" and "" in mine):
            inner = mine.get("pids" if v1 else "", "/")
            return os.path.join(fields[4], os.path.relpath(inner, fields[3]))
    return None


def make_cgroup() -> str | None:
    """A fresh pids cgroup with a ceiling, where this user may make one (root, a delegated cgroup)."""
    base = _pids_hierarchy()
    if base is None or not os.access(base, os.W_OK):
        return None
    with LOCK:
        _PROBES["cgroups"] = _PROBES.get("cgroups", 0) + 1
        path = os.path.join(base, f"triptych-check-{os.getpid()}-{_PROBES['cgroups']}")
    try:
        os.mkdir(path)
        with open(os.path.join(path, "pids.max"), "w") as f:
            f.write(str(PROCESS_BUDGET))
        return path
    except OSError:
        remove_cgroup(path)
        return None


def remove_cgroup(path: str | None) -> None:
    if path:
        try:
            os.rmdir(path)
        except OSError:
            pass


def _kids(pid: int) -> set:
    found = set()
    for tid in isolation.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found.update(int(x) for x in f.read().split())
        except (OSError, ValueError):
            pass
    return found


def _sandboxed(pid: int) -> bool:
    """no_new_privs (set before Landlock, never unset, inherited by every descendant), unless the
    checker has it too; then the environment mark the child started with."""
    def nnp(p):
        try:
            with open(f"/proc/{p}/status") as f:
                return any(line.split() == ["NoNewPrivs:", "1"] for line in f)
        except OSError:
            return False
    if not nnp("self"):
        return nnp(pid)
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return (MARK + "=1").encode() in f.read().split(b"\0")
    except OSError:
        return False


def _cgroup_pids(cgroup: str | None) -> set:
    try:
        with open(os.path.join(cgroup, "cgroup.procs")) as f:
            return {int(x) for x in f.read().split()}
    except (OSError, TypeError, ValueError):
        return set()


def needs_watch(cgroup: str | None) -> bool:
    """No ceiling from the kernel: no pids cgroup, and root, whom RLIMIT_NPROC does not bind."""
    return cgroup is None and sys.platform.startswith("linux") and os.geteuid() == 0


def count(pid: int) -> int:
    """The worker's processes: its tree, and the trees of sandboxed orphans re-parented to us
    (counted for every worker at once: a daemon's owner is not known)."""
    with LOCK:
        keep = set(LIVE)
        todo = [pid] + [p for p in _kids(os.getpid()) if p not in keep and _sandboxed(p)]
    seen = set(todo)
    while todo:
        for child in _kids(todo.pop()) - seen:
            seen.add(child)
            todo.append(child)
    return len(seen)


def sweep(cgroup: str | None = None) -> int:
    """Kill what a submission left behind: the processes of its cgroup, and every sandboxed process
    re-parented to the checker (a daemon, the children of a killed worker) with all its descendants.
    Running workers are spared. Returns how many were killed."""
    if not sys.platform.startswith("linux"):
        return 0
    me, killed = os.getpid(), set()
    for _ in range(1000):  # a fork bomb refills between rounds; the process ceiling makes it end
        with LOCK:  # a worker being started (runner.py holds the lock around Popen) is never taken
            keep = set(LIVE) | {me}
            mine = _kids(me)
            victims = {p for p in mine if p not in keep and (p in killed or _sandboxed(p))}
        victims |= _cgroup_pids(cgroup) - keep
        todo = list(victims)
        while todo:
            for child in _kids(todo.pop()) - keep - victims:
                victims.add(child)
                todo.append(child)
        if not victims:
            break
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for pid in victims & mine:
            try:
                os.waitpid(pid, 0)
            except OSError:
                pass
        killed |= victims
    return len(killed)
