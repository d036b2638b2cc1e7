"""The bad-input table: invalid calls of every primitive, of the variant functions and (token
ids) of a model, each with the exception type it must raise and the argument its message must
name, the same in every backend (test_bad_input.py runs the table through the backend under test).

The rules (docs/design.md, "Bad input"): arrays of the backend's own library (another library's
array is a TypeError naming the argument and the expected array type), real floating dtypes
(complex where documented), exact shapes, Python bools for flags, Python ints for degrees and
seeds, None refused for required arrays. The calls go to the backend's public functions
unjitted (`adapter.api_module()`), so that the checks themselves are what is exercised.
The reference (NumPy, array-api-strict) takes the library of a call's first array argument;
the wrong-library rows therefore change a later argument.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from .cases import CASES, PRIMITIVES, VARIANTS


class Bad(NamedTuple):
    target: str
    label: str
    error: type  # ValueError or TypeError
    arg: str  # the argument the message must name
    build: Callable  # build(arrays: Arrays) -> (fn name, first, kwargs) or a thunk


class Arrays:
    """Backend arrays (float64 where the backend has it) from NumPy, and arrays of another
    library ("foreign") for the wrong-library rows."""

    def __init__(self, adapter):
        self.adapter = adapter
        self.dtype = adapter.dtypes[0]
        self.api = adapter.api_module()

    def __call__(self, x, dtype="float"):
        x = np.asarray(x)
        if dtype == "keep":
            return self.adapter.asarray(x, None)
        return self.adapter.asarray(x, self.dtype)

    def foreign(self, x):
        """x as an array of a library other than the backend's: NumPy, or array-api-strict
        where the backend's arrays are NumPy's (NoForeign if it is not installed)."""
        if not isinstance(self(np.zeros(1)), np.ndarray):
            return np.asarray(x)
        try:
            return importlib.import_module("array_api_strict").asarray(np.asarray(x))
        except ImportError as e:
            raise NoForeign("array_api_strict is not installed (the other library for the "
                            "wrong-library rows of a NumPy backend)") from e


class NoForeign(Exception):
    """No array library other than the backend's is installed (the row is skipped)."""


# ---------------------------------------------------------------------------------------------
# primitives: small valid arguments (NumPy), then one fault per row

_R = np.random.default_rng(20)
BATCH, L, S, P = 2, 5, (3,), 2
SB, SD, SL, SN = 2, 4, 5, 3


def _scan_base():
    a = _R.uniform(-0.9, 0.9, (BATCH, L, *S))
    return dict(a=a, b=_R.standard_normal((BATCH, L, *S)), c=0.1 * _R.standard_normal(
        (BATCH, L, *S)), h0=_R.standard_normal((BATCH, *S)),
        h0p=_R.standard_normal((BATCH, P, *S)))


def _sel_base():
    return dict(u=_R.standard_normal((SB, SD, SL)), delta=_R.uniform(0.1, 0.5, (SB, SD, SL)),
                A=-_R.uniform(0.5, 1.5, (SD, SN)), B=_R.standard_normal((SB, SN, SL)),
                C=_R.standard_normal((SD, SN)), D=_R.standard_normal(SD),
                z=_R.standard_normal((SB, SD, SL)), delta_bias=_R.standard_normal(SD),
                BL=_R.standard_normal((SB, SN, SL)))


def _upd_base():
    return dict(state=_R.standard_normal((SB, SD, SN)), x=_R.standard_normal((SB, SD)),
                dt=_R.uniform(0.1, 0.5, (SB, SD)), A=-_R.uniform(0.5, 1.5, (SD, SN)),
                B=_R.standard_normal((SB, SN)), C=_R.standard_normal((SB, 2, SN)),
                D=_R.standard_normal(SD), z=_R.standard_normal((SB, SD)),
                dt_bias=_R.standard_normal(SD))


SCAN, SEL, UPD = _scan_base(), _sel_base(), _upd_base()
_INT = "int"  # a marker: the array as int64
_FOREIGN = "foreign"  # a marker: the array from another library


