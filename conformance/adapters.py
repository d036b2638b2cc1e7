"""Backend adapters: what the checks need from a backend, and nothing else.

An adapter converts NumPy <-> the backend's arrays, hands out the backend's public variant, block
and model modules and primitives, and (where the backend has autodiff) computes vjps. A new backend
(CuPy, MLX, a custom kernel) runs the suite by writing one adapter class and passing
`--backend package.module:ClassName`.

Built in: one per conformance session of liquidssm.registry (numpy, array_api_strict,
numpy-numba, torch, torch-triton, torch-numba, jax, jax-pallas): each adapter sets its
implementation's selecting environment (LIQUIDSSM_NUMPY_IMPL / LIQUIDSSM_TORCH_IMPL /
LIQUIDSSM_JAX_SCAN) and, on a CPU, its interpreter (Triton's, Pallas's: float32 / small cases
only).

Gradient convention (all adapters): for a real loss L, the gradient of a complex x = p + i q is
dL/dp + i dL/dq (torch's convention; jax's is its conjugate and the jax adapter conjugates).
"""

from __future__ import annotations

import functools
import importlib
import os

import numpy as np
from liquidssm import registry

from .cases import Case

DTYPES = ("float64", "float32", "bfloat16")


class Unsupported(Exception):
    """The backend cannot run this check; the message is the reason (reported as a skip)."""


class Adapter:
    """The interface the checks use. Subclasses set name / dtypes and implement the methods."""

    name = "?"
    #: dtypes this backend supports, best first ("float64", "float32", "bfloat16")
    dtypes: tuple[str, ...] = ("float64",)
    #: input dtypes of the dtype check (checks.check_dtypes: output dtype = input dtype); it
    #: checks dtypes only, so it may list dtypes whose values the other checks do not compare
    io_dtypes: tuple[str, ...] = ("float64",)
    #: the largest Case.size this backend runs in reasonable time (None: no limit)
    max_size: int | None = None
    max_length: int | None = None
    #: the longest case whose step check (one call per time step) runs (None: all)
    max_step_length: int | None = None
    #: the dtypes in which blocks and models run the step, chunked and gradients checks (None:
    #: every dtype); their outputs (and so the dtype policy) are checked in every dtype
    composite_dtypes: tuple[str, ...] | None = None
    #: the name of the backend's array type that its wrong-library TypeError gives
    #: ("torch.Tensor"); None: not checked
    array_type_name: str | None = None

    def __init__(self, device: str = "cpu"):
        self.device = device

    # the backend's public objects
    def api_module(self):
        """The backend package whose names are checked against the spec (liquidssm.<backend>)."""
        raise NotImplementedError

    def variant(self, name: str):
        return getattr(self.api_module(), name)

    def primitive(self, name: str):
        return getattr(self.api_module(), name)

    def dtype_variant(self, name: str):
        """The variant module the dtype check calls (only the dtypes of its results are read;
        a backend may evaluate abstractly)."""
        return self.variant(name)

    # arrays
    def asarray(self, x: np.ndarray, dtype: str | None):
        """A backend array from NumPy: real floating -> dtype, complex -> complex of dtype's
        precision (complex64 below float64), other dtypes (ints) unchanged. dtype None: keep."""
        raise NotImplementedError

    def to_numpy(self, x) -> np.ndarray:
        raise NotImplementedError

    def foreign(self, x: np.ndarray):
        """x as an array of another library than the backend's (the wrong-library check)."""
        raise Unsupported(f"{self.name} runs the spec on any array-API array: no array library "
                          "is foreign to it")

    # autodiff
    def vjp(self, fn, arrays: dict, cotangents: tuple, *, case: Case) -> dict:
        """{key: gradient (NumPy)} of L = sum_i <cot_i, fn(arrays)[i]> for every key of arrays
        (<a, b> = sum Re(conj(a) b)); fn takes a dict like `arrays` and returns a tuple."""
        raise Unsupported(f"{self.name}: no automatic differentiation")

    def skip_reason(self, case: Case, dtype: str) -> str | None:
        """Why this backend does not run `case` in `dtype` (None: it runs)."""
        if dtype not in self.dtypes:
            return f"{self.name} does not support {dtype}"
        if self.max_size is not None and case.size > self.max_size:
            return f"{self.name}: case size {case.size} > {self.max_size} (too slow here)"
        if self.max_length is not None and case.length > self.max_length:
            return f"{self.name}: length {case.length} > {self.max_length} (too slow here)"
        return None

    # helpers
    def convert(self, arrays: dict, dtype: str) -> dict:
        """Every array of a fixture dict as a backend array in `dtype` (states keep float32
        state for low-precision dtypes, as the backends' dtype policy does)."""
        from .fixtures import _keeps_precision

        low = dtype not in ("float64", "float32")
        return {k: self.asarray(v, "float32" if low and _keeps_precision(k) else dtype)
                for k, v in arrays.items()}


