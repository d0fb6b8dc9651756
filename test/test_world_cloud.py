"""Cost clouds (contrast_semask_ros/world/cloud.py): the PointCloud2 layout (byte-identical to
sensor_msgs_py's create_cloud where it is installed, a numpy structured dtype round trip and the
real rclpy and rosbags messages here), and known answers of the ground-plane and depth paths.

Most tests paint the cost image with each pixel's row and the confidence with its column, so
every point of a cloud says which pixel it came from.
"""

from __future__ import annotations

import array
import itertools
import math
import types

import numpy as np
import pytest

from contrast_semask_ros.supervision.geometry import (
    EQUIDISTANT,
    PLUMB_BOB,
    CameraModel,
    camera_pose_to_optical,
    intersect_ground,
    invert,
    pose_from_xyz_rpy,
    transform_points,
)
from contrast_semask_ros.world import cloud as cloud_module
from contrast_semask_ros.world.cloud import (
    CLOUD_FIELDS,
    FLOAT32,
    POINT_STEP,
    CloudError,
    CloudField,
    CostCloud,
    CostCloudBuilder,
    cloud_array,
    cloud_dtype,
    cloud_fields,
    cloud_from_points,
    fill_cloud_message,
    layout_difference,
    sample_grid,
)

ROS_REASON = 'needs the ROS 2 Jazzy wheels: pip install -r requirements/ros-jazzy.txt'
ROSBAGS_REASON = 'needs rosbags (requirements/dev.txt)'
SENSOR_MSGS_PY_REASON = ('sensor_msgs_py (ROS 2 common_interfaces) is not on PyPI; it comes with '
                         'a ROS 2 install (ros-<distro>-sensor-msgs-py): source it to run this')

H, W = 48, 64
CX, CY = 29.0, 21.0  # a sampled pixel at stride 4 (offset 1): rows/columns 1, 5, 9, ...


def _camera(width: int = W, height: int = H, f: float = 32.0, cx: float = CX, cy: float = CY,
            D: tuple[float, ...] = (), R_rect: np.ndarray | None = None) -> CameraModel:
    K = np.array([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])
    return CameraModel(width, height, K, np.array(D, dtype=np.float64), PLUMB_BOB, R_rect)


def _scaled(camera: CameraModel, k: float) -> CameraModel:
    """The same camera at k times the resolution (pixel centres map as (u + 0.5) k - 0.5)."""
    K = camera.K.copy()
    K[0, 0] *= k
    K[1, 1] *= k
    K[:2, 2] = (K[:2, 2] + 0.5) * k - 0.5
    return CameraModel(round(camera.width * k), round(camera.height * k), K, camera.D,
                       camera.distortion_model, camera.R_rect)


def _index_planes(height: int = H, width: int = W) -> tuple[np.ndarray, np.ndarray]:
    """cost = row index, confidence = column index (float32, H, W each)."""
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    return rows, cols


def _pixels(cloud: CostCloud) -> set[tuple[int, int]]:
    """The (row, column) of each point of a cloud built from _index_planes."""
    return {(int(r), int(c)) for r, c in cloud.points[:, 3:5]}


def _sampled(stride: int, height: int = H, width: int = W) -> list[tuple[int, int]]:
    grid = sample_grid(height, width, stride)
    return list(itertools.product(grid.rows.tolist(), grid.cols.tolist()))


def _pose(height: float, pitch: float, x: float = 0.0, roll: float = 0.0,
          yaw: float = 0.0) -> np.ndarray:
    """T_base_optical of a camera at (x, 0, height) pitched down by `pitch` radians."""
    return camera_pose_to_optical(x, 0.0, height, roll, pitch, yaw)


def _plane_depth(camera: CameraModel, T_ground_optical: np.ndarray,
                 ground_z: float = 0.0) -> np.ndarray:
    """(H, W) float64: the true z-depth of the plane z = ground_z at every pixel; 0 where the
    pixel's ray misses it."""
    v, u = np.mgrid[0:camera.height, 0:camera.width]
    rays = camera.pixel_rays(np.column_stack([u.ravel(), v.ravel()]).astype(float))  # N, 3
    hits = intersect_ground(rays, T_ground_optical, ground_z)
    t = np.linalg.norm(hits.points - T_ground_optical[:3, 3], axis=1)  # N: range along ray
    depth = np.where(hits.valid, t * (rays @ camera.R_rect.T)[:, 2], 0.0)
    return depth.reshape(camera.height, camera.width)


# --- layout ---------------------------------------------------------------------------------


