"""liquidssm.jax.nnx: Flax NNX modules generated from the spec's modules.

Every class is `SpecModule` over one spec module (variants, blocks, models; the same class names
as liquidssm.torch.nn). It holds its `config` (static) and one variable per spec parameter in
`self.params`, an nnx.Dict keyed by the spec's names (`to_params()` keys == param_shapes(config));
nnx.Param, or nnx.BatchStat for batch-norm running statistics. The weights are the spec's
`init(config, seed)` in `dtype` (default float32; float64 needs jax x64), so a seed gives the
same weights in every framework; __call__ / step call `liquidssm.jax.<name>` (the spec on jax
arrays, the dtype policy: bfloat16 / float16 inputs compute in float32). Every method traces
under nnx.jit / nnx.grad.

    m = Mamba(d_model=8)                  # or Mamba(mamba.Config(d_model=8)); seed, dtype
    y = m(u)                              # u (batch, L, d_model); m.forward is the same
    y, state = m(u, return_state=True);   y_t, state = m.step(u_t, state)
    state = m.initial_state(batch)        # a dict of jax arrays (the spec's initial_state)
    m.to_params() -> {name: float64 NumPy};  Mamba.from_params(config, params)
    m.save_pretrained(path);  Mamba.from_pretrained(path)
    MambaLM / SequenceModel(head="lm"): m.generate(tokens, max_new_tokens, temperature, top_k)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .. import _modules
from .._bind import check_input
from ..spec._common import check_token_ids
from ._framework import FRAMEWORK

__all__ = ["SpecModule", *_modules.CLASSES]


class SpecModule(nnx.Module):
    """A spec module as an nnx.Module; subclasses name it: `class S4D(SpecModule, spec="s4d")`."""

    _spec = None  # the spec module (liquidssm.spec.<name>)
    _fn = None  # the bound module (liquidssm.jax.<name>)

    def __init_subclass__(cls, spec: str | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if spec is not None:  # None: flax may subclass internally
            _modules.attach_spec(cls, spec, "liquidssm.jax")

    def __init__(self, config=None, *, seed: int = 0, dtype=None, params=None,
                 **config_fields):
        self.config = _modules.make_config(self._spec, config, config_fields)
        values = _modules.spec_params(self._spec, self.config, seed, params, FRAMEWORK)
        self.params = nnx.Dict({
            k: (nnx.BatchStat if _modules.is_statistic(k) else nnx.Param)(
                FRAMEWORK.from_numpy(v, dtype=dtype))
            for k, v in values.items()})

    def spec_params(self) -> dict:
        """{spec name: the current jax array} (the spec's params dict)."""
        return {k: v[...] for k, v in self.params.items()}

    def to_params(self) -> dict:
        """{spec name: float64 NumPy array}."""
        return {k: FRAMEWORK.to_numpy(v) for k, v in self.spec_params().items()}

    @classmethod
    def from_params(cls, config, params: dict, *, dtype=None):
        """The module with these parameters (NumPy or jax arrays under the spec's names,
        exactly param_shapes(config))."""
        return cls(config, params=params, dtype=dtype)

    def save_pretrained(self, path, *, dtype=np.float32) -> None:
        """config.json + model.safetensors (tensors stored as `dtype`: float16, float32 or
        float64) in the directory `path` (liquidssm.checkpoint.save)."""
        from .. import checkpoint

        checkpoint.save(path, self.config, self.to_params(), dtype=dtype)

    @classmethod
    def from_pretrained(cls, path, *, dtype=None):
        """The module saved in `path` by either framework (or, for MambaLM, a mamba_ssm /
        Hugging Face Mamba directory: liquidssm.checkpoint.load)."""
        config, params = _modules.load_pretrained(cls, path)
        return cls(config, params=params, dtype=dtype)

    @property
    def dtype(self):
        """The dtype of the (first floating) parameters."""
        for v in self.spec_params().values():
            if jnp.issubdtype(v.dtype, jnp.floating):
                return v.dtype
        raise ValueError(f"{type(self).__name__}: has no floating parameter")

    def __call__(self, u, state=None, return_state=False, axis_name=None, **extra):
        """The spec's forward(config, params, u, state=, return_state=, **extra).
        axis_name (inside jax.shard_map, u's sequence axis split over that mesh axis): u is
        this shard's contiguous slice, the output its slice (liquidssm.jax.parallel.Shards;
        docs/parallel.md)."""
        if axis_name is not None:
            from .parallel import Shards

            extra["shards"] = Shards(axis_name)
        return self._fn.forward(self.config, self.spec_params(), u, state=state,
                                return_state=return_state, **extra)

    def forward(self, u, state=None, return_state=False, axis_name=None, **extra):
        """The same as calling the module."""
        return self(u, state=state, return_state=return_state, axis_name=axis_name, **extra)

    def step(self, u_t, state, **extra):
        """One position: the spec's step -> (y_t, new_state). Outside a trace, with jax arrays
        (u_t and every state entry) and no keywords, this is the step jitted once per config and
        input shapes (`jit_step`): the spec's checks run when it traces; the parameters are
        passed in, so a changed parameter is seen, and the state is a pytree (a dict of
        arrays). Under nnx.jit / jax.jit (tracers) it is the spec's step itself."""
        if not extra and _concrete(u_t, state):
            return self.jit_step()(u_t, state)
        return self._fn.step(self.config, self.spec_params(), state, u_t, **extra)

    def jit_step(self):
        """step as a function (u_t, state) -> (y_t, new_state) of jitted code, compiled once
        per (config, shapes, dtypes) and shared by every module of that config: jax.jit of
        the spec's step on (params, state, u_t), reading this module's current parameters at
        each call. Token ids are range-checked on the host first (as the spec does outside
        jit)."""
        step = _decoder(self._fn, self.config)[1]
        vocab = _vocab(self)

        def call(u_t, state):
            if vocab is not None:
                check_token_ids("token", u_t, vocab)
            return step(_raw_params(self), state, u_t)

        return call

    def initial_state(self, batch: int) -> dict:
        """The spec's initial_state (zeros) in the compute dtype of the parameters (float32 for
        bfloat16 / float16; complex states complex)."""
        return self._fn.initial_state(self.config, batch, dtype=FRAMEWORK.compute_dtype(self.dtype))


class _Kernel:
    def kernel(self, length: int):
        """The SSM convolution kernel K (d_model, length): the spec's kernel."""
        return self._fn.kernel(self.config, self.spec_params(), length)


def _concrete(u_t, state) -> bool:
    """True for a concrete jax array u_t and a dict state of concrete jax arrays (what the
    jitted step takes without changing an error: other inputs take the spec's step)."""
    if not isinstance(u_t, jax.Array) or isinstance(u_t, jax.core.Tracer):
        return False
    if not isinstance(state, dict):
        return False
    return all(isinstance(v, jax.Array) and not isinstance(v, jax.core.Tracer)
               for v in state.values())


def _raw_params(module) -> dict:
    """spec_params through Variable.get_raw_value (no indexing op per variable: ~1 us each
    instead of ~7; the same arrays for these plain Params / BatchStats)."""
    return {k: v.get_raw_value() for k, v in module.params.items()}


def _vocab(module):
    """The embedding's rows of a token model (ids must be below), else None."""
    if not getattr(module._spec, "takes_tokens", lambda c: False)(module.config):
        return None
    for k, v in module.params.items():
        if k.endswith("embedding.weight"):
            return v[...].shape[0]
    return None


@functools.lru_cache(maxsize=16)
def _decoder(fn, config):
    """Jitted (prefill(params, tokens), step(params, state, token)) for a bound module and
    config, made once per config (the compilation is reused by later generate calls)."""
    prefill = jax.jit(lambda p, t: fn.forward(config, p, t, return_state=True))
    step = jax.jit(lambda p, s, t: fn.step(config, p, s, t))
    return prefill, step


class _LM:
    def generate(self, tokens, max_new_tokens: int, *, temperature: float = 0.0,
                 top_k: int | None = None, seed: int = 0):
        """tokens (batch, L) integer jax array -> (batch, L + max_new_tokens): one forward over
        the prompt, then one step per new id (both jitted); greedy (temperature 0) or sampled from
        softmax(logits / temperature) over the top_k ids (host NumPy, default_rng(seed));
        ids < the real vocabulary only (liquidssm._modules.generate)."""
        check_input(FRAMEWORK, "tokens", tokens, tokens=True)
        vocab = _modules.vocab_size(self._spec, self.config)
        params = self.spec_params()
        prefill, step = _decoder(self._fn, self.config)
        return _modules.generate(
            lambda t: prefill(params, t), lambda t, s: step(params, s, t), tokens,
            max_new_tokens, vocab=vocab,
            to_numpy=FRAMEWORK.to_numpy, to_tokens=lambda a: jnp.asarray(a, dtype=tokens.dtype),
            temperature=temperature, top_k=top_k, seed=seed)


#: S4D, S4, LiquidS4, S5, LiquidS5, Mamba, LiquidMamba, S4Block, S5Layer, MambaBlock,
#: SequenceModel, MambaLM: one class per spec module (liquidssm._modules.CLASSES)
globals().update(_modules.define_classes(SpecModule, {"kernel": _Kernel, "lm": _LM}))
