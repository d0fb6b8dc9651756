"""contrast-semask-replay's cost grid and cloud (contrast_semask_ros/replay_world.py): the BEV
score and the projection checked against the simulator's own ground truth, then the whole
replay of a simulated drive (output bag topics, report keys, coverage, options)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bag_messages import write_sim_drive
from conftest import TextureModel

from contrast_semask_ros import codec
from contrast_semask_ros.metrics import BevError
from contrast_semask_ros.replay import main as replay_main
from contrast_semask_ros.replay_world import (
    BevScorer,
    TruthGrid,
    known_cells,
    observed_cells,
)
from contrast_semask_ros.supervision.geometry import PLUMB_BOB, CameraModel, camera_pose_to_optical
from contrast_semask_ros.world.cloud import cloud_array
from contrast_semask_ros.world.grid import GridInfo, Occupancy
from contrast_semask_ros.world.projector import WorldConfig, WorldProjector
from contrast_semask_train.data import drive_sim
from contrast_semask_train.data.drive_sim import SimDrive, SimDriveSpec, base_pose

FRAMES, SIZE, SEED = 40, (96, 160), 3
SPEC = SimDriveSpec(frames=FRAMES, height=SIZE[0], width=SIZE[1], seed=SEED)


# --- known answers: the simulator's ground truth through the world core -----------------


@pytest.fixture(scope='module')
def drive() -> SimDrive:
    return SimDrive(SPEC)


def _truth(drive: SimDrive) -> TruthGrid:
    grid = drive.cost_grid()
    return TruthGrid(grid.data, grid.resolution, grid.origin_x, grid.origin_y, 'odom')


def _projector(drive: SimDrive, config: WorldConfig,
               T_base_optical: np.ndarray | None = None) -> WorldProjector:
    camera = drive.camera
    projector = WorldProjector(config, camera.T_base_optical if T_base_optical is None
                               else T_base_optical)
    projector.set_camera(CameraModel(camera.width, camera.height, camera.k, np.zeros(5),
                                     PLUMB_BOB))
    return projector


def _odometry_until(projector: WorldProjector, drive: SimDrive, pending: list[int],
                    stamp_ns: int) -> None:
    """The 50 Hz odometry samples up to stamp_ns, as a replay feeds them."""
    traj = drive.trajectory
    while pending and traj.stamp_ns[pending[0]] <= stamp_ns:
        k = pending.pop(0)
        projector.add_odometry(int(traj.stamp_ns[k]), base_pose(traj.x[k], traj.y[k],
                                                                traj.yaw[k]))


def _score_truth_images(drive: SimDrive, T_base_optical: np.ndarray | None = None
                        ) -> dict[str, Any]:
    """The simulator's ground-truth cost images (confidence 1) through a WorldProjector, every
    grid scored against the simulator's ground-truth cost grid."""
    projector = _projector(drive, WorldConfig(), T_base_optical)
    scorer = BevScorer(0.1, _truth(drive))
    pending = list(drive.odom_indices())
    for i in range(FRAMES):
        frame = drive.render(i)
        _odometry_until(projector, drive, pending, frame.stamp_ns)
        placed = projector.process(frame.stamp_ns, frame.cost, np.ones_like(frame.cost),
                                   want_cloud=False, want_grid=True)
        assert placed.T_odom_base is not None
        scorer.add(projector.occupancy(frame.stamp_ns), 1.0, placed.grid_cloud.points)
    return scorer.summary()


