"""Training configuration: a `TrainConfig` dataclass gives the defaults, a YAML preset overrides
them, and `--key=value` arguments override both (nanoGPT's two layers, without exec).

Unknown keys and values of the wrong type raise `ConfigError` before any work starts. The
resolved config is logged and saved into every checkpoint. Defaults are the seed's recipe
(seed_spec 3): SeMask-S, AdamW 1e-4, wd 1e-4, poly with 500-iteration warm-up, 5000 iterations,
batch 8, 512 crops, evaluation every 250 iterations.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SEED_RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the key and what was expected."""


@dataclass
class TrainConfig:
    # --- model (contrast_semask_train.model presets) ---
    variant: str = 'small'  # micro | tiny | small | base
    head: str = 'contrastive'  # contrastive | vanilla
    num_classes: int = 8
    semantic_attention: str = 'window'  # window | ade20k | seed | four comma-separated modes
    normalization: str = 'imagenet'  # imagenet | seed-ycor (the seed's per-image std, pitfall 3)
    model_overrides: dict = field(default_factory=dict)  # any other ModelConfig field
    # --- initialisation ---
    load_from: str = ''  # mmseg SeMask-FPN .pth or a contrast_semask .pt ('' = random init)
    seed_classes: str = 'none'  # none | ycor: seed new class rows from ADE20K rows (not seed)
    trust_pickle: bool = False  # let torch.load unpickle mmcv meta objects (trusted files only)
    # --- data (a directory written by `contrast-semask-data convert-ycor`) ---
    data: str = ''
    train_split: str = 'train'
    val_split: str = 'valid'
    scale: tuple[int, int] = (2048, 512)  # keep-ratio resize target (long, short), seed 3.2
    ratios: tuple[float, ...] = SEED_RATIOS  # discrete resize ratios, seed 3.2
    crop_size: int = 512
    photometric: bool = True
    eval_scale: tuple[int, int] = (2048, 512)  # test scale, seed 3.4: 1024x544 -> 964x512
    max_val_images: int = 0  # 0 = the whole validation split
    num_workers: int = 4
    # --- losses (contrast_semask_train.losses.LossConfig) ---
    loss: dict = field(default_factory=dict)
    # --- optimisation ---
    batch_size: int = 8  # per process; the effective batch is batch_size * grad_accum * world
    grad_accum: int = 1
    max_iters: int = 5000
    lr: float = 1e-4
    weight_decay: float = 1e-4  # not on norms and relative-position tables (seed 3.3)
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_iters: int = 500
    warmup_ratio: float = 1e-6
    lr_power: float = 1.0
    min_lr: float = 0.0
    grad_clip: float = 0.0  # max global grad norm; 0 = off (the seed does not clip)
    dtype: str = 'float32'  # float32 | bfloat16 | float16 (autocast on CUDA; CPU: bfloat16)
    sync_bn: bool = True  # convert BatchNorm to SyncBatchNorm under DDP (SM's choice)
    # --- evaluation, logging, checkpoints ---
    eval_interval: int = 250
    log_interval: int = 50
    checkpoint_interval: int = 500  # `last.pt` also after every evaluation and at the end
    stop_at: int = 0  # stop (with a checkpoint) after this iteration; 0 = run to max_iters
    tensorboard: bool = True
    num_vis_images: int = 2  # predictions and embedding PCA images per evaluation
    work_dir: str = 'runs/train'
    seed: int = 0
    device: str = 'auto'  # auto | cpu | cuda | cuda:N (DDP uses LOCAL_RANK)
    progress: bool = True

    def validate(self) -> None:
        choices = {'head': ('contrastive', 'vanilla'), 'normalization': ('imagenet', 'seed-ycor'),
                   'seed_classes': ('none', 'ycor'),
                   'dtype': ('float32', 'bfloat16', 'float16')}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f'{key} must be one of {allowed}, got {getattr(self, key)!r}')
        positive = ('num_classes', 'batch_size', 'grad_accum', 'max_iters', 'crop_size',
                    'eval_interval', 'log_interval', 'checkpoint_interval')
        for key in positive:
            if getattr(self, key) < 1:
                raise ConfigError(f'{key} must be >= 1, got {getattr(self, key)}')
        if not 0 <= self.warmup_iters < self.max_iters:
            raise ConfigError(f'warmup_iters must be in [0, max_iters={self.max_iters}), '
                              f'got {self.warmup_iters}')
        if self.lr <= 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ConfigError('lr must be > 0, weight_decay and grad_clip >= 0')
        if not self.ratios or min(self.ratios) <= 0:
            raise ConfigError(f'ratios must be positive, got {self.ratios}')
        if self.stop_at < 0 or self.stop_at > self.max_iters:
            raise ConfigError(f'stop_at must be in [0, max_iters], got {self.stop_at}')

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _type_hints() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check `value` against the field's annotation; lists become tuples. Raises ConfigError."""
    origin = typing.get_origin(hint)
    expected = getattr(hint, '__name__', str(hint))
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, str):
            return value
    elif hint is dict:
        if isinstance(value, dict):
            return value
    elif origin is tuple:
        args = typing.get_args(hint)
        if isinstance(value, (list, tuple)):
            item = args[0]
            if len(args) == 2 and args[1] is Ellipsis or len(args) == len(value):
                return tuple(_coerce(key, v, item) for v in value)
        expected = f'a list of {len(args) if args[-1] is not Ellipsis else "any number of"} ' \
                   f'{getattr(args[0], "__name__", args[0])}'
    elif origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _coerce(key, value, option)
            except ConfigError:
                continue
    raise ConfigError(f'{key} expects {expected}, got {value!r} ({type(value).__name__})')


def _parse_scalar(text: str) -> Any:
    """`--key=value` text -> YAML scalar/list (so 1e-4, true, [512, 256] and null work)."""
    import yaml

    return yaml.safe_load(text)


def apply_overrides(values: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Merge `overrides` into `values`; dotted keys ('loss.contrastive') reach into dict fields."""
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in values.items()}
    for key, value in overrides.items():
        top, _, rest = key.partition('.')
        if rest:
            if not isinstance(merged.get(top, {}), dict):
                raise ConfigError(f'{key}: {top} is not a mapping')
            node = merged.setdefault(top, {})
            parts = rest.split('.')
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def build_config(preset: str | Path | None = None, overrides: dict[str, Any] | None = None
                 ) -> TrainConfig:
    """Defaults <- YAML preset <- overrides; strict keys and types; then `validate()`."""
    import yaml

    values: dict[str, Any] = {}
    if preset:
        path = Path(preset)
        if not path.is_file():
            raise ConfigError(f'config file not found: {path} (presets are in config/train/)')
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f'{path} must hold a mapping of config keys, got '
                              f'{type(loaded).__name__}')
        values = apply_overrides(values, loaded)
    values = apply_overrides(values, overrides or {})
    hints = _type_hints()
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise ConfigError(f'unknown config keys {unknown}; valid keys: {sorted(hints)}')
    config = TrainConfig(**{k: _coerce(k, v, hints[k]) for k, v in values.items()})
    config.validate()
    return config


def parse_override_args(args: list[str]) -> dict[str, Any]:
    """['--lr=1e-3', '--loss.contrastive=seed'] -> {'lr': 0.001, 'loss.contrastive': 'seed'}."""
    overrides = {}
    for arg in args:
        if not arg.startswith('--') or '=' not in arg:
            raise ConfigError(f'expected --key=value, got {arg!r}')
        key, _, text = arg[2:].partition('=')
        overrides[key.replace('-', '_')] = _parse_scalar(text)
    return overrides
