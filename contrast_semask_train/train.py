"""Train contrastive (or vanilla) SeMask-FPN: one readable loop, in nanoGPT's order.

One process:
    contrast-semask-train --config config/train/seed_contrastive_small.yaml --data data/ycor \\
        --load-from semfpn_semask_small_ade20k.pth --work-dir runs/contrastive_s
Several GPUs (DDP, one process per GPU; SyncBN, sharded data, rank 0 writes):
    torchrun --standalone --nproc_per_node=4 -m contrast_semask_train.train --config ... --data ...
Continue an interrupted run exactly where it stopped (model, optimizer, scaler, schedule, RNG,
contrastive bank and data order): run the same command with --resume.
Any config key can be overridden as --key=value (--loss.contrastive=reco, --lr=2e-4).
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
from contextlib import nullcontext
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch import nn

from contrast_semask_train.config import (
    ConfigError,
    TrainConfig,
    build_config,
    parse_override_args,
)
from contrast_semask_train.data import (
    YCOR_CLASSES,
    EvalTransform,
    SegmentationDataset,
    TrainTransform,
)
from contrast_semask_train.evaluate import (
    evaluate_segmentation,
    metrics_from_confusion,
    visualise_predictions,
)
from contrast_semask_train.losses import Criterion, LossConfig
from contrast_semask_train.model import (
    CheckpointError,
    ContrastSemask,
    ModelOutputs,
    count_parameters,
    load_semask_checkpoint,
    save_checkpoint,
)
from contrast_semask_train.model.checkpoint import (
    CHECKPOINT_FORMAT,
    class_seeds,
    read_checkpoint,
)
from contrast_semask_train.model.segmentor import build_configured_model

_logger = logging.getLogger('contrast_semask_train')


# ----------------------------------------------------------------------------------------------
# pure pieces: schedule, parameter groups, batch order


def lr_at(step: int, cfg: TrainConfig) -> float:
    """mmcv poly schedule with linear warm-up (seed_spec 3.3), a pure function of the step."""
    lr = (cfg.lr - cfg.min_lr) * (1.0 - step / cfg.max_iters) ** cfg.lr_power + cfg.min_lr
    if step < cfg.warmup_iters:
        lr *= 1.0 - (1.0 - step / cfg.warmup_iters) * (1.0 - cfg.warmup_ratio)
    return lr


NO_DECAY_KEYWORDS = ('relative_position_bias_table', 'norm')


def param_groups(model: nn.Module, weight_decay: float,
                 no_decay_keywords: Sequence[str] = NO_DECAY_KEYWORDS) -> list[dict[str, Any]]:
    """The seed's mmcv custom_keys: no weight decay for any parameter whose dotted name contains
    a keyword (every backbone LayerNorm and the relative-position tables); everything else,
    biases, gamma and the head's BatchNorm (named `bn`) included, decays (seed_spec 3.3)."""
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
# set-up: devices, DDP, model


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
            raise ConfigError(f'device {device!r} requested but CUDA is not available; '
                              'use --device=cpu')
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


def build_training_model(cfg: TrainConfig) -> tuple[ContrastSemask, str]:
    """The model of `cfg`, initialised from cfg.load_from (mmseg SeMask or our checkpoint)."""
    names = YCOR_CLASSES if cfg.num_classes == len(YCOR_CLASSES) else ()
    try:
        model = build_configured_model(
            cfg.variant, cfg.num_classes, cfg.head,  # type: ignore[arg-type]
            cfg.semantic_attention, cfg.normalization, names, **cfg.model_overrides)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    if not cfg.load_from:
        return model, 'random initialisation'
    raw = read_checkpoint(cfg.load_from, cfg.trust_pickle)
    if raw.get('format') == CHECKPOINT_FORMAT:
        try:
            model.load_state_dict(raw['model'], strict=True)
        except RuntimeError as err:
            raise CheckpointError(
                f'{cfg.load_from} was trained with another architecture '
                f'({raw.get("model_config")}); this run builds {model.config}.\n{err}') from err
        return model, f'weights of {cfg.load_from} (step {raw.get("step")})'
    report = load_semask_checkpoint(model, raw,
                                    class_seeds=class_seeds(cfg.seed_classes, cfg.num_classes))
    return model, f'SeMask checkpoint {cfg.load_from}: {report.summary()}'


def _autocast(cfg: TrainConfig, device: torch.device):
    if cfg.dtype == 'float32':
        return nullcontext()
    dtype = torch.bfloat16 if cfg.dtype == 'bfloat16' else torch.float16
    if device.type == 'cpu' and dtype == torch.float16:
        raise ConfigError('dtype float16 needs CUDA; use bfloat16 or float32 on CPU')
    return torch.autocast(device.type, dtype=dtype)


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