def _diag(**over):
    def build(arr):
        kw = dict(a=SCAN["a"], b=SCAN["b"], h0=SCAN["h0"])
        return "diag_scan", "a", _apply(arr, kw, over)
    return build


def _liquid(**over):
    def build(arr):
        kw = dict(a=SCAN["a"], b=SCAN["b"], c=SCAN["c"], h0=SCAN["h0p"], degree=P)
        return "liquid_scan", "a", _apply(arr, kw, over)
    return build


def _sel(name, **over):
    def build(arr):
        kw = {k: SEL[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")}
        if name == "liquid_selective_scan":
            kw.update(BL=SEL["BL"], liquid_degree=P)
        return name, "u", _apply(arr, kw, over)
    return build


def _upd(**over):
    def build(arr):
        return "selective_state_update", "state", _apply(arr, dict(UPD), over)
    return build


def _apply(arr, kw, over):
    """The call's keyword arguments as backend arrays, with the row's changes."""
    out = {}
    for k, v in {**kw, **over}.items():
        if isinstance(v, tuple) and v and v[0] in (_INT, _FOREIGN):
            x = np.asarray(v[1])
            out[k] = arr(x.astype(np.int64), "keep") if v[0] == _INT else arr.foreign(x)
        elif isinstance(v, np.ndarray):
            out[k] = arr(v)
        else:
            out[k] = v
    return out


def _int(x):
    return (_INT, x)


def _foreign(x):
    return (_FOREIGN, x)


V, T = ValueError, TypeError
a_, b_, c_ = SCAN["a"], SCAN["b"], SCAN["c"]
u_, B_, A_ = SEL["u"], SEL["B"], SEL["A"]

PRIMITIVE_ROWS = [
    # diag_scan
    Bad("diag_scan", "a-None", T, "a", _diag(a=None)),
    Bad("diag_scan", "b-list", T, "b", _diag(b=[[1.0]])),
    Bad("diag_scan", "b-int", T, "b", _diag(b=_int(b_))),
    Bad("diag_scan", "b-foreign", T, "b", _diag(b=_foreign(b_))),
    Bad("diag_scan", "b-rank1", V, "b", _diag(b=b_[0, 0])),
    Bad("diag_scan", "a-longer", V, "a", _diag(a=np.concatenate([a_, a_], 1))),
    Bad("diag_scan", "a-batch3", V, "a", _diag(a=np.concatenate([a_, a_[:1]], 0))),
    Bad("diag_scan", "h0-levels", V, "h0", _diag(h0=SCAN["h0p"])),
    Bad("diag_scan", "reverse-1", T, "reverse", _diag(reverse=1)),
    # liquid_scan
    Bad("liquid_scan", "c-None", T, "c", _liquid(c=None)),
    Bad("liquid_scan", "c-longer", V, "c", _liquid(c=np.concatenate([c_, c_], 1))),
    Bad("liquid_scan", "c-foreign", T, "c", _liquid(c=_foreign(c_))),
    Bad("liquid_scan", "b-int", T, "b", _liquid(b=_int(b_))),
    Bad("liquid_scan", "h0-extra-level", V, "h0",
        _liquid(h0=np.concatenate([SCAN["h0p"], SCAN["h0p"][:, :1]], 1))),
    Bad("liquid_scan", "degree-str", T, "degree", _liquid(degree="2")),
    Bad("liquid_scan", "degree-float", T, "degree", _liquid(degree=2.0)),
    Bad("liquid_scan", "degree-bool", T, "degree", _liquid(degree=True)),
    Bad("liquid_scan", "degree-0", V, "degree", _liquid(degree=0)),
    Bad("liquid_scan", "reverse-1", T, "reverse", _liquid(reverse=1)),
]
for _name in ("selective_scan", "liquid_selective_scan"):
    PRIMITIVE_ROWS += [
        Bad(_name, "u-rank2", V, "u", _sel(_name, u=u_[0])),
        Bad(_name, "u-int", T, "u", _sel(_name, u=_int(u_))),
        Bad(_name, "u-list", T, "u", _sel(_name, u=[[[1.0]]])),
        Bad(_name, "delta-foreign", T, "delta", _sel(_name, delta=_foreign(SEL["delta"]))),
        Bad(_name, "delta-shape", V, "delta", _sel(_name, delta=SEL["delta"][:, :, :-1])),
        Bad(_name, "A-rows", V, "A", _sel(_name, A=A_[:-1])),
        Bad(_name, "A-n0", V, "A", _sel(_name, A=A_[:, :0], B=B_[:, :0], C=SEL["C"][:, :0],
                                        **({"BL": SEL["BL"][:, :0]} if "liquid" in _name
                                           else {}))),
        Bad(_name, "A-int", T, "A", _sel(_name, A=_int(A_))),
        Bad(_name, "B-length", V, "B", _sel(_name, B=B_[..., :-1])),
        Bad(_name, "B-groups", V, "B", _sel(_name, B=np.stack([B_] * 3, 1))),
        Bad(_name, "C-None", T, "C", _sel(_name, C=None)),
        Bad(_name, "D-shape", V, "D", _sel(_name, D=SEL["D"][:-1])),
        Bad(_name, "z-shape", V, "z", _sel(_name, z=SEL["z"][..., 0])),
        Bad(_name, "delta_bias-list", T, "delta_bias", _sel(_name, delta_bias=[0.0] * SD)),
        Bad(_name, "delta_softplus-1", T, "delta_softplus", _sel(_name, delta_softplus=1)),
        Bad(_name, "return_last_state-no", T, "return_last_state",
            _sel(_name, return_last_state="no")),
        Bad(_name, "initial_state-shape", V, "initial_state",
            _sel(_name, initial_state=np.zeros((SB, SD, SN + 1)))),
    ]
PRIMITIVE_ROWS += [
    Bad("selective_scan", "initial_state-levels", V, "initial_state",
        _sel("selective_scan", initial_state=np.zeros((SB, 1, SD, SN)))),
    Bad("liquid_selective_scan", "initial_state-no-levels", V, "initial_state",
        _sel("liquid_selective_scan", initial_state=np.zeros((SB, SD, SN)))),
    Bad("liquid_selective_scan", "BL-shape", V, "BL",
        _sel("liquid_selective_scan", BL=SEL["BL"][:, :-1])),
    Bad("liquid_selective_scan", "BL-shape-degree1", V, "BL",
        _sel("liquid_selective_scan", BL=SEL["BL"][:, :-1], liquid_degree=1)),
    Bad("liquid_selective_scan", "A-complex", T, "A",
        _sel("liquid_selective_scan", A=A_ + 1j)),
    Bad("liquid_selective_scan", "liquid_degree-str", T, "liquid_degree",
        _sel("liquid_selective_scan", liquid_degree="2")),
    Bad("liquid_selective_scan", "liquid_degree-0", V, "liquid_degree",
        _sel("liquid_selective_scan", liquid_degree=0)),
    Bad("liquid_selective_scan", "lcontract-relu", V, "lcontract",
        _sel("liquid_selective_scan", lcontract="relu")),
    # selective_state_update
    Bad("selective_state_update", "x-rank", V, "x", _upd(x=UPD["x"][0])),
    Bad("selective_state_update", "x-foreign", T, "x", _upd(x=_foreign(UPD["x"]))),
    Bad("selective_state_update", "state-rows", V, "state", _upd(state=UPD["state"][:, :-1])),
    Bad("selective_state_update", "A-n", V, "A",
        _upd(A=np.concatenate([UPD["A"], UPD["A"][:, :1]], 1))),
    Bad("selective_state_update", "A-complex", T, "A", _upd(A=UPD["A"] + 1j)),
    Bad("selective_state_update", "dt-shape", V, "dt", _upd(dt=UPD["dt"][:, :-1])),
    Bad("selective_state_update", "B-groups", V, "B",
        _upd(B=np.stack([UPD["B"]] * 3, 1))),
    Bad("selective_state_update", "C-None", T, "C", _upd(C=None)),
    Bad("selective_state_update", "D-shape", V, "D", _upd(D=UPD["D"][:-1])),
    Bad("selective_state_update", "z-int", T, "z", _upd(z=_int(UPD["z"]))),
    Bad("selective_state_update", "dt_softplus-1", T, "dt_softplus", _upd(dt_softplus=1)),
]
assert {r.target for r in PRIMITIVE_ROWS} == set(PRIMITIVES)


# ---------------------------------------------------------------------------------------------
# variant functions: u, return_state and the seed


def variant_case(name: str):
    """The first conformance case of variant `name` (its config is a small valid one)."""
    return next(c for c in CASES if c.target == name)


def _forward(name, u, **kw):
    def build(arr):
        case = variant_case(name)
        spec = importlib.import_module(f"liquidssm.spec.{name}")
        config = spec.Config(**case.config)
        params = {k: arr(v) for k, v in spec.init(config, 0).items()}
        x = np.random.default_rng(1).standard_normal((1, 2, config.d_model))
        uu = {"float": lambda: arr(x), "int": lambda: arr(x.astype(np.int64), "keep"),
              "foreign": lambda: arr.foreign(x), "None": lambda: None,
              "list": lambda: x.tolist()}[u]()
        mod = getattr(arr.api, name)
        return lambda: mod.forward(config, params, uu, **kw)
    return build


def _init(name, seed):
    def build(arr):
        spec = importlib.import_module(f"liquidssm.spec.{name}")
        config = spec.Config(**variant_case(name).config)
        return lambda: getattr(arr.api, name).init(config, seed)
    return build


#: rows expected to fail for now, {(target, label): (why, backends or None for all)}: strict
#: xfails, so that a fix shows up as an XPASS and its entry is removed. Empty: every row passes.
PENDING: dict = {}


def pending(row: Bad, backend: str) -> str | None:
    """Why `row` is expected to fail on `backend` for now (None: it must pass)."""
    reason, backends = PENDING.get((row.target, row.label), (None, None))
    return reason if reason and (backends is None or backend in backends) else None


VARIANT_ROWS = []
for _v in VARIANTS:
    VARIANT_ROWS += [
        Bad(_v, "u-None", T, "u", _forward(_v, "None")),
        Bad(_v, "u-list", T, "u", _forward(_v, "list")),
        Bad(_v, "u-int", T, "u", _forward(_v, "int")),
        Bad(_v, "u-foreign", T, "u", _forward(_v, "foreign")),
        Bad(_v, "return_state-no", T, "return_state", _forward(_v, "float", return_state="no")),
        Bad(_v, "seed-None", T, "seed", _init(_v, None)),
        Bad(_v, "seed-bool", T, "seed", _init(_v, True)),
        Bad(_v, "seed-float", T, "seed", _init(_v, 1.0)),
        Bad(_v, "seed-negative", V, "seed", _init(_v, -1)),
    ]



def _lm(ids):
    """mamba_lm.forward on token ids `ids` (batch 1) of the first mamba_lm case."""
    def build(arr):
        spec = importlib.import_module("liquidssm.spec.mamba_lm")
        config = spec.Config(**variant_case("mamba_lm").config)
        params = {k: arr(v) for k, v in spec.init(config, 0).items()}
        vocab = params["backbone.embedding.weight"].shape[0]  # the padded vocabulary
        tokens = arr(np.array([[0, 1, vocab if ids == "vocab" else -1]]), "keep")
        return lambda: arr.api.mamba_lm.forward(config, params, tokens)
    return build


MODEL_ROWS = [
    # token ids out of range: -1 would wrap to the last row, an id >= the vocabulary would index
    # out of range (NaN logits in JAX); checked where the values can be read (check_token_ids)
    Bad("mamba_lm", "tokens-vocab", V, "tokens", _lm("vocab")),
    Bad("mamba_lm", "tokens-negative", V, "tokens", _lm("negative")),
]

ROWS = PRIMITIVE_ROWS + VARIANT_ROWS + MODEL_ROWS


def thunk(row: Bad, arr: Arrays):
    """The call of `row` on the backend of `arr`, not yet made (raises NoForeign when the row
    needs another array library and none is installed)."""
    built = row.build(arr)
    if callable(built):
        return built
    name, first, kw = built
    fn, kw = getattr(arr.api, name), dict(kw)
    head = kw.pop(first)
    return lambda: fn(head, **kw)
