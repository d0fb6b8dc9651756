"""Losses (docs/MODEL.md §3) against naive references written straight from its formulas.

The references below use dense n x n matrices and Python loops on purpose: they are slow and
obviously equal to the documented steps, while the package versions are chunked and vectorised.
"""

from __future__ import annotations

import ast
import io
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from contrast_semask_train.losses import (
    SEED_YCOR_CLASS_WEIGHTS,
    Criterion,
    LossConfig,
    PixelContrastConfig,
    PixelContrastiveLoss,
    RecoConfig,
    nearest_labels,
    pixel_contrast_from_samples,
    reco_from_samples,
    reco_loss,
    sample_reco,
    seg_cross_entropy,
)
from contrast_semask_train.losses import contrastive as contrastive_module
from contrast_semask_train.model import ModelOutputs

IGNORE = 255
REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- references


def naive_seed_loss(anchors: torch.Tensor, anchor_labels: torch.Tensor, bank: torch.Tensor,
                    bank_labels: torch.Tensor, temperature: float,
                    class_weights: torch.Tensor | None, mean_over_bank_rows: bool
                    ) -> torch.Tensor:
    """docs/MODEL.md §3.3 steps 5-10 with dense n x n matrices, as the seed computes them."""
    X = torch.cat([bank.detach(), anchors])  # n, D; only the anchor rows carry gradient
    y = torch.cat([bank_labels, anchor_labels])  # n
    n, nb = X.shape[0], bank.shape[0]
    S = X @ X.detach().T / temperature  # step 6
    L = S - S.max(dim=1, keepdim=True).values.detach()
    off_diagonal = ~torch.eye(n, dtype=torch.bool)
    P = ((y[:, None] == y[None, :]) & off_diagonal).to(X.dtype)  # step 7
    N = (y[:, None] != y[None, :]).to(X.dtype)
    log_p = L - torch.log(L.exp() + (N * L.exp()).sum(dim=1, keepdim=True))  # step 8
    num_pos = P.sum(dim=1)
    w = class_weights[y] if class_weights is not None else torch.ones(n, dtype=X.dtype)
    ell = -w * (P * log_p).sum(dim=1) / num_pos.clamp(min=1)  # step 9
    rows = num_pos > 0
    if not mean_over_bank_rows:
        rows[:nb] = False
    return ell[rows].mean()  # step 10


def naive_reco(feats: torch.Tensor, labels: torch.Tensor, query_classes: list[int],
               queries: torch.Tensor, negatives: torch.Tensor, temperature: float
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """docs/MODEL.md §3.5 steps 1 and 3-4, one query at a time, with the given sampled indices.

    Returns (loss, prototypes of the present classes in ascending class order)."""
    present = sorted({int(v) for v in labels.tolist() if v != IGNORE})
    prototypes = torch.stack([feats[labels == c].mean(dim=0) for c in present])
    total = feats.sum() * 0.0
    for i, p in enumerate(query_classes):
        per_query = []
        for q in range(queries.shape[1]):
            anchor = feats[queries[i, q]]
            keys = [prototypes[p].detach()] + [feats[k].detach() for k in negatives[i, q]]
            logits = torch.cosine_similarity(anchor[None], torch.stack(keys), dim=1)
            per_query.append(-torch.log_softmax(logits / temperature, dim=0)[0])
        total = total + torch.stack(per_query).mean()
    return total / len(present), prototypes


def random_unit(*shape: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, dtype=dtype), dim=-1)


# ----------------------------------------------------------------------------- cross-entropy


def test_ce_mmseg_and_valid_reductions_on_a_hand_computed_case():
    logits = torch.tensor([[math.log(3.0), 0.0, 5.0], [0.0, 0.0, 0.0]])[None, :, None, :]
    labels = torch.tensor([[[0, 1, IGNORE]]])  # 1, 1, 3
    per_pixel = [math.log(4.0 / 3.0), math.log(2.0)]  # -log(3/4), -log(1/2); ignored adds 0
    mmseg = seg_cross_entropy(logits, labels, IGNORE, 'mmseg')
    valid = seg_cross_entropy(logits, labels, IGNORE, 'valid')
    assert mmseg.item() == pytest.approx(sum(per_pixel) / 3)
    assert valid.item() == pytest.approx(sum(per_pixel) / 2)


