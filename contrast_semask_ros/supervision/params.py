"""The patch_cost node's parameters: one table for the node, replay's --supervision and the
README (test/test_params.py checks the README's table against it). ROS-free.

Scopes: 'supervision' (the core, `SupervisionConfig`; replay offers each as a CLI option) and
'ros' (the node only: topics, frames, diagnostics).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from contrast_semask_ros.params import Param, ParamTable
from contrast_semask_ros.supervision.supervisor import SIGNALS, SupervisionConfig

_D = SupervisionConfig()

PARAMS: tuple[Param, ...] = (
    Param('signal', str, _D.signal, 'traversal cost from imu (vibration band power), velocity '
          '(commanded vs measured speed) or both', 'supervision', choices=SIGNALS),
    Param('robot_length', float, _D.robot_length, 'footprint length along base x (m)',
          'supervision', 0.0, 50.0, low_open=True),
    Param('robot_width', float, _D.robot_width, 'footprint width along base y (m)',
          'supervision', 0.0, 50.0, low_open=True),
    Param('ground_offset', float, _D.ground_offset, 'ground height in the base frame (m)',
          'supervision', -10.0, 10.0),
    Param('max_range_m', float, _D.max_range_m, 'label keyframes whose camera was within this '
          'distance of the footprint (m)', 'supervision', 0.0, 1000.0, low_open=True),
    Param('max_age_s', float, _D.max_age_s, 'and at most this old; keep below the cost '
          "node's buffer_age_s", 'supervision', 0.0, 3600.0, low_open=True),
    Param('max_keyframes', int, _D.max_keyframes, "keyframes kept; keep below the cost node's "
          'buffer_frames', 'supervision', 1, 10_000),
    Param('keyframe_distance_m', float, _D.keyframe_distance_m, 'own keyframes (when the cost '
          'node announces none): one per this distance travelled', 'supervision', 0.0, 100.0,
          low_open=True),
    Param('keyframe_period_s', float, _D.keyframe_period_s, 'and one per this period while the '
          'pose is unknown', 'supervision', 0.0, 3600.0, low_open=True),
    Param('mask_scale', int, _D.mask_scale, 'masks at image size / mask_scale (or the largest '
          'smaller integer that divides the size); 4 matches the bank\'s stride-4 grid',
          'supervision', 1, 64),
    Param('max_labels_per_update', int, _D.max_labels_per_update, 'keyframes labelled per '
          'update, spread near to far and rotating; 0 = every keyframe that saw the footprint',
          'supervision', 0, 10_000),
    Param('label_period_s', float, _D.label_period_s, 'sensor time between label updates',
          'supervision', 0.0, 60.0, low_open=True),
    Param('imu_window_s', float, _D.imu_window_s, 'IMU band-power window (s)', 'supervision',
          0.05, 60.0),
    Param('imu_f_low', float, _D.imu_f_low, 'band low edge (Hz)', 'supervision', 0.0, 1000.0),
    Param('imu_f_high', float, _D.imu_f_high, 'band high edge (Hz; clipped to Nyquist)',
          'supervision', 0.0, 1000.0, low_open=True),
    Param('power_at_cost_0', float, _D.power_at_cost_0, 'band power ((m/s^2)^2) that costs 0; '
          'see contrast-semask-calibrate-imu', 'supervision', 0.0, 1e9, low_open=True),
    Param('power_at_cost_1', float, _D.power_at_cost_1, 'band power that costs 1',
          'supervision', 0.0, 1e9, low_open=True),
    Param('power_mapping', str, _D.power_mapping, 'power to cost: log or linear',
          'supervision', choices=('log', 'linear')),
    Param('min_cmd_speed', float, _D.min_cmd_speed, 'velocity signal: no label below this '
          'commanded speed (m/s)', 'supervision', 0.0, 100.0),
    Param('combine_rule', str, _D.combine_rule, 'signal both: max or weighted',
          'supervision', choices=('max', 'weighted')),
    Param('imu_weight', float, _D.imu_weight, 'weighted rule: IMU weight', 'supervision',
          0.0, 1.0),
    Param('velocity_weight', float, _D.velocity_weight, 'weighted rule: velocity weight',
          'supervision', 0.0, 1.0),
    Param('max_speed_mps', float, _D.max_speed_mps, 'odometry faster than this between two '
          'poses is a jump (history restarts)', 'supervision', 0.0, 1000.0, low_open=True),
    Param('max_pose_gap_s', float, _D.max_pose_gap_s, 'no pose interpolated across a longer '
          'odometry gap (s)', 'supervision', 0.0, 60.0, low_open=True),
    # the node only
    Param('camera_pose', list, [], 'camera body frame (camera_link) in the base frame: x, y, z '
          '(m), roll, pitch, yaw (rad); empty = from TF', 'ros', length=6),
    Param('base_frame', str, 'base_link', 'robot base frame (TF)', 'ros'),
    Param('camera_frame', str, '', "camera optical frame (TF); empty = camera_info's "
          'header.frame_id', 'ros'),
    Param('use_keyframes', bool, True, "label only the frames the cost node announces on "
          "'keyframes'; false: pick keyframes from camera_info", 'ros'),
    Param('cmd_vel_stamped', bool, False, 'cmd_vel is geometry_msgs/TwistStamped (else Twist)',
          'ros'),
    Param('publish_footprints', bool, True, "footprints MarkerArray (only while subscribed)",
          'ros'),
    Param('diagnostics_period_s', float, 1.0, 'period of /diagnostics; 0 = none', 'ros',
          0.0, 3600.0),
)

TABLE = ParamTable(PARAMS, 'patch_cost')

# The cost node's settings with self-supervision (launch file and replay --supervision): keep a
# keyframe per 0.2 m travelled, and enough of them for max_range_m (8 m: 40 keyframes) with a
# margin over max_keyframes (56), so a label never names a frame the cost node dropped.
COST_MAP_OVERRIDES: dict[str, Any] = {'keyframe_distance_m': 0.2, 'buffer_frames': 60}


def config_from_values(values: Mapping[str, Any]) -> SupervisionConfig:
    """The core's settings out of a full parameter dict (checked by the table first)."""
    names = {f.name for f in fields(SupervisionConfig)}
    checked = {name: TABLE.check(name, value) for name, value in values.items()
               if name in names}
    return SupervisionConfig(**checked)


def camera_pose(values: Mapping[str, Any]) -> tuple[float, ...] | None:
    """The camera_pose parameter as 6 floats, None when empty (extrinsics from TF)."""
    pose = TABLE.check('camera_pose', values.get('camera_pose') or ())
    return pose or None


__all__ = ['COST_MAP_OVERRIDES', 'PARAMS', 'TABLE', 'camera_pose', 'config_from_values']
