"""Peak resident memory of a process and its descendants, sampled from /proc."""

from __future__ import annotations

import threading
import time
from pathlib import Path


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _children(pid: int) -> list[int]:
    """Direct children, from /proc/<pid>/task/*/children (one small read per thread)."""
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                found += [int(p) for p in (task / "children").read_text().split()]
            except (OSError, ValueError):
                continue
    except OSError:
        pass
    return found


def descendants(pid: int) -> list[int]:
    seen, stack = [], [pid]
    while stack:
        current = stack.pop()
        for child in _children(current):
            if child not in seen:
                seen.append(child)
                stack.append(child)
    return seen


class RssSampler:
    """Samples VmRSS of ``pid`` alone and of ``pid`` with all its descendants every
    ``interval`` seconds in a thread, keeping the peaks and a time series."""

    def __init__(self, pid: int, interval: float = 0.1):
        self.pid = pid
        self.interval = interval
        self.peak_process = 0
        self.peak_tree = 0
        self.peak_tree_processes = 0
        self.samples = 0
        self.series: list[tuple[float, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._started = 0.0

    def _run(self) -> None:
        while not self._stop.is_set():
            own = rss_bytes(self.pid)
            children = descendants(self.pid)
            tree = own + sum(rss_bytes(p) for p in children)
            self.peak_process = max(self.peak_process, own)
            if tree > self.peak_tree:
                self.peak_tree, self.peak_tree_processes = tree, len(children) + 1
            self.samples += 1
            self.series.append((round(time.monotonic() - self._started, 2), own, tree))
            self._stop.wait(self.interval)

    def start(self) -> RssSampler:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
