"""The Mamba LM (liquidssm.spec.mamba_lm): MambaLMHeadModel's names and init, an independent
MixerModel oracle, tied / untied heads, streaming, and its identity with the SequenceModel."""

import math

import numpy as np
import pytest
from liquidssm.spec import mamba, mamba_lm, sequence_model

B, M = 2, 4
LMC = mamba_lm.Config(d_model=M, n_layer=2, vocab_size=11, ssm_cfg={"d_state": 3, "d_conv": 3})
UNTIED = mamba_lm.Config(d_model=M, n_layer=2, vocab_size=11,
                         ssm_cfg={"d_state": 3, "d_conv": 3}, tie_embeddings=False)
TOKENS = np.array([[1, 5, 10, 0, 3, 3, 7], [2, 2, 9, 4, 6, 1, 15]])


def _perturbed(config, seed=2):
    """init, with the norms moved off 1 so that every weight is exercised."""
    p = mamba_lm.init(config, seed)
    rng = np.random.default_rng(seed + 10)
    for k in p:
        if k.endswith("norm.weight") or k.endswith("norm_f.weight"):
            p[k] = rng.uniform(0.5, 1.5, p[k].shape)
    return p


def _lm_oracle(config, p, tokens):
    """MixerModel's Add -> RMSNorm -> Mixer ordering (the residual carried beside the hidden
    state, as mamba_ssm), then norm_f and the head: written from the published code, with the
    mixer from spec.mamba (tested against mamba_simple's slow path in test_mamba.py)."""
    def norm(x, w):
        return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + config.norm_epsilon) * w

    E = p["backbone.embedding.weight"]
    hidden, residual = E[tokens], None
    for i in range(config.n_layer):
        pre = f"backbone.layers.{i}."
        residual = hidden if residual is None else hidden + residual
        mix = {k[len(pre + "mixer."):]: v for k, v in p.items() if k.startswith(pre + "mixer.")}
        hidden = mamba.forward(config.mixer, mix, norm(residual, p[pre + "norm.weight"]))
    head = E if config.tie_embeddings else p["lm_head.weight"]
    return norm(hidden + residual, p["backbone.norm_f.weight"]) @ head.T


# ---------------------------------------------------------------------------------- config


def test_config():
    assert LMC.padded_vocab_size == 16
    assert LMC.mixer == mamba.Config(d_model=M, d_state=3, d_conv=3)
    assert mamba_lm.Config(d_model=768, n_layer=24, vocab_size=50277).padded_vocab_size == 50280
    assert mamba_lm.Config(d_model=4, n_layer=1, vocab_size=5,
                           pad_vocab_size_multiple=1).padded_vocab_size == 5
    assert LMC.tie_embeddings and hash(LMC) == hash(mamba_lm.Config(**vars(LMC)))
    with pytest.raises(ValueError, match="ssm_cfg: expected a dict with keys among"):
        mamba_lm.Config(d_model=4, n_layer=1, vocab_size=5, ssm_cfg={"d_stat": 3})
    with pytest.raises(ValueError, match="ssm_cfg: expected a dict with keys among"):
        mamba_lm.Config(d_model=4, n_layer=1, vocab_size=5, ssm_cfg={"d_model": 3})
    with pytest.raises(ValueError, match="d_state"):
        mamba_lm.Config(d_model=4, n_layer=1, vocab_size=5, ssm_cfg={"d_state": 0})
    for kw, name in [({"n_layer": 0}, "n_layer"), ({"vocab_size": 0}, "vocab_size"),
                     ({"d_model": 0}, "d_model"), ({"norm_epsilon": 0.0}, "norm_epsilon"),
                     ({"pad_vocab_size_multiple": 0}, "pad_vocab_size_multiple"),
                     ({"tie_embeddings": 1}, "tie_embeddings")]:
        with pytest.raises((TypeError, ValueError), match=name):
            mamba_lm.Config(**{"d_model": 4, "n_layer": 1, "vocab_size": 5, **kw})


