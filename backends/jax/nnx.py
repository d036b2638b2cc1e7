"""liquidssm.jax.nnx: Flax NNX modules, thin wrappers over the functional JAX backend.

Every module holds its `config` (static) and one variable per spec parameter in `self.params`
(an nnx.Dict keyed by the spec's names: nnx.Param, or nnx.BatchStat for running statistics).
The weights are the spec's `init(config, seed)` converted to `dtype` (default float32; float64
needs jax x64), so a seed gives the same weights as the spec and every other backend.

    m = S4D(s4d.Config(d_model=8), seed=0)     m(u): u (batch, L, H) -> y (batch, L, H)
    m(u, state=s, return_state=True) -> (y, s');  m.step(u_t, s) -> (y_t, s');  m.initial_state(b)
    m.to_params() -> {name: float64 NumPy};  S4D.from_params(config, params)

Variants: S4D, S4, LiquidS4 (kernel(length) too), S5, LiquidS5, Mamba, LiquidMamba (the whole
LiquidMamba block). Blocks: S4Block (spec/block.py around an S4-family SSM, its parameters under
"ssm."), S5Layer (s5.layer_forward / liquid_s5.layer_forward), MambaBlock
x + mixer(rms_norm(x)) (mamba_ssm Block names "norm.weight", "mixer.*"), MambaLM (mamba.lm_*).
Backbone: SequenceModel (see its docstring). dtype policy as the functional backend:
bfloat16 / float16 inputs compute in float32 and return the input dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import jax.numpy as jnp
import numpy as np
from flax import nnx
from liquidssm import jax as _jax
from liquidssm._bind import map_arrays
from liquidssm.spec import block as _block
from liquidssm.spec import liquid_mamba as _liquid_mamba
from liquidssm.spec import liquid_s4 as _liquid_s4
from liquidssm.spec import liquid_s5 as _liquid_s5
from liquidssm.spec import mamba as _mamba
from liquidssm.spec import nn as _nn
from liquidssm.spec import s4 as _s4
from liquidssm.spec import s4d as _s4d
from liquidssm.spec import s5 as _s5
from liquidssm.spec._common import check_choice, check_float, check_int

from ._framework import fw

__all__ = [
    "SpecModule", "S4D", "S4", "LiquidS4", "S5", "LiquidS5", "Mamba", "LiquidMamba",
    "S4BlockConfig", "S4Block", "S5Layer", "MambaBlockConfig", "MambaBlock", "MambaLM",
    "SequenceModelConfig", "SequenceModel", "LAYERS",
]


# ---------------------------------------------------------------------------------- helpers


def _type_name(t) -> str:
    return f"{t.__module__}.{t.__qualname__}"


def _check_config(config, types, name: str = "config"):
    """config (the argument `name`) must be exactly one of `types` (a liquid_s5.Config is not
    an s5.Config here)."""
    if type(config) not in types:
        expected = " or ".join(_type_name(t) for t in types)
        raise TypeError(f"{name}: expected {expected}, got {_type_name(type(config))}")
    return config


def _check_params(params, reference: dict):
    """params: a dict with exactly reference's names, each of reference's shape."""
    if not isinstance(params, dict):
        raise TypeError(f"params: expected a dict of arrays, got {type(params).__name__}")
    missing = sorted(set(reference) - set(params))
    extra = sorted(set(params) - set(reference))
    if missing or extra:
        raise ValueError(f"params: expected the keys {sorted(reference)}, got missing {missing}, "
                         f"unexpected {extra}")
    for k, ref in reference.items():
        shape = tuple(getattr(params[k], "shape", ()))
        if shape != ref.shape:
            raise ValueError(f"params[{k!r}]: expected shape {ref.shape}, got {shape}")


def _child_seed(seed: int, k: int) -> int:
    """A seed for part k of a composite module: SeedSequence([seed, k]).generate_state(1)[0]."""
    return int(np.random.SeedSequence([seed, k]).generate_state(1)[0])


def _strip(params: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


def _run(fn, x, trees, out_dtype=None):
    """fn(x, *trees) in the compute dtype of x (float32 for bf16/fp16; params' dtype for integer
    x), arrays in `trees` cast to it; the first output goes back to x's dtype if x is floating."""
    floating = jnp.issubdtype(x.dtype, jnp.floating)
    cdt = fw.compute_dtype(x.dtype if floating else out_dtype)
    cast = lambda a: fw.cast(a, cdt) if hasattr(a, "dtype") else a  # noqa: E731
    out = fn(cast(x) if floating else x, *[map_arrays(t, cast) for t in trees])
    if not floating or cdt == x.dtype:
        return out
    if isinstance(out, tuple):
        return (fw.cast(out[0], x.dtype),) + out[1:]
    return fw.cast(out, x.dtype)


