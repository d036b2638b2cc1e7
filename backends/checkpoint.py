"""Checkpoints: a spec Config and its parameters as a directory, readable by every framework.

The directory (docs/checkpoints.md):

    config.json         config_to_dict(config) + {"liquidssm_format_version": 1}
    model.safetensors   the parameters under the spec's names (float32 unless dtype= says)

`load` also reads the published Mamba layouts, detected from config.json: mamba_ssm's
MambaLMHeadModel directory (d_model, n_layer, ssm_cfg, ...) and transformers' MambaForCausalLM
`save_pretrained` output (model_type "mamba"); both become a `mamba_lm.Config` and parameters
under mamba_lm's published names. Everything here is NumPy and the safetensors package; torch is
imported only to read a pytorch_model.bin.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import struct
from pathlib import Path

import numpy as np
from liquidssm.spec import BLOCKS, MODELS, VARIANTS
from liquidssm.spec._common import shapes_of

__all__ = ["FORMAT_VERSION", "config_to_dict", "config_from_dict", "save", "load"]

FORMAT_VERSION = 1
MODULE_KEY = "liquidssm_module"
VERSION_KEY = "liquidssm_format_version"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
_MODULES = (*VARIANTS, *BLOCKS, *MODELS)
_SAVE_DTYPES = (np.float16, np.float32, np.float64)
_LOAD_DTYPES = (np.float32, np.float64)


def _safetensors():
    try:
        import safetensors.numpy
    except ImportError:
        raise ImportError("liquidssm.checkpoint needs the safetensors package: pip install "
                          "safetensors") from None
    return safetensors


def _spec(name):
    return importlib.import_module(f"liquidssm.spec.{name}")


def _module_of(config):
    """The spec module whose Config `config` is (exactly that class, not a subclass)."""
    cls = type(config)
    mod = cls.__module__.rpartition(".")[2]
    if (not dataclasses.is_dataclass(config) or mod not in _MODULES
            or getattr(_spec(mod), "Config", None) is not cls):
        raise TypeError(f"config: expected the Config of a liquidssm.spec module "
                        f"({', '.join(_MODULES)}), got {cls.__module__}.{cls.__qualname__} "
                        f"({config!r})")
    return _spec(mod)


# --------------------------------------------------------------------------------- configs
def _encode(value, where):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return config_to_dict(value, _where=where)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: expected a finite float (JSON), got {value!r}")
        return value
    if isinstance(value, (tuple, list)):
        return [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"{where}: expected a dict with str keys, got {value!r}")
        return {k: _encode(v, f"{where}.{k}") for k, v in value.items()}
    raise TypeError(f"{where}: expected a JSON value (None, bool, int, float, str, tuple, dict or "
                    f"a spec Config), got {type(value).__name__} ({value!r})")


def config_to_dict(config, *, _where="config") -> dict:
    """A JSON-able dict: {"liquidssm_module": <spec module name>, <field>: <value>, ...}; nested
    Configs (inside fields or dicts) become such dicts too; tuples become lists."""
    try:
        _module_of(config)
    except TypeError as e:
        raise TypeError(f"{_where}: {e}") from None
    out = {MODULE_KEY: type(config).__module__.rpartition(".")[2]}
    for f in dataclasses.fields(config):
        if f.init:
            out[f.name] = _encode(getattr(config, f.name), f"{_where}.{f.name}")
    return out


def _decode(value, where):
    if isinstance(value, dict):
        if MODULE_KEY in value:
            return _from_dict(value, where)
        return {k: _decode(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):  # Configs are frozen: sequences are tuples
        return tuple(_decode(v, f"{where}[{i}]") for i, v in enumerate(value))
    return value


def _from_dict(d, where):
    name = d.get(MODULE_KEY)
    if name not in _MODULES:
        raise ValueError(f"{where}.{MODULE_KEY}: expected one of {list(_MODULES)}, got {name!r}")
    cls = _spec(name).Config
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    given = {k: v for k, v in d.items() if k != MODULE_KEY}
    unknown = sorted(set(given) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown fields {unknown} for liquidssm.spec.{name}.Config "
                         f"(its fields: {list(fields)})")
    missing = [k for k, f in fields.items() if k not in given
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"{where}: missing required fields {missing} for "
                         f"liquidssm.spec.{name}.Config")
    return cls(**{k: _decode(v, f"{where}.{k}") for k, v in given.items()})


def config_from_dict(d: dict):
    """The inverse of config_to_dict (a top-level "liquidssm_format_version" is checked and
    dropped). Lists become tuples; the Config's own checks run."""
    if not isinstance(d, dict) or MODULE_KEY not in d:
        raise ValueError(f"d: expected a dict with the key {MODULE_KEY!r} (config_to_dict's "
                         f"output), got {d!r}")
    d = dict(d)
    version = d.pop(VERSION_KEY, FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise ValueError(f"{VERSION_KEY}: expected {FORMAT_VERSION} (this liquidssm's checkpoint "
                         f"format), got {version!r}")
    return _from_dict(d, "config")


# --------------------------------------------------------------------------------- arrays
def _dtype(name, dtype, allowed):
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.type not in allowed:
        raise ValueError(f"{name}: expected one of {[np.dtype(a).name for a in allowed]}, "
                         f"got {dtype!r}")
    return dt


def _to_numpy(name, value):
    """A NumPy array from a NumPy / JAX / torch array (torch without importing torch here)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.double()
        value = value.numpy()
    try:
        arr = np.asarray(value)
    except Exception as e:
        raise TypeError(f"{name}: expected an array, got {type(value).__name__}") from e
    return arr


def _is_float(arr):
    return arr.dtype.kind == "f"


def _check_tensors(source, tensors, shapes, hint):
    """tensors must hold exactly `shapes`' names, each a real floating array of its shape; a
    ValueError naming `source(name)` (the file or argument) and the tensor otherwise."""
    def listed(names):
        shown = ", ".join(repr(n) for n in names[:6])
        return shown + (f" and {len(names) - 6} more" if len(names) > 6 else "")

    missing = [k for k in shapes if k not in tensors]
    if missing:
        raise ValueError(f"{source(missing[0])}: missing tensor {listed(missing)} (expected by "
                         f"{hint}: shape {tuple(shapes[missing[0]])} for {missing[0]!r})")
    unexpected = sorted(k for k in tensors if k not in shapes)
    if unexpected:
        raise ValueError(f"{source(unexpected[0])}: unexpected tensor {listed(unexpected)} (not "
                         f"a parameter of {hint})")
    for k, shape in shapes.items():
        arr = tensors[k]
        if not _is_float(arr):
            raise ValueError(f"{source(k)}: tensor {k!r}: expected a real floating dtype, got "
                             f"{arr.dtype}")
        if tuple(arr.shape) != tuple(shape):
            raise ValueError(f"{source(k)}: tensor {k!r}: expected shape {tuple(shape)} (from "
                             f"{hint}), got {tuple(arr.shape)}")


# --------------------------------------------------------------------------------- save / load
def save(path, config, params: dict, *, dtype=np.float32) -> Path:
    """Write `path`/config.json and `path`/model.safetensors (creating the directory; existing
    files are replaced). params: {name: array} (NumPy, JAX or torch) with exactly the names and
    shapes of param_shapes(config); stored as `dtype` (float16, float32 or float64)."""
    module = _module_of(config)
    dt = _dtype("dtype", dtype, _SAVE_DTYPES)
    if not isinstance(params, dict):
        raise TypeError(f"params: expected a dict of arrays, got {type(params).__name__}")
    arrays = {k: _to_numpy(f"params[{k!r}]", v) for k, v in params.items()}
    _check_tensors(lambda k: "params", arrays, shapes_of(module, config),
                   f"param_shapes({type(config).__module__}.Config)")
    text = json.dumps({VERSION_KEY: FORMAT_VERSION, **config_to_dict(config)}, indent=2)
    save_file = _safetensors().numpy.save_file
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG_FILE).write_text(text + "\n")
    save_file({k: np.ascontiguousarray(v, dtype=dt) for k, v in arrays.items()},
              str(path / WEIGHTS_FILE), metadata={VERSION_KEY: str(FORMAT_VERSION)})
    return path


def load(path, *, dtype=np.float64):
    """(config, params) from a directory written by `save`, by mamba_ssm (MambaLMHeadModel) or by
    transformers (MambaForCausalLM.save_pretrained); the layout is read from config.json.
    params: {name: NumPy array of `dtype`} under the spec's names (for the Mamba layouts,
    mamba_lm's published names), checked against param_shapes(config)."""
    dt = _dtype("dtype", dtype, _LOAD_DTYPES)
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"path: expected a checkpoint directory, got {str(path)!r} "
                                f"({'a file' if path.exists() else 'does not exist'})")
    cfg_file = path / CONFIG_FILE
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{cfg_file}: not found (a checkpoint directory holds "
                                f"{CONFIG_FILE} and its weights)")
    try:
        raw = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{cfg_file}: not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{cfg_file}: expected a JSON object, got {type(raw).__name__}")
    if MODULE_KEY in raw:
        config, tensors, source = _load_liquidssm(path, cfg_file, raw)
        hint = str(cfg_file)
    elif "model_type" in raw:
        config, tensors, source = _load_transformers(path, cfg_file, raw)
        hint = f"{cfg_file} (transformers MambaForCausalLM)"
    elif "d_model" in raw and "n_layer" in raw:
        config, tensors, source = _load_mamba_ssm(path, cfg_file, raw)
        hint = f"{cfg_file} (mamba_ssm MambaLMHeadModel)"
    else:
        raise ValueError(f"{cfg_file}: not a liquidssm, mamba_ssm or transformers Mamba "
                         f"checkpoint (expected the key {MODULE_KEY!r}, 'model_type' or "
                         f"'d_model' and 'n_layer'; got keys {sorted(raw)})")
    _check_tensors(source, tensors, shapes_of(_module_of(config), config), hint)
    return config, {k: v.astype(dt) for k, v in tensors.items()}


