"""The Pallas kernels lower for a GPU (Triton) and a TPU (Mosaic), on this CPU-only machine.

`jax.jit(f).trace(...).lower(lowering_platforms=(platform,))` runs Pallas' lowering without the
device: on "cuda" the kernel becomes Triton IR inside a `__gpu$xla.gpu.triton` custom call, on
"tpu" a Mosaic module inside a `tpu_custom_call`; only the device compile (PTX, Mosaic's layout
passes) is left to the device. This catches what the interpreter accepts and the devices do not:
on Triton, arrays whose size is not a power of two and stacks of more than two values (and Mosaic
GPU being jax's default lowering for a pallas_call without Triton compiler params); on TPU, blocks
whose last two axes are neither whole nor tiled by (8, 128). The plan is chosen by
`jax.default_backend()`, patched here to the platform so that its plan is the one lowered
(GPU: channel block 32, n padded to a power of two, one sequence block; TPU: channel block 128,
sequence blocks of 128); Mosaic's lowering also asks for the TPU generation, which jax reads from
the device: the test names one (`TPU v5 lite`, jax's private tpu_info, patched). The TPU cases
lower with 64-bit types off (tests/jax/conftest.py turns them on): under jax_enable_x64 Mosaic's
lowering mixes int64 loop indices with its int32 ones (docs/pallas.md).
Forward and gradient of every primitive with a kernel: selective scans (p = 1, 2, 3, groups,
constant B / C, lengths not a multiple of K, d and n not powers of two, bfloat16, length 1),
diag / liquid scans (real, complex, reverse), the decode step.
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


#: platform -> (jax.default_backend() there, a string only its kernels' lowering contains)
PLATFORMS = {"cuda": ("gpu", "xla.gpu.triton"), "tpu": ("tpu", "tpu_custom_call")}


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
@pytest.mark.parametrize("name", sorted(CASES))
def test_kernels_lower(name, platform, monkeypatch):
    monkeypatch.delenv("LIQUIDSSM_PALLAS_INTERPRET", raising=False)
    monkeypatch.setenv("LIQUIDSSM_JAX_SCAN", "pallas")
    backend, marker = PLATFORMS[platform]
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    if platform == "tpu":
        from jax._src.pallas.mosaic import tpu_info

        monkeypatch.setattr(tpu_info, "get_device_kind", lambda: "TPU v5 lite")
        monkeypatch.setattr(tpu_info, "get_num_device_cores", lambda: 1)
    with jax.enable_x64(platform != "tpu"):
        _lower(name, platform, marker)


def _lower(name, platform, marker):
    fn, args = CASES[name]()

    def loss(*a):
        y = fn(*a)
        y = y[0] if isinstance(y, tuple) else y
        return jnp.sum(jnp.abs(y).astype(jnp.float32) ** 2)

    grad = jax.grad(loss, argnums=tuple(range(len(args))))
    for what, f in (("forward", fn), ("gradient", grad)):
        text = jax.jit(f).trace(*args).lower(lowering_platforms=(platform,)).as_text()
        assert marker in text, f"{name} {what}: no {platform} kernel in the lowering"
