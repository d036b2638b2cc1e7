"""Flax NNX modules (liquidssm.jax.nnx): module == bound functions == spec, init from the spec's
init, names, to/from params, nnx.jit == eager, step / chunks == forward, gradients, dtypes,
generate, errors. float64 (jax x64, tests/jax/conftest.py), tiny shapes."""

import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("flax")
import liquidssm.jax as ljax  # noqa: E402
from flax import nnx  # noqa: E402
from liquidssm.jax import nnx as M  # noqa: E402
from liquidssm.spec import (  # noqa: E402
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
from liquidssm.spec._common import shapes_of  # noqa: E402

B, L = 2, 5
F64 = jnp.float64

CASES = {
    "s4d": (M.S4D, s4d.Config(d_model=3, d_state=4)),
    "s4": (M.S4, s4.Config(d_model=3, d_state=4, l_max=8)),
    "liquid_s4": (M.LiquidS4, liquid_s4.Config(d_model=3, d_state=4, tied=False)),
    "s5": (M.S5, s5.Config(d_model=3, d_state=4, blocks=1)),
    "liquid_s5": (M.LiquidS5, liquid_s5.Config(d_model=3, d_state=4, blocks=1, tied=False)),
    "mamba": (M.Mamba, mamba.Config(d_model=4, d_state=3, d_conv=2)),
    "liquid_mamba": (M.LiquidMamba, liquid_mamba.Config(d_model=4, d_state=3, d_conv=2,
                                                        ffn_expand=1.0)),
    "s4_block": (M.S4Block, s4_block.Config(ssm=liquid_s4.Config(d_model=3, d_state=4))),
    "s5_layer": (M.S5Layer, s5_layer.Config(ssm=liquid_s5.Config(d_model=3, d_state=4,
                                                                 blocks=1))),
    "mamba_block": (M.MambaBlock, mamba_block.Config(mixer=mamba.Config(d_model=4, d_state=3,
                                                                        d_conv=2))),
    "seq_pool": (M.SequenceModel, sequence_model.Config(
        d_model=3, n_layers=2, layer="s4d", ssm=dict(d_state=4), d_input=2, d_output=2)),
    "seq_lm": (M.SequenceModel, sequence_model.Config(
        d_model=4, n_layers=2, layer="mamba", ssm=dict(d_state=3, d_conv=2), vocab_size=7,
        head="lm")),
    "mamba_lm": (M.MambaLM, mamba_lm.Config(d_model=4, n_layer=2, vocab_size=10,
                                            ssm_cfg=dict(d_state=3, d_conv=2))),
}
NAMES = list(CASES)
STREAMING = ["s4_block", "s5_layer", "mamba_block", "liquid_mamba", "seq_lm", "mamba_lm"]


def _input(config, seed=0, length=L):
    rng = np.random.default_rng(seed)
    if isinstance(config, (mamba_lm.Config, sequence_model.Config)) and config.vocab_size:
        return rng.integers(0, config.vocab_size, (B, length))
    width = getattr(config, "d_input", None) or config.d_model
    return rng.normal(size=(B, length, width))


def close(a, b, tol=1e-10):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


def _perturbed(name, seed=1):
    cls, cfg = CASES[name]
    rng = np.random.default_rng(seed)
    p = {k: v + 0.05 * rng.normal(size=v.shape) for k, v in cls._spec.init(cfg, 3).items()}
    p = {k: np.abs(v) if k.endswith("norm_var") else v for k, v in p.items()}
    return cls.from_params(cfg, p, dtype=F64)


# ------------------------------------------------------------------ init, names, params


@pytest.mark.parametrize("name", NAMES)
def test_init_is_the_spec_init_and_round_trips(name):
    cls, cfg = CASES[name]
    m = cls(cfg, seed=3, dtype=F64)
    ref = cls._spec.init(cfg, 3)
    got = m.to_params()
    assert sorted(got) == sorted(ref) == sorted(shapes_of(cls._spec, cfg))
    for k in ref:
        assert got[k].dtype == np.float64
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
    back = cls.from_params(cfg, {k: v + 1.0 for k, v in got.items()}, dtype=F64)
    for k, v in back.to_params().items():
        np.testing.assert_array_equal(v, got[k] + 1.0)
    assert cls(cfg).dtype == jnp.float32  # the default precision


def test_config_fields_as_keywords():
    m = M.Mamba(d_model=8)
    assert m.config == mamba.Config(d_model=8)
    with pytest.raises(TypeError, match="config: expected either a config or its fields"):
        M.Mamba(mamba.Config(d_model=8), d_state=4)


def test_params_are_nnx_params_and_batch_stats():
    m = M.S5Layer(CASES["s5_layer"][1])
    stats = nnx.state(m, nnx.BatchStat)["params"]
    assert sorted(stats) == ["norm_mean", "norm_var"]
    trained = nnx.state(m, nnx.Param)["params"]
    assert "norm_mean" not in trained and "Lambda_re" in trained


# ------------------------------------------------------------------ module == bound == spec


@pytest.mark.parametrize("name", NAMES)
def test_module_equals_bound_function_and_spec(name):
    cls, cfg = CASES[name]
    m = _perturbed(name)
    u = _input(cfg)
    y = m(jnp.asarray(u))
    assert y.dtype == F64
    short = cls._spec.__name__.rsplit(".", 1)[-1]
    close(y, getattr(ljax, short).forward(cfg, m.spec_params(), jnp.asarray(u)), 0)
    # jax's scans / erf against the spec's loops: measured <= 2e-15
    close(y, cls._spec.forward(cfg, m.to_params(), u))
    close(m.forward(jnp.asarray(u)), y, 0)


@pytest.mark.parametrize("name", ["s4d", "s5_layer", "mamba_lm", "seq_pool"])
def test_jit_equals_eager(name):
    cls, cfg = CASES[name]
    m = cls(cfg, seed=2, dtype=F64)
    u = jnp.asarray(_input(cfg, 1))
    close(nnx.jit(lambda mod, x: mod(x))(m, u), m(u), 1e-12)


@pytest.mark.parametrize("name", STREAMING)
def test_step_and_chunks_equal_forward(name):
    _, cfg = CASES[name]
    m = _perturbed(name)
    u = jnp.asarray(_input(cfg, 2))
    fwd = nnx.jit(lambda mod, x: mod(x, return_state=True))
    stp = nnx.jit(lambda mod, x, s: mod.step(x, s))
    y, last = fwd(m, u)
    s, ys = m.initial_state(B), []
    for t in range(L):
        y_t, s = stp(m, u[:, t], s)
        ys.append(y_t)
    close(jnp.stack(ys, axis=1), y, 1e-12)
    assert sorted(s) == sorted(last)
    for k in last:
        close(s[k], last[k], 1e-12)
    y1, s1 = m(u[:, :2], return_state=True)
    close(jnp.concatenate([y1, m(u[:, 2:], state=s1)], axis=1), y, 1e-12)


def test_s5_timesteps_and_kernel():
    m = _perturbed("s5")
    u = _input(m.config)
    tau = np.random.default_rng(4).uniform(0.5, 2.0, (B, L))
    close(m(jnp.asarray(u), timesteps=jnp.asarray(tau)),
          s5.forward(m.config, m.to_params(), u, timesteps=tau))
    k = _perturbed("s4d")
    close(k.kernel(7), s4d.kernel(k.config, k.to_params(), 7), 1e-12)


# ------------------------------------------------------------------ gradients


@pytest.mark.parametrize("name", ["s4", "liquid_s5", "mamba", "s5_layer", "seq_pool",
                                  "mamba_lm"])
def test_grad_is_finite_and_covers_the_params(name):
    cls, cfg = CASES[name]
    m = _perturbed(name)
    u = jnp.asarray(_input(cfg, 4))
    g = nnx.jit(nnx.grad(lambda mod, x: jnp.sum(mod(x) ** 2)))(m, u)
    grads = {k: np.asarray(v[...]) for k, v in g["params"].items()}
    assert sorted(grads) == sorted(nnx.state(m, nnx.Param)["params"])
    assert all(np.isfinite(v).all() for v in grads.values())
    assert all(np.abs(v).sum() > 0 for v in grads.values()), grads


def test_grad_equals_finite_differences():
    cls, cfg = CASES["s5_layer"]
    m = _perturbed("s5_layer")
    u = jnp.asarray(_input(cfg, 5))
    loss = nnx.jit(lambda mod, x: jnp.sum(jnp.sin(mod(x))))
    g = nnx.jit(nnx.grad(lambda mod, x: jnp.sum(jnp.sin(mod(x)))))(m, u)
    p = m.to_params()
    rng = np.random.default_rng(0)
    v = {k: rng.normal(size=a.shape) for k, a in p.items()}
    v["norm_mean"] = v["norm_var"] = 0 * v["norm_var"]  # statistics: not differentiated
    eps = 1e-6
    plus = cls.from_params(cfg, {k: p[k] + eps * v[k] for k in p}, dtype=F64)
    minus = cls.from_params(cfg, {k: p[k] - eps * v[k] for k in p}, dtype=F64)
    fd = (loss(plus, u) - loss(minus, u)) / (2 * eps)
    directional = sum(np.sum(np.asarray(a[...]) * v[k]) for k, a in g["params"].items())
    # central differences: O(eps^2) truncation + O(1e-16 / eps) rounding, about 1e-9 here
    np.testing.assert_allclose(float(fd), directional, rtol=1e-6)


# ------------------------------------------------------------------ dtypes and errors


def test_float32_and_bfloat16():
    cfg = CASES["s4d"][1]
    m = M.S4D(cfg, seed=0)  # float32 parameters
    u = _input(cfg)
    y = m(jnp.asarray(u, jnp.float32))
    assert y.dtype == jnp.float32
    y_spec = s4d.forward(cfg, s4d.init(cfg, 0), u)
    # float32 rounding of parameters and FFT: measured 4e-7 on outputs of size ~1
    close(y, y_spec, 1e-5)
    yb = m(jnp.asarray(u, jnp.bfloat16))
    assert yb.dtype == jnp.bfloat16
    # bf16 input (8 mantissa bits) computed in float32: measured 1e-2 absolute
    np.testing.assert_allclose(np.asarray(yb, np.float64), y_spec, atol=5e-2, rtol=5e-2)
    assert m.initial_state(B)["x"].dtype == jnp.complex64
    lm = M.MambaLM(CASES["mamba_lm"][1], dtype=jnp.bfloat16)
    assert lm(jnp.asarray([[1, 2]])).dtype == jnp.bfloat16  # tokens: the parameters' dtype


def test_bad_input_errors():
    cfg = CASES["s4d"][1]
    with pytest.raises(TypeError, match="config: expected liquidssm.spec.s5.Config"):
        M.S5(liquid_s5.Config(3, 4, blocks=1))
    p = s4d.init(cfg, 0)
    with pytest.raises(ValueError, match=r"params: .*missing \['D'\] and unexpected \['E'\]"):
        M.S4D.from_params(cfg, {**{k: v for k, v in p.items() if k != "D"}, "E": p["D"]})
    with pytest.raises(ValueError, match=r"params\['D'\]: expected shape \(3,\), got shape"):
        M.S4D.from_params(cfg, {**p, "D": np.zeros(4)})
    # integer arrays: a TypeError naming the parameter (never an int32 parameter kept)
    with pytest.raises(TypeError, match=r"params\['D'\]: expected a real floating dtype"):
        M.S4D.from_params(cfg, {**p, "D": jnp.zeros(3, dtype=jnp.int32)})
    with pytest.raises(ValueError, match="seed"):
        M.S4D(cfg, seed=-1)
    m = M.S4D(cfg)
    with pytest.raises(ValueError, match="u: expected shape"):
        m(jnp.zeros((B, L, 4)))
    with pytest.raises(ValueError, match="u: expected batch >= 1"):
        m(jnp.zeros((0, L, 3)))
    with pytest.raises(TypeError, match=r"u: expected a jax.Array .*numpy.ndarray"):
        m(np.zeros((B, L, 3)))
    with pytest.raises(ValueError, match="step: head='pool'"):
        M.SequenceModel(CASES["seq_pool"][1]).step(jnp.zeros((B, 2)), {})


# ------------------------------------------------------------------ generate


def test_greedy_generate_is_argmax_of_forward():
    m = _perturbed("mamba_lm")
    prompt = jnp.asarray(_input(m.config)[:, :3])
    out = m.generate(prompt, 4)
    assert out.shape == (B, 7) and out.dtype == prompt.dtype
    np.testing.assert_array_equal(out[:, :3], prompt)
    # the model is causal: forward(out)[:, t - 1] is the prediction after out[:, :t]
    logits = m(out)[:, 2:-1, :m.config.vocab_size]
    np.testing.assert_array_equal(out[:, 3:], jnp.argmax(logits, -1))
    a = m.generate(prompt, 30, temperature=1e6, seed=3)  # nearly uniform draws
    np.testing.assert_array_equal(a, m.generate(prompt, 30, temperature=1e6, seed=3))
    assert int(a.max()) < 10  # never a padded id (vocabulary padded to 16)


# ------------------------------------------------------------------ the jitted step


JIT_STEP = ["s4d", "s5", "liquid_s5", "mamba", "liquid_mamba", "mamba_block", "s5_layer",
            "seq_lm", "mamba_lm"]


@pytest.mark.parametrize("name", JIT_STEP)
def test_step_is_jitted_once_and_equals_the_spec(name):
    """step outside a trace: the spec's step jitted once per config and shapes (a second module
    of the same config reuses the compilation), token by token equal to the spec on NumPy
    and to forward."""
    from liquidssm.jax.nnx import _decoder

    _, cfg = CASES[name]
    m = _perturbed(name)
    u_np = _input(cfg, 3)
    u = jnp.asarray(u_np)
    jitted = _decoder(m._fn, cfg)[1]
    before = jitted._cache_size()
    s, ys = m.initial_state(B), []
    for t in range(L):
        y_t, s = m.step(u[:, t], s)
        ys.append(y_t)
    _perturbed(name, seed=2).step(u[:, 0], m.initial_state(B))
    assert jitted._cache_size() - before <= 1
    spec, params = m._spec, m.to_params()
    ref, r = [], spec.initial_state(cfg, B)
    for t in range(L):
        y_t, r = spec.step(cfg, params, r, u_np[:, t])
        ref.append(y_t)
    close(jnp.stack(ys, axis=1), np.stack(ref, 1), 1e-12)
    close(jnp.stack(ys, axis=1), m(u), 1e-10)
    for k in r:
        close(s[k], r[k], 1e-12)


def test_jitted_step_keeps_the_spec_errors_and_sees_new_parameters():
    m = _perturbed("mamba")
    u_t = jnp.asarray(_input(m.config))[:, 0]
    s = m.initial_state(B)
    with pytest.raises(ValueError, match=r"state\['ssm_state'\]: expected shape"):
        m.step(u_t, {**s, "ssm_state": jnp.zeros((B, 3, 3))})
    with pytest.raises(TypeError, match="u_t: expected a jax.Array"):
        m.step(np.asarray(u_t), s)  # not jitted: the spec's type check
    y0, _ = m.step(u_t, m.step(u_t, s)[1])
    m.params["A_log"][...] = m.params["A_log"][...] + 0.5
    s1 = m.step(u_t, s)[1]
    y1, _ = m.step(u_t, s1)
    want, _ = mamba.step(m.config, m.to_params(), {k: np.asarray(v) for k, v in s1.items()},
                         np.asarray(u_t))
    assert not np.allclose(np.asarray(y0), np.asarray(y1))
    close(y1, want, 1e-12)
    lm = _perturbed("mamba_lm")
    with pytest.raises(ValueError, match=r"token: expected token ids in \[0, 16\)"):
        lm.step(jnp.asarray([1, 16]), lm.initial_state(B))
