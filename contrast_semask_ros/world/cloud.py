"""Cost clouds: the cost image as a sensor_msgs/PointCloud2 payload a planner can use, the
ROS-free core of the cost node's `cost_cloud` output. numpy only (the camera rays come from
`supervision.geometry`, which uses cv2 to undistort them once per camera).

Layout. An unorganised cloud (height 1, width N) of float32 little-endian points, point_step
20, row_step = 20 N, no padding:

    offset  0 x, 4 y, 8 z      metres in the cloud frame
    offset 12 cost             the cost image's value; NaN (unknown) only with keep_unknown
    offset 16 confidence       the confidence image's value

Each field is (name, offset, datatype 7 = PointField.FLOAT32, count 1). is_bigendian is false
and is_dense is true when every value of every point is finite (a NaN cost kept with
keep_unknown, or a NaN confidence, makes it false; x, y, z are always finite). `data` holds
exactly row_step bytes, as rviz and PCL require. `cloud_dtype` turns any message's own fields
and point_step into a numpy structured dtype, and `cloud_array` views a message's data with it.

Frames (docs/SUPERVISION.md section 1). The camera optical frame has z forward along the
optical axis, x right, y down; `T_a_b` (4, 4) is the pose of frame b in frame a (p_a = T_a_b
p_b). Points are expressed in the cloud frame: by default the camera optical frame (the
header's frame_id is then the image's), or any frame given `T_cloud_optical` (e.g.
T_base_optical for `base_link`, T_odom_optical for `odom`).

Pixel sampling. Only every `stride`-th pixel of the cost image is used: rows i = offset,
offset + stride, ... < H and columns j likewise, with offset = (stride - 1) // 2 (the centre
pixel of each stride x stride block for an odd stride, the upper-left of its central 2 x 2 for
an even one). Pixel (i, j) is centred on (u, v) = (j, i) (OpenCV, geometry.py). A 544x1024 cost
image at stride 4 is sampled at 136 x 256 = 34,816 pixels, the cloud's largest width.

Ground plane (`CostCloudBuilder.from_ground`). The ray of each sampled pixel (CameraModel
.pixel_rays: undistorted, unit, in the optical frame) meets the plane z = ground_z of the
ground frame (T_ground_optical, e.g. T_base_optical with the ground at base z = 0, or
ground_offset) at range t = (ground_z - o_z) / d_z, o the camera centre and d the ray in the
ground frame: geometry.intersect_ground's formula and validity (|d_z| > 1e-9, t > 0, t <=
max_range_m; a test checks both agree). Rays at or above the horizon never meet the plane and
are dropped. The point is t * ray in the optical frame, then moved to the cloud frame.

Depth (`CostCloudBuilder.from_depth`). An aligned depth image (registered to the colour camera,
e.g. a RealSense `aligned_depth_to_color/image_raw`), REP 118: 16UC1 millimetres with 0 =
invalid, or 32FC1 metres with NaN, +-inf and values <= 0 invalid. Its value is the z coordinate
in the optical frame (z-depth), not the range along the ray: the point is depth * ray / ray_z
(ray_z taken in the frame K applies to, which differs from the optical frame only for a
rectified camera with R). Its camera is the depth image's own camera_info, which must describe
the depth image's size. The depth image may be the cost image's size, or an integer multiple
or divisor of it (the same factor k on both axes); cost pixel (i, j) then reads the depth pixel
that contains its centre, (floor((i + 0.5) k), floor((j + 0.5) k)) for the depth-to-cost ratio
k, i.e. (k i + k // 2, k j + k // 2) for a larger and (i // k, j // k) for a smaller depth image.
The stride counts cost pixels in both paths. Points farther than max_range_m from the camera
are dropped.

Cost. Pixels with a NaN cost (unknown) are dropped, or kept with cost NaN when keep_unknown;
an infinite cost is a cost and is kept.

Beside the payload, a CostCloud carries each point's range from the camera centre (`range_m`,
what the rolling grid weighs observations by) and that centre in the cloud frame (`origin`,
the sensor origin a costmap clears along).

Performance. The rays are computed once per camera (its intrinsics, distortion, size) and
stride (tens of ms for a 544x1024 image), the ground-plane hits once per (camera,
T_ground_optical, ground_z), and moved into the cloud frame once per T_cloud_optical (so a
cloud in `odom` on a moving robot costs one 3x3 rotation of the cached hits per frame). A frame
is then two gathers, a NaN test and one row compaction into the output (the depth path adds a
gather, a few multiplies and comparisons). Working buffers are reused; the output payload is
allocated per frame at its exact size (its width changes with the unknown pixels; one memset)
and never written again, so a published message or a kept cloud stays valid.
"""

