"""Swin / SeMask semantics checked against a naive float64 oracle (docs/MODEL.md §1).

The oracle below is written from the specification only. Windowing, padding, the cyclic shift,
the shift mask, the relative-position index and the PatchMerging order are all done with explicit
Python loops and index arithmetic; torch is used only for small dense maths (matmul, softmax,
layer_norm, gelu). Everything runs on CPU in float64.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from contrast_semask_train.model.semask import SemanticLayer
from contrast_semask_train.model.swin import PatchEmbed, SwinStage

DIM = 16
HEADS = 2
WINDOW = 7
NUM_CLASSES = 5
GAMMA = 0.7
BATCH = 2
ATOL = 1e-9
STAGE_GRIDS = [(10, 12), (7, 7), (3, 5), (15, 9), (14, 21)]
MERGE_ORDER = ((0, 0), (1, 0), (0, 1), (1, 1))  # (row offset, col offset), as in the spec
SWAPPED_MERGE_ORDER = ((0, 0), (0, 1), (1, 0), (1, 1))


@dataclass(frozen=True)
class Variant:
    """Deliberate deviations from the spec, used to show that the oracle is not vacuous."""

    use_mask: bool = True
    roll_before_pad: bool = False
    shrink_small_window: bool = False
    merge_order: tuple[tuple[int, int], ...] = MERGE_ORDER


SPEC = Variant()


# --------------------------------------------------------------------------- parameters


def randomise_(module: nn.Module, seed: int) -> None:
    """Give every parameter of a float64 `module` a random, non-trivial value."""
    gen = torch.Generator().manual_seed(seed)
    norm_params = set()
    for sub in module.modules():
        if isinstance(sub, nn.LayerNorm):
            norm_params.update(id(p) for p in sub.parameters())
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            if name.endswith('gamma'):
                p.fill_(GAMMA)
            elif 'relative_position_bias_table' in name:
                p.copy_(noise)
            elif id(p) in norm_params:
                p.copy_((1.0 if name.endswith('weight') else 0.0) + 0.2 * noise)
            else:
                p.copy_(0.35 * noise)


def layer_norm(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    """LayerNorm over the last axis with the module's own parameters."""
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def linear(x: torch.Tensor, fc: nn.Linear) -> torch.Tensor:
    """x @ W^T + b with the module's own parameters."""
    out = x @ fc.weight.T
    return out if fc.bias is None else out + fc.bias


# --------------------------------------------------------------------------- grids


