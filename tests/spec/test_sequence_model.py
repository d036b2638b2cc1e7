"""SequenceModel (liquidssm.spec.sequence_model): every layer x head against a by-hand
composition of the block functions, names and seeds, streaming, errors."""

import math

import array_api_strict as xps
import numpy as np
import pytest
from liquidssm.spec import (
    liquid_mamba,
    liquid_s4,
    liquid_s5,
    mamba,
    mamba_block,
    s4,
    s4_block,
    s4d,
    s5,
    s5_layer,
)
from liquidssm.spec import sequence_model as sm
from liquidssm.spec._common import child_seed

B, L, M, D_IN, D_OUT, VOCAB, N_LAYERS = 2, 5, 4, 3, 2, 7, 2
#: tiny variant fields per layer; block fields where the block has choices
LAYERS = {
    "s4d": ({"d_state": 4}, {"prenorm": False}),
    "s4": ({"d_state": 4, "l_max": 8}, {}),
    "liquid_s4": ({"d_state": 4, "liquid_degree": 2}, {"approximate_gelu": True}),
    "s5": ({"d_state": 4, "blocks": 1}, {"norm": "layer", "activation": "full_glu"}),
    "liquid_s5": ({"d_state": 4, "blocks": 1}, {}),
    "mamba": ({"d_state": 3, "d_conv": 2}, {"norm_epsilon": 1e-4}),
    "liquid_mamba": ({"d_state": 3, "d_conv": 2, "ffn_expand": 1.0}, {}),
}
HEADS = {
    "pool": {"d_input": D_IN, "d_output": D_OUT, "head": "pool"},
    "sequence": {"d_input": D_IN, "d_output": D_OUT, "head": "sequence"},
    "lm": {"vocab_size": VOCAB, "head": "lm"},
}
CASES = [(layer, head) for layer in LAYERS for head in HEADS]


def _config(layer="s4d", head="sequence", **kw):
    ssm, block = LAYERS[layer]
    return sm.Config(d_model=M, n_layers=N_LAYERS, layer=layer, ssm=ssm, block=block,
                     **{**HEADS[head], **kw})


def _input(config, seed=1, length=L):
    rng = np.random.default_rng(seed)
    if config.tokens:
        return rng.integers(0, config.vocab_size, (B, length))
    return rng.normal(size=(B, length, config.d_input))


def _params(config, seed=0):
    """init, with norm_f moved off 1 / 0 so that it is exercised."""
    p = sm.init(config, seed)
    rng = np.random.default_rng(seed + 50)
    for k in ("norm_f.weight", "norm_f.bias"):
        if k in p:
            p[k] = rng.uniform(0.5, 1.5, M)
    return p


def _block_module_and_config(config):
    """The layer, built by hand from the variant and block modules (not sequence_model's)."""
    ssm, block = config.ssm, config.block
    variants = {"s4d": s4d, "s4": s4, "liquid_s4": liquid_s4, "s5": s5, "liquid_s5": liquid_s5,
                "mamba": mamba, "liquid_mamba": liquid_mamba}
    variant = variants[config.layer].Config(d_model=M, **ssm)
    if config.layer in ("s4d", "s4", "liquid_s4"):
        return s4_block, s4_block.Config(variant, **block)
    if config.layer in ("s5", "liquid_s5"):
        return s5_layer, s5_layer.Config(variant, **block)
    if config.layer == "mamba":
        return mamba_block, mamba_block.Config(variant, **block)
    return liquid_mamba, variant


def _oracle(config, p, u):
    """The backbone composed by hand: input map, each layer's block forward, norm_f, head."""
    module, lc = _block_module_and_config(config)
    if config.tokens:
        x = p["embedding.weight"][u]
    else:
        x = u @ p["encoder.weight"].T + p["encoder.bias"]
    for i in range(config.n_layers):
        pre = f"layers.{i}."
        x = module.forward(lc, {k[len(pre):]: v for k, v in p.items() if k.startswith(pre)}, x)
    eps = config.norm_epsilon
    if config.norm_f == "layer":
        mu = x.mean(-1, keepdims=True)
        x = (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps)
        x = x * p["norm_f.weight"] + p["norm_f.bias"]
    elif config.norm_f == "rms":
        x = x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * p["norm_f.weight"]
    if config.head == "lm":
        return x @ p["embedding.weight" if config.tie_embeddings else "lm_head.weight"].T
    if config.head == "pool":
        x = x.mean(1)
    return x @ p["decoder.weight"].T + p["decoder.bias"]


