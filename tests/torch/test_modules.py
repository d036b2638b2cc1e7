"""liquidssm.torch.modules: nn.Module wrappers == functional backend == spec (float64)."""

import importlib

import liquidssm.torch as lt
import numpy as np
import pytest
import torch
from liquidssm.spec import block, liquid_mamba, liquid_s4, liquid_s5, mamba, s4, s4d, s5
from liquidssm.torch import modules as M

F64 = torch.float64
B, L = 2, 6

VARIANTS = {
    "s4d": (M.S4D, s4d.Config(d_model=3, d_state=4)),
    "s4": (M.S4, s4.Config(d_model=3, d_state=4, l_max=16)),
    "liquid_s4_scan": (M.LiquidS4, liquid_s4.Config(d_model=3, d_state=4, tied=False)),
    "liquid_s4_pb": (M.LiquidS4, liquid_s4.Config(d_model=3, d_state=4, liquid_kernel="pb")),
    "s5": (M.S5, s5.Config(d_model=3, d_state=4, blocks=1)),
    "liquid_s5": (M.LiquidS5, liquid_s5.Config(d_model=3, d_state=4, blocks=1, tied=False,
                                                lcontract="tanh")),
    "mamba": (M.Mamba, mamba.Config(d_model=4, d_state=3)),
    "liquid_mamba": (M.LiquidMamba, liquid_mamba.Config(d_model=4, d_state=3, ffn_expand=1.0,
                                                        tied=False)),
}
STREAMING = [k for k in VARIANTS if k != "liquid_s4_pb"]


def _u(H, seed=0, L=L):
    return np.random.default_rng(seed).standard_normal((B, L, H))


def _perturb(params, seed=1, scale=0.05):
    """Random offsets on every parameter, so that no structure of the init hides a bug."""
    rng = np.random.default_rng(seed)
    return {k: v + scale * rng.standard_normal(v.shape) for k, v in params.items()}


def _module(key, perturb=True):
    cls, config = VARIANTS[key]
    if not perturb:
        return cls(config, seed=3, dtype=F64)
    return cls.from_params(config, _perturb(cls(config, seed=3).to_params()), dtype=F64)


def _spec(module):
    return importlib.import_module(f"liquidssm.spec.{module.variant}")


def _np(t):
    return t.detach().numpy()


# ------------------------------------------------------------------ variants


@pytest.mark.parametrize("key", list(VARIANTS))
def test_variant_init_equals_spec_init(key):
    m = _module(key, perturb=False)
    ref = _spec(m).init(m.config, 3)
    got = m.to_params()
    assert sorted(got) == sorted(ref)  # the state_dict names are the spec's
    assert sorted(m.state_dict()) == sorted(ref)
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k])


