"""A simulated robot drive with raw sensors, written as a rosbag2: the data source of the
self-supervision (IMU and odometry label the terrain the robot drove over).

The robot drives over a flat ground plane with terrain regions of different cost; a forward
camera renders the ground, the robot's own sensors measure the drive, and two ground-truth
topics say what the supervision should find. Everything is a pure function of the seed.

Frames (REP 103, REP 105; docs/SUPERVISION.md section 1):

    odom                  world-fixed, z up; the ground is the plane z = 0
    base_link             x forward, y left, z up; on the ground (z = 0), roll = pitch = 0
    camera_link           x along the optical axis, y left, z up; CAMERA_POSE in base_link:
                          [x, y, z, roll, pitch, yaw] = [0.3, 0, 1.0, 0, 0.35, 0], a positive
                          pitch turns x down (the camera looks at the ground)
    camera_optical_frame  z along the optical axis, x right, y down: optical z = body x,
                          optical x = -body y, optical y = -body z; quaternion (x, y, z, w)
                          (-0.5, 0.5, -0.5, 0.5) from camera_link

Poses are 4x4 SE(3) matrices, `T_a_b` the pose of frame b in frame a (p_a = T_a_b p_b);
rotations `R = Rz(yaw) Ry(pitch) Rx(roll)` (URDF rpy). The geometry here is plain numpy, on
purpose independent of `contrast_semask_ros.supervision`: the simulator is the ground truth that
checks that package.

Terrain (`Terrain`): Voronoi regions of about `region_m` (6 m) across, their borders bent by
smooth noise, on a periodic layout (256 regions square) defined everywhere on the plane. Each
region is one of synth.py's ground classes (smooth trail, grass, rough trail, puddle, low
vegetation; side neighbours differ) with its YCOR_COST_TABLE cost (0, 0.3, 0.4, 0.7, 0.8) and
an IMU vibration level that rises strictly with the cost (`vibration_level`). The appearance is
synth.py's, so a model trained on `contrast-semask-data synth` data knows it: its per-class
colours, scikit-image texture pyramids and texels per metre, laid out in odom coordinates. Any
object with `classes_at(x, y)` can replace the Terrain (`SimDrive(spec, terrain)`).

Path (`Trajectory`): a curve whose heading is a sum of sinusoids of the arc length, starting at
the origin heading along x; the commanded speed (0.55 to 1.95 m/s) a smooth function of time.
The measured speed is `commanded * f`, where the factor f follows `1 - SPEED_LOSS * cost`
(cost under the footprint centre, SPEED_LOSS = 0.5) with a first-order lag of SPEED_LAG_S
(0.25 s), so that the acceleration stays finite where the terrain changes: `1 - v / v_cmd` is
SPEED_LOSS * cost once settled (a second or so after the robot entered a region). The yaw rate
is the path's curvature times the speed. The drive lasts (frames - 1) / fps + horizon_s: the
robot keeps driving (and the sensors keep logging) after the last camera frame until that
frame's oracle mask is complete.

Camera (`SimCamera`): pinhole, no distortion (plumb_bob, D = 5 zeros), horizontal field of view
`hfov_deg` (90), principal point at the image centre ((W - 1) / 2, (H - 1) / 2; pixel (row i,
column j) is centred on u = j, v = i, as in OpenCV). A frame is rendered by casting the ray of
every pixel centre onto the ground; the ground appears up to FAR_M (30 m) from the camera, sky
(a gradient with the elevation of the ray) above the horizon and beyond.

Topics and rates (SimTopics, the defaults):

    /tf_static                tf2_msgs/msg/TFMessage         once, at the start (transient local)
                              base_link -> camera_link -> camera_optical_frame
    /odom                     nav_msgs/msg/Odometry          50 Hz, odom -> base_link; twist in
                                                             base_link
    /imu/data                 sensor_msgs/msg/Imu            200 Hz, base_link; orientation in
                                                             odom, specific force (+9.81 on z)
    /cmd_vel                  geometry_msgs/msg/TwistStamped 20 Hz, base_link, commanded speed
    /camera/image_raw         sensor_msgs/msg/Image rgb8     fps (10), camera_optical_frame
                              (or /camera/image_raw/compressed, jpeg, with compressed=True)
    /camera/camera_info       sensor_msgs/msg/CameraInfo     with every image, same stamp
    /ground_truth/cost        sensor_msgs/msg/Image 32FC1    with every image: the terrain cost
                                                             of each ground pixel, NaN on sky
    /ground_truth/patch_cost  sensor_msgs/msg/Image 32FC1    the oracle patch mask of a frame
    /ground_truth/cost_grid   nav_msgs/msg/OccupancyGrid     once, at the start (transient local,
                                                             like /tf_static): the terrain cost
                                                             map seen from above (below)

Ground-truth cost grid (`SimDrive.cost_grid`, for scoring a bird's-eye cost map): frame odom,
GT_GRID_RESOLUTION_M (0.1 m) cells on the lattice x = i * 0.1, y = j * 0.1 (origin = the
lower-left corner of cell (0, 0), a multiple of the resolution), covering the bounding box of
the whole driven path (every trajectory sample, including the drive after the last frame)
plus GT_GRID_MARGIN_M (15 m) on each side; cell value rint(100 * cost) of the terrain at the
cell's centre (costs are in [0, 1]: 0, 30, 40, 70, 80), -1 where the terrain has no cost
(nowhere on the generated Terrain). OccupancyGrid order: row-major, row r along +y, column c
along +x, identity orientation; stamp and map_load_time = the start stamp.

IMU: linear_acceleration = (dv/dt, v * yaw_rate, 9.81) + vibration + white noise (0.02 m/s^2);
the vibration is band-limited noise (5 to 25 Hz) on z (a quarter of it on x and y) whose power
is the mean, over the four wheel contacts (WHEELS: the footprint's corners, inset), of
`vibration_level(cost under the wheel)` ** 2, with vibration_level(c) = 0.15 * exp(3.5 * c)
m/s^2: every wheel shakes the body, so the 1 to 30 Hz band power of z follows the terrain under
the footprint (on one terrain, its log linearly with the cost); angular_velocity =
(0, 0, yaw rate) + white noise (0.002 rad/s); orientation = the base's yaw, exact.

Oracle patch mask of frame i (stamp t_i): the union of the robot's footprints (ROBOT_LENGTH x
ROBOT_WIDTH, centred on base_link, on the ground) at the 50 Hz odometry stamps t in
(t_i, t_i + horizon_s] whose centre is within range_m (3-D distance) of the camera centre at t_i,
rasterised into frame i by pixel centre (`footprint_mask`), holding the ground-truth cost of
each covered pixel, NaN elsewhere. It keeps frame i's stamp and is logged at the stamp of its
last footprint (at most t_i + horizon_s), when the robot has driven all of it. A frame whose
mask is empty gets no message.

Every sensor message is logged at its header stamp; stamps start at start_stamp_s; messages are
written in log-time order (at equal times: tf and cost grid, sensors, camera, oracle). The bag
appears atomically, like drive_bag.py's.

    contrast-semask-data drive-bag bags/drive --frames 150 --size 272x512 --seed 0
"""

from __future__ import annotations

import heapq
import logging
import math
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np

from contrast_semask_ros import bagio
from contrast_semask_ros.codec import rgb_to_compressed_bytes

from . import drive_bag
from .synth import (
    GRASS,
    LOW_VEGETATION,
    PUDDLE,
    ROUGH_TRAIL,
    SKY,
    SMOOTH_TRAIL,
    _Camera,
    _mip_level,
    _Painter,
    _texture_pyramids,
)

if TYPE_CHECKING:
    from rosbags.typesys.store import Typestore

_logger = logging.getLogger(__name__)