def test_layout_is_x_y_z_cost_confidence_float32_little_endian_20_bytes():
    assert [tuple(f) for f in CLOUD_FIELDS] == [
        ('x', 0, 7, 1), ('y', 4, 7, 1), ('z', 8, 7, 1), ('cost', 12, 7, 1),
        ('confidence', 16, 7, 1)]
    assert FLOAT32 == 7 and POINT_STEP == 20
    cost, confidence = _index_planes()
    cloud = CostCloudBuilder(stride=4).from_ground(cost, confidence, _camera(), _pose(1.0, 0.5))
    layout = cloud.layout
    assert layout.fields == CLOUD_FIELDS
    assert (layout.height, layout.point_step, layout.is_bigendian) == (1, 20, False)
    assert layout.width == len(cloud.points) > 0
    assert layout.row_step == 20 * layout.width == len(cloud.data)
    assert isinstance(cloud.data, array.array) and cloud.data.typecode == 'B'
    assert cloud.points.dtype == np.float32 and cloud.points.shape == (layout.width, 5)
    assert np.shares_memory(cloud.points, np.frombuffer(cloud.data, np.uint8))
    assert layout.is_dense and np.isfinite(cloud.points).all()
    assert cloud.range_m.shape == (layout.width,)


def test_payload_round_trips_through_the_dtype_of_its_own_fields():
    cost, confidence = _index_planes()
    cloud = CostCloudBuilder(stride=3).from_ground(cost, confidence, _camera(), _pose(1.0, 0.5))
    dtype = cloud_dtype(cloud.layout.fields, cloud.layout.point_step)
    assert dtype.itemsize == 20 and dtype.names == ('x', 'y', 'z', 'cost', 'confidence')
    read = np.frombuffer(bytes(cloud.data), dtype)  # N
    for k, name in enumerate(dtype.names):
        np.testing.assert_array_equal(read[name], cloud.points[:, k])
    msg = types.SimpleNamespace(data=None)
    fill_cloud_message(msg, cloud, CloudField)
    assert isinstance(msg.data, bytes) and msg.fields[3] == CloudField('cost', 12, 7, 1)
    viewed = cloud_array(msg)  # 1, N
    assert viewed.shape == (1, cloud.layout.width)
    np.testing.assert_array_equal(viewed['confidence'][0], cloud.points[:, 4])


def test_layout_difference_names_what_differs():
    """The start-up check's comparison (world_node.sensor_msgs_py_check): nothing for the same
    cloud made twice, whatever is_dense says; each field of the layout and the payload."""
    points = [(0.5, -1.0, 0.0, 0.25, 1.0), (2.0, 0.0, 0.1, np.nan, 0.5)]
    cloud = cloud_from_points(points)
    assert cloud.layout.width == 2 and not cloud.layout.is_dense
    np.testing.assert_array_equal(cloud.points, np.array(points, np.float32))

    def message(**changes):
        msg = fill_cloud_message(types.SimpleNamespace(data=None), cloud, CloudField)
        return types.SimpleNamespace(**{**vars(msg), **changes})

    assert layout_difference(message(), message(is_dense=True)) == ''
    assert layout_difference(message(), message(point_step=24, row_step=48)) == \
        'point_step 20 vs 24; row_step 40 vs 48'
    swapped = list(CLOUD_FIELDS)
    swapped[3], swapped[4] = swapped[4]._replace(offset=12), swapped[3]._replace(offset=16)
    assert layout_difference(message(), message(fields=swapped)).startswith(
        "fields [('x', 0, 7, 1)")
    assert layout_difference(message(), message(data=bytes(40))) == 'the data bytes'


def test_layout_is_byte_identical_to_sensor_msgs_py_create_cloud():
    point_cloud2 = pytest.importorskip('sensor_msgs_py.point_cloud2',
                                       reason=SENSOR_MSGS_PY_REASON)
    from sensor_msgs.msg import PointCloud2, PointField
    from std_msgs.msg import Header

    cost, confidence = _index_planes()
    cost[5, 5] = np.nan
    cloud = CostCloudBuilder(stride=2, keep_unknown=True).from_ground(
        cost, confidence, _camera(), _pose(1.0, 0.5))
    ours = fill_cloud_message(PointCloud2(), cloud, PointField, Header(frame_id='camera'))
    theirs = point_cloud2.create_cloud(Header(frame_id='camera'), ours.fields,
                                       [tuple(p) for p in cloud.points.tolist()])
    assert bytes(ours.data) == bytes(theirs.data)
    for name in ('height', 'width', 'point_step', 'row_step', 'is_bigendian'):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert [(f.name, f.offset, f.datatype, f.count) for f in theirs.fields] == \
        [tuple(f) for f in CLOUD_FIELDS]
    read = point_cloud2.read_points(ours)
    np.testing.assert_array_equal(read['x'], cloud.points[:, 0])


