"""A rolling cost grid around the robot: the ROS-free core of the cost node's `cost_grid` output
(a nav_msgs/OccupancyGrid in `grid_frame`, by default `odom`). numpy only.

Window. A square of `size_m` / `resolution_m` = n cells per side, axis-aligned with the grid
frame (REP 105 `odom`: world-fixed, x and y horizontal). Cell boundaries lie on the fixed
lattice x = i * resolution_m, y = j * resolution_m of the grid frame (i, j integers), so a
point (x, y) belongs to cell (i, j) = (floor(x / resolution_m), floor(y / resolution_m)) for
as long as that cell is inside the window, wherever the window is. The window covers cells
i0 <= i < i0 + n, j0 <= j < j0 + n; its lower-left corner (i0, j0) * resolution_m is the
OccupancyGrid origin.

Re-centring (`follow(x, y)` with the robot's position in the grid frame). When the robot is
more than `recenter_fraction * size_m` from the window centre ((i0 + n/2, j0 + n/2) *
resolution_m) along x or along y (Chebyshev distance), the window moves in whole cells so that
the robot's cell becomes cell (n // 2, n // 2) of the window: i0 = floor(x / resolution_m) -
n // 2, likewise j0. The default fraction 0.05 keeps the robot within 1 m of the centre of a
20 m window (the window moves at most once per metre driven), so at least 9 m are mapped ahead
in every direction; shifts are cheap (below). 0 re-centres whenever the robot changes cell.
The first window is centred on the grid frame's origin.

Storage is a ring buffer (no np.roll, no slice copy): cell (i, j) lives at array element
(j mod n, i mod n) for as long as it is in the window, so a shift moves no data at all. A shift
by (di, dj) cells clears the |di| array columns and |dj| array rows that held the cells that
left the window (the cells that entered take those elements and start unknown), or every
element when |di| >= n or |dj| >= n. A cell's evidence therefore stays attached to the same
world cell. `to_occupancy` unrolls the ring into the output with at most four block copies.

Fusion (`add`). Observation k (a point x_k, y_k in the grid frame with cost c_k, confidence
q_k and range r_k in metres from the camera) has the weight

    w_k = clip(q_k, 0, 1) / (1 + (r_k / range_scale_m) ** 2)

Each cell holds S_w = sum of w, S_wc = sum of w * c (float32) and `last`, the stamp of its
latest fused observation (float64 seconds; -inf before the first). One `add(t, ...)` does, for
every cell that receives at least one observation:

    f = exp(-max(t - last, 0) / tau_s)
    S_w  <- f * S_w  + sum over its observations k of w_k
    S_wc <- f * S_wc + sum over its observations k of w_k * c_k
    last <- max(last, t)

All observations of one call share the stamp t, so they are summed with equal standing
(np.add.at over the cells; no per-point loop). A cell's fused cost is S_wc / S_w: the weighted
mean in which evidence of age a counts exp(-a / tau_s) times its weight, so newer evidence wins
as the robot moves and sees the ground closer. Cells that receive nothing are not touched.

Dropped observations, counted (each once, for the first reason in this order): `nan_cost`
(cost NaN or +-inf: the cost image's "unknown"), `invalid` (position, confidence or range not
finite, or a negative range), `outside` (not in the window), `zero_weight` (w = 0, e.g.
confidence <= 0: such an observation contributes nothing and does not refresh `last`). Finite
costs are clipped to +-1e30 so that float32 sums stay finite.

Output (`to_occupancy(now)`). A cell is known when S_w > 0 (precisely: S_w >= 1.2e-38, the
smallest normal float32) and now - last <= decay_s; a cell not observed for longer than
`decay_s` is stale, and stale or never observed cells are unknown. A known cell's value is
rint(100 * clip(S_wc / S_w / max_cost, 0, 1)) in 0..100 (np.rint: halves to even); unknown
cells are -1. The array is (height, width) = (n, n) int8 in OccupancyGrid order: row-major,
row r along +y, column c along +x, element (r, c) the cell (i0 + c, j0 + r); element (0, 0) is
the lower-left cell, whose lower-left corner is (origin_x, origin_y) = (i0, j0) * resolution_m.
It is the grid's one output buffer, rewritten by the next call.

Time. Stamps are float seconds, or int nanoseconds (ROS `Time.nanoseconds`, `sec * 10**9 +
nanosec`). A stamp (in `add` or `to_occupancy`) earlier than the latest one seen by more than
`max_backstep_s` (a bag loop, a clock reset) clears the grid first (counted in `resets`); a
smaller step back is fused as if simultaneous (f = 1 above, `last` kept).

Memory. Every grid-sized array is allocated once, in the constructor: per cell 16 bytes of
state (S_w float32, S_wc float32, last float64), 7 bytes of scratch (a bool touched flag for
`add`; a float32 value and two bool masks for `to_occupancy`) and the int8 output: 24 bytes per
cell, plus one spare cell. 20 m at 0.1 m is 200 x 200 = 40,000 cells: 640,000 bytes of state,
960,017 bytes in all. `add` also keeps per-observation work arrays, grown to the largest N seen
and then reused: 42 bytes per observation, 1,470,000 bytes for 35,000. `nbytes` is the sum of
both. Per `add`, the only new arrays are a few of the size of the touched cells (K <= N).
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

COST_LIMIT = 1e30  # finite costs are clipped to +-COST_LIMIT so float32 sums stay finite
MAX_CELLS_PER_SIDE = 8192  # 67 M cells, 1.6 GB: anything larger is a units mistake
_NS_PER_S = 10**9
_TINY = float(np.finfo(np.float32).tiny)  # a cell is known from S_w >= this


class GridError(ValueError):
    """A grid parameter or input that cannot be used; the message says what to send instead."""


@dataclass(frozen=True)
class GridParams:
    size_m: float = 20.0  # side of the square window; a whole number of cells
    resolution_m: float = 0.1  # side of a cell
    tau_s: float = 1.0  # time constant of the exponential decay of older evidence
    decay_s: float = 10.0  # a cell not observed for longer than this is unknown (inf: never)
    range_scale_m: float = 5.0  # range at which an observation's weight is halved (inf: none)
    max_cost: float = 1.0  # cost shown as 100
    recenter_fraction: float = 0.05  # re-centre beyond this fraction of size_m; 0: every cell
    max_backstep_s: float = 1.0  # a stamp further back than this resets the grid
    frame_id: str = 'odom'  # the grid frame (REP 105), copied into GridInfo

    def __post_init__(self) -> None:
        for name in ('size_m', 'resolution_m', 'tau_s', 'max_cost'):
            _check_positive(getattr(self, name), name, allow_inf=False)
        for name in ('decay_s', 'range_scale_m'):
            _check_positive(getattr(self, name), name, allow_inf=True)
        fraction = self.recenter_fraction
        if not (_is_number(fraction) and 0.0 <= fraction < 0.5):
            raise GridError(f'recenter_fraction must be in [0, 0.5), got {fraction!r}: the '
                            'robot must stay inside the window')
        backstep = self.max_backstep_s
        if not (_is_number(backstep) and 0.0 <= backstep < math.inf):
            raise GridError(f'max_backstep_s must be finite seconds >= 0, got {backstep!r}')
        if not isinstance(self.frame_id, str) or not self.frame_id:
            raise GridError(f'frame_id must be a non-empty frame name, got {self.frame_id!r}')
        cells = self.size_m / self.resolution_m
        if abs(cells - round(cells)) > 1e-6 * max(cells, 1.0) or round(cells) < 1:
            raise GridError(f'size_m ({self.size_m}) must be a whole number of cells of '
                            f'resolution_m ({self.resolution_m}), got {cells:.6g} cells')
        if round(cells) > MAX_CELLS_PER_SIDE:
            raise GridError(f'size_m / resolution_m = {round(cells)} cells per side exceeds '
                            f'{MAX_CELLS_PER_SIDE}; check the units (metres)')

    @property
    def cells_per_side(self) -> int:
        return round(self.size_m / self.resolution_m)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _check_positive(value: Any, name: str, allow_inf: bool) -> None:
    ok = _is_number(value) and value > 0
    if not ok or (math.isinf(value) and not allow_inf):
        bound = 'inf allowed' if allow_inf else 'finite'
        raise GridError(f'{name} must be a number > 0 ({bound}), got {value!r}')


class GridInfo(NamedTuple):
    """The OccupancyGrid's `header.frame_id` and `info` (origin orientation: identity)."""

    frame_id: str
    resolution: float  # m per cell
    width: int  # cells along +x (columns)
    height: int  # cells along +y (rows)
    origin_x: float  # m: lower-left corner of cell (row 0, column 0) in the grid frame
    origin_y: float  # m


