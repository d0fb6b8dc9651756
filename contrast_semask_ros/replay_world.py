"""Replay's cost grid and cost cloud (`contrast-semask-replay --grid --cloud`): each replayed
frame's cost image placed in the world by the node's own core (world.projector.WorldProjector),
written into the output bag, and the grid scored against a ground-truth cost map.

    setup = setup_from_args(args, values, supervision)   # the options (add_options)
    setup, connections = open_world(setup, reader, supervised=True)   # what to read; None: off
    world = WorldReplay(setup, outputs)
    world.message(topic, msg, log_ns)      # odometry, camera_info, /tf_static, truth grid
    world.frame(stamp_ns, cost, confidence, frame_id, log_ns)   # each replayed frame
    world.finish(log_ns)
    world.summary()                        # report.json's `world` and `bev`
    world.plot(bag_name)                   # what bev.png shows (report.write_bev)

Inputs: the camera from the bag's camera_info (`--camera-info-topic`), the extrinsics as
self-supervision takes them (`--camera-pose`, else the bag's /tf_static chained from
`--base-frame` to the camera_info's frame, replay_supervision.chain_static), the base poses
from odometry (`--odom-topic`, interpolated at each frame's stamp). The grid is on by default
when odometry is there to place it: with `--supervision`, or when `--odom-topic` is given and
the bag has it (`--grid` / `--no-grid` decide otherwise); the cloud is off by default (large).

Outputs, stamped with the frame's stamp and logged at the time the frame was placed (its own
log time, or that of the odometry message it waited for): `<ns>/cost_grid`
(nav_msgs/OccupancyGrid in the odometry frame: the whole rolling window, 0..100 = cost /
max_cost, -1 unknown; at `--grid-rate-hz` in sensor time, default 0: after every frame) and
`<ns>/cost_cloud` (sensor_msgs/PointCloud2 x, y, z, cost, confidence in `--cloud-frame`: the
camera's optical frame (the image's frame id), the base frame or the odometry frame). A frame
newer than the latest odometry waits for odometry at or after its stamp (at most WAIT_S of
later frames, then it is placed without a pose: no grid update, counted `no_pose`). Settings:
the options, else the --params file's parameters of the same names (the node's `world`
parameters, where its parameter table has them), else WorldConfig's defaults.

BEV score (report.json `bev`), when the bag has a ground-truth cost map
(`--ground-truth-grid-topic`, default /ground_truth/cost_grid, an OccupancyGrid in the same
frame whose value v means cost v / 100, as contrast-semask-data drive-bag writes it). Every
grid the replay makes (each frame with a pose, whether or not `--grid-rate-hz` writes it) is
scored after its frame is fused, cell by cell: a cell's fused cost is its value / 100 *
max_cost (the published value, quantised to max_cost / 100), its truth the ground-truth cell
holding its centre. Four sets of cells or points are scored, each summed over the grids:

    observed  the cells this frame fused observations into (observed_cells), as the grid
              holds them after the frame: what the frame's image became in the grid. This
              is the grid's counterpart of the per-pixel image error of the same frames
              (`ground_truth.mae`), and the score the plain keys give:
              cost_mae, cost_rmse, cells, high_cost_recall, high_cost_cells, frames
    frame     the same cells with this frame's points alone, each cell's cost and truth the
              mean over its points: the image on the grid's cells, without the grid's
              weighting and memory. cost_mae - frame_cost_mae is what fusion changes;
              frame_cost_mae - image_cost_mae is weighing cells (area) instead of pixels:
              frame_cost_mae, frame_cost_rmse, frame_high_cost_recall, frame_high_cost_cells
    window    every known cell of the grid (observed and not yet decayed), each once per
              grid: what a planner reads, memory included (cells seen up to grid_decay_s
              ago, with the costs of the model of then): window_cost_mae, window_cost_rmse,
              window_cells, window_cells_without_truth, window_high_cost_recall,
              window_high_cost_cells
    image     the points the frame fused (its sampled pixels within cloud_max_range_m), each
              with its own cost against the truth where it lands: the cost images' own error
              on the grid's ground, weighted by pixel: image_cost_mae, image_cost_rmse,
              image_points, image_high_cost_recall, image_high_cost_cells

    high_cost_recall  of the scored cells with truth >= threshold (0.5), the fraction whose
                      fused cost is >= threshold too
    coverage_m2       area of the distinct cells known in any grid of the run (also without
                      ground truth)

bev.png (report.write_bev): the fused grid at the end beside the ground truth over the same
window, and the last known value of every cell ever observed beside the ground truth over the
whole drive, the path driven (odometry) drawn on each.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections import Counter, deque
from dataclasses import asdict
from typing import Any, NamedTuple

import numpy as np

from contrast_semask_ros import bagio
from contrast_semask_ros.metrics import HIGH_COST, BevError, CellMosaic, percentiles
from contrast_semask_ros.replay_supervision import (
    CAMERA_INFO_TYPES,
    ODOMETRY_TYPES,
    TF_TYPES,
    SupervisionSetup,
    add_static_transforms,
    chain_static,
)
from contrast_semask_ros.supervision import ros_io
from contrast_semask_ros.supervision.geometry import (
    CameraModel,
    GeometryError,
    camera_pose_to_optical,
)
from contrast_semask_ros.supervision.labeller import PoseHistory
from contrast_semask_ros.world.cloud import CloudError, CostCloudBuilder
from contrast_semask_ros.world.grid import GridError, Occupancy
from contrast_semask_ros.world.projector import CLOUD_FRAMES, WorldConfig, WorldProjector

_logger = logging.getLogger('contrast_semask_replay')

DEFAULT_ODOM_TOPIC = '/odom'
DEFAULT_BASE_FRAME = 'base_link'
GROUND_TRUTH_GRID_TOPIC = '/ground_truth/cost_grid'
GRID_TOPIC, CLOUD_TOPIC = 'cost_grid', 'cost_cloud'  # under the namespace
WAIT_S = 1.0  # a frame waits this long (in later frames' stamps) for odometry at its stamp
POSE_AGE_S = 10.0  # odometry kept for interpolation
PATH_STEP_M = 0.05  # the path drawn in bev.png: odometry positions this far apart


class WorldOptionError(ValueError):
    """A grid or cloud option that cannot work; says what is allowed."""


class WorldSetup(NamedTuple):
    """What `contrast-semask-replay --grid/--cloud` was asked for (setup_from_args)."""

    config: WorldConfig
    grid: bool | None = None  # None: on when odometry is available (open_world)
    cloud: bool = False
    grid_rate_hz: float = 0.0  # cost_grid messages per second of sensor time; 0: every frame
    odom_topic: str = DEFAULT_ODOM_TOPIC
    odom_explicit: bool = False  # --odom-topic was given
    camera_info_topic: str = '/camera/camera_info'
    tf_static_topic: str = '/tf_static'
    camera_pose: tuple[float, ...] | None = None  # None: from /tf_static
    base_frame: str = DEFAULT_BASE_FRAME
    truth_topic: str = GROUND_TRUTH_GRID_TOPIC  # '': no scoring
    truth_found: bool = False  # open_world: the bag has it

    @property
    def topics(self) -> set[str]:
        topics = {self.odom_topic, self.camera_info_topic, self.tf_static_topic}
        return topics | ({self.truth_topic} if self.truth_topic else set())


# --- options --------------------------------------------------------------------------------


# option -> WorldConfig field; the option's default comes from the --params file (the node's
# `world` parameter of the same name, where the parameter table has it), else WorldConfig's
_CONFIG_OPTIONS = {'cloud_frame': 'cloud_frame', 'cloud_stride': 'cloud_stride',
                   'cloud_max_range_m': 'cloud_max_range_m',
                   'cloud_keep_unknown': 'cloud_keep_unknown', 'grid_size_m': 'grid_size_m',
                   'grid_resolution_m': 'grid_resolution_m', 'grid_decay_s': 'grid_decay_s',
                   'grid_tau_s': 'grid_tau_s', 'grid_range_scale_m': 'grid_range_scale_m',
                   'grid_max_cost': 'max_cost'}


def add_options(parser: argparse.ArgumentParser) -> None:
    """The grid and cloud options (plain argparse; --odom-topic, --camera-info-topic,
    --tf-static-topic, --camera-pose, --base-frame and --ground-offset are self-supervision's,
    shared). Unset values come from the --params file where the node's parameter table has
    them, else from WorldConfig's defaults (shown)."""
    d = WorldConfig()
    group = parser.add_argument_group(
        'cost grid and cloud', 'the cost images placed in the world (the node\'s world core): '
        f'<namespace>/{GRID_TOPIC} (OccupancyGrid) and {CLOUD_TOPIC} (PointCloud2) in the '
        'output bag, and the grid scored against a ground-truth cost map; unset values come '
        "from the --params file's parameters of the same name, else the defaults shown")
    group.add_argument('--grid', action=argparse.BooleanOptionalAction, default=None,
                       help='the rolling cost grid (default: on with --supervision or when '
                       'the bag has the --odom-topic given)')
    group.add_argument('--cloud', action=argparse.BooleanOptionalAction, default=False,
                       help='the cost cloud of every frame (default off: large)')
    group.add_argument('--grid-rate-hz', type=float, default=None, metavar='HZ',
                       help='write cost_grid at this rate in sensor time (every grid is '
                       'scored); 0 = after every frame (default 0)')
    group.add_argument('--cloud-frame', choices=CLOUD_FRAMES, default=None,
                       help='frame of the cloud\'s points: the camera optical frame, '
                       f'--base-frame or the odometry frame (default {d.cloud_frame})')
    group.add_argument('--cloud-stride', type=int, default=None, metavar='N',
                       help=f'every n-th pixel (both axes) (default {d.cloud_stride})')
    group.add_argument('--cloud-max-range-m', type=float, default=None, metavar='M',
                       help=f'drop points farther from the camera (default '
                       f'{d.cloud_max_range_m})')
    group.add_argument('--cloud-keep-unknown', action=argparse.BooleanOptionalAction,
                       default=None, help='keep unknown-cost points (cost NaN) in the cloud '
                       f'(default {d.cloud_keep_unknown})')
    group.add_argument('--grid-size-m', type=float, default=None, metavar='M',
                       help=f'side of the rolling window (default {d.grid_size_m})')
    group.add_argument('--grid-resolution-m', type=float, default=None, metavar='M',
                       help=f'cell side (default {d.grid_resolution_m})')
    group.add_argument('--grid-decay-s', type=float, default=None, metavar='S',
                       help='a cell unseen this long is unknown again (default '
                       f'{d.grid_decay_s})')
    group.add_argument('--grid-tau-s', type=float, default=None, metavar='S',
                       help=f'older evidence decays with this time constant (default '
                       f'{d.grid_tau_s})')
    group.add_argument('--grid-range-scale-m', type=float, default=None, metavar='M',
                       help='observation weight confidence / (1 + (range / scale)^2) (default '
                       f'{d.grid_range_scale_m})')
    group.add_argument('--grid-max-cost', type=float, default=None, metavar='COST',
                       help='cost shown as 100 in cost_grid (default: --overlay-max-cost)')
    group.add_argument('--ground-truth-grid-topic', default=GROUND_TRUTH_GRID_TOPIC,
                       help='OccupancyGrid ground-truth cost map (value / 100) to score the '
                       f"grid against, when the bag has it ('': none; default "
                       f'{GROUND_TRUTH_GRID_TOPIC})')


