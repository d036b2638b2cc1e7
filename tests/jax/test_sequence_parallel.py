"""Sequence-parallel scans (axis_name=, liquidssm.jax.parallel) and data-parallel training on 4
host devices equal the one-device results in float64.

XLA_FLAGS=--xla_force_host_platform_device_count=4 must be set before jax starts, and this
pytest process has jax imported already (conftest.py): each check runs this file as a script in
a subprocess (`python test_sequence_parallel.py CASE`), which prints its max errors and exits
non-zero when a check fails.
"""

import os
import subprocess
import sys

import pytest

pytest.importorskip("jax")

DEVICES = 4
TOL = 1e-10
CASES = ("diag_scan", "liquid_scan", "selective_scan", "liquid_selective_scan", "data_parallel",
         "fsdp", "models")


@pytest.mark.parametrize("case", CASES)
def test_four_devices_equal_one(case):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={DEVICES}",
               JAX_PLATFORMS="cpu", OMP_NUM_THREADS="1")
    env.pop("LIQUIDSSM_JAX_SCAN", None)
    r = subprocess.run([sys.executable, __file__, case], env=env, capture_output=True,
                       text=True, timeout=300)
    print(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{case}: ok" in r.stdout


# ---------------------------------------------------------------------------------------------
# The checks (run in the subprocess).


def _err(x, y):
    """Max |x - y| relative to max(1, max |y|), over two pytrees of arrays."""
    import jax
    import numpy as np

    errs = [float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / max(1.0, np.max(np.abs(b))))
            for a, b in zip(jax.tree.leaves(x), jax.tree.leaves(y), strict=True)]
    return max(errs)


def _compare(name, primitive, arrays, static, mesh):
    """Outputs and gradients (the vjp of a fixed random cotangent, wrt every array argument) of
    primitive on one device and sharded over the 4 devices of mesh axis 'seq' (one jit);
    returns the max error."""
    import jax
    import numpy as np
    from liquidssm.jax.parallel import shard_sequence

    sharded = shard_sequence(primitive, mesh, "seq")
    out = jax.eval_shape(lambda a: primitive(**a, **static), arrays)
    rng = np.random.default_rng(1)
    cotangent = jax.tree.map(lambda o: rng.standard_normal(o.shape).astype(o.dtype), out)

    def out_and_grads(f):
        y, vjp = jax.vjp(lambda a: f(**a, **static), arrays)
        return y, vjp(cotangent)

    one, many = jax.jit(lambda: (out_and_grads(primitive), out_and_grads(sharded)))()
    err = _err(many, one)
    print(f"{name}: max error {err:.2e} (outputs and grads of {sorted(arrays)})")
    assert err < TOL, name
    return err


def _randn(rng, shape, cplx=False):
    import jax.numpy as jnp

    x = rng.standard_normal(shape)
    if cplx:
        x = x + 1j * rng.standard_normal(shape)
    return jnp.asarray(x)


def _decay(rng, shape, cplx=False):
    """|a| < 1 (a stable recurrence), real or complex."""
    import jax.numpy as jnp
    import numpy as np

    a = rng.uniform(0.6, 0.99, shape)
    if cplx:
        a = a * np.exp(1j * rng.uniform(-0.5, 0.5, shape))
    return jnp.asarray(a)


def _check_length(primitive, arrays, static, mesh):
    """A length not divisible by the shard count is a clear ValueError."""
    from liquidssm.jax.parallel import shard_sequence

    try:
        shard_sequence(primitive, mesh, "seq")(**arrays, **static)
    except ValueError as e:
        assert "not divisible" in str(e), e
        return
    raise AssertionError("no ValueError for an indivisible length")


def check_diag_scan(mesh, rng):
    from liquidssm.jax import diag_scan

    b, L, S = 2, 32, (3, 4)
    cases = {
        "real": (dict(a=_decay(rng, (1, L) + S), b=_randn(rng, (b, L) + S)), {}),
        "real h0": (dict(a=_decay(rng, (b, L) + S), b=_randn(rng, (b, L) + S),
                         h0=_randn(rng, (b,) + S)), {}),
        "complex a, h0": (dict(a=_decay(rng, (b, L) + S, True),
                               b=_randn(rng, (b, L) + S, True),
                               h0=_randn(rng, (b,) + S, True)), {}),
        "reverse h0": (dict(a=_decay(rng, (b, L) + S), b=_randn(rng, (b, L) + S),
                            h0=_randn(rng, (b,) + S)), dict(reverse=True)),
    }
    for k, (arrays, static) in cases.items():
        _compare(f"diag_scan {k}", diag_scan, arrays, static, mesh)
    _check_length(diag_scan, dict(a=_decay(rng, (1, 30, 3)), b=_randn(rng, (b, 30, 3))), {},
                  mesh)