# ---------------------------------------------------------------------------------- names, init


@pytest.mark.parametrize("layer, head", CASES)
def test_param_shapes_and_layer_seeds(layer, head):
    c = _config(layer, head)
    p = sm.init(c, seed=5)
    assert {k: v.shape for k, v in p.items()} == sm.param_shapes(c)
    assert all(v.dtype == np.float64 for v in p.values())
    module, lc = _block_module_and_config(c)
    assert sm.layer_module(c) is module and sm.layer_config(c) == lc
    own = {"norm_f.weight": (M,), "norm_f.bias": (M,)}
    if c.tokens:
        own["embedding.weight"] = (VOCAB, M)
    else:
        own.update({"encoder.weight": (M, D_IN), "encoder.bias": (M,)})
    if head == "lm":
        own["lm_head.weight"] = (VOCAB, M)
    else:
        own.update({"decoder.weight": (D_OUT, M), "decoder.bias": (D_OUT,)})
    layers = {f"layers.{i}.{k}": s for i in range(N_LAYERS)
              for k, s in module.param_shapes(lc).items()}
    assert sm.param_shapes(c) == {**own, **layers}
    # layer i is the block's own init with child_seed(seed, i)
    for i in range(N_LAYERS):
        for k, v in module.init(lc, child_seed(5, i)).items():
            np.testing.assert_array_equal(p[f"layers.{i}.{k}"], v)
    assert any(not np.array_equal(p[f"layers.0.{k}"], p[f"layers.1.{k}"])
               for k in module.param_shapes(lc))
    # the backbone's own draws come from child_seed(seed, n_layers), in the documented order
    rng = np.random.default_rng(child_seed(5, N_LAYERS))
    if c.tokens:
        np.testing.assert_array_equal(p["embedding.weight"], rng.normal(0, 0.02, (VOCAB, M)))
    else:
        b = 1 / math.sqrt(D_IN)
        np.testing.assert_array_equal(p["encoder.weight"], rng.uniform(-b, b, (M, D_IN)))
        np.testing.assert_array_equal(p["encoder.bias"], rng.uniform(-b, b, M))
    b = 1 / math.sqrt(M)
    if head == "lm":
        np.testing.assert_array_equal(p["lm_head.weight"], rng.uniform(-b, b, (VOCAB, M)))
    else:
        np.testing.assert_array_equal(p["decoder.weight"], rng.uniform(-b, b, (D_OUT, M)))
        np.testing.assert_array_equal(p["decoder.bias"], rng.uniform(-b, b, D_OUT))
    np.testing.assert_array_equal(p["norm_f.weight"], 1.0)
    np.testing.assert_array_equal(p["norm_f.bias"], 0.0)


def test_init_deterministic_and_seeds_differ():
    c = _config("mamba", "lm")
    a, again, other = sm.init(c, 1), sm.init(c, 1), sm.init(c, 2)
    assert all(np.array_equal(a[k], again[k]) for k in a)
    for k in ("embedding.weight", "lm_head.weight", "layers.0.mixer.in_proj.weight"):
        assert not np.array_equal(a[k], other[k])
    for bad in (-1, None, 1.0, True):
        with pytest.raises((TypeError, ValueError), match="seed"):
            sm.init(c, bad)


def test_norm_f_choices_and_tied_names():
    shapes = sm.param_shapes(_config("s4d", "lm", norm_f="rms", tie_embeddings=True))
    assert "norm_f.weight" in shapes and "norm_f.bias" not in shapes
    assert "lm_head.weight" not in shapes and shapes["embedding.weight"] == (VOCAB, M)
    shapes = sm.param_shapes(_config("s4d", "pool", norm_f="none"))
    assert not any(k.startswith("norm_f.") for k in shapes)


# ---------------------------------------------------------------------------------- outputs


