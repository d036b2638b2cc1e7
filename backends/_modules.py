"""What the torch and JAX module classes share (liquidssm.torch.nn, liquidssm.jax.nnx).

Both frameworks' classes are generated from spec modules; this file holds the framework-free
part: the Config from a Config or its fields, the spec's parameters (the spec's init, or given
parameters checked against param_shapes), which names are statistics or SSM parameters, and the
generation loop. No math and no initialisation: those are the spec's.
"""

from __future__ import annotations

import importlib
import math
import types

import numpy as np

from .spec import s5_layer
from .spec._common import check_config, check_int, check_params, check_seed, shapes_of

__all__ = ["CLASSES", "define_classes", "attach_spec", "load_pretrained", "make_config",
           "spec_params", "is_statistic", "ssm_leaves", "vocab_size", "generate", "StepState"]

#: class name -> (spec module, what it adds to the framework's SpecModule: "kernel" (the
#: convolution kernel method) | "lm" (generate) | "", docstring): the same classes in every
#: framework (define_classes)
CLASSES = {
    "S4D": ("s4d", "kernel", "S4D (liquidssm.spec.s4d)."),
    "S4": ("s4", "kernel", "S4, DPLR HiPPO-LegS (liquidssm.spec.s4)."),
    "LiquidS4": ("liquid_s4", "kernel", "Liquid-S4 (liquidssm.spec.liquid_s4); state / step "
                 "with liquid_kernel='scan'."),
    "S5": ("s5", "", "S5 (liquidssm.spec.s5); call it with timesteps=tau for irregular "
           "sampling."),
    "LiquidS5": ("liquid_s5", "", "Liquid-S5 (liquidssm.spec.liquid_s5)."),
    "Mamba": ("mamba", "", "The Mamba mixer (liquidssm.spec.mamba; mamba_simple.Mamba's names)."),
    "LiquidMamba": ("liquid_mamba", "", "The LiquidMamba block, residuals and FFN included "
                    "(liquidssm.spec.liquid_mamba)."),
    "S4Block": ("s4_block", "", "The S4 residual block around an S4D / S4 / Liquid-S4 "
                "(liquidssm.spec.s4_block)."),
    "S5Layer": ("s5_layer", "", "The S5 layer around an S5 / Liquid-S5 (liquidssm.spec.s5_layer); "
                "the batch norm is its inference form: norm_mean / norm_var are statistics, "
                "not trained."),
    "MambaBlock": ("mamba_block", "", "u + mixer(rms_norm(u)): mamba_ssm's Block "
                   "(liquidssm.spec.mamba_block)."),
    "SequenceModel": ("sequence_model", "lm", "Encoder / embedding, n residual layers of any "
                      "variant, final norm, pool / sequence / lm head "
                      "(liquidssm.spec.sequence_model); generate with head='lm'."),
    "MambaLM": ("mamba_lm", "lm", "The Mamba language model under mamba_ssm's names "
                "(liquidssm.spec.mamba_lm)."),
}


def define_classes(base, mixins: dict) -> dict:
    """The framework's module classes, name -> class: per CLASSES entry a subclass of `base`
    (after mixins[kind] when it has one) created with `spec=` its spec module's name."""
    out = {}
    for name, (spec, kind, doc) in CLASSES.items():
        bases = (mixins[kind], base) if kind else (base,)
        namespace = {"__doc__": doc, "__module__": base.__module__, "__qualname__": name}
        out[name] = types.new_class(name, bases, {"spec": spec},
                                    lambda ns, namespace=namespace: ns.update(namespace))
    return out

#: the leaf names (after the last ".") of the SSM parameters per variant family: the parameters
#: the published code trains without weight decay (S4, S5: also with their own learning rate).
#: S4D / S4 kernels register dt, A (and P), B this way (C, D regular); S5's "standard" setup
#: Lambda, B, log_step (C, D regular); mamba's _no_weight_decay: A_log, D.
S4D_SSM = frozenset({"log_dt", "log_A_real", "A_imag", "B_re", "B_im", "BL_re", "BL_im"})
S4_SSM = frozenset({"log_dt", "log_Lambda_real", "Lambda_imag", "P_re", "P_im", "B_re", "B_im",
                    "BL_re", "BL_im"})
