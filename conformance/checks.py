"""The checks: plain functions of (adapter, case, dtype) that raise AssertionError on a
mismatch and adapters.Unsupported (a skip, with its reason) where a check does not apply.

Targets: the variants, blocks and models (Case.is_module: one interface) and the primitives.

outputs    forward vs the fixture (outputs and final states), output dtype = input dtype (token
           models: the parameters' dtype)
dtypes     the dtype policy with float64 parameters and states: y has u's dtype, a returned
           state u's compute dtype (float32 for bf16 / fp16), for every variant form and dtype
step       step over the sequence == forward (modules: `step`; selective_scan:
           selective_state_update; the diag/liquid scans: length-1 calls carrying the state)
chunked    forward in 3 chunks carrying the state == one forward
gradients  <vjp, v_k> vs the fixture's directional derivatives (modules: w.r.t. every parameter
           and u, parameters only for token input); vjp arrays vs the spec's vjp
stability  no NaN / inf on a long (2048) random input with the initialised (stable) parameters
api        the backend exports every variant / block / model / primitive with the spec's
           signatures
errors     bad input raises ValueError / TypeError naming the argument ("<arg>: expected ..."):
           shapes, dtypes, an array of another library (TypeError naming the backend's array
           type), missing and unexpected parameter names, a state of the wrong batch
"""

from __future__ import annotations

import inspect
import re

import numpy as np

from . import fixtures, runner
from .adapters import Adapter, Unsupported
from .cases import BLOCKS, BY_NAME, CASES, MODELS, MODULES, PRIMITIVES, VARIANTS, Case
from .tolerances import Tolerance, gradient_tolerance, output_tolerance

CHECKS = ("outputs", "dtypes", "step", "chunked", "gradients", "stability", "api", "errors")

# ------------------------------------------------------------------------------------------
# helpers


def _inputs(fx: dict) -> dict:
    """The call arrays of a fixture (without outputs and gradient data)."""
    return {k: v for k, v in fx.items() if k.split("/", 1)[0] in ("param", "in", "state", "init")}


def assert_close(what: str, got, ref, tol: Tolerance, length: int) -> None:
    got, ref = np.asarray(got), np.asarray(ref)
    if got.shape != ref.shape:
        raise AssertionError(f"{what}: shape {got.shape}, expected {ref.shape}")
    if np.iscomplexobj(ref) != np.iscomplexobj(got) and np.any(np.imag(got)):
        raise AssertionError(f"{what}: complex-ness differs from the reference")
    if not np.all(np.isfinite(got)):
        raise AssertionError(f"{what}: {np.size(got) - np.isfinite(got).sum()} non-finite values")
    err = float(np.max(np.abs(got.astype(np.complex128) - ref), initial=0.0))
    bound = tol.bound(length, float(np.max(np.abs(ref), initial=0.0)))
    if not err <= bound:
        raise AssertionError(
            f"{what}: max |x - ref| = {err:.3e} > {bound:.3e} "
            f"(rtol {tol.rtol:g}, atol {tol.atol:g}, L = {length}, max |ref| = "
            f"{np.max(np.abs(ref), initial=0.0):.3g})"
        )


def _setup(adapter: Adapter, case: Case, dtype: str):
    reason = adapter.skip_reason(case, dtype)
    if reason:
        raise Unsupported(reason)
    fx = fixtures.rounded(case, fixtures.load(case.name), dtype)
    return fx, adapter.convert(_inputs(fx), dtype)


def _composite_dtype(adapter: Adapter, case: Case, dtype: str, check: str) -> None:
    """Unsupported when the backend runs `check` of blocks and models in other dtypes only."""
    only = adapter.composite_dtypes
    if case.kind in ("block", "model") and only is not None and dtype not in only:
        raise Unsupported(f"{adapter.name}: the {check} check of blocks and models runs in "
                          f"{', '.join(only)} (their outputs run in every dtype)")


def _dtype_name(x) -> str:
    return str(x.dtype).rsplit(".", 1)[-1]  # torch.float32, array_api_strict.float32