@pytest.mark.ros
def test_rclpy_message_takes_the_payload_without_a_copy_and_serialises():
    msg_module = pytest.importorskip('sensor_msgs.msg', reason=ROS_REASON)
    std_msgs = pytest.importorskip('std_msgs.msg', reason=ROS_REASON)
    serialization = pytest.importorskip('rclpy.serialization', reason=ROS_REASON)
    cost, confidence = _index_planes()
    cloud = CostCloudBuilder().from_ground(cost, confidence, _camera(), _pose(1.0, 0.5))
    msg = fill_cloud_message(msg_module.PointCloud2(), cloud, msg_module.PointField,
                             std_msgs.Header(frame_id='camera_optical_frame'))
    assert msg.data is cloud.data  # the payload itself, not a copy
    back = serialization.deserialize_message(serialization.serialize_message(msg),
                                             msg_module.PointCloud2)
    assert (back.width, back.row_step, back.is_dense) == (cloud.layout.width,
                                                          cloud.layout.row_step, True)
    assert [(f.name, f.offset, f.datatype, f.count) for f in back.fields] == \
        [tuple(f) for f in CLOUD_FIELDS]
    read = cloud_array(back)[0]
    np.testing.assert_array_equal(read['z'], cloud.points[:, 2])
    np.testing.assert_array_equal(read['cost'], cloud.points[:, 3])


def test_rosbags_message_takes_a_view_and_serialises():
    typesys = pytest.importorskip('rosbags.typesys', reason=ROSBAGS_REASON)
    ts = typesys.get_typestore(typesys.Stores.ROS2_JAZZY)
    PointCloud2 = ts.types['sensor_msgs/msg/PointCloud2']
    PointField = ts.types['sensor_msgs/msg/PointField']
    Header, Time = ts.types['std_msgs/msg/Header'], ts.types['builtin_interfaces/msg/Time']
    cost, confidence = _index_planes()
    cloud = CostCloudBuilder().from_ground(cost, confidence, _camera(), _pose(1.0, 0.5))
    msg = PointCloud2(header=Header(stamp=Time(sec=1, nanosec=2), frame_id='base_link'),
                      data=np.frombuffer(cloud.data, np.uint8),
                      **cloud_fields(cloud, PointField))
    raw = ts.serialize_cdr(msg, PointCloud2.__msgtype__)
    back = ts.deserialize_cdr(raw, PointCloud2.__msgtype__)
    read = cloud_array(back)[0]
    np.testing.assert_array_equal(read['x'], cloud.points[:, 0])
    np.testing.assert_array_equal(read['confidence'], cloud.points[:, 4])
    filled = fill_cloud_message(msg, cloud, PointField)  # an np.uint8 container: a view
    assert np.shares_memory(filled.data, np.frombuffer(cloud.data, np.uint8))


def test_cloud_dtype_reads_other_layouts_and_refuses_bad_fields():
    fields = [CloudField('x', 0, 7, 1), CloudField('rgb', 8, 6, 1), CloudField('n', 12, 8, 2),
              CloudField('', 28, 2, 1)]
    dtype = cloud_dtype(fields, 32)
    assert dtype.itemsize == 32 and dtype.names == ('x', 'rgb', 'n', 'unnamed_field_3')
    assert dtype['n'].shape == (2,) and dtype.fields['n'][1] == 12
    big = cloud_dtype(fields, 32, is_bigendian=True)
    assert big['x'].byteorder == '>' and big['n'].base.byteorder == '>'
    points = np.zeros(2, big)
    points['x'] = [1.5, -2.0]
    msg = types.SimpleNamespace(height=1, width=2, fields=fields, is_bigendian=True,
                                point_step=32, row_step=64, data=points.tobytes())
    np.testing.assert_array_equal(cloud_array(msg)['x'][0], [1.5, -2.0])
    padded = types.SimpleNamespace(height=2, width=1, fields=fields, is_bigendian=False,
                                   point_step=32, row_step=40, data=bytes(72))
    assert cloud_array(padded).shape == (2, 1)
    with pytest.raises(CloudError, match='datatype 9'):
        cloud_dtype([CloudField('x', 0, 9, 1)], 4)
    with pytest.raises(CloudError, match='outside point_step 16'):
        cloud_dtype([CloudField('x', 12, 8, 1)], 16)
    with pytest.raises(CloudError, match='count 0'):
        cloud_dtype([CloudField('x', 0, 7, 0)], 4)
    with pytest.raises(CloudError, match='twice'):
        cloud_dtype([CloudField('x', 0, 7, 1), CloudField('x', 4, 7, 1)], 8)
    with pytest.raises(CloudError, match='truncated'):
        cloud_array(types.SimpleNamespace(**{**vars(msg), 'data': bytes(40)}))
    with pytest.raises(CloudError, match='row_step 20'):
        cloud_array(types.SimpleNamespace(**{**vars(msg), 'row_step': 20}))


