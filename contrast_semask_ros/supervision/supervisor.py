"""The self-supervision loop (ROS-free): IMU, odometry, commanded speed and camera frames in,
`patch_cost` masks out. The patch_cost node and replay both run exactly this.

    supervisor = Supervisor(SupervisionConfig(signal='imu'), T_base_optical)
    supervisor.add_odometry(stamp_ns, T_odom_base, speed_mps)   # nav_msgs/Odometry
    supervisor.add_frame(stamp_ns, camera)                      # camera_info (or a keyframe)
    supervisor.add_imu(stamp_ns, acceleration, orientation)     # sensor_msgs/Imu
    update = supervisor.update(stamp_ns)                        # after each IMU sample
    if update is not None: publish update.labels                # one mask per keyframe

When a label is made (docs/SUPERVISION.md, "The loop"):
- every `label_period_s` of sensor time, at the newest IMU sample t: the IMU window is
  (t - imu_window_s, t], and the robot drove over the terrain during that window, so the label
  is the ground the footprint swept over the window (FootprintLabeller.label with start_ns; t
  is capped at the newest odometry pose);
- the cost is the IMU band-power cost of the window (`signal='imu'`), the velocity-tracking
  cost of the mean commanded and measured speeds over the same window (`'velocity'`), or both
  merged by `combine_rule` (`'both'`);
- the footprint at that pose is projected into every keyframe that saw it (FootprintLabeller):
  one `Label` per keyframe, stamped with the keyframe's stamp. No cost (a gap in the IMU, no
  command) or no pose gives an update without labels; its `reason` says why.

Keyframes: by default the supervisor picks them from the camera frames it is given
(`keyframe_distance_m`, else `keyframe_period_s`). When the cost node announces the frames it
keeps (`add_frame(..., announced=True)`), those are the keyframes, and only those are labelled,
so a label never names a frame the cost node no longer holds; keep `max_keyframes` and
`max_age_s` below the cost node's `buffer_frames` and `buffer_age_s` (the launch file does).
"""

from __future__ import annotations

import bisect
import math
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np

from contrast_semask_ros.supervision.geometry import CameraModel
from contrast_semask_ros.supervision.labeller import FootprintLabeller, Label
from contrast_semask_ros.supervision.traversal import (
    ImuTraversalCost,
    combine,
    velocity_tracking_cost,
)

SIGNALS = ('imu', 'velocity', 'both')
_NS = 1_000_000_000


@dataclass(frozen=True)
class SupervisionConfig:
    """The supervision core's settings (the `supervision` scope of the patch_cost_node's
    parameter table, supervision/params.py, which checks ranges; defaults here)."""

    signal: str = 'imu'  # imu | velocity | both
    robot_length: float = 0.8  # m, footprint along base x
    robot_width: float = 0.6  # m, footprint along base y
    ground_offset: float = 0.0  # m, ground height in the base frame
    max_range_m: float = 8.0  # label keyframes whose camera was this close to the footprint
    max_age_s: float = 9.0  # ... and at most this old (keep below the cost node's buffer_age_s)
    max_keyframes: int = 56  # keyframes kept (keep below the cost node's buffer_frames)
    keyframe_distance_m: float = 0.2  # own keyframe selection (without announcements)
    keyframe_period_s: float = 0.5  # ... by time when the frame's pose is unknown
    mask_scale: int = 4  # masks at image size / mask_scale (the bank's stride-4 grid)
    max_labels_per_update: int = 4  # keyframes labelled per update (0 = every one that saw it)
    label_period_s: float = 0.1  # sensor time between label updates
    imu_window_s: float = 1.0
    imu_f_low: float = 1.0
    imu_f_high: float = 30.0
    power_at_cost_0: float = 0.01  # (m/s^2)^2 band power that costs 0 (calibrate a bag)
    power_at_cost_1: float = 1.0  # ... that costs 1
    power_mapping: str = 'log'  # log | linear
    min_cmd_speed: float = 0.1  # m/s; slower commands give no velocity label
    combine_rule: str = 'max'  # max | weighted (signal 'both')
    imu_weight: float = 0.5
    velocity_weight: float = 0.5
    max_speed_mps: float = 10.0  # odometry faster than this between two poses is a jump
    max_pose_gap_s: float = 0.5  # no pose interpolated across a longer odometry gap

    def __post_init__(self) -> None:
        if self.signal not in SIGNALS:
            raise ValueError(f'signal must be one of {", ".join(SIGNALS)}, got {self.signal!r}')
        if not (math.isfinite(self.label_period_s) and self.label_period_s > 0):
            raise ValueError(f'label_period_s must be > 0 seconds, got {self.label_period_s!r}')

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class LabelUpdate(NamedTuple):
    window_end_ns: int  # the newest IMU sample of the window (adaptation latency starts here)
    pose_stamp_ns: int  # the footprint swept from start_stamp_ns to here (odometry-capped)
    start_stamp_ns: int  # the window's start
    cost: float  # the label cost in [0, 1]; NaN: no label (reason says why)
    imu_cost: float  # NaN when not used or invalid
    imu_power: float  # (m/s^2)^2 band power of the window; NaN when not used or invalid
    velocity_cost: float  # NaN when not used or no command
    labels: list[Label]  # one per keyframe that saw the footprint, oldest first
    reason: str  # 'ok', 'no_cost:<why>' or 'no_pose'


