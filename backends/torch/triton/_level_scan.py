"""diag_scan / liquid_scan on the Triton level-scan kernel, as torch.library custom ops.

Backward (time forward; reverse=True runs the same on time-flipped arrays), with lambda^m_t =
dLoss/dh^m_t and torch's conjugate convention for complex inputs:
    lambda^m_t = g_t + conj(a_{t+1}) lambda^m_{t+1} + conj(c_{t+1}) lambda^{m+1}_{t+1},
    lambda^m_{L-1} = g_{L-1} + g_last[m]
(a reverse level scan with the levels in reverse order), then
    db = lambda^0, da = sum_m lambda^m conj(h^m_{t-1}),
    dc = sum_{m>=1} lambda^m conj(h^{m-1}_{t-1}),
    dh0[m] = conj(a_0) lambda^m_0 + conj(c_0) lambda^{m+1}_0.
"""

from __future__ import annotations

import math

import torch
from liquidssm.spec import _checks
from liquidssm.spec import scan as _spec_scan

from . import _level_scan_kernels as K
from ._host import CONFIG, check_device, compute, dummy, grid, needs_grad, next_pow2


def _pairs(x):
    """A complex tensor as its (..., 2) float view; real tensors unchanged."""
    return torch.view_as_real(x) if x.is_complex() else x


