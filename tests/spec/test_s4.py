import array_api_strict as xps
import numpy as np
import pytest
from liquidssm.spec import hippo, s4

H, N, B = 3, 6, 2


def _params(cfg, seed=1, random_extra_ranks=True):
    """init with dt enlarged (kernel visible within a few steps) and random P rows >= 1."""
    p = s4.init(cfg, seed)
    rng = np.random.default_rng(seed + 10)
    p["log_dt"] = np.log(rng.uniform(0.05, 0.5, H))
    if random_extra_ranks and cfg.rank > 1:
        p["P_re"][1:] = 0.5 * rng.normal(size=p["P_re"][1:].shape)
        p["P_im"][1:] = 0.5 * rng.normal(size=p["P_im"][1:].shape)
    return p


def _dense_numpy(p, M):
    """Independent dense construction: A = diag(Lambda, conj Lambda) - sum_r P_r P_r^*."""
    Lam = -np.exp(p["log_Lambda_real"]) + 1j * p["Lambda_imag"]
    full = lambda x: np.concatenate([x, x.conj()], -1)  # noqa: E731
    Pf = full(p["P_re"] + 1j * p["P_im"])
    Bf = full(p["B_re"] + 1j * p["B_im"])
    Ctf = full(p["C_re"] + 1j * p["C_im"])
    I = np.eye(N)
    out = []
    for h in range(H):
        A = np.diag(full(Lam)[h]) - sum(np.outer(Pf[r, h], Pf[r, h].conj()) for r in range(len(Pf)))
        dt = np.exp(p["log_dt"][h])
        inv = np.linalg.inv(I - dt / 2 * A)
        Abar, Bbar = inv @ (I + dt / 2 * A), dt * inv @ Bf[h]
        C = Ctf[h] @ np.linalg.inv(I - np.linalg.matrix_power(Abar, M))
        out.append((A, Abar, Bbar, C))
    return out


@pytest.mark.parametrize("rank", [1, 2])
@pytest.mark.parametrize("l_max,L", [(8, 8), (8, 5), (7, 7), (6, 15), (8, 16)])
def test_kernel_equals_dense_powers(rank, l_max, L):
    cfg = s4.Config(H, N, rank=rank, l_max=l_max)
    p = _params(cfg)
    expected = np.stack(
        [[(C @ np.linalg.matrix_power(Abar, l) @ Bbar) for l in range(L)]
         for _, Abar, Bbar, C in _dense_numpy(p, l_max)]
    )
    assert np.max(np.abs(expected.imag)) < 1e-12
    assert np.max(np.abs(expected.real)) > 0.1
    np.testing.assert_allclose(s4.kernel(cfg, p, L), expected.real, rtol=0, atol=1e-9)


