"""Geometry of self-supervision (contrast_semask_ros/supervision/geometry.py, docs/SUPERVISION.md):
against OpenCV, against hand-computed cases and against a per-pixel ray-casting oracle."""

from __future__ import annotations

import math
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from contrast_semask_ros.supervision.geometry import (
    EQUIDISTANT,
    OPTICAL_FROM_BODY,
    PLUMB_BOB,
    RATIONAL_POLYNOMIAL,
    T_BODY_OPTICAL,
    CameraModel,
    GeometryError,
    camera_pose_to_optical,
    clip_polygon,
    fill_convex,
    fill_polygon,
    footprint_polygon,
    intersect_ground,
    invert,
    pose_from_xyz_quat,
    pose_from_xyz_rpy,
    rasterise_footprint,
    transform_points,
)

W, H = 640, 480
K = np.array([[525.0, 0.0, 319.5], [0.0, 523.0, 241.0], [0.0, 0.0, 1.0]])
D_PLUMB = np.array([-0.28, 0.09, 0.0012, -0.0007, -0.015])
D_RATIONAL = np.array([0.35, -0.12, 0.0009, -0.0004, 0.02, 0.62, -0.05, 0.04])
K_FISHEYE = np.array([[285.0, 0.0, 321.0], [0.0, 286.0, 239.0], [0.0, 0.0, 1.0]])
D_FISHEYE = np.array([0.012, -0.004, 0.0011, -0.0002])

CAMERAS = {
    'pinhole': CameraModel(W, H, K, np.zeros(5), PLUMB_BOB),
    PLUMB_BOB: CameraModel(W, H, K, D_PLUMB, PLUMB_BOB),
    RATIONAL_POLYNOMIAL: CameraModel(W, H, K, D_RATIONAL, RATIONAL_POLYNOMIAL),
    EQUIDISTANT: CameraModel(W, H, K_FISHEYE, D_FISHEYE, EQUIDISTANT),
}


def camera_info(**fields) -> SimpleNamespace:
    msg = dict(width=W, height=H, distortion_model=PLUMB_BOB, d=list(D_PLUMB),
               k=list(K.ravel()), r=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0],
               p=[*K[0], 0.0, *K[1], 0.0, *K[2], 0.0], binning_x=0, binning_y=0,
               roi=SimpleNamespace(x_offset=0, y_offset=0, width=0, height=0, do_rectify=False))
    msg.update(fields)
    return SimpleNamespace(**msg)


def points_in_view(rng: np.random.Generator, n: int, half_angle_deg: float) -> np.ndarray:
    """n points (n, 3) in the optical frame within a cone around the optical axis."""
    depth = rng.uniform(0.3, 30.0, n)
    tan = math.tan(math.radians(half_angle_deg))
    xy = rng.uniform(-tan, tan, (n, 2)) * depth[:, None]
    return np.column_stack([xy, depth])


# --- projection against OpenCV ---------------------------------------------------------------


@pytest.mark.parametrize('name', ['pinhole', PLUMB_BOB, RATIONAL_POLYNOMIAL])
def test_project_equals_cv2_project_points(name):
    camera = CAMERAS[name]
    points = points_in_view(np.random.default_rng(1), 2000, 40.0)
    pixels, valid = camera.project(points)
    expected, _ = cv2.projectPoints(points, np.zeros(3), np.zeros(3), camera.K, camera.D)
    expected = expected.reshape(-1, 2)
    np.testing.assert_allclose(pixels, expected, atol=1e-9)
    inside = ((expected >= -0.5) & (expected < (W - 0.5, H - 0.5))).all(axis=1)
    assert inside.sum() > 500
    np.testing.assert_array_equal(valid, inside)


def test_fisheye_project_equals_cv2_fisheye_project_points():
    camera = CAMERAS[EQUIDISTANT]
    points = points_in_view(np.random.default_rng(2), 2000, 75.0)
    pixels, valid = camera.project(points)
    expected, _ = cv2.fisheye.projectPoints(points.reshape(-1, 1, 3), np.zeros(3), np.zeros(3),
                                            K_FISHEYE, D_FISHEYE)
    np.testing.assert_allclose(pixels, expected.reshape(-1, 2), atol=1e-9)
    assert valid.sum() > 500