S5_SSM = frozenset({"Lambda_re", "Lambda_im", "B_re", "B_im", "log_step", "BL_re", "BL_im"})
MAMBA_SSM = frozenset({"A_log", "D"})
_SSM = {"s4d": S4D_SSM, "s4": S4_SSM, "s5": S5_SSM, "liquid_s5": S5_SSM, "mamba": MAMBA_SSM,
        "liquid_mamba": MAMBA_SSM}


class StepState(dict):
    """A decode state that a module's initial_state or step made: the spec's state dict
    (same keys and arrays), read-only, with `owner` = (the module's fast-path token, batch,
    real compute dtype, device). The module's next step trusts it without re-checking it
    (docs/design.md, "The decode fast path"). To change an entry, edit a copy (dict(state)):
    the next step checks that like any state it did not make. Pickling or copying gives a plain
    dict."""

    __slots__ = ("owner",)

    def __init__(self, state, owner):
        super().__init__(state)
        self.owner = owner

    def _read_only(self, *args, **kwargs):
        raise TypeError("state: a state made by initial_state / step is read-only (the next "
                        "step trusts it unchecked); edit a copy, dict(state), which step checks")

    __setitem__ = __delitem__ = __ior__ = _read_only
    update = pop = popitem = clear = setdefault = _read_only

    def __reduce__(self):
        return dict, (dict(self),)

    def __copy__(self):
        return dict(self)

    def __deepcopy__(self, memo):
        import copy

        return copy.deepcopy(dict(self), memo)


def spec_module(name: str):
    return importlib.import_module(f"liquidssm.spec.{name}")


def make_config(spec, config, fields: dict):
    """`config` (exactly a spec.Config), or spec.Config(**fields); both given -> TypeError."""
    if config is None:
        return spec.Config(**fields)
    if fields:
        raise TypeError(f"config: expected either a config or its fields as keywords, got both "
                        f"(a {type(config).__name__} and the fields {sorted(fields)})")
    return check_config(config, spec.Config)


def param_shapes(spec, config) -> dict:
    return shapes_of(spec, config)


def attach_spec(cls, spec: str, backend: str) -> None:
    """A framework module class's spec: cls._spec (liquidssm.spec.<spec>), cls._fn (the backend
    module's bound <spec>), cls.Config."""
    cls._spec = spec_module(spec)
    cls._fn = getattr(importlib.import_module(backend), spec)
    cls.Config = cls._spec.Config


def load_pretrained(cls, path):
    """(config, NumPy params) saved in `path` (liquidssm.checkpoint.load: either framework's
    directory, or a mamba_ssm / Hugging Face Mamba one), checked to be a cls.Config."""
    from . import checkpoint

    config, params = checkpoint.load(path)
    if type(config) is not cls.Config:
        raise TypeError(f"path: {path} holds a {type(config).__module__}."
                        f"{type(config).__name__}, expected a {cls.Config.__module__}."
                        f"{cls.Config.__name__} for {cls.__name__}")
    return config, params


def spec_params(spec, config, seed, params, framework) -> dict:
    """spec.init(config, seed), or `params` (NumPy or `framework` arrays: converted to NumPy)
    checked to hold exactly param_shapes(config): missing and unexpected names both named."""
    check_seed(seed)
    if params is None:
        return spec.init(config, seed)
    if not isinstance(params, dict):
        raise TypeError(f"params: expected a dict of arrays under the spec's names, got "
                        f"{type(params).__name__}")
    arrays = {k: framework.to_numpy(v) if isinstance(v, framework.array_type) else np.asarray(v)
              for k, v in params.items()}
    return check_params(arrays, param_shapes(spec, config))


def is_statistic(name: str) -> bool:
    """True for batch-norm running statistics (s5_layer norm_mean / norm_var, also inside a
    model: "layers.{i}.norm_mean"): not trained (torch buffers, nnx.BatchStat)."""
    return name.rsplit(".", 1)[-1] in s5_layer.STATISTICS


