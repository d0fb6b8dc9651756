"""The prototype bank: measured patch costs + a past frame's embedding -> prototypes with costs.

A patch-cost mask (32FC1, NaN = no measurement) is drawn on a past camera frame. Each traversed
patch carries one constant measured cost, so the regions of the mask are its distinct finite
values. `prototypes_from_patch` turns every region into one prototype:

- the mask is resized to the embedding's (h, w) grid by nearest-neighbour index math: grid cell
  (i, j) takes mask[floor((i + 0.5) H / h), floor((j + 0.5) W / w)], the mask pixel under the
  cell centre (the same as cv2.resize with INTER_NEAREST_EXACT; a test checks this);
- cells with equal finite values form one region; its prototype is the mean of the region's
  embedding vectors, renormalised to unit L2 norm, and its cost is the value;
- a region of fewer than `min_pixels` grid cells is skipped (too little evidence);
- a region of +inf or -inf cost is skipped, counted and logged: an infinite cost would turn the
  propagated cost into inf or NaN at every pixel that looks like it. Publish a large finite cost
  for lethal terrain instead;
- at most `max_regions` regions (the largest) are used, which bounds the work on a malformed
  mask (say, noise floats or bilinear-resized edges that make every cell a region of its own);
- a region whose mean has (almost) zero norm, or a non-finite one, cannot be normalised and is
  skipped as degenerate.

`PrototypeBank` holds at most `capacity` prototypes (K, D), with per prototype its cost, the
count of measurements merged into it and the stamp of the newest of them. Adding a prototype:

- merging (`merge_similarity` set): if its cosine similarity to the most similar prototype is
  >= merge_similarity (less 1e-6 of float tolerance, so 1.0 merges identical vectors), it is
  merged into that one: with n measurements so far, cost <- (n cost + c) / (n + 1), prototype
  <- normalise(n prototype + p), n <- n + 1, stamp <- the newer of the two;
- otherwise it is appended; when the bank is full, one prototype is evicted first:
  'oldest' evicts the one whose newest measurement is oldest (FIFO by stamp when nothing merges;
  a prototype that keeps being re-measured through merging stays), 'least_used' evicts the one
  with the fewest measurements merged into it (the least supported), the oldest among equals.
  Ties go to the earliest added.

`as_bank()` gives the backend its `Bank` (exactly len(bank) rows; the backend pads to Kmax).
`save` writes a .npz atomically; `load` replaces the contents from one and checks that it was
saved for the same embedding width. Preloading a bank at start-up is `bank.load(path)` right after
construction. Thread-safe: one lock guards every method.
"""

from __future__ import annotations

import logging
import os
import pickle
import threading
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from contrast_semask_ros.atomic import atomic_path
from contrast_semask_ros.backends.base import Bank
from contrast_semask_ros.frames import as_embedding, as_stamp_ns

logger = logging.getLogger(__name__)

BANK_FORMAT = 'contrast_semask/prototype-bank-1'
EVICTION_POLICIES = ('oldest', 'least_used')
MERGE_TOLERANCE = 1e-6
_MIN_NORM = 1e-6  # a region mean shorter than this cannot be normalised reliably
_FILE_KEYS = ('format', 'embedding_dim', 'prototypes', 'costs', 'counts', 'stamps_ns')


class BankError(ValueError):
    """A bank argument, input or file that does not fit; the message says how to fix it."""


class RegionPrototype(NamedTuple):
    prototype: np.ndarray  # D float32 unit-norm
    cost: float  # the region's measured cost
    pixel_count: int  # grid cells at embedding resolution


class PatchPrototypes(NamedTuple):
    regions: list[RegionPrototype]  # in increasing cost order
    skipped_small: int  # regions of fewer than min_pixels grid cells
    skipped_nonfinite: int  # regions of +inf or -inf cost (NaN is "no measurement", not a region)
    #                         or, with a cost range, of a finite cost outside it
    skipped_excess: int  # regions beyond max_regions (the smallest ones)
    skipped_degenerate: int  # regions whose mean embedding has ~zero or non-finite norm


class AddResult(NamedTuple):
    added: int  # prototypes appended
    merged: int  # prototypes merged into an existing one
    skipped_small: int  # regions under min_pixels grid cells
    evicted: int  # prototypes evicted to make room
    skipped_invalid: int = 0  # regions with an infinite cost, beyond max_regions, or degenerate