def _time_axis(case: Case) -> int:
    return 1 if case.is_module or case.target in ("diag_scan", "liquid_scan") else -1


# ------------------------------------------------------------------------------------------
# outputs


def check_outputs(adapter: Adapter, case: Case, dtype: str) -> None:
    fx, arrays = _setup(adapter, case, dtype)
    out = runner.forward(case, adapter, arrays)
    want = runner.prefixed(fx, "out")
    if sorted(out) != sorted(want):
        raise AssertionError(f"outputs: keys {sorted(out)}, expected {sorted(want)}")
    tol = output_tolerance(dtype)
    for k in sorted(want):
        assert_close(f"output {k}", adapter.to_numpy(out[k]), want[k], tol, case.length)
    key = "y" if case.is_module else "0"
    if not np.iscomplexobj(want[key]) and _dtype_name(out[key]) != dtype:
        source = "the parameters' (token input)" if case.tokens else "the input's"
        raise AssertionError(f"output dtype {_dtype_name(out[key])}, expected {dtype} ({source})")


# ------------------------------------------------------------------------------------------
# dtype policy

_COMPUTE = {"float64": "float64", "float32": "float32", "bfloat16": "float32",
            "float16": "float32"}
_COMPLEX = {"float64": "complex128", "float32": "complex64"}


def _check_state_dtypes(what: str, state: dict, dtype: str) -> None:
    real = _COMPUTE[dtype]
    for k, v in sorted(state.items()):
        got = _dtype_name(v)
        want = _COMPLEX[real] if got.startswith("complex") else real
        if got != want:
            raise AssertionError(f"{what}: state[{k!r}] dtype {got}, expected {want} (the "
                                 f"compute dtype of {dtype} input)")


def check_dtypes(adapter: Adapter, case: Case, dtype: str) -> None:
    """The dtype policy (docs/design.md): parameters and the initial state are given in float64
    (the spec's init / initial_state, whatever u's dtype), u in `dtype`. forward and step return
    y in u's dtype; a returned state is in u's compute dtype (float64 for float64, float32 /
    complex64 for float32, bfloat16 and float16)."""
    if dtype not in adapter.io_dtypes:
        raise Unsupported(f"{adapter.name} does not take {dtype} input")
    spec = runner.SPEC.variant(case.target)
    cfg, mod = runner.config(case), adapter.dtype_variant(case.target)
    rng = np.random.default_rng(0)
    p = {k: adapter.asarray(v, "float64") for k, v in spec.init(cfg, seed=0).items()}
    u = adapter.asarray(rng.standard_normal((case.batch, case.length, cfg.d_model)), dtype)
    kw = {}
    if case.timesteps:
        kw["timesteps"] = adapter.asarray(rng.uniform(0.5, 2.0, u.shape[:2]), "float64")

    def check_y(what, y):
        if _dtype_name(y) != dtype:
            raise AssertionError(f"{what}: output dtype {_dtype_name(y)}, expected {dtype} "
                                 "(the input's)")

    check_y("forward", mod.forward(cfg, p, u, **kw))
    if not case.streaming:
        return
    st0 = {k: adapter.asarray(v, "float64") for k, v in spec.initial_state(cfg, case.batch).items()}
    y, st = mod.forward(cfg, p, u, state=st0, return_state=True, **kw)
    check_y("forward with a state", y)
    _check_state_dtypes("forward with a state", st, dtype)
    y, st = mod.forward(cfg, p, u, return_state=True, **kw)
    check_y("forward returning a state", y)
    _check_state_dtypes("forward returning a state", st, dtype)
    kw_t = {k: v[:, 0] for k, v in kw.items()}
    y_t, st = mod.step(cfg, p, st0, u[:, 0, ...], **kw_t)
    check_y("step", y_t)
    _check_state_dtypes("step", st, dtype)


# ------------------------------------------------------------------------------------------
# step == forward


