"""liquidssm.torch.nn: torch.nn.Module classes generated from the spec's modules.

Every class is `SpecModule` over one spec module (variants, blocks, models; the same class names
as liquidssm.jax.nnx). It holds its `config` and the spec's parameters under the spec's names
(`state_dict()` keys == `param_shapes(config)`; dotted names are nested containers, batch-norm
running statistics are buffers). The weights are the spec's `init(config, seed)`, so a seed gives
the same weights in every framework; forward / step call `liquidssm.torch.<name>` (the spec on
tensors, the dtype policy: bfloat16 / float16 inputs compute in float32).

    m = Mamba(d_model=8)                  # or Mamba(mamba.Config(d_model=8)); seed, dtype, device
    y = m(u)                              # u (batch, L, d_model)
    y, state = m(u, return_state=True);   y_t, state = m.step(u_t, state)
    state = m.initial_state(batch)        # a dict of tensors (the spec's initial_state)
    m.to_params() -> {name: float64 NumPy};  Mamba.from_params(config, params)
    m.save_pretrained(path);  Mamba.from_pretrained(path)
    torch.optim.AdamW(m.param_groups(lr, weight_decay, ssm_lr))
    MambaLM / SequenceModel(head="lm"): m.generate(tokens, max_new_tokens, temperature, top_k)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .. import _modules
from . import _decode, _framework
from ._framework import FRAMEWORK

__all__ = ["SpecModule", "param_groups", *_modules.CLASSES]


class SpecModule(nn.Module):
    """A spec module as an nn.Module; subclasses name it: `class S4D(SpecModule, spec="s4d")`."""

    _spec = None  # the spec module (liquidssm.spec.<name>)
    _fn = None  # the bound module (liquidssm.torch.<name>)

    def __init_subclass__(cls, spec: str | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if spec is not None:  # None: a subclass of a generated class (torch parametrize makes some)
            _modules.attach_spec(cls, spec, "liquidssm.torch")

    def __init__(self, config=None, *, seed: int = 0, dtype=None, device=None, params=None,
                 **config_fields):
        super().__init__()
        self.config = _modules.make_config(self._spec, config, config_fields)
        values = _modules.spec_params(self._spec, self.config, seed, params, FRAMEWORK)
        for name, value in values.items():
            tensor = FRAMEWORK.from_numpy(value, dtype=dtype, device=device)
            *path, leaf = name.split(".")
            owner = self
            for part in path:
                if part not in owner._modules:
                    owner.add_module(part, nn.Module())
                owner = owner._modules[part]
            if _modules.is_statistic(name):
                owner.register_buffer(leaf, tensor)
            else:
                owner.register_parameter(leaf, nn.Parameter(tensor))
        self._fast = _decode.Decoder(self)

    def spec_params(self) -> dict:
        """{spec name: tensor}: the parameters and the buffers (the spec's params dict)."""
        return {**dict(self.named_parameters()), **dict(self.named_buffers())}

    def to_params(self) -> dict:
        """{spec name: float64 NumPy array}."""
        return _framework.params_to_spec(self.spec_params())

    @classmethod
    def from_params(cls, config, params: dict, *, dtype=None, device=None):
        """The module with these parameters (NumPy arrays or tensors under the spec's names,
        exactly param_shapes(config))."""
        return cls(config, params=params, dtype=dtype, device=device)

    def save_pretrained(self, path, *, dtype=np.float32) -> None:
        """config.json + model.safetensors (tensors stored as `dtype`: float16, float32 or
        float64) in the directory `path` (liquidssm.checkpoint.save)."""
        from .. import checkpoint

        checkpoint.save(path, self.config, self.to_params(), dtype=dtype)

    @classmethod
    def from_pretrained(cls, path, *, dtype=None, device=None):
        """The module saved in `path` by either framework (or, for MambaLM, a mamba_ssm /
        Hugging Face Mamba directory: liquidssm.checkpoint.load)."""
        config, params = _modules.load_pretrained(cls, path)
        return cls(config, params=params, dtype=dtype, device=device)

    def _reference(self):
        for t in self.spec_params().values():
            if t.is_floating_point():
                return t
        raise ValueError(f"{type(self).__name__}: has no floating parameter")

    def forward(self, u, state=None, return_state=False, process_group=None, **extra):
        """The spec's forward(config, params, u, state=, return_state=, **extra).
        process_group (a torch.distributed group): u is this rank's contiguous slice of the
        sequence (ranks in order), the output its slice (liquidssm.torch.parallel.Shards;
        docs/parallel.md)."""
        if process_group is not None:
            from .parallel import Shards

            extra["shards"] = Shards(process_group)
        return self._fn.forward(self.config, self.spec_params(), u, state=state,
                                return_state=return_state, **extra)

    def step(self, u_t, state, **extra):
        """One position: the spec's step -> (y_t, new_state). new_state is a read-only
        StepState that the next step trusts; the parameters are checked and prepared once per
        change (liquidssm.torch._decode: the decode fast path, the spec's unchecked _step)."""
        if not extra:
            out = self._fast.step(u_t, state)
            if out is not None:
                return out
        y, new = self._fn.step(self.config, self.spec_params(), state, u_t, **extra)
        if extra or torch.compiler.is_compiling():
            return y, new
        return y, self._fast.trust(new, u_t.shape[0], self._fast.compute_dtype(u_t),
                                   u_t.device)

    def reset_step_cache(self) -> None:
        """Forget the prepared parameters of the decode fast path (needed only after writes
        that bypass autograd's version counter, such as `p.data.copy_(...)`)."""
        self._fast.reset()

    def initial_state(self, batch: int) -> dict:
        """The spec's initial_state (zeros) in the compute dtype of the parameters (float32 for
        bfloat16 / float16; complex states complex), on their device: a StepState (read-only,
        trusted by step)."""
        ref = self._reference()
        dtype = FRAMEWORK.compute_dtype(ref.dtype)
        state = self._fn.initial_state(self.config, batch, dtype=dtype, device=ref.device)
        return self._fast.trust(state, batch, dtype, ref.device)

    def param_groups(self, lr: float, weight_decay: float = 0.0, ssm_lr: float | None = None):
        return param_groups(self, lr, weight_decay, ssm_lr)

    def extra_repr(self) -> str:
        return repr(self.config)


def param_groups(model: nn.Module, lr: float, weight_decay: float = 0.0,
                 ssm_lr: float | None = None) -> list[dict]:
    """Optimizer groups: [{"params": the rest, lr, weight_decay}, {"params": the SSM parameters
    of every SpecModule inside `model` (leaf names in _modules.ssm_leaves(config)), lr: ssm_lr
    (default lr), weight_decay: 0}]; empty groups are left out. Every trainable parameter of
    `model` is in exactly one group."""
    ssm = {}
    for module in model.modules():
        if isinstance(module, SpecModule):
            leaves = _modules.ssm_leaves(module.config)
            for name, p in module.named_parameters():
                if name.rsplit(".", 1)[-1] in leaves:
                    ssm[id(p)] = p
    rest = [p for p in model.parameters() if id(p) not in ssm]
    groups = [{"params": rest, "lr": lr, "weight_decay": weight_decay},
              {"params": list(ssm.values()), "lr": lr if ssm_lr is None else ssm_lr,
               "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


class _Kernel:
    def kernel(self, length: int):
        """The SSM convolution kernel K (d_model, length): the spec's kernel."""
        return self._fn.kernel(self.config, self.spec_params(), length)


class _LM:
    @torch.no_grad()
    def generate(self, tokens, max_new_tokens: int, *, temperature: float = 0.0,
                 top_k: int | None = None, seed: int = 0):
        """tokens (batch, L) integer tensor -> (batch, L + max_new_tokens): one forward over
        the prompt, then one step per new id; greedy (temperature 0) or sampled from
        softmax(logits / temperature) over the top_k ids (host NumPy, default_rng(seed));
        ids < the real vocabulary only (liquidssm._modules.generate)."""
        from .._bind import check_input

        check_input(FRAMEWORK, "tokens", tokens, tokens=True)
        vocab = _modules.vocab_size(self._spec, self.config)
        return _modules.generate(
            lambda t: self(t, return_state=True), self.step, tokens, max_new_tokens,
            vocab=vocab, to_numpy=FRAMEWORK.to_numpy,
            to_tokens=lambda a: torch.as_tensor(a, device=tokens.device),
            temperature=temperature, top_k=top_k, seed=seed)


#: S4D, S4, LiquidS4, S5, LiquidS5, Mamba, LiquidMamba, S4Block, S5Layer, MambaBlock,
#: SequenceModel, MambaLM: one class per spec module (liquidssm._modules.CLASSES)
globals().update(_modules.define_classes(SpecModule, {"kernel": _Kernel, "lm": _LM}))