def mask_to_grid(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of an (H, W) mask to (height, width) by cell-centre sampling.

    Cell (i, j) takes mask[floor((i + 0.5) H / height), floor((j + 0.5) W / width)]: the same as
    cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST_EXACT). Index math keeps
    NaN as is and needs no OpenCV.
    """
    H, W = mask.shape
    if (H, W) == (height, width):
        return mask
    rows = np.minimum(((np.arange(height) + 0.5) * H / height).astype(np.int64), H - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * W / width).astype(np.int64), W - 1)
    return mask[rows[:, None], cols[None, :]]  # height, width


def prototypes_from_patch(mask: np.ndarray, embedding: np.ndarray, min_pixels: int = 16,
                          max_regions: int = 64,
                          cost_range: tuple[float, float] | None = None) -> PatchPrototypes:
    """One unit-norm prototype per region of equal finite cost in `mask` (see the module doc).

    mask: (H, W) float cost image of the frame, NaN = no measurement, any size (usually the
    camera size); embedding: (D, h, w) or (1, D, h, w) unit-norm stride-4 embedding of the frame.
    """
    if min_pixels < 1 or max_regions < 1:
        raise BankError(f'min_pixels and max_regions must be >= 1, got {min_pixels} and '
                        f'{max_regions}')
    mask = np.asarray(mask)
    if mask.ndim != 2 or 0 in mask.shape or not (
            np.issubdtype(mask.dtype, np.floating) or np.issubdtype(mask.dtype, np.integer)):
        raise BankError(f'mask must be a non-empty (H, W) float cost image (32FC1, NaN = no '
                        f'measurement), got {mask.dtype} {mask.shape}')
    emb = _embedding(embedding)
    D, h, w = emb.shape
    # float32 first: the bank and the graph hold float32 costs, so 1e300 is +inf here
    with np.errstate(over='ignore'):
        grid = mask_to_grid(mask, h, w).reshape(-1).astype(np.float32)  # h*w
    finite = np.isfinite(grid)
    skipped_nonfinite = int(np.isposinf(grid).any()) + int(np.isneginf(grid).any())
    if cost_range is not None:
        with np.errstate(invalid='ignore'):
            outside = finite & ((grid < cost_range[0]) | (grid > cost_range[1]))
        skipped_nonfinite += len(np.unique(grid[outside]))
        finite &= ~outside
    cells = np.flatnonzero(finite)  # M
    values, inverse, counts = np.unique(grid[cells], return_inverse=True, return_counts=True)
    big = np.flatnonzero(counts >= min_pixels)  # region ids, increasing cost
    skipped_small = len(values) - len(big)
    skipped_excess = max(len(big) - max_regions, 0)
    if skipped_excess:
        # Keep the largest regions (ties: the lower cost), then restore increasing cost order.
        largest = big[np.lexsort((big, -counts[big]))[:max_regions]]
        big = np.sort(largest)
    flat = emb.reshape(D, h * w)  # D, h*w (a view of the frame buffer's slot)
    regions: list[RegionPrototype] = []
    skipped_degenerate = 0
    for r in big:
        members = cells[inverse.reshape(-1) == r]
        mean = flat[:, members].mean(axis=1, dtype=np.float64)  # D
        norm = float(np.linalg.norm(mean))
        if not norm > _MIN_NORM:  # also catches NaN from a non-finite embedding
            skipped_degenerate += 1
            continue
        regions.append(RegionPrototype((mean / norm).astype(np.float32), float(values[r]),
                                       int(counts[r])))
    return PatchPrototypes(regions, skipped_small, skipped_nonfinite, skipped_excess,
                           skipped_degenerate)


class PrototypeBank:
    """At most `capacity` unit-norm prototypes of `embedding_dim` dims with measured costs."""

    def __init__(self, embedding_dim: int, capacity: int, min_pixels: int = 16,
                 merge_similarity: float | None = None, eviction: str = 'oldest',
                 max_regions: int = 64, cost_range: tuple[float, float] | None = None) -> None:
        for name, value in (('embedding_dim', embedding_dim), ('capacity', capacity),
                            ('min_pixels', min_pixels), ('max_regions', max_regions)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BankError(f'{name} must be an int >= 1, got {value!r}')
        if merge_similarity is not None and not 0 < merge_similarity <= 1:
            raise BankError(f'merge_similarity must be None (never merge) or a cosine '
                            f'similarity in (0, 1], got {merge_similarity!r}')
        if eviction not in EVICTION_POLICIES:
            raise BankError(f'eviction must be one of {EVICTION_POLICIES}, got {eviction!r}')
        self.embedding_dim = embedding_dim
        self.capacity = capacity
        self.min_pixels = min_pixels
        self.merge_similarity = None if merge_similarity is None else float(merge_similarity)
        self.eviction = eviction
        self.max_regions = max_regions
        if cost_range is not None and not (len(cost_range) == 2 and np.isfinite(cost_range).all()
                                           and cost_range[0] < cost_range[1]):
            raise BankError(f'cost_range must be finite [low, high] with low < high, got '
                            f'{cost_range!r}')
        self.cost_range = None if cost_range is None else (float(cost_range[0]),
                                                           float(cost_range[1]))
        self._prototypes = np.zeros((capacity, embedding_dim), np.float32)  # capacity, D
        self._costs = np.zeros(capacity, np.float64)  # running means
        self._counts = np.zeros(capacity, np.int64)  # measurements merged into each
        self._stamps = np.zeros(capacity, np.int64)  # newest measurement's stamp, ns
        self._size = 0  # rows [0, size) are in use, in the order they were added
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return self._size

    @property
    def costs(self) -> np.ndarray:
        """(K,) float64 costs (running means), a copy."""
        with self._lock:
            return self._costs[:self._size].copy()

    @property
    def counts(self) -> np.ndarray:
        """(K,) int64 measurements merged into each prototype, a copy."""
        with self._lock:
            return self._counts[:self._size].copy()

    @property
    def stamps_ns(self) -> np.ndarray:
        """(K,) int64 stamp of each prototype's newest measurement, a copy."""
        with self._lock:
            return self._stamps[:self._size].copy()

    def as_bank(self) -> Bank:
        """The backend's Bank: contiguous copies of exactly len(self) rows, all valid."""
        with self._lock:
            K = self._size
            return Bank(self._prototypes[:K].copy(), self._costs[:K].astype(np.float32), None)

    def reset(self) -> None:
        with self._lock:
            self._size = 0

    def add(self, prototype: np.ndarray, cost: float, stamp_ns: int) -> AddResult:
        """Add one (D,) prototype (renormalised here) with its measured cost: merged or added."""
        p = np.asarray(prototype, dtype=np.float64)
        if p.shape != (self.embedding_dim,):
            raise BankError(f'prototype must be ({self.embedding_dim},), got {p.shape}')
        norm = float(np.linalg.norm(p))
        if not norm > _MIN_NORM:
            raise BankError(f'prototype must be finite and non-zero, got norm {norm}')
        cost = float(cost)
        if not _finite_float32(cost) or not self._in_range(cost):
            raise BankError(f'cost must be finite in float32 and within cost_range '
                            f'{self.cost_range}, got {cost}; use the highest cost of the range '
                            'for lethal terrain')
        stamp = _stamp(stamp_ns)
        with self._lock:
            return self._add((p / norm).astype(np.float32), cost, stamp)

    def _in_range(self, cost: float) -> bool:
        return self.cost_range is None or self.cost_range[0] <= cost <= self.cost_range[1]

    def add_patch(self, mask: np.ndarray, embedding: np.ndarray, stamp_ns: int, *,
                  image_size: tuple[int, int] | None = None) -> AddResult:
        """Prototypes from a patch-cost mask and its frame's embedding, added to the bank.

        mask: (H, W) float, NaN = no measurement; embedding: (D, h, w) or (1, D, h, w) of the
        frame the mask was drawn on (from FrameBuffer); stamp_ns: that frame's stamp.
        image_size: the frame's camera (height, width); when given, the mask must have it.
        """
        stamp = _stamp(stamp_ns)
        mask = np.asarray(mask)
        if image_size is not None and tuple(mask.shape) != tuple(image_size):
            raise BankError(f'patch mask is {tuple(mask.shape)} but the camera frame it is '
                            f'stamped with was {tuple(image_size)} (height, width): draw the '
                            'mask on the camera image at its size')
        emb = _embedding(embedding)
        if emb.shape[0] != self.embedding_dim:
            raise BankError(f'embedding has {emb.shape[0]} dims but the bank holds '
                            f'{self.embedding_dim}-dim prototypes: build the bank with the '
                            "model's embedding width")
        patch = prototypes_from_patch(mask, emb, self.min_pixels, self.max_regions,
                                      self.cost_range)
        added = merged = evicted = 0
        with self._lock:
            for region in patch.regions:
                result = self._add(region.prototype, region.cost, stamp)
                added += result.added
                merged += result.merged
                evicted += result.evicted
        invalid = patch.skipped_nonfinite + patch.skipped_excess + patch.skipped_degenerate
        if patch.skipped_nonfinite:
            # debug, not warning: callers count skipped_invalid and log it throttled (a node
            # receiving a burst of bad masks must not flood its log)
            logger.debug('patch %d: %d region(s) of infinite cost skipped; publish a large '
                           'finite cost for lethal terrain', stamp, patch.skipped_nonfinite)
        if patch.skipped_excess:
            logger.debug('patch %d: %d region(s) beyond max_regions=%d skipped: the mask '
                           'should hold one constant cost per patch', stamp,
                           patch.skipped_excess, self.max_regions)
        logger.debug('patch %d: %d added, %d merged, %d small, %d evicted, %d invalid', stamp,
                     added, merged, patch.skipped_small, evicted, invalid)
        return AddResult(added, merged, patch.skipped_small, evicted, invalid)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the bank to a .npz atomically (temp file in the same folder, then rename)."""
        path = Path(path)
        with self._lock:
            K = self._size
            arrays = {
                'format': np.array(BANK_FORMAT),
                'embedding_dim': np.array(self.embedding_dim, np.int64),
                'prototypes': self._prototypes[:K].copy(),  # K, D float32
                'costs': self._costs[:K].copy(),  # K float64
                'counts': self._counts[:K].copy(),  # K int64
                'stamps_ns': self._stamps[:K].copy(),  # K int64
            }
        with atomic_path(path) as tmp, open(tmp, 'wb') as f:
            np.savez(f, **arrays)  # to the open file: np.savez(name) would append '.npz'
        logger.info('saved %d prototypes to %s', K, path)
        return path

    def load(self, path: str | os.PathLike) -> int:
        """Replace the contents with a bank saved by `save`; returns the number of prototypes.

        This is also the start-up preload. The file must hold prototypes of this bank's
        embedding width. A file with more prototypes than `capacity` is cut down by the eviction
        policy. Nothing changes if the file is rejected.
        """
        path = Path(path)
        if not path.is_file():
            raise BankError(f'bank file not found: {path}')
        try:
            loaded = np.load(path, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise BankError(f'{path} is a single array (.npy), not a bank: banks are .npz '
                                'files written by ~/save_bank (PrototypeBank.save)')
            with loaded as data:
                missing = [key for key in _FILE_KEYS if key not in data.files]
                arrays = {key: data[key] for key in _FILE_KEYS if key in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError) as exc:
            raise BankError(f'cannot read bank file {path} ({exc}); it must be a .npz written '
                            'by PrototypeBank.save') from exc
        if missing or str(arrays['format']) != BANK_FORMAT:
            raise BankError(f'{path} is not a {BANK_FORMAT} file (missing {missing}, format '
                            f"{arrays.get('format')!s}); save banks with PrototypeBank.save")
        prototypes, costs, counts, stamps = _checked_file_arrays(path, arrays,
                                                                 self.embedding_dim)
        K = len(costs)
        norms = np.linalg.norm(prototypes.astype(np.float64), axis=1)  # K
        if not (_finite_float32(costs) and (norms > _MIN_NORM).all()
                and (counts >= 1).all()):
            raise BankError(f'{path} holds non-finite costs, zero or non-finite prototypes, or '
                            'counts < 1: it is corrupt')
        if self.cost_range is not None and not all(self._in_range(c) for c in costs):
            raise BankError(f'{path} holds costs in [{costs.min():g}, {costs.max():g}], outside '
                            f'cost_range {self.cost_range}: it was saved with another cost '
                            'scale; set cost_range to match, or start empty')
        # Rows saved by `save` are unit-norm and kept bit for bit; others are renormalised.
        off = np.abs(norms - 1.0)[:, None] > 1e-5  # K, 1
        prototypes = np.where(off, prototypes / norms[:, None], prototypes).astype(np.float32)
        with self._lock:
            keep = np.arange(K)
            if K > self.capacity:
                victims = _victims(self.eviction, counts, stamps)[:K - self.capacity]
                keep = np.setdiff1d(keep, victims)  # sorted: the file's order is kept
                logger.warning('%s holds %d prototypes, more than capacity=%d: %d evicted by '
                               "'%s'", path, K, self.capacity, K - self.capacity, self.eviction)
            n = len(keep)
            self._prototypes[:n] = prototypes[keep]
            self._costs[:n] = costs[keep]
            self._counts[:n] = counts[keep]
            self._stamps[:n] = stamps[keep]
            self._size = n
        logger.info('loaded %d prototypes from %s', n, path)
        return n

    def _add(self, p: np.ndarray, cost: float, stamp: int) -> AddResult:
        """p (D,) float32 unit-norm. Caller holds the lock."""
        K = self._size
        if self.merge_similarity is not None and K:
            sims = self._prototypes[:K].astype(np.float64) @ p.astype(np.float64)  # K
            j = int(np.argmax(sims))
            if sims[j] >= self.merge_similarity - MERGE_TOLERANCE:
                n = int(self._counts[j])
                mean = n * self._prototypes[j].astype(np.float64) + p  # D
                self._prototypes[j] = mean / np.linalg.norm(mean)
                self._costs[j] = (n * self._costs[j] + cost) / (n + 1)
                self._counts[j] = n + 1
                self._stamps[j] = max(int(self._stamps[j]), stamp)
                return AddResult(0, 1, 0, 0)
        evicted = 0
        if K == self.capacity:
            self._remove(int(_victims(self.eviction, self._counts[:K], self._stamps[:K])[0]))
            evicted, K = 1, K - 1
        self._prototypes[K] = p
        self._costs[K] = cost
        self._counts[K] = 1
        self._stamps[K] = stamp
        self._size = K + 1
        return AddResult(1, 0, 0, evicted)

    def _remove(self, i: int) -> None:
        """Drop row i, keeping the others in the order they were added. Caller holds the lock."""
        K = self._size
        for array in (self._prototypes, self._costs, self._counts, self._stamps):
            array[i:K - 1] = array[i + 1:K]
        self._size = K - 1


def _finite_float32(values: float | np.ndarray) -> bool:
    """Whether every value stays finite as float32 (what the bank and the graph hold)."""
    with np.errstate(over='ignore'):
        return bool(np.isfinite(np.asarray(values, np.float64).astype(np.float32)).all())


def _checked_file_arrays(path: Path, arrays: dict[str, np.ndarray], dim: int
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(prototypes K x D float32, costs K float64, counts K int64, stamps K int64) from a bank
    file's arrays, every field's dtype and shape checked; BankError saying which is wrong."""
    def field(key: str, kinds: str, ndim: int) -> np.ndarray:
        value = arrays[key]
        if value.dtype.kind not in kinds or value.ndim != ndim:
            want = {'f': 'float', 'iu': 'integer', 'fiu': 'number'}[kinds]
            raise BankError(f'{path}: {key} must be a {ndim}-d {want} array, got {value.dtype} '
                            f'{value.shape}; the file is not a bank written by '
                            'PrototypeBank.save')
        return value

    file_dim = int(field('embedding_dim', 'iu', 0))
    prototypes = field('prototypes', 'f', 2)
    if file_dim != dim or prototypes.shape[1] != dim:
        raise BankError(f'{path} holds {file_dim}-dim prototypes {prototypes.shape} but this '
                        f"bank is {dim}-dim (the model's embedding width): it was saved with "
                        'another model; load a bank saved with this model, or start empty')
    K = prototypes.shape[0]
    costs = field('costs', 'fiu', 1).astype(np.float64)
    counts = field('counts', 'iu', 1).astype(np.int64)
    stamps = field('stamps_ns', 'iu', 1).astype(np.int64)
    if costs.shape != (K,) or counts.shape != (K,) or stamps.shape != (K,):
        raise BankError(f'{path} is inconsistent: prototypes {prototypes.shape}, costs '
                        f'{costs.shape}, counts {counts.shape}, stamps {stamps.shape}')
    return prototypes, costs, counts, stamps


def _victims(policy: str, counts: np.ndarray, stamps: np.ndarray) -> np.ndarray:
    """Row indices in eviction order (first = evicted first); ties go to the earliest row."""
    order = np.arange(len(counts))
    if policy == 'oldest':
        return np.lexsort((order, stamps))
    return np.lexsort((order, stamps, counts))  # least_used


def _embedding(embedding: np.ndarray) -> np.ndarray:
    try:
        return as_embedding(embedding)
    except ValueError as err:
        raise BankError(str(err)) from None


def _stamp(value: int) -> int:
    try:
        return as_stamp_ns(value)
    except TypeError as err:
        raise BankError(str(err)) from None
