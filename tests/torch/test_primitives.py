"""liquidssm.torch primitives (eager): custom backward by gradcheck, bounded memory, the
implementation registry, determinism and the dtype policy."""

from __future__ import annotations

import importlib.util

import liquidssm.torch as lt
import numpy as np
import pytest
import torch
from liquidssm.spec import scan as spec_scan
from liquidssm.spec import selective as spec_sel
from liquidssm.torch import _impl, dense, scans
from liquidssm.torch._memory import PeakMemory

F64 = torch.float64


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 4 steps, so that L = 11 has several chunks and a ragged last one."""
    monkeypatch.setattr(scans, "CHUNK", 4)
    monkeypatch.setenv("LIQUIDSSM_TORCH_IMPL", "eager")


def _selective_inputs(b=2, d=2, n=2, l=11, cplx=False, bform="vary", p=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=F64)  # noqa: E731
    A = -torch.exp(r(d, n))
    if cplx:
        A = torch.complex(A, r(d, n))
    ll = 2 * l if cplx else l  # complex A: input-dependent B/C interleave (re, im) per step
    BC = {"const": (d, n), "vary": (b, n, ll), "group": (b, 1, n, ll)}[bform]
    if cplx and bform == "const":
        B, C = torch.complex(r(*BC), r(*BC)), torch.complex(r(*BC), r(*BC))
    else:
        B, C = r(*BC), r(*BC)
    h0 = r(b, p, d, n) if p > 1 else r(b, d, n)
    if cplx:
        h0 = torch.complex(h0, r(*h0.shape))
    return dict(u=r(b, d, l), delta=r(b, d, l) * 0.3, A=A, B=B, C=C, D=r(d), z=r(b, d, l),
                delta_bias=r(d) * 0.1, initial_state=h0 * 0.5)


@pytest.mark.parametrize("cplx,bform", [(False, "vary"), (False, "const"), (False, "group"),
                                        (True, "const"), (True, "vary")])
def test_selective_scan_gradcheck(small_chunks, cplx, bform):
    x = _selective_inputs(cplx=cplx, bform=bform)
    names = list(x)

    def f(*args):
        kw = dict(zip(names, args))
        out, last = lt.selective_scan(**kw, delta_softplus=True, return_last_state=True)
        return out, torch.view_as_real(last) if last.is_complex() else last

    args = [v.requires_grad_() for v in x.values()]
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("p,lcontract,tied", [(2, "none", False), (3, "tanh", True)])
def test_liquid_selective_scan_gradcheck(small_chunks, p, lcontract, tied):
    x = _selective_inputs(p=p, l=9)
    x["u"] = x["u"] * 0.5
    if not tied:
        x["BL"] = torch.randn(2, 2, 9, dtype=F64) * 0.3
    names = list(x)

    def f(*args):
        kw = dict(zip(names, args))
        return lt.liquid_selective_scan(**kw, delta_softplus=True, return_last_state=True,
                                        liquid_degree=p, lcontract=lcontract)

    args = [v.requires_grad_() for v in x.values()]
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("cplx", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_diag_and_liquid_scan_gradcheck(small_chunks, cplx, reverse):
    g = torch.Generator().manual_seed(1)
    dt = torch.complex128 if cplx else F64
    r = lambda *s: torch.randn(*s, generator=g, dtype=dt)  # noqa: E731
    a, b, c = 0.8 * r(2, 10, 3), r(2, 10, 3), 0.3 * r(2, 10, 3)
    h0, hl0 = r(2, 3), r(2, 2, 3)
    fr = (lambda t: torch.view_as_real(t)) if cplx else (lambda t: t)  # noqa: E731
    assert torch.autograd.gradcheck(
        lambda a, b, h0: fr(lt.diag_scan(a, b, h0, reverse=reverse)),
        [t.requires_grad_() for t in (a, b, h0)], eps=1e-6, atol=1e-6)
    assert torch.autograd.gradcheck(
        lambda a, b, c, h0: tuple(map(fr, lt.liquid_scan(a, b, c, h0, degree=2,
                                                          reverse=reverse))),
        [t.detach().requires_grad_() for t in (a, b, c, hl0)], eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("cplx", [False, True])
@pytest.mark.parametrize("length", [1, 3, 4, 11, 16])  # chunks of 4: one, several, ragged
def test_dense_scan_equals_spec_and_gradcheck(monkeypatch, cplx, length):
    monkeypatch.setattr(dense, "CHUNK", 4)
    g = torch.Generator().manual_seed(length)
    r = lambda *s: torch.randn(*s, generator=g, dtype=F64)  # noqa: E731
    A, b, h0 = 0.3 * r(2, 3, 3), r(2, length, 2, 3), r(2, 2, 3)
    if cplx:
        A, b, h0 = torch.complex(A, 0.3 * r(2, 3, 3)), torch.complex(b, r(*b.shape)), h0 + 0j
    want = spec_scan.dense_scan.reference(A.numpy(), b.numpy(), h0.numpy())
    np.testing.assert_allclose(lt.dense_scan(A, b, h0).numpy(), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(lt.dense_scan(A, b).numpy(),
                               spec_scan.dense_scan.reference(A.numpy(), b.numpy()),
                               rtol=1e-12, atol=1e-12)
    if length in (1, 11):  # gradcheck is slow; 11 = chunks 4 + 4 + 3 (carry and padding)
        args = [x[:1].clone().requires_grad_(True) if x is not A else x.clone().requires_grad_(True)
                for x in (A, b, h0)]
        assert torch.autograd.gradcheck(lt.dense_scan, args)


def test_dense_scan_dtypes_and_errors():
    A, b = torch.eye(3) * 0.5, torch.ones(2, 5, 3)
    assert lt.dense_scan(A, b.bfloat16()).dtype == torch.bfloat16
    assert lt.dense_scan(A.double(), b).dtype == F64
    with pytest.raises(ValueError, match="b: expected shape"):
        lt.dense_scan(A, b[..., :2])
    with pytest.raises(ValueError, match="A: expected shape"):
        lt.dense_scan(A[0], b)


def test_selective_scan_equals_spec_and_its_vjp(small_chunks):
    """Values and the full vjp against the spec's float64 reference (selective_scan_vjp)."""
    x = _selective_inputs(l=13)
    x.pop("initial_state")
    kw = dict(delta_softplus=True)
    leaves = {k: v.detach().clone().requires_grad_() for k, v in x.items()}
    out = lt.selective_scan(**leaves, **kw)
    ref = spec_sel.selective_scan(**{k: v.numpy() for k, v in x.items()}, **kw)
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-11, atol=1e-12)
    g = np.random.default_rng(3).standard_normal(out.shape)
    grads = torch.autograd.grad(out, list(leaves.values()), torch.from_numpy(g))
    ref_g = spec_sel.selective_scan_vjp(**{k: v.numpy() for k, v in x.items()}, **kw, dout=g)
    for k, got in zip(leaves, grads):
        np.testing.assert_allclose(got.numpy(), ref_g[k], rtol=1e-9, atol=1e-11, err_msg=k)


