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


def test_liquid_selective_scan_degree_one_and_not_implemented():
    args, _ = make("var", "var", options=False, l=10)
    h0 = rnd(torch.Generator().manual_seed(2), 2, 1, 4, 5)
    out, last = tr.liquid_selective_scan(**args, initial_state=h0, return_last_state=True)
    r_out, r_last = spec.liquid_selective_scan(**{k: np_(v) for k, v in args.items()},
                                               initial_state=np_(h0), return_last_state=True)
    np.testing.assert_allclose(np_(out), r_out, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(np_(last), r_last, rtol=1e-11, atol=1e-11)
    with pytest.raises(NotImplementedError, match="liquid_degree"):
        tr.liquid_selective_scan(**args, liquid_degree=2)
    cargs = dict(args, A=torch.complex(args["A"], args["A"]))
    with pytest.raises(NotImplementedError, match="A: complex"):
        tr.selective_scan(**cargs)


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
