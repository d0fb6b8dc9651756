"""Train contrastive (or vanilla) SeMask-FPN: one readable loop, in nanoGPT's order.

One process:
    contrast-semask-train --config config/train/seed_contrastive_small.yaml --data data/ycor \\
        --load-from semfpn_semask_small_ade20k.pth --work-dir runs/contrastive_s
Several GPUs (DDP, one process per GPU; SyncBN, sharded data, rank 0 writes):
    torchrun --standalone --nproc_per_node=4 -m contrast_semask_train.train --config ... --data ...
Continue an interrupted run exactly where it stopped (model, optimizer, scaler, schedule, RNG,
contrastive bank and data order): run the same command with --resume.
Any config key can be overridden as --group.key=value (--loss.contrastive=reco,
--optim.lr=2e-4), or --key=value when one group alone has the key (--lr=2e-4).

`train()` reads top to bottom: set-up, `Checkpointer.resume`, then the loop of `train_step`,
`mean_losses` (logged by `RunLog`), `evaluate_model` and `Checkpointer.save`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch import nn

from contrast_semask_ros.atomic import atomic_write_text, clean_stale
from contrast_semask_ros.exit_codes import (
    EXIT_CHECK_FAILED,
    EXIT_OK,
    MissingEnvironmentError,
    fail,
)
from contrast_semask_train.config import (
    ConfigError,
    DataSection,
    ModelSection,
    ScheduleSection,
    TrainConfig,
    build_config,
    flatten_dict,
    parse_override_args,
)
from contrast_semask_train.data import (
    YCOR_CLASSES,
    DataFormatError,
    EvalTransform,
    SegmentationDataset,
    TrainTransform,
    class_seeds,
)
from contrast_semask_train.evaluate import (
    evaluate_segmentation,
    metrics_from_confusion,
    visualise_predictions,
)
from contrast_semask_train.losses import Criterion
from contrast_semask_train.model import (
    CheckpointError,
    ContrastSemask,
    ModelOutputs,
    count_parameters,
    load_semask_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from contrast_semask_train.model.checkpoint import CHECKPOINT_FORMAT
from contrast_semask_train.model.segmentor import build_configured_model

_logger = logging.getLogger('contrast_semask_train')


# ----------------------------------------------------------------------------------------------
# pure pieces: schedule, parameter groups, batch order


def lr_at(step: int, base_lr: float, schedule: ScheduleSection) -> float:
    """mmcv poly schedule with linear warm-up (docs/MODEL.md §6), a pure function of the step."""
    s = schedule
    lr = (base_lr - s.min_lr) * (1.0 - step / s.max_iters) ** s.lr_power + s.min_lr
    if step < s.warmup_iters:
        lr *= 1.0 - (1.0 - step / s.warmup_iters) * (1.0 - s.warmup_ratio)
    return lr


NO_DECAY_KEYWORDS = ('relative_position_bias_table', 'norm')


def param_groups(model: nn.Module, weight_decay: float,
                 no_decay_keywords: Sequence[str] = NO_DECAY_KEYWORDS) -> list[dict[str, Any]]:
    """The seed's mmcv custom_keys: no weight decay for any parameter whose dotted name contains
    a keyword (every backbone LayerNorm and the relative-position tables); everything else,
    biases, gamma and the head's BatchNorm (named `bn`) included, decays (docs/MODEL.md §6)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if any(k in name for k in no_decay_keywords) else decay).append(param)
    return [{'params': decay, 'weight_decay': weight_decay},
            {'params': no_decay, 'weight_decay': 0.0}]


class EpochBatches:
    """Deterministic batch order: epoch e is a permutation seeded by (seed, e), cut into
    `world_size` shards of whole batches (the remainder is dropped, like drop_last).

    Batch b of the run is (epoch, offset) = divmod(b, per_epoch), so a resumed run starts
    at the exact batch where the interrupted one stopped.
    """

    def __init__(self, num_items: int, batch_size: int, world_size: int, rank: int,
                 seed: int) -> None:
        self.num_items, self.batch_size = num_items, batch_size
        self.world_size, self.rank, self.seed = world_size, rank, seed
        self.per_epoch = num_items // (batch_size * world_size)

    def epoch(self, epoch: int) -> list[list[int]]:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(self.num_items, generator=gen).tolist()
        span = self.per_epoch * self.batch_size
        mine = order[self.rank * span:(self.rank + 1) * span]
        return [mine[i:i + self.batch_size] for i in range(0, span, self.batch_size)]