from __future__ import annotations

import array as pyarray
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from contrast_semask_ros.supervision.geometry import CameraModel, GeometryError, check_pose

# sensor_msgs/PointField datatypes
INT8, UINT8, INT16, UINT16, INT32, UINT32, FLOAT32, FLOAT64 = range(1, 9)
_POINT_FIELD_TYPES = {INT8: 'i1', UINT8: 'u1', INT16: 'i2', UINT16: 'u2', INT32: 'i4',
                      UINT32: 'u4', FLOAT32: 'f4', FLOAT64: 'f8'}

DEPTH_ENCODINGS = {'16UC1': np.dtype(np.uint16), '32FC1': np.dtype(np.float32)}  # REP 118
DEPTH_MM_PER_M = 1000.0  # 16UC1 depth is in millimetres
_CACHE_SIZE = 4  # cameras (x strides, sizes) whose rays are kept
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_ZERO_BYTE = pyarray.array('B', [0])  # `* n`: a zeroed payload of n bytes by one memset


class CloudError(ValueError):
    """An input that cannot make a cost cloud; the message says what to send instead."""


class CloudField(NamedTuple):
    """A sensor_msgs/PointField: the fields a PointField message is built from."""

    name: str
    offset: int  # bytes from the start of the point
    datatype: int  # PointField constant: 7 = FLOAT32
    count: int  # elements


CLOUD_FIELDS = tuple(CloudField(name, 4 * k, FLOAT32, 1)
                     for k, name in enumerate(('x', 'y', 'z', 'cost', 'confidence')))
POINT_STEP = 20  # bytes per point: five float32


class CloudLayout(NamedTuple):
    """The PointCloud2 fields other than header and data."""

    fields: tuple[CloudField, ...]
    height: int  # 1: an unorganised cloud
    width: int  # points
    point_step: int  # 20
    row_step: int  # point_step * width
    is_dense: bool  # every value of every point finite
    is_bigendian: bool  # False


class CostCloud(NamedTuple):
    """One frame's cloud. `data` and `points` share memory, written once and never again."""

    data: pyarray.array  # row_step bytes, array('B'): rclpy's `data` container, no copy
    points: np.ndarray  # N, 5 float32 (x, y, z, cost, confidence): a view of data
    layout: CloudLayout
    range_m: np.ndarray  # N float32: each point's distance from the camera centre
    origin: np.ndarray  # 3 float64: the camera centre (optical frame origin) in the cloud frame


class SampleGrid(NamedTuple):
    rows: np.ndarray  # h intp: sampled image rows, offset + k * stride
    cols: np.ndarray  # w intp: sampled image columns
    offset: int  # (stride - 1) // 2


class _Rays(NamedTuple):
    """The sampled pixels of one camera and stride whose ray could be undistorted."""

    cost_index: np.ndarray  # M intp: flat index i * W + j into the cost image
    rays: np.ndarray  # M, 3 float64 unit rays in the optical frame


class _Ground(NamedTuple):
    """The ground-plane hits of one camera, stride and ground pose, in the optical frame."""

    key: tuple
    cost_index: np.ndarray  # m intp: the sampled pixels whose ray meets the plane
    optical: np.ndarray  # 3, m float32: x, y, z rows in the optical frame
    range_m: np.ndarray  # m float32
    table: np.ndarray  # m, 5 float32: x, y, z in the cloud frame, then cost, confidence


class _DepthRays(NamedTuple):
    depth_index: np.ndarray  # M intp: flat index into the depth image
    cost_index: np.ndarray  # M intp: flat index into the cost image
    per_depth: np.ndarray  # 3, M float32: the optical-frame point per metre of depth
    range_per_depth: np.ndarray  # M float32: range from the camera per metre of depth


class _Depth(NamedTuple):
    """The depth rays of one depth camera, stride and image sizes."""

    key: tuple
    rays: _DepthRays
    scale: np.ndarray  # 3, M float32: rows x, y, z per metre of depth, in the cloud frame


