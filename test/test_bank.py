"""Prototype bank: prototypes from patch masks, merging, eviction, persistence, propagation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from contrast_semask_ros import bank as bank_module
from contrast_semask_ros.bank import (
    AddResult,
    BankError,
    PrototypeBank,
    mask_to_grid,
    prototypes_from_patch,
)
from contrast_semask_ros.propagation import propagate_cost

NAN = np.float32('nan')


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v, axis=0, keepdims=True)


def _embedding(rng: np.random.Generator, D: int = 8, h: int = 6, w: int = 8) -> np.ndarray:
    return _unit(rng.normal(size=(D, h, w))).astype(np.float32)  # D, h, w unit-norm


def _expected(emb: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """The renormalised mean of emb over a boolean (h, w) cell mask, by hand."""
    vectors = emb[:, cells]  # D, n
    mean = vectors.sum(axis=1) / vectors.shape[1]
    return mean / np.sqrt((mean ** 2).sum())


def test_two_regions_give_their_renormalised_masked_means() -> None:
    emb = _embedding(np.random.default_rng(0))
    mask = np.full((6, 8), NAN, np.float32)
    mask[0:3, 0:4] = 0.25
    mask[3:6, 4:8] = 0.75
    patch = prototypes_from_patch(mask, emb, min_pixels=4)
    assert len(patch.regions) == 2
    assert (patch.skipped_small, patch.skipped_nonfinite, patch.skipped_excess,
            patch.skipped_degenerate) == (0, 0, 0, 0)
    low, high = patch.regions
    assert (low.cost, low.pixel_count, high.cost, high.pixel_count) == (0.25, 12, 0.75, 12)
    np.testing.assert_allclose(low.prototype, _expected(emb, mask == np.float32(0.25)),
                               atol=1e-6)
    np.testing.assert_allclose(high.prototype, _expected(emb, mask == np.float32(0.75)),
                               atol=1e-6)
    assert low.prototype.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(low.prototype), 1.0, atol=1e-6)


def test_nan_is_no_measurement() -> None:
    emb = _embedding(np.random.default_rng(1))
    assert prototypes_from_patch(np.full((6, 8), NAN, np.float32), emb).regions == []
    mask = np.full((6, 8), NAN, np.float32)
    mask[:, :2] = 3.0  # 12 cells; the NaN cells do not join or dilute the region
    (region,) = prototypes_from_patch(mask, emb, min_pixels=12).regions
    assert region.pixel_count == 12
    np.testing.assert_allclose(region.prototype, _expected(emb, mask == 3.0), atol=1e-6)


def test_small_regions_are_skipped_and_counted() -> None:
    emb = _embedding(np.random.default_rng(2))
    mask = np.full((6, 8), NAN, np.float32)
    mask[0, 0:3] = 1.0  # 3 cells
    mask[2:4, 2:4] = 2.0  # 4 cells
    patch = prototypes_from_patch(mask, emb, min_pixels=4)
    assert [r.cost for r in patch.regions] == [2.0] and patch.skipped_small == 1


def test_mask_at_four_times_the_grid_maps_onto_the_right_cells() -> None:
    emb = _embedding(np.random.default_rng(3), D=8, h=5, w=7)
    mask = np.full((20, 28), NAN, np.float32)  # camera size = 4x the stride-4 grid
    mask[4:12, 12:24] = 0.5  # grid rows 1..2, cols 3..5
    (region,) = prototypes_from_patch(mask, emb, min_pixels=1).regions
    cells = np.zeros((5, 7), bool)
    cells[1:3, 3:6] = True
    assert region.pixel_count == 6
    np.testing.assert_allclose(region.prototype, _expected(emb, cells), atol=1e-6)


def test_grid_resize_matches_opencv_nearest_exact() -> None:
    cv2 = pytest.importorskip('cv2')
    mask = np.random.default_rng(4).random((37, 53)).astype(np.float32)
    mask[::5] = NAN
    for h, w in [(10, 14), (9, 13), (37, 53), (80, 90)]:
        ours = mask_to_grid(mask, h, w)
        ref = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
        np.testing.assert_array_equal(ours, ref)


def test_infinite_costs_are_skipped_and_counted() -> None:
    emb = _embedding(np.random.default_rng(5))
    mask = np.full((6, 8), NAN, np.float32)
    mask[:3] = np.inf
    mask[3:, :2] = -np.inf
    mask[3:, 4:] = 1.0
    patch = prototypes_from_patch(mask, emb, min_pixels=4)
    assert [r.cost for r in patch.regions] == [1.0] and patch.skipped_nonfinite == 2
    bank = PrototypeBank(8, 4, min_pixels=4)
    assert bank.add_patch(mask, emb, 7) == AddResult(1, 0, 0, 0, 2)
    assert np.isfinite(bank.as_bank().costs).all()


def test_distinct_values_are_capped_to_the_largest_regions() -> None:
    emb = _embedding(np.random.default_rng(6), h=10, w=10)
    mask = np.full((10, 10), NAN, np.float32)
    for row, (cost, width) in enumerate([(0.1, 2), (0.2, 9), (0.3, 3), (0.4, 8), (0.5, 4)]):
        mask[row, :width] = cost
    patch = prototypes_from_patch(mask, emb, min_pixels=1, max_regions=2)
    assert [r.cost for r in patch.regions] == [np.float32(0.2), np.float32(0.4)]
    assert patch.skipped_excess == 3
    noise = np.random.default_rng(7).random((10, 10)).astype(np.float32)  # 100 distinct values
    patch = prototypes_from_patch(noise, emb, min_pixels=1, max_regions=64)
    assert len(patch.regions) == 64 and patch.skipped_excess == 36


def test_degenerate_region_mean_is_skipped() -> None:
    emb = np.zeros((2, 2, 2), np.float32)
    emb[0, 0, 0], emb[0, 0, 1] = 1.0, -1.0  # the two cells cancel out
    emb[1, 1, :] = 1.0
    mask = np.array([[1.0, 1.0], [2.0, 2.0]], np.float32)
    patch = prototypes_from_patch(mask, emb, min_pixels=1)
    assert [r.cost for r in patch.regions] == [2.0] and patch.skipped_degenerate == 1


def test_merging_keeps_a_count_weighted_running_mean() -> None:
    bank = PrototypeBank(3, 8, merge_similarity=0.9)
    p1 = _unit([1.0, 0.0, 0.0])
    p2 = _unit([1.0, 0.2, 0.0])  # cos 0.98 with p1
    p3 = _unit([1.0, 0.0, 0.3])
    assert bank.add(p1, 1.0, 10) == AddResult(1, 0, 0, 0)
    assert bank.add(p2, 3.0, 30) == AddResult(0, 1, 0, 0)
    assert bank.costs.tolist() == [2.0] and bank.counts.tolist() == [2]
    merged = _unit(1 * p1 + p2)
    np.testing.assert_allclose(bank.as_bank().prototypes[0], merged, atol=1e-6)
    assert bank.add(p3, 5.0, 20) == AddResult(0, 1, 0, 0)
    np.testing.assert_allclose(bank.costs, [3.0])
    np.testing.assert_allclose(bank.as_bank().prototypes[0], _unit(2 * merged + p3), atol=1e-6)
    assert bank.counts.tolist() == [3] and bank.stamps_ns.tolist() == [30]  # the newest stamp
    assert bank.add(_unit([0.0, 1.0, 0.0]), 9.0, 40) == AddResult(1, 0, 0, 0)  # dissimilar
    assert len(bank) == 2
    identical = PrototypeBank(3, 8, merge_similarity=1.0)
    identical.add(p2, 1.0, 1)
    assert identical.add(p2.copy(), 2.0, 2).merged == 1  # float tolerance at exactly 1.0
    assert PrototypeBank(3, 8).add(p1, 1.0, 1).added == 1  # no merging by default


def test_oldest_eviction_goes_by_stamp() -> None:
    bank = PrototypeBank(2, 3, eviction='oldest')
    basis = np.eye(2)
    for cost, stamp in [(1.0, 30), (2.0, 10), (3.0, 20)]:  # out of order
        bank.add(basis[0] + cost, cost, stamp)
    assert bank.add(basis[1], 4.0, 40) == AddResult(1, 0, 0, 1)
    assert bank.costs.tolist() == [1.0, 3.0, 4.0]  # stamp 10 went; the rest keep their order
    assert bank.add(basis[1], 5.0, 50).evicted == 1
    assert bank.stamps_ns.tolist() == [30, 40, 50]


def test_merging_refreshes_the_stamp_for_oldest_eviction() -> None:
    bank = PrototypeBank(2, 2, merge_similarity=0.99)
    a, b, c = _unit([1.0, 0.0]), _unit([0.0, 1.0]), _unit([-1.0, 0.0])
    bank.add(a, 1.0, 10)
    bank.add(b, 2.0, 20)
    bank.add(a, 1.0, 30)  # re-measured: a is now the newest
    bank.add(c, 3.0, 40)
    assert bank.costs.tolist() == [1.0, 3.0]  # b went


def test_least_used_eviction_goes_by_count_then_stamp() -> None:
    bank = PrototypeBank(2, 3, merge_similarity=0.99, eviction='least_used')
    a, b, c = _unit([1.0, 0.0]), _unit([0.0, 1.0]), _unit([-1.0, 0.0])
    bank.add(a, 1.0, 10)
    bank.add(a, 1.0, 11)
    bank.add(b, 2.0, 20)
    bank.add(b, 2.0, 21)
    bank.add(c, 3.0, 30)  # count 1: the least used
    assert bank.add(_unit([0.0, -1.0]), 4.0, 40).evicted == 1
    assert bank.costs.tolist() == [1.0, 2.0, 4.0]
    assert bank.counts.tolist() == [2, 2, 1]


def test_as_bank_holds_exactly_len_rows() -> None:
    bank = PrototypeBank(4, 10)
    empty = bank.as_bank()
    assert empty.prototypes.shape == (0, 4) and empty.costs.shape == (0,)
    for k in range(3):
        bank.add(np.eye(4)[k] * 2.0, float(k), k)
    out = bank.as_bank()
    assert out.prototypes.shape == (3, 4) and out.costs.shape == (3,) and out.valid is None
    assert out.prototypes.dtype == np.float32 and out.costs.dtype == np.float32
    assert out.prototypes.flags.c_contiguous and out.costs.flags.c_contiguous
    np.testing.assert_allclose(out.prototypes, np.eye(4)[:3])  # renormalised on add
    out.prototypes[...] = 0.0  # a copy: the bank is unchanged
    assert bank.as_bank().prototypes[0, 0] == 1.0
    bank.reset()
    assert len(bank) == 0 and bank.as_bank().costs.shape == (0,)


def test_save_load_round_trip_is_atomic(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    bank = PrototypeBank(6, 16, merge_similarity=0.95)
    for k in range(5):
        bank.add(rng.normal(size=6), float(k) / 4, 100 + k)
    bank.add(bank.as_bank().prototypes[2], 1.5, 200)  # a merged one: count 2
    path = bank.save(tmp_path / 'sub' / 'bank.npz')
    assert sorted(p.name for p in path.parent.iterdir()) == ['bank.npz']  # no temp file left
    loaded = PrototypeBank(6, 16)
    assert loaded.load(path) == 5
    np.testing.assert_array_equal(loaded.as_bank().prototypes, bank.as_bank().prototypes)
    np.testing.assert_array_equal(loaded.costs, bank.costs)
    np.testing.assert_array_equal(loaded.counts, bank.counts)
    np.testing.assert_array_equal(loaded.stamps_ns, bank.stamps_ns)
    small = PrototypeBank(6, 3, eviction='oldest')
    assert small.load(path) == 3  # over capacity: the policy cuts it down
    assert small.stamps_ns.tolist() == [200, 103, 104]  # the merged row was re-measured at 200
    assert small.counts.tolist() == [2, 1, 1]


def test_failed_save_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bank = PrototypeBank(3, 4)
    bank.add(np.ones(3), 1.0, 1)
    path = bank.save(tmp_path / 'bank.npz')

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError('disk full')

    monkeypatch.setattr(bank_module.np, 'savez', broken)
    bank.add(np.ones(3), 2.0, 2)
    with pytest.raises(OSError, match='disk full'):
        bank.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ['bank.npz']
    monkeypatch.undo()
    assert PrototypeBank(3, 4).load(path) == 1  # the old file is intact


def test_load_rejects_a_wrong_dim_or_broken_file(tmp_path: Path) -> None:
    bank = PrototypeBank(4, 4)
    bank.add(np.ones(4), 1.0, 1)
    path = bank.save(tmp_path / 'bank.npz')
    other = PrototypeBank(8, 4)
    other.add(np.ones(8), 5.0, 5)
    with pytest.raises(BankError, match=r'4-dim prototypes .* this bank is 8-dim'):
        other.load(path)
    assert other.costs.tolist() == [5.0]  # unchanged by a rejected file
    with pytest.raises(BankError, match='not found'):
        other.load(tmp_path / 'missing.npz')
    junk = tmp_path / 'junk.npz'
    junk.write_bytes(b'not a zip file')
    with pytest.raises(BankError, match='cannot read bank file'):
        other.load(junk)
    np.savez(tmp_path / 'foreign.npz', prototypes=np.ones((1, 8), np.float32))
    with pytest.raises(BankError, match='is not a'):
        other.load(tmp_path / 'foreign.npz')


def test_rejects_bad_arguments_and_inputs() -> None:
    for kwargs in [dict(embedding_dim=0, capacity=4), dict(embedding_dim=4, capacity=0),
                   dict(embedding_dim=4, capacity=4, min_pixels=0),
                   dict(embedding_dim=4, capacity=4, merge_similarity=0.0),
                   dict(embedding_dim=4, capacity=4, merge_similarity=1.5),
                   dict(embedding_dim=4, capacity=4, eviction='random')]:
        with pytest.raises(BankError):
            PrototypeBank(**kwargs)
    bank = PrototypeBank(4, 4, min_pixels=1)
    with pytest.raises(BankError, match=r'\(4,\)'):
        bank.add(np.ones(3), 1.0, 1)
    with pytest.raises(BankError, match='finite'):
        bank.add(np.ones(4), float('inf'), 1)
    with pytest.raises(BankError, match='non-zero'):
        bank.add(np.zeros(4), 1.0, 1)
    with pytest.raises(BankError, match='integer nanoseconds'):
        bank.add(np.ones(4), 1.0, 1.5)
    mask = np.ones((8, 8), np.float32)
    with pytest.raises(BankError, match='8 dims but the bank holds 4-dim'):
        bank.add_patch(mask, np.ones((8, 2, 2), np.float32), 1)
    with pytest.raises(BankError, match='camera frame'):
        bank.add_patch(mask, np.ones((4, 2, 2), np.float32), 1, image_size=(16, 16))
    with pytest.raises(BankError, match=r'\(H, W\)'):
        bank.add_patch(np.ones((2, 8, 8), np.float32), np.ones((4, 2, 2), np.float32), 1)
    assert len(bank) == 0
    assert bank.add_patch(mask, np.ones((1, 4, 2, 2), np.float32), 1,
                          image_size=(8, 8)).added == 1


def test_propagation_from_a_patch_recovers_the_measured_costs() -> None:
    """Two terrains with distinct embeddings; patches over part of each give each its cost."""
    rng = np.random.default_rng(9)
    D, h, w = 16, 16, 16
    a, b = np.eye(D)[0], np.eye(D)[1]
    region_a = np.zeros((h, w), bool)
    region_a[:, : w // 2] = True  # left half is terrain A
    clean = np.where(region_a[None], a[:, None, None], b[:, None, None])  # D, h, w
    emb = _unit(clean + 0.05 * rng.normal(size=(D, h, w))).astype(np.float32)

    bank = PrototypeBank(D, 32, min_pixels=8)
    mask = np.full((4 * h, 4 * w), NAN, np.float32)  # drawn on the camera image, 4x the grid
    mask[32:64, 0:16] = 0.8  # part of A: grid rows 8..15, cols 0..3
    assert bank.add_patch(mask, emb, 1_000) == AddResult(1, 0, 0, 0, 0)
    only_a = bank.as_bank()
    cost, confidence = propagate_cost(emb, only_a.prototypes, only_a.costs, only_a.valid)
    np.testing.assert_allclose(cost[region_a], 0.8, atol=1e-6)
    assert confidence[region_a].min() > 0.9 and confidence[~region_a].max() < 0.5

    mask[:, :] = NAN
    mask[0:16, 40:64] = 0.1  # part of B: grid rows 0..3, cols 10..15
    assert bank.add_patch(mask, emb, 2_000).added == 1
    both = bank.as_bank()
    cost, confidence = propagate_cost(emb, both.prototypes, both.costs, both.valid,
                                      temperature=0.1)
    np.testing.assert_allclose(cost[region_a], 0.8, atol=1e-3)
    np.testing.assert_allclose(cost[~region_a], 0.1, atol=1e-3)
    assert confidence.min() > 0.9


def _saved_bank(tmp_path: Path) -> dict[str, np.ndarray]:
    bank = PrototypeBank(6, 8)
    for k in range(3):
        bank.add(np.eye(6)[k], 0.25 * k, 100 + k)
    with np.load(bank.save(tmp_path / 'good.npz')) as data:
        return {key: data[key] for key in data.files}


@pytest.mark.parametrize(('field', 'value', 'message'), [
    ('embedding_dim', np.array([6, 6]), 'embedding_dim must be a 0-d integer'),
    ('embedding_dim', np.array('6'), 'embedding_dim must be a 0-d integer'),
    ('costs', np.array(['a', 'b', 'c']), 'costs must be a 1-d number'),
    ('counts', np.array(['1', '1', '1']), 'counts must be a 1-d integer'),
    ('prototypes', np.array([['x'] * 6] * 3), 'prototypes must be a 2-d float'),
    ('stamps_ns', np.zeros((3, 2), np.int64), 'stamps_ns must be a 1-d integer'),
    ('costs', np.array([0.0, 1e300, 0.5]), 'non-finite costs'),  # inf once float32
    ('costs', np.array([0.0, -3.0, 0.5]), 'outside cost_range'),
])
def test_load_refuses_malformed_fields_with_the_reason(tmp_path: Path, field: str,
                                                        value: np.ndarray, message: str) -> None:
    arrays = _saved_bank(tmp_path)
    arrays[field] = value
    path = tmp_path / 'bad.npz'
    np.savez(path, **arrays)
    bank = PrototypeBank(6, 8, cost_range=(0.0, 1.0))
    bank.add(np.eye(6)[5], 0.5, 1)
    with pytest.raises(BankError, match=message):
        bank.load(path)
    assert len(bank) == 1  # nothing changed


def test_load_refuses_a_plain_npy_array(tmp_path: Path) -> None:
    path = tmp_path / 'bank.npz'
    with open(path, 'wb') as f:
        np.save(f, np.zeros((3, 6), np.float32))
    with pytest.raises(BankError, match=r'single array \(\.npy\), not a bank'):
        PrototypeBank(6, 8).load(path)


def test_costs_are_checked_after_the_float32_cast_and_against_the_range() -> None:
    emb = np.zeros((4, 2, 4), np.float32)
    emb[0] = 1.0  # every cell the same unit vector
    mask = np.full((8, 16), np.nan, np.float64)
    mask[:, :4] = 1e300  # finite in float64, +inf in float32
    mask[:, 4:8] = -5.0  # outside [0, 1]
    mask[:, 8:12] = 0.5
    patch = prototypes_from_patch(mask, emb, min_pixels=1, cost_range=(0.0, 1.0))
    assert [r.cost for r in patch.regions] == [0.5]
    assert patch.skipped_nonfinite == 2  # the +inf region and the out-of-range one
    bank = PrototypeBank(4, 8, min_pixels=1, cost_range=(0.0, 1.0))
    result = bank.add_patch(mask, emb, 1)
    assert result.added == 1 and result.skipped_invalid == 2
    for cost in (1e300, -1e30, 3.4e38, 1.5):
        with pytest.raises(BankError, match='cost_range'):
            bank.add(np.eye(4)[1], cost, 2)
    assert bank.costs.tolist() == [0.5]
