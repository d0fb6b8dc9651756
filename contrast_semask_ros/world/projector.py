"""Cost in the robot's world (ROS-free): each frame's cost image -> a cost cloud and the rolling
cost grid. The cost node and replay both run this.

    projector = WorldProjector(WorldConfig(), T_base_optical)
    projector.set_camera(CameraModel.from_camera_info(msg))    # camera_info
    projector.add_odometry(stamp_ns, T_odom_base)               # nav_msgs/Odometry
    out = projector.process(stamp_ns, cost, confidence, want_cloud=True, want_grid=True)
    out.cloud                                                   # CostCloud in the cloud frame
    projector.occupancy(now_ns)                                 # the grid, OccupancyGrid order

Geometry (docs/SUPERVISION.md sections 1-3): the sampled pixels' rays meet the ground plane
z = ground_offset of the base frame (cloud.CostCloudBuilder.from_ground with T_base_optical),
or come from an aligned depth image. The cloud is expressed in the camera optical frame
(`cloud_frame` '' or the image's frame id) or, with the base pose at the frame's stamp, in
`base`/`odom` coordinates. The grid needs the base pose at the frame's stamp in the grid frame
(odom, REP 105): interpolated from odometry (supervision.labeller.PoseHistory); without one the
frame adds nothing to the grid (counted, `no_pose`), and the cloud in the optical or base frame
is still made.

Grid (world/grid.py): a window of grid_size_m around the robot, re-centred as it moves, cells
fusing observations weighted by confidence and range, older evidence decaying (newer wins),
cells unseen for grid_decay_s unknown again.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from contrast_semask_ros.supervision.geometry import CameraModel, check_pose
from contrast_semask_ros.supervision.labeller import PoseHistory
from contrast_semask_ros.world.cloud import CostCloud, CostCloudBuilder
from contrast_semask_ros.world.grid import GridParams, Occupancy, RollingCostGrid

CLOUD_FRAMES = ('optical', 'base', 'odom')


@dataclass(frozen=True)
class WorldConfig:
    """The settings of the cloud and the grid (the cost node's `world` parameters)."""

    cloud_frame: str = 'optical'  # optical | base | odom
    cloud_stride: int = 4  # every stride-th pixel
    cloud_max_range_m: float = 20.0  # points farther from the camera are dropped
    cloud_keep_unknown: bool = False  # keep unknown-cost points with cost NaN
    ground_offset: float = 0.0  # ground height in the base frame (m)
    grid_size_m: float = 20.0
    grid_resolution_m: float = 0.1
    grid_decay_s: float = 10.0  # a cell unseen this long is unknown again
    grid_tau_s: float = 1.0  # older evidence decays with this time constant
    grid_range_scale_m: float = 5.0  # observation weight 1 / (1 + (range / scale)^2)
    max_cost: float = 1.0  # cost mapped to occupancy 100

    def __post_init__(self) -> None:
        if self.cloud_frame not in CLOUD_FRAMES:
            raise ValueError(f'cloud_frame must be one of {", ".join(CLOUD_FRAMES)}, got '
                             f'{self.cloud_frame!r}')

    def grid_params(self, frame_id: str) -> GridParams:
        return GridParams(size_m=self.grid_size_m, resolution_m=self.grid_resolution_m,
                          tau_s=self.grid_tau_s, decay_s=self.grid_decay_s,
                          range_scale_m=self.grid_range_scale_m, max_cost=self.max_cost,
                          frame_id=frame_id)


class WorldFrame(NamedTuple):
    cloud: CostCloud | None  # in the cloud frame; None when not asked or not possible
    grid_points: int  # points fused into the grid (0: not asked, or no pose)
    T_odom_base: np.ndarray | None  # 4, 4 at the frame's stamp; None when unknown
    grid_cloud: CostCloud | None = None  # the points fused into the grid, in odom


class WorldProjector:
    """Cost images -> cost cloud and rolling cost grid (module docstring). T_base_optical
    (4, 4): the camera optical frame in the base frame."""

    def __init__(self, config: WorldConfig, T_base_optical: Any, grid_frame: str = 'odom',
                 max_pose_age_s: float = 10.0) -> None:
        self.config = config
        self.T_base_optical = check_pose(T_base_optical, 'T_base_optical').copy()
        self.builder = CostCloudBuilder(config.cloud_stride, config.cloud_max_range_m,
                                        config.cloud_keep_unknown)
        self.grid_builder = CostCloudBuilder(config.cloud_stride, config.cloud_max_range_m,
                                             keep_unknown=False)
        self.grid = RollingCostGrid(config.grid_params(grid_frame))
        self.poses = PoseHistory(max_age_s=max_pose_age_s)
        self.camera: CameraModel | None = None
        self.counters: Counter[str] = Counter()

    def set_camera(self, camera: CameraModel) -> None:
        """The camera's intrinsics (its camera_info); the cost images are at its size."""
        self.camera = camera

    def add_odometry(self, stamp_ns: int, T_odom_base: Any) -> bool:
        return self.poses.add(stamp_ns, T_odom_base)

    def process(self, stamp_ns: int, cost: np.ndarray, confidence: np.ndarray,
                want_cloud: bool, want_grid: bool, depth: tuple[Any, CameraModel] | None = None
                ) -> WorldFrame:
        """One frame's cost and confidence (H, W, the camera's size): the cloud (want_cloud)
        and the grid update (want_grid). depth = (depth image, its camera) replaces the
        ground plane for the cloud. ValueError when there is no camera yet or the sizes
        differ (the caller counts and logs)."""
        camera = self.camera
        if camera is None:
            raise ValueError('no camera_info yet: the cloud and the grid need the intrinsics')
        if cost.shape != (camera.height, camera.width):
            raise ValueError(f'cost image {cost.shape[1]}x{cost.shape[0]} but camera_info '
                             f'{camera.width}x{camera.height}: publish camera_info for the '
                             'image the cost node receives')
        T_odom_base = self.poses.at(stamp_ns)
        cloud = None
        if want_cloud:
            cloud = self._cloud(cost, confidence, camera, T_odom_base, depth)
        fused, grid_cloud = 0, None
        if want_grid:
            if T_odom_base is None:
                self.counters['no_pose'] += 1
            else:
                fused, grid_cloud = self._fuse(stamp_ns, cost, confidence, camera,
                                               T_odom_base)
        return WorldFrame(cloud, fused, T_odom_base, grid_cloud)

    def _cloud(self, cost: np.ndarray, confidence: np.ndarray, camera: CameraModel,
               T_odom_base: np.ndarray | None, depth: tuple[Any, CameraModel] | None
               ) -> CostCloud | None:
        frame = self.config.cloud_frame
        if frame == 'optical':
            T_cloud_optical = None
        elif frame == 'base':
            T_cloud_optical = self.T_base_optical
        elif T_odom_base is None:
            self.counters['cloud_no_pose'] += 1
            return None
        else:
            T_cloud_optical = T_odom_base @ self.T_base_optical
        if depth is not None:
            return self.builder.from_depth(depth[0], depth[1], cost, confidence,
                                           T_cloud_optical=T_cloud_optical)
        return self.builder.from_ground(cost, confidence, camera, self.T_base_optical,
                                        ground_z=self.config.ground_offset,
                                        T_cloud_optical=T_cloud_optical)

    def _fuse(self, stamp_ns: int, cost: np.ndarray, confidence: np.ndarray,
              camera: CameraModel, T_odom_base: np.ndarray) -> tuple[int, CostCloud]:
        T_odom_optical = T_odom_base @ self.T_base_optical
        cloud = self.grid_builder.from_ground(cost, confidence, camera, self.T_base_optical,
                                              ground_z=self.config.ground_offset,
                                              T_cloud_optical=T_odom_optical)
        points = cloud.points  # N, 5: x y z cost confidence in odom
        self.grid.follow(float(T_odom_base[0, 3]), float(T_odom_base[1, 3]))
        result = self.grid.add(int(stamp_ns), points[:, :2], points[:, 3], points[:, 4],
                               cloud.range_m)
        return result.fused, cloud

    def occupancy(self, now_ns: int) -> Occupancy:
        """The grid now: int8 (rows, cols), 0-100 or -1, and its GridInfo."""
        return self.grid.to_occupancy(int(now_ns))

    @property
    def memory_bytes(self) -> int:
        """Bytes the grid holds (bounded by its size; README)."""
        return int(self.grid.nbytes)


__all__ = ['CLOUD_FRAMES', 'WorldConfig', 'WorldFrame', 'WorldProjector']