def setup_from_args(args: argparse.Namespace, values: dict[str, Any],
                    supervision: SupervisionSetup | None = None) -> WorldSetup:
    """The WorldSetup of the options over the resolved cost map parameters `values` (the
    --params file): each WorldConfig field from its option, else the parameter of the same
    name, else WorldConfig's default; max_cost from --grid-max-cost, grid_max_cost, else
    overlay_max_cost; the ground height from --ground-offset, else self-supervision's, else
    the ground_offset parameter, else 0; the base frame from --base-frame, else
    self-supervision's. WorldOptionError for values that cannot work."""
    rate = 0.0 if args.grid_rate_hz is None else args.grid_rate_hz
    if not (rate >= 0 and math.isfinite(rate)):
        raise WorldOptionError(f'--grid-rate-hz must be >= 0 (0: every frame), got {rate}')
    fields: dict[str, Any] = {'max_cost': values.get('overlay_max_cost', 1.0)}
    for option, field in _CONFIG_OPTIONS.items():
        given = getattr(args, option, None)
        if given is not None:
            fields[field] = given
        elif option in values:
            fields[field] = values[option]
    offset = next((v for v in (getattr(args, 'ground_offset', None),
                               supervision.config.ground_offset if supervision else None,
                               values.get('ground_offset')) if v is not None), 0.0)
    base_frame = args.base_frame or (supervision.base_frame if supervision
                                     else DEFAULT_BASE_FRAME)
    try:
        config = WorldConfig(**fields, ground_offset=float(offset))
        config.grid_params('odom')  # checks the grid's values
        CostCloudBuilder(config.cloud_stride, config.cloud_max_range_m)  # and the cloud's
    except (GridError, CloudError, ValueError, TypeError) as err:
        raise WorldOptionError(f'cost grid/cloud options: {err}') from err
    pose = tuple(args.camera_pose) if args.camera_pose else None
    return WorldSetup(config, args.grid, args.cloud, float(rate),
                      args.odom_topic or DEFAULT_ODOM_TOPIC, args.odom_topic is not None,
                      args.camera_info_topic, args.tf_static_topic, pose, base_frame,
                      args.ground_truth_grid_topic or '')


