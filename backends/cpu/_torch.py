"""The numba kernels (_kernels.py) as torch CPU primitives: torch.library custom ops with a fake
(meta) implementation and an autograd formula, so autograd and torch.compile compose; eager
calls run the same forward and backward through a torch.autograd.Function (no dispatcher).

Same signatures and semantics as liquidssm.torch's primitives (the spec's). The arguments are
checked by the spec's checks (liquidssm.spec._checks, as the eager implementation does), so
errors are the spec's. Where no kernel exists the call runs the eager implementation
(liquidssm.torch.selective / scans): non-CPU tensors, zero-size inputs. The decode step
(selective_state_update, and the decode fast paths' unchecked `_state_update` /
`_liquid_state_update` and Mamba's `_step`, which liquidssm.torch dispatches here when this
implementation is chosen) runs the state_step and mamba_step kernels (forward only: with a
gradient to record, a state below STEP_MIN_STATE entries or a batch above MAMBA_STEP_MAX_BATCH,
the spec's torch ops run). The dtype conversions and the B / C layout change (time-major,
(b, G, l, n); complex for complex A) are plain torch ops outside the custom ops, so autograd
maps the gradients back.
"""

from __future__ import annotations

import math
import weakref

import numpy as np
import torch
from liquidssm.spec import _checks
from liquidssm.spec import mamba as _spec_mamba
from liquidssm.spec import selective as _spec_selective
from liquidssm.spec._common import LCONTRACT_CODES
from liquidssm.torch import scans as _eager_scans
from liquidssm.torch import selective as _eager

from . import _kernels as K

__all__ = ["selective_scan", "liquid_selective_scan", "selective_state_update", "mamba_step",
           "diag_scan", "liquid_scan", "CHUNK", "block_channels"]

#: steps per chunk: the backward recomputes a chunk's states from its checkpoint
CHUNK = 64
#: most channels per backward thread (a block shares one partial sum of dB / dC)
MAX_BLOCK = 16


def _a(x):
    """A tensor in the compute dtype as a C-contiguous NumPy array (shares memory). Through
    DLPack, not Tensor.numpy(): that marks the storage as never resizable again, which breaks
    FSDP (it frees an unsharded parameter's storage by resizing it)."""
    return np.ascontiguousarray(np.from_dlpack(x.detach().resolve_conj().resolve_neg()))


def _out(t):
    """A fresh contiguous tensor the kernels write into, as a NumPy view (DLPack, as _a)."""
    return np.from_dlpack(t)


def _np_dtype(x):
    """x's dtype as NumPy's (a compute dtype: float32 / float64 / complex64 / complex128)."""
    return np.dtype(str(x.dtype).removeprefix("torch."))


def _dummy(ndim, dtype):
    return np.zeros((1,) * ndim, dtype=dtype)


def _opt(x, ndim, dtype):
    return _dummy(ndim, dtype) if x is None else _a(x)


def block_channels(d, *group_sizes):
    """Channels per backward thread: the largest divisor of d (and of the group size of each
    input-dependent B / C / BL, 0 for a constant one) that is at most MAX_BLOCK."""
    m = d
    for gs in group_sizes:
        if gs:
            m = math.gcd(m, gs)
    return max(k for k in range(1, min(m, MAX_BLOCK) + 1) if m % k == 0)


def _group_size(X4, var, d):
    """0 for a constant B / C, else the channels per group."""
    return d // X4.shape[1] if var else 0