def test_ce_upsamples_bilinearly_without_align_corners():
    # (1, 2) -> (1, 4) with align_corners=False gives [a, .75a+.25b, .25a+.75b, b] = [0, 1, 3, 4].
    logits = torch.tensor([[0.0, 4.0], [0.0, 0.0]])[None, :, None, :]
    labels = torch.zeros(1, 1, 4, dtype=torch.long)
    expected = sum(math.log1p(math.exp(-v)) for v in (0.0, 1.0, 3.0, 4.0)) / 4
    assert seg_cross_entropy(logits, labels).item() == pytest.approx(expected)


def test_ce_valid_reduction_with_no_valid_pixel_is_zero_with_grad():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    labels = torch.full((2, 8, 8), IGNORE)
    loss = seg_cross_entropy(logits, labels, IGNORE, 'valid')
    loss.backward()
    assert loss.item() == 0.0 and not torch.isnan(logits.grad).any()


def test_nearest_labels_picks_every_fourth_pixel():
    labels = torch.arange(64).view(1, 8, 8)
    assert nearest_labels(labels, (2, 2)).tolist() == [[[0, 4], [32, 36]]]


# ----------------------------------------------------------------------------- seed bank loss


@pytest.mark.parametrize('mean_over_bank_rows', [True, False])
@pytest.mark.parametrize('weighted', [True, False])
def test_fused_seed_loss_equals_dense_reference(mean_over_bank_rows, weighted):
    torch.manual_seed(0)
    m, nb, D, K = 37, 3 * 37, 8, 5
    anchors = random_unit(m, D).requires_grad_()
    bank = random_unit(nb, D)
    # class 4 appears exactly once, so one row has no positive and is left out of the mean
    labels = torch.randint(0, 4, (nb + m,))
    labels[5] = 4
    weights = torch.rand(K, dtype=torch.float64) + 0.1 if weighted else None
    expected = naive_seed_loss(anchors, labels[nb:], bank, labels[:nb], 0.07, weights,
                               mean_over_bank_rows)
    (expected_grad,) = torch.autograd.grad(expected, anchors)
    # 7 and 16 do not divide nb or m; the last case runs plain autograd without checkpointing
    for chunk_size, checkpoint in ((1, True), (7, True), (16, True), (1000, True), (16, False)):
        loss = pixel_contrast_from_samples(anchors, labels[nb:], bank, labels[:nb], 0.07,
                                           weights, mean_over_bank_rows, chunk_size,
                                           checkpoint_blocks=checkpoint)
        (grad,) = torch.autograd.grad(loss, anchors)
        torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(grad, expected_grad, rtol=1e-9, atol=1e-12)


def test_fused_seed_loss_float32_at_a_larger_size():
    torch.manual_seed(1)
    anchors = random_unit(256, 16, dtype=torch.float32).requires_grad_()
    bank = random_unit(512, 16, dtype=torch.float32)
    labels = torch.randint(0, 8, (768,))
    weights = torch.tensor(SEED_YCOR_CLASS_WEIGHTS)
    expected = naive_seed_loss(anchors, labels[512:], bank, labels[:512], 0.07, weights, True)
    loss = pixel_contrast_from_samples(anchors, labels[512:], bank, labels[:512], 0.07, weights,
                                       True, 100)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.autograd.grad(loss, anchors)[0],
                               torch.autograd.grad(expected, anchors)[0], rtol=1e-4, atol=1e-7)


def test_bank_rows_shrink_the_anchor_gradient_as_in_the_seed():
    """Pitfall 7: with the bank in the mean, the anchor gradient is scaled by anchors/all rows."""
    torch.manual_seed(2)
    anchors = random_unit(20, 4).requires_grad_()
    bank = random_unit(60, 4)
    labels = torch.randint(0, 3, (80,))
    with_bank = pixel_contrast_from_samples(anchors, labels[60:], bank, labels[:60], 0.1)
    anchors_only = pixel_contrast_from_samples(anchors, labels[60:], bank, labels[:60], 0.1,
                                               mean_over_bank_rows=False)
    grad_with = torch.autograd.grad(with_bank, anchors)[0]
    grad_only = torch.autograd.grad(anchors_only, anchors)[0]
    torch.testing.assert_close(grad_with, grad_only * 20 / 80)