GRAVITY = 9.81  # m/s^2
ODOM_HZ = 50
IMU_HZ = 200
CMD_VEL_HZ = 20
ROBOT_LENGTH = 0.8  # m, footprint along base x
ROBOT_WIDTH = 0.6  # m, footprint along base y
HORIZON_S = 10.0  # the oracle mask of a frame: footprints up to this much later ...
RANGE_M = 8.0  # ... and at most this far from the camera centre
GT_GRID_RESOLUTION_M = 0.1  # the ground-truth cost grid's cells (m) ...
GT_GRID_MARGIN_M = 15.0  # ... over the driven path's bounding box plus this on each side
FAR_M = 30.0  # ground farther from the camera than this is drawn as sky (and has no cost)
HFOV_DEG = 90.0
SPEED_LOSS = 0.5  # measured speed = commanded * (1 - SPEED_LOSS * cost), once settled
SPEED_LAG_S = 0.25  # time constant of the measured speed following that target
# wheel contacts in base_link (m): the footprint's corners, 0.1 m in along x, 0.05 m along y
WHEELS = ((0.3, 0.25), (0.3, -0.25), (-0.3, 0.25), (-0.3, -0.25))
VIBRATION_BASE = 0.15  # m/s^2 std of the vertical vibration on cost 0 ...
VIBRATION_GAIN = 3.5  # ... times exp(this * cost): 0.15, 0.43, 0.61, 1.74, 2.47 on the classes
VIBRATION_BAND_HZ = (5.0, 25.0)
SPEED_RANGE = (0.55, 1.95)  # m/s, commanded
GROUND_CLASSES = (SMOOTH_TRAIL, GRASS, ROUGH_TRAIL, PUDDLE, LOW_VEGETATION)  # synth ids
BASE_FRAME = 'base_link'
ODOM_FRAME = 'odom'
CAMERA_FRAME = 'camera_link'
OPTICAL_FRAME = 'camera_optical_frame'
ODOMETRY_TYPE = 'nav_msgs/msg/Odometry'
IMU_TYPE = 'sensor_msgs/msg/Imu'
TWIST_STAMPED_TYPE = 'geometry_msgs/msg/TwistStamped'
CAMERA_INFO_TYPE = 'sensor_msgs/msg/CameraInfo'
TF_TYPE = 'tf2_msgs/msg/TFMessage'

# optical coordinates of a camera-body vector (docs/SUPERVISION.md 1.1)
OPTICAL_FROM_BODY = np.array([[0, -1, 0], [0, 0, -1], [1, 0, 0]], dtype=np.float64)
T_BODY_OPTICAL = np.eye(4)
T_BODY_OPTICAL[:3, :3] = OPTICAL_FROM_BODY.T  # 4, 4: the optical frame in camera_link
OPTICAL_FROM_BODY.flags.writeable = T_BODY_OPTICAL.flags.writeable = False
OPTICAL_QUATERNION = (-0.5, 0.5, -0.5, 0.5)  # x, y, z, w of T_BODY_OPTICAL's rotation


class CameraPose(NamedTuple):
    """The pose of camera_link in base_link: metres and radians (URDF xyz, rpy)."""

    x: float = 0.3
    y: float = 0.0
    z: float = 1.0
    roll: float = 0.0
    pitch: float = 0.35  # positive: looking down
    yaw: float = 0.0


CAMERA_POSE = CameraPose()


class SimTopics(NamedTuple):
    image: str = '/camera/image_raw'  # sensor_msgs/msg/Image rgb8
    compressed_image: str = '/camera/image_raw/compressed'  # sensor_msgs/msg/CompressedImage
    camera_info: str = '/camera/camera_info'  # sensor_msgs/msg/CameraInfo
    odom: str = '/odom'  # nav_msgs/msg/Odometry
    imu: str = '/imu/data'  # sensor_msgs/msg/Imu
    cmd_vel: str = '/cmd_vel'  # geometry_msgs/msg/TwistStamped
    tf_static: str = '/tf_static'  # tf2_msgs/msg/TFMessage
    ground_truth: str = '/ground_truth/cost'  # sensor_msgs/msg/Image 32FC1
    patch_cost: str = '/ground_truth/patch_cost'  # sensor_msgs/msg/Image 32FC1
    cost_grid: str = '/ground_truth/cost_grid'  # nav_msgs/msg/OccupancyGrid, once


DEFAULT_SIM_TOPICS = SimTopics()


class SimDriveSpec(NamedTuple):
    """What to simulate and write (module docstring)."""

    frames: int = 60
    height: int = 272
    width: int = 512
    fps: float = 10.0
    seed: int = 0
    storage: str = 'mcap'  # 'mcap' | 'sqlite3'
    version: int = 9  # rosbag2 metadata version: 8 (Humble/Iron readers) or 9 (Jazzy+)
    compressed: bool = False  # camera as a jpeg CompressedImage instead of a raw rgb8 Image
    jpeg_quality: int = drive_bag.JPEG_QUALITY
    start_stamp_s: float = 1_700_000_000  # stamp of frame 0 and of the first sensor messages
    hfov_deg: float = HFOV_DEG
    camera_pose: CameraPose = CAMERA_POSE
    horizon_s: float = HORIZON_S
    range_m: float = RANGE_M
    region_m: float = 6.0  # terrain regions' size, m
    topics: SimTopics = DEFAULT_SIM_TOPICS


