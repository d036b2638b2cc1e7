"""torch.nn.Module wrappers of the spec's variants, blocks and a small sequence backbone.

Each module holds its `config` and the spec's parameters as nn.Parameters (batch-norm running
statistics as buffers), registered so that `state_dict()` keys are the spec's names (nested
containers for dotted names: "ssm.log_dt", Mamba's "in_proj.weight", ...). Weights come from the
spec's NumPy init for the seed, so they are identical across frameworks. forward calls the
functional backend (`liquidssm.torch.<variant>`, or the spec's block function under the same
dtype policy: bfloat16 / float16 compute in float32) on those tensors.

    y = module(u)                          u (batch, L, H) -> y (batch, L, H)
    cache = module.init_cache(batch)       Cache(state = the spec's initial_state, seqlen_offset)
    y_t = module.step(u_t, cache)          u_t (batch, H); cache.state <- the new state
    y = module(u, cache=cache)             continues from cache.state and updates it (prefill)
    module.to_params() -> {spec name: float64 ndarray};  Cls.from_params(config, params)
    torch.optim.AdamW(param_groups(model, lr, weight_decay, ssm_lr))
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass

import numpy as np
import torch
from liquidssm._bind import map_arrays
from liquidssm.spec import block, liquid_mamba, liquid_s4, liquid_s5, mamba, s4, s4d, s5
from liquidssm.spec.nn import rms_norm
from torch import nn

from ._framework import FRAMEWORK

__all__ = [
    "Cache", "SpecModule", "param_groups",
    "S4D", "S4", "LiquidS4", "S5", "LiquidS5", "Mamba", "LiquidMamba",
    "S4BlockConfig", "S4Block", "S5Layer", "MambaBlockConfig", "MambaBlock", "MambaLM",
    "SequenceModel",
]

#: leaf names (after the last ".") of the SSM parameters, per family: the parameters the anchors
#: train without weight decay (and, for S4/S5, with their own learning rate)
S4D_SSM = frozenset({"log_dt", "log_A_real", "A_imag", "B_re", "B_im", "BL_re", "BL_im"})
S4_SSM = frozenset({"log_dt", "log_Lambda_real", "Lambda_imag", "P_re", "P_im", "B_re", "B_im",
                    "BL_re", "BL_im"})
S5_SSM = frozenset({"Lambda_re", "Lambda_im", "B_re", "B_im", "log_step", "BL_re", "BL_im"})
MAMBA_SSM = frozenset({"A_log", "D"})


@dataclass
class Cache:
    """Streaming state of a module: `state` is the spec's state dict (tensors; for a
    SequenceModel {"layers.<i>": layer state}), `seqlen_offset` the positions consumed."""

    state: dict
    seqlen_offset: int = 0


def _run(fn, dtype, *args, **kwargs):
    """fn(*args, **kwargs) under the backend's dtype policy: for dtype bfloat16 / float16 every
    floating tensor is cast to float32 and the output (first item of a tuple) back to dtype."""
    cdt = FRAMEWORK.compute_dtype(dtype)
    if cdt == dtype:
        return fn(*args, **kwargs)

    def cast(a):
        if isinstance(a, (dict, torch.Tensor)):
            return map_arrays(a, lambda t: FRAMEWORK.cast(t, cdt))
        return a

    out = fn(*[cast(a) for a in args], **{k: cast(v) for k, v in kwargs.items()})
    if isinstance(out, tuple):
        return (FRAMEWORK.cast(out[0], dtype), *out[1:])
    return FRAMEWORK.cast(out, dtype)


def _tensor(value, dtype, device):
    if isinstance(value, torch.Tensor):
        value = FRAMEWORK.to_numpy(value)
    return FRAMEWORK.from_numpy(np.asarray(value), dtype=dtype, device=device)


def _check_names(params, template, optional=()):
    """params must have exactly the template's names (plus optional ones) and its shapes."""
    if not isinstance(params, dict):
        raise TypeError(f"params: expected a dict of arrays, got {type(params).__name__}")
    missing = sorted(set(template) - set(params))
    extra = sorted(set(params) - set(template) - set(optional))
    if missing or extra:
        raise ValueError(f"params: expected the names {sorted(template)}, got missing {missing} "
                         f"and unexpected {extra}")
    for name, ref in template.items():
        shape = tuple(getattr(params[name], "shape", ()))
        if shape != ref.shape:
            raise ValueError(f"params[{name!r}]: expected shape {ref.shape}, got {shape}")


