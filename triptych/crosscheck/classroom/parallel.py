"""Submissions graded side by side: `check DIR -j N`.

Each submission already runs in a child process of its own (crosscheck.sandbox.runner), so the
work a thread of this process does is mostly waiting on its child; a ThreadPoolExecutor over the
submissions keeps N children busy at once. The references each case is compared with are shared
(crosscheck.reference_cache). Results come back in the submissions' order, whatever order they
finish in, so the report is the same for any N.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_jobs() -> int:
    """One submission per core the process may use (os.cpu_count() where affinity is unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class SharedProgress:
    """One progress line for many submissions graded at once: each submission reports (done,
    total) of its own cases; the line shows the sums. Safe to call from any thread."""

    def __init__(self, report: Callable[[int, int], None] | None):
        self._report = report
        self._lock = threading.Lock()
        self._each: dict[int, tuple[int, int]] = {}

    def for_item(self, index: int) -> Callable[[int, int], None]:
        def tick(done: int, total: int) -> None:
            with self._lock:
                self._each[index] = (done, total)
                if self._report is not None:
                    self._report(sum(d for d, _ in self._each.values()), sum(t for _, t in self._each.values()))
        return tick


def map_in_order(grade: Callable[[T, Callable[[int, int], None]], R], items: Sequence[T], jobs: int | None = None,
                 progress: Callable[[int, int], None] | None = None) -> list[R]:
    """[grade(item, tick) for item in items], up to `jobs` at a time (default: default_jobs()),
    in the items' order. tick(done, total) is the item's own progress; `progress` gets the sums.
    An exception in one item is raised here, once those running have finished; the items not
    started by then are not graded."""
    shared = SharedProgress(progress)
    jobs = default_jobs() if jobs is None else jobs
    if jobs < 1:
        raise ValueError(f"jobs: expected a positive number of submissions at a time, got {jobs}")
    if jobs == 1 or len(items) <= 1:
        return [grade(item, shared.for_item(i)) for i, item in enumerate(items)]
    pool = ThreadPoolExecutor(max_workers=min(jobs, len(items)), thread_name_prefix="check")
    futures = [pool.submit(grade, item, shared.for_item(i)) for i, item in enumerate(items)]
    try:
        return [f.result() for f in futures]
    finally:
        # After an exception or Ctrl-C, the submissions not started yet are dropped; those running
        # finish (their children have their own time limits).
        pool.shutdown(wait=True, cancel_futures=True)
