"""Traversal-cost signals from the robot's own sensing (ROS-free): IMU vibration and velocity
tracking.

IMU vibration (HDIF-style), `ImuTraversalCost`:
- Input: sensor_msgs/Imu samples, `add(stamp_ns, linear_acceleration, orientation)`, in the IMU
  frame. The accelerometer measures specific force, so a level IMU at rest reads +g on z.
- Vertical axis and gravity removal. With an orientation (the IMU frame in a gravity-aligned fixed
  frame, z up as REP 103/105, quaternion x, y, z, w as in sensor_msgs/Imu) the acceleration is
  projected on the gravity direction and g is subtracted: the result does not depend on how the
  IMU is tilted. Without one, the z axis of the base frame (REP 103: z up) is used, through the
  fixed rotation base <- imu (`rotation_base_imu`, identity by default), and gravity goes with
  the trend removal below (not a high-pass filter): exact while the tilt is constant over the
  window, and a slow tilt change is removed with it. A window whose samples all carry an
  orientation uses the projection; a window with any sample without one uses the base z axis.
- Band power: the window (`window_s`, default 1 s) ends at the last sample at or before the
  query time. It is put on a uniform grid at the window's median sample rate, anchored on that
  last sample: regular samples are used as they are, irregular ones are interpolated by a cubic
  spline. Its least-squares quadratic over the window is subtracted (gravity, sway, slow tilt:
  a 0.2 Hz sway leaves < 0.01 % of its power in the band). Welch's method (`welch_density`,
  the numbers of `scipy.signal.welch` in plain numpy: Hann segments of `segment_s`, default
  0.5 s, 50 % overlap, per-segment mean removed, one-sided density) gives the PSD; the band
  power is its integral over [f_low, f_high] (default 1-30 Hz; f_high clipped to the Nyquist
  frequency), each frequency bin weighted by the fraction of its width [f - df/2, f + df/2]
  inside the band. Units: (m/s^2)^2.
  A sine of amplitude A in the band gives A^2 / 2; white noise of variance s^2 gives
  s^2 * band width / (fs / 2).
- Cost: linear in log-power by default (`mapping='log'`): band power spans orders of magnitude
  between smooth and rough ground, and a ratio of powers is what a rougher surface changes.
  cost = (log p - log p0) / (log p1 - log p0), clipped to [0, 1], with p0 = `power_at_cost_0`
  and p1 = `power_at_cost_1` (`mapping='linear'`: the same in p). Pick p0, p1 from `calibrate`.
- Invalid windows (cost NaN, `reason` says why): no samples, the window starting before the
  oldest sample kept (`not_covered`), no sample for more than `max_gap_periods` sample periods
  (`gap`, also between the last sample and the query: `stale`), a rate too low for the band.
- Saturation: a sample with any axis at or above `saturation_mps2` in magnitude is counted and
  kept; a window holding one is marked `saturated` and its cost is `saturated_cost` (default 1.0:
  the clipped power is a lower bound, and vibration that saturates the accelerometer is the
  roughest ground there is; pass NaN to make such windows give no label).
- Dropped and counted (`counters`): duplicate stamps, out-of-order stamps, non-finite
  accelerations; a backward jump of more than `history_s` (a restarted clock, a bag loop) clears
  the buffer instead (`time_resets`). Memory is bounded: the last `history_s` seconds, at most
  `max_rate_hz * history_s` samples (older ones are evicted first: `overflow`).

Calibration: `calibrate(powers)` gives percentiles of band power over a drive; the calibration
command (wired to a bag later) prints them, and power_at_cost_0 = p5, power_at_cost_1 = p95 is a
starting point.

Velocity tracking (WVN-style), `velocity_tracking_cost`: 1 - clip(|v_meas| / |v_cmd|, 0, 1) when
|v_cmd| > `min_cmd`, else NaN (no label). `combine` merges the two signals: `max` (default) or a
weighted mean; a missing (NaN) signal leaves the other, both missing give NaN.

scipy is imported lazily (only irregular IMU sampling needs it: the spline resampling).
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

GRAVITY_MPS2 = 9.80665

# window reasons (CostSample.reason, BandPower.reason)
OK = 'ok'
SATURATED = 'saturated'  # valid power (a lower bound); cost is `saturated_cost`
NO_SAMPLES = 'no_samples'  # no sample kept at all
TOO_FEW_SAMPLES = 'too_few_samples'  # fewer than `min_samples` in the window
NOT_COVERED = 'not_covered'  # the window starts before the oldest sample kept
GAP = 'gap'  # no sample for more than max_gap_periods periods inside the window
STALE = 'stale'  # no sample for more than max_gap_periods periods before the query
RATE_TOO_LOW = 'rate_too_low'  # Nyquist frequency at or below f_low
VALID_REASONS = (OK, SATURATED)

MAPPINGS = ('log', 'linear')
RULES = ('max', 'weighted')
PERCENTILES = (5, 25, 50, 75, 95)


class BandPower(NamedTuple):
    power: float  # (m/s^2)^2 in [f_low, f_high]; NaN when the window is invalid
    n_samples: int  # IMU samples in the window
    rate_hz: float  # the window's median sample rate (the resampling rate); NaN if unknown
    reason: str  # OK, SATURATED or why the window is invalid


class CostSample(NamedTuple):
    cost: float  # in [0, 1]; NaN when the window is invalid
    power: float  # band power, (m/s^2)^2; NaN when the window is invalid
    n_samples: int
    reason: str


def power_to_cost(power: float | np.ndarray, power_at_cost_0: float, power_at_cost_1: float,
                  mapping: str = 'log') -> float | np.ndarray:
    """Band power -> cost in [0, 1], monotonic, clipped outside [p0, p1]; NaN stays NaN.

    'log': linear in log-power (p0 > 0); 'linear': linear in power. Scalars give a float.
    """
    _check_mapping(power_at_cost_0, power_at_cost_1, mapping)
    p = np.asarray(power, np.float64)
    if mapping == 'log':
        with np.errstate(divide='ignore', invalid='ignore'):
            x = np.log(np.maximum(p, 0.0))  # power 0 -> -inf -> cost 0
        lo, hi = math.log(power_at_cost_0), math.log(power_at_cost_1)
    else:
        x, lo, hi = p, power_at_cost_0, power_at_cost_1
    cost = np.clip((x - lo) / (hi - lo), 0.0, 1.0)  # NaN passes through clip
    return float(cost) if cost.ndim == 0 else cost


def _check_mapping(power_at_cost_0: float, power_at_cost_1: float, mapping: str) -> None:
    if mapping not in MAPPINGS:
        raise ValueError(f'mapping must be one of {MAPPINGS}, got {mapping!r}')
    p0, p1 = float(power_at_cost_0), float(power_at_cost_1)
    if not (math.isfinite(p0) and math.isfinite(p1) and p0 < p1):
        raise ValueError(f'need finite power_at_cost_0 < power_at_cost_1, got {p0}, {p1}')
    if mapping == 'log' and p0 <= 0:
        raise ValueError(f"mapping 'log' needs power_at_cost_0 > 0, got {p0}")
    if mapping == 'linear' and p0 < 0:
        raise ValueError(f"mapping 'linear' needs power_at_cost_0 >= 0, got {p0}")


def band_power(x: np.ndarray, fs: float, f_low: float, f_high: float,
               segment_s: float = 0.5) -> float:
    """Welch band power of a uniformly sampled signal x (N,) at fs Hz over [f_low, f_high]
    (f_high clipped to fs / 2), in x's units squared. Each PSD bin [f - df/2, f + df/2] counts by
    the fraction of it inside the band. Needs N >= 2 and f_low < fs / 2."""
    x = np.asarray(x, np.float64)
    if x.ndim != 1 or x.size < 2:
        raise ValueError(f'x must be 1-D with at least 2 samples, got shape {x.shape}')
    f_high = min(f_high, fs / 2.0)
    if not f_low < f_high:
        raise ValueError(f'empty band [{f_low}, {f_high}] Hz at fs = {fs} Hz')
    nperseg = max(2, min(x.size, int(round(segment_s * fs))))
    freqs, psd = welch_density(x, fs, nperseg)  # K, K
    df = freqs[1] - freqs[0]
    lo = np.maximum(freqs - df / 2, 0.0)
    hi = np.minimum(freqs + df / 2, fs / 2.0)
    inside = np.clip(np.minimum(hi, f_high) - np.maximum(lo, f_low), 0.0, None)  # K, Hz
    return float(np.sum(psd * inside))


@functools.lru_cache(maxsize=16)
def _hann(n: int) -> np.ndarray:
    """The periodic Hann window of n samples (scipy.signal.get_window('hann', n))."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