# --- ground plane: known answers ------------------------------------------------------------


def test_horizon_row_is_at_infinity_and_dropped():
    """A level camera: the principal row is the horizon (its rays never meet the ground), the
    rows above it look at the sky; every sampled row below it lands on the ground."""
    cost, confidence = _index_planes()
    cloud = CostCloudBuilder(stride=4).from_ground(cost, confidence, _camera(), _pose(1.0, 0.0))
    rows = {r for r, _ in _pixels(cloud)}
    assert rows == {r for r in sample_grid(H, W, 4).rows.tolist() if r > CY}
    assert int(CY) in sample_grid(H, W, 4).rows  # the horizon row was sampled, and dropped
    nearest = cloud.points[cloud.points[:, 3] == CY + 4]
    np.testing.assert_allclose(nearest[:, 2], 1.0 / (4 / 32.0), rtol=1e-6)  # z = h f / dv


@pytest.mark.parametrize('height, pitch', [(1.0, 0.35), (0.6, 0.5), (1.5, math.pi / 2 - 0.2)])
def test_principal_point_lands_h_over_tan_theta_ahead(height: float, pitch: float):
    cost, confidence = _index_planes()
    T_base_optical = _pose(height, pitch, x=0.3)
    builder = CostCloudBuilder(stride=4)
    base = builder.from_ground(cost, confidence, _camera(), T_base_optical,
                               T_cloud_optical=T_base_optical)
    centre = (base.points[:, 3] == CY) & (base.points[:, 4] == CX)
    assert centre.sum() == 1
    np.testing.assert_allclose(base.points[centre, :3][0],
                               [0.3 + height / math.tan(pitch), 0.0, 0.0], atol=1e-5)
    np.testing.assert_allclose(base.range_m[centre], height / math.sin(pitch), rtol=1e-6)
    np.testing.assert_allclose(base.origin, [0.3, 0.0, height])
    optical = builder.from_ground(cost, confidence, _camera(), T_base_optical)
    centre = (optical.points[:, 3] == CY) & (optical.points[:, 4] == CX)
    np.testing.assert_allclose(optical.points[centre, :3][0], [0, 0, height / math.sin(pitch)],
                               atol=1e-5)
    np.testing.assert_array_equal(optical.origin, np.zeros(3))
    np.testing.assert_allclose(optical.range_m, np.linalg.norm(optical.points[:, :3], axis=1),
                               rtol=1e-6)


@pytest.mark.parametrize('D', [(), (-0.2, 0.05, 0.001, -0.002, 0.0)])
def test_points_lie_on_the_ground_plane_where_intersect_ground_puts_them(D):
    camera = _camera(D=D)
    T_ground_optical = pose_from_xyz_rpy((2.0, -1.0, 0.9), (0.05, 0.0, 0.7)) @ _pose(
        0.0, 0.45, roll=0.03)
    ground_z = -0.15
    cost, confidence = _index_planes()
    builder = CostCloudBuilder(stride=3, max_range_m=25.0)
    cloud = builder.from_ground(cost, confidence, camera, T_ground_optical, ground_z,
                                T_cloud_optical=T_ground_optical)
    np.testing.assert_allclose(cloud.points[:, 2], ground_z, atol=1e-5)
    pixels = np.array(_sampled(3), dtype=np.float64)  # M, 2 (row, column)
    hits = intersect_ground(camera.pixel_rays(pixels[:, ::-1]), T_ground_optical, ground_z,
                            max_range=25.0)
    expected = {tuple(p) for p in pixels[hits.valid].astype(int).tolist()}
    assert _pixels(cloud) == expected and len(cloud.points) == len(expected)
    order = np.lexsort((cloud.points[:, 4], cloud.points[:, 3]))  # row-major like `pixels`
    np.testing.assert_allclose(cloud.points[order, :3], hits.points[hits.valid], atol=2e-5)
    # the same points in the default optical frame
    optical = builder.from_ground(cost, confidence, camera, T_ground_optical, ground_z)
    np.testing.assert_allclose(transform_points(T_ground_optical, optical.points[:, :3]),
                               cloud.points[:, :3], atol=2e-5)


