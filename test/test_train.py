"""Training loop, config, schedule and evaluation metrics (CPU, micro model, synthetic data)."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from contrast_semask_train.config import ConfigError, build_config, parse_override_args
from contrast_semask_train.evaluate import (
    auroc,
    confusion_matrix,
    metrics_from_confusion,
    parse_cost_table,
    sample_patch_bank,
)
from contrast_semask_train.model import CheckpointError, build_model, save_checkpoint
from contrast_semask_train.train import EpochBatches, lr_at, param_groups, train

REPO = Path(__file__).resolve().parents[1]
PRESETS = REPO / 'config' / 'train'


# ----------------------------------------------------------------------------------------------
# data shared by the training tests: 16 train / 4 valid synthetic frames, converted


@pytest.fixture(scope='module')
def synth_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from contrast_semask_train.data import convert_ycor, write_synthetic_ycor

    root = tmp_path_factory.mktemp('synth')
    write_synthetic_ycor(root / 'raw', n=20, seed=3, height=136, width=256, valid_fraction=0.2,
                         progress=False)
    convert_ycor(root / 'raw', root / 'ycor', progress=False)
    return root / 'ycor'


def _tiny(data: Path, work_dir: Path, **overrides: object):
    """micro_contrastive at a size where one iteration takes ~0.1 s on 2 cores."""
    values = {'data.root': str(data), 'work_dir': str(work_dir), 'crop_size': 64,
              'scale': [256, 64], 'eval_scale': [256, 64], 'batch_size': 4, 'num_workers': 0,
              'max_iters': 6, 'warmup_iters': 2, 'log_interval': 1, 'eval_interval': 3,
              'checkpoint_interval': 3, 'tensorboard': False, 'progress': False,
              'loss.seed.num_samples': 256, **overrides}
    return build_config(PRESETS / 'micro_contrastive.yaml', values)


def _losses(work_dir: Path) -> list[tuple[int, float]]:
    lines = (work_dir / 'metrics.jsonl').read_text().splitlines()
    return [(r['step'], r['loss']) for r in map(json.loads, lines) if 'loss' in r]


# ----------------------------------------------------------------------------------------------
# pure pieces


def test_lr_schedule_is_the_seed_poly_with_linear_warmup() -> None:
    cfg = build_config(PRESETS / 'seed_contrastive_small.yaml', {'data.root': '.'})
    lr, schedule = cfg.optim.lr, cfg.schedule
    assert lr_at(0, lr, schedule) == pytest.approx(1e-4 * 1e-6)
    # in warm-up: poly value times (1 - (1 - t/500)(1 - 1e-6))
    poly = 1e-4 * (1 - 250 / 5000)
    assert lr_at(250, lr, schedule) == pytest.approx(poly * (1 - 0.5 * (1 - 1e-6)))
    assert lr_at(500, lr, schedule) == pytest.approx(1e-4 * (1 - 500 / 5000))
    assert lr_at(4999, lr, schedule) == pytest.approx(1e-4 / 5000)
    assert lr_at(5000, lr, schedule) == 0.0


def test_weight_decay_groups_follow_the_seed() -> None:
    model = build_model('micro', 8, 'contrastive')
    decay, no_decay = param_groups(model, 1e-4)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay_names = {names[id(p)] for p in no_decay['params']}
    decay_names = {names[id(p)] for p in decay['params']}
    assert no_decay['weight_decay'] == 0.0 and decay['weight_decay'] == 1e-4
    assert 'backbone.layers.0.blocks.0.norm1.weight' in no_decay_names
    assert 'backbone.layers.0.blocks.0.attn.relative_position_bias_table' in no_decay_names
    assert 'backbone.norm3.bias' in no_decay_names
    assert 'backbone.layers.1.semantic_layer.norm1.weight' in no_decay_names
    # the seed decays biases, gamma and the head's BatchNorm (named `bn`)
    assert 'backbone.layers.0.blocks.0.attn.qkv.bias' in decay_names
    assert 'backbone.layers.0.semantic_layer.class_injection.0.gamma' in decay_names
    assert 'decode_head.scale_heads.0.0.bn.weight' in decay_names
    assert len(decay_names) + len(no_decay_names) == len(list(model.parameters()))


def test_epoch_batches_are_disjoint_across_ranks_and_reproducible() -> None:
    shards = [EpochBatches(23, 4, 2, r, seed=1).epoch(5) for r in range(2)]
    flat = [i for shard in shards for batch in shard for i in batch]
    assert len(flat) == len(set(flat)) == 16  # 23 // 8 = 2 batches of 4 per rank
    assert shards[0] == EpochBatches(23, 4, 2, 0, seed=1).epoch(5)
    assert shards[0] != EpochBatches(23, 4, 2, 0, seed=1).epoch(6)


def test_config_layers_and_errors(tmp_path: Path) -> None:
    preset = tmp_path / 'p.yaml'
    preset.write_text('optim: {lr: 0.01, weight_decay: 0.0}\n'
                      'loss:\n  contrastive: seed\n  seed: {temperature: 0.1}\n')
    cfg = build_config(preset, parse_override_args([
        '--lr=2e-3', '--loss.seed.bank_depth=5', '--data.ratios=[1.0]', '--num-workers=1',
        '--schedule.stop-at=7', '--seed=3']))
    assert cfg.optim.lr == 2e-3 and cfg.optim.weight_decay == 0.0  # preset, then override
    assert cfg.data.ratios == (1.0,) and cfg.data.num_workers == 1
    assert cfg.schedule.stop_at == 7 and cfg.seed == 3
    assert cfg.loss.contrastive == 'seed' and cfg.loss.seed.temperature == 0.1
    assert cfg.loss.seed.bank_depth == 5
    assert cfg.to_dict()['optim']['lr'] == 2e-3 and cfg.flat_dict()['loss.seed.bank_depth'] == 5
    assert parse_override_args(['--eval-interval=5']) == {'log.eval_interval': 5}
    with pytest.raises(ConfigError, match=r"unknown config keys \['lrr'\]; valid keys: "
                                          r"\[.*'optim\.lr'"):
        build_config(None, {'lrr': 1.0})
    with pytest.raises(ConfigError, match=r"unknown config keys \['optim.lrr'\]; valid keys "
                                          r"in optim: \['lr'"):
        build_config(None, {'optim.lrr': 1.0})
    with pytest.raises(ConfigError, match=r"\['lr'\] \(did you mean optim.lr\?\)"):
        flat = tmp_path / 'flat.yaml'
        flat.write_text('lr: 0.01\n')  # the old flat layout
        build_config(flat)
    with pytest.raises(ConfigError, match='data.batch_size expects int'):
        build_config(None, {'batch_size': 'eight'})
    with pytest.raises(ConfigError, match='data.scale expects a list of 2 int'):
        build_config(None, {'scale': [1, 2, 3]})
    with pytest.raises(ConfigError, match='model.head must be one of'):
        build_config(None, {'head': 'fancy'})
    with pytest.raises(ConfigError, match='optim is a group of keys'):
        build_config(None, {'optim': 0.1})
    with pytest.raises(ConfigError, match='seed classes ycor need 8 classes'):
        build_config(None, {'model.seed_classes': 'ycor', 'model.num_classes': 5})
    with pytest.raises(ConfigError, match="loss: unknown key"):
        build_config(None, {'loss.bogus': 1})
    with pytest.raises(ConfigError, match='expected --key=value'):
        parse_override_args(['--lr', '1e-3'])
    with pytest.raises(ConfigError, match='unknown config keys'):
        parse_override_args(['--lrr=1'])


def test_every_preset_loads() -> None:
    for preset in sorted(PRESETS.glob('*.yaml')):
        cfg = build_config(preset, {})  # strict: every group, key and type is checked
        assert cfg.work_dir.startswith('runs/')
        assert cfg.model.variant in ('micro', 'small')


def test_errors_come_before_any_work(synth_data: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match='data directory'):
        train(_tiny(tmp_path / 'nowhere', tmp_path / 'w'))
    with pytest.raises(ConfigError, match='--resume: no checkpoint'):
        train(_tiny(synth_data, tmp_path / 'w'), resume=True)
    other = save_checkpoint(tmp_path / 'other.pt', build_model('micro', 5, 'vanilla'))
    with pytest.raises(CheckpointError, match='another architecture'):
        train(_tiny(synth_data, tmp_path / 'w', load_from=str(other)))
    assert not (tmp_path / 'w').exists()


def test_cli_maps_its_options_and_rejects_unknown_keys(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    from contrast_semask_train.train import main

    preset = str(PRESETS / 'micro_contrastive.yaml')
    missing = tmp_path / 'missing'
    assert main(['--config', preset, '--data', str(missing), '--work-dir', str(tmp_path)]) == 2
    assert f"data directory '{missing}' not found" in caplog.text  # --data -> data.root
    assert main(['--config', preset, '--lrr=1']) == 2
    assert "unknown config keys ['lrr']" in caplog.text


# ----------------------------------------------------------------------------------------------
# metrics


def test_metrics_match_a_hand_computed_confusion_matrix() -> None:
    labels = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 0]])
    conf = confusion_matrix(pred, labels, num_classes=4)
    expected = torch.tensor([[1, 1, 0, 0], [1, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
    assert torch.equal(conf, expected)
    m = metrics_from_confusion(conf, ['a', 'b', 'c', 'd'])
    # IoU: a 1/(2+3-1)=1/4, b 2/(3+3-2)=1/2, c 1/(2+1-1)=1/2, d absent -> NaN (skipped)
    assert m.iou[:3] == pytest.approx([0.25, 0.5, 0.5]) and math.isnan(m.iou[3])
    assert m.miou == pytest.approx((0.25 + 0.5 + 0.5) / 3)
    assert m.aacc == pytest.approx(4 / 7)
    assert m.macc == pytest.approx((1 / 2 + 2 / 3 + 1 / 2) / 3)
    assert m.as_flat_dict()['IoU.b'] == pytest.approx(0.5)


def test_auroc_known_values() -> None:
    assert auroc(np.array([0.9, 0.8, 0.1, 0.2]), np.array([1, 1, 0, 0])) == 1.0
    assert auroc(np.array([0.1, 0.2, 0.9, 0.8]), np.array([1, 1, 0, 0])) == 0.0
    assert auroc(np.array([0.5, 0.5, 0.5, 0.5]), np.array([1, 0, 1, 0])) == 0.5
    # one inversion of four pairs
    assert auroc(np.array([0.9, 0.3, 0.4, 0.1]), np.array([1, 1, 0, 0])) == 0.75


def test_patch_bank_prototypes_are_class_means() -> None:
    rng = np.random.default_rng(0)
    labels = np.zeros((20, 20), np.uint8)
    labels[:, 10:] = 1
    emb = np.zeros((2, 20, 20), np.float32)
    emb[0, :, :10] = 1.0  # class 0 -> (1, 0), class 1 -> (0, 1)
    emb[1, :, 10:] = 1.0
    protos, costs, seen = sample_patch_bank(emb, labels, np.array([0.2, 0.9]), rng,
                                            drive_prob=1.0)
    assert seen.tolist() == [True, True]
    np.testing.assert_allclose(protos, [[1, 0], [0, 1]], atol=1e-6)
    np.testing.assert_allclose(costs, [0.2, 0.9])


def test_cost_table_parsing() -> None:
    assert parse_cost_table('a=0.5,b=1', ['a', 'b']) == [0.5, 1.0]
    with pytest.raises(ValueError, match=r"missing \['b'\]"):
        parse_cost_table('a=0.5', ['a', 'b'])


# ----------------------------------------------------------------------------------------------
# training runs


@pytest.mark.slow
@pytest.mark.parametrize('head', ['contrastive', 'vanilla'])
def test_micro_training_learns(synth_data: Path, tmp_path: Path, head: str) -> None:
    """~150 iterations: the loss falls and mIoU beats chance (1/8) clearly."""
    preset = PRESETS / f'micro_{head}.yaml'
    cfg = build_config(preset, {
        'data.root': str(synth_data), 'work_dir': str(tmp_path), 'num_workers': 0,
        'max_iters': 150, 'warmup_iters': 10, 'eval_interval': 150, 'log_interval': 10,
        'tensorboard': head == 'contrastive', 'progress': False, 'batch_size': 4,
        'scale': [256, 64], 'crop_size': 64, 'eval_scale': [256, 64],
        'loss.seed.num_samples': 256})
    result = train(cfg)
    losses = [loss for _, loss in _losses(tmp_path)]
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:2]), losses
    assert result.metrics['mIoU'] > 0.25, result.metrics
    assert (tmp_path / 'best.pt').is_file() and (tmp_path / 'last.pt').is_file()
    if head == 'contrastive':
        assert any(p.name.startswith('events') for p in (tmp_path / 'tb').iterdir())


@pytest.mark.slow
def test_resumed_run_reproduces_the_uninterrupted_losses(synth_data: Path,
                                                         tmp_path: Path) -> None:
    straight = tmp_path / 'straight'
    train(_tiny(synth_data, straight))
    split = tmp_path / 'split'
    first = train(_tiny(synth_data, split, stop_at=4))
    assert first.step == 4
    # an interrupted run that logged past its checkpoint: resume drops those lines
    train(_tiny(synth_data, split), resume=True)
    reference, resumed = _losses(straight), _losses(split)
    assert [s for s, _ in resumed] == [1, 2, 3, 4, 5, 6]
    assert resumed == reference  # bit-identical: model, optimizer, bank, RNG and data order
    last = torch.load(split / 'last.pt', weights_only=True)
    ref = torch.load(straight / 'last.pt', weights_only=True)
    for key, value in ref['model'].items():
        assert torch.equal(value, last['model'][key]), key


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_cpu_processes_hold_equal_weights(synth_data: Path, tmp_path: Path) -> None:
    """torchrun-style environment, gloo on loopback, two processes."""
    script = tmp_path / 'worker.py'
    script.write_text(
        'import sys, torch\n'
        'from contrast_semask_train.config import build_config\n'
        'from contrast_semask_train.train import train\n'
        'cfg = build_config(sys.argv[1], {"data.root": sys.argv[2], "work_dir": sys.argv[3],\n'
        '    "crop_size": 64, "scale": [256, 64], "eval_scale": [256, 64], "batch_size": 2,\n'
        '    "num_workers": 0, "max_iters": 3, "warmup_iters": 1, "log_interval": 1,\n'
        '    "eval_interval": 3, "tensorboard": False, "progress": False,\n'
        '    "loss.seed.num_samples": 128})\n'
        'result = train(cfg)\n'
        'torch.save(result.model.state_dict(), f"{sys.argv[3]}/rank{sys.argv[4]}.pt")\n')
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, 'RANK': str(rank), 'LOCAL_RANK': str(rank), 'WORLD_SIZE': '2',
               'MASTER_ADDR': '127.0.0.1', 'MASTER_PORT': str(port), 'OMP_NUM_THREADS': '1',
               'PYTHONPATH': str(REPO)}
        procs.append(subprocess.Popen(
            [sys.executable, str(script), str(PRESETS / 'micro_contrastive.yaml'),
             str(synth_data), str(tmp_path), str(rank)], env=env, cwd=REPO,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], '\n'.join(outputs)
    w0 = torch.load(tmp_path / 'rank0.pt', weights_only=True)
    w1 = torch.load(tmp_path / 'rank1.pt', weights_only=True)
    for key in w0:
        assert torch.equal(w0[key], w1[key]), key
    init = build_model('micro', 8, 'contrastive').state_dict()
    assert not torch.equal(init['decode_head.feature_head.weight'],
                           w0['decode_head.feature_head.weight'])
    assert len(_losses(tmp_path)) == 3  # rank 0 alone wrote the log


@pytest.mark.slow
def test_eval_cli_prints_json_with_miou(synth_data: Path, tmp_path: Path) -> None:
    from contrast_semask_train.evaluate import main

    ckpt = save_checkpoint(tmp_path / 'm.pt', build_model(
        'micro', 8, 'contrastive', class_names=tuple(
            ['high_vegetation', 'traversable_grass', 'smooth_trail', 'obstacle', 'sky',
             'rough_trail', 'puddle', 'non_traversable_low_vegetation'])))
    out = subprocess.run(
        [sys.executable, '-m', 'contrast_semask_train.evaluate', str(ckpt), '--data',
         str(synth_data), '--json', '--scale', '256,64'], capture_output=True, text=True,
        cwd=REPO, env={**os.environ, 'PYTHONPATH': str(REPO)}, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert 0.0 <= result['mIoU'] <= 1.0 and 0.0 <= result['auroc_unknown'] <= 1.0
    assert result['num_images'] == 4 and result['embedding_dim'] == 16
    assert main([str(tmp_path / 'missing.pt'), '--data', str(synth_data)]) == 2


# ----------------------------------------------------------------------------------------------
# evaluation with known answers


class _TileModel(torch.nn.Module):
    """Logits (1, K, h/4, w/4) all equal to 1 + the tile's x offset (read off a coordinate
    channel of the image), so a sliding-window average has a hand-computable value."""

    def __init__(self) -> None:
        super().__init__()
        from types import SimpleNamespace

        self.config = SimpleNamespace(num_classes=2)

    def forward(self, image: torch.Tensor):  # noqa: ANN201 - a ModelOutputs stand-in
        from types import SimpleNamespace

        x0 = image[0, 0, 0, 0]  # channel 0 holds the column index
        h, w = image.shape[-2:]
        return SimpleNamespace(logits=torch.full((1, 2, h // 2, w // 2), float(x0) + 1.0))


def test_sliding_window_averages_overlapping_tiles() -> None:
    from contrast_semask_train.evaluate import predict_logits

    image = torch.zeros(1, 3, 6, 10)
    image[0, 0] = torch.arange(10.0)  # the column index, so a tile knows its offset
    out = predict_logits(_TileModel(), image, (6, 10), mode='slide', crop=6, stride=4)
    # tiles at x0 = 0 (value 1) and x0 = 4 (value 5); columns 4-5 are covered by both
    expected = torch.tensor([1, 1, 1, 1, 3, 3, 5, 5, 5, 5], dtype=torch.float32)
    torch.testing.assert_close(out[0, 0], expected.expand(6, 10))
    whole = predict_logits(_TileModel(), image, (6, 10), mode='whole')
    torch.testing.assert_close(whole, torch.ones_like(whole))  # one tile at x0 = 0
    with pytest.raises(ValueError, match="'whole' or 'slide'"):
        predict_logits(_TileModel(), image, (6, 10), mode='tiles')


class _OneHotModel(torch.nn.Module):
    """Embeddings (1, 2, 8, 8): (1, 0) where the image's channel 0 is 0, else (0, 1)."""

    def __init__(self) -> None:
        super().__init__()
        from types import SimpleNamespace

        self.config = SimpleNamespace(num_classes=2)

    def forward(self, image: torch.Tensor):  # noqa: ANN201
        from types import SimpleNamespace

        second = (image[:, :1] > 0).float()
        return SimpleNamespace(embeddings=torch.cat([1 - second, second], 1))


