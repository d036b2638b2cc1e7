"""The argument checks of the five scan primitives: one function per primitive, run by the
reference (scan.py, selective.py) and by every backend implementation (torch eager, Triton, JAX)
before any compute, so every implementation refuses the same input with the same exception
naming the same argument.

Rules (docs/design.md, "Bad input"): every array argument is an array of one library, the
backend's own (`kind`, e.g. "torch.Tensor"; the reference takes the library of its first array
argument), with a floating dtype (complex only where the primitive documents it) and exactly the
documented shape; flags are Python bools; degrees are Python ints >= 1; a required array given
as None is a TypeError naming it. Model sizes (d, n) must be >= 1. Zero batch or zero length is
valid: the result is empty and the final state is the initial state (zeros if None); the
checks report it as `empty`, and backends then run the reference, which handles it.
Errors read "<argument>: expected <what>, got <what>" (TypeError for a type / dtype, ValueError
for a shape or value). Checks read shapes and dtypes only: nothing here syncs a device or
breaks tracing.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import array_api_compat

from ._common import LCONTRACTS, check_bool, check_choice, check_int, describe, namespace

__all__ = [
    "array_kind",
    "ScanArgs",
    "SelectiveArgs",
    "UpdateArgs",
    "diag_scan_args",
    "liquid_scan_args",
    "selective_scan_args",
    "selective_state_update_args",
]



#: array type -> array_kind, for every type but NumPy's (whose kind depends on the value: JAX's
#: zero-gradient arrays); a dict read, so no lru_cache-wrapped helper runs under torch.compile
_KINDS: dict = {}


def array_kind(x) -> str | None:
    """The array type of x as text ("numpy.ndarray", "torch.Tensor", "jax.Array" (tracers
    included), "array_api_strict.Array", ...), or None if x is not an array."""
    if not (hasattr(x, "shape") and hasattr(x, "dtype")):
        return None
    kind = _KINDS.get(type(x))
    if kind is None:
        kind = _kind_of(x)
        if not array_api_compat.is_numpy_array(x):
            _KINDS[type(x)] = kind
    return kind


def _kind_of(x) -> str:
    if array_api_compat.is_torch_array(x):
        return "torch.Tensor"
    if array_api_compat.is_jax_array(x):
        return "jax.Array"
    if array_api_compat.is_numpy_array(x):
        return "numpy.ndarray"
    t = type(x)
    return f"{t.__module__.split('.')[0]}.{t.__name__}"


class _Library:
    """The array type every array argument of one call must have."""

    def __init__(self, kind, named):
        if kind is not None:
            self.kind, self.why = kind, f"the {kind.split('.')[0]} backend's array type"
            return
        self.kind, self.why = None, ""
        for name, x in named:
            k = array_kind(x)
            if k is not None:
                self.kind, self.why = k, f"the array type of {name}"
                break

    def typed(self, name, x, what):
        """x: an array of this library (any dtype and shape); `what` is the expected shape."""
        kind = array_kind(x)
        if kind is None:
            raise TypeError(f"{name}: expected an array of shape {what}"
                            f"{f' ({self.kind})' if self.kind else ''}, got {describe(x)}")
        if self.kind is not None and kind != self.kind:
            raise TypeError(f"{name}: expected a {self.kind} ({self.why}), got a {kind} of "
                            f"{describe(x)}")

    def array(self, name, x, shape, what, *, complex_ok=False):
        """x: an array of this library, floating (complex if complex_ok), of `shape` (ints exact,
        None any); `what` is the shape as the message shows it. Returns x."""
        self.typed(name, x, what)
        xp = namespace(x)
        kinds = ("real floating", "complex floating") if complex_ok else "real floating"
        if not xp.isdtype(x.dtype, kinds):
            expected = "a real or complex floating" if complex_ok else "a real floating"
            raise TypeError(f"{name}: expected {expected} dtype, got {describe(x)}")
        if len(x.shape) != len(shape) or any(
            s is not None and s != t for s, t in zip(shape, x.shape)
        ):
            raise ValueError(f"{name}: expected shape {what}, got {describe(x)}")
        return x

    def optional(self, name, x, shape, what, **kw):
        return None if x is None else self.array(name, x, shape, what, **kw)


def _rank(x) -> int:
    return len(x.shape) if hasattr(x, "shape") and hasattr(x, "dtype") else -1


def _tuple(shape) -> str:
    return str(tuple(shape))


# ---------------------------------------------------------------------------------------------
# diag_scan, liquid_scan


class ScanArgs(NamedTuple):
    batch: int
    length: int
    shape: tuple  # S, the state shape after the batch (and level) axis
    degree: int  # 1 for diag_scan
    empty: bool  # zero batch, length or state size: an empty result (the reference's)


def _scan_args(a, b, c, h0, degree, reverse, kind, liquid):
    check_bool("reverse", reverse)
    lib = _Library(kind, (("a", a), ("b", b), ("c", c), ("h0", h0)))
    rank = max(_rank(b), 2)
    b = lib.array("b", b, (None,) * rank, "(batch, length, *S)", complex_ok=True)
    batch, L, S = b.shape[0], b.shape[1], tuple(b.shape[2:])
    coeff = f"(1 or {batch}, {', '.join(map(str, (L, *S)))})"
    names = (("a", a), ("c", c)) if liquid else (("a", a),)
    for name, x in names:
        x = lib.array(name, x, (None, L, *S), coeff, complex_ok=True)
        if x.shape[0] not in (1, batch):
            raise ValueError(f"{name}: expected shape {coeff}, got {describe(x)}")
    want = (batch, degree, *S) if liquid else (batch, *S)
    lib.optional("h0", h0, want, _tuple(want), complex_ok=True)
    return ScanArgs(batch, L, S, degree, batch * L * math.prod(S) == 0)


def diag_scan_args(a, b, h0=None, reverse=False, *, kind=None) -> ScanArgs:
    """Check diag_scan(a, b, h0, reverse=): b (batch, L, *S), a (1 or batch, L, *S),
    h0 (batch, *S) or None, real or complex floating; reverse a bool."""
    return _scan_args(a, b, None, h0, 1, reverse, kind, False)


def liquid_scan_args(a, b, c, h0=None, degree=None, reverse=False, *, kind=None) -> ScanArgs:
    """Check liquid_scan(a, b, c, h0, degree=, reverse=): as diag_scan, c like a (required),
    h0 (batch, degree, *S); degree an int >= 1."""
    degree = check_int("degree", degree)
    return _scan_args(a, b, c, h0, degree, reverse, kind, True)


# ---------------------------------------------------------------------------------------------
# selective_scan, liquid_selective_scan


class SelectiveArgs(NamedTuple):
    b: int
    d: int
    l: int  # noqa: E741
    n: int
    cplx: bool  # complex A
    degree: int  # liquid degree p (1 for selective_scan)
    forms: tuple  # (B, C, BL) each ("const",), ("var",), ("group", g); BL None if not given
    empty: bool  # b == 0 or l == 0


def _bc_form(lib, name, X, b, d, n, l, cplx):
    """B, C or BL: constant (d, n) (complex allowed for complex A), input-dependent
    (b, n, l) or grouped (b, g, n, l) with g dividing d (2 l, (re, im) interleaved, for
    complex A). Returns the form."""
    ll = 2 * l if cplx else l
    two = "2 " if cplx else ""
    forms = (f"(d, n) = ({d}, {n}), (batch, n, {two}length) = ({b}, {n}, {ll}) or "
             f"(batch, groups, n, {two}length) = ({b}, g, {n}, {ll}) with g dividing d")
    lib.typed(name, X, forms)
    nd = _rank(X)
    if nd not in (2, 3, 4):
        raise ValueError(f"{name}: expected shape {forms}, got {describe(X)}")
    g = X.shape[1] if nd == 4 else 1
    want = {2: (d, n), 3: (b, n, ll), 4: (b, g, n, ll)}[nd]
    lib.array(name, X, want, forms, complex_ok=cplx and nd == 2)
    if nd == 4 and (g < 1 or d % g):
        raise ValueError(f"{name}: expected shape {forms}, got {describe(X)}")
    return {2: ("const",), 3: ("var",), 4: ("group", g)}[nd]


def selective_scan_args(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                        delta_softplus=False, initial_state=None, return_last_state=False, *,
                        liquid=False, liquid_degree=1, BL=None, lcontract="none",
                        kind=None) -> SelectiveArgs:
    """Check selective_scan (liquid=False) or liquid_selective_scan (liquid=True) arguments:
    u, delta, z (b, d, l); A (d, n) real (or complex, selective_scan only); B, C, BL as
    `_bc_form`; D, delta_bias (d,); initial_state (b, d, n) ((b, p, d, n) liquid; complex for
    complex A); flags bools; liquid_degree an int >= 1; lcontract none | tanh | lecun."""
    p = 1
    if liquid:
        p = check_int("liquid_degree", liquid_degree)
        check_choice("lcontract", lcontract, LCONTRACTS)
    lib = _Library(kind, (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C)))
    lib.array("u", u, (None,) * 3, "(batch, d, length)")
    b, d, l = u.shape
    if d < 1:
        raise ValueError(f"u: expected d >= 1 in (batch, d, length), got {describe(u)}")
    lib.array("delta", delta, (b, d, l), _tuple((b, d, l)))
    lib.array("A", A, (d, None), f"({d}, n)", complex_ok=True)
    n = A.shape[1]
    if n < 1:
        raise ValueError(f"A: expected shape ({d}, n) with n >= 1, got {describe(A)}")
    xp = namespace(A)
    cplx = bool(xp.isdtype(A.dtype, "complex floating"))
    if cplx and liquid:
        raise TypeError(f"A: expected a real floating dtype (the liquid scan needs real A), "
                        f"got {describe(A)}")
    forms = (_bc_form(lib, "B", B, b, d, n, l, cplx), _bc_form(lib, "C", C, b, d, n, l, cplx),
             None if BL is None else _bc_form(lib, "BL", BL, b, d, n, l, False))
    lib.optional("D", D, (d,), f"({d},)")
    lib.optional("z", z, (b, d, l), _tuple((b, d, l)))
    lib.optional("delta_bias", delta_bias, (d,), f"({d},)")
    check_bool("delta_softplus", delta_softplus)
    check_bool("return_last_state", return_last_state)
    want = (b, p, d, n) if liquid else (b, d, n)
    lib.optional("initial_state", initial_state, want, _tuple(want), complex_ok=cplx)
    return SelectiveArgs(b, d, l, n, cplx, p, forms, b * l == 0)


# ---------------------------------------------------------------------------------------------
# selective_state_update


class UpdateArgs(NamedTuple):
    b: int
    d: int
    n: int
    groups: tuple  # (groups of B, groups of C): 1 for (b, n)
    empty: bool  # b == 0


def selective_state_update_args(state, x, dt, A, B, C, D=None, z=None, dt_bias=None,
                                dt_softplus=False, *, kind=None) -> UpdateArgs:
    """Check selective_state_update arguments (real only): x, dt, z (b, d) (x gives b, d);
    state (b, d, n) (gives n); A (d, n); B, C (b, n) or (b, g, n), g dividing d (B and C may
    have different g); D, dt_bias (d,); dt_softplus a bool."""
    lib = _Library(kind, (("state", state), ("x", x), ("dt", dt), ("A", A)))
    lib.array("x", x, (None, None), "(batch, d)")
    b, d = x.shape
    if d < 1:
        raise ValueError(f"x: expected d >= 1 in (batch, d), got {describe(x)}")
    lib.array("state", state, (b, d, None), f"({b}, {d}, n)")
    n = state.shape[2]
    if n < 1:
        raise ValueError(f"state: expected shape ({b}, {d}, n) with n >= 1, got "
                         f"{describe(state)}")
    lib.array("A", A, (d, n), _tuple((d, n)))
    lib.array("dt", dt, (b, d), _tuple((b, d)))
    groups = []
    forms = f"(batch, n) = ({b}, {n}) or (batch, groups, n) = ({b}, g, {n}), g | d"
    for name, X in (("B", B), ("C", C)):
        lib.typed(name, X, forms)
        nd = _rank(X)
        if nd not in (2, 3):
            raise ValueError(f"{name}: expected shape {forms}, got {describe(X)}")
        g = 1 if nd == 2 else X.shape[1]
        lib.array(name, X, (b, n) if nd == 2 else (b, g, n), forms)
        if g < 1 or d % g:
            raise ValueError(f"{name}: expected shape {forms}, got {describe(X)}")
        groups.append(g)
    lib.optional("dt_bias", dt_bias, (d,), f"({d},)")
    check_bool("dt_softplus", dt_softplus)
    lib.optional("D", D, (d,), f"({d},)")
    lib.optional("z", z, (b, d), _tuple((b, d)))
    return UpdateArgs(b, d, n, tuple(groups), b == 0)
