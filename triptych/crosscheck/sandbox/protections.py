"""What isolation.py holds on this kernel: `check --isolation`'s table, the one line `check` prints
when a protection is off, and `--require-isolation`'s refusal.

The answer is measured, not assumed: a probe child raises the same walls as a worker, then tries
two of them (listing the home folder, a TCP connection to localhost) and reports what held. It runs
under the checker's own Python: the walls are the kernel's, whichever interpreter (--python) runs
the submissions, and that interpreter's runs stay the ones its user asked for.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from triptych.crosscheck.sandbox import containment, isolation

_CACHE: dict = {}
# (key in the probe's report, the protection in words)
PROTECTIONS = [
    ("filesystem write", "writes only in its own scratch folder"),
    ("filesystem read", "reads only its Python, system libraries and its own submission"),
    ("network", "no TCP, no IP"),
    ("processes", "a ceiling on its processes (fork bombs)"),
    ("leftovers", "every process it started is killed after each case, setsid'd daemons included"),
    ("signals", "cannot signal the checker or other submissions"),
    ("rlimits", "open files, file size, core dumps, address space (--memory-limit)"),
    ("capabilities", "a child of root gives up every capability"),
]


def probe() -> dict:
    """{protection: mechanism, or "off ..."} on this kernel, measured once per process."""
    python = sys.executable
    if python in _CACHE:
        return _CACHE[python]
    if not sys.platform.startswith("linux"):
        found = {key: "off (Linux only)" for key, _ in PROTECTIONS}
        found["rlimits"] = "address space (--memory-limit), where the system has setrlimit"
        return _CACHE.setdefault(python, found)
    cgroup = containment.make_cgroup()
    with tempfile.TemporaryDirectory(prefix="triptych-probe-") as scratch:
        plan = containment.plan(os.path.join(scratch, "probe.py"), scratch, False, scratch, cgroup)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env.update({isolation.ENV: json.dumps(plan), isolation.MARK: "1", "HOME": scratch, "TMPDIR": scratch})
        try:
            done = subprocess.run([python, "-I", isolation.__file__, "--probe"], capture_output=True, text=True,
                                  env=env, cwd=scratch, timeout=60)
            found = json.loads(done.stdout.strip().splitlines()[-1])
        except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
            found = {}
        finally:
            containment.remove_cgroup(cgroup)
    if found.get("processes", "").startswith("off") and containment.needs_watch(None):
        found["processes"] = (f"count-and-kill watch in the checker, 10 times a second, over {isolation.PROCESS_BUDGET} "
                              f"(no pids cgroup is writable, and uid 0 is exempt from RLIMIT_NPROC)")
    if os.geteuid() != 0:
        found["capabilities"] = "none to give up (not root)"
    found = {key: found.get(key, "off (the probe child did not report)") for key, _ in PROTECTIONS}
    found["leftovers"] = ("child subreaper + kill the submission's tree after each case"
                          if containment.become_subreaper() else "off (no child subreaper: only the process group is killed)")
    if found["rlimits"] != "off" and not found["rlimits"].startswith("off"):
        found["rlimits"] = f"{found['rlimits']}, as"
    return _CACHE.setdefault(python, found)


def is_off(state: str) -> bool:
    return state.startswith("off")


def off_line(found: dict) -> str | None:
    """One line naming each protection that is off, or None."""
    off = [f"{key} ({state[3:].strip(' ()') or 'not available'})" for key, state in found.items() if is_off(state)]
    return f"isolation: off here: {'; '.join(off)}" if off else None


def table(found: dict) -> list[tuple[str, str, str, str]]:
    """(protection, what it means, on/off, by what mechanism) rows."""
    return [(key, meaning, "off" if is_off(found[key]) else "on",
             found[key][3:].strip(" ()") if is_off(found[key]) else found[key]) for key, meaning in PROTECTIONS]
