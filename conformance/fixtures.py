"""Generate the conformance fixtures: the spec in float64 on every case of cases.py.

    python -m liquidssm.conformance.fixtures [--out DIR] [--only SUBSTRING] [--check]

writes DIR/<case>.npz (the arrays of runner.py's layout plus out/* and grad/*) and
DIR/manifest.json (spec version, and per case: target, config, kwargs, seed, shapes). --check
regenerates in memory and reports every difference from the committed files instead of writing.

Inputs come from numpy.random.default_rng(case.seed) in a fixed order (token ids of token models
uniform in [0, vocab_size)), parameters from the variant's, block's or model's
init(config, seed) (a parameter that init sets to all zeros, such as an untied liquid coupling,
gets 0.1 * N(0, 1) so that its terms are exercised), so regeneration is bit-identical on one
machine; across BLAS builds `compare` allows 1e-12 relative.

Reference gradients, for a fixed output cotangent `cot` and F(x) = <cot, f(x)>
(<a, b> = sum Re(conj(a) b)): K = 3 random directions v_k over the differentiable arrays
(runner.differentiable; N(0, 1) entries, times min(1, rms(x)) for the parameters x of blocks and
models, whose small weights (an embedding ~ N(0, 0.02^2)) make F too curved along an N(0, 1)
direction for h: R(1e-4) and R(1e-5) differed by 1e-5 relative) and the directional
derivatives dF(x + e v_k)/de at e = 0 by a Richardson-extrapolated central difference,
R = (4 D(h) - D(2h)) / 3 with D(h) = (F(x + h v) - F(x - h v)) / (2h), h = FD_STEP = 1e-4
(truncation O(h**4)), and R(h) must agree with R(h / 2) to FD_AGREE = 1e-8 relative, else
generation fails. The selective scans also store the spec's exact vjp (selective_scan_vjp /
liquid_selective_scan_vjp) under vjp/in/<arg>.
"""

from __future__ import annotations

import argparse
import json
import sys
import zlib
from pathlib import Path

import numpy as np

from . import _config, runner
from .cases import CASES, Case

DIR = Path(__file__).resolve().parent / "fixtures"
K_DIRECTIONS = 3
#: h of the finite differences. 1e-3 was too coarse for S4D-LegS (imaginary parts of A up to
#: ~N pi, L = 64): R(1e-3) was off by 2.7e-4 of 23.6 (measured against R(1e-4 .. 1e-5)).
FD_STEP = 1e-4
#: R(h) and R(h / 2) must agree to this (relative); the gradient tolerance (1e-7) is 10x looser
FD_AGREE = 1e-8
STATE_PREFIX = 5  # the non-zero initial state of a variant: its state after 5 random steps


def _spec_version() -> str:
    from liquidssm.spec import SPEC_VERSION

    return SPEC_VERSION


# ------------------------------------------------------------------------------------------
# inputs


def _cnormal(rng, shape):
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


def _decay(rng, shape, cplx):
    """|a| in [0.5, 0.99] (a stable recurrence), a random phase if complex."""
    r = rng.uniform(0.5, 0.99, shape)
    return r * np.exp(1j * rng.uniform(-np.pi, np.pi, shape)) if cplx else r


def _scan_inputs(case: Case, rng) -> dict:
    o, b, L = case.config, case.batch, case.length
    S, cplx = tuple(o["S"]), o.get("complex", False)
    ab = 1 if o.get("a_batch1") else b
    arr = {"in/a": _decay(rng, (ab, L, *S), cplx)}
    arr["in/b"] = _cnormal(rng, (b, L, *S)) if cplx else rng.standard_normal((b, L, *S))
    if case.target == "liquid_scan":
        c = 0.2 * (_cnormal(rng, (ab, L, *S)) if cplx else rng.standard_normal((ab, L, *S)))
        arr["in/c"] = c
    if case.state:
        p = case.kwargs.get("degree")
        shape = (b, *S) if p is None else (b, p, *S)
        arr["in/h0"] = _cnormal(rng, shape) if cplx else rng.standard_normal(shape)
    return arr


