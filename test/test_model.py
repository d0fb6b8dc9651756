"""Model construction, forward/backward contract and parameter counts (CPU, tiny variants)."""

from __future__ import annotations

import math

import pytest
import torch

from contrast_semask_train.model import (
    ADE20K_SEMANTIC_ATTENTION,
    ModelConfig,
    ModelOutputs,
    build_model,
    count_parameters,
    make_config,
    seed_semantic_attention,
)


def _set_gammas(model: torch.nn.Module, value: float) -> None:
    """SeMask's gamma starts at 0, which zeroes the gradient of mlp_cls_k/mlp_v/mlp_res;
    pretrained checkpoints have gamma != 0, so test the gradient flow in that regime."""
    for name, param in model.named_parameters():
        if name.endswith('gamma'):
            param.data.fill_(value)


@pytest.mark.parametrize('head', ['contrastive', 'vanilla'])
@pytest.mark.parametrize('size', [(550, 688), (97, 131)])
def test_micro_forward_backward_odd_sizes(head: str, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = build_model('micro', num_classes=5, head=head).train()
    _set_gammas(model, 0.5)
    H, W = size
    out = model(torch.randn(2, 3, H, W))
    assert isinstance(out, ModelOutputs)
    h, w = math.ceil(H / 4), math.ceil(W / 4)
    assert out.logits.shape == (2, 5, h, w)
    assert out.embeddings.shape == (2, model.config.output_dim, h, w)
    assert out.sem_logits.shape == (2, 5, h, w)
    for name, tensor in out._asdict().items():
        assert torch.isfinite(tensor).all(), f'{name} has NaN/inf'
    # embeddings are unit-norm, so use one channel: its gradient reaches every channel
    (out.logits.mean() + out.embeddings[:, 0].mean() + out.sem_logits.mean()).backward()
    no_grad = [n for n, p in model.named_parameters()
               if p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.abs().sum()]
    assert not no_grad, f'parameters without a (non-zero, finite) gradient: {no_grad}'


def test_embeddings_are_unit_norm_and_dims_follow_head() -> None:
    torch.manual_seed(0)
    images = torch.randn(1, 3, 64, 80)
    for head, dim in (('contrastive', 16), ('vanilla', 32)):
        model = build_model('micro', num_classes=3, head=head).eval()
        with torch.no_grad():
            emb = model(images).embeddings
        assert emb.shape[1] == dim == model.config.output_dim
        torch.testing.assert_close(emb.norm(dim=1), torch.ones_like(emb[:, 0]))


def test_eval_is_deterministic_and_train_mode_is_stochastic() -> None:
    torch.manual_seed(0)
    model = build_model('micro', num_classes=3, head='vanilla')
    images = torch.randn(1, 3, 40, 56)
    model.eval()
    with torch.no_grad():
        a, b = model(images), model(images)
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=0)
    model.train()
    with torch.no_grad():
        c, d = model(images), model(images)
    assert not torch.equal(c.logits, d.logits), 'drop path / dropout inactive in train mode'


@pytest.mark.slow
def test_small_forward_at_544x1024() -> None:
    torch.manual_seed(0)
    model = build_model('small', num_classes=8).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 544, 1024))
    assert out.logits.shape == (1, 8, 136, 256)
    assert out.embeddings.shape == (1, 64, 136, 256)
    assert out.sem_logits.shape == (1, 8, 136, 256)
    assert all(torch.isfinite(t).all() for t in out)


@pytest.mark.parametrize(('variant', 'num_classes', 'head', 'millions'), [
    ('small', 150, 'vanilla', 55.97),
    ('small', 8, 'contrastive', 55.68),
    ('small', 8, 'vanilla', 55.53),
    ('tiny', 150, 'vanilla', 34.66),
    ('base', 150, 'vanilla', 96.49),
])
def test_parameter_counts_match_published(variant: str, num_classes: int, head: str,
                                          millions: float) -> None:
    model = build_model(variant, num_classes, head)
    assert abs(count_parameters(model) / 1e6 - millions) <= 0.01


def test_semantic_attention_mode_is_explicit_per_stage() -> None:
    assert seed_semantic_attention(96, 150) == ADE20K_SEMANTIC_ATTENTION
    assert seed_semantic_attention(96, 8) == ('window',) * 4
    assert seed_semantic_attention(128, 150) == ('window',) * 4  # SeMask-B: windowed
    model = build_model('micro', 4, semantic_attention=('window', 'global', 'window', 'global'))
    modes = [stage.semantic_layer.mode for stage in model.backbone.layers]
    assert modes == ['window', 'global', 'window', 'global']
    # same parameter names in both modes, so checkpoints load either way
    other = build_model('micro', 4)
    assert model.state_dict().keys() == other.state_dict().keys()


def test_global_and_window_modes_differ() -> None:
    torch.manual_seed(0)
    window = build_model('micro', 4).eval()
    _set_gammas(window, 1.0)
    glob = build_model('micro', 4, semantic_attention=('global',) * 4).eval()
    glob.load_state_dict(window.state_dict())
    images = torch.randn(1, 3, 96, 96)  # stage 0 is 24x24 tokens: several 7x7 windows
    with torch.no_grad():
        assert not torch.allclose(window(images).logits, glob(images).logits, atol=1e-4)


def test_config_validation_messages() -> None:
    with pytest.raises(ValueError, match='num_heads needs one entry per stage'):
        make_config('micro', 4, num_heads=(1, 2, 2))
    with pytest.raises(ValueError, match="'window' or 'global'"):
        make_config('micro', 4, semantic_attention=('window', 'window', 'global', 'glob'))
    with pytest.raises(ValueError, match='unknown model variant'):
        make_config('huge', 4)
    with pytest.raises(ValueError, match='class_names has 2 names for 4 classes'):
        make_config('micro', 4, class_names=('a', 'b'))
    with pytest.raises(ValueError, match='not divisible'):
        make_config('micro', 4, num_heads=(3, 2, 2, 4))


def test_config_round_trips_through_dict() -> None:
    cfg = make_config('tiny', 8, 'vanilla', class_names=tuple('abcdefgh'),
                      semantic_attention=ADE20K_SEMANTIC_ATTENTION)
    as_lists = {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.to_dict().items()}
    assert ModelConfig.from_dict(as_lists) == cfg
    with pytest.raises(ValueError, match='unknown ModelConfig keys'):
        ModelConfig.from_dict({**cfg.to_dict(), 'depth': 3})