def open_world(setup: WorldSetup, reader: bagio.InputBag, supervised: bool
               ) -> tuple[WorldSetup | None, list[Any]]:
    """The setup with the grid decided (on when odometry is there: `supervised`, or the
    --odom-topic given is in the bag) and the connections to read; (None, []) when neither the
    grid nor the cloud is made. BagError for a topic the grid or cloud asked for explicitly
    cannot do without; a grid that is only on by default is turned off instead (logged)."""
    explicit = setup.grid is not None or setup.cloud
    grid = setup.grid if setup.grid is not None else (
        supervised or (setup.odom_explicit and bool(reader.optional_connections(
            setup.odom_topic))))
    if not (grid or setup.cloud):
        return None, []
    setup = setup._replace(grid=grid)
    try:
        found = reader.connections(setup.camera_info_topic, 'camera_info (for the cost grid '
                                   'and cloud)', CAMERA_INFO_TYPES)
        if grid or setup.config.cloud_frame == 'odom':
            found += reader.connections(setup.odom_topic, 'odometry (for the cost grid)',
                                        ODOMETRY_TYPES)
        if setup.camera_pose is None:
            tf = reader.optional_connections(setup.tf_static_topic)
            if not tf:
                raise bagio.BagError(
                    f'the cost grid and cloud need the camera extrinsics: {reader.path} has no '
                    f'static transforms topic {setup.tf_static_topic!r}; give --camera-pose X '
                    f'Y Z ROLL PITCH YAW (or --no-grid). The bag has: {reader.topics()}')
            found += reader.connections(setup.tf_static_topic, 'static transforms', TF_TYPES)
    except bagio.BagError as err:
        if explicit:
            raise
        _logger.warning('cost grid off: %s', err)
        return None, []
    truth = []
    if setup.truth_topic and reader.optional_connections(setup.truth_topic):
        truth = reader.connections(setup.truth_topic, 'ground-truth cost grid',
                                   bagio.OCCUPANCY_GRID_TYPES)
    setup = setup._replace(truth_found=bool(truth))
    _logger.info('cost grid %s, cloud %s; BEV score against %s', 'on' if grid else 'off',
                 f'on ({setup.config.cloud_frame})' if setup.cloud else 'off',
                 setup.truth_topic if truth else 'nothing (no ground-truth cost grid)')
    return setup, [*found, *truth]