def test_bev_score_of_the_ground_truth_cost_images_is_small(drive: SimDrive) -> None:
    """Perfect cost images make a grid within 0.03 of the ground-truth map (what remains: the
    cells a terrain border crosses, and the 0.01 steps of the occupancy values); a camera
    placed 0.3 m too high misplaces the ground and the score says so."""
    bev = _score_truth_images(drive)
    assert bev['frames'] == FRAMES and bev['cells'] > 10_000
    assert bev['window_cells'] > bev['cells']  # the window remembers what frames saw before
    for prefix in ('', 'window_'):
        assert bev[f'{prefix}cost_mae'] < 0.03, bev
        assert bev[f'{prefix}high_cost_recall'] > 0.97, bev
        assert bev[f'{prefix}high_cost_cells'] > 1000
        assert bev[f'{prefix}false_high_rate'] < 0.03, bev
    assert bev['cells_without_truth'] == 0 and bev['coverage_m2'] > 30
    # the images' own error where their points land: none but the pixels a border crosses
    assert bev['image_cost_mae'] < 0.01 and bev['image_points'] > 10_000
    assert bev['image_high_cost_recall'] > 0.99
    assert bev['frame_cost_mae'] < 0.03 and bev['frame_high_cost_recall'] > 0.97, bev
    wrong = _score_truth_images(drive, camera_pose_to_optical(0.3, 0.0, 1.3, 0.0, 0.35, 0.0))
    assert wrong['cost_mae'] > 3 * bev['cost_mae'] + 0.02, (wrong, bev)
    assert wrong['window_cost_mae'] > 3 * bev['window_cost_mae'] + 0.02, (wrong, bev)
    assert wrong['image_cost_mae'] > 0.05  # misplaced points land on other terrain


def test_cloud_points_land_on_the_simulator_ground_points(drive: SimDrive) -> None:
    """The cloud in odom of the ground-truth cost image, its confidence the pixel's index: every
    point within one grid cell (in fact microns) of where the simulator's ray of that pixel
    met the ground, and the terrain there has the pixel's ground-truth cost."""
    projector = _projector(drive, WorldConfig(cloud_frame='odom', cloud_stride=2))
    pending = list(drive.odom_indices())
    points = 0
    for i in (0, 13, 26, FRAMES - 1):
        frame = drive.render(i)
        _odometry_until(projector, drive, pending, frame.stamp_ns)
        index = np.arange(frame.cost.size, dtype=np.float32).reshape(frame.cost.shape)
        cloud = projector.process(frame.stamp_ns, frame.cost, index, want_cloud=True,
                                  want_grid=False).cloud
        xyz, cost = cloud.points[:, :3].astype(np.float64), cloud.points[:, 3]
        pixel = cloud.points[:, 4].astype(np.int64)
        assert len(pixel) > 500 and (frame.cost.reshape(-1)[pixel] == cost).all()
        sim = drive_sim.ground_hits(drive.camera, frame.T_odom_optical).points.reshape(-1, 3)
        assert np.abs(xyz - sim[pixel]).max() < 0.1 / 10  # a tenth of a 0.1 m cell
        assert np.abs(xyz[:, 2]).max() < 1e-4  # on the ground plane
        terrain = drive.cost_lut[drive.terrain.classes_at(xyz[:, 0], xyz[:, 1])]
        np.testing.assert_array_equal(terrain, cost)
        points += len(pixel)
    assert points > 5000


def test_known_cells_and_truth_lookup() -> None:
    """Occupancy -> lattice cells and costs; the truth cell holding each cell's centre; cells
    outside the map or -1 there have no truth; the recall counts truth >= 0.5."""
    data = np.full((4, 5), -1, np.int8)
    data[1, 2], data[3, 4], data[0, 0] = 50, 100, 20
    occupancy = Occupancy(data, GridInfo('odom', 0.1, 5, 4, -0.3, 0.2), 3)
    i, j, cost = known_cells(occupancy, max_cost=2.0)
    cells = zip(i.tolist(), j.tolist(), cost.astype(float).round(6).tolist(), strict=True)
    assert sorted(cells) == [(-3, 2, 0.4), (-1, 3, 1.0), (1, 5, 2.0)]
    truth = np.full((10, 10), 60, np.int8)
    truth[0, 0] = -1
    grid = TruthGrid(truth, 0.1, -0.5, 0.2)  # covers x [-0.5, 0.5), y [0.2, 1.2)
    np.testing.assert_allclose(grid.costs_at(np.array([-0.45, 0.0, 0.6, -0.25]),
                                             np.array([0.25, 0.5, 0.5, 0.25])),
                               [np.nan, 0.6, np.nan, 0.6])
    scorer = BevScorer(0.1, grid)
    scorer.add(occupancy, 2.0)  # no points: the whole window only
    bev = scorer.summary()
    assert 'cost_mae' not in bev and bev['cells'] == 0
    assert bev['window_cells'] == 3 and bev['window_cells_without_truth'] == 0
    assert bev['window_cost_mae'] == pytest.approx((0.2 + 0.4 + 1.4) / 3)
    assert bev['window_high_cost_cells'] == 3
    assert bev['window_high_cost_recall'] == pytest.approx(2 / 3)
    assert math.isnan(bev['window_false_high_rate'])
    assert bev['coverage_m2'] == pytest.approx(0.03)
    scorer.add(occupancy, 2.0)  # the same cells again: scored twice, covered once
    assert scorer.summary()['window_cells'] == 6 and scorer.summary()['coverage_m2'] == \
        pytest.approx(0.03)


