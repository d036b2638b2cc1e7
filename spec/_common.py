"""Shared pieces of the specification: array namespaces, argument checks, discretisation.

Everything that computes outputs is written against the array API standard
(`array_api_compat.array_namespace`), in the floating dtype of its inputs (float64 in the spec's
own tests). Checks only read shapes and config values, never array values, so the code stays
traceable by JAX and torch.compile.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import array_api_compat

__all__ = [
    "namespace",
    "check_array",
    "check_int",
    "check_float",
    "check_bool",
    "check_choice",
    "complex_dtype",
    "to_complex",
    "cast_arrays",
    "discretize",
    "causal_fft_conv",
    "check_seed",
    "child_seed",
    "with_prefix",
    "strip_prefix",
    "check_config",
    "check_params",
    "check_library",
    "check_token_ids",
    "register_int_reader",
    "shapes_of",
    "check_shards",
    "scan_options",
]


#: array type -> its namespace, filled by `namespace` on first sight of an array type whose
#: namespace does not depend on the array's value (every type but NumPy's: array_api_compat
#: tells JAX's zero-gradient NumPy arrays apart by dtype). Later lookups are a dict read,
#: so array_api_compat's lru_cache-wrapped helpers stay out of torch.compile's traced regions.
_NAMESPACES: dict = {}


#: the liquid input nonlinearities phi (spec.nn.lcontract); lecun is LeCun's scaled tanh,
#: phi(x) = LECUN_SCALE tanh(LECUN_SLOPE x) (the one place of these constants)
LCONTRACTS = ("none", "tanh", "lecun")
LECUN_SCALE, LECUN_SLOPE = 1.7159, 0.666
#: lcontract name -> the integer the compiled kernels (numba, Triton) branch on
LCONTRACT_CODES = {name: code for code, name in enumerate(LCONTRACTS)}


def namespace(*arrays):
    """The array namespace shared by `arrays` (None entries are ignored)."""
    xp = None
    for a in arrays:
        if a is not None:
            found = _NAMESPACES.get(type(a))
            if found is None or (xp is not None and found is not xp):
                return _lookup_namespace(arrays)
            xp = found
    return xp if xp is not None else _lookup_namespace(arrays)


def _lookup_namespace(arrays):
    xs = [a for a in arrays if a is not None]
    xp = array_api_compat.array_namespace(*xs)
    for a in xs:
        if array_api_compat.is_array_api_obj(a) and not array_api_compat.is_numpy_array(a):
            _NAMESPACES[type(a)] = xp
    return xp


def describe(x) -> str:
    """What a bad argument was, for the errors: None, its type, or its shape and dtype."""
    if x is None:
        return "None"
    shape = getattr(x, "shape", None)
    if shape is None or not hasattr(x, "dtype"):
        return f"an object of type {type(x).__name__}"
    return f"shape {tuple(shape)} and dtype {x.dtype}"


def check_array(name: str, x, shape: Sequence[int | str | None], *, complex_ok: bool = False):
    """Check that `x` is a floating array of the given shape; raise a clear error if not.

    `shape` entries are ints (exact sizes), None (any size), or strings naming a size that must be
    >= 1 (such as "length"). Returns `x` unchanged.
    """
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name}: expected an array of shape {_fmt(shape)}, got {describe(x)}")
    xp = namespace(x)
    kinds = ("real floating", "complex floating") if complex_ok else "real floating"
    if not xp.isdtype(x.dtype, kinds):
        expected = "a real or complex floating" if complex_ok else "a real floating"
        raise TypeError(f"{name}: expected {expected} dtype, got {describe(x)}")
    if len(x.shape) != len(shape) or any(
        isinstance(s, int) and d != s for s, d in zip(shape, x.shape)
    ):
        raise ValueError(f"{name}: expected shape {_fmt(shape)}, got {describe(x)}")
    for s, d in zip(shape, x.shape):
        if isinstance(s, str) and d < 1:
            raise ValueError(f"{name}: expected {s} >= 1, got {describe(x)}")
    return x


def _fmt(shape) -> str:
    inner = ", ".join("*" if s is None else str(s) for s in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def check_int(name: str, value, *, minimum: int = 1) -> int:
    """A Python int >= minimum (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return value


def check_float(name: str, value, *, positive: bool = False) -> float:
    """A finite real number (strictly positive if asked)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{name}: expected a number > 0, got {value!r}")
    return float(value)


def check_bool(name: str, value) -> bool:
    """A Python bool (1, 0, None, numpy bools and other truthy values are refused)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected a bool, got {value!r}")
    return value


def check_choice(name: str, value, choices: Sequence) -> object:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {list(choices)}, got {value!r}")
    return value


def check_seed(seed) -> int:
    """A seed: a Python int >= 0 (None, bools, floats and negative ints are refused, so that a
    seed always names one set of weights)."""
    return check_int("seed", seed, minimum=0)


def child_seed(seed: int, k: int) -> int:
    """The seed of part k of a composite (a block's own layers, a model's layer k):
    SeedSequence([seed, k]).generate_state(1)[0], an int independent of every other k."""
    import numpy as np  # init-time only: compute code never calls NumPy

    return int(np.random.SeedSequence([check_seed(seed), k]).generate_state(1)[0])


def with_prefix(params: dict, prefix: str) -> dict:
    """{prefix + name: value} (a submodule's parameters or state inside its parent's dict)."""
    return {prefix + k: v for k, v in params.items()}


def strip_prefix(params: dict, prefix: str) -> dict:
    """The entries whose name starts with `prefix`, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


def check_config(config, types, name: str = "config"):
    """config must be an instance of exactly one of `types` (a liquid_s5.Config is not an
    s5.Config here); a TypeError naming `name` and the expected classes otherwise."""
    types = types if isinstance(types, tuple) else (types,)
    if type(config) not in types:
        expected = " or ".join(f"{t.__module__}.{t.__qualname__}" for t in types)
        raise TypeError(f"{name}: expected {expected}, got {type(config).__module__}."
                        f"{type(config).__qualname__} ({config!r})")
    return config


def check_library(name: str, x, ref, ref_name: str = "params"):
    """The array x must be of the same array library as `ref` (one call never mixes libraries:
    a NumPy array among torch tensors would otherwise fail deep inside the computation, or be
    silently converted); a TypeError naming `name` and the expected library otherwise."""
    if namespace(x) is not namespace(ref):
        raise TypeError(f"{name}: expected an array of the library of {ref_name} "
                        f"({type(ref).__module__}.{type(ref).__qualname__}), got "
                        f"{type(x).__module__}.{type(x).__qualname__}")
    return x


def check_params(params, shapes: dict, *, inputs: dict | None = None) -> dict:
    """params must hold exactly `shapes`' names (missing and unexpected both named: a stray key,
    such as a bias of a bias=False model, must never change an output), each a real floating
    array of its shape, all of one array library; `inputs` ({name: array}, such as {"u": u}) must
    be arrays of that library too (None entries are skipped). Returns params."""
    if not isinstance(params, dict):
        raise TypeError(f"params: expected a dict of arrays (keys {sorted(shapes)}), got "
                        f"{type(params).__name__}")
    missing = [k for k in shapes if k not in params]
    extra = sorted((k for k in params if k not in shapes), key=repr)
    if missing or extra:
        raise ValueError(f"params: expected exactly the keys of param_shapes(config), got "
                         f"missing {missing} and unexpected {extra}")
    ref = None
    for name, shape in shapes.items():
        x = check_array(f"params[{name!r}]", params[name], shape)
        if ref is None:
            ref = x
        else:
            check_library(f"params[{name!r}]", x, ref, f"params[{next(iter(shapes))!r}]")
    for name, x in (inputs or {}).items():  # non-arrays are left to the input's own check
        if ref is not None and hasattr(x, "shape") and hasattr(x, "dtype"):
            check_library(name, x, ref)
    return params


#: array type -> reader(x): (min, max) of an integer array as Python ints, or None where reading
#: values is costly or impossible (a jit tracer, an accelerator array); backends register theirs
_INT_READERS: dict = {}


def register_int_reader(array_type: type, reader) -> None:
    """Let check_token_ids read the values of `array_type` arrays through reader(x)."""
    _INT_READERS[array_type] = reader


def _int_bounds(x):
    for t in type(x).__mro__:
        if t in _INT_READERS:
            return _INT_READERS[t](x)
    xp = namespace(x)
    if array_api_compat.is_numpy_array(x) or array_api_compat.is_array_api_strict_namespace(xp):
        return int(xp.min(x)), int(xp.max(x))
    return None


def check_token_ids(name: str, tokens, vocab: int):
    """Token ids must lie in [0, vocab): a ValueError naming `name` otherwise (an id of -1 would
    wrap to the last row, an id >= vocab index out of range). Checked where the values can be
    read without a device sync or a trace: NumPy and array-api-strict arrays always, torch CPU
    tensors outside torch.compile, JAX concrete CPU arrays (not under jit). Elsewhere an id out of
    range is the caller's error (docs/design.md)."""
    bounds = _int_bounds(tokens)
    if bounds is not None and (bounds[0] < 0 or bounds[1] >= vocab):
        raise ValueError(f"{name}: expected token ids in [0, {vocab}), got ids from {bounds[0]} "
                         f"to {bounds[1]}")
    return tokens


