"""The Pallas kernels lower for a GPU (Triton) with the GPU plan, on this CPU-only machine.

`jax.jit(f).trace(...).lower(lowering_platforms=("cuda",))` runs Pallas' Triton lowering (the
kernel becomes Triton IR inside a `__gpu$xla.gpu.triton` custom call) without a GPU; only the
PTX compile is left to the device. This catches what the interpreter accepts and Triton does not:
block arrays whose size is not a power of two, stacks of more than two values, Mosaic GPU being
jax's default lowering for a pallas_call without Triton compiler params. The plan is chosen by
`jax.default_backend()`, patched here to "gpu" so that the GPU plan (channel block 32, n padded to
a power of two, one sequence block) is the one lowered. Forward and gradient of every primitive
with a kernel: selective scans (p = 1, 2, 3, groups, constant B / C, lengths not a multiple of K,
d and n not powers of two, bfloat16, length 1), diag / liquid scans (real, complex, reverse),
the decode step.
"""

import jax
import jax.numpy as jnp
import liquidssm.jax as lj
import numpy as np
import pytest

rng = np.random.default_rng(0)


def _f(*shape, dtype=jnp.float32, cplx=False):
    x = rng.standard_normal(shape) + (1j * rng.standard_normal(shape) if cplx else 0)
    return jnp.asarray(x, jnp.complex64 if cplx else dtype)


def _selective(d=16, n=8, length=24, p=1, groups=0, const=False, phi="none",
               dtype=jnp.float32):
    b = 2
    u, dt, z = (_f(b, d, length, dtype=dtype) for _ in range(3))
    A = -jnp.exp(_f(d, n))
    if const:
        B, C = _f(d, n), _f(d, n)
    elif groups:
        B, C = (_f(b, groups, n, length, dtype=dtype) for _ in range(2))
    else:
        B, C = (_f(b, n, length, dtype=dtype) for _ in range(2))

    def fn(u, dt, A, B, C):
        if p == 1:
            return lj.selective_scan(u, dt, A, B, C, None, z, None, True)
        return lj.liquid_selective_scan(u, dt, A, B, C, None, z, None, True, liquid_degree=p,
                                        lcontract=phi)

    return fn, (u, dt, A, B, C)


def _linear(length=24, state=(4, 8), cplx=False, p=0, reverse=False):
    a, b = 0.9 * _f(2, length, *state, cplx=cplx), _f(2, length, *state, cplx=cplx)
    if p:
        c = 0.1 * _f(2, length, *state, cplx=cplx)
        return (lambda a, b, c: lj.liquid_scan(a, b, c, degree=p, reverse=reverse)), (a, b, c)
    return (lambda a, b: lj.diag_scan(a, b, reverse=reverse)), (a, b)


def _decode(d=16, n=8):
    state, A = _f(2, d, n), -jnp.exp(_f(d, n))
    x, dt, z = (_f(2, d) for _ in range(3))
    B, C = _f(2, n), _f(2, n)
    return (lambda state, x, dt, B, C: lj.selective_state_update(state, x, dt, A, B, C, None, z,
                                                                 None, True)), (state, x, dt, B, C)


CASES = {
    "decode-step": lambda: _decode(),
    "selective": lambda: _selective(),
    "selective-length-not-multiple-of-K": lambda: _selective(length=13),
    "selective-length-1": lambda: _selective(length=1),
    "selective-d-n-not-pow2": lambda: _selective(d=40, n=12),
    "selective-groups": lambda: _selective(groups=2),
    "selective-constant-BC": lambda: _selective(const=True),
    "selective-bfloat16": lambda: _selective(dtype=jnp.bfloat16),
    "liquid-p2": lambda: _selective(p=2),
    "liquid-p3-tanh": lambda: _selective(p=3, phi="tanh"),
    "diag": lambda: _linear(),
    "diag-complex-odd-state": lambda: _linear(length=13, state=(5, 3), cplx=True),
    "liquid-scan-p2": lambda: _linear(p=2),
    "liquid-scan-p3-complex-reverse": lambda: _linear(p=3, cplx=True, reverse=True),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_lowers_to_triton(name, monkeypatch):
    monkeypatch.delenv("LIQUIDSSM_PALLAS_INTERPRET", raising=False)
    monkeypatch.setenv("LIQUIDSSM_JAX_SCAN", "pallas")
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    fn, args = CASES[name]()

    def loss(*a):
        y = fn(*a)
        y = y[0] if isinstance(y, tuple) else y
        return jnp.sum(jnp.abs(y).astype(jnp.float32) ** 2)

    grad = jax.grad(loss, argnums=tuple(range(len(args))))
    for what, f in (("forward", fn), ("gradient", grad)):
        text = jax.jit(f).trace(*args).lower(lowering_platforms=("cuda",)).as_text()
        assert "xla.gpu.triton" in text, f"{name} {what}: no Triton kernel in the lowering"
