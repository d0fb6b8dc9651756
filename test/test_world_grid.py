"""The rolling cost grid (contrast_semask_ros/world/grid.py): hand-made observations whose cells,
fused costs and OccupancyGrid values are worked out by hand, a window that moves under a dict
model of the world, and a per-observation reference of the fusion rule."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

from contrast_semask_ros.world.grid import (
    AddResult,
    GridError,
    GridInfo,
    GridParams,
    RollingCostGrid,
    Shift,
    bench_grid,
    stamp_seconds,
)


def make_grid(**params) -> RollingCostGrid:
    return RollingCostGrid(GridParams(**params))


def add_one(grid: RollingCostGrid, t: float, x: float, y: float, cost: float,
            confidence: float = 1.0, range_m: float = 0.0) -> AddResult:
    return grid.add(t, [[x, y]], [cost], [confidence], [range_m])


def known_cells(data: np.ndarray) -> dict[tuple[int, int], int]:
    """{(row, column): value} of the known elements of an occupancy array."""
    rows, cols = np.nonzero(data >= 0)
    return {(int(r), int(c)): int(data[r, c]) for r, c in zip(rows, cols, strict=True)}


# --- cells and the OccupancyGrid layout -----------------------------------------------------


def test_first_window_is_centred_on_the_origin_and_reported_as_occupancy_grid_info():
    grid = make_grid(size_m=2.0, resolution_m=0.5)  # 4 x 4 cells, lattice -2..1
    occupancy = grid.to_occupancy(0.0)
    assert occupancy.info == GridInfo('odom', 0.5, 4, 4, -1.0, -1.0)
    assert occupancy.data.shape == (4, 4) and occupancy.data.dtype == np.int8
    assert (occupancy.data == -1).all() and occupancy.known == 0
    assert not occupancy.data.flags.writeable


@pytest.mark.parametrize(('x', 'y', 'row', 'col'), [
    (0.25, 0.25, 2, 2),  # first cell of the positive quadrant
    (0.0, 0.0, 2, 2),  # a cell's lower-left corner belongs to it
    (-0.25, 0.25, 2, 1),  # x in [-0.5, 0): lattice i = -1
    (-0.75, -0.75, 0, 0),  # the lower-left cell of the window
    (-1.0, -1.0, 0, 0),  # the window's own corner
    (0.99, -0.01, 1, 3),  # row from y, column from x
    (-0.6, 0.9, 3, 0),
])
def test_a_single_observation_lands_in_its_cell(x, y, row, col):
    grid = make_grid(size_m=2.0, resolution_m=0.5, max_cost=100.0)
    result = add_one(grid, 0.0, x, y, 42.0)
    assert result == AddResult(1, 1, 0, 0, 0, 0, False)
    occupancy = grid.to_occupancy(0.0)
    assert known_cells(occupancy.data) == {(row, col): 42}
    assert occupancy.known == 1
    assert grid.cost_at(x, y, 0.0) == pytest.approx(42.0)


@pytest.mark.parametrize(('x', 'y'), [(1.0, 0.0), (0.0, 1.0), (-1.01, 0.0), (0.0, -1.5)])
def test_points_outside_the_window_are_dropped_and_counted(x, y):
    grid = make_grid(size_m=2.0, resolution_m=0.5)
    assert add_one(grid, 0.0, x, y, 0.5) == AddResult(0, 0, 0, 0, 1, 0, False)
    assert grid.to_occupancy(0.0).known == 0
    assert grid.counters.outside == 1
    assert math.isnan(grid.cost_at(x, y, 0.0))


def test_occupancy_element_r_c_is_the_cell_at_origin_plus_c_r_cells():
    """nav_msgs/OccupancyGrid: row-major, row along +y, column along +x from info.origin;
    checked for points all over a window that does not start at the origin."""
    rng = np.random.default_rng(3)
    grid = make_grid(size_m=3.0, resolution_m=0.25, max_cost=100.0, recenter_fraction=0.0)
    grid.follow(-7.3, 12.9)
    info = grid.info
    cells = rng.permutation(info.width * info.height)[:40]
    rows, cols = np.divmod(cells, info.width)
    inside = rng.uniform(0.05, 0.95, (40, 2))  # where in its cell each point is
    xy = np.stack([info.origin_x + (cols + inside[:, 0]) * info.resolution,
                   info.origin_y + (rows + inside[:, 1]) * info.resolution], 1)  # 40, 2
    cost = rng.integers(0, 101, 40).astype(np.float32)
    grid.add(1.0, xy, cost, np.ones(40), np.zeros(40))
    data = grid.to_occupancy(1.0).data
    assert known_cells(data) == {(int(r), int(c)): int(v)
                                 for r, c, v in zip(rows, cols, cost, strict=True)}


# --- fusion ---------------------------------------------------------------------------------


def test_fused_cost_is_the_weighted_mean_with_confidence_and_range_weights():
    grid = make_grid(size_m=2.0, resolution_m=0.5, range_scale_m=4.0)
    # w = 1 * 1 / (1 + 0) = 1; w = 0.5 / (1 + (4 / 4)^2) = 0.25; w = 1 / (1 + (2/4)^2) = 0.8
    grid.add(5.0, [[0.1, 0.1], [0.2, 0.3], [0.4, 0.4]], [0.2, 0.8, 0.5], [1.0, 0.5, 1.0],
             [0.0, 4.0, 2.0])
    expected = (1 * 0.2 + 0.25 * 0.8 + 0.8 * 0.5) / (1 + 0.25 + 0.8)
    assert grid.cost_at(0.3, 0.3, 5.0) == pytest.approx(expected, rel=1e-6)
    assert grid.to_occupancy(5.0).data[2, 2] == round(100 * expected)  # 39


def test_observations_at_the_same_stamp_fuse_alike_in_one_call_or_several():
    one_call, many_calls = make_grid(), make_grid()
    xy = [[1.01, 2.02], [1.03, 2.04], [1.05, 2.06]]
    one_call.add(3.0, xy, [0.1, 0.6, 0.9], [0.9, 0.4, 0.7], [1.0, 2.0, 3.0])
    for k in range(3):
        many_calls.add(3.0, [xy[k]], [[0.1, 0.6, 0.9][k]], [[0.9, 0.4, 0.7][k]],
                       [[1.0, 2.0, 3.0][k]])
    assert one_call.cost_at(1.0, 2.0, 3.0) == pytest.approx(many_calls.cost_at(1.0, 2.0, 3.0))


def test_confidence_is_clipped_to_zero_one():
    grid = make_grid(size_m=2.0, resolution_m=0.5)
    grid.add(0.0, [[0.1, 0.1], [0.2, 0.2]], [0.0, 1.0], [7.0, 1.0], [0.0, 0.0])  # 7 counts 1
    assert grid.cost_at(0.1, 0.1, 0.0) == pytest.approx(0.5)


def test_confidence_zero_contributes_nothing_and_does_not_refresh_the_cell():
    grid = make_grid(size_m=2.0, resolution_m=0.5, decay_s=2.0)
    add_one(grid, 0.0, 0.1, 0.1, 0.2)
    result = grid.add(1.5, [[0.1, 0.1], [0.3, 0.3]], [1.0, 1.0], [0.0, -0.5], [0.0, 0.0])
    assert result == AddResult(0, 0, 0, 0, 0, 2, False)
    assert grid.cost_at(0.1, 0.1, 1.5) == pytest.approx(0.2)
    assert grid.to_occupancy(1.5).known == 1
    assert grid.to_occupancy(2.5).known == 0  # stale 2.5 s after its only real observation
    assert grid.counters.zero_weight == 2


@pytest.mark.parametrize('age_in_tau', [0.0, 0.5, 1.0, 3.0])
def test_newer_evidence_wins_as_older_decays_exponentially(age_in_tau):
    tau = 0.8
    grid = make_grid(size_m=2.0, resolution_m=0.5, tau_s=tau, decay_s=100.0)
    add_one(grid, 10.0, 0.1, 0.1, 1.0)
    add_one(grid, 10.0 + age_in_tau * tau, 0.2, 0.2, 0.0)
    old = math.exp(-age_in_tau)  # the older observation's weight, relative to the newer one
    assert grid.cost_at(0.1, 0.1, 10.0) == pytest.approx(old / (old + 1.0), rel=1e-5)


def test_decay_applies_to_sums_at_each_fusion_of_the_cell():
    """Three observations of weight 1 at t = 0, 1, 2 with tau = 1: weights e^-2, e^-1, 1."""
    grid = make_grid(tau_s=1.0, decay_s=100.0)
    for t, cost in ((0.0, 0.9), (1.0, 0.3), (2.0, 0.6)):
        add_one(grid, t, 4.04, -3.03, cost)
    weights = np.exp([-2.0, -1.0, 0.0])
    expected = float(weights @ [0.9, 0.3, 0.6] / weights.sum())
    assert grid.cost_at(4.04, -3.03, 2.0) == pytest.approx(expected, rel=1e-5)


def test_cells_not_observed_for_decay_s_become_unknown():
    grid = make_grid(size_m=2.0, resolution_m=0.5, decay_s=3.0)
    add_one(grid, 10.0, 0.1, 0.1, 0.5)
    add_one(grid, 12.0, -0.9, -0.9, 0.5)
    assert grid.to_occupancy(12.9).known == 2
    assert grid.to_occupancy(13.0).known == 2  # exactly decay_s: still known
    later = grid.to_occupancy(13.5)
    assert known_cells(later.data) == {(0, 0): 50}
    assert math.isnan(grid.cost_at(0.1, 0.1, 13.5))
    assert grid.to_occupancy(15.5).known == 0


# --- the OccupancyGrid values ---------------------------------------------------------------


@pytest.mark.parametrize(('cost', 'value'), [
    (0.0, 0), (2.0, 100), (1.0, 50), (0.5, 25), (-0.5, 0), (7.0, 100), (0.009, 0),
    (0.011, 1), (1.99, 100), (1.97, 98), (1e35, 100), (-1e35, 0),
])
def test_value_is_100_times_cost_over_max_cost_rounded_and_clipped(cost, value):
    grid = make_grid(size_m=2.0, resolution_m=0.5, max_cost=2.0)
    add_one(grid, 0.0, 0.1, 0.1, cost)
    data = grid.to_occupancy(0.0).data
    assert data[2, 2] == value
    assert (np.delete(data.ravel(), 2 * 4 + 2) == -1).all()


def test_nan_costs_are_ignored_and_each_dropped_observation_counted_once():
    grid = make_grid(size_m=2.0, resolution_m=0.5)
    xy = [[0.1, 0.1], [0.1, 0.1], [0.1, 0.1], [5.0, 5.0], [math.nan, 0.1], [0.1, math.inf],
          [0.1, 0.1], [0.1, 0.1], [0.1, 0.1], [5.0, 5.0], [0.2, 0.2]]
    cost = [0.4, math.nan, math.inf, math.nan, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.8]
    confidence = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, math.nan, 1.0, 1.0, 1.0, 1.0]
    range_m = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0, math.nan, 0.0, 0.0]
    result = grid.add(0.0, xy, cost, confidence, range_m)
    # NaN/inf cost (3, one of them outside too), then invalid (x, y, confidence, range twice),
    # then outside (1): two fused, into one cell
    assert result == AddResult(2, 1, 3, 5, 1, 0, False)
    assert grid.cost_at(0.1, 0.1, 0.0) == pytest.approx(0.6)
    counters = grid.counters
    assert (counters.fused, counters.nan_cost, counters.invalid, counters.outside) == (2, 3, 5, 1)
    grid.add(1.0, [[0.1, 0.1]], [math.nan], [1.0], [0.0])
    assert grid.counters.nan_cost == 4


def test_inputs_are_not_modified():
    rng = np.random.default_rng(0)
    xy = rng.uniform(-12, 12, (500, 2))
    cost = rng.uniform(-1, 3, 500).astype(np.float32)
    cost[::7] = np.nan
    confidence = rng.uniform(-0.5, 1.5, 500).astype(np.float32)
    range_m = rng.uniform(0, 20, 500).astype(np.float32)
    copies = [a.copy() for a in (xy, cost, confidence, range_m)]
    make_grid().add(0.0, xy, cost, confidence, range_m)
    for before, after in zip(copies, (xy, cost, confidence, range_m), strict=True):
        np.testing.assert_array_equal(before, after)


# --- time -------------------------------------------------------------------------------------


def test_time_going_backwards_resets_the_grid():
    grid = make_grid(size_m=2.0, resolution_m=0.5, max_backstep_s=1.0)
    add_one(grid, 100.0, 0.1, 0.1, 0.5)
    result = add_one(grid, 50.0, -0.9, -0.9, 0.25)  # a bag loop
    assert result.reset
    assert grid.counters.resets == 1
    assert known_cells(grid.to_occupancy(50.0).data) == {(0, 0): 25}
    grid.to_occupancy(20.0)  # the clock of the output went back too
    assert grid.counters.resets == 2
    assert grid.to_occupancy(20.0).known == 0


def test_a_small_step_back_is_fused_as_simultaneous():
    grid = make_grid(size_m=2.0, resolution_m=0.5, tau_s=0.1, max_backstep_s=1.0, decay_s=1.0)
    add_one(grid, 10.0, 0.1, 0.1, 1.0)
    result = add_one(grid, 9.5, 0.1, 0.1, 0.0)  # e.g. a second camera's older frame
    assert not result.reset and grid.counters.resets == 0
    assert grid.cost_at(0.1, 0.1, 10.0) == pytest.approx(0.5)  # no weight above 1
    assert grid.to_occupancy(11.0).known == 1  # `last` stays 10.0


def test_stamps_are_float_seconds_or_int_nanoseconds():
    assert stamp_seconds(1_700_000_000_250_000_000) == pytest.approx(1_700_000_000.25, abs=1e-6)
    assert stamp_seconds(np.int64(5_000_000_000)) == 5.0
    assert stamp_seconds(np.float32(2.5)) == 2.5
    for bad in (True, math.nan, 'now', None):
        with pytest.raises(GridError, match='stamp'):
            stamp_seconds(bad)
    grid = make_grid(size_m=2.0, resolution_m=0.5, decay_s=1.0)
    add_one(grid, 1_700_000_000_000_000_000, 0.1, 0.1, 0.5)
    assert grid.to_occupancy(1_700_000_000.9).known == 1
    assert grid.to_occupancy(1_700_000_001_100_000_000).known == 0


# --- the moving window ------------------------------------------------------------------------


def test_follow_recentres_beyond_the_fraction_and_puts_the_robot_in_the_centre_cell():
    grid = make_grid(size_m=20.0, resolution_m=0.1, recenter_fraction=0.25)  # 5 m
    assert grid.follow(4.9, -4.9) == Shift(0, 0)
    assert grid.info.origin_x == pytest.approx(-10.0)
    assert grid.follow(5.06, 0.0) == Shift(50, 0)  # robot cell i = 50 -> window column 100
    info = grid.info
    assert (info.origin_x, info.origin_y) == pytest.approx((-5.0, -10.0))
    assert grid.follow(-7.25, 0.0) == Shift(-123, 0)  # 12.25 m from the centre; i = -73
    assert grid.info.origin_x == pytest.approx(-17.3)
    assert grid.counters.shifts == 2
    with pytest.raises(GridError, match='finite'):
        grid.follow(math.nan, 0.0)


def test_window_shifts_keep_cells_attached_to_the_world_and_drop_those_that_leave():
    """An 8 x 8 window moved around many times (wrapping the ring both ways), with a dict of
    world cell -> cost as the model: every output element must be its world cell's cost, and a
    cell that left the window must come back unknown."""
    rng = np.random.default_rng(7)
    res, n = 0.5, 8
    grid = make_grid(size_m=n * res, resolution_m=res, max_cost=100.0, recenter_fraction=0.0,
                     decay_s=math.inf)
    world: dict[tuple[int, int], int] = {}
    moves = [(0, 0), (3, -2), (5, 5), (-1, 0), (-7, 1), (0, -9), (2, 2), (12, -1), (1, 1),
             (-4, -6)] + [tuple(rng.integers(-5, 6, 2)) for _ in range(30)]
    robot = np.array([0.2, 0.2])
    for step, (di, dj) in enumerate(moves):
        robot += (di * res, dj * res)
        shift = grid.follow(*robot)
        info = grid.info
        i0, j0 = round(info.origin_x / res), round(info.origin_y / res)
        assert (i0, j0) == (math.floor(robot[0] / res) - n // 2,
                            math.floor(robot[1] / res) - n // 2)
        assert abs(shift.columns) == abs(di) and abs(shift.rows) == abs(dj)
        window = {(i, j) for i in range(i0, i0 + n) for j in range(j0, j0 + n)}
        world = {ij: v for ij, v in world.items() if ij in window}
        # observe a few cells that are unknown now (one observation each: value = cost)
        free = sorted(window - world.keys())
        for k in rng.permutation(len(free))[:10]:
            i, j = free[k]
            world[(i, j)] = int(rng.integers(0, 101))
            add_one(grid, 0.0, (i + 0.5) * res, (j + 0.5) * res, world[(i, j)])
        expected = {(j - j0, i - i0): v for (i, j), v in world.items()}
        assert known_cells(grid.to_occupancy(0.0).data) == expected, f'after move {step}'
        for (i, j), v in world.items():
            assert grid.cost_at((i + 0.5) * res, (j + 0.5) * res, 0.0) == v


def test_a_jump_of_a_whole_window_or_more_clears_everything():
    grid = make_grid(size_m=2.0, resolution_m=0.5, recenter_fraction=0.0)
    add_one(grid, 0.0, 0.1, 0.1, 0.5)
    assert grid.follow(2.1, 0.2) == Shift(4, 0)
    assert grid.to_occupancy(0.0).known == 0
    assert grid.follow(0.1, 0.2) == Shift(-4, 0)  # and back: the cell is gone
    assert grid.to_occupancy(0.0).known == 0


# --- against a per-observation reference ------------------------------------------------------


def reference_costs(frames, res: float, tau: float, scale: float) -> dict[tuple[int, int], float]:
    """The fusion rule of the module docstring, one observation at a time, in float64 (no
    window: all observations of these frames are inside it)."""
    sums: dict[tuple[int, int], list[float]] = {}
    for t, xy, cost, confidence, range_m in frames:
        seen: set[tuple[int, int]] = set()
        for (x, y), c, q, r in zip(xy, cost, confidence, range_m, strict=True):
            w = min(max(q, 0.0), 1.0) / (1.0 + (r / scale) ** 2)
            if not math.isfinite(c) or w <= 0:
                continue
            cell = (math.floor(x / res), math.floor(y / res))
            s = sums.setdefault(cell, [0.0, 0.0, -math.inf])
            if cell not in seen:  # decay once per frame, before adding its observations
                f = math.exp(-max(t - s[2], 0.0) / tau)
                s[0], s[1], s[2] = f * s[0], f * s[1], max(s[2], t)
                seen.add(cell)
            s[0] += w
            s[1] += w * c
    return {cell: s[1] / s[0] for cell, s in sums.items() if s[0] > 0}


def test_vectorised_fusion_matches_the_per_observation_reference():
    rng = np.random.default_rng(11)
    res, tau, scale = 0.25, 0.7, 3.0
    grid = make_grid(size_m=5.0, resolution_m=res, tau_s=tau, range_scale_m=scale,
                     decay_s=math.inf)
    frames = []
    for k in range(12):
        count = 400
        xy = rng.uniform(-2.5, 2.5, (count, 2)) * rng.uniform(0.2, 1.0)  # denser some frames
        cost = rng.uniform(0, 1, count)
        cost[rng.random(count) < 0.1] = np.nan
        confidence = rng.uniform(-0.2, 1.2, count)
        range_m = rng.uniform(0, 10, count)
        frames.append((0.3 * k, xy, cost, confidence, range_m))
        grid.add(0.3 * k, xy, cost, confidence, range_m)
    reference = reference_costs(frames, res, tau, scale)
    assert grid.to_occupancy(3.3).known == len(reference)
    for (i, j), expected in reference.items():
        got = grid.cost_at((i + 0.5) * res, (j + 0.5) * res, 3.3)
        assert got == pytest.approx(expected, rel=1e-4, abs=1e-6)


# --- memory, allocation, validation, speed ----------------------------------------------------


def test_memory_figures_of_the_docstring():
    grid = make_grid(size_m=20.0, resolution_m=0.1)
    assert grid.cells_per_side == 200
    assert grid.grid_nbytes == 200 * 200 * 24 + 17 == 960_017
    rng = np.random.default_rng(0)
    count = 35_000
    grid.add(0.0, rng.uniform(-9, 9, (count, 2)), rng.uniform(0, 1, count),
             np.ones(count), np.ones(count))
    assert grid.nbytes == 960_017 + 42 * count


def test_a_steady_frame_allocates_nothing_grid_sized():
    grid = make_grid(size_m=20.0, resolution_m=0.1)
    rng = np.random.default_rng(1)
    count = 35_000
    frames = [(rng.uniform(-3, 3, (count, 2)), rng.uniform(0, 1, count).astype(np.float32))
              for _ in range(3)]
    ones = np.ones(count, np.float32)
    grid.add(0.0, frames[0][0], frames[0][1], ones, ones)  # grows the per-observation arrays
    grid.to_occupancy(0.0)
    tracemalloc.start()
    try:
        for k, (xy, cost) in enumerate(frames[1:]):
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            grid.follow(0.1 * k, 0.0)
            grid.add(0.1 * (k + 1), xy, cost, ones, ones)
            grid.to_occupancy(0.1 * (k + 1))
            peak = tracemalloc.get_traced_memory()[1] - before
            # the touched cells (K <= 3600 here) take a few K-sized arrays; one float32 grid
            # array would be 160,000 bytes
            assert peak < 160_000, peak
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(('params', 'match'), [
    (dict(size_m=2.0, resolution_m=0.3), 'whole number of cells'),
    (dict(size_m=0.0), 'size_m'),
    (dict(resolution_m=-0.1), 'resolution_m'),
    (dict(tau_s=math.inf), 'tau_s'),
    (dict(decay_s=0.0), 'decay_s'),
    (dict(max_cost=math.nan), 'max_cost'),
    (dict(range_scale_m=True), 'range_scale_m'),
    (dict(recenter_fraction=0.5), 'recenter_fraction'),
    (dict(max_backstep_s=-1.0), 'max_backstep_s'),
    (dict(frame_id=''), 'frame_id'),
    (dict(size_m=2000.0, resolution_m=0.01), 'units'),
])
def test_bad_parameters_are_refused_with_the_name(params, match):
    with pytest.raises(GridError, match=match):
        GridParams(**params)


def test_bad_inputs_are_refused_with_what_to_send():
    grid = make_grid()
    with pytest.raises(GridError, match=r'points\[:, :2\]'):
        grid.add(0.0, np.zeros((3, 3)), np.zeros(3), np.ones(3), np.ones(3))
    with pytest.raises(GridError, match=r'confidence must have shape \(3,\)'):
        grid.add(0.0, np.zeros((3, 2)), np.zeros(3), np.ones(4), np.ones(3))
    assert grid.add(0.0, np.zeros((0, 2)), [], [], []) == AddResult(0, 0, 0, 0, 0, 0, False)


def test_bench_grid_timings_are_printed():
    """Timings for the report (printed, not asserted): ~35,000 ground hits per frame, the
    544 x 1024 image at stride 4 less the sky; and 50,000."""
    for points in (35_000, 50_000):
        bench = bench_grid(points=points, frames=40)
        print(f'\nbench_grid({points}): follow + add {bench.add_ms:.3f} ms, to_occupancy '
              f'{bench.occupancy_ms:.3f} ms per frame, {bench.cells_per_frame:.0f} cells '
              f'updated per frame, {bench.nbytes} bytes held')
        assert bench.points == points and bench.frames == 40
        assert bench.add_ms > 0 and bench.occupancy_ms > 0 and bench.cells_per_frame > 100
