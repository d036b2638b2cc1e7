"""liquidssm.checkpoint (NumPy only): config round trips for every spec Config kind, save / load
round trips, the published Mamba layouts written by hand, and every error."""

import dataclasses
import json

import numpy as np
import pytest
from liquidssm import checkpoint as ckpt
from liquidssm.spec import (
    liquid_mamba,
    liquid_s4,
    liquid_s5,
    mamba,
    mamba_block,
    mamba_lm,
    s4,
    s4_block,
    s4d,
    s5,
    s5_layer,
    sequence_model,
)
from safetensors.numpy import load_file, save_file

VARIANTS = {
    "s4d": s4d.Config(d_model=4, d_state=8, init="inv", mode="recurrent", dt_min=2e-3),
    "s4": s4.Config(d_model=4, d_state=8, rank=2, l_max=16),
    "liquid_s4": liquid_s4.Config(d_model=4, d_state=8, base="s4", liquid_kernel="kb",
                                  liquid_degree=3, lcontract="lecun", l_max=16),
    "s5": s5.Config(d_model=4, d_state=8, blocks=2, bidirectional=True, step_rescale=0.5),
    "liquid_s5": liquid_s5.Config(d_model=4, d_state=8, blocks=2, liquid_degree=3, tied=False),
    "mamba": mamba.Config(d_model=8, d_state=4, dt_rank=3, bias=True),
    "liquid_mamba": liquid_mamba.Config(d_model=8, d_state=4, ffn="gelu", ffn_expand=1.5),
}
BLOCKS = {
    "s4_block(s4d)": s4_block.Config(ssm=VARIANTS["s4d"], prenorm=False),
    "s4_block(s4)": s4_block.Config(ssm=VARIANTS["s4"], approximate_gelu=True),
    "s4_block(liquid_s4)": s4_block.Config(ssm=VARIANTS["liquid_s4"]),
    "s5_layer(s5)": s5_layer.Config(ssm=VARIANTS["s5"], norm="layer"),
    "s5_layer(liquid_s5)": s5_layer.Config(ssm=VARIANTS["liquid_s5"]),
    "mamba_block": mamba_block.Config(mixer=VARIANTS["mamba"], norm_epsilon=1e-6),
}
MODELS = {
    "sequence_model(s4d, pool)": sequence_model.Config(
        d_model=4, n_layers=2, layer="s4d", ssm={"d_state": 8, "init": "legs"},
        block={"prenorm": False}, d_input=3, d_output=2),
    "sequence_model(s5, sequence)": sequence_model.Config(
        d_model=4, n_layers=1, layer="s5", ssm={"d_state": 8, "blocks": 2}, d_input=3,
        head="sequence", d_output=3, norm_f="rms"),
    "sequence_model(liquid_mamba, lm)": sequence_model.Config(
        d_model=8, n_layers=2, layer="liquid_mamba", ssm={"d_state": 4, "ffn": "none"},
        vocab_size=11, head="lm", norm_f="none", tie_embeddings=True),
    "mamba_lm(tied)": mamba_lm.Config(d_model=8, n_layer=2, vocab_size=11,
                                      ssm_cfg={"d_state": 4, "dt_rank": "auto"}),
    "mamba_lm(untied)": mamba_lm.Config(d_model=8, n_layer=1, vocab_size=11,
                                        ssm_cfg={"d_state": 4, "bias": True},
                                        pad_vocab_size_multiple=4, tie_embeddings=False),
}
ALL = {**VARIANTS, **BLOCKS, **MODELS}
SPEC = {"s4d": s4d, "s4": s4, "liquid_s4": liquid_s4, "s5": s5, "liquid_s5": liquid_s5,
        "mamba": mamba, "liquid_mamba": liquid_mamba, "s4_block": s4_block,
        "s5_layer": s5_layer, "mamba_block": mamba_block, "sequence_model": sequence_model,
        "mamba_lm": mamba_lm}


def module(config):
    return SPEC[type(config).__module__.rpartition(".")[2]]


@pytest.mark.parametrize("name", list(ALL))
def test_config_round_trip(name):
    config = ALL[name]
    d = ckpt.config_to_dict(config)
    assert d["liquidssm_module"] == type(config).__module__.rpartition(".")[2]
    text = json.dumps(d)  # JSON-able, and exact through the text
    back = ckpt.config_from_dict(json.loads(text))
    assert back == config and type(back) is type(config)


