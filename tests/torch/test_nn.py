"""liquidssm.torch.nn: the module classes == the bound functions == the spec (float64)."""

import liquidssm.torch as lt
import numpy as np
import pytest
import torch
from liquidssm._modules import StepState
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
from liquidssm.spec._common import shapes_of
from liquidssm.torch import nn as M

F64 = torch.float64
B, L = 2, 6

CASES = {
    "s4d": (M.S4D, s4d.Config(d_model=3, d_state=4)),
    "s4": (M.S4, s4.Config(d_model=3, d_state=4, l_max=16)),
    "liquid_s4": (M.LiquidS4, liquid_s4.Config(d_model=3, d_state=4, tied=False)),
    "liquid_s4_pb": (M.LiquidS4, liquid_s4.Config(d_model=3, d_state=4, liquid_kernel="pb")),
    "s5": (M.S5, s5.Config(d_model=3, d_state=4, blocks=1)),
    "liquid_s5": (M.LiquidS5, liquid_s5.Config(d_model=3, d_state=4, blocks=1, tied=False,
                                                lcontract="tanh")),
    "mamba": (M.Mamba, mamba.Config(d_model=4, d_state=3)),
    "liquid_mamba": (M.LiquidMamba, liquid_mamba.Config(d_model=4, d_state=3, ffn_expand=1.0,
                                                        tied=False)),
    "s4_block": (M.S4Block, s4_block.Config(ssm=liquid_s4.Config(d_model=3, d_state=4))),
    "s4_block_post": (M.S4Block, s4_block.Config(ssm=s4d.Config(d_model=3, d_state=4),
                                                 prenorm=False)),
    "s5_layer": (M.S5Layer, s5_layer.Config(ssm=liquid_s5.Config(d_model=3, d_state=4,
                                                                 blocks=1),
                                            activation="full_glu")),
    "mamba_block": (M.MambaBlock, mamba_block.Config(mixer=mamba.Config(d_model=4, d_state=3))),
    "seq_pool": (M.SequenceModel, sequence_model.Config(
        d_model=3, n_layers=2, layer="s4d", ssm=dict(d_state=4), d_input=2, d_output=5)),
    "seq_s5": (M.SequenceModel, sequence_model.Config(
        d_model=3, n_layers=2, layer="s5", ssm=dict(d_state=4, blocks=1), d_input=2,
        head="sequence", d_output=3)),
    "seq_lm": (M.SequenceModel, sequence_model.Config(
        d_model=4, n_layers=2, layer="mamba", ssm=dict(d_state=3), vocab_size=7, head="lm")),
    "mamba_lm": (M.MambaLM, mamba_lm.Config(d_model=4, n_layer=2, vocab_size=10,
                                            ssm_cfg={"d_state": 3})),
}
STREAMING = [k for k in CASES if k not in ("liquid_s4_pb", "seq_pool")]


def _spec(cls):
    return cls._spec


def _tokens(config):
    return getattr(_spec_of(config), "takes_tokens", lambda c: False)(config)


def _spec_of(config):
    import importlib

    return importlib.import_module(type(config).__module__)


def _input(config, seed=0, length=L):
    rng = np.random.default_rng(seed)
    if _tokens(config):
        return rng.integers(0, config.vocab_size, (B, length))
    width = getattr(config, "d_input", None) or config.d_model
    return rng.standard_normal((B, length, width))


def _perturb(params, seed=1, scale=0.05):
    """Random offsets on every parameter, so that no structure of the init hides a bug
    (batch-norm variances stay positive)."""
    rng = np.random.default_rng(seed)
    out = {k: v + scale * rng.standard_normal(v.shape) for k, v in params.items()}
    return {k: np.abs(v) if k.endswith("norm_var") else v for k, v in out.items()}


def _module(key, perturb=True):
    cls, config = CASES[key]
    if not perturb:
        return cls(config, seed=3, dtype=F64)
    return cls.from_params(config, _perturb(_spec(cls).init(config, 3)), dtype=F64)


def _np(t):
    return t.detach().numpy()


def _cat(ys):
    return torch.stack(ys, dim=1)


# ------------------------------------------------------------------ init and names