# ---------------------------------------------------------------------------------- base class


class SpecModule(nnx.Module):
    """config (static) + one variable per spec parameter, initialised by the spec's init.

    Subclasses define `config_types`, `spec_init(config, seed)` (NumPy float64 dict),
    `spec_initial_state(config, batch)` and `_forward(config, params, u, **kw)` /
    `_step(config, params, state, u_t)` on jax arrays (params a dict of arrays)."""

    config_types: tuple = ()
    stats: tuple = ()  # parameter names held as nnx.BatchStat (not trained)

    def __init__(self, config, *, seed: int = 0, dtype=None, params: dict | None = None):
        self.config = _check_config(config, self.config_types)
        if params is None:
            params = self.spec_init(config, check_int("seed", seed, minimum=0))
        else:
            _check_params(params, self.spec_init(config, 0))
        self.params = nnx.Dict({
            k: (nnx.BatchStat if k in self.stats else nnx.Param)(fw.from_numpy(v, dtype=dtype))
            for k, v in params.items()
        })

    @classmethod
    def from_params(cls, config, params: dict, *, dtype=None):
        """The module with the given spec-format parameters (NumPy or jax arrays)."""
        return cls(config, params=params, dtype=dtype)

    def arrays(self) -> dict:
        """{spec name: the current jax array}."""
        return {k: v[...] for k, v in self.params.items()}

    def to_params(self) -> dict:
        """{spec name: NumPy float64 array} (the spec's format)."""
        return {k: fw.to_numpy(v) for k, v in self.arrays().items()}

    @property
    def dtype(self):
        return next(iter(self.arrays().values())).dtype

    def initial_state(self, batch: int) -> dict:
        """The spec's initial_state (zeros) as jax arrays of the parameters' precision."""
        state = self.spec_initial_state(self.config, batch)
        return map_arrays(state, lambda a: fw.from_numpy(a, dtype=self.dtype))

    def __call__(self, u, *, state=None, return_state=False, **extra):
        """forward(config, params, u, state=state, return_state=return_state, **extra)."""
        return _run(
            lambda x, p, s: self._forward(self.config, p, x, state=s,
                                          return_state=return_state, **extra),
            u, [self.arrays(), state], self.dtype)

    def step(self, u_t, state):
        """One position: u_t (batch, ...) -> (y_t, new_state)."""
        return _run(lambda x, p, s: self._step(self.config, p, s, x),
                    u_t, [self.arrays(), state], self.dtype)


# ---------------------------------------------------------------------------------- variants


class _Variant(SpecModule):
    """A variant: spec module `spec`, functional backend module `fn` (liquidssm.jax.<variant>)."""

    spec = None
    fn = None

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if cls.spec is not None:
            cls.config_types = (cls.spec.Config,)

    @classmethod
    def spec_init(cls, config, seed):
        return cls.spec.init(config, seed)

    @classmethod
    def spec_initial_state(cls, config, batch):
        return cls.spec.initial_state(config, batch)

    def _forward(self, config, params, u, **kw):
        return self.fn.forward(config, params, u, **kw)

    def _step(self, config, params, state, u_t):
        return self.fn.step(config, params, state, u_t)


class _Convolutional(_Variant):
    def kernel(self, length: int):
        """The SSM convolution kernel K (d_model, length) in the parameters' dtype."""
        return self.fn.kernel(self.config, self.arrays(), length)


class S4D(_Convolutional):
    """S4D (liquidssm.spec.s4d): y = K * u + D u, K[h, l] = 2 Re sum_n C Bbar Abar^l."""

    spec, fn = _s4d, _jax.s4d


class S4(_Convolutional):
    """S4, DPLR HiPPO-LegS (liquidssm.spec.s4)."""

    spec, fn = _s4, _jax.s4


class LiquidS4(_Convolutional):
    """Liquid-S4 (liquidssm.spec.liquid_s4); step/state only with liquid_kernel='scan'."""

    spec, fn = _liquid_s4, _jax.liquid_s4


