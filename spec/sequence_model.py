"""SequenceModel: one backbone for every variant: input map, n residual layers, final norm, head.

For u (batch, L, d_input) real features, or tokens (batch, L) integers in [0, vocab_size):

    x_0 = encoder(u) = u W_enc^T + b_enc          (d_input given)
        = embedding[tokens]                       (vocab_size given)
    x_{i+1} = layer_i(x_i),  i = 0..n_layers-1    (the layer's block, below)
    h = norm_f(x_n):  LayerNorm (weight, bias) | RMSNorm (weight) | identity, eps norm_epsilon
    head "pool":     y = mean_L(h) W_dec^T + b_dec                 (batch, d_output)
    head "sequence": y = h W_dec^T + b_dec                         (batch, L, d_output)
    head "lm":       y = h W^T, W = lm_head.weight, or embedding.weight when tie_embeddings
                                                                   (batch, L, vocab_size)

The layer of each variant (`layer`): s4d, s4, liquid_s4 -> the S4 block (spec/s4_block.py);
s5, liquid_s5 -> the S5 layer (spec/s5_layer.py); mamba -> the Mamba residual block
(spec/mamba_block.py); liquid_mamba -> the LiquidMamba block itself (spec/liquid_mamba.py: its
Config holds the block's fields). `ssm` holds the variant Config's fields other than d_model,
`block` the block Config's other fields (none for liquid_mamba).

Parameters: "embedding.weight" (vocab_size, d_model) | "encoder.weight" (d_model, d_input),
"encoder.bias" (d_model,); "layers.{i}.<the layer's names>"; "norm_f.weight" (d_model,)
[, "norm_f.bias"]; "decoder.weight" (d_output, d_model), "decoder.bias" (d_output,) | [untied
lm] "lm_head.weight" (vocab_size, d_model).
Init: layer i = the block's init(layer_config, child_seed(seed, i)); from
default_rng(child_seed(seed, n_layers)): the embedding ~ N(0, 0.02^2) (mamba_ssm's, GPT-2's) or
the encoder's weight then bias ~ U(+-1/sqrt(d_input)); then the decoder's weight then bias
~ U(+-1/sqrt(d_model)), or the untied lm_head ~ U(+-1/sqrt(d_model)) (torch.nn.Linear's
default); norm_f weight 1, bias 0.
State (heads "sequence" and "lm" stream; "pool" sees the whole sequence, and so do the
non-causal liquid_s4 kernels pb / kb and bidirectional S5 layers): {"layers.{i}.<key>": layer
i's state}; a state passed in must hold exactly those keys.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field

import numpy as np

from ._common import (
    cast_arrays,
    check_array,
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_params,
    check_seed,
    check_shards,
    check_token_ids,
    child_seed,
    namespace,
    strip_prefix,
    with_prefix,
)
from .nn import layer_norm, linear, rms_norm

__all__ = ["Config", "LAYERS", "param_shapes", "init", "initial_state", "forward", "step",
           "step_params", "layer_config", "layer_module", "embed", "takes_tokens"]

#: variant -> the spec module of its residual layer
LAYERS = {"s4d": "s4_block", "s4": "s4_block", "liquid_s4": "s4_block", "s5": "s5_layer",
          "liquid_s5": "s5_layer", "mamba": "mamba_block", "liquid_mamba": "liquid_mamba"}
HEADS = ("pool", "sequence", "lm")
NORMS = ("layer", "rms", "none")


def _spec(name):
    return importlib.import_module(f"liquidssm.spec.{name}")


@dataclass(frozen=True)
class Config:
    """The backbone's choices (module docstring). Exactly one of d_input (real features) and
    vocab_size (integer tokens); head "lm" needs vocab_size and no d_output; tie_embeddings
    needs head "lm"."""

    d_model: int
    n_layers: int
    layer: str = "s4d"
    ssm: dict = field(default_factory=dict)
    block: dict = field(default_factory=dict)
    d_input: int | None = None
    vocab_size: int | None = None
    head: str = "pool"
    d_output: int | None = None
    norm_f: str = "layer"
    norm_epsilon: float = 1e-5
    tie_embeddings: bool = False

    def __post_init__(self):
        check_int("d_model", self.d_model)
        check_int("n_layers", self.n_layers)
        check_choice("layer", self.layer, list(LAYERS))
        check_choice("head", self.head, HEADS)
        check_choice("norm_f", self.norm_f, NORMS)
        check_float("norm_epsilon", self.norm_epsilon, positive=True)
        check_bool("tie_embeddings", self.tie_embeddings)
        if (self.d_input is None) == (self.vocab_size is None):
            raise ValueError(f"d_input: expected exactly one of d_input (real features) and "
                             f"vocab_size (tokens), got d_input={self.d_input!r}, "
                             f"vocab_size={self.vocab_size!r}")
        for name in ("d_input", "vocab_size"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name))
        if self.head == "lm":
            if self.vocab_size is None:
                raise ValueError("vocab_size: expected an int >= 1 with head='lm', got None")
            if self.d_output is not None:
                raise ValueError(f"d_output: expected None with head='lm' (the logits have "
                                 f"vocab_size entries), got {self.d_output!r}")
        else:
            check_int("d_output", self.d_output)
            if self.tie_embeddings:
                raise ValueError(f"tie_embeddings: expected False with head={self.head!r} "
                                 "(only an lm head can be tied to the embedding), got True")
        for name in ("ssm", "block"):
            if not isinstance(getattr(self, name), dict):
                raise TypeError(f"{name}: expected a dict of config fields, got "
                                f"{getattr(self, name)!r}")
        if self.layer == "liquid_mamba" and self.block:
            raise ValueError(f"block: expected {{}} with layer='liquid_mamba' (its Config holds "
                             f"the block's fields: give them in ssm), got {self.block!r}")
        _ = layer_config(self)  # validates ssm and block

    def __hash__(self):  # dict fields: hash the frozen contents (jit static arguments)
        return hash(repr(self))

    @property
    def tokens(self) -> bool:
        """True when the input is integer tokens (vocab_size given)."""
        return self.vocab_size is not None

    @property
    def streams(self) -> bool:
        """True when state / step apply (every head but "pool")."""
        return self.head != "pool"


def _check(config):
    if not isinstance(config, Config):
        raise TypeError(f"config: expected a liquidssm.spec.sequence_model.Config, got "
                        f"{type(config).__name__} ({config!r})")


def takes_tokens(config: Config) -> bool:
    """True when the input is integer tokens (vocab_size given), False for real features."""
    _check(config)
    return config.tokens


def layer_module(config: Config):
    """The spec module of every layer (s4_block, s5_layer, mamba_block or liquid_mamba)."""
    return _spec(LAYERS[config.layer])


def _check_fields(name, given, cls, exclude):
    fields = set(cls.__dataclass_fields__) - set(exclude)
    if not set(given) <= fields:
        raise ValueError(f"{name}: expected a dict with keys among {sorted(fields)} (the fields "
                         f"of {cls.__module__}.{cls.__qualname__} it sets), got {given!r}")


def layer_config(config: Config):
    """The Config of every layer: the block's Config around the variant's."""
    name, cls = LAYERS[config.layer], _spec(config.layer).Config
    _check_fields("ssm", config.ssm, cls, ("d_model",))
    if name != "liquid_mamba":
        _check_fields("block", config.block, _spec(name).Config, ("ssm", "mixer"))
    variant = cls(d_model=config.d_model, **config.ssm)
    if name == "s4_block":
        return _spec(name).Config(ssm=variant, **config.block)
    if name == "s5_layer":
        return _spec(name).Config(ssm=variant, **config.block)
    if name == "mamba_block":
        return _spec(name).Config(mixer=variant, **config.block)
    return variant


def _own_shapes(config):
    m, shapes = config.d_model, {}
    if config.tokens:
        shapes["embedding.weight"] = (config.vocab_size, m)
    else:
        shapes.update({"encoder.weight": (m, config.d_input), "encoder.bias": (m,)})
    if config.norm_f != "none":
        shapes["norm_f.weight"] = (m,)
    if config.norm_f == "layer":
        shapes["norm_f.bias"] = (m,)
    if config.head != "lm":
        shapes.update({"decoder.weight": (config.d_output, m), "decoder.bias": (config.d_output,)})
    elif not config.tie_embeddings:
        shapes["lm_head.weight"] = (config.vocab_size, m)
    return shapes


def param_shapes(config: Config) -> dict[str, tuple[int, ...]]:
    _check(config)
    module, lcfg = layer_module(config), layer_config(config)
    one = module.param_shapes(lcfg)
    shapes = _own_shapes(config)
    for i in range(config.n_layers):
        shapes.update(with_prefix(one, f"layers.{i}."))
    return shapes


def init(config: Config, seed: int = 0) -> dict[str, np.ndarray]:
    """Module docstring's init: every layer from its own child seed, then the backbone's."""
    _check(config)
    check_seed(seed)
    module, lcfg = layer_module(config), layer_config(config)
    params = {}
    for i in range(config.n_layers):
        params.update(with_prefix(module.init(lcfg, child_seed(seed, i)), f"layers.{i}."))
    rng = np.random.default_rng(child_seed(seed, config.n_layers))
    m = config.d_model

    def uniform(fan_in, shape):
        return rng.uniform(-1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in), shape)

    if config.tokens:
        params["embedding.weight"] = rng.normal(0.0, 0.02, (config.vocab_size, m))
    else:
        params["encoder.weight"] = uniform(config.d_input, (m, config.d_input))
        params["encoder.bias"] = uniform(config.d_input, (m,))
    if config.head != "lm":
        params["decoder.weight"] = uniform(m, (config.d_output, m))
        params["decoder.bias"] = uniform(m, (config.d_output,))
    elif not config.tie_embeddings:
        params["lm_head.weight"] = uniform(m, (config.vocab_size, m))
    if config.norm_f != "none":
        params["norm_f.weight"] = np.ones(m)
    if config.norm_f == "layer":
        params["norm_f.bias"] = np.zeros(m)
    return params


def initial_state(config: Config, batch: int) -> dict[str, np.ndarray]:
    """{"layers.{i}.<key>": layer i's initial state} (streaming heads only)."""
    _check(config)
    _check_streams(config, "initial_state")
    one = layer_module(config).initial_state(layer_config(config), check_int("batch", batch))
    return {f"layers.{i}.{k}": v.copy() for i in range(config.n_layers) for k, v in one.items()}


def _check_streams(config, what):
    if not config.streams:
        raise ValueError(f"{what}: head='pool' averages over the whole sequence and has no "
                         "recurrent state; expected head 'sequence' or 'lm'")
    variant = layer_config(config)
    variant = getattr(variant, "ssm", variant)  # the S4 block's / S5 layer's variant
    if getattr(variant, "liquid_kernel", "scan") != "scan":
        raise ValueError(f"{what}: layer={config.layer!r} with liquid_kernel="
                         f"{variant.liquid_kernel!r} is a whole-sequence (non-causal) kernel "
                         "with no recurrent state; use liquid_kernel='scan' to stream")
    if getattr(variant, "bidirectional", False):
        raise ValueError(f"{what}: a bidirectional {config.layer} layer cannot stream (its "
                         "reverse recursion needs the whole sequence)")


def _check_state(config, state):
    """state must be a dict with exactly initial_state's keys (missing and unexpected named);
    the layers check the shapes."""
    keys = set(initial_state(config, 1))
    if not isinstance(state, dict):
        raise TypeError(f"state: expected a dict with the keys {sorted(keys)}, got "
                        f"{type(state).__name__}")
    missing, extra = sorted(keys - set(state)), sorted(set(state) - keys)
    if missing or extra:
        raise ValueError(f"state: expected exactly the keys of initial_state(config, batch), "
                         f"got missing {missing} and unexpected {extra}")


def embed(config: Config, params, tokens, name: str, ndim: int):
    """embedding.weight[tokens]: tokens (batch, L) or (batch,) integers in [0, rows of the
    embedding) -> (..., d_model). The ids' range is checked where their values can be read
    cheaply (_common.check_token_ids)."""
    shape = "(batch, length)" if ndim == 2 else "(batch,)"
    if not hasattr(tokens, "shape") or not hasattr(tokens, "dtype"):
        raise TypeError(f"{name}: expected an integer array of shape {shape}, got "
                        f"{type(tokens).__name__}")
    xp = namespace(tokens)
    if not xp.isdtype(tokens.dtype, "integral") or len(tokens.shape) != ndim:
        raise TypeError(f"{name}: expected an integer array of shape {shape}, got shape "
                        f"{tuple(tokens.shape)} and dtype {tokens.dtype}")
    for axis, size in zip(("batch", "length"), tokens.shape):
        if size < 1:  # as check_array: no empty batch or sequence
            raise ValueError(f"{name}: expected {axis} >= 1, got shape {tuple(tokens.shape)} "
                             f"and dtype {tokens.dtype}")
    E = params["embedding.weight"]
    check_token_ids(name, tokens, E.shape[0])
    return _lookup(E, tokens, xp)


def _lookup(E, tokens, xp):
    """E[tokens] (unchecked): tokens (...) integers -> (..., rows of E's width)."""
    flat = xp.take(E, xp.reshape(tokens, (-1,)), axis=0)
    return xp.reshape(flat, tuple(tokens.shape) + (E.shape[1],))


def _input(config, params, u, name, ndim):
    """(x_0, params in the compute dtype): u's dtype for real input, the embedding's for tokens
    (the dtype policy)."""
    check_params(params, param_shapes(config), inputs={name: u})
    if config.tokens:
        x = embed(config, params, u, name, ndim)
        return x, cast_arrays(params, x.dtype)
    check_array(name, u, ("batch", "length")[:ndim - 1] + (config.d_input,))
    params = cast_arrays(params, u.dtype)
    return linear(u, params["encoder.weight"], params["encoder.bias"]), params


def _output(config, params, x, *, pool, shards=None):
    if config.norm_f == "layer":
        x = layer_norm(x, params["norm_f.weight"], params["norm_f.bias"], config.norm_epsilon)
    elif config.norm_f == "rms":
        x = rms_norm(x, params["norm_f.weight"], config.norm_epsilon)
    if config.head == "lm":
        W = params["embedding.weight" if config.tie_embeddings else "lm_head.weight"]
        return linear(x, W)
    if pool and shards is None:
        x = namespace(x).mean(x, axis=1)
    elif pool:  # the mean over every slice: the sums over time and the lengths summed
        xp = namespace(x)
        length = shards.total(xp.sum(xp.ones_like(x[:1, :, :1]), axis=1))
        x = shards.total(xp.sum(x, axis=1)) / length
    return linear(x, params["decoder.weight"], params["decoder.bias"])


def forward(config: Config, params, u, *, state=None, return_state=False, shards=None):
    """u (batch, L, d_input) or tokens (batch, L) -> y (module docstring) [, new state].
    shards (liquidssm.spec.parallel.Shards): u is this rank's slice of the sequence; every
    layer runs sharded (the layer's forward refuses shards where it has no sharded form); a
    sequence / lm head gives this slice's outputs, the pool head the mean over the whole
    sequence (on every slice), a returned state the global one."""
    _check(config)
    check_bool("return_state", return_state)
    check_shards(shards)
    if state is not None or return_state:
        _check_streams(config, "state" if state is not None else "return_state")
    if state is not None:
        _check_state(config, state)
    x, params = _input(config, params, u, "tokens" if config.tokens else "u",
                       2 if config.tokens else 3)
    module, lcfg, new = layer_module(config), layer_config(config), {}
    for i in range(config.n_layers):
        prefix = f"layers.{i}."
        out = module.forward(lcfg, strip_prefix(params, prefix), x,
                             state=None if state is None else strip_prefix(state, prefix),
                             return_state=return_state, shards=shards)
        if return_state:
            out, s = out
            new.update(with_prefix(s, prefix))
        x = out
    y = _output(config, params, x, pool=config.head == "pool", shards=shards)
    return (y, new) if return_state else y


def step(config: Config, params, state, u_t):
    """One position: u_t (batch, d_input) or token (batch,) -> (y_t, new state). Each layer's
    step checks its own state; `_step` is the same computation unchecked."""
    _check(config)
    _check_streams(config, "step")
    _check_state(config, state)
    x, params = _input(config, params, u_t, "token" if config.tokens else "u_t",
                       1 if config.tokens else 2)
    module, lcfg, new = layer_module(config), layer_config(config), {}
    for i in range(config.n_layers):
        prefix = f"layers.{i}."
        x, s = module.step(lcfg, strip_prefix(params, prefix), strip_prefix(state, prefix), x)
        new.update(with_prefix(s, prefix))
    return _output(config, params, x, pool=False), new


def step_params(config: Config, params):
    """What `_step` reads, from params (checked, in the compute dtype): {"params": params,
    "layer_config", "layers": per layer (its module's step_params, ((state key, the model's
    key), ...))}; None where the layer's module has no `_step` (S4, Liquid-S4: their step is
    the checked one only)."""
    module, lcfg = layer_module(config), layer_config(config)
    if not hasattr(module, "_step") or not hasattr(module, "step_params"):
        return None
    keys = tuple(module.initial_state(lcfg, 1))
    layers = []
    for i in range(config.n_layers):
        prefix = f"layers.{i}."
        one = module.step_params(lcfg, strip_prefix(params, prefix))
        if one is None:
            return None
        layers.append((one, tuple((k, prefix + k) for k in keys)))
    return {"params": params, "layer_config": lcfg, "layers": layers}


def _step(config: Config, p, state, u_t, xp):
    """step's computation, unchecked: p = step_params(config, params), state (the model's keys)
    in p's dtype, u_t (batch, d_input) in it or token (batch,) integers in range."""
    params, lcfg, module = p["params"], p["layer_config"], layer_module(config)
    if config.tokens:
        x = _lookup(params["embedding.weight"], u_t, xp)
    else:
        x = linear(u_t, params["encoder.weight"], params["encoder.bias"])
    new = {}
    for one, keys in p["layers"]:
        x, s = module._step(lcfg, one, {k: state[full] for k, full in keys}, x, xp)
        for k, full in keys:
            new[full] = s[k]
    return _output(config, params, x, pool=False), new