def check_step(adapter: Adapter, case: Case, dtype: str) -> None:
    if not case.streaming:
        raise Unsupported(f"{case.name} is whole-sequence (non-causal): it has no step")
    if case.target == "selective_state_update":
        raise Unsupported("selective_state_update is the step (checked by selective_scan's step)")
    _composite_dtype(adapter, case, dtype, "step")
    if adapter.max_step_length is not None and case.length > adapter.max_step_length:
        raise Unsupported(f"{adapter.name}: step over L = {case.length} > "
                          f"{adapter.max_step_length} steps is too slow here")
    fx, arrays = _setup(adapter, case, dtype)
    tol = output_tolerance(dtype)
    if case.is_module:
        return _module_step(adapter, case, fx, arrays, tol)
    if case.target == "selective_scan":
        return _selective_step(adapter, case, fx, arrays, tol)
    # diag_scan, liquid_scan, liquid_selective_scan: one call per time step, state carried
    _compare_chunks(adapter, case, fx, runner.chunked(case, adapter, arrays, case.length), tol)


def _module_step(adapter, case, fx, arrays, tol):
    mod = adapter.variant(case.target)
    cfg = runner.config(case, adapter)
    init = runner.prefixed(fx, "init")
    st0 = mod.initial_state(cfg, case.batch)
    if sorted(st0) != sorted(init):
        raise AssertionError(f"initial_state: keys {sorted(st0)}, expected {sorted(init)}")
    for k, v in st0.items():
        v = adapter.to_numpy(v)
        if v.shape != init[k].shape or np.any(v != 0):
            raise AssertionError(f"initial_state[{k!r}]: expected zeros of shape {init[k].shape}")
    state = runner.prefixed(arrays, "state") or runner.prefixed(arrays, "init")
    params, inputs = runner.prefixed(arrays, "param"), runner.prefixed(arrays, "in")
    ys = []
    for t in range(case.length):
        kw = {"timesteps": inputs["timesteps"][:, t]} if "timesteps" in inputs else {}
        y_t, state = mod.step(cfg, params, state, inputs["u"][:, t, ...], **kw)
        ys.append(adapter.to_numpy(y_t))
    assert_close("step outputs", np.stack(ys, axis=1), fx["out/y"], tol, case.length)
    for k, v in runner.prefixed(fx, "out/state").items():
        assert_close(f"step final state {k}", adapter.to_numpy(state[k]), v, tol, case.length)


def _selective_step(adapter, case, fx, arrays, tol):
    o = case.config
    if o.get("complex") or o["BC"] == "const":
        raise Unsupported("selective_state_update takes real A and input-dependent B, C")
    a = runner.prefixed(arrays, "in")
    kw = case.kwargs
    b, d, n = case.batch, o["d"], o["n"]
    state = a.get("initial_state")
    if state is None:
        state = adapter.asarray(np.zeros((b, d, n)), _state_dtype(arrays))
    outs = []
    update = adapter.primitive("selective_state_update")
    for t in range(case.length):
        out_t, state = update(
            state, a["u"][:, :, t], a["delta"][:, :, t], a["A"], a["B"][..., t], a["C"][..., t],
            D=a.get("D"), z=None if "z" not in a else a["z"][:, :, t],
            dt_bias=a.get("delta_bias"), dt_softplus=kw.get("delta_softplus", False),
        )
        outs.append(adapter.to_numpy(out_t))
    assert_close("state_update outputs", np.stack(outs, axis=-1), fx["out/0"], tol, case.length)
    if "out/1" in fx:
        assert_close("state_update final state", adapter.to_numpy(state), fx["out/1"], tol,
                     case.length)


def _state_dtype(arrays) -> str:
    u = arrays.get("in/u")
    return "float64" if _dtype_name(u) == "float64" else "float32"


# ------------------------------------------------------------------------------------------
# chunked == one forward