def _np_dtype(dtype: str, cplx: bool):
    if dtype == "float64":
        return np.complex128 if cplx else np.float64
    if dtype == "float32":
        return np.complex64 if cplx else np.float32
    raise Unsupported(f"dtype {dtype} has no NumPy equivalent")


class NumpyAdapter(Adapter):
    """liquidssm.numpy: the spec itself, float64 (and float32: the spec is dtype-generic)."""

    name = "numpy"
    dtypes = ("float64", "float32")
    io_dtypes = ("float64", "float32")  # NumPy has no bfloat16; float16 is not a spec dtype

    def api_module(self):
        return importlib.import_module("liquidssm.numpy")

    def asarray(self, x, dtype):
        x = np.asarray(x)
        if dtype is None or x.dtype.kind not in "fc":
            return x.copy()
        return x.astype(_np_dtype(dtype, x.dtype.kind == "c"))

    def to_numpy(self, x):
        return np.asarray(x)

    def vjp(self, fn, arrays, cotangents, *, case):
        if case.target not in ("selective_scan", "liquid_selective_scan"):
            raise Unsupported(
                "numpy has no autodiff; its gradients are the spec's vjp functions, which exist "
                "for selective_scan and liquid_selective_scan only"
            )
        from .fixtures import spec_vjp

        # every array argument of a selective scan is differentiated, so `arrays` holds them all
        g = spec_vjp(case, arrays, cotangents)
        return {f"in/{k}": g[k] for k in g if f"in/{k}" in arrays}


class ArrayApiStrictAdapter(NumpyAdapter):
    """The spec's functions run on array_api_strict arrays (the spec is array-API code)."""

    name = "array_api_strict"
    dtypes = ("float64",)  # the same code as numpy, whose session runs float32 too
    io_dtypes = ("float64", "float32")
    max_step_length = 64  # strict arrays are ~5x slower than NumPy; numpy steps the long cases

    def __init__(self, device="cpu"):
        super().__init__(device)
        self.xp = importlib.import_module("array_api_strict")

    def asarray(self, x, dtype):
        x = np.asarray(x)
        if dtype is not None and x.dtype.kind in "fc":
            x = x.astype(_np_dtype(dtype, x.dtype.kind == "c"))
        return self.xp.asarray(x)

    def to_numpy(self, x):
        return np.asarray(x) if isinstance(x, np.ndarray) else np.from_dlpack(x)

    def vjp(self, fn, arrays, cotangents, *, case):
        raise Unsupported(
            "array_api_strict has no autodiff (the spec's vjp is checked by the numpy session)"
        )


class NumpyNumbaAdapter(NumpyAdapter):
    """liquidssm.numpy with LIQUIDSSM_NUMPY_IMPL=numba: liquidssm.cpu's forward kernels run the
    scan primitives on NumPy arrays. Only the primitives with a kernel run here: the variants,
    blocks and models call the spec's primitives, and the gradients are the spec's vjp, so the
    numpy session checks those."""

    name = "numpy-numba"

    def __init__(self, device="cpu"):
        self.record = registry.get("numpy:numba")
        os.environ.update(self.record.select)
        super().__init__(device)

    def skip_reason(self, case, dtype):
        if case.target not in self.record.kernels:
            return (f"{self.name}: {case.target} runs the spec here (the numpy session checks "
                    "it)")
        return super().skip_reason(case, dtype)

    def vjp(self, fn, arrays, cotangents, *, case):
        raise Unsupported(f"{self.name}: forward kernels only (the gradients are the spec's vjp, "
                          "checked by the numpy session)")