class _Frame(NamedTuple):
    """The cloud frame: T_cloud_optical, checked, and as float32 rotation and translation."""

    key: bytes
    rotation: np.ndarray  # 3, 3 float32
    origin: np.ndarray  # 3 float64: the optical frame's origin in the cloud frame
    identity: bool


# --- layout ---------------------------------------------------------------------------------


def cloud_dtype(fields: Sequence[Any], point_step: int, is_bigendian: bool = False) -> np.dtype:
    """A numpy structured dtype of itemsize `point_step` from a PointCloud2's own fields (any
    objects with name, offset, datatype, count: rclpy or rosbags PointField, CloudField).

    A field with count > 1 is a subarray; a field without a name is called unnamed_field_<i>.
    Padding between and after fields is skipped (the dtype's offsets and itemsize)."""
    order = '>' if is_bigendian else '<'
    names, formats, offsets = [], [], []
    for i, field in enumerate(fields):
        name, offset = str(field.name) or f'unnamed_field_{i}', int(field.offset)
        datatype, count = int(field.datatype), int(field.count)
        if datatype not in _POINT_FIELD_TYPES:
            raise CloudError(f'PointField {name!r} has datatype {datatype}; expected one of the '
                             f'PointField constants 1..8 (INT8 .. FLOAT64)')
        if count < 1:
            raise CloudError(f'PointField {name!r} has count {count}; expected 1 or more')
        element = np.dtype(order + _POINT_FIELD_TYPES[datatype])
        end = offset + element.itemsize * count
        if offset < 0 or end > point_step:
            raise CloudError(f'PointField {name!r} spans bytes {offset}..{end} of a point, '
                             f'outside point_step {point_step}; the message\'s fields and '
                             'point_step disagree')
        if name in names:
            raise CloudError(f'PointField name {name!r} appears twice; names must be unique')
        names.append(name)
        formats.append(element if count == 1 else np.dtype((element, (count,))))
        offsets.append(offset)
    return np.dtype({'names': names, 'formats': formats, 'offsets': offsets,
                     'itemsize': int(point_step)})


def cloud_array(msg: Any) -> np.ndarray:
    """A PointCloud2 (its fields height, width, fields, is_bigendian, point_step, row_step,
    data) -> (height, width) structured array, a read-only view of its data where the data is
    a buffer (rclpy array.array, rosbags np.uint8 array, bytes). Row padding is honoured."""
    height, width = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    dtype = cloud_dtype(msg.fields, point_step, bool(msg.is_bigendian))
    try:
        buffer = np.frombuffer(msg.data, np.uint8)
    except (TypeError, ValueError, BufferError):  # a list, or a non-contiguous array
        buffer = np.ascontiguousarray(msg.data, dtype=np.uint8).reshape(-1)
    if height and width and row_step < width * point_step:
        raise CloudError(f'PointCloud2 row_step {row_step} is smaller than width * point_step '
                         f'= {width} * {point_step}; the publisher must set row_step >= that')
    needed = row_step * (height - 1) + width * point_step if height and width else 0
    if buffer.size < needed:
        raise CloudError(f'PointCloud2 data has {buffer.size} bytes, expected {needed} for '
                         f'{height} rows of {width} points (row_step {row_step}); the message '
                         'is truncated or its sizes are wrong')
    return np.ndarray((height, width), dtype, buffer=buffer[:needed] if needed else buffer[:0],
                      strides=(row_step, point_step))


def cloud_fields(cloud: CostCloud, point_field: Any) -> dict[str, Any]:
    """The PointCloud2 keyword fields of `cloud` other than header and data, with `fields`
    built by `point_field` (the PointField class of the message's library). For a rosbags
    message: `PointCloud2(header=h, data=np.frombuffer(cloud.data, np.uint8),
    **cloud_fields(cloud, PointField))` (no copy)."""
    layout = cloud.layout
    return {'height': layout.height, 'width': layout.width,
            'fields': [point_field(name=f.name, offset=f.offset, datatype=f.datatype,
                                   count=f.count) for f in layout.fields],
            'is_bigendian': layout.is_bigendian, 'point_step': layout.point_step,
            'row_step': layout.row_step, 'is_dense': layout.is_dense}


