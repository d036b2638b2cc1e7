"""The case list: every variant, block, model and primitive, at the lengths, batches and options
that matter.

Lengths: 1, odd (7), powers of two (16, 64) and LONG = 300, longer than any backend chunk size
(the torch and jax chunked scans use chunks of <= 256 steps), so every chunk-carry path runs.
Batch 1 and 2. A case is data: the generator (fixtures.py) builds its inputs from `seed`, runs the
spec in float64 and stores inputs, outputs and reference gradients under `name`.

Blocks (s4_block, s5_layer, mamba_block) and models (sequence_model, mamba_lm) are targets like
the variants (same interface; `Case.is_module`); their configs nest the variants' and are
written in the JSON form of _config.py ({"__config__": "s4d", ...} for a nested Config). They are
tiny (d_model 2-4, 1-2 layers, L <= 16; one L = 300 model case for the chunk-carry path) so that
the suite stays fast.

`size` (batch * length * the per-step state work) lets slow backends (Triton in interpreter mode)
skip big cases with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..spec import BLOCKS, MODELS, VARIANTS  # the one list of each
from ._config import tagged

LONG = 300  # > the largest chunk size of any backend (256)

#: case names are `<target>-<label>`, so the target of a case is the text before the first "-".
#: the targets with the variant interface (Config, init, forward, step, initial_state)
MODULES = VARIANTS + BLOCKS + MODELS
PRIMITIVES = (
    "diag_scan",
    "liquid_scan",
    "selective_scan",
    "selective_state_update",
    "liquid_selective_scan",
)


@dataclass(frozen=True)
class Case:
    """One fixture.

    target: a variant, block or model (liquidssm.spec.<target>) or a primitive name.
    config: the JSON form of the target's Config (_config.from_dict(config, target); for a
        variant simply Config(**config)); for primitives, the options the generator reads to
        build inputs (state shape, complex, forms of B/C, ...).
    kwargs: static keyword arguments of the call (primitives: reverse, degree, ...).
    state: start from a non-zero state (variants: the state after a random prefix; primitives:
        h0 / initial_state). timesteps: irregular sampling (S5 family).
    streaming: step and chunked forward apply (False for whole-sequence variants).
    grad: store reference gradients (directional finite differences; exact vjp where the spec
        has one).
    """

    target: str
    label: str
    batch: int
    length: int
    config: dict = field(default_factory=dict)
    kwargs: dict = field(default_factory=dict)
    seed: int = 0
    state: bool = False
    timesteps: bool = False
    streaming: bool = True
    grad: bool = True
    size: int = 0

    @property
    def name(self) -> str:
        return f"{self.target}-{self.label}"

    @property
    def kind(self) -> str:
        """"variant", "block", "model" or "primitive"."""
        if self.target in VARIANTS:
            return "variant"
        if self.target in BLOCKS:
            return "block"
        return "model" if self.target in MODELS else "primitive"

    @property
    def is_module(self) -> bool:
        """A variant, block or model: called as forward(config, params, u, ...) / step."""
        return self.target in MODULES

    @property
    def tokens(self) -> bool:
        """The input is integer token ids (batch, L) rather than real features (batch, L, d)."""
        return self.target == "mamba_lm" or self.config.get("vocab_size") is not None

    def __str__(self) -> str:  # pytest ids
        return self.name


def _v(target, label, batch, length, config, work, **kw) -> Case:
    if length == 1 or length == LONG:  # these keep the published default dt range
        config = {k: v for k, v in config.items() if k not in ("dt_min", "dt_max")}
    return Case(target, label, batch, length, config, size=batch * length * work, **kw)


def _variant_cases() -> list[Case]:
    # dt in [0.05, 0.5] (the default [1e-3, 1e-1] makes D u dominate y, so that an error in
    # the SSM part hardly shows); the L1 / L300 cases keep the default dt range
    dt = dict(dt_min=0.05, dt_max=0.5)
    s4d = dict(d_model=3, d_state=8, **dt)
    s4 = dict(d_model=2, d_state=8, **dt)
    s5 = dict(d_model=3, d_state=8, blocks=2, **dt)
    mamba = dict(d_model=4, d_state=4, d_conv=3, expand=2, **dt)
    c = [
        # S4D: every init and discretisation, both modes, every length
        _v("s4d", "lin-zoh-conv-L1-b1", 1, 1, {**s4d, "init": "lin"}, 12),
        _v("s4d", "lin-zoh-conv-L7-b2", 2, 7, {**s4d, "init": "lin"}, 12, state=True),
        _v("s4d", "inv-bilinear-rec-L16-b2", 2, 16,
           {**s4d, "init": "inv", "discretization": "bilinear", "mode": "recurrent"}, 12,
           state=True),
        _v("s4d", "real-zoh-conv-L64-b1", 1, 64, {**s4d, "init": "real"}, 12),
        _v("s4d", "legs-zoh-rec-L64-b2", 2, 64, {**s4d, "init": "legs", "mode": "recurrent"}, 12),
        _v("s4d", f"lin-zoh-conv-L{LONG}-b2", 2, LONG, {**s4d, "init": "lin"}, 12, state=True,
           grad=False),
        # S4 (DPLR): rank 1 and 2
        _v("s4", "rank1-L7-b2", 2, 7, s4, 8, state=True),
        _v("s4", "rank2-L16-b1", 1, 16, {**s4, "rank": 2}, 8),
        _v("s4", "rank1-rec-L64-b2", 2, 64, {**s4, "mode": "recurrent"}, 8, state=True),
        _v("s4", f"rank1-L{LONG}-b1", 1, LONG, s4, 8, grad=False),
        # Liquid-S4: the causal scan kind (degrees 1-3) streams; pb / kb are whole-sequence
        _v("liquid_s4", "scan-p1-L7-b2", 2, 7,
           {**s4d, "base": "s4d", "liquid_kernel": "scan", "liquid_degree": 1}, 12, state=True),
        _v("liquid_s4", "scan-p2-tanh-L16-b2", 2, 16,
           {**s4d, "base": "s4d", "liquid_kernel": "scan", "liquid_degree": 2,
            "lcontract": "tanh"}, 24, state=True),
        _v("liquid_s4", "scan-p3-untied-L16-b1", 1, 16,
           {**s4d, "base": "s4d", "liquid_kernel": "scan", "liquid_degree": 3, "tied": False},
           36, state=True),
        _v("liquid_s4", f"scan-p2-L{LONG}-b1", 1, LONG,
           {**s4d, "base": "s4d", "liquid_kernel": "scan", "liquid_degree": 2}, 24, state=True,
           grad=False),
        _v("liquid_s4", "pb-s4d-p2-L16-b2", 2, 16,
           {**s4d, "base": "s4d", "liquid_kernel": "pb", "liquid_degree": 2}, 12,
           streaming=False),
        _v("liquid_s4", "kb-s4-p3-lecun-L7-b1", 1, 7,
           {**s4, "base": "s4", "liquid_kernel": "kb", "liquid_degree": 3, "lcontract": "lecun",
            "allcombs": False}, 8, streaming=False),
        # pb with the s4 base (its true C from the dense system), the published kb product
        _v("liquid_s4", "pb-s4-p2-L16-b1", 1, 16,
           {**s4, "base": "s4", "liquid_kernel": "pb", "liquid_degree": 2}, 8, streaming=False),
        _v("liquid_s4", "kb-s4d-p2-published-L16-b2", 2, 16,
           {**s4d, "base": "s4d", "liquid_kernel": "kb", "liquid_degree": 2,
            "kb_convolution": "published"}, 12, streaming=False),
        # S5: conj_sym on/off, bidirectional (whole-sequence), irregular timesteps
        _v("s5", "zoh-L1-b1", 1, 1, s5, 12),
        _v("s5", "zoh-L7-b2", 2, 7, s5, 12, state=True),
        _v("s5", "bilinear-nosym-L16-b2", 2, 16,
           {**s5, "discretization": "bilinear", "conj_sym": False, "C_init": "lecun_normal"}, 24,
           state=True),
        _v("s5", "timesteps-L16-b2", 2, 16, s5, 12, state=True, timesteps=True),
        _v("s5", "bidir-L16-b2", 2, 16, {**s5, "bidirectional": True}, 24, streaming=False),
        _v("s5", f"zoh-L{LONG}-b2", 2, LONG, s5, 12, state=True, grad=False),
        # Liquid-S5: degrees 1-3, untied, timesteps, bidirectional
        _v("liquid_s5", "p1-L7-b2", 2, 7, {**s5, "liquid_degree": 1}, 12, state=True),
        _v("liquid_s5", "p2-tanh-L16-b2", 2, 16, {**s5, "liquid_degree": 2, "lcontract": "tanh"},
           24, state=True),
        _v("liquid_s5", "p3-untied-timesteps-L16-b1", 1, 16,
           {**s5, "liquid_degree": 3, "tied": False}, 36, state=True, timesteps=True),
        _v("liquid_s5", "p2-bidir-L7-b2", 2, 7,
           {**s5, "liquid_degree": 2, "bidirectional": True}, 48, streaming=False),
        _v("liquid_s5", f"p2-L{LONG}-b1", 1, LONG, {**s5, "liquid_degree": 2}, 24, state=True,
           grad=False),
        # Mamba block
        _v("mamba", "L1-b1", 1, 1, mamba, 32),
        _v("mamba", "L7-b2", 2, 7, mamba, 32, state=True),
        _v("mamba", "L64-b1", 1, 64, {**mamba, "bias": True}, 32, state=True),
        _v("mamba", f"L{LONG}-b2", 2, LONG, mamba, 32, state=True, grad=False),
        # LiquidMamba: p = 1 plain (Mamba), degrees 2-3, gated conv, FFN, untied BL
        _v("liquid_mamba", "p1-plain-L7-b2", 2, 7,
           {**mamba, "liquid_degree": 1, "conv": "plain", "ffn": "none"}, 32, state=True),
        _v("liquid_mamba", "p2-gated-swiglu-L16-b2", 2, 16,
           {**mamba, "liquid_degree": 2, "conv": "gated", "ffn": "swiglu"}, 64, state=True),
        _v("liquid_mamba", "p3-untied-tanh-gelu-L16-b1", 1, 16,
           {**mamba, "liquid_degree": 3, "tied": False, "lcontract": "tanh", "ffn": "gelu"}, 96,
           state=True),
        _v("liquid_mamba", f"p2-L{LONG}-b1", 1, LONG, {**mamba, "liquid_degree": 2}, 64,
           state=True, grad=False),
    ]
    return c


def _m(target, label, batch, length, config, work, **kw) -> Case:
    """A block or model case (config in the JSON form of _config.py)."""
    return Case(target, label, batch, length, config, size=batch * length * work, **kw)


def _module_cases() -> list[Case]:
    dt = dict(dt_min=0.05, dt_max=0.5)  # as the variant cases (see there)
    s4d = tagged("s4d", d_model=3, d_state=8, **dt)
    s4 = tagged("s4", d_model=2, d_state=8, **dt)
    lq4 = tagged("liquid_s4", d_model=3, d_state=8, base="s4d", liquid_kernel="scan",
                 liquid_degree=2, **dt)
    s5 = tagged("s5", d_model=3, d_state=8, blocks=2, **dt)
    lq5 = tagged("liquid_s5", d_model=3, d_state=8, blocks=2, liquid_degree=2, **dt)
    mixer = tagged("mamba", d_model=4, d_state=4, d_conv=3, expand=2, **dt)
    ssm_cfg = dict(d_state=4, d_conv=3, expand=2, **dt)  # a model's layers: fields sans d_model
    c = [
        # S4 block: around s4d / s4 / liquid_s4 (scan), prenorm and postnorm
        _m("s4_block", "s4d-prenorm-L16-b2", 2, 16, {"ssm": s4d}, 24, state=True),
        _m("s4_block", "s4-postnorm-L7-b2", 2, 7, {"ssm": s4, "prenorm": False}, 16,
           state=True),
        _m("s4_block", "liquid_s4-scan-p2-tanhgelu-L16-b1", 1, 16,
           {"ssm": lq4, "approximate_gelu": True}, 36, state=True),
        # S5 layer: s5 / liquid_s5, batch and layer norm, two activations, prenorm / postnorm,
        # irregular timesteps
        _m("s5_layer", "s5-batch-half_glu1-timesteps-L16-b2", 2, 16, {"ssm": s5}, 24,
           state=True, timesteps=True),
        _m("s5_layer", "liquid_s5-layer-full_glu-postnorm-L7-b2", 2, 7,
           {"ssm": lq5, "norm": "layer", "activation": "full_glu", "prenorm": False}, 36,
           state=True),
        # Mamba residual block
        _m("mamba_block", "L7-b2", 2, 7, {"mixer": mixer}, 40, state=True),
        # SequenceModel: the three layer families (S4 block, S5 layer, Mamba block) and the
        # LiquidMamba block; heads pool / sequence / lm; real and token input; tied and untied
        # lm head; final norms layer / rms / none
        _m("sequence_model", "s4d-real-pool-L16-b2", 2, 16,
           {"d_model": 3, "n_layers": 1, "layer": "s4d", "ssm": dict(d_state=8, **dt),
            "block": {"prenorm": False}, "d_input": 2, "head": "pool", "d_output": 2}, 24,
           streaming=False),
        _m("sequence_model", "s5-real-sequence-L16-b1", 1, 16,
           {"d_model": 3, "n_layers": 1, "layer": "s5", "ssm": dict(d_state=8, blocks=2, **dt),
            "block": {"norm": "layer"}, "d_input": 2, "head": "sequence", "d_output": 2}, 24,
           state=True),
        _m("sequence_model", "mamba-tokens-lm-tied-L16-b2", 2, 16,
           {"d_model": 4, "n_layers": 2, "layer": "mamba", "ssm": ssm_cfg, "vocab_size": 7,
            "head": "lm", "norm_f": "rms", "tie_embeddings": True}, 80, state=True),
        _m("sequence_model", "liquid_mamba-tokens-lm-untied-L7-b1", 1, 7,
           {"d_model": 4, "n_layers": 1, "layer": "liquid_mamba",
            "ssm": {**ssm_cfg, "liquid_degree": 2, "ffn": "gelu"}, "vocab_size": 6,
            "head": "lm", "norm_f": "none"}, 80, state=True),
        # Mamba LM (mamba_ssm's layout): tied, the vocabulary padded (10 -> 16); untied and
        # unpadded at L > every backend's chunk (the chunk carry through a whole model)
        _m("mamba_lm", "tied-pad8-L7-b2", 2, 7,
           {"d_model": 4, "n_layer": 2, "vocab_size": 10, "ssm_cfg": ssm_cfg}, 80, state=True),
        _m("mamba_lm", f"untied-L{LONG}-b1", 1, LONG,
           {"d_model": 4, "n_layer": 1, "vocab_size": 6, "pad_vocab_size_multiple": 1,
            "tie_embeddings": False, "ssm_cfg": dict(d_state=4, d_conv=3, expand=2)}, 40,
           state=True, grad=False),
    ]
    return c


def _p(target, label, batch, length, config, kwargs, work, **kw) -> Case:
    return Case(target, label, batch, length, config, kwargs, size=batch * length * work, **kw)


def _primitive_cases() -> list[Case]:
    sel = dict(d=4, n=4)
    c = [
        # diag_scan: real / complex, h0, reverse, a broadcast over batch
        _p("diag_scan", "real-L1-b1", 1, 1, {"S": [3]}, {}, 3),
        _p("diag_scan", "real-h0-L7-b2", 2, 7, {"S": [3]}, {}, 3, state=True),
        _p("diag_scan", "real-abatch1-L16-b2", 2, 16, {"S": [2, 3], "a_batch1": True}, {}, 6),
        _p("diag_scan", "complex-h0-L16-b2", 2, 16, {"S": [2, 3], "complex": True}, {}, 12,
           state=True),
        _p("diag_scan", "complex-reverse-h0-L7-b1", 1, 7, {"S": [3], "complex": True},
           {"reverse": True}, 6, state=True),
        _p("diag_scan", "real-reverse-L64-b2", 2, 64, {"S": [3]}, {"reverse": True}, 3),
        _p("diag_scan", f"real-h0-L{LONG}-b2", 2, LONG, {"S": [3]}, {}, 3, state=True,
           grad=False),
        # liquid_scan: degrees 1-3, complex, reverse
        _p("liquid_scan", "p1-L7-b2", 2, 7, {"S": [3]}, {"degree": 1}, 3, state=True),
        _p("liquid_scan", "p2-L16-b2", 2, 16, {"S": [3]}, {"degree": 2}, 6, state=True),
        _p("liquid_scan", "p3-complex-L16-b1", 1, 16, {"S": [2, 2], "complex": True},
           {"degree": 3}, 24, state=True),
        _p("liquid_scan", "p2-reverse-L7-b2", 2, 7, {"S": [3]}, {"degree": 2, "reverse": True},
           6, state=True),
        _p("liquid_scan", "p3-L1-b1", 1, 1, {"S": [3]}, {"degree": 3}, 9),
        _p("liquid_scan", f"p2-L{LONG}-b1", 1, LONG, {"S": [3], "complex": True}, {"degree": 2},
           12, state=True, grad=False),
        # selective_scan: constant / input-dependent / grouped B, C; complex A; D, z, bias
        _p("selective_scan", "const-L7-b2", 2, 7, {**sel, "BC": "const", "D": True}, {}, 16),
        _p("selective_scan", "vary-full-L16-b2", 2, 16,
           {**sel, "BC": "vary", "D": True, "z": True, "delta_bias": True},
           {"delta_softplus": True, "return_last_state": True}, 16, state=True),
        _p("selective_scan", "group2-L64-b1", 1, 64,
           {**sel, "BC": "group", "g": 2, "D": True, "z": True},
           {"return_last_state": True}, 16, state=True),
        _p("selective_scan", "L1-b1", 1, 1, {**sel, "BC": "vary"}, {"return_last_state": True},
           16),
        _p("selective_scan", "complex-const-L7-b2", 2, 7,
           {**sel, "BC": "const", "complex": True, "D": True, "z": True},
           {"return_last_state": True}, 32),
        _p("selective_scan", "complex-vary-L16-b1", 1, 16,
           {**sel, "BC": "vary", "complex": True, "delta_bias": True},
           {"delta_softplus": True, "return_last_state": True}, 32, state=True),
        _p("selective_scan", "complex-group2-L7-b2", 2, 7,
           {**sel, "BC": "group", "g": 2, "complex": True}, {}, 32),
        _p("selective_scan", f"vary-L{LONG}-b1", 1, LONG,
           {**sel, "BC": "vary", "D": True, "z": True, "delta_bias": True},
           {"delta_softplus": True, "return_last_state": True}, 16, state=True, grad=False),
        # selective_state_update (one decode step)
        _p("selective_state_update", "full-b2", 2, 1,
           {**sel, "BC": "vary", "D": True, "z": True, "delta_bias": True},
           {"dt_softplus": True}, 16, streaming=False),
        _p("selective_state_update", "group2-b1", 1, 1, {**sel, "BC": "group", "g": 2}, {}, 16,
           streaming=False),
        # liquid_selective_scan: degrees 1-3, untied BL, lcontract, initial state, groups
        _p("liquid_selective_scan", "p1-L7-b2", 2, 7, {**sel, "BC": "vary", "D": True},
           {"liquid_degree": 1, "return_last_state": True}, 16, state=True),
        _p("liquid_selective_scan", "p2-full-L16-b2", 2, 16,
           {**sel, "BC": "vary", "D": True, "z": True, "delta_bias": True},
           {"liquid_degree": 2, "delta_softplus": True, "return_last_state": True,
            "lcontract": "tanh"}, 32, state=True),
        _p("liquid_selective_scan", "p3-untied-group2-L16-b1", 1, 16,
           {**sel, "BC": "group", "g": 2, "BL": True},
           {"liquid_degree": 3, "return_last_state": True, "lcontract": "lecun"}, 48,
           state=True),
        _p("liquid_selective_scan", "p2-const-L7-b1", 1, 7, {**sel, "BC": "const"},
           {"liquid_degree": 2}, 32),
        _p("liquid_selective_scan", f"p2-L{LONG}-b1", 1, LONG,
           {**sel, "BC": "vary", "delta_bias": True},
           {"liquid_degree": 2, "delta_softplus": True, "return_last_state": True}, 32,
           state=True, grad=False),
    ]
    return c


CASES: tuple[Case, ...] = tuple(_variant_cases() + _module_cases() + _primitive_cases())
BY_NAME: dict[str, Case] = {c.name: c for c in CASES}
assert len(BY_NAME) == len(CASES), "case names must be unique"

#: long stable inputs checked for NaN / inf (no fixture needed): (target, config, length)
STABILITY_LENGTH = 2048
STABILITY: tuple[Case, ...] = (
    Case("s4d", "stable", 1, STABILITY_LENGTH, {"d_model": 2, "d_state": 8, "mode": "recurrent"}),
    Case("s4", "stable", 1, STABILITY_LENGTH, {"d_model": 2, "d_state": 8}),
    Case("liquid_s4", "stable", 1, STABILITY_LENGTH,
         {"d_model": 2, "d_state": 8, "base": "s4d", "liquid_kernel": "scan",
          "liquid_degree": 3}),
    Case("s5", "stable", 1, STABILITY_LENGTH, {"d_model": 2, "d_state": 8, "blocks": 2}),
    Case("liquid_s5", "stable", 1, STABILITY_LENGTH,
         {"d_model": 2, "d_state": 8, "blocks": 2, "liquid_degree": 3}),
    Case("mamba", "stable", 1, STABILITY_LENGTH, {"d_model": 2, "d_state": 4, "d_conv": 3}),
    Case("liquid_mamba", "stable", 1, STABILITY_LENGTH,
         {"d_model": 2, "d_state": 4, "d_conv": 3, "liquid_degree": 3}),
)

#: the dtype check (checks.check_dtypes): one short case per form of each variant (conv and
#: recurrent paths, the three Liquid-S4 kernels, timesteps, bidirectional, the Mamba blocks);
#: inputs are built from `init` there, so no fixture is needed
DTYPE_LENGTH = 5
_D = dict(d_model=2, d_state=8)
DTYPE_CASES: tuple[Case, ...] = (
    Case("s4d", "dtype", 2, DTYPE_LENGTH, _D),
    Case("s4", "dtype", 2, DTYPE_LENGTH, _D),
    Case("liquid_s4", "dtype-scan", 2, DTYPE_LENGTH,
         {**_D, "base": "s4d", "liquid_kernel": "scan", "liquid_degree": 2}),
    Case("liquid_s4", "dtype-pb", 2, DTYPE_LENGTH,
         {**_D, "base": "s4d", "liquid_kernel": "pb", "liquid_degree": 2}, streaming=False),
    Case("liquid_s4", "dtype-kb-s4", 2, DTYPE_LENGTH,
         {**_D, "base": "s4", "liquid_kernel": "kb", "liquid_degree": 2}, streaming=False),
    Case("s5", "dtype-timesteps", 2, DTYPE_LENGTH, {**_D, "blocks": 2}, timesteps=True),
    Case("s5", "dtype-bidir", 2, DTYPE_LENGTH, {**_D, "blocks": 2, "bidirectional": True},
         streaming=False),
    Case("liquid_s5", "dtype", 2, DTYPE_LENGTH, {**_D, "blocks": 2, "liquid_degree": 2}),
    Case("liquid_s5", "dtype-bidir", 2, DTYPE_LENGTH,
         {**_D, "blocks": 2, "liquid_degree": 2, "bidirectional": True}, streaming=False),
    # batch 1: the Triton interpreter's time grows with the batch
    Case("mamba", "dtype", 1, DTYPE_LENGTH, {"d_model": 4, "d_state": 4, "d_conv": 3}),
    Case("liquid_mamba", "dtype", 1, DTYPE_LENGTH,
         {"d_model": 4, "d_state": 4, "d_conv": 3, "liquid_degree": 2, "conv": "gated",
          "ffn": "swiglu", "tied": False}),
)