class TorchAdapter(Adapter):
    """liquidssm.torch with LIQUIDSSM_TORCH_IMPL=eager."""

    name = "torch"
    dtypes = ("float64", "float32", "bfloat16")
    io_dtypes = ("float64", "float32", "bfloat16", "float16")
    impl = "eager"
    array_type_name = "torch.Tensor"

    def __init__(self, device="cpu"):
        super().__init__(device)
        os.environ.update(registry.get(f"torch:{self.impl}").select)
        self.torch = importlib.import_module("torch")
        self.module = importlib.import_module("liquidssm.torch")

    def api_module(self):
        return self.module

    def _dtype(self, dtype, cplx):
        t = self.torch
        if dtype == "float64":
            return t.complex128 if cplx else t.float64
        return t.complex64 if cplx else {"float32": t.float32, "bfloat16": t.bfloat16,
                                         "float16": t.float16}[dtype]

    def asarray(self, x, dtype):
        x = np.asarray(x)
        t = self.torch.as_tensor(x.copy(), device=self.device)
        if dtype is None or x.dtype.kind not in "fc":
            return t
        return t.to(self._dtype(dtype, x.dtype.kind == "c"))

    def to_numpy(self, x):
        x = x.detach().cpu()
        if x.dtype in (self.torch.bfloat16, self.torch.float16):
            x = x.float()
        return x.numpy()

    def foreign(self, x):
        return np.asarray(x)  # a NumPy array, the commonest wrong input

    def vjp(self, fn, arrays, cotangents, *, case):
        t = self.torch
        leaves = {k: v.detach().clone().requires_grad_(True) for k, v in arrays.items()}
        outs = fn(leaves)
        loss = 0
        for o, c in zip(outs, cotangents):
            o = o.to(t.complex128 if o.is_complex() else t.float64)
            c = t.as_tensor(np.asarray(c), device=o.device)
            if o.is_complex():
                loss = loss + (t.view_as_real(o) * t.view_as_real(c.to(o.dtype))).sum()
            else:
                loss = loss + (o * c.to(o.dtype)).sum()
        grads = t.autograd.grad(loss, list(leaves.values()), allow_unused=True)
        return {
            k: (np.zeros(v.shape) if g is None else self.to_numpy(g))
            for (k, v), g in zip(leaves.items(), grads)
        }


class TorchTritonAdapter(TorchAdapter):
    """liquidssm.torch with LIQUIDSSM_TORCH_IMPL=triton; on CPU the Triton interpreter
    (TRITON_INTERPRET=1, set before triton is imported): float32 and small cases only."""

    name = "torch-triton"
    impl = "triton"

    def __init__(self, device="cpu"):
        if device == "cpu":
            os.environ.update(registry.get("torch:triton").interpret_env)
            self.dtypes = ("float32",)  # the interpreter computes bf16 wrongly (NumPy has none)
            # bf16 / fp16 inputs run the kernels in float32 (the dtype policy), so the dtype
            # check runs them; float64 is not a Triton dtype
            self.io_dtypes = ("float32", "bfloat16", "float16")
            self.max_size = 2 * 64 * 32
            self.max_length = 64
        else:
            self.dtypes = ("float32", "bfloat16")
            self.io_dtypes = ("float32", "bfloat16", "float16")
        super().__init__(device)


class TorchNumbaAdapter(TorchAdapter):
    """liquidssm.torch with LIQUIDSSM_TORCH_IMPL=numba (liquidssm.cpu's kernels, CPU only)."""

    name = "torch-numba"
    impl = "numba"

    def __init__(self, device="cpu"):
        super().__init__(device)
        from liquidssm.cpu import _torch

        _torch.STEP_MIN_STATE = 0  # the suite's small decode steps run the step kernel too


def _is_data(x) -> bool:
    return hasattr(x, "dtype") or (isinstance(x, dict) and all(map(_is_data, x.values())))


def _jit(jax, fn, transform=None):
    """fn under jax.jit (or `transform`): arrays and dicts of arrays are traced, every other
    argument (config, flags, ints, None) is static. One compilation per static signature and
    shapes, so that a check that calls fn many times (step over a sequence) compiles once."""
    cache = {}

    def call(*args, **kwargs):
        dyn_pos = tuple(i for i, a in enumerate(args) if _is_data(a))
        dyn_kw = tuple(sorted(k for k, v in kwargs.items() if _is_data(v)))
        static_pos = tuple((i, a) for i, a in enumerate(args) if i not in dyn_pos)
        static_kw = tuple(sorted((k, v) for k, v in kwargs.items() if k not in dyn_kw))
        key = (len(args), static_pos, dyn_kw, static_kw)
        if key not in cache:

            def inner(pos, kw):
                full = dict(static_pos)
                full.update(zip(dyn_pos, pos))
                return fn(*[full[i] for i in range(len(args))], **dict(static_kw), **kw)

            cache[key] = (transform or jax.jit)(inner)
        return cache[key]([args[i] for i in dyn_pos], {k: kwargs[k] for k in dyn_kw})

    return call


