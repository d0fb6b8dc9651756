"""Replay's numbers: held-out region errors, rank correlation, latency percentiles, per-pixel
error against ground truth, and the `Recorder` that accumulates them frame by frame.

    rec = Recorder()
    rec.frame(result, (start, decoded, done))         # latency per stage, coverage, bank size
    rec.held_out_patch(mask, cost)                     # a withheld patch against the propagation
    rec.ground_truth(cost, truth)                      # per-pixel error on known, labelled pixels
    rec.summary()                                      # the numbers of report.json
    bev = BevError(); bev.add(fused, truth)            # bird's-eye cells against a cost map
    mosaic = CellMosaic(0.1); mosaic.add(i, j, cost)   # every cell ever known, its last value

Costs are camera-size float arrays with NaN = unknown (propagated) or unmeasured (masks,
ground truth). numpy only.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from contrast_semask_ros.bank import mask_to_grid
from contrast_semask_ros.pipeline import FrameResult

# stages in the order of a frame (patch_ms: adding a patch to the bank, between frames)
STAGES = ('decode_ms', 'resize_ms', 'infer_ms', 'buffer_ms', 'output_ms', 'encode_write_ms',
          'patch_ms', 'frame_ms')  # total_ms (the pipeline's own total) is recorded too


HIGH_COST = 0.5  # bev.high_cost_recall: ground truth at or above this, fused at or above it


class RegionError(NamedTuple):
    measured: float  # the withheld patch's cost
    predicted: float  # mean propagated cost over its known pixels; NaN if all unknown
    known_fraction: float  # of the region's pixels


def held_out_regions(mask: np.ndarray, cost: np.ndarray) -> list[RegionError]:
    """Each distinct finite value of `mask` (H, W) is one measured region; compare it with the
    propagated `cost` (same size, NaN = unknown) over the region."""
    if mask.shape != cost.shape:
        raise ValueError(f'mask {mask.shape} and cost {cost.shape} must have one size')
    finite = np.isfinite(mask)
    regions = []
    for value in np.unique(mask[finite]):
        region = mask == value
        predicted = cost[region]
        known = np.isfinite(predicted)
        mean = float(predicted[known].mean()) if known.any() else math.nan
        regions.append(RegionError(float(value), mean, float(known.mean())))
    return regions


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); NaN for fewer than 2 distinct values."""
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    ra, rb = _ranks(np.asarray(a, float)), _ranks(np.asarray(b, float))
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind='mergesort')
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=float)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]  # average rank of each tie group


def accuracy(regions: Sequence[RegionError]) -> dict[str, float]:
    """MAE, RMSE and Spearman of predicted vs measured cost over regions with known pixels."""
    known = [r for r in regions if not math.isnan(r.predicted)]
    out: dict[str, float] = {'regions': len(regions), 'regions_unknown': len(regions) - len(known)}
    if known:
        measured = np.array([r.measured for r in known])
        predicted = np.array([r.predicted for r in known])
        err = predicted - measured
        out.update(mae=float(np.abs(err).mean()), rmse=float(np.sqrt((err ** 2).mean())),
                   spearman=spearman(measured, predicted))
    return out


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """Median, p95, p99 and count; {} for no values."""
    if not values:
        return {}
    median, p95, p99 = np.percentile(np.asarray(values, float), (50, 95, 99))
    return {'median': float(median), 'p95': float(p95), 'p99': float(p99), 'n': len(values)}


@dataclass
class GroundTruthError:
    """Per-pixel |cost - truth| over known, labelled pixels (truth NaN = unlabelled), summed
    frame by frame so that nothing grows with the bag."""

    abs_sum: float = 0.0
    sq_sum: float = 0.0
    pixels: int = 0
    known_of_labelled: list[float] = field(default_factory=list)  # per scored frame

    def add(self, cost: np.ndarray, truth: np.ndarray) -> None:
        """cost, truth (H, W) float; the caller checks that the sizes match."""
        labelled = np.isfinite(truth)
        known = labelled & np.isfinite(cost)
        err = cost[known] - truth[known]
        self.abs_sum += float(np.abs(err).sum())
        self.sq_sum += float((err ** 2).sum())
        self.pixels += int(known.sum())
        self.known_of_labelled.append(float(known.sum() / max(labelled.sum(), 1)))

    def summary(self) -> dict[str, Any]:
        """frames, known_of_labelled (mean), mae and rmse; {} when nothing was scored."""
        if not self.known_of_labelled:
            return {}
        out: dict[str, Any] = {'frames': len(self.known_of_labelled),
                               'known_of_labelled': float(np.mean(self.known_of_labelled))}
        if self.pixels:
            out['mae'] = self.abs_sum / self.pixels
            out['rmse'] = math.sqrt(self.sq_sum / self.pixels)
        return out