def test_a_fisheye_beyond_its_model_drops_those_pixels_and_keeps_the_rest_on_the_plane():
    K = np.array([[12.0, 0.0, CX], [0.0, 12.0, CY], [0.0, 0.0, 1.0]])  # ~200 degrees across
    camera = CameraModel(W, H, K, np.array([0.1, -0.05, 0.0, 0.0]), EQUIDISTANT)
    T = _pose(1.0, math.pi / 2)
    cost, confidence = _index_planes()
    cloud = CostCloudBuilder(stride=2).from_ground(cost, confidence, camera, T,
                                                   T_cloud_optical=T)
    rays = camera.pixel_rays(np.array(_sampled(2), dtype=np.float64)[:, ::-1])
    assert 0 < cloud.layout.width < len(_sampled(2))
    assert cloud.layout.width <= int(np.isfinite(rays).all(axis=1).sum())
    assert np.isfinite(cloud.points).all()
    np.testing.assert_allclose(cloud.points[:, 2], 0.0, atol=1e-5)


def test_unknown_pixels_are_dropped_or_kept_as_nan():
    camera, T = _camera(), _pose(1.0, math.pi / 2)  # looking straight down: every ray hits
    cost, confidence = _index_planes()
    cost[5, 9] = cost[13, 1] = np.nan  # sampled at stride 4
    dropped = CostCloudBuilder().from_ground(cost, confidence, camera, T)
    assert _pixels(dropped) == set(_sampled(4)) - {(5, 9), (13, 1)}
    assert dropped.layout.is_dense
    kept = CostCloudBuilder(keep_unknown=True).from_ground(cost, confidence, camera, T)
    assert kept.layout.width == len(_sampled(4))
    unknown = np.isnan(kept.points[:, 3])
    assert sorted(kept.points[unknown, 4].tolist()) == [1.0, 9.0]
    assert not kept.layout.is_dense and np.isfinite(kept.points[:, :3]).all()
    # is_dense: every value finite
    cost[5, 9] = cost[13, 1] = 2.0
    assert CostCloudBuilder(keep_unknown=True).from_ground(cost, confidence, camera,
                                                           T).layout.is_dense
    confidence[1, 1] = np.nan
    assert not CostCloudBuilder().from_ground(cost, confidence, camera, T).layout.is_dense
    confidence[1, 1] = 0.0
    cost[1, 1] = np.inf  # a (lethal) cost, not an unknown one: kept
    lethal = CostCloudBuilder().from_ground(cost, confidence, camera, T)
    assert np.isinf(lethal.points[:, 3]).sum() == 1 and not lethal.layout.is_dense


def test_an_image_with_no_known_cost_gives_an_empty_dense_cloud():
    cost = np.full((H, W), np.nan, np.float32)
    cloud = CostCloudBuilder().from_ground(cost, cost.copy(), _camera(), _pose(1.0, 0.5))
    assert (cloud.layout.width, cloud.layout.row_step, len(cloud.data)) == (0, 0, 0)
    assert cloud.points.shape == (0, 5) and cloud.layout.is_dense
    msg = fill_cloud_message(types.SimpleNamespace(data=None), cloud, CloudField)
    assert cloud_array(msg).shape == (1, 0)


@pytest.mark.parametrize('stride', [1, 2, 3, 4, 5, 8])
def test_stride_samples_every_stride_th_pixel_from_the_block_centre(stride: int):
    cost, confidence = _index_planes()
    cloud = CostCloudBuilder(stride=stride).from_ground(cost, confidence, _camera(),
                                                        _pose(1.0, math.pi / 2))
    offset = (stride - 1) // 2
    assert sample_grid(H, W, stride).offset == offset
    assert _pixels(cloud) == set(itertools.product(range(offset, H, stride),
                                                   range(offset, W, stride)))
    assert cloud.layout.width == len(range(offset, H, stride)) * len(range(offset, W, stride))