def test_sequence_config_is_the_published_architecture():
    s = mamba_lm.sequence_config(LMC)
    assert (s.layer, s.head, s.norm_f, s.vocab_size, s.n_layers, s.tie_embeddings) == (
        "mamba", "lm", "rms", 16, 2, True)
    assert s.ssm == {"d_state": 3, "d_conv": 3} and s.block == {"norm_epsilon": 1e-5}
    assert not mamba_lm.sequence_config(UNTIED).tie_embeddings
    with pytest.raises(TypeError, match="config: expected a liquidssm.spec.mamba_lm.Config"):
        mamba_lm.sequence_config(s)


# ---------------------------------------------------------------------------------- init


@pytest.mark.parametrize("config", [LMC, UNTIED], ids=["tied", "untied"])
def test_init_names_and_published_rescaling(config):
    p = mamba_lm.init(config, seed=1)
    assert {k: v.shape for k, v in p.items()} == mamba_lm.param_shapes(config)
    mixer = {f"backbone.layers.{i}.mixer.{k}": s for i in range(2)
             for k, s in mamba.param_shapes(config.mixer).items()}
    expected = {"backbone.embedding.weight": (16, M), **mixer,
                "backbone.layers.0.norm.weight": (M,), "backbone.layers.1.norm.weight": (M,),
                "backbone.norm_f.weight": (M,)}
    if not config.tie_embeddings:
        expected["lm_head.weight"] = (16, M)
    assert mamba_lm.param_shapes(config) == expected
    # the draws of mamba_ssm's order from one default_rng(seed): embedding, then each mixer;
    # out_proj.weight / sqrt(n_layer); an untied head ~ U(+-1/sqrt(d_model)), drawn last
    rng = np.random.default_rng(1)
    np.testing.assert_array_equal(p["backbone.embedding.weight"], rng.normal(0, 0.02, (16, M)))
    for i in range(2):
        layer = mamba._init_mixer(config.mixer, rng)
        layer["out_proj.weight"] = layer["out_proj.weight"] / math.sqrt(2)
        for k, v in layer.items():
            np.testing.assert_array_equal(p[f"backbone.layers.{i}.mixer.{k}"], v)
        np.testing.assert_array_equal(p[f"backbone.layers.{i}.norm.weight"], 1.0)
    np.testing.assert_array_equal(p["backbone.norm_f.weight"], 1.0)
    if not config.tie_embeddings:
        np.testing.assert_array_equal(p["lm_head.weight"],
                                      rng.uniform(-M**-0.5, M**-0.5, (16, M)))
    assert not np.array_equal(p["backbone.layers.0.mixer.in_proj.weight"],
                              p["backbone.layers.1.mixer.in_proj.weight"])
    other = mamba_lm.init(config, seed=2)
    assert not np.array_equal(p["backbone.embedding.weight"], other["backbone.embedding.weight"])
    again = mamba_lm.init(config, seed=1)
    assert all(np.array_equal(p[k], again[k]) for k in p)


def test_untied_init_shares_every_other_draw():
    tied, untied = mamba_lm.init(LMC, 3), mamba_lm.init(UNTIED, 3)
    assert set(untied) - set(tied) == {"lm_head.weight"}
    assert all(np.array_equal(tied[k], untied[k]) for k in tied)


def test_init_zeroes_linear_biases_but_dt_proj():
    biased = mamba_lm.Config(d_model=M, n_layer=1, vocab_size=4, ssm_cfg={"bias": True})
    q = mamba_lm.init(biased)
    np.testing.assert_array_equal(q["backbone.layers.0.mixer.in_proj.bias"], 0.0)
    np.testing.assert_array_equal(q["backbone.layers.0.mixer.out_proj.bias"], 0.0)
    assert np.all(q["backbone.layers.0.mixer.dt_proj.bias"] != 0)
    assert np.abs(q["backbone.layers.0.mixer.out_proj.weight"]).max() <= 8**-0.5


# ---------------------------------------------------------------------------------- outputs


