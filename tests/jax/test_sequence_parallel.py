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
         "fsdp")


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
