import math

import array_api_strict as xps
import numpy as np
import pytest
from liquidssm.spec import block, s4d

H, B, L = 4, 2, 6


def _numpy_block(params, u, mixer, prenorm, approximate_gelu=False):
    """The S4 block written out in plain NumPy from docs/spec/s4.md (independent of spec/):
    prenorm y = u + FF(mixer(LN(u))), postnorm y = LN(u + FF(mixer(u))),
    FF(z) = GLU(z W^T + b) applied after GELU, GLU([a, b]) = a / (1 + exp(-b)), LN eps 1e-5."""

    def ln(x):
        mu = x.mean(axis=-1, keepdims=True)
        var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * params["norm.weight"] + params["norm.bias"]

    def gelu(x):
        if approximate_gelu:
            return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
        return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))

    def ff(z):
        a = gelu(z) @ params["output_linear.weight"].T + params["output_linear.bias"]
        return a[..., :H] / (1 + np.exp(-a[..., H:]))

    return u + ff(mixer(ln(u))) if prenorm else ln(u + ff(mixer(u)))


def _torch_block(params, u, mixer, prenorm):
    """The same block from torch.nn modules (LayerNorm, GELU, Linear, GLU)."""
    torch = pytest.importorskip("torch")
    norm = torch.nn.LayerNorm(H, eps=1e-5, dtype=torch.float64)
    lin = torch.nn.Linear(H, 2 * H, dtype=torch.float64)
    with torch.no_grad():
        norm.weight.copy_(torch.from_numpy(params["norm.weight"]))
        norm.bias.copy_(torch.from_numpy(params["norm.bias"]))
        lin.weight.copy_(torch.from_numpy(params["output_linear.weight"]))
        lin.bias.copy_(torch.from_numpy(params["output_linear.bias"]))
        x = torch.from_numpy(u)
        ff = lambda z: torch.nn.functional.glu(lin(torch.nn.functional.gelu(z)), dim=-1)  # noqa: E731
        mix = lambda z: torch.from_numpy(mixer(z.numpy()))  # noqa: E731
        y = x + ff(mix(norm(x))) if prenorm else norm(x + ff(mix(x)))
    return y.numpy()


def _params(seed=0):
    p = block.init(H, seed)
    rng = np.random.default_rng(seed + 1)
    p["norm.weight"] = rng.uniform(0.5, 1.5, H)
    p["norm.bias"] = rng.normal(size=H)
    return p


@pytest.mark.parametrize("approximate_gelu", [False, True])
@pytest.mark.parametrize("prenorm", [True, False])
def test_block_matches_numpy_oracle(prenorm, approximate_gelu):
    p = _params()
    u = 2 * np.random.default_rng(2).normal(size=(B, L, H))
    mixer = lambda x: np.cumsum(x, axis=1) * 0.7  # noqa: E731  (any sequence map)
    y = block.forward(p, u, mixer, prenorm=prenorm, approximate_gelu=approximate_gelu)
    np.testing.assert_allclose(y, _numpy_block(p, u, mixer, prenorm, approximate_gelu),
                               rtol=0, atol=1e-12)
    # single steps (batch, H) go through the same maps
    y_t = block.forward(p, u[:, 0], lambda x: 0.7 * x, prenorm=prenorm,
                        approximate_gelu=approximate_gelu)
    np.testing.assert_allclose(
        y_t, _numpy_block(p, u[:, 0], lambda x: 0.7 * x, prenorm, approximate_gelu),
        rtol=0, atol=1e-12)


def test_flags_must_be_bools():
    p, u = _params(), np.zeros((B, L, H))
    for bad in (1, 0, None, "yes", np.True_):
        with pytest.raises(TypeError, match=r"prenorm: expected a bool, got"):
            block.forward(p, u, lambda x: x, prenorm=bad)
        with pytest.raises(TypeError, match=r"prenorm: expected a bool, got"):
            block.residual(p, u, lambda x: x, prenorm=bad)
        with pytest.raises(TypeError, match=r"approximate_gelu: expected a bool, got"):
            block.forward(p, u, lambda x: x, approximate_gelu=bad)
        with pytest.raises(TypeError, match=r"approximate_gelu: expected a bool, got"):
            block.feedforward(p, u, approximate_gelu=bad)