@pytest.mark.parametrize("key", list(VARIANTS))
def test_variant_module_equals_functional_and_spec(key):
    m = _module(key)
    u = _u(m.config.d_model)
    y = m(torch.tensor(u))
    functional = getattr(lt, m.variant).forward(m.config, m.spec_params(), torch.tensor(u))
    ref = _spec(m).forward(m.config, m.to_params(), u)
    assert y.dtype == F64 and y.shape == (B, L, m.config.d_model)
    np.testing.assert_array_equal(_np(y), _np(functional))
    np.testing.assert_allclose(_np(y), ref, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("key", STREAMING)
def test_variant_step_and_prefill_equal_forward(key):
    m = _module(key)
    u = torch.tensor(_u(m.config.d_model, seed=2))
    y = m(u)
    cache = m.init_cache(B)
    steps = torch.stack([m.step(u[:, t], cache) for t in range(L)], dim=1)
    assert cache.seqlen_offset == L
    # S4's conv path (Cauchy kernel) vs its dense recurrence: measured 2.3e-15 in float64
    np.testing.assert_allclose(_np(steps), _np(y), rtol=1e-10, atol=1e-12)
    cache = m.init_cache(B)
    first = m(u[:, :4], cache=cache)
    rest = torch.stack([m.step(u[:, t], cache) for t in range(4, L)], dim=1)
    np.testing.assert_allclose(_np(torch.cat([first, rest], 1)), _np(y), rtol=1e-10, atol=1e-12)
    assert cache.seqlen_offset == L


def test_s5_timesteps_pass_through():
    m = _module("s5")
    u = _u(3)
    tau = np.random.default_rng(4).uniform(0.5, 2.0, (B, L))
    y = m(torch.tensor(u), timesteps=torch.tensor(tau))
    ref = s5.forward(m.config, m.to_params(), u, timesteps=tau)
    np.testing.assert_allclose(_np(y), ref, rtol=1e-9, atol=1e-10)


def test_kernel_matches_spec():
    m = _module("s4d")
    np.testing.assert_allclose(_np(m.kernel(7)), s4d.kernel(m.config, m.to_params(), 7),
                               rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ round trips and names


@pytest.mark.parametrize("key", ["s4d", "s5", "mamba", "liquid_mamba"])
def test_from_params_to_params_round_trip(key):
    cls, config = VARIANTS[key]
    params = _perturb(cls(config).to_params(), seed=7)
    m = cls.from_params(config, params, dtype=F64)
    back = m.to_params()
    assert set(back) == set(params)
    for k in params:
        np.testing.assert_array_equal(back[k], params[k])
    again = cls.from_params(config, m.spec_params(), dtype=F64)  # tensors are accepted too
    u = torch.tensor(_u(config.d_model))
    np.testing.assert_array_equal(_np(again(u)), _np(m(u)))


def test_from_params_rejects_bad_names_and_shapes():
    cls, config = VARIANTS["s4d"]
    params = cls(config).to_params()
    with pytest.raises(ValueError, match=r"params: .*missing \['D'\]"):
        cls.from_params(config, {k: v for k, v in params.items() if k != "D"})
    with pytest.raises(ValueError, match=r"unexpected \['extra'\]"):
        cls.from_params(config, {**params, "extra": np.zeros(1)})
    with pytest.raises(ValueError, match=r"params\['D'\]: expected shape \(3,\), got \(4,\)"):
        cls.from_params(config, {**params, "D": np.zeros(4)})


def test_bad_config_and_cache_are_refused():
    with pytest.raises(TypeError, match="config: expected a liquidssm.spec.s4d.Config"):
        M.S4D(s5.Config(d_model=3, d_state=4, blocks=1))
    with pytest.raises(TypeError, match="config: expected either a config or its fields"):
        M.S4D(s4d.Config(d_model=3), d_state=4)
    with pytest.raises(ValueError, match="d_state"):
        M.S4D(d_model=3, d_state=3)
    m = M.S4D(d_model=3, d_state=4)
    with pytest.raises(TypeError, match="cache: expected a Cache"):
        m.step(torch.zeros(B, 3), {"x": None})
    with pytest.raises(TypeError, match="ssm: expected an s4d, s4 or liquid_s4 Config"):
        M.S4BlockConfig(mamba.Config(d_model=4))


MAMBA_SIMPLE_KEYS = ["in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight",
                     "dt_proj.weight", "dt_proj.bias", "A_log", "D", "out_proj.weight"]


def test_mamba_state_dict_names_are_mamba_ssm_names():
    m = M.Mamba(d_model=4)
    assert sorted(m.state_dict()) == sorted(MAMBA_SIMPLE_KEYS)
    assert m.state_dict()["conv1d.weight"].shape == (8, 1, 4)  # nn.Conv1d's layout
    blk = M.MambaBlock(M.MambaBlockConfig(mamba.Config(d_model=4)))
    assert sorted(blk.state_dict()) == sorted(["norm.weight"] +
                                              [f"mixer.{k}" for k in MAMBA_SIMPLE_KEYS])
    lm = M.MambaLM(d_model=4, n_layer=2, vocab_size=10)
    expected = ["backbone.embedding.weight", "backbone.norm_f.weight", "lm_head.weight"]
    for i in range(2):
        expected += [f"backbone.layers.{i}.norm.weight"]
        expected += [f"backbone.layers.{i}.mixer.{k}" for k in MAMBA_SIMPLE_KEYS]
    assert sorted(lm.state_dict()) == sorted(expected)
    assert lm.lm_head.weight is lm.backbone.embedding.weight  # tied, as MambaLMHeadModel
    assert "lm_head.weight" not in lm.to_params()  # the spec's format has no tied copy


# ------------------------------------------------------------------ blocks


def _s4_block_reference(config, params, u):
    mod = {s4d.Config: s4d, s4.Config: s4, liquid_s4.Config: liquid_s4}[type(config.ssm)]
    ssm = block.strip_prefix(params, "ssm.")
    return block.forward(params, u, lambda x: mod.forward(config.ssm, ssm, x),
                         prenorm=config.prenorm)


@pytest.mark.parametrize("ssm", [s4d.Config(d_model=3, d_state=4),
                                 liquid_s4.Config(d_model=3, d_state=4)])
@pytest.mark.parametrize("prenorm", [True, False])
def test_s4_block(ssm, prenorm):
    config = M.S4BlockConfig(ssm, prenorm=prenorm)
    fresh = M.S4Block(config, seed=5, dtype=F64)
    mod = liquid_s4 if isinstance(ssm, liquid_s4.Config) else s4d
    init = {**block.with_prefix(mod.init(ssm, 5), "ssm."), **block.init(3, 5)}
    got = fresh.to_params()
    assert set(got) == set(init)
    for k in init:
        np.testing.assert_array_equal(got[k], init[k])
    m = M.S4Block.from_params(config, _perturb(fresh.to_params()), dtype=F64)
    u = _u(3)
    y = m(torch.tensor(u))
    np.testing.assert_allclose(_np(y), _s4_block_reference(config, m.to_params(), u),
                               rtol=1e-9, atol=1e-10)
    cache = m.init_cache(B)
    steps = torch.stack([m.step(torch.tensor(u[:, t]), cache) for t in range(L)], 1)
    np.testing.assert_allclose(_np(steps), _np(y), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("ssm", [s5.Config(d_model=3, d_state=4, blocks=1),
                                 liquid_s5.Config(d_model=3, d_state=4, blocks=1)])
def test_s5_layer(ssm):
    config = s5.LayerConfig(ssm, activation="full_glu")
    spec_mod = liquid_s5 if isinstance(ssm, liquid_s5.Config) else s5
    fresh = M.S5Layer(config, seed=2, dtype=F64)
    init = spec_mod.layer_init(config, 2)
    assert set(fresh.to_params()) == set(init)
    for k in init:
        np.testing.assert_array_equal(fresh.to_params()[k], init[k])
    assert {n for n, _ in fresh.named_buffers()} == {"norm_mean", "norm_var"}  # not trained
    params = _perturb(init)
    params["norm_var"] = np.abs(params["norm_var"])
    m = M.S5Layer.from_params(config, params, dtype=F64)
    u = _u(3)
    y = m(torch.tensor(u))
    np.testing.assert_allclose(_np(y), spec_mod.layer_forward(config, params, u),
                               rtol=1e-9, atol=1e-10)
    cache = m.init_cache(B)
    steps = torch.stack([m.step(torch.tensor(u[:, t]), cache) for t in range(L)], 1)
    np.testing.assert_allclose(_np(steps), _np(y), rtol=1e-9, atol=1e-10)


def test_mamba_block_equals_spec_model_layer_and_liquid_block():
    mixer = mamba.Config(d_model=4, d_state=3)
    m = M.MambaBlock.from_params(
        M.MambaBlockConfig(mixer), _perturb(M.MambaBlock(M.MambaBlockConfig(mixer)).to_params()),
        dtype=F64)
    u, p = _u(4), m.to_params()
    y = _np(m(torch.tensor(u)))
    # one residual layer of spec mamba.model_forward: x + mixer(rms_norm(x))
    h = u / np.sqrt(np.mean(u * u, -1, keepdims=True) + 1e-5) * p["norm.weight"]
    ref = u + mamba.forward(mixer, block.strip_prefix(p, "mixer."), h)
    np.testing.assert_allclose(y, ref, rtol=1e-9, atol=1e-10)
    # the spec's LiquidMamba with p=1, plain conv, no FFN is documented to be this block
    lcfg = liquid_mamba.Config(d_model=4, d_state=3, liquid_degree=1, conv="plain", ffn="none")
    np.testing.assert_allclose(y, liquid_mamba.forward(lcfg, p, u), rtol=1e-9, atol=1e-10)
    fresh = M.MambaBlock(M.MambaBlockConfig(mixer), seed=4, dtype=F64).to_params()
    init = liquid_mamba.init(lcfg, 4)  # the same draws: mixer first, norm weight 1
    assert set(fresh) == set(init)
    for k in init:
        np.testing.assert_array_equal(fresh[k], init[k])
    cache = m.init_cache(B)
    steps = torch.stack([m.step(torch.tensor(u[:, t]), cache) for t in range(L)], 1)
    np.testing.assert_allclose(_np(steps), y, rtol=1e-9, atol=1e-10)


def test_mamba_lm_forward_step_and_untied_head():
    config = mamba.LMConfig(d_model=4, n_layer=2, vocab_size=10, ssm_cfg={"d_state": 3})
    params = _perturb(mamba.lm_init(config, 1))
    m = M.MambaLM.from_params(config, params, dtype=F64)
    tokens = np.random.default_rng(0).integers(0, 16, (B, L))
    logits = m(torch.tensor(tokens))
    assert logits.shape == (B, L, 16)
    np.testing.assert_allclose(_np(logits), mamba.lm_forward(config, params, tokens),
                               rtol=1e-9, atol=1e-10)
    cache = m.init_cache(B)
    steps = torch.stack([m.step(torch.tensor(tokens[:, t]), cache) for t in range(L)], 1)
    np.testing.assert_allclose(_np(steps), _np(logits), rtol=1e-9, atol=1e-10)
    head = np.random.default_rng(2).standard_normal((16, 4))
    untied = M.MambaLM.from_params(config, {**params, "lm_head.weight": head}, dtype=F64)
    assert untied.lm_head.weight is not untied.backbone.embedding.weight
    np.testing.assert_allclose(_np(untied(torch.tensor(tokens))),
                               mamba.lm_forward(config, {**params, "lm_head.weight": head},
                                                tokens), rtol=1e-9, atol=1e-10)


def test_low_precision_input_computes_in_float32():
    m = M.S4Block(M.S4BlockConfig(s4d.Config(d_model=3, d_state=4)))  # float32 weights
    u = torch.tensor(_u(3), dtype=torch.float32)
    y32 = m(u)
    y16 = m(u.to(torch.bfloat16))
    assert y16.dtype == torch.bfloat16
    # bf16 rounding of the input and output (rel 2^-8, |y| ~ 1): measured max error 6.5e-3
    np.testing.assert_allclose(_np(y16.float()), _np(y32), rtol=0, atol=2e-2)


# ------------------------------------------------------------------ param groups


@pytest.mark.parametrize("key,ssm", [
    ("s4d", {"log_dt", "log_A_real", "A_imag", "B_re", "B_im"}),
    ("s4", {"log_dt", "log_Lambda_real", "Lambda_imag", "P_re", "P_im", "B_re", "B_im"}),
    ("liquid_s4_scan", {"log_dt", "log_A_real", "A_imag", "B_re", "B_im", "BL_re", "BL_im"}),
    ("s5", {"Lambda_re", "Lambda_im", "B_re", "B_im", "log_step"}),
    ("mamba", {"A_log", "D"}),
    ("liquid_mamba", {"mixer.A_log", "mixer.D"}),
])
def test_param_groups_partition(key, ssm):
    m = _module(key, perturb=False)
    groups = m.param_groups(lr=1e-2, weight_decay=0.1, ssm_lr=1e-3)
    names = {id(p): n for n, p in m.named_parameters()}
    ids = [[id(p) for p in g["params"]] for g in groups]
    assert sorted(sum(ids, [])) == sorted(names)  # every parameter exactly once
    rest, ssm_group = groups
    assert {names[i] for i in ids[1]} == ssm
    assert (rest["lr"], rest["weight_decay"]) == (1e-2, 0.1)
    assert (ssm_group["lr"], ssm_group["weight_decay"]) == (1e-3, 0.0)
    torch.optim.AdamW(groups).step()  # accepted by an optimizer


def test_sequence_model_groups_cover_encoder_layers_and_head():
    model = M.SequenceModel(2, 3, 2, layer="s5", ssm_config=dict(d_state=4, blocks=1))
    groups = model.param_groups(1e-2, 0.05)
    assert groups[1]["lr"] == 1e-2  # ssm_lr defaults to lr
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())
    assert len(groups[1]["params"]) == 2 * 5  # Lambda_re/im, B_re/im, log_step per layer


# ------------------------------------------------------------------ backbone


def test_sequence_model_pool_equals_spec_composition():
    model = M.SequenceModel(2, 3, 2, layer="s4d", d_output=5,
                            ssm_config=dict(d_state=4), seed=9, dtype=F64)
    for i, layer in enumerate(model.layers):  # layer i: the spec's init with seed + 1 + i
        ref = {**block.with_prefix(s4d.init(layer.config.ssm, 10 + i), "ssm."),
               **block.init(3, 10 + i)}
        for k, v in ref.items():
            np.testing.assert_array_equal(layer.to_params()[k], v)
    u = np.random.default_rng(1).standard_normal((B, L, 2))
    p = model.to_params()
    x = u @ p["encoder.weight"].T + p["encoder.bias"]
    for i, layer in enumerate(model.layers):
        x = _s4_block_reference(layer.config, block.strip_prefix(p, f"layers.{i}."), x)
    ref = x.mean(1) @ p["decoder.weight"].T + p["decoder.bias"]
    y = model(torch.tensor(u))
    assert y.shape == (B, 5)
    np.testing.assert_allclose(_np(y), ref, rtol=1e-9, atol=1e-10)
    clone = M.SequenceModel.from_params(p, 2, 3, 2, layer="s4d", d_output=5,
                                        ssm_config=dict(d_state=4), seed=0, dtype=F64)
    np.testing.assert_array_equal(_np(clone(torch.tensor(u))), _np(y))
    with pytest.raises(ValueError, match="cache: streaming needs head='lm'"):
        model.init_cache(B)


@pytest.mark.parametrize("layer", ["mamba", "liquid_mamba", "s5"])
def test_sequence_model_lm_step_equals_forward(layer):
    ssm = dict(d_state=4, blocks=1) if layer == "s5" else dict(d_state=3)
    model = M.SequenceModel(None, 4, 2, layer=layer, head="lm", d_output=7, ssm_config=ssm,
                            dtype=F64)
    tokens = torch.tensor(np.random.default_rng(3).integers(0, 7, (B, L)))
    logits = model(tokens)
    assert logits.shape == (B, L, 7)
    cache = model.init_cache(B)
    first = model(tokens[:, :2], cache=cache)
    rest = [model.step(tokens[:, t], cache) for t in range(2, L)]
    np.testing.assert_allclose(_np(torch.cat([first, torch.stack(rest, 1)], 1)), _np(logits),
                               rtol=1e-9, atol=1e-10)
    assert cache.seqlen_offset == L


def test_sequence_model_bad_arguments():
    with pytest.raises(ValueError, match="layer: expected one of"):
        M.SequenceModel(2, 3, 1, layer="lstm")
    with pytest.raises(ValueError, match="d_input: expected an int >= 1"):
        M.SequenceModel(None, 3, 1, head="pool")
    with pytest.raises(ValueError, match="n_layers: expected an int >= 1, got 0"):
        M.SequenceModel(2, 3, 0)


# ------------------------------------------------------------------ torch.compile


def test_torch_compile_matches_eager():
    """Whole-graph capture (fullgraph: no graph break) of S4D, whose forward runs complex
    tensors and FFTs. The aot_eager backend keeps the test fast on CPU; inductor also runs
    (measured 130 s to compile on 2 loaded cores, equal output; it falls back to eager kernels
    for complex operators)."""
    torch._dynamo.reset()
    m = _module("s4d")
    u = torch.tensor(_u(3))
    compiled = torch.compile(m, backend="aot_eager", fullgraph=True)
    y = compiled(u)
    np.testing.assert_allclose(_np(y), _np(m(u)), rtol=1e-12, atol=1e-12)
    (g,) = torch.autograd.grad(y.square().sum(), m.log_dt)
    (ge,) = torch.autograd.grad(m(u).square().sum(), m.log_dt)
    np.testing.assert_allclose(_np(g), _np(ge), rtol=1e-10, atol=1e-12)
