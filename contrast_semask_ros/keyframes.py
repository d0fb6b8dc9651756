"""Keyframes: which processed camera frames the cost node keeps in its frame buffer. ROS-free.

A patch cost arrives seconds after its image (a patch 3 m ahead at 1 m/s is 3 s old), so the
frame buffer must span seconds; keeping only frames the base moved between (like WVN's 0.2 m)
makes `buffer_frames` frames cover distance instead of a fraction of a second at 30 Hz. Every
frame is still processed (its cost image is published); only keyframes are buffered.

    selector = KeyframeSelector(distance_m=0.2, period_s=0.5)
    selector.add_odometry(stamp_ns, (x, y, z))     # the base position in the odom frame
    decision = selector.decide(frame_stamp_ns)     # keep it? (no state change)
    if decision.keep and frames.push(...):         # then tell it what the buffer did:
        selector.kept(decision)
    elif not decision.keep:
        selector.skipped(frame_stamp_ns)

Rules (`keyframe_distance_m` = distance_m, `keyframe_period_s` = period_s):

- both 0: every frame is a keyframe (the buffer holds the newest `buffer_frames` frames);
- distance_m > 0 with fresh odometry: a frame is a keyframe when the base moved at least
  distance_m (straight line) from where it was at the last keyframe; the first frame is one;
- period_s > 0, when the distance rule is off or odometry is not fresh: a frame is a keyframe
  when it is at least period_s after the last keyframe (or before it: a clock jump back);
- distance_m > 0, odometry not fresh and period_s 0: every frame (as with both 0), so the cost
  map keeps learning while odometry is missing; logged once when that starts.

Odometry is fresh when the latest message's stamp is within `ODOMETRY_TIMEOUT_S` of the frame's
stamp. The position used is the latest received when the frame is decided on, not interpolated
at the frame's stamp: odometry lags or leads the camera by a few ms to tens of ms, which at 1 m/s
moves a keyframe by a few cm; the error does not accumulate (each keyframe records the position
it was decided with). An odometry jump, a position change faster than `MAX_SPEED_MPS` (an
odometry reset, a relocalisation, a looped bag), is counted and restarts the distance rule: the
next frame is a keyframe.

Frames decided against are remembered (stamps only, within `remember_s` of the newest and at
most `REMEMBER_MAX` of them), so a patch cost for one can be told apart from an evicted frame
(`was_skipped`). Thread-safe: odometry arrives on another executor thread than the frames.
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
from collections.abc import Iterable
from typing import NamedTuple

from contrast_semask_ros.frames import as_stamp_ns

logger = logging.getLogger(__name__)

MAX_SPEED_MPS = 10.0  # faster odometry steps are jumps (resets, relocalisations)
MIN_STEP_S = 0.01  # steps closer in time (or back in time) are judged as if this far apart
ODOMETRY_TIMEOUT_S = 1.0  # odometry further than this from a frame's stamp is not fresh
REMEMBER_MAX = 4096  # skipped frame stamps remembered for the patch miss reason
DISTANCE_SLACK_M = 1e-6  # a keyframe distance reached up to float rounding counts as reached

RULE_EVERY = 'every frame'
RULE_DISTANCE = 'distance'
RULE_PERIOD = 'period'
# PatchResult.reason prefix for a patch on a frame that was processed but not kept
MISS_NOT_KEYFRAME = 'frame was not a keyframe'

_NS = 1_000_000_000


class OdometryUpdate(NamedTuple):
    accepted: bool  # False: not used (notice says why)
    jump: bool  # a position change faster than MAX_SPEED_MPS: the distance rule restarted
    notice: str | None  # a log line for a rejection or a jump; None otherwise


class KeyframeDecision(NamedTuple):
    stamp_ns: int  # the frame's stamp
    keep: bool  # whether the frame is a keyframe
    rule: str  # RULE_EVERY, RULE_DISTANCE or RULE_PERIOD: the rule that decided
    position: tuple[float, float, float] | None  # the base position used (distance rule only)


class KeyframeCounts(NamedTuple):
    kept: int  # frames kept as keyframes (kept())
    skipped: int  # frames decided against (skipped())
    odometry_jumps: int
    odometry_rejected: int  # non-finite or malformed positions, not used
    without_odometry: int  # keyframes decided without fresh odometry while distance_m > 0


class _Odometry(NamedTuple):
    stamp_ns: int
    position: tuple[float, float, float]  # x, y, z of the base in the odom frame, metres


class KeyframeSelector:
    """Keyframe decisions by distance travelled or by time; see the module docstring."""

    def __init__(self, distance_m: float = 0.0, period_s: float = 0.0, *,
                 remember_s: float = 10.0, max_speed_mps: float = MAX_SPEED_MPS,
                 odometry_timeout_s: float = ODOMETRY_TIMEOUT_S) -> None:
        for name, value in (('distance_m', distance_m), ('period_s', period_s)):
            if not 0 <= value < math.inf:  # also rejects NaN
                raise ValueError(f'keyframe {name} must be finite and >= 0 (0 = rule off), got '
                                 f'{value!r}')
        for name, value in (('remember_s', remember_s), ('max_speed_mps', max_speed_mps),
                            ('odometry_timeout_s', odometry_timeout_s)):
            if not 0 < value < math.inf:
                raise ValueError(f'{name} must be finite and > 0, got {value!r}')
        self.distance_m = float(distance_m)
        self.period_s = float(period_s)
        self.max_speed_mps = float(max_speed_mps)
        self._period_ns = round(self.period_s * _NS)
        self._timeout_ns = round(odometry_timeout_s * _NS)
        self._remember_ns = round(remember_s * _NS)
        self._odometry: _Odometry | None = None  # the latest received
        self._anchor: tuple[float, float, float] | None = None  # base at the last keyframe
        self._last_stamp: int | None = None  # the last keyframe's stamp
        self._skipped: list[int] = []  # sorted stamps of recent frames decided against
        self._fallback = False  # the distance rule is on but odometry is not fresh
        self._counts = dict.fromkeys(KeyframeCounts._fields, 0)
        self._lock = threading.Lock()

    @property
    def every_frame(self) -> bool:
        """Whether every frame is a keyframe whatever the odometry (both rules off)."""
        return self.distance_m == 0 and self.period_s == 0

    def describe(self) -> str:
        """The settings, for log lines and patch miss reasons."""
        return f'keyframe_distance_m={self.distance_m:g}, keyframe_period_s={self.period_s:g}'

    def counts(self) -> KeyframeCounts:
        with self._lock:
            return KeyframeCounts(**self._counts)

    def add_odometry(self, stamp_ns: int, position_xyz: Iterable[float]) -> OdometryUpdate:
        """The base position (x, y, z) in metres in the odom frame at `stamp_ns`; it becomes
        the latest position. Never raises: a malformed one is rejected with the reason."""
        try:
            stamp = as_stamp_ns(stamp_ns)
            x, y, z = (float(v) for v in position_xyz)
        except (TypeError, ValueError) as err:
            return self.reject(f'odometry must be an integer stamp in ns and a position of '
                                f'three numbers (x, y, z in metres): {err}')
        if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(z)):
            return self.reject(f'odometry position ({x}, {y}, {z}) at {stamp} is not finite: '
                                'ignored (check the odometry source)')
        position = (x, y, z)
        with self._lock:
            previous, self._odometry = self._odometry, _Odometry(stamp, position)
            if previous is None:
                return OdometryUpdate(True, False, None)
            step_s = (stamp - previous.stamp_ns) / _NS
            moved = math.dist(position, previous.position)
            if moved <= self.max_speed_mps * max(step_s, MIN_STEP_S):
                return OdometryUpdate(True, False, None)
            self._counts['odometry_jumps'] += 1
            self._anchor = None  # the next frame with fresh odometry is a keyframe
        return OdometryUpdate(True, True, (
            f'odometry jumped {moved:.3f} m in {step_s:+.3f} s (faster than '
            f'{self.max_speed_mps:g} m/s: a reset or relocalisation): keyframe distance '
            'restarted, the next frame is a keyframe'))

    def reject(self, notice: str) -> OdometryUpdate:
        """Count an odometry message that cannot be used; `notice` says why."""
        with self._lock:
            self._counts['odometry_rejected'] += 1
        return OdometryUpdate(False, False, notice)

    def decide(self, stamp_ns: int) -> KeyframeDecision:
        """Whether the frame at `stamp_ns` is a keyframe, by the rules of the module docstring;
        changes nothing (but whether the no-odometry warning was logged) until `kept` or
        `skipped` is called with the outcome."""
        stamp = as_stamp_ns(stamp_ns)
        with self._lock:
            odometry = self._odometry
            fresh = (odometry is not None
                     and abs(stamp - odometry.stamp_ns) <= self._timeout_ns)
            if self.distance_m > 0:
                self._note_fallback(not fresh, stamp, odometry)
            if self.distance_m > 0 and fresh:
                keep = self._anchor is None or (math.dist(odometry.position, self._anchor)
                                                >= self.distance_m - DISTANCE_SLACK_M)
                return KeyframeDecision(stamp, keep, RULE_DISTANCE, odometry.position)
            if self.period_s > 0:
                last = self._last_stamp
                keep = last is None or stamp - last >= self._period_ns or stamp < last
                return KeyframeDecision(stamp, keep, RULE_PERIOD, None)
            return KeyframeDecision(stamp, True, RULE_EVERY, None)

    def _note_fallback(self, fallback: bool, stamp: int, odometry: _Odometry | None) -> None:
        """Log when the distance rule stops or starts applying. Caller holds the lock."""
        if fallback == self._fallback:
            return
        self._fallback = fallback
        if not fallback:
            logger.info('keyframes: odometry is fresh again, keyframes by distance (%s)',
                        self.describe())
            return
        why = ('no odometry received yet' if odometry is None else
               f'the latest odometry is {(stamp - odometry.stamp_ns) / _NS:+.3f} s from the '
               f'frame (more than {self._timeout_ns / _NS:g} s)')
        then = (f'a keyframe every {self.period_s:g} s' if self.period_s > 0 else
                'every frame is a keyframe')
        logger.warning('keyframes: %s: %s until odometry comes (check the odom topic and that '
                       'its stamps share the camera clock)', why, then)

    def kept(self, decision: KeyframeDecision) -> None:
        """The frame of `decision` was kept in the frame buffer: it is the last keyframe."""
        with self._lock:
            self._counts['kept'] += 1
            self._last_stamp = decision.stamp_ns
            self._anchor = decision.position  # None off the distance rule: restart it
            if decision.rule != RULE_DISTANCE and self.distance_m > 0:
                self._counts['without_odometry'] += 1

    def skipped(self, stamp_ns: int) -> None:
        """The frame at `stamp_ns` was processed but not kept (not a keyframe)."""
        stamp = as_stamp_ns(stamp_ns)
        with self._lock:
            self._counts['skipped'] += 1
            stamps = self._skipped
            if stamps and stamp < stamps[-1] - self._remember_ns:
                stamps.clear()  # a clock jump back: the old stamps would match new frames
            bisect.insort(stamps, stamp)
            cut = max(bisect.bisect_left(stamps, stamps[-1] - self._remember_ns),
                      len(stamps) - REMEMBER_MAX)
            del stamps[:cut]

    def was_skipped(self, stamp_ns: int, tolerance_ns: int = 0) -> bool:
        """Whether a recent frame within `tolerance_ns` of `stamp_ns` was decided against."""
        stamp, tolerance = as_stamp_ns(stamp_ns), as_stamp_ns(tolerance_ns)
        with self._lock:
            i = bisect.bisect_left(self._skipped, stamp - tolerance)
            return i < len(self._skipped) and self._skipped[i] <= stamp + tolerance

    def miss_reason(self) -> str:
        """The PatchResult reason for a patch on a frame that was not a keyframe."""
        return (f'{MISS_NOT_KEYFRAME} ({self.describe()}): the cost node keeps only the '
                'frames it announces on its keyframes topic; label those')

    def reset(self) -> None:
        """Forget the last keyframe and the skipped stamps (the frame buffer was cleared): the
        next frame is a keyframe. The latest odometry and the counts stay."""
        with self._lock:
            self._anchor = self._last_stamp = None
            self._skipped.clear()