def shapes_of(module, config) -> dict:
    """{name: shape} of module's parameters for config (every spec module has param_shapes)."""
    return dict(module.param_shapes(config))


#: what a `shards=` object must have (the protocol: liquidssm.spec.parallel)
SHARDS_PROTOCOL = ("scan_options", "previous_tail", "last", "total")


def check_shards(shards, *, u=None, halo: int = 0, unsupported: str | None = None):
    """shards= of a forward: None (one device), or an object with the protocol of
    liquidssm.spec.parallel (a TypeError naming what it lacks otherwise). `unsupported`: why this
    forward has no sharded form (a ValueError naming shards when one is given). `halo`: the
    entries each slice reads from the one before it (a causal convolution's K - 1); u's slice
    (batch, L_slice, ...) must be at least that long (a ValueError naming u otherwise: the halo
    would span two slices). Returns shards."""
    if shards is None:
        return None
    if unsupported is not None:
        raise ValueError(f"shards: {unsupported}; expected shards=None")
    lacking = [a for a in SHARDS_PROTOCOL if not hasattr(shards, a)]
    if lacking or not isinstance(shards.scan_options, dict):
        raise TypeError(f"shards: expected None or an object with {list(SHARDS_PROTOCOL)} "
                        f"(liquidssm.spec.parallel; scan_options a dict), got "
                        f"{type(shards).__name__} lacking {lacking or ['a dict scan_options']}")
    if u is not None and u.shape[1] < halo:
        raise ValueError(f"u: expected each slice of the sequence to have length >= {halo} "
                         f"(the causal convolution reads the previous slice's last {halo} "
                         f"entries), got {describe(u)}")
    return shards