@torch.library.custom_op("liquidssm::level_scan", mutates_args=())
def _level_scan(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None,
                h0: torch.Tensor | None, degree: int, reverse: bool, b_all: bool,
                store_levels: bool, block_m: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """a, c (1 | batch, L, M); b (batch, L, M); h0 (batch, degree, M), all one dtype.
    Returns y (batch, L, M), h_last (batch, degree, M), levels (batch, L, degree, M) or (0,)."""
    batch, L, M = b.shape
    y = torch.empty_like(b)
    hl = b.new_empty((batch, degree, M))
    lv = b.new_empty((batch, L, degree, M) if store_levels else (0,))
    ph = dummy(b)
    cplx = b.is_complex()
    K.levels_scan_kernel[grid(batch, M, block_m)](
        _pairs(a), _pairs(b), ph if c is None else _pairs(c), ph if h0 is None else _pairs(h0),
        _pairs(y), _pairs(hl), _pairs(lv) if store_levels else ph,
        L, M, 0 if a.shape[0] == 1 else L * M, 0 if c is None or c.shape[0] == 1 else L * M,
        DEG=degree, P=next_pow2(degree), BM=block_m, HAS_C=c is not None,
        HAS_H0=h0 is not None, REV=reverse, B_ALL=b_all, STORE_LV=store_levels, CPLX=cplx,
        CD=compute(b.dtype)[1],
    )
    return y, hl, lv


@_level_scan.register_fake
def _(a, b, c, h0, degree, reverse, b_all, store_levels, block_m):
    batch, L, M = b.shape
    return (torch.empty_like(b), b.new_empty((batch, degree, M)),
            b.new_empty((batch, L, degree, M) if store_levels else (0,)))


def _setup(ctx, inputs, output):
    a, b, c, h0, degree, reverse, b_all, store_levels, block_m = inputs
    y, _, lv = output
    ctx.save_for_backward(a, c, h0, y if degree == 1 else lv)
    ctx.cfg = (degree, reverse, block_m, c is not None, h0 is not None)
    if b_all:
        raise RuntimeError("level_scan: no gradient for the b_all form (used by backward only)")
    if degree > 1 and not store_levels:
        raise RuntimeError("level_scan: gradients need store_levels=True for degree > 1")


def _backward(ctx, gy, ghl, glv):
    a, c, h0, H = ctx.saved_tensors
    degree, reverse, block_m, has_c, has_h0 = ctx.cfg
    batch, L, M = gy.shape if gy is not None else ghl.shape[:1] + (H.shape[1], ghl.shape[2])
    gy = torch.zeros((batch, L, M), dtype=a.dtype if ghl is None else ghl.dtype,
                     device=a.device) if gy is None else gy
    ghl = torch.zeros((batch, degree, M), dtype=gy.dtype, device=gy.device) if ghl is None \
        else ghl
    if H.dim() == 3:  # degree 1: the levels are y itself
        H = H[:, :, None, :]
    flip = (lambda x: torch.flip(x, (1,))) if reverse else (lambda x: x)  # noqa: E731
    af, gyf, Hf = flip(a), flip(gy), flip(H)
    cf = flip(c) if has_c else None

    def shift_next(x, pad):  # x_{t+1}, with `pad` after the end
        return torch.cat([x[:, 1:], torch.full_like(x[:, :1], pad)], 1).conj().contiguous()

    # reverse level scan, levels in reverse order (so the coupling runs from level k-1 to k)
    _, _, mu = _level_scan(shift_next(af, 1.0), gyf.contiguous(),
                           shift_next(cf, 0.0) if has_c else None,
                           torch.flip(ghl, (1,)).contiguous(), degree, True, True, True, block_m)
    lam = torch.flip(mu, (2,))  # (batch, L, degree, M)
    start = h0 if has_h0 else torch.zeros_like(Hf[:, 0])
    hprev = torch.cat([start[:, None], Hf[:, :-1]], 1).conj()
    da = (lam * hprev).sum(2)
    db = lam[:, :, 0]
    dc = (lam[:, :, 1:] * hprev[:, :, :-1]).sum(2) if has_c else None
    dh0 = None
    if has_h0:
        dh0 = a[:, 0 if not reverse else -1, None].conj() * lam[:, 0]
        if has_c:
            ct = cf[:, 0, None].conj()
            dh0 = dh0 + torch.cat([ct * lam[:, 0, 1:], torch.zeros_like(lam[:, 0, :1])], 1)
    da, db = flip(da), flip(db)
    if a.shape[0] == 1:
        da = da.sum(0, keepdim=True)
    if has_c:
        dc = flip(dc)
        if c.shape[0] == 1:
            dc = dc.sum(0, keepdim=True)
    return da, db, dc, dh0, None, None, None, None, None


_level_scan.register_autograd(_backward, setup_context=_setup)


def _prepare(named, args):
    """Checked arrays (liquidssm.spec._checks; `args` its ScanArgs) -> (., L, M) tensors of one
    common dtype."""
    tensors = {k: x for k, x in named.items() if x is not None}
    check_device(**tensors)
    dtype = tensors["b"].dtype
    for x in tensors.values():
        dtype = torch.promote_types(dtype, x.dtype)
    batch, L, M = args.batch, args.length, math.prod(args.shape)
    out = {}
    for name, x in tensors.items():
        x = x.to(dtype)
        if name == "h0":
            x = x.reshape(batch, -1, M)
        else:
            x = x.reshape(x.shape[0], L, M)
        out[name] = x.contiguous()
    return out, batch, L, args.shape, M


def _block_m(M):
    return min(CONFIG["block_m"], next_pow2(M))


def diag_scan(a, b, h0=None, *, reverse=False):
    """h_t = a_t h_{t-1} + b_t (h_{-1} = h0; reverse: from t = L-1 down, h_L = h0).

    a (batch | 1, L, *S), b (batch, L, *S), h0 (batch, *S); real or complex. Returns h (batch,
    L, *S) in the promoted dtype of the inputs (float32 compute for float16 / bfloat16).
    """
    args = _checks.diag_scan_args(a, b, h0, reverse, kind="torch.Tensor")
    if args.empty:
        return _spec_scan.diag_scan.reference(a, b, h0, reverse=reverse)
    t, batch, L, S, M = _prepare({"a": a, "b": b, "h0": h0}, args)
    y, _, _ = _level_scan(t["a"], t["b"], None, t.get("h0"), 1, reverse, False, False,
                          _block_m(M))
    return y.reshape(batch, L, *S)


def liquid_scan(a, b, c, h0=None, *, degree, reverse=False):
    """Levels h0_t = a_t h0_{t-1} + b_t, hm_t = a_t hm_{t-1} + c_t h(m-1)_{t-1}, m < degree.

    a, c (batch | 1, L, *S); b (batch, L, *S); h0 (batch, degree, *S). Returns (y = sum_m hm
    (batch, L, *S), h_last (batch, degree, *S)) as liquidssm.spec.scan.liquid_scan.
    """
    args = _checks.liquid_scan_args(a, b, c, h0, degree, reverse, kind="torch.Tensor")
    if args.empty:
        return _spec_scan.liquid_scan.reference(a, b, c, h0, degree=degree, reverse=reverse)
    t, batch, L, S, M = _prepare({"a": a, "b": b, "c": c, "h0": h0}, args)
    store = degree > 1 and needs_grad(a, b, c, h0)
    y, hl, _ = _level_scan(t["a"], t["b"], t["c"], t.get("h0"), degree, reverse, False, store,
                           _block_m(M))
    return y.reshape(batch, L, *S), hl.reshape(batch, degree, *S)