def test_seed_loss_without_negatives_is_zero_and_finite():
    anchors = random_unit(6, 4).requires_grad_()
    labels = torch.zeros(6, dtype=torch.long)  # one class: log p_ij = 0 for every pair
    loss = pixel_contrast_from_samples(anchors, labels, random_unit(6, 4), labels, 0.07)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    assert torch.isfinite(anchors.grad).all()


def test_seed_loss_without_positive_rows_is_a_zero_with_grad_fn():
    anchors = random_unit(3, 4).requires_grad_()
    loss = pixel_contrast_from_samples(anchors, torch.tensor([0, 1, 2]), random_unit(0, 4),
                                       torch.zeros(0, dtype=torch.long), 0.07)
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()


def _embeddings(seed: int, B: int = 2, D: int = 8, h: int = 8, w: int = 8) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(B, D, h, w, dtype=torch.float64, generator=generator).requires_grad_()


def _labels(seed: int, B: int = 2, H: int = 32, W: int = 32, K: int = 4) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, K, (B, H, W), generator=generator)
    labels[:, :8] = IGNORE  # top rows unlabelled
    return labels


def test_module_follows_the_spec_pipeline_and_keeps_a_fifo_bank():
    k = 20
    config = PixelContrastConfig(num_samples=k, bank_depth=3, chunk_size=16)
    loss_fn = PixelContrastiveLoss(4, config)
    reference_bank: list[tuple[torch.Tensor, torch.Tensor]] = []
    for it in range(1, 6):
        raw, labels = _embeddings(it), _labels(it)
        torch.manual_seed(100 + it)
        loss = loss_fn(F.normalize(raw, dim=1), labels)
        (grad,) = torch.autograd.grad(loss, raw)

        # The reference: §3.3 steps 1-5 by hand with the same random stream.
        torch.manual_seed(100 + it)
        z = F.normalize(raw, dim=1).permute(0, 2, 3, 1).reshape(-1, 8)  # B*h*w, D
        small = labels[:, ::4, ::4].reshape(-1)  # label[4i, 4j]
        valid = torch.nonzero(small != IGNORE).squeeze(1)
        chosen_r = valid[torch.randperm(valid.numel())[:k]]
        chosen_a = valid[torch.randperm(valid.numel())[:k]]
        reference_bank = (reference_bank + [(z[chosen_r].detach(), small[chosen_r])])[-3:]
        bank = torch.cat([f for f, _ in reference_bank])
        bank_labels = torch.cat([y for _, y in reference_bank])
        expected = naive_seed_loss(z[chosen_a], small[chosen_a], bank, bank_labels, 0.07, None,
                                   True)
        (expected_grad,) = torch.autograd.grad(expected, raw)

        torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(grad, expected_grad, rtol=1e-9, atol=1e-12)
        # n = bank + anchors = 2k, 3k, 4k, 4k, ...: the bank holds this R and up to 2 older ones
        assert loss_fn.bank_entries == min(it, 3)
        assert loss_fn.bank_rows + k == (min(it, 3) + 1) * k
        assert not any(f.requires_grad for f, _ in loss_fn._bank)


def test_module_passes_the_appended_bank_to_the_math(monkeypatch):
    seen: list[int] = []
    original = contrastive_module.pixel_contrast_from_samples

    def spy(anchors, anchor_labels, bank_feats, bank_labels, **kwargs):
        seen.append(bank_feats.shape[0] + anchors.shape[0])
        assert not bank_feats.requires_grad and anchors.requires_grad
        return original(anchors, anchor_labels, bank_feats, bank_labels, **kwargs)

    monkeypatch.setattr(contrastive_module, 'pixel_contrast_from_samples', spy)
    loss_fn = PixelContrastiveLoss(4, PixelContrastConfig(num_samples=10, bank_depth=3))
    for it in range(5):
        loss_fn(F.normalize(_embeddings(it), dim=1), _labels(it))
    assert seen == [20, 30, 40, 40, 40]


