"""Flax NNX modules (liquidssm.jax.nnx): module == functional backend == spec, init from the
spec's init, to/from params, nnx.jit == eager, nnx.grad finite and equal to finite differences.

float64 throughout (jax x64 is switched on for this module and restored after), tiny shapes.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("flax")
import liquidssm.jax as ljax  # noqa: E402
import liquidssm.numpy as lnp  # noqa: E402
from flax import nnx  # noqa: E402
from liquidssm import spec  # noqa: E402
from liquidssm.jax import nnx as M  # noqa: E402
from liquidssm.spec import block, nn  # noqa: E402

B, L, H = 2, 5, 4
F64 = jnp.float64


@pytest.fixture(scope="module", autouse=True)
def x64():
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", old)


def strip(p, prefix):
    return {k[len(prefix):]: v for k, v in p.items() if k.startswith(prefix)}


def child_seed(seed, k):  # the documented convention for a block's second part
    return int(np.random.SeedSequence([seed, k]).generate_state(1)[0])


# ------------------------------------------------------------------ cases: config, spec init,
# and a reference forward ref(ns, config, params, u, **kw) written with the spec's functions;
# ns = liquidssm.numpy (the spec, float64 NumPy) or liquidssm.jax (the functional backend).

S4D_CFG = spec.s4d.Config(H, 4)
MAMBA_CFG = spec.mamba.Config(H, d_state=4, d_conv=2)


def _variant(name):
    mod = getattr(spec, name)
    return (mod.init, lambda ns, c, p, u, **kw: getattr(ns, name).forward(c, p, u, **kw))


def _s4_block_init(c, seed):
    ssm = getattr(spec, type(c.ssm).__module__.rsplit(".", 1)[-1]).init(c.ssm, seed)
    return {**block.init(H, child_seed(seed, 1)), **block.with_prefix(ssm, "ssm.")}


def _s4_block_ref(ns, c, p, u, state=None, return_state=False):
    mod = getattr(ns, type(c.ssm).__module__.rsplit(".", 1)[-1])
    mixer = lambda x: mod.forward(  # noqa: E731
        c.ssm, strip(p, "ssm."), x, state=state, return_state=return_state)
    return block.forward(p, u, mixer, prenorm=c.prenorm)


def _mamba_block_init(c, seed):
    return {"norm.weight": np.ones(H),
            **block.with_prefix(spec.mamba.init(c.mixer, seed), "mixer.")}


def _mamba_block_ref(ns, c, p, u, state=None, return_state=False):
    h = nn.rms_norm(u, p["norm.weight"], c.norm_epsilon)
    out = ns.mamba.forward(c.mixer, strip(p, "mixer."), h, state=state,
                           return_state=return_state)
    return (u + out[0], out[1]) if return_state else u + out


CASES = {
    "s4d": (M.S4D, S4D_CFG, *_variant("s4d")),
    "s4": (M.S4, spec.s4.Config(H, 4, l_max=8), *_variant("s4")),
    "liquid_s4": (M.LiquidS4, spec.liquid_s4.Config(H, 4), *_variant("liquid_s4")),
    "s5": (M.S5, spec.s5.Config(H, 4, blocks=1), *_variant("s5")),
    "liquid_s5": (M.LiquidS5, spec.liquid_s5.Config(H, 4, blocks=1, tied=False),
                  *_variant("liquid_s5")),
    "mamba": (M.Mamba, MAMBA_CFG, *_variant("mamba")),
    "liquid_mamba": (M.LiquidMamba, spec.liquid_mamba.Config(H, d_state=4, d_conv=2,
                                                             ffn_expand=1.0),
                     *_variant("liquid_mamba")),
    "s4_block": (M.S4Block, M.S4BlockConfig(spec.liquid_s4.Config(H, 4)), _s4_block_init,
                 _s4_block_ref),
    "s5_layer": (M.S5Layer, spec.s5.LayerConfig(spec.liquid_s5.Config(H, 4, blocks=1)),
                 spec.liquid_s5.layer_init,
                 lambda ns, c, p, u, **kw: spec.liquid_s5.layer_forward(c, p, u, **kw)),
    "mamba_block": (M.MambaBlock, M.MambaBlockConfig(MAMBA_CFG), _mamba_block_init,
                    _mamba_block_ref),
    "mamba_lm": (M.MambaLM, spec.mamba.LMConfig(H, 2, 10, ssm_cfg=dict(d_state=4, d_conv=2)),
                 spec.mamba.lm_init,
                 lambda ns, c, p, u, **kw: spec.mamba.lm_forward(c, p, u, **kw)),
}
NAMES = list(CASES)


def make_input(name, seed=0):
    rng = np.random.default_rng(seed)
    if name == "mamba_lm":
        return rng.integers(0, 10, (B, L))
    return rng.normal(size=(B, L, H))


def close(a, b, tol=1e-10):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


# ------------------------------------------------------------------ init, params round trip


@pytest.mark.parametrize("name", NAMES)
def test_init_is_the_spec_init_and_round_trips(name):
    cls, cfg, spec_init, _ = CASES[name]
    m = cls(cfg, seed=3, dtype=F64)
    ref = spec_init(cfg, 3)
    got = m.to_params()
    assert sorted(got) == sorted(ref)
    for k in ref:
        assert got[k].dtype == np.float64
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
    other = cls(cfg, seed=4, dtype=F64).to_params()
    assert any(not np.array_equal(other[k], ref[k]) for k in ref)
    back = cls.from_params(cfg, {k: v + 1.0 for k, v in got.items()}, dtype=F64)
    for k, v in back.to_params().items():
        np.testing.assert_array_equal(v, got[k] + 1.0)
    assert cls(cfg).dtype == jnp.float32  # the default precision


def test_params_are_nnx_params_and_batch_stats():
    m = M.S5Layer(CASES["s5_layer"][1])
    stats = nnx.state(m, nnx.BatchStat)["params"]
    assert sorted(stats) == ["norm_mean", "norm_var"]
    trained = nnx.state(m, nnx.Param)["params"]
    assert "norm_mean" not in trained and "Lambda_re" in trained


# ------------------------------------------------------------------ module == functional == spec


@pytest.mark.parametrize("name", NAMES)
def test_module_equals_functional_equals_spec(name):
    cls, cfg, _, ref = CASES[name]
    m = cls(cfg, seed=1, dtype=F64)
    u = make_input(name)
    y = m(jnp.asarray(u))
    assert y.dtype == F64
    y_fun = ref(ljax, cfg, m.arrays(), jnp.asarray(u))
    y_spec = ref(lnp, cfg, m.to_params(), u)
    close(y, y_fun, 1e-13)  # the same computation
    close(y, y_spec)  # jax's scans / erf against the spec's loops: measured <= 2e-15


@pytest.mark.parametrize("name", NAMES)
def test_jit_equals_eager(name):
    cls, cfg, _, _ = CASES[name]
    m = cls(cfg, seed=2, dtype=F64)
    u = jnp.asarray(make_input(name, 1))
    close(nnx.jit(lambda mod, x: mod(x))(m, u), m(u), 1e-12)


@pytest.mark.parametrize("name", ["s4_block", "s5_layer", "mamba_block", "liquid_mamba",
                                  "mamba_lm"])
def test_step_repeated_equals_forward(name):
    cls, cfg, _, _ = CASES[name]
    m = cls(cfg, seed=0, dtype=F64)
    u = jnp.asarray(make_input(name, 2))
    fwd = nnx.jit(lambda mod, x: mod(x, return_state=True))
    stp = nnx.jit(lambda mod, x, s: mod.step(x, s))
    y, last = fwd(m, u)
    s, ys = m.initial_state(B), []
    for t in range(L):
        y_t, s = stp(m, u[:, t], s)
        ys.append(y_t)
    close(jnp.stack(ys, axis=1), y, 1e-12)
    for k in last:
        close(s[k], last[k], 1e-12)
    # chunked forward with the state == one forward
    y1, s1 = m(u[:, :2], return_state=True)
    close(jnp.concatenate([y1, m(u[:, 2:], state=s1)], axis=1), y, 1e-12)


@pytest.mark.parametrize("name", ["s4d", "liquid_s5"])
def test_variant_step_matches_spec(name):
    cls, cfg, _, _ = CASES[name]
    m = cls(cfg, seed=0, dtype=F64)
    u = make_input(name, 3)
    y, s = m.step(jnp.asarray(u[:, 0]), m.initial_state(B))
    mod = getattr(spec, name)
    y_ref, s_ref = mod.step(cfg, m.to_params(), mod.initial_state(cfg, B), u[:, 0])
    close(y, y_ref)
    close(s["x"], s_ref["x"])


# ------------------------------------------------------------------ gradients


@pytest.mark.parametrize("name", ["s4d", "s4", "liquid_s5", "mamba", "s5_layer"])
def test_grad_is_finite_and_covers_the_params(name):
    cls, cfg, _, _ = CASES[name]
    m = cls(cfg, seed=0, dtype=F64)
    u = jnp.asarray(make_input(name, 4))
    g = nnx.jit(nnx.grad(lambda mod, x: jnp.sum(mod(x) ** 2)))(m, u)
    grads = {k: np.asarray(v[...]) for k, v in g["params"].items()}
    assert sorted(grads) == sorted(nnx.state(m, nnx.Param)["params"])
    assert all(np.isfinite(v).all() for v in grads.values())
    assert all(np.abs(v).sum() > 0 for v in grads.values()), grads


def test_grad_equals_finite_differences():
    cfg = CASES["s5_layer"][1]
    m = M.S5Layer(cfg, seed=0, dtype=F64)
    u = jnp.asarray(make_input("s5_layer", 5))
    loss = nnx.jit(lambda mod, x: jnp.sum(jnp.sin(mod(x))))
    g = nnx.jit(nnx.grad(lambda mod, x: jnp.sum(jnp.sin(mod(x)))))(m, u)
    p = m.to_params()
    rng = np.random.default_rng(0)
    v = {k: rng.normal(size=a.shape) for k, a in p.items()}
    v["norm_mean"] = v["norm_var"] = 0 * v["norm_var"]  # statistics: not differentiated
    eps = 1e-6
    plus = M.S5Layer.from_params(cfg, {k: p[k] + eps * v[k] for k in p}, dtype=F64)
    minus = M.S5Layer.from_params(cfg, {k: p[k] - eps * v[k] for k in p}, dtype=F64)
    fd = (loss(plus, u) - loss(minus, u)) / (2 * eps)
    directional = sum(np.sum(np.asarray(a[...]) * v[k]) for k, a in g["params"].items())
    # central differences: O(eps^2) truncation + O(1e-16 / eps) rounding, about 1e-9 here
    np.testing.assert_allclose(float(fd), directional, rtol=1e-6)


# ------------------------------------------------------------------ dtypes and errors


def test_float32_and_bfloat16():
    m = M.S4D(S4D_CFG, seed=0)  # float32 parameters
    u = make_input("s4d")
    y = m(jnp.asarray(u, jnp.float32))
    assert y.dtype == jnp.float32
    y_spec = spec.s4d.forward(S4D_CFG, spec.s4d.init(S4D_CFG, 0), u)
    # float32 rounding of parameters and FFT: measured 4e-7 on outputs of size ~1
    close(y, y_spec, 1e-5)
    yb = m(jnp.asarray(u, jnp.bfloat16))
    assert yb.dtype == jnp.bfloat16
    # bf16 input (8 mantissa bits) computed in float32: measured 1e-2 absolute
    np.testing.assert_allclose(np.asarray(yb, np.float64), y_spec, atol=5e-2, rtol=5e-2)


def test_bad_input_errors():
    with pytest.raises(TypeError, match="config: expected liquidssm.spec.s5.Config"):
        M.S5(spec.liquid_s5.Config(H, 4, blocks=1))
    p = spec.s4d.init(S4D_CFG, 0)
    with pytest.raises(ValueError, match=r"params: expected the keys .*missing \['D'\]"):
        M.S4D.from_params(S4D_CFG, {k: v for k, v in p.items() if k != "D"})
    with pytest.raises(ValueError, match=r"params\['D'\]: expected shape \(4,\), got \(3,\)"):
        M.S4D.from_params(S4D_CFG, {**p, "D": np.zeros(3)})
    with pytest.raises(ValueError, match="seed"):
        M.S4D(S4D_CFG, seed=-1)
    with pytest.raises(ValueError, match="u: expected shape"):
        M.S4D(S4D_CFG)(jnp.zeros((B, L, H + 1)))
    with pytest.raises(TypeError, match="ssm: expected"):
        M.S4BlockConfig(MAMBA_CFG)
    with pytest.raises(ValueError, match="layer: expected one of"):
        M.SequenceModel(3, H, 1, layer="rnn", d_output=2)
    with pytest.raises(ValueError, match="d_output: expected None with head='lm'"):
        M.SequenceModel(3, H, 1, head="lm", d_output=2)
    with pytest.raises(ValueError, match="step: head='pool'"):
        M.SequenceModel(3, H, 1, d_output=2).step(jnp.zeros((B,), int), {})


# ------------------------------------------------------------------ the backbone


def _spec_pool(p, cfg, u, ns):
    """encoder -> layers -> LayerNorm -> mean -> decoder, with the spec's functions."""
    x = nn.linear(u, p["encoder.weight"], p["encoder.bias"])
    for i in range(cfg.n_layers):
        x = _s4_block_ref(ns, cfg.layer_config, strip(p, f"layers.{i}."), x)
    x = nn.layer_norm(x, p["norm_f.weight"], p["norm_f.bias"], 1e-5)
    return nn.linear(np.mean(x, axis=1), p["decoder.weight"], p["decoder.bias"])