def test_max_range_drops_far_points():
    cost, confidence = _index_planes()
    camera, T = _camera(), _pose(1.0, 0.2)
    everything = CostCloudBuilder(stride=2).from_ground(cost, confidence, camera, T)
    near = CostCloudBuilder(stride=2, max_range_m=6.0).from_ground(cost, confidence, camera, T)
    assert everything.range_m.max() > 6.0 >= near.range_m.max()
    assert near.layout.width == int((everything.range_m <= 6.0).sum()) > 0
    np.testing.assert_allclose(near.range_m, np.linalg.norm(near.points[:, :3], axis=1),
                               rtol=1e-6)


def test_rays_are_computed_once_per_camera_and_the_pose_is_not_stale(monkeypatch):
    calls = []
    original = CameraModel.pixel_rays

    def counting(self: CameraModel, pixels: np.ndarray) -> np.ndarray:
        calls.append(len(pixels))
        return original(self, pixels)

    monkeypatch.setattr(CameraModel, 'pixel_rays', counting)
    cost, confidence = _index_planes()
    builder = CostCloudBuilder(stride=4)
    low = builder.from_ground(cost, confidence, _camera(), _pose(1.0, 0.5))
    for _ in range(3):  # a new but equal CameraModel each frame, as from each camera_info
        again = builder.from_ground(cost, confidence, _camera(), _pose(1.0, 0.5))
    high = builder.from_ground(cost, confidence, _camera(), _pose(2.0, 0.5))
    assert len(calls) == 1
    np.testing.assert_array_equal(again.points, low.points)
    np.testing.assert_allclose(high.points[:, :3], 2.0 * low.points[:, :3], rtol=1e-6)
    builder.from_ground(cost, confidence, _camera(f=30.0), _pose(1.0, 0.5))
    assert len(calls) == 2  # new intrinsics: new rays


def test_a_cloud_frame_that_moves_every_frame_is_applied_every_frame():
    """The cloud in odom while the robot drives: the cached ground and depth geometry is moved
    to each frame's T_cloud_optical (A, B, A: nothing stale)."""
    camera, T_base_optical = _camera(), _pose(1.0, 0.5)
    cost, confidence = _index_planes()
    depth = _plane_depth(camera, T_base_optical).astype(np.float32)
    reference = CostCloudBuilder()
    builder = CostCloudBuilder()
    for x, yaw in ((0.0, 0.0), (3.0, 0.8), (0.0, 0.0), (-1.0, -2.0)):
        T_odom_optical = pose_from_xyz_rpy((x, 0.5, 0.0), (0.0, 0.0, yaw)) @ T_base_optical
        ground = builder.from_ground(cost, confidence, camera, T_base_optical,
                                     T_cloud_optical=T_odom_optical)
        depth_cloud = builder.from_depth(depth, camera, cost, confidence,
                                         T_cloud_optical=T_odom_optical)
        optical = reference.from_ground(cost, confidence, camera, T_base_optical)
        expected = transform_points(T_odom_optical, optical.points[:, :3])
        np.testing.assert_allclose(ground.points[:, :3], expected, atol=2e-5)
        np.testing.assert_allclose(ground.origin, T_odom_optical[:3, 3])
        np.testing.assert_allclose(ground.points[:, 2], 0.0, atol=2e-5)
        np.testing.assert_allclose(depth_cloud.points[:, 2], 0.0, atol=1e-4)
        np.testing.assert_allclose(depth_cloud.origin, T_odom_optical[:3, 3])


def test_a_cloud_is_never_overwritten_by_the_next_frame():
    cost, confidence = _index_planes()
    builder = CostCloudBuilder()
    first = builder.from_ground(cost, confidence, _camera(), _pose(1.0, 0.5))
    kept = first.points.copy()
    builder.from_ground(cost + 100, confidence, _camera(), _pose(1.0, 0.5))
    np.testing.assert_array_equal(first.points, kept)


# --- depth ----------------------------------------------------------------------------------


