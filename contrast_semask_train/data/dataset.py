"""A torch Dataset over the converted layout written by `contrast-semask-data convert-ycor`.

    <root>/images/<split>/<stem>.jpg, <root>/labels/<split>/<stem>.png, <root>/manifest.json

With a random transform (TrainTransform) item i of epoch e is drawn from
`np.random.default_rng([seed, e, i])`: a pure function of (seed, epoch, index), whatever the
worker, batch order or resume point. Call `set_epoch` before each epoch; DataLoader workers get a
copy of the dataset when they start, so use `persistent_workers=False` (the default) or the epoch
will not reach them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from contrast_semask_ros.atomic import is_temp_name

from .ycor import YCOR_CLASSES, DataFormatError, read_manifest

_logger = logging.getLogger(__name__)


class _Transform(Protocol):
    random: bool

    def __call__(self, image: np.ndarray, labels: np.ndarray, *args) -> tuple: ...


def read_image_rgb(path: str | Path) -> np.ndarray:
    """Read an image file with OpenCV as (H, W, 3) uint8 RGB."""
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DataFormatError(f'cannot read image {path}')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_labels(path: str | Path) -> np.ndarray:
    """Read a converted label PNG with Pillow, as stored: (H, W) uint8 training ids."""
    from PIL import Image

    with Image.open(path) as image:
        labels = np.asarray(image)
    if labels.ndim != 2 or labels.dtype != np.uint8:
        raise DataFormatError(f'{path}: expected a single-channel 8-bit label PNG, got '
                              f'{labels.shape} {labels.dtype} (mode {image.mode})')
    return labels


def _ignored(name: str) -> bool:
    """Hidden entries and temp files a killed writer left ('.x.*.tmp', 'x.tmp-*'): never data."""
    return name.startswith('.') or is_temp_name(name)


def _files(directory: Path, suffix: str) -> dict[str, Path]:
    """{stem: path} of the `suffix` files in `directory`, temp and hidden files left out."""
    return {path.stem: path for path in directory.glob(f'*{suffix}')
            if path.is_file() and not _ignored(path.name)}


def _looks_raw(root: Path) -> bool:
    """True for a raw yamaha_v0 tree (train/iid*/, valid/iid*/) at root or one level down."""
    candidates = [root, *(child for child in root.iterdir()
                          if child.is_dir() and not _ignored(child.name))]
    return any(
        path.is_dir()
        for candidate in candidates for split in ('train', 'valid')
        for path in (candidate / split).glob('iid*')
    )


class SegmentationDataset(Dataset):
    """(image, labels) pairs of one split: (3, H, W) float32 and (H, W) int64 tensors."""

    def __init__(self, root: Path, split: str, transform: _Transform, seed: int = 0,
                 max_items: int | None = None):
        self.root = Path(root)
        self.split = split
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        image_dir, label_dir = self.root / 'images' / split, self.root / 'labels' / split
        if not self.root.is_dir():
            raise DataFormatError(f'data root {self.root} does not exist')
        if not image_dir.is_dir() or not label_dir.is_dir():
            if _looks_raw(self.root):
                raise DataFormatError(
                    f'{self.root} is a raw yamaha_v0 tree; convert it first: '
                    f'contrast-semask-data convert-ycor {self.root} <out>, then use <out>')
            raise DataFormatError(
                f'{self.root} has no {split!r} split: expected {image_dir}/*.jpg and '
                f'{label_dir}/*.png (the layout written by contrast-semask-data convert-ycor)')
        images, labels = _files(image_dir, '.jpg'), _files(label_dir, '.png')
        unpaired = sorted(set(images) ^ set(labels))
        if unpaired:
            raise DataFormatError(f'{self.root} split {split!r}: {len(unpaired)} images without '
                                  f'labels or labels without images, e.g. {unpaired[:5]}')
        if not images:
            raise DataFormatError(f'{image_dir} holds no *.jpg images')
        self.stems = sorted(images)[:max_items]
        self.image_paths = [images[stem] for stem in self.stems]
        self.label_paths = [labels[stem] for stem in self.stems]
        manifest = read_manifest(self.root)
        self.class_names: tuple[str, ...] = (
            tuple(manifest['classes']) if manifest else YCOR_CLASSES)
        _logger.debug('%s/%s: %d items', self.root, split, len(self.stems))

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random draws __getitem__ reproduces."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.stems)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < len(self.stems):
            raise IndexError(f'index {index} out of range for {len(self.stems)} items')
        image = read_image_rgb(self.image_paths[index])  # H, W, 3 uint8 RGB
        labels = read_labels(self.label_paths[index])  # H, W uint8
        if getattr(self.transform, 'random', False):
            rng = np.random.default_rng([self.seed, self.epoch, index])
            image_out, labels_out = self.transform(image, labels, rng)
        else:
            image_out, labels_out = self.transform(image, labels)
        return torch.from_numpy(image_out), torch.from_numpy(labels_out)  # 3, H, W; H, W
