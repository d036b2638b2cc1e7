"""Differential fuzzing: random shapes and options of every primitive, and random inputs of
every variant at tiny shapes, through the backend under test against the spec (NumPy, float64).

hypothesis draws the shapes and options; the array values come from a NumPy generator seeded by
a drawn int. Derandomized (the same examples on every run, so CI is reproducible), a bounded
number of examples per test (EXAMPLES), in the backend's best dtype (float64, or float32 where it
has no float64: the Triton interpreter). Zero batch and zero length are among the shapes (an
empty result; the final state is the initial state).
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from liquidssm.conformance import runner
from liquidssm.conformance.cases import CASES, VARIANTS

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

#: examples per test: the Triton interpreter runs each kernel call in Python, and jax compiles
#: every new shape, so they get fewer (the whole file: well under a minute per backend)
EXAMPLES = {"torch-triton": 4, "jax": 5}
DEFAULT_EXAMPLES = 25

#: |got - want| <= TOL * (1 + |want|) elementwise. Measured worst over these examples (CPU,
#: this commit): float64 7.2e-16 (torch), 3.5e-16 (jax), 0 (numpy, array_api_strict: the same
#: code); float32 (Triton interpreter; the spec gets the same float32-rounded inputs in float64)
#: 5.6e-7. The tolerances leave a factor of about 20 over the worst float32 and 10^4 over the
#: worst float64, so any real difference fails.
TOL = {"float64": 1e-11, "float32": 1e-5}


def _run(adapter, strategy, body, examples=None):
    n = examples or EXAMPLES.get(adapter.name, DEFAULT_EXAMPLES)

    @hypothesis.settings(max_examples=n, derandomize=True, deadline=None, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(strategy)
    def inner(drawn):
        body(drawn)

    inner()


def _compare(adapter, got, want, dtype, what):
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    assert len(got) == len(want), what
    tol = TOL[dtype]
    for i, (g, w) in enumerate(zip(got, want)):
        g = adapter.to_numpy(g)
        assert g.shape == w.shape, f"{what}: output {i} shape {g.shape}, expected {w.shape}"
        err = np.abs(g - w) / (1 + np.abs(w)) if w.size else np.zeros(0)
        assert err.size == 0 or err.max() <= tol, (
            f"{what}: output {i} differs from the spec by {err.max():.3g} (> {tol})")


def _call(adapter, name, first, arrays, kwargs):
    """The primitive on the backend and on the spec: (got, want, dtype). Every array but the
    first goes by keyword (BL is keyword-only)."""
    dtype = adapter.dtypes[0]
    conv = {k: adapter.asarray(v, dtype) for k, v in arrays.items()}
    # the spec's reference in float64 (float32 inputs are rounded the same way first)
    ref = {k: v.astype(np.complex64 if v.dtype.kind == "c" else np.float32)
           .astype(np.complex128 if v.dtype.kind == "c" else np.float64)
           if dtype == "float32" else v for k, v in arrays.items()}
    fn, spec = adapter.primitive(name), runner.SPEC.primitive(name)
    got = fn(conv.pop(first), **conv, **kwargs)
    want = spec(ref.pop(first), **ref, **kwargs)
    return got, want, dtype


def _cplx(r, shape, scale=1.0):
    return scale * (r.standard_normal(shape) + 1j * r.standard_normal(shape))


# sizes: zero (an empty batch or sequence) in about one example in six
_BATCH = st.sampled_from([1, 2, 1, 2, 1, 0])
_BATCH3 = st.sampled_from([1, 2, 3, 1, 2, 0])
_LENGTH = st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 9, 0])

# ---------------------------------------------------------------------------------------------
# diag_scan, liquid_scan

scan_options = st.fixed_dictionaries({
    "seed": st.integers(0, 2**16), "batch": _BATCH3, "length": _LENGTH,
    "S": st.lists(st.integers(1, 3), max_size=2), "a_batch1": st.booleans(),
    "complex": st.booleans(), "h0": st.booleans(), "reverse": st.booleans(),
    "degree": st.integers(1, 4),
})


def _scan_arrays(o, liquid):
    r = np.random.default_rng(o["seed"])
    full = (o["batch"], o["length"], *o["S"])
    coeff = (1 if o["a_batch1"] else o["batch"], o["length"], *o["S"])
    amax = 0.65 if liquid else 0.95  # |a| + |c| < 1: a bounded recurrence at every degree

    def coef(shape, m):
        mag = r.uniform(-m, m, shape)
        return mag * np.exp(1j * r.uniform(0, 2 * np.pi, shape)) if o["complex"] else mag

    def data(shape):
        return _cplx(r, shape, 0.7) if o["complex"] else r.standard_normal(shape)

    out = {"a": coef(coeff, amax), "b": data(full)}
    if liquid:
        out["c"] = coef(coeff, 0.3)
    if o["h0"]:
        out["h0"] = data((o["batch"], o["degree"], *o["S"]) if liquid else
                         (o["batch"], *o["S"]))
    return out


@pytest.mark.parametrize("name", ["diag_scan", "liquid_scan"])
def test_fuzz_scan(conformance_adapter, name):
    liquid = name == "liquid_scan"

    def body(o):
        kw = {"reverse": o["reverse"], **({"degree": o["degree"]} if liquid else {})}
        got, want, dtype = _call(conformance_adapter, name, "a", _scan_arrays(o, liquid), kw)
        _compare(conformance_adapter, got, want, dtype, f"{name} {o}")

    _run(conformance_adapter, scan_options, body)


# ---------------------------------------------------------------------------------------------
# selective_scan, liquid_selective_scan

def _divisors(d):
    return [g for g in range(1, d + 1) if d % g == 0]


_FORMS = ["const", "var", "group"]
sel_options = st.fixed_dictionaries({
    "seed": st.integers(0, 2**16), "b": _BATCH, "d": st.sampled_from([1, 2, 4]), "l": _LENGTH,
    "n": st.integers(1, 4), "complex": st.booleans(),
    "B": st.sampled_from(_FORMS), "C": st.sampled_from(_FORMS),
    "BL": st.sampled_from([None, "const", "var", "group"]), "g": st.integers(0, 2),
    "D": st.booleans(), "z": st.booleans(), "delta_bias": st.booleans(),
    "delta_softplus": st.booleans(), "initial_state": st.booleans(),
    "return_last_state": st.booleans(), "degree": st.integers(1, 3),
    "lcontract": st.sampled_from(["none", "tanh", "lecun"]),
})


def _sel_arrays(o, liquid):
    r = np.random.default_rng(o["seed"])
    b, d, l, n = o["b"], o["d"], o["l"], o["n"]
    cplx = o["complex"] and not liquid
    divs = _divisors(d)
    g = divs[o["g"] % len(divs)]
    out = {"u": r.standard_normal((b, d, l))}
    out["delta"] = r.normal(-1, 1, (b, d, l)) if o["delta_softplus"] else r.uniform(
        0.05, 1.0, (b, d, l))
    A = -r.uniform(0.3, 2.0, (d, n))
    out["A"] = A + 1j * r.normal(0, 3, (d, n)) if cplx else A
    ll = 2 * l if cplx else l

    def bc(form, scale=1.0, const_complex=cplx):
        if form == "const":
            return _cplx(r, (d, n), scale) if const_complex else scale * r.standard_normal((d, n))
        shape = (b, n, ll) if form == "var" else (b, g, n, ll)
        return scale * r.standard_normal(shape)

    out["B"], out["C"] = bc(o["B"]), bc(o["C"])
    if liquid and o["BL"] is not None:
        out["BL"] = bc(o["BL"], 0.5, False)
    for k, shape in (("D", (d,)), ("z", (b, d, l)), ("delta_bias", (d,))):
        if o[k]:
            out[k] = (0.2 if k == "delta_bias" else 1.0) * r.standard_normal(shape)
    if o["initial_state"]:
        shape = (b, o["degree"], d, n) if liquid else (b, d, n)
        out["initial_state"] = _cplx(r, shape, 0.7) if cplx else r.standard_normal(shape)
    return out


@pytest.mark.parametrize("name", ["selective_scan", "liquid_selective_scan"])
def test_fuzz_selective(conformance_adapter, name):
    liquid = name == "liquid_selective_scan"

    def body(o):
        kw = {"delta_softplus": o["delta_softplus"], "return_last_state": o["return_last_state"]}
        if liquid:
            kw.update(liquid_degree=o["degree"], lcontract=o["lcontract"])
        got, want, dtype = _call(conformance_adapter, name, "u", _sel_arrays(o, liquid), kw)
        _compare(conformance_adapter, got, want, dtype, f"{name} {o}")

    _run(conformance_adapter, sel_options, body)


# ---------------------------------------------------------------------------------------------
# selective_state_update

upd_options = st.fixed_dictionaries({
    "seed": st.integers(0, 2**16), "b": _BATCH, "d": st.sampled_from([1, 2, 4]),
    "n": st.integers(1, 4), "gB": st.integers(0, 3), "gC": st.integers(0, 3),
    "D": st.booleans(), "z": st.booleans(), "dt_bias": st.booleans(),
    "dt_softplus": st.booleans(),
})


def test_fuzz_state_update(conformance_adapter):
    def body(o):
        r = np.random.default_rng(o["seed"])
        b, d, n = o["b"], o["d"], o["n"]
        divs = _divisors(d)

        def bc(k):  # index 0: (b, n); otherwise (b, g, n) with g a divisor of d
            i = o[k] % (len(divs) + 1)
            return r.standard_normal((b, n) if i == 0 else (b, divs[i - 1], n))

        arrays = {"state": r.standard_normal((b, d, n)), "x": r.standard_normal((b, d)),
                  "dt": r.uniform(0.05, 1.0, (b, d)), "A": -r.uniform(0.3, 2.0, (d, n)),
                  "B": bc("gB"), "C": bc("gC")}
        for k, shape in (("D", (d,)), ("z", (b, d)), ("dt_bias", (d,))):
            if o[k]:
                arrays[k] = r.standard_normal(shape)
        got, want, dtype = _call(conformance_adapter, "selective_state_update", "state", arrays,
                                 {"dt_softplus": o["dt_softplus"]})
        _compare(conformance_adapter, got, want, dtype, f"selective_state_update {o}")

    _run(conformance_adapter, upd_options, body)


# ---------------------------------------------------------------------------------------------
# variants at tiny shapes: a conformance case's config, random params (seed), batch, length, u

def _variant_cases(name):
    return [c for c in CASES if c.target == name and c.size <= 4096 and not c.timesteps] or \
        [c for c in CASES if c.target == name]


@pytest.mark.parametrize("name", VARIANTS)
def test_fuzz_variant(conformance_adapter, name):
    adapter = conformance_adapter
    cases = _variant_cases(name)
    options = st.fixed_dictionaries({"case": st.sampled_from(cases), "seed": st.integers(0, 3),
                                     "batch": st.integers(1, 2), "length": st.integers(1, 6)})
    spec = importlib.import_module(f"liquidssm.spec.{name}")
    dtype = adapter.dtypes[0]

    def body(o):
        case = o["case"]
        config = spec.Config(**case.config)
        params = spec.init(config, o["seed"])
        u = np.random.default_rng(o["seed"]).standard_normal(
            (o["batch"], o["length"], config.d_model))
        if dtype == "float32":
            params = {k: v.astype(np.float32).astype(np.float64) for k, v in params.items()}
            u = u.astype(np.float32).astype(np.float64)
        kw = {"return_state": True} if case.streaming else {}
        want = spec.forward(config, params, u, **kw)
        mod = adapter.variant(name)
        got = mod.forward(config, {k: adapter.asarray(v, dtype) for k, v in params.items()},
                          adapter.asarray(u, dtype), **kw)
        if case.streaming:
            got = (got[0], *[got[1][k] for k in sorted(want[1])])
            want = (want[0], *[want[1][k] for k in sorted(want[1])])
        _compare(adapter, got, want, dtype, f"{name} {case.name} {o}")

    _run(adapter, options, body, examples=max(2, EXAMPLES.get(adapter.name, 16) // 2))