@pytest.mark.parametrize("key", list(CASES))
def test_init_is_the_spec_init_under_the_spec_names(key):
    cls, config = CASES[key]
    m = _module(key, perturb=False)
    ref = _spec(cls).init(config, 3)
    assert sorted(m.state_dict()) == sorted(ref) == sorted(shapes_of(_spec(cls), config))
    got = m.to_params()
    for k in ref:
        assert got[k].dtype == np.float64
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
    assert cls(config).spec_params()[next(iter(ref))].dtype == torch.float32  # the default


def test_mamba_names_and_layouts_are_mamba_ssm_names():
    m = M.Mamba(d_model=4)
    assert sorted(m.state_dict()) == sorted(
        ["in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight",
         "dt_proj.bias", "A_log", "D", "out_proj.weight"])
    assert m.conv1d.weight.shape == (8, 1, 4)  # nn.Conv1d's layout
    lm = M.MambaLM(d_model=4, n_layer=1, vocab_size=10)
    assert "backbone.layers.0.mixer.in_proj.weight" in lm.state_dict()
    assert "lm_head.weight" not in lm.state_dict()  # tied: the spec has no copy
    untied = M.MambaLM(d_model=4, n_layer=1, vocab_size=10, tie_embeddings=False)
    assert untied.lm_head.weight.shape == (16, 4)  # the padded vocabulary


def test_batch_norm_statistics_are_buffers():
    m = _module("s5_layer")
    assert {n for n, _ in m.named_buffers()} == {"norm_mean", "norm_var"}
    assert "norm_mean" not in dict(m.named_parameters())
    seq = _module("seq_s5")
    assert {n for n, _ in seq.named_buffers()} == {
        f"layers.{i}.norm_{s}" for i in range(2) for s in ("mean", "var")}


# ------------------------------------------------------------------ module == spec