class _SpeedHistory:
    """(stamp_ns, speed m/s) samples of the last few seconds; mean over a time window."""

    def __init__(self, keep_s: float) -> None:
        self.keep_ns = int(keep_s * _NS)
        self._stamps: deque[int] = deque()
        self._speeds: deque[float] = deque()

    def add(self, stamp_ns: int, speed: float) -> bool:
        if not math.isfinite(speed) or (self._stamps and stamp_ns <= self._stamps[-1]):
            return False
        self._stamps.append(stamp_ns)
        self._speeds.append(abs(speed))
        while self._stamps and self._stamps[0] < stamp_ns - self.keep_ns:
            self._stamps.popleft()
            self._speeds.popleft()
        return True

    def mean(self, start_ns: int, end_ns: int) -> float:
        """Mean speed of the samples in (start_ns, end_ns]; NaN when there is none (the last
        sample before the window counts when none falls inside: commands are held)."""
        stamps = list(self._stamps)
        lo = bisect.bisect_right(stamps, start_ns)
        hi = bisect.bisect_right(stamps, end_ns)
        if hi > lo:
            return float(np.mean(list(self._speeds)[lo:hi]))
        return self._speeds[hi - 1] if hi > 0 else math.nan


class Supervisor:
    """IMU + odometry (+ commanded speed) + camera frames -> patch_cost labels (module
    docstring). T_base_optical (4, 4): the camera optical frame in the base frame."""

    def __init__(self, config: SupervisionConfig, T_base_optical: Any,
                 rotation_base_imu: np.ndarray | None = None) -> None:
        self.config = config
        c = config
        self.labeller = FootprintLabeller(
            T_base_optical, c.robot_length, c.robot_width, ground_offset=c.ground_offset,
            max_range_m=c.max_range_m, max_age_s=c.max_age_s, mask_scale=c.mask_scale,
            keyframe_distance_m=c.keyframe_distance_m, keyframe_period_s=c.keyframe_period_s,
            max_keyframes=c.max_keyframes, max_gap_s=c.max_pose_gap_s,
            max_speed_mps=c.max_speed_mps, max_labels=c.max_labels_per_update)
        self.imu = ImuTraversalCost(
            window_s=c.imu_window_s, f_low=c.imu_f_low, f_high=c.imu_f_high,
            power_at_cost_0=c.power_at_cost_0, power_at_cost_1=c.power_at_cost_1,
            mapping=c.power_mapping, history_s=max(3.0, 2 * c.imu_window_s),
            rotation_base_imu=rotation_base_imu)
        keep_s = 2 * c.imu_window_s + 1.0
        self.commanded = _SpeedHistory(keep_s)
        self.measured = _SpeedHistory(keep_s)
        self._half_window_ns = int(round(c.imu_window_s * _NS / 2))
        self._period_ns = int(round(c.label_period_s * _NS))
        self._last_update_ns: int | None = None
        self.counters: Counter[str] = Counter()

    # --- inputs ----------------------------------------------------------------------------

    def add_imu(self, stamp_ns: int, acceleration: Sequence[float],
                orientation_xyzw: Sequence[float] | None = None) -> bool:
        """sensor_msgs/Imu: linear_acceleration (3,) m/s^2, orientation x, y, z, w or None."""
        return self.imu.add(stamp_ns, acceleration, orientation_xyzw)

    def add_odometry(self, stamp_ns: int, T_odom_base: Any, speed_mps: float = math.nan
                     ) -> bool:
        """nav_msgs/Odometry: the base pose (4, 4) in odom and |twist.linear| (m/s)."""
        kept = self.labeller.add_pose(stamp_ns, T_odom_base)
        if kept:
            self.measured.add(int(stamp_ns), float(speed_mps))
        return kept

    def add_cmd_vel(self, stamp_ns: int, speed_mps: float) -> bool:
        """The commanded speed |linear| (m/s) at stamp_ns (Twist: the receive time)."""
        return self.commanded.add(int(stamp_ns), float(speed_mps))

    def add_frame(self, stamp_ns: int, camera: CameraModel, announced: bool = False) -> bool:
        """A camera frame; announced=True: the cost node kept it, so it is a keyframe."""
        return self.labeller.add_frame(stamp_ns, camera, force=announced)

    # --- labels ----------------------------------------------------------------------------

    def due(self, now_ns: int) -> bool:
        """Whether `update(now_ns)` would make a label update (label_period_s elapsed)."""
        last = self._last_update_ns
        return last is None or not 0 <= int(now_ns) - last < self._period_ns

    def update(self, now_ns: int) -> LabelUpdate | None:
        """A label update for the window ending at now_ns, or None when the previous one is
        less than label_period_s old. Call it after each IMU sample."""
        now_ns = int(now_ns)
        if not self.due(now_ns):
            return None
        self._last_update_ns = now_ns
        c = self.config
        imu_cost = imu_power = velocity_cost = math.nan
        window_end = now_ns
        reasons = []
        if c.signal in ('imu', 'both'):
            sample = self.imu.cost_at(now_ns)
            imu_cost, imu_power = sample.cost, sample.power
            if math.isnan(imu_cost):
                reasons.append(f'imu {sample.reason}')
            last = self.imu.last_stamp_ns
            window_end = now_ns if last is None else min(now_ns, last)
        if c.signal in ('velocity', 'both'):
            start = window_end - 2 * self._half_window_ns
            velocity_cost = velocity_tracking_cost(self.commanded.mean(start, window_end),
                                                   self.measured.mean(start, window_end),
                                                   c.min_cmd_speed)
            if math.isnan(velocity_cost):
                reasons.append('velocity: no command above min_cmd_speed or no odometry')
        if c.signal == 'imu':
            cost = imu_cost
        elif c.signal == 'velocity':
            cost = velocity_cost
        else:
            cost = combine(imu_cost, velocity_cost, c.combine_rule,
                           (c.imu_weight, c.velocity_weight))
        span = self.labeller.poses.span_ns
        pose_stamp = window_end if span is None else min(window_end, span[1])
        start = window_end - 2 * self._half_window_ns
        self.counters['updates'] += 1

        def result(cost: float, labels: list[Label], reason: str) -> LabelUpdate:
            return LabelUpdate(window_end, pose_stamp, start, cost, imu_cost, imu_power,
                               velocity_cost, labels, reason)

        if math.isnan(cost):
            self.counters['no_cost'] += 1
            return result(math.nan, [], 'no_cost: ' + '; '.join(reasons))
        before = self.labeller.counters['no_pose']
        labels = self.labeller.label(pose_stamp, float(cost), start)
        if self.labeller.counters['no_pose'] > before:
            self.counters['no_pose'] += 1
            return result(float(cost), [], 'no_pose')
        self.counters['labels'] += len(labels)
        self.counters['updates_with_labels'] += bool(labels)
        return result(float(cost), labels, 'ok')

    def footprint_in_odom(self, update: LabelUpdate) -> np.ndarray | None:
        """The ground an update labelled, (M, 3) corners in odom (footprint markers); None when
        its poses are no longer held."""
        return self.labeller.footprint_in_odom(update.pose_stamp_ns, update.start_stamp_ns)

    def all_counters(self) -> dict[str, int]:
        """Every counter, prefixed by where it comes from (diagnostics, replay report)."""
        out: dict[str, int] = {}
        for prefix, counters in (('supervisor', self.counters), ('imu', self.imu.counters),
                                 ('poses', self.labeller.poses.counters),
                                 ('keyframes', self.labeller.keyframes.counters),
                                 ('labeller', self.labeller.counters)):
            out.update({f'{prefix}.{key}': int(value) for key, value in counters.items()})
        return out


__all__ = ['SIGNALS', 'LabelUpdate', 'SupervisionConfig', 'Supervisor']