class Occupancy(NamedTuple):
    data: np.ndarray  # height, width int8 in 0..100 or -1; read-only, valid until the next call
    info: GridInfo
    known: int  # cells with a value in 0..100


class AddResult(NamedTuple):
    fused: int  # observations fused into cells
    cells: int  # distinct cells they updated
    nan_cost: int  # dropped: cost not finite
    invalid: int  # dropped: position, confidence or range not finite, or range < 0
    outside: int  # dropped: outside the window
    zero_weight: int  # dropped: weight 0 (confidence <= 0 or infinite range)
    reset: bool  # the stamp went back by more than max_backstep_s: the grid was cleared first


class Shift(NamedTuple):
    columns: int  # cells the window moved along +x (negative: -x)
    rows: int  # cells the window moved along +y


class GridCounters(NamedTuple):
    """Totals since construction (reset() does not zero them)."""

    fused: int
    nan_cost: int
    invalid: int
    outside: int
    zero_weight: int
    resets: int  # time went back by more than max_backstep_s
    shifts: int  # the window moved


def stamp_seconds(stamp: Any, name: str = 'stamp') -> float:
    """Float seconds from float seconds or int nanoseconds (an int is always nanoseconds)."""
    if isinstance(stamp, (bool, np.bool_)):
        raise GridError(f'{name} must be float seconds or int nanoseconds, got {stamp!r}')
    if isinstance(stamp, (int, np.integer)):
        seconds, nanoseconds = divmod(int(stamp), _NS_PER_S)
        return seconds + nanoseconds * 1e-9
    try:
        value = float(stamp)
    except (TypeError, ValueError):
        raise GridError(f'{name} must be float seconds or int nanoseconds, '
                        f'got {stamp!r}') from None
    if not math.isfinite(value):
        raise GridError(f'{name} must be finite, got {stamp!r}')
    return value