@pytest.mark.parametrize("layer, head", CASES)
def test_forward_matches_composition(layer, head):
    c = _config(layer, head)
    p, u = _params(c), _input(c)
    y = sm.forward(c, p, u)
    shape = {"pool": (B, D_OUT), "sequence": (B, L, D_OUT), "lm": (B, L, VOCAB)}[head]
    assert y.shape == shape
    np.testing.assert_allclose(y, _oracle(c, p, u), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("kw", [
    {"norm_f": "rms", "norm_epsilon": 0.1},
    {"norm_f": "none"},
    {"tie_embeddings": True},
    {"tie_embeddings": True, "norm_f": "rms"},
])
def test_forward_matches_composition_for_norms_and_tied_heads(kw):
    c = _config("mamba", "lm", **kw)
    p, u = _params(c), _input(c)
    np.testing.assert_allclose(sm.forward(c, p, u), _oracle(c, p, u), rtol=1e-12, atol=1e-13)


def test_token_input_with_a_decoder_head():
    c = _config("s5", "sequence", d_input=None, vocab_size=VOCAB)
    p, u = _params(c), _input(c)
    assert "embedding.weight" in p and "encoder.weight" not in p
    np.testing.assert_allclose(sm.forward(c, p, u), _oracle(c, p, u), rtol=1e-12, atol=1e-13)


def test_tied_head_is_the_embedding():
    tied = _config("s4d", "lm", tie_embeddings=True)
    untied = _config("s4d", "lm")
    p = _params(tied)
    u = _input(tied)
    y = sm.forward(tied, p, u)
    np.testing.assert_array_equal(
        y, sm.forward(untied, {**p, "lm_head.weight": p["embedding.weight"]}, u))
    q = _params(untied)
    assert not np.allclose(sm.forward(untied, q, u),
                           sm.forward(tied, {k: v for k, v in q.items() if k != "lm_head.weight"},
                                      u))


@pytest.mark.parametrize("layer, head", [(layer, head) for layer, head in CASES if head != "pool"])
def test_step_and_chunks_equal_forward(layer, head):
    c = _config(layer, head)
    p, u = _params(c, 3), _input(c, 4)
    y, final = sm.forward(c, p, u, return_state=True)
    np.testing.assert_allclose(y, sm.forward(c, p, u), rtol=1e-12, atol=1e-13)
    state = sm.initial_state(c, B)
    assert set(state) == set(final)
    assert {k for k in state if k.startswith("layers.1.")} == {
        "layers.1." + k for k in sm.layer_module(c).initial_state(sm.layer_config(c), B)}
    y1, s1 = sm.forward(c, p, u[:, :2], return_state=True)
    y2, s2 = sm.forward(c, p, u[:, 2:], state=s1, return_state=True)
    np.testing.assert_allclose(np.concatenate([y1, y2], 1), y, rtol=1e-12, atol=1e-12)
    ys = []
    for t in range(L):
        y_t, state = sm.step(c, p, state, u[:, t])
        ys.append(y_t)
    np.testing.assert_allclose(np.stack(ys, 1), y, rtol=1e-12, atol=1e-12)
    for k in final:
        np.testing.assert_allclose(state[k], final[k], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(s2[k], final[k], rtol=1e-12, atol=1e-12)


def test_array_api_strict_matches_numpy():
    for c in (_config("s4d", "pool"), _config("mamba", "lm", tie_embeddings=True)):
        p, u = _params(c), _input(c)
        ys = sm.forward(c, {k: xps.asarray(v) for k, v in p.items()}, xps.asarray(u))
        np.testing.assert_allclose(np.asarray(ys), sm.forward(c, p, u), rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("layer", ["s4d", "mamba"])
def test_pool_head_refuses_state_and_step(layer):
    c = _config(layer, "pool")
    p, u = _params(c), _input(c)
    assert not c.streams and _config(layer, "sequence").streams
    with pytest.raises(ValueError, match=r"initial_state: head='pool' averages over the whole "
                                         r"sequence"):
        sm.initial_state(c, B)
    with pytest.raises(ValueError, match=r"return_state: head='pool'"):
        sm.forward(c, p, u, return_state=True)
    with pytest.raises(ValueError, match=r"state: head='pool'"):
        sm.forward(c, p, u, state={})
    with pytest.raises(ValueError, match=r"step: head='pool'"):
        sm.step(c, p, {}, u[:, 0])


@pytest.mark.parametrize("ssm", [{"liquid_kernel": "pb", "d_state": 4},
                                 {"liquid_kernel": "kb", "base": "s4", "d_state": 4, "l_max": 8},
                                 {"bidirectional": True, "d_state": 4, "blocks": 1}])
def test_whole_sequence_layers_refuse_state(ssm):
    layer = "s5" if "bidirectional" in ssm else "liquid_s4"
    c = sm.Config(d_model=M, n_layers=1, layer=layer, ssm=ssm, d_input=D_IN, head="sequence",
                  d_output=D_OUT)
    p, u = _params(c), _input(c)
    np.testing.assert_allclose(sm.forward(c, p, u), _oracle(c, p, u), rtol=1e-12, atol=1e-13)
    what = "liquid_kernel" if layer == "liquid_s4" else "bidirectional"
    with pytest.raises(ValueError, match=f"initial_state: .*{what}"):
        sm.initial_state(c, B)
    with pytest.raises(ValueError, match=f"return_state: .*{what}"):
        sm.forward(c, p, u, return_state=True)
    with pytest.raises(ValueError, match=f"step: .*{what}"):
        sm.step(c, p, {}, u[:, 0])


# ---------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("kw, exc, text", [
    ({"d_input": 3, "vocab_size": 5}, ValueError, "d_input: expected exactly one of d_input"),
    ({}, ValueError, "d_input: expected exactly one of d_input"),
    ({"d_input": 3, "head": "lm"}, ValueError, "vocab_size: expected an int >= 1 with head='lm'"),
    ({"vocab_size": 5, "head": "lm", "d_output": 2}, ValueError, "d_output: expected None"),
    ({"d_input": 3, "head": "pool"}, TypeError, "d_output: expected an int"),
    ({"d_input": 3, "d_output": 2, "tie_embeddings": True}, ValueError,
     r"tie_embeddings: expected False with head='pool'"),
    ({"vocab_size": 5, "d_output": 2, "head": "sequence", "tie_embeddings": True}, ValueError,
     r"tie_embeddings: expected False with head='sequence'"),
    ({"vocab_size": 5, "head": "lm", "tie_embeddings": 1}, TypeError, "tie_embeddings"),
    ({"d_input": 3, "d_output": 2, "layer": "liquid_mamba", "block": {"norm_epsilon": 1e-3}},
     ValueError, r"block: expected \{\} with layer='liquid_mamba'"),
    ({"d_input": 3, "d_output": 2, "layer": "lstm"}, ValueError, "layer: expected one of"),
    ({"d_input": 3, "d_output": 2, "head": "cls"}, ValueError, "head: expected one of"),
    ({"d_input": 3, "d_output": 2, "norm_f": "batch"}, ValueError, "norm_f: expected one of"),
    ({"d_input": 3, "d_output": 2, "norm_epsilon": 0.0}, ValueError, "norm_epsilon"),
    ({"d_input": 0, "d_output": 2}, ValueError, "d_input: expected an int >= 1"),
    ({"vocab_size": 2.0, "d_output": 2}, TypeError, "vocab_size: expected an int"),
    ({"d_input": 3, "d_output": 2, "n_layers": 0}, ValueError, "n_layers"),
    ({"d_input": 3, "d_output": 2, "ssm": {"d_stat": 4}}, ValueError,
     r"ssm: expected a dict with keys among .*'d_state'.* got \{'d_stat': 4\}"),
    ({"d_input": 3, "d_output": 2, "ssm": {"d_model": 4}}, ValueError, "ssm: expected a dict"),
    ({"d_input": 3, "d_output": 2, "block": {"ssm": 1}}, ValueError, "block: expected a dict"),
    ({"d_input": 3, "d_output": 2, "block": {"activation": "full_glu"}}, ValueError,
     r"block: expected a dict with keys among \['approximate_gelu', 'prenorm'\]"),
    ({"d_input": 3, "d_output": 2, "ssm": [4]}, TypeError, "ssm: expected a dict"),
    ({"d_input": 3, "d_output": 2, "ssm": {"d_state": 3}}, ValueError, "d_state"),
    ({"d_input": 3, "d_output": 2, "block": {"prenorm": 1}}, TypeError, "prenorm"),
])
def test_config_errors(kw, exc, text):
    with pytest.raises(exc, match=text):
        sm.Config(**{"d_model": M, "n_layers": 1, **kw})


def test_config_hash_and_equality():
    a, b = _config("s5", "lm"), _config("s5", "lm")
    assert a == b and hash(a) == hash(b) and a != _config("s5", "sequence")


def test_params_and_state_errors_name_the_keys():
    c = _config("mamba", "sequence")
    p, u = _params(c), _input(c)
    with pytest.raises(ValueError, match=r"missing \['layers.1.norm.weight'\] and unexpected "
                                         r"\['layers.2.norm.weight'\]"):
        sm.forward(c, {**{k: v for k, v in p.items() if k != "layers.1.norm.weight"},
                       "layers.2.norm.weight": p["layers.1.norm.weight"]}, u)
    with pytest.raises(ValueError, match=r"params\['decoder.weight'\]: expected shape \(2, 4\)"):
        sm.forward(c, {**p, "decoder.weight": np.zeros((4, 2))}, u)
    with pytest.raises(TypeError, match="params: expected a dict"):
        sm.forward(c, list(p.values()), u)
    state = sm.initial_state(c, B)
    with pytest.raises(ValueError, match=r"state: expected exactly the keys of initial_state"
                                         r".*missing \['layers.1.conv_state'\] and unexpected "
                                         r"\['conv_state'\]"):
        sm.forward(c, p, u, state={**{k: v for k, v in state.items()
                                      if k != "layers.1.conv_state"},
                                   "conv_state": state["layers.1.conv_state"]})
    with pytest.raises(TypeError, match="state: expected a dict"):
        sm.step(c, p, [state], u[:, 0])
    with pytest.raises(ValueError, match=r"state\['ssm_state'\]|ssm_state"):
        sm.step(c, p, {**state, "layers.0.ssm_state": np.zeros((B, 1))}, u[:, 0])
    with pytest.raises(TypeError, match="config: expected a liquidssm.spec.sequence_model.Config"):
        sm.forward(sm.layer_config(c), p, u)
    with pytest.raises(TypeError, match="return_state: expected a bool"):
        sm.forward(c, p, u, return_state=1)


def test_input_checks():
    c = _config("s4d", "sequence")
    p = _params(c)
    with pytest.raises(ValueError, match=r"u: expected shape \(batch, length, 3\)"):
        sm.forward(c, p, np.zeros((B, L, 4)))
    with pytest.raises(TypeError, match="u: expected an array"):
        sm.forward(c, p, [[0.0] * 3])
    with pytest.raises(ValueError, match=r"u_t: expected shape \(batch, 3\)"):
        sm.step(c, p, sm.initial_state(c, B), np.zeros((B, L, 3)))
    t = _config("s4d", "lm")
    q, tokens = _params(t), _input(t)
    state = sm.initial_state(t, B)
    with pytest.raises(TypeError, match=r"tokens: expected an integer array of shape \(batch, "
                                        r"length\), got shape \(2, 5\) and dtype float64"):
        sm.forward(t, q, tokens.astype(np.float64))
    with pytest.raises(TypeError, match=r"tokens: expected an integer array of shape \(batch, "
                                        r"length\), got shape \(2, 5, 1\)"):
        sm.forward(t, q, tokens[..., None])
    with pytest.raises(TypeError, match=r"tokens: expected an integer array .* got bool"):
        sm.forward(t, q, True)
    with pytest.raises(TypeError, match=r"tokens: .*dtype bool"):
        sm.forward(t, q, tokens > 2)
    with pytest.raises(TypeError, match=r"token: expected an integer array of shape \(batch,\), "
                                        r"got shape \(2, 5\)"):
        sm.step(t, q, state, tokens)
    y_t, _ = sm.step(t, q, state, tokens[:, 0].astype(np.int32))  # any integer dtype
    np.testing.assert_allclose(y_t, sm.forward(t, q, tokens[:, :1])[:, 0], rtol=1e-12,
                               atol=1e-13)