@pytest.mark.parametrize("prenorm", [True, False])
def test_block_matches_torch_modules(prenorm):
    p = _params()
    u = np.random.default_rng(2).normal(size=(B, L, H))
    mixer = lambda x: np.cumsum(x, axis=1) * 0.7  # noqa: E731  (any sequence map)
    y = block.forward(p, u, mixer, prenorm=prenorm)
    np.testing.assert_allclose(y, _torch_block(p, u, mixer, prenorm), rtol=0, atol=1e-12)


def test_init_shapes_and_ranges():
    p = block.init(H, seed=3)
    assert {k: v.shape for k, v in p.items()} == {
        "norm.weight": (H,), "norm.bias": (H,),
        "output_linear.weight": (2 * H, H), "output_linear.bias": (2 * H,),
    }
    np.testing.assert_array_equal(p["norm.weight"], 1.0)
    np.testing.assert_array_equal(p["norm.bias"], 0.0)
    assert np.max(np.abs(p["output_linear.weight"])) <= 1 / np.sqrt(H)
    assert np.array_equal(block.init(H, seed=3)["output_linear.bias"], p["output_linear.bias"])


@pytest.mark.parametrize("prenorm", [True, False])
def test_block_with_s4d_streams_state(prenorm):
    cfg = s4d.Config(H, 4)
    params = {**_params(), **block.with_prefix(s4d.init(cfg, 1), "ssm.")}
    ssm = block.strip_prefix(params, "ssm.")
    assert set(ssm) == set(s4d.init(cfg))
    u = np.random.default_rng(4).normal(size=(B, L, H))

    def run(x, state):
        mixer = lambda z: s4d.forward(cfg, ssm, z, state=state, return_state=True)  # noqa: E731
        return block.forward(params, x, mixer, prenorm=prenorm)

    y, final = run(u, None)
    np.testing.assert_allclose(
        y, block.forward(params, u, lambda z: s4d.forward(cfg, ssm, z), prenorm=prenorm),
        rtol=0, atol=0,
    )
    y1, s1 = run(u[:, :2], None)
    y2, s2 = run(u[:, 2:], s1)
    np.testing.assert_allclose(np.concatenate([y1, y2], 1), y, rtol=0, atol=1e-12)
    state, ys = s4d.initial_state(cfg, B), []
    for t in range(L):
        mixer = lambda z, st=state: s4d.step(cfg, ssm, st, z)  # noqa: E731
        y_t, state = block.forward(params, u[:, t], mixer, prenorm=prenorm)
        ys.append(y_t)
    np.testing.assert_allclose(np.stack(ys, 1), y, rtol=0, atol=1e-12)
    np.testing.assert_allclose(state["x"], final["x"], rtol=0, atol=1e-12)


def test_bad_params_are_named():
    p = _params()
    u = np.zeros((B, L, H))
    with pytest.raises(ValueError, match="params: expected an entry 'norm.bias'"):
        block.forward({k: v for k, v in p.items() if k != "norm.bias"}, u, lambda x: x)
    with pytest.raises(ValueError, match=r"params\['output_linear.weight'\]: expected shape"):
        block.forward({**p, "output_linear.weight": np.zeros((H, H))}, u, lambda x: x)
    with pytest.raises(TypeError, match="u: expected an array"):
        block.forward(p, [1.0, 2.0], lambda x: x)


def test_array_api_strict_matches_numpy():
    cfg = s4d.Config(H, 4)
    p, ssm = _params(), s4d.init(cfg, 2)
    u = np.random.default_rng(5).normal(size=(B, L, H))
    y = block.forward(p, u, lambda z: s4d.forward(cfg, ssm, z), approximate_gelu=True)
    ps = {k: xps.asarray(v) for k, v in p.items()}
    ss = {k: xps.asarray(v) for k, v in ssm.items()}
    ys = block.forward(ps, xps.asarray(u), lambda z: s4d.forward(cfg, ss, z),
                       approximate_gelu=True)
    np.testing.assert_allclose(np.asarray(ys), y, rtol=0, atol=1e-12)