class MetricsLog:
    """metrics.jsonl in the work dir (rank 0): one JSON object per logged step or evaluation."""

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        if resume_step is None:
            path.write_text('')
        elif path.exists():  # drop what an interrupted run logged after its last checkpoint
            kept = [line for line in path.read_text().splitlines()
                    if line and json.loads(line)['step'] <= resume_step]
            path.write_text(''.join(line + '\n' for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open('a') as f:
            f.write(json.dumps(record) + '\n')


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
    work_dir = Path(cfg.work_dir)
    loss_cfg = LossConfig.from_dict(cfg.loss)
    data_root = Path(cfg.data)
    if not cfg.data or not data_root.is_dir():
        raise ConfigError(f'data directory {cfg.data!r} not found: pass --data DIR, a directory '
                          'written by `contrast-semask-data convert-ycor` (or `synth`, then '
                          'convert-ycor)')

    # --- model, optimizer, criterion (same init on every rank; DDP broadcasts rank 0's) ---
    torch.manual_seed(cfg.seed)
    model, init_note = build_training_model(cfg)
    mean, std = model.config.mean, model.config.std
    train_set = SegmentationDataset(
        data_root, cfg.train_split, TrainTransform(
            scale=cfg.scale, ratios=cfg.ratios, crop=cfg.crop_size,
            photometric=cfg.photometric, mean=mean, std=std), seed=cfg.seed)
    val_set = SegmentationDataset(
        data_root, cfg.val_split, EvalTransform(scale=cfg.eval_scale, mean=mean, std=std),
        max_items=cfg.max_val_images or None)
    batches = EpochBatches(len(train_set), cfg.batch_size, rt.world_size, rt.rank, cfg.seed)
    if batches.per_epoch == 0:
        raise ConfigError(f'{len(train_set)} training images cannot fill one batch of '
                          f'{cfg.batch_size} on each of {rt.world_size} processes')
    model.to(rt.device)
    criterion = Criterion(cfg.num_classes, loss_cfg).to(rt.device)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr,
                                  betas=cfg.betas)
    scaler = torch.amp.GradScaler(rt.device.type, enabled=cfg.dtype == 'float16')

    step, best_miou = 0, -1.0
    last_path = work_dir / 'last.pt'
    if resume:
        if not last_path.is_file():
            raise ConfigError(f'--resume: no checkpoint at {last_path}')
        ckpt = read_checkpoint(last_path)
        if ckpt['model_config'] != model.config.to_dict():
            raise CheckpointError(f'--resume: {last_path} holds another architecture; resume '
                                  'with the config it was trained with')
        model.load_state_dict(ckpt['model'])
        optimizer.load_state_dict(ckpt['optimizer'])
        scaler.load_state_dict(ckpt['scaler'])
        criterion.load_state_dict(ckpt['criterion'][rt.rank % len(ckpt['criterion'])])
        step, best_miou = ckpt['step'], ckpt['best_miou']
        changed = {k: v for k, v in cfg.to_dict().items()
                   if ckpt['train_config'].get(k) != v and k != 'stop_at'}
        init_note = f'resumed from {last_path} at iteration {step}' + (
            f' (changed keys: {sorted(changed)})' if changed else '')

    raw_model = model
    if rt.ddp:
        if cfg.sync_bn and rt.device.type == 'cuda':  # SyncBatchNorm runs on GPUs only
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            raw_model = model
        # A contrastive head trained without the contrastive loss leaves its projection unused.
        unused = cfg.head == 'contrastive' and loss_cfg.contrastive == 'none'
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[rt.device.index] if rt.device.type == 'cuda' else None,
            find_unused_parameters=unused)
    torch.manual_seed(cfg.seed + rt.rank)  # dropout, drop-path and loss sampling differ by rank
    if resume:
        _set_rng_state(ckpt['rng'][rt.rank % len(ckpt['rng'])], rt.device)
        del ckpt

    writer = None
    log: MetricsLog | None = None
    if rt.is_main:
        work_dir.mkdir(parents=True, exist_ok=True)
        (work_dir / 'config.json').write_text(json.dumps(cfg.to_dict(), indent=2))
        log = MetricsLog(work_dir / 'metrics.jsonl', step if resume else None)
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(work_dir / 'tb'), purge_step=step if resume else None)
        _logger.info('model %s (%s, K=%d): %.2f M parameters; %s', cfg.variant, cfg.head,
                     cfg.num_classes, count_parameters(raw_model) / 1e6, init_note)
        _logger.info('data: %d train / %d val images; %d processes x batch %d x accum %d; '
                     '%d batches per epoch', len(train_set), len(val_set), rt.world_size,
                     cfg.batch_size, cfg.grad_accum, batches.per_epoch)

    def save(path: Path, metrics: dict[str, float]) -> None:
        rng = _gather(_rng_state(rt.device), rt)  # every rank takes part in the gather
        banks = _gather(_to_cpu(criterion.state_dict()), rt)  # the contrastive bank per rank
        if rt.is_main:
            save_checkpoint(path, raw_model, step=step, train_config=cfg.to_dict(),
                            metrics=metrics, extra={
                                'optimizer': optimizer.state_dict(),
                                'scaler': scaler.state_dict(), 'criterion': banks, 'rng': rng,
                                'best_miou': best_miou})

    def sync_buffers() -> None:
        # DDP broadcasts rank 0's buffers at each forward; without SyncBN (CPU) the BatchNorm
        # statistics then drift per rank until the next one. Make every rank hold rank 0's.
        if rt.ddp:
            for buffer in raw_model.buffers():
                dist.broadcast(buffer, src=0)

    def evaluate() -> dict[str, float]:
        sync_buffers()
        raw_model.eval()
        shard = range(rt.rank, len(val_set), rt.world_size)
        conf = evaluate_segmentation(raw_model, val_set, rt.device, cfg.num_classes, shard)
        if rt.ddp:
            conf = conf.to(rt.device)
            dist.all_reduce(conf)
        seg = metrics_from_confusion(conf.cpu(), val_set.class_names)
        if rt.is_main and writer is not None and cfg.num_vis_images:
            for i, image in enumerate(visualise_predictions(
                    raw_model, val_set, rt.device, range(min(cfg.num_vis_images, len(val_set))))):
                writer.add_image(f'val/prediction_{i}', image, step, dataformats='HWC')
        raw_model.train()
        return seg.as_flat_dict()

    # --- the loop ---
    stream = batch_stream(train_set, batches, step * cfg.grad_accum, cfg.num_workers,
                          rt.device.type == 'cuda')
    autocast = _autocast(cfg, rt.device)
    end = cfg.stop_at or cfg.max_iters
    metrics: dict[str, float] = {}
    model.train()
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    bar = tqdm(total=cfg.max_iters, initial=step, disable=not (rt.is_main and cfg.progress),
               dynamic_ncols=True, desc='train', unit='it')
    t_log, n_log = time.perf_counter(), 0
    with logging_redirect_tqdm():
        while step < end:
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group['lr'] = lr
            sums = torch.zeros(4, device=rt.device)  # total, ce, sem_ce, contrastive
            for micro in range(cfg.grad_accum):
                images, labels = next(stream)
                images = images.to(rt.device, non_blocking=True)
                labels = labels.to(rt.device, non_blocking=True)
                last_micro = micro == cfg.grad_accum - 1
                sync = nullcontext() if (last_micro or not rt.ddp) else model.no_sync()
                with sync:
                    with autocast:
                        outputs = model(images)
                    # losses in fp32: the contrastive similarities at tau=0.07 need it
                    outputs = ModelOutputs(*(t.float() for t in outputs))
                    terms = criterion(outputs, labels)
                    scaler.scale(terms.total / cfg.grad_accum).backward()
                sums += torch.stack([t.detach() for t in terms]) / cfg.grad_accum
            if cfg.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            n_log += 1
            bar.update(1)

            if step % cfg.log_interval == 0 or step == end:
                if rt.ddp:
                    dist.all_reduce(sums)
                    sums /= rt.world_size
                values = sums.tolist()  # a CPU-GPU sync point: only every log_interval
                if not all(math.isfinite(v) for v in values):
                    raise FloatingPointError(f'non-finite loss at iteration {step}: {values}; '
                                             'lower the lr or use float32')
                rate = n_log * cfg.batch_size * cfg.grad_accum * rt.world_size / (
                    time.perf_counter() - t_log)
                record = {'step': step, 'lr': lr, 'images_per_s': rate,
                          **dict(zip(('loss', 'ce', 'sem_ce', 'contrastive'), values,
                                     strict=True))}
                t_log, n_log = time.perf_counter(), 0
                bar.set_postfix(loss=f'{values[0]:.4f}', lr=f'{lr:.2e}')
                if log is not None:
                    log.write(record)
                if writer is not None:
                    for key, value in record.items():
                        if key != 'step':
                            writer.add_scalar(f'train/{key}', value, step)

            evaluated = False
            if step % cfg.eval_interval == 0 or step == cfg.max_iters:
                metrics = evaluate()
                evaluated = True
                improved = metrics['mIoU'] > best_miou
                best_miou = max(best_miou, metrics['mIoU'])
                if rt.is_main:
                    _logger.info('iteration %d: mIoU %.4f (best %.4f), aAcc %.4f', step,
                                 metrics['mIoU'], best_miou, metrics['aAcc'])
                    if log is not None:
                        log.write({'step': step, 'eval': metrics})
                    if writer is not None:
                        for key, value in metrics.items():
                            writer.add_scalar(f'val/{key}', value, step)
                if improved:
                    save(work_dir / 'best.pt', metrics)
            if evaluated or step % cfg.checkpoint_interval == 0 or step == end:
                save(last_path, metrics)
    bar.close()
    sync_buffers()
    if writer is not None:
        writer.close()
    if rt.is_main:
        _logger.info('stopped at iteration %d of %d; checkpoints in %s', step, cfg.max_iters,
                     work_dir)
    if rt.ddp:
        dist.destroy_process_group()
    return TrainResult(step, best_miou, metrics, raw_model.eval())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='contrast-semask-train', description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='Any TrainConfig key as --key=value (see contrast_semask_train/config.py).')
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
        for key in ('data', 'work_dir', 'load_from'):
            if getattr(args, key) is not None:
                overrides[key] = getattr(args, key)
        cfg = build_config(args.config, overrides)
        train(cfg, resume=args.resume)
    except (ConfigError, CheckpointError) as err:
        _logger.error('%s', err)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