def check_chunked(adapter: Adapter, case: Case, dtype: str) -> None:
    if not case.streaming:
        raise Unsupported(f"{case.name} is whole-sequence (non-causal): it cannot be chunked")
    if case.length < 2:
        raise Unsupported("length 1 cannot be split")
    _composite_dtype(adapter, case, dtype, "chunked")
    fx, arrays = _setup(adapter, case, dtype)
    pieces = min(3, case.length)
    _compare_chunks(adapter, case, fx, runner.chunked(case, adapter, arrays, pieces),
                    output_tolerance(dtype))


def _compare_chunks(adapter, case, fx, res, tol):
    axis = _time_axis(case)
    what = f"{len(res['parts'])} chunks"
    if case.is_module:
        y = np.concatenate([adapter.to_numpy(p["y"]) for p in res["parts"]], axis=axis)
        assert_close(f"{what}: outputs", y, fx["out/y"], tol, case.length)
        for k, v in runner.prefixed(fx, "out/state").items():
            got = adapter.to_numpy(res["final"][f"state/{k}"])
            assert_close(f"{what}: final state {k}", got, v, tol, case.length)
        return
    y = np.concatenate([adapter.to_numpy(p[0]) for p in res["parts"]], axis=axis)
    assert_close(f"{what}: outputs", y, fx["out/0"], tol, case.length)
    if "out/1" in fx:
        assert_close(f"{what}: final state", adapter.to_numpy(res["final"]), fx["out/1"], tol,
                     case.length)


# ------------------------------------------------------------------------------------------
# gradients


def check_gradients(adapter: Adapter, case: Case, dtype: str) -> None:
    if not case.grad:
        raise Unsupported("no reference gradients for this case (long cases check outputs)")
    _composite_dtype(adapter, case, dtype, "gradients")
    fx, arrays = _setup(adapter, case, dtype)
    keys = runner.differentiable(case, arrays)
    diff = {k: arrays[k] for k in keys}
    rest = {k: v for k, v in arrays.items() if k not in diff}
    cots = tuple(v for _, v in sorted(runner.prefixed(fx, "grad/cot").items()))

    def fn(d):
        return runner.loss_outputs(case, adapter, {**rest, **d})

    g = adapter.vjp(fn, diff, cots, case=case)
    missing = [k for k in keys if k not in g]
    if missing:
        raise AssertionError(f"vjp: no gradient for {missing}")
    tol = gradient_tolerance(dtype)
    ref = fx["grad/dd"]
    got = np.array([
        sum(float(np.sum(np.real(np.conj(g[k]) * fx[f"grad/dir{j}/{k}"]))) for k in keys)
        for j in range(len(ref))
    ])
    assert_close("directional derivatives <grad, v_k>", got, ref, tol, case.length)
    for k, v in runner.prefixed(fx, "vjp").items():
        assert_close(f"vjp {k} vs spec vjp", np.asarray(g[k]), v, tol, case.length)


# ------------------------------------------------------------------------------------------
# stability


def check_stability(adapter: Adapter, case: Case, dtype: str) -> None:
    reason = adapter.skip_reason(case, dtype)
    if reason:
        raise Unsupported(reason)
    spec = runner.SPEC.variant(case.target)
    cfg = spec.Config(**case.config)
    rng = np.random.default_rng(0)
    arrays = {f"param/{k}": v for k, v in spec.init(cfg, seed=0).items()}
    arrays["in/u"] = rng.standard_normal((case.batch, case.length, cfg.d_model))
    out = runner.forward(case, adapter, adapter.convert(arrays, dtype), return_state=False)
    y = adapter.to_numpy(out["y"])
    bad = np.size(y) - int(np.isfinite(y).sum())
    if bad:
        first = int(np.argmin(np.isfinite(y).all(axis=(0, 2))))
        raise AssertionError(
            f"{bad} non-finite outputs at L = {case.length} (first at t = {first})"
        )


# ------------------------------------------------------------------------------------------
# API surface


#: the functions of a variant, block or model module (those the spec module has)
MODULE_FUNCTIONS = ("param_shapes", "init", "forward", "step", "initial_state", "kernel")