@pytest.mark.parametrize("key", list(CASES))
def test_module_equals_bound_function_and_spec(key):
    cls, config = CASES[key]
    m = _module(key)
    u = _input(config)
    y = m(torch.tensor(u))
    bound = getattr(lt, _spec(cls).__name__.rsplit(".", 1)[-1])
    np.testing.assert_array_equal(_np(y), _np(bound.forward(config, m.spec_params(),
                                                            torch.tensor(u))))
    assert y.dtype == F64
    # torch's FFT / scans / erf against the spec's loops in float64: measured <= 3e-15
    np.testing.assert_allclose(_np(y), _spec(cls).forward(config, m.to_params(), u),
                               rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("key", STREAMING)
def test_step_and_chunks_equal_forward(key):
    _, config = CASES[key]
    m = _module(key)
    u = torch.tensor(_input(config, seed=2))
    y, last = m(u, return_state=True)
    state, ys = m.initial_state(B), []
    for t in range(L):
        y_t, state = m.step(u[:, t], state)
        ys.append(y_t)
    # S4's conv path (Cauchy kernel) vs its dense recurrence: measured 2.3e-15 in float64
    np.testing.assert_allclose(_np(_cat(ys)), _np(y), rtol=1e-10, atol=1e-12)
    assert sorted(state) == sorted(last)
    for k in last:
        np.testing.assert_allclose(_np(state[k]), _np(last[k]), rtol=1e-10, atol=1e-12)
    first, s = m(u[:, :4], return_state=True)
    rest, _ = m(u[:, 4:], state=s, return_state=True)
    np.testing.assert_allclose(_np(torch.cat([first, rest], 1)), _np(y), rtol=1e-10,
                               atol=1e-12)


def test_initial_state_dtype_and_device():
    m = M.S4D(d_model=3, d_state=4)  # float32
    assert m.initial_state(B)["x"].dtype == torch.complex64
    assert M.S4D(d_model=3, d_state=4, dtype=torch.bfloat16).initial_state(B)["x"].dtype == \
        torch.complex64  # bf16 parameters compute in float32
    assert _module("mamba").initial_state(B)["ssm_state"].dtype == F64


def test_s5_timesteps_pass_through():
    m = _module("s5")
    u = _input(m.config)
    tau = np.random.default_rng(4).uniform(0.5, 2.0, (B, L))
    y = m(torch.tensor(u), timesteps=torch.tensor(tau))
    np.testing.assert_allclose(_np(y), s5.forward(m.config, m.to_params(), u, timesteps=tau),
                               rtol=1e-9, atol=1e-10)


def test_kernel_matches_spec():
    m = _module("s4d")
    np.testing.assert_allclose(_np(m.kernel(7)), s4d.kernel(m.config, m.to_params(), 7),
                               rtol=1e-12, atol=1e-12)
    assert not hasattr(M.Mamba, "kernel")


# ------------------------------------------------------------------ dtypes and gradients


def test_low_precision_input_computes_in_float32():
    m = M.S4Block(s4_block.Config(ssm=s4d.Config(d_model=3, d_state=4)))  # float32 weights
    u = torch.tensor(_input(m.config), dtype=torch.float32)
    y32 = m(u)
    y16 = m(u.to(torch.bfloat16))
    assert y32.dtype == torch.float32 and y16.dtype == torch.bfloat16
    # bf16 rounding of the input and output (rel 2^-8, |y| ~ 1): measured max error 6.5e-3
    np.testing.assert_allclose(_np(y16.float()), _np(y32), rtol=0, atol=2e-2)
    lm = M.MambaLM(d_model=4, n_layer=1, vocab_size=10, dtype=torch.bfloat16)
    assert lm(torch.tensor([[1, 2]])).dtype == torch.bfloat16  # tokens: the parameters' dtype


@pytest.mark.parametrize("key", ["s4", "s4_block", "s5_layer", "liquid_mamba", "seq_lm",
                                 "mamba_lm"])
def test_gradients_reach_every_parameter(key):
    _, config = CASES[key]
    m = _module(key)
    m(torch.tensor(_input(config, seed=5))).square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


# ------------------------------------------------------------------ params and errors


@pytest.mark.parametrize("key", ["s4d", "s5_layer", "mamba_lm"])
def test_from_params_round_trip(key):
    cls, config = CASES[key]
    params = _perturb(_spec(cls).init(config, 0), seed=7)
    m = cls.from_params(config, params, dtype=F64)
    back = m.to_params()
    assert sorted(back) == sorted(params)
    for k in params:
        np.testing.assert_array_equal(back[k], params[k])
    again = cls.from_params(config, m.spec_params(), dtype=F64)  # tensors are accepted too
    u = torch.tensor(_input(config))
    np.testing.assert_array_equal(_np(again(u)), _np(m(u)))


def test_bad_params_are_named():
    params = M.S4D(d_model=3, d_state=4).to_params()
    config = s4d.Config(d_model=3, d_state=4)
    with pytest.raises(ValueError, match=r"params: .*missing \['D'\] and unexpected \['E'\]"):
        M.S4D.from_params(config, {**{k: v for k, v in params.items() if k != "D"},
                                   "E": np.zeros(3)})
    with pytest.raises(ValueError, match=r"params\['D'\]: expected shape \(3,\), got shape"):
        M.S4D.from_params(config, {**params, "D": np.zeros(4)})
    with pytest.raises(TypeError, match="params: expected a dict"):
        M.S4D.from_params(config, [1, 2])
    # integer arrays: a TypeError naming the parameter (torch could not make them trainable)
    with pytest.raises(TypeError, match=r"params\['log_dt'\]: expected a real floating dtype"):
        M.S4D.from_params(config, {k: v.astype(np.int64) for k, v in params.items()})
    with pytest.raises(TypeError, match=r"params\['D'\]: expected a real floating dtype"):
        M.S4D.from_params(config, {**params, "D": torch.zeros(3, dtype=torch.int32)})


def test_bad_config_and_inputs_are_named():
    with pytest.raises(TypeError, match="config: expected liquidssm.spec.s4d.Config"):
        M.S4D(s5.Config(d_model=3, d_state=4, blocks=1))
    with pytest.raises(TypeError, match="config: expected either a config or its fields"):
        M.S4D(s4d.Config(d_model=3), d_state=4)
    with pytest.raises(ValueError, match="d_state"):
        M.S4D(d_model=3, d_state=3)
    with pytest.raises(ValueError, match="seed"):
        M.S4D(d_model=3, seed=-1)
    m = M.S4D(d_model=3, d_state=4)
    with pytest.raises(TypeError, match=r"u: expected a torch.Tensor .*numpy.ndarray"):
        m(np.zeros((B, L, 3), np.float32))
    with pytest.raises(ValueError, match="u: expected batch >= 1"):
        m(torch.zeros(0, L, 3))
    with pytest.raises(ValueError, match="initial_state: head='pool'"):
        _module("seq_pool").initial_state(B)
    with pytest.raises(ValueError, match="generate: expected a language model"):
        _module("seq_pool").generate(torch.zeros(B, 2, dtype=torch.long), 2)


# ------------------------------------------------------------------ param groups


@pytest.mark.parametrize("key,ssm", [
    ("s4d", {"log_dt", "log_A_real", "A_imag", "B_re", "B_im"}),
    ("s4", {"log_dt", "log_Lambda_real", "Lambda_imag", "P_re", "P_im", "B_re", "B_im"}),
    ("liquid_s4", {"log_dt", "log_A_real", "A_imag", "B_re", "B_im", "BL_re", "BL_im"}),
    ("s5", {"Lambda_re", "Lambda_im", "B_re", "B_im", "log_step"}),
    ("mamba", {"A_log", "D"}),
    ("liquid_mamba", {"mixer.A_log", "mixer.D"}),
    ("s4_block_post", {f"ssm.{k}" for k in ("log_dt", "log_A_real", "A_imag", "B_re",
                                            "B_im")}),
    ("s5_layer", {"Lambda_re", "Lambda_im", "B_re", "B_im", "log_step"}),
    ("mamba_lm", {f"backbone.layers.{i}.mixer.{k}" for i in range(2) for k in ("A_log", "D")}),
    ("seq_s5", {f"layers.{i}.{k}" for i in range(2)
                for k in ("Lambda_re", "Lambda_im", "B_re", "B_im", "log_step")}),
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
    assert M.param_groups(m, 1e-2)[1]["lr"] == 1e-2  # ssm_lr defaults to lr
    torch.optim.AdamW(groups).step()  # accepted by an optimizer


# ------------------------------------------------------------------ generate


def test_greedy_generate_is_argmax_of_forward():
    m = _module("mamba_lm")
    prompt = torch.tensor(_input(m.config)[:, :3])
    out = m.generate(prompt, 4)
    assert out.shape == (B, 7) and out.dtype == torch.int64
    assert torch.equal(out[:, :3], prompt)
    for t in range(3, 7):  # each new id: argmax over the real vocabulary of forward(prefix)
        logits = m(out[:, :t])[:, -1, :m.config.vocab_size]
        assert torch.equal(out[:, t], logits.argmax(-1))
    # the model is causal: forward(out)[:, t - 1] is the same prediction
    assert torch.equal(out[:, 3:], m(out)[:, 2:-1, :m.config.vocab_size].argmax(-1))
    assert torch.equal(m.generate(prompt, 0), prompt)


def test_sampled_generate_is_seeded_and_never_emits_padded_ids():
    m = _module("mamba_lm")  # vocab 10, padded to 16
    prompt = torch.tensor(_input(m.config)[:, :2])
    a = m.generate(prompt, 40, temperature=1e6, seed=3)  # nearly uniform draws
    assert torch.equal(a, m.generate(prompt, 40, temperature=1e6, seed=3))
    assert not torch.equal(a, m.generate(prompt, 40, temperature=1e6, seed=4))
    assert int(a.max()) < 10 and len(set(a[:, 2:].flatten().tolist())) == 10
    assert torch.equal(m.generate(prompt, 5, temperature=0.7, top_k=1), m.generate(prompt, 5))
    with pytest.raises(ValueError, match="temperature"):
        m.generate(prompt, 2, temperature=-1.0)
    with pytest.raises(TypeError, match="tokens: expected an integer dtype"):
        m.generate(prompt.double(), 2)


# ------------------------------------------------------------------ torch.compile


def test_torch_compile_matches_eager():
    """Whole-graph capture (fullgraph: no graph break) of S4D, whose forward runs complex
    tensors and FFTs. The aot_eager backend keeps the test fast on CPU; inductor also runs
    (measured 130 s to compile on 2 loaded cores, equal output; it falls back to eager kernels
    for complex operators)."""
    torch._dynamo.reset()
    m = _module("s4d")
    u = torch.tensor(_input(m.config))
    compiled = torch.compile(m, backend="aot_eager", fullgraph=True)
    y = compiled(u)
    np.testing.assert_allclose(_np(y), _np(m(u)), rtol=1e-12, atol=1e-12)
    (g,) = torch.autograd.grad(y.square().sum(), m.log_dt)
    (ge,) = torch.autograd.grad(m(u).square().sum(), m.log_dt)
    np.testing.assert_allclose(_np(g), _np(ge), rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ the decode fast path
# (liquidssm.torch._decode): the unchecked _step equals the spec's checked step and forward for
# every streaming class, runs without the checked step once the parameters and the state are
# known, still refuses a bad foreign state with the spec's error; a parameter change
# invalidates the prepared parameters.
#: streaming cases whose every layer has a spec _step (S4 / Liquid-S4 have the checked step only)
FAST = [k for k in STREAMING if k not in ("s4", "liquid_s4", "s4_block")]


def _bound(m):
    return getattr(lt, m._spec.__name__.rsplit(".", 1)[-1])


@pytest.fixture
def checked_calls(monkeypatch):
    """Counts calls of the checked (bound spec) step, per spec module name."""
    calls = {}

    def spy(m):
        bound = _bound(m)
        original = bound.step

        def step(*args, **kwargs):
            calls[m] = calls.get(m, 0) + 1
            return original(*args, **kwargs)

        monkeypatch.setattr(bound, "step", step)
        return lambda: calls.get(m, 0)

    return spy


def _steps(m, u, state):
    ys = []
    for t in range(u.shape[1]):
        y, state = m.step(u[:, t], state)
        ys.append(y)
    return torch.stack(ys, 1), state


@pytest.mark.parametrize("key", FAST)
def test_fast_step_equals_spec_step_and_forward(key, checked_calls):
    m = _module(key)
    spec, config = m._spec, m.config
    u_np = _input(config, seed=3)
    u = torch.tensor(u_np)
    count = checked_calls(m)
    with torch.no_grad():
        ys, state = _steps(m, u, m.initial_state(B))
        y, last = m(u, return_state=True)
    assert count() == 0, "the fast path fell back to the checked step"
    assert type(state) is StepState
    # the spec on NumPy float64, step by step
    params, s, ref = m.to_params(), spec.initial_state(config, B), []
    for t in range(L):
        y_t, s = spec.step(config, params, s, u_np[:, t])
        ref.append(y_t)
    np.testing.assert_allclose(_np(ys), np.stack(ref, 1), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(_np(ys), _np(y), rtol=1e-10, atol=1e-12)
    for k in last:
        np.testing.assert_allclose(_np(state[k]), _np(last[k]), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(_np(state[k]), s[k], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("key", ["s4", "s4_block"])
def test_no_fast_path_runs_the_checked_step(key, checked_calls):
    m = _module(key)
    count = checked_calls(m)
    u = torch.tensor(_input(m.config, seed=3))
    _steps(m, u, m.initial_state(B))
    assert count() == L


def test_foreign_state_is_checked_once_then_trusted(checked_calls):
    m = _module("mamba")
    count = checked_calls(m)
    u = torch.tensor(_input(m.config, seed=4))
    with torch.no_grad():
        _, prompt_state = m(u[:, :2], return_state=True)  # a plain dict: foreign
        assert type(prompt_state) is dict
        _, state = _steps(m, u[:, 2:], prompt_state)
    assert count() == 1 and type(state) is StepState
    other = _module("mamba")  # another module's StepState is foreign to m
    m.step(u[:, 0], other.initial_state(B))
    assert count() == 2


def test_bad_foreign_state_gets_the_spec_error():
    m = _module("mamba")
    u_t = torch.tensor(_input(m.config))[:, 0]
    good = m.initial_state(B)
    with pytest.raises(ValueError, match=r"state\['ssm_state'\]: expected shape"):
        m.step(u_t, {**good, "ssm_state": torch.zeros(B, 3, 3, dtype=F64)})
    with pytest.raises(TypeError, match=r"state\['conv_state'\]: expected a real floating"):
        m.step(u_t, {**good, "conv_state": torch.zeros(good["conv_state"].shape,
                                                       dtype=torch.int64)})
    with pytest.raises(ValueError, match=r"state: expected a key 'ssm_state'"):
        m.step(u_t, {"conv_state": good["conv_state"]})
    # a state of another batch is foreign for this input: the spec names the mismatch
    with pytest.raises(ValueError, match=r"state\['conv_state'\]: expected shape"):
        m.step(u_t, m.initial_state(B + 1))
    with pytest.raises(TypeError, match="read-only"):
        good["ssm_state"] = good["ssm_state"]
    assert type(dict(good)) is dict


def test_bad_inputs_take_the_checked_step():
    m = _module("mamba")
    state = m.initial_state(B)
    with pytest.raises(ValueError, match="u_t: expected shape"):
        m.step(torch.zeros(B, m.config.d_model + 1, dtype=F64), state)
    with pytest.raises(TypeError, match="u_t: expected a torch.Tensor"):
        m.step(np.zeros((B, m.config.d_model)), state)
    y, s = m.step(torch.zeros(B, m.config.d_model, dtype=torch.bfloat16), state)
    assert y.dtype == torch.bfloat16  # the dtype policy (the checked step)
    lm = _module("mamba_lm")
    s = lm.initial_state(B)
    lm.step(torch.tensor([1, 2]), s)
    with pytest.raises(ValueError, match=r"token: expected token ids in \[0, 16\)"):
        lm.step(torch.tensor([1, 16]), s)


def _reference_step(m, u_t, state):
    """The checked step on the module's current parameters (a plain dict state)."""
    return _bound(m).step(m.config, m.spec_params(), dict(state), u_t)


@pytest.mark.parametrize("change", ["optimizer", "load_state_dict", "to"])
def test_parameter_changes_invalidate_the_prepared_parameters(change):
    m = _module("mamba_block")
    u = torch.tensor(_input(m.config, seed=5))
    with torch.no_grad():
        _, state = _steps(m, u[:, :3], m.initial_state(B))  # a nonzero state: A counts
        before, _ = m.step(u[:, 0], state)  # prepares the parameters
    if change == "optimizer":
        m(u).square().sum().backward()
        torch.optim.SGD(m.parameters(), lr=0.5).step()
    elif change == "load_state_dict":
        m.load_state_dict({k: v + 0.1 for k, v in m.state_dict().items()})
    else:
        m.to(torch.float32).to(F64)  # rounds every value to float32 (and back)
    with torch.no_grad():
        after, _ = m.step(u[:, 0], state)
        want, _ = _reference_step(m, u[:, 0], state)
    assert not torch.equal(after, before)
    np.testing.assert_allclose(_np(after), _np(want), rtol=1e-12, atol=1e-12)


@torch.no_grad()
def test_replaced_parameter_and_reset():
    m = _module("mamba")
    u_t = torch.tensor(_input(m.config))[:, 0]
    state = m.initial_state(B)
    m.step(u_t, state)
    m.D = torch.nn.Parameter(m.D.detach() + 1.0)  # a new tensor object
    np.testing.assert_allclose(_np(m.step(u_t, state)[0]),
                               _np(_reference_step(m, u_t, state)[0]), rtol=1e-12, atol=1e-12)
    m.D.data.copy_(m.D + 1.0)  # bypasses the version counter: not seen until reset
    m.reset_step_cache()
    np.testing.assert_allclose(_np(m.step(u_t, state)[0]),
                               _np(_reference_step(m, u_t, state)[0]), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("key", ["mamba", "liquid_mamba", "s5"])
def test_fast_step_gradients_equal_the_checked_step(key):
    m = _module(key)
    u_t = torch.tensor(_input(m.config, seed=6))[:, 0]
    state = m.initial_state(B)
    y, new = m.step(u_t, state)
    y, new = m.step(u_t, new)  # the second step reads a state made with autograd
    grads = torch.autograd.grad(y.square().sum(), list(m.parameters()), allow_unused=True)
    y0, s0 = _reference_step(m, u_t, state)
    y0, _ = _reference_step(m, u_t, s0)
    ref = torch.autograd.grad(y0.square().sum(), list(m.parameters()), allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    for g, r in zip(grads, ref):
        assert (g is None) == (r is None)
        if g is not None:
            np.testing.assert_allclose(_np(g), _np(r), rtol=1e-10, atol=1e-12)


def test_generate_uses_the_fast_path(checked_calls):
    m = _module("mamba_lm")
    count = checked_calls(m)
    prompt = torch.tensor(_input(m.config, length=3))
    out = m.generate(prompt, 5)
    assert out.shape == (B, 8) and count() == 1  # the prompt's state, once
    # equal to greedy decoding by the checked step
    logits, state = m(prompt, return_state=True)
    ids = [logits[:, -1, :10].argmax(-1)]
    for _ in range(4):
        logits, state = _bound(m).step(m.config, m.spec_params(), dict(state), ids[-1])
        ids.append(logits[:, :10].argmax(-1))
    assert torch.equal(out[:, 3:], torch.stack(ids, 1))


def test_cases_cover_every_streaming_class():
    classes = {CASES[k][0] for k in FAST}
    assert {M.S4D, M.S5, M.LiquidS5, M.Mamba, M.LiquidMamba, M.MambaBlock, M.S4Block,
            M.S5Layer, M.SequenceModel, M.MambaLM} <= classes