def test_config_dict_nests_tagged_configs():
    d = ckpt.config_to_dict(BLOCKS["s4_block(liquid_s4)"])
    assert d["liquidssm_module"] == "s4_block"
    assert d["ssm"]["liquidssm_module"] == "liquid_s4" and d["ssm"]["liquid_degree"] == 3
    d = ckpt.config_to_dict(MODELS["sequence_model(s4d, pool)"])
    assert d["ssm"] == {"d_state": 8, "init": "legs"}  # a dict of fields stays a plain dict


def test_config_sequences_come_back_as_tuples():
    # no spec Config holds a sequence today; a nested one inside a dict field round-trips as a
    # tuple (frozen Configs hold tuples), so the Config compares equal
    d = {"liquidssm_module": "sequence_model", "d_model": 4, "n_layers": 1, "d_input": 2,
         "d_output": 1, "ssm": {}, "block": {}}
    assert ckpt.config_from_dict(d) == sequence_model.Config(d_model=4, n_layers=1, d_input=2,
                                                             d_output=1)
    assert ckpt._decode([1, [2, 3]], "x") == (1, (2, 3))
    assert ckpt._encode((1, (2, 3)), "x") == [1, [2, 3]]


@pytest.mark.parametrize("name", ["s4d", "s4_block(s4)", "s5_layer(liquid_s5)", "mamba_block",
                                  "sequence_model(s5, sequence)", "mamba_lm(untied)"])
def test_save_load_round_trip(tmp_path, name):
    config = ALL[name]
    mod = module(config)
    params = mod.init(config, 3)
    ckpt.save(tmp_path / "f64", config, params, dtype=np.float64)
    back, loaded = ckpt.load(tmp_path / "f64")
    assert back == config
    assert set(loaded) == set(params)
    for k in params:
        assert loaded[k].dtype == np.float64
        np.testing.assert_array_equal(loaded[k], params[k])
    # the default storage is float32; load gives float64 (or float32 when asked)
    ckpt.save(tmp_path / "f32", config, params)
    stored = load_file(str(tmp_path / "f32" / "model.safetensors"))
    assert all(v.dtype == np.float32 for v in stored.values())
    _, p32 = ckpt.load(tmp_path / "f32", dtype=np.float32)
    for k in params:
        assert p32[k].dtype == np.float32
        np.testing.assert_array_equal(p32[k], params[k].astype(np.float32))
    raw = json.loads((tmp_path / "f32" / "config.json").read_text())
    assert raw["liquidssm_format_version"] == ckpt.FORMAT_VERSION
    assert ckpt.config_from_dict(raw) == config


def test_loaded_model_gives_the_same_outputs(tmp_path):
    config = MODELS["mamba_lm(tied)"]
    params = mamba_lm.init(config, 1)
    ckpt.save(tmp_path / "m", config, params, dtype=np.float64)
    cfg, loaded = ckpt.load(tmp_path / "m")
    tokens = np.array([[1, 5, 2, 10, 0]])
    np.testing.assert_array_equal(mamba_lm.forward(cfg, loaded, tokens),
                                  mamba_lm.forward(config, params, tokens))


def test_save_creates_parents_and_overwrites(tmp_path):
    config = VARIANTS["mamba"]
    target = tmp_path / "a" / "b"
    ckpt.save(target, config, mamba.init(config, 0))
    ckpt.save(target, config, mamba.init(config, 1), dtype=np.float64)
    _, p = ckpt.load(target)
    np.testing.assert_array_equal(p["A_log"], mamba.init(config, 1)["A_log"])