@pytest.mark.parametrize('encoding', ['32FC1', '16UC1'])
def test_depth_of_the_ground_puts_points_on_the_plane(encoding: str):
    camera, T = _camera(D=(-0.1, 0.02, 0.0, 0.0, 0.0)), _pose(1.2, 0.5, x=0.3)
    truth = _plane_depth(camera, T)  # H, W metres, 0 = no ground
    truth[truth > 60.0] = 0.0  # beyond a sensor's range (and 16UC1's 65.535 m): no return
    depth = (truth.astype(np.float32) if encoding == '32FC1'
             else np.round(truth * 1000).astype(np.uint16))
    depth[9, 13] = depth[25, 29] = 0  # invalid measurements (sampled pixels below the horizon)
    cost, confidence = _index_planes()
    builder = CostCloudBuilder(stride=4, max_range_m=30.0)
    cloud = builder.from_depth(depth, camera, cost, confidence, encoding, T_cloud_optical=T)
    tolerance = 1e-3 if encoding == '16UC1' else 1e-5  # mm rounding
    np.testing.assert_allclose(cloud.points[:, 2], 0.0, atol=tolerance)
    ground = builder.from_ground(cost, confidence, camera, T, T_cloud_optical=T)
    assert _pixels(cloud) == _pixels(ground) - {(9, 13), (25, 29)}
    assert (25, 29) in _pixels(ground)
    by_pixel = {(int(r), int(c)): p for r, c, p in zip(*ground.points[:, 3:5].T,
                                                          ground.points[:, :3], strict=True)}
    expected = np.array([by_pixel[(int(r), int(c))] for r, c in cloud.points[:, 3:5]])
    np.testing.assert_allclose(cloud.points[:, :3], expected, atol=3e-3, rtol=0)
    np.testing.assert_allclose(cloud.range_m,
                               np.linalg.norm(cloud.points[:, :3] - T[:3, 3], axis=1),
                               rtol=1e-5)


