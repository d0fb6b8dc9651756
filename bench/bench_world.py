#!/usr/bin/env python3
"""CPU time per frame of the cost node's world outputs (contrast_semask_ros/world/).

Section `cloud`: CostCloudBuilder on a 544x1024 cost image (10 % unknown pixels) from a camera
1 m up, pitched down 0.35 rad, 90 degrees horizontal field of view with mild plumb_bob
distortion, max_range_m 20:

- ground / base_link, fixed pose: the node's usual case (rays and ground points cached);
- ground / odom, moving: the cloud in odom with the robot moving every frame (the cached
  ground points are moved to the new frame each time);
- depth 16UC1 and 32FC1: an aligned depth image of the ground plane, optical frame;
- depth / odom, moving: 32FC1 with the cloud frame changing every frame.

The first frame of a camera (undistorting its rays) is reported separately.

Section `node`: the cost node's own per-frame path for both outputs, WorldProjector.process
(the published cloud in the optical frame, and the grid update: the cloud in odom fused into
the 20 m x 0.1 m rolling grid) plus the grid's occupancy image, with the robot moving 0.1 m
per frame; `grid` alone: grid.bench_grid (35,000 points per frame).
    PYTHONPATH=. .venv/bin/python bench/bench_world.py --section cloud node grid
Prints markdown rows with the hardware; copy them to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np

from contrast_semask_ros.supervision.geometry import (
    PLUMB_BOB,
    CameraModel,
    camera_pose_to_optical,
    intersect_ground,
    pose_from_xyz_rpy,
)
from contrast_semask_ros.world.cloud import CostCloud, CostCloudBuilder

_logger = logging.getLogger('bench_world')


def hardware() -> str:
    """The CPU model (lscpu, else platform) and core count."""
    model = ''
    try:
        out = subprocess.run(['lscpu'], capture_output=True, text=True, timeout=10).stdout
        model = next((line.split(':', 1)[1].strip() for line in out.splitlines()
                      if line.startswith('Model name')), '')
    except (OSError, subprocess.SubprocessError):
        pass
    model = model or platform.processor() or platform.machine()
    return f'{model}, {os.cpu_count()} cores, Python {platform.python_version()}, ' \
           f'numpy {np.__version__}'


def _camera(height: int, width: int) -> CameraModel:
    f = width / 2  # 90 degrees horizontal field of view
    K = np.array([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])
    return CameraModel(width, height, K, np.array([-0.05, 0.01, 0.0, 0.0, 0.0]), PLUMB_BOB)


def _plane_depth(camera: CameraModel, T_base_optical: np.ndarray) -> np.ndarray:
    """(H, W) float32 z-depth of the ground plane base z = 0; 0 where the ray misses it."""
    v, u = np.mgrid[0:camera.height, 0:camera.width]
    rays = camera.pixel_rays(np.column_stack([u.ravel(), v.ravel()]).astype(float))  # N, 3
    hits = intersect_ground(rays, T_base_optical, 0.0, max_range=60.0)
    t = np.linalg.norm(hits.points - T_base_optical[:3, 3], axis=1)  # N
    depth = np.where(hits.valid, t * rays[:, 2], 0.0)
    return depth.reshape(camera.height, camera.width).astype(np.float32)


def _odom_pose(frame: int, T_base_optical: np.ndarray) -> np.ndarray:
    """T_odom_optical of a robot driving at 1.5 m/s, 15 frames/s, on a gentle curve."""
    t = frame / 15.0
    T_odom_base = pose_from_xyz_rpy((1.5 * t, 0.1 * t * t, 0.0), (0.0, 0.0, 0.05 * t))
    return T_odom_base @ T_base_optical


def _time(build: Callable[[int], CostCloud], frames: int, warmup: int = 3
          ) -> tuple[float, float, int]:
    """Median and p95 ms per frame, and the last cloud's width."""
    times, width = [], 0
    for frame in range(warmup + frames):
        start = time.perf_counter()
        cloud = build(frame)
        elapsed = time.perf_counter() - start
        if frame >= warmup:
            times.append(elapsed * 1e3)
            width = cloud.layout.width
    return float(np.median(times)), float(np.percentile(times, 95)), width