# ------------------------------------------------------------------------------ errors
def test_config_errors():
    with pytest.raises(TypeError, match="config: expected the Config of a liquidssm.spec"):
        ckpt.config_to_dict({"d_model": 4})
    bad = s4_block.Config(ssm=VARIANTS["s4d"])  # a non-JSON object where a Config belongs
    object.__setattr__(bad, "ssm", object())
    with pytest.raises(TypeError, match=r"config\.ssm: expected a JSON value .*got object"):
        ckpt.config_to_dict(bad)

    @dataclasses.dataclass(frozen=True)
    class Other:
        d_model: int = 4

    object.__setattr__(bad, "ssm", Other())  # a dataclass that is no spec module's Config
    with pytest.raises(TypeError, match=r"config\.ssm: config: expected the Config of a liqu"):
        ckpt.config_to_dict(bad)
    with pytest.raises(ValueError, match="config.dt_min: expected a finite float"):
        bad = s4d.Config(d_model=4)
        object.__setattr__(bad, "dt_min", float("nan"))
        ckpt.config_to_dict(bad)
    with pytest.raises(ValueError, match="d: expected a dict with the key 'liquidssm_module'"):
        ckpt.config_from_dict({"d_model": 4})
    with pytest.raises(ValueError, match="liquidssm_module: expected one of .*got 'gpt2'"):
        ckpt.config_from_dict({"liquidssm_module": "gpt2"})
    with pytest.raises(ValueError, match=r"unknown fields \['d_stat'\] for liquidssm.spec.s4d"):
        ckpt.config_from_dict({"liquidssm_module": "s4d", "d_model": 4, "d_stat": 8})
    with pytest.raises(ValueError, match=r"missing required fields \['d_model'\]"):
        ckpt.config_from_dict({"liquidssm_module": "s4d"})
    with pytest.raises(ValueError, match=r"config\.ssm: missing required fields \['d_model'\]"):
        ckpt.config_from_dict({"liquidssm_module": "s4_block", "ssm": {"liquidssm_module": "s4d"}})
    with pytest.raises(ValueError, match="liquidssm_format_version: expected 1 .*got 2"):
        ckpt.config_from_dict({"liquidssm_format_version": 2, **ckpt.config_to_dict(
            VARIANTS["s4d"])})
    with pytest.raises(ValueError, match="d_state"):  # the Config's own checks run
        ckpt.config_from_dict({"liquidssm_module": "s4d", "d_model": 4, "d_state": 0})


def test_save_errors(tmp_path):
    config = VARIANTS["mamba"]
    params = mamba.init(config, 0)
    with pytest.raises(TypeError, match="config: expected the Config of a liquidssm.spec"):
        ckpt.save(tmp_path, "mamba", params)
    with pytest.raises(ValueError, match="dtype: expected one of .*got 'int32'"):
        ckpt.save(tmp_path, config, params, dtype="int32")
    with pytest.raises(TypeError, match="params: expected a dict of arrays, got list"):
        ckpt.save(tmp_path, config, [1])
    with pytest.raises(ValueError, match="params: missing tensor 'D'"):
        ckpt.save(tmp_path, config, {k: v for k, v in params.items() if k != "D"})
    with pytest.raises(ValueError, match="params: unexpected tensor 'extra'"):
        ckpt.save(tmp_path, config, {**params, "extra": np.zeros(2)})
    with pytest.raises(ValueError, match=r"params: tensor 'D': expected shape \(16,\).*got \(3,\)"):
        ckpt.save(tmp_path, config, {**params, "D": np.zeros(3)})
    with pytest.raises(ValueError, match="params: tensor 'D': expected a real floating dtype"):
        ckpt.save(tmp_path, config, {**params, "D": np.zeros(16, dtype=np.int64)})
    assert not (tmp_path / "config.json").exists()  # nothing written on an error


def saved(tmp_path, config=None, dtype=np.float64):
    config = config or VARIANTS["mamba"]
    params = module(config).init(config, 0)
    ckpt.save(tmp_path, config, params, dtype=dtype)
    return config, params


def rewrite_weights(path, tensors):
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()},
              str(path / "model.safetensors"))


