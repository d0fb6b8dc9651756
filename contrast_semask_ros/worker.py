"""One worker thread that always processes the newest item: stale camera frames drop, not queue.

    worker = LatestWorker(process=handle_frame, on_error=log_it, name='cost_map_worker')
    dropped = worker.submit(msg)     # True: an item not yet taken was replaced (count it)
    worker.stop(timeout_s=30.0)      # refuse new items, let the current one finish, join

ROS-free: the node's image callback only submits, so inference never blocks its executor, and
tests drive this class without rclpy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


class LatestWorker:
    """A daemon thread calling `process(item, submitted_monotonic_s)` on the newest item;
    `on_error(item, exception)` for anything it raises (the thread keeps running)."""

    def __init__(self, process: Callable[[Any, float], None],
                 on_error: Callable[[Any, Exception], None], name: str = 'worker') -> None:
        self._process = process
        self._on_error = on_error
        self._wake = threading.Condition()
        self._latest: tuple[Any, float] | None = None
        self._accepting = True
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: Any) -> bool:
        """Hand over `item` (dropped silently after stop). Returns True when it replaced an
        item the worker had not taken yet (the caller counts that as a dropped frame)."""
        with self._wake:
            if not self._accepting:
                return False
            replaced = self._latest is not None
            self._latest = (item, time.monotonic())
            self._wake.notify()
        return replaced

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Refuse new items, forget a pending one, wait for the item in progress; True when the
        thread has ended (False: it was still busy after `timeout_s`)."""
        with self._wake:
            self._accepting = False
            self._latest = None
            self._wake.notify()
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._latest is None and self._accepting:
                    self._wake.wait()
                if not self._accepting:
                    return
                item, submitted = self._latest
                self._latest = None
            try:
                self._process(item, submitted)
            except Exception as err:  # noqa: BLE001 - one bad item must never stop the worker
                self._on_error(item, err)
