"""Replay's self-supervision (`contrast-semask-replay --supervision imu|velocity|both`): the
patch_cost node's core (supervision.Supervisor) on a bag's raw topics, instead of a patch-cost
topic, and the numbers that check it.

    run = SupervisedReplay(SupervisionSetup(config, topics), truths)
    run.message(topic, msg, log_ns) -> list of Label   # odom, imu, cmd_vel, camera_info, tf...
    run.keyframe(stamp_ns)                             # the pipeline kept this frame
    run.summary()                                      # report.json's `supervision`

The keyframes are the pipeline's own: each frame the pipeline keeps in its buffer
(FrameResult.keyframe) is announced to the supervisor, exactly as the cost node announces its
keyframes to the patch_cost node, so every label names a frame the pipeline holds.

Extrinsics: `camera_pose` (as the node's parameter) when given, else the bag's /tf_static,
chained from `base_frame` to the camera_info's frame (through `camera_link` -> optical frame, as
a URDF's robot_state_publisher records it).

Numbers (`summary`): labels and label updates made; frames labelled; label latency (label
window end - keyframe stamp, seconds); Spearman correlation of each update's cost with the
ground-truth cost under its footprint (the mean of the ground-truth image over the label's
pixels in the keyframe where the footprint is largest); IoU of the labelled region of each
keyframe (the union of its labels) with the simulator's own footprint rendering (a
`--footprint-truth-topic`, e.g. the drive bag's /ground_truth/patch_cost), over keyframes whose
labelling horizon (max_age_s) ended inside the bag.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from typing import Any, NamedTuple

import numpy as np

from contrast_semask_ros import codec
from contrast_semask_ros.metrics import percentiles, spearman
from contrast_semask_ros.supervision import ros_io
from contrast_semask_ros.supervision.geometry import (
    CameraModel,
    GeometryError,
    camera_pose_to_optical,
    intersect_ground,
)
from contrast_semask_ros.supervision.labeller import Label
from contrast_semask_ros.supervision.supervisor import SupervisionConfig, Supervisor

_logger = logging.getLogger('contrast_semask_replay')

ODOMETRY_TYPES = ('nav_msgs/msg/Odometry', 'nav_msgs/Odometry')
IMU_TYPES = ('sensor_msgs/msg/Imu', 'sensor_msgs/Imu')
CAMERA_INFO_TYPES = ('sensor_msgs/msg/CameraInfo', 'sensor_msgs/CameraInfo')
TWIST_TYPES = ('geometry_msgs/msg/Twist', 'geometry_msgs/msg/TwistStamped',
               'geometry_msgs/Twist', 'geometry_msgs/TwistStamped')
TF_TYPES = ('tf2_msgs/msg/TFMessage', 'tf2_msgs/TFMessage')


class SupervisionTopics(NamedTuple):
    odom: str = '/odom'
    imu: str = '/imu/data'
    camera_info: str = '/camera/camera_info'
    cmd_vel: str | None = None
    tf_static: str = '/tf_static'
    footprint_truth: str | None = None  # the simulator's footprint masks (for the IoU)

    def wanted(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """(topic, what, allowed types) of every topic to read; optional ones when set."""
        out = [(self.odom, 'odometry', ODOMETRY_TYPES), (self.imu, 'IMU', IMU_TYPES),
               (self.camera_info, 'camera_info', CAMERA_INFO_TYPES)]
        if self.cmd_vel:
            out.append((self.cmd_vel, 'cmd_vel', TWIST_TYPES))
        if self.footprint_truth:
            out.append((self.footprint_truth, 'footprint truth', ('sensor_msgs/msg/Image',
                                                                  'sensor_msgs/Image')))
        return out


class SupervisionSetup(NamedTuple):
    """What `contrast-semask-replay --supervision` was asked for."""

    config: SupervisionConfig
    topics: SupervisionTopics
    camera_pose: tuple[float, ...] | None = None  # None: from the bag's /tf_static
    base_frame: str = 'base_link'
    truth_costs: bool = False  # label costs from the ground truth (same footprints and times)


def add_static_transforms(msg: Any, edges: dict[str, tuple[str, np.ndarray]],
                          counters: Counter[str]) -> None:
    """A tf2_msgs/TFMessage's transforms into `edges` (child -> (parent, T_parent_child));
    an invalid one is counted (`invalid_tf`) and skipped."""
    for tf in msg.transforms:
        try:
            T = ros_io.transform_to_pose(tf)
        except GeometryError:
            counters['invalid_tf'] += 1
            continue
        edges[tf.child_frame_id.lstrip('/')] = (tf.header.frame_id.lstrip('/'), T)


def chain_static(edges: dict[str, tuple[str, np.ndarray]], parent: str, child: str
                 ) -> np.ndarray | None:
    """T_parent_child (4, 4) through the static transforms `edges` (child -> (its parent,
    T_parent_child)); None when `child` does not lead up to `parent`."""
    T = np.eye(4)
    frame = child
    for _ in range(len(edges) + 1):
        if frame == parent:
            return T
        if frame not in edges:
            return None
        frame, T_up = edges[frame][0], edges[frame][1] @ T
        T = T_up
    return None  # a cycle


class SupervisedReplay:
    """The supervision side of one replay (module docstring)."""

    def __init__(self, setup: SupervisionSetup, truths: dict[int, np.ndarray]) -> None:
        config, camera_pose = setup.config, setup.camera_pose
        self.config, self.topics = config, setup.topics
        self.base_frame = setup.base_frame
        self.truth_costs = setup.truth_costs
        self.T_base_optical = None if camera_pose is None else camera_pose_to_optical(
            *camera_pose)
        self.extrinsics = 'camera_pose' if camera_pose is not None else 'tf_static'
        self.edges: dict[str, tuple[str, np.ndarray]] = {}
        self.supervisor: Supervisor | None = None
        self.camera: CameraModel | None = None
        self.cameras = ros_io.CameraCache()
        self.camera_frame = ''
        self.counters: Counter[str] = Counter()
        self.latency_s: list[float] = []
        self.pairs: list[tuple[float, float]] = []  # (label cost, truth under the footprint)
        self.frames_labelled: set[int] = set()
        self.truths = truths  # frame stamp -> ground-truth cost (H, W), kept by the replay
        self.labelled: dict[int, np.ndarray] = {}  # keyframe stamp -> union of labels (bool)
        self.oracle: dict[int, np.ndarray] = {}  # keyframe stamp -> oracle footprint (bool)
        self.keyframes: list[int] = []
        self.first_label_ns: int | None = None  # the start of the first labelled window
        self.last_label_ns = 0  # the end of the last labelled window

    # --- inputs ----------------------------------------------------------------------------

    def message(self, topic: str, msg: Any, log_ns: int) -> list[Label]:
        """One raw-topic message; the labels it made (IMU messages, once a label is due)."""
        t = self.topics
        if topic == t.tf_static:
            add_static_transforms(msg, self.edges, self.counters)
        elif topic == t.camera_info:
            self._camera_info(msg)
        elif topic == t.odom:
            if self._ready():
                try:
                    self.supervisor.add_odometry(*ros_io.odometry_to_pose_speed(msg))
                except GeometryError:
                    self.counters['invalid_odometry'] += 1
        elif topic == t.cmd_vel:
            if self._ready():
                header = getattr(msg, 'header', None)
                stamp = log_ns if header is None else ros_io.stamp_ns(header)
                self.supervisor.add_cmd_vel(stamp, ros_io.twist_speed(msg))
        elif topic == t.imu:
            return self._imu(msg)
        elif topic == t.footprint_truth:
            self.oracle[ros_io.stamp_ns(msg.header)] = np.isfinite(codec.image_to_array(msg))
        return []

    def _camera_info(self, msg: Any) -> None:
        try:
            self.camera = self.cameras.update(msg)
        except GeometryError as err:
            self.counters['invalid_camera_info'] += 1
            _logger.debug('camera_info skipped: %s', err)
            return
        self.camera_frame = msg.header.frame_id.lstrip('/')

    def _ready(self) -> bool:
        """Whether the supervisor exists: created once the extrinsics are known."""
        if self.supervisor is not None:
            return True
        if self.T_base_optical is None and self.camera_frame:
            self.T_base_optical = chain_static(self.edges, self.base_frame, self.camera_frame)
        if self.T_base_optical is None:
            self.counters['before_extrinsics'] += 1
            return False
        self.supervisor = Supervisor(self.config, self.T_base_optical)
        return True

    def _imu(self, msg: Any) -> list[Label]:
        if not self._ready():
            return []
        stamp, acceleration, orientation = ros_io.imu_sample(msg)
        self.supervisor.add_imu(stamp, acceleration, orientation)
        update = self.supervisor.update(stamp)
        if update is None or not update.labels:
            return []
        if self.first_label_ns is None:
            self.first_label_ns = update.start_stamp_ns
        self.last_label_ns = max(self.last_label_ns, update.pose_stamp_ns)
        self.counters['updates_with_labels'] += 1
        best = max(update.labels, key=lambda label: label.pixels)
        truth_under = self._truth_under(best)
        if math.isfinite(truth_under):
            self.pairs.append((update.cost, truth_under))
        for label in update.labels:
            self.latency_s.append((update.window_end_ns - label.keyframe_stamp_ns) / 1e9)
            self.frames_labelled.add(label.keyframe_stamp_ns)
            covered = np.isfinite(label.mask)
            union = self.labelled.get(label.keyframe_stamp_ns)
            self.labelled[label.keyframe_stamp_ns] = covered if union is None else \
                union | covered
        self.counters['labels'] += len(update.labels)
        if self.truth_costs:
            return [self._with_truth(label) for label in update.labels]
        return update.labels

    def _with_truth(self, label: Label) -> Label:
        """The label's footprint holding the keyframe's ground-truth cost (sampled at the mask
        pixels' centres) instead of the measured one; NaN where there is no ground truth."""
        truth = self.truths.get(label.keyframe_stamp_ns)
        if truth is None:
            self.counters['truth_costs_without_truth'] += 1
            return label._replace(mask=np.full_like(label.mask, np.nan), pixels=0)
        s = truth.shape[0] // label.mask.shape[0]
        sampled = truth[s // 2::s, s // 2::s][:label.mask.shape[0], :label.mask.shape[1]]
        mask = np.where(np.isfinite(label.mask), sampled, np.nan).astype(np.float32)
        return label._replace(mask=mask, pixels=int(np.isfinite(mask).sum()))

    def _truth_under(self, label: Label) -> float:
        """The ground-truth cost under a label: the mean of the keyframe's ground-truth image
        over the label's pixels, each weighted by the ground area it covers (a near pixel
        covers far less ground than a far one, so a plain pixel mean would weigh the near
        end of the swept footprint most); NaN without ground truth."""
        truth = self.truths.get(label.keyframe_stamp_ns)
        frame = next((f for f in self.supervisor.labeller.keyframes
                      if f.stamp_ns == label.keyframe_stamp_ns), None)
        if truth is None or frame is None or frame.T_odom_optical is None:
            return math.nan
        rows, cols = np.nonzero(np.isfinite(_upscaled(label.mask, truth.shape)) &
                                np.isfinite(truth))
        if rows.size == 0:
            return math.nan
        weights = ground_area(frame.camera, frame.T_odom_optical,
                              np.column_stack([cols, rows]).astype(np.float64))
        ok = np.isfinite(weights)
        if not ok.any():
            return math.nan
        return float(np.average(truth[rows[ok], cols[ok]], weights=weights[ok]))

    def keyframe(self, stamp_ns: int) -> None:
        """The pipeline kept the frame stamped stamp_ns in its buffer: label it."""
        if not self._ready() or self.camera is None:
            self.counters['keyframe_before_camera_info'] += 1
            return
        if self.supervisor.add_frame(stamp_ns, self.camera, announced=True):
            self.keyframes.append(stamp_ns)


    # --- numbers ---------------------------------------------------------------------------

    def footprint_iou(self) -> dict[str, Any]:
        """Pooled and per-frame IoU of the labelled region with the oracle footprint, over
        keyframes whose whole labelling horizon (max_age_s) lies between the first and the
        last labelled window (before the first window nothing can be labelled; after the
        last, the bag has ended)."""
        horizon_ns = int(self.config.max_age_s * 1e9)
        inter = union = 0
        per_frame = []
        for stamp in self.keyframes:
            if (self.first_label_ns is None or stamp < self.first_label_ns
                    or stamp + horizon_ns > self.last_label_ns or stamp not in self.oracle):
                continue
            truth = self.oracle[stamp]
            mine = self.labelled.get(stamp)
            mine = np.zeros(truth.shape, bool) if mine is None else _upscaled(mine, truth.shape)
            i, u = int((mine & truth).sum()), int((mine | truth).sum())
            if u:
                inter, union = inter + i, union + u
                per_frame.append(i / u)
        if not union:
            return {'frames': 0}
        return {'frames': len(per_frame), 'pooled': inter / union,
                'median': float(np.median(per_frame)), 'min': float(np.min(per_frame))}

    def summary(self) -> dict[str, Any]:
        """report.json's `supervision` section."""
        counters = {} if self.supervisor is None else self.supervisor.all_counters()
        costs = np.array([p[0] for p in self.pairs])
        truths = np.array([p[1] for p in self.pairs])
        iou = self.footprint_iou()
        return {
            'signal': self.config.signal, 'extrinsics': self.extrinsics,
            'label_costs': 'ground_truth' if self.truth_costs else 'measured',
            'labels': int(self.counters['labels']),
            'label_updates': int(self.counters['updates_with_labels']),
            'keyframes': len(self.keyframes), 'frames_labelled': len(self.frames_labelled),
            'latency_s': percentiles(self.latency_s),
            'spearman_vs_truth': spearman(costs, truths) if len(self.pairs) > 1 else math.nan,
            'pairs_vs_truth': len(self.pairs),
            'footprint_iou': iou.get('pooled', math.nan), 'footprint_iou_detail': iou,
            'counters': {**counters, **{f'replay.{k}': int(v) for k, v in
                                        self.counters.items()}},
            'config': self.config.as_dict(),
        }


def ground_area(camera: CameraModel, T_odom_optical: np.ndarray, pixels: np.ndarray
                ) -> np.ndarray:
    """(N,) relative ground area (m^2 up to the constant 1 / f^2) seen by each pixel (N, 2)
    (u, v) of a camera over the ground z = 0 of odom: solid angle (cos^3 of the angle to the
    optical axis) x range^2 / |cos| of the ray's incidence on the ground; NaN off the ground."""
    rays = camera.pixel_rays(pixels)  # N, 3 unit, optical
    hits = intersect_ground(rays, T_odom_optical)
    down = np.abs(rays @ T_odom_optical[:3, :3].T)[:, 2]  # N: |ray . ground normal|
    distance = np.linalg.norm(hits.points - T_odom_optical[:3, 3], axis=1)  # N, NaN off
    with np.errstate(invalid='ignore', divide='ignore'):
        area = rays[:, 2] ** 3 * distance ** 2 / down
    return np.where(hits.valid, area, np.nan)


def _upscaled(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A (H / s, W / s) label mask at (H, W) by repetition (mask_scale s)."""
    s = shape[0] // mask.shape[0]
    return mask if s == 1 else np.repeat(np.repeat(mask, s, axis=0), s, axis=1)


__all__ = ['SupervisedReplay', 'SupervisionSetup', 'SupervisionTopics', 'add_static_transforms',
           'chain_static']