def _selective_inputs(case: Case, rng) -> dict:
    o, b, L = case.config, case.batch, case.length
    d, n, cplx, form = o["d"], o["n"], o.get("complex", False), o["BC"]
    update = case.target == "selective_state_update"
    softplus = case.kwargs.get("delta_softplus") or case.kwargs.get("dt_softplus")
    seq = (b, d) if update else (b, d, L)
    arr = {}
    if update:
        arr["in/state"] = rng.standard_normal((b, d, n))
        arr["in/x"] = rng.standard_normal(seq)
    else:
        arr["in/u"] = rng.standard_normal(seq)
    delta = rng.normal(-1.0, 0.5, seq) if softplus else rng.uniform(0.05, 0.5, seq)
    arr["in/dt" if update else "in/delta"] = delta
    A = -rng.uniform(0.5, 2.0, (d, n))
    arr["in/A"] = A + 1j * rng.normal(0, 2.0, (d, n)) if cplx else A
    lt = 2 * L if cplx else L  # complex A with input-dependent B/C: (re, im) interleaved in time
    for name in ("B", "C") + (("BL",) if o.get("BL") else ()):
        if form == "const":
            arr[f"in/{name}"] = _cnormal(rng, (d, n)) if cplx else rng.standard_normal((d, n))
        elif form == "vary":
            arr[f"in/{name}"] = rng.standard_normal((b, n) if update else (b, n, lt))
        else:
            g = o["g"]
            arr[f"in/{name}"] = rng.standard_normal((b, g, n) if update else (b, g, n, lt))
    if o.get("D"):
        arr["in/D"] = rng.standard_normal(d)
    if o.get("z"):
        arr["in/z"] = rng.standard_normal(seq)
    if o.get("delta_bias"):
        arr["in/dt_bias" if update else "in/delta_bias"] = rng.normal(0.0, 0.1, d)
    if case.state:
        p = case.kwargs.get("liquid_degree")
        shape = (b, d, n) if p is None else (b, p, d, n)
        h0 = _cnormal(rng, shape) if cplx else rng.standard_normal(shape)
        arr["in/initial_state"] = 0.5 * h0
    return arr


def _module_u(case: Case, cfg, rng, length: int):
    """u of a module case: token ids uniform in [0, vocab) (batch, L) or N(0, 1) (batch, L, d)."""
    kind, n = runner.input_spec(case, cfg)
    if kind == "tokens":
        return rng.integers(0, n, (case.batch, length), dtype=np.int64)
    return rng.standard_normal((case.batch, length, n))


def _module_inputs(case: Case, rng) -> dict:
    mod = runner.SPEC.variant(case.target)
    cfg = runner.config(case)
    arr = {}
    for k, v in mod.init(cfg, seed=case.seed).items():
        v = np.asarray(v, dtype=np.float64)
        arr[f"param/{k}"] = 0.1 * rng.standard_normal(v.shape) if not np.any(v) else v
    arr["in/u"] = _module_u(case, cfg, rng, case.length)
    if case.timesteps:
        arr["in/timesteps"] = rng.uniform(0.5, 2.0, (case.batch, case.length))
    if case.streaming:
        for k, v in mod.initial_state(cfg, case.batch).items():
            arr[f"init/{k}"] = np.asarray(v)
    if case.state:
        pre = {k: v for k, v in arr.items() if k.startswith("param/")}
        pre["in/u"] = _module_u(case, cfg, rng, STATE_PREFIX)
        if case.timesteps:
            pre["in/timesteps"] = rng.uniform(0.5, 2.0, (case.batch, STATE_PREFIX))
        prefix_case = Case(case.target, case.label, case.batch, STATE_PREFIX, case.config)
        out = runner.forward(prefix_case, runner.SPEC, pre, return_state=True)
        arr.update({f"state/{k}": v for k, v in runner.prefixed(out, "state").items()})
    return arr


def inputs(case: Case) -> dict:
    rng = np.random.default_rng([case.seed, _stream(case)])
    if case.is_module:
        return _module_inputs(case, rng)
    if case.target in ("diag_scan", "liquid_scan"):
        return _scan_inputs(case, rng)
    return _selective_inputs(case, rng)


def _stream(case: Case, salt: int = 0) -> int:
    """A random stream of its own per case (a hash of its name: adding cases changes nothing)."""
    return zlib.crc32(case.name.encode()) + salt


# ------------------------------------------------------------------------------------------
# reference gradients


def inner(cots, outs) -> float:
    """<cot, out> = sum Re(conj(cot) out) over every output."""
    return float(sum(np.sum(np.real(np.conj(c) * np.asarray(o))) for c, o in zip(cots, outs)))


def _F(case, arrays, cots, keys, v, e) -> float:
    moved = dict(arrays)
    for k in keys:
        moved[k] = arrays[k] + e * v[k]
    return inner(cots, runner.loss_outputs(case, runner.SPEC, moved))


def directional_derivative(case, arrays, cots, v, h=FD_STEP) -> float:
    """Richardson-extrapolated central difference R(h) of F along v (see the module docstring),
    checked against R(h / 2): a reference that moves by more than FD_AGREE relative between the
    two steps (F too curved along v for h) is an error, never a fixture."""
    keys = list(v)

    def D(s):
        return (_F(case, arrays, cots, keys, v, s) - _F(case, arrays, cots, keys, v, -s)) / (2 * s)

    def R(s):
        return (4 * D(s) - D(2 * s)) / 3

    r, r_half = R(h), R(h / 2)
    if abs(r - r_half) > FD_AGREE * max(1.0, abs(r)):
        raise RuntimeError(f"{case.name}: the finite-difference reference did not converge: "
                           f"R({h:g}) = {r!r}, R({h / 2:g}) = {r_half!r}; lower FD_STEP")
    return r