def _column(values: Any, count: int, name: str) -> np.ndarray:
    """(count,) float32 view or copy of values."""
    array = np.asarray(values, dtype=np.float32)
    if array.shape != (count,):
        raise GridError(f'{name} must have shape ({count},) like points_xy, got {array.shape}')
    return array


def _ring_blocks(offset_row: int, offset_col: int, n: int) -> Iterator[tuple[Any, Any]]:
    """(ring slice, window slice) pairs: window element (r, c) is ring element
    ((r + offset_row) mod n, (c + offset_col) mod n). Up to four non-empty blocks."""
    rows = ((slice(offset_row, n), slice(0, n - offset_row)),
            (slice(0, offset_row), slice(n - offset_row, n)))
    cols = ((slice(offset_col, n), slice(0, n - offset_col)),
            (slice(0, offset_col), slice(n - offset_col, n)))
    for ring_r, win_r in rows:
        for ring_c, win_c in cols:
            if ring_r.stop > ring_r.start and ring_c.stop > ring_c.start:
                yield (ring_r, ring_c), (win_r, win_c)


def _ring_span(start: int, count: int, n: int) -> tuple[slice, ...]:
    """The ring indices start, start + 1, ..., start + count - 1 (mod n) as one or two slices."""
    if start + count <= n:
        return (slice(start, start + count),)
    return slice(start, n), slice(0, start + count - n)


class _PointViews(NamedTuple):
    col: np.ndarray  # N float64
    row: np.ndarray  # N float64
    quotient: np.ndarray  # N float64
    flat: np.ndarray  # N intp
    weight: np.ndarray  # N float32
    weighted_cost: np.ndarray  # N float32
    keep: np.ndarray  # N bool
    ok: np.ndarray  # N bool


