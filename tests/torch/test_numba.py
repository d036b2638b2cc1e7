"""liquidssm.cpu (numba kernels as torch custom ops): the spec's outputs (real and complex A),
gradcheck in float64,
a bitwise-repeatable backward (also across thread counts), the dtype policy, the eager fallback,
torch.compile and the registry. Small shapes; CHUNK is lowered so that l spans several chunks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

numba = pytest.importorskip("numba")

import liquidssm.torch as lt  # noqa: E402
from liquidssm.cpu import _torch as N  # noqa: E402
from liquidssm.spec import selective as spec_sel  # noqa: E402
from liquidssm.torch import selective as eager  # noqa: E402

FORMS = ("const", "var", "group")


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(N, "CHUNK", 8)


def _inputs(form, dtype=torch.float64, b=2, d=4, n=3, l=20, seed=0, cb="group"):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731

    def bc(f, groups):
        return {"const": lambda: r(d, n), "var": lambda: r(b, n, l),
                "group": lambda: r(b, groups, n, l)}[f]()

    return dict(u=r(b, d, l), delta=0.5 * r(b, d, l),
                A=-torch.rand(d, n, generator=g, dtype=dtype) - 0.2, B=bc(form, 2),
                C=bc(form if cb == "group" else cb, 4 if form == "group" else 2), D=r(d),
                z=r(b, d, l), delta_bias=0.3 * r(d), initial_state=r(b, d, n))


@pytest.mark.parametrize("form", FORMS)
def test_matches_the_spec(form):
    x = _inputs(form)
    out, last = N.selective_scan(**x, delta_softplus=True, return_last_state=True)
    ref, ref_last = spec_sel.selective_scan(**{k: v.numpy() for k, v in x.items()},
                                            delta_softplus=True, return_last_state=True)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(last.numpy(), ref_last, rtol=1e-11, atol=1e-11)


def _gradcheck(x, fast):
    names = list(x)

    def f(*args):
        return N.selective_scan(**dict(zip(names, args)), delta_softplus=True,
                                return_last_state=True)

    args = [v.clone().requires_grad_() for v in x.values()]
    return torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-7, rtol=1e-6, fast_mode=fast)


@pytest.mark.parametrize("form", FORMS)
def test_gradcheck_float64(form):
    # fast mode (random projections of the Jacobian): the full one costs minutes here
    assert _gradcheck(_inputs(form, b=2, d=4, n=2), fast=True)


def test_gradcheck_float64_full_jacobian():
    assert _gradcheck(_inputs("group", b=1, d=4, n=2, l=12), fast=False)


def test_gradients_match_the_spec_without_optionals():
    x = _inputs("var")
    for k in ("D", "z", "delta_bias", "initial_state"):
        x.pop(k)
    leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
    out = N.selective_scan(**leaves)
    dout = torch.randn_like(out)
    grads = torch.autograd.grad(out, list(leaves.values()), dout)
    ref = spec_sel.selective_scan_vjp(**{k: v.numpy() for k, v in x.items()},
                                      dout=dout.numpy())
    for k, gk in zip(leaves, grads):
        np.testing.assert_allclose(gk.numpy(), ref[k], rtol=1e-10, atol=1e-10, err_msg=k)


def _assert_repeatable(fn):
    """fn() -> tensors: bitwise equal twice with all of numba's threads and once with one."""

    def at(threads):
        old = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            return fn()
        finally:
            numba.set_num_threads(old)

    full = numba.config.NUMBA_NUM_THREADS
    for a, b, c in zip(at(full), at(full), at(1)):
        assert torch.equal(a, b) and torch.equal(a, c)


@pytest.mark.parametrize("form", FORMS)
def test_backward_is_bitwise_repeatable(form):
    x = _inputs(form, dtype=torch.float32, b=3, d=32, n=4, l=130)

    def grads():
        leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
        out, last = N.selective_scan(**leaves, delta_softplus=True, return_last_state=True)
        (out.sum() + last.square().sum()).backward()
        return [out.detach(), last.detach(), *(v.grad for v in leaves.values())]

    _assert_repeatable(grads)