def fill_cloud_message(msg: Any, cloud: CostCloud, point_field: Any,
                       header: Any = None) -> Any:
    """Set the fields of an existing PointCloud2 `msg` from `cloud` without copying its
    payload (an rclpy message takes `cloud.data` itself, a rosbags one a np.uint8 view of it,
    anything else bytes). `point_field` is the PointField class. Returns `msg`."""
    for name, value in cloud_fields(cloud, point_field).items():
        setattr(msg, name, value)
    current = getattr(msg, 'data', None)
    if isinstance(current, pyarray.array) and '_data' in getattr(type(msg), '__slots__', ()):
        # rclpy's generated setter copies with array.array('B', value) unless the process runs
        # with ROS_PYTHON_CHECK_FIELDS=1: store the buffer itself (what that setter stores too)
        msg._data = cloud.data
    elif isinstance(current, np.ndarray):
        msg.data = np.frombuffer(cloud.data, np.uint8)
    else:
        msg.data = cloud.data.tobytes()
    if header is not None:
        msg.header = header
    return msg


def cloud_from_points(points: Any) -> CostCloud:
    """A CostCloud of `points` (N, 5: x y z cost confidence) with ranges and origin zero: for
    checks and tests, where no camera made the points."""
    table = np.asarray(points, np.float32).reshape(-1, 5)
    return _emit(table, None, np.zeros(len(table), np.float32), np.zeros(3))


def layout_difference(ours: Any, theirs: Any) -> str:
    """'' when two PointCloud2 messages have the same layout and payload (height, width,
    fields, point_step, row_step, is_bigendian and the data bytes), else what differs.
    is_dense is not compared: sensor_msgs_py's create_cloud always sets it false."""
    differences = [f'{name} {getattr(ours, name)!r} vs {getattr(theirs, name)!r}'
                   for name in ('height', 'width', 'point_step', 'row_step', 'is_bigendian')
                   if getattr(ours, name) != getattr(theirs, name)]
    fields = [[(f.name, f.offset, f.datatype, f.count) for f in m.fields] for m in (ours,
                                                                                    theirs)]
    if fields[0] != fields[1]:
        differences.append(f'fields {fields[0]} vs {fields[1]}')
    if bytes(ours.data) != bytes(theirs.data):
        differences.append('the data bytes')
    return '; '.join(differences)


# --- sampling and checks --------------------------------------------------------------------


def sample_grid(height: int, width: int, stride: int) -> SampleGrid:
    """The pixels a cloud samples: rows and columns offset + k * stride, offset = (stride - 1)
    // 2 (module docstring)."""
    _check_stride(stride)
    offset = (stride - 1) // 2
    return SampleGrid(np.arange(offset, height, stride, dtype=np.intp),
                      np.arange(offset, width, stride, dtype=np.intp), offset)


def _check_stride(stride: Any) -> None:
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
        raise CloudError(f'stride must be an integer >= 1 (pixels), got {stride!r}')


def _plane(values: Any, name: str) -> np.ndarray:
    """(H, W) float32 from a float image (a view when it is float32 already)."""
    array = np.asarray(values)
    if array.ndim != 2 or array.dtype.kind != 'f':
        raise CloudError(f'{name} must be an (H, W) float image (float32, NaN = unknown), got '
                         f'{array.dtype} {array.shape}; a 32FC1 Image reads as one with '
                         'codec.image_to_array')
    return array if array.dtype == np.float32 else array.astype(np.float32)


def _planes(cost: Any, confidence: Any) -> tuple[np.ndarray, np.ndarray]:
    """cost and confidence (H, W) float32, flattened views where contiguous: (H*W,) each."""
    cost = _plane(cost, 'cost')
    if confidence is None:
        raise CloudError('confidence is None: the cloud carries a confidence per point; '
                         'compute the confidence image when the cloud is wanted')
    confidence = _plane(confidence, 'confidence')
    if confidence.shape != cost.shape:
        raise CloudError(f'confidence is {confidence.shape[1]}x{confidence.shape[0]} but cost '
                         f'is {cost.shape[1]}x{cost.shape[0]}; both come from the same frame')
    return cost.reshape(-1), confidence.reshape(-1)


def _camera_key(camera: CameraModel) -> tuple:
    if not isinstance(camera, CameraModel):
        raise CloudError(f'expected a CameraModel (CameraModel.from_camera_info(msg)), got '
                         f'{type(camera).__name__}')
    return (camera.width, camera.height, camera.distortion_model, camera.K.tobytes(),
            camera.D.tobytes(), camera.R_rect.tobytes())