def _signature_problems(name, got, ref) -> list[str]:
    """The backend's signature must list the spec's parameters in order with the same kinds and
    defaults; it may add keyword-only parameters with defaults (dtype=, device=)."""
    try:
        gs, rs = inspect.signature(got), inspect.signature(ref)
    except (TypeError, ValueError) as e:
        return [f"{name}: no signature ({e})"]
    gp, rp = list(gs.parameters.values()), list(rs.parameters.values())
    extra = gp[len(rp):]
    if [(p.name, p.kind, p.default) for p in gp[: len(rp)]] != [
        (p.name, p.kind, p.default) for p in rp
    ] or any(p.kind != p.KEYWORD_ONLY or p.default is p.empty for p in extra):
        return [f"{name}{gs} differs from the spec's {name}{rs}"]
    return []


def check_api(adapter: Adapter, target: str) -> None:
    mod = adapter.api_module()
    spec = runner.SPEC
    if not hasattr(mod, target):
        raise AssertionError(f"{mod.__name__} does not export {target!r}")
    problems = []
    if target in MODULES:
        got, ref = getattr(mod, target), spec.variant(target)
        if getattr(got, "Config", None) is not ref.Config:
            problems.append(f"{target}.Config is not the spec's Config")
        for fname in MODULE_FUNCTIONS:
            if not hasattr(ref, fname):
                continue
            if not hasattr(got, fname):
                problems.append(f"{target}.{fname} is missing")
                continue
            problems += _signature_problems(f"{target}.{fname}", getattr(got, fname),
                                            getattr(ref, fname))
    else:
        problems += _signature_problems(target, getattr(mod, target), spec.primitive(target))
    if problems:
        raise AssertionError("; ".join(problems))


# ------------------------------------------------------------------------------------------
# errors


def _representative(target: str, streaming: bool = True, tokens: bool | None = None) -> Case:
    """The first case of `target` (streaming or not, longer than 1; token input or real input
    when `tokens` is given, preferring real input otherwise)."""
    found = [c for c in CASES if c.target == target and c.streaming == streaming
             and c.length > 1 and (tokens is None or c.tokens == tokens)]
    found.sort(key=lambda c: c.tokens)  # stable: real input first
    if not found:
        raise Unsupported(f"no {'streaming' if streaming else 'whole-sequence'} case of {target}")
    return found[0]


#: the scenarios of a module with real input u (batch, L, d) / with token ids (batch, L) / both
REAL_SCENARIOS = ("u-rank", "u-width", "u-empty", "u-dtype", "u-foreign", "u_t-shape")
TOKEN_SCENARIOS = ("tokens-rank", "tokens-empty", "tokens-dtype", "tokens-foreign",
                   "token-shape")
COMMON_SCENARIOS = ("params-missing", "params-unexpected", "state-batch")


