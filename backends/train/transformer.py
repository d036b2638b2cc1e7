"""The Transformer baseline's shared parts (framework-free): its shape and parameter count, and
the sinusoidal positions. The modules are torch_loop.Transformer and jax_loop.Transformer (plain
torch / Flax NNX; a comparison baseline, not library API).

    x_0 = encoder(u) + P                      (encoder: Linear(d_input, d) or Embedding(V, d))
    x   = x + Wo attn(LN1(x)),  attn: causal softmax attention, n_heads = n_heads_for(d)
    x   = x + W2 gelu(W1 LN2(x))              (hidden 4 d, exact GELU)
    head as SequenceModel's: LN_f, then mean over L + Linear (pool) | Linear (sequence) |
    Linear without bias to the vocabulary (lm).
P[t, 2i] = sin(t / 10000^(2i/d)), P[t, 2i+1] = cos(t / 10000^(2i/d)): defined at any length (the
extrapolation splits), no learned positions.
"""

from __future__ import annotations

import numpy as np

__all__ = ["n_heads_for", "positions", "n_params"]


def n_heads_for(d: int) -> int:
    """4 heads when d % 4 == 0, else 1."""
    return 4 if d % 4 == 0 else 1


def positions(length: int, d: int) -> np.ndarray:
    """P (length, d) float64 (module docstring)."""
    t = np.arange(length)[:, None]
    freq = 10000.0 ** (-(np.arange(0, d, 2)) / d)
    p = np.zeros((length, d))
    p[:, 0::2] = np.sin(t * freq)
    p[:, 1::2] = np.cos(t * freq)[:, : d // 2]
    return p


def n_params(task, d: int, n_layers: int) -> int:
    """The trainable parameter count of the baseline for `task`."""
    enc = task.vocab_size * d if task.tokens else task.d_input * d + d
    layer = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (8 * d * d + 5 * d)
    head = task.vocab_size * d if task.kind == "lm" else d * task.n_classes + task.n_classes
    return enc + n_layers * layer + 2 * d + head