def bench_cloud(height: int, width: int, stride: int, frames: int, seed: int = 0
                ) -> list[tuple[str, float, float, int]]:
    """(case, median ms, p95 ms, points) per case of the module docstring."""
    rng = np.random.default_rng(seed)
    camera = _camera(height, width)
    T_base_optical = camera_pose_to_optical(0.3, 0.0, 1.0, 0.0, 0.35, 0.0)
    cost = rng.uniform(0.0, 1.0, (height, width)).astype(np.float32)
    cost[rng.random((height, width)) < 0.1] = np.nan
    confidence = rng.uniform(-1.0, 1.0, (height, width)).astype(np.float32)
    depth_m = _plane_depth(camera, T_base_optical)
    odom = [_odom_pose(k, T_base_optical) for k in range(frames + 3)]  # T_odom_optical
    depth_mm = np.round(depth_m * 1000.0).astype(np.uint16)

    def fresh() -> CostCloudBuilder:
        return CostCloudBuilder(stride=stride, max_range_m=20.0)

    start = time.perf_counter()
    fresh().from_ground(cost, confidence, camera, T_base_optical,
                        T_cloud_optical=T_base_optical)
    first_ground = (time.perf_counter() - start) * 1e3

    rows = []
    builder = fresh()
    rows.append(('ground, base_link, fixed pose', *_time(
        lambda _: builder.from_ground(cost, confidence, camera, T_base_optical,
                                      T_cloud_optical=T_base_optical), frames)))
    builder = fresh()
    rows.append(('ground, odom, moving', *_time(
        lambda k: builder.from_ground(cost, confidence, camera, T_base_optical,
                                      T_cloud_optical=odom[k]), frames)))
    builder = fresh()
    rows.append(('depth 16UC1, optical frame', *_time(
        lambda _: builder.from_depth(depth_mm, camera, cost, confidence, '16UC1'), frames)))
    builder = fresh()
    rows.append(('depth 32FC1, optical frame', *_time(
        lambda _: builder.from_depth(depth_m, camera, cost, confidence, '32FC1'), frames)))
    builder = fresh()
    rows.append(('depth 32FC1, odom, moving', *_time(
        lambda k: builder.from_depth(depth_m, camera, cost, confidence, '32FC1',
                                     T_cloud_optical=odom[k]), frames)))
    rows.append(('first frame of a camera (rays), ground', first_ground, math.nan, 0))
    return rows


def bench_node(height: int, width: int, stride: int, frames: int, seed: int = 0
               ) -> tuple[float, float, int, int]:
    """WorldProjector.process(cloud and grid) + occupancy per frame: median ms, p95 ms, cloud
    points of the last frame, grid bytes."""
    from contrast_semask_ros.world.projector import WorldConfig, WorldProjector

    rng = np.random.default_rng(seed)
    camera = _camera(height, width)
    T_base_optical = camera_pose_to_optical(0.3, 0.0, 1.0, 0.0, 0.35, 0.0)
    cost = rng.uniform(0.0, 1.0, (height, width)).astype(np.float32)
    cost[rng.random((height, width)) < 0.1] = np.nan
    confidence = rng.uniform(0.0, 1.0, (height, width)).astype(np.float32)
    projector = WorldProjector(WorldConfig(cloud_stride=stride), T_base_optical)
    projector.set_camera(camera)
    ns = 100_000_000  # 10 Hz
    for k in range(frames + 10):
        projector.add_odometry(k * ns, pose_from_xyz_rpy((0.1 * k, 0.0, 0.0), (0, 0, 0.01 * k)))
    times = []
    out = None
    for k in range(frames + 5):
        start = time.perf_counter()
        out = projector.process(k * ns, cost, confidence, want_cloud=True, want_grid=True)
        projector.occupancy(k * ns)
        if k >= 5:
            times.append((time.perf_counter() - start) * 1e3)
    points = 0 if out is None or out.cloud is None else len(out.cloud.points)
    return (float(np.median(times)), float(np.percentile(times, 95)), points,
            projector.memory_bytes)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--section', nargs='+', default=['cloud', 'node', 'grid'],
                        choices=['cloud', 'node', 'grid'])
    parser.add_argument('--size', default='544x1024', help='cost image HxW')
    parser.add_argument('--stride', type=int, default=4)
    parser.add_argument('--frames', type=int, default=200)
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split('x'))
    command = 'PYTHONPATH=. .venv/bin/python bench/bench_world.py ' + shlex.join(sys.argv[1:])
    _logger.info('hardware: %s', hardware())
    _logger.info('command: %s', command.strip())
    if 'cloud' in args.section:
        _logger.info('| cloud case | image | stride | points | median ms | p95 ms | hardware |')
        _logger.info('|---|---|---|---|---|---|---|')
        for case, median, p95, points in bench_cloud(height, width, args.stride, args.frames):
            p95_text = '-' if math.isnan(p95) else f'{p95:.3f}'
            points_text = '-' if not points else str(points)
            _logger.info('| %s | %dx%d | %d | %s | %.3f | %s | %s |', case, height, width,
                         args.stride, points_text, median, p95_text, hardware())
    if 'node' in args.section:
        median, p95, points, nbytes = bench_node(height, width, args.stride, args.frames)
        _logger.info('| node path: cloud (optical) + grid update + occupancy | %dx%d | %d | '
                     '%d | %.3f | %.3f | grid %.2f MB |', height, width, args.stride, points,
                     median, p95, nbytes / 1e6)
    if 'grid' in args.section:
        from contrast_semask_ros.world.grid import bench_grid

        result = bench_grid(points=35000)
        _logger.info('| grid alone: add / to_occupancy (%d points) | - | - | %d | %.3f / %.3f '
                     '| - | %.2f MB |', result.points, result.points, result.add_ms,
                     result.occupancy_ms, result.nbytes / 1e6)


if __name__ == '__main__':
    main()
