"""Shared fixtures: a micro model trained to tell two textures apart, exported to ONNX."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest


class TextureModel(NamedTuple):
    checkpoint: Path
    onnx: Path  # 96x128 input, bank size 32, with its .json EngineSpec
    height: int
    width: int
    bank_size: int


@pytest.fixture(scope='session')
def texture_model(tmp_path_factory: pytest.TempPathFactory) -> TextureModel:
    pytest.importorskip('onnxruntime', reason='onnxruntime is an export extra')
    from scenes import train_texture_model

    from contrast_semask_train.export import export_onnx

    root = tmp_path_factory.mktemp('texture_model')
    checkpoint = train_texture_model(root / 'texture.pt', steps=25)
    onnx_path = root / 'texture.onnx'
    export_onnx(checkpoint, onnx_path, 96, 128, 32)
    return TextureModel(checkpoint, onnx_path, 96, 128, 32)
