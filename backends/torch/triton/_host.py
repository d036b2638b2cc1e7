"""Host side shared by the Triton ops: tuning knobs, device checks, compute dtypes, layouts of
B / C, block sizes, fixed-order reductions, and `chunked_scan_op`, which registers a chunked
scan's forward and backward custom ops (namespace liquidssm::), their fakes and its autograd
formula from one description."""

from __future__ import annotations

import math
import os
from types import SimpleNamespace

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


def check_device(**tensors):
    """Triton needs CUDA tensors (or any device under TRITON_INTERPRET=1, which runs on CPU)."""
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        return
    for name, x in tensors.items():
        if x is not None and not x.is_cuda:
            raise ValueError(
                f"{name}: expected a CUDA tensor for the Triton kernels (or TRITON_INTERPRET=1), "
                f"got a tensor on {x.device}"
            )


def compute(dtype):
    """(torch, triton) real compute dtypes: float64 for float64 / complex128, else float32."""
    if dtype in (torch.float64, torch.complex128):
        return torch.float64, tl.float64
    return torch.float32, tl.float32


def pow2_divisor(n: int, cap: int) -> int:
    """The largest power of two <= cap dividing n."""
    p = 1
    while p * 2 <= cap and n % (p * 2) == 0:
        p *= 2
    return p


def next_pow2(n: int) -> int:
    return triton.next_power_of_2(max(int(n), 1))


def dummy(like: torch.Tensor) -> torch.Tensor:
    """A 1-element placeholder passed for absent optional pointers (never read)."""
    return torch.zeros(1, dtype=torch.float32, device=like.device)


def or_dummy(like, *xs):
    """xs, with a placeholder (dummy) for each absent (None) one."""
    ph = dummy(like)
    return [ph if x is None else x for x in xs]


def needs_grad(*xs) -> bool:
    return torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in xs)


def grid(b, d, bd):
    """One program per (batch element, block of bd of the d channels / state elements)."""
    return (b, triton.cdiv(d, bd))


# ------------------------------------------------------------------------------------------------
# B / C layouts of the chunked selective-scan kernels


def layout(X, form, d):
    """A checked B / C / BL of `form` (liquidssm.spec._checks) -> (contiguous tensor, channels per
    group, form name)."""
    gs = 1 if form[0] == "const" else d if form[0] == "var" else d // form[1]
    return X.contiguous(), gs, form[0]


def block_d(d, *forms):
    """Channels per program: a power of two dividing d and the group size of every
    input-dependent B / C / BL; forms are (group size, form name) pairs from layout."""
    m = d
    for gs, form in forms:
        if form != "const":
            m = math.gcd(m, gs)
    return pow2_divisor(m, CONFIG["block_d"])


def bc_strides(X, n, l, const, w=1):
    """Element strides (batch, group, n, time) of B / C as the kernels read it: constant (d, n)
    (group = channel), input-dependent (b, n, w l) or grouped (b, g, n, w l); w = 2 for (re, im)
    pairs (complex A: constant (d, n, 2), time interleaved with the pairs)."""
    if const:
        return (0, w * n, w, 0)
    if X.dim() == 3:
        return (w * n * l, 0, w * l, w)
    return (X.shape[1] * w * n * l, w * n * l, w * l, w)


def bc_partials(new, state, nblk, n, wl, const):
    """The kernels' dB / dC buffer: per channel (state-shaped) when constant, else per channel
    block (b, nblk, n, wl)."""
    return new(*state) if const else new(state[0], nblk, n, wl)


