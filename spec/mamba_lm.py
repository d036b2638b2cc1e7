"""The Mamba language model (mamba_ssm's MambaLMHeadModel with rms_norm=True, d_intermediate=0),
under its published parameter names.

It is exactly the SequenceModel (spec/sequence_model.py) with layer="mamba", token input,
norm_f="rms", head="lm", the vocabulary padded up to a multiple of pad_vocab_size_multiple:

    x_0 = embedding[tokens];  x_{i+1} = x_i + mixer_i(rms_norm(x_i, layers.i.norm.weight))
    logits = rms_norm(x_n, norm_f.weight) W^T,  W = embedding (tied) or lm_head.weight

Names (mamba_ssm's state_dict): "backbone.embedding.weight" (padded_vocab_size, d_model),
"backbone.layers.{i}.mixer.<mamba names>", "backbone.layers.{i}.norm.weight",
"backbone.norm_f.weight" [, "lm_head.weight" when tie_embeddings=False]. `sequence_names` and
`published_names` map between these and the SequenceModel's names.
Init (mamba_ssm's _init_weights): per layer the mixer's init (from one default_rng(seed), layer
after layer), then Linear biases zero except dt_proj.bias, out_proj.weight divided by
sqrt(n_layer); embedding N(0, 0.02^2) (drawn first); norms 1; an untied lm_head
~ U(+-1/sqrt(d_model)) (torch.nn.Linear's default; drawn last).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import mamba, sequence_model
from ._common import check_bool, check_float, check_int, check_params, check_seed, with_prefix

__all__ = ["Config", "param_shapes", "init", "initial_state", "forward", "step", "step_params",
           "sequence_config", "sequence_names", "published_names", "takes_tokens"]


@dataclass(frozen=True)
class Config:
    """mamba_ssm's MambaConfig fields (ssm_cfg: the mixer's Config fields other than d_model)."""

    d_model: int
    n_layer: int
    vocab_size: int
    ssm_cfg: dict = field(default_factory=dict)
    norm_epsilon: float = 1e-5
    pad_vocab_size_multiple: int = 8
    tie_embeddings: bool = True

    def __post_init__(self):
        check_int("n_layer", self.n_layer)
        check_int("vocab_size", self.vocab_size)
        check_int("pad_vocab_size_multiple", self.pad_vocab_size_multiple)
        check_float("norm_epsilon", self.norm_epsilon, positive=True)
        check_bool("tie_embeddings", self.tie_embeddings)
        fields = set(mamba.Config.__dataclass_fields__) - {"d_model"}
        if not isinstance(self.ssm_cfg, dict) or not set(self.ssm_cfg) <= fields:
            raise ValueError(f"ssm_cfg: expected a dict with keys among {sorted(fields)}, "
                             f"got {self.ssm_cfg!r}")
        _ = self.mixer  # validates d_model and the ssm_cfg values

    def __hash__(self):  # ssm_cfg is a dict: hash the frozen contents (jit static arguments)
        return hash(repr(self))

    @property
    def mixer(self) -> mamba.Config:
        return mamba.Config(d_model=self.d_model, **self.ssm_cfg)

    @property
    def padded_vocab_size(self) -> int:
        m = self.pad_vocab_size_multiple
        return -(-self.vocab_size // m) * m


def _check(config):
    if not isinstance(config, Config):
        raise TypeError(f"config: expected a liquidssm.spec.mamba_lm.Config, got "
                        f"{type(config).__name__} ({config!r})")


def takes_tokens(config: Config) -> bool:
    """Always True: the input is token ids."""
    return True


def sequence_config(config: Config) -> sequence_model.Config:
    """The SequenceModel that this LM is."""
    _check(config)
    return sequence_model.Config(
        d_model=config.d_model, n_layers=config.n_layer, layer="mamba", ssm=dict(config.ssm_cfg),
        block={"norm_epsilon": config.norm_epsilon}, vocab_size=config.padded_vocab_size,
        head="lm", norm_f="rms", norm_epsilon=config.norm_epsilon,
        tie_embeddings=config.tie_embeddings)


def sequence_names(params: dict) -> dict:
    """Published names -> SequenceModel names ("backbone." dropped, "embedding" kept)."""
    return {k[len("backbone."):] if k.startswith("backbone.") else k: v
            for k, v in params.items()}


def published_names(params: dict) -> dict:
    """SequenceModel names -> published names (the inverse of sequence_names)."""
    return {k if k == "lm_head.weight" else "backbone." + k: v for k, v in params.items()}


def param_shapes(config: Config) -> dict[str, tuple[int, ...]]:
    return published_names(sequence_model.param_shapes(sequence_config(config)))


def init(config: Config, seed: int = 0) -> dict[str, np.ndarray]:
    """Module docstring's init (mamba_ssm's order of draws from one generator)."""
    _check(config)
    rng, mixer = np.random.default_rng(check_seed(seed)), config.mixer
    p = {"backbone.embedding.weight": rng.normal(0.0, 0.02, (config.padded_vocab_size,
                                                             config.d_model))}
    for i in range(config.n_layer):
        layer = mamba._init_mixer(mixer, rng)
        for k in ("in_proj.bias", "out_proj.bias"):
            if k in layer:
                layer[k] = np.zeros_like(layer[k])
        layer["out_proj.weight"] = layer["out_proj.weight"] / math.sqrt(config.n_layer)
        p.update(with_prefix(layer, f"backbone.layers.{i}.mixer."))
        p[f"backbone.layers.{i}.norm.weight"] = np.ones(config.d_model)
    p["backbone.norm_f.weight"] = np.ones(config.d_model)
    if not config.tie_embeddings:
        b = 1 / math.sqrt(config.d_model)
        p["lm_head.weight"] = rng.uniform(-b, b, (config.padded_vocab_size, config.d_model))
    return p


def initial_state(config: Config, batch: int) -> dict[str, np.ndarray]:
    """{"layers.{i}.conv_state", "layers.{i}.ssm_state"}: each layer's mixer cache (zeros)."""
    return sequence_model.initial_state(sequence_config(config), batch)


def forward(config: Config, params, tokens, *, state=None, return_state=False, shards=None):
    """tokens (batch, L) integers in [0, padded_vocab_size) -> logits (batch, L,
    padded_vocab_size) [, new state]; shards as sequence_model.forward's."""
    check_params(params, param_shapes(config), inputs={"tokens": tokens})  # published names
    return sequence_model.forward(sequence_config(config), sequence_names(params), tokens,
                                  state=state, return_state=return_state, shards=shards)


def step(config: Config, params, state, token):
    """token (batch,) integers -> (logits (batch, padded_vocab_size), new state)."""
    check_params(params, param_shapes(config), inputs={"token": token})
    return sequence_model.step(sequence_config(config), sequence_names(params), state, token)


def step_params(config: Config, params):
    """What `_step` reads: the SequenceModel's step_params of the renamed params, and its
    Config (made once here, not per token)."""
    seq = sequence_config(config)
    return {"config": seq, "model": sequence_model.step_params(seq, sequence_names(params))}


def _step(config: Config, p, state, token, xp):
    """step's computation, unchecked: the SequenceModel's `_step`."""
    return sequence_model._step(p["config"], p["model"], state, token, xp)
