"""Peak resident memory (RSS) of one piece of work, measured in a fresh child process.

The child runs setup(*args) (load a model, build a batch; not measured) and gets back a callable
`step`. Then it returns its freed memory to the kernel (gc, malloc_trim), reads VmRSS from
/proc/self/status, resets the high-water mark VmHWM by writing "5" to /proc/self/clear_refs, runs
step() once and reads VmHWM: the step's peak RSS is VmHWM - VmRSS before it. A fresh process is what
makes the number honest: in a long-lived one, malloc hands the step pages that earlier work freed
but kept, and those never show up as new resident memory.

Where clear_refs cannot be written (old kernels, restricted /proc) the child falls back to
getrusage's ru_maxrss, the process's lifetime peak: then loading counts too if it peaked higher, and
the result says which way it was measured. Only this module's stdlib imports load before setup runs.
"""
from __future__ import annotations

import gc
import multiprocessing
import resource
from collections.abc import Callable

__all__ = ["step_peak_rss"]


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])  # "VmRSS:   123456 kB"
    raise OSError(f"/proc/self/status has no {field} line")


def _trim() -> None:
    """Give freed heap pages back to the kernel (glibc), so the step must fault fresh pages in."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim, the measurement stays valid
        pass


def _reset_peak() -> bool:
    """True when the kernel took the reset (one that does not know "5" rejects the write)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # 5: reset the peak RSS (VmHWM) to the current RSS
        return True
    except OSError:
        return False


def _child(setup: Callable, args: tuple) -> dict:
    """Runs in the fresh process: setup, then the measured step. Returns MiB and how it was measured."""
    step = setup(*args)
    _trim()
    before = _status_kib("VmRSS")
    if _reset_peak():
        step()
        peak, how = _status_kib("VmHWM"), "VmHWM after clear_refs"
    else:
        step()
        peak, how = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss (process lifetime peak)"
    return {"mib": max(0, peak - before) / 1024, "how": how}


def step_peak_rss(setup: Callable, *args) -> dict:
    """{"mib": peak RSS of setup(*args)() above the RSS before it, "how": the counter used}, in a fresh
    spawned process. setup must be a module-level function (the child imports it by name) and its
    arguments picklable; its return value is the zero-argument step to measure."""
    ctx = multiprocessing.get_context("spawn")  # never fork: a forked child inherits the parent's heap
    with ctx.Pool(1, maxtasksperchild=1) as pool:
        return pool.apply(_child, (setup, args))
