"""FrameBuffer: eviction by count and age, out-of-order stamps, lookup, miss reasons, memory,
float16 and float32 storage (the spare written by the backend, slots reused)."""

from __future__ import annotations

import numpy as np
import pytest

from contrast_semask_ros.frames import (
    MISS_EMPTY,
    MISS_EVICTED,
    MISS_FUTURE,
    MISS_NO_MATCH,
    FrameBuffer,
    Lookup,
    frame_bytes,
)

MS = 1_000_000  # ns
SIZE = (16, 24)  # camera height, width


def _emb(value: float = 0.0, shape: tuple[int, int, int] = (4, 4, 6)) -> np.ndarray:
    return np.full(shape, value, np.float32)


def _buffer(stamps_ms: list[int], max_frames: int = 10, max_age_s: float = 10.0) -> FrameBuffer:
    buffer = FrameBuffer(max_frames, max_age_s)
    for stamp in stamps_ms:
        buffer.push(stamp * MS, _emb(stamp), SIZE)
    return buffer


@pytest.mark.parametrize('max_frames, max_age_s', [(0, 1.0), (-1, 1.0), (1.5, 1.0), (True, 1.0),
                                                   (1, 0.0), (1, -2.0), (1, float('nan')),
                                                   (1, float('inf'))])
def test_rejects_bad_arguments(max_frames: int, max_age_s: float) -> None:
    with pytest.raises(ValueError, match='max_frames|max_age_s'):
        FrameBuffer(max_frames, max_age_s)


def test_evicts_the_oldest_beyond_max_frames() -> None:
    buffer = _buffer([10, 20, 30, 40, 50], max_frames=3)
    assert len(buffer) == 3
    assert buffer.stamps == (30 * MS, 40 * MS, 50 * MS)
    assert buffer.evicted == 2


def test_evicts_by_age_relative_to_the_newest_stamp() -> None:
    buffer = _buffer([0, 500, 1000], max_age_s=1.0)
    assert buffer.stamps == (0, 500 * MS, 1000 * MS)  # exactly max_age old is kept
    buffer.push(1200 * MS, _emb(), SIZE)
    assert buffer.stamps == (500 * MS, 1000 * MS, 1200 * MS)
    buffer.push(5000 * MS, _emb(), SIZE)  # a jump evicts everything older than 4 s
    assert buffer.stamps == (5000 * MS,)
    assert buffer.evicted == 4


def test_out_of_order_pushes_are_sorted_and_bounded() -> None:
    buffer = _buffer([30, 10, 20], max_frames=3, max_age_s=1.0)
    assert buffer.stamps == (10 * MS, 20 * MS, 30 * MS)
    assert buffer.push(15 * MS, _emb(), SIZE)  # full: the oldest (10) goes, 15 stays
    assert buffer.stamps == (15 * MS, 20 * MS, 30 * MS)
    assert not buffer.push(5 * MS, _emb(), SIZE)  # older than every kept frame of a full buffer



def test_a_clock_jump_back_restarts_the_buffer_and_learning_goes_on() -> None:
    buffer = _buffer([1000, 1100, 1200], max_frames=10, max_age_s=1.0)
    assert buffer.push(500 * MS, _emb(), SIZE)  # 0.7 s back: an out-of-order frame, kept
    assert buffer.jumps == 0 and len(buffer) == 4
    assert buffer.push(100 * MS, _emb(), SIZE)  # 1.1 s before the newest: a jump back
    assert buffer.jumps == 1 and buffer.last_jump_s == pytest.approx(-1.1)
    assert buffer.stamps == (100 * MS,)  # restarted at the new time


def test_one_far_future_stamp_does_not_stop_learning() -> None:
    buffer = _buffer([100, 200, 300], max_frames=10, max_age_s=1.0)
    assert buffer.push(10**9 * MS, _emb(), SIZE)  # a bogus stamp 11 days ahead
    assert buffer.jumps == 1 and buffer.stamps == (10**9 * MS,)  # the others aged out
    for t in (400, 500, 600):  # the camera's clock goes on
        assert buffer.push(t * MS, _emb(float(t)), SIZE)
    assert buffer.jumps == 2 and buffer.stamps == (400 * MS, 500 * MS, 600 * MS)
    assert buffer.lookup(500 * MS).embedding[0, 0, 0] == 500.0  # patches find their frames