def _load_liquidssm(path, cfg_file, raw):
    try:
        config = config_from_dict(raw)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{cfg_file}: {e}") from None
    tensors, source = _read_weights(path, (WEIGHTS_FILE,))
    return config, tensors, source


# ------------------------------------------------------------------------ published layouts
#: mamba_ssm MambaConfig keys that change nothing in the math (numerics / kernel choices)
_MAMBA_SSM_IGNORED = {"residual_in_fp32", "fused_add_norm", "attn_cfg"}
_MAMBA_SSM_KEYS = {"d_model", "d_intermediate", "n_layer", "vocab_size", "ssm_cfg", "rms_norm",
                   "pad_vocab_size_multiple", "tie_embeddings", "attn_layer_idx", "norm_epsilon",
                   *_MAMBA_SSM_IGNORED}
#: ssm_cfg keys of mamba_simple.Mamba that are runtime choices, not parameters of the math
_SSM_CFG_IGNORED = {"use_fast_path", "layer"}


def _expect(cfg_file, raw, key, ok, expected):
    if key in raw and not ok(raw[key]):
        raise ValueError(f"{cfg_file}: {key}: expected {expected}, got {raw[key]!r}")


def _load_mamba_ssm(path, cfg_file, raw):
    unknown = sorted(set(raw) - _MAMBA_SSM_KEYS)
    if unknown:
        raise ValueError(f"{cfg_file}: unknown mamba_ssm MambaConfig keys {unknown}")
    _expect(cfg_file, raw, "d_intermediate", lambda v: v == 0,
            "0 (an MLP after each mixer is not part of the spec's Mamba LM)")
    _expect(cfg_file, raw, "rms_norm", lambda v: v is True,
            "true (the spec's Mamba LM uses RMSNorm; LayerNorm is not implemented)")
    _expect(cfg_file, raw, "attn_layer_idx", lambda v: not v,
            "[] (attention layers are not part of the spec's Mamba LM)")
    ssm_cfg = raw.get("ssm_cfg", {})
    if not isinstance(ssm_cfg, dict):
        raise ValueError(f"{cfg_file}: ssm_cfg: expected an object, got {ssm_cfg!r}")
    _expect(cfg_file, ssm_cfg, "layer", lambda v: v == "Mamba1",
            "'Mamba1' (Mamba2 layers are not part of the spec)")
    mixer = {k: v for k, v in ssm_cfg.items() if k not in _SSM_CFG_IGNORED}
    fields = {f.name for f in dataclasses.fields(_spec("mamba").Config)} - {"d_model"}
    if set(mixer) - fields:
        raise ValueError(f"{cfg_file}: ssm_cfg: unknown keys {sorted(set(mixer) - fields)} "
                         f"(expected mamba_simple.Mamba's: {sorted(fields)})")
    kw = {k: raw[k] for k in ("d_model", "n_layer", "vocab_size", "pad_vocab_size_multiple",
                              "tie_embeddings", "norm_epsilon") if k in raw}
    config = _mamba_lm_config(cfg_file, ssm_cfg=mixer, **kw)
    tensors, source = _read_weights(path, (WEIGHTS_FILE, "pytorch_model.bin"))
    _untie(config, tensors, source)
    return config, tensors, source