def test_low_precision_inputs_compute_in_float32():
    x = _inputs("var", dtype=torch.float32)
    low = {k: v.to(torch.bfloat16) for k, v in x.items()}
    out, last = N.selective_scan(**low, delta_softplus=True, return_last_state=True)
    assert out.dtype == torch.bfloat16 and last.dtype == torch.float32
    ref = spec_sel.selective_scan(**{k: v.double().numpy() for k, v in low.items()},
                                  delta_softplus=True)
    # float32 compute on the bf16-rounded inputs, then the output rounded to bf16 (2**-9)
    err = np.abs(out.double().numpy() - ref).max() / np.abs(ref).max()
    assert err < 1e-2, err


def test_fallbacks_are_the_eager_results():
    x = _inputs("var", l=0)  # zero length: the spec's own loop, as eager
    out, last = N.selective_scan(**x, return_last_state=True)
    ref, ref_last = eager.selective_scan(**x, return_last_state=True)
    assert out.shape == (2, 4, 0) and torch.equal(out, ref) and torch.equal(last, ref_last)
    # liquid_degree = 1 runs the kernel: the selective scan with (b, 1, d, n) states
    y = _inputs("var")
    h0 = torch.randn(2, 1, 4, 3, dtype=torch.float64)
    out, last = N.liquid_selective_scan(**{**y, "initial_state": h0}, return_last_state=True)
    ref, ref_last = N.selective_scan(**{**y, "initial_state": h0[:, 0]}, return_last_state=True)
    assert torch.equal(out, ref) and torch.equal(last[:, 0], ref_last)


# ---------------------------------------------------------------------------------------------
# complex A (the selective scan; the liquid scan takes real A): y = 2 Re(C . h)

#: B / C forms with complex A: "cconst" a complex (d, n), the others real ((Re, Im) interleaved
#: along 2 l when input-dependent)
CFORMS = ("const", "cconst", "var", "group")


def _complex_inputs(form, dtype=torch.float64, b=2, d=4, n=3, l=20, seed=0):
    x = _inputs("const", dtype, b, d, n, l, seed)
    g = torch.Generator().manual_seed(seed + 1)
    cdt = torch.complex128 if dtype == torch.float64 else torch.complex64
    r = lambda *s, dt=dtype: torch.randn(*s, generator=g, dtype=dt)  # noqa: E731
    bc = {"const": lambda G: r(d, n), "cconst": lambda G: r(d, n, dt=cdt),
          "var": lambda G: r(b, n, 2 * l), "group": lambda G: r(b, G, n, 2 * l)}[form]
    x.update(A=torch.complex(x["A"], r(d, n)), B=bc(2), C=bc(4),
             initial_state=r(b, d, n, dt=cdt))
    return x


@pytest.mark.parametrize("form", CFORMS)
def test_complex_a_matches_the_spec_and_eager_gradients(form):
    x = _complex_inputs(form)
    kw = dict(delta_softplus=True, return_last_state=True)
    out, last = N.selective_scan(**x, **kw)
    ref, ref_last = spec_sel.selective_scan(**{k: v.numpy() for k, v in x.items()}, **kw)
    assert last.dtype == torch.complex128
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(last.numpy(), ref_last, rtol=1e-11, atol=1e-11)

    g = torch.Generator().manual_seed(5)
    dout = torch.randn(out.shape, generator=g, dtype=out.dtype)
    dlast = torch.randn(last.shape, generator=g, dtype=last.dtype)

    def grads(mod):
        leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
        outs = mod.selective_scan(**leaves, **kw)
        return torch.autograd.grad(outs, list(leaves.values()), (dout, dlast))

    vjp = spec_sel.selective_scan_vjp(**{k: v.numpy() for k, v in x.items()},
                                      delta_softplus=True, dout=dout.numpy(),
                                      dlast_state=dlast.numpy())
    for k, got, want in zip(x, grads(N), grads(eager)):
        assert got.dtype == x[k].dtype, k
        np.testing.assert_allclose(got.numpy(), vjp[k], rtol=1e-10, atol=1e-10, err_msg=k)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10, msg=k)