def tokens_to_grid(tokens: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """(H*W, C) row-major tokens -> (H, W, C), element by element."""
    grid = torch.zeros(H, W, tokens.shape[-1], dtype=tokens.dtype)
    for i in range(H):
        for j in range(W):
            grid[i, j] = tokens[i * W + j]
    return grid


def grid_to_tokens(grid: torch.Tensor) -> torch.Tensor:
    """(H, W, C) -> (H*W, C) row-major tokens, element by element."""
    H, W, C = grid.shape
    tokens = torch.zeros(H * W, C, dtype=grid.dtype)
    for i in range(H):
        for j in range(W):
            tokens[i * W + j] = grid[i, j]
    return tokens


def pad_grid(grid: torch.Tensor, Hp: int, Wp: int) -> torch.Tensor:
    """Zero-pad (H, W, C) at the bottom/right to (Hp, Wp, C)."""
    H, W, C = grid.shape
    padded = torch.zeros(Hp, Wp, C, dtype=grid.dtype)
    for i in range(H):
        for j in range(W):
            padded[i, j] = grid[i, j]
    return padded


def crop_grid(grid: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Keep the top-left (H, W) part of a grid."""
    out = torch.zeros(H, W, grid.shape[-1], dtype=grid.dtype)
    for i in range(H):
        for j in range(W):
            out[i, j] = grid[i, j]
    return out


def roll_up_left(grid: torch.Tensor, s: int) -> torch.Tensor:
    """shifted[i, j] = grid[(i + s) % H, (j + s) % W]."""
    H, W, _ = grid.shape
    out = torch.zeros_like(grid)
    for i in range(H):
        for j in range(W):
            out[i, j] = grid[(i + s) % H, (j + s) % W]
    return out


def round_up(n: int, m: int) -> int:
    """Smallest multiple of m that is >= n."""
    return -(-n // m) * m


# --------------------------------------------------------------------------- attention


@functools.cache
def relative_index(w: int) -> torch.Tensor:
    """(w*w, w*w) bias-table rows: (ya - yb + w - 1) * (2w - 1) + (xa - xb + w - 1)."""
    idx = torch.zeros(w * w, w * w, dtype=torch.long)
    for a in range(w * w):
        for b in range(w * w):
            ya, xa, yb, xb = a // w, a % w, b // w, b % w
            idx[a, b] = (ya - yb + w - 1) * (2 * w - 1) + (xa - xb + w - 1)
    return idx


def wrap_mask(rows: list[int], cols: list[int], Hp: int, Wp: int, s: int) -> torch.Tensor:
    """-100 where two tokens of a shifted window differ in 'came from the wrap-around'."""
    n = len(rows)
    mask = torch.zeros(n, n, dtype=torch.float64)
    wrapped = [(r >= Hp - s, c >= Wp - s) for r, c in zip(rows, cols, strict=True)]
    for a in range(n):
        for b in range(n):
            if wrapped[a] != wrapped[b]:
                mask[a, b] = -100.0
    return mask


def band_label(p: int, P: int, w: int, s: int) -> int:
    """Spec 1.2 band of coordinate p on an axis of length P: [0,P-w), [P-w,P-s), [P-s,P)."""
    return 0 if p < P - w else (1 if p < P - s else 2)


def naive_wmsa(y: torch.Tensor, attn: nn.Module, w: int, s: int, var: Variant) -> torch.Tensor:
    """Window attention on an already LayerNorm'ed (H, W, C) grid, window w, shift s."""
    H, W, C = y.shape
    Hp, Wp = round_up(H, w), round_up(W, w)
    if var.roll_before_pad:  # timm's order: roll the unpadded grid, then pad
        shifted = pad_grid(roll_up_left(y, s), Hp, Wp)
    else:
        shifted = roll_up_left(pad_grid(y, Hp, Wp), s)
    heads = attn.relative_position_bias_table.shape[1]
    d = C // heads
    rel = relative_index(w)
    out_shifted = torch.zeros(Hp, Wp, C, dtype=y.dtype)
    for wy in range(0, Hp, w):
        for wx in range(0, Wp, w):
            rows = [wy + a // w for a in range(w * w)]
            cols = [wx + a % w for a in range(w * w)]
            x_win = torch.stack([shifted[r, c] for r, c in zip(rows, cols, strict=True)])
            qkv = linear(x_win, attn.qkv)
            mask = wrap_mask(rows, cols, Hp, Wp, s) if (s > 0 and var.use_mask) else 0.0
            head_outs = []
            for h in range(heads):
                q = qkv[:, h * d:(h + 1) * d]
                k = qkv[:, C + h * d:C + (h + 1) * d]
                v = qkv[:, 2 * C + h * d:2 * C + (h + 1) * d]
                bias = attn.relative_position_bias_table[rel, h]
                logits = q @ k.T * d ** -0.5 + bias + mask
                head_outs.append(torch.softmax(logits, dim=-1) @ v)
            res = linear(torch.cat(head_outs, dim=-1), attn.proj)
            for a, (r, c) in enumerate(zip(rows, cols, strict=True)):
                out_shifted[r, c] = res[a]
    # un-shift: shifted position (i, j) holds padded position ((i + s) % Hp, (j + s) % Wp)
    if var.roll_before_pad:
        unrolled = torch.zeros(H, W, C, dtype=y.dtype)
        for i in range(H):
            for j in range(W):
                unrolled[(i + s) % H, (j + s) % W] = out_shifted[i, j]
        return unrolled
    out_padded = torch.zeros(Hp, Wp, C, dtype=y.dtype)
    for i in range(Hp):
        for j in range(Wp):
            out_padded[(i + s) % Hp, (j + s) % Wp] = out_shifted[i, j]
    return crop_grid(out_padded, H, W)


def naive_block(x: torch.Tensor, block: nn.Module, shift: int, var: Variant) -> torch.Tensor:
    """Pre-norm Swin block on an (H, W, C) grid."""
    H, W, _ = x.shape
    w, s = WINDOW, shift
    if var.shrink_small_window and min(H, W) <= WINDOW:  # original Swin rule (not in the spec)
        s = 0
    x = x + naive_wmsa(layer_norm(x, block.norm1), block.attn, w, s, var)
    hidden = F.gelu(linear(layer_norm(x, block.norm2), block.mlp.fc1), approximate='none')
    return x + linear(hidden, block.mlp.fc2)


def semantic_attention(y: torch.Tensor, inj: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """SeMask attention on tokens y (N, C): returns (F, Q_s), no 1/sqrt(d) scaling."""
    q_s = linear(y, inj.mlp_cls_q)
    k_s = linear(y, inj.mlp_cls_k)
    v = linear(y, inj.mlp_v)
    a = torch.softmax(q_s @ k_s.T, dim=-1)
    return linear(a @ v, inj.mlp_res), q_s


def naive_semantic(x: torch.Tensor, layer: nn.Module, mode: str,
                   w: int = WINDOW) -> tuple[torch.Tensor, torch.Tensor]:
    """SeMask semantic layer on an (H, W, C) grid -> (out (H, W, C), Q_s (K, H, W))."""
    H, W, C = x.shape
    inj = layer.class_injection[0]
    y = layer_norm(x, layer.norm1)
    if mode == 'global':
        f, q_s = semantic_attention(grid_to_tokens(y), inj)
        out = inj.gamma * tokens_to_grid(f, H, W) + y
        return out, tokens_to_grid(q_s, H, W).permute(2, 0, 1)
    Hp, Wp = round_up(H, w), round_up(W, w)
    y_pad = pad_grid(y, Hp, Wp)
    f_pad = torch.zeros(Hp, Wp, C, dtype=x.dtype)
    q_pad = torch.zeros(Hp, Wp, inj.mlp_cls_q.out_features, dtype=x.dtype)
    for wy in range(0, Hp, w):
        for wx in range(0, Wp, w):
            coords = [(wy + a // w, wx + a % w) for a in range(w * w)]
            f, q_s = semantic_attention(torch.stack([y_pad[r, c] for r, c in coords]), inj)
            for a, (r, c) in enumerate(coords):
                f_pad[r, c] = f[a]
                q_pad[r, c] = q_s[a]
    out = inj.gamma * crop_grid(f_pad, H, W) + y
    return out, crop_grid(q_pad, H, W).permute(2, 0, 1)


def naive_merge(x: torch.Tensor, merge: nn.Module,
                order: tuple[tuple[int, int], ...]) -> torch.Tensor:
    """PatchMerging of an (H, W, C) grid -> ((H+1)//2 * (W+1)//2, 2C) row-major tokens."""
    H, W, C = x.shape
    h2, w2 = (H + 1) // 2, (W + 1) // 2
    rows = []
    for r in range(h2):
        for c in range(w2):
            parts = []
            for dy, dx in order:
                i, j = 2 * r + dy, 2 * c + dx
                inside = i < H and j < W
                parts.append(x[i, j] if inside else torch.zeros(C, dtype=x.dtype))
            rows.append(torch.cat(parts))
    return linear(layer_norm(torch.stack(rows), merge.norm), merge.reduction)


def naive_stage(x: torch.Tensor, H: int, W: int, stage: nn.Module,
                var: Variant = SPEC) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Naive SwinStage on (B, H*W, C) -> (out, semantic (B, K, H, W), next tokens)."""
    outs, sems, nexts = [], [], []
    for b in range(x.shape[0]):
        grid = tokens_to_grid(x[b], H, W)
        for j, block in enumerate(stage.blocks):
            grid = naive_block(grid, block, WINDOW // 2 if j % 2 == 1 else 0, var)
        grid, sem = naive_semantic(grid, stage.semantic_layer, 'window')
        outs.append(grid_to_tokens(grid))
        sems.append(sem)
        nexts.append(naive_merge(grid, stage.downsample, var.merge_order))
    return torch.stack(outs), torch.stack(sems), torch.stack(nexts)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope='module')
def stage() -> SwinStage:
    """A randomised float64 SwinStage (depth 2, window 7, windowed semantic layer)."""
    torch.manual_seed(0)
    module = SwinStage(DIM, 2, HEADS, WINDOW, NUM_CLASSES, 'window', WINDOW, 0.1,
                       [0.0, 0.2], mlp_ratio=4.0, qkv_bias=True, downsample=True)
    module.double().eval()
    randomise_(module, seed=1)
    return module


def stage_input(H: int, W: int, seed: int = 2) -> torch.Tensor:
    """A (BATCH, H*W, DIM) float64 input."""
    gen = torch.Generator().manual_seed(seed + 100 * H + W)
    return torch.randn(BATCH, H * W, DIM, generator=gen, dtype=torch.float64)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference."""
    return (a - b).abs().max().item()


# --------------------------------------------------------------------------- tests


def test_band_labels_match_wrap_test() -> None:
    """Inside a window, spec 1.2's 3-band labels and the wrap-around test agree."""
    w, s = WINDOW, WINDOW // 2
    for P in (7, 14, 21):
        for start in range(0, P, w):
            coords = range(start, start + w)
            for a in coords:
                for b in coords:
                    same_band = band_label(a, P, w, s) == band_label(b, P, w, s)
                    same_wrap = (a >= P - s) == (b >= P - s)
                    assert same_band == same_wrap, f'P={P} a={a} b={b}'


@pytest.mark.parametrize(('H', 'W'), STAGE_GRIDS)
def test_stage_matches_naive(stage: SwinStage, H: int, W: int) -> None:
    """Blocks + shifted block + windowed semantic layer + PatchMerging vs the naive oracle."""
    x = stage_input(H, W)
    with torch.no_grad():
        out, sem, nxt, h2, w2 = stage(x, H, W)
        ref_out, ref_sem, ref_next = naive_stage(x, H, W, stage)
    assert (h2, w2) == ((H + 1) // 2, (W + 1) // 2)
    assert out.shape == ref_out.shape, f'{tuple(out.shape)} != {tuple(ref_out.shape)}'
    assert sem.shape == (BATCH, NUM_CLASSES, H, W), f'semantic shape {tuple(sem.shape)}'
    assert nxt.shape == ref_next.shape, f'{tuple(nxt.shape)} != {tuple(ref_next.shape)}'
    assert max_diff(out, ref_out) < ATOL, f'out differs by {max_diff(out, ref_out):.3e}'
    assert max_diff(sem, ref_sem) < ATOL, f'semantic differs by {max_diff(sem, ref_sem):.3e}'
    assert max_diff(nxt, ref_next) < ATOL, f'next differs by {max_diff(nxt, ref_next):.3e}'


def test_global_semantic_layer_matches_naive() -> None:
    """Global-mode SemanticLayer on a 6x9 grid vs the naive oracle."""
    H, W = 6, 9
    torch.manual_seed(0)
    layer = SemanticLayer(DIM, NUM_CLASSES, 'global', window_size=WINDOW, dropout=0.1)
    layer.double().eval()
    randomise_(layer, seed=3)
    x = stage_input(H, W, seed=4)
    with torch.no_grad():
        out, sem = layer(x, H, W)
        refs = [naive_semantic(tokens_to_grid(x[b], H, W), layer, 'global')
                for b in range(BATCH)]
    ref_out = torch.stack([grid_to_tokens(o) for o, _ in refs])
    ref_sem = torch.stack([s for _, s in refs])
    assert sem.shape == (BATCH, NUM_CLASSES, H, W), f'semantic shape {tuple(sem.shape)}'
    assert max_diff(out, ref_out) < ATOL, f'out differs by {max_diff(out, ref_out):.3e}'
    assert max_diff(sem, ref_sem) < ATOL, f'semantic differs by {max_diff(sem, ref_sem):.3e}'


def test_patch_embed_matches_naive() -> None:
    """PatchEmbed on 10x13 images (zero-padded to 12x16) vs a per-patch loop."""
    Hi, Wi, p = 10, 13, 4
    torch.manual_seed(0)
    pe = PatchEmbed(p, 3, DIM)
    pe.double().eval()
    randomise_(pe, seed=5)
    gen = torch.Generator().manual_seed(6)
    images = torch.randn(BATCH, 3, Hi, Wi, generator=gen, dtype=torch.float64)
    h, w = -(-Hi // p), -(-Wi // p)
    weight = pe.proj.weight.reshape(DIM, 3 * p * p)  # (out, ch * dy * dx) in that order
    ref = torch.zeros(BATCH, h * w, DIM, dtype=torch.float64)
    for b in range(BATCH):
        for r in range(h):
            for c in range(w):
                patch = torch.zeros(3 * p * p, dtype=torch.float64)
                for ch in range(3):
                    for dy in range(p):
                        for dx in range(p):
                            i, j = r * p + dy, c * p + dx
                            if i < Hi and j < Wi:
                                patch[(ch * p + dy) * p + dx] = images[b, ch, i, j]
                ref[b, r * w + c] = weight @ patch + pe.proj.bias
    ref = layer_norm(ref, pe.norm)
    with torch.no_grad():
        tokens, th, tw = pe(images)
    assert (th, tw) == (h, w)
    assert max_diff(tokens, ref) < ATOL, f'tokens differ by {max_diff(tokens, ref):.3e}'


@pytest.mark.parametrize(('name', 'variant', 'H', 'W'), [
    ('no shift mask', Variant(use_mask=False), 10, 12),
    ('roll before pad', Variant(roll_before_pad=True), 10, 12),
    ('shrink window when grid <= window', Variant(shrink_small_window=True), 3, 5),
])
def test_oracle_variants_disagree(stage: SwinStage, name: str, variant: Variant,
                                  H: int, W: int) -> None:
    """Deviating from the spec in the oracle changes the stage output noticeably."""
    x = stage_input(H, W)
    with torch.no_grad():
        out = stage(x, H, W)[0]
        wrong = naive_stage(x, H, W, stage, variant)[0]
    assert max_diff(out, wrong) > 1e-3, f'variant {name!r} is indistinguishable'


def test_merge_order_variant_disagrees(stage: SwinStage) -> None:
    """Swapping the (odd, even) and (even, odd) sub-grids in PatchMerging is detected."""
    H, W = 10, 12
    x = stage_input(H, W)
    with torch.no_grad():
        nxt = stage(x, H, W)[2]
        wrong = naive_stage(x, H, W, stage, Variant(merge_order=SWAPPED_MERGE_ORDER))[2]
    assert max_diff(nxt, wrong) > 1e-3, 'PatchMerging order variant is indistinguishable'