class JaxAdapter(Adapter):
    """liquidssm.jax, with jax_enable_x64 on so that float64 runs. Every variant function and
    primitive runs under jax.jit (config and flags static), as users run it."""

    name = "jax"
    dtypes = ("float64", "float32", "bfloat16")
    io_dtypes = ("float64", "float32", "bfloat16", "float16")
    array_type_name = "jax.Array"
    #: every check compiles (jit) the whole block or model again per dtype: mamba_block-L7-b2
    #: took 8.3 s CPU per dtype for outputs + step + chunked + gradients (7 compilations), the
    #: 12 block and model cases ~5 min in three dtypes. Their step / chunked / gradients run in
    #: float64; the variants under them run those checks in every dtype.
    composite_dtypes = ("float64",)

    def __init__(self, device="cpu"):
        super().__init__(device)
        self.jax = importlib.import_module("jax")
        self.jax.config.update("jax_enable_x64", True)
        self.jnp = importlib.import_module("jax.numpy")
        self.module = importlib.import_module("liquidssm.jax")
        self._jitted = {}
        platform = {"cuda": "gpu"}.get(device, device)
        self._device = self.jax.devices(platform)[0]

    def api_module(self):
        return self.module

    def variant(self, name):
        """The variant (block, model) module with forward / step / kernel jitted (made once per
        name)."""
        return self._transformed(name, "variant", None)

    def dtype_variant(self, name):
        """forward / step / kernel under jax.eval_shape: the traced result dtypes, which are
        those jit returns, without compiling (the dtype check reads only dtypes)."""
        return self._transformed(name, "eval_shape",
                                 lambda f: functools.partial(self.jax.eval_shape, f))

    def _transformed(self, name, kind, transform):
        import types

        if (kind, name) not in self._jitted:
            mod = getattr(self.module, name)
            jitted = types.SimpleNamespace(**vars(mod))
            for fname in ("forward", "step", "kernel"):
                if hasattr(mod, fname):
                    setattr(jitted, fname, _jit(self.jax, getattr(mod, fname), transform))
            self._jitted[(kind, name)] = jitted
        return self._jitted[(kind, name)]

    def primitive(self, name):
        if ("primitive", name) not in self._jitted:
            self._jitted[("primitive", name)] = _jit(self.jax, getattr(self.module, name))
        return self._jitted[("primitive", name)]


    def _dtype(self, dtype, cplx):
        jnp = self.jnp
        if dtype == "float64":
            return jnp.complex128 if cplx else jnp.float64
        return jnp.complex64 if cplx else {"float32": jnp.float32, "bfloat16": jnp.bfloat16,
                                           "float16": jnp.float16}[dtype]

    def asarray(self, x, dtype):
        x = np.asarray(x)
        a = self.jax.device_put(self.jnp.asarray(x), self._device)
        if dtype is None or x.dtype.kind not in "fc":
            return a
        return a.astype(self._dtype(dtype, x.dtype.kind == "c"))

    def to_numpy(self, x):
        x = np.asarray(x)
        return x.astype(np.float32) if x.dtype.kind == "V" or x.dtype.name == "bfloat16" else x

    def foreign(self, x):
        return np.asarray(x)  # a NumPy array, the commonest wrong input

    def vjp(self, fn, arrays, cotangents, *, case):
        jnp = self.jnp

        def loss(leaves):
            total = 0.0
            for o, c in zip(fn(leaves), cotangents):
                c = jnp.asarray(c)
                if jnp.iscomplexobj(o):
                    total = total + jnp.sum(jnp.real(o) * c.real + jnp.imag(o) * c.imag)
                else:
                    total = total + jnp.sum(o.astype(jnp.float64) * c.real)
            return total

        grads = self.jax.jit(self.jax.grad(loss))(arrays)
        # jax.grad of a real loss in a complex x is dL/dp - i dL/dq: conjugate to our convention
        return {k: np.conj(self.to_numpy(g)) for k, g in grads.items()}


class JaxPallasAdapter(JaxAdapter):
    """liquidssm.jax with LIQUIDSSM_JAX_SCAN=pallas (liquidssm.jax.pallas); on CPU the Pallas
    interpreter (LIQUIDSSM_PALLAS_INTERPRET=1): each new shape compiles for seconds, so only
    small cases run there."""

    name = "jax-pallas"

    def __init__(self, device="cpu"):
        record = registry.get("jax:pallas")
        os.environ.update(record.select)
        if device != "cpu":
            self.dtypes = ("float32", "bfloat16")
        else:
            os.environ.update(record.interpret_env)
            self.dtypes = ("float64",)  # one dtype: each one compiles every kernel again
            self.max_size = 512
        super().__init__(device)


#: conformance session -> adapter class, from the registry (Implementation.adapter)
BUILTIN = {name: globals()[impl.adapter] for name, impl in registry.conformance().items()}


def get(name: str, device: str = "cpu") -> Adapter:
    """The adapter for `name`: a built-in name, or 'package.module:ClassName' (a factory taking
    device=)."""
    if name in BUILTIN:
        return BUILTIN[name](device=device)
    if ":" in name:
        module, attr = name.split(":", 1)
        return getattr(importlib.import_module(module), attr)(device=device)
    raise ValueError(
        f"--backend: expected one of {sorted(BUILTIN)} or 'package.module:AdapterClass', "
        f"got {name!r}"
    )