def test_load_errors_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="path: expected a checkpoint directory.*does not"):
        ckpt.load(tmp_path / "nothing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileNotFoundError, match="a file"):
        ckpt.load(tmp_path / "file")
    with pytest.raises(FileNotFoundError, match=r"config.json: not found"):
        ckpt.load(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json: not valid JSON"):
        ckpt.load(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="config.json: expected a JSON object, got list"):
        ckpt.load(tmp_path)
    (tmp_path / "config.json").write_text('{"hidden_dim": 4}')
    with pytest.raises(ValueError, match=r"config.json: not a liquidssm, mamba_ssm or transf"):
        ckpt.load(tmp_path)
    with pytest.raises(ValueError, match="dtype: expected one of"):
        ckpt.load(tmp_path, dtype=np.int8)


def test_load_errors_liquidssm(tmp_path):
    config, params = saved(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no weights file .*model.safetensors"):
        ckpt.load(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="model.safetensors: not a readable safetensors file"):
        ckpt.load(tmp_path)
    rewrite_weights(tmp_path, {k: v for k, v in params.items() if k != "A_log"})
    with pytest.raises(ValueError, match="model.safetensors: missing tensor 'A_log'"):
        ckpt.load(tmp_path)
    rewrite_weights(tmp_path, {**params, "conv1d.weight_v": np.zeros(2)})
    with pytest.raises(ValueError, match="model.safetensors: unexpected tensor 'conv1d.weight_v'"):
        ckpt.load(tmp_path)
    rewrite_weights(tmp_path, {**params, "A_log": np.zeros((16, 5))})
    with pytest.raises(ValueError, match=r"model.safetensors: tensor 'A_log': expected shape "
                                         r"\(16, 4\) \(from .*config.json\), got \(16, 5\)"):
        ckpt.load(tmp_path)
    rewrite_weights(tmp_path, {**params, "D": np.zeros(16, dtype=np.int32)})
    with pytest.raises(ValueError, match="model.safetensors: tensor 'D': expected a real float"):
        ckpt.load(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**raw, "d_stat": 3}))
    with pytest.raises(ValueError, match=r"config.json: config: unknown fields \['d_stat'\]"):
        ckpt.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**raw, "liquidssm_format_version": 9}))
    with pytest.raises(ValueError, match="config.json: liquidssm_format_version: expected 1"):
        ckpt.load(tmp_path)


# ------------------------------------------------------------------ published layouts
LM = mamba_lm.Config(d_model=8, n_layer=2, vocab_size=13, ssm_cfg={"d_state": 4})


def mamba_ssm_dir(path, config=LM, params=None, extra=None, weights="model.safetensors",
                  **overrides):
    """A mamba_ssm MambaLMHeadModel directory: its MambaConfig's fields and its state_dict
    (torch.save of a tied model keeps lm_head.weight, the embedding's tensor)."""
    params = mamba_lm.init(config, 0) if params is None else params
    raw = {"d_model": config.d_model, "d_intermediate": 0, "n_layer": config.n_layer,
           "vocab_size": config.vocab_size, "ssm_cfg": dict(config.ssm_cfg),
           "attn_layer_idx": [], "attn_cfg": {}, "rms_norm": True, "residual_in_fp32": True,
           "fused_add_norm": True, "pad_vocab_size_multiple": config.pad_vocab_size_multiple,
           "tie_embeddings": config.tie_embeddings, **overrides}
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(raw))
    tensors = dict(params)
    if config.tie_embeddings:
        tensors["lm_head.weight"] = params["backbone.embedding.weight"]
    tensors.update(extra or {})
    if weights:
        save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()},
                  str(path / weights))
    return params


def hf_dir(path, config, params, **overrides):
    """transformers' MambaForCausalLM save_pretrained layout (tied: no lm_head.weight)."""
    mixer = config.mixer
    raw = {"architectures": ["MambaForCausalLM"], "model_type": "mamba",
           "hidden_size": config.d_model, "num_hidden_layers": config.n_layer,
           "vocab_size": config.vocab_size, "state_size": mixer.d_state, "expand": mixer.expand,
           "conv_kernel": mixer.d_conv, "intermediate_size": mixer.d_inner,
           "time_step_rank": mixer.dt_rank, "use_bias": mixer.bias,
           "use_conv_bias": mixer.conv_bias, "hidden_act": "silu",
           "layer_norm_epsilon": config.norm_epsilon, "residual_in_fp32": True,
           "tie_word_embeddings": config.tie_embeddings, "time_step_min": mixer.dt_min,
           "time_step_max": mixer.dt_max, "time_step_init_scheme": mixer.dt_init,
           "time_step_scale": mixer.dt_scale, "time_step_floor": mixer.dt_init_floor,
           "pad_token_id": 0, "transformers_version": "5.0", **overrides}
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(raw))
    tensors = {k.replace("backbone.embedding.", "backbone.embeddings."): v
               for k, v in params.items()}
    rewrite_weights(path, tensors)


@pytest.mark.parametrize("tie", [True, False])
def test_mamba_ssm_layout(tmp_path, tie):
    config = mamba_lm.Config(d_model=8, n_layer=2, vocab_size=13, ssm_cfg={"d_state": 4},
                             tie_embeddings=tie)
    params = mamba_ssm_dir(tmp_path, config)
    cfg, loaded = ckpt.load(tmp_path)
    assert cfg == config and cfg.padded_vocab_size == 16
    assert set(loaded) == set(params)
    for k in params:
        np.testing.assert_array_equal(loaded[k], params[k].astype(np.float32))


