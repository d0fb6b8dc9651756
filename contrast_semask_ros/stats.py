"""Counters, latency windows and the frame rate behind the node's /diagnostics. ROS-free."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from typing import TYPE_CHECKING

import numpy as np

from contrast_semask_ros.keyframes import MISS_NOT_KEYFRAME

if TYPE_CHECKING:  # annotations only: stats stays importable on its own
    from contrast_semask_ros.keyframes import OdometryUpdate
    from contrast_semask_ros.pipeline import FrameResult, PatchResult

# counters of bad input: /diagnostics warns while any is non-zero (summary)
BAD_INPUTS = ('frames_rejected', 'frames_too_large', 'frame_errors', 'patches_rejected',
              'odometry_rejected')


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

    def gauge_max(self, key: str, value: float) -> None:
        """A running total reported by someone else (e.g. DDS's lost-sample count): kept as
        the largest value seen, so a stray smaller report never makes it go back."""
        with self._lock:
            self._gauges[key] = max(self._gauges.get(key, 0.0), float(value))

    def latency(self, stage: str, ms: float) -> None:
        with self._lock:
            self._add_latency(stage, ms)

    def frame_done(self, now_s: float | None = None) -> None:
        with self._lock:
            self._frame_times.append(time.monotonic() if now_s is None else now_s)

    def rate_hz(self) -> float:
        with self._lock:
            times = list(self._frame_times)
        if len(times) < 2 or times[-1] <= times[0]:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    def record_frame(self, result: FrameResult, decode_ms: float, publish_ms: float,
                     callback_to_publish_ms: float, stamp_age_s: float, bank_size: int,
                     now_s: float | None = None) -> None:
        """Everything one processed frame adds, under one lock: the pipeline's stage timings,
        decode and publish time, the receive-to-publish latency, the input stamp's age and the
        bank size; counts `frames_out`, `keyframes_kept` or `frames_not_kept` (processed but
        not buffered: not a keyframe, or too old) and the frame rate."""
        with self._lock:
            self._frame_times.append(time.monotonic() if now_s is None else now_s)
            self._counts['frames_out'] += 1
            self._counts['keyframes_kept' if result.keyframe else 'frames_not_kept'] += 1
            self._counts['size_changes'] += result.size_change is not None
            self._counts['stamp_jumps'] += result.stamp_jump is not None
            for stage, ms in result.timings._asdict().items():
                self._add_latency(stage, ms)
            self._add_latency('decode_ms', decode_ms)
            self._add_latency('publish_ms', publish_ms)
            self._add_latency('callback_to_publish_ms', callback_to_publish_ms)
            self._gauges['input_stamp_age_s'] = stamp_age_s
            self._gauges['bank_size'] = bank_size

    def record_patch(self, result: PatchResult, bank_size: int) -> None:
        """One patch message's outcome: `patches_<status>` (added, empty, miss, rejected; of the
        misses, `patches_not_keyframe` on a frame that was not kept as a keyframe), the bank's
        added/merged/evicted/too-small/invalid region counts, patch_ms, the bank size."""
        with self._lock:
            self._counts['patches_in'] += 1
            self._counts[f'patches_{result.status}'] += 1
            reason = result.reason or ''
            self._counts['patches_not_keyframe'] += reason.startswith(MISS_NOT_KEYFRAME)
            self._add_latency('patch_ms', result.elapsed_ms)
            added = result.added
            if added is not None:
                for key, n in (('prototypes_added', added.added),
                               ('prototypes_merged', added.merged),
                               ('prototypes_evicted', added.evicted),
                               ('patch_regions_too_small', added.skipped_small),
                               ('patch_regions_invalid', added.skipped_invalid)):
                    self._counts[key] += n
            self._gauges['bank_size'] = bank_size

    def record_odometry(self, update: OdometryUpdate) -> None:
        """One odometry message: `odometry_in`, and `odometry_jumps` or `odometry_rejected`."""
        with self._lock:
            self._counts['odometry_in'] += 1
            self._counts['odometry_jumps'] += update.jump
            self._counts['odometry_rejected'] += not update.accepted

    def _add_latency(self, stage: str, ms: float) -> None:
        """Caller holds the lock."""
        window = self._latency.get(stage)
        if window is None:
            window = self._latency[stage] = LatencyWindow(self._window)
        window.add(ms)

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

    def summary(self, bad_inputs: tuple[str, ...]) -> tuple[bool, str, dict[str, str]]:
        """(warn, one-line message, {key: value text}) for a DiagnosticStatus: warn when any of
        the `bad_inputs` counters is non-zero."""
        snapshot = self.snapshot()
        errors = int(sum(snapshot.get(k, 0) for k in bad_inputs))
        message = (f"{snapshot['rate_hz']:.1f} Hz, bank {int(snapshot.get('bank_size', 0))}"
                   + (f', {errors} bad inputs' if errors else ''))
        return errors > 0, message, {k: f'{v:.6g}' for k, v in snapshot.items()}