def test_init_is_hippo_legs_up_to_similarity():
    # the full DPLR state matrix has the eigenvalues of HiPPO-LegS, -1, ..., -N
    p = s4.init(s4.Config(H, N, l_max=8))
    for A, *_ in _dense_numpy(p, 8):
        eig = np.linalg.eigvals(A)
        np.testing.assert_allclose(np.sort(eig.real), -np.arange(N, 0.0, -1), atol=1e-8)
        np.testing.assert_allclose(eig.imag, 0, atol=1e-6)
    assert set(p) == {"log_dt", "log_Lambda_real", "Lambda_imag", "P_re", "P_im",
                      "B_re", "B_im", "C_re", "C_im", "D"}
    assert p["P_re"].shape == (1, H, N // 2) and all(v.dtype == np.float64 for v in p.values())


def test_init_clips_b_as_state_spaces_s4():
    """B = V^* B_legs with Im B clipped to [-2, 2] (hippo.nplr(N, B_clip=2.0)); B_clip=None
    keeps it unclipped. At N = 8, Im B[0] = -5.154 becomes -2.0; nothing else changes."""
    cfg = s4.Config(H, 8, l_max=8)
    assert cfg.B_clip == 2.0
    _, _, Bt, _ = hippo.nplr(8)
    p, q = s4.init(cfg, seed=2), s4.init(s4.Config(H, 8, l_max=8, B_clip=None), seed=2)
    np.testing.assert_array_equal(p["B_re"], np.tile(Bt.real, (H, 1)))
    np.testing.assert_array_equal(p["B_im"], np.tile(np.clip(Bt.imag, -2, 2), (H, 1)))
    np.testing.assert_array_equal(q["B_im"], np.tile(Bt.imag, (H, 1)))
    assert p["B_im"][0, 0] == -2.0 and q["B_im"][0, 0] < -5.15
    for k in set(p) - {"B_im"}:
        np.testing.assert_array_equal(p[k], q[k])


def test_init_c_tilde_corresponds_to_a_standard_normal_c():
    cfg = s4.Config(H, N, l_max=8)
    p = s4.init(cfg, seed=4)
    C = _dense_numpy(p, 8)
    # the effective C is conjugate symmetric; its first half is the sampled complex normal C
    for _, _, _, c in C:
        np.testing.assert_allclose(c[N // 2:], c[: N // 2].conj(), atol=1e-12)
    rng = np.random.default_rng(4)
    rng.uniform(size=H)
    sampled = rng.normal(0, np.sqrt(0.5), (2, H, N // 2))
    np.testing.assert_allclose(np.stack([c[: N // 2] for *_, c in C]),
                               sampled[0] + 1j * sampled[1], atol=1e-10)


@pytest.mark.parametrize("rank", [1, 2])
def test_conv_recurrent_step_and_chunks_agree(rank):
    L = 10
    cfg = s4.Config(H, N, rank=rank, l_max=L)
    rec = s4.Config(H, N, rank=rank, l_max=L, mode="recurrent")
    p = _params(cfg)
    u = np.random.default_rng(0).normal(size=(B, L, H))
    y = s4.forward(cfg, p, u)
    y_rec, final = s4.forward(rec, p, u, return_state=True)
    np.testing.assert_allclose(y_rec, y, rtol=0, atol=1e-10)
    state, ys = s4.initial_state(cfg, B), []
    for t in range(L):
        y_t, state = s4.step(cfg, p, state, u[:, t])
        ys.append(y_t)
    np.testing.assert_allclose(np.stack(ys, 1), y, rtol=0, atol=1e-10)
    np.testing.assert_allclose(state["x"], final["x"], rtol=0, atol=1e-12)
    y1, s1 = s4.forward(cfg, p, u[:, :3], return_state=True)
    y2, s2 = s4.forward(cfg, p, u[:, 3:], state=s1, return_state=True)
    np.testing.assert_allclose(np.concatenate([y1, y2], 1), y, rtol=0, atol=1e-10)
    np.testing.assert_allclose(s2["x"], final["x"], rtol=0, atol=1e-12)


def _complex_loop(p, l_max, u):
    """The dense recurrence on the full complex state (x, conj x), independently built."""
    ys, xs = [], []
    for h, (_, Abar, Bbar, C) in enumerate(_dense_numpy(p, l_max)):
        x, yh = np.zeros((u.shape[0], N), complex), []
        for t in range(u.shape[1]):
            x = x @ Abar.T + Bbar * u[:, t, h, None]
            yh.append((x @ C).real + p["D"][h] * u[:, t, h])
        ys.append(np.stack(yh, 1))
        xs.append(x)
    return np.stack(ys, -1), np.stack(xs, 1)


@pytest.mark.parametrize("rank", [1, 2])
def test_recurrence_equals_the_complex_dense_loop(rank):
    # the real-coordinate dense_scan form against the full complex recurrence, at a length
    # beyond the torch / jax chunk (64) and l_max (the recurrence does not depend on l_max
    # except through C)
    L, l_max = 150, 16
    cfg = s4.Config(H, N, rank=rank, l_max=l_max, mode="recurrent")
    p = _params(cfg)
    u = np.random.default_rng(2).normal(size=(B, L, H))
    y, st = s4.forward(cfg, p, u, return_state=True)
    y_ref, x_ref = _complex_loop(p, l_max, u)
    assert np.max(np.abs(y_ref)) > 0.5
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-10)
    np.testing.assert_allclose(st["x"], x_ref[..., : N // 2], rtol=0, atol=1e-10)
    # recurrent == convolution mode at the same length (l_max = L: the kernel is exact)
    conv = s4.Config(H, N, rank=rank, l_max=L)
    np.testing.assert_allclose(s4.forward(s4.Config(H, N, rank=rank, l_max=L,
                                                    mode="recurrent"), p, u),
                               s4.forward(conv, p, u), rtol=0, atol=1e-9)


def test_recurrence_is_one_dense_scan_call(monkeypatch):
    # no Python loop over time: forward and step call the dense_scan primitive once
    calls, dense_scan = [], s4.dense_scan

    def counting(A, b, h0=None):
        calls.append(b.shape)
        return dense_scan(A, b, h0)

    monkeypatch.setattr(s4, "dense_scan", counting)
    cfg = s4.Config(H, N, mode="recurrent")
    p = _params(cfg)
    u = np.random.default_rng(3).normal(size=(B, 9, H))
    _, st = s4.forward(cfg, p, u, return_state=True)
    s4.step(cfg, p, st, u[:, 0])
    assert calls == [(B, 9, H, N), (B, 1, H, N)]


def test_sequences_longer_than_l_max_keep_the_same_system():
    cfg_short, cfg = s4.Config(H, N, l_max=4), s4.Config(H, N, l_max=4, mode="recurrent")
    p = _params(cfg_short)
    u = np.random.default_rng(1).normal(size=(B, 11, H))
    np.testing.assert_allclose(s4.forward(cfg_short, p, u), s4.forward(cfg, p, u),
                               rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    "kwargs,err,match",
    [
        ({"discretization": "zoh"}, ValueError, "discretization"),
        ({"init": "lin"}, ValueError, "init"),
        ({"rank": 0}, ValueError, "rank"),
        ({"l_max": 0}, ValueError, "l_max"),
        ({"l_max": 4.0}, TypeError, "l_max"),
        ({"d_state": 7}, ValueError, "d_state"),
        ({"dt_max": float("inf")}, ValueError, "dt_max"),
        ({"B_clip": -1.0}, ValueError, "B_clip: expected None or a float >= 0, got -1.0"),
        ({"B_clip": "2"}, TypeError, "B_clip: expected None or a float >= 0"),
        ({"B_clip": True}, TypeError, "B_clip"),
    ],
)
def test_config_validation(kwargs, err, match):
    with pytest.raises(err, match=match):
        s4.Config(H, **kwargs)


def test_bad_inputs_are_named():
    cfg = s4.Config(H, N, rank=2, l_max=8)
    p = s4.init(cfg)
    u = np.zeros((B, 8, H))
    with pytest.raises(ValueError, match=r"params\['P_re'\]: expected shape \(2, 3, 3\)"):
        s4.forward(cfg, {**p, "P_re": p["P_re"][:1]}, u)
    with pytest.raises(ValueError, match="u: expected shape"):
        s4.forward(cfg, p, np.zeros((B, 8)))
    with pytest.raises(ValueError, match=r"state\['x'\]: expected shape"):
        s4.forward(cfg, p, u, state={"x": np.zeros((B + 1, H, N // 2), complex)})
    with pytest.raises(ValueError, match="length"):
        s4.kernel(cfg, p, 0)
    with pytest.raises(ValueError, match="batch"):
        s4.initial_state(cfg, 0)


@pytest.mark.parametrize("mode", ["conv", "recurrent"])
def test_array_api_strict_matches_numpy(mode):
    cfg = s4.Config(H, N, rank=2, l_max=6, mode=mode)
    p = _params(cfg)
    u = np.random.default_rng(3).normal(size=(B, 9, H))
    ps = {k: xps.asarray(v) for k, v in p.items()}
    np.testing.assert_allclose(np.asarray(s4.forward(cfg, ps, xps.asarray(u))),
                               s4.forward(cfg, p, u), rtol=0, atol=1e-12)


@pytest.mark.parametrize("length", [5, 14])  # below and above l_max (the J > 1 path)
def test_array_api_strict_step_and_kernel_match_numpy(length):
    cfg = s4.Config(H, N, rank=2, l_max=6)
    p = _params(cfg)
    ps = {k: xps.asarray(v) for k, v in p.items()}
    np.testing.assert_allclose(np.asarray(s4.kernel(cfg, ps, length)),
                               s4.kernel(cfg, p, length), rtol=0, atol=1e-12)
    u = np.random.default_rng(4).normal(size=(B, 3, H))
    x0 = np.random.default_rng(5).normal(size=(B, H, N // 2)) + 0.5j
    st, sts = {"x": x0}, {"x": xps.asarray(x0)}
    for t in range(3):
        y, st = s4.step(cfg, p, st, u[:, t])
        ys, sts = s4.step(cfg, ps, sts, xps.asarray(u[:, t]))
        assert type(ys) is type(sts["x"]) is type(ps["D"])  # strict arrays throughout
        np.testing.assert_allclose(np.asarray(ys), y, rtol=0, atol=1e-12)
        np.testing.assert_allclose(np.asarray(sts["x"]), st["x"], rtol=0, atol=1e-12)