@dataclass
class BevError:
    """Fused costs against a ground-truth cost map, summed over the grids of a run so that it
    reads like GroundTruthError's per-pixel numbers summed over frames. Each add() is one grid:
    the costs of some of its cells (replay_world: the cells the frame observed, or every known
    cell of the window) or of points (the cost images' own values where they land).

    cost_mae / cost_rmse: mean |fused - truth| (root mean square) over the scored cells, those
    with a ground-truth cost; high_cost_recall: of the scored cells whose ground truth is >=
    threshold, the fraction the fused cost also puts >= threshold; false_high_rate: of those
    whose truth is below threshold, the fraction it puts >= threshold."""

    threshold: float = HIGH_COST
    frames: int = 0  # grids scored
    cells: int = 0  # (cell or point, grid) pairs scored
    without_truth: int = 0  # known fused cells with no ground truth (outside the map, -1)
    abs_sum: float = 0.0
    sq_sum: float = 0.0
    high_cells: int = 0  # scored cells with truth >= threshold
    high_marked: int = 0  # ... that the fused grid marks >= threshold
    low_marked: int = 0  # scored cells with truth < threshold that it marks >= threshold

    def add(self, fused: np.ndarray, truth: np.ndarray) -> None:
        """fused, truth (N,) costs of one grid's cells (or points); truth NaN = none there."""
        self.frames += 1
        has = np.isfinite(truth)
        self.without_truth += int(has.size - np.count_nonzero(has))
        f, t = fused[has].astype(np.float64), truth[has].astype(np.float64)
        err = f - t
        self.abs_sum += float(np.abs(err).sum())
        self.sq_sum += float((err ** 2).sum())
        self.cells += int(t.size)
        high = t >= self.threshold
        self.high_cells += int(np.count_nonzero(high))
        self.high_marked += int(np.count_nonzero(f[high] >= self.threshold))
        self.low_marked += int(np.count_nonzero(f[~high] >= self.threshold))

    def summary(self) -> dict[str, Any]:
        """cells, frames, threshold, cells_without_truth; cost_mae, cost_rmse when any cell was
        scored; high_cost_recall (NaN without high-cost cells), high_cost_cells, and
        false_high_rate (of the cells whose truth is below threshold, the fraction marked at or
        above it; NaN without such cells): recall alone is 1 for a grid marked high all over."""
        out: dict[str, Any] = {'frames': self.frames, 'cells': self.cells,
                               'cells_without_truth': self.without_truth,
                               'threshold': self.threshold}
        if self.cells:
            out['cost_mae'] = self.abs_sum / self.cells
            out['cost_rmse'] = math.sqrt(self.sq_sum / self.cells)
        out['high_cost_recall'] = (self.high_marked / self.high_cells if self.high_cells
                                   else math.nan)
        out['high_cost_cells'] = self.high_cells
        low = self.cells - self.high_cells
        out['false_high_rate'] = self.low_marked / low if low else math.nan
        return out


