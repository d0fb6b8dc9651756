"""Reference cost propagation from a prototype bank (numpy): the math of the deployable graph.

For a unit-norm embedding e at a pixel and prototypes p_k with measured costs c_k:
    sim_k = <e, p_k>,   w_k = valid_k * exp((sim_k - 1) / tau)
    cost = sum_k w_k c_k / sum_k w_k        (0 where no prototype is valid)
    confidence = max_k valid_k * sim_k      (-1 where no prototype is valid)
The ratio does not change if every w_k is multiplied by the same factor, so this reference
subtracts the pixel's best similarity instead of 1: exp() <= 1 (no overflow) and the best
prototype has weight 1 (no 0/0 underflow at small tau, where exp((sim - 1)/tau) can reach 0).
The exported graph computes the same values; a test compares the two.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Propagated(NamedTuple):
    cost: np.ndarray  # h, w float32; 0 where no prototype is valid
    confidence: np.ndarray  # h, w float32 in [-1, 1]; -1 where no prototype is valid


def propagate_cost(embedding: np.ndarray, prototypes: np.ndarray, costs: np.ndarray,
                   valid: np.ndarray | None = None, temperature: float = 0.1) -> Propagated:
    """embedding (D, h, w) unit-norm; prototypes (K, D) unit-norm; costs (K,); valid (K,) 0/1.

    Returns the propagated cost and confidence at the embedding's resolution.
    """
    if temperature <= 0:
        raise ValueError(f'temperature must be > 0, got {temperature}')
    D, h, w = embedding.shape
    K = prototypes.shape[0]
    if prototypes.ndim != 2 or prototypes.shape[1] != D:
        raise ValueError(f'prototypes must be (K, {D}) to match the embedding, '
                         f'got {prototypes.shape}')
    if costs.shape != (K,):
        raise ValueError(f'costs must be ({K},), got {costs.shape}')
    valid = np.ones(K, np.float32) if valid is None else np.asarray(valid, np.float32)
    if valid.shape != (K,):
        raise ValueError(f'valid must be ({K},), got {valid.shape}')
    if K == 0 or not valid.any():
        return Propagated(np.zeros((h, w), np.float32), np.full((h, w), -1.0, np.float32))
    flat = embedding.reshape(D, h * w).astype(np.float32)  # D, N
    sim = prototypes.astype(np.float32) @ flat  # K, N
    # At least one prototype is valid, so the max over valid entries is finite.
    confidence = np.where(valid[:, None] > 0, sim, -np.inf).max(axis=0)  # N
    # Invalid entries are masked before exp (exp(-inf) = 0), so no 0 * inf.
    exponent = np.where(valid[:, None] > 0, (sim - confidence) / np.float32(temperature),
                        -np.inf)  # K, N
    weights = np.exp(exponent)  # K, N
    total = weights.sum(axis=0)  # N, >= 1
    cost = (weights * costs.astype(np.float32)[:, None]).sum(axis=0) / total
    return Propagated(cost.reshape(h, w).astype(np.float32),
                      confidence.reshape(h, w).astype(np.float32))