@pytest.mark.parametrize("config", [LMC, UNTIED], ids=["tied", "untied"])
def test_forward_matches_mixer_model_and_steps(config):
    p = _perturbed(config)
    logits, final = mamba_lm.forward(config, p, TOKENS, return_state=True)
    assert logits.shape == (2, 7, 16)
    np.testing.assert_allclose(logits, _lm_oracle(config, p, TOKENS), rtol=1e-12, atol=1e-14)
    # prefill 3 tokens with one forward, then one step per token
    _, state = mamba_lm.forward(config, p, TOKENS[:, :3], return_state=True)
    steps = []
    for t in range(3, 7):
        lt, state = mamba_lm.step(config, p, state, TOKENS[:, t])
        steps.append(lt)
    np.testing.assert_allclose(np.stack(steps, 1), logits[:, 3:], rtol=1e-12, atol=1e-13)
    assert set(state) == set(final) == set(mamba_lm.initial_state(config, B))
    for k in final:
        np.testing.assert_allclose(state[k], final[k], rtol=1e-12, atol=1e-14)
    # chunked forward == whole
    y1, s1 = mamba_lm.forward(config, p, TOKENS[:, :4], return_state=True)
    y2 = mamba_lm.forward(config, p, TOKENS[:, 4:], state=s1)
    np.testing.assert_allclose(np.concatenate([y1, y2], 1), logits, rtol=1e-12, atol=1e-14)


def test_tied_head_is_the_embedding():
    p = _perturbed(LMC)
    tied = mamba_lm.forward(LMC, p, TOKENS)
    untied = mamba_lm.forward(UNTIED, {**p, "lm_head.weight": p["backbone.embedding.weight"]},
                              TOKENS)
    np.testing.assert_array_equal(tied, untied)
    head = np.random.default_rng(0).normal(size=(16, M))
    other = mamba_lm.forward(UNTIED, {**p, "lm_head.weight": head}, TOKENS)
    hidden = np.linalg.lstsq(p["backbone.embedding.weight"], tied[0].T, rcond=None)[0].T
    np.testing.assert_allclose(other[0], hidden @ head.T, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("config", [LMC, UNTIED], ids=["tied", "untied"])
def test_is_the_sequence_model_under_published_names(config):
    p = _perturbed(config)
    s = mamba_lm.sequence_names(p)
    assert mamba_lm.published_names(s).keys() == p.keys()
    assert {k: v.shape for k, v in s.items()} == sequence_model.param_shapes(
        mamba_lm.sequence_config(config))
    assert "embedding.weight" in s and "layers.1.mixer.A_log" in s and "norm_f.weight" in s
    np.testing.assert_array_equal(
        mamba_lm.forward(config, p, TOKENS),
        sequence_model.forward(mamba_lm.sequence_config(config), s, TOKENS))


# ---------------------------------------------------------------------------------- errors


def test_errors_name_the_argument():
    p = mamba_lm.init(LMC)
    with pytest.raises(TypeError, match=r"tokens: expected an integer array of shape \(batch, "
                                        r"length\), got shape \(1, 3\) and dtype float64"):
        mamba_lm.forward(LMC, p, np.zeros((1, 3)))
    with pytest.raises(TypeError, match=r"tokens: expected an integer array of shape"):
        mamba_lm.forward(LMC, p, np.zeros(3, dtype=np.int64))
    with pytest.raises(TypeError, match=r"tokens: expected an integer array .* got list"):
        mamba_lm.forward(LMC, p, [[1, 2]])
    state = mamba_lm.initial_state(LMC, B)
    with pytest.raises(TypeError, match=r"token: expected an integer array of shape \(batch,\)"):
        mamba_lm.step(LMC, p, state, TOKENS)
    with pytest.raises(ValueError, match=r"missing \['backbone.norm_f.weight'\] and unexpected "
                                         r"\['norm_f.weight'\]"):
        renamed = {k: v for k, v in p.items() if k != "backbone.norm_f.weight"}
        mamba_lm.forward(LMC, {**renamed, "norm_f.weight": p["backbone.norm_f.weight"]}, TOKENS)
    with pytest.raises(ValueError, match=r"unexpected \['lm_head.weight'\]"):
        mamba_lm.forward(LMC, {**p, "lm_head.weight": p["backbone.embedding.weight"]}, TOKENS)
    with pytest.raises(ValueError, match=r"state: .*missing \['layers.1.conv_state'\]"):
        mamba_lm.forward(LMC, p, TOKENS, state={k: v for k, v in state.items()
                                                if k != "layers.1.conv_state"})
    with pytest.raises(TypeError, match="config: expected a liquidssm.spec.mamba_lm.Config"):
        mamba_lm.forward(mamba_lm.sequence_config(LMC), p, TOKENS)