# --- the ground truth and the score ---------------------------------------------------------


class TruthGrid(NamedTuple):
    """A ground-truth cost map: an OccupancyGrid whose value v means cost v / 100."""

    data: np.ndarray  # rows, cols int8 (OccupancyGrid order), -1 = no ground truth
    resolution: float
    origin_x: float  # m: lower-left corner of cell (0, 0)
    origin_y: float
    frame_id: str = 'odom'

    @classmethod
    def from_message(cls, msg: Any) -> TruthGrid:
        """nav_msgs/OccupancyGrid (identity orientation assumed); ValueError if malformed."""
        info = msg.info
        width, height = int(info.width), int(info.height)
        data = np.asarray(msg.data, dtype=np.int8).reshape(-1)
        if data.size != width * height or not (info.resolution > 0):
            raise ValueError(f'OccupancyGrid of {data.size} cells for {width}x{height} at '
                             f'resolution {info.resolution}')
        position = info.origin.position
        return cls(data.reshape(height, width), float(info.resolution), float(position.x),
                   float(position.y), str(msg.header.frame_id).lstrip('/'))

    def costs_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """(N,) float32 truth cost of the cells holding (x, y) (N,); NaN outside or -1."""
        col = np.floor((x - self.origin_x) / self.resolution)
        row = np.floor((y - self.origin_y) / self.resolution)
        rows, cols = self.data.shape
        inside = (col >= 0) & (col < cols) & (row >= 0) & (row < rows)
        values = self.data[np.where(inside, row, 0).astype(np.intp),
                           np.where(inside, col, 0).astype(np.intp)].astype(np.float32)
        return np.where(inside & (values >= 0), values / np.float32(100.0),
                        np.float32(np.nan)).astype(np.float32)

    @property
    def extent(self) -> tuple[float, float, float, float]:
        rows, cols = self.data.shape
        return (self.origin_x, self.origin_x + cols * self.resolution, self.origin_y,
                self.origin_y + rows * self.resolution)


