"""EngineSpec: the JSON sidecar that travels with every exported ONNX file or TensorRT engine.

It tells the runtime everything about the deployable graph without opening it: input and output
names, shapes and dtypes, stride, embedding width D, bank size Kmax, normalisation, class names,
where it came from (checkpoint hash, opset, precision) and, for engines, the TensorRT version and
GPU it was built for. Stdlib only: the node reads it before choosing a backend.

The graph's tensor names are defined here once (INPUT_NAMES, OUTPUT_NAMES, LOGITS_NAME): the
exporter names the ONNX graph from the spec, and the backends feed and fetch by the spec's names.
`contrast_semask_train.model.deploy` (torch only, so it cannot import this) spells the same names
and a test asserts that they agree. `EngineSpec.build` is the one constructor from plain values,
used by the exporter and the PyTorch backend alike.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contrast_semask_ros.atomic import atomic_write_text

SPEC_FORMAT = 'contrast_semask/engine-spec-1'
# The deployable graph's inputs, in the order of DeployWrapper.forward's arguments.
INPUT_NAMES = ('image', 'prototypes', 'prototype_costs', 'prototype_valid', 'temperature')
# Its outputs, in order (BackendOutputs and DeployOutputs have these fields); an export with
# logits appends LOGITS_NAME.
OUTPUT_NAMES = ('embedding', 'cost', 'confidence')
LOGITS_NAME = 'logits'


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
    # sha256 of the ONNX file this spec was written with (export) or built from (engines):
    # `read_spec` refuses an ONNX file that does not match, i.e. files of different exports
    onnx_sha256: str = ''
    engine_sha256: str = ''  # engines: sha256 of the engine file, checked the same way
    tensorrt_version: str = ''  # engines only
    gpu_name: str = ''
    compute_capability: str = ''
    format: str = SPEC_FORMAT

    @classmethod
    def build(cls, *, height: int, width: int, bank_size: int, embedding_dim: int, stride: int,
              mean: Sequence[float], std: Sequence[float], class_names: Sequence[str],
              checkpoint_sha256: str, precision: str, opset: int = 0, num_classes: int = 0,
              with_logits: bool = False, model_config: dict | None = None) -> EngineSpec:
        """The validated spec of the deployable graph at one static input size.

        Shapes follow from the sizes: uint8 image (1, H, W, 3), a float32 bank of `bank_size`
        rows, embedding (1, D, ceil(H/stride), ceil(W/stride)), cost and confidence (1, 1, H, W)
        and, `with_logits`, logits (1, num_classes, ceil(H/stride), ceil(W/stride)).
        `opset` 0 means no ONNX graph (the PyTorch backend runs the module itself).
        """
        if min(height, width, bank_size, embedding_dim, stride) < 1:
            raise EngineSpecError('height, width, bank_size, embedding_dim and stride must be '
                                  f'>= 1, got {height}, {width}, {bank_size}, {embedding_dim}, '
                                  f'{stride}')
        if with_logits and num_classes < 1:
            raise EngineSpecError(f'logits need num_classes >= 1, got {num_classes}')
        h, w = -(-height // stride), -(-width // stride)
        image, prototypes, costs, valid, temperature = INPUT_NAMES
        inputs = (TensorSpec(image, (1, height, width, 3), 'uint8'),
                  TensorSpec(prototypes, (bank_size, embedding_dim), 'float32'),
                  TensorSpec(costs, (bank_size,), 'float32'),
                  TensorSpec(valid, (bank_size,), 'float32'),
                  TensorSpec(temperature, (1,), 'float32'))
        embedding, cost, confidence = OUTPUT_NAMES
        outputs = (TensorSpec(embedding, (1, embedding_dim, h, w), 'float32'),
                   TensorSpec(cost, (1, 1, height, width), 'float32'),
                   TensorSpec(confidence, (1, 1, height, width), 'float32'))
        if with_logits:
            outputs += (TensorSpec(LOGITS_NAME, (1, num_classes, h, w), 'float32'),)
        spec = cls(inputs=inputs, outputs=outputs, height=height, width=width, stride=stride,
                   embedding_dim=embedding_dim, bank_size=bank_size,
                   mean=tuple(float(v) for v in mean),  # type: ignore[arg-type]
                   std=tuple(float(v) for v in std),  # type: ignore[arg-type]
                   class_names=tuple(class_names), checkpoint_sha256=checkpoint_sha256,
                   opset=opset, precision=precision, model_config=dict(model_config or {}))
        spec.validate()
        return spec

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        """Every output of the graph, OUTPUT_NAMES first (then logits, if exported)."""
        return tuple(t.name for t in self.outputs)

    @property
    def required_outputs(self) -> tuple[TensorSpec, ...]:
        """The outputs every backend returns (embedding, cost, confidence), in that order."""
        return self.outputs[:len(OUTPUT_NAMES)]

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
        names = self.input_names
        if names != INPUT_NAMES:
            raise EngineSpecError(f'inputs must be {INPUT_NAMES}, the spec lists {names}')
        names = self.output_names
        if names not in (OUTPUT_NAMES, (*OUTPUT_NAMES, LOGITS_NAME)):
            raise EngineSpecError(f'outputs must be {OUTPUT_NAMES}, optionally followed by '
                                  f'{LOGITS_NAME!r}; the spec lists {names}')
        K, D = self.bank_size, self.embedding_dim
        expected = dict(zip(INPUT_NAMES, ((1, self.height, self.width, 3), (K, D), (K,), (K,),
                                          (1,)), strict=True))
        for tensor in self.inputs:
            if tensor.shape != expected[tensor.name]:
                raise EngineSpecError(f'input {tensor.name!r} has shape {tensor.shape}, '
                                      f'expected {expected[tensor.name]} from the spec sizes')
        h, w = -(-self.height // self.stride), -(-self.width // self.stride)
        want = dict(zip(OUTPUT_NAMES, ((1, D, h, w), (1, 1, self.height, self.width),
                                       (1, 1, self.height, self.width)), strict=True))
        for name, shape in want.items():
            if self.output(name).shape != shape:
                raise EngineSpecError(f'output {name!r} has shape {self.output(name).shape}, '
                                      f'expected {shape}')

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

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
            spec.validate()
        except (KeyError, TypeError, AttributeError) as err:
            raise EngineSpecError(f'malformed engine spec: {type(err).__name__} {err}'
                                  ) from err
        return spec


def spec_path(model_path: str | os.PathLike) -> Path:
    """The sidecar of `model.onnx` or `model.engine` is `model.onnx.json` / `model.engine.json`."""
    return Path(f'{model_path}.json')


def write_spec(spec: EngineSpec, model_path: str | os.PathLike) -> Path:
    """Validate and write the sidecar atomically next to the model file."""
    spec.validate()
    return atomic_write_text(spec_path(model_path), spec.to_json())


REEXPORT = ('export again with `contrast-semask-export onnx` (and `trt` for an engine), '
            'which writes the model file and its spec together')


def read_spec(model_path: str | os.PathLike, verify: bool = True) -> EngineSpec:
    """Read and validate the sidecar of a model file; a clear one-line error names the file,
    what is wrong and how to get a good one.

    `verify`: when the spec records the sha256 of its ONNX file (or engine), the model file at
    `model_path` must have it: a spec and a model file from different exports are refused.
    """
    path = spec_path(model_path)
    if not path.is_file():
        raise EngineSpecError(f'no engine spec next to {model_path} (expected {path}); '
                              'export with `contrast-semask-export onnx`, which writes both')
    try:
        values = json.loads(path.read_text(encoding='utf-8'))
    except (OSError, UnicodeDecodeError) as err:
        raise EngineSpecError(f'cannot read the engine spec {path} ({err}); {REEXPORT}'
                              ) from err
    except json.JSONDecodeError as err:
        raise EngineSpecError(f'{path} is not valid JSON (truncated or damaged?): {err}; '
                              f'{REEXPORT}') from err
    if not isinstance(values, dict):
        raise EngineSpecError(f'{path} holds a JSON {type(values).__name__}, not an engine '
                              f'spec object; {REEXPORT}')
    try:
        spec = EngineSpec.from_dict(values)
    except EngineSpecError as err:
        raise EngineSpecError(f'{path}: {err}') from err
    if verify:
        check_model_file(spec, model_path)
    return spec


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open('rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def check_model_file(spec: EngineSpec, model_path: str | os.PathLike) -> None:
    """Refuse a model file whose sha256 is not the one its spec records (files of two
    different exports side by side). Specs without a recorded hash (older exports) pass."""
    model_path = Path(model_path)
    suffix = model_path.suffix.lower()
    expected = spec.engine_sha256 if suffix == '.engine' else \
        spec.onnx_sha256 if suffix == '.onnx' else ''
    if not expected or not model_path.is_file():
        return
    actual = file_sha256(model_path)
    if actual != expected:
        raise EngineSpecError(
            f'{model_path} does not match its spec {spec_path(model_path)} (the spec was '
            f'written for sha256 {expected[:12]}..., the file has {actual[:12]}...): the two '
            f'come from different exports or one is damaged; {REEXPORT}')