class CostGrid(NamedTuple):
    """A top-down cost map in odom (the /ground_truth/cost_grid message's content)."""

    data: np.ndarray  # rows, cols int8: rint(100 * cost), -1 without cost; OccupancyGrid order
    resolution: float  # m per cell
    origin_x: float  # m: the lower-left corner of cell (row 0, column 0) in odom
    origin_y: float

    def cell(self, x: np.ndarray | float, y: np.ndarray | float
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, col, inside) of the cells holding odom points (x, y); row and col are
        clipped into the grid where not inside."""
        col = np.floor((np.asarray(x, np.float64) - self.origin_x) / self.resolution)
        row = np.floor((np.asarray(y, np.float64) - self.origin_y) / self.resolution)
        rows, cols = self.data.shape
        inside = (col >= 0) & (col < cols) & (row >= 0) & (row < rows)
        return (np.clip(row, 0, rows - 1).astype(np.int64),
                np.clip(col, 0, cols - 1).astype(np.int64), inside)


class SimDriveSummary(NamedTuple):
    path: Path
    frames: int  # camera (and camera_info, ground-truth cost) messages
    patches: int  # oracle patch masks (frames whose mask is empty have none)
    messages: dict[str, int]  # topic -> message count
    topics: dict[str, str]  # topic -> message type, in connection order
    duration_s: float  # from the first to the last sensor stamp
    storage: str
    version: int
    bytes: int  # total size of the bag directory


# ---- SE(3) ------------------------------------------------------------------------------------


def rpy_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """3, 3 rotation Rz(yaw) Ry(pitch) Rx(roll) (fixed axes, URDF rpy)."""
    cr, sr, cp, sp = math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch)
    cy, sy = math.cos(yaw), math.sin(yaw)
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    return rz @ ry @ rx


def pose_matrix(x: float, y: float, z: float, roll: float = 0.0, pitch: float = 0.0,
                yaw: float = 0.0) -> np.ndarray:
    """4, 4 SE(3) of a translation and rpy."""
    T = np.eye(4)
    T[:3, :3] = rpy_matrix(roll, pitch, yaw)
    T[:3, 3] = (x, y, z)
    return T


def base_pose(x: float, y: float, yaw: float) -> np.ndarray:
    """4, 4 T_odom_base of a base on the ground (z = 0, roll = pitch = 0)."""
    return pose_matrix(x, y, 0.0, 0.0, 0.0, yaw)


def invert(T: np.ndarray) -> np.ndarray:
    """4, 4 inverse of an SE(3): [R^T, -R^T t]."""
    out = np.eye(4)
    out[:3, :3] = T[:3, :3].T
    out[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return out


def quaternion_xyzw(R: np.ndarray) -> np.ndarray:
    """(4,) unit quaternion (x, y, z, w), w >= 0, of a 3, 3 rotation matrix (Shepperd: from
    the largest of |x|, |y|, |z|, |w|, so that no component comes from a tiny square root)."""
    R = np.asarray(R, dtype=np.float64)
    trace = R[0, 0] + R[1, 1] + R[2, 2]
    squares = [1 + 2 * R[0, 0] - trace, 1 + 2 * R[1, 1] - trace, 1 + 2 * R[2, 2] - trace,
               1 + trace]  # 4 x^2, 4 y^2, 4 z^2, 4 w^2
    big = int(np.argmax(squares))
    root = math.sqrt(squares[big])  # 2 |q_big|
    # the sums and differences of opposite off-diagonal entries: 4 xy, 4 xz, ..., 4 zw
    xy, xz, yz = R[0, 1] + R[1, 0], R[0, 2] + R[2, 0], R[1, 2] + R[2, 1]
    xw, yw, zw = R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]
    q = {0: (root * root, xy, xz, xw), 1: (xy, root * root, yz, yw),
         2: (xz, yz, root * root, zw), 3: (xw, yw, zw, root * root)}[big]
    q = np.asarray(q) / (2 * root)
    q = q if q[3] >= 0 else -q
    return q / np.linalg.norm(q)


def yaw_quaternion(yaw: float) -> tuple[float, float, float, float]:
    """(x, y, z, w) of a rotation by `yaw` about z."""
    return 0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2)


# ---- camera -----------------------------------------------------------------------------------


class SimCamera(NamedTuple):
    """A pinhole camera without distortion on the robot (module docstring)."""

    height: int
    width: int
    fx: float
    fy: float
    cx: float
    cy: float
    T_base_optical: np.ndarray  # 4, 4: camera_optical_frame in base_link

    @property
    def k(self) -> np.ndarray:
        """3, 3 camera matrix K (CameraInfo k)."""
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1]])

    @property
    def p(self) -> np.ndarray:
        """3, 4 projection matrix P = [K | 0] of a monocular camera (CameraInfo p)."""
        return np.hstack([self.k, np.zeros((3, 1))])


def sim_camera(height: int, width: int, hfov_deg: float = HFOV_DEG,
               pose: CameraPose = CAMERA_POSE) -> SimCamera:
    """The camera of `height` x `width` pixels, square pixels, `hfov_deg` across the image
    (edge to edge), at `pose` (camera_link in base_link)."""
    focal = width / 2 / math.tan(math.radians(hfov_deg) / 2)
    T_base_optical = pose_matrix(*pose) @ T_BODY_OPTICAL
    return SimCamera(height, width, focal, focal, (width - 1) / 2, (height - 1) / 2,
                     T_base_optical)


def pixel_rays(camera: SimCamera) -> np.ndarray:
    """H, W, 3 float64 ray of every pixel centre in the optical frame, scaled to z = 1."""
    u = (np.arange(camera.width) - camera.cx) / camera.fx  # W
    v = (np.arange(camera.height) - camera.cy) / camera.fy  # H
    rays = np.empty((camera.height, camera.width, 3))
    rays[..., 0] = u[None, :]
    rays[..., 1] = v[:, None]
    rays[..., 2] = 1.0
    return rays


class GroundHits(NamedTuple):
    points: np.ndarray  # H, W, 3 float64 ground point (odom) of each pixel, NaN where none
    range: np.ndarray  # H, W float64 distance from the camera centre along the ray, NaN: none
    ground: np.ndarray  # H, W bool: the ray meets the ground in front of the camera
    elevation: np.ndarray  # H, W float64 angle of the ray above the horizontal (rad)


def ground_hits(camera: SimCamera, T_odom_optical: np.ndarray,
                rays: np.ndarray | None = None) -> GroundHits:
    """Cast every pixel's ray from the camera centre onto the ground plane z = 0 of odom:
    point o + t d with t = -o_z / d_z, where d_z < 0 (the ray goes down)."""
    rays = pixel_rays(camera) if rays is None else rays  # H, W, 3
    R, o = T_odom_optical[:3, :3], T_odom_optical[:3, 3]
    d = rays @ R.T  # H, W, 3 in odom
    norm = np.linalg.norm(d, axis=-1)  # H, W
    ground = d[..., 2] < -1e-9
    with np.errstate(divide='ignore', invalid='ignore'):
        t = np.where(ground, -o[2] / d[..., 2], np.nan)  # H, W
    points = o + t[..., None] * d  # H, W, 3
    points[..., 2] = np.where(ground, 0.0, np.nan)
    elevation = np.arcsin(np.clip(d[..., 2] / norm, -1.0, 1.0))
    return GroundHits(points, t * norm, ground, elevation)


def _inside_footprints(px: np.ndarray, py: np.ndarray, poses: np.ndarray, length: float,
                       width: float, leaf: int = 16) -> np.ndarray:
    """(N,) bool: the ground points (px, py) (N,) inside any footprint rectangle (closed) of
    `poses` ((K, 3) x, y, yaw of base_link). A bounding-box hierarchy along the path: only the
    points in the box of a run of poses are tested against its halves, and so on down to
    `leaf` poses, which are tested directly."""
    inside = np.zeros(px.shape, dtype=bool)
    if not len(poses) or not px.size:
        return inside
    reach = math.hypot(length, width) / 2
    near = np.flatnonzero((px >= poses[:, 0].min() - reach) & (px <= poses[:, 0].max() + reach)
                          & (py >= poses[:, 1].min() - reach) & (py <= poses[:, 1].max() + reach))
    if not near.size:
        return inside
    x, y = px[near], py[near]  # n
    if len(poses) > leaf:
        found = np.zeros(near.shape, dtype=bool)  # n
        for part in np.array_split(poses, 4):
            todo = np.flatnonzero(~found)
            found[todo] = _inside_footprints(x[todo], y[todo], part, length, width, leaf)
        inside[near] = found
        return inside
    dx = x[:, None] - poses[None, :, 0]  # n, k
    dy = y[:, None] - poses[None, :, 1]
    c, s = np.cos(poses[:, 2]), np.sin(poses[:, 2])  # k
    along = np.abs(dx * c + dy * s) <= length / 2
    across = np.abs(dy * c - dx * s) <= width / 2
    inside[near] = (along & across).any(axis=1)
    return inside


def footprint_mask(camera: SimCamera, T_odom_optical: np.ndarray, T_odom_base: np.ndarray,
                   length: float = ROBOT_LENGTH, width: float = ROBOT_WIDTH) -> np.ndarray:
    """H, W bool: the pixels whose centre's ray meets the ground inside the robot's footprint
    (`length` x `width`, centred on base_link, on the ground) at the base pose `T_odom_base`, in
    the frame taken from `T_odom_optical`. The base is taken to stand on the ground (its x, y
    and yaw are used)."""
    hits = ground_hits(camera, T_odom_optical)
    pose = np.array([[T_odom_base[0, 3], T_odom_base[1, 3],
                      math.atan2(T_odom_base[1, 0], T_odom_base[0, 0])]])
    mask = np.zeros((camera.height, camera.width), dtype=bool)
    ground = hits.ground
    mask[ground] = _inside_footprints(hits.points[..., 0][ground], hits.points[..., 1][ground],
                                      pose, length, width)
    return mask


def remap_points(image: np.ndarray, u: np.ndarray, v: np.ndarray,
                 interpolation: int | None = None) -> np.ndarray:
    """(N,) or (N, C) float32 bilinear samples of `image` (h, w[, C] float32) at (u, v) (N,),
    column and row coordinates already within the image, wrapping around its edges.

    cv2.remap takes maps of fewer than 32767 rows and columns, so the points go as rows of 4096.
    """
    import cv2

    n = u.size
    cols = 4096
    rows = max(-(-n // cols), 1)
    map_u = np.zeros(rows * cols, dtype=np.float32)
    map_v = np.zeros(rows * cols, dtype=np.float32)
    map_u[:n] = u.reshape(-1)
    map_v[:n] = v.reshape(-1)
    out = cv2.remap(image, map_u.reshape(rows, cols), map_v.reshape(rows, cols),
                    cv2.INTER_LINEAR if interpolation is None else interpolation,
                    borderMode=cv2.BORDER_WRAP)
    channels = () if image.ndim == 2 else (image.shape[2],)
    return out.reshape(rows * cols, *channels)[:n]


# ---- terrain ----------------------------------------------------------------------------------


def _periodic_noise(rng: np.random.Generator, n: int, channels: int,
                    sigma: float) -> np.ndarray:
    """n, n, channels float32 unit-std normal noise blurred by `sigma` cells, periodic (it
    wraps around its edges without a seam)."""
    import cv2

    grid = rng.standard_normal((n, n, channels)).astype(np.float32)
    pad = int(math.ceil(3 * sigma)) + 1
    padded = np.pad(grid, ((pad, pad), (pad, pad), (0, 0)), mode='wrap')
    blurred = cv2.GaussianBlur(padded, (0, 0), sigma).reshape(padded.shape)[pad:-pad, pad:-pad]
    return blurred / np.maximum(blurred.std(axis=(0, 1)), 1e-6)


class TerrainMap(Protocol):
    """What the simulator needs of a terrain: the synth class id at ground points."""

    def classes_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """(N,) uint8 synth/YCOR training id at odom points (x, y) (N,)."""
        ...


def class_cost_lut() -> np.ndarray:
    """(256,) float32 YCOR_COST_TABLE cost per training id, NaN for the rest."""
    return drive_bag._cost_lut(drive_bag.class_costs())


def vibration_level(cost: np.ndarray | float) -> np.ndarray:
    """std (m/s^2) of the vertical vibration on terrain of `cost`: VIBRATION_BASE *
    exp(VIBRATION_GAIN * cost), strictly increasing; the log of its power is linear in the
    cost, and neighbouring classes (costs 0.1 apart) differ by a factor of 2 in power."""
    return VIBRATION_BASE * np.exp(VIBRATION_GAIN * np.asarray(cost, dtype=np.float64))


class Terrain:
    """Voronoi regions of ground classes (module docstring), periodic every `period` regions.

    Region (i, j) has its centre at ((i + a) * region_m, (j + b) * region_m) with a, b uniform
    in [0, 1); a point belongs to the nearest centre after its coordinates are displaced by two
    octaves of smooth noise (up to about region_m / 5), which bends the straight borders.
    """

    def __init__(self, seed: int, region_m: float = 6.0, period: int = 256):
        if not (math.isfinite(region_m) and region_m > 0):
            raise ValueError(f'region_m must be positive, got {region_m}')
        rng = np.random.default_rng([seed, 0])
        self.region_m = float(region_m)
        self.period = period
        self.centres = rng.random((period, period, 2)).astype(np.float32)  # P, P, 2 in [0, 1)
        self.ids = self._assign(rng, period)  # P, P uint8 training ids
        self.warps = []  # (grid, metres per cell, amplitude in metres)
        for cell, amplitude in ((region_m / 3.0, region_m * 0.14),
                                (region_m / 9.0, region_m * 0.04)):
            self.warps.append((_periodic_noise(rng, 64, 2, 0.6), cell, amplitude))

    @staticmethod
    def _assign(rng: np.random.Generator, period: int) -> np.ndarray:
        """P, P ground class ids; each differs from its left and lower neighbours."""
        choice = rng.integers(0, 60, (period, period))  # 60: unbiased modulo 3, 4 and 5
        index = np.zeros((period, period), dtype=np.int64)
        for i in range(period):
            for j in range(period):
                taken = {int(index[i - 1, j]) if i else -1, int(index[i, j - 1]) if j else -1}
                free = [k for k in range(len(GROUND_CLASSES)) if k not in taken]
                index[i, j] = free[int(choice[i, j]) % len(free)]
        return np.asarray(GROUND_CLASSES, dtype=np.uint8)[index]

    def _warp(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The displaced coordinates (N,) of points (x, y) (N,)."""
        wx, wy = x.copy(), y.copy()
        for grid, cell, amplitude in self.warps:
            n = grid.shape[0]
            shift = remap_points(grid, np.mod(x / cell, n), np.mod(y / cell, n))  # N, 2
            wx += amplitude * shift[:, 0]
            wy += amplitude * shift[:, 1]
        return wx, wy

    def classes_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """(N,) uint8 training ids at odom points (x, y) (N,), float64 metres."""
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        if not x.size:
            return np.zeros(0, dtype=np.uint8)
        wx, wy = self._warp(x, y)
        gx, gy = wx / self.region_m, wy / self.region_m  # N, in region units
        ix, iy = np.floor(gx), np.floor(gy)
        fx, fy = (gx - ix).astype(np.float32), (gy - iy).astype(np.float32)  # N, in [0, 1)
        period = self.period
        rows = [((ix.astype(np.int64) + d) % period) * period for d in (-1, 0, 1)]  # 3 x N
        cols = [(iy.astype(np.int64) + d) % period for d in (-1, 0, 1)]
        centre_x, centre_y = self.centres[..., 0].reshape(-1), self.centres[..., 1].reshape(-1)
        best = np.full(x.shape, np.inf, dtype=np.float32)
        best_cell = rows[1] + cols[1]
        for di, row in zip((-1, 0, 1), rows, strict=True):
            for dj, col in zip((-1, 0, 1), cols, strict=True):
                cell = row + col  # N
                dx = fx - np.float32(di) - centre_x.take(cell)
                dy = fy - np.float32(dj) - centre_y.take(cell)
                dist = dx * dx + dy * dy
                closer = dist < best
                np.copyto(best, dist, where=closer)
                np.copyto(best_cell, cell, where=closer)
        return self.ids.reshape(-1).take(best_cell)

    def raster(self, x0: float, y0: float, size_m: tuple[float, float],
               resolution: float = 0.05) -> np.ndarray:
        """A top-down class map: (rows, cols) uint8, cell (r, c) centred on
        (x0 + (c + 0.5) * resolution, y0 + (r + 0.5) * resolution); rows along y."""
        cols = int(round(size_m[0] / resolution))
        rows = int(round(size_m[1] / resolution))
        xs = x0 + (np.arange(cols) + 0.5) * resolution
        ys = y0 + (np.arange(rows) + 0.5) * resolution
        gx, gy = np.meshgrid(xs, ys)
        return self.classes_at(gx, gy).reshape(rows, cols)