class S5(_Variant):
    """S5 (liquidssm.spec.s5): x_k = Lambdabar x_{k-1} + gamma Btilde u_k, y = 2 Re(C x) + D u;
    __call__ also takes timesteps (batch, L)."""

    spec, fn = _s5, _jax.s5


class LiquidS5(_Variant):
    """Liquid-S5 (liquidssm.spec.liquid_s5): S5 with p liquid levels."""

    spec, fn = _liquid_s5, _jax.liquid_s5


class Mamba(_Variant):
    """The bare Mamba mixer (liquidssm.spec.mamba.forward); mamba_simple's parameter names."""

    spec, fn = _mamba, _jax.mamba


class LiquidMamba(_Variant):
    """The LiquidMamba block, residual and FFN included (liquidssm.spec.liquid_mamba)."""

    spec, fn = _liquid_mamba, _jax.liquid_mamba


# ---------------------------------------------------------------------------------- blocks

_S4_SSMS = {_s4d.Config: _s4d, _s4.Config: _s4, _liquid_s4.Config: _liquid_s4}
_S5_SSMS = {_s5.Config: _s5, _liquid_s5.Config: _liquid_s5}


@dataclass(frozen=True)
class S4BlockConfig:
    """The S4 block (spec/block.py) around ssm, an s4d / s4 / liquid_s4 Config."""

    ssm: object
    prenorm: bool = True
    approximate_gelu: bool = False

    def __post_init__(self):
        _check_config(self.ssm, tuple(_S4_SSMS), "ssm")
        for name in ("prenorm", "approximate_gelu"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name}: expected a bool, got {getattr(self, name)!r}")


class S4Block(SpecModule):
    """prenorm: y = u + FF(ssm(LN(u))); postnorm: y = LN(u + FF(ssm(u))),
    FF(z) = GLU(Linear_{H->2H}(GELU(z))). Parameters: block.init's ("norm.*",
    "output_linear.*", seed _child_seed(seed, 1)) and the SSM's init(ssm, seed) under "ssm."."""

    config_types = (S4BlockConfig,)

    @staticmethod
    def spec_init(config, seed):
        ssm = _S4_SSMS[type(config.ssm)].init(config.ssm, seed)
        return {**_block.init(config.ssm.d_model, _child_seed(seed, 1)),
                **_block.with_prefix(ssm, "ssm.")}

    @staticmethod
    def spec_initial_state(config, batch):
        return _S4_SSMS[type(config.ssm)].initial_state(config.ssm, batch)

    def _forward(self, config, params, u, *, state=None, return_state=False):
        fn = getattr(_jax, _S4_SSMS[type(config.ssm)].__name__.rsplit(".", 1)[-1])
        ssm = _strip(params, "ssm.")
        return _block.forward(
            params, u,
            lambda x: fn.forward(config.ssm, ssm, x, state=state, return_state=return_state),
            prenorm=config.prenorm, approximate_gelu=config.approximate_gelu)

    def _step(self, config, params, state, u_t):
        fn = getattr(_jax, _S4_SSMS[type(config.ssm)].__name__.rsplit(".", 1)[-1])
        ssm = _strip(params, "ssm.")
        return _block.forward(params, u_t, lambda x: fn.step(config.ssm, ssm, state, x),
                              prenorm=config.prenorm, approximate_gelu=config.approximate_gelu)


class S5Layer(SpecModule):
    """The S5 sequence layer (s5.layer_forward, or liquid_s5.layer_forward for a liquid_s5
    ssm); config an s5.LayerConfig. norm_mean / norm_var (batch norm) are nnx.BatchStat.
    step = the layer on one position (unidirectional SSM only)."""

    config_types = (_s5.LayerConfig,)
    stats = ("norm_mean", "norm_var")

    @staticmethod
    def spec_init(config, seed):
        return _S5_SSMS[type(config.ssm)].layer_init(config, seed)

    @staticmethod
    def spec_initial_state(config, batch):
        return _S5_SSMS[type(config.ssm)].initial_state(config.ssm, batch)

    def _forward(self, config, params, u, **kw):
        return _S5_SSMS[type(config.ssm)].layer_forward(config, params, u, **kw)

    def _step(self, config, params, state, u_t):
        if state is None:
            raise TypeError("state: expected a dict from initial_state or forward, got None")
        y, new = self._forward(config, params, u_t[:, None, :], state=state, return_state=True)
        return y[:, 0, :], new


