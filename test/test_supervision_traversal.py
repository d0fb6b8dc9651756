"""Traversal-cost signals (contrast_semask_ros/supervision/traversal.py): IMU band power known
answers (sines, sway, white noise, tilt, rates, jitter), invalid windows and counters, the
power -> cost mapping, calibration, velocity tracking and the combination rule."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from contrast_semask_ros.supervision.traversal import (
    GAP,
    NO_SAMPLES,
    NOT_COVERED,
    OK,
    RATE_TOO_LOW,
    SATURATED,
    STALE,
    TOO_FEW_SAMPLES,
    CostSample,
    ImuTraversalCost,
    band_power,
    calibrate,
    combine,
    power_to_cost,
    velocity_tracking_cost,
    welch_density,
)

G = 9.81
SEC = 1_000_000_000
T0 = 5 * SEC  # an arbitrary non-zero start stamp


def _sine(amplitude: float, freq: float, phase: float = 0.3) -> Callable[[np.ndarray], np.ndarray]:
    return lambda t: amplitude * np.sin(2 * np.pi * freq * t + phase)


def _stamps(rate_hz: float, duration_s: float, jitter: float = 0.0,
            seed: int = 0) -> np.ndarray:
    """Stamps (n,) ns from T0; jitter: uniform +- that fraction of a period."""
    n = int(round(rate_hz * duration_s))
    t = np.arange(n) / rate_hz
    if jitter:
        t = t + np.random.default_rng(seed).uniform(-jitter, jitter, n) / rate_hz
    return T0 + np.round(t * 1e9).astype(np.int64)


def _feed(imu: ImuTraversalCost, stamps: np.ndarray,
          vertical: Callable[[np.ndarray], np.ndarray],
          rotation_imu_world: Rotation | None = None, orientation: bool = False) -> None:
    """A vertical (world z) specific force g + vertical(t), seen by an IMU whose frame is
    rotated by rotation_world_imu = rotation_imu_world.inv() (identity if None)."""
    t = (stamps - T0) / 1e9
    force_world = np.zeros((t.size, 3))  # n, 3
    force_world[:, 2] = G + vertical(t)
    r = Rotation.identity() if rotation_imu_world is None else rotation_imu_world
    force_imu = r.apply(force_world)  # n, 3
    quat = r.inv().as_quat()  # x, y, z, w of the IMU frame in the world
    for stamp, accel in zip(stamps, force_imu, strict=True):
        imu.add(int(stamp), accel, quat if orientation else None)


VIBRATION = _sine(0.8, 10.0)  # power 0.32


def _power(rate_hz: float = 200.0, signal: Callable[[np.ndarray], np.ndarray] = VIBRATION,
           jitter: float = 0.0, **kwargs) -> float:
    imu = ImuTraversalCost(gravity_mps2=G, **kwargs)
    stamps = _stamps(rate_hz, 2.0, jitter)
    _feed(imu, stamps, signal)
    band = imu.power_at(int(stamps[-1]))
    assert band.reason == OK, band
    return band.power


# --- band power known answers


def test_sine_in_band_gives_half_amplitude_squared() -> None:
    amplitude = 0.8
    assert _power(signal=_sine(amplitude, 10.0)) == pytest.approx(amplitude**2 / 2, rel=0.02)
    for freq in (5.0, 17.0, 25.0):  # anywhere well inside the 1-30 Hz band
        assert _power(signal=_sine(amplitude, freq)) == pytest.approx(amplitude**2 / 2, rel=0.03)


def test_sway_below_the_band_contributes_almost_nothing() -> None:
    sway = _sine(1.0, 0.2, phase=1.0)
    for phase in np.linspace(0.0, 2 * np.pi, 8, endpoint=False):
        sway = _sine(1.0, 0.2, phase)
        assert _power(signal=sway) < 1e-3 * 0.5  # < 0.1 % of the sway's own power
    both = _power(signal=lambda t: sway(t) + _sine(0.8, 10.0)(t))
    assert both == pytest.approx(0.32, rel=0.03)


def test_white_noise_gives_variance_times_band_fraction() -> None:
    rate, sigma, seconds = 200.0, 0.5, 60
    imu = ImuTraversalCost(gravity_mps2=G)
    stamps = _stamps(rate, seconds)
    noise = np.random.default_rng(1).normal(0.0, sigma, stamps.size)
    powers = []
    for i, stamp in enumerate(stamps):
        imu.add(int(stamp), (0.0, 0.0, G + noise[i]))
        if (i + 1) % int(rate) == 0:  # one query per second, non-overlapping windows
            powers.append(imu.power_at(int(stamp)).power)
    expected = sigma**2 * (30.0 - 1.0) / (rate / 2)
    assert len(powers) == seconds
    assert np.mean(powers) == pytest.approx(expected, rel=0.1)


def test_band_power_function_clips_f_high_to_nyquist() -> None:
    fs, amplitude = 50.0, 1.0
    t = np.arange(100) / fs
    x = amplitude * np.sin(2 * np.pi * 20.0 * t)
    # f_high 30 Hz is above Nyquist (25 Hz): the band is [1, 25] and still holds the sine
    assert band_power(x, fs, 1.0, 30.0) == pytest.approx(amplitude**2 / 2, rel=0.05)
    with pytest.raises(ValueError, match='empty band'):
        band_power(x, fs, 26.0, 30.0)


# --- frames: orientation and the base <- imu rotation


def test_tilted_imu_with_orientation_gives_the_same_vertical_power() -> None:
    stamps = _stamps(200.0, 2.0)
    level = ImuTraversalCost(gravity_mps2=G)
    _feed(level, stamps, _sine(0.8, 10.0), orientation=True)
    tilt = Rotation.from_euler('xyz', [25.0, -15.0, 60.0], degrees=True)
    tilted = ImuTraversalCost(gravity_mps2=G)
    _feed(tilted, stamps, _sine(0.8, 10.0), rotation_imu_world=tilt, orientation=True)
    p_level = level.power_at(int(stamps[-1])).power
    p_tilted = tilted.power_at(int(stamps[-1])).power
    assert p_level == pytest.approx(0.32, rel=0.02)
    assert p_tilted == pytest.approx(p_level, rel=1e-6)
    # without orientation the IMU's z axis (the base z here) sees cos(tilt) of the vibration
    blind = ImuTraversalCost(gravity_mps2=G)
    _feed(blind, stamps, _sine(0.8, 10.0), rotation_imu_world=tilt)
    cos_tilt = tilt.apply([0.0, 0.0, 1.0])[2]
    assert blind.power_at(int(stamps[-1])).power == pytest.approx(p_level * cos_tilt**2, rel=1e-6)
    assert blind.counters['no_orientation'] == stamps.size


def test_rotation_base_imu_maps_the_imu_axes_to_base_z() -> None:
    # the IMU is mounted with its x axis along the base z axis (pitched -90 deg)
    mount = Rotation.from_euler('y', -90.0, degrees=True)  # base <- imu
    assert np.allclose(mount.apply([1.0, 0.0, 0.0]), [0.0, 0.0, 1.0])
    stamps = _stamps(200.0, 2.0)
    imu = ImuTraversalCost(gravity_mps2=G, rotation_base_imu=mount.as_matrix())
    _feed(imu, stamps, _sine(0.8, 10.0), rotation_imu_world=mount.inv())  # level base
    assert imu.power_at(int(stamps[-1])).power == pytest.approx(0.32, rel=0.02)
    with pytest.raises(ValueError, match='rotation'):
        ImuTraversalCost(rotation_base_imu=np.ones((3, 3)))


def test_all_zero_quaternion_means_no_orientation() -> None:
    imu = ImuTraversalCost(gravity_mps2=G)
    stamps = _stamps(200.0, 2.0)
    for i, stamp in enumerate(stamps):
        accel = (0.0, 0.0, G + 0.8 * math.sin(2 * math.pi * 10.0 * (stamp - T0) / 1e9))
        imu.add(int(stamp), accel, (0.0, 0.0, 0.0, 0.0) if i % 2 else (0.0, 0.0, 0.0, 1.0))
    assert imu.counters['invalid_orientation'] == stamps.size // 2
    band = imu.power_at(int(stamps[-1]))  # mixed window: base z with the mean removed
    assert band.reason == OK and band.power == pytest.approx(0.32, rel=0.02)


# --- rates and timing


def test_rates_100_200_400_give_the_same_power() -> None:
    powers = [_power(rate_hz=rate) for rate in (100.0, 200.0, 400.0)]
    assert powers == pytest.approx([0.32] * 3, rel=0.02)
    assert max(powers) - min(powers) < 0.01 * 0.32


@pytest.mark.parametrize('rate_hz', [100.0, 200.0, 400.0])
def test_jittered_stamps_are_resampled(rate_hz: float) -> None:
    power = _power(rate_hz=rate_hz, jitter=0.25)
    assert power == pytest.approx(0.32, rel=0.02)


def test_window_rate_is_reported() -> None:
    imu = ImuTraversalCost()
    stamps = _stamps(400.0, 1.5)
    _feed(imu, stamps, _sine(0.5, 10.0))
    band = imu.power_at(int(stamps[-1]))
    assert band.rate_hz == pytest.approx(400.0, rel=1e-6)
    assert band.n_samples == 400


# --- invalid windows, drops and counters


def test_gap_makes_the_window_invalid_until_it_has_passed() -> None:
    imu = ImuTraversalCost(gravity_mps2=G, history_s=5.0)
    stamps = _stamps(200.0, 4.0)
    t = (stamps - T0) / 1e9
    keep = ~((t >= 2.0) & (t < 2.05))  # 10 periods without a sample
    _feed(imu, stamps[keep], _sine(0.8, 10.0))
    at = T0 + int(2.5 * SEC)
    sample = imu.cost_at(at)
    assert sample.reason == GAP and math.isnan(sample.cost) and math.isnan(sample.power)
    assert imu.cost_at(T0 + int(1.9 * SEC)).reason == OK  # before the gap
    assert imu.cost_at(T0 + int(3.2 * SEC)).reason == OK  # the window has left the gap
    assert imu.counters['window_gap'] == 1


def test_three_missing_periods_is_not_a_gap_but_more_is() -> None:
    stamps = _stamps(100.0, 2.0)
    for missing, reason in ((2, OK), (4, GAP)):
        imu = ImuTraversalCost(gravity_mps2=G, max_gap_periods=3.0)
        drop = np.zeros(stamps.size, bool)
        drop[150:150 + missing] = True  # a step of missing + 1 periods
        _feed(imu, stamps[~drop], _sine(0.8, 10.0))
        assert imu.power_at(int(stamps[-1])).reason == reason


def test_stale_not_covered_and_empty_windows() -> None:
    imu = ImuTraversalCost()
    assert imu.cost_at(T0).reason == NO_SAMPLES
    stamps = _stamps(200.0, 2.0)
    _feed(imu, stamps[:100], _sine(0.8, 10.0))  # 0.5 s: shorter than the window
    assert imu.power_at(int(stamps[99])).reason == NOT_COVERED
    _feed(imu, stamps[100:], _sine(0.8, 10.0))
    assert imu.power_at(T0 - SEC).reason == NOT_COVERED  # before the first sample
    assert imu.power_at(int(stamps[-1]) + 10 * 5_000_000).reason == STALE  # 10 periods late
    assert imu.power_at(int(stamps[-1]) + 2 * 5_000_000).reason == OK  # 2 periods late
    assert imu.power_at(int(stamps[5])).reason == TOO_FEW_SAMPLES
    assert imu.counters['window_stale'] == 1 and imu.counters['window_not_covered'] == 2


def test_rate_too_low_for_the_band() -> None:
    imu = ImuTraversalCost(f_low=20.0, f_high=30.0)
    stamps = _stamps(40.0, 2.0)  # Nyquist 20 Hz
    _feed(imu, stamps, _sine(0.8, 5.0))
    assert imu.cost_at(int(stamps[-1])).reason == RATE_TOO_LOW


def test_duplicate_and_out_of_order_stamps_are_dropped_and_counted() -> None:
    stamps = _stamps(200.0, 2.0)
    clean = ImuTraversalCost(gravity_mps2=G)
    _feed(clean, stamps, _sine(0.8, 10.0))
    messy = ImuTraversalCost(gravity_mps2=G)
    for i, stamp in enumerate(stamps):
        accel = (0.0, 0.0, G + 0.8 * math.sin(2 * math.pi * 10.0 * (stamp - T0) / 1e9 + 0.3))
        assert messy.add(int(stamp), accel)
        if i % 10 == 5:
            assert not messy.add(int(stamp), (0.0, 0.0, 100.0))  # duplicate
        if i % 10 == 7:
            assert not messy.add(int(stamps[i - 3]), (0.0, 0.0, -50.0))  # out of order
    assert messy.counters['duplicate'] == 40 and messy.counters['out_of_order'] == 40
    assert messy.counters['samples'] == stamps.size
    at = int(stamps[-1])
    assert messy.power_at(at).power == pytest.approx(clean.power_at(at).power, rel=1e-12)


def test_nonfinite_accelerations_are_dropped_and_counted() -> None:
    imu = ImuTraversalCost()
    assert not imu.add(T0, (math.nan, 0.0, G))
    assert not imu.add(T0 + 1, (0.0, math.inf, G))
    assert imu.add(T0 + 2, (0.0, 0.0, G))
    assert imu.counters['nonfinite'] == 2 and imu.counters['samples'] == 1


def test_saturated_samples_are_counted_and_mark_the_window() -> None:
    stamps = _stamps(200.0, 4.0)
    for saturated_cost in (1.0, math.nan):
        imu = ImuTraversalCost(gravity_mps2=G, saturation_mps2=50.0,
                               saturated_cost=saturated_cost)
        for i, stamp in enumerate(stamps):
            z = 60.0 if i == 300 else G + 0.01 * math.sin(i)  # one clipped sample at 1.5 s
            imu.add(int(stamp), (0.0, 0.0, z))
        assert imu.counters['saturated'] == 1
        sample = imu.cost_at(T0 + 2 * SEC)
        assert sample.reason == SATURATED and math.isfinite(sample.power)
        assert sample.cost == saturated_cost or (math.isnan(saturated_cost)
                                                 and math.isnan(sample.cost))
        later = imu.cost_at(T0 + int(3.5 * SEC))
        assert later.reason == OK and later.cost == 0.0
    # any axis counts: the limit is per axis, like an accelerometer's range
    imu = ImuTraversalCost(saturation_mps2=50.0)
    imu.add(T0, (-50.0, 0.0, G))
    assert imu.counters['saturated'] == 1


def test_memory_is_bounded_and_old_samples_are_forgotten() -> None:
    imu = ImuTraversalCost(history_s=2.0)
    stamps = _stamps(400.0, 20.0)
    _feed(imu, stamps, _sine(0.8, 10.0))
    assert len(imu._ring) <= 2.0 * 400 + 1
    assert imu.power_at(int(stamps[-1])).reason == OK
    assert imu.power_at(int(stamps[-1]) - 3 * SEC).reason == NOT_COVERED
    small = ImuTraversalCost(history_s=2.0, max_rate_hz=100.0)  # 200 samples at most
    _feed(small, stamps[:1000], _sine(0.8, 10.0))
    assert len(small._ring) == 200 and small.counters['overflow'] == 800


def test_a_large_backward_jump_resets_the_buffer() -> None:
    imu = ImuTraversalCost(history_s=3.0)
    stamps = _stamps(200.0, 2.0)
    _feed(imu, stamps, _sine(0.8, 10.0))
    assert imu.add(T0 - 10 * SEC, (0.0, 0.0, G))  # clock restarted
    assert imu.counters['time_resets'] == 1 and len(imu._ring) == 1
    assert imu.counters['out_of_order'] == 0


# --- power -> cost


@pytest.mark.parametrize('mapping', ['log', 'linear'])
def test_mapping_end_points_clipping_and_monotonic(mapping: str) -> None:
    p0, p1 = 0.02, 2.0
    assert power_to_cost(p0, p0, p1, mapping) == 0.0
    assert power_to_cost(p1, p0, p1, mapping) == 1.0
    assert power_to_cost(p0 / 10, p0, p1, mapping) == 0.0
    assert power_to_cost(0.0, p0, p1, mapping) == 0.0
    assert power_to_cost(p1 * 10, p0, p1, mapping) == 1.0
    assert math.isnan(power_to_cost(math.nan, p0, p1, mapping))
    powers = np.geomspace(1e-4, 100.0, 200)
    costs = power_to_cost(powers, p0, p1, mapping)
    assert costs.shape == (200,) and np.all(np.diff(costs) >= 0)
    assert costs.min() == 0.0 and costs.max() == 1.0


def test_log_mapping_is_linear_in_log_power() -> None:
    assert power_to_cost(0.2, 0.02, 2.0, 'log') == pytest.approx(0.5)  # geometric midpoint
    assert power_to_cost(1.01, 0.02, 2.0, 'linear') == pytest.approx(0.5)  # arithmetic one


def test_mapping_parameters_are_validated() -> None:
    with pytest.raises(ValueError, match='power_at_cost_0 < power_at_cost_1'):
        power_to_cost(1.0, 2.0, 1.0)
    with pytest.raises(ValueError, match="'log' needs power_at_cost_0 > 0"):
        power_to_cost(1.0, 0.0, 1.0, 'log')
    assert power_to_cost(0.5, 0.0, 1.0, 'linear') == 0.5
    with pytest.raises(ValueError, match='mapping must be'):
        ImuTraversalCost(mapping='sqrt')


def test_cost_at_applies_the_mapping() -> None:
    imu = ImuTraversalCost(gravity_mps2=G, power_at_cost_0=0.032, power_at_cost_1=3.2)
    stamps = _stamps(200.0, 2.0)
    _feed(imu, stamps, _sine(0.8, 10.0))  # power 0.32: the geometric midpoint
    sample = imu.cost_at(int(stamps[-1]))
    assert isinstance(sample, CostSample)
    assert sample.reason == OK and sample.n_samples == 200
    assert sample.cost == pytest.approx(0.5, abs=0.01)
    assert sample.cost == imu.cost_of_power(sample.power)


def test_constructor_rejects_bad_parameters() -> None:
    for kwargs in ({'window_s': 0.0}, {'segment_s': 2.0}, {'f_low': 30.0, 'f_high': 1.0},
                   {'history_s': 0.5}, {'saturated_cost': 2.0}, {'max_gap_periods': 0.5},
                   {'min_samples': 2}, {'saturation_mps2': 0.0}):
        with pytest.raises(ValueError):
            ImuTraversalCost(**kwargs)


# --- calibration


def test_calibrate_returns_percentiles_and_a_starting_mapping() -> None:
    powers = np.concatenate([np.arange(1.0, 102.0), [np.nan, np.inf]])
    result = calibrate(powers)
    assert result['n'] == 101 and result['nonfinite'] == 2
    assert [result[f'p{q}'] for q in (5, 25, 50, 75, 95)] == [6.0, 26.0, 51.0, 76.0, 96.0]
    assert result['power_at_cost_0'] == 6.0 and result['power_at_cost_1'] == 96.0
    with pytest.raises(ValueError, match='no finite band power'):
        calibrate([math.nan])


# --- velocity tracking and combination


def test_velocity_tracking_cost_known_answers() -> None:
    assert velocity_tracking_cost(1.0, 0.5) == pytest.approx(0.5)
    assert velocity_tracking_cost(1.0, 1.5) == 0.0  # faster than commanded
    assert velocity_tracking_cost(-1.0, -0.25) == pytest.approx(0.75)  # reversing
    assert velocity_tracking_cost(2.0, 0.0) == 1.0  # stuck
    assert math.isnan(velocity_tracking_cost(0.05, 0.0))  # no command: no label
    assert math.isnan(velocity_tracking_cost(0.1, 0.0))  # at the threshold: no label
    assert velocity_tracking_cost(0.1, 0.05, min_cmd=0.05) == pytest.approx(0.5)
    assert math.isnan(velocity_tracking_cost(1.0, math.nan))
    assert math.isnan(velocity_tracking_cost(math.nan, 1.0))
    assert isinstance(velocity_tracking_cost(1.0, 0.5), float)
    costs = velocity_tracking_cost(np.array([1.0, 0.0, 2.0]), np.array([0.5, 0.3, 2.0]))
    assert costs.shape == (3,)
    np.testing.assert_allclose(costs, [0.5, np.nan, 0.0])
    with pytest.raises(ValueError, match='min_cmd'):
        velocity_tracking_cost(1.0, 1.0, min_cmd=-1.0)


def test_combine_known_answers_and_nan_handling() -> None:
    assert combine(0.2, 0.7) == 0.7
    assert combine(0.2, 0.7, rule='weighted') == pytest.approx(0.45)
    assert combine(0.2, 0.7, rule='weighted', weights=(3.0, 1.0)) == pytest.approx(0.325)
    for rule in ('max', 'weighted'):
        assert combine(math.nan, 0.7, rule=rule) == 0.7
        assert combine(0.2, math.nan, rule=rule, weights=(0.0, 1.0)) == 0.2
        assert math.isnan(combine(math.nan, math.nan, rule=rule))
    out = combine(np.array([0.1, np.nan, 0.5, np.nan]), np.array([0.3, 0.4, np.nan, np.nan]))
    np.testing.assert_allclose(out, [0.3, 0.4, 0.5, np.nan])
    with pytest.raises(ValueError, match='rule'):
        combine(0.1, 0.2, rule='min')
    with pytest.raises(ValueError, match='weights'):
        combine(0.1, 0.2, rule='weighted', weights=(0.0, 0.0))


@pytest.mark.parametrize(('n', 'nperseg'), [(200, 100), (201, 100), (100, 33), (401, 101),
                                             (16, 16)])
def test_welch_density_is_scipys_welch(n: int, nperseg: int):
    from scipy.signal import welch

    x = np.random.default_rng(n).standard_normal(n) * 3 + 1
    freqs, psd = welch(x, fs=200.0, window='hann', nperseg=nperseg, noverlap=nperseg // 2,
                       detrend='constant', scaling='density')
    mine_freqs, mine = welch_density(x, 200.0, nperseg)
    np.testing.assert_allclose(mine_freqs, freqs)
    np.testing.assert_allclose(mine, psd, rtol=1e-10, atol=1e-14)