def _pose_key(T: Any) -> bytes:
    return b'' if T is None else np.asarray(T, dtype=np.float64).tobytes()


def _pose(T: Any, name: str) -> np.ndarray:
    """T as a checked (4, 4) pose; None is the identity. The common case (a proper pose) is
    checked here in a few microseconds; anything else gets geometry.check_pose's message."""
    if T is None:
        return np.eye(4)
    array = np.asarray(T, dtype=np.float64)
    if array.shape == (4, 4) and np.isfinite(array).all() \
            and (array[3] == (0.0, 0.0, 0.0, 1.0)).all():
        R = array[:3, :3]
        if np.abs(R.T @ R - np.eye(3)).max() < 1e-6 and np.linalg.det(R) > 0:
            return array
    try:
        return check_pose(array, name)
    except GeometryError as err:
        raise CloudError(str(err)) from None


def _frame(T_cloud_optical: Any) -> _Frame:
    T = _pose(T_cloud_optical, 'T_cloud_optical')
    return _Frame(_pose_key(T_cloud_optical), T[:3, :3].astype(np.float32), T[:3, 3].copy(),
                  T_cloud_optical is None or bool((T == np.eye(4)).all()))


def _move(frame: _Frame, points: np.ndarray, translate: bool) -> np.ndarray:
    """points (3, m) float32 in the optical frame -> (3, m) in the cloud frame: rotated, and
    translated when they are points (not directions). The identity returns `points`."""
    if frame.identity:
        return points
    moved = frame.rotation @ points  # 3, m
    if translate:
        moved += frame.origin.astype(np.float32)[:, None]
    return moved


def _check_depth(depth: np.ndarray, encoding: str | None) -> None:
    """depth must be (H, W) uint16 (16UC1, mm) or float32 (32FC1, m), matching `encoding`."""
    expected = ', '.join(f'{name} ({dtype})' for name, dtype in DEPTH_ENCODINGS.items())
    if encoding is not None:
        if encoding not in DEPTH_ENCODINGS:
            raise CloudError(f'depth encoding {encoding!r} is not a depth image; expected '
                             f'{expected} (REP 118: millimetres or metres), e.g. a RealSense\'s '
                             'aligned_depth_to_color/image_raw')
        if depth.dtype != DEPTH_ENCODINGS[encoding]:
            raise CloudError(f'a {encoding} depth image reads as {DEPTH_ENCODINGS[encoding]}, '
                             f'got a {depth.dtype} array; pass codec.image_to_array(msg)')
    if depth.ndim != 2 or depth.dtype not in DEPTH_ENCODINGS.values():
        raise CloudError(f'depth must be an (H, W) {expected} image, got {depth.dtype} '
                         f'{depth.shape}; convert other units to one of these')


def _depth_pixels(cost_pixels: np.ndarray, cost_size: int, depth_size: int) -> np.ndarray:
    """The depth pixel that contains the centre of each cost pixel (one axis)."""
    if depth_size >= cost_size:
        k = depth_size // cost_size
        return cost_pixels * k + k // 2
    return cost_pixels // (cost_size // depth_size)


def _check_depth_size(depth_shape: tuple[int, ...], camera: CameraModel,
                      cost_shape: tuple[int, ...]) -> None:
    (dh, dw), (ch, cw) = depth_shape, cost_shape
    if (dh, dw) != camera.image_size:
        raise CloudError(f'depth image is {dw}x{dh} but its camera_info describes '
                         f'{camera.width}x{camera.height}; pass the camera_info published with '
                         'the depth image (e.g. aligned_depth_to_color/camera_info)')
    for big, small in (((dh, dw), (ch, cw)), ((ch, cw), (dh, dw))):
        if big[0] % small[0] == 0 and big[1] % small[1] == 0 \
                and big[0] // small[0] == big[1] // small[1]:
            return
    raise CloudError(f'depth image {dw}x{dh} and cost image {cw}x{ch} must be the same size or '
                     'one an integer multiple of the other (the same factor on both axes); '
                     'publish the depth aligned (registered) to the colour camera, e.g. '
                     'RealSense align_depth.enable:=true or depth_image_proc/register')


# --- builder --------------------------------------------------------------------------------