@pytest.mark.parametrize("form", ["cconst", "var"])
def test_complex_a_gradcheck_float64(form):
    x = _complex_inputs(form, b=1, d=2, n=2, l=12)
    names = list(x)

    def f(*args):
        return N.selective_scan(**dict(zip(names, args)), delta_softplus=True,
                                return_last_state=True)

    args = [v.clone().requires_grad_() for v in x.values()]
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-7, rtol=1e-6, fast_mode=True)


def test_complex_a_float32_backward_is_bitwise_repeatable():
    x = _complex_inputs("group", dtype=torch.float32, b=3, d=32, n=4, l=130)

    def grads():
        leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
        out, last = N.selective_scan(**leaves, delta_softplus=True, return_last_state=True)
        assert last.dtype == torch.complex64
        (out.sum() + last.abs().square().sum()).backward()
        return [out.detach(), last.detach(), *(v.grad for v in leaves.values())]

    _assert_repeatable(grads)


#: liquid cases: (B / C form, BL form or None (tied), degree, lcontract)
LIQUID = [("var", None, 2, "tanh"), ("const", "var", 3, "lecun"), ("group", "group", 2, "none"),
          ("var", "const", 3, "none")]


def _liquid_inputs(form, bl, p, dtype=torch.float64, b=2, d=4, n=3, l=20, seed=0):
    x = _inputs(form, dtype, b, d, n, l, seed)
    g = torch.Generator().manual_seed(seed + 1)
    x["initial_state"] = torch.randn(b, p, d, n, generator=g, dtype=dtype)
    if bl is not None:
        x["BL"] = {"const": lambda: torch.randn(d, n, generator=g, dtype=dtype),
                   "var": lambda: torch.randn(b, n, l, generator=g, dtype=dtype),
                   "group": lambda: torch.randn(b, 2, n, l, generator=g, dtype=dtype)}[bl]()
    return x


@pytest.mark.parametrize("form,bl,p,phi", LIQUID)
def test_liquid_matches_the_spec(form, bl, p, phi):
    x = _liquid_inputs(form, bl, p)
    kw = dict(delta_softplus=True, return_last_state=True, liquid_degree=p, lcontract=phi)
    out, last = N.liquid_selective_scan(**x, **kw)
    ref, ref_last = spec_sel.liquid_selective_scan(**{k: v.numpy() for k, v in x.items()}, **kw)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(last.numpy(), ref_last, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("form,bl,p,phi", LIQUID)
def test_liquid_gradients_match_the_spec(form, bl, p, phi):
    x = _liquid_inputs(form, bl, p)
    kw = dict(delta_softplus=True, liquid_degree=p, lcontract=phi)
    leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
    out, last = N.liquid_selective_scan(**leaves, return_last_state=True, **kw)
    dout, dlast = torch.randn_like(out), torch.randn_like(last)
    grads = torch.autograd.grad((out, last), list(leaves.values()), (dout, dlast))
    ref = spec_sel.liquid_selective_scan_vjp(**{k: v.numpy() for k, v in x.items()}, **kw,
                                             dout=dout.numpy(), dlast_state=dlast.numpy())
    for k, gk in zip(leaves, grads):
        np.testing.assert_allclose(gk.numpy(), ref[k], rtol=1e-10, atol=1e-10, err_msg=k)


def test_liquid_gradcheck_float64():
    x = _liquid_inputs("var", "var", 3, b=1, d=2, n=2, l=12)
    names = list(x)

    def f(*args):
        return N.liquid_selective_scan(**dict(zip(names, args)), delta_softplus=True,
                                       return_last_state=True, liquid_degree=3,
                                       lcontract="lecun")

    args = [v.clone().requires_grad_() for v in x.values()]
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-7, rtol=1e-6, fast_mode=True)


def test_liquid_backward_is_bitwise_repeatable():
    x = _liquid_inputs("group", "var", 2, dtype=torch.float32, b=3, d=32, n=4, l=130)

    def grads():
        leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
        out, last = N.liquid_selective_scan(**leaves, delta_softplus=True, liquid_degree=2,
                                            lcontract="tanh", return_last_state=True)
        (out.sum() + last.square().sum()).backward()
        return [out.detach(), last.detach(), *(v.grad for v in leaves.values())]

    _assert_repeatable(grads)


def test_bad_input_names_the_argument():
    x = _inputs("var")
    x["delta"] = x["delta"][..., :-1]
    with pytest.raises(ValueError, match=r"delta: expected shape"):
        N.selective_scan(**x)