def _variant(config):
    """(variant name, variant Config) inside a variant, block or model Config."""
    name = type(config).__module__.rsplit(".", 1)[-1]
    if name == "sequence_model":
        return _variant(spec_module(name).layer_config(config))
    if name == "mamba_lm":
        return _variant(config.mixer)
    for attr in ("ssm", "mixer"):  # the blocks' inner Config
        inner = getattr(config, attr, None)
        if inner is not None and not isinstance(inner, dict):
            return _variant(inner)
    return name, config


def ssm_leaves(config) -> frozenset:
    """The leaf names of the SSM parameters of a variant / block / model Config (S4D_SSM, ...;
    Liquid-S4: its base's)."""
    name, variant = _variant(config)
    if name == "liquid_s4":
        name = variant.base
    return _SSM[name]


def vocab_size(spec, config) -> int:
    """The real vocabulary of a language model (ids < it; mamba_lm pads its logits beyond)."""
    short = spec.__name__.rsplit(".", 1)[-1]
    if short == "mamba_lm":
        return config.vocab_size
    if short == "sequence_model" and config.head == "lm":
        return config.vocab_size
    raise ValueError(f"generate: expected a language model (MambaLM, or SequenceModel with "
                     f"head='lm'), got {type(config).__module__}.{type(config).__name__} "
                     f"with head={getattr(config, 'head', None)!r}")


def _next_tokens(logits: np.ndarray, temperature: float, top_k, rng) -> np.ndarray:
    """logits (batch, V) float64 -> ids (batch,): argmax (temperature 0), else a draw from
    softmax(logits / temperature) restricted to the top_k largest logits (all when None)."""
    if temperature == 0.0:
        return np.argmax(logits, axis=-1)
    z = logits / temperature
    if top_k is not None and top_k < z.shape[-1]:
        kth = np.sort(z, axis=-1)[:, -top_k][:, None]
        z = np.where(z >= kth, z, -np.inf)
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    cdf = np.cumsum(p, axis=-1)
    u = rng.random(z.shape[0])[:, None] * cdf[:, -1:]
    return np.minimum((cdf <= u).sum(axis=-1), z.shape[-1] - 1)


def generate(forward, step, tokens, max_new_tokens, *, vocab, to_numpy, to_tokens,
             temperature=0.0, top_k=None, seed=0):
    """Decode max_new_tokens ids after `tokens` (batch, L): one forward over the prompt
    (forward(tokens) -> (logits (batch, L, V'), state)), then step(token (batch,), state) ->
    (logits (batch, V'), state) per new id. Only ids < vocab are chosen (a padded vocabulary's
    extra logits are ignored). Sampling runs on the host with numpy.random.default_rng(seed), so
    every framework draws alike. to_numpy: framework array -> NumPy; to_tokens(ids) -> a
    framework integer array. Returns to_tokens((batch, L + max_new_tokens) ids)."""
    check_int("max_new_tokens", max_new_tokens, minimum=0)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature: expected a finite number >= 0, got {temperature!r}")
    if top_k is not None:
        check_int("top_k", top_k)
    prompt = to_numpy(tokens)
    if prompt.ndim != 2 or prompt.shape[1] < 1:
        raise ValueError(f"tokens: expected shape (batch, length) with length >= 1, got shape "
                         f"{prompt.shape}")
    rng = np.random.default_rng(seed)
    new = []
    if max_new_tokens:
        logits, state = forward(tokens)
        while True:
            last = to_numpy(logits)[:, -1] if len(new) == 0 else to_numpy(logits)
            ids = _next_tokens(last[:, :vocab], float(temperature), top_k, rng)
            new.append(ids.astype(prompt.dtype))
            if len(new) == max_new_tokens:
                break
            logits, state = step(to_tokens(new[-1]), state)
    out = np.concatenate([prompt, *[t[:, None] for t in new]], axis=1)
    return to_tokens(out)
