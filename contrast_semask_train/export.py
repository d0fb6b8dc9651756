"""The torch side of `contrast-semask-export`: a checkpoint to the deployable ONNX graph, with
its EngineSpec and a parity report.

The command line (`build_parser`, `main`) lives in the torch-free `export_cli`, which
imports this module for `onnx` only: `trt` (ONNX -> TensorRT engine, tensorrt_build.py)
runs on a robot without torch. Usage and exit codes: export_cli.py or
`contrast-semask-export --help`.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from contrast_semask_ros.atomic import DiskFullError, atomic_path, clean_stale, free_bytes
from contrast_semask_ros.engine_spec import INPUT_NAMES, EngineSpec, file_sha256, spec_path
from contrast_semask_ros.exit_codes import (
    EXIT_BAD_INPUT,
    EXIT_CHECK_FAILED,
    EXIT_OK,
    fail,
    is_environment_problem,
)
from contrast_semask_train.export_cli import build_parser, main  # noqa: F401 (the CLI)
from contrast_semask_train.model import DeployWrapper, load_checkpoint
from contrast_semask_train.model.checkpoint import CheckpointError
from contrast_semask_train.model.precision import to_half_precision
from contrast_semask_train.tensorrt_build import tensorrt_type_violations

_logger = logging.getLogger('contrast_semask_export')

OPSET = 18
# Ops that mean a data-dependent graph or that TensorRT handles badly (the export test fails
# on any of them in the deployable graph).
FORBIDDEN_OPS = frozenset({'ScatterND', 'If', 'Loop', 'NonZero', 'Einsum', 'GatherND'})


class ExportCheckError(RuntimeError):
    """The exported graph failed a check (parity above tolerance, non-deployable ops): exit 1."""


class ParityResult(NamedTuple):
    max_abs_error: dict[str, float]  # per output, worst over the trials
    min_cosine: dict[str, float]  # per output (flattened), worst over the trials
    passed: bool


def random_feeds(rng: np.random.Generator, height: int, width: int, bank_size: int, dim: int,
                 valid_fraction: float) -> dict[str, np.ndarray]:
    protos = rng.normal(size=(bank_size, dim)).astype(np.float32)
    protos /= np.linalg.norm(protos, axis=1, keepdims=True)
    values = (rng.integers(0, 256, (1, height, width, 3), dtype=np.uint8), protos,
              rng.uniform(0, 1, bank_size).astype(np.float32),
              (rng.uniform(size=bank_size) < valid_fraction).astype(np.float32),
              np.array([0.1], np.float32))
    return dict(zip(INPUT_NAMES, values, strict=True))


def check_parity(wrapper: DeployWrapper, onnx_path: Path, spec: EngineSpec, trials: int = 3,
                 atol: float = 1e-3, min_cos: float = 0.9999, seed: int = 0) -> ParityResult:
    """PyTorch (`wrapper`, the float32 reference) vs ONNX Runtime (CPU) on `trials` random
    images and banks (one with no valid prototype)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: fp16 graphs warn about CPU constant folding
    session = ort.InferenceSession(str(onnx_path), options, providers=['CPUExecutionProvider'])
    rng = np.random.default_rng(seed)
    names = list(spec.output_names)
    worst_err = dict.fromkeys(names, 0.0)
    worst_cos = dict.fromkeys(names, 1.0)
    for trial in range(trials):
        feeds = random_feeds(rng, spec.height, spec.width, spec.bank_size, spec.embedding_dim,
                             valid_fraction=0.0 if trial == 1 else 0.5)
        onnx_out = session.run(names, feeds)
        with torch.no_grad():
            torch_out = wrapper(*(torch.from_numpy(feeds[n]) for n in spec.input_names))
        for name, a, b in zip(names, onnx_out, torch_out, strict=True):
            b = b.numpy()
            worst_err[name] = max(worst_err[name], float(np.abs(a - b).max()))
            a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
            denom = np.linalg.norm(a64) * np.linalg.norm(b64)
            cos = float(a64 @ b64 / denom) if denom > 0 else float(np.allclose(a64, b64))
            worst_cos[name] = min(worst_cos[name], cos)
    passed = all(v <= atol for v in worst_err.values()) and all(
        v >= min_cos for v in worst_cos.values())
    return ParityResult(worst_err, worst_cos, passed)