class _PointScratch:
    """Per-observation work arrays, reused across `add` calls: grown (never shrunk) to the
    largest N seen, so a steady stream of frames allocates nothing of size N either (on the
    development VM, fresh 280 kB temporaries cost more than the arithmetic). 42 bytes per
    observation of capacity."""

    def __init__(self) -> None:
        self._grow(0)

    def _grow(self, capacity: int) -> None:
        self._capacity = capacity
        self.col_buf = np.empty(capacity)  # lattice i, then ring column
        self.row_buf = np.empty(capacity)  # lattice j, then ring index
        self.quotient_buf = np.empty(capacity)
        self.flat_buf = np.empty(capacity, np.intp)
        self.weight_buf = np.empty(capacity, np.float32)
        self.weighted_cost_buf = np.empty(capacity, np.float32)
        self.keep_buf = np.empty(capacity, bool)
        self.ok_buf = np.empty(capacity, bool)

    @property
    def nbytes(self) -> int:
        return sum(value.nbytes for value in vars(self).values() if isinstance(value, np.ndarray))

    def take(self, count: int) -> _PointViews:
        if count > self._capacity:
            self._grow(max(count, 2 * self._capacity))
        return _PointViews(self.col_buf[:count], self.row_buf[:count],
                           self.quotient_buf[:count], self.flat_buf[:count],
                           self.weight_buf[:count], self.weighted_cost_buf[:count],
                           self.keep_buf[:count], self.ok_buf[:count])