def reduce_partials(part, X, const):
    """Fixed-order sum of a kernel's dB / dC partials (bc_partials) into X's layout."""
    if const:
        return part.sum(0)
    b, nblk = part.shape[:2]
    g = 1 if X.dim() == 3 else X.shape[1]
    red = part.reshape(b, g, nblk // g, *part.shape[2:]).sum(2)
    return red[:, 0] if X.dim() == 3 else red


def scan_meta(a):
    """The constexpr arguments every chunked selective-scan kernel takes (a: the op's inputs)."""
    return dict(BD=a.block_d, NP=next_pow2(a.A.shape[1]), T=a.chunk, HAS_D=a.D is not None,
                HAS_Z=a.z is not None, HAS_BIAS=a.delta_bias is not None,
                SOFTPLUS=a.delta_softplus, CD=compute(a.u.dtype)[1])


def scan_grads(a, per_channel, state):
    """Gradient buffers of a chunked selective-scan backward, in the compute dtype: du, ddelta,
    dz (b, d, l) (dz None without z); dA partials (per_channel: (b, d, n[, 2])); dinitial_state
    (state); dD and ddelta_bias partials (b, d); and the allocator new(*shape)."""
    b, d, l = a.u.shape
    cdt = compute(a.u.dtype)[0]
    new = lambda *s: torch.empty(s, dtype=cdt, device=a.u.device)  # noqa: E731
    dz = new(b, d, l) if a.z is not None else None
    return new(b, d, l), new(b, d, l), dz, new(*per_channel), new(*state), new(b, d), new(b, d), new


def optional_grads(new, a, dD, dz, dbias):
    """dD, dz, ddelta_bias of the op: dD and ddelta_bias summed over the batch; (0,) for an
    absent argument."""
    return (dD.sum(0) if a.D is not None else new(0), new(0) if dz is None else dz,
            dbias.sum(0) if a.delta_bias is not None else new(0))


def run_scan(fwd, tensors, flags, forms, return_last_state):
    """Checks the devices and calls the forward op of a chunked scan on the contiguous tensors
    (a dict, in the op's order), saving checkpoints when a gradient may be needed."""
    check_device(**tensors)
    args = [x if x is None else x.contiguous() for x in tensors.values()]
    out, last, _ = fwd(*args, *flags, CONFIG["chunk"], block_d(tensors["u"].shape[1], *forms),
                       needs_grad(*args))
    return (out, last) if return_last_state else out


# ------------------------------------------------------------------------------------------------
# registration


def chunked_scan_op(name, tensors, flags, state, ck_dim, launch_fwd, launch_bwd):
    """Registers liquidssm::{name}_fwd and liquidssm::{name}_bwd with their fakes and the
    autograd formula of the forward; returns the forward op.

    tensors: the names of the tensor inputs, u first and the initial state last, an optional
    one ending in '?'; flags: the other inputs as "type name" (schema types); int chunk and int
    block_d follow them in both ops. Forward: (*tensors, *flags, chunk, block_d, bool save) ->
    (out like u, last state of shape state(a) in the compute dtype, checkpoints: that shape
    with the chunk count inserted at dim ck_dim when save, else (1,)); launch_fwd(a, out, last,
    ck) fills them. Backward: (*tensors[:-1], ck, dout, dlast?, *flags, chunk, block_d) -> the
    gradient of every tensor input, in the compute dtype ((0,) for an absent one), from
    launch_bwd(a). `a`: the op's inputs as a namespace by name.
    """
    names = [t.rstrip("?") for t in tensors]
    decl = [f"Tensor{'?' if t.endswith('?') else ''} {nm}" for t, nm in zip(tensors, names)]
    tail = [*flags, "int chunk", "int block_d"]
    fwd_decl = [*decl, *tail, "bool save"]
    bwd_decl = [*decl[:-1], "Tensor ck", "Tensor dout", "Tensor? dlast", *tail]

    def inputs(decls, args):
        return SimpleNamespace(**{dc.split()[-1]: x for dc, x in zip(decls, args)})

    def outputs(args):
        a = inputs(fwd_decl, args)
        cdt = compute(a.u.dtype)[0]
        st = tuple(state(a))
        nchunk = -(-a.u.shape[-1] // a.chunk)
        ck = (*st[:ck_dim], nchunk, *st[ck_dim:]) if a.save else (1,)
        return a, (torch.empty_like(a.u), a.u.new_empty(st, dtype=cdt),
                   a.u.new_empty(ck, dtype=cdt))

    def fwd_impl(*args):
        a, outs = outputs(args)
        launch_fwd(a, *outs)
        return outs

    def bwd_fake(*args):
        a = inputs(bwd_decl, args)
        cdt = compute(a.u.dtype)[0]
        xs = [getattr(a, nm) for nm in names[:-1]]
        return [*[a.u.new_empty((0,) if x is None else x.shape, dtype=cdt) for x in xs],
                a.u.new_empty(tuple(state(a)), dtype=cdt)]

    def schema(decls, result):
        return f"({', '.join(decls)}) -> {result}"

    fwd = torch.library.custom_op(f"liquidssm::{name}_fwd", fwd_impl, mutates_args=(),
                                  schema=schema(fwd_decl, "(Tensor, Tensor, Tensor)"))
    fwd.register_fake(lambda *args: outputs(args)[1])
    bwd = torch.library.custom_op(f"liquidssm::{name}_bwd",
                                  lambda *args: launch_bwd(inputs(bwd_decl, args)),
                                  mutates_args=(), schema=schema(bwd_decl, "Tensor[]"))
    bwd.register_fake(bwd_fake)
    n = len(tensors)

    def setup(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:n - 1], output[2])
        ctx.flags = inputs[n:-1]
        ctx.has_h0 = inputs[n - 1] is not None
        ctx.dtypes = [None if x is None else x.dtype for x in inputs[:n]]

    def backward(ctx, dout, dlast, dck):
        *saved, ck = ctx.saved_tensors
        if ck.dim() == 1:
            raise RuntimeError(f"{name}: the forward ran without saving checkpoints "
                               "(no input required grad at call time)")
        if dout is None:
            dout = torch.zeros_like(saved[0])
        if dlast is not None:
            dlast = dlast.contiguous()  # e.g. the stride-0 expand of a sum's gradient
        grads = bwd(*saved, ck, dout, dlast, *ctx.flags)
        grads[n - 1] = grads[n - 1] if ctx.has_h0 else None
        out = [None if (g is None or dt is None) else g.to(dt) for g, dt in zip(grads, ctx.dtypes)]
        return (*out, *([None] * (len(ctx.flags) + 1)))

    fwd.register_autograd(backward, setup_context=setup)
    return fwd