def scan_options(shards) -> dict:
    """The keyword arguments of the scan primitives for `shards` ({} for None)."""
    return {} if shards is None else shards.scan_options


def complex_dtype(xp, real_dtype):
    """complex128 for float64 inputs, complex64 otherwise."""
    return xp.complex128 if real_dtype == xp.float64 else xp.complex64


def cast_arrays(arrays: dict | None, real_dtype) -> dict | None:
    """The dtype policy of every variant (docs/design.md): parameters and states are read in the
    real dtype of u, whatever dtype they arrive in. Real floating entries of `arrays` are cast to
    `real_dtype`, complex ones to complex_dtype(real_dtype), others (ints, non-arrays) kept; None
    stays None. Entries already in the target dtype are not copied.
    """
    if arrays is None:
        return None
    out = {}
    for k, x in arrays.items():
        if hasattr(x, "dtype") and hasattr(x, "shape"):
            xp = namespace(x)
            if xp.isdtype(x.dtype, "complex floating"):
                x = xp.astype(x, complex_dtype(xp, real_dtype), copy=False)
            elif xp.isdtype(x.dtype, "real floating"):
                x = xp.astype(x, real_dtype, copy=False)
        out[k] = x
    return out


def to_complex(re, im):
    """re + i im, as the complex dtype matching re's precision (shapes must match)."""
    xp = namespace(re, im)
    cdt = complex_dtype(xp, re.dtype)
    return xp.astype(re, cdt) + 1j * xp.astype(im, cdt)


def discretize(A, B, dt, method: str):
    """Discretise x' = A x + B u (A diagonal, given as its diagonal) with step dt.

    zoh:      Abar = exp(dt A),                    Bbar = (Abar - 1) / A * B
    bilinear: Abar = (1 + dt A / 2) / (1 - dt A / 2),  Bbar = dt / (1 - dt A / 2) * B
    A, dt and B broadcast together; returns (Abar, Bbar) of the broadcast shape.
    """
    xp = namespace(A)
    dtA = dt * A
    if method == "zoh":
        Abar = xp.exp(dtA)
        return Abar, (Abar - 1) / A * B
    if method == "bilinear":
        denom = 1 - dtA / 2
        return (1 + dtA / 2) / denom, dt / denom * B
    raise ValueError(f"discretization: expected one of ['zoh', 'bilinear'], got {method!r}")


def causal_fft_conv(u, K):
    """y[..., l] = sum_{j<=l} K[..., j] u[..., l - j], by FFT of length 2L (a linear convolution).

    u: (..., L) real; K: broadcastable to u, real, length L. Returns real (..., L).
    """
    xp = namespace(u, K)
    L = u.shape[-1]
    if 0 in u.shape or 0 in K.shape:  # an empty batch or length (some FFTs refuse size 0)
        shape = tuple(xp.broadcast_arrays(u, K)[0].shape)
        return xp.zeros(shape, dtype=xp.result_type(u, K))
    n = 2 * L
    y = xp.fft.irfft(xp.fft.rfft(u, n=n) * xp.fft.rfft(K, n=n), n=n)
    return y[..., :L]