@dataclass(frozen=True)
class MambaBlockConfig:
    """mamba_ssm's Block with RMSNorm: y = x + mixer(rms_norm(x, norm.weight, norm_epsilon))."""

    mixer: _mamba.Config
    norm_epsilon: float = 1e-5

    def __post_init__(self):
        _check_config(self.mixer, (_mamba.Config,), "mixer")
        check_float("norm_epsilon", self.norm_epsilon, positive=True)


class MambaBlock(SpecModule):
    """x + Mamba(rms_norm(x)). Parameters "norm.weight" (ones) and "mixer.<mamba.init(mixer,
    seed)>", mamba_ssm's Block names; state = the mixer's cache."""

    config_types = (MambaBlockConfig,)

    @staticmethod
    def spec_init(config, seed):
        mixer = _mamba.init(config.mixer, seed)
        return {"norm.weight": np.ones(config.mixer.d_model),
                **{f"mixer.{k}": v for k, v in mixer.items()}}

    @staticmethod
    def spec_initial_state(config, batch):
        return _mamba.initial_state(config.mixer, batch)

    def _forward(self, config, params, u, *, state=None, return_state=False):
        h = _nn.rms_norm(u, params["norm.weight"], config.norm_epsilon)
        out = _jax.mamba.forward(config.mixer, _strip(params, "mixer."), h, state=state,
                                 return_state=return_state)
        return (u + out[0], out[1]) if return_state else u + out

    def _step(self, config, params, state, u_t):
        h = _nn.rms_norm(u_t, params["norm.weight"], config.norm_epsilon)
        y, new = _jax.mamba.step(config.mixer, _strip(params, "mixer."), state, h)
        return u_t + y, new


class MambaLM(SpecModule):
    """The Mamba language model (mamba.lm_init / lm_forward / lm_step; config a mamba.LMConfig):
    tokens (batch, L) integers -> logits (batch, L, padded vocab); MambaLMHeadModel's names."""

    config_types = (_mamba.LMConfig,)

    @staticmethod
    def spec_init(config, seed):
        return _mamba.lm_init(config, seed)

    @staticmethod
    def spec_initial_state(config, batch):
        return _mamba.model_initial_state(config, batch)

    def _forward(self, config, params, tokens, **kw):
        return _mamba.lm_forward(config, params, tokens, **kw)

    def _step(self, config, params, state, token):
        return _mamba.lm_step(config, params, state, token)


# ---------------------------------------------------------------------------------- backbone

#: layer name -> (the SSM / mixer spec module, the block class around it)
LAYERS = {
    "s4d": (_s4d, S4Block), "s4": (_s4, S4Block), "liquid_s4": (_liquid_s4, S4Block),
    "s5": (_s5, S5Layer), "liquid_s5": (_liquid_s5, S5Layer),
    "mamba": (_mamba, MambaBlock), "liquid_mamba": (_liquid_mamba, LiquidMamba),
}


@dataclass(frozen=True)
class SequenceModelConfig:
    """Backbone: d_input (features for head="pool", vocabulary size for head="lm"), d_model,
    n_layers of `layer` (a LAYERS name) with ssm = that variant's Config fields other than d_model
    and block = the block's fields (S4BlockConfig: prenorm, approximate_gelu; s5.LayerConfig:
    activation, prenorm, norm, approximate_gelu; MambaBlockConfig: norm_epsilon; none for
    liquid_mamba); head pool (d_output classes) or lm (d_output None)."""

    d_input: int
    d_model: int
    n_layers: int
    layer: str = "s4d"
    head: str = "pool"
    d_output: int | None = None
    ssm: dict = field(default_factory=dict)
    block: dict = field(default_factory=dict)

    def __post_init__(self):
        check_int("d_input", self.d_input)
        check_int("d_model", self.d_model)
        check_int("n_layers", self.n_layers)
        check_choice("layer", self.layer, list(LAYERS))
        check_choice("head", self.head, ("pool", "lm"))
        if self.head == "pool":
            check_int("d_output", self.d_output)
        elif self.d_output is not None:
            raise ValueError(f"d_output: expected None with head='lm' (the logits have d_input "
                             f"entries), got {self.d_output!r}")
        for name in ("ssm", "block"):
            if not isinstance(getattr(self, name), dict):
                raise TypeError(f"{name}: expected a dict of config fields, got "
                                f"{getattr(self, name)!r}")
        if self.layer == "liquid_mamba" and self.block:
            raise ValueError(f"block: expected {{}} for layer='liquid_mamba' (its Config holds "
                             f"the block's fields: pass them in ssm), got {self.block!r}")
        _ = self.layer_config  # validates ssm / block

    @property
    def layer_config(self):
        """The config of each layer's module."""
        spec, cls = LAYERS[self.layer]
        ssm = spec.Config(d_model=self.d_model, **self.ssm)
        if cls is S4Block:
            return S4BlockConfig(ssm, **self.block)
        if cls is S5Layer:
            return _s5.LayerConfig(ssm, **self.block)
        if cls is MambaBlock:
            return MambaBlockConfig(ssm, **self.block)
        return ssm

    @property
    def rms_norm(self) -> bool:
        """The final norm: RMSNorm for the Mamba family, LayerNorm otherwise."""
        return self.layer in ("mamba", "liquid_mamba")