def test_depth_is_z_not_range_and_invalid_values_are_dropped():
    camera = _camera()
    depth = np.full((H, W), 2.0, np.float32)  # a wall 2 m in front of the camera
    depth[1, 1], depth[1, 5], depth[1, 9], depth[1, 13] = 0.0, np.nan, np.inf, -1.0
    cost, confidence = _index_planes()
    cloud = CostCloudBuilder(stride=4).from_depth(depth, camera, cost, confidence, '32FC1')
    assert _pixels(cloud) == set(_sampled(4)) - {(1, 1), (1, 5), (1, 9), (1, 13)}
    np.testing.assert_allclose(cloud.points[:, 2], 2.0, rtol=1e-7)
    u, v = cloud.points[:, 4], cloud.points[:, 3]
    np.testing.assert_allclose(cloud.points[:, 0], 2.0 * (u - CX) / 32.0, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(cloud.points[:, 1], 2.0 * (v - CY) / 32.0, rtol=1e-6, atol=1e-6)
    assert cloud.range_m.max() > 2.0 and cloud.range_m.min() == pytest.approx(2.0)
    near = CostCloudBuilder(stride=4, max_range_m=2.1).from_depth(depth, camera, cost,
                                                                 confidence)
    assert 0 < near.layout.width < cloud.layout.width and near.range_m.max() <= 2.1


def test_depth_of_a_rectified_camera_is_z_in_the_rectified_frame():
    R_rect = pose_from_xyz_rpy((0, 0, 0), (0.02, -0.03, 0.01))[:3, :3]
    camera = _camera(R_rect=R_rect)
    depth = np.full((H, W), 3.0, np.float32)
    cost, confidence = _index_planes()
    cloud = CostCloudBuilder(stride=4).from_depth(depth, camera, cost, confidence)
    np.testing.assert_allclose((cloud.points[:, :3] @ R_rect.T)[:, 2], 3.0, rtol=1e-6)


@pytest.mark.parametrize('k', [2, 0.5])
def test_depth_at_a_multiple_or_divisor_of_the_cost_size(k: float):
    camera = _camera()
    depth_camera = _scaled(camera, k)
    T = _pose(1.0, math.pi / 2)  # looking straight down: depth 1 m everywhere
    depth = _plane_depth(depth_camera, T).astype(np.float32)
    cost, confidence = _index_planes()
    cloud = CostCloudBuilder(stride=4).from_depth(depth, depth_camera, cost, confidence,
                                                  T_cloud_optical=T)
    assert _pixels(cloud) == set(_sampled(4))
    np.testing.assert_allclose(cloud.points[:, 2], 0.0, atol=1e-6)
    # cost pixel j reads the depth pixel that contains its centre: k j + k // 2 or j // (1/k)
    columns = cloud.points[:, 4].astype(int)
    depth_u = columns * 2 + 1 if k == 2 else columns // 2
    x_optical = (depth_u - depth_camera.K[0, 2]) / depth_camera.K[0, 0]  # at depth 1 m
    np.testing.assert_allclose(-cloud.points[:, 1], x_optical, atol=1e-6)  # base y = -x_opt


def test_depth_points_in_another_frame_and_unknown_costs():
    camera, T = _camera(), _pose(1.0, 0.6)
    depth = _plane_depth(camera, T).astype(np.float32)
    cost, confidence = _index_planes()
    cost[29, 29] = np.nan
    optical = CostCloudBuilder(keep_unknown=True).from_depth(depth, camera, cost, confidence)
    base = CostCloudBuilder(keep_unknown=True).from_depth(depth, camera, cost, confidence,
                                                         T_cloud_optical=T)
    np.testing.assert_allclose(base.points[:, :3],
                               transform_points(T, optical.points[:, :3]), atol=1e-5)
    np.testing.assert_allclose(transform_points(invert(T), base.origin[None])[0], 0,
                               atol=1e-12)
    assert np.isnan(base.points[:, 3]).sum() == 1 and not base.layout.is_dense
    dropped = CostCloudBuilder().from_depth(depth, camera, cost, confidence, T_cloud_optical=T)
    assert dropped.layout.width == base.layout.width - 1 and dropped.layout.is_dense


# --- errors ---------------------------------------------------------------------------------


def test_depth_of_the_wrong_size_or_encoding_is_refused_with_the_fix():
    camera = _camera()
    cost, confidence = _index_planes()
    build = CostCloudBuilder().from_depth
    depth = np.ones((H, W), np.float32)
    with pytest.raises(CloudError, match='depth image is 32x24 but its camera_info describes '
                                         '64x48'):
        build(np.ones((24, 32), np.float32), camera, cost, confidence)
    with pytest.raises(CloudError, match='integer multiple.*aligned'):
        build(np.ones((30, 40), np.float32), _scaled(camera, 40 / 64), cost, confidence)
    with pytest.raises(CloudError, match='integer multiple'):  # 2x wide, 1x high
        build(np.ones((H, 2 * W), np.float32),
              CameraModel(2 * W, H, camera.K, camera.D), cost, confidence)
    with pytest.raises(CloudError, match='not a depth image.*16UC1.*32FC1'):
        build(depth, camera, cost, confidence, 'rgb8')
    with pytest.raises(CloudError, match='a 16UC1 depth image reads as uint16, got a float32'):
        build(depth, camera, cost, confidence, '16UC1')
    for bad in (depth.astype(np.float64), depth.astype(np.uint8), np.ones((H, W, 3), np.uint16)):
        with pytest.raises(CloudError, match=r'depth must be an \(H, W\) 16UC1'):
            build(bad, camera, cost, confidence)
    with pytest.raises(CloudError, match='confidence is 32x48 but cost is 64x48'):
        build(depth, camera, cost, confidence[:, :32])


def test_ground_inputs_that_cannot_work_are_refused_with_the_fix():
    camera, T = _camera(), _pose(1.0, 0.5)
    cost, confidence = _index_planes()
    build = CostCloudBuilder().from_ground
    with pytest.raises(CloudError, match='cost is 32x24 but the camera_info describes 64x48'):
        build(cost[:24, :32], confidence[:24, :32], camera, T)
    with pytest.raises(CloudError, match='confidence is None'):
        build(cost, None, camera, T)
    with pytest.raises(CloudError, match=r'cost must be an \(H, W\) float image'):
        build(cost.astype(np.uint8), confidence, camera, T)
    with pytest.raises(CloudError, match='T_ground_optical is None.*camera_pose_to_optical'):
        build(cost, confidence, camera, None)
    with pytest.raises(CloudError, match='T_ground_optical must be a finite'):
        build(cost, confidence, camera, np.eye(3))
    with pytest.raises(CloudError, match='T_cloud_optical has a rotation block'):
        build(cost, confidence, camera, T, T_cloud_optical=2 * np.eye(4) - np.diag([0, 0, 0, 1]))
    with pytest.raises(CloudError, match='ground_z must be finite'):
        build(cost, confidence, camera, T, ground_z=math.nan)
    with pytest.raises(CloudError, match='CameraModel'):
        build(cost, confidence, 'camera', T)
    for stride in (0, -1, 1.5, True):
        with pytest.raises(CloudError, match='stride must be an integer >= 1'):
            CostCloudBuilder(stride=stride)
    for max_range in (0.0, -1.0, math.nan, True, '5'):
        with pytest.raises(CloudError, match='max_range_m must be metres > 0'):
            CostCloudBuilder(max_range_m=max_range)
    # float64 planes are converted
    cloud = build(cost.astype(np.float64), confidence.astype(np.float64), camera, T)
    assert cloud.points.dtype == np.float32


def test_module_imports_no_ros():
    assert 'rclpy' not in vars(cloud_module) and 'sensor_msgs' not in vars(cloud_module)