def test_behind_outside_and_folded_points_are_invalid():
    camera = CAMERAS['pinhole']
    points = np.array([[0.0, 0.0, 5.0],  # on the principal point
                       [0.0, 0.0, -5.0],  # behind: would wrap onto the principal point
                       [1.0, 0.5, 0.0],  # in the camera plane
                       [10.0, 0.0, 5.0],  # far right, off the image
                       [np.nan, 0.0, 5.0]])
    pixels, valid = camera.project(points)
    assert valid.tolist() == [True, False, False, False, False]
    np.testing.assert_allclose(pixels[0], K[:2, 2])
    assert np.isnan(pixels[1]).all() and np.isnan(pixels[2]).all()
    assert pixels[3, 0] > W  # off-image pixels keep their position, unwrapped
    # strong barrel distortion folds far points back into the image: r = 1.5 lands at
    # 1.5 (1 - 0.3 * 1.5^2) = 0.49, inside; the model is one-to-one only up to r = 1.05
    folded = CameraModel(W, H, K, [-0.3, 0, 0, 0, 0], PLUMB_BOB)
    assert math.tan(folded.max_angle) == pytest.approx(1 / math.sqrt(0.9), rel=1e-2)
    far = np.array([[1.5, 0.0, 1.0]])
    wrapped, _ = cv2.projectPoints(far, np.zeros(3), np.zeros(3), K, folded.D)
    assert 0 <= wrapped[0, 0, 0] < W  # OpenCV alone would put it on the image
    assert not folded.project(far).valid[0]


# --- hand-computed: a pitched camera over flat ground ---------------------------------------


@pytest.mark.parametrize('pitch_deg', [8.0, 20.0, 30.0])
def test_pitched_camera_over_ground(pitch_deg):
    camera = CAMERAS['pinhole']
    h, theta = 1.0, math.radians(pitch_deg)
    T_base_optical = camera_pose_to_optical(0.0, 0.0, h, 0.0, theta, 0.0)
    T_optical_base = invert(T_base_optical)
    d = h / math.tan(theta)
    ground = np.array([[d, 0.0, 0.0], [5.0, 0.0, 0.0]])
    pixels, valid = camera.project(transform_points(T_optical_base, ground))
    assert valid.all()
    np.testing.assert_allclose(pixels[0], K[:2, 2], atol=1e-9)
    # 5 m ahead the ground is atan(h / 5) below the horizon, the axis theta below it: farther
    # than d, the point is above the principal point (smaller v)
    v5 = K[1, 2] + K[1, 1] * math.tan(math.atan(h / 5.0) - theta)
    assert pixels[1, 0] == pytest.approx(K[0, 2], abs=1e-9)
    assert pixels[1, 1] == pytest.approx(v5, abs=1e-9)
    # the horizon row: rays there and above never meet the ground
    v_horizon = K[1, 2] - K[1, 1] * math.tan(theta)
    rows = np.array([v_horizon, v_horizon - 1.0, v_horizon - 50.0])
    pixels = np.column_stack([np.full(3, 100.0), rows])
    hits = intersect_ground(camera.pixel_rays(pixels), T_base_optical)
    assert not hits.valid.any() and np.isnan(hits.points).all()
    below = intersect_ground(camera.pixel_rays([[100.0, v_horizon + 1.0]]), T_base_optical)
    assert below.valid.all() and below.points[0, 0] > 20.0


