"""Camera and pose geometry for self-supervision (ROS-free; docs/SUPERVISION.md, "Geometry").

Frames (REP 103, REP 105):

- base (`base_link`): x forward, y left, z up; the robot footprint lies at z = ground_offset.
- camera body (a URDF `camera_link`): x forward along the optical axis, y left, z up.
- camera optical (`*_optical_frame`): z forward along the optical axis, x right, y down; every
  point handed to `CameraModel.project` is in this frame.
- odometry (`odom`, REP 105): a world-fixed frame, z up; poses of the base in it are 4x4 SE(3).

A pose `T_a_b` (4, 4) is the pose of frame b in frame a: it maps points given in b to a,
`p_a = T_a_b @ p_b`, so `T_a_c = T_a_b @ T_b_c` and `invert(T_a_b) = T_b_a`.

Pixels follow OpenCV: (u, v) = (column, row), the centre of pixel (row i, column j) at (j, i), so
an image of width W spans u in [-0.5, W - 0.5). A mask downscaled by an integer `scale` has its
pixel j centred on full-size u = scale * j + (scale - 1) / 2.

scipy and cv2 are imported inside the functions that use them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np

PLUMB_BOB = 'plumb_bob'  # k1, k2, p1, p2, k3 (cv2.projectPoints)
RATIONAL_POLYNOMIAL = 'rational_polynomial'  # k1, k2, p1, p2, k3, k4, k5, k6 (cv2.projectPoints)
EQUIDISTANT = 'equidistant'  # k1, k2, k3, k4 (cv2.fisheye.projectPoints)
DISTORTION_LENGTHS = {PLUMB_BOB: 5, RATIONAL_POLYNOMIAL: 8, EQUIDISTANT: 4}

CAMERA_INFO_FIELDS = ('width', 'height', 'distortion_model', 'd', 'k', 'r', 'p', 'binning_x',
                      'binning_y', 'roi')

MIN_DEPTH = 1e-6  # m: a point must be this far in front of the camera (optical z) to project
MAX_VIEW_ANGLE = math.radians(85.0)  # rasterise_footprint clips polygons to this cone-ish frustum
_UNDISTORT_TOLERANCE_PX = 1e-3  # pixel_rays: a ray must reproject onto its pixel within this


class GeometryError(ValueError):
    """A camera, pose or polygon that cannot be used; the message says what to send instead."""


def _readonly(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


# --- poses ---------------------------------------------------------------------------------

# Rotation taking camera-body coordinates (x forward, y left, z up) to optical coordinates
# (z forward, x right, y down): optical x = -body y, optical y = -body z, optical z = body x.
OPTICAL_FROM_BODY = _readonly(np.array([[0.0, -1.0, 0.0],
                                        [0.0, 0.0, -1.0],
                                        [1.0, 0.0, 0.0]]))
# The pose of the optical frame in the body frame: the fixed joint a URDF puts between
# `camera_link` and `camera_optical_frame` (rpy = -pi/2, 0, -pi/2).
T_BODY_OPTICAL = np.eye(4)
T_BODY_OPTICAL[:3, :3] = OPTICAL_FROM_BODY.T
T_BODY_OPTICAL = _readonly(T_BODY_OPTICAL)


def _vector(values: Any, length: int, name: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise GeometryError(f'{name} must be {length} numbers, got {values!r} ({err})') from None
    if array.shape != (length,) or not np.isfinite(array).all():
        raise GeometryError(f'{name} must be {length} finite numbers, got {values!r}')
    return array


def _points(points: Any, name: str) -> np.ndarray:
    """(N, 3) float64 from anything array-like of that shape (N may be 0)."""
    array = np.asarray(points, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 3:
        raise GeometryError(f'{name} must be an (N, 3) array of x, y, z, got shape {array.shape}; '
                            'reshape a single point with np.reshape(p, (1, 3))')
    return array


def check_pose(T: Any, name: str = 'T') -> np.ndarray:
    """T as a (4, 4) float64 SE(3) matrix; GeometryError if it is not one (shape, non-finite
    entries, last row not [0, 0, 0, 1], or a rotation block that is not a proper rotation)."""
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.isfinite(T).all():
        raise GeometryError(f'{name} must be a finite (4, 4) SE(3) matrix, got shape {T.shape}; '
                            'build it with pose_from_xyz_quat or pose_from_xyz_rpy')
    if not np.allclose(T[3], (0.0, 0.0, 0.0, 1.0)):
        raise GeometryError(f'{name} must have the last row [0, 0, 0, 1], got {T[3].tolist()}')
    R = T[:3, :3]
    if not np.allclose(R.T @ R, np.eye(3), atol=1e-6) or np.linalg.det(R) < 0:
        raise GeometryError(f'{name} has a rotation block that is not a rotation '
                            f'(R^T R != I or det < 0): {R.tolist()}')
    return T


def _pose(xyz: Any, R: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = _vector(xyz, 3, 'xyz')
    return T


def pose_from_xyz_quat(xyz: Sequence[float], quat_xyzw: Sequence[float]) -> np.ndarray:
    """4x4 pose from a translation and a quaternion in ROS order (x, y, z, w), as in
    geometry_msgs/Quaternion. The quaternion is normalised; a zero one is an error."""
    from scipy.spatial.transform import Rotation

    quat = _vector(quat_xyzw, 4, 'quat_xyzw (x, y, z, w)')
    norm = float(np.linalg.norm(quat))
    if norm < 1e-9:
        raise GeometryError(f'quat_xyzw has zero norm ({quat.tolist()}): an unset quaternion? '
                            'the identity is (0, 0, 0, 1) in ROS order')
    return _pose(xyz, Rotation.from_quat(quat / norm).as_matrix())  # scipy is scalar-last too


def pose_from_xyz_rpy(xyz: Sequence[float], rpy: Sequence[float]) -> np.ndarray:
    """4x4 pose from a translation and roll, pitch, yaw in radians about the fixed x, y, z axes
    (R = Rz(yaw) Ry(pitch) Rx(roll)): the URDF `rpy` and tf2 `setRPY` convention."""
    from scipy.spatial.transform import Rotation

    angles = _vector(rpy, 3, 'rpy (roll, pitch, yaw)')
    return _pose(xyz, Rotation.from_euler('xyz', angles).as_matrix())  # lower case: extrinsic


def invert(T: Any) -> np.ndarray:
    """The inverse of an SE(3) pose: (R, t) -> (R^T, -R^T t)."""
    T = check_pose(T)
    out = np.eye(4)
    out[:3, :3] = T[:3, :3].T
    out[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return out


def transform_points(T: Any, points: Any) -> np.ndarray:
    """points (N, 3) given in frame b -> (N, 3) in frame a, for T = T_a_b."""
    T = check_pose(T)
    points = _points(points, 'points')
    return points @ T[:3, :3].T + T[:3, 3]  # N, 3


def camera_pose_to_optical(x: float, y: float, z: float, roll: float, pitch: float,
                           yaw: float) -> np.ndarray:
    """T_base_optical from the `camera_pose` parameter: the pose of the camera BODY frame
    (x along the optical axis, y left, z up; a URDF `camera_link`) in the base frame. A positive
    pitch tilts the optical axis down (REP 103: rotation about y, which points left)."""
    return pose_from_xyz_rpy((x, y, z), (roll, pitch, yaw)) @ T_BODY_OPTICAL


# --- camera --------------------------------------------------------------------------------


class Projection(NamedTuple):
    pixels: np.ndarray  # N, 2 float64 (u, v); NaN where the point is behind the camera
    valid: np.ndarray  # N bool: in front of the camera and on a pixel of the image


class GroundHits(NamedTuple):
    points: np.ndarray  # N, 3 float64 in the ground frame; NaN where not valid
    valid: np.ndarray  # N bool: the ray meets the plane in front of the camera (within range)


def _monotonic_angle(model: str, D: np.ndarray) -> float:
    """The angle from the optical axis (radians, at most pi/2) up to which the radial distortion
    maps larger angles to larger image radii. Beyond it the polynomial folds back and a point
    far outside the field of view would land inside the image, so such points are invalid."""
    theta = np.linspace(0.0, math.pi / 2, 4097)[1:-1]  # 4095
    with np.errstate(over='ignore', invalid='ignore', divide='ignore'):
        if model == EQUIDISTANT:
            k1, k2, k3, k4 = D
            t2 = theta * theta
            radius = theta * (1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))))
            ok = np.isfinite(radius)
        else:
            k1, k2, _, _, k3 = D[:5]
            k4, k5, k6 = D[5:8] if model == RATIONAL_POLYNOMIAL else (0.0, 0.0, 0.0)
            r = np.tan(theta)
            r2 = r * r
            numerator = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
            denominator = 1 + r2 * (k4 + r2 * (k5 + r2 * k6))
            radius = r * numerator / denominator
            ok = np.isfinite(radius) & (denominator > 0)
        ok[1:] &= np.diff(radius) > 0
    bad = np.flatnonzero(~ok)
    if bad.size == 0:
        return math.pi / 2
    if bad[0] == 0:
        return 0.0
    return float(theta[bad[0] - 1])


@dataclass(frozen=True, eq=False)
class CameraModel:
    """A calibrated camera: the image it delivers is `width` x `height` pixels, K (3, 3) maps
    normalised coordinates to pixels, D are the distortion coefficients of `distortion_model`.
    `R_rect` (3, 3) rotates optical-frame points into the frame K applies to (identity except
    for the rectified image of a stereo camera, from_camera_info(rectified=True))."""

    width: int
    height: int
    K: np.ndarray  # 3, 3
    D: np.ndarray  # 5 plumb_bob, 8 rational_polynomial, 4 equidistant
    distortion_model: str = PLUMB_BOB
    R_rect: np.ndarray | None = None  # 3, 3; None = identity

    def __post_init__(self) -> None:
        integer = (int, np.integer)
        if not (isinstance(self.width, integer) and isinstance(self.height, integer)
                and self.width > 0 and self.height > 0):
            raise GeometryError(f'camera width and height must be positive integers, got '
                                f'{self.width!r} x {self.height!r}')
        object.__setattr__(self, 'width', int(self.width))
        object.__setattr__(self, 'height', int(self.height))
        K = np.array(self.K, dtype=np.float64)
        if K.shape != (3, 3) or not np.isfinite(K).all():
            raise GeometryError(f'K must be a finite 3x3 matrix, got shape {K.shape}')
        if not K.any():
            raise GeometryError('K is all zero: the camera is not calibrated (drivers publish '
                                'K = 0 without a calibration); calibrate it (ROS '
                                'camera_calibration) or give the intrinsics another way')
        if K[0, 0] <= 0 or K[1, 1] <= 0 or not np.allclose(K[2], (0.0, 0.0, 1.0)) or K[1, 0] \
                or K[0, 1]:
            raise GeometryError('K must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0 '
                                '(OpenCV projectPoints has no skew term), got '
                                f'{K.tolist()}')
        model = self.distortion_model
        if model not in DISTORTION_LENGTHS:
            raise GeometryError(f'unknown distortion_model {model!r}: supported are '
                                f'{sorted(DISTORTION_LENGTHS)} (sensor_msgs/distortion_models)')
        D = np.array(self.D, dtype=np.float64).reshape(-1)
        if D.size == 0:  # image_geometry: an empty D is no distortion
            D = np.zeros(DISTORTION_LENGTHS[model])
        if D.size != DISTORTION_LENGTHS[model] or not np.isfinite(D).all():
            raise GeometryError(f'distortion_model {model!r} takes {DISTORTION_LENGTHS[model]} '
                                f'finite coefficients in D, got {D.size}: {D.tolist()}')
        R = np.eye(3) if self.R_rect is None else np.array(self.R_rect, dtype=np.float64)
        if R.shape != (3, 3) or not np.allclose(R.T @ R, np.eye(3), atol=1e-6) \
                or np.linalg.det(R) < 0:
            raise GeometryError(f'R_rect must be a 3x3 rotation, got {R.tolist()}')
        object.__setattr__(self, 'K', _readonly(K))
        object.__setattr__(self, 'D', _readonly(D))
        object.__setattr__(self, 'R_rect', _readonly(R))

    @classmethod
    def from_camera_info(cls, msg: Any, rectified: bool = False) -> CameraModel:
        """The camera of a sensor_msgs/CameraInfo (any object with its fields: an rclpy or
        rosbags message, or a plain one), for the image it describes.

        Binning and ROI follow ROS image_geometry: K (and P) are calibrated at full resolution;
        the delivered image is the ROI (all zeros = the whole image) binned by binning_x,
        binning_y (0 = 1), so the principal point moves by the ROI offset and then the first
        row of K divides by binning_x, the second by binning_y, and the size is
        (roi.width // binning_x, roi.height // binning_y).

        rectified=False: the raw image (K, D). rectified=True: the rectified image
        (`image_rect`): K = P[:, :3], no distortion, and optical-frame points are rotated by R
        first; P must have no stereo baseline (P[0, 3] = P[1, 3] = 0).
        """
        missing = [name for name in CAMERA_INFO_FIELDS if not hasattr(msg, name)]
        if missing:
            raise GeometryError(f'a CameraInfo needs the fields {CAMERA_INFO_FIELDS}; '
                                f'{type(msg).__name__} lacks {missing}')
        width = _non_negative_int(msg.width, 'width')
        height = _non_negative_int(msg.height, 'height')
        if not width or not height:
            raise GeometryError(f'CameraInfo size is {width}x{height}: the driver did not fill '
                                'it; a calibrated camera_info has the image width and height')
        k = _vector(msg.k, 9, 'CameraInfo k (row-major 3x3)').reshape(3, 3)
        if not k.any():
            raise GeometryError('CameraInfo k is all zero: the camera is not calibrated (drivers '
                                'publish K = 0 without a calibration file); calibrate it (ROS '
                                'camera_calibration) or set the camera_info_url of the driver')
        model = str(msg.distortion_model)
        try:
            d = np.asarray(msg.d, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as err:
            raise GeometryError(f'CameraInfo d must be numbers, got {msg.d!r} ({err})') from None
        if model == '' and not d.any():  # some uncalibrated-distortion drivers leave it empty
            model = PLUMB_BOB
        if rectified:
            p = _vector(msg.p, 12, 'CameraInfo p (row-major 3x4)').reshape(3, 4)
            if p[0, 3] or p[1, 3]:
                raise GeometryError(f'CameraInfo p has a stereo baseline (Tx, Ty = {p[0, 3]}, '
                                    f'{p[1, 3]}): rectified=True supports a single camera or the '
                                    'left one of a pair; use the raw image (rectified=False)')
            r = _vector(msg.r, 9, 'CameraInfo r (row-major 3x3)').reshape(3, 3)
            k, d, model = p[:, :3].copy(), np.zeros(0), PLUMB_BOB
            R_rect = r if r.any() else None  # r = 0: an unset rectification, the identity
        else:
            R_rect = None
        bx = _non_negative_int(msg.binning_x, 'binning_x') or 1
        by = _non_negative_int(msg.binning_y, 'binning_y') or 1
        roi = msg.roi
        x0, y0, rw, rh = (_non_negative_int(getattr(roi, name, 0), f'roi.{name}')
                          for name in ('x_offset', 'y_offset', 'width', 'height'))
        if not (x0 or y0 or rw or rh):
            rw, rh = width, height
        if not rw or not rh or x0 + rw > width or y0 + rh > height:
            raise GeometryError(f'CameraInfo roi (x_offset {x0}, y_offset {y0}, width {rw}, '
                                f'height {rh}) does not fit the {width}x{height} image')
        k = k.copy()
        k[0, 2] -= x0
        k[1, 2] -= y0
        k[0] /= bx
        k[1] /= by
        return cls(rw // bx, rh // by, k, d, model, R_rect)

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width), the order of an image array's shape."""
        return self.height, self.width

    @cached_property
    def max_angle(self) -> float:
        """Radians from the optical axis within which the distortion model is one-to-one."""
        return _monotonic_angle(self.distortion_model, self.D)

    @cached_property
    def _rotated(self) -> bool:
        return not np.array_equal(self.R_rect, np.eye(3))

    @cached_property
    def _undistorted(self) -> bool:
        return self.distortion_model != EQUIDISTANT and not self.D.any()

    def _distort(self, points: np.ndarray) -> np.ndarray:
        """points (N, 3) in the K frame, all in front -> pixels (N, 2), no validity checks."""
        import cv2

        if len(points) == 0:
            return np.zeros((0, 2))
        if self._undistorted:  # the pinhole alone: what cv2.projectPoints computes, faster
            normalised = points[:, :2] / points[:, 2:3]  # N, 2
            return normalised @ self.K[:2, :2].T + self.K[:2, 2]
        zero = np.zeros(3)
        if self.distortion_model == EQUIDISTANT:
            pixels, _ = cv2.fisheye.projectPoints(points.reshape(-1, 1, 3), zero, zero, self.K,
                                                  self.D)
        else:
            pixels, _ = cv2.projectPoints(points.reshape(-1, 1, 3), zero, zero, self.K, self.D)
        return pixels.reshape(-1, 2)  # N, 2

    def _in_view(self, points: np.ndarray, min_depth: float) -> np.ndarray:
        """points (N, 3) in the K frame -> (N,) bool: finite, in front, within max_angle."""
        with np.errstate(invalid='ignore'):
            front = np.isfinite(points).all(axis=1) & (points[:, 2] > min_depth)
            angle = np.arctan2(np.hypot(points[:, 0], points[:, 1]), points[:, 2])
        return front & (angle < self.max_angle)

    def project(self, points_optical: Any, min_depth: float = MIN_DEPTH) -> Projection:
        """points (N, 3) in the camera optical frame -> pixels (N, 2) and valid (N,).

        valid: finite, z > min_depth, within `max_angle` of the optical axis (where the
        distortion cannot fold far points back into the image) and on the image,
        -0.5 <= u < width - 0.5 and -0.5 <= v < height - 0.5. Pixels of points behind the
        camera are NaN; points in front but off the image keep their (off-image) pixel.
        """
        points = _points(points_optical, 'points_optical')  # N, 3
        if self._rotated:
            points = points @ self.R_rect.T
        front = self._in_view(points, min_depth)  # N
        pixels = np.full((len(points), 2), np.nan)  # N, 2
        pixels[front] = self._distort(points[front])
        with np.errstate(invalid='ignore'):
            u, v = pixels[:, 0], pixels[:, 1]
            inside = (u >= -0.5) & (u < self.width - 0.5) & (v >= -0.5) & (v < self.height - 0.5)
        return Projection(pixels, front & inside)

    def _normalised(self, pixels: np.ndarray) -> np.ndarray:
        """pixels (N, 2) -> undistorted normalised coordinates (N, 2) in the K frame; NaN where
        the pixel is not finite or the undistortion does not reproject onto it."""
        import cv2

        out = np.full(pixels.shape, np.nan)  # N, 2
        finite = np.isfinite(pixels).all(axis=1)
        if not finite.any():
            return out
        src = pixels[finite].reshape(-1, 1, 2)
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-15)
        if self.distortion_model == EQUIDISTANT:
            xy = cv2.fisheye.undistortPoints(src, self.K, self.D, criteria=criteria)
        else:
            xy = cv2.undistortPointsIter(src, self.K, self.D, None, None, criteria)
        xy = xy.reshape(-1, 2)  # M, 2
        rays = np.column_stack([xy, np.ones(len(xy))])  # M, 3
        ok = self._in_view(rays, 0.0)
        back = np.full(xy.shape, np.nan)
        back[ok] = self._distort(rays[ok])
        with np.errstate(invalid='ignore'):
            ok &= np.hypot(*(back - pixels[finite]).T) <= _UNDISTORT_TOLERANCE_PX
        xy[~ok] = np.nan
        out[finite] = xy
        return out

    def pixel_rays(self, pixels: Any) -> np.ndarray:
        """pixels (N, 2) (u, v) -> unit rays (N, 3) in the optical frame through those pixels
        (undistorted with cv2.undistortPointsIter / cv2.fisheye.undistortPoints, iterated to
        1e-15). A row is NaN where the pixel is not finite or cannot be undistorted (it would
        not project back onto itself within 1e-3 px, e.g. beyond a fisheye's 90 degrees)."""
        pixels = np.asarray(pixels, dtype=np.float64)
        if pixels.ndim != 2 or pixels.shape[1] != 2:
            raise GeometryError(f'pixels must be an (N, 2) array of u, v, got shape '
                                f'{pixels.shape}')
        xy = self._normalised(pixels)  # N, 2
        rays = np.column_stack([xy, np.ones(len(xy))])  # N, 3
        rays /= np.linalg.norm(rays, axis=1, keepdims=True)
        if self._rotated:
            rays = rays @ self.R_rect  # R^T applied to each row: K frame -> optical frame
        return rays

    @cached_property
    def _view_planes(self) -> np.ndarray:
        """(P, 4) half-spaces n . p + c >= 0 (rows n_x, n_y, n_z, c) in the K frame that hold
        the image (its undistorted border, 2 % margin) within MAX_VIEW_ANGLE and max_angle."""
        limit = math.tan(min(MAX_VIEW_ANGLE, 0.999 * self.max_angle))
        s = np.linspace(0.0, 1.0, 64, endpoint=False)  # 64
        u0, u1, v0, v1 = -0.5, self.width - 0.5, -0.5, self.height - 0.5
        border = np.concatenate([  # 256, 2: the image's outer edge, clockwise from top-left
            np.column_stack([u0 + s * (u1 - u0), np.full_like(s, v0)]),
            np.column_stack([np.full_like(s, u1), v0 + s * (v1 - v0)]),
            np.column_stack([u1 - s * (u1 - u0), np.full_like(s, v1)]),
            np.column_stack([np.full_like(s, u0), v1 - s * (v1 - v0)]),
        ])
        xy = self._normalised(border)  # 256, 2
        lo, hi = np.full(2, -limit), np.full(2, limit)
        if np.isfinite(xy).all():  # else (a fisheye beyond its model) the cone limit bounds it
            span = xy.max(axis=0) - xy.min(axis=0)
            lo = np.maximum(lo, xy.min(axis=0) - 0.02 * span)
            hi = np.minimum(hi, xy.max(axis=0) + 0.02 * span)
        planes = [(1.0, 0.0, -lo[0], 0.0), (-1.0, 0.0, hi[0], 0.0),  # x >= lo z, x <= hi z
                  (0.0, 1.0, -lo[1], 0.0), (0.0, -1.0, hi[1], 0.0),
                  (0.0, 0.0, 1.0, -MIN_DEPTH)]
        apothem = limit * math.cos(math.pi / 16)  # 16-gon inscribed in the circle of `limit`
        planes += [(-math.cos(a), -math.sin(a), apothem, 0.0)
                   for a in np.arange(16) * (2 * math.pi / 16)]
        return _readonly(np.array(planes))