# ---- trajectory -------------------------------------------------------------------------------


class Trajectory(NamedTuple):
    """The drive, sampled at IMU_HZ from the start stamp; all (N,) float64 unless noted."""

    stamp_ns: np.ndarray  # N int64
    s: np.ndarray  # m, arc length driven
    x: np.ndarray  # m, base_link in odom
    y: np.ndarray
    yaw: np.ndarray  # rad, continuous (not wrapped)
    speed: np.ndarray  # m/s, measured (the odometry twist)
    speed_cmd: np.ndarray  # m/s, commanded (/cmd_vel)
    yaw_rate: np.ndarray  # rad/s
    accel: np.ndarray  # m/s^2, d speed / dt
    cost: np.ndarray  # terrain cost under the footprint centre
    vibration: np.ndarray  # m/s^2 std of the vertical vibration (the wheels' terrain, WHEELS)


class _Path:
    """A curve by arc length s from the origin along x: heading = sum of 3 sinusoids of s."""

    def __init__(self, rng: np.random.Generator, length: float, step: float = 0.01):
        self.amps = rng.uniform(0.2, 0.55, 3)  # rad
        self.waves = rng.uniform(14.0, 55.0, 3)  # wavelengths, m
        self.phases = rng.uniform(0, 2 * math.pi, 3)
        self.step = step
        self.s = np.arange(0.0, length + 2 * step, step)  # M
        heading = self.heading(self.s)  # M
        dx, dy = np.cos(heading), np.sin(heading)
        self.x = np.concatenate([[0.0], np.cumsum((dx[1:] + dx[:-1]) / 2 * step)])  # M
        self.y = np.concatenate([[0.0], np.cumsum((dy[1:] + dy[:-1]) / 2 * step)])  # M

    def _arg(self, s: np.ndarray) -> np.ndarray:
        return 2 * math.pi * np.asarray(s, dtype=np.float64)[..., None] / self.waves + self.phases

    def heading(self, s: np.ndarray) -> np.ndarray:
        """Yaw (rad) at arc length s; 0 at s = 0."""
        return (self.amps * (np.sin(self._arg(s)) - np.sin(self.phases))).sum(axis=-1)

    def curvature(self, s: np.ndarray) -> np.ndarray:
        """d yaw / d s (1/m)."""
        return (self.amps * 2 * math.pi / self.waves * np.cos(self._arg(s))).sum(axis=-1)

    def position(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.interp(s, self.s, self.x), np.interp(s, self.s, self.y)


class _SpeedCommand:
    """v_cmd(t): a normalised sum of 3 sinusoids of time (periods 6 to 25 s) in SPEED_RANGE."""

    def __init__(self, rng: np.random.Generator):
        self.amps = rng.uniform(0.5, 1.0, 3)
        self.periods = rng.uniform(6.0, 25.0, 3)
        self.phases = rng.uniform(0, 2 * math.pi, 3)

    def _g(self, t: np.ndarray, derivative: bool) -> np.ndarray:
        arg = 2 * math.pi * np.asarray(t, dtype=np.float64)[..., None] / self.periods
        if derivative:
            terms = self.amps * 2 * math.pi / self.periods * np.cos(arg + self.phases)
        else:
            terms = self.amps * np.sin(arg + self.phases)
        return terms.sum(axis=-1) / self.amps.sum()  # -1 .. 1 (or its rate)

    def __call__(self, t: np.ndarray) -> np.ndarray:
        """v_cmd (m/s) at times t (s)."""
        lo, hi = SPEED_RANGE
        return (lo + hi) / 2 + (hi - lo) / 2 * self._g(t, False)

    def rate(self, t: np.ndarray) -> np.ndarray:
        """d v_cmd / dt (m/s^2) at times t (s)."""
        lo, hi = SPEED_RANGE
        return (hi - lo) / 2 * self._g(t, True)


class _Motion(NamedTuple):
    s: np.ndarray  # N, m
    speed: np.ndarray  # N, m/s
    accel: np.ndarray  # N, m/s^2
    cost: np.ndarray  # N, terrain cost under the footprint centre


def _drive(v_cmd: np.ndarray, v_cmd_rate: np.ndarray, costs: np.ndarray,
           step: float) -> _Motion:
    """Integrate the drive at IMU_HZ from samples of the commanded speed and its rate (N,) and
    the terrain costs along the path every `step` metres: speed = v_cmd * f, where the factor f
    follows 1 - SPEED_LOSS * cost (cost under the footprint centre) with the lag SPEED_LAG_S,
    solved exactly over each sample; the arc length by the trapezoid rule."""
    dt = 1.0 / IMU_HZ
    decay = math.exp(-dt / SPEED_LAG_S)
    cost_list, command, command_rate = costs.tolist(), v_cmd.tolist(), v_cmd_rate.tolist()
    last = len(cost_list) - 1
    n = len(command)
    s, speed, accel, under = (np.empty(n) for _ in range(4))
    pos = 0.0
    factor = 1 - SPEED_LOSS * cost_list[0]
    for k in range(n):
        cost = cost_list[min(int(pos / step + 0.5), last)]
        target = 1 - SPEED_LOSS * cost
        vel = command[k] * factor
        s[k], speed[k], under[k] = pos, vel, cost
        accel[k] = command_rate[k] * factor + command[k] * (target - factor) / SPEED_LAG_S
        factor = target + (factor - target) * decay
        if k + 1 < n:
            pos += 0.5 * (vel + command[k + 1] * factor) * dt
    return _Motion(s, speed, accel, under)


def _band_noise(rng: np.random.Generator, samples: int, rate: float,
                band: tuple[float, float]) -> np.ndarray:
    """(samples,) unit-std noise with its power in `band` (Hz): white noise filtered in the
    frequency domain, with raised-cosine edges 2 Hz wide."""
    white = rng.standard_normal(samples)
    freqs = np.fft.rfftfreq(samples, 1.0 / rate)
    lo, hi = band
    gain = np.clip((freqs - lo + 1.0) / 2, 0, 1) * np.clip((hi + 1.0 - freqs) / 2, 0, 1)
    out = np.fft.irfft(np.fft.rfft(white) * np.sin(gain * math.pi / 2) ** 2, n=samples)
    return out / max(float(out.std()), 1e-12)


class ImuSamples(NamedTuple):
    stamp_ns: np.ndarray  # N int64
    orientation: np.ndarray  # N, 4 (x, y, z, w) of base_link in odom
    angular_velocity: np.ndarray  # N, 3 rad/s in base_link
    linear_acceleration: np.ndarray  # N, 3 m/s^2 specific force in base_link


# ---- appearance -------------------------------------------------------------------------------


class _Appearance:
    """synth.py's ground appearance (one draw of its per-class colours, texture offsets, sky
    and haze) laid out in odom coordinates, plus a world-fixed brightness variation."""

    def __init__(self, rng: np.random.Generator, camera: SimCamera):
        # the painter's tables do not depend on its camera; a tiny one is enough to build it
        painter = _Painter(rng, _Camera.draw(rng, 16, 16))
        self.colors = painter.colors
        self.ground_tex = painter.ground_tex
        self.offsets = painter.offsets
        self.sky_top, self.sky_horizon = painter.sky_top, painter.sky_horizon
        self.haze = painter.haze
        self.tex = _texture_pyramids()
        self.focal = camera.fx
        self.brightness = _periodic_noise(rng, 64, 1, 1.0)[..., 0]  # 64, 64
        self.brightness *= np.float32(0.08)
        self.brightness_cell = 2.5  # m

    def _texture(self, name: str, level: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """(N,) bilinear wrap-around samples of texture level `level` at texel (u, v) (N,)."""
        tex = self.tex[name][level]
        size = tex.shape[0]
        return remap_points(tex, np.mod(u, size), np.mod(v, size))

    def _shade(self, cls: int, x: np.ndarray, y: np.ndarray, dist: np.ndarray) -> np.ndarray:
        """(N,) texture shading of class `cls` at ground points (x, y), `dist` from the camera."""
        (ou, ov), angle = self.offsets[cls]
        cos, sin = math.cos(angle), math.sin(angle)
        shade = np.ones(x.shape, dtype=np.float32)
        fade = np.exp(-dist / 80.0).astype(np.float32)  # distant texture fades (synth)
        for i, (name, per_metre, amplitude, aniso) in enumerate(self.ground_tex[cls]):
            u = (x * cos - y * sin) * per_metre * aniso + ou * (i + 1)
            v = (x * sin + y * cos) * per_metre + ov * (i + 1)
            pyramid = self.tex[name]
            levels = _mip_level(per_metre * dist / self.focal * max(aniso, 1.0), len(pyramid))
            for level in np.unique(levels):
                at = levels == level
                scale = 0.5 ** int(level)
                tex = self._texture(name, int(level), u[at] * scale, v[at] * scale)
                shade[at] += amplitude * fade[at] * tex
        return shade

    def _sky(self, elevation: np.ndarray) -> np.ndarray:
        """(..., 3) float32 sky gradient by ray elevation: horizon colour at or below 0."""
        t = np.clip(elevation / 0.5, 0.0, 1.0).astype(np.float32)[..., None] ** 0.7
        return (1 - t) * self.sky_horizon + t * self.sky_top

    def paint(self, hits: GroundHits, labels: np.ndarray, T_odom_optical: np.ndarray,
              rng: np.random.Generator) -> np.ndarray:
        """H, W, 3 uint8 RGB of a frame: `labels` (SKY off the ground) at the ground points."""
        import cv2

        image = self._sky(hits.elevation)  # H, W, 3 float32
        ground = labels != SKY
        x, y = hits.points[..., 0][ground], hits.points[..., 1][ground]  # n
        dist = hits.range[ground]
        classes = labels[ground]
        color = np.empty((x.size, 3), dtype=np.float32)
        for cls in np.unique(classes):
            at = classes == cls
            shade = self._shade(int(cls), x[at], y[at], dist[at])
            color[at] = self.colors[int(cls)] * shade[:, None] * (0.9 if cls == PUDDLE else 1.0)
        light = 1.0 + remap_points(self.brightness, np.mod(x / self.brightness_cell, 64),
                                   np.mod(y / self.brightness_cell, 64))
        color *= light[:, None]
        amount, distance = self.haze
        horizontal = np.hypot(x - T_odom_optical[0, 3], y - T_odom_optical[1, 3])
        far = np.clip((horizontal - 0.7 * FAR_M) / (0.3 * FAR_M), 0.0, 1.0)
        mix = amount * (1.0 - np.exp(-dist / distance))
        mix = (mix + (1 - mix) * far * far * (3 - 2 * far)).astype(np.float32)[:, None]
        image[ground] = (1 - mix) * color + mix * self.sky_horizon
        image = cv2.GaussianBlur(image, (0, 0), 0.6)
        image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(1.5)
        return np.clip(image + 0.5, 0, 255).astype(np.uint8)


# ---- the drive --------------------------------------------------------------------------------


class SimFrame(NamedTuple):
    index: int
    stamp_ns: int  # header.stamp of the image, camera_info and both ground-truth messages
    rgb: np.ndarray  # H, W, 3 uint8
    labels: np.ndarray  # H, W uint8 training ids (SKY above the horizon and beyond FAR_M)
    cost: np.ndarray  # H, W float32 terrain cost, NaN on sky
    patch: np.ndarray | None  # H, W float32 oracle patch mask, NaN off it; None: not asked for
    T_odom_optical: np.ndarray  # 4, 4 camera_optical_frame in odom at stamp_ns


def frame_stamp_ns(spec: SimDriveSpec, index: int) -> int:
    """header.stamp (= log time) of camera frame `index`, ns since the epoch."""
    return drive_bag._to_ns(spec.start_stamp_s) + round(index * 1e9 / spec.fps)


def check_spec(spec: SimDriveSpec) -> None:
    """ValueError listing everything wrong with `spec`."""
    problems = []
    if spec.frames < 1:
        problems.append(f'frames must be >= 1, got {spec.frames}')
    if spec.height < 16 or spec.width < 16:
        problems.append(f'frame size must be at least 16x16, got {spec.height}x{spec.width} '
                        '(height x width)')
    if not (math.isfinite(spec.fps) and spec.fps > 0):
        problems.append(f'fps must be positive, got {spec.fps}')
    if spec.storage not in drive_bag.STORAGES:
        problems.append(f'storage must be one of {drive_bag.STORAGES}, got {spec.storage!r}')
    if spec.version not in drive_bag.VERSIONS:
        problems.append(f'version must be one of {drive_bag.VERSIONS}, got {spec.version!r}')
    if not 1 <= spec.jpeg_quality <= 100:
        problems.append(f'jpeg_quality must be 1..100, got {spec.jpeg_quality}')
    if spec.start_stamp_s < 0:
        problems.append(f'start_stamp_s must be >= 0, got {spec.start_stamp_s}')
    if not 1.0 <= spec.hfov_deg <= 170.0:
        problems.append(f'hfov_deg must be within 1..170, got {spec.hfov_deg}')
    if not (math.isfinite(spec.horizon_s) and spec.horizon_s >= 0):
        problems.append(f'horizon_s must be >= 0, got {spec.horizon_s}')
    if not (math.isfinite(spec.range_m) and spec.range_m > 0):
        problems.append(f'range_m must be positive, got {spec.range_m}')
    if not (math.isfinite(spec.region_m) and spec.region_m > 0):
        problems.append(f'region_m must be positive, got {spec.region_m}')
    if not spec.camera_pose.z > 0:
        problems.append(f'the camera must be above the ground, got z = {spec.camera_pose.z}')
    if len(set(spec.topics)) != len(spec.topics):
        problems.append(f'topics must differ, got {spec.topics}')
    if problems:
        raise ValueError('invalid simulated drive spec: ' + '; '.join(problems))


class SimDrive:
    """The simulated drive of `spec` in memory: trajectory and IMU computed at construction,
    camera frames rendered on request.

        drive = SimDrive(SimDriveSpec(frames=20, height=96, width=160))
        frame = drive.frame(3)            # rgb, labels, cost, oracle patch, T_odom_optical
        drive.pose_at(frame.stamp_ns)     # 4, 4 T_odom_base (interpolated)
        drive.trajectory, drive.imu       # the 200 Hz samples (odometry: odom_indices())
        drive.camera                      # SimCamera: intrinsics and T_base_optical

    `terrain` replaces the generated Terrain (anything with `classes_at`, returning classes
    that have a cost), e.g. for a test.
    """

    def __init__(self, spec: SimDriveSpec, terrain: TerrainMap | None = None):
        check_spec(spec)
        self.spec = spec
        self.camera = sim_camera(spec.height, spec.width, spec.hfov_deg, spec.camera_pose)
        self.terrain = terrain if terrain is not None else Terrain(spec.seed, spec.region_m)
        self.cost_lut = class_cost_lut()
        self.start_ns = drive_bag._to_ns(spec.start_stamp_s)
        self.end_ns = frame_stamp_ns(spec, spec.frames - 1) + round(spec.horizon_s * 1e9)
        period_ns = 1_000_000_000 // IMU_HZ
        samples = -(-(self.end_ns - self.start_ns) // period_ns) + 1  # covers end_ns
        rng = np.random.default_rng([spec.seed, 1])
        self.path = _Path(rng, SPEED_RANGE[1] * (samples - 1) / IMU_HZ + 1.0)
        self.command = _SpeedCommand(rng)
        self.trajectory = self._simulate(samples)
        self.imu = self._imu(np.random.default_rng([spec.seed, 2]))
        self._rays = pixel_rays(self.camera)  # H, W, 3
        self._appearance = _Appearance(np.random.default_rng([spec.seed, 3]), self.camera)
        self._cost_grids: dict[tuple[float, float], CostGrid] = {}

    # -- motion ---------------------------------------------------------------------------------

    def _simulate(self, samples: int) -> Trajectory:
        path = self.path
        costs = self.cost_lut[self.terrain.classes_at(path.x, path.y)].astype(np.float64)  # M
        if not np.isfinite(costs).all():
            raise ValueError('the terrain has classes without a cost under the path')
        stamps = self.start_ns + np.arange(samples, dtype=np.int64) * (1_000_000_000 // IMU_HZ)
        t = (stamps - self.start_ns) / 1e9
        v_cmd = self.command(t)
        s, speed, accel, cost = _drive(v_cmd, self.command.rate(t), costs, path.step)
        x, y = path.position(s)
        yaw = path.heading(s)
        return Trajectory(stamps, s, x, y, yaw, speed, v_cmd, path.curvature(s) * speed, accel,
                          cost, self._wheel_vibration(x, y, yaw))

    def _wheel_vibration(self, x: np.ndarray, y: np.ndarray, yaw: np.ndarray) -> np.ndarray:
        """N: std of the vertical vibration, sqrt of the mean over WHEELS of the squared
        vibration level of the terrain under each wheel."""
        c, s = np.cos(yaw), np.sin(yaw)
        power = np.zeros_like(x)
        for fx, fy in WHEELS:
            classes = self.terrain.classes_at(x + c * fx - s * fy, y + s * fx + c * fy)
            power += vibration_level(self.cost_lut[classes].astype(np.float64)) ** 2
        return np.sqrt(power / len(WHEELS))

    def _imu(self, rng: np.random.Generator) -> ImuSamples:
        traj = self.trajectory
        n = len(traj.stamp_ns)
        shake = np.stack([_band_noise(rng, n, IMU_HZ, VIBRATION_BAND_HZ) for _ in range(3)], 1)
        shake *= traj.vibration[:, None] * np.array([0.25, 0.25, 1.0])  # N, 3
        accel = np.stack([traj.accel, traj.speed * traj.yaw_rate, np.full(n, GRAVITY)], 1)
        accel += shake + 0.02 * rng.standard_normal((n, 3))  # N, 3
        gyro = np.zeros((n, 3))
        gyro[:, 2] = traj.yaw_rate
        gyro += 0.002 * rng.standard_normal((n, 3))  # N, 3
        half = traj.yaw / 2
        orientation = np.stack([np.zeros(n), np.zeros(n), np.sin(half), np.cos(half)], 1)
        return ImuSamples(traj.stamp_ns, orientation, gyro, accel)

    def state_at(self, stamp_ns: int) -> tuple[float, float, float]:
        """x, y, yaw of base_link at `stamp_ns` (arc length interpolated between samples)."""
        traj = self.trajectory
        if not traj.stamp_ns[0] <= stamp_ns <= traj.stamp_ns[-1]:
            raise ValueError(f'stamp {stamp_ns} is outside the drive '
                             f'[{traj.stamp_ns[0]}, {traj.stamp_ns[-1]}]')
        s = np.interp(float(stamp_ns - self.start_ns), (traj.stamp_ns - self.start_ns)
                      .astype(np.float64), traj.s)
        x, y = self.path.position(s)
        return float(x), float(y), float(self.path.heading(s))

    def pose_at(self, stamp_ns: int) -> np.ndarray:
        """4, 4 T_odom_base at `stamp_ns` (ns since the epoch, within the drive)."""
        return base_pose(*self.state_at(stamp_ns))

    def frame_stamp_ns(self, index: int) -> int:
        return frame_stamp_ns(self.spec, index)

    def camera_pose(self, index: int) -> np.ndarray:
        """4, 4 T_odom_optical of camera frame `index`."""
        return self.pose_at(self.frame_stamp_ns(index)) @ self.camera.T_base_optical

    def odom_indices(self) -> np.ndarray:
        """Trajectory indices of the odometry samples (every IMU_HZ / ODOM_HZ-th)."""
        return np.arange(0, len(self.trajectory.stamp_ns), IMU_HZ // ODOM_HZ)

    def cmd_vel_indices(self) -> np.ndarray:
        """Trajectory indices of the /cmd_vel samples (every IMU_HZ / CMD_VEL_HZ-th)."""
        return np.arange(0, len(self.trajectory.stamp_ns), IMU_HZ // CMD_VEL_HZ)

    # -- frames ---------------------------------------------------------------------------------

    def _ground(self, index: int) -> tuple[GroundHits, np.ndarray, np.ndarray, np.ndarray]:
        """Ground hits, labels (H, W uint8), cost (H, W float32) and T_odom_optical."""
        self._check_index(index)
        T = self.camera_pose(index)
        hits = ground_hits(self.camera, T, self._rays)
        horizontal = np.hypot(hits.points[..., 0] - T[0, 3], hits.points[..., 1] - T[1, 3])
        near = hits.ground & (horizontal <= FAR_M)  # H, W
        labels = np.full(near.shape, SKY, dtype=np.uint8)
        labels[near] = self.terrain.classes_at(hits.points[..., 0][near],
                                               hits.points[..., 1][near])
        cost = np.where(near, self.cost_lut[labels], np.float32(np.nan)).astype(np.float32)
        return hits, labels, cost, T

    def render(self, index: int) -> SimFrame:
        """Camera frame `index` with its ground-truth cost, without the oracle patch."""
        hits, labels, cost, T = self._ground(index)
        rgb = self._appearance.paint(hits, labels, T,
                                     np.random.default_rng([self.spec.seed, 4, index]))
        return SimFrame(index, self.frame_stamp_ns(index), rgb, labels, cost, None, T)

    def frame(self, index: int) -> SimFrame:
        """Camera frame `index` with its ground-truth cost and oracle patch mask."""
        hits, labels, cost, T = self._ground(index)
        rgb = self._appearance.paint(hits, labels, T,
                                     np.random.default_rng([self.spec.seed, 4, index]))
        return SimFrame(index, self.frame_stamp_ns(index), rgb, labels, cost,
                        self._oracle(index, hits, cost, T), T)

    def frames(self) -> Iterator[SimFrame]:
        for index in range(self.spec.frames):
            yield self.frame(index)

    def oracle(self, index: int) -> np.ndarray:
        """H, W float32 oracle patch mask of frame `index` (module docstring), NaN off it."""
        hits, _, cost, T = self._ground(index)
        return self._oracle(index, hits, cost, T)

    def oracle_samples(self, index: int) -> np.ndarray:
        """(K,) trajectory indices of the footprints in frame `index`'s oracle mask: the
        odometry samples in (t_i, t_i + horizon_s] whose centre (on the ground) is within
        range_m of the camera centre at t_i."""
        self._check_index(index)
        traj = self.trajectory
        stamp = self.frame_stamp_ns(index)
        odom = self.odom_indices()
        stamps = traj.stamp_ns[odom]
        later = odom[(stamps > stamp) & (stamps <= stamp + round(self.spec.horizon_s * 1e9))]
        centre = self.camera_pose(index)[:3, 3]
        dist = np.sqrt((traj.x[later] - centre[0]) ** 2 + (traj.y[later] - centre[1]) ** 2
                       + centre[2] ** 2)  # footprint centres are on the ground, z = 0
        return later[dist <= self.spec.range_m]

    def oracle_poses(self, index: int) -> np.ndarray:
        """(K, 3) x, y, yaw of the footprints in frame `index`'s oracle mask."""
        kept = self.oracle_samples(index)
        traj = self.trajectory
        return np.stack([traj.x[kept], traj.y[kept], traj.yaw[kept]], axis=1)

    def oracle_log_ns(self, index: int) -> int | None:
        """Log time of frame `index`'s oracle mask: the stamp of its last footprint (the robot
        has driven all of it then); None when it has no footprint."""
        kept = self.oracle_samples(index)
        return int(self.trajectory.stamp_ns[kept[-1]]) if kept.size else None

    def _oracle(self, index: int, hits: GroundHits, cost: np.ndarray,
                T: np.ndarray) -> np.ndarray:
        poses = self.oracle_poses(index)  # K, 3
        patch = np.full(cost.shape, np.nan, dtype=np.float32)  # H, W
        if not len(poses):
            return patch
        horizontal = np.hypot(hits.points[..., 0] - T[0, 3], hits.points[..., 1] - T[1, 3])
        reach = self.spec.range_m + math.hypot(ROBOT_LENGTH, ROBOT_WIDTH) / 2
        candidates = hits.ground & (horizontal <= reach)  # H, W
        inside = np.zeros(cost.shape, dtype=bool)  # H, W
        inside[candidates] = _inside_footprints(
            hits.points[..., 0][candidates], hits.points[..., 1][candidates], poses,
            ROBOT_LENGTH, ROBOT_WIDTH)
        patch[inside] = cost[inside]
        return patch

    def cost_grid(self, resolution: float = GT_GRID_RESOLUTION_M,
                  margin_m: float = GT_GRID_MARGIN_M) -> CostGrid:
        """The ground-truth cost grid (module docstring): the terrain cost at each cell's
        centre over the driven path's bounding box plus `margin_m`; computed once per
        (resolution, margin)."""
        key = (float(resolution), float(margin_m))
        cached = self._cost_grids.get(key)
        if cached is not None:
            return cached
        traj = self.trajectory
        i0 = math.floor((traj.x.min() - margin_m) / resolution)
        i1 = math.ceil((traj.x.max() + margin_m) / resolution)
        j0 = math.floor((traj.y.min() - margin_m) / resolution)
        j1 = math.ceil((traj.y.max() + margin_m) / resolution)
        xs = (np.arange(i0, i1) + 0.5) * resolution  # cols
        data = np.empty((j1 - j0, i1 - i0), dtype=np.int8)  # rows, cols
        step = max(1, (1 << 18) // len(xs))  # rows per chunk: about 256 k points
        for start in range(0, j1 - j0, step):
            ys = (np.arange(j0 + start, min(j0 + start + step, j1)) + 0.5) * resolution
            gx, gy = np.meshgrid(xs, ys)
            cost = self.cost_lut[self.terrain.classes_at(gx, gy)].reshape(gx.shape)
            data[start:start + len(ys)] = np.where(np.isfinite(cost),
                                                   np.rint(100.0 * np.nan_to_num(cost)), -1)
        grid = CostGrid(data, float(resolution), i0 * resolution, j0 * resolution)
        self._cost_grids[key] = grid
        return grid

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self.spec.frames:
            raise IndexError(f'frame {index} out of range 0..{self.spec.frames - 1}')


# ---- writing ----------------------------------------------------------------------------------


def topic_types(spec: SimDriveSpec) -> dict[str, str]:
    """topic -> message type of the bag `spec` describes, in connection order."""
    t = spec.topics
    camera = ((t.compressed_image, bagio.COMPRESSED_IMAGE_TYPE) if spec.compressed
              else (t.image, bagio.IMAGE_TYPE))
    return dict([(t.tf_static, TF_TYPE), (t.odom, ODOMETRY_TYPE), (t.imu, IMU_TYPE),
                 (t.cmd_vel, TWIST_STAMPED_TYPE), camera, (t.camera_info, CAMERA_INFO_TYPE),
                 (t.ground_truth, bagio.IMAGE_TYPE), (t.patch_cost, bagio.IMAGE_TYPE),
                 (t.cost_grid, bagio.OCCUPANCY_GRID_TYPE)])


class _Messages:
    """Serializes the drive's messages with one typestore (rosbags message classes)."""

    def __init__(self, ts: Typestore, drive: SimDrive):
        self.ts = ts
        self.t = ts.types
        self.drive = drive
        self.spec = drive.spec
        self.topics = drive.spec.topics
        self.pending: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # frame -> oracle patch

    def _vector(self, values: Iterable[float]) -> Any:
        x, y, z = (float(v) for v in values)
        return self.t['geometry_msgs/msg/Vector3'](x=x, y=y, z=z)

    def _quaternion(self, values: Iterable[float]) -> Any:
        x, y, z, w = (float(v) for v in values)
        return self.t['geometry_msgs/msg/Quaternion'](x=x, y=y, z=z, w=w)

    def _cdr(self, msg: Any) -> memoryview:
        return self.ts.serialize_cdr(msg, msg.__msgtype__)

    def tf_static(self, stamp_ns: int) -> list[tuple[str, memoryview]]:
        T_body = pose_matrix(*self.spec.camera_pose)
        transforms = [self._transform(stamp_ns, BASE_FRAME, CAMERA_FRAME, T_body),
                      self._transform(stamp_ns, CAMERA_FRAME, OPTICAL_FRAME, T_BODY_OPTICAL)]
        return [(self.topics.tf_static, self._cdr(self.t[TF_TYPE](transforms=transforms)))]

    def static(self, stamp_ns: int) -> list[tuple[str, memoryview]]:
        """What is written once, at the start: /tf_static, then the ground-truth cost grid."""
        return [*self.tf_static(stamp_ns), *self.cost_grid(stamp_ns)]

    def cost_grid(self, stamp_ns: int) -> list[tuple[str, memoryview]]:
        grid = self.drive.cost_grid()
        return [(self.topics.cost_grid, bagio.serialize_occupancy(
            self.ts, grid.data, grid.resolution, (grid.origin_x, grid.origin_y),
            bagio.header(self.ts, stamp_ns, ODOM_FRAME)))]

    def _transform(self, stamp_ns: int, parent: str, child: str, T: np.ndarray) -> Any:
        transform = self.t['geometry_msgs/msg/Transform'](
            translation=self._vector(T[:3, 3]), rotation=self._quaternion(quaternion_xyzw(
                T[:3, :3])))
        return self.t['geometry_msgs/msg/TransformStamped'](
            header=bagio.header(self.ts, stamp_ns, parent), child_frame_id=child,
            transform=transform)

    def sensors(self, k: int) -> list[tuple[str, memoryview]]:
        """The messages of trajectory sample k: IMU always, odometry and cmd_vel on their
        sub-rates."""
        out = [(self.topics.imu, self._imu(k))]
        if k % (IMU_HZ // ODOM_HZ) == 0:
            out.append((self.topics.odom, self._odom(k)))
        if k % (IMU_HZ // CMD_VEL_HZ) == 0:
            out.append((self.topics.cmd_vel, self._cmd_vel(k)))
        return out

    def _imu(self, k: int) -> memoryview:
        imu = self.drive.imu
        t = self.t
        msg = t[IMU_TYPE](
            header=bagio.header(self.ts, int(imu.stamp_ns[k]), BASE_FRAME),
            orientation=self._quaternion(imu.orientation[k]),
            orientation_covariance=np.diag([1e-4] * 3).reshape(-1),
            angular_velocity=self._vector(imu.angular_velocity[k]),
            angular_velocity_covariance=np.diag([0.002 ** 2] * 3).reshape(-1),
            linear_acceleration=self._vector(imu.linear_acceleration[k]),
            linear_acceleration_covariance=np.diag([0.02 ** 2] * 3).reshape(-1))
        return self._cdr(msg)

    def _odom(self, k: int) -> memoryview:
        traj = self.drive.trajectory
        t = self.t
        pose = t['geometry_msgs/msg/Pose'](
            position=t['geometry_msgs/msg/Point'](x=float(traj.x[k]), y=float(traj.y[k]), z=0.0),
            orientation=self._quaternion(yaw_quaternion(float(traj.yaw[k]))))
        twist = t['geometry_msgs/msg/Twist'](
            linear=self._vector((traj.speed[k], 0.0, 0.0)),
            angular=self._vector((0.0, 0.0, traj.yaw_rate[k])))
        covariance = np.diag([1e-3] * 6).reshape(-1)
        msg = t[ODOMETRY_TYPE](
            header=bagio.header(self.ts, int(traj.stamp_ns[k]), ODOM_FRAME),
            child_frame_id=BASE_FRAME,
            pose=t['geometry_msgs/msg/PoseWithCovariance'](pose=pose, covariance=covariance),
            twist=t['geometry_msgs/msg/TwistWithCovariance'](twist=twist,
                                                             covariance=covariance))
        return self._cdr(msg)

    def _cmd_vel(self, k: int) -> memoryview:
        traj = self.drive.trajectory
        twist = self.t['geometry_msgs/msg/Twist'](
            linear=self._vector((traj.speed_cmd[k], 0.0, 0.0)),
            angular=self._vector((0.0, 0.0, traj.yaw_rate[k])))
        msg = self.t[TWIST_STAMPED_TYPE](
            header=bagio.header(self.ts, int(traj.stamp_ns[k]), BASE_FRAME), twist=twist)
        return self._cdr(msg)

    def camera(self, index: int) -> list[tuple[str, memoryview]]:
        """Camera image, camera_info and ground-truth cost of frame `index`; its oracle patch
        waits (as its pixels and values) in `pending` until its log time."""
        frame = self.drive.frame(index)
        covered = np.flatnonzero(np.isfinite(frame.patch))  # n
        if covered.size:
            self.pending[index] = (covered, frame.patch.reshape(-1)[covered])
        stamp = frame.stamp_ns
        header = bagio.header(self.ts, stamp, OPTICAL_FRAME)
        if self.spec.compressed:
            fmt, payload = rgb_to_compressed_bytes(frame.rgb, 'jpeg', self.spec.jpeg_quality)
            image = self._cdr(self.t[bagio.COMPRESSED_IMAGE_TYPE](
                header=header, format=fmt, data=np.frombuffer(payload, np.uint8)))
            image_topic = self.topics.compressed_image
        else:
            image = bagio.serialize_image(self.ts, frame.rgb, 'rgb8', header)
            image_topic = self.topics.image
        return [(image_topic, image), (self.topics.camera_info, self._camera_info(stamp)),
                (self.topics.ground_truth,
                 bagio.serialize_image(self.ts, frame.cost, '32FC1', header))]

    def _camera_info(self, stamp_ns: int) -> memoryview:
        camera = self.drive.camera
        roi = self.t['sensor_msgs/msg/RegionOfInterest'](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        msg = self.t[CAMERA_INFO_TYPE](
            header=bagio.header(self.ts, stamp_ns, OPTICAL_FRAME), height=camera.height,
            width=camera.width, distortion_model='plumb_bob', d=np.zeros(5),
            k=camera.k.reshape(-1), r=np.eye(3).reshape(-1), p=camera.p.reshape(-1),
            binning_x=0, binning_y=0, roi=roi)
        return self._cdr(msg)

    def oracle(self, index: int) -> list[tuple[str, memoryview]]:
        """The oracle patch mask of frame `index` (rendered with the frame); nothing when it
        is empty."""
        covered, values = self.pending.pop(index, (np.zeros(0, np.int64), None))
        if not covered.size:
            _logger.debug('frame %d: no future footprint in view, no oracle patch', index)
            return []
        camera = self.drive.camera
        patch = np.full(camera.height * camera.width, np.nan, dtype=np.float32)
        patch[covered] = values
        patch = patch.reshape(camera.height, camera.width)
        header = bagio.header(self.ts, self.drive.frame_stamp_ns(index), OPTICAL_FRAME)
        return [(self.topics.patch_cost, bagio.serialize_image(self.ts, patch, '32FC1',
                                                                header))]


class _Event(NamedTuple):
    log_ns: int
    order: int  # at equal log times: 0 tf_static and cost grid, 1 sensors, 2 camera, 3 oracle
    index: int  # trajectory sample or frame index
    make: Callable[[int], list[tuple[str, memoryview]]]  # index -> (topic, CDR bytes)


def _events(drive: SimDrive, messages: _Messages) -> Iterator[_Event]:
    """Every message of the drive, lazily, in log-time order."""
    spec = drive.spec
    stamps = drive.trajectory.stamp_ns.tolist()
    streams = [
        iter([_Event(drive.start_ns, 0, drive.start_ns, messages.static)]),
        (_Event(stamp, 1, k, messages.sensors) for k, stamp in enumerate(stamps)),
        (_Event(drive.frame_stamp_ns(i), 2, i, messages.camera) for i in range(spec.frames)),
        iter(sorted(_Event(log_ns, 3, i, messages.oracle) for i, log_ns in (
            (i, drive.oracle_log_ns(i)) for i in range(spec.frames)) if log_ns is not None)),
    ]
    return heapq.merge(*streams, key=lambda event: (event.log_ns, event.order))


def _write_bag(bag: Path, drive: SimDrive, progress: bool) -> dict[str, int]:
    """Write the rosbag2 directory `bag` (must not exist); returns topic -> message count."""
    try:
        from rosbags.rosbag2 import Writer
    except ImportError as error:
        raise ImportError(f'writing a bag needs rosbags (pip install -r requirements/dev.txt): '
                          f'{error}') from error
    from tqdm import tqdm

    spec = drive.spec
    typestore = bagio.typestore(spec.version)
    messages = _Messages(typestore, drive)
    counts = dict.fromkeys(topic_types(spec), 0)
    latched = (spec.topics.tf_static, spec.topics.cost_grid)  # transient local, written once
    with Writer(bag, version=spec.version, storage_plugin=bagio.storage_plugin(
            spec.storage)) as writer, tqdm(total=spec.frames, desc='drive-bag', unit='frame',
                                           disable=not progress, dynamic_ncols=True) as bar:
        connections = {
            topic: writer.add_connection(
                topic, msgtype, typestore=typestore,
                offered_qos_profiles=(bagio.transient_local_qos() if topic in latched
                                      else bagio.reliable_qos()))
            for topic, msgtype in topic_types(spec).items()}
        for event in _events(drive, messages):
            for topic, raw in event.make(event.index):
                writer.write(connections[topic], event.log_ns, raw)
                counts[topic] += 1
            if event.order == 2:
                bar.update(1)
    return counts


def write_sim_drive(out: Path | str, spec: SimDriveSpec, *, overwrite: bool = False,
                    progress: bool | None = None,
                    terrain: TerrainMap | None = None) -> SimDriveSummary:
    """Simulate the drive `spec` and write it as the rosbag2 directory `out` (topics: module
    docstring), atomically as drive_bag.write_atomically does: an existing `out` is refused
    (FileExistsError) unless it is an empty directory, or `overwrite` is set and it is a
    rosbag2 directory. `progress` shows a tqdm bar (None: when stderr is a terminal)."""
    check_spec(spec)
    out = Path(out)
    drive_bag._check_output(out, overwrite)  # before the simulation, which takes a while
    drive = SimDrive(spec, terrain)
    if progress is None:
        progress = sys.stderr.isatty()
    counts = drive_bag.write_atomically(out, overwrite,
                                        lambda bag: _write_bag(bag, drive, bool(progress)))
    camera = spec.topics.compressed_image if spec.compressed else spec.topics.image
    summary = SimDriveSummary(out, counts[camera], counts[spec.topics.patch_cost], counts,
                              topic_types(spec), (drive.end_ns - drive.start_ns) / 1e9,
                              spec.storage, spec.version, drive_bag._tree_bytes(out))
    _logger.debug('wrote %s', summary)
    return summary
