"""The deployable graph: uint8 image and prototype bank in; embedding, cost, confidence out.

One static-shape graph per deployment resolution does all the GPU work (docs/MODEL.md §2.6),
so TensorRT runs everything and the host only copies. The PyTorch and ONNX
Runtime backends run this very module, so all backends are comparable by a parity check.

Propagation (the math of contrast_semask_ros.propagation, which a test compares with this):
    sim_k = <e, p_k>,  w_k = valid_k * exp((sim_k - 1) / tau),
    cost = sum_k w_k c_k / sum_k w_k  (0 where no prototype is valid),
    confidence = max_k valid_k * sim_k  (-1 where none is valid).
The weights are shifted by the pixel's best valid similarity instead of 1: the same ratio,
without 0/0 when every exp((sim - 1) / tau) underflows at small tau.

TensorRT-safe graph (JetPack 6 ships TensorRT 10.0-10.3, which takes uint8 and bool tensors in
few layers before 10.7): the uint8 image is cast to float by the graph's very first op; bool
tensors only come out of comparisons and go straight into Where (never reshaped, reduced or
cast to int); every epsilon is a normal float16 number (`layers.FP16_SAFE_EPS`), since TensorRT
may run any float32 layer in float16 (FP16 builder flag). test/test_graph_trt_safe.py checks
the exported graph.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .layers import FP16_SAFE_EPS
from .precision import parameter_dtype
from .segmentor import ContrastSemask

# The graph's input names, in forward's argument order; the output names are the fields of
# DeployOutputs(WithLogits). The runtime defines them once in contrast_semask_ros.engine_spec
# (INPUT_NAMES, OUTPUT_NAMES, LOGITS_NAME), which this torch-only package may not import: the
# same literals here, and test/test_deploy.py asserts that both sides agree.
INPUT_NAMES = ('image', 'prototypes', 'prototype_costs', 'prototype_valid', 'temperature')


class DeployOutputs(NamedTuple):
    embedding: torch.Tensor  # 1, D, ceil(H/4), ceil(W/4) unit L2 norm over D
    cost: torch.Tensor  # 1, 1, H, W propagated cost; 0 where no prototype is valid
    confidence: torch.Tensor  # 1, 1, H, W best similarity to a valid prototype; -1 if none


class DeployOutputsWithLogits(NamedTuple):
    embedding: torch.Tensor
    cost: torch.Tensor
    confidence: torch.Tensor
    logits: torch.Tensor  # 1, K, ceil(H/4), ceil(W/4) segmentation logits


def propagate(embedding: torch.Tensor, prototypes: torch.Tensor, costs: torch.Tensor,
              valid: torch.Tensor, temperature: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """embedding (B, D, h, w) unit-norm; prototypes (K, D); costs, valid (K,); temperature (1,).

    Returns (cost, confidence), each (B, 1, h, w). No data-dependent control flow (exportable).
    """
    B, D, h, w = embedding.shape
    K = prototypes.shape[0]
    # reason: a matmul, not einsum (Einsum is not deployable through TensorRT everywhere)
    sim = (prototypes @ embedding.reshape(B, D, h * w)).reshape(B, K, h, w)  # B, K, h, w
    # reason: reshape and reduce the float mask, compare last (TensorRT < 10.7 reshapes and
    # reduces no bool tensor); the comparisons' bool outputs feed Where only
    valid = valid.view(1, K, 1, 1)  # 1, K, 1, 1
    is_valid = valid > 0.5  # 1, K, 1, 1 bool
    any_valid = valid.amax(1, keepdim=True) > 0.5  # 1, 1, 1, 1 bool
    minus_inf = torch.full_like(sim, float('-inf'))
    best = torch.where(is_valid, sim, minus_inf).amax(1, keepdim=True)  # B, 1, h, w
    confidence = torch.where(any_valid, best, torch.full_like(best, -1.0))  # B, 1, h, w
    shift = torch.where(any_valid, best, torch.zeros_like(best))
    # invalid entries are masked before exp: exp(-inf) = 0, never 0 * inf
    exponent = torch.where(is_valid, (sim - shift) / temperature.view(1, 1, 1, 1), minus_inf)
    weights = torch.exp(exponent)  # B, K, h, w
    total = weights.sum(1, keepdim=True)  # B, 1, h, w; >= 1 where a prototype is valid, else 0
    # any guard in (0, 1] gives the same cost; it must survive float16 (1e-30 rounds to 0: 0/0)
    cost = (weights * costs.view(1, K, 1, 1)).sum(1, keepdim=True) / total.clamp_min(
        FP16_SAFE_EPS)
    return cost, confidence


class DeployWrapper(nn.Module):
    """Wrap a trained ContrastSemask for deployment; normalisation from its config inside.

    forward(image uint8 (1, H, W, 3) RGB, prototypes (K, D), prototype_costs (K,),
    prototype_valid (K,) 0/1, temperature (1,)) -> DeployOutputs (or ...WithLogits).
    """

    def __init__(self, model: ContrastSemask, with_logits: bool = False) -> None:
        super().__init__()
        self.model = model.eval()
        self.with_logits = with_logits
        self.register_buffer('mean', torch.tensor(model.config.mean).view(1, 3, 1, 1))
        self.register_buffer('std', torch.tensor(model.config.std).view(1, 3, 1, 1))
        self.eval()  # deployment is inference: no dropout, BatchNorm running statistics

    @property
    def output_names(self) -> tuple[str, ...]:
        fields = DeployOutputsWithLogits if self.with_logits else DeployOutputs
        return fields._fields

    def forward(self, image: torch.Tensor, prototypes: torch.Tensor,
                prototype_costs: torch.Tensor, prototype_valid: torch.Tensor,
                temperature: torch.Tensor) -> DeployOutputs | DeployOutputsWithLogits:
        H, W = image.shape[1], image.shape[2]
        # reason: cast first, the graph's first op on `image` (TensorRT < 10.7 transposes no
        # uint8 tensor)
        x = (image.float().permute(0, 3, 1, 2) - self.mean) / self.std  # 1, 3, H, W
        # the network may be half precision (precision.py); normalisation, propagation and
        # every output stay float32 (the casts are no-ops for a float32 network)
        outputs = self.model(x.to(parameter_dtype(self.model)))
        embedding = outputs.embeddings.float()  # 1, D, h, w
        cost, confidence = propagate(embedding, prototypes, prototype_costs,
                                     prototype_valid, temperature)  # 1, 1, h, w each
        # reason: propagate at stride 4, then upsample two maps instead of D embedding channels
        cost = F.interpolate(cost, size=(H, W), mode='bilinear', align_corners=False)
        confidence = F.interpolate(confidence, size=(H, W), mode='bilinear', align_corners=False)
        if self.with_logits:
            return DeployOutputsWithLogits(embedding, cost, confidence, outputs.logits.float())
        return DeployOutputs(embedding, cost, confidence)
