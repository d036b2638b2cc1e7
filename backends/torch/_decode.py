"""The decode fast path of liquidssm.torch.nn's modules (docs/design.md, "The decode fast path").

`SpecModule.step(u_t, state)` runs the spec's unchecked `_step(config, prepared, state, u_t, xp)`
when everything it would check is already known good, and the spec's checked `step` otherwise:

- the parameters: checked (the spec's check_params), cast to the compute dtype and turned into
  `prepared = spec.step_params(config, params)` once, kept per compute dtype; the cache is keyed
  by every parameter's and buffer's identity, `_version` (in-place writes: an optimizer step,
  load_state_dict) and data pointer (Module.to, `p.data = ...`), read each call (~3 us for
  Mamba's 9 tensors, load ~5). Under autograd (grad enabled
  and a parameter requiring grad) `prepared` is recomputed each call, so gradients reach the
  parameters; the checks still run once.
- the state: trusted when it is a StepState this module made (initial_state, or a previous
  step), for its batch, dtype and device. Any other state (a plain dict, say forward's) takes the
  checked step once, whose result is a StepState: so a wrong state still gets the spec's error
  naming the argument, on first use.
- the input: checked every call by a few attribute reads (a tensor of the state's batch, width,
  dtype and device; token ids: an integer tensor (batch,), ids in range); anything else takes
  the checked step, which raises the spec's error or applies the dtype policy (bfloat16 input).
- torch.compile and keyword arguments (S5's timesteps) take the checked step.
In-place writes that bypass the version counter (`p.data.copy_(...)`) are not seen: call
`reset_step_cache()` after them.
"""

from __future__ import annotations

import torch

from .._modules import StepState
from ..spec._common import check_params, check_token_ids, namespace, shapes_of
from ._framework import FRAMEWORK

__all__ = ["Decoder"]

_INTS = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def _dense(tree):
    """step_params' tree with every tensor contiguous: a transposed view there (Mamba's conv_wt
    (K, d)) is stored in the order the step's elementwise ops read it."""
    if isinstance(tree, torch.Tensor):
        return tree.contiguous()
    if isinstance(tree, dict):
        return {k: _dense(v) for k, v in tree.items()}
    if type(tree) in (list, tuple):
        return type(tree)(_dense(v) for v in tree)
    return tree


class Decoder:
    """One module's fast-path state: its token (what its StepStates carry), the tensors its
    cache was made from, and the prepared parameters per compute dtype."""

    def __init__(self, module):
        self.module = module
        self.spec = module._spec
        self.token = object()
        self.tokens = getattr(self.spec, "takes_tokens", lambda c: False)(module.config)
        self.has_step = hasattr(self.spec, "_step") and hasattr(self.spec, "step_params")
        self.entries = None  # [(owner's _parameters / _buffers dict, leaf name, tensor)]
        self.signature = None
        self.prepared = {}  # compute dtype -> step_params (or None: no fast path)
        self.trainable = False
        self.xp = None
        config = module.config
        self.width = None if self.tokens else (getattr(config, "d_input", None)
                                               or config.d_model)
        self.vocab = None
        if self.tokens:
            emb = [s for k, s in shapes_of(self.spec, config).items()
                   if k.endswith("embedding.weight")]
            self.vocab = emb[0][0]

    def reset(self):
        self.entries, self.signature, self.prepared = None, None, {}

    def _entries(self):
        out = []
        for kind in ("_parameters", "_buffers"):
            named = (self.module.named_parameters() if kind == "_parameters"
                     else self.module.named_buffers())
            for name, t in named:
                owner, _, leaf = name.rpartition(".")
                sub = self.module.get_submodule(owner) if owner else self.module
                out.append((getattr(sub, kind), leaf, t))
        return out

    def _current(self):
        """The parameters' signature now (None entries: a tensor was replaced)."""
        return tuple([(t._version, t.data_ptr()) if d.get(k) is t else None
                      for d, k, t in self.entries])

    def params(self, dtype):
        """step_params in `dtype` (None: this module has no fast path), rebuilt when a parameter
        changed; under autograd recomputed from the live parameters each call."""
        if self.entries is None:
            self.entries = self._entries()
            self.signature = None
        sig = self._current()
        if sig != self.signature:
            if None in sig:
                self.entries = self._entries()
                sig = self._current()
            self.signature, self.prepared = sig, {}
            self.trainable = any(t.requires_grad for _, _, t in self.entries)
        grad = self.trainable and torch.is_grad_enabled()
        found = self.prepared.get(dtype, True)
        if found is True or (grad and found is not None):
            found = self._build(dtype, grad)
        return found

    def _build(self, dtype, grad):
        m = self.module
        if not self.has_step:
            self.prepared[dtype] = None
            return None
        params = m.spec_params()
        if not self.prepared:  # the first build after a change: the spec's check, once
            check_params(params, shapes_of(self.spec, m.config))
        with torch.set_grad_enabled(grad):
            cast = {k: FRAMEWORK.cast(v, dtype) for k, v in params.items()}
            prepared = _dense(self.spec.step_params(m.config, cast))
        if self.xp is None and prepared is not None:
            self.xp = namespace(next(iter(params.values())))
        if not grad or prepared is None:
            self.prepared[dtype] = prepared
        elif dtype not in self.prepared:
            self.prepared[dtype] = True  # marks "checked"; rebuilt per call under autograd
        return prepared

    def owner(self, batch, dtype, device):
        return (self.token, batch, dtype, device)

    def trust(self, state, batch, dtype, device):
        """state as a StepState of this module (where it has a fast path)."""
        if not self.has_step or not isinstance(state, dict):
            return state
        return StepState(state, self.owner(batch, dtype, device))

    def step(self, u_t, state):
        """(y_t, StepState) by the unchecked `_step`, or None where the checked step must run."""
        if type(state) is not StepState:
            return None
        owner = state.owner
        if (owner[0] is not self.token or not isinstance(u_t, torch.Tensor)
                or torch.compiler.is_compiling()):
            return None
        _, batch, dtype, device = owner
        if self.tokens:
            if u_t.dtype not in _INTS or u_t.shape != (batch,) or u_t.device != device:
                return None
            check_token_ids("token", u_t, self.vocab)
        elif u_t.dtype != dtype or u_t.shape != (batch, self.width) or u_t.device != device:
            return None
        prepared = self.params(dtype)
        if prepared is None:
            return None
        y, new = self.spec._step(self.module.config, prepared, state, u_t, self.xp)
        return y, StepState(new, owner)

    def compute_dtype(self, u_t):
        """The real dtype the spec's step computes in for input u_t (tokens: the
        parameters')."""
        if self.tokens:
            return FRAMEWORK.compute_dtype(self.module._reference().dtype)
        return FRAMEWORK.compute_dtype(u_t.dtype)