def test_eval_mode_uses_but_does_not_update_the_bank():
    loss_fn = PixelContrastiveLoss(4, PixelContrastConfig(num_samples=10))
    loss_fn(F.normalize(_embeddings(0), dim=1), _labels(0))
    before = [f.clone() for f, _ in loss_fn._bank]
    loss_fn.eval()
    loss_fn(F.normalize(_embeddings(1), dim=1), _labels(1))
    assert loss_fn.bank_entries == 1 and torch.equal(loss_fn._bank[0][0], before[0])


def test_module_with_no_valid_pixel_returns_zero_and_keeps_the_bank():
    loss_fn = PixelContrastiveLoss(4, PixelContrastConfig(num_samples=10))
    loss_fn(F.normalize(_embeddings(0), dim=1), _labels(0))
    raw = _embeddings(1)
    loss = loss_fn(F.normalize(raw, dim=1), torch.full((2, 32, 32), IGNORE))
    assert loss.item() == 0.0 and loss.grad_fn is not None
    assert loss_fn.bank_entries == 1


def test_class_weights_must_have_one_entry_per_class():
    with pytest.raises(ValueError, match='8 entries but num_classes is 5'):
        PixelContrastiveLoss(5, PixelContrastConfig(class_weights=SEED_YCOR_CLASS_WEIGHTS))
    PixelContrastiveLoss(8, PixelContrastConfig(class_weights=SEED_YCOR_CLASS_WEIGHTS))


