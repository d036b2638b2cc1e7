"""One definition, the same numbers in every framework: for every module class, liquidssm.torch.nn
and liquidssm.jax.nnx give the same weights for a seed, the same parameter names, the same
outputs (float64: 1e-12), checkpoints that load in the other framework, equal generation; an
empty batch and an array of the wrong library are refused alike. Needs torch and jax."""

import jax

jax.config.update("jax_enable_x64", True)  # float64, as tests/jax/conftest.py

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch")
pytest.importorskip("flax")
pytest.importorskip("safetensors")

from liquidssm.jax import nnx as JM  # noqa: E402
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
from liquidssm.torch import nn as TM  # noqa: E402

B, L = 2, 5
TOL = 1e-12  # float64: both frameworks run the same spec code; measured <= 4e-15

#: class name -> config; every class of both modules
CASES = {
    "S4D": s4d.Config(d_model=3, d_state=4),
    "S4": s4.Config(d_model=3, d_state=4, l_max=8),
    "LiquidS4": liquid_s4.Config(d_model=3, d_state=4, tied=False),
    "S5": s5.Config(d_model=3, d_state=4, blocks=1),
    "LiquidS5": liquid_s5.Config(d_model=3, d_state=4, blocks=1, tied=False),
    "Mamba": mamba.Config(d_model=4, d_state=3, d_conv=2),
    "LiquidMamba": liquid_mamba.Config(d_model=4, d_state=3, d_conv=2, ffn_expand=1.0),
    "S4Block": s4_block.Config(ssm=s4d.Config(d_model=3, d_state=4)),
    "S5Layer": s5_layer.Config(ssm=s5.Config(d_model=3, d_state=4, blocks=1)),
    "MambaBlock": mamba_block.Config(mixer=mamba.Config(d_model=4, d_state=3, d_conv=2)),
    "SequenceModel": sequence_model.Config(d_model=4, n_layers=2, layer="mamba",
                                           ssm=dict(d_state=3, d_conv=2), vocab_size=7,
                                           head="lm"),
    "MambaLM": mamba_lm.Config(d_model=4, n_layer=2, vocab_size=10,
                               ssm_cfg=dict(d_state=3, d_conv=2)),
}
NAMES = list(CASES)
TOKENS = ("SequenceModel", "MambaLM")


def test_both_modules_have_the_same_classes():
    assert sorted(TM.__all__) == sorted(JM.__all__ + ["param_groups"])
    assert sorted(CASES) == sorted(n for n in JM.__all__ if n != "SpecModule")


def _input(name, seed=0, batch=B):
    rng = np.random.default_rng(seed)
    cfg = CASES[name]
    if name in TOKENS:
        return rng.integers(0, cfg.vocab_size, (batch, L))
    return rng.normal(size=(batch, L, cfg.d_model))


def _pair(name, seed=5):
    cfg = CASES[name]
    return (getattr(TM, name)(cfg, seed=seed, dtype=torch.float64),
            getattr(JM, name)(cfg, seed=seed, dtype=jnp.float64))


def _np(x):
    return x.detach().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def close(a, b, tol=TOL):
    np.testing.assert_allclose(_np(a), _np(b), rtol=tol, atol=tol)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_weights_names_and_outputs(name):
    t, j = _pair(name)
    assert sorted(t.state_dict()) == sorted(j.to_params())  # one naming
    pt, pj = t.to_params(), j.to_params()
    for k in pt:
        np.testing.assert_array_equal(pt[k], pj[k], err_msg=k)  # both are the spec's init
    u = _input(name)
    close(t(torch.as_tensor(u)), j(jnp.asarray(u)))
    y_t, s_t = t.step(torch.as_tensor(u[:, 0]), t.initial_state(B))
    y_j, s_j = j.step(jnp.asarray(u[:, 0]), j.initial_state(B))
    close(y_t, y_j)
    assert sorted(s_t) == sorted(s_j)
    for k in s_t:
        close(s_t[k], s_j[k])