def test_same_stamp_replaces_the_frame() -> None:
    buffer = _buffer([10])
    buffer.push(10 * MS, _emb(7.0), (32, 48))
    assert len(buffer) == 1
    frame = buffer.lookup(10 * MS)
    assert frame is not None and frame.embedding[0, 0, 0] == 7.0 and frame.image_size == (32, 48)


def test_exact_and_tolerance_lookup() -> None:
    buffer = _buffer([100, 200])
    exact = buffer.lookup(100 * MS)
    assert exact is not None and exact.stamp_ns == 100 * MS and exact.image_size == SIZE
    assert exact.embedding[0, 0, 0] == 100.0
    assert buffer.lookup(140 * MS) is None  # tolerance 0: exact only
    assert buffer.lookup(140 * MS, 50 * MS).stamp_ns == 100 * MS
    assert buffer.lookup(160 * MS, 50 * MS).stamp_ns == 200 * MS
    assert buffer.lookup(150 * MS, 50 * MS).stamp_ns == 100 * MS  # tie: the earlier
    assert buffer.lookup(230 * MS, 30 * MS).stamp_ns == 200 * MS
    assert buffer.lookup(np.int64(200 * MS)).stamp_ns == 200 * MS


def test_miss_reasons() -> None:
    assert FrameBuffer(3, 1.0).find(5) == Lookup(None, MISS_EMPTY)
    buffer = _buffer([100, 200])
    assert buffer.miss_reason(50 * MS) == MISS_EVICTED
    assert buffer.miss_reason(250 * MS) == MISS_FUTURE
    assert buffer.miss_reason(150 * MS, 10 * MS) == MISS_NO_MATCH
    assert buffer.miss_reason(90 * MS, 10 * MS) is None  # a hit
    hit = buffer.find(200 * MS)
    assert hit.reason is None and hit.frame is not None and hit.frame.stamp_ns == 200 * MS
    miss = buffer.find(250 * MS, 10 * MS)
    assert miss.frame is None and miss.reason == MISS_FUTURE


# D = 64 at 544x1024, stride 4 (136 x 256): 4.46 MB per frame in float16, 8.91 MB in float32.
F16_FRAME, F32_FRAME = 136 * 256 * 64 * 2, 136 * 256 * 64 * 4


@pytest.mark.parametrize('dtype, bound', [
    (np.float32, 31 * F32_FRAME),  # the 30 frames and the spare slot: 276.3 MB
    (np.float16, 30 * F16_FRAME + F32_FRAME),  # the 30 frames and the float32 scratch: 142.6 MB
])
def test_memory_bound_counts_the_storage_dtype_and_the_spare(dtype: type, bound: int) -> None:
    buffer = FrameBuffer(30, 2.0, dtype)
    assert buffer.memory_bound_bytes == 0
    assert frame_bytes(64, 136, 256, np.float32) == F32_FRAME == 8_912_896
    assert frame_bytes(64, 136, 256) == frame_bytes(64, 136, 256, 'float16') == 4_456_448
    buffer.push(0, np.zeros((64, 136, 256), np.float32), (544, 1024))
    assert buffer.memory_bound_bytes == bound
    assert buffer.nbytes == frame_bytes(64, 136, 256, dtype)
    buffer.clear()  # the slot stays allocated for the next frames
    assert len(buffer) == 0 and buffer.nbytes == 0 and buffer.evicted == 0
    assert buffer.memory_bound_bytes == bound