def check_liquid_scan(mesh, rng):
    from liquidssm.jax import liquid_scan

    b, L, S = 2, 32, (3, 4)
    for p, reverse, cplx, h0 in ((3, False, False, True), (3, True, True, False)):
        arrays = dict(a=_decay(rng, (b, L) + S, cplx), b=_randn(rng, (b, L) + S, cplx),
                      c=0.5 * _randn(rng, (1, L) + S, cplx))
        if h0:
            arrays["h0"] = _randn(rng, (b, p) + S, cplx)
        _compare(f"liquid_scan p={p} reverse={reverse} complex={cplx} h0={h0}", liquid_scan,
                 arrays, dict(degree=p, reverse=reverse), mesh)


def _selective_arrays(rng, b, d, n, L, form, cplx=False):
    """u, delta, A, B, C, D, z, delta_bias, initial_state for a selective scan; B, C constant
    (d, n), per step (b, n, L) or grouped (b, 2, n, L); complex A: interleaved (b, n, 2L)."""
    import jax.numpy as jnp
    import numpy as np

    A = -np.exp(rng.standard_normal((d, n)))
    if cplx:
        A = A + 1j * rng.standard_normal((d, n))
    shapes = {"const": (d, n), "step": (b, n, (2 if cplx else 1) * L), "group": (b, 2, n, L)}
    bc = shapes[form]
    return dict(u=_randn(rng, (b, d, L)), delta=0.5 * _randn(rng, (b, d, L)), A=jnp.asarray(A),
                B=_randn(rng, bc, cplx and form == "const"),
                C=_randn(rng, bc, cplx and form == "const"), D=_randn(rng, (d,)),
                z=_randn(rng, (b, d, L)), delta_bias=_randn(rng, (d,)),
                initial_state=_randn(rng, (b, d, n), cplx))


def check_selective_scan(mesh, rng):
    import jax
    import jax.numpy as jnp
    from jax.sharding import PartitionSpec as P
    from liquidssm.jax import selective_scan

    b, d, n, L = 2, 4, 3, 32  # d divisible by the 2 groups
    static = dict(delta_softplus=True, return_last_state=True)
    for form, cplx in (("const", False), ("group", False), ("step", True)):
        arrays = _selective_arrays(rng, b, d, n, L, form, cplx)
        _compare(f"selective_scan B, C {form} complex={cplx}", selective_scan, arrays, static,
                 mesh)
    _check_length(selective_scan, _selective_arrays(rng, b, d, n, 30, "step"), static, mesh)

    # Gradients taken inside the shard_map body (no initial state, no z, output only): the
    # replicated arguments' are per-shard partial sums, whose psum is the one-device gradient.
    arrays = _selective_arrays(rng, b, d, n, L, "const")
    del arrays["initial_state"], arrays["z"]
    timed = ("u", "delta")
    specs = {k: P(None, None, "seq") if k in timed else P() for k in arrays}
    w = jnp.asarray(rng.standard_normal((b, d, L)))

    def body(a, w):
        g = jax.grad(lambda a: jnp.sum(selective_scan(**a, delta_softplus=True,
                                                      axis_name="seq") * w))(a)
        return {k: v if k in timed else jax.lax.psum(v, "seq") for k, v in g.items()}

    inside = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(specs, P(None, None, "seq")),
                                   out_specs=specs, check_vma=False))(arrays, w)
    one = jax.grad(lambda a: jnp.sum(selective_scan(**a, delta_softplus=True) * w))(arrays)
    err = _err(inside, one)
    print(f"selective_scan grads inside shard_map, replicated ones psum'd: max error {err:.2e}")
    assert err < TOL