def test_mamba_ssm_layout_minimal_config(tmp_path):
    # the first published checkpoints' config.json: no d_intermediate / tie_embeddings keys
    mamba_ssm_dir(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    for k in ("d_intermediate", "attn_layer_idx", "attn_cfg", "tie_embeddings"):
        del raw[k]
    raw["ssm_cfg"] = {"d_state": 4, "layer": "Mamba1", "use_fast_path": True}
    (tmp_path / "config.json").write_text(json.dumps(raw))
    assert ckpt.load(tmp_path)[0] == LM


def test_sharded_safetensors(tmp_path):
    params = mamba_ssm_dir(tmp_path, weights=None)
    names = sorted(params) + ["lm_head.weight"]
    tensors = {**params, "lm_head.weight": params["backbone.embedding.weight"]}
    half = {"a": names[: len(names) // 2], "b": names[len(names) // 2:]}
    weight_map = {}
    for shard, keys in half.items():
        save_file({k: np.ascontiguousarray(tensors[k]) for k in keys},
                  str(tmp_path / f"model-{shard}.safetensors"))
        weight_map.update({k: f"model-{shard}.safetensors" for k in keys})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    _, loaded = ckpt.load(tmp_path)
    for k in params:
        np.testing.assert_array_equal(loaded[k], params[k])
    # an error names the shard the tensor came from
    bad = tensors["backbone.norm_f.weight"][:3]
    shard = weight_map["backbone.norm_f.weight"]
    keys = half[shard[6]]
    save_file({k: np.ascontiguousarray(bad if k == "backbone.norm_f.weight" else tensors[k])
               for k in keys}, str(tmp_path / shard))
    with pytest.raises(ValueError, match=rf"{shard}: tensor 'backbone.norm_f.weight': expected"):
        ckpt.load(tmp_path)
    (tmp_path / shard).unlink()
    with pytest.raises(FileNotFoundError, match=f"shard '{shard}' not found"):
        ckpt.load(tmp_path)


def test_bfloat16_safetensors(tmp_path):
    # published checkpoints are often bfloat16, which NumPy lacks: read as float32 exactly
    params = mamba_ssm_dir(tmp_path, weights=None)
    bits = {k: (np.asarray(v, np.float32).view(np.uint32) >> 16).astype(np.uint16)
            for k, v in params.items()}
    exact = {k: (b.astype(np.uint32) << 16).view(np.float32) for k, b in bits.items()}
    header = {k: {"dtype": "BF16", "shape": list(b.shape), "data_offsets": None}
              for k, b in bits.items()}
    offset, blobs = 0, []
    for k, b in bits.items():
        header[k]["data_offsets"] = [offset, offset + b.nbytes]
        offset += b.nbytes
        blobs.append(b.astype("<u2").tobytes())
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    (tmp_path / "model.safetensors").write_bytes(
        len(head).to_bytes(8, "little") + head + b"".join(blobs))
    _, loaded = ckpt.load(tmp_path)
    for k in params:
        np.testing.assert_array_equal(loaded[k], exact[k])


@pytest.mark.parametrize(("override", "message"), [
    ({"d_intermediate": 64}, "d_intermediate: expected 0"),
    ({"rms_norm": False}, "rms_norm: expected true"),
    ({"attn_layer_idx": [1]}, r"attn_layer_idx: expected \[\]"),
    ({"ssm_cfg": {"layer": "Mamba2"}}, "layer: expected 'Mamba1'"),
    ({"ssm_cfg": {"d_state": 4, "headdim": 8}}, r"ssm_cfg: unknown keys \['headdim'\]"),
    ({"ssm_cfg": [1]}, "ssm_cfg: expected an object"),
    ({"new_key": 1}, r"unknown mamba_ssm MambaConfig keys \['new_key'\]"),
    ({"n_layer": 0}, "n_layer"),
])
def test_mamba_ssm_config_errors(tmp_path, override, message):
    mamba_ssm_dir(tmp_path, **override)
    with pytest.raises(ValueError, match=f"config.json: .*{message}"):
        ckpt.load(tmp_path)


def test_mamba_ssm_tensor_errors(tmp_path):
    params = mamba_lm.init(LM, 0)
    mamba_ssm_dir(tmp_path, extra={"lm_head.weight": params["backbone.embedding.weight"] + 1})
    with pytest.raises(ValueError, match="model.safetensors: tensor 'lm_head.weight': differs "
                                         "from 'backbone.embedding.weight'"):
        ckpt.load(tmp_path)
    # more layers in the file than n_layer
    extra = {"backbone.layers.2.norm.weight": np.ones(8)}
    mamba_ssm_dir(tmp_path, extra=extra)
    with pytest.raises(ValueError, match="unexpected tensor 'backbone.layers.2.norm.weight' .*"
                                         "mamba_ssm MambaLMHeadModel"):
        ckpt.load(tmp_path)
    # the vocabulary padded to a different multiple than the config says
    mamba_ssm_dir(tmp_path, pad_vocab_size_multiple=1)
    with pytest.raises(ValueError, match=r"tensor 'backbone.embedding.weight': expected shape "
                                         r"\(13, 8\) .*got \(16, 8\)"):
        ckpt.load(tmp_path)
    # an untied head without lm_head.weight
    untied = mamba_lm.Config(d_model=8, n_layer=2, vocab_size=13, ssm_cfg={"d_state": 4},
                             tie_embeddings=False)
    p = mamba_lm.init(untied, 0)
    del p["lm_head.weight"]
    mamba_ssm_dir(tmp_path, untied, params=p)
    with pytest.raises(ValueError, match="model.safetensors: missing tensor 'lm_head.weight'"):
        ckpt.load(tmp_path)


@pytest.mark.parametrize("tie", [True, False])
def test_transformers_layout(tmp_path, tie):
    ssm_cfg = {"d_state": 4, "dt_rank": 2, **({} if tie else {"bias": True})}
    config = mamba_lm.Config(d_model=8, n_layer=2, vocab_size=13, ssm_cfg=ssm_cfg,
                             pad_vocab_size_multiple=1, tie_embeddings=tie)
    params = mamba_lm.init(config, 0)
    hf_dir(tmp_path, config, params)
    cfg, loaded = ckpt.load(tmp_path)
    assert cfg == config  # ssm_cfg keeps the non-default fields only
    assert set(loaded) == set(params)
    for k in params:
        np.testing.assert_array_equal(loaded[k], params[k])
    # transformers' load hook also accepts the older name "backbone.embedding.weight"
    rewrite_weights(tmp_path, params)
    assert set(ckpt.load(tmp_path)[1]) == set(params)


@pytest.mark.parametrize(("override", "message", "error"), [
    ({"model_type": "mamba2"}, "model_type: expected 'mamba'", ValueError),
    ({"hidden_act": "gelu"}, "hidden_act: expected 'silu'", ValueError),
    ({"intermediate_size": 7}, "intermediate_size: expected expand", ValueError),
    ({"state_size": 0}, "d_state", ValueError),
    ({"expand": 1.5}, "expand", ValueError),
])
def test_transformers_config_errors(tmp_path, override, message, error):
    config = mamba_lm.Config(d_model=8, n_layer=1, vocab_size=13, ssm_cfg={"d_state": 4},
                             pad_vocab_size_multiple=1)
    hf_dir(tmp_path, config, mamba_lm.init(config, 0), **override)
    with pytest.raises(error, match=f"config.json: .*{message}"):
        ckpt.load(tmp_path)


def test_transformers_tensor_errors(tmp_path):
    config = mamba_lm.Config(d_model=8, n_layer=1, vocab_size=13, ssm_cfg={"d_state": 4},
                             pad_vocab_size_multiple=1)
    params = mamba_lm.init(config, 0)
    # transformers has no vocabulary padding: a padded embedding disagrees with vocab_size
    padded = {**params, "backbone.embedding.weight": np.zeros((16, 8))}
    hf_dir(tmp_path, config, padded)
    with pytest.raises(ValueError, match=r"tensor 'backbone.embedding.weight': expected shape "
                                         r"\(13, 8\) .*transformers MambaForCausalLM.*\(16, 8\)"):
        ckpt.load(tmp_path)
    hf_dir(tmp_path, config, {**params, "backbone.layers.0.mixer.x_proj.weight": np.zeros((9, 8))})
    with pytest.raises(ValueError, match=r"tensor 'backbone.layers.0.mixer.x_proj.weight': "
                                         r"expected shape \(9, 16\)"):
        ckpt.load(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors or pytorch_model.bin"):
        ckpt.load(tmp_path)
