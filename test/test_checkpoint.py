"""Published-checkpoint converters (model/published.py; synthetic state dicts from the key table
of docs/MODEL.md §4) and our own self-describing checkpoint format (model/checkpoint.py)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
import torch
from semask_keys import semask_key_shapes, synthetic_semask_state

from contrast_semask_train.model import (
    CheckpointError,
    build_model,
    convert_semask_state_dict,
    load_checkpoint,
    load_semask_checkpoint,
    load_swin_imagenet_checkpoint,
    save_checkpoint,
)

MICRO = dict(embed=16, depths=(2, 2, 2, 2), heads=(1, 2, 2, 4), window=7, fpn=32,
             embedding_dim=16)


def micro_checkpoint(num_classes: int, head: str = 'vanilla', seed: int = 0,
                     **changes) -> dict[str, torch.Tensor]:
    spec = {**MICRO, **changes}
    shapes = semask_key_shapes(spec['embed'], spec['depths'], spec['heads'], spec['window'],
                               num_classes, head, spec['fpn'], spec['embedding_dim'])
    return synthetic_semask_state(shapes, spec['window'], seed)


def class_keys(head: str) -> set[str]:
    keys = {f'backbone.layers.{i}.semantic_layer.class_injection.0.mlp_cls_{qk}.{p}'
            for i in range(4) for qk in 'qk' for p in ('weight', 'bias')}
    prefix = 'decode_head.conv_seg.' if head == 'vanilla' else \
        'decode_head.projection_head_class.0.'
    return keys | {prefix + 'weight', prefix + 'bias'}


CONTRASTIVE_ONLY = {f'decode_head.{m}.{p}' for m in (
    'feature_head', 'projection_head_cluster.0', 'projection_head_cluster.2',
    'projection_head_class.0') for p in ('weight', 'bias')}


@pytest.mark.parametrize('head', ['vanilla', 'contrastive'])
def test_small_key_table_matches_model_one_to_one(head: str) -> None:
    table = semask_key_shapes(96, (2, 2, 18, 2), (3, 6, 12, 24), 7, 150, head)
    model_state = build_model('small', 150, head).state_dict()
    assert table.keys() == model_state.keys()
    assert {k: tuple(v.shape) for k, v in model_state.items()} == table
    if head == 'vanilla':  # docs/MODEL.md §4 counts
        assert len(table) == 445
        assert sum(k.startswith('backbone.') for k in table) == 401
        assert sum(k.endswith('relative_position_index') for k in table) == 24


def test_same_classes_round_trip_with_module_prefix(tmp_path: Path) -> None:
    source = micro_checkpoint(5)
    ckpt = {'state_dict': {f'module.{k}': v for k, v in source.items()},
            'meta': {'CLASSES': tuple('abcde'), 'PALETTE': [[1, 2, 3]] * 5, 'iter': 80000}}
    torch.save(ckpt, tmp_path / 'semask.pth')
    model = build_model('micro', 5, 'vanilla')
    report = load_semask_checkpoint(model, tmp_path / 'semask.pth')
    assert not report.reinitialized and not report.ignored
    assert len(report.loaded) == len(source)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, source[key], rtol=0, atol=0, msg=key)


def test_class_count_change_reinitialises_exactly_class_tensors() -> None:
    source = micro_checkpoint(12)
    model = build_model('micro', 5, 'vanilla')
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_semask_checkpoint(model, {'state_dict': source})
    assert set(report.reinitialized) == class_keys('vanilla')
    state = model.state_dict()
    for key in state:
        expected = fresh[key] if key in class_keys('vanilla') else source[key]
        torch.testing.assert_close(state[key], expected, rtol=0, atol=0, msg=key)


def test_contrastive_model_from_vanilla_checkpoint() -> None:
    """The seed's transfer: conv_seg dropped, the contrastive layers keep their init."""
    source = micro_checkpoint(12, 'vanilla')
    model = build_model('micro', 5, 'contrastive')
    report = load_semask_checkpoint(model, {'state_dict': source})
    assert set(report.ignored) == {'decode_head.conv_seg.weight', 'decode_head.conv_seg.bias'}
    assert set(report.reinitialized) == (class_keys('vanilla') - set(report.ignored)
                                         | CONTRASTIVE_ONLY)
    torch.testing.assert_close(model.state_dict()['decode_head.scale_heads.3.4.conv.weight'],
                               source['decode_head.scale_heads.3.4.conv.weight'])


