"""Replay's held-out metric on constructed cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from contrast_semask_ros.metrics import RegionError, accuracy, held_out_regions, spearman


def test_held_out_regions_compare_each_measured_patch_with_its_propagated_cost() -> None:
    mask = np.full((4, 6), np.nan, np.float32)
    mask[:2, :2] = 0.2  # region A: 4 pixels
    mask[2:, 3:] = 0.8  # region B: 6 pixels
    mask[0, 5] = 0.5  # region C: 1 pixel, all unknown below
    cost = np.full((4, 6), 0.3, np.float32)
    cost[2:, 3:] = [[0.6, 0.7, np.nan], [0.9, np.nan, np.nan]]  # B: 3 known of 6
    cost[0, 5] = np.nan
    a, b, c = sorted(held_out_regions(mask, cost))  # by measured cost
    np.testing.assert_allclose([a.measured, b.measured, c.measured], [0.2, 0.5, 0.8])
    b, c = c, b  # B measured 0.8, C measured 0.5
    assert a.predicted == pytest.approx(0.3) and a.known_fraction == 1.0
    assert b.predicted == pytest.approx(2.2 / 3) and b.known_fraction == 0.5  # 0.6, 0.7, 0.9
    assert math.isnan(c.predicted) and c.known_fraction == 0.0
    result = accuracy([a, b, c])
    # errors over the known regions: +0.1 (A) and 2.2/3 - 0.8 = -1/15 (B)
    assert result['regions'] == 3 and result['regions_unknown'] == 1
    assert result['mae'] == pytest.approx((0.1 + 1 / 15) / 2, abs=1e-6)
    assert result['rmse'] == pytest.approx(math.sqrt((0.01 + 1 / 225) / 2), abs=1e-6)
    assert result['spearman'] == pytest.approx(1.0)


def test_spearman_handles_ties_and_degenerate_input() -> None:
    assert spearman(np.array([1, 2, 3, 4.0]), np.array([10, 20, 30, 40.0])) == pytest.approx(1)
    assert spearman(np.array([1, 2, 3, 4.0]), np.array([4, 3, 2, 1.0])) == pytest.approx(-1)
    # ties get average ranks: x ranks [0.5, 0.5, 2, 3], y ranks [0, 1, 2, 3]
    expected = np.corrcoef([0.5, 0.5, 2, 3], [0, 1, 2, 3])[0, 1]
    assert spearman(np.array([1, 1, 2, 3.0]), np.array([1, 2, 3, 4.0])) == pytest.approx(
        expected)
    assert math.isnan(spearman(np.array([1.0]), np.array([2.0])))
    assert math.isnan(spearman(np.array([1, 1.0]), np.array([1, 2.0])))


def test_accuracy_without_known_regions_reports_counts_only() -> None:
    result = accuracy([RegionError(0.5, math.nan, 0.0)])
    assert result == {'regions': 1, 'regions_unknown': 1}
    with pytest.raises(ValueError, match='one size'):
        held_out_regions(np.zeros((2, 2)), np.zeros((2, 3)))


def test_skips_and_unmatched_patches_are_counted_by_reason() -> None:
    from contrast_semask_ros.metrics import Recorder

    rec = Recorder()
    assert rec.skip_summary() == ''
    rec.skip('undecodable /camera')
    rec.unmatched_patch('patch without its frame (dropped or not in the bag)')
    rec.unmatched_patch('patch without its frame (dropped or not in the bag)')
    rec.skip('/camera: listed in the bag but not read', 3)
    assert rec.patches == 0 and rec.patches_unmatched == 2
    assert rec.skip_summary() == (
        '6 message(s): /camera: listed in the bag but not read: 3; patch without its frame '
        '(dropped or not in the bag): 2; undecodable /camera: 1')
    summary = rec.summary()
    assert summary['patches_unmatched'] == 2 and sum(summary['skipped'].values()) == 6