def _direction_scale(x) -> float:
    """min(1, rms(x)): a direction's scale for a block's or model's parameter x."""
    return min(1.0, float(np.sqrt(np.mean(np.abs(x) ** 2))))


def _gradients(case: Case, arrays: dict, rng) -> dict:
    outs = runner.loss_outputs(case, runner.SPEC, arrays)
    cots = [
        _cnormal(rng, o.shape) if np.iscomplexobj(o) else rng.standard_normal(o.shape)
        for o in outs
    ]
    keys = runner.differentiable(case, arrays)
    res = {f"grad/cot/{i}": c for i, c in enumerate(cots)}
    dd = []
    for j in range(K_DIRECTIONS):
        v = {
            k: _cnormal(rng, arrays[k].shape)
            if np.iscomplexobj(arrays[k])
            else rng.standard_normal(arrays[k].shape)
            for k in keys
        }
        if case.kind in ("block", "model"):
            v = {k: x * _direction_scale(arrays[k]) if k.startswith("param/") else x
                 for k, x in v.items()}
        res.update({f"grad/dir{j}/{k}": x for k, x in v.items()})
        dd.append(directional_derivative(case, arrays, cots, v))
    res["grad/dd"] = np.array(dd)
    if case.target in runner.SELECTIVE:
        res.update({f"vjp/in/{k}": g for k, g in spec_vjp(case, arrays, cots).items()})
    return res


def spec_vjp(case: Case, arrays: dict, cots) -> dict:
    """The spec's exact vjp of a selective-scan case: {argument name: gradient}."""
    import liquidssm.spec.selective as sel

    liquid = case.target == "liquid_selective_scan"
    fn = sel.liquid_selective_scan_vjp if liquid else sel.selective_scan_vjp
    kwargs = {k: v for k, v in case.kwargs.items() if k != "return_last_state"}
    last = cots[1] if len(cots) > 1 else None
    g = fn(**runner.prefixed(arrays, "in"), **kwargs, dout=cots[0], dlast_state=last)
    return {k: np.asarray(v) for k, v in g.items() if v is not None}


# ------------------------------------------------------------------------------------------
# generation


def generate(case: Case) -> dict:
    """Every array of the case's fixture (float64 / complex128)."""
    arrays = inputs(case)
    out = runner.forward(case, runner.SPEC, arrays)
    arrays.update({f"out/{k}": np.asarray(v) for k, v in out.items()})
    if case.grad:
        rng = np.random.default_rng([case.seed, _stream(case, 1)])
        arrays.update(_gradients(case, {k: v for k, v in arrays.items()
                                        if not k.startswith("out/")}, rng))
    return arrays


def _keeps_precision(key: str) -> bool:
    """States stay float32 under a low-precision dtype (the backends' dtype policy)."""
    return key.startswith(("state/", "init/")) or key.endswith("initial_state")


def round_to(x, dtype: str) -> np.ndarray:
    """x rounded to `dtype` ("bfloat16" or "float16", nearest even) and back to float64.
    bfloat16 is the upper half of a float32: round the lower 16 bits away (no ml_dtypes)."""
    if dtype == "float16":
        return np.asarray(x).astype(np.float16).astype(np.float64)
    if dtype != "bfloat16":
        raise ValueError(f"dtype: expected 'bfloat16' or 'float16', got {dtype!r}")
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    bits = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) \
        & np.uint32(0xFFFF0000)
    return bits.view(np.float32).astype(np.float64)


def rounded(case: Case, fx: dict, dtype: str) -> dict:
    """The fixture of `case` for a low-precision dtype: its inputs rounded to `dtype` (states
    excepted) and the outputs and reference gradients recomputed by the spec in float64 at the
    rounded point (same cotangents and directions). A backend's bf16 error is then its own
    (float32 compute and output rounding), not the model's sensitivity to rounded inputs."""
    if dtype in ("float64", "float32"):
        return fx
    arrays = {}
    for k, v in fx.items():
        if k.split("/")[0] in ("param", "in", "state", "init"):
            if v.dtype.kind == "f" and not _keeps_precision(k):
                v = round_to(v, dtype)
            arrays[k] = v
    new = dict(fx)
    out = runner.forward(case, runner.SPEC, arrays)
    new.update(arrays)
    new.update({f"out/{k}": np.asarray(v) for k, v in out.items()})
    if "grad/dd" in fx:
        cots = [v for _, v in sorted(runner.prefixed(fx, "grad/cot").items())]
        keys = runner.differentiable(case, arrays)
        new["grad/dd"] = np.array([
            directional_derivative(case, arrays, cots, {k: fx[f"grad/dir{j}/{k}"] for k in keys})
            for j in range(len(fx["grad/dd"]))
        ])
        if any(k.startswith("vjp/") for k in fx):
            new.update({f"vjp/in/{k}": g for k, g in spec_vjp(case, arrays, cots).items()})
    return new