def test_bev_error_counts_recall_and_false_highs() -> None:
    """BevError over two grids: |fused - truth|, the recall of true-high cells (>= 0.5) and the
    rate of true-low cells marked high (a grid marked high all over has recall 1 and a false
    high rate of 1); cells without truth are counted apart."""
    error = BevError()
    error.add(np.array([0.6, 0.2, 0.7, 0.1]), np.array([0.1, 0.2, 0.9, 0.8]))
    error.add(np.array([0.5, 0.3]), np.array([0.5, np.nan]))
    out = error.summary()
    assert out['frames'] == 2 and out['cells'] == 5 and out['cells_without_truth'] == 1
    assert out['cost_mae'] == pytest.approx((0.5 + 0.0 + 0.2 + 0.7 + 0.0) / 5)
    assert out['high_cost_cells'] == 3 and out['high_cost_recall'] == pytest.approx(2 / 3)
    assert out['false_high_rate'] == pytest.approx(1 / 2)
    everywhere = BevError()
    everywhere.add(np.ones(4), np.array([0.0, 0.2, 0.6, 1.0]))
    assert everywhere.summary()['high_cost_recall'] == everywhere.summary()[
        'false_high_rate'] == 1.0


def test_observed_cells_are_the_known_cells_holding_fused_points() -> None:
    """A frame's observed cells: each known cell holding a point with a finite cost and a
    confidence > 0, once however many points it holds; points outside the window, in unknown
    cells, with NaN cost or zero confidence observe nothing. Scored against the truth beside
    the window and the points' own costs."""
    data = np.full((4, 5), -1, np.int8)  # origin (-0.3, 0.2): cells i -3..1, j 2..5
    data[1, 2], data[3, 4], data[0, 0] = 40, 100, 20
    occupancy = Occupancy(data, GridInfo('odom', 0.1, 5, 4, -0.3, 0.2), 3)
    points = np.array([[-0.05, 0.35, 0, 0.4, 1.0],  # cell (-1, 3): value 40
                       [-0.01, 0.31, 0, 0.6, 0.5],  # the same cell again
                       [0.15, 0.55, 0, 1.0, 1.0],  # cell (1, 5): value 100
                       [-0.25, 0.25, 0, 0.2, 0.0],  # cell (-3, 2) but confidence 0
                       [-0.25, 0.25, 0, np.nan, 1.0],  # ... NaN cost
                       [-0.15, 0.25, 0, 0.3, 1.0],  # cell (-2, 2): unknown there
                       [0.45, 0.25, 0, 0.3, 1.0]], np.float32)  # outside the window
    seen = observed_cells(occupancy, points, max_cost=1.0)
    cells = zip(seen.i.tolist(), seen.j.tolist(), seen.fused.astype(float).round(6).tolist(),
                strict=True)
    assert list(cells) == [(-1, 3, 0.4), (1, 5, 1.0)]  # by ring index: row-major
    np.testing.assert_array_equal(seen.points, points[:3])
    assert seen.cell.tolist() == [0, 0, 1]
    assert observed_cells(occupancy, points[3:5], 1.0).i.size == 0
    truth = TruthGrid(np.full((10, 10), 70, np.int8), 0.1, -0.5, 0.2)
    scorer = BevScorer(0.1, truth)
    scorer.add(occupancy, 1.0, points)
    bev = scorer.summary()
    assert bev['cells'] == 2 and bev['frames'] == 1 and bev['window_cells'] == 3
    assert bev['cost_mae'] == pytest.approx((0.3 + 0.3) / 2)
    assert bev['high_cost_cells'] == 2 and bev['high_cost_recall'] == pytest.approx(0.5)
    assert math.isnan(bev['false_high_rate'])  # no cell of truth < 0.5 was scored
    # the image's points: the five with a cost and confidence, each with its own cost
    assert bev['image_points'] == 5
    assert bev['image_cost_mae'] == pytest.approx((0.3 + 0.1 + 0.3 + 0.4 + 0.4) / 5)
    assert bev['image_high_cost_recall'] == pytest.approx(2 / 5)
    # the frame alone on the observed cells: mean cost (0.4 + 0.6) / 2 and 1.0 against 0.7
    assert bev['frame_cost_mae'] == pytest.approx((0.2 + 0.3) / 2)
    assert bev['frame_high_cost_cells'] == 2 and bev['frame_high_cost_recall'] == 1.0