def test_cost_mae_known_answer() -> None:
    """Class 0 (48 px, cost 0.2) is driven over; class 1 (8 px, cost 0.9, under the
    16-pixel minimum) is never seen; 8 px are ignored. One prototype: every pixel gets 0.2."""
    from contrast_semask_train.evaluate import embedding_quality

    labels = torch.zeros(8, 8, dtype=torch.int64)
    labels[:, 0] = 1
    labels[:, 7] = 255
    image = torch.zeros(3, 8, 8)
    image[0, :, 0] = 1.0  # class 1's embedding differs
    quality = embedding_quality(_OneHotModel(), [(image, labels)], torch.device('cpu'),
                                [0.2, 0.9], seed=0)
    assert quality.cost_mae == pytest.approx(0.0, abs=1e-6)  # seen pixels: exact
    assert quality.cost_mae_all == pytest.approx(8 / 56 * 0.7, rel=1e-5)  # ignore excluded
    assert quality.auroc_unknown == 1.0
    assert quality.mean_confidence_seen == pytest.approx(1.0)
    assert quality.mean_confidence_unseen == pytest.approx(0.0)
    assert (quality.num_images, quality.num_prototypes) == (1, 1)


# ----------------------------------------------------------------------------------------------
# one optimizer step: accumulation, clipping, bf16 autocast