@functools.lru_cache(maxsize=16)
def _welch_plan(size: int, nperseg: int) -> tuple[np.ndarray, np.ndarray, float]:
    """What welch_density needs for a signal of `size` samples that does not depend on it:
    the segments' sample indices (count, nperseg), the window, and sum(window ** 2)."""
    window = _hann(nperseg)
    step = nperseg - nperseg // 2
    count = (size - nperseg // 2) // step  # whole segments only, as scipy (no padding)
    index = step * np.arange(count)[:, None] + np.arange(nperseg)  # count, nperseg
    return index, window, float(np.sum(window ** 2))


def welch_density(x: np.ndarray, fs: float, nperseg: int) -> tuple[np.ndarray, np.ndarray]:
    """Welch's one-sided power spectral density of x (N,): Hann segments of nperseg samples,
    50 % overlap, each segment's mean removed, periodograms averaged; (freqs (K,), psd (K,)).
    The same numbers as scipy.signal.welch(x, fs, 'hann', nperseg, nperseg // 2,
    detrend='constant', scaling='density') (test_supervision_traversal checks), in plain numpy:
    scipy's call costs ten times the arithmetic on a 1 s window, and this runs per label."""
    index, window, window_power = _welch_plan(x.size, nperseg)
    segments = x[index]  # count, nperseg
    segments = (segments - segments.mean(axis=1, keepdims=True)) * window
    power = np.abs(np.fft.rfft(segments, axis=1)) ** 2 / (fs * window_power)
    psd = power.mean(axis=0)  # K
    psd[1:-1 if nperseg % 2 == 0 else None] *= 2.0  # one-sided: all but DC (and Nyquist)
    return np.fft.rfftfreq(nperseg, 1.0 / fs), psd


def _median(values: np.ndarray) -> float:
    """np.median of a non-empty 1-D array without NaN, by partition (5x cheaper per call)."""
    n = values.size
    k = n // 2
    if n % 2:
        return float(np.partition(values, k)[k])
    part = np.partition(values, (k - 1, k))
    return (float(part[k - 1]) + float(part[k])) / 2.0


def _resample(t_rel: np.ndarray, signal: np.ndarray, dt_ns: float, n_grid: int) -> np.ndarray:
    """signal (n,) at times t_rel (n,) ns (increasing, the last at 0, the first at or before the
    grid start) -> (n_grid,) on the grid -dt * (n_grid - 1 ... 0). Samples already on the grid
    (regular sampling) are used as they are; otherwise a cubic spline (not-a-knot) interpolates:
    linear interpolation would lose several % of a 10 Hz vibration at 100 Hz with jitter."""
    grid = -dt_ns * np.arange(n_grid - 1, -1, -1, dtype=np.float64)  # n_grid, ns
    t = t_rel.astype(np.float64)
    if t.size >= n_grid and np.abs(t[-n_grid:] - grid).max() <= 0.01 * dt_ns:
        return signal[-n_grid:].astype(np.float64)
    from scipy.interpolate import make_interp_spline

    return make_interp_spline(t, signal, k=3)(grid)


@functools.lru_cache(maxsize=16)
def _quadratic_basis(n: int) -> np.ndarray:
    """(n, 3) orthonormal basis of {1, s, s^2} sampled at n uniform s in [-1, 1]."""
    s = np.linspace(-1.0, 1.0, n)
    q, _ = np.linalg.qr(np.stack([np.ones(n), s, s * s], axis=1))  # n, 3
    return q


def _remove_quadratic(x: np.ndarray) -> np.ndarray:
    """x (n,) minus its least-squares quadratic: removes gravity (without an orientation), slow
    tilt changes and sway (a 0.2 Hz sway leaves < 0.01 % of its power in a 1-30 Hz band, a 10 Hz
    vibration keeps all of it over a 1 s window)."""
    if x.size < 4:
        return x - x.mean()
    q = _quadratic_basis(x.size)  # n, 3
    return x - q @ (q.T @ x)


class _Ring:
    """Time-ordered samples in preallocated arrays (amortised O(1) append, contiguous views):
    stamps (n,) int64 ns, vertical (n,) gravity-removed vertical acceleration from the
    orientation (NaN without one), base_z (n,) base-frame z acceleration, saturated (n,) bool."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        size = 2 * capacity
        self._t = np.zeros(size, np.int64)
        self._vertical = np.zeros(size, np.float64)
        self._base_z = np.zeros(size, np.float64)
        self._saturated = np.zeros(size, bool)
        self._lo = 0
        self._hi = 0

    def __len__(self) -> int:
        return self._hi - self._lo

    def clear(self) -> None:
        self._lo = self._hi = 0

    def append(self, stamp_ns: int, vertical: float, base_z: float, saturated: bool) -> int:
        """Append one sample; returns how many of the oldest were evicted for room (0 or 1)."""
        evicted = 0
        if len(self) == self.capacity:
            self._lo += 1
            evicted = 1
        if self._hi == self._t.size:  # move the live part to the front
            n = len(self)
            for array in (self._t, self._vertical, self._base_z, self._saturated):
                array[:n] = array[self._lo:self._hi]
            self._lo, self._hi = 0, n
        i = self._hi
        self._t[i], self._vertical[i] = stamp_ns, vertical
        self._base_z[i], self._saturated[i] = base_z, saturated
        self._hi += 1
        return evicted

    def drop_before(self, stamp_ns: int) -> None:
        """Forget samples older than stamp_ns."""
        if self._hi == self._lo or self._t[self._lo] >= stamp_ns:
            return
        self._lo += int(np.searchsorted(self.stamps, stamp_ns, side='left'))

    @property
    def stamps(self) -> np.ndarray:
        return self._t[self._lo:self._hi]

    def columns(self, start: int, stop: int) -> tuple[np.ndarray, ...]:
        """stamps, vertical, base_z, saturated of live samples [start, stop)."""
        a, b = self._lo + start, self._lo + stop
        return self._t[a:b], self._vertical[a:b], self._base_z[a:b], self._saturated[a:b]


class ImuTraversalCost:
    """Sliding-window vertical vibration band power from sensor_msgs/Imu samples, mapped to a
    traversal cost in [0, 1] (module docstring: frames, gravity, Welch, mapping, reasons)."""

    def __init__(self, *, window_s: float = 1.0, f_low: float = 1.0, f_high: float = 30.0,
                 segment_s: float = 0.5, power_at_cost_0: float = 0.01,
                 power_at_cost_1: float = 1.0, mapping: str = 'log',
                 saturation_mps2: float = 156.9, saturated_cost: float = 1.0,
                 max_gap_periods: float = 3.0, min_samples: int = 16,
                 history_s: float = 3.0, max_rate_hz: float = 1000.0,
                 rotation_base_imu: np.ndarray | None = None,
                 gravity_mps2: float = GRAVITY_MPS2) -> None:
        _check_mapping(power_at_cost_0, power_at_cost_1, mapping)
        if not window_s > 0:
            raise ValueError(f'window_s must be > 0, got {window_s}')
        if not 0 < segment_s <= window_s:
            raise ValueError(f'segment_s must be in (0, window_s = {window_s}], got {segment_s}')
        if not 0 <= f_low < f_high:
            raise ValueError(f'need 0 <= f_low < f_high, got {f_low}, {f_high}')
        if not history_s >= window_s:
            raise ValueError(f'history_s ({history_s}) must be >= window_s ({window_s})')
        if not saturation_mps2 > 0:
            raise ValueError(f'saturation_mps2 must be > 0, got {saturation_mps2}')
        if not (math.isnan(saturated_cost) or 0.0 <= saturated_cost <= 1.0):
            raise ValueError(f'saturated_cost must be in [0, 1] or NaN, got {saturated_cost}')
        if not max_gap_periods >= 1:
            raise ValueError(f'max_gap_periods must be >= 1, got {max_gap_periods}')
        if not min_samples >= 4:
            raise ValueError(f'min_samples must be >= 4, got {min_samples}')
        if not max_rate_hz > 0:
            raise ValueError(f'max_rate_hz must be > 0, got {max_rate_hz}')
        rotation = np.eye(3) if rotation_base_imu is None else np.asarray(
            rotation_base_imu, np.float64)
        if rotation.shape != (3, 3) or not np.allclose(rotation @ rotation.T, np.eye(3),
                                                       atol=1e-6):
            raise ValueError('rotation_base_imu must be a 3x3 rotation matrix')
        self.window_s = float(window_s)
        self.f_low, self.f_high, self.segment_s = float(f_low), float(f_high), float(segment_s)
        self.power_at_cost_0, self.power_at_cost_1 = float(power_at_cost_0), float(
            power_at_cost_1)
        self.mapping = mapping
        self.saturation_mps2, self.saturated_cost = float(saturation_mps2), float(saturated_cost)
        self.max_gap_periods, self.min_samples = float(max_gap_periods), int(min_samples)
        self.history_ns = int(round(history_s * 1e9))
        self.gravity_mps2 = float(gravity_mps2)
        self._base_z_row = rotation[2].copy()  # (3,): z of the base frame in IMU coordinates
        self._ring = _Ring(max(int(math.ceil(history_s * max_rate_hz)), 2 * min_samples))
        self._last_ns: int | None = None
        self.counters: Counter[str] = Counter()

    @property
    def last_stamp_ns(self) -> int | None:
        """The newest sample's stamp (ns), None before the first."""
        return self._last_ns

    def reset(self) -> None:
        """Forget every sample (counters are kept)."""
        self._ring.clear()
        self._last_ns = None

    def add(self, stamp_ns: int, linear_acceleration: Sequence[float] | np.ndarray,
            orientation_xyzw: Sequence[float] | np.ndarray | None = None) -> bool:
        """One IMU sample: stamp (ns), linear_acceleration (3,) m/s^2 in the IMU frame,
        orientation (4,) x, y, z, w of the IMU frame in a gravity-aligned frame, or None
        (also pass None when the message's orientation_covariance[0] is -1).
        Returns False when the sample was dropped (counted)."""
        stamp_ns = int(stamp_ns)
        ax, ay, az = (float(v) for v in linear_acceleration)
        if not (math.isfinite(ax) and math.isfinite(ay) and math.isfinite(az)):
            self.counters['nonfinite'] += 1
            return False
        if self._last_ns is not None:
            if stamp_ns == self._last_ns:
                self.counters['duplicate'] += 1
                return False
            if stamp_ns < self._last_ns:
                if self._last_ns - stamp_ns <= self.history_ns:
                    self.counters['out_of_order'] += 1
                    return False
                self.counters['time_resets'] += 1
                self.reset()
        vertical = self._vertical(ax, ay, az, orientation_xyzw)
        zr = self._base_z_row
        base_z = zr[0] * ax + zr[1] * ay + zr[2] * az
        saturated = max(abs(ax), abs(ay), abs(az)) >= self.saturation_mps2
        if saturated:
            self.counters['saturated'] += 1
        self.counters['overflow'] += self._ring.append(stamp_ns, vertical, base_z, saturated)
        self._ring.drop_before(stamp_ns - self.history_ns)
        self._last_ns = stamp_ns
        self.counters['samples'] += 1
        return True

    def _vertical(self, ax: float, ay: float, az: float,
                  orientation_xyzw: Sequence[float] | np.ndarray | None) -> float:
        """Gravity-removed acceleration along the world vertical, NaN without a usable
        orientation (counted)."""
        if orientation_xyzw is None:
            self.counters['no_orientation'] += 1
            return math.nan
        x, y, z, w = (float(v) for v in orientation_xyzw)
        norm2 = x * x + y * y + z * z + w * w
        if not (math.isfinite(norm2) and norm2 > 0.25):  # all-zero = "no orientation"
            self.counters['invalid_orientation'] += 1
            return math.nan
        s = 2.0 / norm2  # the third row of the rotation world <- imu, for any scale of q
        r20, r21, r22 = s * (x * z - w * y), s * (y * z + w * x), 1.0 - s * (x * x + y * y)
        return r20 * ax + r21 * ay + r22 * az - self.gravity_mps2

    def power_at(self, stamp_ns: int) -> BandPower:
        """Band power over the window ending at the last sample at or before stamp_ns."""
        stamp_ns = int(stamp_ns)
        stamps = self._ring.stamps
        end = int(np.searchsorted(stamps, stamp_ns, side='right'))  # samples [0, end) <= query
        if end == 0:  # nothing kept at or before the query
            return self._invalid(NOT_COVERED if stamps.size else NO_SAMPLES, 0, math.nan)
        window_ns = self.window_s * 1e9
        t_end = int(stamps[end - 1])
        start = int(np.searchsorted(stamps, t_end - window_ns, side='right'))
        n_in = end - start  # samples in (t_end - window, t_end]
        if n_in < self.min_samples:
            return self._invalid(TOO_FEW_SAMPLES, n_in, math.nan)
        dt_ns = _median(np.diff(stamps[start:end]))
        rate_hz = 1e9 / dt_ns
        max_gap_ns = self.max_gap_periods * dt_ns
        if stamp_ns - t_end > max_gap_ns:
            return self._invalid(STALE, n_in, rate_hz)
        n_grid = max(2, int(round(window_ns / dt_ns)))
        grid_start = t_end - (n_grid - 1) * dt_ns
        first = max(start - 1, 0)  # one sample before the window, for interpolation
        if stamps[first] > grid_start + 0.5 * dt_ns:
            return self._invalid(NOT_COVERED, n_in, rate_hz)
        t, vertical, base_z, saturated = self._ring.columns(first, end)
        if np.diff(t).max() > max_gap_ns:
            return self._invalid(GAP, n_in, rate_hz)
        if rate_hz / 2.0 <= self.f_low:
            return self._invalid(RATE_TOO_LOW, n_in, rate_hz)
        # with an orientation: exact projection; otherwise base z (gravity goes with the trend)
        signal = base_z if np.isnan(vertical).any() else vertical
        x = _resample(t - t_end, signal, dt_ns, n_grid)  # n_grid, on the grid ending at t_end
        x = _remove_quadratic(x)  # gravity, sway and tilt changes below the band
        power = band_power(x, rate_hz, self.f_low, self.f_high, self.segment_s)
        reason = SATURATED if saturated[start - first:].any() else OK
        self.counters[f'window_{reason}'] += 1
        return BandPower(power, n_in, rate_hz, reason)

    def _invalid(self, reason: str, n_samples: int, rate_hz: float) -> BandPower:
        self.counters[f'window_{reason}'] += 1
        return BandPower(math.nan, n_samples, rate_hz, reason)

    def cost_at(self, stamp_ns: int) -> CostSample:
        """Cost of the window ending at the last sample at or before stamp_ns."""
        band = self.power_at(stamp_ns)
        if band.reason == SATURATED:
            cost = self.saturated_cost
        elif band.reason == OK:
            cost = float(power_to_cost(band.power, self.power_at_cost_0, self.power_at_cost_1,
                                       self.mapping))
        else:
            cost = math.nan
        return CostSample(cost, band.power, band.n_samples, band.reason)

    def cost_of_power(self, power: float | np.ndarray) -> float | np.ndarray:
        """This instance's power -> cost mapping."""
        return power_to_cost(power, self.power_at_cost_0, self.power_at_cost_1, self.mapping)


def calibrate(powers: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Percentiles of band power over a drive, for choosing power_at_cost_0 / _1.

    Returns {'n': finite powers used, 'nonfinite': NaN/inf dropped, 'p5', 'p25', 'p50', 'p75',
    'p95': percentiles in (m/s^2)^2, 'power_at_cost_0': p5, 'power_at_cost_1': p95 (a starting
    point: the smoothest 5 % of the drive costs 0, the roughest 5 % cost 1)}.
    """
    p = np.asarray(powers, np.float64).ravel()
    finite = p[np.isfinite(p)]
    if finite.size == 0:
        raise ValueError(f'no finite band power to calibrate from ({p.size} values given)')
    values = np.percentile(finite, PERCENTILES)
    result: dict[str, float] = {'n': int(finite.size), 'nonfinite': int(p.size - finite.size)}
    result.update({f'p{q}': float(v) for q, v in zip(PERCENTILES, values, strict=True)})
    result['power_at_cost_0'] = result['p5']
    result['power_at_cost_1'] = result['p95']
    return result


def velocity_tracking_cost(v_cmd: float | np.ndarray, v_meas: float | np.ndarray,
                           min_cmd: float = 0.1) -> float | np.ndarray:
    """1 - clip(|v_meas| / |v_cmd|, 0, 1) where |v_cmd| > min_cmd, else NaN (no label).

    Speeds in m/s, signed or not; scalars give a float, arrays broadcast. NaN inputs give NaN.
    """
    if not min_cmd >= 0:
        raise ValueError(f'min_cmd must be >= 0, got {min_cmd}')
    cmd = np.abs(np.asarray(v_cmd, np.float64))
    meas = np.abs(np.asarray(v_meas, np.float64))
    with np.errstate(divide='ignore', invalid='ignore'):
        ratio = meas / cmd
        cost = np.where(cmd > min_cmd, 1.0 - np.clip(ratio, 0.0, 1.0), np.nan)
    return float(cost) if cost.ndim == 0 else cost


def combine(imu_cost: float | np.ndarray, velocity_cost: float | np.ndarray, rule: str = 'max',
            weights: tuple[float, float] = (0.5, 0.5)) -> float | np.ndarray:
    """Merge the IMU and velocity-tracking costs: 'max' or 'weighted' (w_imu * imu + w_vel *
    vel) / (w_imu + w_vel). NaN-aware: where one is NaN the other is returned as it is (whatever
    the weights), both NaN give NaN. Scalars give a float, arrays broadcast."""
    if rule not in RULES:
        raise ValueError(f'rule must be one of {RULES}, got {rule!r}')
    w_imu, w_vel = (float(w) for w in weights)
    if rule == 'weighted' and not (w_imu >= 0 and w_vel >= 0 and w_imu + w_vel > 0):
        raise ValueError(f'weights must be >= 0 with a positive sum, got {weights}')
    a = np.asarray(imu_cost, np.float64)
    b = np.asarray(velocity_cost, np.float64)
    if rule == 'max':
        both = np.maximum(a, b)
    else:
        both = (w_imu * a + w_vel * b) / (w_imu + w_vel)
    out = np.where(np.isnan(a), b, np.where(np.isnan(b), a, both))
    return float(out) if out.ndim == 0 else out
