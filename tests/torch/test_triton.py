"""Triton kernels (liquidssm.torch.triton) against the spec, forward and backward.

Runs under TRITON_INTERPRET=1 on CPU (set before triton is imported, as the nox session does) or
on CUDA. Shapes are tiny and the chunk is 8 so that several chunks (and a ragged last one) are
exercised. Most checks run in float64 (the interpreter and CUDA Triton both support it), where the
kernels must agree with the spec's float64 reference to rounding.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
if not INTERPRET and not torch.cuda.is_available():
    pytest.skip("Triton kernels need CUDA or TRITON_INTERPRET=1 (set before importing triton)",
                allow_module_level=True)

import liquidssm.torch.triton as tr  # noqa: E402
from liquidssm.spec import scan as spec_scan  # noqa: E402
from liquidssm.spec import selective as spec  # noqa: E402

DEV = "cpu" if INTERPRET else "cuda"
F64 = torch.float64
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")


@pytest.fixture(autouse=True, scope="module")
def small_tiles():
    old = tr.configure(chunk=8, block_d=4, block_m=16)
    yield
    tr.configure(**old)


def rnd(gen, *shape, scale=1.0, dtype=F64):
    return (torch.randn(*shape, generator=gen, dtype=F64) * scale).to(dtype).to(DEV)


def np_(x):
    return None if x is None else x.detach().cpu().double().numpy()


def make(form_b, form_c, *, b=2, d=4, n=5, l=19, seed=0, options=True):
    g = torch.Generator().manual_seed(seed)
    shapes = {"const": (d, n), "var": (b, n, l), "group": (b, 2, n, l)}
    args = dict(
        u=rnd(g, b, d, l), delta=rnd(g, b, d, l, scale=0.5),
        A=-(torch.rand(d, n, generator=g, dtype=F64) + 0.5).to(DEV),
        B=rnd(g, *shapes[form_b]), C=rnd(g, *shapes[form_c]),
    )
    if options:
        args.update(D=rnd(g, d), z=rnd(g, b, d, l), delta_bias=rnd(g, d, scale=0.3),
                    initial_state=rnd(g, b, d, n))
    return args, g


def check_grads(args, flags, gen, rtol, atol):
    """Triton autograd vs spec.selective_scan_vjp (float64), with both output cotangents."""
    leaves = {k: v.clone().requires_grad_() for k, v in args.items()}
    out, last = tr.selective_scan(**leaves, **flags, return_last_state=True)
    dout, dlast = rnd(gen, *out.shape), rnd(gen, *last.shape)
    torch.autograd.backward([out, last], [dout.to(out.dtype), dlast.to(last.dtype)])
    ref = spec.selective_scan_vjp(**{k: np_(v) for k, v in args.items()}, **flags,
                                  dout=np_(dout), dlast_state=np_(dlast))
    assert set(ref) == set(args)
    for k, v in leaves.items():
        assert v.grad.shape == v.shape and v.grad.dtype == v.dtype, k
        np.testing.assert_allclose(np_(v.grad), ref[k], rtol=rtol, atol=atol, err_msg=k)


@pytest.mark.parametrize("form", ["const", "var", "group"])
def test_selective_scan_matches_spec_float64(form):
    args, gen = make(form, form)
    flags = dict(delta_softplus=True)
    out, last = tr.selective_scan(**args, **flags, return_last_state=True)
    r_out, r_last = spec.selective_scan(**{k: np_(v) for k, v in args.items()}, **flags,
                                        return_last_state=True)
    assert out.dtype == F64 and last.shape == (2, 4, 5)
    np.testing.assert_allclose(np_(out), r_out, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(np_(last), r_last, rtol=1e-11, atol=1e-11)
    check_grads(args, flags, gen, rtol=1e-10, atol=1e-10)


def test_selective_scan_minimal_mixed_forms_and_determinism():
    # constant B with input-dependent C, no optional argument, no softplus; two channel blocks
    # per group, so the partial dC of the blocks are summed
    old = tr.configure(block_d=2)
    try:
        args, gen = make("const", "var", options=False, l=13)
        out = tr.selective_scan(**args)
        ref = spec.selective_scan(**{k: np_(v) for k, v in args.items()})
        np.testing.assert_allclose(np_(out), ref, rtol=1e-11, atol=1e-11)
        check_grads(args, {}, gen, rtol=1e-10, atol=1e-10)
        # the backward is deterministic: two runs give bitwise-equal gradients
        grads = []
        for _ in range(2):
            leaves = {k: v.clone().requires_grad_() for k, v in args.items()}
            out = tr.selective_scan(**leaves)
            grads.append(torch.autograd.grad(out, list(leaves.values()), torch.ones_like(out)))
        for g1, g2 in zip(*grads):
            assert torch.equal(g1, g2)
    finally:
        tr.configure(**old)


def test_selective_scan_float32():
    args, gen = make("var", "group", seed=1)
    args = {k: v.float() for k, v in args.items()}
    out, last = tr.selective_scan(**args, delta_softplus=True, return_last_state=True)
    assert out.dtype == torch.float32 and last.dtype == torch.float32
    r_out, r_last = spec.selective_scan(**{k: np_(v) for k, v in args.items()},
                                        delta_softplus=True, return_last_state=True)
    # float32 scan of 19 steps, |out| up to ~10: measured max error ~2e-6
    np.testing.assert_allclose(np_(out), r_out, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np_(last), r_last, rtol=1e-4, atol=1e-5)
    # float32 gradients vs float64 reference: measured max error ~5e-6 (dA sums 38 terms);
    # mamba's own fp32 kernel tolerance is (6e-4, 2e-3)
    check_grads(args, dict(delta_softplus=True), gen, rtol=1e-4, atol=1e-4)


def test_chunked_calls_continue_exactly():
    args, _ = make("var", "var", l=20, options=False)
    whole, last = tr.selective_scan(**args, return_last_state=True)
    cut = {k: (v[..., :11] if k in ("u", "delta", "B", "C") else v) for k, v in args.items()}
    rest = {k: (v[..., 11:] if k in ("u", "delta", "B", "C") else v) for k, v in args.items()}
    y1, h1 = tr.selective_scan(**cut, return_last_state=True)
    y2, h2 = tr.selective_scan(**rest, initial_state=h1, return_last_state=True)
    torch.testing.assert_close(torch.cat([y1, y2], -1), whole, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h2, last, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("groups", [1, 2])
def test_state_update_matches_spec_and_the_scan(groups):
    g = torch.Generator().manual_seed(3)
    b, d, n = 2, 4, 5
    bc = (b, n) if groups == 1 else (b, groups, n)
    kw = dict(state=rnd(g, b, d, n), x=rnd(g, b, d), dt=rnd(g, b, d), A=-torch.rand(
        d, n, generator=g, dtype=F64).to(DEV), B=rnd(g, *bc), C=rnd(g, *bc), D=rnd(g, d),
        z=rnd(g, b, d), dt_bias=rnd(g, d), dt_softplus=True)
    state0 = kw["state"].clone()
    out, new = tr.selective_state_update(**kw)
    r_out, r_new = spec.selective_state_update(
        **{k: (np_(v) if isinstance(v, torch.Tensor) else v) for k, v in kw.items()})
    np.testing.assert_allclose(np_(out), r_out, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np_(new), r_new, rtol=1e-12, atol=1e-12)
    assert torch.equal(kw["state"], state0)  # not mutated
    # one step of the scan == one decode step
    step = tr.selective_scan(kw["x"][..., None], kw["dt"][..., None], kw["A"],
                             kw["B"][..., None], kw["C"][..., None], kw["D"], kw["z"][..., None],
                             kw["dt_bias"], True, kw["state"], True)
    torch.testing.assert_close(step[0][..., 0], out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(step[1], new, rtol=1e-12, atol=1e-12)


def _scan_inputs(cplx, batch_a, degree, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*s, scale=1.0):
        x = rnd(g, *s, scale=scale)
        return torch.complex(x, rnd(g, *s, scale=scale)) if cplx else x

    return (r(batch_a, 11, 3, 5, scale=0.5), r(2, 11, 3, 5), r(batch_a, 11, 3, 5, scale=0.3),
            r(2, degree, 3, 5))


@pytest.mark.parametrize("cplx", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_diag_scan_matches_spec_with_grads(cplx, reverse):
    a, b, _, h0 = _scan_inputs(cplx, 1 if reverse else 2, 1)
    leaves = [x.clone().requires_grad_() for x in (a, b, h0[:, 0])]
    h = tr.diag_scan(*leaves[:2], leaves[2], reverse=reverse)
    ref_leaves = [x.clone().requires_grad_() for x in (a, b, h0[:, 0])]
    ref = spec_scan.diag_scan.reference(*ref_leaves[:2], ref_leaves[2], reverse=reverse)
    torch.testing.assert_close(h, ref, rtol=1e-12, atol=1e-12)
    gh = torch.randn_like(h)
    for x, y in zip(torch.autograd.grad(h, leaves, gh), torch.autograd.grad(ref, ref_leaves, gh)):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)
    # no h0
    torch.testing.assert_close(tr.diag_scan(a, b, reverse=reverse),
                               spec_scan.diag_scan.reference(a, b, reverse=reverse))


@pytest.mark.parametrize("cplx", [False, True], ids=["real", "complex"])
def test_liquid_scan_matches_spec_with_grads(cplx):
    a, b, c, h0 = _scan_inputs(cplx, 1, 3, seed=1)
    outs, grads = [], []
    for fn in (tr.liquid_scan, spec_scan.liquid_scan.reference):
        leaves = [x.clone().requires_grad_() for x in (a, b, c, h0)]
        y, hl = fn(*leaves, degree=3, reverse=cplx)
        outs.append((y, hl))
        gen = torch.Generator().manual_seed(5)
        gy = torch.randn(y.shape, generator=gen, dtype=F64).to(y.dtype)
        ghl = torch.randn(hl.shape, generator=gen, dtype=F64).to(hl.dtype)
        grads.append(torch.autograd.grad([y, hl], leaves, [gy.to(DEV), ghl.to(DEV)]))
    for x, y in zip(outs[0] + grads[0], outs[1] + grads[1]):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)


def test_liquid_selective_scan_degree_one():
    args, _ = make("var", "var", options=False, l=10)
    h0 = rnd(torch.Generator().manual_seed(2), 2, 1, 4, 5)
    out, last = tr.liquid_selective_scan(**args, initial_state=h0, return_last_state=True)
    r_out, r_last = spec.liquid_selective_scan(**{k: np_(v) for k, v in args.items()},
                                               initial_state=np_(h0), return_last_state=True)
    np.testing.assert_allclose(np_(out), r_out, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(np_(last), r_last, rtol=1e-11, atol=1e-11)


def make_liquid(form_b, form_c, form_bl, p, *, options=True, **kw):
    """make() plus BL (None = tied to B) and a (b, p, d, n) initial state."""
    args, gen = make(form_b, form_c, options=options, **kw)
    b, d, l = args["u"].shape
    n = args["A"].shape[1]
    shapes = {"const": (d, n), "var": (b, n, l), "group": (b, 2, n, l)}
    if form_bl is not None:
        args["BL"] = rnd(gen, *shapes[form_bl])
    if options:
        args["initial_state"] = rnd(gen, b, p, d, n)
    return args, gen


def check_liquid(args, flags, gen, rtol, atol, grad_rtol, grad_atol):
    """Forward, last state and gradients (both cotangents) vs the spec (float64 references)."""
    leaves = {k: v.clone().requires_grad_() for k, v in args.items()}
    out, last = tr.liquid_selective_scan(**leaves, **flags, return_last_state=True)
    ref_in = {k: np_(v) for k, v in args.items()}
    r_out, r_last = spec.liquid_selective_scan(**ref_in, **flags, return_last_state=True)
    assert out.dtype == args["u"].dtype and last.shape == r_last.shape
    np.testing.assert_allclose(np_(out), r_out, rtol=rtol, atol=atol)
    np.testing.assert_allclose(np_(last), r_last, rtol=rtol, atol=atol)
    dout, dlast = rnd(gen, *out.shape), rnd(gen, *last.shape)
    torch.autograd.backward([out, last], [dout.to(out.dtype), dlast.to(last.dtype)])
    ref = spec.liquid_selective_scan_vjp(**ref_in, **flags, dout=np_(dout),
                                         dlast_state=np_(dlast))
    assert set(ref) == set(args)
    for k, v in leaves.items():
        assert v.grad.shape == v.shape and v.grad.dtype == v.dtype, k
        np.testing.assert_allclose(np_(v.grad), ref[k], rtol=grad_rtol, atol=grad_atol,
                                   err_msg=k)


@pytest.mark.parametrize("form_b, form_c, form_bl, lcontract, p", [
    ("const", "var", None, "none", 2),
    ("var", "group", "const", "tanh", 3),
    ("group", "const", "var", "lecun", 2),
    ("var", "var", "group", "none", 4),
], ids=["tied-none-p2", "tanh-p3", "lecun-p2", "p4"])
def test_liquid_selective_scan_matches_spec_float64(form_b, form_c, form_bl, lcontract, p):
    # l = 19 with chunk 8: three chunks, the last one ragged; initial state and every option
    args, gen = make_liquid(form_b, form_c, form_bl, p, seed=p)
    flags = dict(delta_softplus=True, liquid_degree=p, lcontract=lcontract)
    check_liquid(args, flags, gen, 1e-11, 1e-11, 1e-10, 1e-10)


def test_liquid_selective_scan_minimal_and_deterministic():
    # no optional argument, no softplus, two channel blocks per group (partial dB/dC/dBL sums)
    old = tr.configure(block_d=2)
    try:
        args, gen = make_liquid("const", "var", "var", 2, options=False, l=13)
        check_liquid(args, dict(liquid_degree=2, lcontract="tanh"), gen, 1e-11, 1e-11,
                     1e-10, 1e-10)
        grads = []
        for _ in range(2):
            leaves = {k: v.clone().requires_grad_() for k, v in args.items()}
            out = tr.liquid_selective_scan(**leaves, liquid_degree=2, lcontract="tanh")
            grads.append(torch.autograd.grad(out, list(leaves.values()), torch.ones_like(out)))
        for g1, g2 in zip(*grads):
            assert torch.equal(g1, g2)
    finally:
        tr.configure(**old)


def test_liquid_selective_scan_float32():
    args, gen = make_liquid("var", "group", "const", 2, seed=1)
    args = {k: v.float() for k, v in args.items()}
    flags = dict(delta_softplus=True, liquid_degree=2, lcontract="lecun")
    # float32 vs the float64 reference: measured max errors ~2e-6 (forward), ~3e-6 (gradients)
    check_liquid(args, flags, gen, 1e-4, 1e-5, 1e-4, 1e-4)


def test_liquid_selective_scan_chunked_calls_continue_exactly():
    args, _ = make_liquid("var", "var", "var", 3, options=False, l=20)
    kw = dict(liquid_degree=3, lcontract="tanh", return_last_state=True)
    seq = ("u", "delta", "B", "C", "BL")
    whole, last = tr.liquid_selective_scan(**args, **kw)
    cut = {k: (v[..., :11] if k in seq else v) for k, v in args.items()}
    rest = {k: (v[..., 11:] if k in seq else v) for k, v in args.items()}
    y1, h1 = tr.liquid_selective_scan(**cut, **kw)
    assert h1.shape == (2, 3, 4, 5)
    y2, h2 = tr.liquid_selective_scan(**rest, initial_state=h1, **kw)
    torch.testing.assert_close(torch.cat([y1, y2], -1), whole, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h2, last, rtol=1e-12, atol=1e-12)


def test_liquid_selective_scan_bad_arguments():
    args, _ = make_liquid("var", "var", None, 2, options=False, l=8)
    kw = dict(liquid_degree=2)
    with pytest.raises(ValueError, match=r"initial_state: expected shape \(2, 2, 4, 5\)"):
        tr.liquid_selective_scan(**args, **kw,
                                 initial_state=torch.zeros(2, 1, 4, 5, dtype=F64, device=DEV))
    with pytest.raises(ValueError, match="BL: expected shape"):
        tr.liquid_selective_scan(**args, **kw, BL=args["B"][:, :3])
    with pytest.raises(TypeError, match="A: expected a real floating dtype"):
        tr.liquid_selective_scan(**dict(args, A=torch.complex(args["A"], args["A"])), **kw)
    with pytest.raises(ValueError, match="liquid_degree: expected an int >= 1"):
        tr.liquid_selective_scan(**args, liquid_degree=0)
    with pytest.raises(TypeError, match="liquid_degree: expected an int >= 1"):
        tr.liquid_selective_scan(**args, liquid_degree=2.0)
    with pytest.raises(ValueError, match="lcontract: expected one of"):
        tr.liquid_selective_scan(**args, **kw, lcontract="relu")
    with pytest.raises(TypeError, match="return_last_state: expected a bool"):
        tr.liquid_selective_scan(**args, **kw, return_last_state=1)


def make_complex(form_b, form_c, *, b=2, d=4, n=5, l=19, seed=0, options=True, dtype=F64):
    """Complex A (d, n); B / C complex (d, n), real (d, n) ("real"), or real (re, im)
    interleaved (b, n, 2l) / (b, 2, n, 2l); complex initial state."""
    g = torch.Generator().manual_seed(seed)

    def c(*s):
        return torch.complex(rnd(g, *s), rnd(g, *s))

    shapes = {"var": (b, n, 2 * l), "group": (b, 2, n, 2 * l)}
    bc = {f: (lambda f=f: c(d, n) if f == "const" else rnd(g, *((d, n) if f == "real"
                                                                else shapes[f])))
          for f in ("const", "real", "var", "group")}
    args = dict(u=rnd(g, b, d, l), delta=rnd(g, b, d, l, scale=0.5),
                A=torch.complex(-(torch.rand(d, n, generator=g, dtype=F64) + 0.5),
                                rnd(g, d, n, scale=2.0)).to(DEV),
                B=bc[form_b](), C=bc[form_c]())
    if options:
        args.update(D=rnd(g, d), z=rnd(g, b, d, l), delta_bias=rnd(g, d, scale=0.3),
                    initial_state=c(b, d, n))
    if dtype != F64:
        cd = torch.complex64
        args = {k: v.to(cd if v.is_complex() else dtype) for k, v in args.items()}
    return args, g


def check_complex(args, flags, gen, rtol, atol, grad_rtol, grad_atol):
    """Forward, last state and gradients vs autograd through the spec's reference loop (run on
    float64 / complex128 torch tensors; the spec has no complex vjp)."""
    res = []
    for fn in (tr.selective_scan, spec.selective_scan.reference):
        wide = fn is not tr.selective_scan
        leaves = {k: (v.to(torch.complex128 if v.is_complex() else F64) if wide else v)
                  .clone().requires_grad_() for k, v in args.items()}
        out, last = fn(**leaves, **flags, return_last_state=True)
        if not wide:
            assert out.dtype == args["u"].dtype and last.is_complex()
            assert last.dtype == (torch.complex128 if out.dtype == F64 else torch.complex64)
            gg = torch.Generator().manual_seed(7)
            dout = torch.randn(out.shape, generator=gg, dtype=F64).to(DEV)
            dlast = torch.complex(torch.randn(last.shape, generator=gg, dtype=F64),
                                  torch.randn(last.shape, generator=gg, dtype=F64)).to(DEV)
        grads = torch.autograd.grad(
            [out, last], list(leaves.values()),
            [dout.to(out.dtype), dlast.to(last.dtype)])
        res.append((out, last, grads))
    (out, last, grads), (r_out, r_last, r_grads) = res
    np.testing.assert_allclose(np_(out), np_(r_out), rtol=rtol, atol=atol)
    torch.testing.assert_close(last.to(torch.complex128), r_last.detach(), rtol=rtol, atol=atol)
    for k, x, y in zip(args, grads, r_grads):
        assert x.shape == args[k].shape and x.dtype == args[k].dtype, k
        torch.testing.assert_close(x.to(y.dtype), y, rtol=grad_rtol, atol=grad_atol,
                                   msg=lambda m, k=k: f"{k}: {m}")


@pytest.mark.parametrize("form_b, form_c", [("const", "var"), ("group", "real"),
                                            ("var", "group")])
def test_selective_scan_complex_float64(form_b, form_c):
    args, gen = make_complex(form_b, form_c)
    check_complex(args, dict(delta_softplus=True), gen, 1e-11, 1e-11, 1e-10, 1e-10)


def test_selective_scan_complex_minimal_float32_and_determinism():
    old = tr.configure(block_d=2)
    try:
        args, gen = make_complex("real", "var", options=False, l=13)
        check_complex(args, {}, gen, 1e-11, 1e-11, 1e-10, 1e-10)
        grads = []
        for _ in range(2):
            leaves = {k: v.clone().requires_grad_() for k, v in args.items()}
            out = tr.selective_scan(**leaves)
            grads.append(torch.autograd.grad(out, list(leaves.values()), torch.ones_like(out)))
        for g1, g2 in zip(*grads):
            assert torch.equal(g1, g2)
        args, gen = make_complex("const", "group", seed=2, dtype=torch.float32)
        # float32 vs the float64 reference: measured max errors ~2e-6 (forward), ~6e-6 (grads)
        check_complex(args, dict(delta_softplus=True), gen, 1e-4, 1e-5, 1e-4, 1e-4)
    finally:
        tr.configure(**old)


def test_selective_scan_complex_chunked_calls_continue_exactly():
    args, _ = make_complex("var", "const", options=False, l=20)
    whole, last = tr.selective_scan(**args, return_last_state=True)
    cut, rest = dict(args), dict(args)
    for k in ("u", "delta"):
        cut[k], rest[k] = args[k][..., :11], args[k][..., 11:]
    cut["B"], rest["B"] = args["B"][..., :22], args["B"][..., 22:]
    y1, h1 = tr.selective_scan(**cut, return_last_state=True)
    y2, h2 = tr.selective_scan(**rest, initial_state=h1, return_last_state=True)
    torch.testing.assert_close(torch.cat([y1, y2], -1), whole, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h2, last, rtol=1e-12, atol=1e-12)


def test_selective_scan_complex_bad_arguments():
    args, _ = make_complex("var", "const", options=False, l=8)
    with pytest.raises(ValueError, match=r"B: expected shape .*\(2, 5, 16\)"):
        tr.selective_scan(**dict(args, B=args["B"][..., :8]))
    with pytest.raises(TypeError, match="B: expected a real floating dtype"):
        tr.selective_scan(**dict(args, B=torch.complex(args["B"], args["B"])))
    with pytest.raises(ValueError, match=r"initial_state: expected shape \(2, 4, 5\)"):
        tr.selective_scan(**args, initial_state=torch.zeros(2, 4, 6, dtype=torch.complex128,
                                                            device=DEV))
    # complex B / C with real A
    real = dict(args, A=args["A"].real, B=args["C"])
    with pytest.raises(TypeError, match="B: expected a real floating dtype"):
        tr.selective_scan(**real)


def test_bad_arguments_are_named():
    args, _ = make("var", "var", options=False, l=8)
    with pytest.raises(ValueError, match=r"delta: expected shape \(2, 4, 8\)"):
        tr.selective_scan(**dict(args, delta=args["delta"][..., :7]))
    with pytest.raises(ValueError, match="B: expected shape"):
        tr.selective_scan(**dict(args, B=args["B"][:, :, :3]))
    with pytest.raises(ValueError, match="C: expected shape"):
        tr.selective_scan(**dict(args, C=torch.zeros(2, 3, 5, 8, dtype=F64, device=DEV)))
    with pytest.raises(TypeError, match="delta: expected a real floating dtype"):
        tr.selective_scan(**dict(args, delta=args["delta"].to(torch.int32)))
    with pytest.raises(ValueError, match=r"initial_state: expected shape \(2, 4, 5\)"):
        tr.selective_scan(**args, initial_state=torch.zeros(2, 4, 6, dtype=F64, device=DEV))
    with pytest.raises(ValueError, match=r"a: expected shape \(1 or 2, 4, 3\)"):
        tr.diag_scan(torch.zeros(3, 4, 3, device=DEV), torch.zeros(2, 4, 3, device=DEV))
    with pytest.raises(ValueError, match=r"h0: expected shape \(2, 2, 3\)"):
        tr.liquid_scan(*(torch.zeros(2, 4, 3, device=DEV),) * 3,
                       torch.zeros(2, 3, device=DEV), degree=2)
    with pytest.raises(ValueError, match="chunk: expected a power of two"):
        tr.configure(chunk=12)


def test_custom_ops_survive_torch_compile():
    args, _ = make("const", "var", options=False, l=6)
    leaves = {k: v.clone().requires_grad_() for k, v in args.items()}

    def f(u, delta, A, B, C):
        a = torch.exp(delta[..., None] * A[None, :, None, :]).transpose(1, 2)  # (b, l, d, n)
        h = tr.diag_scan(a.contiguous(), torch.ones_like(a))
        return tr.selective_scan(u, delta, A, B, C).sum() + h.sum()

    # fullgraph: any graph break (an op the compiler cannot keep) is an error
    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    got = compiled(**leaves)
    got.backward()
    ref_leaves = {k: v.clone().requires_grad_() for k, v in args.items()}
    want = f(**ref_leaves)
    want.backward()
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for k in leaves:
        torch.testing.assert_close(leaves[k].grad, ref_leaves[k].grad, rtol=1e-12, atol=1e-12)


def test_liquid_and_complex_custom_ops_survive_torch_compile():
    # the last states' cotangents are stride-0 expands here (the gradient of a sum)
    args, _ = make_liquid("const", "var", "var", 2, options=False, l=6)
    cargs, _ = make_complex("var", "const", options=False, l=6, seed=1)
    rargs, _ = make("var", "const", options=False, l=6, seed=2)
    leaves = [{k: v.clone().requires_grad_() for k, v in a.items()}
              for a in (args, cargs, rargs)]

    def f(a, c, r):
        out, last = tr.liquid_selective_scan(**a, liquid_degree=2, lcontract="tanh",
                                             return_last_state=True)
        cout, clast = tr.selective_scan(**c, return_last_state=True)
        rout, rlast = tr.selective_scan(**r, return_last_state=True)
        return (out.sum() + last.sum() + cout.sum() + torch.view_as_real(clast).sum()
                + rout.sum() + rlast.sum())

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    got = compiled(*leaves)
    got.backward()
    ref_leaves = [{k: v.clone().requires_grad_() for k, v in a.items()}
                  for a in (args, cargs, rargs)]
    want = f(*ref_leaves)
    want.backward()
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for a, b in zip(leaves, ref_leaves):
        for k in a:
            torch.testing.assert_close(a[k].grad, b[k].grad, rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(INTERPRET or not torch.cuda.is_available(),
                    reason="bf16/fp16 need a GPU (the Triton interpreter is float32/float64 only)")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_on_gpu(dtype):
    args, _ = make("var", "var", seed=4)
    low = {k: v.to(dtype) for k, v in args.items()}
    out, last = tr.selective_scan(**low, delta_softplus=True, return_last_state=True)
    assert out.dtype == dtype and last.dtype == torch.float32
    r_out, _ = spec.selective_scan(**{k: np_(v) for k, v in low.items()}, delta_softplus=True,
                                   return_last_state=True)
    # inputs rounded identically; fp32 state; the output rounding to bf16 dominates (mamba: 3e-2)
    np.testing.assert_allclose(np_(out), r_out, rtol=3e-2, atol=5e-2)


def test_state_update_groups_of_b_and_c_may_differ():
    """B (b, n) with C (b, 2, n), and B (b, 2, n) with C (b, n): as the spec (issue 20)."""
    g = torch.Generator().manual_seed(7)
    b, d, n = 2, 4, 3
    state, x, dt = rnd(g, b, d, n), rnd(g, b, d), rnd(g, b, d, scale=0.3).abs()
    A = -rnd(g, d, n).abs() - 0.5
    for B, C in ((rnd(g, b, n), rnd(g, b, 2, n)), (rnd(g, b, 2, n), rnd(g, b, n))):
        out, new = tr.selective_state_update(state, x, dt, A, B, C)
        ref = spec.selective_state_update.reference(*(t.cpu().numpy() for t in
                                                      (state, x, dt, A, B, C)))
        np.testing.assert_allclose(out.cpu().numpy(), ref[0], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(new.cpu().numpy(), ref[1], rtol=1e-12, atol=1e-12)


def test_unused_bl_gets_a_zero_gradient_and_n0_is_refused():
    g = torch.Generator().manual_seed(8)
    b, d, n, l = 2, 4, 3, 5
    u, delta = rnd(g, b, d, l), rnd(g, b, d, l, scale=0.3).abs()
    A, B, C = -rnd(g, d, n).abs() - 0.5, rnd(g, b, n, l), rnd(g, d, n)
    BL = rnd(g, b, n, l).requires_grad_()
    out = tr.liquid_selective_scan(u, delta, A, B, C, liquid_degree=1, BL=BL)
    (gBL,) = torch.autograd.grad(out.sum(), [BL], allow_unused=True)
    assert gBL is not None and not gBL.any()
    with pytest.raises(ValueError, match="A: expected shape .*n >= 1"):
        tr.selective_scan(u, delta, A[:, :0], B[:, :0], C[:, :0])


def test_decode_dispatch_under_triton_runs_the_spec_update(monkeypatch):
    """The decode steps' unchecked updates follow selective_state_update's choice; the Triton
    package has no function of that name (its `_state_update` is a submodule): the spec's."""
    from liquidssm.spec import _dispatch

    monkeypatch.setenv("LIQUIDSSM_TORCH_IMPL", "triton")
    g = torch.Generator().manual_seed(0)
    b, d, n = 2, 4, 3
    args = [torch.randn(b, d, n, generator=g), torch.randn(b, d, generator=g),
            torch.rand(b, d, generator=g), -torch.rand(d, n, generator=g) - 0.2,
            torch.randn(b, 1, n, generator=g), torch.randn(b, 1, n, generator=g)]
    fn = _dispatch.registered("torch", "_state_update")
    y, h = fn(torch, *args)
    y_ref, h_ref = spec._state_update.reference(torch, *args)
    assert torch.equal(y, y_ref) and torch.equal(h, h_ref)