class SpecModule(nn.Module):
    """Base class: config + spec-named parameters; forward / step / init_cache call the
    functional backend. Subclasses define _init(seed) (NumPy), _forward(params, u, **kw),
    _step(params, state, u_t), _initial_state(batch) (NumPy) and ssm_names."""

    Config: type = object
    #: spec names held as buffers (not trained), and names from_params also accepts
    BUFFER_NAMES: frozenset = frozenset()
    OPTIONAL_NAMES: frozenset = frozenset()

    def __init__(self, config=None, *, seed: int = 0, params=None, dtype=None, device=None,
                 **config_fields):
        super().__init__()
        if config is None:
            config = self.Config(**config_fields)
        elif config_fields:
            raise TypeError(f"config: expected either a config or its fields, got both "
                            f"(fields {sorted(config_fields)})")
        if type(config) is not self.Config:
            raise TypeError(f"config: expected a {self.Config.__module__}."
                            f"{self.Config.__qualname__}, got {type(config).__name__}")
        self.config = config
        template = self._init(seed)
        if params is not None:
            _check_names(params, template, self.OPTIONAL_NAMES)
            template = params
        for name, value in template.items():
            self._register(name, _tensor(value, dtype, device), name in self.BUFFER_NAMES)

    def _register(self, name, tensor, buffer):
        *path, leaf = name.split(".")
        owner = self
        for part in path:
            if part not in owner._modules:
                owner.add_module(part, nn.Module())
            owner = owner._modules[part]
        if buffer:
            owner.register_buffer(leaf, tensor)
        else:
            owner.register_parameter(leaf, nn.Parameter(tensor))

    @property
    def ssm_names(self) -> frozenset:
        return frozenset()

    def spec_params(self) -> dict:
        """{spec name: tensor}: the parameters and buffers (tied aliases once)."""
        return {**dict(self.named_parameters()), **dict(self.named_buffers())}

    def to_params(self) -> dict:
        """{spec name: float64 NumPy array} (the spec's format)."""
        return {k: FRAMEWORK.to_numpy(v) for k, v in self.spec_params().items()}

    @classmethod
    def from_params(cls, config, params, *, dtype=None, device=None):
        """The module with the given spec parameters (NumPy arrays or tensors)."""
        return cls(config, params=params, dtype=dtype, device=device)

    def _ref(self):
        return next(iter(self.spec_params().values()))

    def forward(self, u, cache: Cache | None = None, **kwargs):
        params = self.spec_params()
        if cache is None:
            return self._forward(params, u, **kwargs)
        _check_cache(cache)
        y, cache.state = self._forward(params, u, state=cache.state, return_state=True, **kwargs)
        cache.seqlen_offset += u.shape[1]
        return y

    def step(self, u_t, cache: Cache):
        """One position: u_t (batch, ...) -> y_t; cache.state advances by one step."""
        _check_cache(cache)
        y, cache.state = self._step(self.spec_params(), cache.state, u_t)
        cache.seqlen_offset += 1
        return y

    def init_cache(self, batch: int, *, dtype=None, device=None) -> Cache:
        """Zero state (spec initial_state) in dtype (default: the compute dtype of the
        parameters; complex states in the matching complex dtype) on the parameters' device."""
        ref = self._ref()
        dtype = FRAMEWORK.compute_dtype(ref.dtype) if dtype is None else dtype
        device = ref.device if device is None else device
        state = self._initial_state(batch)
        return Cache(map_arrays(state, lambda a: FRAMEWORK.from_numpy(a, dtype=dtype,
                                                                      device=device)))

    def param_groups(self, lr: float, weight_decay: float = 0.0, ssm_lr: float | None = None):
        return param_groups(self, lr, weight_decay, ssm_lr)