def test_torch_compile_keeps_the_custom_op():
    x = _inputs("group", dtype=torch.float32)
    leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
    fn = torch.compile(lambda **kw: N.selective_scan(**kw, delta_softplus=True),
                       backend="aot_eager")
    out = fn(**leaves)
    out.sum().backward()
    leaves2 = {k: v.clone().requires_grad_() for k, v in x.items()}
    ref_out = N.selective_scan(**leaves2, delta_softplus=True)
    ref_out.sum().backward()
    assert torch.equal(out, ref_out)
    for k in x:
        assert torch.equal(leaves[k].grad, leaves2[k].grad), k


def test_registry_runs_the_kernels(monkeypatch):
    x = _inputs("const")
    monkeypatch.setenv("LIQUIDSSM_TORCH_IMPL", "numba")
    assert lt.implementation(x["u"]) == "numba"
    assert lt.implementation(x["u"], "diag_scan") == "numba"  # explicit: its eager fallback
    assert torch.equal(lt.selective_scan(**x), N.selective_scan(**x))
    monkeypatch.setenv("LIQUIDSSM_TORCH_IMPL", "auto")
    assert lt.implementation(x["u"]) == "numba"
    assert lt.implementation(x["u"], "diag_scan") == "numba"
    assert lt.implementation(x["u"], "selective_state_update") == "numba"


# ---------------------------------------------------------------------------------------------
# diag_scan / liquid_scan: one level kernel pair (p = 1 is the diag scan)

#: (degree or None for diag_scan, reverse, complex, a broadcast over the batch, state shape)
LEVELS = [(None, False, False, False, (5,)), (None, True, True, True, (3, 2)),
          (2, False, False, True, (40,)), (3, True, True, False, (4,)), (1, False, True, True, ())]


def _level_inputs(p, cplx, bcast, S, b=2, l=19, seed=0):
    g = torch.Generator().manual_seed(seed)
    dt = torch.complex128 if cplx else torch.float64
    r = lambda *s: torch.randn(*s, generator=g, dtype=dt)  # noqa: E731
    lead = 1 if bcast else b
    x = {"a": 0.6 * r(lead, l, *S), "b": r(b, l, *S)}
    if p is None:
        x["h0"] = r(b, *S)
    else:
        x["c"], x["h0"] = 0.4 * r(lead, l, *S), r(b, p, *S)
    return x


def _level_call(mod, p, reverse, x):
    if p is None:
        return (mod.diag_scan(x["a"], x["b"], x["h0"], reverse=reverse),)
    return mod.liquid_scan(x["a"], x["b"], x["c"], x["h0"], degree=p, reverse=reverse)