def test_backward_is_deterministic(small_chunks):
    x = _selective_inputs(bform="group")

    def grads():
        leaves = [v.detach().clone().requires_grad_() for v in x.values()]
        out = lt.selective_scan(*leaves[:8], delta_softplus=True)
        return torch.autograd.grad(out.sum(), leaves[:8])

    for g1, g2 in zip(grads(), grads()):
        assert torch.equal(g1, g2)


def test_forward_backward_memory_is_bounded(monkeypatch):
    """At (b=2, d=64, n=16, l=8192) one (b, l, d, n) float32 tensor is 64 MiB; forward +
    backward of the default path must allocate less than 32 MiB beyond its inputs (measured
    27.3 MiB: (b, d, l)-sized activations and gradients, the chunk-start checkpoints and one
    chunk of (T, b, d, n) temporaries)."""
    monkeypatch.setenv("LIQUIDSSM_TORCH_IMPL", "eager")
    b, d, n, l = 2, 64, 16, 8192
    g = torch.Generator().manual_seed(0)
    u, delta, z = (torch.randn(b, d, l, generator=g).requires_grad_() for _ in range(3))
    B, C = (torch.randn(b, n, l, generator=g).requires_grad_() for _ in range(2))
    A = (-torch.rand(d, n, generator=g) - 0.5).requires_grad_()
    with PeakMemory() as m:
        out = lt.selective_scan(u, delta, A, B, C, z=z, delta_softplus=True)
        out.backward(torch.ones_like(out))
    assert m.peak < 32 * 2**20, f"extra peak {m.peak / 2**20:.1f} MiB"
    assert A.grad is not None and torch.isfinite(A.grad).all()


