"""Training configuration: typed dataclasses grouped by concern, a YAML preset over their
defaults, and `--key=value` arguments over both (nanoGPT's two layers, without exec).

    TrainConfig
      model     ModelSection     architecture preset, head, classes, normalisation, initial weights
      data      DataSection      converted data directory, splits, augmentation, batch, loader
      loss      LossConfig       contrast_semask_train.losses: CE, semantic prior, contrastive
      optim     OptimSection     AdamW, gradient accumulation, clipping
      schedule  ScheduleSection  iterations, poly lr with linear warm-up, early stop
      log       LogSection       evaluation / log / checkpoint intervals, TensorBoard, progress
      work_dir, seed, device, dtype, sync_bn   the run itself

A preset (config/train/*.yaml) is a mapping with these group names. An override is
`--group.key=value` (`--optim.lr=2e-4`, `--loss.seed.bank_depth=5`); a key that exists in one
group only may omit the group (`--lr=2e-4`, `--batch-size=4`, `--stop-at=100`). Unknown keys
(the message lists the valid ones) and values of the wrong type raise `ConfigError` before any
work starts. The resolved config is logged, written to config.json and saved into every
checkpoint (`TrainConfig.to_dict()`, nested like the YAML). Defaults are the seed's recipe
(docs/MODEL.md §6): SeMask-S, AdamW 1e-4, wd 1e-4, poly with 500-iteration warm-up,
5000 iterations, batch 8, 512 crops, evaluation every 250 iterations.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contrast_semask_train.losses import LossConfig

SEED_RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the key and what was expected."""


# Exit codes of every contrast-semask command (README, "Exit codes"): one meaning each.


def _one_of(key: str, value: Any, allowed: typing.Sequence[Any]) -> None:
    if value not in allowed:
        raise ConfigError(f'{key} must be one of {tuple(allowed)}, got {value!r}')


def _at_least(where: str, section: Any, names: tuple[str, ...], low: float) -> None:
    for name in names:
        if getattr(section, name) < low:
            raise ConfigError(f'{where}.{name} must be >= {low}, got {getattr(section, name)}')


@dataclass
class ModelSection:
    variant: str = 'small'  # micro | tiny | small | base (contrast_semask_train.model.VARIANTS)
    head: str = 'contrastive'  # contrastive | vanilla
    num_classes: int = 8
    semantic_attention: str = 'window'  # window | ade20k | seed | four comma-separated modes
    normalization: str = 'imagenet'  # imagenet | seed-ycor (seed's, docs/MODEL.md §6)
    overrides: dict[str, Any] = field(default_factory=dict)  # any other ModelConfig field
    load_from: str = ''  # mmseg SeMask-FPN .pth or a contrast_semask .pt ('' = random init)
    seed_classes: str = 'none'  # none | ycor: seed new class rows from ADE20K rows (not seed)
    trust_pickle: bool = False  # let torch.load unpickle mmcv meta objects (trusted files only)

    def validate(self) -> None:
        from contrast_semask_train.data.ycor import CLASS_SEEDS, class_seeds
        from contrast_semask_train.model.config import NORMALIZATIONS, VARIANTS

        _one_of('model.variant', self.variant, sorted(VARIANTS))
        _one_of('model.head', self.head, ('contrastive', 'vanilla'))
        _one_of('model.normalization', self.normalization, sorted(NORMALIZATIONS))
        _one_of('model.seed_classes', self.seed_classes, CLASS_SEEDS)
        _at_least('model', self, ('num_classes',), 1)
        try:
            class_seeds(self.seed_classes, self.num_classes)
        except ValueError as err:
            raise ConfigError(f'model.seed_classes: {err}') from err


@dataclass
class DataSection:
    # Resize, crop and test scale follow the seed's pipelines (docs/MODEL.md §6).
    root: str = ''  # written by `contrast-semask-data convert-ycor` (--data on the command line)
    train_split: str = 'train'
    val_split: str = 'valid'
    scale: tuple[int, int] = (2048, 512)  # keep-ratio resize target (long, short)
    ratios: tuple[float, ...] = SEED_RATIOS  # discrete resize ratios (times scale)
    crop_size: int = 512
    photometric: bool = True
    eval_scale: tuple[int, int] = (2048, 512)  # test scale: 1024x544 -> 964x512
    max_val_images: int = 0  # 0 = the whole validation split
    batch_size: int = 8  # per process; the effective batch is batch_size * grad_accum * world
    num_workers: int = 4

    def validate(self) -> None:
        _at_least('data', self, ('crop_size', 'batch_size'), 1)
        _at_least('data', self, ('max_val_images', 'num_workers'), 0)
        if not self.ratios or min(self.ratios) <= 0:
            raise ConfigError(f'data.ratios must be positive, got {self.ratios}')