def _fwd_kernel(u, delta, A, B4, C4, L4, var_b, var_c, var_l, D, z, bias, h0, softplus, phi, p,
                save):
    """(out (b, d, l), last levels (b, p, d, n), checkpoints (b, d, nchunk, p, n) if save); the
    states in A's dtype (complex A: complex)."""
    b, d, l = u.shape
    n = A.shape[1]
    npdt, sdt = _np_dtype(u), _np_dtype(A)
    nchunk = -(-l // CHUNK)
    out = torch.empty((b, d, l), dtype=u.dtype)
    last = torch.empty((b, p, d, n), dtype=A.dtype)
    ck = torch.empty((b, d, nchunk, p, n) if save else (1, 1, 1, 1, 1), dtype=A.dtype)
    K.selective_fwd(_a(u), _a(delta), _a(A), _a(B4), _a(C4), _a(L4), var_b, var_c, var_l,
                    _opt(D, 1, npdt), _opt(z, 3, npdt), _opt(bias, 1, npdt), _opt(h0, 4, sdt),
                    D is not None, z is not None, bias is not None, h0 is not None, softplus,
                    phi, p, A.is_complex(), CHUNK, save, _out(out), _out(last), _out(ck))
    return out, last, ck


@torch.library.custom_op("liquidssm::numba_selective_scan_fwd", mutates_args=())
def _fwd(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B4: torch.Tensor,
         C4: torch.Tensor, L4: torch.Tensor, var_b: bool, var_c: bool, var_l: bool,
         D: torch.Tensor | None, z: torch.Tensor | None, bias: torch.Tensor | None,
         h0: torch.Tensor | None, softplus: bool, phi: int, p: int,
         save: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """_fwd_kernel as a custom op (what torch.compile graphs keep)."""
    return _fwd_kernel(u, delta, A, B4, C4, L4, var_b, var_c, var_l, D, z, bias, h0, softplus,
                       phi, p, save)


@_fwd.register_fake
def _(u, delta, A, B4, C4, L4, var_b, var_c, var_l, D, z, bias, h0, softplus, phi, p, save):
    b, d, l = u.shape
    n = A.shape[1]
    nchunk = -(-l // CHUNK)
    return (u.new_empty((b, d, l)), A.new_empty((b, p, d, n)),
            A.new_empty((b, d, nchunk, p, n) if save else (1, 1, 1, 1, 1)))


def _bwd_kernel(u, delta, A, B4, C4, L4, var_b, var_c, var_l, D, z, bias, ck, dout, dlast,
                softplus, phi, p):
    """[du, ddelta, dA, dB4, dC4, dL4, dD, dz, dbias, dh0]; dD / dz / dbias empty when absent
    (dL4 zeros at p = 1)."""
    b, d, l = u.shape
    n = A.shape[1]
    dt = u.dtype
    npdt, sdt = _np_dtype(u), _np_dtype(A)
    gsb, gsc = _group_size(B4, var_b, d), _group_size(C4, var_c, d)
    gsl = _group_size(L4, var_l, d)
    bd = block_channels(d, gsb, gsc, gsl)
    nblk = d // bd

    def partial(X4, gs):
        """(b, S, LX, n) zeros in X4's dtype: S = d for a constant X, else d / bd blocks."""
        return np.zeros((b, d if gs == 0 else nblk, X4.shape[2], n), dtype=_np_dtype(X4))

    # the returned gradients are allocated by torch and written through DLPack views (_out): a
    # tensor made by torch.from_numpy, or one .numpy() was called on, has a storage that cannot
    # be resized
    grad = {"du": (b, d, l), "ddelta": (b, d, l), "dz": (b, d, l) if z is not None else (1, 1, 1),
            "dh0": (b, p, d, n)}
    grad = {k: torch.empty(shape, dtype=A.dtype if k == "dh0" else dt)
            for k, shape in grad.items()}
    dA_p = np.zeros((b, d, n), sdt)
    dB_p, dC_p, dL_p = partial(B4, gsb), partial(C4, gsc), partial(L4, gsl)
    dD_p, dbias_p = np.zeros((b, d), npdt), np.zeros((b, d), npdt)
    K.selective_bwd(_a(u), _a(delta), _a(A), _a(B4), _a(C4), _a(L4), var_b, var_c, var_l,
                    _opt(D, 1, npdt), _opt(z, 3, npdt), _opt(bias, 1, npdt), _a(ck), _a(dout),
                    _opt(dlast, 4, sdt), D is not None, z is not None, bias is not None,
                    dlast is not None, softplus, phi, p, A.is_complex(), CHUNK, bd,
                    _out(grad["du"]), _out(grad["ddelta"]), _out(grad["dz"]), dA_p, dB_p, dC_p,
                    dL_p, dD_p, dbias_p, _out(grad["dh0"]))

    def lead(P, shape, dtype=dt):
        out = torch.empty(shape, dtype=dtype)
        K.sum_leading(P.reshape(P.shape[0], -1), _out(out).reshape(-1))
        return out

    def bc(P, X4, gs):
        if gs == 0:  # constant: sum over the batch, (1, d, 1, n)
            return lead(P, X4.shape, X4.dtype)
        G = X4.shape[1]
        out = torch.empty(X4.shape, dtype=X4.dtype)
        K.sum_blocks(P.reshape(b, P.shape[1], -1), nblk // G, _out(out).reshape(b, G, l * n))
        return out

    empty = lambda: torch.empty(0, dtype=dt)  # noqa: E731  (one per output: no aliasing)
    return [grad["du"], grad["ddelta"], lead(dA_p, (d, n), A.dtype), bc(dB_p, B4, gsb),
            bc(dC_p, C4, gsc), bc(dL_p, L4, gsl), lead(dD_p, (d,)) if D is not None else empty(),
            grad["dz"] if z is not None else empty(),
            lead(dbias_p, (d,)) if bias is not None else empty(), grad["dh0"]]


@torch.library.custom_op("liquidssm::numba_selective_scan_bwd", mutates_args=())
def _bwd(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B4: torch.Tensor,
         C4: torch.Tensor, L4: torch.Tensor, var_b: bool, var_c: bool, var_l: bool,
         D: torch.Tensor | None, z: torch.Tensor | None, bias: torch.Tensor | None,
         ck: torch.Tensor, dout: torch.Tensor, dlast: torch.Tensor | None, softplus: bool,
         phi: int, p: int) -> list[torch.Tensor]:
    """_bwd_kernel as a custom op."""
    return _bwd_kernel(u, delta, A, B4, C4, L4, var_b, var_c, var_l, D, z, bias, ck, dout, dlast,
                       softplus, phi, p)


@_bwd.register_fake
def _(u, delta, A, B4, C4, L4, var_b, var_c, var_l, D, z, bias, ck, dout, dlast, softplus, phi,
      p):
    b, d, l = u.shape
    new = u.new_empty
    return [new((b, d, l)), new((b, d, l)), A.new_empty(A.shape), B4.new_empty(B4.shape),
            C4.new_empty(C4.shape), L4.new_empty(L4.shape),
            new((d,)) if D is not None else new((0,)),
            new((b, d, l)) if z is not None else new((0,)),
            new((d,)) if bias is not None else new((0,)), A.new_empty((b, p, d, A.shape[1]))]


def _setup(ctx, inputs, output):
    u, delta, A, B4, C4, L4, var_b, var_c, var_l, D, z, bias, h0, softplus, phi, p, _ = inputs
    ctx.save_for_backward(u, delta, A, B4, C4, L4, D, z, bias, output[2])
    ctx.flags = (var_b, var_c, var_l, softplus, phi, p)
    ctx.present = [x is not None for x in (D, z, bias, h0)]


def _backward(ctx, dout, dlast, _dck):
    u, delta, A, B4, C4, L4, D, z, bias, ck = ctx.saved_tensors
    if ck.shape[0] != u.shape[0]:
        raise RuntimeError("selective_scan (numba): the forward ran without saving checkpoints "
                           "(no input required grad at call time)")
    dout = torch.zeros_like(u) if dout is None else dout.contiguous()
    dlast = None if dlast is None else dlast.contiguous()
    var_b, var_c, var_l, softplus, phi, p = ctx.flags
    bwd = _bwd if torch.compiler.is_compiling() else _bwd_kernel
    du, ddelta, dA, dB4, dC4, dL4, dD, dz, dbias, dh0 = bwd(
        u, delta, A, B4, C4, L4, var_b, var_c, var_l, D, z, bias, ck, dout, dlast, softplus, phi,
        p)
    hD, hz, hb, hh = ctx.present
    return (du, ddelta, dA, dB4, dC4, dL4, None, None, None, dD if hD else None,
            dz if hz else None, dbias if hb else None, dh0 if hh else None, None, None, None,
            None)


_fwd.register_autograd(_backward, setup_context=_setup)


def _eager_function(name, kernel, setup, backward):
    """A torch.autograd.Function running `kernel` (a custom op's own function) and the op's
    autograd formula directly: eager calls skip the custom-op dispatcher, whose first call
    imports torch._dynamo (~1000 modules, ~2 s) in torch 2.13; torch.compile traces the custom
    ops instead. The kernel's last output (checkpoints) is not differentiable."""

    def forward(ctx, *inputs):
        output = kernel(*inputs)
        setup(ctx, inputs, output)
        ctx.mark_non_differentiable(output[-1])
        return output

    return type(name, (torch.autograd.Function,), {
        "forward": staticmethod(forward),
        "backward": staticmethod(lambda ctx, *grads: backward(ctx, *grads))})


_Eager = _eager_function("_Eager", _fwd_kernel, _setup, _backward)


def _bc4(X, d, n, wdt, cdt=None):
    """B / C -> (bX, G, LX, n) time-major in the compute dtype (see _kernels); complex A (cdt
    its complex dtype): complex, an input-dependent X's last axis (2 l) read as interleaved
    (Re, Im) pairs, as the spec reads it."""
    if X.dim() == 2:
        return X.to(cdt or wdt).reshape(1, d, 1, n)
    X4 = (X if X.dim() == 4 else X[:, None]).to(wdt)
    if cdt is not None:
        X4 = torch.complex(X4[..., 0::2], X4[..., 1::2])
    return X4.transpose(-1, -2).contiguous()


def _runs_here(*xs) -> bool:
    return all(x is None or x.device.type == "cpu" for x in xs)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   initial_state=None, return_last_state=False):
    """spec.selective.selective_scan on the numba kernels, real or complex A.

    u, delta, z (b, d, l); A (d, n); B, C (d, n) | (b, n, l) | (b, g, n, l); D, delta_bias (d,);
    initial_state (b, d, n). Delta = softplus(delta + delta_bias) if delta_softplus;
    h_t = exp(Delta_t A) h_{t-1} + Delta_t B_t u_t; out = (C_t . h_t + D u) silu(z) in u's
    dtype; last_state h_{l-1} in the compute dtype (float64 for float64 u, else float32;
    complex A: y = 2 Re(C_t . h_t), B / C complex (d, n) or real with (Re, Im) interleaved
    along 2 l, states complex128 / complex64).
    """
    args = (u, delta, A, B, C, D, z, delta_bias)
    checked = _checks.selective_scan_args(*args, delta_softplus, initial_state,
                                          return_last_state, kind=_eager._TORCH)
    if checked.empty or not _runs_here(*args, initial_state):
        return _eager.selective_scan(*args, delta_softplus, initial_state, return_last_state)
    h0 = None if initial_state is None else initial_state[:, None]
    out, last = _run(args, delta_softplus, h0, 1, None, "none")
    return (out, last[:, 0]) if return_last_state else out


def liquid_selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                          delta_softplus=False, initial_state=None, return_last_state=False, *,
                          liquid_degree=1, BL=None, lcontract="none"):
    """spec.selective.liquid_selective_scan on the numba kernels: p = liquid_degree levels,
    hm_t = exp(Delta_t A) hm_{t-1} + Delta_t phi(BL_t u_t) h(m-1)_{t-1} (BL None: B), y_t =
    C_t . sum_m hm_t; initial / last state (b, p, d, n)."""
    args = (u, delta, A, B, C, D, z, delta_bias)
    checked = _checks.selective_scan_args(
        *args, delta_softplus, initial_state, return_last_state, liquid=True,
        liquid_degree=liquid_degree, BL=BL, lcontract=lcontract, kind=_eager._TORCH)
    if checked.empty or not _runs_here(*args, initial_state, BL):
        return _eager.liquid_selective_scan(
            *args, delta_softplus, initial_state, return_last_state,
            liquid_degree=liquid_degree, BL=BL, lcontract=lcontract)
    out, last = _run(args, delta_softplus, initial_state, liquid_degree, BL, lcontract)
    return (out, last) if return_last_state else out


def _run(args, softplus, h0, p, BL, lcontract):
    """The custom op on the compute-dtype, kernel-layout copies of the arguments (plain torch
    ops, so autograd maps the gradients back); BL None reads B (its gradients add up)."""
    u, delta, A, B, C, D, z, bias = args
    d, n = A.shape
    wdt = torch.float64 if u.dtype == torch.float64 else torch.float32
    cdt = None
    if A.is_complex():  # (liquid_degree 1: the checks take real A only for the liquid scan)
        cdt = torch.complex128 if wdt == torch.float64 else torch.complex64
    uw, dw, Dw, zw, bw = [None if x is None else x.to(wdt).contiguous()
                          for x in (u, delta, D, z, bias)]
    Aw, hw = [None if x is None else x.to(cdt or wdt).contiguous() for x in (A, h0)]
    B4, C4 = _bc4(B, d, n, wdt, cdt), _bc4(C, d, n, wdt, cdt)
    L4, var_l = (B4, B.dim() > 2) if BL is None else (_bc4(BL, d, n, wdt), BL.dim() > 2)
    if cdt is not None:  # p = 1 reads no BL: a real placeholder (the kernels type it real)
        L4, var_l = torch.zeros((1, d, 1, n), dtype=wdt), False
    save = torch.is_grad_enabled() and any(
        x is not None and x.requires_grad for x in (*args, h0, BL))
    fwd = _fwd if torch.compiler.is_compiling() else _Eager.apply
    out, last, _ = fwd(uw, dw, Aw, B4, C4, L4, B.dim() > 2, C.dim() > 2, var_l, Dw, zw, bw, hw,
                        softplus, LCONTRACT_CODES[lcontract], p, save)
    return out.to(u.dtype), last


def _level_fwd_kernel(a, b, c, h0, p, rev, save):
    """(y (B, L, M), last (B, p, M), checkpoints (B, nchunk, p, M) if save): _kernels.level_fwd
    on (., L, M) tensors of one dtype."""
    B, L, M = b.shape
    y, last = torch.empty_like(b), torch.empty((B, p, M), dtype=b.dtype)
    ck = torch.empty((B, -(-L // CHUNK), p, M) if save else (1, 1, 1, 1), dtype=b.dtype)
    K.level_fwd(_a(a), _a(b), _a(c), _a(h0), p, rev, CHUNK, K.level_width(B, M), save, _out(y),
                _out(last), _out(ck))
    return y, last, ck


def _level_bwd_kernel(a, b, c, ck, gy, glast, p, rev):
    """[da, db, dc, dh0]: _kernels.level_bwd, a broadcast a / c summed over the batch."""
    B, M = b.shape[0], b.shape[2]
    da, db = torch.empty_like(b), torch.empty_like(b)
    dc = torch.empty_like(b) if p > 1 else torch.zeros_like(c)  # p = 1: c a placeholder
    dh0 = torch.empty((B, p, M), dtype=b.dtype)
    K.level_bwd(_a(a), _a(b), _a(c), _a(ck), _a(gy), _a(glast), p, rev, CHUNK,
                K.level_width(B, M), _out(da), _out(db), _out(dc), _out(dh0))
    fold = lambda g, ref: g if ref.shape[0] == B else g.sum(0, keepdim=True)  # noqa: E731
    return [fold(da, a), db, fold(dc, c), dh0]


@torch.library.custom_op("liquidssm::numba_level_scan_fwd", mutates_args=())
def _level_fwd(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, h0: torch.Tensor, p: int,
               rev: bool, save: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """_level_fwd_kernel as a custom op."""
    return _level_fwd_kernel(a, b, c, h0, p, rev, save)


@_level_fwd.register_fake
def _(a, b, c, h0, p, rev, save):
    B, L, M = b.shape
    return (b.new_empty((B, L, M)), b.new_empty((B, p, M)),
            b.new_empty((B, -(-L // CHUNK), p, M) if save else (1, 1, 1, 1)))


@torch.library.custom_op("liquidssm::numba_level_scan_bwd", mutates_args=())
def _level_bwd(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, ck: torch.Tensor,
               gy: torch.Tensor, glast: torch.Tensor, p: int, rev: bool) -> list[torch.Tensor]:
    """_level_bwd_kernel as a custom op."""
    return _level_bwd_kernel(a, b, c, ck, gy, glast, p, rev)


@_level_bwd.register_fake
def _(a, b, c, ck, gy, glast, p, rev):
    return [a.new_empty(a.shape), b.new_empty(b.shape), c.new_empty(c.shape),
            b.new_empty((b.shape[0], p, b.shape[2]))]


def _level_setup(ctx, inputs, output):
    a, b, c, _, p, rev, _ = inputs
    ctx.save_for_backward(a, b, c, output[2])
    ctx.flags = (p, rev)


def _level_backward(ctx, gy, glast, _dck):
    a, b, c, ck = ctx.saved_tensors
    if ck.shape[0] != b.shape[0]:
        raise RuntimeError("liquid_scan (numba): the forward ran without saving checkpoints "
                           "(no input required grad at call time)")
    p, rev = ctx.flags
    gy = torch.zeros_like(b) if gy is None else gy.contiguous()
    glast = (torch.zeros((b.shape[0], p, b.shape[2]), dtype=b.dtype) if glast is None
             else glast.contiguous())
    bwd = _level_bwd if torch.compiler.is_compiling() else _level_bwd_kernel
    da, db, dc, dh0 = bwd(a, b, c, ck, gy, glast, p, rev)
    return da, db, dc, dh0, None, None, None


_level_fwd.register_autograd(_level_backward, setup_context=_level_setup)


_LevelEager = _eager_function("_LevelEager", _level_fwd_kernel, _level_setup, _level_backward)


def _levels(a, b, c, h0, p, reverse):
    """(y, last levels) of the checked liquid / diag scan on the kernels: states flattened to
    M, one compute dtype (bf16 / fp16: float32), (., L, M) contiguous copies (plain torch ops:
    autograd maps the gradients back); y in b's dtype for bf16 / fp16, last in the compute
    dtype."""
    B, L = b.shape[0], b.shape[1]
    S = tuple(b.shape[2:])
    wdt = _eager_scans._promote(a, b, c, h0)
    wdt = torch.float32 if wdt in (torch.bfloat16, torch.float16) else wdt
    flat = lambda x, lead: x.to(wdt).reshape(lead, L, -1).contiguous()  # noqa: E731
    aw, bw = flat(a, a.shape[0]), flat(b, B)
    # p = 1: c a (1, 1, M) placeholder, not read (its gradient a (1, 1, M) zero)
    cw = torch.zeros((1, 1, aw.shape[2]), dtype=wdt) if c is None else flat(c, c.shape[0])
    h = (torch.zeros((B, p, bw.shape[2]), dtype=wdt) if h0 is None
         else h0.to(wdt).reshape(B, p, -1).contiguous())
    save = torch.is_grad_enabled() and any(
        x is not None and x.requires_grad for x in (a, b, c, h0))
    fwd = _level_fwd if torch.compiler.is_compiling() else _LevelEager.apply
    y, last, _ = fwd(aw, bw, cw, h, p, reverse, save)
    low = b.dtype if b.dtype in (torch.bfloat16, torch.float16) else wdt
    return y.reshape(B, L, *S).to(low), last.reshape(B, p, *S)


def diag_scan(a, b, h0=None, *, reverse=False):
    """spec.scan.diag_scan on the numba level kernel (p = 1): h_t = a_t h_{t-1} + b_t (reverse:
    h_{t+1}); a (1 or batch, L, *S), b (batch, L, *S), h0 (batch, *S); real or complex."""
    args = _checks.diag_scan_args(a, b, h0, reverse, kind=_eager._TORCH)
    if args.empty or not _runs_here(a, b, h0):
        return _eager_scans.diag_scan(a, b, h0, reverse=reverse)
    return _levels(a, b, None, None if h0 is None else h0[:, None], 1, reverse)[0]


def liquid_scan(a, b, c, h0=None, *, degree, reverse=False):
    """spec.scan.liquid_scan on the numba level kernel: p = degree levels, h0_t = a_t h0_{t-1}
    + b_t, hm_t = a_t hm_{t-1} + c_t h(m-1)_{t-1}; returns (y = sum_m hm, last (batch, p, *S))."""
    args = _checks.liquid_scan_args(a, b, c, h0, degree, reverse, kind=_eager._TORCH)
    if args.empty or not _runs_here(a, b, c, h0):
        return _eager_scans.liquid_scan(a, b, c, h0, degree=degree, reverse=reverse)
    return _levels(a, b, c, h0, degree, reverse)


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None,
                           dt_softplus=False):
    """liquidssm.torch.selective.selective_state_update: its checks, then the spec's casts and
    `_state_update`, which the torch backend dispatches to `_state_update` below (the
    state_step kernel) when this implementation is chosen."""
    return _eager.selective_state_update(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)


_STEP_DTYPES = (torch.float32, torch.float64)
#: the step kernel's placeholders for an absent (d,) / (b, d) argument, per dtype (never written)
_STEP_NONE = {t: (_dummy(1, _np_dtype(torch.empty(0, dtype=t))),
                  _dummy(2, _np_dtype(torch.empty(0, dtype=t)))) for t in _STEP_DTYPES}


#: the fewest state entries (b p d n) the step kernel runs on; below, the spec's torch ops,
#: which were as fast or faster there (benchmarks/decode.py and an alternating A/B of the two
#: in one process, Mamba d_inner 512, d_state 16, one thread: batch 1 (8192 entries) 292.6 vs
#: 286.6 and 250 vs 213 us per step for the kernel; batch 4 449 vs 458; batch 16 703 vs 904)
STEP_MIN_STATE = 1 << 16


def _step_runs_here(state, *xs) -> bool:
    """The step kernel takes the call: state (and so, by the unchecked updates' contract, every
    argument: one dtype, one device) a float32 / float64 CPU tensor of at least STEP_MIN_STATE
    entries, and no gradient to record (grad disabled, or no argument requiring it: the kernel
    has no backward); not under torch.compile (the spec's torch ops are what it traces)."""
    x = state
    if (x.dtype not in _STEP_DTYPES or x.device.type != "cpu"
            or x.numel() < STEP_MIN_STATE or torch.compiler.is_compiling()):
        return False
    return not torch.is_grad_enabled() or not any(
        t is not None and t.requires_grad for t in (state, *xs))


def _v(x):
    """A CPU tensor as a C-contiguous NumPy array (a view where it is contiguous already), for
    the decode step: Tensor.numpy() (~1 us; DLPack takes ~4) unless x is a parameter or a view
    of one (base.requires_grad): DLPack as in _a (numpy() would leave a parameter's storage never
    resizable again, which FSDP needs)."""
    base = x if x._base is None else x._base
    if base.requires_grad:  # a parameter (or a view of one; a frozen one is not told apart)
        return np.ascontiguousarray(np.from_dlpack(x.detach()))
    return np.ascontiguousarray(x.numpy())


def _step_kernel(levels, x, delta, A, B3, C3, L3, D, z, bias, softplus, p, phi):
    """state_step on levels (a (b, p, d, n) NumPy array) and tensors; (out (b, d), new levels
    (b, p, d, n) as a NumPy array). The new arrays become tensors by torch.from_numpy (their
    storage is not resizable: states, never resized)."""
    b, _, d, n = levels.shape
    out = np.empty((b, d), levels.dtype)
    new = np.empty((b, p, d, n), levels.dtype)
    none = _STEP_NONE[x.dtype]
    K.state_step(levels, _v(x), _v(delta), _v(A), _v(B3), _v(C3), _v(L3),
                 none[0] if D is None else _v(D), none[1] if z is None else _v(z),
                 none[0] if bias is None else _v(bias), D is not None, z is not None,
                 bias is not None, softplus, phi, p, out, new)
    return torch.from_numpy(out), new


def _state_update(xp, state, x, dt, A, B3, C3, D=None, z=None, dt_bias=None, dt_softplus=False):
    """spec.selective._state_update (the decode step, unchecked: the decode fast paths and
    selective_state_update after its checks) on the state_step kernel; the spec's where the
    kernel does not take the arguments (_step_runs_here)."""
    if not _step_runs_here(state, x, dt, A, B3, C3, D, z, dt_bias):
        return _spec_selective._state_update.reference(xp, state, x, dt, A, B3, C3, D, z,
                                                       dt_bias, dt_softplus)
    b, d, n = state.shape
    out, new = _step_kernel(_v(state).reshape(b, 1, d, n), x, dt, A, B3, C3, B3, D, z, dt_bias,
                            dt_softplus, 1, 0)
    return out, torch.from_numpy(new.reshape(b, d, n))


def _liquid_state_update(xp, levels, x, delta, A, B3, C3, L3, D, z, p, phi):
    """spec.selective._liquid_state_update (the liquid decode step, unchecked) on the
    state_step kernel; the spec's where the kernel does not take the arguments."""
    if not _step_runs_here(levels, x, delta, A, B3, C3, L3, D, z):
        return _spec_selective._liquid_state_update.reference(xp, levels, x, delta, A, B3, C3,
                                                              L3, D, z, p, phi)
    out, new = _step_kernel(_v(levels), x, delta, A, B3, C3, L3, D, z, None, False, p,
                            LCONTRACT_CODES[phi])
    return out, torch.from_numpy(new)


#: the largest batch the whole-step Mamba kernel (mamba_step) runs: measured faster than the
#: spec's step on torch ops up to 32 (the largest tried; d_model 256, d_state 16, 1 and 2
#: threads), above it the spec's step (torch's matrix products; the state_step kernel from
#: STEP_MIN_STATE entries)
MAMBA_STEP_MAX_BATCH = 32
#: id(prepared["A"]) -> (a weak reference to it, prepared's tensors as NumPy arrays): a
#: prepared dict (the decode fast path's step_params, made once per parameter change) is
#: converted once. "A" (-exp(A_log)) is a tensor made with each prepared dict, so the entry is
#: dropped when it is (weakref.finalize); the arrays come by DLPack, which holds no reference
#: to the tensor objects.
_PREPARED: dict = {}
_MAMBA_KEYS = ("in_proj.weight", "in_proj.bias", "x_proj.weight", "dt_proj.weight",
               "dt_proj.bias", "out_proj.weight", "out_proj.bias", "conv_wt", "conv1d.bias", "A",
               "D")


def _prepared_arrays(p):
    A = p["A"]
    entry = _PREPARED.get(id(A))
    if entry is None or entry[0]() is not A:
        arrays = [None if p.get(k) is None
                  else np.ascontiguousarray(np.from_dlpack(p[k].detach())) for k in _MAMBA_KEYS]
        entry = _PREPARED[id(A)] = (weakref.ref(A), arrays)
        weakref.finalize(A, _PREPARED.pop, id(A), None)
    return entry[1]


def mamba_step(config, p, state, u_t, xp, update=_spec_selective._state_update):
    """spec.mamba._step (the Mamba mixer's decode step, unchecked) on the mamba_step kernel:
    float32 / float64 CPU tensors, batch <= MAMBA_STEP_MAX_BATCH, the plain conv (no gate) and
    the default state update, no gradient to record, not under torch.compile; the spec's step
    otherwise."""
    if (update is not _spec_selective._state_update or "gate_wt" in p
            or u_t.dtype not in _STEP_DTYPES or u_t.device.type != "cpu"
            or u_t.shape[0] > MAMBA_STEP_MAX_BATCH or torch.compiler.is_compiling()
            or (torch.is_grad_enabled() and (
                u_t.requires_grad or any(s.requires_grad for s in state.values())
                or any(p[k].requires_grad for k in _MAMBA_KEYS if p.get(k) is not None)))):
        return _spec_mamba._step.reference(config, p, state, u_t, xp, update)
    W_in, b_in, W_x, W_dt, b_dt, W_out, b_out, conv_wt, conv_b, A, D = _prepared_arrays(p)
    none = _STEP_NONE[u_t.dtype][0]
    b, dm = u_t.shape
    width, d = conv_wt.shape
    dt = conv_wt.dtype
    out = np.empty((b, dm), dt)
    rows = np.empty((b, width, d), dt)
    h = np.empty((b, d, A.shape[1]), dt)
    K.mamba_step(_v(u_t), W_in, none if b_in is None else b_in, W_x, W_dt, b_dt, W_out,
                 none if b_out is None else b_out, conv_wt, none if conv_b is None else conv_b,
                 A, D, _v(state["conv_state"].mT), _v(state["ssm_state"]), b_in is not None,
                 b_out is not None, conv_b is not None, out, rows, h)
    return torch.from_numpy(out), {"conv_state": torch.from_numpy(rows).mT,
                                   "ssm_state": torch.from_numpy(h)}