def _step_setup(grad_accum: int, grad_clip: float = 0.0, dtype: str = 'float32'):
    from contrast_semask_train.losses import Criterion
    from contrast_semask_train.train import Parts, Runtime

    cfg = build_config(PRESETS / 'micro_vanilla.yaml', {
        'data.root': '.', 'grad_accum': grad_accum, 'grad_clip': grad_clip, 'dtype': dtype,
        'loss.contrastive': 'none'})
    torch.manual_seed(0)
    model = build_model('micro', 8, 'vanilla').eval()  # BatchNorm statistics frozen
    parts = Parts(model, model, Criterion(8, cfg.loss), torch.optim.SGD(model.parameters(), 1.0),
                  torch.amp.GradScaler('cpu', enabled=False))
    return cfg, parts, Runtime(torch.device('cpu'), 0, 0, 1, False)


def _batch(n: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 64, 64, generator=gen), torch.randint(0, 8, (n, 64, 64),
                                                                   generator=gen)


def _update(parts, step) -> torch.Tensor:  # noqa: ANN001
    before = torch.cat([p.detach().flatten().clone() for p in parts.raw.parameters()])
    step()
    return torch.cat([p.detach().flatten() for p in parts.raw.parameters()]) - before


def test_two_micro_batches_give_the_gradient_of_one_double_batch() -> None:
    from contrast_semask_train.train import autocast_context, train_step

    images, labels = _batch(4)
    cfg2, parts2, rt = _step_setup(grad_accum=2)
    stream2 = iter([(images[:2], labels[:2]), (images[2:], labels[2:])])
    delta2 = _update(parts2, lambda: train_step(parts2, stream2, cfg2, rt,
                                                autocast_context('float32', rt.device)))
    cfg1, parts1, _ = _step_setup(grad_accum=1)
    stream1 = iter([(images, labels)])
    delta1 = _update(parts1, lambda: train_step(parts1, stream1, cfg1, rt,
                                                autocast_context('float32', rt.device)))
    assert delta1.abs().max() > 1e-4  # the step moved the weights
    torch.testing.assert_close(delta2, delta1, rtol=1e-4, atol=1e-6)