@pytest.mark.parametrize("name", NAMES)
def test_checkpoints_move_between_frameworks(name, tmp_path):
    t, j = _pair(name, seed=2)
    u = _input(name, seed=1)
    t.save_pretrained(tmp_path / "torch", dtype=np.float64)
    from_t = getattr(JM, name).from_pretrained(tmp_path / "torch", dtype=jnp.float64)
    close(from_t(jnp.asarray(u)), t(torch.as_tensor(u)))
    j.save_pretrained(tmp_path / "jax")  # float32 storage, the default
    from_j = getattr(TM, name).from_pretrained(tmp_path / "jax", dtype=torch.float64)
    back = getattr(JM, name).from_pretrained(tmp_path / "jax", dtype=jnp.float64)
    close(from_j(torch.as_tensor(u)), back(jnp.asarray(u)))
    for k, v in from_j.to_params().items():  # the float32 rounding of the weights, no more
        np.testing.assert_array_equal(v, j.to_params()[k].astype(np.float32))


def test_from_pretrained_refuses_another_class(tmp_path):
    TM.S4D(CASES["S4D"]).save_pretrained(tmp_path)
    with pytest.raises(TypeError, match="path: .* holds a liquidssm.spec.s4d.Config, expected"):
        JM.Mamba.from_pretrained(tmp_path)


@pytest.mark.parametrize("name", TOKENS)
def test_generate_is_equal_between_frameworks(name):
    t, j = _pair(name, seed=4)
    prompt = _input(name, seed=3)[:, :3]
    g_t = t.generate(torch.as_tensor(prompt), 6)
    g_j = j.generate(jnp.asarray(prompt), 6)
    np.testing.assert_array_equal(_np(g_t), _np(g_j))
    s_t = t.generate(torch.as_tensor(prompt), 6, temperature=0.8, top_k=4, seed=1)
    s_j = j.generate(jnp.asarray(prompt), 6, temperature=0.8, top_k=4, seed=1)
    np.testing.assert_array_equal(_np(s_t), _np(s_j))  # host sampling, the same draws


@pytest.mark.parametrize("name", NAMES)
def test_empty_batch_and_wrong_library_are_refused_alike(name):
    cfg = CASES[name]
    t, j = _pair(name)
    arg = "tokens" if name in TOKENS else "u"
    empty = _input(name, batch=0)
    spec = t._spec
    for run in (lambda: spec.forward(cfg, spec.init(cfg, 0), empty),  # the numpy backend
                lambda: t(torch.as_tensor(empty)), lambda: j(jnp.asarray(empty))):
        with pytest.raises(ValueError, match=f"{arg}: expected batch >= 1"):
            run()
    u = _input(name)
    with pytest.raises(TypeError, match=f"{arg}: expected a torch.Tensor .* got jax"):
        t(jnp.asarray(u))
    with pytest.raises(TypeError, match=f"{arg}: expected a jax.Array .* got torch.Tensor"):
        j(torch.as_tensor(u))


# ------------------------------------------------------------------ transformers' Mamba

transformers = pytest.importorskip("transformers")
VOCAB = 30
# float32 transformers (CPU) against float64 here: measured 3.6e-6 on logits up to |5|
# (tests/torch/test_checkpoint_hf.py); 2e-5 leaves room for other CPUs' summation orders
ATOL = 2e-5


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.MambaConfig(vocab_size=VOCAB, hidden_size=8, state_size=4,
                                      num_hidden_layers=2, time_step_rank=2)
    model = transformers.MambaForCausalLM(config).eval()
    with torch.no_grad():  # off the structured init, so that a misplaced tensor shows
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("hf")
    model.save_pretrained(path)
    return model, path


def test_transformers_mamba_loads_in_both_frameworks(hf_dir):
    model, path = hf_dir
    tokens = np.random.default_rng(0).integers(0, VOCAB, (1, 6))
    with torch.no_grad():
        ref = model(torch.as_tensor(tokens)).logits.double().numpy()
        gen = model.generate(torch.as_tensor(tokens), do_sample=False, max_new_tokens=5,
                             min_new_tokens=0, eos_token_id=None, pad_token_id=0).numpy()
    t = TM.MambaLM.from_pretrained(path, dtype=torch.float64)
    j = JM.MambaLM.from_pretrained(path, dtype=jnp.float64)
    np.testing.assert_allclose(_np(t(torch.as_tensor(tokens))), ref, rtol=0, atol=ATOL)
    np.testing.assert_allclose(_np(j(jnp.asarray(tokens))), ref, rtol=0, atol=ATOL)
    np.testing.assert_array_equal(_np(t.generate(torch.as_tensor(tokens), 5)), gen)
    np.testing.assert_array_equal(_np(j.generate(jnp.asarray(tokens), 5)), gen)