def batch_stream(dataset: SegmentationDataset, batches: EpochBatches, start: int,
                 num_workers: int, pin_memory: bool
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless (images, labels) batches from global batch index `start` on."""
    epoch, offset = divmod(start, batches.per_epoch)
    while True:
        # Items are a pure function of (seed, epoch, index): workers start fresh each epoch
        # and see this epoch. The loader's own generator keeps it off the global RNG.
        dataset.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=batches.epoch(epoch)[offset:], num_workers=num_workers,
            pin_memory=pin_memory, generator=torch.Generator().manual_seed(epoch))
        yield from loader
        epoch, offset = epoch + 1, 0


# ----------------------------------------------------------------------------------------------
# set-up: devices, DDP, model, data


class Runtime(NamedTuple):
    device: torch.device
    rank: int
    local_rank: int
    world_size: int
    ddp: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_runtime(device: str) -> Runtime:
    """DDP when torchrun set RANK (nccl on CUDA, gloo on CPU); else one process."""
    ddp = 'RANK' in os.environ and 'WORLD_SIZE' in os.environ
    rank = int(os.environ.get('RANK', 0))
    local_rank = int(os.environ.get('LOCAL_RANK', 0))
    world = int(os.environ.get('WORLD_SIZE', 1))
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device.startswith('cuda'):
        if not torch.cuda.is_available():
            raise MissingEnvironmentError(f'device {device!r} requested but CUDA is not '
                                          'available on this machine; use --device=cpu')
        dev = torch.device('cuda', local_rank) if ddp else torch.device(device)
        torch.cuda.set_device(dev)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    else:
        dev = torch.device('cpu')
    if ddp:
        dist.init_process_group('nccl' if dev.type == 'cuda' else 'gloo')
    return Runtime(dev, rank, local_rank, world, ddp)

def build_training_model(cfg: ModelSection) -> tuple[ContrastSemask, str]:
    """The model of `cfg`, initialised from cfg.load_from (mmseg SeMask or our checkpoint)."""
    names = YCOR_CLASSES if cfg.num_classes == len(YCOR_CLASSES) else ()
    try:
        model = build_configured_model(
            cfg.variant, cfg.num_classes, cfg.head,  # type: ignore[arg-type]
            cfg.semantic_attention, cfg.normalization, names, **cfg.overrides)
        seeds = class_seeds(cfg.seed_classes, cfg.num_classes)  # YCOR's table, or None
    except ValueError as err:
        raise ConfigError(str(err)) from err
    if not cfg.load_from:
        return model, 'random initialisation'
    raw = read_checkpoint(cfg.load_from, cfg.trust_pickle,
                          trust_option='--model.trust_pickle=true')
    if raw.get('format') == CHECKPOINT_FORMAT:
        try:
            model.load_state_dict(raw['model'], strict=True)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0]
            raise CheckpointError(
                f'{cfg.load_from} was trained with another architecture '
                f'({raw.get("model_config")}); this run builds {model.config} ({first})'
                ) from err
        return model, f'weights of {cfg.load_from} (step {raw.get("step")})'
    report = load_semask_checkpoint(model, raw, class_seeds=seeds)
    return model, f'SeMask checkpoint {cfg.load_from}: {report.summary()}'


class TrainData(NamedTuple):
    train_set: SegmentationDataset
    val_set: SegmentationDataset
    batches: EpochBatches  # this rank's deterministic batch order


def check_data_root(cfg: DataSection) -> Path:
    root = Path(cfg.root)
    if not cfg.root or not root.is_dir():
        raise ConfigError(f'data directory {cfg.root!r} not found: pass --data DIR, a directory '
                          'written by `contrast-semask-data convert-ycor` (or `synth`, then '
                          'convert-ycor)')
    return root


def build_data(cfg: DataSection, seed: int, rt: Runtime, mean: Sequence[float],
               std: Sequence[float]) -> TrainData:
    """Both splits of cfg.root with the model's normalisation, and this rank's batch order."""
    root = check_data_root(cfg)
    train_set = SegmentationDataset(
        root, cfg.train_split, TrainTransform(
            scale=cfg.scale, ratios=cfg.ratios, crop=cfg.crop_size,
            photometric=cfg.photometric, mean=mean, std=std), seed=seed)
    val_set = SegmentationDataset(
        root, cfg.val_split, EvalTransform(scale=cfg.eval_scale, mean=mean, std=std),
        max_items=cfg.max_val_images or None)
    batches = EpochBatches(len(train_set), cfg.batch_size, rt.world_size, rt.rank, seed)
    if batches.per_epoch == 0:
        raise ConfigError(f'{len(train_set)} training images cannot fill one batch of '
                          f'{cfg.batch_size} on each of {rt.world_size} processes')
    return TrainData(train_set, val_set, batches)


def wrap_for_ddp(model: ContrastSemask, cfg: TrainConfig, rt: Runtime
                 ) -> tuple[nn.Module, ContrastSemask]:
    """(the module to train, the plain model inside it): DDP (with SyncBN on GPUs) or as is."""
    if not rt.ddp:
        return model, model
    if cfg.sync_bn and rt.device.type == 'cuda':  # SyncBatchNorm runs on GPUs only
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    # A contrastive head trained without the contrastive loss leaves its projection unused.
    unused = cfg.model.head == 'contrastive' and cfg.loss.contrastive == 'none'
    ddp = nn.parallel.DistributedDataParallel(
        model, device_ids=[rt.device.index] if rt.device.type == 'cuda' else None,
        find_unused_parameters=unused)
    return ddp, model


def autocast_context(dtype: str, device: torch.device) -> AbstractContextManager:
    """Mixed precision for the forward pass (`dtype` of TrainConfig); losses stay in fp32."""
    if dtype == 'float32':
        return nullcontext()
    torch_dtype = torch.bfloat16 if dtype == 'bfloat16' else torch.float16
    if device.type == 'cpu' and torch_dtype == torch.float16:
        raise ConfigError('dtype float16 needs CUDA; use bfloat16 or float32 on CPU')
    return torch.autocast(device.type, dtype=torch_dtype)


class Parts(NamedTuple):
    """What one optimizer step changes."""

    model: nn.Module  # the module to call: DDP-wrapped under DDP, else `raw`
    raw: ContrastSemask  # the plain model (saved, evaluated, returned)
    criterion: Criterion  # holds the contrastive bank of this rank
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler


# ----------------------------------------------------------------------------------------------
# checkpoints: last.pt / best.pt, resume


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {'cpu': torch.get_rng_state()}
    if device.type == 'cuda':
        state['cuda'] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state['cpu'])
    if device.type == 'cuda' and 'cuda' in state:
        torch.cuda.set_rng_state(state['cuda'], device)


def _to_cpu(obj: Any) -> Any:
    if torch.is_tensor(obj):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _gather(obj: Any, rt: Runtime) -> list[Any]:
    if not rt.ddp:
        return [obj]
    out: list[Any] = [None] * rt.world_size
    dist.all_gather_object(out, obj)
    return out


class Resumed(NamedTuple):
    step: int  # the iteration the checkpoint was written after
    rng: dict[str, torch.Tensor]  # this rank's RNG states then (restore after seeding)
    note: str  # what was resumed, and which config keys changed since


class Checkpointer:
    """Owns `last.pt` and `best.pt` in the work dir.

    - `save`: every rank's RNG states and contrastive bank are gathered (all ranks must call
      it), rank 0 writes model, optimizer, scaler, banks, RNG states and the best mIoU
      atomically (`save_checkpoint`), with the resolved config and the latest metrics.
    - `record`: tracks the best mIoU over evaluations (and across a resume).
    - `resume`: restores model, optimizer, scaler, this rank's bank and the best mIoU from
      the newest complete checkpoint: `last.pt`, or `best.pt` when `last.pt` is missing or
      damaged (a kill during its first write); the caller restores the returned RNG states
      once the run is seeded.
    - `clean_stale`: removes temp files a killed run left ('.last.pt.*.tmp'), with a log line.
    """

    def __init__(self, work_dir: Path, cfg: TrainConfig, rt: Runtime) -> None:
        self.work_dir = work_dir
        self.last, self.best = work_dir / 'last.pt', work_dir / 'best.pt'
        self.cfg, self.rt = cfg, rt
        self.best_miou = -1.0

    def clean_stale(self) -> list[Path]:
        """Rank 0: remove the temp checkpoints of an interrupted (killed) save."""
        if not self.rt.is_main:
            return []
        return [p for path in (self.last, self.best) for p in clean_stale(self.work_dir,
                                                                          path.name)]

    def record(self, miou: float) -> bool:
        """Note an evaluation's mIoU; True when it beats every earlier one (save best.pt)."""
        improved = miou > self.best_miou
        self.best_miou = max(self.best_miou, miou)
        return improved

    def save(self, path: Path, step: int, parts: Parts, metrics: dict[str, float]) -> None:
        rng = _gather(_rng_state(self.rt.device), self.rt)  # every rank takes part
        banks = _gather(_to_cpu(parts.criterion.state_dict()), self.rt)  # the bank per rank
        if self.rt.is_main:
            save_checkpoint(path, parts.raw, step=step, train_config=self.cfg.to_dict(),
                            metrics=metrics, extra={
                                'optimizer': parts.optimizer.state_dict(),
                                'scaler': parts.scaler.state_dict(), 'criterion': banks,
                                'rng': rng, 'best_miou': self.best_miou})

    def resume(self, model: ContrastSemask, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, criterion: Criterion) -> Resumed:
        """Load the newest complete checkpoint into the (not yet DDP-wrapped) parts of this
        rank."""
        path, ckpt = self.newest_complete()
        if ckpt['model_config'] != model.config.to_dict():
            raise CheckpointError(f'--resume: {path} holds another architecture; resume '
                                  'with the config it was trained with')
        model.load_state_dict(ckpt['model'])
        optimizer.load_state_dict(ckpt['optimizer'])
        scaler.load_state_dict(ckpt['scaler'])
        criterion.load_state_dict(ckpt['criterion'][self.rt.rank % len(ckpt['criterion'])])
        self.best_miou = ckpt['best_miou']
        saved = dict(flatten_dict(ckpt['train_config']))
        changed = sorted(k for k, v in self.cfg.flat_dict().items()
                         if saved.get(k) != v and k != 'schedule.stop_at')
        note = f'resumed from {path} at iteration {ckpt["step"]}' + (
            f' (changed keys: {changed})' if changed else '')
        return Resumed(ckpt['step'], ckpt['rng'][self.rt.rank % len(ckpt['rng'])], note)

    def newest_complete(self) -> tuple[Path, dict[str, Any]]:
        """(path, payload) of the complete resumable checkpoint with the highest step, last.pt
        winning a tie; a missing or damaged last.pt falls back to best.pt with a warning."""
        if not self.last.is_file() and not self.best.is_file():
            raise ConfigError(f'--resume: no checkpoint at {self.last} (nor {self.best.name}); '
                              'start without --resume, or point --work-dir at the run')
        found: list[tuple[Path, dict[str, Any]]] = []
        problems: list[str] = []
        for path in (self.last, self.best):
            if not path.is_file():
                problems.append(f'{path} is missing')
                continue
            try:
                ckpt = read_checkpoint(path)
            except CheckpointError as err:
                problems.append(str(err))
                continue
            missing = [k for k in RESUME_KEYS if k not in ckpt]
            if ckpt.get('format') != CHECKPOINT_FORMAT or missing:
                problems.append(f'{path} is not a resumable checkpoint (missing {missing})')
                continue
            found.append((path, ckpt))
        if not found:
            raise CheckpointError(f'--resume: no complete checkpoint in {self.work_dir}: '
                                  f'{"; ".join(problems)}. Start without --resume')
        path, ckpt = max(found, key=lambda item: item[1]['step'])  # the first (last.pt) on ties
        if path != self.last and self.rt.is_main:
            _logger.warning('--resume: %s; resuming from %s (iteration %d) instead',
                            problems[0] if problems else f'{self.last} is older',
                            path, ckpt['step'])
        return path, ckpt