def test_float16_halves_the_memory_bound() -> None:
    bounds = {}
    for dtype in ('float16', 'float32'):
        buffer = FrameBuffer(30, 2.0, dtype)
        buffer.spare((64, 136, 256))  # the shape is known from the spare alone
        bounds[dtype] = buffer.memory_bound_bytes
    assert bounds['float16'] == 142_606_336 and bounds['float32'] == 276_299_776
    assert bounds['float16'] / bounds['float32'] == pytest.approx(32 / 62)  # (N + 2) / 2(N + 1)


@pytest.mark.parametrize('dtype, slots', [(np.float32, 4), (np.float16, 3)])
def test_slots_are_reused_not_reallocated(dtype: type, slots: int) -> None:
    buffer = FrameBuffer(3, 100.0, dtype)
    rng = np.random.default_rng(0)
    embeddings = [rng.normal(size=(4, 3, 5)).astype(np.float32) for _ in range(8)]
    buffer.push(0, embeddings[0], SIZE)
    first = buffer.lookup(0)
    datas = set()
    for i in range(1, 8):
        buffer.push(i, embeddings[i], SIZE)
        datas.add(buffer.lookup(i).embedding.__array_interface__['data'][0])
    # float32: max_frames + 1 slots (the frames and a spare); float16: max_frames (its spare is
    # the float32 scratch); reused in turn
    assert len(datas) == slots
    assert not buffer.is_current(first)  # frame 0 was evicted and its slot overwritten
    for i in (5, 6, 7):  # each kept frame still reads back its own embedding
        frame = buffer.lookup(i)
        assert buffer.is_current(frame) and frame.embedding.dtype == dtype
        np.testing.assert_array_equal(frame.embedding, embeddings[i].astype(dtype))
    buffer.clear()
    assert not buffer.is_current(frame)


@pytest.mark.parametrize('dtype', [np.float32, np.float16])
def test_push_copies_the_embedding(dtype: type) -> None:
    source = _emb(1.0)
    buffer = FrameBuffer(2, 1.0, dtype)
    buffer.push(1, source, SIZE)
    source[...] = -5.0  # a backend reusing its output buffer
    frame = buffer.lookup(1)
    assert frame is not None and (frame.embedding == 1.0).all()
    buffer.push(2, np.ones((1, 4, 3, 5), np.float64), SIZE)  # backend layout, float64
    frame = buffer.lookup(2)
    assert frame.embedding.shape == (4, 3, 5) and frame.embedding.dtype == dtype
    assert frame.embedding.flags.c_contiguous and not frame.embedding.flags.writeable
    strided = np.ones((5, 3, 4), np.float32).transpose(2, 1, 0)  # not C-contiguous
    assert buffer.push(3, strided, SIZE) and (buffer.lookup(3).embedding == 1.0).all()


@pytest.mark.parametrize('dtype', [np.float64, 'int8', 'bfloat16', None, 'nonsense'])
def test_rejects_other_storage_dtypes(dtype: object) -> None:
    with pytest.raises(ValueError, match='float16 or float32, got .*buffer_dtype'):
        FrameBuffer(3, 1.0, dtype)


@pytest.mark.parametrize('dtype', ['float16', np.float16, np.dtype('>f2'), 'float32',
                                   np.dtype(np.float32)])
def test_accepts_float16_and_float32_by_any_name(dtype: object) -> None:
    buffer = FrameBuffer(3, 1.0, dtype)
    assert buffer.dtype in (np.float16, np.float32) and buffer.dtype.isnative


def test_float16_storage_round_trips_unit_norm_embeddings() -> None:
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(64, 12, 20)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=0, keepdims=True)  # unit-norm per pixel, as the model's
    buffer = FrameBuffer(4, 10.0)  # float16 is the default
    buffer.push(1, emb, SIZE)
    stored = buffer.lookup(1).embedding
    assert stored.dtype == np.float16
    np.testing.assert_array_equal(stored, emb.astype(np.float16))  # round to nearest even
    # float16 keeps 11 significant bits: relative error <= 2^-11 (subnormals: 2^-25 absolute)
    np.testing.assert_allclose(stored.astype(np.float32), emb, rtol=2**-11, atol=2**-25)
    np.testing.assert_allclose(np.linalg.norm(stored.astype(np.float32), axis=0), 1.0,
                               atol=1e-3)