def _load_transformers(path, cfg_file, raw):
    if raw["model_type"] != "mamba":
        raise ValueError(f"{cfg_file}: model_type: expected 'mamba' (transformers "
                         f"MambaForCausalLM), got {raw['model_type']!r}")
    _expect(cfg_file, raw, "hidden_act", lambda v: v == "silu",
            "'silu' (the spec's Mamba mixer applies SiLU after the convolution)")
    missing = [k for k in ("hidden_size", "num_hidden_layers", "vocab_size") if k not in raw]
    if missing:
        raise ValueError(f"{cfg_file}: missing keys {missing} (transformers MambaConfig)")
    expand = raw.get("expand", 2)
    if isinstance(expand, float) and expand.is_integer():
        expand = int(expand)
    hidden = raw["hidden_size"]
    rank = raw.get("time_step_rank", "auto")
    if "intermediate_size" in raw and isinstance(expand, int) and isinstance(hidden, int):
        _expect(cfg_file, raw, "intermediate_size", lambda v: v == expand * hidden,
                f"expand * hidden_size = {expand * hidden}")
    # transformers' MambaConfig key -> mamba_simple.Mamba's (init-only keys included, so that
    # the Config also reproduces the published initialisation's ranges)
    names = {"state_size": "d_state", "conv_kernel": "d_conv", "use_conv_bias": "conv_bias",
             "use_bias": "bias", "time_step_min": "dt_min", "time_step_max": "dt_max",
             "time_step_init_scheme": "dt_init", "time_step_scale": "dt_scale",
             "time_step_floor": "dt_init_floor"}
    mixer = {new: raw[old] for old, new in names.items() if old in raw}
    mixer.update(expand=expand, dt_rank=rank)
    defaults = {f.name: f.default for f in dataclasses.fields(_spec("mamba").Config)}
    mixer = {k: v for k, v in mixer.items() if v != defaults[k] or type(v) is not
             type(defaults[k])}  # ssm_cfg holds the non-default fields, as mamba_ssm's does
    config = _mamba_lm_config(
        cfg_file, d_model=hidden, n_layer=raw["num_hidden_layers"], vocab_size=raw["vocab_size"],
        ssm_cfg=mixer, norm_epsilon=raw.get("layer_norm_epsilon", 1e-5),
        pad_vocab_size_multiple=1, tie_embeddings=raw.get("tie_word_embeddings", True))
    tensors, source = _read_weights(path, (WEIGHTS_FILE, "pytorch_model.bin"))
    # transformers' own load hook accepts the older "embedding." name
    for old, new in (("backbone.embeddings.weight", "backbone.embedding.weight"),):
        if old in tensors and new not in tensors:
            tensors[new] = tensors.pop(old)
            source.rename(old, new)
    _untie(config, tensors, source)
    return config, tensors, source