def test_sequence_model_pool():
    m = M.SequenceModel(3, H, 2, layer="s4d", d_output=2, ssm=dict(d_state=4), seed=5,
                        dtype=F64)
    p = m.to_params()
    assert sorted(k for k in p if not k.startswith("layers.")) == [
        "decoder.bias", "decoder.weight", "encoder.bias", "encoder.weight", "norm_f.bias",
        "norm_f.weight"]
    for i in range(2):  # each layer is the S4 block's init for its own seed
        ref = _s4_block_init(m.config.layer_config, child_seed(5, i))
        for k, v in ref.items():
            np.testing.assert_array_equal(p[f"layers.{i}.{k}"], v)
    u = np.random.default_rng(6).normal(size=(B, L, 3))
    y = m(jnp.asarray(u))
    assert y.shape == (B, 2)
    close(y, _spec_pool(p, m.config, u, lnp))
    close(nnx.jit(lambda mod, x: mod(x))(m, jnp.asarray(u)), y, 1e-12)
    back = M.SequenceModel.from_params(m.config, p, dtype=F64)
    close(back(jnp.asarray(u)), y, 0)
    with pytest.raises(ValueError, match="unexpected keys"):
        M.SequenceModel.from_params(m.config, {**p, "layers.2.D": np.zeros(H)})
    g = nnx.jit(nnx.grad(lambda mod, x: jnp.sum(mod(x) ** 2)))(m, jnp.asarray(u))
    leaves = jax.tree_util.tree_leaves(g)
    assert len(leaves) == len(p) and all(np.isfinite(np.asarray(a)).all() for a in leaves)


def test_sequence_model_lm_is_the_mamba_lm():
    m = M.SequenceModel(16, H, 2, layer="mamba", head="lm", ssm=dict(d_state=4, d_conv=2),
                        seed=0, dtype=F64)
    p = m.to_params()
    lmc = spec.mamba.LMConfig(H, 2, 16, ssm_cfg=dict(d_state=4, d_conv=2),
                              pad_vocab_size_multiple=1)
    tokens = np.random.default_rng(7).integers(0, 16, (B, L))
    y, state = m(jnp.asarray(tokens), return_state=True)
    y_ref, s_ref = spec.mamba.lm_forward(lmc, block.with_prefix(p, "backbone."), tokens,
                                         return_state=True)
    close(y, y_ref)
    assert sorted(state) == sorted(s_ref)
    s = m.initial_state(B)
    stp = nnx.jit(lambda mod, t, st: mod.step(t, st))
    for t in range(L):
        y_t, s = stp(m, jnp.asarray(tokens[:, t]), s)
        close(y_t, y_ref[:, t])
    for k in s_ref:
        close(s[k], s_ref[k])
    assert math.isclose(np.std(p["embedding.weight"]), 0.02, rel_tol=0.5)