def test_implementation_registry(monkeypatch):
    x = torch.zeros(1, 1, 1)
    monkeypatch.setenv("LIQUIDSSM_TORCH_IMPL", "auto")
    numba = importlib.util.find_spec("numba") is not None  # auto: numba for CPU tensors
    assert _impl.implementation(x) == ("numba" if numba else "eager")
    assert _impl.implementation(x, "diag_scan") == ("numba" if numba else "eager")
    assert _impl.implementation(x, "selective_state_update") == ("numba" if numba else "eager")
    assert _impl.implementation(x, "dense_scan") == "eager"  # no kernel anywhere
    monkeypatch.setenv("LIQUIDSSM_TORCH_IMPL", "eager")
    assert _impl.implementation(x) == "eager"
    monkeypatch.setenv("LIQUIDSSM_TORCH_IMPL", "fast")
    with pytest.raises(ValueError, match=r"LIQUIDSSM_TORCH_IMPL: expected one of"):
        _impl.implementation(x)
    monkeypatch.setenv("LIQUIDSSM_TORCH_IMPL", "triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match=r"LIQUIDSSM_TORCH_IMPL='triton': cannot run"):
            _impl.implementation(x)


def test_low_precision_inputs_keep_float32_state(small_chunks):
    x = _selective_inputs()
    x.pop("initial_state")
    low = {k: v.to(torch.bfloat16) for k, v in x.items()}
    out, last = lt.selective_scan(**low, delta_softplus=True, return_last_state=True)
    assert out.dtype == torch.bfloat16 and last.dtype == torch.float32
    ref = spec_sel.selective_scan(**{k: v.double().numpy() for k, v in low.items()},
                                  delta_softplus=True)
    # float32 compute on the bf16-rounded inputs, then the output rounded to bf16 (2**-9)
    err = np.abs(out.double().numpy() - ref).max() / np.abs(ref).max()
    assert err < 1e-2, err


def test_bad_input_names_the_argument(small_chunks):
    x = _selective_inputs()
    x.pop("initial_state")
    with pytest.raises(ValueError, match=r"delta: expected shape"):
        lt.selective_scan(**{**x, "delta": x["delta"][:, :, :-1]})
    with pytest.raises(ValueError, match=r"liquid_degree"):
        lt.liquid_selective_scan(**x, liquid_degree=0)


def test_unused_bl_gets_a_zero_gradient(small_chunks):
    """liquid_degree = 1 does not use BL: its gradient is zeros (not None), as in JAX."""
    g = torch.Generator().manual_seed(3)
    b, d, n, l = 2, 2, 3, 5
    u, delta = torch.randn(b, d, l, generator=g, dtype=F64), torch.rand(b, d, l, dtype=F64)
    A, B, C = -torch.rand(d, n, dtype=F64) - 0.5, torch.randn(b, n, l, dtype=F64), torch.randn(
        d, n, dtype=F64)
    BL = torch.randn(b, n, l, dtype=F64, requires_grad=True)
    out = lt.liquid_selective_scan(u, delta, A, B, C, liquid_degree=1, BL=BL)
    (gBL,) = torch.autograd.grad(out.sum(), [BL], allow_unused=True)
    assert gBL is not None and gBL.shape == BL.shape and not gBL.any()


def test_empty_batch_and_length_and_bad_library():
    """Zero batch or length: the empty result, final state = initial state; a NumPy array for a
    later argument: a TypeError naming it (liquidssm.spec._checks)."""
    a = torch.rand(2, 4, 3, dtype=F64)
    h0 = torch.randn(2, 2, 3, dtype=F64)
    y, last = lt.liquid_scan(a[:, :0], a[:, :0], a[:, :0], h0, degree=2)
    assert y.shape == (2, 0, 3) and torch.equal(last, h0)
    assert lt.diag_scan(a[:0], a[:0]).shape == (0, 4, 3)
    with pytest.raises(TypeError, match=r"b: expected a torch.Tensor .*got a numpy.ndarray"):
        lt.diag_scan(a, a.numpy())
    with pytest.raises(TypeError, match="reverse: expected a bool, got 1"):
        lt.diag_scan(a, a, reverse=1)