def intersect_ground(rays: Any, T_ground_optical: Any, ground_z: float = 0.0,
                     max_range: float = math.inf) -> GroundHits:
    """Where rays (N, 3) from the optical-frame origin (CameraModel.pixel_rays) meet the plane
    z = ground_z of the ground frame (T_ground_optical: the optical frame's pose in it, e.g.
    T_odom_base @ T_base_optical): points (N, 3) in the ground frame and valid (N,).

    valid: the ray is finite, not parallel to the plane (|direction z| > 1e-9 after
    normalising), meets it in front of the camera (t > 0) and within max_range metres of it.
    Rays at or above the horizon of a camera over the plane therefore never hit it.
    """
    T = check_pose(T_ground_optical, 'T_ground_optical')
    rays = _points(rays, 'rays')
    if not math.isfinite(ground_z):
        raise GeometryError(f'ground_z must be finite metres, got {ground_z!r}')
    with np.errstate(invalid='ignore', divide='ignore'):
        direction = rays @ T[:3, :3].T  # N, 3 in the ground frame
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        origin = T[:3, 3]  # 3
        dz = direction[:, 2]
        t = (ground_z - origin[2]) / dz  # N: metres along the unit ray
        valid = np.isfinite(direction).all(axis=1) & (np.abs(dz) > 1e-9) & (t > 0) & \
            (t <= max_range)
    points = np.full(rays.shape, np.nan)  # N, 3
    points[valid] = origin + t[valid, None] * direction[valid]
    points[valid, 2] = ground_z  # exactly on the plane
    return GroundHits(points, valid)