def test_rejects_bad_inputs() -> None:
    buffer = FrameBuffer(2, 1.0)
    with pytest.raises(ValueError, match=r'\(D, h, w\)'):
        buffer.push(1, np.zeros((4, 5), np.float32), SIZE)
    with pytest.raises(ValueError, match='image_size'):
        buffer.push(1, _emb(), (16,))
    with pytest.raises(ValueError, match='image_size'):
        buffer.push(1, _emb(), (0, 16))
    with pytest.raises(TypeError, match='integer nanoseconds'):
        buffer.push(1.5, _emb(), SIZE)
    with pytest.raises(ValueError, match='tolerance_ns'):
        buffer.lookup(1, -1)
    assert len(buffer) == 0


def test_spare_slot_is_kept_without_a_copy_and_never_a_held_frame() -> None:
    buffer = FrameBuffer(2, 100.0, np.float32)
    rng = np.random.default_rng(1)
    kept = {}
    for stamp in range(1, 6):
        spare = buffer.spare((4, 3, 5))
        held = [buffer.lookup(s).embedding for s in buffer.stamps]
        assert not any(np.shares_memory(spare, h) for h in held)  # never a frame in use
        spare[...] = kept[stamp] = rng.normal(size=(4, 3, 5)).astype(np.float32)
        assert buffer.push(stamp, spare, SIZE)
        frame = buffer.lookup(stamp)
        assert np.shares_memory(frame.embedding, spare)  # kept as written: no copy
    assert buffer.stamps == (4, 5)
    assert buffer.memory_bound_bytes == 3 * frame_bytes(4, 3, 5, np.float32)
    for stamp in (4, 5):
        np.testing.assert_array_equal(buffer.lookup(stamp).embedding, kept[stamp])
    # a spare not kept (older than every frame of the full buffer) stays the spare
    spare = buffer.spare((4, 3, 5))
    assert not buffer.push(3, spare, SIZE)
    assert buffer.spare((4, 3, 5)) is spare
    buffer.clear()  # the reserved spare is not handed out as a free slot
    assert buffer.push(7, np.ones((4, 3, 5), np.float32), SIZE)
    assert not np.shares_memory(buffer.lookup(7).embedding, spare)


def test_float16_spare_is_one_reused_float32_scratch_converted_on_push() -> None:
    buffer = FrameBuffer(2, 100.0, np.float16)
    rng = np.random.default_rng(2)
    scratch = buffer.spare((4, 3, 5))
    assert scratch.dtype == np.float32 and scratch.flags.writeable
    kept = {}
    for stamp in range(1, 6):
        spare = buffer.spare((4, 3, 5))
        assert spare is scratch  # one preallocated array, reused frame after frame
        spare[...] = kept[stamp] = rng.normal(size=(4, 3, 5)).astype(np.float32)
        assert buffer.push(stamp, spare, SIZE)
        frame = buffer.lookup(stamp)
        assert frame.embedding.dtype == np.float16 and not np.shares_memory(frame.embedding,
                                                                            spare)
        assert buffer.is_current(frame)
    assert buffer.stamps == (4, 5)
    assert buffer.memory_bound_bytes == 2 * frame_bytes(4, 3, 5) + frame_bytes(4, 3, 5,
                                                                               np.float32)
    for stamp in (4, 5):  # converted once: the scratch was overwritten since
        np.testing.assert_array_equal(buffer.lookup(stamp).embedding,
                                      kept[stamp].astype(np.float16))
    old = buffer.lookup(4)
    spare[...] = 0.0
    assert buffer.push(6, spare, SIZE)  # the oldest slot is reused: frame 4 is not current
    assert not buffer.is_current(old) and buffer.is_current(buffer.lookup(5))
    assert buffer.spare((4, 6, 5)) is not scratch  # a new shape: a new scratch, frames gone
    assert len(buffer) == 0