class CostCloudBuilder:
    """Builds the cost cloud of each frame (module docstring), caching what does not change.

    stride: sample every stride-th pixel (>= 1). max_range_m: drop points farther than this
    from the camera (> 0, may be inf). keep_unknown: keep NaN-cost pixels with cost NaN.
    A builder holds per-frame working buffers: use one per thread."""

    def __init__(self, stride: int = 4, max_range_m: float = math.inf,
                 keep_unknown: bool = False) -> None:
        _check_stride(stride)
        if isinstance(max_range_m, bool) or not (isinstance(max_range_m, (int, float))
                                                  and max_range_m > 0):
            raise CloudError(f'max_range_m must be metres > 0 (inf: no limit), got '
                             f'{max_range_m!r}')
        self.stride = int(stride)
        self.max_range_m = float(max_range_m)
        self.keep_unknown = bool(keep_unknown)
        self._rays: dict[tuple, _Rays] = {}
        self._depth_rays: dict[tuple, _DepthRays] = {}
        self._ground: _Ground | None = None
        self._ground_frame: bytes | None = None  # the cloud frame of the ground table's x, y, z
        self._depth: _Depth | None = None
        self._depth_frame: bytes | None = None  # the cloud frame of the depth scale
        self._frame: _Frame | None = None
        self._keep = np.empty(0, bool)  # M: per-frame masks
        self._scratch = np.empty(0, bool)  # M
        self._metres = np.empty(0, np.float32)  # M: depth in metres
        self._range = np.empty(0, np.float32)  # M: range from the camera
        self._raw = np.empty(0, np.uint16)  # M: depth samples as stored
        self._table = np.empty((0, 5), np.float32)  # M, 5: the depth path's points

    # -- ground plane --

    def from_ground(self, cost: Any, confidence: Any, camera: CameraModel,
                    T_ground_optical: Any, ground_z: float = 0.0,
                    T_cloud_optical: Any = None) -> CostCloud:
        """The cloud of the cost image's pixels projected onto the ground plane z = ground_z
        of the frame T_ground_optical places the camera in; points in the cloud frame
        (T_cloud_optical; None: the optical frame). cost, confidence: (H, W) at the camera's
        size (CameraModel.from_camera_info of the image the cost was computed on)."""
        cost_flat, confidence_flat = _planes(cost, confidence)
        ground = self._ground_geometry(camera, np.shape(cost), T_ground_optical, ground_z)
        frame = self._cloud_frame(T_cloud_optical)
        table = ground.table  # m, 5
        if self._ground_frame != frame.key:  # x, y, z of the table: once per cloud frame
            table[:, :3] = _move(frame, ground.optical, translate=True).T
            self._ground_frame = frame.key
        np.take(cost_flat, ground.cost_index, out=table[:, 3], mode='clip')
        np.take(confidence_flat, ground.cost_index, out=table[:, 4], mode='clip')
        keep = None
        if not self.keep_unknown:
            keep = self._keep[:len(table)]
            np.equal(table[:, 3], table[:, 3], out=keep)  # not NaN
        return _emit(table, keep, ground.range_m, frame.origin)

    def _ground_geometry(self, camera: CameraModel, shape: tuple[int, ...],
                         T_ground_optical: Any, ground_z: float) -> _Ground:
        camera_key = _camera_key(camera)
        if tuple(shape) != camera.image_size:
            raise CloudError(f'cost is {shape[1]}x{shape[0]} but the camera_info describes '
                             f'{camera.width}x{camera.height}; pass the camera_info of the '
                             'image the cost was computed on (its binning and ROI included)')
        if T_ground_optical is None:
            raise CloudError('T_ground_optical is None: the ground plane needs the camera\'s '
                             'pose, e.g. T_base_optical from camera_pose_to_optical(*camera_pose) '
                             'or TF (base_link <- the image\'s optical frame)')
        key = (camera_key, self.stride, _pose_key(T_ground_optical), float(ground_z),
               self.max_range_m)
        if self._ground is not None and self._ground.key == key:
            return self._ground
        if not math.isfinite(ground_z):
            raise CloudError(f'ground_z must be finite metres, got {ground_z!r}')
        T = _pose(T_ground_optical, 'T_ground_optical')
        rays = self._camera_rays(camera, camera_key)
        with np.errstate(invalid='ignore', divide='ignore'):
            dz = rays.rays @ T[2, :3]  # M: the rays' z in the ground frame (unit rays)
            t = (ground_z - T[2, 3]) / dz  # M: range along each ray to the plane
            hit = (np.abs(dz) > 1e-9) & (t > 0) & (t <= self.max_range_m)
        chosen = np.flatnonzero(hit)  # m
        optical = (t[chosen, None] * rays.rays[chosen]).T.astype(np.float32)  # 3, m
        self._ensure(len(chosen))
        self._ground = _Ground(key, rays.cost_index[chosen], optical,
                               t[chosen].astype(np.float32),
                               np.empty((len(chosen), 5), np.float32))
        self._ground_frame = None
        return self._ground

    def _cloud_frame(self, T_cloud_optical: Any) -> _Frame:
        """The checked cloud frame, cached while T_cloud_optical stays the same."""
        key = _pose_key(T_cloud_optical)
        if self._frame is None or self._frame.key != key:
            self._frame = _frame(T_cloud_optical)
        return self._frame

    def _camera_rays(self, camera: CameraModel, camera_key: tuple) -> _Rays:
        key = (camera_key, self.stride)
        if key not in self._rays:
            grid = sample_grid(camera.height, camera.width, self.stride)
            rows, cols = np.meshgrid(grid.rows, grid.cols, indexing='ij')  # h, w each
            pixels = np.column_stack([cols.ravel(), rows.ravel()]).astype(np.float64)  # M0, 2
            rays = camera.pixel_rays(pixels)  # M0, 3
            good = np.flatnonzero(np.isfinite(rays).all(axis=1))  # M
            index = (rows.ravel() * camera.width + cols.ravel())[good]
            _remember(self._rays, key, _Rays(index, rays[good]))
        return self._rays[key]

    # -- depth --

    def from_depth(self, depth: Any, depth_camera: CameraModel, cost: Any, confidence: Any,
                   encoding: str | None = None, T_cloud_optical: Any = None) -> CostCloud:
        """The cloud of the cost image's pixels placed at the aligned depth image's depth
        (16UC1 mm or 32FC1 m; `encoding`, the Image's, is checked against the array when
        given). depth_camera: the depth image's camera_info as a CameraModel. Points in the
        cloud frame (T_cloud_optical; None: the depth image's optical frame)."""
        depth = np.asarray(depth)
        _check_depth(depth, encoding)
        cost_flat, confidence_flat = _planes(cost, confidence)
        geometry = self._depth_geometry(depth_camera, depth.shape, np.shape(cost))
        frame = self._cloud_frame(T_cloud_optical)
        rays = geometry.rays
        if self._depth_frame != frame.key:  # the scale in the cloud frame: once per frame
            geometry = self._depth = geometry._replace(
                scale=_move(frame, rays.per_depth, translate=False))
            self._depth_frame = frame.key
        M = len(rays.depth_index)
        metres, range_m = self._metres[:M], self._range[:M]
        keep, scratch, table = self._keep[:M], self._scratch[:M], self._table[:M]  # table M, 5
        if depth.dtype == np.uint16:
            raw = self._raw[:M]
            np.take(depth.reshape(-1), rays.depth_index, out=raw, mode='clip')
            np.divide(raw, np.float32(DEPTH_MM_PER_M), out=metres)
        else:
            np.take(depth.reshape(-1), rays.depth_index, out=metres, mode='clip')
        np.greater(metres, 0.0, out=keep)  # 0 (16UC1) or <= 0, NaN (32FC1): no measurement
        with np.errstate(invalid='ignore', over='ignore'):  # inf * 0 where a ray is axial
            np.multiply(metres, rays.range_per_depth, out=range_m)
            # a finite range bounds x, y, z; inf depth (32FC1: too far) has an infinite one
            limit = self.max_range_m if self.max_range_m < math.inf else _FLOAT32_MAX
            np.less_equal(range_m, limit, out=scratch)
            keep &= scratch
            for axis in range(3):  # x, y, z = depth * scale (+ origin)
                np.multiply(metres, geometry.scale[axis], out=table[:, axis])
                if not frame.identity:
                    table[:, axis] += np.float32(frame.origin[axis])
        np.take(cost_flat, rays.cost_index, out=table[:, 3], mode='clip')
        np.take(confidence_flat, rays.cost_index, out=table[:, 4], mode='clip')
        if not self.keep_unknown:
            np.equal(table[:, 3], table[:, 3], out=scratch)  # not NaN
            keep &= scratch
        return _emit(table, keep, range_m, frame.origin)

    def _depth_geometry(self, camera: CameraModel, depth_shape: tuple[int, ...],
                        cost_shape: tuple[int, ...]) -> _Depth:
        camera_key = _camera_key(camera)
        key = (camera_key, self.stride, tuple(depth_shape), tuple(cost_shape))
        if self._depth is not None and self._depth.key == key:
            return self._depth
        _check_depth_size(depth_shape, camera, cost_shape)
        rays = self._depth_camera_rays(camera, camera_key, cost_shape)
        M = len(rays.depth_index)
        self._ensure(M)
        self._depth = _Depth(key, rays, rays.per_depth)
        self._depth_frame = None
        return self._depth

    def _depth_camera_rays(self, camera: CameraModel, camera_key: tuple,
                           cost_shape: tuple[int, ...]) -> _DepthRays:
        key = (camera_key, self.stride, tuple(cost_shape))
        if key not in self._depth_rays:
            height, width = cost_shape
            grid = sample_grid(height, width, self.stride)
            rows, cols = np.meshgrid(grid.rows, grid.cols, indexing='ij')  # h, w each
            depth_rows = _depth_pixels(rows.ravel(), height, camera.height)  # M0
            depth_cols = _depth_pixels(cols.ravel(), width, camera.width)  # M0
            pixels = np.column_stack([depth_cols, depth_rows]).astype(np.float64)  # M0, 2
            rays = camera.pixel_rays(pixels)  # M0, 3 unit, optical frame
            with np.errstate(invalid='ignore', divide='ignore'):
                ray_z = (rays @ camera.R_rect.T)[:, 2]  # M0: z in the frame K applies to
                per_depth = rays / ray_z[:, None]  # M0, 3
            good = np.flatnonzero(np.isfinite(per_depth).all(axis=1) & (ray_z > 1e-9))  # M
            _remember(self._depth_rays, key, _DepthRays(
                (depth_rows * camera.width + depth_cols)[good],
                (rows.ravel() * width + cols.ravel())[good],
                np.ascontiguousarray(per_depth[good].T, dtype=np.float32),
                (1.0 / ray_z[good]).astype(np.float32)))
        return self._depth_rays[key]

    # -- buffers --

    def _ensure(self, count: int) -> None:
        """Working buffers for `count` samples (grown, never shrunk)."""
        if len(self._keep) >= count:
            return
        self._keep = np.empty(count, bool)
        self._scratch = np.empty(count, bool)
        self._metres = np.empty(count, np.float32)
        self._range = np.empty(count, np.float32)
        self._raw = np.empty(count, np.uint16)
        self._table = np.empty((count, 5), np.float32)