def check_liquid_selective_scan(mesh, rng):
    from liquidssm.jax import liquid_selective_scan

    b, d, n, L = 2, 4, 3, 32
    for form, p, phi in (("const", 3, "tanh"), ("step", 2, "lecun")):
        arrays = _selective_arrays(rng, b, d, n, L, form)
        arrays["initial_state"] = _randn(rng, (b, p, d, n))
        if form != "const":
            arrays["BL"] = 0.5 * _randn(rng, arrays["B"].shape)
        static = dict(delta_softplus=True, return_last_state=True, liquid_degree=p,
                      lcontract=phi)
        _compare(f"liquid_selective_scan p={p} B, C {form} {phi}", liquid_selective_scan,
                 arrays, static, mesh)


def check_data_parallel(mesh, rng):
    """A Mamba trained for a few SGD steps with the batch sharded over the 4 devices (jit,
    NamedSharding(mesh, P('seq'))) has the loss curve of one-device training."""
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P
    from liquidssm.jax.nnx import Mamba

    model = Mamba(d_model=8, d_state=4, dtype=jnp.float64)
    graphdef, params0, rest = nnx.split(model, nnx.Param, ...)
    x = jnp.asarray(rng.standard_normal((8, 16, 8)))  # (batch, length, d_model)
    target = jnp.asarray(rng.standard_normal((8, 16, 8)))

    def loss_fn(params, x, target):
        return jnp.mean((nnx.merge(graphdef, params, rest)(x) - target) ** 2)

    @jax.jit
    def step(params, x, target):
        loss, g = jax.value_and_grad(loss_fn)(params, x, target)
        return jax.tree.map(lambda p, g: p - 0.1 * g, params, g), loss

    def train(x, target):
        params, losses = params0, []
        for _ in range(4):
            params, loss = step(params, x, target)
            losses.append(float(loss))
        return losses

    one = train(x, target)
    batch = NamedSharding(mesh, P("seq"))
    xs, ts = jax.device_put(x, batch), jax.device_put(target, batch)
    assert len(xs.sharding.device_set) == 4
    many = train(xs, ts)
    err = max(abs(a - b) for a, b in zip(one, many, strict=True))
    print(f"data_parallel: losses {one} vs {many}, max error {err:.2e}")
    assert err < TOL and one[-1] < one[0]


def check_fsdp(mesh, rng):
    """Every nnx class of tests/jax/test_nnx.py's table, 3 SGD steps with its parameters sharded
    FSDP-style (liquidssm.jax.parallel.shard_params) and the batch sharded over the 4 devices:
    the one-device losses and parameters."""
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P
    from liquidssm.jax.parallel import shard_params
    from test_nnx import CASES, _perturbed

    worst, sharded_leaves = 0.0, 0
    for name, (_cls, config) in CASES.items():
        graphdef, params0, rest = nnx.split(_perturbed(name), nnx.Param, ...)
        width = getattr(config, "d_input", None) or getattr(config, "d_model", None)
        if getattr(config, "vocab_size", None):
            x = jnp.asarray(rng.integers(0, config.vocab_size, (DEVICES, 6)))
        else:
            x = jnp.asarray(rng.standard_normal((DEVICES, 6, width)))

        def loss_fn(params, x, graphdef=graphdef, rest=rest):
            return jnp.mean(nnx.merge(graphdef, params, rest)(x) ** 2)

        @jax.jit
        def step(params, x):
            loss, g = jax.value_and_grad(loss_fn)(params, x)
            return jax.tree.map(lambda p, g: p - 0.05 * g, params, g), loss

        def train(params, x):
            losses = []
            for _ in range(3):
                params, loss = step(params, x)
                losses.append(float(loss))
            return params, losses

        one_p, one = train(params0, x)
        sharded = shard_params(params0, mesh, "seq")
        sharded_leaves += sum(len(v.sharding.device_set) == DEVICES and not
                              v.sharding.is_fully_replicated for v in jax.tree.leaves(sharded))
        many_p, many = train(sharded, jax.device_put(x, NamedSharding(mesh, P("seq"))))
        err = max(max(abs(a - b) for a, b in zip(one, many, strict=True)), _err(many_p, one_p))
        assert one[-1] < one[0], (name, one)
        print(f"fsdp {name}: losses {one[0]:.6f} -> {one[-1]:.6f}, max error {err:.2e}")
        worst = max(worst, err)
    print(f"fsdp: {sharded_leaves} parameters sharded, max error {worst:.2e}")
    assert worst < TOL and sharded_leaves > len(CASES)