@pytest.mark.parametrize("p,reverse,cplx,bcast,S", LEVELS)
def test_level_scans_match_the_spec_and_eager_gradients(p, reverse, cplx, bcast, S):
    from liquidssm.spec import scan as spec_scan
    from liquidssm.torch import scans as eager_scans

    x = _level_inputs(p, cplx, bcast, S)
    outs = _level_call(N, p, reverse, x)
    ref = _level_call(spec_scan, p, reverse, {k: v.numpy() for k, v in x.items()})
    for o, r in zip(outs, ref):
        np.testing.assert_allclose(o.numpy(), r, rtol=0, atol=1e-12)

    def grads(mod):
        leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
        ys = _level_call(mod, p, reverse, leaves)
        g = torch.Generator().manual_seed(9)
        loss = sum((y * torch.randn(y.shape, generator=g, dtype=y.dtype).conj()).real.sum()
                   for y in ys)
        return torch.autograd.grad(loss, list(leaves.values()))

    for got, want in zip(grads(N), grads(eager_scans)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_level_scans_take_lazily_conjugated_tensors():
    x = _level_inputs(2, True, False, (3,))
    lazy = {k: v.conj().conj() if k == "b" else v for k, v in x.items()}
    lazy["a"] = x["a"].conj()  # the conjugate bit set: resolved before the kernels read it
    ref = N.liquid_scan(x["a"].conj().resolve_conj(), x["b"], x["c"], x["h0"], degree=2)
    got = N.liquid_scan(lazy["a"], lazy["b"], lazy["c"], lazy["h0"], degree=2)
    for a, b in zip(got, ref):
        assert torch.equal(a, b)


def test_level_scans_gradcheck_float64():
    x = _level_inputs(2, True, True, (3,), l=11)
    leaves = tuple(v.clone().requires_grad_() for v in x.values())
    assert torch.autograd.gradcheck(
        lambda a, b, c, h0: N.liquid_scan(a, b, c, h0, degree=2, reverse=True), leaves)
    y = _level_inputs(None, False, False, (2,), l=11)
    leaves = tuple(v.clone().requires_grad_() for v in y.values())
    assert torch.autograd.gradcheck(lambda a, b, h0: N.diag_scan(a, b, h0), leaves)


def test_level_backward_is_bitwise_repeatable():
    x = _level_inputs(3, False, True, (70,), b=3)

    def grads():
        leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
        y, last = N.liquid_scan(leaves["a"], leaves["b"], leaves["c"], leaves["h0"], degree=3)
        return torch.autograd.grad((y.sum() + last.sum()), list(leaves.values()))

    _assert_repeatable(grads)


def test_level_low_precision_and_bad_input():
    x = _level_inputs(None, False, False, (4,))
    low = {k: v.to(torch.bfloat16) for k, v in x.items()}
    y = N.diag_scan(low["a"], low["b"], low["h0"])
    assert y.dtype == torch.bfloat16
    ref = N.diag_scan(*(v.double() for v in low.values()))
    assert float((y.double() - ref).abs().max() / ref.abs().max()) < 1e-2
    with pytest.raises(ValueError, match=r"a: expected shape"):
        N.diag_scan(x["a"][:, :-1], x["b"])


def test_level_scan_under_torch_compile_keeps_the_custom_op():
    x = {k: v.float() for k, v in _level_inputs(2, False, False, (3,)).items()}
    fn = torch.compile(lambda a, b, c, h0: N.liquid_scan(a, b, c, h0, degree=2)[0].sum(),
                       backend="aot_eager")
    leaves = [v.clone().requires_grad_() for v in x.values()]
    fn(*leaves).backward()
    ref = [v.clone().requires_grad_() for v in x.values()]
    N.liquid_scan(*ref, degree=2)[0].sum().backward()
    for a, b in zip(leaves, ref):
        assert torch.equal(a.grad, b.grad)


def test_level_width_changes_no_result():
    from liquidssm.cpu import _kernels as K

    assert K.level_width(2, 512, threads=2) == 128 and K.level_width(2, 512, threads=8) == 64
    assert K.level_width(1, 40, threads=2) == 32
    x = {k: v.numpy() for k, v in _level_inputs(3, True, True, (150,), b=2).items()}
    B, L, M = x["b"].shape
    outs = []
    for w in (32, 64, 128):
        y, last, ck = (np.empty_like(x["b"]), np.empty((B, 3, M), x["b"].dtype),
                       np.empty((B, -(-L // 8), 3, M), x["b"].dtype))
        K.level_fwd(x["a"], x["b"], x["c"], x["h0"], 3, False, 8, w, True, y, last, ck)
        grads = [np.empty_like(x["b"]) for _ in range(3)] + [np.empty_like(last)]
        K.level_bwd(x["a"], x["b"], x["c"], ck, x["b"], last, 3, False, 8, w, *grads)
        outs.append([y, last, *grads])
    for other in outs[1:]:
        assert all(np.array_equal(p, q) for p, q in zip(outs[0], other))


# ---------------------------------------------------------------------------------------------
# the decode step: selective_state_update and the liquid step on the state_step kernel


@pytest.fixture
def step_calls(monkeypatch):
    """Counts the state_step kernel's calls (the kernel still runs)."""
    calls = []
    kernel = N.K.state_step

    def spy(*args):
        calls.append(args[-3])  # p
        return kernel(*args)

    monkeypatch.setattr(N.K, "state_step", spy)
    monkeypatch.setattr(N, "STEP_MIN_STATE", 0)  # these small states too
    monkeypatch.setenv("LIQUIDSSM_TORCH_IMPL", "numba")
    return calls


def _step_inputs(dtype, groups, b=3, d=4, n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    bc = (b, n) if groups is None else (b, groups, n)
    return dict(state=r(b, d, n), x=r(b, d), dt=r(b, d), A=-torch.rand(d, n, generator=g,
                dtype=dtype) - 0.2, B=r(*bc), C=r(*bc), D=r(d), z=r(b, d), dt_bias=0.3 * r(d))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("groups,drop,softplus", [(None, (), True), (2, (), False),
                                                  (4, ("D", "z", "dt_bias"), True)])
def test_state_update_kernel_matches_the_spec(step_calls, dtype, groups, drop, softplus):
    x = {k: (None if k in drop else v) for k, v in _step_inputs(dtype, groups).items()}
    y, h = lt.selective_state_update(**x, dt_softplus=softplus)
    assert step_calls == [1]
    ref = {k: None if v is None else v.numpy().astype(np.float64) for k, v in x.items()}
    y_ref, h_ref = spec_sel.selective_state_update(**ref, dt_softplus=softplus)
    assert y.dtype == h.dtype == dtype and h.shape == x["state"].shape
    # float32: float32 arithmetic against the float64 spec (the kernel's exp / softplus /
    # sigmoid: relative errors <= 3e-7); measured max |error| / max |value| 2.1e-7 here
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(y.numpy(), y_ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(h.numpy(), h_ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("p,phi,own_bl", [(1, "none", False), (2, "tanh", True),
                                          (3, "lecun", False)])
def test_liquid_step_kernel_matches_the_spec(step_calls, p, phi, own_bl):
    g = torch.Generator().manual_seed(1)
    b, d, n = 2, 4, 3
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    args = [r(b, p, d, n), r(b, d), torch.rand(b, d, generator=g, dtype=torch.float64),
            -torch.rand(d, n, generator=g, dtype=torch.float64) - 0.2, r(b, 1, n), r(b, d, n)]
    args += [r(b, d, n) if own_bl else args[4], r(d), r(b, d)]
    y, levels = N._liquid_state_update(torch, *args, p, phi)
    assert step_calls == [p]
    y_ref, levels_ref = spec_sel._liquid_state_update.reference(torch, *args, p, phi)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(levels, levels_ref, rtol=1e-12, atol=1e-12)


def test_state_update_under_autograd_or_small_runs_the_spec(step_calls, monkeypatch):
    x = _step_inputs(torch.float64, None)
    x["x"].requires_grad_(True)
    y, h = lt.selective_state_update(**x, dt_softplus=True)
    assert step_calls == []  # the kernel has no backward: the spec's torch ops ran
    (y.sum() + h.sum()).backward()
    assert x["x"].grad is not None and torch.isfinite(x["x"].grad).all()
    with torch.no_grad():
        lt.selective_state_update(**x, dt_softplus=True)
        assert step_calls == [1]
        monkeypatch.setattr(N, "STEP_MIN_STATE", x["state"].numel() + 1)
        lt.selective_state_update(**x, dt_softplus=True)  # a state below the size: torch's ops
        assert step_calls == [1]


@pytest.fixture
def mamba_calls(monkeypatch):
    """Counts the whole-step kernel's calls (mamba_step; the kernel still runs)."""
    calls = []
    kernel = N.K.mamba_step

    def spy(*args):
        calls.append(args[0].shape[0])  # the batch
        return kernel(*args)

    monkeypatch.setattr(N.K, "mamba_step", spy)
    return calls


def _decode(m, u):
    state, ys = m.initial_state(u.shape[0]), []
    for t in range(u.shape[1]):
        y_t, state = m.step(u[:, t], state)
        ys.append(y_t)
    return torch.stack(ys, 1), state


@pytest.mark.parametrize("cls,config", [
    ("Mamba", "mamba.Config(d_model=8, d_state=4)"),
    ("Mamba", "mamba.Config(d_model=8, d_state=4, bias=True, conv_bias=False)"),
    ("LiquidMamba", "liquid_mamba.Config(d_model=8, d_state=4, liquid_degree=2, tied=False)")])
def test_decode_fast_path_runs_the_kernels(step_calls, mamba_calls, cls, config):
    from liquidssm.spec import liquid_mamba, mamba  # noqa: F401  (the configs above)
    from liquidssm.torch import nn

    m = getattr(nn, cls)(eval(config), seed=0)
    u = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y, last = m(u, return_state=True)
        ys, state = _decode(m, u)
    # Mamba: the whole step in one kernel; LiquidMamba (its gated conv): the state update
    assert (mamba_calls, len(step_calls)) == (([2] * 5, 0) if cls == "Mamba" else ([], 5))
    # float32: the step's kernels against the forward's scan kernel, measured max |error|
    # 2.2e-8 (Mamba, |y| <= 0.16) and 2.4e-7 (LiquidMamba, |y| <= 3.6)
    torch.testing.assert_close(ys, y, rtol=1e-5, atol=1e-5)
    for k in last:
        torch.testing.assert_close(state[k], last[k], rtol=1e-5, atol=1e-5)


def test_mamba_lm_decodes_through_the_whole_step_kernel(step_calls, mamba_calls):
    from liquidssm.spec import mamba_lm
    from liquidssm.torch import nn

    m = nn.MambaLM(mamba_lm.Config(d_model=8, n_layer=2, vocab_size=11, ssm_cfg={"d_state": 4}),
                   seed=0)
    ids = torch.randint(0, 11, (1, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = m(ids)
        ys, _ = _decode(m, ids)
    assert mamba_calls == [1] * 12  # two layers, six steps
    torch.testing.assert_close(ys, logits, rtol=1e-5, atol=1e-5)


def test_whole_step_kernel_falls_back(step_calls, mamba_calls, monkeypatch):
    from liquidssm.spec import mamba
    from liquidssm.torch import nn

    m = nn.Mamba(mamba.Config(d_model=8, d_state=4), seed=0)
    u = torch.randn(3, 4, 8, generator=torch.Generator().manual_seed(1))
    ys, _ = _decode(m, u)  # grad enabled, parameters requiring grad: the spec's torch ops
    assert mamba_calls == []
    ys.sum().backward()
    assert m.A_log.grad is not None and torch.isfinite(m.A_log.grad).all()
    monkeypatch.setattr(N, "MAMBA_STEP_MAX_BATCH", 2)
    with torch.no_grad():
        big, _ = _decode(m, u)  # batch 3 > 2: the spec's step (its state update: state_step)
        assert mamba_calls == [] and len(step_calls) == 4
        small, _ = _decode(m, u[:2])
    assert mamba_calls == [2] * 4
    torch.testing.assert_close(small, big[:2], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(big, ys.detach(), rtol=1e-5, atol=1e-6)


def test_whole_step_kernel_converts_each_prepared_dict_once():
    import gc

    p = {k: torch.randn(3, 2) for k in N._MAMBA_KEYS}
    first = N._prepared_arrays(p)
    assert N._prepared_arrays(p) is first and id(p["A"]) in N._PREPARED
    key = id(p["A"])
    p["A"] = torch.randn(3, 2)  # a new prepared dict's A (a parameter change): converted again
    assert N._prepared_arrays(p) is not first
    gc.collect()
    assert key not in N._PREPARED  # the old A is gone, and its entry with it
    del p
    gc.collect()
    assert not N._PREPARED


def test_decode_kernels_under_torch_compile_trace_the_spec(step_calls, mamba_calls):
    from liquidssm.spec import mamba

    x = _step_inputs(torch.float32, None)
    fn = torch.compile(lambda kw: lt.selective_state_update(**kw, dt_softplus=True),
                       backend="aot_eager")
    with torch.no_grad():
        y, h = fn(x)
        y_ref, h_ref = lt.selective_state_update(**x, dt_softplus=True)
    assert step_calls == [1]  # the eager call only: the compiled one traced the torch ops
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h, h_ref, rtol=1e-5, atol=1e-6)
    from liquidssm.torch import nn

    m = nn.Mamba(mamba.Config(d_model=8, d_state=4), seed=0)
    u = torch.randn(1, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y1, _ = torch.compile(m.step, backend="aot_eager")(u, m.initial_state(1))
        y2, _ = m.step(u, m.initial_state(1))
    assert mamba_calls == [1]
    torch.testing.assert_close(y1, y2, rtol=1e-5, atol=1e-6)