def _check_cache(cache):
    if not isinstance(cache, Cache):
        raise TypeError(f"cache: expected a Cache (from init_cache), got {type(cache).__name__}")


def param_groups(model: nn.Module, lr: float, weight_decay: float = 0.0,
                 ssm_lr: float | None = None) -> list[dict]:
    """Optimizer groups: [{"params": the rest, lr, weight_decay}, {"params": the SSM parameters
    (each SpecModule's ssm_names), lr: ssm_lr (default lr), weight_decay: 0}]; empty groups
    are left out. Every trainable parameter of `model` is in exactly one group."""
    ssm = {}
    for module in model.modules():
        if isinstance(module, SpecModule):
            for name, p in module.named_parameters():
                if name.rsplit(".", 1)[-1] in module.ssm_names:
                    ssm[id(p)] = p
    rest = [p for p in model.parameters() if id(p) not in ssm]
    groups = [{"params": rest, "lr": lr, "weight_decay": weight_decay},
              {"params": list(ssm.values()), "lr": lr if ssm_lr is None else ssm_lr,
               "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


# --------------------------------------------------------------------------------- variants


class _Variant(SpecModule):
    """A spec variant (liquidssm.spec.<variant>) bound to torch (liquidssm.torch.<variant>)."""

    variant = ""
    SSM_NAMES: frozenset = frozenset()

    def __init__(self, config=None, **kwargs):
        # resolved here, not in forward: torch.compile does not trace import_module
        self._spec = importlib.import_module(f"liquidssm.spec.{self.variant}")
        self._backend = getattr(importlib.import_module("liquidssm.torch"), self.variant)
        super().__init__(config, **kwargs)

    @property
    def ssm_names(self):
        return self.SSM_NAMES

    def _init(self, seed):
        return self._spec.init(self.config, seed)

    def _initial_state(self, batch):
        return self._spec.initial_state(self.config, batch)

    def _forward(self, params, u, **kwargs):
        return self._backend.forward(self.config, params, u, **kwargs)

    def _step(self, params, state, u_t):
        return self._backend.step(self.config, params, state, u_t)


class _Convolutional(_Variant):
    def kernel(self, length: int):
        """The SSM convolution kernel K (d_model, length) (spec kernel)."""
        return self._backend.kernel(self.config, self.spec_params(), length)


class S4D(_Convolutional):
    """S4D (spec.s4d). SSM group: log_dt, log_A_real, A_imag, B_re, B_im (the published S4D
    kernel registers dt, A and B with weight decay 0 and the SSM lr; C, D are regular)."""

    Config, variant, SSM_NAMES = s4d.Config, "s4d", S4D_SSM


class S4(_Convolutional):
    """S4 (spec.s4, DPLR). SSM group: log_dt, log_Lambda_real, Lambda_imag, P_re, P_im, B_re,
    B_im (as the published S4 kernel; C-tilde and D are regular)."""

    Config, variant, SSM_NAMES = s4.Config, "s4", S4_SSM


class LiquidS4(_Convolutional):
    """Liquid-S4 (spec.liquid_s4). SSM group: the base's (S4D or S4) plus BL_re, BL_im."""

    Config, variant = liquid_s4.Config, "liquid_s4"

    @property
    def ssm_names(self):
        return S4_SSM if self.config.base == "s4" else S4D_SSM


class S5(_Variant):
    """S5 (spec.s5). SSM group: Lambda_re, Lambda_im, B_re, B_im, log_step (the published
    "standard" optimiser setup; C and D take weight decay). forward(u, timesteps=tau)."""

    Config, variant, SSM_NAMES = s5.Config, "s5", S5_SSM


class LiquidS5(_Variant):
    """Liquid-S5 (spec.liquid_s5). SSM group: as S5 plus BL_re, BL_im (untied)."""

    Config, variant, SSM_NAMES = liquid_s5.Config, "liquid_s5", S5_SSM


class Mamba(_Variant):
    """The Mamba mixer (spec.mamba); state_dict keys are mamba_simple.Mamba's (in_proj.weight,
    conv1d.weight, conv1d.bias, x_proj.weight, dt_proj.weight, dt_proj.bias, A_log, D,
    out_proj.weight). SSM group: A_log, D (mamba's _no_weight_decay; mamba has no own lr, so
    ssm_lr=None keeps lr). Cache state: conv_state (b, d_inner, d_conv), ssm_state."""

    Config, variant, SSM_NAMES = mamba.Config, "mamba", MAMBA_SSM


class LiquidMamba(_Variant):
    """The LiquidMamba block (spec.liquid_mamba, residuals included); names norm.weight,
    mixer.<mamba names> [, mixer.conv1d_gate.*, norm2.weight, mlp.fc1/fc2.*].
    SSM group: mixer.A_log, mixer.D (as Mamba)."""

    Config, variant, SSM_NAMES = liquid_mamba.Config, "liquid_mamba", MAMBA_SSM


# --------------------------------------------------------------------------------- blocks

_S4_FAMILY = {s4d.Config: (s4d, S4D_SSM), s4.Config: (s4, S4_SSM),
              liquid_s4.Config: (liquid_s4, None)}


def _check_bool(name, value):
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected a bool, got {value!r}")


@dataclass(frozen=True)
class S4BlockConfig:
    """The S4 block (spec.block) around ssm: an s4d, s4 or liquid_s4 Config."""

    ssm: object
    prenorm: bool = True
    approximate_gelu: bool = False

    def __post_init__(self):
        if type(self.ssm) not in _S4_FAMILY:
            raise TypeError(f"ssm: expected an s4d, s4 or liquid_s4 Config, got {self.ssm!r}")
        _check_bool("prenorm", self.prenorm)
        _check_bool("approximate_gelu", self.approximate_gelu)


def _s4_block_forward(config, params, u, *, state=None, return_state=False):
    """block.forward(params, u, ssm.forward) with the SSM's parameters under "ssm."."""
    module, ssm = _S4_FAMILY[type(config.ssm)][0], block.strip_prefix(params, "ssm.")

    def mixer(x):
        return module.forward(config.ssm, ssm, x, state=state, return_state=return_state)

    return block.forward(params, u, mixer, prenorm=config.prenorm,
                         approximate_gelu=config.approximate_gelu)


def _s4_block_step(config, params, state, u_t):
    """The block on one position (every block map acts on the last axis) around ssm.step."""
    module, ssm = _S4_FAMILY[type(config.ssm)][0], block.strip_prefix(params, "ssm.")
    return block.forward(params, u_t, lambda x: module.step(config.ssm, ssm, state, x),
                         prenorm=config.prenorm, approximate_gelu=config.approximate_gelu)


class S4Block(SpecModule):
    """The S4 block (spec.block): u + GLU(Linear(GELU(ssm(LN(u))))) (prenorm). Names: norm.weight,
    norm.bias, output_linear.weight, output_linear.bias, ssm.<the SSM's names>. Init: the SSM's
    spec init and block.init, both with `seed`. SSM group: the SSM's (S4D / S4 / Liquid-S4)."""

    Config = S4BlockConfig

    @property
    def ssm_names(self):
        names = _S4_FAMILY[type(self.config.ssm)][1]
        if names is None:  # liquid_s4: its base's names
            names = S4_SSM if self.config.ssm.base == "s4" else S4D_SSM
        return names

    def _init(self, seed):
        module = _S4_FAMILY[type(self.config.ssm)][0]
        params = block.with_prefix(module.init(self.config.ssm, seed), "ssm.")
        return {**params, **block.init(self.config.ssm.d_model, seed)}

    def _initial_state(self, batch):
        return _S4_FAMILY[type(self.config.ssm)][0].initial_state(self.config.ssm, batch)

    def _forward(self, params, u, **kwargs):
        return _run(_s4_block_forward, u.dtype, self.config, params, u, **kwargs)

    def _step(self, params, state, u_t):
        return _run(_s4_block_step, u_t.dtype, self.config, params, state, u_t)


def _s5_module(config):
    return liquid_s5 if isinstance(config.ssm, liquid_s5.Config) else s5


def _s5_layer_step(config, params, state, u_t):
    y, new = _s5_module(config).layer_forward(config, params, u_t[:, None, :], state=state,
                                              return_state=True)
    return y[:, 0, :], new


class S5Layer(SpecModule):
    """The S5 layer (spec s5.layer_forward / liquid_s5.layer_forward by config.ssm's type).
    Names: the SSM's, norm_weight, norm_bias, [norm_mean, norm_var: buffers, batch norm],
    out1/out2 weight and bias. forward(u, timesteps=tau). SSM group: as S5.
    BatchNorm is the spec's inference form in both train and eval mode (statistics not updated)."""

    Config = s5.LayerConfig
    BUFFER_NAMES = frozenset({"norm_mean", "norm_var"})

    @property
    def ssm_names(self):
        return S5_SSM

    def _init(self, seed):
        return _s5_module(self.config).layer_init(self.config, seed)

    def _initial_state(self, batch):
        return _s5_module(self.config).initial_state(self.config.ssm, batch)

    def _forward(self, params, u, **kwargs):
        return _run(_s5_module(self.config).layer_forward, u.dtype, self.config, params, u,
                    **kwargs)

    def _step(self, params, state, u_t):
        return _run(_s5_layer_step, u_t.dtype, self.config, params, state, u_t)


@dataclass(frozen=True)
class MambaBlockConfig:
    """mamba_ssm's Block with RMSNorm: u + mixer(rms_norm(u, norm.weight, norm_epsilon))."""

    mixer: mamba.Config
    norm_epsilon: float = 1e-5

    def __post_init__(self):
        if not isinstance(self.mixer, mamba.Config):
            raise TypeError(f"mixer: expected a liquidssm.spec.mamba.Config, got {self.mixer!r}")
        if not (isinstance(self.norm_epsilon, float) and self.norm_epsilon > 0):
            raise ValueError(f"norm_epsilon: expected a float > 0, got {self.norm_epsilon!r}")


def _mamba_block_forward(config, params, u, *, state=None, return_state=False):
    """u + mamba.forward(mixer, rms_norm(u)): one layer of spec mamba.model_forward."""
    h = rms_norm(u, params["norm.weight"], config.norm_epsilon)
    out = mamba.forward(config.mixer, block.strip_prefix(params, "mixer."), h, state=state,
                        return_state=return_state)
    return (u + out[0], out[1]) if return_state else u + out


def _mamba_block_step(config, params, state, u_t):
    h = rms_norm(u_t, params["norm.weight"], config.norm_epsilon)
    y, new = mamba.step(config.mixer, block.strip_prefix(params, "mixer."), state, h)
    return u_t + y, new


class MambaBlock(SpecModule):
    """Residual Mamba block; names norm.weight, mixer.<mamba names> (mamba_ssm's Block).
    Init: mixer = spec mamba.init(mixer, seed), norm.weight = 1. SSM group: A_log, D."""

    Config = MambaBlockConfig

    @property
    def ssm_names(self):
        return MAMBA_SSM

    def _init(self, seed):
        mixer = block.with_prefix(mamba.init(self.config.mixer, seed), "mixer.")
        return {"norm.weight": np.ones(self.config.mixer.d_model), **mixer}

    def _initial_state(self, batch):
        return mamba.initial_state(self.config.mixer, batch)

    def _forward(self, params, u, **kwargs):
        return _run(_mamba_block_forward, u.dtype, self.config, params, u, **kwargs)

    def _step(self, params, state, u_t):
        return _run(_mamba_block_step, u_t.dtype, self.config, params, state, u_t)


class MambaLM(SpecModule):
    """The Mamba language model (spec mamba.lm_*; MambaLMHeadModel's names: backbone.embedding,
    backbone.layers.<i>.{norm,mixer}.*, backbone.norm_f.weight, lm_head.weight tied to the
    embedding unless params give it). forward(tokens (b, L) int) -> logits (b, L, padded vocab);
    step(token (b,), cache). SSM group: A_log, D."""

    Config = mamba.LMConfig
    OPTIONAL_NAMES = frozenset({"lm_head.weight"})

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        if "lm_head" not in self._modules:  # tied: the same Parameter under both names
            self.add_module("lm_head", nn.Module())
            self.lm_head.register_parameter("weight", self.backbone.embedding.weight)

    @property
    def ssm_names(self):
        return MAMBA_SSM

    def _init(self, seed):
        return mamba.lm_init(self.config, seed)

    def _initial_state(self, batch):
        return mamba.model_initial_state(self.config, batch)

    def _forward(self, params, tokens, **kwargs):
        return _run(mamba.lm_forward, self._ref().dtype, self.config, params, tokens, **kwargs)

    def _step(self, params, state, token):
        return _run(mamba.lm_step, self._ref().dtype, self.config, params, state, token)


# --------------------------------------------------------------------------------- backbone

LAYERS = ("s4d", "s4", "liquid_s4", "s5", "liquid_s5", "mamba", "liquid_mamba")
_CONFIGS = {"s4d": s4d.Config, "s4": s4.Config, "liquid_s4": liquid_s4.Config,
            "s5": s5.Config, "liquid_s5": liquid_s5.Config}


def _make_layer(layer, d_model, ssm_config, block_config, seed, dtype, device):
    kw = dict(seed=seed, dtype=dtype, device=device)
    if layer in ("s4d", "s4", "liquid_s4"):
        config = S4BlockConfig(_CONFIGS[layer](d_model=d_model, **ssm_config), **block_config)
        return S4Block(config, **kw)
    if layer in ("s5", "liquid_s5"):
        config = s5.LayerConfig(_CONFIGS[layer](d_model=d_model, **ssm_config), **block_config)
        return S5Layer(config, **kw)
    if layer == "mamba":
        config = MambaBlockConfig(mamba.Config(d_model=d_model, **ssm_config), **block_config)
        return MambaBlock(config, **kw)
    return LiquidMamba(liquid_mamba.Config(d_model=d_model, **ssm_config), **kw)


def _linear_init(rng, fan_in, fan_out):
    """torch.nn.Linear's default: weight (fan_out, fan_in), bias ~ U(+-1/sqrt(fan_in))."""
    bound = 1 / math.sqrt(fan_in)
    return rng.uniform(-bound, bound, (fan_out, fan_in)), rng.uniform(-bound, bound, fan_out)


class SequenceModel(nn.Module):
    """encoder -> n_layers residual layers -> head.

    encoder: Linear(d_input, d_model); with d_input=None and head="lm", Embedding(d_output,
    d_model) on integer tokens (b, L).
    layer: "s4d" | "s4" | "liquid_s4" -> S4Block, "s5" | "liquid_s5" -> S5Layer,
    "mamba" -> MambaBlock, "liquid_mamba" -> LiquidMamba; ssm_config: the SSM / mixer Config
    fields besides d_model; block_config: the wrapper's fields (S4BlockConfig, s5.LayerConfig,
    MambaBlockConfig; none for liquid_mamba).
    head: "pool": Linear(mean over L) -> (b, d_output); "lm": Linear per position -> (b, L,
    d_output); only "lm" streams (cache / step).
    Init: layer i = spec init with seed + 1 + i; encoder then decoder from
    np.random.default_rng(seed): Linear U(+-1/sqrt(fan_in)) weight then bias, Embedding N(0, 1).
    """

    def __init__(self, d_input: int | None, d_model: int, n_layers: int, layer: str = "s4d",
                 head: str = "pool", d_output: int = 1, *, ssm_config: dict | None = None,
                 block_config: dict | None = None, seed: int = 0, dtype=None, device=None):
        super().__init__()
        if layer not in LAYERS:
            raise ValueError(f"layer: expected one of {list(LAYERS)}, got {layer!r}")
        if head not in ("pool", "lm"):
            raise ValueError(f"head: expected one of ['pool', 'lm'], got {head!r}")
        for name, value in (("d_model", d_model), ("n_layers", n_layers),
                            ("d_output", d_output)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
        if d_input is None and head != "lm":
            raise ValueError("d_input: expected an int >= 1 (None, token input, needs "
                             f"head='lm'), got None with head={head!r}")
        if d_input is not None and (not isinstance(d_input, int) or d_input < 1):
            raise ValueError(f"d_input: expected an int >= 1 or None, got {d_input!r}")
        if layer == "liquid_mamba" and block_config:
            raise ValueError(f"block_config: liquid_mamba has no wrapper, got {block_config!r}")
        self.layer, self.head = layer, head
        dtype = torch.float32 if dtype is None else dtype
        rng = np.random.default_rng(seed)
        if d_input is None:
            self.encoder = nn.Embedding(d_output, d_model, dtype=dtype, device=device)
            enc = {"weight": rng.standard_normal((d_output, d_model))}
        else:
            self.encoder = nn.Linear(d_input, d_model, dtype=dtype, device=device)
            enc = dict(zip(("weight", "bias"), _linear_init(rng, d_input, d_model)))
        self.layers = nn.ModuleList([
            _make_layer(layer, d_model, ssm_config or {}, block_config or {}, seed + 1 + i,
                        dtype, device) for i in range(n_layers)])
        self.decoder = nn.Linear(d_model, d_output, dtype=dtype, device=device)
        dec = dict(zip(("weight", "bias"), _linear_init(rng, d_model, d_output)))
        with torch.no_grad():
            for module, values in ((self.encoder, enc), (self.decoder, dec)):
                for k, v in values.items():
                    getattr(module, k).copy_(torch.as_tensor(v))

    def _check_stream(self):
        if self.head != "lm":
            raise ValueError(f"cache: streaming needs head='lm' (pooling sees the whole "
                             f"sequence), got head={self.head!r}")

    def forward(self, u, cache: Cache | None = None):
        """u (b, L, d_input) or tokens (b, L) -> (b, d_output) [pool] or (b, L, d_output) [lm]."""
        x = self.encoder(u)
        if cache is not None:
            self._check_stream()
            _check_cache(cache)
        for i, layer in enumerate(self.layers):
            if cache is None:
                x = layer(x)
            else:
                sub = Cache(cache.state[f"layers.{i}"])
                x = layer(x, cache=sub)
                cache.state = {**cache.state, f"layers.{i}": sub.state}
        if cache is not None:
            cache.seqlen_offset += x.shape[1]
        return self.decoder(x.mean(dim=1) if self.head == "pool" else x)

    def step(self, u_t, cache: Cache):
        """u_t (b, d_input) or tokens (b,) -> (b, d_output); head="lm" only."""
        self._check_stream()
        _check_cache(cache)
        x, state = self.encoder(u_t), dict(cache.state)
        for i, layer in enumerate(self.layers):
            sub = Cache(state[f"layers.{i}"])
            x = layer.step(x, sub)
            state[f"layers.{i}"] = sub.state
        cache.state, cache.seqlen_offset = state, cache.seqlen_offset + 1
        return self.decoder(x)

    def init_cache(self, batch: int, *, dtype=None, device=None) -> Cache:
        self._check_stream()
        return Cache({f"layers.{i}": layer.init_cache(batch, dtype=dtype, device=device).state
                      for i, layer in enumerate(self.layers)})

    def to_params(self) -> dict:
        """{state_dict name: float64 NumPy array}."""
        return {k: FRAMEWORK.to_numpy(v) for k, v in self.state_dict().items()}

    def load_params(self, params: dict):
        """Load to_params()' format (NumPy arrays or tensors); names and shapes must match."""
        own = self.state_dict()
        _check_names(params, {k: np.empty(tuple(v.shape)) for k, v in own.items()})
        self.load_state_dict({k: _tensor(v, own[k].dtype, own[k].device)
                              for k, v in params.items()})
        return self

    @classmethod
    def from_params(cls, params: dict, *args, **kwargs):
        """cls(*args, **kwargs) with the given parameters."""
        return cls(*args, **kwargs).load_params(params)

    def param_groups(self, lr: float, weight_decay: float = 0.0, ssm_lr: float | None = None):
        return param_groups(self, lr, weight_decay, ssm_lr)