def test_class_rows_seeded_from_named_source_classes() -> None:
    source = micro_checkpoint(6)
    names = ['wall', 'sky', 'tree', 'grass', 'path', 'road']
    model = build_model('micro', 3, 'vanilla')
    report = load_semask_checkpoint(
        model, {'state_dict': source, 'meta': {'CLASSES': names}},
        class_seeds={0: ['tree'], 2: ['path', 5]})
    assert set(report.seeded) == class_keys('vanilla')
    state = model.state_dict()
    q = 'backbone.layers.2.semantic_layer.class_injection.0.mlp_cls_q.weight'
    torch.testing.assert_close(state[q][0], source[q][2])
    torch.testing.assert_close(state[q][2], (source[q][4] + source[q][5]) / 2)
    bias = 'decode_head.conv_seg.bias'
    torch.testing.assert_close(state[bias][2], (source[bias][4] + source[bias][5]) / 2)
    with pytest.raises(CheckpointError, match="source class 'lava'"):
        load_semask_checkpoint(model, {'state_dict': source, 'meta': {'CLASSES': names}},
                               class_seeds={0: ['lava']})


def test_unexpected_and_missing_keys_raise_with_their_names() -> None:
    model = build_model('micro', 5, 'vanilla')
    extra = {**micro_checkpoint(5), 'backbone.absolute_pos_embed': torch.zeros(1, 4, 16)}
    with pytest.raises(CheckpointError, match='backbone.absolute_pos_embed'):
        load_semask_checkpoint(model, {'state_dict': extra})
    shallow = micro_checkpoint(5, depths=(2, 2, 1, 2))  # another architecture
    with pytest.raises(CheckpointError, match=r'missing .*layers\.2\.blocks\.1\.'):
        load_semask_checkpoint(model, {'state_dict': shallow})


def test_wrong_width_and_foreign_checkpoints_raise() -> None:
    model = build_model('micro', 5, 'vanilla')
    wide = micro_checkpoint(5, embed=32)
    with pytest.raises(CheckpointError, match=r'patch_embed.proj.weight: checkpoint \(32'):
        load_semask_checkpoint(model, {'state_dict': wide})
    with pytest.raises(CheckpointError, match='not an mmseg SeMask-FPN checkpoint'):
        load_semask_checkpoint(model, {'state_dict': {'encoder.weight': torch.zeros(2)}})
    bad_index = micro_checkpoint(5)
    key = 'backbone.layers.1.blocks.0.attn.relative_position_index'
    bad_index[key] = bad_index[key].flip(0)
    with pytest.raises(CheckpointError, match='differs from the recomputed index'):
        load_semask_checkpoint(model, {'state_dict': bad_index})


def test_converter_is_pure() -> None:
    source = micro_checkpoint(12)
    model_state = build_model('micro', 5, 'vanilla').state_dict()
    before = {k: v.clone() for k, v in model_state.items()}
    source_before = {k: v.clone() for k, v in source.items()}
    converted, _ = convert_semask_state_dict(source, model_state, class_seeds={0: [3]})
    for key in model_state:
        assert torch.equal(model_state[key], before[key])
        assert torch.equal(source[key], source_before[key])
    assert converted.keys() == model_state.keys()


def test_ade20k_note_about_global_attention() -> None:
    source = semask_key_shapes(96, (2, 2, 2, 2), (3, 6, 12, 24), 7, 150)
    state = {k: torch.zeros(s) for k, s in source.items()}
    model_state = build_model('small', 150, 'vanilla', depths=(2, 2, 2, 2)).state_dict()
    for key in state:
        if key.endswith('relative_position_index'):
            state[key] = model_state[key]
    _, report = convert_semask_state_dict(state, model_state)
    assert any('global semantic attention in stages 2-3' in n for n in report.notes)


def _imagenet_swin_state(window: int) -> dict[str, torch.Tensor]:
    """An original ImageNet Swin 'model' dict for the micro widths."""
    shapes = semask_key_shapes(16, (2, 2, 2, 2), (1, 2, 2, 4), window, 5)
    state = {k[len('backbone.'):]: torch.randn(s) for k, s in shapes.items()
             if k.startswith('backbone.') and '.semantic_layer.' not in k
             and not k.startswith('backbone.norm')}
    state['norm.weight'], state['norm.bias'] = torch.ones(128), torch.zeros(128)
    state['head.weight'], state['head.bias'] = torch.zeros(1000, 128), torch.zeros(1000)
    state['layers.0.blocks.1.attn_mask'] = torch.zeros(4, 49, 49)
    return state


def test_imagenet_swin_loads_into_backbone_and_resizes_tables() -> None:
    model = build_model('micro', 5)
    fresh_head = model.state_dict()['decode_head.feature_head.weight'].clone()
    source = _imagenet_swin_state(window=7)
    report = load_swin_imagenet_checkpoint(model, {'model': source})
    state = model.state_dict()
    torch.testing.assert_close(state['backbone.layers.3.blocks.1.mlp.fc2.weight'],
                               source['layers.3.blocks.1.mlp.fc2.weight'])
    assert torch.equal(state['decode_head.feature_head.weight'], fresh_head)
    assert 'backbone.head.weight' in report.ignored
    assert any('semantic_layer' in k for k in report.reinitialized)
    # a 12x12-window checkpoint (23^2 table rows) into the 7x7-window model
    source = _imagenet_swin_state(window=12)
    report = load_swin_imagenet_checkpoint(model, {'model': source})
    table = model.state_dict()['backbone.layers.0.blocks.0.attn.relative_position_bias_table']
    assert table.shape == (169, 1) and torch.isfinite(table).all()
    assert any('resized' in n for n in report.notes)