def _model_cases(rng):
    """name -> (nnx model (float64, parameters moved off their init), {input: (array, time axis
    or None)}, forward keywords); Mamba-family slices of 5 (> d_conv - 1 = 3) and of exactly 3."""
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from liquidssm.jax import nnx as lnn

    b, m, f64 = 2, 4, jnp.float64

    def perturbed(model):
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        params = jax.tree.map(lambda p: p + 0.1 * rng.standard_normal(p.shape), params)
        return nnx.merge(graphdef, params, rest)

    def u(L, width=m):
        return {"u": (_randn(rng, (b, L, width)), 1)}

    def mamba_state(d, K, n, p=None):
        ssm = (b, d, n) if p is None else (b, p, d, n)
        return {"state": {"conv_state": (_randn(rng, (b, d, K)), None),
                          "ssm_state": (_randn(rng, ssm), None)}}

    L = 3 * DEVICES  # slices of exactly the halo (the cases with states: of 5)
    out = {"Mamba L_slice=3": (perturbed(lnn.Mamba(d_model=m, d_state=3, dtype=f64)), u(L), {}),
           "LiquidMamba gated p=2 untied L_slice=3": (
               perturbed(lnn.LiquidMamba(d_model=m, d_state=3, liquid_degree=2, conv="gated",
                                         tied=False, lcontract="tanh", dtype=f64)), u(L), {})}
    L = 5 * DEVICES
    out["Mamba state in and out"] = (
        perturbed(lnn.Mamba(d_model=m, d_state=3, dtype=f64)),
        {**u(L), **mamba_state(2 * m, 4, 3)}, {"return_state": True})
    out["LiquidMamba state in and out"] = (
        perturbed(lnn.LiquidMamba(d_model=m, d_state=3, d_conv=3, dtype=f64)),
        {**u(L), **mamba_state(2 * m, 3, 3, 2)}, {"return_state": True})
    s5 = dict(d_model=m, d_state=8, blocks=2, dtype=f64)
    out["S5 state in and out, timesteps"] = (
        perturbed(lnn.S5(**s5)),
        {**u(L), "timesteps": (jnp.asarray(rng.uniform(0.5, 1.5, (b, L))), 1),
         "state": {"x": (_randn(rng, (b, 4), True), None)}}, {"return_state": True})
    out["S5 bidirectional"] = (perturbed(lnn.S5(**s5, bidirectional=True)), u(L), {})
    out["LiquidS5 state in and out"] = (
        perturbed(lnn.LiquidS5(**s5, lcontract="tanh")),
        {**u(L), "state": {"x": (_randn(rng, (b, 2, 4), True), None)}}, {"return_state": True})
    out["LiquidS5 bidirectional untied"] = (
        perturbed(lnn.LiquidS5(**s5, tied=False, bidirectional=True)), u(L), {})
    out["MambaLM 2 layers untied, state out"] = (
        perturbed(lnn.MambaLM(d_model=m, n_layer=2, vocab_size=11, tie_embeddings=False,
                              ssm_cfg={"d_state": 3}, dtype=f64)),
        {"tokens": (jnp.asarray(rng.integers(0, 11, (b, L))), 1)}, {"return_state": True})
    out["SequenceModel s5 layer_norm 2 layers pool"] = (
        perturbed(lnn.SequenceModel(d_model=m, n_layers=2, layer="s5",
                                    ssm={"d_state": 8, "blocks": 2}, block={"norm": "layer"},
                                    d_input=3, d_output=2, head="pool", dtype=f64)),
        u(L, 3), {})
    return out