def _non_negative_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise GeometryError(f'CameraInfo {name} must be a non-negative integer, got {value!r}')
    return int(value)


# --- footprint -----------------------------------------------------------------------------


def footprint_polygon(length: float, width: float, ground_offset: float = 0.0) -> np.ndarray:
    """The robot footprint (4, 3) in the base frame: a length x width rectangle centred on the
    base origin at z = ground_offset, corners counter-clockwise seen from above, starting
    front-left."""
    if not (math.isfinite(length) and math.isfinite(width) and length > 0 and width > 0):
        raise GeometryError(f'robot length and width must be positive metres, got {length!r} x '
                            f'{width!r}')
    if not math.isfinite(ground_offset):
        raise GeometryError(f'ground_offset must be finite metres, got {ground_offset!r}')
    hl, hw = length / 2, width / 2
    return np.array([[hl, hw, ground_offset], [-hl, hw, ground_offset],
                     [-hl, -hw, ground_offset], [hl, -hw, ground_offset]])  # 4, 3


def clip_polygon(polygon: np.ndarray, planes: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman: the part of a planar polygon (M, 3) inside every half-space
    n . p + c >= 0 of `planes` (P, 4); (K, 3), K = 0 when nothing is left."""
    sides = polygon @ planes[:, :3].T + planes[:, 3]  # M, P
    outside = (sides < 0).any(axis=0)  # P: the planes that cut something off
    if not outside.any():  # wholly inside
        return polygon
    # plain floats: a footprint has a dozen corners, and numpy per corner costs 10x more
    vertices = polygon.tolist()
    for plane in planes[outside].tolist():
        a, b, c, d = plane
        side = [a * x + b * y + c * z + d for x, y, z in vertices]
        out = []
        for i, (p, s) in enumerate(zip(vertices, side, strict=True)):
            j = i + 1 if i + 1 < len(vertices) else 0
            q, sq = vertices[j], side[j]
            if s >= 0:
                out.append(p)
            if (s >= 0) != (sq >= 0):
                t = s / (s - sq)
                out.append([p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1]),
                            p[2] + t * (q[2] - p[2])])
        vertices = out
        if not vertices:
            break
    return np.array(vertices, dtype=np.float64).reshape(-1, 3)


def rasterise_footprint(corners_base: Any, T_optical_base: Any, camera: CameraModel,
                        scale: int = 1) -> np.ndarray:
    """The image pixels covered by a planar polygon: mask (H // scale, W // scale) bool.

    corners_base (M, 3), M >= 3 (footprint_polygon's 4 corners, or the footprint at a past
    pose, T_base_then @ corners), given in the frame that T_optical_base maps to the optical
    frame. The polygon is clipped in 3-D to the camera's view frustum (near plane z = 1e-6,
    side planes around the image, and the cone where the distortion is one-to-one), so parts
    behind the camera are cut off rather than dropped or wrapped; the clipped edges are
    subdivided (64 pieces when D is not zero, so that the distortion bends them), projected,
    moved to mask pixels and filled by pixel centre (fill_polygon, which says why not
    cv2.fillPoly). Nothing in view: all False.
    """
    corners = _points(corners_base, 'corners_base')
    if len(corners) < 3 or not np.isfinite(corners).all():
        raise GeometryError(f'a footprint polygon needs at least 3 finite corners, got '
                            f'{len(corners)}: {corners.tolist()}')
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1 \
            or camera.width % scale or camera.height % scale:
        raise GeometryError(f'scale must be a positive integer dividing the image size '
                            f'{camera.height}x{camera.width}, got {scale!r}')
    return rasterise_checked(corners, check_pose(T_optical_base, 'T_optical_base'), camera,
                             int(scale))


def rasterise_checked(corners: np.ndarray, T_optical_base: np.ndarray, camera: CameraModel,
                      scale: int) -> np.ndarray:
    """rasterise_footprint without the checks, for callers that checked the corners (M, 3),
    the pose (4, 4) and the scale once (the labeller, per keyframe and label)."""
    shape = (camera.height // scale, camera.width // scale)
    points = corners @ T_optical_base[:3, :3].T + T_optical_base[:3, 3]  # M, 3 optical
    if camera._rotated:
        points = points @ camera.R_rect.T
    polygon = clip_polygon(points, camera._view_planes)  # K, 3
    if len(polygon) < 3:
        return np.zeros(shape, bool)
    if camera._undistorted:  # straight edges stay straight
        dense = polygon
    else:
        t = np.arange(64)[:, None, None] / 64  # pieces, 1, 1
        edges = polygon + t * (np.concatenate((polygon[1:], polygon[:1])) - polygon)  # pieces,K,3
        dense = edges.transpose(1, 0, 2).reshape(-1, 3)  # K * pieces, 3 around the polygon
    pixels = (camera._distort(dense) + 0.5) / scale - 0.5  # K * pieces, 2 mask pixels
    if camera._undistorted:  # a convex polygon in view projects to a convex polygon
        return fill_convex(pixels, shape)
    return fill_polygon(pixels, shape)


def fill_convex(pixels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """fill_polygon for a convex polygon (M, 2) finite (u, v), M >= 3: the same mask, faster.
    Each pixel row then crosses the boundary at most twice, so the span is from the smallest
    to the largest crossing of the row's centre (with fill_polygon's half-open rule), found
    for every row and edge at once."""
    h, w = shape
    mask = np.zeros((h, w), bool)
    start, end = pixels, np.concatenate((pixels[1:], pixels[:1]))  # M, 2: edge start -> end
    y_lo, y_hi = np.minimum(start[:, 1], end[:, 1]), np.maximum(start[:, 1], end[:, 1])
    r0 = min(max(math.ceil(float(y_lo.min())), 0), h)  # rows with y_lo <= i < y_hi of any edge
    r1 = min(max(math.ceil(float(y_hi.max())), 0), h)
    if r1 <= r0:
        return mask
    rows = np.arange(r0, r1, dtype=np.float64)[:, None]  # R, 1: row centres
    crossing = (y_lo <= rows) & (rows < y_hi)  # R, M
    with np.errstate(divide='ignore', invalid='ignore'):  # horizontal edges never cross
        # fill_polygon's expression, in its order: the same floats, so the same pixels
        x = start[:, 0] + (rows - start[:, 1]) * (end[:, 0] - start[:, 0]) / (
            end[:, 1] - start[:, 1])  # R, M
    left = np.where(crossing, x, np.inf).min(axis=1)  # R
    right = np.where(crossing, x, -np.inf).max(axis=1)
    left = np.clip(np.ceil(left), 0, w)  # centres with x_a <= j < x_b; inf: no crossing
    right = np.clip(np.ceil(right), 0, w)
    c0, c1 = int(left.min()), int(right.max())  # the bounding box: work there only
    if c1 <= c0:
        return mask
    cols = np.arange(c0, c1, dtype=np.float64)
    mask[r0:r1, c0:c1] = (cols >= left[:, None]) & (cols < right[:, None])  # R, C
    return mask


def fill_polygon(pixels: Any, shape: tuple[int, int]) -> np.ndarray:
    """mask (shape) bool of the pixels whose centre lies inside the closed polygon `pixels`
    (M, 2) (u, v), by the even-odd rule; a centre exactly on an edge counts when the edge is a
    left or top one (the top-left rule), so polygons that share an edge share no pixel.

    Unlike cv2.fillPoly, which rounds the polygon to whole pixels and fills its boundary too
    (about perimeter / 2 pixels too many, all outside: a far footprint of 250 pixels grows by a
    fifth), this is unbiased: the mask's area is the polygon's area to within the pixels its
    edges cut. Scanlines, vectorised: one crossing per edge and row.
    """
    pts = np.asarray(pixels, dtype=np.float64)  # M, 2
    h, w = shape
    mask = np.zeros((h, w), bool)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 3 or not np.isfinite(pts).all():
        raise GeometryError(f'a polygon is (M, 2) finite pixels with M >= 3, got {pts.shape}')
    start, end = pts, np.concatenate((pts[1:], pts[:1]))  # M, 2 each: edge i start -> end
    y_lo, y_hi = np.minimum(start[:, 1], end[:, 1]), np.maximum(start[:, 1], end[:, 1])
    first = np.clip(np.ceil(y_lo), 0, h).astype(np.int64)  # rows i with y_lo <= i < y_hi
    stop = np.clip(np.ceil(y_hi), 0, h).astype(np.int64)
    count = np.maximum(stop - first, 0)  # M; horizontal edges cross no row
    total = int(count.sum())
    if total == 0:
        return mask
    edge = np.repeat(np.arange(len(pts)), count)  # C
    rows = first[edge] + np.arange(total) - np.repeat(np.cumsum(count) - count, count)  # C
    (x0, y0), (x1, y1) = start[edge].T, end[edge].T
    x = x0 + (rows - y0) * (x1 - x0) / (y1 - y0)  # C: where the edge crosses row centre y = i
    order = np.lexsort((x, rows))
    rows, x = rows[order].reshape(-1, 2), x[order].reshape(-1, 2)  # even crossings per row
    left = np.clip(np.ceil(x[:, 0]), 0, w).astype(np.int64)  # centres with x_a <= j < x_b
    right = np.clip(np.ceil(x[:, 1]), 0, w).astype(np.int64)
    keep = right > left
    if not keep.any():
        return mask
    rows, left, right = rows[keep, 0], left[keep], right[keep]
    r0, r1 = int(rows.min()), int(rows.max()) + 1  # the bounding box: work there only
    c0, c1 = int(left.min()), int(right.max())
    diff = np.zeros((r1 - r0, c1 - c0 + 1), np.int32)
    np.add.at(diff, (rows - r0, left - c0), 1)
    np.add.at(diff, (rows - r0, right - c0), -1)
    mask[r0:r1, c0:c1] = np.cumsum(diff[:, :-1], axis=1) > 0
    return mask


__all__ = ['CAMERA_INFO_FIELDS', 'DISTORTION_LENGTHS', 'EQUIDISTANT', 'MAX_VIEW_ANGLE',
           'MIN_DEPTH', 'OPTICAL_FROM_BODY', 'PLUMB_BOB', 'RATIONAL_POLYNOMIAL', 'T_BODY_OPTICAL',
           'CameraModel', 'GeometryError', 'GroundHits', 'Projection', 'camera_pose_to_optical',
           'check_pose', 'clip_polygon', 'fill_convex', 'fill_polygon', 'footprint_polygon',
           'intersect_ground',
           'invert', 'pose_from_xyz_quat', 'pose_from_xyz_rpy', 'rasterise_checked',
           'rasterise_footprint',
           'transform_points']