@pytest.mark.parametrize('name', list(CAMERAS))
def test_pixel_ground_pixel_round_trip(name):
    camera = CAMERAS[name]
    T_base_optical = camera_pose_to_optical(0.3, -0.1, 1.2, 0.02, math.radians(35), 0.05)
    rng = np.random.default_rng(3)
    pixels = rng.uniform((0, H / 2), (W - 1, H - 1), (500, 2))  # lower half: the ground
    rays = camera.pixel_rays(pixels)
    np.testing.assert_allclose(np.linalg.norm(rays, axis=1), 1.0)
    hits = intersect_ground(rays, T_base_optical, ground_z=0.0)
    assert hits.valid.all()
    np.testing.assert_allclose(hits.points[:, 2], 0.0, atol=1e-12)
    back, valid = camera.project(transform_points(invert(T_base_optical), hits.points))
    assert valid.all()
    assert np.abs(back - pixels).max() < 1e-6


def test_intersect_ground_range_and_parallel_rays():
    T = pose_from_xyz_rpy((0, 0, 2.0), (0, 0, 0))  # the optical frame itself: z forward
    rays = np.array([[0.0, 0.0, -1.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.6, 0.0, -0.8]])
    hits = intersect_ground(rays, T, max_range=2.4)
    assert hits.valid.tolist() == [True, False, False, False]  # down; up; parallel; 2.5 m away
    np.testing.assert_allclose(hits.points[0], (0, 0, 0))
    assert intersect_ground(rays, T).valid.tolist() == [True, False, False, True]


def test_pixel_rays_of_non_finite_pixels_are_nan():
    rays = CAMERAS[PLUMB_BOB].pixel_rays([[np.nan, 3.0], [320.0, 240.0]])
    assert np.isnan(rays[0]).all() and np.isfinite(rays[1]).all()


# --- poses and REP 103 frames ----------------------------------------------------------------


def test_rpy_and_quaternion_constructors_agree():
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(4)
    for _ in range(20):
        rpy = rng.uniform(-math.pi, math.pi, 3)
        xyz = rng.normal(size=3)
        quat = Rotation.from_euler('xyz', rpy).as_quat()  # x, y, z, w
        np.testing.assert_allclose(pose_from_xyz_rpy(xyz, rpy), pose_from_xyz_quat(xyz, quat),
                                   atol=1e-12)
        T = pose_from_xyz_quat(xyz, 3.0 * quat)  # normalised
        np.testing.assert_allclose(invert(T) @ T, np.eye(4), atol=1e-12)
        np.testing.assert_allclose(T @ invert(T), np.eye(4), atol=1e-12)
    # ROS order is x, y, z, w: (0, 0, sin 45, cos 45) is a yaw of +90 degrees
    T = pose_from_xyz_quat((1, 2, 3), (0, 0, math.sin(math.pi / 4), math.cos(math.pi / 4)))
    np.testing.assert_allclose(transform_points(T, [[1.0, 0, 0]]), [[1.0, 3.0, 3.0]],
                               atol=1e-12)
    # roll, pitch, yaw are about the fixed axes: R = Rz(yaw) Ry(pitch) Rx(roll)
    yaw_then_pitch = pose_from_xyz_rpy((0, 0, 0), (0, math.pi / 2, math.pi / 2))
    np.testing.assert_allclose(yaw_then_pitch[:3, :3] @ (1, 0, 0), (0, 0, -1), atol=1e-12)


def test_pose_errors_are_clear():
    with pytest.raises(GeometryError, match='zero norm'):
        pose_from_xyz_quat((0, 0, 0), (0, 0, 0, 0))
    with pytest.raises(GeometryError, match='3 finite numbers'):
        pose_from_xyz_rpy((0, 0), (0, 0, 0))
    with pytest.raises(GeometryError, match='not a rotation'):
        invert(np.diag([2.0, 1.0, 1.0, 1.0]))
    with pytest.raises(GeometryError, match=r'\(N, 3\)'):
        transform_points(np.eye(4), [1.0, 2.0, 3.0])