def _check_model(mesh, rng, name, model, inputs, kw):
    """One case of check_models: the max error of the sharded call's outputs and vjp."""
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from jax.sharding import PartitionSpec as P

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    arrays = jax.tree.map(lambda v: v[0], inputs, is_leaf=lambda v: isinstance(v, tuple))
    specs = jax.tree.map(lambda v: P() if v[1] is None else _spec_at(v[0].ndim, v[1]),
                         inputs, is_leaf=lambda v: isinstance(v, tuple))
    floating = {k: v for k, v in arrays.items() if k != "tokens"}
    ints = {k: v for k, v in arrays.items() if k == "tokens"}

    def call(params, floating, ints, axis_name=None):
        x = {**floating, **ints}
        first = x.pop("u", None)
        first = x.pop("tokens") if first is None else first
        out = nnx.merge(graphdef, params, rest)(first, **x, **kw, axis_name=axis_name)
        return tuple(jax.tree.leaves(out))

    outs = jax.eval_shape(lambda p, f: call(p, f, ints), params, floating)
    # y is split along time unless it is the pool head's (batch, d_output); states replicated
    out_specs = tuple(_spec_at(o.ndim, 1) if i == 0 and o.ndim == 3 else P()
                      for i, o in enumerate(outs))
    pspecs = jax.tree.map(lambda _: P(), params)
    sharded = jax.shard_map(
        lambda p, f, i: call(p, f, i, "seq"), mesh=mesh,
        in_specs=(pspecs, {k: specs[k] for k in floating}, {k: specs[k] for k in ints}),
        out_specs=out_specs, check_vma=False)
    cot = tuple(jnp.asarray(rng.standard_normal(o.shape) + (
        1j * rng.standard_normal(o.shape) if jnp.iscomplexobj(o) else 0)).astype(o.dtype)
        for o in outs)

    def out_and_grads(f):
        y, vjp = jax.vjp(lambda p, fl: f(p, fl, ints), params, floating)
        return y, vjp(cot)

    one, many = jax.jit(lambda: (out_and_grads(call), out_and_grads(sharded)))()
    err = _err(many, one)
    assert len(jax.tree.leaves(one[1][0])) > 1
    print(f"models {name}: max error {err:.2e} (outputs, grads of the parameters and "
          f"{sorted(floating)})")
    assert err < TOL, name
    return err


def check_models(mesh, rng):
    """Every nnx model of _model_cases, called with axis_name='seq' inside jax.shard_map (the
    inputs' time axis sharded, parameters and states replicated): outputs (sliced y, global
    states, the pool head's mean) and the vjp wrt every parameter and floating input of a fixed
    random cotangent equal the one-device call's (gradients taken outside the shard_map: the
    full ones); inside the body, the parameter gradients are per-shard partial sums whose psum
    is the one-device gradient; a slice shorter than the conv halo is a ValueError naming u."""
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from jax.sharding import PartitionSpec as P

    worst = 0.0
    for name, (model, inputs, kw) in _model_cases(rng).items():
        worst = max(worst, _check_model(mesh, rng, name, model, inputs, kw))

    # partial sums inside the body: a Mamba's parameter gradients psum'd over the shards
    model, inputs, _ = _model_cases(rng)["Mamba L_slice=3"]
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    u, w = inputs["u"][0], jnp.asarray(rng.standard_normal(inputs["u"][0].shape))

    def loss(params, u, w, axis_name=None):
        return jnp.sum(nnx.merge(graphdef, params, rest)(u, axis_name=axis_name) * w)

    def body(params, u, w):
        return jax.tree.map(lambda g: jax.lax.psum(g, "seq"),
                            jax.grad(loss)(params, u, w, "seq"))

    pspecs = jax.tree.map(lambda _: P(), params)
    inside = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(pspecs, _spec_at(3, 1),
                                                              _spec_at(3, 1)),
                                   out_specs=pspecs, check_vma=False))(params, u, w)
    err = _err(inside, jax.grad(loss)(params, u, w))
    print(f"models Mamba grads inside shard_map, psum'd: max error {err:.2e}")
    assert err < TOL

    try:  # slices of 2 < d_conv - 1 = 3
        jax.shard_map(lambda p, u: nnx.merge(graphdef, p, rest)(u, axis_name="seq"),
                      mesh=mesh, in_specs=(pspecs, _spec_at(3, 1)), out_specs=_spec_at(3, 1),
                      check_vma=False)(params, u[:, :2 * DEVICES])
    except ValueError as e:
        assert str(e).startswith("u: expected each slice") and "length >= 3" in str(e), e
    else:
        raise AssertionError("no ValueError for a slice shorter than the halo")
    print(f"models: max error {worst:.2e}")


def _spec_at(ndim, axis):
    from liquidssm.jax.parallel import _spec

    return _spec(ndim, axis, "seq")


def main(case):
    import jax

    jax.config.update("jax_enable_x64", True)
    import numpy as np
    from jax.sharding import Mesh

    assert len(jax.devices()) == DEVICES, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("seq",))
    globals()[f"check_{case}"](mesh, np.random.default_rng(0))
    print(f"{case}: ok")


if __name__ == "__main__":
    main(sys.argv[1])
