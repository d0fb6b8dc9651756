"""Counters, latency windows and the frame rate behind the node's /diagnostics. ROS-free."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque

import numpy as np


class LatencyWindow:
    """The last `size` samples of one stage, in milliseconds."""

    def __init__(self, size: int = 200) -> None:
        self._samples: deque[float] = deque(maxlen=size)

    def add(self, ms: float) -> None:
        self._samples.append(ms)

    def percentiles(self, *qs: float) -> tuple[float, ...]:
        """The q-th percentiles (NaN before any sample)."""
        if not self._samples:
            return tuple(float('nan') for _ in qs)
        return tuple(float(v) for v in np.percentile(np.fromiter(self._samples, float), qs))


class RuntimeStats:
    """Thread-safe counters, per-stage latency windows and the frame rate.

    `count('frames_in')`, `latency('infer_ms', 12.3)`, `snapshot()` -> flat {key: value} for
    a DiagnosticStatus (values as strings there) or a report.
    """

    def __init__(self, window: int = 200) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._latency: dict[str, LatencyWindow] = {}
        self._window = window
        self._frame_times: deque[float] = deque(maxlen=window)
        self._gauges: dict[str, float] = {}

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def gauge(self, key: str, value: float) -> None:
        with self._lock:
            self._gauges[key] = value

    def latency(self, stage: str, ms: float) -> None:
        with self._lock:
            self._latency.setdefault(stage, LatencyWindow(self._window)).add(ms)

    def frame_done(self, now_s: float | None = None) -> None:
        with self._lock:
            self._frame_times.append(time.monotonic() if now_s is None else now_s)

    def rate_hz(self) -> float:
        with self._lock:
            times = list(self._frame_times)
        if len(times) < 2 or times[-1] <= times[0]:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def snapshot(self) -> dict[str, float]:
        """Counters, gauges, the rate and each stage's median and p99 latency."""
        with self._lock:
            out: dict[str, float] = {k: float(v) for k, v in sorted(self._counts.items())}
            out.update(self._gauges)
            for stage, window in sorted(self._latency.items()):
                median, p99 = window.percentiles(50, 99)
                out[f'{stage} median'] = median
                out[f'{stage} p99'] = p99
        out['rate_hz'] = self.rate_hz()
        return out
