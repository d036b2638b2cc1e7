"""How a case is called: shared by the fixture generator (the spec) and the checks (a backend).

A case's arrays are one flat dict (the layout of a fixture file):
    param/<name>   parameters (modules)        in/<name>     inputs (u: real (batch, L, d) or
    state/<name>   the initial state (modules)               token ids (batch, L); timesteps;
    init/<name>    initial_state(config, batch)              or the primitive's array arguments)
                   (modules: the zeros a stream starts from)
"Modules" are the variants, blocks and models (the variant interface, Case.is_module).
`api` is anything with `variant(name)` and `primitive(name)` (an adapter, or SPEC below; variant
names a block or model too).
Outputs are a dict: modules {"y", "state/<name>"...}; primitives {"0", "1", ...} (tuple order).
"""

from __future__ import annotations

import importlib

from . import _config
from .cases import Case

SELECTIVE = ("selective_scan", "liquid_selective_scan")


class _Spec:
    """The spec as an api: variant modules and primitives of liquidssm.spec."""

    name = "spec"

    def variant(self, name):
        return importlib.import_module(f"liquidssm.spec.{name}")

    def primitive(self, name):
        return getattr(importlib.import_module("liquidssm.spec"), name)


SPEC = _Spec()


def prefixed(arrays: dict, prefix: str) -> dict:
    """{name: array} for the keys `prefix/<name>` of a flat dict."""
    n = len(prefix) + 1
    return {k[n:]: v for k, v in arrays.items() if k.startswith(prefix + "/")}


def config(case: Case, api=SPEC):
    """api's Config of the case (the nested Configs of blocks and models, built from their JSON
    form, are the spec's)."""
    return api.variant(case.target).Config(**_config.fields(case.config))


def input_spec(case: Case, cfg) -> tuple[str, int]:
    """("tokens", vocabulary size) or ("real", feature width) of the case's u."""
    if case.target == "mamba_lm":
        return "tokens", cfg.vocab_size
    if case.target == "sequence_model":
        return ("tokens", cfg.vocab_size) if cfg.tokens else ("real", cfg.d_input)
    return "real", cfg.d_model


def forward(case: Case, api, arrays: dict, *, return_state: bool | None = None) -> dict:
    """One call of the case on `api` with `arrays` (already in the api's array type)."""
    if not case.is_module:
        out = call_primitive(api.primitive(case.target), case, prefixed(arrays, "in"))
        return {str(i): o for i, o in enumerate(out if isinstance(out, tuple) else (out,))}
    mod = api.variant(case.target)
    inputs = prefixed(arrays, "in")
    kw = {}
    if "timesteps" in inputs:
        kw["timesteps"] = inputs["timesteps"]
    state = prefixed(arrays, "state") or None
    if state is not None:
        kw["state"] = state
    rs = case.streaming if return_state is None else return_state
    if rs:
        kw["return_state"] = True
    out = mod.forward(config(case, api), prefixed(arrays, "param"), inputs["u"], **kw)
    y, st = out if rs else (out, {})
    return {"y": y, **{f"state/{k}": v for k, v in st.items()}}


FIRST = {"diag_scan": "a", "liquid_scan": "a", "selective_state_update": "state"}


def call_primitive(fn, case: Case, inputs: dict, **kwargs):
    """fn(first, **rest, **case.kwargs): the first array argument positionally (the one a
    backend's dispatch looks at), the others by keyword."""
    inputs = dict(inputs)
    first = inputs.pop(FIRST.get(case.target, "u"))
    return fn(first, **inputs, **{**case.kwargs, **kwargs})


def differentiable(case: Case, arrays: dict) -> list[str]:
    """The keys gradients are taken for: every parameter and u (modules; u only when real, not
    token ids; the initial state and timesteps are held fixed); every floating array argument
    (primitives)."""
    if case.is_module:
        params = sorted(k for k in arrays if k.startswith("param/"))
        return params if case.tokens else params + ["in/u"]
    return sorted(k for k in arrays if k.startswith("in/"))


def loss_outputs(case: Case, api, arrays: dict) -> tuple:
    """The outputs contracted with the cotangents: y (modules), every output (primitives)."""
    out = forward(case, api, arrays, return_state=False)
    return (out["y"],) if case.is_module else tuple(out[k] for k in sorted(out))


def time_slices(case: Case, arrays: dict, start: int, stop: int) -> dict:
    """The inputs of time steps [start, stop) (time axis 1 for diag/liquid scans and modules,
    the last axis for the selective scans, where complex A makes B/C interleave 2 entries per
    step)."""
    out = {}
    for key, x in arrays.items():
        name = key.split("/", 1)[1]
        if case.is_module:
            timed = key in ("in/u", "in/timesteps")
            out[key] = x[:, start:stop, ...] if timed else x
        elif case.target in ("diag_scan", "liquid_scan"):
            out[key] = x[:, start:stop, ...] if name in ("a", "b", "c") else x
        else:
            if name in ("u", "delta", "z") or (name in ("B", "C", "BL") and len(x.shape) >= 3):
                k = 2 if name in ("B", "C", "BL") and case.config.get("complex") else 1
                out[key] = x[..., k * start : k * stop]
            else:
                out[key] = x
    return out


def chunk_bounds(length: int, pieces: int) -> list[tuple[int, int]]:
    """[0, L) cut into `pieces` non-empty consecutive ranges (pieces <= L)."""
    cuts = [round(i * length / pieces) for i in range(pieces + 1)]
    return [(a, b) for a, b in zip(cuts[:-1], cuts[1:])]


def chunked(case: Case, api, arrays: dict, pieces: int) -> dict:
    """Run the case in consecutive time chunks, carrying the state; the concatenated outputs
    (as a list of per-chunk outputs for the caller to join, in time order) and the final state.

    Returns {"parts": [outputs of each chunk, in time order], "final": final-state outputs}.
    """
    bounds = chunk_bounds(case.length, pieces)
    if case.is_module:
        state = prefixed(arrays, "state") or None
        parts = []
        for a, b in bounds:
            sl = time_slices(case, arrays, a, b)
            sl = {k: v for k, v in sl.items() if not k.startswith("state/")}
            if state is not None:
                sl.update({f"state/{k}": v for k, v in state.items()})
            out = forward(case, api, sl, return_state=True)
            parts.append(out)
            state = prefixed(out, "state")
        return {"parts": parts, "final": parts[-1]}
    reverse = case.kwargs.get("reverse", False)
    order = list(reversed(bounds)) if reverse else bounds
    t = case.target
    carry_key = {"diag_scan": "h0", "liquid_scan": "h0"}.get(t, "initial_state")
    carry = arrays.get(f"in/{carry_key}")
    parts = {}
    for a, b in order:
        sl = time_slices(case, arrays, a, b)
        sl.pop(f"in/{carry_key}", None)
        if carry is not None:
            sl[f"in/{carry_key}"] = carry
        extra = {"return_last_state": True} if t in SELECTIVE else {}
        out = call_primitive(api.primitive(t), case, prefixed(sl, "in"), **extra)
        out = out if isinstance(out, tuple) else (out,)
        if t == "diag_scan":
            carry = out[0][:, 0, ...] if reverse else out[0][:, -1, ...]
        else:
            carry = out[1]
        parts[(a, b)] = out
    return {"parts": [parts[ab] for ab in bounds], "final": carry}