# --- the whole replay ------------------------------------------------------------------------

BASE = ['--image-topic', '/camera/image_raw', '--ground-truth-topic', '/ground_truth/cost',
        '--no-progress']


@pytest.fixture(scope='module')
def sim_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip('rosbags', reason='replay reads bags with rosbags')
    return write_sim_drive(tmp_path_factory.mktemp('sim'), FRAMES, f'{SIZE[0]}x{SIZE[1]}',
                           seed=SEED)


def _replay(bag: Path, model: TextureModel, out: Path, *extra: str) -> dict[str, Any]:
    assert replay_main([str(bag), '--model', str(model.onnx), *BASE, *extra,
                        '--out', str(out)]) == 0
    return json.loads((out / 'report.json').read_text())


def _read(bag: Path, topic: str) -> list[Any]:
    from rosbags.highlevel import AnyReader

    with AnyReader([bag]) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        return [reader.deserialize(raw, c.msgtype)
                for c, _, raw in reader.messages(connections=conns)]


@pytest.fixture(scope='module')
def supervised(sim_bag: Path, texture_model: TextureModel,
               tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp('world') / 'out'
    return out, _replay(sim_bag, texture_model, out, '--supervision', 'imu', '--cloud',
                        '--cloud-frame', 'odom')


def test_supervised_replay_writes_grid_and_cloud(sim_bag: Path,
                                                 supervised: tuple[Path, dict[str, Any]]
                                                 ) -> None:
    out, report = supervised
    frames = {codec.header_stamp_ns(m.header) for m in _read(sim_bag, '/camera/image_raw')}
    assert len(frames) == FRAMES
    grids = _read(out / 'replay_bag', '/cost_map/cost_grid')
    assert len(grids) == FRAMES == report['world']['grid_messages']  # one per frame
    assert {codec.header_stamp_ns(g.header) for g in grids} == frames
    for grid in grids:
        assert grid.header.frame_id == 'odom'
        assert (grid.info.width, grid.info.height) == (200, 200)
        assert grid.info.resolution == pytest.approx(0.1)
        data = np.asarray(grid.data)
        assert data.size == 200 * 200 and data.min() >= -1 and data.max() <= 100
    assert (np.asarray(grids[-1].data) >= 0).sum() > 1000
    clouds = _read(out / 'replay_bag', '/cost_map/cost_cloud')
    assert {codec.header_stamp_ns(c.header) for c in clouds} == frames
    for cloud in clouds:
        assert cloud.header.frame_id == 'odom' and cloud.point_step == 20
        assert [f.name for f in cloud.fields] == ['x', 'y', 'z', 'cost', 'confidence']
        points = cloud_array(cloud).reshape(-1)  # empty before the bank has prototypes
        assert len(points) == cloud.width and (np.abs(points['z']) < 1e-3).all()
    assert sum(c.width for c in clouds) > 1000
    world = report['world']
    assert world['grid'] and world['cloud'] and world['frames'] == FRAMES
    assert world['extrinsics'] == 'tf_static' and world['grid_frame'] == 'odom'
    assert world['config']['cloud_frame'] == 'odom' and world['counters'].get('no_pose', 0) == 0
    assert (out / 'bev.png').stat().st_size > 10_000


def test_report_bev_keys_are_finite_and_comparable(supervised: tuple[Path, dict[str, Any]]
                                                   ) -> None:
    _, report = supervised
    bev = report['bev']
    for key in ('cost_mae', 'cost_rmse', 'coverage_m2', 'high_cost_recall', 'cells',
                'threshold', 'image_cost_mae', 'window_cost_mae', 'window_high_cost_recall',
                'image_high_cost_recall', 'frame_cost_mae', 'frame_high_cost_recall'):
        assert math.isfinite(bev[key]), key
    assert bev['threshold'] == 0.5 and bev['cells'] > 10_000 and bev['frames'] == FRAMES
    assert bev['ground_truth_topic'] == '/ground_truth/cost_grid'
    assert 0 <= bev['cost_mae'] <= bev['cost_rmse'] < 1 and 0 <= bev['high_cost_recall'] <= 1
    # the same costs seen from above: in the range of the per-pixel error of the same frames
    assert report['ground_truth']['frames'] == FRAMES
    assert abs(bev['cost_mae'] - report['ground_truth']['mae']) < 0.15


def test_coverage_grows_with_the_drive(supervised: tuple[Path, dict[str, Any]]) -> None:
    """The union of the known cells of the grids written so far grows as the robot drives
    (from the first grid with a known cell: the bank is empty until the first IMU labels, a
    few seconds in), and over all of them it is the report's coverage."""
    out, report = supervised
    seen: set[tuple[int, int]] = set()
    areas = []
    for grid in _read(out / 'replay_bag', '/cost_map/cost_grid'):
        info = grid.info
        data = np.asarray(grid.data).reshape(info.height, info.width)
        rows, cols = np.nonzero(data >= 0)
        i0, j0 = round(info.origin.position.x / 0.1), round(info.origin.position.y / 0.1)
        seen.update(zip((cols + i0).tolist(), (rows + j0).tolist(), strict=True))
        areas.append(len(seen) * 0.01)
    first = next(k for k, area in enumerate(areas) if area > 0)
    assert first < FRAMES // 2, areas
    quarters = [areas[first + k * (FRAMES - 1 - first) // 4] for k in range(5)]
    assert all(a < b for a, b in zip(quarters, quarters[1:], strict=False)), quarters
    assert quarters[-1] > 2 * quarters[0]
    assert areas[-1] == pytest.approx(report['bev']['coverage_m2'])


def test_grid_defaults_and_options(sim_bag: Path, texture_model: TextureModel, tmp_path: Path,
                                   caplog: pytest.LogCaptureFixture) -> None:
    """Without odometry asked for, no grid; --odom-topic turns it on (here at 2 Hz, the cloud
    in the optical frame); bad options and missing topics are exit code 2."""
    patches = ['--patch-cost-topic', '/ground_truth/patch_cost']
    plain = _replay(sim_bag, texture_model, tmp_path / 'plain', *patches)
    assert 'bev' not in plain and 'world' not in plain
    assert not (tmp_path / 'plain' / 'bev.png').exists()
    report = _replay(sim_bag, texture_model, tmp_path / 'odom', *patches, '--odom-topic', '/odom',
                     '--grid-rate-hz', '2', '--cloud', '--grid-size-m', '12',
                     '--grid-resolution-m', '0.2')
    assert report['world']['grid'] and report['world']['grid_rate_hz'] == 2.0
    assert report['bev']['frames'] == FRAMES and report['bev']['resolution_m'] == 0.2
    grids = _read(tmp_path / 'odom' / 'replay_bag', '/cost_map/cost_grid')
    assert len(grids) == report['world']['grid_messages'] == FRAMES // 5  # every 0.5 s
    assert (grids[0].info.width, grids[0].info.resolution) == (60, pytest.approx(0.2))
    clouds = _read(tmp_path / 'odom' / 'replay_bag', '/cost_map/cost_cloud')
    assert len(clouds) == FRAMES and clouds[0].header.frame_id == 'camera_optical_frame'
    base = [str(sim_bag), '--model', str(texture_model.onnx), *BASE]
    assert replay_main([*base, *patches, '--grid', '--odom-topic', '/nope',
                        '--out', str(tmp_path / 'nope')]) == 2
    assert "no odometry (for the cost grid) topic '/nope'" in caplog.text
    assert replay_main([*base, *patches, '--grid', '--grid-resolution-m', '0.3',
                        '--out', str(tmp_path / 'cells')]) == 2
    assert 'whole number of cells' in caplog.text
    assert not (tmp_path / 'nope').exists() and not (tmp_path / 'cells').exists()
