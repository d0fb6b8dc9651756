"""The YCOR (Yamaha-CMU Off-Road) label format and a converter to the training layout.

Raw YCOR (`yamaha_v0`, docs/MODEL.md §5) holds `{train,valid}/iid*/{rgb.jpg,labels.png}`, with
colour-coded labels (8-bit palette PNGs). `convert_ycor` writes a new directory:

    <out>/images/{train,valid}/<iid>.jpg   the original JPEG bytes, copied
    <out>/labels/{train,valid}/<iid>.png   single-channel uint8 training ids, 255 = ignore
    <out>/manifest.json                    classes, palette, per-split counts and iids

Colours map to training ids through a lookup table in the seed's class order (docs/MODEL.md §5,
after reduce_zero_label); white background becomes the ignore index. Unlike the seed converter
(docs/MODEL.md §5) the source is never modified, iids are kept as file stems, an unknown colour
is an error that names it (or, on request, ignored and counted), every image must decode
completely (a truncated or damaged JPEG/PNG is listed and refused, or with `skip_bad` left out
and listed in the manifest's `skipped`), and the output appears atomically
(`contrast_semask_ros.atomic`; temp directories a killed conversion left are removed first).

The other YCOR tables live here too: the traversal cost per class (`YCOR_COST_TABLE`, used by
evaluation) and the ADE20K classes that may seed each YCOR class when a published checkpoint is
converted (`YCOR_ADE20K_SEEDS`, `class_seeds`).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np

from contrast_semask_ros import atomic

_logger = logging.getLogger(__name__)

IGNORE_INDEX = 255
MANIFEST_FORMAT = 'contrast_semask/ycor-1'
MANIFEST_NAME = 'manifest.json'
SPLITS = ('train', 'valid')

# Training ids 0..7, in the seed's order (docs/MODEL.md §5; 'rough_trial' spelled correctly).
YCOR_CLASSES: tuple[str, ...] = (
    'high_vegetation',
    'traversable_grass',
    'smooth_trail',
    'obstacle',
    'sky',
    'rough_trail',
    'puddle',
    'non_traversable_low_vegetation',
)
YCOR_PALETTE: tuple[tuple[int, int, int], ...] = (
    (40, 80, 0),
    (128, 255, 0),
    (178, 176, 153),
    (255, 0, 0),
    (1, 88, 255),
    (156, 76, 30),
    (255, 0, 128),
    (0, 160, 0),
)
BACKGROUND_RGB = (255, 255, 255)  # unlabelled -> IGNORE_INDEX
# The raw files' own palette order (docs/MODEL.md §5): index 0 is the background.
RAW_PALETTE: tuple[tuple[int, int, int], ...] = (
    BACKGROUND_RGB,
    (178, 176, 153),
    (128, 255, 0),
    (156, 76, 30),
    (255, 0, 128),
    (255, 0, 0),
    (0, 160, 0),
    (40, 80, 0),
    (1, 88, 255),
)


# Traversal cost per class (0 = free, 1 = not traversable); sky is never driven on. The default
# cost table of `contrast-semask-eval`.
YCOR_COST_TABLE: dict[str, float] = {
    'high_vegetation': 1.0, 'traversable_grass': 0.3, 'smooth_trail': 0.0, 'obstacle': 1.0,
    'sky': 1.0, 'rough_trail': 0.4, 'puddle': 0.7, 'non_traversable_low_vegetation': 0.8}
# A deliberate (non-seed) starting point for the 8 YCOR classes: the ADE20K classes whose rows of
# a published SeMask checkpoint seed each new class row, in training-id order (docs/MODEL.md §4).
YCOR_ADE20K_SEEDS: dict[int, tuple[str, ...]] = {
    0: ('tree',),  # high_vegetation
    1: ('grass',),  # traversable_grass
    2: ('path', 'road'),  # smooth_trail
    3: ('rock',),  # obstacle
    4: ('sky',),  # sky
    5: ('dirt track', 'earth'),  # rough_trail
    6: ('water',),  # puddle
    7: ('plant',),  # non_traversable_low_vegetation
}
CLASS_SEEDS = ('none', 'ycor')  # the names `class_seeds` accepts


def class_seeds(name: str, num_classes: int) -> dict[int, tuple[str, ...]] | None:
    """The `class_seeds` argument of `load_semask_checkpoint` for a config's `seed_classes`:
    'ycor' -> YCOR_ADE20K_SEEDS (needs the 8 YCOR classes), 'none' -> None (no seeding).
    Raises ValueError for anything else."""
    if name not in CLASS_SEEDS:
        raise ValueError(f'seed classes must be one of {CLASS_SEEDS}, got {name!r}')
    if name == 'none':
        return None
    if num_classes != len(YCOR_ADE20K_SEEDS):
        raise ValueError(f'seed classes ycor need {len(YCOR_ADE20K_SEEDS)} classes (YCOR), got '
                         f'{num_classes}; use seed classes none for other data')
    return YCOR_ADE20K_SEEDS


class DataFormatError(ValueError):
    """A data set on disk is not in the expected layout or encoding."""


class BadImageError(DataFormatError):
    """An image or label file that does not decode completely (truncated, damaged)."""


class ColorCodes(NamedTuple):
    """The known colours packed as sorted 24-bit codes, and the training id of each."""

    codes: np.ndarray  # N, uint32, sorted
    ids: np.ndarray    # N, uint8


def _pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 -> (...) uint32 code 0xRRGGBB."""
    rgb = rgb.astype(np.uint32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _unpack_rgb(code: int) -> tuple[int, int, int]:
    return (code >> 16) & 0xFF, (code >> 8) & 0xFF, code & 0xFF


def _color_codes() -> ColorCodes:
    colors = np.array((*YCOR_PALETTE, BACKGROUND_RGB), dtype=np.uint8)  # K+1, 3
    ids = np.array((*range(len(YCOR_PALETTE)), IGNORE_INDEX), dtype=np.uint8)
    codes = _pack_rgb(colors)
    order = np.argsort(codes)
    return ColorCodes(codes[order], ids[order])


_CODES = _color_codes()


def colors_to_labels(rgb: np.ndarray) -> tuple[np.ndarray, dict[tuple[int, int, int], int]]:
    """Map a colour-coded label image to training ids.

    Args:
        rgb: (H, W, 3) uint8 RGB label image.
    Returns:
        (labels, unknown): (H, W) uint8 training ids (0..7, 255 for the white background and for
        unknown colours) and {unknown RGB colour: pixel count}, empty when every colour is known.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f'expected an (H, W, 3) uint8 RGB image, got {rgb.shape} {rgb.dtype}')
    codes = _pack_rgb(rgb)  # H, W
    pos = np.searchsorted(_CODES.codes, codes)
    pos = np.minimum(pos, len(_CODES.codes) - 1)
    known = _CODES.codes[pos] == codes  # H, W
    labels = np.where(known, _CODES.ids[pos], np.uint8(IGNORE_INDEX)).astype(np.uint8)
    unknown: dict[tuple[int, int, int], int] = {}
    if not known.all():
        values, counts = np.unique(codes[~known], return_counts=True)
        unknown = {_unpack_rgb(int(v)): int(c) for v, c in zip(values, counts, strict=True)}
    return labels, unknown


def read_label_png(source: str | os.PathLike | BinaryIO) -> np.ndarray:
    """Read a colour-coded label PNG (palette 'P' or RGB; alpha is dropped) as (H, W, 3) uint8."""
    from PIL import Image

    with Image.open(source) as image:
        if image.mode != 'RGB':
            image = image.convert('RGB')
        return np.asarray(image, dtype=np.uint8).copy()


def format_unknown_colors(unknown: dict[tuple[int, int, int], int]) -> str:
    """'(r, g, b): N px, ...' with the most frequent colour first."""
    items = sorted(unknown.items(), key=lambda item: (-item[1], item[0]))
    return ', '.join(f'{color}: {count} px' for color, count in items)


@contextlib.contextmanager
def atomic_directory(out: Path) -> Iterator[Path]:
    """`contrast_semask_ros.atomic.atomic_directory` without overwrite: yield a temporary sibling
    of `out`; on success it becomes `out`, on error it is removed.

    Refuses (FileExistsError) when `out` exists and is not an empty directory, so nothing that
    is already there is ever overwritten and nothing half-written is ever left at `out`.
    """
    out = Path(out)
    _check_output_free(out)
    with atomic.atomic_directory(out, overwrite=False) as tmp:
        yield tmp


def _check_output_free(out: Path) -> None:
    if out.is_dir():
        if any(out.iterdir()):
            raise FileExistsError(f'output directory {out} exists and is not empty; '
                                  'choose a new path or remove it')
    elif out.exists() or out.is_symlink():
        raise FileExistsError(f'output path {out} exists and is not a directory')


class _Source:
    """Read-only access to a yamaha_v0 tree in a directory or a zip archive."""

    def __init__(self, path: Path):
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        self.items: dict[str, dict[str, dict[str, str]]] = {}  # split -> iid -> file -> member
        if path.is_dir():
            self._scan_directory(path)
        elif path.is_file() and zipfile.is_zipfile(path):
            self._zip = zipfile.ZipFile(path)
            self._scan_zip(self._zip)
        elif path.exists():
            raise DataFormatError(f'{path} is neither a directory nor a zip archive')
        else:
            raise FileNotFoundError(f'source {path} does not exist')

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def _scan_directory(self, path: Path) -> None:
        roots = [path] if any((path / split).is_dir() for split in SPLITS) else [
            child for child in sorted(path.iterdir())
            if child.is_dir() and not _is_temp_or_hidden(child.name)
            and any((child / split).is_dir() for split in SPLITS)
        ]
        if not roots:
            raise DataFormatError(f'{path} has no train/ or valid/ directory (expected a '
                                  'yamaha_v0 tree: train/iid*/{rgb.jpg,labels.png}, valid/...)')
        if len(roots) > 1:
            raise DataFormatError(f'{path} holds several yamaha_v0-like trees: '
                                  f'{[r.name for r in roots]}; pass one of them')
        root = roots[0]
        for split in SPLITS:
            split_dir = root / split
            if not split_dir.is_dir():
                continue
            iids = {
                entry.name: {name: str(entry / name) for name in ('rgb.jpg', 'labels.png')
                             if (entry / name).is_file()}
                for entry in sorted(split_dir.iterdir())
                if entry.is_dir() and entry.name.startswith('iid')
                and not atomic.is_temp_name(entry.name)
            }
            self.items[split] = iids

    def _scan_zip(self, archive: zipfile.ZipFile) -> None:
        found: dict[tuple[str, ...], dict[str, dict[str, dict[str, str]]]] = {}
        for member in archive.namelist():
            parts = [part for part in member.split('/') if part]
            if not parts or parts[0] == '__MACOSX' or len(parts) not in (3, 4):
                continue
            prefix, (split, iid, name) = tuple(parts[:-3]), parts[-3:]
            if split not in SPLITS or not iid.startswith('iid'):
                continue
            files = found.setdefault(prefix, {}).setdefault(split, {}).setdefault(iid, {})
            if not member.endswith('/') and name in ('rgb.jpg', 'labels.png'):
                files[name] = member
        if not found:
            raise DataFormatError(f'{self.path} has no train/ or valid/ directory (expected a '
                                  'yamaha_v0 tree: [yamaha_v0/]train/iid*/{rgb.jpg,labels.png})')
        if len(found) > 1:
            raise DataFormatError(f'{self.path} holds several yamaha_v0-like trees: '
                                  f'{sorted("/".join(p) or "." for p in found)}')
        self.items = {split: dict(sorted(iids.items()))
                      for split, iids in sorted(next(iter(found.values())).items())}

    def read(self, member: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(member)
        return Path(member).read_bytes()


def _is_temp_or_hidden(name: str) -> bool:
    """Hidden entries and temp files/directories (a killed conversion's '.out.*.tmp')."""
    return name.startswith('.') or atomic.is_temp_name(name)


class _Frame(NamedTuple):
    labels: np.ndarray  # H, W uint8 training ids
    unknown: dict[tuple[int, int, int], int]
    size: tuple[int, int]  # (width, height)


def _convert_frame(split: str, iid: str, rgb_bytes: bytes, label_bytes: bytes,
                   unknown_to_ignore: bool) -> _Frame:
    from PIL import Image, UnidentifiedImageError

    where = f'{split}/{iid}'
    try:
        with Image.open(io.BytesIO(rgb_bytes)) as image:
            image_format, image_size = image.format, image.size
            image.load()  # decode every byte: a truncated JPEG raises here, not later
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise BadImageError(f'{where}/rgb.jpg does not decode ({error})') from error
    if image_format != 'JPEG':
        raise DataFormatError(f'{where}/rgb.jpg is {image_format}, expected JPEG')
    try:
        rgb = read_label_png(io.BytesIO(label_bytes))  # H, W, 3
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise BadImageError(f'{where}/labels.png does not decode ({error})') from error
    label_size = (rgb.shape[1], rgb.shape[0])
    if label_size != image_size:
        raise DataFormatError(f'{where}: rgb.jpg is {image_size[0]}x{image_size[1]} but '
                              f'labels.png is {label_size[0]}x{label_size[1]}')
    labels, unknown = colors_to_labels(rgb)
    if unknown and not unknown_to_ignore:
        raise DataFormatError(
            f'{where}/labels.png has {len(unknown)} unknown colour(s): '
            f'{format_unknown_colors(unknown)}; pass --unknown-to-ignore '
            f'(unknown_to_ignore=True) to map them to ignore ({IGNORE_INDEX})')
    return _Frame(labels, unknown, image_size)


def _write_label_png(path: Path, labels: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint8)).save(path, format='PNG')


def convert_ycor(source: Path, out: Path, unknown_to_ignore: bool = False,
                 progress: bool = True, skip_bad: bool = False) -> dict:
    """Convert a raw yamaha_v0 tree (directory or .zip) into the training layout at `out`.

    Args:
        source: a `yamaha_v0` directory, its parent, or a zip holding it (possibly one level
            deep). Never modified.
        out: a new (or empty) directory; written atomically.
        unknown_to_ignore: map colours outside the YCOR palette to the ignore index (and count
            them in the manifest) instead of raising DataFormatError.
        progress: show a tqdm progress bar.
        skip_bad: leave out frames whose rgb.jpg or labels.png does not decode completely
            (listed in the log and the manifest's `skipped`) instead of raising
            DataFormatError listing them all.
    Returns:
        The manifest written to `<out>/manifest.json`.
    """
    from tqdm import tqdm

    source, out = Path(source), Path(out)
    atomic.clean_stale(out.parent, out.name)  # what a killed conversion of `out` left
    _check_output_free(out)
    if source.exists() and source.is_dir() and out.resolve().is_relative_to(source.resolve()):
        raise DataFormatError(f'output {out} lies inside the source {source}; choose a path '
                              'outside it (the source is never modified)')
    src = _Source(source)
    try:
        if not src.items:
            raise DataFormatError(f'{source} has no train/ or valid/ split')
        for split, iids in src.items.items():
            if not iids:
                raise DataFormatError(f'{source}: split {split!r} has no iid* directories')
            for iid, files in iids.items():
                missing = [name for name in ('rgb.jpg', 'labels.png') if name not in files]
                if missing:
                    raise DataFormatError(f'{split}/{iid} is missing {" and ".join(missing)}')
        for split in SPLITS:
            if split not in src.items:
                _logger.warning('%s has no %s/ split', source, split)
        manifest = {
            'format': MANIFEST_FORMAT,
            'classes': list(YCOR_CLASSES),
            'palette': [list(color) for color in YCOR_PALETTE],
            'ignore_index': IGNORE_INDEX,
            'source': str(source.resolve()),
            'splits': {},
        }
        total = sum(len(iids) for iids in src.items.values())
        with atomic_directory(out) as tmp, tqdm(total=total, desc='convert-ycor', unit='img',
                                                disable=not progress) as bar:
            bad: list[str] = []
            for split, iids in src.items.items():
                manifest['splits'][split] = _convert_split(
                    src, split, iids, tmp, unknown_to_ignore, bar.update, bad)
            if bad and not skip_bad:
                raise DataFormatError(_bad_images_message(source, bad))
            if bad:
                _logger.warning('left out %d frame(s) whose images do not decode: %s',
                                len(bad), '; '.join(bad))
                manifest['skipped'] = bad
            with open(tmp / MANIFEST_NAME, 'w', encoding='utf-8') as stream:
                json.dump(manifest, stream, indent=2)
                stream.write('\n')
    finally:
        src.close()
    for split, info in manifest['splits'].items():
        _logger.info('%s: %d images, %d ignored pixels, %d with unknown colours', split,
                     info['num_images'], info['ignored_pixels'], len(info['unknown_colors']))
    _logger.info('wrote %s', out)
    return manifest


def _bad_images_message(source: Path, bad: list[str], shown: int = 20) -> str:
    listed = '; '.join(bad[:shown]) + (f'; and {len(bad) - shown} more' if len(bad) > shown
                                       else '')
    return (f'{source}: {len(bad)} frame(s) with images that do not decode completely '
            f'(truncated or damaged): {listed}. Replace them, or pass --skip-bad '
            '(skip_bad=True) to leave those frames out')


def _convert_split(src: _Source, split: str, iids: dict[str, dict[str, str]], tmp: Path,
                   unknown_to_ignore: bool, step: Callable[[int], object],
                   bad: list[str]) -> dict:
    image_dir, label_dir = tmp / 'images' / split, tmp / 'labels' / split
    image_dir.mkdir(parents=True)
    label_dir.mkdir(parents=True)
    sizes: dict[str, int] = {}
    class_pixels = np.zeros(len(YCOR_CLASSES), dtype=np.int64)
    ignored = 0
    unknown_colors: dict[str, list[dict]] = {}
    kept: list[str] = []
    for iid, files in iids.items():
        rgb_bytes = src.read(files['rgb.jpg'])
        try:
            frame = _convert_frame(split, iid, rgb_bytes, src.read(files['labels.png']),
                                   unknown_to_ignore)
        except BadImageError as error:
            bad.append(str(error))  # every bad file is listed, not only the first
            step(1)
            continue
        kept.append(iid)
        (image_dir / f'{iid}.jpg').write_bytes(rgb_bytes)
        _write_label_png(label_dir / f'{iid}.png', frame.labels)
        key = f'{frame.size[0]}x{frame.size[1]}'
        sizes[key] = sizes.get(key, 0) + 1
        counts = np.bincount(frame.labels.ravel(), minlength=IGNORE_INDEX + 1)
        class_pixels += counts[:len(YCOR_CLASSES)]
        ignored += int(counts[IGNORE_INDEX])
        if frame.unknown:
            _logger.warning('%s/%s: unknown colours mapped to ignore: %s', split, iid,
                            format_unknown_colors(frame.unknown))
            unknown_colors[iid] = [{'rgb': list(color), 'pixels': count}
                                   for color, count in sorted(frame.unknown.items())]
        step(1)
    return {
        'num_images': len(kept),
        'sizes': sizes,
        'class_pixels': {name: int(n) for name, n in zip(YCOR_CLASSES, class_pixels,
                                                         strict=True)},
        'ignored_pixels': ignored,
        'unknown_colors': unknown_colors,
        'iids': kept,
    }


def read_manifest(root: Path) -> dict | None:
    """The manifest of a converted data set, or None when `root` has none."""
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        return None
    with open(path, encoding='utf-8') as stream:
        manifest = json.load(stream)
    if manifest.get('format') != MANIFEST_FORMAT:
        raise DataFormatError(f'{path}: format {manifest.get("format")!r}, '
                              f'expected {MANIFEST_FORMAT!r}')
    return manifest