def _module_errors(adapter, case, arrays):
    """{scenario: (argument the error must name, thunk[, the error type, a text it must hold])}."""
    mod, cfg = adapter.variant(case.target), runner.config(case, adapter)
    p, u = runner.prefixed(arrays, "param"), arrays["in/u"]
    fx = fixtures.load(case.name)
    bad_state = {k: adapter.asarray(np.zeros((v.shape[0] + 1,) + v.shape[1:], v.dtype), None)
                 for k, v in runner.prefixed(fx, "init").items()}
    missing = dict(p)
    missing.pop(sorted(missing)[0])
    unexpected = {**p, "not_a_parameter": p[sorted(p)[0]]}
    init = runner.prefixed(arrays, "init")
    # the unjitted module: a jitted function would turn the foreign array into a traced one
    plain = getattr(adapter.api_module(), case.target)
    foreign = ("TypeError", adapter.array_type_name)
    errs = {
        "params-missing": ("params", lambda: mod.forward(cfg, missing, u)),
        "params-unexpected": ("params", lambda: mod.forward(cfg, unexpected, u)),
        "state-batch": ("state", lambda: mod.forward(cfg, p, u, state=bad_state)),
    }
    if case.tokens:
        as_float = adapter.asarray(np.zeros(fx["in/u"].shape), adapter.dtypes[0])
        errs.update({
            "tokens-rank": ("tokens", lambda: mod.forward(cfg, p, u[0, ...])),
            "tokens-empty": ("tokens", lambda: mod.forward(cfg, p, u[:, :0])),
            "tokens-dtype": ("tokens", lambda: mod.forward(cfg, p, as_float)),
            "tokens-foreign": ("tokens", lambda: plain.forward(cfg, p, adapter.foreign(
                fx["in/u"])), *foreign),
            "token-shape": ("token", lambda: mod.step(cfg, p, init, u)),  # a sequence
        })
        return errs
    as_int = adapter.asarray(np.zeros(fx["in/u"].shape, dtype=np.int64), None)
    errs.update({
        "u-rank": ("u", lambda: mod.forward(cfg, p, u[0, ...])),
        "u-width": ("u", lambda: mod.forward(cfg, p, u[..., :-1])),
        "u-empty": ("u", lambda: mod.forward(cfg, p, u[:, :0, ...])),
        "u-dtype": ("u", lambda: mod.forward(cfg, p, as_int)),
        "u-foreign": ("u", lambda: plain.forward(cfg, p, adapter.foreign(fx["in/u"])),
                      *foreign),
        "u_t-shape": ("u_t", lambda: mod.step(cfg, p, init, u)),  # a sequence, not a step
    })
    return errs


def _selective_errors(adapter, case, arrays):
    a = runner.prefixed(arrays, "in")
    fn = adapter.primitive(case.target)
    as_int = adapter.asarray(np.zeros(fixtures.load(case.name)["in/u"].shape, np.int64), None)

    def call(**over):
        return lambda: runner.call_primitive(fn, case, {**a, **over})

    errs = {
        "u-rank": ("u", call(u=a["u"][0, ...])),
        "u-dtype": ("u", call(u=as_int)),
        "delta-shape": ("delta", call(delta=a["delta"][:, :-1, ...])),
        "A-shape": ("A", call(A=a["A"][:-1, ...])),
        "B-shape": ("B", call(B=a["B"][:, :-1, ...])),
    }
    if "D" in a:
        errs["D-shape"] = ("D", call(D=a["D"][:-1]))
    if case.target == "liquid_selective_scan":
        errs["liquid_degree"] = (
            "liquid_degree", lambda: runner.call_primitive(fn, case, a, liquid_degree=0))
    return errs


def _scan_errors(adapter, case, arrays):
    a = runner.prefixed(arrays, "in")
    fn = adapter.primitive(case.target)
    as_int = adapter.asarray(np.zeros(fixtures.load(case.name)["in/b"].shape, np.int64), None)

    def call(**over):
        return lambda: runner.call_primitive(fn, case, {**a, **over})

    errs = {
        "a-length": ("a", call(a=a["a"][:, :-1, ...])),  # one step shorter than b
        "b-None": ("b", call(b=None)),
        "b-dtype": ("b", call(b=as_int)),
    }
    if case.target == "liquid_scan":
        errs["c-shape"] = ("c", call(c=a["c"][:, :-1, ...]))
        errs["degree"] = ("degree", lambda: runner.call_primitive(fn, case, a, degree=0))
    return errs


def _update_errors(adapter, case, arrays):
    a = runner.prefixed(arrays, "in")
    fn = adapter.primitive(case.target)

    def call(**over):
        return lambda: runner.call_primitive(fn, case, {**a, **over})

    return {
        "x-rank": ("x", call(x=a["x"][0, ...])),
        "state-shape": ("state", call(state=a["state"][:, :-1, ...])),
        "dt-shape": ("dt", call(dt=a["dt"][:, :-1, ...])),
        "A-shape": ("A", call(A=a["A"][:-1, ...])),
    }