def test_bank_round_trips_through_state_dict_for_an_exact_resume():
    config = PixelContrastConfig(num_samples=16)
    trained = PixelContrastiveLoss(4, config)
    for it in range(2):
        trained(F.normalize(_embeddings(it), dim=1), _labels(it))
    buffer = io.BytesIO()
    torch.save(trained.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert all(f.device.type == 'cpu' for f in state['_extra_state']['bank_features'])
    resumed = PixelContrastiveLoss(4, config)
    resumed.load_state_dict(state)

    raw, labels = _embeddings(9), _labels(9)
    losses = []
    for module in (trained, resumed, PixelContrastiveLoss(4, config)):
        torch.manual_seed(5)
        losses.append(module(F.normalize(raw, dim=1), labels))
    assert torch.equal(losses[0], losses[1])
    assert not torch.equal(losses[0], losses[2])  # the bank matters, so the test is meaningful
    resumed.reset_bank()
    assert resumed.bank_entries == 0


# ----------------------------------------------------------------------------- ReCo


def _reco_inputs(seed: int, N: int = 120, D: int = 6, K: int = 4):
    generator = torch.Generator().manual_seed(seed)
    feats = torch.randn(N, D, dtype=torch.float64, generator=generator)
    labels = torch.randint(0, K, (N,), generator=generator)
    labels[:10] = IGNORE
    label_probs = torch.rand(N, dtype=torch.float64, generator=generator)
    return feats, labels, label_probs


def test_reco_math_equals_a_per_query_reference():
    feats, labels, label_probs = _reco_inputs(0)
    label_probs[labels == 1] = 0.9  # class 1 has no hard query but counts in the divisor
    config = RecoConfig(num_queries=5, num_negatives=7, strong_threshold=0.8)
    torch.manual_seed(0)
    samples = sample_reco(feats, labels, label_probs, config)
    assert samples.query_classes.tolist() == [0, 2, 3]
    feats = feats.clone().requires_grad_()
    loss = reco_from_samples(feats, samples, config.temperature)
    expected, prototypes = naive_reco(feats, labels, samples.query_classes.tolist(),
                                      samples.queries, samples.negatives, config.temperature)
    torch.testing.assert_close(samples.prototypes, prototypes.detach())
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(torch.autograd.grad(loss, feats)[0],
                               torch.autograd.grad(expected, feats)[0])


def test_reco_sampling_respects_classes_and_hardness():
    feats, labels, label_probs = _reco_inputs(1)
    label_probs[labels == 2] = 0.99  # every pixel of class 2 is easy: no queries for it
    config = RecoConfig(num_queries=32, num_negatives=16, strong_threshold=0.97)
    samples = sample_reco(feats, labels, label_probs, config)
    assert samples.num_present == 4  # class 2 still counts in the divisor
    assert samples.query_classes.tolist() == [0, 1, 3]
    for i, p in enumerate(samples.query_classes.tolist()):
        assert (labels[samples.queries[i]] == p).all()
        assert (label_probs[samples.queries[i]] < 0.97).all()
        negative_labels = labels[samples.negatives[i]]
        assert ((negative_labels != p) & (negative_labels != IGNORE)).all()
        # uniform with replacement over the pools: many distinct pixels, not one per class
        assert samples.queries[i].unique().numel() > 10
        assert samples.negatives[i].unique().numel() > 40


def test_reco_negative_classes_follow_the_prototype_similarity_softmax():
    directions = torch.tensor([[1.0, 0.0], [0.8, 0.6], [-1.0, 0.0]])  # class prototypes
    labels = torch.arange(3).repeat_interleave(50)
    feats = directions[labels]
    config = RecoConfig(num_queries=64, num_negatives=512, strong_threshold=2.0)
    torch.manual_seed(3)
    samples = sample_reco(feats, labels, torch.zeros(150), config)
    drawn = labels[samples.negatives[0]].flatten()  # negatives for class 0
    expected = torch.softmax(torch.tensor([0.8, -1.0]) / 0.5, dim=0)
    observed = torch.stack([(drawn == 1).double().mean(), (drawn == 2).double().mean()])
    torch.testing.assert_close(observed.float(), expected, atol=0.01, rtol=0.0)


def test_reco_with_at_most_one_class_is_a_zero_with_grad_fn():
    embeddings = torch.randn(1, 4, 4, 4, requires_grad=True)
    labels = torch.zeros(1, 16, 16, dtype=torch.long)
    labels[0, :4] = IGNORE
    loss = reco_loss(embeddings, labels, torch.full((1, 3, 4, 4), 0.5))
    assert loss.item() == 0.0 and loss.grad_fn is not None


def test_reco_loss_wires_labels_and_probabilities():
    torch.manual_seed(4)
    embeddings = torch.randn(2, 4, 4, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 3, (2, 16, 16))
    probs = torch.softmax(torch.randn(2, 3, 4, 4, dtype=torch.float64), dim=1)
    config = RecoConfig(num_queries=8, num_negatives=8)
    torch.manual_seed(5)
    loss = reco_loss(embeddings, labels, probs, config)
    small = labels[:, ::4, ::4].reshape(-1)
    feats = embeddings.permute(0, 2, 3, 1).reshape(-1, 4)
    own = probs.permute(0, 2, 3, 1).reshape(-1, 3).gather(1, small[:, None])[:, 0]
    torch.manual_seed(5)
    expected = reco_from_samples(feats, sample_reco(feats, small, own, config), 0.5)
    torch.testing.assert_close(loss, expected)
    assert loss.item() > 0.0


# ----------------------------------------------------------------------------- criterion


def _outputs(seed: int, K: int = 4) -> ModelOutputs:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, K, 8, 8, generator=generator, requires_grad=True)
    sem_logits = torch.randn(2, K, 8, 8, generator=generator, requires_grad=True)
    embeddings = F.normalize(torch.randn(2, 8, 8, 8, generator=generator), dim=1)
    return ModelOutputs(logits, embeddings.requires_grad_(), sem_logits)