# what `Checkpointer.save` writes beyond save_checkpoint's own keys, needed by `resume`
RESUME_KEYS = ('model_config', 'model', 'step', 'train_config', 'optimizer', 'scaler',
               'criterion', 'rng', 'best_miou')


# ----------------------------------------------------------------------------------------------
# one step, evaluation, logging


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> float:
    for group in optimizer.param_groups:
        group['lr'] = lr
    return lr


def train_step(parts: Parts, stream: Iterator[tuple[torch.Tensor, torch.Tensor]],
               cfg: TrainConfig, rt: Runtime, autocast: AbstractContextManager
               ) -> torch.Tensor:
    """One optimizer step over cfg.optim.grad_accum micro-batches (gradients synchronised on
    the last one only), with gradient scaling and optional clipping. Returns this rank's mean
    loss terms (4,): total, ce, sem_ce, contrastive, on the device (no CPU-GPU sync)."""
    accum = cfg.optim.grad_accum
    sums = torch.zeros(4, device=rt.device)
    for micro in range(accum):
        images, labels = next(stream)
        images = images.to(rt.device, non_blocking=True)  # B, 3, H, W
        labels = labels.to(rt.device, non_blocking=True)  # B, H, W
        last_micro = micro == accum - 1
        with nullcontext() if (last_micro or not rt.ddp) else parts.model.no_sync():
            with autocast:
                outputs = parts.model(images)
            # losses in fp32: the contrastive similarities at tau=0.07 need it
            outputs = ModelOutputs(*(t.float() for t in outputs))
            terms = parts.criterion(outputs, labels)
            parts.scaler.scale(terms.total / accum).backward()
        sums += torch.stack([t.detach() for t in terms]) / accum
    if cfg.optim.grad_clip > 0:
        parts.scaler.unscale_(parts.optimizer)
        torch.nn.utils.clip_grad_norm_(parts.model.parameters(), cfg.optim.grad_clip)
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    parts.optimizer.zero_grad(set_to_none=True)
    return sums