def example_inputs(spec: EngineSpec) -> tuple[torch.Tensor, ...]:
    """Tensors with the spec's input shapes and dtypes, in INPUT_NAMES order (zeros; the
    temperature, the last input, 0.1, so a traced run computes finite values)."""
    return tuple(torch.full(t.shape, 0.1 if t.name == INPUT_NAMES[-1] else 0.0,
                            dtype=getattr(torch, t.dtype)) for t in spec.inputs)


def deploy_spec(wrapper: DeployWrapper, height: int, width: int, bank_size: int,
                checkpoint_sha256: str, precision: str = 'fp32') -> EngineSpec:
    """The EngineSpec of `wrapper` at one static input size (EngineSpec.build from its config),
    checked against the wrapper itself: output names and, by a dry run, output shapes."""
    cfg = wrapper.model.config
    spec = EngineSpec.build(
        height=height, width=width, bank_size=bank_size, embedding_dim=cfg.output_dim,
        stride=cfg.output_stride, mean=cfg.mean, std=cfg.std, class_names=cfg.class_names,
        checkpoint_sha256=checkpoint_sha256, precision=precision, opset=OPSET,
        num_classes=cfg.num_classes, with_logits=wrapper.with_logits,
        model_config=cfg.to_dict())
    with torch.no_grad():
        outputs = wrapper(*example_inputs(spec))
    got = {name: tuple(t.shape) for name, t in zip(wrapper.output_names, outputs, strict=True)}
    want = {t.name: t.shape for t in spec.outputs}
    if got != want:
        raise ExportCheckError(f'the deploy wrapper outputs {got}, its spec says {want}: the '
                               'model package and contrast_semask_ros.engine_spec disagree')
    return spec


def parity_path(onnx_path: Path) -> Path:
    """The parity report beside `model.onnx` is `model.onnx.parity.json`."""
    return Path(f'{onnx_path}.parity.json')


def output_files(out: Path) -> tuple[Path, Path, Path]:
    """The three files one export writes: ONNX, EngineSpec, parity report."""
    return out, spec_path(out), parity_path(out)


def clean_stale_outputs(out: Path) -> list[Path]:
    """Remove temp files a killed export of `out` left beside it (logged)."""
    return [p for path in output_files(out) for p in clean_stale(path.parent, path.name)]


def _save_onnx(program: Any, tmp: Path, out: Path, needed: int) -> None:
    """program.save into `tmp`; a full disk (ENOSPC, or the exporter's RuntimeError when less
    than the weights' size is free) becomes a DiskFullError naming `out` and the bytes."""
    try:
        program.save(str(tmp), external_data=False)
    except (OSError, RuntimeError) as err:
        free = free_bytes(out.parent)
        if is_environment_problem(err) or (
                isinstance(err, RuntimeError) and free is not None and free < needed):
            raise DiskFullError(out, needed, free, at_least=True) from err
        raise


# Parity tolerances (max abs error, min cosine) against the float32 PyTorch wrapper. FP16 is
# measured against float32 too, so its report shows the precision actually lost.
TOLERANCES = {'fp32': (1e-3, 0.9999), 'fp16': (3e-2, 0.999)}