def _mamba_lm_config(cfg_file, **kw):
    try:
        return _spec("mamba_lm").Config(**kw)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{cfg_file}: {e}") from None


def _untie(config, tensors, source):
    """A tied head: lm_head.weight may be stored too (torch.save of a state_dict keeps both
    names); it must then equal the embedding, and is dropped."""
    name, emb = "lm_head.weight", "backbone.embedding.weight"
    if config.tie_embeddings and name in tensors and emb in tensors:
        a, b = tensors[name], tensors[emb]
        if a.shape != b.shape or not np.array_equal(a, b):
            raise ValueError(f"{source(name)}: tensor {name!r}: differs from {emb!r}, but the "
                             f"config ties the head to the embedding (tie_embeddings / "
                             f"tie_word_embeddings true)")
        del tensors[name]


# --------------------------------------------------------------------------------- readers
class _Sources:
    """name -> the file a tensor came from (callable: the file for error messages)."""

    def __init__(self, default):
        self.default, self.files = default, {}

    def __call__(self, name):
        return self.files.get(name, self.default)

    def rename(self, old, new):
        if old in self.files:
            self.files[new] = self.files.pop(old)


def _read_weights(path, candidates):
    """The first of `candidates` present in `path` (or its sharded form, `<name>.index.json`
    with a weight_map) -> ({name: NumPy array}, _Sources)."""
    for name in candidates:
        single, index = path / name, path / f"{name}.index.json"
        if single.is_file():
            source = _Sources(single)
            return _read_file(single), source
        if index.is_file():
            return _read_sharded(path, index)
    raise FileNotFoundError(f"{path}: no weights file (expected "
                            f"{' or '.join(candidates)}, or a sharded *.index.json)")