def mean_losses(sums: torch.Tensor, rt: Runtime, step: int) -> list[float]:
    """The loss terms averaged over ranks, on the CPU (a sync point: only every log_interval).
    Raises FloatingPointError on a non-finite value."""
    if rt.ddp:
        dist.all_reduce(sums)
        sums /= rt.world_size
    values = sums.tolist()
    if not all(math.isfinite(v) for v in values):
        raise FloatingPointError(f'non-finite loss at iteration {step}: {values}; '
                                 'lower the lr or use float32')
    return values


def sync_buffers(model: nn.Module, rt: Runtime) -> None:
    """Make every rank hold rank 0's buffers. DDP broadcasts them at each forward; without
    SyncBN (CPU) the BatchNorm statistics drift per rank until the next one."""
    if rt.ddp:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def evaluate_model(model: ContrastSemask, val_set: SegmentationDataset, cfg: TrainConfig,
                   rt: Runtime, step: int, writer: Any) -> dict[str, float]:
    """Split-wide segmentation metrics (each rank evaluates its shard, the confusion matrices
    are summed); rank 0 also adds prediction images to TensorBoard (`writer`, or None)."""
    sync_buffers(model, rt)
    model.eval()
    shard = range(rt.rank, len(val_set), rt.world_size)
    conf = evaluate_segmentation(model, val_set, rt.device, cfg.model.num_classes, shard)
    if rt.ddp:
        conf = conf.to(rt.device)
        dist.all_reduce(conf)
    seg = metrics_from_confusion(conf.cpu(), val_set.class_names)
    if rt.is_main and writer is not None and cfg.log.num_vis_images:
        shown = range(min(cfg.log.num_vis_images, len(val_set)))
        for i, image in enumerate(visualise_predictions(model, val_set, rt.device, shown)):
            writer.add_image(f'val/prediction_{i}', image, step, dataformats='HWC')
    model.train()
    return seg.as_flat_dict()