@pytest.mark.parametrize('kind', ['none', 'seed', 'reco'])
def test_criterion_total_is_the_weighted_sum(kind):
    config = LossConfig(contrastive=kind, sem_weight=0.25, contrastive_weight=0.5,
                        seed=PixelContrastConfig(num_samples=32),
                        reco=RecoConfig(num_queries=8, num_negatives=16, strong_threshold=0.5),
                        ce_reduction='valid')
    outputs, labels = _outputs(0), _labels(0).float().long()
    torch.manual_seed(6)
    terms = Criterion(4, config)(outputs, labels)
    torch.manual_seed(6)
    if kind == 'seed':
        expected = PixelContrastiveLoss(4, config.seed)(outputs.embeddings, labels)
    elif kind == 'reco':
        probs = torch.softmax(outputs.logits.detach(), dim=1)
        expected = reco_loss(outputs.embeddings, labels, probs, config.reco)
    else:
        expected = torch.zeros(())
    ce = seg_cross_entropy(outputs.logits, labels, IGNORE, 'valid')
    sem_ce = seg_cross_entropy(outputs.sem_logits, labels, IGNORE, 'valid')
    torch.testing.assert_close(terms.ce, ce)
    torch.testing.assert_close(terms.sem_ce, sem_ce)
    torch.testing.assert_close(terms.contrastive, 0.5 * expected)
    torch.testing.assert_close(terms.total, ce + 0.25 * sem_ce + 0.5 * expected)
    assert (terms.contrastive.item() != 0.0) == (kind != 'none')
    terms.total.backward()


def test_criterion_state_dict_carries_the_seed_bank():
    config = LossConfig(contrastive='seed', seed=PixelContrastConfig(num_samples=32))
    trained = Criterion(4, config)
    trained(_outputs(0), _labels(0))
    state = trained.state_dict()
    assert list(state) == ['seed_loss._extra_state']
    resumed = Criterion(4, config)
    resumed.load_state_dict(state)
    results = []
    for criterion in (trained, resumed):
        torch.manual_seed(8)
        results.append(criterion(_outputs(1), _labels(1)).total)
    assert torch.equal(results[0], results[1])
    assert list(Criterion(4, LossConfig()).state_dict()) == []


def test_loss_config_from_dict_builds_nested_configs():
    config = LossConfig.from_dict({
        'contrastive': 'seed', 'sem_weight': 1, 'ignore_index': 0,
        'seed': {'class_weights': [1, 0.5], 'temperature': 0.1, 'mean_over_bank_rows': False},
    })
    assert config.sem_weight == 1.0 and isinstance(config.sem_weight, float)
    assert config.seed.class_weights == (1.0, 0.5) and config.seed.temperature == 0.1
    assert config.seed.ignore_index == 0 and config.reco.ignore_index == 0
    assert LossConfig.from_dict({}) == LossConfig()


@pytest.mark.parametrize('data, message', [
    ({'sem_wieght': 0.4}, r"loss: unknown key\(s\) 'sem_wieght'; valid keys: ce_reduction, "),
    ({'seed': {'temprature': 0.1}}, r"loss.seed: unknown key\(s\) 'temprature'.*temperature"),
    ({'seed': {'temperature': 'abc'}}, r"loss.seed.temperature: expected float, got str"),
    ({'reco': {'num_queries': 2.5}}, r'loss.reco.num_queries: expected int, got float'),
    ({'seed': {'mean_over_bank_rows': 1}}, r'mean_over_bank_rows: expected bool, got int'),
    ({'seed': {'class_weights': [1, 'x']}}, r'class_weights\[1\]: expected float'),
    ({'contrastive': 'ReCo'}, r"loss.contrastive: expected one of \['none', 'seed', 'reco'\]"),
    ({'seed': 3}, r'loss.seed: expected a mapping'),
    ({'seed': {'temperature': 0.0}}, r'loss.seed: temperature must be > 0'),
    ({'seed': {'ignore_index': 0}}, r'ignore_index differs'),
])
def test_loss_config_from_dict_rejects_bad_input(data, message):
    with pytest.raises(ValueError, match=message):
        LossConfig.from_dict(data)


@pytest.mark.static
def test_losses_import_torch_and_stdlib_only():
    allowed = {'__future__', 'torch', 'contrast_semask_train'} | set(sys.stdlib_module_names)
    for path in sorted((REPO / 'contrast_semask_train' / 'losses').glob('*.py')):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = [alias.name.split('.')[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = [node.module.split('.')[0]]
            else:
                continue
            assert set(roots) <= allowed, f'{path.name}:{node.lineno} imports {roots}'
            assert not any(name.startswith('contrast_semask_train.model')
                           for name in ([node.module] if isinstance(node, ast.ImportFrom)
                                        else [a.name for a in node.names])), path.name