def _module_scenarios(target: str) -> tuple[str, ...]:
    kinds = {c.tokens for c in CASES if c.target == target and c.streaming}
    names = ((REAL_SCENARIOS if False in kinds else ()) + (TOKEN_SCENARIOS if True in kinds else ())
             + COMMON_SCENARIOS)
    return names


ERROR_SCENARIOS = {
    **{t: _module_scenarios(t) for t in MODULES},
    "selective_scan": ("u-rank", "u-dtype", "delta-shape", "A-shape", "B-shape", "D-shape"),
    "liquid_selective_scan": ("u-rank", "u-dtype", "delta-shape", "A-shape", "B-shape",
                              "D-shape", "liquid_degree"),
    "selective_state_update": ("x-rank", "state-shape", "dt-shape", "A-shape"),
    "diag_scan": ("a-length", "b-None", "b-dtype"),
    "liquid_scan": ("a-length", "b-None", "b-dtype", "c-shape", "degree"),
}
NON_STREAMING = sorted({c.target for c in CASES if not c.streaming and c.is_module})
for _v in NON_STREAMING:
    ERROR_SCENARIOS[_v] = ERROR_SCENARIOS[_v] + ("step-whole-sequence",)


def check_errors(adapter: Adapter, target: str, scenario: str) -> None:
    dtype = adapter.dtypes[0]
    if scenario == "step-whole-sequence":
        case = _representative(target, streaming=False)
        _, arrays = _setup(adapter, case, dtype)
        mod, cfg = adapter.variant(target), runner.config(case, adapter)
        st = runner.SPEC.variant(target).initial_state
        try:
            state = {k: adapter.asarray(v, dtype) for k, v in st(cfg, case.batch).items()}
        except (ValueError, TypeError, NotImplementedError):
            state = {}
        u_t = arrays["in/u"][:, 0, ...]
        thunk, arg = (lambda: mod.step(cfg, runner.prefixed(arrays, "param"), state, u_t)), None
        must = ()
    else:
        tokens = scenario.startswith(("tokens-", "token-")) or None
        case = _representative(target, tokens=tokens)
        _, arrays = _setup(adapter, case, dtype)
        if case.is_module:
            table = _module_errors(adapter, case, arrays)
        elif target == "selective_state_update":
            table = _update_errors(adapter, case, arrays)
        elif target in ("diag_scan", "liquid_scan"):
            table = _scan_errors(adapter, case, arrays)
        else:
            table = _selective_errors(adapter, case, arrays)
        if scenario not in table:
            raise Unsupported(f"{scenario} does not apply to {case.name}")
        arg, thunk, *must = table[scenario]
    try:
        thunk()
    except Unsupported:
        raise
    except (ValueError, TypeError, NotImplementedError) as e:
        msg = str(e)
        if must and type(e).__name__ != must[0]:
            raise AssertionError(f"{scenario}: raised {type(e).__name__} ({msg}); expected "
                                 f"{must[0]}") from e
        if must and must[1] is not None and must[1] not in msg:
            raise AssertionError(f"{scenario}: message does not name the expected array type "
                                 f"{must[1]!r}: {msg}") from e
        if arg is not None and not re.search(rf"(^|[^\w]){re.escape(arg)}([^\w]|$)", msg):
            raise AssertionError(
                f"{scenario}: {type(e).__name__} does not name {arg!r}: {msg}"
            ) from e
        if arg is not None and "expected" not in msg:
            raise AssertionError(
                f"{scenario}: message does not say what was expected: {msg}"
            ) from e
        return
    except Exception as e:  # noqa: BLE001 - any other exception type is a failure
        raise AssertionError(
            f"{scenario}: raised {type(e).__name__} ({e}); expected ValueError or TypeError"
        ) from e
    raise AssertionError(f"{scenario}: bad input was accepted (expected an error naming {arg!r})")


__all__ = ["CHECKS", "BY_NAME", "PRIMITIVES", "VARIANTS", "BLOCKS", "MODELS", "MODULES"] + [
    n for n in dir() if n.startswith("check_")
]