def manifest_entry(case: Case, arrays: dict) -> dict:
    """The case's manifest record; the config of a variant, block or model in full (every field,
    nested Configs in the JSON form of _config.py: `_config.from_dict(entry["config"])` rebuilds
    it), a primitive's options as written in cases.py."""
    config = _config.to_dict(runner.config(case)) if case.is_module else case.config
    return {
        "name": case.name,
        "target": case.target,
        "kind": case.kind,
        "config": config,
        "kwargs": case.kwargs,
        "seed": case.seed,
        "batch": case.batch,
        "length": case.length,
        "state": case.state,
        "timesteps": case.timesteps,
        "streaming": case.streaming,
        "grad": case.grad,
        "size": case.size,
        "file": f"{case.name}.npz",
        "shapes": {k: list(v.shape) for k, v in sorted(arrays.items())
                   if not k.startswith(("grad/dir", "vjp/"))},
        **({"tokens": case.tokens} if case.is_module else {}),
    }


def load(name: str, directory: Path = DIR) -> dict:
    """The arrays of fixture `name` (a case name)."""
    path = Path(directory) / f"{name}.npz"
    if not path.exists():
        raise FileNotFoundError(
            f"fixture {name!r}: {path} is missing; regenerate with "
            "`python -m liquidssm.conformance.fixtures`"
        )
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def load_manifest(directory: Path = DIR) -> dict:
    return json.loads((Path(directory) / "manifest.json").read_text())


#: finite-difference gradients (grad/*) carry the rounding error of F(x +- h v) / (2h):
#: about eps * max|F| / h, 1e-11 to 1e-10 for h = 1e-4 here; regenerations on two machines (BLAS
#: builds) differed by up to 7e-11 relative in these entries, while every other entry agreed to
#: 1e-12
FD_RTOL = 1e-9


def compare(new: dict, old: dict, rtol: float = 1e-12) -> list[str]:
    """Differences between two fixtures (key sets, shapes, values beyond rtol * max|old|;
    FD_RTOL for the finite-difference gradients grad/*)."""
    diffs = []
    for k in sorted(set(new) | set(old)):
        if k not in old or k not in new:
            diffs.append(f"{k}: only in the {'new' if k in new else 'committed'} fixture")
            continue
        a, b = np.asarray(new[k]), np.asarray(old[k])
        if a.shape != b.shape:
            diffs.append(f"{k}: shape {b.shape} -> {a.shape}")
            continue
        err = float(np.max(np.abs(a - b), initial=0.0))
        tol = max(rtol, FD_RTOL) if k.startswith("grad/") else rtol
        if err > tol * max(1.0, float(np.max(np.abs(b), initial=0.0))):
            diffs.append(f"{k}: max |new - committed| = {err:.3g}")
    return diffs


def _select(only: list[str] | None) -> list[Case]:
    return [c for c in CASES if not only or any(s in c.name for s in only)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m liquidssm.conformance.fixtures",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DIR, help="fixture directory")
    ap.add_argument("--only", action="append", help="only cases whose name contains this")
    ap.add_argument("--check", action="store_true",
                    help="compare a regeneration with the files in --out; write nothing")
    args = ap.parse_args(argv)
    cases = _select(args.only)
    manifest = {"spec_version": _spec_version(), "k_directions": K_DIRECTIONS,
                "fd_step": FD_STEP, "cases": {}}
    if args.out.exists() and (args.out / "manifest.json").exists() and args.only:
        manifest["cases"] = load_manifest(args.out)["cases"]
    problems = []
    args.out.mkdir(parents=True, exist_ok=True)
    for case in cases:
        arrays = generate(case)
        manifest["cases"][case.name] = manifest_entry(case, arrays)
        if args.check:
            try:
                old = load(case.name, args.out)
            except FileNotFoundError as e:
                problems.append(str(e))
                continue
            problems += [f"{case.name}: {d}" for d in compare(arrays, old)]
        else:
            np.savez(args.out / f"{case.name}.npz", **arrays)
    text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
    if args.check:
        path = args.out / "manifest.json"
        if not path.exists() or json.loads(path.read_text()) != json.loads(text):
            problems.append("manifest.json differs from a regeneration")
        for p in problems:
            print(p)
        print(f"{len(cases)} cases checked, {len(problems)} differences")
        return 1 if problems else 0
    (args.out / "manifest.json").write_text(text)
    print(f"wrote {len(cases)} cases to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