@dataclass
class OptimSection:
    # The seed's AdamW (docs/MODEL.md §6).
    lr: float = 1e-4  # the base lr; the schedule scales it
    weight_decay: float = 1e-4  # not on norms and relative-position tables
    betas: tuple[float, float] = (0.9, 0.999)
    grad_accum: int = 1  # micro-batches per optimizer step
    grad_clip: float = 0.0  # max global grad norm; 0 = off (the seed does not clip)

    def validate(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f'optim.lr must be > 0, got {self.lr}')
        _at_least('optim', self, ('weight_decay', 'grad_clip'), 0)
        _at_least('optim', self, ('grad_accum',), 1)


@dataclass
class ScheduleSection:
    max_iters: int = 5000  # optimizer steps; the poly schedule reaches min_lr here
    warmup_iters: int = 500
    warmup_ratio: float = 1e-6  # the warm-up starts at lr * warmup_ratio
    lr_power: float = 1.0
    min_lr: float = 0.0
    stop_at: int = 0  # stop (with a checkpoint) after this iteration; 0 = run to max_iters

    def validate(self) -> None:
        _at_least('schedule', self, ('max_iters',), 1)
        if not 0 <= self.warmup_iters < self.max_iters:
            raise ConfigError(f'schedule.warmup_iters must be in [0, max_iters='
                              f'{self.max_iters}), got {self.warmup_iters}')
        if not 0 <= self.stop_at <= self.max_iters:
            raise ConfigError(f'schedule.stop_at must be in [0, max_iters={self.max_iters}], '
                              f'got {self.stop_at}')