def test_own_checkpoint_rebuilds_model_alone(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model('micro', 4, 'vanilla', class_names=('a', 'b', 'c', 'd')).eval()
    path = save_checkpoint(tmp_path / 'ckpt' / 'step_10.pt', model, step=10,
                           train_config={'lr': 1e-4}, metrics={'mIoU': 0.5})
    assert [p.name for p in path.parent.iterdir()] == ['step_10.pt'], 'temp file left behind'
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    loaded, payload = load_checkpoint(path)
    assert payload['step'] == 10 and payload['metrics'] == {'mIoU': 0.5}
    assert loaded.config == model.config
    images = torch.randn(1, 3, 40, 52)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images).logits, model(images).logits)
    torch.load(path, weights_only=True)  # loads without pickle trust
    with pytest.raises(CheckpointError, match='not a contrast_semask checkpoint'):
        load_checkpoint(_write(tmp_path / 'other.pt', {'state_dict': {}}))


def _write(path: Path, payload: dict) -> Path:
    torch.save(payload, path)
    return path


def test_unsafe_pickle_needs_explicit_trust(tmp_path: Path) -> None:
    model = build_model('micro', 5, 'vanilla')
    path = _write(tmp_path / 'mmcv.pth', {'state_dict': micro_checkpoint(5),
                                          'meta': {'env': argparse.Namespace(cuda=True)}})
    with pytest.raises(CheckpointError, match='trust_pickle=True'):
        load_semask_checkpoint(model, path)
    assert load_semask_checkpoint(model, path, trust_pickle=True).loaded
    with pytest.raises(CheckpointError, match='not found'):
        load_semask_checkpoint(model, tmp_path / 'missing.pth')


def test_convert_command_writes_a_loadable_checkpoint(tmp_path: Path) -> None:
    from contrast_semask_train import convert_checkpoint

    source = _write(tmp_path / 'semask.pth', {'state_dict': micro_checkpoint(150)})
    out = tmp_path / 'init.pt'
    code = convert_checkpoint.main([str(source), '-o', str(out), '--variant', 'micro',
                                    '--num-classes', '8', '--seed-classes', 'ycor',
                                    '--semantic-attention', 'window,window,global,global'])
    assert code == 0
    model, payload = load_checkpoint(out)
    assert model.config.num_classes == 8 and payload['step'] == 0
    assert model.config.semantic_attention == ('window', 'window', 'global', 'global')
    assert set(payload['conversion']['seeded']) == class_keys('vanilla') - {
        'decode_head.conv_seg.weight', 'decode_head.conv_seg.bias'}
    q = 'backbone.layers.0.semantic_layer.class_injection.0.mlp_cls_q.weight'
    src = torch.load(source)['state_dict'][q]
    torch.testing.assert_close(model.state_dict()[q][4], src[2])  # YCOR sky <- ADE20K sky
    bad = convert_checkpoint.main([str(source), '-o', str(tmp_path / 'x.pt'), '--variant',
                                   'micro', '--num-classes', '5', '--seed-classes', 'ycor'])
    assert bad == 2 and not (tmp_path / 'x.pt').exists()


def test_class_seeds_and_configured_model_are_shared_by_convert_and_train() -> None:
    from contrast_semask_train.data.ycor import YCOR_ADE20K_SEEDS, YCOR_CLASSES, class_seeds
    from contrast_semask_train.model.published import ADE20K_CLASS_IDS
    from contrast_semask_train.model.segmentor import build_configured_model

    assert class_seeds('none', 3) is None
    assert class_seeds('ycor', len(YCOR_ADE20K_SEEDS)) is YCOR_ADE20K_SEEDS
    assert sorted(YCOR_ADE20K_SEEDS) == list(range(len(YCOR_CLASSES)))
    assert {name for names in YCOR_ADE20K_SEEDS.values() for name in names} <= set(
        ADE20K_CLASS_IDS)  # every source class resolves without the checkpoint's meta
    with pytest.raises(ValueError, match='need 8 classes'):
        class_seeds('ycor', 5)
    with pytest.raises(ValueError, match="one of \\('none', 'ycor'\\)"):
        class_seeds('ade', 8)
    model = build_configured_model('micro', 8, 'contrastive', 'window', 'imagenet')
    assert model.config.num_classes == 8
    with pytest.raises(ValueError, match='normalization must be one of'):
        build_configured_model('micro', 8, 'contrastive', 'window', 'unknown')
    with pytest.raises(ValueError, match='variant must be one of'):
        build_configured_model('huge', 8, 'contrastive', 'window', 'imagenet')
