"""Footprint labelling of past camera frames (ROS-free; docs/SUPERVISION.md, "Labelling").

The robot measures a traversal cost where it stands (`traversal`); this module paints that cost
into the camera frames that saw the ground before the robot got there, as `patch_cost` masks.

- `PoseHistory`: odometry poses T_odom_base (4, 4) in a time-ordered buffer of the last
  `max_age_s` seconds; `at(stamp_ns)` interpolates between the two neighbours (translation
  linearly, rotation by slerp), None outside the covered range or across a gap > `max_gap_s`.
  Out-of-order and duplicate stamps and invalid poses are dropped and counted; a jump (faster
  than `max_speed_mps` between consecutive poses: an odometry reset, a relocalisation) is
  counted and the history restarts at the new pose.
- `Keyframes`: the camera frames worth labelling, selected by distance travelled by the base
  (`keyframe_distance_m`) or, when a frame's pose is unknown, by time (`keyframe_period_s`);
  bounded by count and age. A keyframe whose pose was unknown when it came is resolved later
  (odometry often lags the camera). `add(..., force=True)` skips the selection: the cost node
  announces the frames it keeps, and the labeller labels exactly those.
- `FootprintLabeller`: `label(stamp_ns, cost)` projects the footprint at the pose the robot had
  at `stamp_ns` into every older keyframe within `max_age_s` and `max_range_m`, filled with
  `cost`: one `Label` per keyframe, a float32 mask (H / scale, W / scale), NaN elsewhere, stamped
  with the keyframe's stamp (the patch_cost contract). `accumulate` merges several labels of
  one keyframe by the per-pixel mean.

scipy is imported inside the functions that use it.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import numpy as np

from contrast_semask_ros.supervision.geometry import (
    CameraModel,
    GeometryError,
    check_pose,
    footprint_polygon,
    invert,
    rasterise_checked,
)

_NS = 1_000_000_000
_DISTANCE_SLACK_M = 1e-9  # a keyframe distance reached up to float rounding counts as reached
SWEEP_STEP_S = 0.25  # poses between the ends of a swept footprint (labels over an IMU window)


def _seconds_to_ns(value: float, name: str) -> int:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f'{name} must be a positive number of seconds, got {value!r}')
    return int(round(value * _NS))


def _positive(value: float, name: str) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f'{name} must be a positive finite number, got {value!r}')
    return float(value)


class PoseHistory:
    """Odometry poses T_odom_base (4, 4) by stamp (ns), the last `max_age_s` seconds."""

    def __init__(self, *, max_age_s: float = 10.0, max_gap_s: float = 0.5,
                 max_speed_mps: float = 10.0) -> None:
        self.max_age_ns = _seconds_to_ns(max_age_s, 'max_age_s')
        self.max_gap_ns = _seconds_to_ns(max_gap_s, 'max_gap_s')
        self.max_speed_mps = _positive(max_speed_mps, 'max_speed_mps')
        self._stamps: list[int] = []  # ascending
        self._poses: list[np.ndarray] = []  # 4, 4 each
        # plain floats for interpolation (at): numpy on 4-vectors costs 5x more per pose
        self._quats: list[tuple[float, ...]] = []  # x, y, z, w of each pose's rotation
        self._positions: list[tuple[float, ...]] = []  # x, y, z of each pose
        self.counters: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._stamps)

    @property
    def span_ns(self) -> tuple[int, int] | None:
        """(oldest, newest) stamp held, None when empty."""
        return (self._stamps[0], self._stamps[-1]) if self._stamps else None

    def clear(self) -> None:
        self._stamps.clear()
        self._poses.clear()
        self._quats.clear()
        self._positions.clear()

    def add(self, stamp_ns: int, T_odom_base: Any) -> bool:
        """One odometry pose; False when it was dropped (counted: `invalid_pose`, `duplicate`,
        `out_of_order`). A jump is kept: the history restarts from it (`jumps`)."""
        stamp_ns = int(stamp_ns)
        try:
            T = check_pose(T_odom_base, 'T_odom_base').copy()
        except GeometryError:
            self.counters['invalid_pose'] += 1
            return False
        if self._stamps:
            last = self._stamps[-1]
            if stamp_ns == last:
                self.counters['duplicate'] += 1
                return False
            if stamp_ns < last:
                self.counters['out_of_order'] += 1
                return False
            distance = float(np.linalg.norm(T[:3, 3] - self._poses[-1][:3, 3]))
            if distance > self.max_speed_mps * (stamp_ns - last) / _NS:
                self.counters['jumps'] += 1
                self.clear()
        from scipy.spatial.transform import Rotation

        self._stamps.append(stamp_ns)
        self._poses.append(T)
        self._quats.append(tuple(Rotation.from_matrix(T[:3, :3]).as_quat().tolist()))
        self._positions.append(tuple(T[:3, 3].tolist()))
        expired = bisect.bisect_left(self._stamps, stamp_ns - self.max_age_ns)
        if expired:
            del self._stamps[:expired]
            del self._poses[:expired]
            del self._quats[:expired]
            del self._positions[:expired]
        self.counters['poses'] += 1
        return True

    def at(self, stamp_ns: int) -> np.ndarray | None:
        """T_odom_base (4, 4) at stamp_ns, interpolated between the two neighbours (translation
        linearly, rotation by slerp); None outside [oldest, newest] or when the neighbours are
        more than max_gap_s apart."""
        stamp_ns = int(stamp_ns)
        if not self._stamps or not self._stamps[0] <= stamp_ns <= self._stamps[-1]:
            return None
        i = bisect.bisect_left(self._stamps, stamp_ns)
        if self._stamps[i] == stamp_ns:
            return self._poses[i].copy()
        t0, t1 = self._stamps[i - 1], self._stamps[i]
        if t1 - t0 > self.max_gap_ns:
            return None
        a = (stamp_ns - t0) / (t1 - t0)
        x, y, z, w = _slerp(self._quats[i - 1], self._quats[i], a)
        (x0, y0, z0), (x1, y1, z1) = self._positions[i - 1], self._positions[i]
        b = 1.0 - a
        return np.array([  # the rotation of the slerped quaternion, the blended position
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w), b * x0 + a * x1],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w), b * y0 + a * y1],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y), b * z0 + a * z1],
            [0.0, 0.0, 0.0, 1.0]])


def _slerp(q0: tuple[float, ...], q1: tuple[float, ...], a: float) -> tuple[float, ...]:
    """Spherical linear interpolation of unit quaternions (x, y, z, w), the short way round
    (what scipy's Slerp gives; test_supervision_labeller compares), in plain floats: it runs
    for every pose a label update needs."""
    dot = sum(u * v for u, v in zip(q0, q1, strict=True))
    if dot < 0.0:
        q1, dot = tuple(-v for v in q1), -dot
    if dot > 0.9995:  # nearly equal: the linear blend, renormalised
        q = [u + a * (v - u) for u, v in zip(q0, q1, strict=True)]
        norm = math.sqrt(sum(c * c for c in q))
        return tuple(c / norm for c in q)
    theta = math.acos(dot)
    s0, s1, s = math.sin((1.0 - a) * theta), math.sin(a * theta), math.sin(theta)
    return tuple((s0 * u + s1 * v) / s for u, v in zip(q0, q1, strict=True))


class Keyframe(NamedTuple):
    stamp_ns: int
    T_odom_optical: np.ndarray | None  # 4, 4; None while the frame's pose is unknown
    camera: CameraModel
    image_size: tuple[int, int]  # H, W of the camera image
    T_optical_odom: np.ndarray | None = None  # 4, 4: the inverse, computed once
    position: tuple[float, ...] = ()  # x, y, z of the camera in odom (floats: range checks)


def _keyframe(stamp_ns: int, T_odom_optical: np.ndarray | None, camera: CameraModel
              ) -> Keyframe:
    if T_odom_optical is None:
        return Keyframe(stamp_ns, None, camera, camera.image_size)
    return Keyframe(stamp_ns, T_odom_optical, camera, camera.image_size, invert(T_odom_optical),
                    tuple(T_odom_optical[:3, 3].tolist()))


class Keyframes:
    """The camera frames worth labelling (module docstring), oldest first."""

    def __init__(self, T_base_optical: Any, *, keyframe_distance_m: float = 0.2,
                 keyframe_period_s: float = 0.5, max_age_s: float = 10.0,
                 max_count: int = 100) -> None:
        self.T_base_optical = check_pose(T_base_optical, 'T_base_optical').copy()
        self.keyframe_distance_m = _positive(keyframe_distance_m, 'keyframe_distance_m')
        self.period_ns = _seconds_to_ns(keyframe_period_s, 'keyframe_period_s')
        self.max_age_ns = _seconds_to_ns(max_age_s, 'max_age_s')
        if isinstance(max_count, bool) or not isinstance(max_count, int) or max_count < 1:
            raise ValueError(f'max_count must be a positive integer, got {max_count!r}')
        self.max_count = max_count
        self._frames: list[Keyframe] = []
        self._last_position: np.ndarray | None = None  # 3: base position of the last posed one
        self.counters: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._frames)

    def __iter__(self) -> Iterator[Keyframe]:
        return iter(list(self._frames))  # a copy: safe while keyframes change

    def add(self, stamp_ns: int, camera: CameraModel, T_odom_base: Any | None,
            force: bool = False) -> bool:
        """Offer a camera frame; True when it became a keyframe. T_odom_base (4, 4) is the base
        pose at the frame's stamp, None when unknown. force=True keeps it without selection.
        Dropped and counted: `out_of_order` (not newer than the newest keyframe)."""
        stamp_ns = int(stamp_ns)
        if not isinstance(camera, CameraModel):
            raise GeometryError(f'camera must be a CameraModel, got {type(camera).__name__}')
        last = self._frames[-1] if self._frames else None
        if last is not None and stamp_ns <= last.stamp_ns:
            self.counters['out_of_order'] += 1
            return False
        T = None if T_odom_base is None else check_pose(T_odom_base, 'T_odom_base')
        if not force:
            if T is not None and self._last_position is not None:
                moved = float(np.linalg.norm(T[:3, 3] - self._last_position))
                if moved < self.keyframe_distance_m - _DISTANCE_SLACK_M:
                    return False
            elif T is None and last is not None and stamp_ns - last.stamp_ns < self.period_ns:
                return False
        if T is not None:
            self._last_position = T[:3, 3].copy()
        T_odom_optical = None if T is None else T @ self.T_base_optical
        self._frames.append(_keyframe(stamp_ns, T_odom_optical, camera))
        self.counters['keyframes'] += 1
        if T is None:
            self.counters['unposed'] += 1
        self.expire(stamp_ns)
        return True

    def expire(self, now_ns: int) -> None:
        """Forget keyframes older than max_age_s before now_ns (`expired`) and the oldest beyond
        max_count (`evicted`)."""
        cutoff = int(now_ns) - self.max_age_ns
        old = 0
        while old < len(self._frames) and self._frames[old].stamp_ns < cutoff:
            old += 1
        extra = max(len(self._frames) - old - self.max_count, 0)
        self.counters['expired'] += old
        self.counters['evicted'] += extra
        del self._frames[:old + extra]

    def resolve(self, pose_at: Callable[[int], np.ndarray | None]) -> int:
        """Fill in the pose of keyframes that came without one, from `pose_at(stamp_ns)` ->
        T_odom_base or None; returns how many were resolved."""
        resolved = 0
        for i, frame in enumerate(self._frames):
            if frame.T_odom_optical is None:
                T = pose_at(frame.stamp_ns)
                if T is not None:
                    self._frames[i] = _keyframe(frame.stamp_ns, T @ self.T_base_optical,
                                                frame.camera)
                    resolved += 1
        self.counters['resolved'] += resolved
        return resolved


class Label(NamedTuple):
    keyframe_stamp_ns: int
    mask: np.ndarray  # H / scale, W / scale float32: the cost on the footprint, NaN elsewhere
    pixels: int  # how many mask pixels hold the cost


class FootprintLabeller:
    """Odometry + traversal cost -> patch_cost masks for past keyframes (module docstring).

    T_base_optical (4, 4): the camera optical frame in the base frame (camera_pose_to_optical).
    The footprint is robot_length x robot_width, centred on the base origin, at z =
    ground_offset of the base frame. A keyframe is labelled when it is older than the label's
    stamp, at most max_age_s older, and its camera centre is within max_range_m of the
    footprint's centre (3-D distance). max_labels > 0 labels at most that many of them per
    call, spread from near to far and rotating from call to call (`_spread`): the cost of a
    label update and the masks sent stay bounded whatever the keyframe count. Masks are at
    image size / mask_scale (or the largest smaller scale that divides the image size)."""

    def __init__(self, T_base_optical: Any, robot_length: float, robot_width: float, *,
                 ground_offset: float = 0.0, max_range_m: float = 8.0, max_age_s: float = 10.0,
                 mask_scale: int = 1, keyframe_distance_m: float = 0.2,
                 keyframe_period_s: float = 0.5, max_keyframes: int = 100,
                 max_gap_s: float = 0.5, max_speed_mps: float = 10.0, max_labels: int = 0
                 ) -> None:
        self.T_base_optical = check_pose(T_base_optical, 'T_base_optical').copy()
        self.footprint = footprint_polygon(robot_length, robot_width, ground_offset)  # 4, 3
        self.max_range_m = _positive(max_range_m, 'max_range_m')
        self.max_age_ns = _seconds_to_ns(max_age_s, 'max_age_s')
        if isinstance(mask_scale, bool) or not isinstance(mask_scale, int) or mask_scale < 1:
            raise ValueError(f'mask_scale must be a positive integer, got {mask_scale!r}')
        self.mask_scale = mask_scale
        if isinstance(max_labels, bool) or not isinstance(max_labels, int) or max_labels < 0:
            raise ValueError(f'max_labels must be an integer >= 0 (0 = all), got {max_labels!r}')
        self.max_labels = max_labels
        self._rotation = 0
        self._labelled_until: dict[int, int] = {}  # keyframe stamp -> end of its last label
        self.poses = PoseHistory(max_age_s=max_age_s, max_gap_s=max_gap_s,
                                 max_speed_mps=max_speed_mps)
        self.keyframes = Keyframes(self.T_base_optical, keyframe_distance_m=keyframe_distance_m,
                                   keyframe_period_s=keyframe_period_s, max_age_s=max_age_s,
                                   max_count=max_keyframes)
        self.counters: Counter[str] = Counter()

    def add_pose(self, stamp_ns: int, T_odom_base: Any) -> bool:
        """An odometry pose (nav_msgs/Odometry pose as T_odom_base (4, 4))."""
        return self.poses.add(stamp_ns, T_odom_base)

    def add_frame(self, stamp_ns: int, camera: CameraModel, force: bool = False) -> bool:
        """A camera frame (its camera_info); True when it became a keyframe."""
        return self.keyframes.add(stamp_ns, camera, self.poses.at(stamp_ns), force=force)

    def scale_for(self, camera: CameraModel) -> int:
        """mask_scale, or the largest smaller integer that divides the camera's image size
        (counted: `scale_reduced`), so that any camera gets labels."""
        scale = self.mask_scale
        while camera.width % scale or camera.height % scale:
            scale -= 1
        if scale != self.mask_scale:
            self.counters['scale_reduced'] += 1
        return scale

    def _candidates(self, stamp_ns: int, centre: np.ndarray) -> list[Keyframe]:
        """The keyframes that may have seen the footprint at stamp_ns (older, not too old,
        posed, in range), oldest first; the others counted by reason."""
        found = []
        counts = dict.fromkeys(('not_older', 'too_old', 'unposed_keyframe', 'out_of_range'), 0)
        for frame in self.keyframes:
            age_ns = stamp_ns - frame.stamp_ns
            if age_ns <= 0:
                counts['not_older'] += 1
            elif age_ns > self.max_age_ns:
                counts['too_old'] += 1
            elif frame.T_odom_optical is None:
                counts['unposed_keyframe'] += 1
            elif math.dist(frame.position, centre) > self.max_range_m:
                counts['out_of_range'] += 1
            else:
                found.append(frame)
        self.counters.update({k: v for k, v in counts.items() if v})  # one update, not 50
        return found

    def _spread(self, n: int) -> list[int]:
        """The order to try n candidates in when at most max_labels are wanted: every
        (n // max_labels)-th one from a start that moves by one per call (so that each
        keyframe is labelled every few updates and the labels of one update span near and far
        keyframes), then the rest."""
        if not self.max_labels or n <= self.max_labels:
            return list(range(n))
        stride = n // self.max_labels
        start = self._rotation % stride
        self._rotation += 1
        return sorted(range(n), key=lambda i: ((i - start) % stride, i))

    def label(self, stamp_ns: int, cost: float, start_ns: int | None = None) -> list[Label]:
        """The footprint at the pose of stamp_ns, filled with cost, in every keyframe that saw
        it (class docstring), oldest keyframe first.

        With start_ns: the ground the footprint swept from start_ns to stamp_ns (the span of an
        IMU window: what the robot felt), from where each keyframe's previous label ended if
        that is later, so that a keyframe labelled only every few updates still gets its
        strip whole. Keyframes must then be older than start_ns.

        No labels (counted) for a non-finite cost (`no_cost`) or an unknown pose (`no_pose`);
        keyframes skipped are counted by reason: `not_older`, `too_old`, `unposed_keyframe`,
        `out_of_range`, `empty`."""
        stamp_ns = int(stamp_ns)
        start_ns = stamp_ns if start_ns is None else min(int(start_ns), stamp_ns)
        if not math.isfinite(cost):
            self.counters['no_cost'] += 1
            return []
        T_odom_base = self.poses.at(stamp_ns)
        if T_odom_base is None or self.poses.at(start_ns) is None:
            self.counters['no_pose'] += 1
            return []
        self.keyframes.resolve(self.poses.at)
        centre = T_odom_base[:3, :3] @ np.array([0.0, 0.0, self.footprint[0, 2]]) + \
            T_odom_base[:3, 3]  # 3
        candidates = self._candidates(start_ns, centre)
        swept: dict[int, np.ndarray] = {}  # since -> polygon: most keyframes share one
        labels = []
        for i in self._spread(len(candidates)):
            if self.max_labels and len(labels) == self.max_labels:
                self.counters['not_chosen'] += 1
                continue
            frame = candidates[i]
            since = max(start_ns, self._labelled_until.get(frame.stamp_ns, start_ns))
            if since not in swept:
                swept[since] = self.swept(since, stamp_ns)  # M, 3 in odom
            corners = swept[since]
            covered = rasterise_checked(corners, frame.T_optical_odom, frame.camera,
                                        self.scale_for(frame.camera))  # h, w bool
            self._labelled_until[frame.stamp_ns] = stamp_ns
            pixels = int(np.count_nonzero(covered))
            if not pixels:
                self.counters['empty'] += 1
                continue
            mask = np.full(covered.shape, np.nan, np.float32)  # h, w (np.where: 3x slower)
            np.copyto(mask, np.float32(cost), where=covered)
            labels.append(Label(frame.stamp_ns, mask, pixels))
        labels.sort(key=lambda label: label.keyframe_stamp_ns)
        self.counters['labels'] += len(labels)
        held = {frame.stamp_ns for frame in self.keyframes}
        for stamp in [s for s in self._labelled_until if s not in held]:
            del self._labelled_until[stamp]
        return labels

    def swept(self, start_ns: int, stamp_ns: int) -> np.ndarray:
        """The ground the footprint covered from start_ns to stamp_ns, (M, 3) in odom: the
        convex hull (seen from above) of the footprint at both ends and at poses every
        SWEEP_STEP_S between them (so a turn is followed), the pose history's poses. Callers
        checked that the poses exist."""
        stamps = np.unique(np.concatenate([
            np.arange(start_ns, stamp_ns, int(SWEEP_STEP_S * _NS), dtype=np.int64),
            [stamp_ns]]))
        corners = []
        for t in stamps:
            T = self.poses.at(int(t))  # 4, 4 from the history: checked when it was added
            corners.append(self.footprint @ T[:3, :3].T + T[:3, 3])  # 4, 3 in odom
        return convex_hull_xy(np.concatenate(corners))

    def footprint_in_odom(self, stamp_ns: int, start_ns: int | None = None
                          ) -> np.ndarray | None:
        """The footprint corners in the odometry frame at stamp_ns, (4, 3), or swept from
        start_ns, (M, 3) (for markers); None when a pose is unknown."""
        start_ns = stamp_ns if start_ns is None else start_ns
        if self.poses.at(stamp_ns) is None or self.poses.at(start_ns) is None:
            return None
        return self.swept(start_ns, stamp_ns)


def convex_hull_xy(points: np.ndarray) -> np.ndarray:
    """The convex hull of points (N, 3) seen from above (x, y), counter-clockwise, (M, 3): the
    hull's points themselves (their z kept). Andrew's monotone chain."""
    order = np.lexsort((points[:, 1], points[:, 0]))
    pts = points[order]
    xy = pts[:, :2].tolist()  # plain floats: numpy per point costs 10x more here

    def half(indices: Iterable[int]) -> list[int]:
        chain: list[int] = []
        for i in indices:
            px, py = xy[i]
            while len(chain) >= 2:
                (ax, ay), (bx, by) = xy[chain[-2]], xy[chain[-1]]
                if (bx - ax) * (py - ay) - (by - ay) * (px - ax) > 1e-12:
                    break
                chain.pop()
            chain.append(i)
        return chain

    lower = half(range(len(pts)))
    upper = half(reversed(range(len(pts))))
    return pts[lower[:-1] + upper[:-1]]


def accumulate(labels: Iterable[Label]) -> list[Label]:
    """Merge the labels of each keyframe into one, oldest keyframe first: each pixel gets the
    mean of the costs that labels put on it (NaN where none did). The mean rather than the last
    cost: successive footprints overlap most of their area, and each cost is a noisy window of
    the IMU, so averaging the windows that covered a patch is the better estimate. Masks of one
    keyframe must have the same shape (ValueError)."""
    sums: dict[int, np.ndarray] = {}
    counts: dict[int, np.ndarray] = {}
    for label in labels:
        mask = np.asarray(label.mask)
        key = int(label.keyframe_stamp_ns)
        if key not in sums:
            sums[key] = np.zeros(mask.shape, np.float64)
            counts[key] = np.zeros(mask.shape, np.int32)
        elif sums[key].shape != mask.shape:
            raise ValueError(f'labels of keyframe {key} have different shapes: '
                             f'{sums[key].shape} and {mask.shape}')
        measured = np.isfinite(mask)
        sums[key][measured] += mask[measured]
        counts[key] += measured
    merged = []
    for key in sorted(sums):
        with np.errstate(invalid='ignore', divide='ignore'):
            mean = (sums[key] / counts[key]).astype(np.float32)  # NaN where count is 0
        merged.append(Label(key, mean, int((counts[key] > 0).sum())))
    return merged


__all__ = ['FootprintLabeller', 'Keyframe', 'Keyframes', 'Label', 'PoseHistory', 'accumulate']