class MetricsLog:
    """metrics.jsonl in the work dir (rank 0): one JSON object per logged step or evaluation."""

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        if resume_step is None:
            atomic_write_text(path, '')
        elif path.exists():  # drop what an interrupted run logged after its last checkpoint
            kept = [line for line in path.read_text().splitlines()
                    if line and json.loads(line)['step'] <= resume_step]
            atomic_write_text(path, ''.join(line + '\n' for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open('a') as f:
            f.write(json.dumps(record) + '\n')


class RunLog:
    """Rank 0's outputs: config.json, metrics.jsonl, TensorBoard (tb/), log lines and the
    progress bar; other ranks only keep a disabled bar. A context manager: inside it logging
    goes through tqdm; leaving it closes the bar and TensorBoard."""

    def __init__(self, cfg: TrainConfig, rt: Runtime, step: int, resumed: bool) -> None:
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        self.cfg, self.rt = cfg, rt
        self.metrics: MetricsLog | None = None
        self.writer = None
        work_dir = Path(cfg.work_dir)
        if rt.is_main:
            work_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(work_dir / 'config.json', json.dumps(cfg.to_dict(), indent=2))
            self.metrics = MetricsLog(work_dir / 'metrics.jsonl', step if resumed else None)
            if cfg.log.tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(work_dir / 'tb'),
                                            purge_step=step if resumed else None)
        self.bar = tqdm(total=cfg.schedule.max_iters, initial=step, dynamic_ncols=True,
                        disable=not (rt.is_main and cfg.log.progress), desc='train', unit='it')
        self._redirect = logging_redirect_tqdm()
        self.t_log, self.n_log = time.perf_counter(), 0

    def __enter__(self) -> RunLog:
        self._redirect.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._redirect.__exit__(*exc)
        self.bar.close()
        if self.writer is not None:
            self.writer.close()

    def describe(self, model: ContrastSemask, data: TrainData, init_note: str) -> None:
        if self.rt.is_main:
            cfg, rt = self.cfg, self.rt
            _logger.info('model %s (%s, K=%d): %.2f M parameters; %s', cfg.model.variant,
                         cfg.model.head, cfg.model.num_classes, count_parameters(model) / 1e6,
                         init_note)
            _logger.info('data: %d train / %d val images; %d processes x batch %d x accum %d; '
                         '%d batches per epoch', len(data.train_set), len(data.val_set),
                         rt.world_size, cfg.data.batch_size, cfg.optim.grad_accum,
                         data.batches.per_epoch)

    def tick(self) -> None:
        """One optimizer step done."""
        self.n_log += 1
        self.bar.update(1)

    def losses(self, step: int, lr: float, values: list[float]) -> None:
        """Log the loss terms of `mean_losses`, the lr and the images/s since the last call."""
        images = self.n_log * self.cfg.data.batch_size * self.cfg.optim.grad_accum
        rate = images * self.rt.world_size / (time.perf_counter() - self.t_log)
        record = {'step': step, 'lr': lr, 'images_per_s': rate,
                  **dict(zip(('loss', 'ce', 'sem_ce', 'contrastive'), values, strict=True))}
        self.t_log, self.n_log = time.perf_counter(), 0
        self.bar.set_postfix(loss=f'{values[0]:.4f}', lr=f'{lr:.2e}')
        self._write(step, record, 'train')

    def evaluation(self, step: int, metrics: dict[str, float], best_miou: float) -> None:
        if self.rt.is_main:
            _logger.info('iteration %d: mIoU %.4f (best %.4f), aAcc %.4f', step,
                         metrics['mIoU'], best_miou, metrics['aAcc'])
        self._write(step, {'step': step, 'eval': metrics}, 'val', metrics)

    def _write(self, step: int, record: dict[str, Any], tag: str,
               scalars: dict[str, float] | None = None) -> None:
        if self.metrics is not None:
            self.metrics.write(record)
        if self.writer is not None:
            for key, value in (scalars if scalars is not None else record).items():
                if key != 'step':
                    self.writer.add_scalar(f'{tag}/{key}', value, step)


# ----------------------------------------------------------------------------------------------
# the loop


class TrainResult(NamedTuple):
    step: int  # the last iteration run
    best_miou: float
    metrics: dict[str, float]  # of the last evaluation
    model: ContrastSemask  # this rank's trained model (unwrapped from DDP)


def train(cfg: TrainConfig, resume: bool = False) -> TrainResult:
    """Run (or resume) training. Rank 0 writes work_dir; every rank returns its model."""
    rt = setup_runtime(cfg.device)
    check_data_root(cfg.data)
    # --- model, data, optimizer, criterion (same init on every rank; DDP broadcasts rank 0's)
    torch.manual_seed(cfg.seed)
    model, init_note = build_training_model(cfg.model)
    data = build_data(cfg.data, cfg.seed, rt, model.config.mean, model.config.std)
    model.to(rt.device)
    criterion = Criterion(cfg.model.num_classes, cfg.loss).to(rt.device)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.optim.weight_decay),
                                  lr=cfg.optim.lr, betas=cfg.optim.betas)
    scaler = torch.amp.GradScaler(rt.device.type, enabled=cfg.dtype == 'float16')
    autocast = autocast_context(cfg.dtype, rt.device)

    # --- resume (before DDP wraps the model), then per-rank randomness
    checkpointer = Checkpointer(Path(cfg.work_dir), cfg, rt)
    checkpointer.clean_stale()
    resumed = checkpointer.resume(model, optimizer, scaler, criterion) if resume else None
    parts = Parts(*wrap_for_ddp(model, cfg, rt), criterion, optimizer, scaler)
    torch.manual_seed(cfg.seed + rt.rank)  # dropout, drop-path and loss sampling differ by rank
    step = 0
    if resumed is not None:
        _set_rng_state(resumed.rng, rt.device)
        step, init_note = resumed.step, resumed.note

    # --- the loop
    stream = batch_stream(data.train_set, data.batches, step * cfg.optim.grad_accum,
                          cfg.data.num_workers, rt.device.type == 'cuda')
    end = cfg.schedule.stop_at or cfg.schedule.max_iters
    metrics: dict[str, float] = {}
    parts.model.train()
    with RunLog(cfg, rt, step, resumed is not None) as log:
        log.describe(parts.raw, data, init_note)
        while step < end:
            lr = set_lr(optimizer, lr_at(step, cfg.optim.lr, cfg.schedule))
            sums = train_step(parts, stream, cfg, rt, autocast)
            step += 1
            log.tick()
            if step % cfg.log.log_interval == 0 or step == end:
                log.losses(step, lr, mean_losses(sums, rt, step))
            evaluated = step % cfg.log.eval_interval == 0 or step == cfg.schedule.max_iters
            if evaluated:
                metrics = evaluate_model(parts.raw, data.val_set, cfg, rt, step, log.writer)
                improved = checkpointer.record(metrics['mIoU'])
                log.evaluation(step, metrics, checkpointer.best_miou)
                if improved:
                    checkpointer.save(checkpointer.best, step, parts, metrics)
            if evaluated or step % cfg.log.checkpoint_interval == 0 or step == end:
                checkpointer.save(checkpointer.last, step, parts, metrics)
    sync_buffers(parts.raw, rt)
    if rt.is_main:
        _logger.info('stopped at iteration %d of %d; checkpoints in %s', step,
                     cfg.schedule.max_iters, cfg.work_dir)
    if rt.ddp:
        dist.destroy_process_group()
    return TrainResult(step, checkpointer.best_miou, metrics, parts.raw.eval())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='contrast-semask-train', description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='Any config key as --group.key=value, or --key=value when only one group has it '
               '(see contrast_semask_train/config.py).')
    parser.add_argument('--config', type=Path, help='YAML preset, e.g. config/train/*.yaml')
    parser.add_argument('--data', help='converted data directory (contrast-semask-data)')
    parser.add_argument('--work-dir', help='where checkpoints, logs and TensorBoard go')
    parser.add_argument('--load-from', help='initial weights: mmseg SeMask-FPN .pth or ours')
    parser.add_argument('--resume', action='store_true',
                        help='continue from <work-dir>/last.pt exactly where it stopped')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    rank = int(os.environ.get('RANK', 0))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    args, rest = build_parser().parse_known_args(argv)
    try:
        overrides = parse_override_args(rest)
        for key, dotted in (('data', 'data.root'), ('work_dir', 'work_dir'),
                            ('load_from', 'model.load_from')):
            if getattr(args, key) is not None:
                overrides[dotted] = getattr(args, key)
        cfg = build_config(args.config, overrides)
        train(cfg, resume=args.resume)
    except FloatingPointError as err:  # the loss check: the run diverged
        return fail(_logger, err, EXIT_CHECK_FAILED)
    except (ConfigError, CheckpointError, DataFormatError, MissingEnvironmentError, ImportError,
            OSError) as err:  # 2: bad input or option; 3: GPU/package missing, disk full
        return fail(_logger, err)
    return EXIT_OK


if __name__ == '__main__':
    sys.exit(main())
