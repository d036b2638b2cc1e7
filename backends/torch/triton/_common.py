"""Shared helpers of the Triton kernels: tuning knobs, device checks, small jit functions."""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

#: chunk: time steps per tile of the selective scan; block_d: channels per program (a power of
#: two dividing the channels of a group); block_m: state elements per program of diag/liquid scans.
CONFIG = {"chunk": 64, "block_d": 4, "block_m": 128}


def configure(chunk: int | None = None, block_d: int | None = None, block_m: int | None = None):
    """Set the tile sizes (powers of two); returns the previous settings as a dict."""
    old = dict(CONFIG)
    for name, value in (("chunk", chunk), ("block_d", block_d), ("block_m", block_m)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value & (
            value - 1
        ):
            raise ValueError(f"{name}: expected a power of two >= 1, got {value!r}")
        CONFIG[name] = value
    return old


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def check_device(**tensors):
    """Triton needs CUDA tensors (or any device under TRITON_INTERPRET=1, which runs on CPU)."""
    if interpreting():
        return
    for name, x in tensors.items():
        if x is not None and not x.is_cuda:
            raise ValueError(
                f"{name}: expected a CUDA tensor for the Triton kernels (or TRITON_INTERPRET=1), "
                f"got a tensor on {x.device}"
            )


def describe(x) -> str:
    shape = getattr(x, "shape", None)
    if shape is None:
        return f"an object of type {type(x).__name__}"
    return f"shape {tuple(shape)} and dtype {x.dtype}"


def pow2_divisor(n: int, cap: int) -> int:
    """The largest power of two <= cap dividing n."""
    p = 1
    while p * 2 <= cap and n % (p * 2) == 0:
        p *= 2
    return p


def next_pow2(n: int) -> int:
    return triton.next_power_of_2(max(int(n), 1))


@triton.jit
def softplus(x):
    """log(1 + exp(x)), x itself where x > 20 (torch's threshold); accurate log1p for small e."""
    e = tl.exp(-tl.abs(x))
    lp = tl.where(e < 1e-4, e * (1.0 - 0.5 * e), tl.log(1.0 + e))
    return tl.where(x > 20.0, x, tl.maximum(x, 0.0) + lp)


@triton.jit
def softplus_grad(x):
    """d softplus / dx with the threshold: 1 where x > 20, else sigmoid(x)."""
    return tl.where(x > 20.0, 1.0, tl.sigmoid(x))


@triton.jit
def first_order(a1, b1, a2, b2):
    """(a1, b1) then (a2, b2) for h -> a h + b: (a2 a1, a2 b1 + b2)."""
    return a2 * a1, a2 * b1 + b2


def dummy(like: torch.Tensor) -> torch.Tensor:
    """A 1-element placeholder passed for absent optional pointers (never read)."""
    return torch.zeros(1, dtype=torch.float32, device=like.device)


def register_scan_autograd(fwd, bwd, n_tensors: int, ck_dim: int, name: str) -> None:
    """The autograd formula of a chunked scan custom op, shared by the real, complex and liquid
    selective scans.

    fwd(*tensors, *flags, save) -> (out, last_state, checkpoints): n_tensors tensor inputs, the
    last of them initial_state; checkpoints have ck_dim dims when saved (save=True).
    bwd(*tensors[:-1], checkpoints, dout, dlast, *flags) -> one gradient per tensor input."""

    def setup(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:n_tensors - 1], output[2])
        ctx.flags = inputs[n_tensors:-1]
        ctx.has_h0 = inputs[n_tensors - 1] is not None
        ctx.dtypes = [None if x is None else x.dtype for x in inputs[:n_tensors]]

    def backward(ctx, dout, dlast, dck):
        *saved, ck = ctx.saved_tensors
        if ck.dim() != ck_dim:
            raise RuntimeError(f"{name}: the forward ran without saving checkpoints "
                               "(no input required grad at call time)")
        if dout is None:
            dout = torch.zeros_like(saved[0])
        if dlast is not None:
            dlast = dlast.contiguous()  # e.g. the stride-0 expand of a sum's gradient
        grads = bwd(*saved, ck, dout, dlast, *ctx.flags)
        grads[n_tensors - 1] = grads[n_tensors - 1] if ctx.has_h0 else None
        out = [None if (g is None or dt is None) else g.to(dt) for g, dt in zip(grads, ctx.dtypes)]
        return (*out, *([None] * (len(ctx.flags) + 1)))

    fwd.register_autograd(backward, setup_context=setup)