class SequenceModel(nnx.Module):
    """encoder -> n_layers residual layers -> final norm -> head.

    pool: u (batch, L, d_input) -> x = Linear(u, encoder.*) -> layers -> norm_f -> mean over L
          -> Linear(decoder.*) (batch, d_output)
    lm:   tokens (batch, L) -> x = embedding.weight[tokens] -> layers -> norm_f
          -> x @ embedding.weight^T (batch, L, d_input) (tied; streams with state / step)
    norm_f: RMSNorm (weight; Mamba family, eps 1e-5) or LayerNorm (weight, bias, eps 1e-5).
    Parameters (to_params names): encoder.weight (d_model, d_input), encoder.bias,
    decoder.weight (d_output, d_model), decoder.bias ~ U(+-1/sqrt(fan_in)); embedding.weight
    (d_input, d_model) ~ N(0, 0.02^2); norm_f.weight 1 [, norm_f.bias 0]; layers.{i}.<layer's>.
    Seeds: layer i uses _child_seed(seed, i), the encoder / decoder default_rng([seed, n_layers]).
    With layer="mamba", head="lm" the names are MixerModel's (mamba.lm_forward after prefixing
    "backbone.")."""

    def __init__(self, d_input: int, d_model: int, n_layers: int, *, layer: str = "s4d",
                 head: str = "pool", d_output: int | None = None, ssm: dict | None = None,
                 block: dict | None = None, seed: int = 0, dtype=None,
                 params: dict | None = None):
        config = SequenceModelConfig(d_input, d_model, n_layers, layer, head, d_output,
                                     dict(ssm or {}), dict(block or {}))
        self.config = config
        cls, lcfg = LAYERS[layer][1], config.layer_config
        own = self.spec_init(config, check_int("seed", seed, minimum=0))
        if params is None:
            self.layers = nnx.List([cls(lcfg, seed=_child_seed(seed, i), dtype=dtype)
                                    for i in range(n_layers)])
        else:
            if not isinstance(params, dict):
                raise TypeError(f"params: expected a dict of arrays, got {type(params).__name__}")
            layer_keys = {k for k in params if k.startswith("layers.")}
            self.layers = nnx.List([
                cls.from_params(lcfg, _strip(params, f"layers.{i}."), dtype=dtype)
                for i in range(n_layers)])
            ours = {k: v for k, v in params.items() if k not in layer_keys}
            known = {f"layers.{i}.{k}" for i, m in enumerate(self.layers) for k in m.params}
            if layer_keys - known:
                raise ValueError(f"params: unexpected keys {sorted(layer_keys - known)}")
            _check_params(ours, own)
            own = ours
        self.params = nnx.Dict({k: nnx.Param(fw.from_numpy(v, dtype=dtype))
                                for k, v in own.items()})

    @staticmethod
    def spec_init(config: SequenceModelConfig, seed: int) -> dict:
        """The backbone's own parameters (the layers' come from their modules)."""
        rng = np.random.default_rng([seed, config.n_layers])
        m, d = config.d_model, config.d_input
        if config.head == "pool":
            b_in, b_out = 1 / math.sqrt(d), 1 / math.sqrt(m)
            p = {"encoder.weight": rng.uniform(-b_in, b_in, (m, d)),
                 "encoder.bias": rng.uniform(-b_in, b_in, m),
                 "decoder.weight": rng.uniform(-b_out, b_out, (config.d_output, m)),
                 "decoder.bias": rng.uniform(-b_out, b_out, config.d_output)}
        else:
            p = {"embedding.weight": rng.normal(0.0, 0.02, (d, m))}
        p["norm_f.weight"] = np.ones(m)
        if not config.rms_norm:
            p["norm_f.bias"] = np.zeros(m)
        return p

    @classmethod
    def from_params(cls, config: SequenceModelConfig, params: dict, *, dtype=None):
        if not isinstance(config, SequenceModelConfig):
            raise TypeError(f"config: expected a SequenceModelConfig, got {config!r}")
        return cls(config.d_input, config.d_model, config.n_layers, layer=config.layer,
                   head=config.head, d_output=config.d_output, ssm=config.ssm,
                   block=config.block, params=params, dtype=dtype)

    def arrays(self) -> dict:
        return {k: v[...] for k, v in self.params.items()}

    def to_params(self) -> dict:
        """{name: NumPy float64}: the backbone's own and "layers.{i}."-prefixed layers'."""
        out = {k: fw.to_numpy(v) for k, v in self.arrays().items()}
        for i, layer in enumerate(self.layers):
            out.update({f"layers.{i}.{k}": v for k, v in layer.to_params().items()})
        return out

    def initial_state(self, batch: int) -> dict:
        """{"layers.{i}.<key>": layer i's initial state} (head="lm")."""
        self._need_lm("initial_state")
        return {f"layers.{i}.{k}": v for i, layer in enumerate(self.layers)
                for k, v in layer.initial_state(batch).items()}

    def _need_lm(self, what):
        if self.config.head != "lm":
            raise ValueError(f"{what}: head='pool' averages over the whole sequence and has no "
                             "recurrent state; expected head='lm'")

    def _norm(self, x, p):
        if self.config.rms_norm:
            return _nn.rms_norm(x, p["norm_f.weight"], 1e-5)
        return _nn.layer_norm(x, p["norm_f.weight"], p["norm_f.bias"], 1e-5)

    def _embed(self, tokens, shape_name, ndim):
        if not hasattr(tokens, "dtype") or not jnp.issubdtype(tokens.dtype, jnp.integer) \
                or tokens.ndim != ndim:
            shape = "(batch, length)" if ndim == 2 else "(batch,)"
            raise TypeError(f"{shape_name}: expected an integer array of shape {shape}, got "
                            f"{getattr(tokens, 'shape', None)} "
                            f"{getattr(tokens, 'dtype', type(tokens).__name__)}")
        return jnp.take(self.params["embedding.weight"][...], tokens, axis=0)

    def __call__(self, u, *, state=None, return_state=False):
        """pool: u (batch, L, d_input) -> (batch, d_output); lm: tokens (batch, L) ->
        logits (batch, L, d_input) [, state] (class docstring)."""
        p = self.arrays()
        if self.config.head == "pool":
            if state is not None or return_state:
                self._need_lm("state")
            x = _run(lambda v, q: _nn.linear(v, q["encoder.weight"], q["encoder.bias"]),
                     u, [p])
        else:
            x = self._embed(u, "tokens", 2)
        new = {}
        for i, layer in enumerate(self.layers):
            s = None if state is None else _strip(state, f"layers.{i}.")
            x = layer(x, state=s, return_state=return_state)
            if return_state:
                x, s = x
                new.update({f"layers.{i}.{k}": v for k, v in s.items()})
        x = _run(self._norm, x, [p])
        if self.config.head == "pool":
            y = _run(lambda v, q: _nn.linear(jnp.mean(v, axis=1), q["decoder.weight"],
                                             q["decoder.bias"]), x, [p])
            return y
        y = _run(lambda v, q: _nn.linear(v, q["embedding.weight"]), x, [p])
        return (y, new) if return_state else y

    def step(self, token, state):
        """lm: token (batch,) integers -> (logits (batch, d_input), new state)."""
        self._need_lm("step")
        p, x, new = self.arrays(), self._embed(token, "token", 1), {}
        for i, layer in enumerate(self.layers):
            x, s = layer.step(x, _strip(state, f"layers.{i}."))
            new.update({f"layers.{i}.{k}": v for k, v in s.items()})
        x = _run(self._norm, x, [p])
        return _run(lambda v, q: _nn.linear(v, q["embedding.weight"]), x, [p]), new