def test_optical_from_body_is_rep_103():
    np.testing.assert_array_equal(OPTICAL_FROM_BODY @ (1, 0, 0), (0, 0, 1))  # forward -> z
    np.testing.assert_array_equal(OPTICAL_FROM_BODY @ (0, 1, 0), (-1, 0, 0))  # left -> -x
    np.testing.assert_array_equal(OPTICAL_FROM_BODY @ (0, 0, 1), (0, -1, 0))  # up -> -y
    # the fixed joint of URDF camera descriptions: rpy = (-pi/2, 0, -pi/2)
    urdf = pose_from_xyz_rpy((0, 0, 0), (-math.pi / 2, 0, -math.pi / 2))
    np.testing.assert_allclose(T_BODY_OPTICAL, urdf, atol=1e-15)
    assert not T_BODY_OPTICAL.flags.writeable
    # a camera 0.2 m forward and 1 m up, yawed left by 90 degrees, looks along base +y
    T = camera_pose_to_optical(0.2, 0.0, 1.0, 0.0, 0.0, math.pi / 2)
    np.testing.assert_allclose(T[:3, :3] @ (0, 0, 1), (0, 1, 0), atol=1e-12)
    np.testing.assert_allclose(T[:3, 3], (0.2, 0.0, 1.0))


# --- CameraInfo --------------------------------------------------------------------------------


def test_from_camera_info_reads_plain_and_rosbags_messages():
    camera = CameraModel.from_camera_info(camera_info())
    np.testing.assert_array_equal(camera.K, K)
    np.testing.assert_array_equal(camera.D, D_PLUMB)
    assert camera.image_size == (H, W)
    fisheye = CameraModel.from_camera_info(camera_info(distortion_model=EQUIDISTANT,
                                                       d=list(D_FISHEYE)))
    assert fisheye.distortion_model == EQUIDISTANT
    no_distortion = CameraModel.from_camera_info(camera_info(d=[]))
    np.testing.assert_array_equal(no_distortion.D, np.zeros(5))
    typesys = pytest.importorskip('rosbags.typesys')
    store = typesys.get_typestore(typesys.Stores.ROS2_JAZZY)
    types = store.types
    header = types['std_msgs/msg/Header'](types['builtin_interfaces/msg/Time'](0, 0), 'cam')
    roi = types['sensor_msgs/msg/RegionOfInterest'](0, 0, 0, 0, False)
    msg = types['sensor_msgs/msg/CameraInfo'](
        header, H, W, RATIONAL_POLYNOMIAL, D_RATIONAL, K.ravel(), np.eye(3).ravel(),
        np.c_[K, np.zeros(3)].ravel(), 0, 0, roi)
    camera = CameraModel.from_camera_info(msg)
    np.testing.assert_array_equal(camera.D, D_RATIONAL)
    assert camera.image_size == (H, W)


def test_camera_info_errors_say_what_is_wrong():
    with pytest.raises(GeometryError, match='all zero.*not calibrated'):
        CameraModel.from_camera_info(camera_info(k=[0.0] * 9))
    with pytest.raises(GeometryError, match="unknown distortion_model 'kannala'"):
        CameraModel.from_camera_info(camera_info(distortion_model='kannala'))
    with pytest.raises(GeometryError, match="'plumb_bob' takes 5 .* got 4"):
        CameraModel.from_camera_info(camera_info(d=[0.1, 0.0, 0.0, 0.0]))
    with pytest.raises(GeometryError, match="'equidistant' takes 4 .* got 5"):
        CameraModel.from_camera_info(camera_info(distortion_model=EQUIDISTANT))
    with pytest.raises(GeometryError, match='9 finite numbers'):
        CameraModel.from_camera_info(camera_info(k=[1.0] * 8))
    with pytest.raises(GeometryError, match='lacks'):
        CameraModel.from_camera_info(SimpleNamespace(width=W, height=H))
    with pytest.raises(GeometryError, match='did not fill'):
        CameraModel.from_camera_info(camera_info(width=0))
    with pytest.raises(GeometryError, match='does not fit'):
        roi = SimpleNamespace(x_offset=600, y_offset=0, width=100, height=100)
        CameraModel.from_camera_info(camera_info(roi=roi))


