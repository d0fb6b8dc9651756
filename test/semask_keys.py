"""An independent generator of mmseg SeMask-FPN state dicts, written from the key table in
docs/MODEL.md §4 (not from the model code), for converter tests."""

from __future__ import annotations

import torch

SCALE_HEAD_CONVS = ((0, 0), (1, 0), (2, 0), (2, 2), (3, 0), (3, 2), (3, 4))


def relative_index_by_loops(window: int) -> torch.Tensor:
    """(w*w, w*w): row (ya - yb + w - 1) * (2w - 1) + (xa - xb + w - 1), by explicit loops."""
    n = window * window
    index = torch.empty(n, n, dtype=torch.int64)
    for a in range(n):
        for b in range(n):
            ya, xa, yb, xb = a // window, a % window, b // window, b % window
            index[a, b] = (ya - yb + window - 1) * (2 * window - 1) + (xa - xb + window - 1)
    return index


def semask_key_shapes(embed: int, depths: tuple[int, ...], heads: tuple[int, ...],
                      window: int, num_classes: int, head: str = 'vanilla',
                      fpn: int = 256, embedding_dim: int = 64) -> dict[str, tuple[int, ...]]:
    """Key -> shape for an mmseg SeMask-FPN checkpoint (docs/MODEL.md §4)."""
    K = num_classes
    shapes: dict[str, tuple[int, ...]] = {
        'backbone.patch_embed.proj.weight': (embed, 3, 4, 4),
        'backbone.patch_embed.proj.bias': (embed,),
        'backbone.patch_embed.norm.weight': (embed,),
        'backbone.patch_embed.norm.bias': (embed,),
    }
    channels = [embed * 2 ** i for i in range(len(depths))]
    for i, (depth, C) in enumerate(zip(depths, channels, strict=True)):
        for j in range(depth):
            p = f'backbone.layers.{i}.blocks.{j}.'
            shapes.update({
                p + 'norm1.weight': (C,), p + 'norm1.bias': (C,),
                p + 'attn.relative_position_bias_table': ((2 * window - 1) ** 2, heads[i]),
                p + 'attn.relative_position_index': (window * window, window * window),
                p + 'attn.qkv.weight': (3 * C, C), p + 'attn.qkv.bias': (3 * C,),
                p + 'attn.proj.weight': (C, C), p + 'attn.proj.bias': (C,),
                p + 'norm2.weight': (C,), p + 'norm2.bias': (C,),
                p + 'mlp.fc1.weight': (4 * C, C), p + 'mlp.fc1.bias': (4 * C,),
                p + 'mlp.fc2.weight': (C, 4 * C), p + 'mlp.fc2.bias': (C,),
            })
        s = f'backbone.layers.{i}.semantic_layer.'
        c = s + 'class_injection.0.'
        shapes.update({
            s + 'norm1.weight': (C,), s + 'norm1.bias': (C,), c + 'gamma': (1,),
            c + 'mlp_cls_q.weight': (K, C), c + 'mlp_cls_q.bias': (K,),
            c + 'mlp_cls_k.weight': (K, C), c + 'mlp_cls_k.bias': (K,),
            c + 'mlp_v.weight': (C, C), c + 'mlp_v.bias': (C,),
            c + 'mlp_res.weight': (C, C), c + 'mlp_res.bias': (C,),
        })
        if i < len(depths) - 1:
            d = f'backbone.layers.{i}.downsample.'
            shapes.update({d + 'reduction.weight': (2 * C, 4 * C),
                           d + 'norm.weight': (4 * C,), d + 'norm.bias': (4 * C,)})
    for i, C in enumerate(channels):
        shapes[f'backbone.norm{i}.weight'] = (C,)
        shapes[f'backbone.norm{i}.bias'] = (C,)
    if head == 'vanilla':
        shapes['decode_head.conv_seg.weight'] = (K, fpn, 1, 1)
        shapes['decode_head.conv_seg.bias'] = (K,)
    else:
        shapes.update({
            'decode_head.feature_head.weight': (fpn, fpn, 1, 1),
            'decode_head.feature_head.bias': (fpn,),
            'decode_head.projection_head_cluster.0.weight': (fpn, fpn, 1, 1),
            'decode_head.projection_head_cluster.0.bias': (fpn,),
            'decode_head.projection_head_cluster.2.weight': (embedding_dim, fpn, 1, 1),
            'decode_head.projection_head_cluster.2.bias': (embedding_dim,),
            'decode_head.projection_head_class.0.weight': (K, fpn, 1, 1),
            'decode_head.projection_head_class.0.bias': (K,),
        })
    for i, idx in SCALE_HEAD_CONVS:
        p = f'decode_head.scale_heads.{i}.{idx}.'
        shapes[p + 'conv.weight'] = (fpn, channels[i] if idx == 0 else fpn, 3, 3)
        for name in ('weight', 'bias', 'running_mean', 'running_var'):
            shapes[p + 'bn.' + name] = (fpn,)
        shapes[p + 'bn.num_batches_tracked'] = ()
    return shapes


def synthetic_semask_state(shapes: dict[str, tuple[int, ...]], window: int,
                           seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors for `shapes`; index buffers hold the true index, BN variances > 0."""
    gen = torch.Generator().manual_seed(seed)
    index = relative_index_by_loops(window)
    state = {}
    for key, shape in shapes.items():
        if key.endswith('relative_position_index'):
            state[key] = index.clone()
        elif key.endswith('num_batches_tracked'):
            state[key] = torch.tensor(1234)
        elif key.endswith('running_var'):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        else:
            state[key] = torch.randn(shape, generator=gen)
    return state
