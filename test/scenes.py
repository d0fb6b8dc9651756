"""Test support: two-texture camera scenes and a micro model trained to tell them apart.

A randomly initialised network maps every texture to nearly the same embedding, so tests of
cost propagation (pipeline, node, replay) need a model that has learnt something. Training the
micro vanilla model with cross-entropy for a few dozen steps on these scenes takes seconds on
2 CPU cores and separates the two textures clearly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

TEXTURES = ('grass', 'brick')


def texture(name: str, height: int, width: int) -> np.ndarray:
    """A scikit-image bundled texture as (height, width, 3) uint8 RGB."""
    import cv2
    from skimage import data

    image = getattr(data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return cv2.resize(np.ascontiguousarray(image[..., :3]), (width, height),
                      interpolation=cv2.INTER_AREA)


def two_texture_scene(height: int, width: int, split: float = 0.5,
                      rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Left of `split` (a fraction of the width) grass, right brick; labels 0 / 1.

    With `rng`, each texture is shifted randomly and noise is added (training variety).
    Returns (rgb (H, W, 3) uint8, labels (H, W) int64).
    """
    cut = int(round(width * split))
    left, right = (texture(name, height * 2, width * 2) for name in TEXTURES)
    dy, dx = (0, 0) if rng is None else (int(rng.integers(0, height)), int(rng.integers(0, width)))
    rgb = left[dy:dy + height, dx:dx + width].copy()
    rgb[:, cut:] = right[dy:dy + height, dx:dx + width][:, cut:]
    if rng is not None:
        noise = rng.normal(0, 4, rgb.shape)
        rgb = np.clip(rgb + noise, 0, 255).astype(np.uint8)
    labels = np.zeros((height, width), np.int64)
    labels[:, cut:] = 1
    return rgb, labels


def train_texture_model(out: Path, steps: int = 40, size: tuple[int, int] = (96, 128),
                        seed: int = 0) -> Path:
    """Train the micro vanilla model (2 classes) on two-texture scenes; save a checkpoint."""
    import torch
    import torch.nn.functional as F

    from contrast_semask_train.model import build_model, save_checkpoint

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_model('micro', 2, 'vanilla')
    mean = torch.tensor(model.config.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.config.std).view(1, 3, 1, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    height, width = size
    model.train()
    for _ in range(steps):
        scenes = [two_texture_scene(height, width, float(rng.uniform(0.2, 0.8)), rng)
                  for _ in range(4)]
        images = torch.from_numpy(np.stack([s[0] for s in scenes])).permute(0, 3, 1, 2)
        labels = torch.from_numpy(np.stack([s[1] for s in scenes]))
        flip = bool(rng.integers(0, 2))  # brick on the left half of the time
        if flip:
            images, labels = images.flip(-1), labels.flip(-1)
        logits = model((images.float() - mean) / std).logits  # B, 2, h, w
        logits = F.interpolate(logits, size=(height, width), mode='bilinear',
                               align_corners=False)
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return save_checkpoint(out, model.eval())