def test_binning_and_roi_follow_image_geometry():
    binned = CameraModel.from_camera_info(camera_info(binning_x=2, binning_y=2))
    np.testing.assert_allclose(binned.K[:2], K[:2] / 2)
    assert binned.image_size == (H // 2, W // 2)
    np.testing.assert_array_equal(binned.D, D_PLUMB)  # normalised coordinates: unchanged
    # the same 3-D point lands on the same place of the (binned) sensor
    point = np.array([[0.4, -0.2, 3.0]])
    full = CameraModel.from_camera_info(camera_info()).project(point).pixels
    np.testing.assert_allclose(binned.project(point).pixels, full / 2, atol=1e-9)
    roi = SimpleNamespace(x_offset=100, y_offset=40, width=400, height=300, do_rectify=False)
    cropped = CameraModel.from_camera_info(camera_info(roi=roi, binning_x=2, binning_y=1))
    assert cropped.image_size == (300, 200)
    np.testing.assert_allclose(cropped.K[0], [K[0, 0] / 2, 0.0, (K[0, 2] - 100) / 2])
    np.testing.assert_allclose(cropped.K[1], [0.0, K[1, 1], K[1, 2] - 40])
    np.testing.assert_allclose(cropped.project(point).pixels,
                               (full - (100, 40)) / (2, 1), atol=1e-9)


def test_rectified_camera_uses_p_and_r():
    R = pose_from_xyz_rpy((0, 0, 0), (0.01, -0.02, 0.015))[:3, :3]
    P = np.c_[[[500.0, 0, 330.0], [0, 500.0, 235.0], [0, 0, 1.0]], np.zeros(3)]
    camera = CameraModel.from_camera_info(camera_info(r=list(R.ravel()), p=list(P.ravel())),
                                          rectified=True)
    points = points_in_view(np.random.default_rng(5), 50, 20.0)
    projected = (points @ R.T) @ P[:, :3].T
    np.testing.assert_allclose(camera.project(points).pixels,
                               projected[:, :2] / projected[:, 2:], atol=1e-9)
    rays = camera.pixel_rays(camera.project(points).pixels)
    np.testing.assert_allclose(rays, points / np.linalg.norm(points, axis=1, keepdims=True),
                               atol=1e-12)
    stereo_right = P.copy()
    stereo_right[0, 3] = -50.0
    with pytest.raises(GeometryError, match='stereo baseline'):
        CameraModel.from_camera_info(camera_info(p=list(stereo_right.ravel())), rectified=True)


# --- footprint -------------------------------------------------------------------------------


_RAYS: dict[tuple[int, int], np.ndarray] = {}  # the oracle's rays per camera and scale


def ray_cast_mask(camera: CameraModel, T_base_optical: np.ndarray, length: float, width: float,
                  scale: int = 1) -> np.ndarray:
    """The oracle: a mask pixel is in the footprint when the ray through its centre meets the
    ground inside the rectangle."""
    h, w = camera.height // scale, camera.width // scale
    key = (id(camera), scale)
    if key not in _RAYS:
        jj, ii = np.meshgrid(np.arange(w), np.arange(h))
        centres = np.column_stack([jj.ravel(), ii.ravel()]) * scale + (scale - 1) / 2
        _RAYS[key] = camera.pixel_rays(centres)  # h * w, 3
    hits = intersect_ground(_RAYS[key], T_base_optical)
    x, y = hits.points[:, 0], hits.points[:, 1]
    with np.errstate(invalid='ignore'):
        inside = hits.valid & (np.abs(x) <= length / 2) & (np.abs(y) <= width / 2)
    return inside.reshape(h, w)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def shoelace(polygon: np.ndarray) -> float:
    x, y = polygon.T
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


@pytest.mark.parametrize('scale', [1, 2, 4])
def test_footprint_ahead_has_the_area_of_its_projected_corners(scale):
    camera = CAMERAS['pinhole']
    T_base_optical = camera_pose_to_optical(-4.0, 0.0, 1.0, 0.0, math.radians(20), 0.0)
    corners = footprint_polygon(1.2, 0.8)  # 4 m ahead of the camera
    T_optical_base = invert(T_base_optical)
    pixels, valid = camera.project(transform_points(T_optical_base, corners))
    assert valid.all()
    mask = rasterise_footprint(corners, T_optical_base, camera, scale=scale)
    assert mask.shape == (H // scale, W // scale)
    corners_px = (pixels + 0.5) / scale - 0.5  # 4, 2 in mask pixels
    expected = shoelace(corners_px)
    # pixel counting is exact up to the pixels the edges cut: a few % of a large polygon, up to
    # a quarter of the perimeter of a small one (scale 4: about 250 pixels, 10 rows)
    perimeter = np.linalg.norm(corners_px - np.roll(corners_px, -1, axis=0), axis=1).sum()
    assert abs(mask.sum() - expected) <= max(0.03 * expected, 0.25 * perimeter)
    assert iou(mask, ray_cast_mask(camera, T_base_optical, 1.2, 0.8, scale)) > 0.98


def test_footprint_behind_the_camera_gives_an_empty_mask():
    camera = CAMERAS['pinhole']
    T_base_optical = camera_pose_to_optical(3.0, 0.0, 1.0, 0.0, math.radians(20), 0.0)
    corners = footprint_polygon(1.2, 0.8)  # 3 m behind the camera
    mask = rasterise_footprint(corners, invert(T_base_optical), camera)
    assert mask.dtype == bool and not mask.any()
    # beside the camera, in front of its plane but outside the image: empty too
    side = corners + (0.0, 30.0, 0.0)
    T_base_optical = camera_pose_to_optical(-3.0, 0.0, 1.0, 0.0, math.radians(20), 0.0)
    assert not rasterise_footprint(side, invert(T_base_optical), camera).any()


@pytest.mark.parametrize('name', list(CAMERAS))
def test_footprint_partly_behind_the_camera_is_clipped(name):
    camera = CAMERAS[name]
    # the camera sits over the middle of a long footprint, pitched down: half of the
    # footprint is behind it, half runs from the bottom image rows forward
    T_base_optical = camera_pose_to_optical(0.0, 0.0, 0.8, 0.0, math.radians(30), 0.0)
    length, width = 6.0, 0.6
    mask = rasterise_footprint(footprint_polygon(length, width), invert(T_base_optical), camera)
    oracle = ray_cast_mask(camera, T_base_optical, length, width)
    assert oracle[-1].any() and mask.any()
    assert iou(mask, oracle) > 0.98
    # it reaches the bottom row only across the visible width of the footprint
    columns = np.flatnonzero(mask[-1])
    expected = np.flatnonzero(oracle[-1])
    assert abs(columns[0] - expected[0]) <= 1 and abs(columns[-1] - expected[-1]) <= 1
    assert len(columns) < camera.width * 0.9
    # and not above the far edge: the top rows (above the horizon) stay empty
    assert not mask[:10].any()


@pytest.mark.parametrize('name', list(CAMERAS))
def test_footprint_matches_ray_casting_at_random_poses(name):
    camera = CAMERAS[name]
    rng = np.random.default_rng(6)
    T_base_optical = camera_pose_to_optical(0.0, 0.0, 1.0, 0.0, math.radians(25), 0.0)
    checked = 0
    for _ in range(12):
        x, y, yaw = rng.uniform(-1.0, 6.0), rng.uniform(-3.0, 3.0), rng.uniform(-math.pi, math.pi)
        T_base_robot = pose_from_xyz_rpy((x, y, 0.0), (0.0, 0.0, yaw))  # robot at a later pose
        T_robot_optical = invert(T_base_robot) @ T_base_optical
        mask = rasterise_footprint(footprint_polygon(1.0, 0.7), invert(T_robot_optical), camera,
                                   scale=2)
        oracle = ray_cast_mask(camera, T_robot_optical, 1.0, 0.7, scale=2)
        if oracle.sum() < 50:
            assert mask.sum() <= oracle.sum() + 60  # a sliver on the edge: no spill
            continue
        checked += 1
        assert iou(mask, oracle) > 0.98, (x, y, yaw)
    assert checked >= 4


def test_fill_convex_is_fill_polygon_for_convex_polygons() -> None:
    """The labeller's fast path gives exactly fill_polygon's mask for convex polygons: random
    hulls, partly outside the mask, with vertices on pixel centres and horizontal edges."""
    from contrast_semask_ros.supervision.labeller import convex_hull_xy

    rng = np.random.default_rng(0)
    shape = (34, 64)
    for trial in range(300):
        points = rng.uniform([-20, -10], [84, 44], size=(rng.integers(3, 12), 2))
        if trial % 3 == 0:
            points = np.round(points)  # vertices on pixel centres, horizontal edges
        hull = convex_hull_xy(np.column_stack([points, np.zeros(len(points))]))[:, :2]
        if len(hull) < 3:
            continue
        np.testing.assert_array_equal(fill_convex(hull, shape), fill_polygon(hull, shape),
                                      err_msg=f'trial {trial}: {hull.tolist()}')
    tiny = np.array([[5.2, 5.2], [5.4, 5.2], [5.3, 5.4]])  # covers no pixel centre
    assert not fill_convex(tiny, shape).any() and not fill_polygon(tiny, shape).any()


def test_fill_polygon_takes_exactly_the_pixel_centres_inside():
    rng = np.random.default_rng(7)
    jj, ii = np.meshgrid(np.arange(60), np.arange(40))
    for _ in range(20):
        # a star-shaped polygon (non-convex), partly off the 40 x 60 image
        angles = np.sort(rng.uniform(0, 2 * math.pi, 9))
        radii = rng.uniform(5, 25, 9)
        centre = rng.uniform((0, 0), (60, 40))
        polygon = centre + np.column_stack([np.cos(angles), np.sin(angles)]) * radii[:, None]
        mask = fill_polygon(polygon, (40, 60))
        contour = polygon.astype(np.float32).reshape(-1, 1, 2)
        inside = np.array([[cv2.pointPolygonTest(contour, (float(j), float(i)), True)
                            for j in range(60)] for i in range(40)])
        assert mask[inside > 1e-3].all() and not mask[inside < -1e-3].any()
    # the top-left rule: two squares sharing an edge share no pixel and miss none
    a = fill_polygon([[2, 2], [10, 2], [10, 10], [2, 10]], (20, 20))
    b = fill_polygon([[10, 2], [18, 2], [18, 10], [10, 10]], (20, 20))
    assert not (a & b).any() and a.sum() == b.sum() == 64
    assert (a | b)[2:10, 2:18].all() and ((jj < 20) & (ii < 20))[:20, :20].sum() == 400
    with pytest.raises(GeometryError, match='M >= 3'):
        fill_polygon([[0, 0], [1, 1]], (5, 5))


def test_clip_polygon_cuts_at_the_near_plane():
    square = np.array([[-1.0, 0, -1], [1, 0, -1], [1, 0, 1], [-1, 0, 1]])  # z from -1 to 1
    clipped = clip_polygon(square, np.array([[0.0, 0.0, 1.0, -0.5]]))  # z >= 0.5
    assert len(clipped) == 4 and clipped[:, 2].min() == pytest.approx(0.5)
    assert len(clip_polygon(square, np.array([[0.0, 0.0, 1.0, -2.0]]))) == 0


def test_rasterise_rejects_a_scale_that_does_not_divide_the_image():
    camera = CAMERAS['pinhole']
    with pytest.raises(GeometryError, match='dividing the image size'):
        rasterise_footprint(footprint_polygon(1, 1), np.eye(4), camera, scale=7)
    with pytest.raises(GeometryError, match='at least 3'):
        rasterise_footprint(np.zeros((2, 3)), np.eye(4), camera)