def known_cells(occupancy: Occupancy, max_cost: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The known cells of a grid output: lattice indices i, j (N,) int64 (cell (i, j) spans
    [i, i + 1) x [j, j + 1) resolutions) and fused costs value / 100 * max_cost (N,)."""
    info = occupancy.info
    rows, cols = np.nonzero(occupancy.data >= 0)
    i = cols.astype(np.int64) + round(info.origin_x / info.resolution)
    j = rows.astype(np.int64) + round(info.origin_y / info.resolution)
    values = occupancy.data[rows, cols].astype(np.float32) * np.float32(max_cost / 100.0)
    return i, j, values


class ObservedCells(NamedTuple):
    """The cells of a grid output that a frame's points observed (observed_cells)."""

    i: np.ndarray  # K int64: lattice indices of the cells, each cell once
    j: np.ndarray  # K int64
    fused: np.ndarray  # K float32: their fused costs value / 100 * max_cost
    points: np.ndarray  # M, 5: the points in them (x y z cost confidence)
    cell: np.ndarray  # M intp: the cell (0..K-1) of each of those points


def observed_cells(occupancy: Occupancy, points: np.ndarray, max_cost: float
                   ) -> ObservedCells:
    """The known cells of a grid output that hold at least one of `points` (N, 5: x y z cost
    confidence in the grid frame, those a frame fused) with a finite cost and a confidence > 0,
    with their fused costs as known_cells gives them and the points in each."""
    info = occupancy.info
    values = occupancy.data.reshape(-1)
    fused = points[np.isfinite(points[:, 3]) & (points[:, 4] > 0)]  # what the grid fused
    i0, j0 = round(info.origin_x / info.resolution), round(info.origin_y / info.resolution)
    col = np.floor(fused[:, 0] / info.resolution).astype(np.int64) - i0
    row = np.floor(fused[:, 1] / info.resolution).astype(np.int64) - j0
    inside = (col >= 0) & (col < info.width) & (row >= 0) & (row < info.height)
    flat = np.where(inside, row * info.width + col, 0)
    known = inside & (values[flat] >= 0)
    cells, cell = np.unique(flat[known], return_inverse=True)  # K cells; M points -> cell
    row, col = np.divmod(cells, info.width)
    cost = values[cells].astype(np.float32) * np.float32(max_cost / 100.0)
    return ObservedCells(col + i0, row + j0, cost, fused[known], cell.reshape(-1))


class BevScorer:
    """The grid outputs of a run against a TruthGrid (module docstring, "BEV score"): four
    BevErrors, summed over the grids of the run (`observed`, `frame`, `window`, `image`), and
    the CellMosaic of every cell ever known (coverage)."""

    def __init__(self, resolution: float, truth: TruthGrid | None = None,
                 threshold: float = HIGH_COST) -> None:
        self.truth = truth
        self.observed = BevError(threshold)
        self.frame = BevError(threshold)
        self.window = BevError(threshold)
        self.image = BevError(threshold)
        self.mosaic = CellMosaic(resolution)
        self.grids = 0

    def add(self, occupancy: Occupancy, max_cost: float, points: np.ndarray | None = None
            ) -> None:
        """One grid output, after the frame whose `points` (N, 5: x y z cost confidence in
        the grid frame; None: not known) were fused into it."""
        i, j, fused = known_cells(occupancy, max_cost)
        self.grids += 1
        self.mosaic.add(i, j, fused)
        truth = self.truth
        if truth is None:
            return
        res = occupancy.info.resolution
        self.window.add(fused, truth.costs_at((i + 0.5) * res, (j + 0.5) * res))
        if points is None:
            return
        seen = observed_cells(occupancy, points, max_cost)
        self.observed.add(seen.fused, truth.costs_at((seen.i + 0.5) * res,
                                                     (seen.j + 0.5) * res))
        kept = np.isfinite(points[:, 3]) & (points[:, 4] > 0)
        self.image.add(points[kept, 3], truth.costs_at(points[kept, 0], points[kept, 1]))
        # the frame alone on the same cells: its points' cost and truth averaged per cell
        point_truth = truth.costs_at(seen.points[:, 0], seen.points[:, 1])
        has = np.isfinite(point_truth)
        cell, size = seen.cell[has], len(seen.fused)
        count = np.bincount(cell, minlength=size)
        scored = count > 0
        self.frame.add(np.bincount(cell, seen.points[has, 3], size)[scored] / count[scored],
                       np.bincount(cell, point_truth[has], size)[scored] / count[scored])

    def summary(self) -> dict[str, Any]:
        """report.json's `bev`: coverage, and the scores when there is a truth (module
        docstring): the observed cells' keys plain, the others' prefixed."""
        out: dict[str, Any] = {'grids': self.grids, 'coverage_m2': self.mosaic.area_m2,
                               'resolution_m': self.mosaic.resolution}
        if self.truth is None:
            return out
        out.update(self.observed.summary())
        for prefix, error in (('frame', self.frame), ('window', self.window),
                              ('image', self.image)):
            for key, value in error.summary().items():
                if key not in ('threshold', 'frames'):
                    out[f'{prefix}_{key}'] = value
        out['image_points'] = out.pop('image_cells')
        for key in ('frame_cells', 'frame_cells_without_truth', 'image_cells_without_truth'):
            del out[key]  # frame: ~ the observed cells; the points off the map are few
        return out


class BevPlot(NamedTuple):
    """What bev.png shows (report.write_bev)."""

    final: np.ndarray | None  # rows, cols float32 cost of the last grid, NaN unknown
    final_extent: tuple[float, float, float, float]  # x0, x1, y0, y1 (m)
    mosaic: np.ndarray | None  # the last value of every cell ever known, NaN never
    mosaic_extent: tuple[float, float, float, float]
    truth: TruthGrid | None
    path: np.ndarray  # N, 2 odometry x, y
    max_cost: float
    frame_id: str
    title: str
    robot: tuple[float, float] | None = None  # x, y (m) at the last grid's frame


# --- the replay side ------------------------------------------------------------------------


class _Pending(NamedTuple):
    stamp_ns: int
    cost: np.ndarray
    confidence: np.ndarray | None
    frame_id: str


class WorldReplay:
    """The grid and cloud side of one replay (module docstring)."""

    def __init__(self, setup: WorldSetup, outputs: bagio.OutputBag | None) -> None:
        self.setup, self.outputs = setup, outputs
        self.config = setup.config
        self.topics = setup.topics
        self.T_base_optical = None if setup.camera_pose is None else camera_pose_to_optical(
            *setup.camera_pose)
        self.edges: dict[str, tuple[str, np.ndarray]] = {}
        self.poses = PoseHistory(max_age_s=POSE_AGE_S)
        self.projector: WorldProjector | None = None
        self.camera: CameraModel | None = None
        self.cameras = ros_io.CameraCache()
        self.camera_frame = ''
        self.odom_frame = 'odom'
        self.needs_pose = bool(setup.grid) or self.config.cloud_frame == 'odom'
        self.pending: deque[_Pending] = deque()
        self.counters: Counter[str] = Counter()
        self.error = ''  # the last frame that could not be placed, and why
        self.latency_ms: list[float] = []
        self.cloud_points: list[int] = []
        self.truth: TruthGrid | None = None
        self.scorer = BevScorer(self.config.grid_resolution_m)
        self.last_grid: tuple[np.ndarray, Any] | None = None  # (data copy, GridInfo)
        self.last_robot: tuple[float, float] | None = None  # x, y at the last grid's frame
        self.path: list[tuple[float, float]] = []
        self.last_written_ns: int | None = None  # stamp of the last cost_grid written

    # --- inputs ----------------------------------------------------------------------------

    def message(self, topic: str, msg: Any, log_ns: int) -> None:
        """An odometry, camera_info, static transforms or ground-truth grid message; places
        the frames that waited for it."""
        self._message(topic, msg)
        if self.pending:
            self._drain(log_ns)

    def _message(self, topic: str, msg: Any) -> None:
        s = self.setup
        if topic == s.tf_static_topic:
            add_static_transforms(msg, self.edges, self.counters)
        elif topic == s.camera_info_topic:
            self._camera_info(msg)
        elif topic == s.odom_topic:
            self._odometry(msg)
        elif topic == s.truth_topic:
            try:
                truth = TruthGrid.from_message(msg)
            except ValueError as err:
                self.counters['invalid_truth_grid'] += 1
                self.error = f'ground-truth grid: {err}'
                return
            self.truth = self.scorer.truth = truth

    def _camera_info(self, msg: Any) -> None:
        try:
            camera = self.cameras.update(msg)
        except GeometryError as err:
            self.counters['invalid_camera_info'] += 1
            self.error = f'camera_info: {err}'
            return
        if camera is self.camera:
            return
        self.camera = camera
        self.camera_frame = msg.header.frame_id.lstrip('/')
        if self.projector is not None:
            self.projector.set_camera(self.camera)

    def _odometry(self, msg: Any) -> None:
        try:
            sample = ros_io.odometry_sample(msg)
        except GeometryError:
            self.counters['invalid_odometry'] += 1
            return
        self.odom_frame = sample.frame_id.lstrip('/') or self.odom_frame
        if self.poses.add(sample.stamp_ns, sample.T_odom_base):
            x, y = float(sample.T_odom_base[0, 3]), float(sample.T_odom_base[1, 3])
            if not self.path or math.hypot(x - self.path[-1][0],
                                           y - self.path[-1][1]) >= PATH_STEP_M:
                self.path.append((x, y))

    def frame(self, stamp_ns: int, cost: np.ndarray, confidence: np.ndarray | None,
              frame_id: str, log_ns: int) -> None:
        """A replayed frame's cost and confidence (H, W, the camera's size): placed now, or
        once odometry at or after its stamp has come (module docstring)."""
        self.pending.append(_Pending(stamp_ns, cost, confidence, frame_id))
        self._drain(log_ns)

    def finish(self, log_ns: int) -> None:
        """The bag has ended: place the frames still waiting for odometry."""
        self._drain(log_ns, final=True)
        if self.counters['no_pose'] or self.error:
            _logger.warning('cost grid/cloud: %s%s', ', '.join(
                f'{k} {v}' for k, v in sorted(self.counters.items())),
                f'; last error: {self.error}' if self.error else '')

    def _drain(self, log_ns: int, final: bool = False) -> None:
        """Place the waiting frames that can be: with their camera, extrinsics and (when
        needed) odometry at or after their stamp, or after waiting WAIT_S, or at the end."""
        while self.pending:
            first = self.pending[0]
            span = self.poses.span_ns
            ready = (self._projector(first.frame_id, count=False) is not None
                     and (not self.needs_pose or (span is not None and
                                                  span[1] >= first.stamp_ns)))
            if not (ready or final
                    or self.pending[-1].stamp_ns - first.stamp_ns > WAIT_S * 1e9):
                return
            self.pending.popleft()
            self._place(first, log_ns)

    # --- placing a frame ---------------------------------------------------------------------

    def _projector(self, frame_id: str, count: bool = True) -> WorldProjector | None:
        """The projector, made once the camera and the extrinsics are known; None before
        (counted with `count`)."""
        if self.projector is not None:
            return self.projector
        if self.camera is None:
            if count:
                self.counters['before_camera_info'] += 1
            return None
        if self.T_base_optical is None:
            self.T_base_optical = chain_static(self.edges, self.setup.base_frame,
                                               self.camera_frame or frame_id.lstrip('/'))
        if self.T_base_optical is None:
            if count:
                self.counters['before_extrinsics'] += 1
            return None
        self.projector = WorldProjector(self.config, self.T_base_optical,
                                        grid_frame=self.odom_frame, max_pose_age_s=POSE_AGE_S)
        self.projector.poses = self.poses  # the odometry received so far
        self.projector.set_camera(self.camera)
        return self.projector

    def _place(self, frame: _Pending, log_ns: int) -> None:
        projector = self._projector(frame.frame_id)
        if projector is None:
            return
        start = time.perf_counter()
        confidence = frame.confidence if frame.confidence is not None else np.ones_like(
            frame.cost)
        try:
            placed = projector.process(frame.stamp_ns, frame.cost, confidence,
                                       want_cloud=self.setup.cloud,
                                       want_grid=bool(self.setup.grid))
        except ValueError as err:  # CloudError, GridError: a size that differs, ...
            self.counters['frame_error'] += 1
            self.error = str(err)
            return
        self.counters['frames'] += 1
        if placed.cloud is not None:
            self.cloud_points.append(placed.cloud.layout.width)
            if self.outputs is not None:
                self.outputs.write_cloud(log_ns, CLOUD_TOPIC, placed.cloud, frame.stamp_ns,
                                         self._cloud_frame(frame.frame_id))
        if self.setup.grid and placed.T_odom_base is not None:
            occupancy = projector.occupancy(frame.stamp_ns)
            info = occupancy.info
            if self.outputs is not None and self._grid_due(frame.stamp_ns):
                self.last_written_ns = frame.stamp_ns
                self.outputs.write_grid(log_ns, GRID_TOPIC, occupancy.data, info.resolution,
                                        (info.origin_x, info.origin_y), frame.stamp_ns,
                                        info.frame_id)
                self.counters['grid_messages'] += 1
            if self.truth is not None and self.truth.frame_id != info.frame_id:
                self.counters['truth_in_another_frame'] += 1
                self.scorer.truth = None
            self.scorer.add(occupancy, self.config.max_cost, None if placed.grid_cloud is None
                            else placed.grid_cloud.points)
            self.scorer.truth = self.truth
            self.last_grid = (occupancy.data.copy(), info)
            self.last_robot = (float(placed.T_odom_base[0, 3]), float(placed.T_odom_base[1, 3]))
        self.latency_ms.append((time.perf_counter() - start) * 1e3)

    def _grid_due(self, stamp_ns: int) -> bool:
        """Whether to write this frame's grid: every frame at rate 0, else when 1 / rate (less
        1 ms) has passed since the last one written (sensor time)."""
        rate = self.setup.grid_rate_hz
        return (not rate or self.last_written_ns is None
                or stamp_ns - self.last_written_ns >= 1e9 / rate - 1e6)

    def _cloud_frame(self, frame_id: str) -> str:
        frame = self.config.cloud_frame
        if frame == 'optical':
            return frame_id or self.camera_frame
        return self.setup.base_frame if frame == 'base' else self.odom_frame

    # --- numbers ---------------------------------------------------------------------------

    def summary(self) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """report.json's `world` (what was made, counters, settings) and `bev` (None without
        the grid)."""
        counters = dict(self.counters)
        if self.projector is not None:
            counters.update({f'projector.{k}': int(v)
                             for k, v in self.projector.counters.items()})
            counters.update({f'grid.{k}': int(v) for k, v in
                             self.projector.grid.counters._asdict().items()})
            counters.update({f'poses.{k}': int(v) for k, v in self.poses.counters.items()})
        world = {
            'grid': bool(self.setup.grid), 'cloud': self.setup.cloud,
            'grid_rate_hz': self.setup.grid_rate_hz,
            'extrinsics': 'camera_pose' if self.setup.camera_pose is not None else 'tf_static',
            'grid_frame': self.odom_frame, 'frames': int(self.counters['frames']),
            'grid_messages': int(self.counters['grid_messages']),
            'cloud_messages': len(self.cloud_points),
            'cloud_points': percentiles(self.cloud_points),
            'latency_ms': percentiles(self.latency_ms),
            'counters': counters, 'error': self.error,
            'config': asdict(self.config),
        }
        if not self.setup.grid:
            return world, None
        bev = {**self.scorer.summary(),
               'ground_truth_topic': self.setup.truth_topic if self.truth is not None else None}
        return world, bev

    def plot(self, name: str = '') -> BevPlot | None:
        """What bev.png shows, titled `name` (the bag) and the score; None without a grid."""
        if self.last_grid is None:
            return None
        bev = self.scorer.summary()
        title = (f"{name}: {bev['coverage_m2']:.0f} m^2 observed, " + (
            f"BEV cost MAE {bev['cost_mae']:.3f} (observed cells; whole window "
            f"{bev['window_cost_mae']:.3f}), high-cost recall {bev['high_cost_recall']:.2f}"
            if 'cost_mae' in bev else 'no ground truth'))
        data, info = self.last_grid
        final = np.where(data >= 0, data.astype(np.float32) * np.float32(
            self.config.max_cost / 100.0), np.float32(np.nan))
        extent = (info.origin_x, info.origin_x + info.width * info.resolution, info.origin_y,
                  info.origin_y + info.height * info.resolution)
        mosaic = self.scorer.mosaic.image()
        return BevPlot(final, extent, None if mosaic is None else mosaic[0],
                       extent if mosaic is None else mosaic[1], self.truth,
                       np.array(self.path, dtype=np.float64).reshape(-1, 2),
                       self.config.max_cost, info.frame_id, title, self.last_robot)


__all__ = ['BevPlot', 'BevScorer', 'TruthGrid', 'WorldOptionError', 'WorldReplay',
           'WorldSetup', 'add_options', 'known_cells', 'observed_cells', 'ObservedCells',
           'open_world',
           'setup_from_args']