class RollingCostGrid:
    """The rolling cost grid of the module docstring. Per frame: `follow(x, y)` with the robot's
    position, `add(stamp, points_xy, cost, confidence, range_m)`, `to_occupancy(stamp)`."""

    def __init__(self, params: GridParams | None = None) -> None:
        self.params = params if params is not None else GridParams()
        n = self.params.cells_per_side
        self._n = n
        self._inv_res = 1.0 / self.params.resolution_m
        # state, in ring order: cell (i, j) at [j mod n, i mod n]
        # (flat, with one spare element at n * n that absorbs dropped observations in `add`)
        self._sum_w_flat = np.zeros(n * n + 1, np.float32)  # n*n + 1
        self._sum_wc_flat = np.zeros(n * n + 1, np.float32)  # n*n + 1
        self._last_flat = np.full(n * n + 1, -np.inf)  # n*n + 1 float64 seconds
        self._sum_w = self._sum_w_flat[:-1].reshape(n, n)  # n, n views
        self._sum_wc = self._sum_wc_flat[:-1].reshape(n, n)
        self._last = self._last_flat[:-1].reshape(n, n)
        # scratch
        self._touched = np.zeros(n * n + 1, bool)  # n*n + 1
        self._value = np.zeros((n, n), np.float32)  # n, n
        self._known = np.zeros((n, n), bool)  # n, n
        self._fresh = np.zeros((n, n), bool)  # n, n
        self._out = np.full((n, n), -1, np.int8)  # n, n OccupancyGrid order
        self._out_view = self._out.view()
        self._out_view.setflags(write=False)
        self._scratch = _PointScratch()
        self._col0 = -(n // 2)  # i0: the window's first column in lattice cells
        self._row0 = -(n // 2)  # j0
        self._latest = -math.inf  # latest stamp seen, seconds
        self._counts = dict.fromkeys(GridCounters._fields, 0)

    # --- properties ----------------------------------------------------------------------

    @property
    def cells_per_side(self) -> int:
        return self._n

    @property
    def info(self) -> GridInfo:
        res = self.params.resolution_m
        return GridInfo(self.params.frame_id, res, self._n, self._n, self._col0 * res,
                        self._row0 * res)

    @property
    def counters(self) -> GridCounters:
        return GridCounters(**self._counts)

    @property
    def grid_nbytes(self) -> int:
        """Bytes of the grid-sized arrays (state, scratch, output): 24 per cell, plus 17."""
        arrays = (self._sum_w_flat, self._sum_wc_flat, self._last_flat, self._touched,
                  self._value, self._known, self._fresh, self._out)
        return sum(array.nbytes for array in arrays)

    @property
    def nbytes(self) -> int:
        """All bytes held: grid_nbytes plus 42 per observation of the largest `add` so far."""
        return self.grid_nbytes + self._scratch.nbytes

    # --- window --------------------------------------------------------------------------

    def follow(self, x: float, y: float) -> Shift:
        """Re-centre the window on the robot at (x, y) (grid frame, m; the translation of
        T_odom_base) if it is more than recenter_fraction * size_m from the window centre along
        x or y; the shift made (0, 0 if none). Call it before `add` each frame."""
        if not (math.isfinite(x) and math.isfinite(y)):
            raise GridError(f'robot position must be finite metres, got ({x!r}, {y!r})')
        n, res = self._n, self.params.resolution_m
        centre_x = (self._col0 + n / 2) * res
        centre_y = (self._row0 + n / 2) * res
        limit = self.params.recenter_fraction * self.params.size_m
        if max(abs(x - centre_x), abs(y - centre_y)) <= limit:
            return Shift(0, 0)
        col0 = math.floor(x * self._inv_res) - n // 2
        row0 = math.floor(y * self._inv_res) - n // 2
        return self._move_to(col0, row0)

    def _move_to(self, col0: int, row0: int) -> Shift:
        n = self._n
        columns, rows = col0 - self._col0, row0 - self._row0
        if columns == 0 and rows == 0:
            return Shift(0, 0)
        if abs(columns) >= n or abs(rows) >= n:
            self._clear((slice(None), slice(None)))
        else:
            # the ring elements of the cells that left are those of the cells that entered
            for span in _ring_span(min(col0, self._col0) % n, abs(columns), n):
                self._clear((slice(None), span))
            for span in _ring_span(min(row0, self._row0) % n, abs(rows), n):
                self._clear((span, slice(None)))
        self._col0, self._row0 = col0, row0
        self._counts['shifts'] += 1
        return Shift(columns, rows)

    def _clear(self, index: tuple[slice, slice]) -> None:
        self._sum_w[index] = 0.0
        self._sum_wc[index] = 0.0
        self._last[index] = -np.inf

    def reset(self) -> None:
        """Forget all evidence and the latest stamp; the window stays where it is."""
        self._clear((slice(None), slice(None)))
        self._latest = -math.inf

    def _check_time(self, t: float) -> bool:
        """Clear the grid if t is further back than max_backstep_s; True if it did."""
        if t < self._latest - self.params.max_backstep_s:
            self.reset()
            self._counts['resets'] += 1
            self._latest = t
            return True
        self._latest = max(self._latest, t)
        return False

    # --- fusion --------------------------------------------------------------------------

    def add(self, stamp: float | int, points_xy: Any, cost: Any, confidence: Any,
            range_m: Any) -> AddResult:
        """Fuse observations taken at `stamp` (float s or int ns): points_xy (N, 2) in the grid
        frame, cost, confidence and range_m (N,) each (module docstring, "Fusion"). float32
        cost, confidence and range_m are used as they are; other dtypes are converted."""
        t = stamp_seconds(stamp)
        reset = self._check_time(t)
        xy = np.asarray(points_xy, dtype=np.float64)
        if xy.ndim != 2 or xy.shape[1] != 2:
            raise GridError(f'points_xy must be (N, 2) x, y in the grid frame, got shape '
                            f'{xy.shape}; pass points[:, :2] of (N, 3) points')
        count = xy.shape[0]
        cost = _column(cost, count, 'cost')
        confidence = _column(confidence, count, 'confidence')
        range_m = _column(range_m, count, 'range_m')
        s = self._scratch.take(count)
        col, row, weight, weighted_cost, keep, ok = (s.col, s.row, s.weight, s.weighted_cost,
                                                     s.keep, s.ok)
        n = self._n
        with np.errstate(invalid='ignore', over='ignore'):
            # 1-D columns throughout: numpy loops over an (N, 2) array pair by pair, 3x slower
            np.multiply(xy[:, 0], self._inv_res, out=col)
            np.floor(col, out=col)  # lattice i; NaN where x is not finite
            np.multiply(xy[:, 1], self._inv_res, out=row)
            np.floor(row, out=row)  # lattice j
            np.clip(confidence, 0.0, 1.0, out=weight)
            scaled = weighted_cost  # N float32, reused below
            np.divide(range_m, np.float32(self.params.range_scale_m), out=scaled)
            scaled *= scaled
            scaled += 1.0
            weight /= scaled  # w = clip(q, 0, 1) / (1 + (r / range_scale) ** 2)
            np.clip(cost, -COST_LIMIT, COST_LIMIT, out=weighted_cost)
            weighted_cost *= weight  # w * c

            np.isfinite(cost, out=keep)
            nan_cost = count - int(np.count_nonzero(keep))
            keep &= np.isfinite(col, out=ok)  # one check at a time: they share `ok`
            keep &= np.isfinite(row, out=ok)
            keep &= np.isfinite(confidence, out=ok)
            keep &= np.greater_equal(range_m, 0, out=ok)
            valid = int(np.count_nonzero(keep))
            keep &= np.greater_equal(col, float(self._col0), out=ok)
            keep &= np.less(col, float(self._col0 + n), out=ok)
            keep &= np.greater_equal(row, float(self._row0), out=ok)
            keep &= np.less(row, float(self._row0 + n), out=ok)
            within = int(np.count_nonzero(keep))
            keep &= np.greater(weight, 0, out=ok)
            fused = int(np.count_nonzero(keep))
            cells = self._fuse(t, s) if fused else 0  # inf - inf in the ring index of inf x
        result = AddResult(fused, cells, nan_cost, count - nan_cost - valid, valid - within,
                           within - fused, reset)
        for name in ('fused', 'nan_cost', 'invalid', 'outside', 'zero_weight'):
            self._counts[name] += getattr(result, name)
        return result

    def _fuse(self, t: float, s: _PointViews) -> int:
        """Decay the cells that the kept observations fall in, then add those observations;
        the number of cells. Dropped observations go to the spare cell (ring index n * n),
        which is zeroed afterwards, so the inputs are never compacted."""
        n, spare = self._n, self._n * self._n
        col, row, quotient, flat = s.col, s.row, s.quotient, s.flat
        for lattice in (col, row):  # ring index: lattice mod n = i - n * floor(i / n)
            np.divide(lattice, n, out=quotient)  # exact for multiples of n
            np.floor(quotient, out=quotient)
            quotient *= n
            lattice -= quotient
        row *= n
        row += col  # N ring index, row-major; NaN or out of range where not kept
        np.logical_not(s.keep, out=s.ok)
        np.copyto(row, spare, where=s.ok)
        np.copyto(flat, row, casting='unsafe')  # N intp
        self._touched[flat] = True
        cells = np.flatnonzero(self._touched[:spare])  # K touched ring indices, sorted
        self._touched[cells] = False
        last = self._last_flat[cells]  # K, -inf for cells never observed
        age = t - last
        np.maximum(age, 0.0, out=age)
        age *= -1.0 / self.params.tau_s
        factor = np.exp(age).astype(np.float32)  # K
        self._sum_w_flat[cells] *= factor
        self._sum_wc_flat[cells] *= factor
        np.maximum(last, t, out=last)
        self._last_flat[cells] = last
        np.add.at(self._sum_w_flat, flat, s.weight)
        np.add.at(self._sum_wc_flat, flat, s.weighted_cost)
        self._sum_w_flat[spare] = 0.0  # and any NaN that dropped observations brought
        self._sum_wc_flat[spare] = 0.0
        return int(cells.size)

    # --- output --------------------------------------------------------------------------

    def to_occupancy(self, now: float | int) -> Occupancy:
        """The grid at `now` (float s or int ns) as OccupancyGrid data (module docstring,
        "Output"), written into the grid's one int8 buffer."""
        now_s = stamp_seconds(now, 'now')
        self._check_time(now_s)
        known, fresh, value = self._known, self._fresh, self._value
        np.greater_equal(self._sum_w, _TINY, out=known)  # S_w > 0
        np.greater_equal(self._last, now_s - self.params.decay_s, out=fresh)
        np.logical_and(known, fresh, out=known)
        # masked ufuncs (where=) are 10x slower here than arithmetic over every cell
        np.maximum(self._sum_w, _TINY, out=value)  # the divisor is S_w where known
        np.divide(self._sum_wc, value, out=value)  # finite everywhere
        value *= np.float32(100.0 / self.params.max_cost)
        np.clip(value, 0.0, 100.0, out=value)
        np.rint(value, out=value)
        value += 1.0
        value *= known
        value -= 1.0  # -1 where unknown
        for ring, window in _ring_blocks(self._row0 % self._n, self._col0 % self._n, self._n):
            np.copyto(self._out[window], value[ring], casting='unsafe')
        return Occupancy(self._out_view, self.info, int(np.count_nonzero(known)))

    def cost_at(self, x: float, y: float, now: float | int) -> float:
        """The fused cost S_wc / S_w (not clipped or scaled) of the cell holding (x, y) at
        `now`; NaN if it is unknown or outside the window. Reads only: time is not checked."""
        now_s = stamp_seconds(now, 'now')
        if not (math.isfinite(x) and math.isfinite(y)):
            return math.nan
        col = math.floor(x * self._inv_res) - self._col0
        row = math.floor(y * self._inv_res) - self._row0
        if not (0 <= col < self._n and 0 <= row < self._n):
            return math.nan
        ring = ((row + self._row0) % self._n, (col + self._col0) % self._n)
        sum_w = float(self._sum_w[ring])
        if sum_w < _TINY or float(self._last[ring]) < now_s - self.params.decay_s:
            return math.nan
        return float(self._sum_wc[ring]) / sum_w


# --- benchmark -----------------------------------------------------------------------------


class GridBench(NamedTuple):
    points: int  # observations per frame
    frames: int  # frames timed (after warm-up)
    add_ms: float  # median per frame: follow + add
    occupancy_ms: float  # median per frame: to_occupancy
    cells_per_frame: float  # mean cells updated per frame
    nbytes: int  # RollingCostGrid.nbytes at the end


def bench_grid(points: int = 35000, frames: int = 60, seed: int = 0,
               params: GridParams | None = None) -> GridBench:
    """Time follow + add and to_occupancy on a simulated drive: the robot at 1.5 m/s and 15
    frames/s along a gentle curve, each frame `points` ground hits in a 90 degree wedge 1-15 m
    ahead (denser near the camera, as image pixels are), 5 % of them with a NaN cost."""
    rng = np.random.default_rng(seed)
    grid = RollingCostGrid(params)
    warmup = 5
    add_times, occupancy_times, cells = [], [], []
    for frame in range(warmup + frames):
        t = frame / 15.0
        heading = 0.05 * t
        robot = np.array([1.5 * t * math.cos(heading), 1.5 * t * math.sin(heading)])
        rng_m = 1.0 / rng.uniform(1.0 / 15.0, 1.0, points)  # N, uniform in inverse range
        bearing = heading + rng.uniform(-math.pi / 4, math.pi / 4, points)  # N
        xy = robot + rng_m[:, None] * np.stack([np.cos(bearing), np.sin(bearing)], 1)  # N, 2
        cost = rng.uniform(0.0, 1.0, points).astype(np.float32)
        cost[rng.random(points) < 0.05] = np.nan
        confidence = rng.uniform(0.2, 1.0, points).astype(np.float32)
        range_m = rng_m.astype(np.float32)
        start = time.perf_counter()
        grid.follow(float(robot[0]), float(robot[1]))
        result = grid.add(t, xy, cost, confidence, range_m)
        middle = time.perf_counter()
        grid.to_occupancy(t)
        end = time.perf_counter()
        if frame >= warmup:
            add_times.append(middle - start)
            occupancy_times.append(end - middle)
            cells.append(result.cells)
    return GridBench(points, frames, 1e3 * float(np.median(add_times)),
                     1e3 * float(np.median(occupancy_times)), float(np.mean(cells)),
                     grid.nbytes)