def _remember(cache: dict, key: tuple, value: Any) -> None:
    cache[key] = value
    while len(cache) > _CACHE_SIZE:
        cache.pop(next(iter(cache)))


def _emit(table: np.ndarray, keep: np.ndarray | None, range_m: np.ndarray,
          origin: np.ndarray) -> CostCloud:
    """The rows of table (m, 5) where keep (m,) (all when None) as a new exact-size payload."""
    n = len(table) if keep is None else int(np.count_nonzero(keep))
    data = _ZERO_BYTE * (n * POINT_STEP)
    points = np.frombuffer(data, np.float32).reshape(n, 5)  # N, 5
    if keep is None:
        np.copyto(points, table)
        ranges = range_m.copy()
    else:
        np.compress(keep, table, axis=0, out=points)
        ranges = np.compress(keep, range_m)
    is_dense = bool(np.isfinite(points).all())  # contiguous: 10x faster than points[:, 3:]
    layout = CloudLayout(CLOUD_FIELDS, 1, n, POINT_STEP, n * POINT_STEP, is_dense, False)
    return CostCloud(data, points, layout, ranges, origin.copy())


__all__ = ['CLOUD_FIELDS', 'DEPTH_ENCODINGS', 'DEPTH_MM_PER_M', 'FLOAT32', 'FLOAT64', 'INT8',
           'INT16', 'INT32', 'POINT_STEP', 'UINT8', 'UINT16', 'UINT32', 'CloudError',
           'CloudField', 'CloudLayout', 'CostCloud', 'CostCloudBuilder', 'SampleGrid',
           'cloud_array', 'cloud_dtype', 'cloud_fields', 'cloud_from_points', 'fill_cloud_message',
           'layout_difference', 'sample_grid']