def test_gradient_clipping_bounds_the_global_norm() -> None:
    from contrast_semask_train.train import autocast_context, train_step

    images, labels = _batch(2)
    norms = {}
    for clip in (0.0, 1e-3):
        cfg, parts, rt = _step_setup(grad_accum=1, grad_clip=clip)
        stream = iter([(images, labels)])
        autocast = autocast_context('float32', rt.device)
        delta = _update(parts, lambda: train_step(parts, stream, cfg, rt, autocast))  # noqa: B023
        norms[clip] = float(delta.norm())  # SGD, lr 1: the update is minus the gradient
    assert norms[0.0] > 10 * 1e-3  # unclipped, the gradient is far larger than the bound
    assert norms[1e-3] == pytest.approx(1e-3, rel=1e-3)


def test_bf16_autocast_step_runs_the_network_in_bf16() -> None:
    from contrast_semask_train.train import autocast_context, train_step

    cfg, parts, rt = _step_setup(grad_accum=1, dtype='bfloat16')
    seen = []
    parts.raw.backbone.patch_embed.register_forward_hook(
        lambda module, args, out: seen.append(out[0].dtype if isinstance(out, tuple)
                                              else out.dtype))
    stream = iter([_batch(2)])
    sums = train_step(parts, stream, cfg, rt, autocast_context('bfloat16', rt.device))
    assert seen == [torch.bfloat16]  # the forward ran under bf16 autocast
    assert sums.dtype == torch.float32 and torch.isfinite(sums).all() and sums[0] > 0
    assert all(p.dtype == torch.float32 for p in parts.raw.parameters())  # master weights
    with pytest.raises(ConfigError, match='float16 needs CUDA'):
        autocast_context('float16', torch.device('cpu'))