@dataclass
class LogSection:
    eval_interval: int = 250
    log_interval: int = 50
    checkpoint_interval: int = 500  # `last.pt` also after every evaluation and at the end
    tensorboard: bool = True
    num_vis_images: int = 2  # predictions and embedding PCA images per evaluation
    progress: bool = True  # tqdm bar on rank 0

    def validate(self) -> None:
        _at_least('log', self, ('eval_interval', 'log_interval', 'checkpoint_interval'), 1)
        _at_least('log', self, ('num_vis_images',), 0)


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    loss: LossConfig = field(default_factory=LossConfig)  # validated by LossConfig itself
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    log: LogSection = field(default_factory=LogSection)
    work_dir: str = 'runs/train'
    seed: int = 0
    device: str = 'auto'  # auto | cpu | cuda | cuda:N (DDP uses LOCAL_RANK)
    dtype: str = 'float32'  # float32 | bfloat16 | float16 (autocast on CUDA; CPU: bfloat16)
    sync_bn: bool = True  # convert BatchNorm to SyncBatchNorm under DDP on GPUs (SM's choice)

    def validate(self) -> None:
        for section in (self.model, self.data, self.optim, self.schedule, self.log):
            section.validate()
        _one_of('dtype', self.dtype, ('float32', 'bfloat16', 'float16'))

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dicts, like the YAML presets (saved in checkpoints and config.json)."""
        return dataclasses.asdict(self)

    def flat_dict(self) -> dict[str, Any]:
        """{'optim.lr': 0.0001, 'loss.seed.temperature': 0.07, ...}: every leaf, dotted."""
        return dict(flatten_dict(self.to_dict()))


# Groups built here from their dataclass; `loss` is built by LossConfig.from_dict.
SECTIONS: dict[str, type] = {'model': ModelSection, 'data': DataSection, 'optim': OptimSection,
                             'schedule': ScheduleSection, 'log': LogSection}
_RUN_KEYS = ('work_dir', 'seed', 'device', 'dtype', 'sync_bn')


def flatten_dict(values: Mapping[str, Any], prefix: str = '') -> Iterator[tuple[str, Any]]:
    """(dotted key, leaf value) pairs of nested mappings; an empty mapping is a leaf."""
    for key, value in values.items():
        if isinstance(value, Mapping) and value:
            yield from flatten_dict(value, f'{prefix}{key}.')
        else:
            yield f'{prefix}{key}', value


def valid_keys() -> list[str]:
    """Every settable key, dotted ('model.variant', ..., 'loss.seed.temperature', 'seed')."""
    return sorted(TrainConfig().flat_dict())


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
    elif dict in (hint, origin):
        expected = 'a mapping'
        if isinstance(value, Mapping):
            return dict(value)
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


def _build_section(cls: type, values: Any, where: str) -> Any:
    if not isinstance(values, Mapping):
        raise ConfigError(f'{where} is a group of keys ({", ".join(_field_names(cls))}), got '
                          f'{values!r}; write {where}.<key>: value')
    unknown = sorted(f'{where}.{k}' for k in values if k not in _field_names(cls))
    if unknown:
        raise ConfigError(f'unknown config keys {unknown}; valid keys in {where}: '
                          f'{_field_names(cls)}')
    hints = typing.get_type_hints(cls)
    return cls(**{k: _coerce(f'{where}.{k}', v, hints[k]) for k, v in values.items()})


def _build_loss(values: Any) -> LossConfig:
    try:
        return LossConfig.from_dict(values)
    except ValueError as err:
        raise ConfigError(str(err)) from err


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _did_you_mean(key: str) -> str:
    groups = [group for group, cls in SECTIONS.items() if key in _field_names(cls)]
    return f' (did you mean {groups[0]}.{key}?)' if groups else ''


def from_dict(values: Mapping[str, Any]) -> TrainConfig:
    """A TrainConfig from nested plain values (a preset's layout); strict keys and types."""
    unknown = sorted(set(values) - set(_field_names(TrainConfig)))
    if unknown:
        hints = ''.join(_did_you_mean(k) for k in unknown[:1])
        raise ConfigError(f'unknown config keys {unknown}{hints}; valid keys: {valid_keys()}')
    hints = typing.get_type_hints(TrainConfig)
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key in SECTIONS:
            kwargs[key] = _build_section(SECTIONS[key], value, key)
        elif key == 'loss':
            kwargs[key] = _build_loss(value)
        else:
            kwargs[key] = _coerce(key, value, hints[key])
    return TrainConfig(**kwargs)


def resolve_key(key: str) -> str:
    """'lr' -> 'optim.lr' when exactly one group has the key; dotted and run keys unchanged."""
    key = key.replace('-', '_')
    if '.' in key or key in SECTIONS or key == 'loss' or key in _RUN_KEYS:
        return key
    groups = [group for group, cls in SECTIONS.items() if key in _field_names(cls)]
    if len(groups) == 1:
        return f'{groups[0]}.{key}'
    raise ConfigError(f'unknown config keys [{key!r}]; valid keys: {valid_keys()} (a key that '
                      'exists in one group only may omit the group)')


def apply_overrides(values: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Merge {dotted key: value} into nested `values` (a copy); a mapping merges into a mapping."""
    merged = _copy(values)
    for key, value in overrides.items():
        parts = resolve_key(key).split('.')
        node = merged
        for depth, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f'{key}: {".".join(parts[:depth + 1])} is not a mapping')
        last = parts[-1]
        if isinstance(value, Mapping) and isinstance(node.get(last), dict):
            node[last] = _merge(node[last], value)
        else:
            node[last] = _copy(value) if isinstance(value, Mapping) else value
    return merged


def _copy(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _copy(v) if isinstance(v, Mapping) else v for k, v in values.items()}


def _merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = _copy(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = _copy(value) if isinstance(value, Mapping) else value
    return out


def read_preset(path: str | Path) -> dict[str, Any]:
    """A YAML preset as nested values (not yet checked)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f'config file not found: {path} (presets are in config/train/)')
    loaded = yaml.safe_load(path.read_text()) or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f'{path} must hold a mapping of config groups, got '
                          f'{type(loaded).__name__}')
    return loaded


def build_config(preset: str | Path | None = None, overrides: Mapping[str, Any] | None = None
                 ) -> TrainConfig:
    """Defaults <- YAML preset <- overrides ({'optim.lr': 2e-4} or {'lr': 2e-4}); strict keys
    and types; then `validate()`."""
    values = read_preset(preset) if preset else {}
    config = from_dict(apply_overrides(values, overrides or {}))
    config.validate()
    return config


def _parse_scalar(text: str) -> Any:
    """`--key=value` text -> YAML scalar/list (so 1e-4, true, [512, 256] and null work)."""
    import yaml

    return yaml.safe_load(text)


def parse_override_args(args: list[str]) -> dict[str, Any]:
    """['--lr=1e-3', '--loss.contrastive=seed'] -> {'optim.lr': 0.001, 'loss.contrastive':
    'seed'}; short keys are resolved (and unknown ones rejected) here."""
    overrides = {}
    for arg in args:
        if not arg.startswith('--') or '=' not in arg:
            raise ConfigError(f'expected --key=value or --group.key=value, got {arg!r}')
        key, _, text = arg[2:].partition('=')
        overrides[resolve_key(key)] = _parse_scalar(text)
    return overrides