def export_onnx(checkpoint: Path, out: Path, height: int, width: int, bank_size: int,
                with_logits: bool = False, atol: float | None = None, fp16: bool = False
                ) -> tuple[EngineSpec, ParityResult]:
    """Export, check and write the ONNX file + EngineSpec + parity report (atomically).

    fp16: the network in float16 with LayerNorm, softmax and L2 normalisation in float32
    (model/precision.py); inputs, propagation and outputs stay float32/uint8.
    """
    import onnx

    precision = 'fp16' if fp16 else 'fp32'
    default_atol, min_cos = TOLERANCES[precision]
    atol = default_atol if atol is None else atol
    model, _ = load_checkpoint(checkpoint)
    reference = DeployWrapper(model, with_logits=with_logits)
    spec = deploy_spec(reference, height, width, bank_size, file_sha256(checkpoint), precision)
    wrapper = reference
    if fp16:  # a half-precision copy to export; the float32 reference stays for parity
        wrapper = DeployWrapper(to_half_precision(copy.deepcopy(model)), with_logits=with_logits)
    example = example_inputs(spec)
    clean_stale_outputs(out)
    weight_bytes = sum(t.numel() * t.element_size() for t in wrapper.state_dict().values())

    # ONNX file, spec and parity report are written to temp files beside --out and committed
    # together at the end (ONNX first, then spec, then report); any failure, parity included,
    # removes all three temps and leaves --out untouched.
    with contextlib.ExitStack() as commit:
        tmp_report = commit.enter_context(atomic_path(parity_path(out)))
        tmp_spec = commit.enter_context(atomic_path(spec_path(out)))
        tmp = commit.enter_context(atomic_path(out))
        # the exporter's own passes log every rewrite at INFO; keep only their warnings
        logging.getLogger('torch.onnx').setLevel(logging.ERROR)
        for name in ('onnxscript', 'onnx_ir'):
            logging.getLogger(name).setLevel(logging.WARNING)
        program = torch.onnx.export(wrapper, example, dynamo=True, opset_version=OPSET,
                                    input_names=list(spec.input_names),
                                    output_names=list(spec.output_names))
        _save_onnx(program, tmp, out, weight_bytes)
        graph = onnx.load(str(tmp))
        onnx.checker.check_model(graph, full_check=True)
        bad = FORBIDDEN_OPS & {node.op_type for node in graph.graph.node}
        if bad:
            raise ExportCheckError(f'the exported graph contains non-deployable ops '
                                   f'{sorted(bad)}')
        unsafe = tensorrt_type_violations(graph)  # uint8/bool where TensorRT 10.0-10.3 fails
        if unsafe:
            raise ExportCheckError('the exported graph is not TensorRT-safe: ' + '; '.join(
                unsafe[:5]))
        spec = dataclasses.replace(spec, onnx_sha256=file_sha256(tmp))  # ties spec to ONNX
        parity = check_parity(reference, tmp, spec, atol=atol, min_cos=min_cos)
        report = {'checkpoint': str(checkpoint), 'onnx': str(out), 'passed': parity.passed,
                  'precision': precision, 'reference': 'PyTorch float32 on CPU',
                  'atol': atol, 'min_cosine_required': min_cos,
                  'max_abs_error': parity.max_abs_error,
                  'min_cosine': parity.min_cosine, 'nodes': len(graph.graph.node)}
        if not parity.passed:
            raise ExportCheckError(f'ONNX Runtime parity above tolerance: {report}')
        tmp_report.write_text(json.dumps(report, indent=2))
        tmp_spec.write_text(spec.to_json())
    return spec, parity


def main_onnx(args: argparse.Namespace) -> int:
    """`contrast-semask-export onnx` with parsed `args` (export_cli.main dispatches here)."""
    if args.height < 8 or args.width < 8 or args.bank_size < 1:
        return fail(_logger, '--height/--width must be >= 8 and --bank-size >= 1',
                    EXIT_BAD_INPUT)
    try:
        spec, parity = export_onnx(args.checkpoint, args.out, args.height, args.width,
                                   args.bank_size, args.logits, args.atol, args.fp16)
    except ExportCheckError as err:
        return fail(_logger, err, EXIT_CHECK_FAILED)
    except (CheckpointError, OSError, ImportError) as err:  # 2 bad file; 3 disk/package
        return fail(_logger, err)
    summary: dict[str, Any] = {k: f'{v:.2e}' for k, v in parity.max_abs_error.items()}
    _logger.info('wrote %s (+ .json spec, .parity.json): %dx%d, D=%d, K=%d; max |err| %s',
                 args.out, spec.height, spec.width, spec.embedding_dim, spec.bank_size, summary)
    return EXIT_OK


if __name__ == '__main__':
    sys.exit(main())