def _read_sharded(path, index):
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{index}: expected a JSON object with a 'weight_map' ({e!r})") from None
    source, tensors = _Sources(index), {}
    for shard in sorted(set(weight_map.values())):
        file = path / shard
        if not file.is_file():
            raise FileNotFoundError(f"{index}: shard {shard!r} not found in {path}")
        for k, v in _read_file(file).items():
            tensors[k] = v
            source.files[k] = file
    return tensors, source


def _read_file(file):
    if file.suffix == ".safetensors":
        return _read_safetensors(file)
    return _read_torch_bin(file)


def _read_safetensors(file):
    st = _safetensors()
    try:
        out, bf16 = {}, []
        with st.safe_open(str(file), framework="numpy") as f:
            for k in f.keys():
                if f.get_slice(k).get_dtype() == "BF16":
                    bf16.append(k)  # NumPy has no bfloat16: widened below
                else:
                    out[k] = f.get_tensor(k)
    except st.SafetensorError as e:
        raise ValueError(f"{file}: not a readable safetensors file ({e})") from None
    if bf16:
        out.update(_read_bf16(file, bf16))
    return out


def _read_bf16(file, names):
    """bfloat16 tensors of a safetensors file as float32 (the upper 16 bits of a float32).
    Layout: an 8-byte little-endian header length, the JSON header, then the data."""
    data = file.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    out = {}
    for k in names:
        lo, hi = header[k]["data_offsets"]
        bits = np.frombuffer(data, dtype="<u2", count=(hi - lo) // 2, offset=8 + n + lo)
        out[k] = (bits.astype(np.uint32) << 16).view(np.float32).reshape(header[k]["shape"])
    return out


def _read_torch_bin(file):
    try:
        import torch
    except ImportError:
        raise ImportError(f"{file}: reading a pytorch_model.bin needs torch (pip install "
                          f"'liquidssm[torch]'), or convert it to model.safetensors") from None
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{file}: not a readable torch state_dict ({type(e).__name__}: "
                         f"{e})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{file}: expected a state_dict (a dict of tensors), got "
                         f"{type(state).__name__}")
    return {k: _to_numpy(k, v) for k, v in state.items()}
