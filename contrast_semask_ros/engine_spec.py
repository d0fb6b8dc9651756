"""EngineSpec: the JSON sidecar that travels with every exported ONNX file or TensorRT engine.

It tells the runtime everything about the deployable graph without opening it: input and output
names, shapes and dtypes, stride, embedding width D, bank size Kmax, normalisation, class names,
where it came from (checkpoint hash, opset, precision) and, for engines, the TensorRT version and
GPU it was built for. Stdlib only: the node reads it before choosing a backend.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SPEC_FORMAT = 'contrast_semask/engine-spec-1'
INPUT_NAMES = ('image', 'prototypes', 'prototype_costs', 'prototype_valid', 'temperature')


class EngineSpecError(ValueError):
    """A spec that is missing, malformed or does not match what the caller expects."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name: uint8, float32, float16


@dataclass(frozen=True)
class EngineSpec:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    height: int  # input image size the graph was built for
    width: int
    stride: int  # embedding stride (4)
    embedding_dim: int  # D
    bank_size: int  # Kmax: rows of `prototypes`
    mean: tuple[float, float, float]  # RGB, 0-255 scale (applied inside the graph)
    std: tuple[float, float, float]
    class_names: tuple[str, ...]
    checkpoint_sha256: str
    opset: int
    precision: str  # fp32 | fp16 | int8
    model_config: dict = field(default_factory=dict)
    tensorrt_version: str = ''  # engines only
    gpu_name: str = ''
    compute_capability: str = ''
    format: str = SPEC_FORMAT

    def input(self, name: str) -> TensorSpec:
        return self._find(self.inputs, name)

    def output(self, name: str) -> TensorSpec:
        return self._find(self.outputs, name)

    @staticmethod
    def _find(tensors: tuple[TensorSpec, ...], name: str) -> TensorSpec:
        for tensor in tensors:
            if tensor.name == name:
                return tensor
        raise EngineSpecError(f'the spec has no tensor {name!r}; it has '
                              f'{[t.name for t in tensors]}')

    def validate(self) -> None:
        """Internal consistency: names, shapes and sizes agree with each other."""
        names = tuple(t.name for t in self.inputs)
        if names != INPUT_NAMES:
            raise EngineSpecError(f'inputs must be {INPUT_NAMES}, the spec lists {names}')
        expected = {
            'image': (1, self.height, self.width, 3),
            'prototypes': (self.bank_size, self.embedding_dim),
            'prototype_costs': (self.bank_size,), 'prototype_valid': (self.bank_size,),
            'temperature': (1,)}
        for tensor in self.inputs:
            if tensor.shape != expected[tensor.name]:
                raise EngineSpecError(f'input {tensor.name!r} has shape {tensor.shape}, '
                                      f'expected {expected[tensor.name]} from the spec sizes')
        h, w = -(-self.height // self.stride), -(-self.width // self.stride)
        want = {'embedding': (1, self.embedding_dim, h, w), 'cost': (1, 1, self.height,
                                                                    self.width),
                'confidence': (1, 1, self.height, self.width)}
        for name, shape in want.items():
            if self.output(name).shape != shape:
                raise EngineSpecError(f'output {name!r} has shape {self.output(name).shape}, '
                                      f'expected {shape}')

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EngineSpec:
        if values.get('format') != SPEC_FORMAT:
            raise EngineSpecError(f'not an engine spec (format {values.get("format")!r}, '
                                  f'expected {SPEC_FORMAT!r})')
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise EngineSpecError(f'unknown engine spec keys {unknown}: written by a newer '
                                  'version? Re-export with this one.')
        try:
            tensors = {key: tuple(TensorSpec(t['name'], tuple(t['shape']), t['dtype'])
                                  for t in values[key]) for key in ('inputs', 'outputs')}
            spec = cls(**{**values, **tensors, 'mean': tuple(values['mean']),
                          'std': tuple(values['std']),
                          'class_names': tuple(values['class_names'])})
        except (KeyError, TypeError) as err:
            raise EngineSpecError(f'malformed engine spec: {err}') from err
        spec.validate()
        return spec


def spec_path(model_path: str | os.PathLike) -> Path:
    """The sidecar of `model.onnx` or `model.engine` is `model.onnx.json` / `model.engine.json`."""
    return Path(f'{model_path}.json')


def write_spec(spec: EngineSpec, model_path: str | os.PathLike) -> Path:
    """Validate and write the sidecar atomically next to the model file."""
    spec.validate()
    path = spec_path(model_path)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        with os.fdopen(fd, 'w') as f:
            json.dump(spec.to_dict(), f, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_spec(model_path: str | os.PathLike) -> EngineSpec:
    """Read and validate the sidecar of a model file; a clear error says how to get one."""
    path = spec_path(model_path)
    if not path.is_file():
        raise EngineSpecError(f'no engine spec next to {model_path} (expected {path}); '
                              'export with `contrast-semask-export onnx`, which writes both')
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise EngineSpecError(f'{path} is not valid JSON: {err}') from err
    return EngineSpec.from_dict(values)