class CellMosaic:
    """The last known value of every cell of a fixed lattice (cell (i, j) spans [i, i + 1) x
    [j, j + 1) times `resolution`) ever given, in TILE x TILE tiles allocated where the robot
    went: memory follows the area seen, not the bounding box of the drive."""

    TILE = 256

    def __init__(self, resolution: float) -> None:
        self.resolution = float(resolution)
        self.tiles: dict[tuple[int, int], np.ndarray] = {}  # (ti, tj) -> TILE, TILE float32

    def add(self, i: np.ndarray, j: np.ndarray, values: np.ndarray) -> None:
        """Cells (i, j) (N,) int64 lattice indices take values (N,)."""
        if not i.size:
            return
        ti, tj = i >> 8, j >> 8  # floor division by TILE (256), negatives included
        keys = np.unique(np.stack([ti, tj], 1), axis=0)
        for a, b in keys.tolist():
            sel = (ti == a) & (tj == b)
            tile = self.tiles.get((a, b))
            if tile is None:
                tile = self.tiles[(a, b)] = np.full((self.TILE, self.TILE), np.nan, np.float32)
            tile[j[sel] & 255, i[sel] & 255] = values[sel]  # rows along j (+y)

    @property
    def known_cells(self) -> int:
        return sum(int(np.count_nonzero(np.isfinite(t))) for t in self.tiles.values())

    @property
    def area_m2(self) -> float:
        return self.known_cells * self.resolution ** 2

    def image(self, max_side: int = 4000) -> tuple[np.ndarray, tuple[float, float, float, float]
                                                   ] | None:
        """(rows, cols) float32 (NaN unknown; rows along +y) over the tiles' bounding box,
        every k-th cell so that no side exceeds max_side, and its extent (x0, x1, y0, y1) in
        metres; None when nothing was added."""
        if not self.tiles:
            return None
        keys = np.array(list(self.tiles))
        (a0, b0), (a1, b1) = keys.min(0), keys.max(0) + 1
        n = self.TILE
        full = np.full(((b1 - b0) * n, (a1 - a0) * n), np.nan, np.float32)
        for (a, b), tile in self.tiles.items():
            full[(b - b0) * n:(b - b0 + 1) * n, (a - a0) * n:(a - a0 + 1) * n] = tile
        rows, cols = np.nonzero(np.isfinite(full))
        r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        k = max(1, -(-max(r1 - r0, c1 - c0) // max_side))
        res = self.resolution
        x0, y0 = (a0 * n + c0) * res, (b0 * n + r0) * res
        cropped = full[r0:r1:k, c0:c1:k]
        return cropped, (x0, x0 + cropped.shape[1] * k * res, y0,
                         y0 + cropped.shape[0] * k * res)


def _cost_error(truth: GroundTruthError) -> dict[str, float]:
    """cost_mae / cost_rmse (per pixel, against the ground truth) when anything was scored."""
    summary = truth.summary()
    if 'mae' not in summary:
        return {}
    return {'cost_mae': summary['mae'], 'cost_rmse': summary['rmse'],
            'cost_known_of_labelled': summary['known_of_labelled']}


@dataclass
class Recorder:
    """Every number of a replay, filled message by message; `summary()` is report.json's."""

    latency: dict[str, list[float]] = field(default_factory=dict)  # stage -> ms per event
    coverage: list[float] = field(default_factory=list)  # known fraction per frame
    bank_sizes: list[int] = field(default_factory=list)  # prototypes used per frame
    frame_stamps: list[int] = field(default_factory=list)
    held_out: list[RegionError] = field(default_factory=list)
    held_out_truth: GroundTruthError = field(default_factory=GroundTruthError)  # cost_mae
    truth: GroundTruthError = field(default_factory=GroundTruthError)
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> messages
    patches: int = 0  # patch messages matched to a replayed frame (used, held out or refused)
    patches_used: int = 0  # added to the bank
    patches_held_out: int = 0  # withheld and scored
    patches_unmatched: int = 0  # their frame never came (dropped, not in the bag, evicted)

    def time(self, stage: str, ms: float) -> None:
        self.latency.setdefault(stage, []).append(ms)

    def skip(self, reason: str, count: int = 1) -> None:
        self.skipped[reason] += count

    def unmatched_patch(self, reason: str) -> None:
        """A patch whose frame was not replayed: not in `patches`, counted by reason."""
        self.patches_unmatched += 1
        self.skip(reason)

    def skip_summary(self) -> str:
        """'N message(s): reason: count; ...' (most frequent first), '' when none was skipped."""
        if not self.skipped:
            return ''
        reasons = '; '.join(f'{reason}: {n}' for reason, n in self.skipped.most_common())
        return f'{sum(self.skipped.values())} message(s): {reasons}'

    def frame(self, result: FrameResult, clock: tuple[float, float, float]) -> None:
        """One processed frame; clock = perf_counter at start, after decoding, at the end."""
        start, decoded, done = clock
        self.time('decode_ms', (decoded - start) * 1e3)
        for stage, ms in result.timings._asdict().items():  # the pipeline's stages and total
            self.time(stage, ms)
        self.time('encode_write_ms', (done - decoded) * 1e3 - result.timings.total_ms)
        self.time('frame_ms', (done - start) * 1e3)
        self.frame_stamps.append(result.stamp_ns)
        self.coverage.append(float(np.isfinite(result.cost).mean()))
        self.bank_sizes.append(result.bank_size)

    def held_out_patch(self, mask: np.ndarray, cost: np.ndarray,
                       truth: np.ndarray | None = None) -> None:
        """A withheld patch mask (any size) against its frame's propagated cost (H, W); with
        the frame's ground truth (H, W), also the per-pixel error against the truth over the
        patch's pixels (`cost_mae`: the same number whatever the patches were measured by)."""
        grid = mask_to_grid(mask, *cost.shape)  # the bank's own mask resampling
        self.held_out.extend(held_out_regions(grid, cost))
        self.patches_held_out += 1
        if truth is not None and truth.shape == cost.shape:
            self.held_out_truth.add(cost, np.where(np.isfinite(grid), truth, np.nan))

    def ground_truth(self, cost: np.ndarray, truth: np.ndarray) -> bool:
        """Score one frame's cost against its ground truth; False (and counted) if the sizes
        differ."""
        if truth.shape != cost.shape:
            self.skip('ground truth of another size')
            return False
        self.truth.add(cost, truth)
        return True

    def summary(self) -> dict[str, Any]:
        """Counts, latency percentiles, held-out accuracy, coverage, ground truth, skips."""
        return {
            'frames': len(self.frame_stamps), 'patches': self.patches,
            'patches_used': self.patches_used, 'patches_held_out': self.patches_held_out,
            'patches_unmatched': self.patches_unmatched,
            'latency_ms': {stage: percentiles(v) for stage, v in self.latency.items()},
            'held_out': {**accuracy(self.held_out), **_cost_error(self.held_out_truth)},
            'coverage': {'final': self.coverage[-1] if self.coverage else 0.0,
                         'mean': float(np.mean(self.coverage)) if self.coverage else 0.0},
            'bank_size_final': self.bank_sizes[-1] if self.bank_sizes else 0,
            'ground_truth': self.truth.summary(),
            'skipped': dict(self.skipped),
        }
