import itertools
import math

import array_api_strict as xps
import numpy as np
import pytest
from liquidssm.spec import hippo, s4, s4d
from liquidssm.spec import liquid_s4 as ls

H, N, B = 2, 4, 2


def _phi(x, kind):
    return {"none": x, "tanh": np.tanh(x), "lecun": 1.7159 * np.tanh(0.666 * x)}[kind]


def _params(cfg, seed=1):
    p = ls.init(cfg, seed)
    rng = np.random.default_rng(seed + 7)
    p["log_dt"] = np.log(rng.uniform(0.1, 0.5, H))
    if not cfg.tied:
        p["BL_re"] = rng.normal(size=(H, N // 2))
        p["BL_im"] = rng.normal(size=(H, N // 2))
    return p


def _diag_system(cfg, p):
    """Abar, Bbar, BbarL, C (H, n) for the s4d base, computed directly in NumPy."""
    A = -np.exp(p["log_A_real"]) + 1j * p["A_imag"]
    dt = np.exp(p["log_dt"])[:, None]
    zoh = ls.base_config(cfg).discretization == "zoh"
    Abar = np.exp(dt * A) if zoh else (1 + dt * A / 2) / (1 - dt * A / 2)
    disc = (lambda b: (Abar - 1) / A * b) if zoh else (lambda b: dt * b / (1 - dt * A / 2))
    Bc = p["B_re"] + 1j * p["B_im"]
    BL = Bc if cfg.tied else p["BL_re"] + 1j * p["BL_im"]
    return Abar, disc(Bc), disc(BL), p["C_re"] + 1j * p["C_im"]


def _brute_force(cfg, p, u, degree):
    """Expand x_k = (Abar + c_k) x_{k-1} + Bbar u_k over subsets S of the steps where c is
    taken instead of Abar, keeping |S| <= degree - 1 (terms with <= degree inputs)."""
    Abar, Bbar, BbarL, C = _diag_system(cfg, p)
    c = BbarL * _phi(u, cfg.lcontract)[..., None]  # (B, L, H, n)
    L = u.shape[1]
    ys = []
    for k in range(L):
        x = 0
        for j in range(k + 1):
            steps = range(j + 1, k + 1)
            for m in range(min(degree - 1, len(steps)) + 1):
                for S in itertools.combinations(steps, m):
                    term = Bbar * u[:, j, :, None]
                    for i in steps:
                        term = term * (c[:, i] if i in S else Abar)
                    x = x + term
        ys.append(2 * np.sum(C * x, -1).real + p["D"] * u[:, k])
    return np.stack(ys, 1)


def _untruncated(cfg, p, u):
    Abar, Bbar, BbarL, C = _diag_system(cfg, p)
    x, ys = 0, []
    for k in range(u.shape[1]):
        x = (Abar + BbarL * _phi(u[:, k], cfg.lcontract)[..., None]) * x + Bbar * u[:, k, :, None]
        ys.append(2 * np.sum(C * x, -1).real + p["D"] * u[:, k])
    return np.stack(ys, 1)


@pytest.mark.parametrize("degree", [1, 2, 3])
@pytest.mark.parametrize("tied,lcontract,disc", [(True, "none", "zoh"), (False, "tanh", "bilinear"),
                                                 (True, "lecun", "bilinear")])
def test_scan_equals_brute_force_truncation(degree, tied, lcontract, disc):
    cfg = ls.Config(H, N, liquid_degree=degree, tied=tied, lcontract=lcontract,
                    discretization=disc)
    p = _params(cfg)
    u = np.random.default_rng(2).normal(size=(B, 5, H))
    np.testing.assert_allclose(ls.forward(cfg, p, u), _brute_force(cfg, p, u, degree),
                               rtol=0, atol=1e-12)


def test_scan_approaches_the_untruncated_recurrence():
    u = 0.02 * np.random.default_rng(3).normal(size=(B, 12, H))
    cfg1 = ls.Config(H, N, liquid_degree=1, tied=False)
    p = _params(cfg1)
    exact = _untruncated(cfg1, p, u)
    errs = [np.max(np.abs(ls.forward(ls.Config(H, N, liquid_degree=d, tied=False), p, u) - exact))
            for d in range(1, 9)]
    assert errs[0] > 1e-4  # the liquid terms are visible at degree 1
    # measured: 1.4e-3, 4.7e-5, 8.1e-7, 7.8e-9, 4.0e-12, 3.7e-12, 6.9e-14, 5.8e-16 (the error
    # of consecutive odd/even degrees can be nearly equal, so compare two degrees apart)
    assert all(errs[i + 2] < errs[i] / 10 for i in range(len(errs) - 2))
    assert errs[-1] < 1e-13


def test_scan_degree_one_is_s4d():
    cfg = ls.Config(H, N, liquid_degree=1, lcontract="tanh")
    p = _params(cfg)
    u = np.random.default_rng(4).normal(size=(B, 7, H))
    np.testing.assert_allclose(ls.forward(cfg, p, u),
                               s4d.forward(ls.base_config(cfg), p, u), rtol=0, atol=1e-12)


def test_scan_step_and_chunks_equal_forward():
    cfg = ls.Config(H, N, liquid_degree=3, lcontract="tanh", tied=False)
    p = _params(cfg)
    u = np.random.default_rng(5).normal(size=(B, 9, H))
    y, final = ls.forward(cfg, p, u, return_state=True)
    assert final["x"].shape == (B, 3, H, N // 2)
    state, ys = ls.initial_state(cfg, B), []
    for t in range(9):
        y_t, state = ls.step(cfg, p, state, u[:, t])
        ys.append(y_t)
    np.testing.assert_allclose(np.stack(ys, 1), y, rtol=0, atol=1e-12)
    np.testing.assert_allclose(state["x"], final["x"], rtol=0, atol=1e-12)
    y1, s1 = ls.forward(cfg, p, u[:, :4], return_state=True)
    y2, s2 = ls.forward(cfg, p, u[:, 4:], state=s1, return_state=True)
    np.testing.assert_allclose(np.concatenate([y1, y2], 1), y, rtol=0, atol=1e-12)
    np.testing.assert_allclose(s2["x"], final["x"], rtol=0, atol=1e-12)


# ------------------------------------------------------------------ published PB / KB kernels


def _published_products(u, q, allcombs):
    """The published `upgrade_degree` (u: (B, H, L)), with its own selection loop."""
    L = u.shape[-1]
    if not allcombs:
        v = u
        for _ in range(q - 1):
            v = v * np.pad(v[..., :-1], [(0, 0), (0, 0), (1, 0)])
        return v
    selected = 1
    for n in range(2, L):
        if math.comb(n, q) >= L:
            selected = n
            break
    idx = np.array(list(itertools.combinations(range(L - selected, L), q))[-L:])
    v = u[..., idx[:, 0]]
    for j in range(1, q):
        v = v * u[..., idx[:, j]]
    return np.pad(v, [(0, 0), (0, 0), (0, L - v.shape[-1])])


def _published_layer(cfg, p, seed=11):
    """The published layer (raminmh/liquid-s4 `SSKernel`) behind the spec parameters p: its
    construction-time tensors (dt (H,), w, B, C (H, n)) and the parameters p' of the same model.
    diag: the layer keeps C; its kernel's C parameter is conj(C) (`_resolve_conj`) = the spec's C.
    nplr: the layer keeps a C0 (drawn here); the kernel holds conj(C0), which `_setup_C` rewrites
    in place to conj(C0)_full (I - dA^L) (first half), L = l_max: p' stores that C-tilde."""
    dt = np.exp(p["log_dt"])
    if cfg.base == "s4d":
        w = -np.exp(p["log_A_real"]) + 1j * p["A_imag"]
        return (dt, w, p["B_re"] + 1j * p["B_im"], np.conj(p["C_re"] + 1j * p["C_im"])), p
    w = -np.exp(p["log_Lambda_real"]) + 1j * p["Lambda_imag"]
    Bw = p["B_re"] + 1j * p["B_im"]
    rng = np.random.default_rng(seed)
    C0 = rng.normal(size=(H, N // 2)) + 1j * rng.normal(size=(H, N // 2))
    full = lambda x: np.concatenate([x, x.conj()], -1)  # noqa: E731
    P = p["P_re"] + 1j * p["P_im"]  # (r, H, n)
    Ct = np.zeros_like(C0)
    for h in range(H):  # the dense bilinear dA of diag(w) - P P^*, by plain matrix algebra
        Pf = full(P[:, h])  # (r, N)
        A = np.diag(full(w[h])) - Pf.T @ Pf.conj()
        I = np.eye(N)
        dA = np.linalg.solve(I - dt[h] / 2 * A, I + dt[h] / 2 * A)
        c = full(np.conj(C0[h]))
        Ct[h] = (c - c @ np.linalg.matrix_power(dA, cfg.l_max))[: N // 2]
    return (dt, w, Bw, C0), {**p, "C_re": Ct.real, "C_im": Ct.imag}


def _published_output(cfg, p, layer, u):
    """The published S4.forward (liquid part and the D skip, no output layers) as written in
    raminmh/liquid-s4 `src/models/sequence/ss/s4.py`, in NumPy, with L_kernel = L: kb adds
    rfft(u_corr, 2L) * fft(k_b, L + 1) to the spectrum before the one irfft(., 2L); polyb adds
    Re(dCB) * u_corr after it. The liquid coefficient of an untied model (no published
    counterpart) replaces sum(dB) by sum(dBL)."""
    dt, w, Bw, Cw = layer
    full = lambda x: np.concatenate([x, x.conj()], -1)  # noqa: E731
    uT = u.transpose(0, 2, 1)  # (B, H, L)
    L = uT.shape[-1]

    def bilinear_B(b):  # dB = dt * diag_embed(1 / (1 - dt w / 2)) @ B over the full modes
        diag = np.stack([np.diag(1 / (1 - 0.5 * dt[h] * full(w)[h])) for h in range(H)])
        return dt[:, None] * np.einsum("hab,hb->ha", diag, full(b))

    dB = bilinear_B(Bw)
    dBL = dB if cfg.tied else bilinear_B(p["BL_re"] + 1j * p["BL_im"])
    k = ls.kernel(cfg, p, L)[None]  # (channels = 1, H, L)
    y_sum = np.fft.rfft(uT, n=2 * L) * np.fft.rfft(k, n=2 * L)
    k_b, kb_linear = k, 0
    for q in range(2, cfg.liquid_degree + 1):
        if cfg.liquid_kernel != "kb":
            break
        k_b = np.sum(k_b[:, :, None, :] * dBL[None, :, :, None], axis=2)  # Kbar times sum(dB)
        u_corr = np.flip(_phi(_published_products(uT, q, cfg.allcombs), cfg.lcontract), -1)
        if cfg.kb_convolution == "published":
            y_sum = y_sum + np.fft.rfft(u_corr, n=2 * L) * np.fft.fft(k_b, n=(2 * L) // 2 + 1)
        else:  # the spec's deliberate fix: a direct causal convolution
            kb_linear = kb_linear + np.stack([[np.convolve(u_corr[b, h], k_b[0, h].real)[:L]
                                               for h in range(H)] for b in range(B)])
    y = np.fft.irfft(y_sum, n=2 * L)[..., :L] + kb_linear + p["D"][:, None] * uT
    if cfg.liquid_kernel == "pb":
        dC = full(Cw)
        for q in range(2, cfg.liquid_degree + 1):
            u_corr = np.flip(_phi(_published_products(uT, q, cfg.allcombs), cfg.lcontract), -1)
            sL = np.sum(dBL, -1)  # the published (dB[:, :, None] * dB[:, None, :]).sum(2)
            dB, dBL = dB * sL[:, None], dBL * sL[:, None]
            dCB = np.sum(dC * dB, -1)  # contract("abc,bc->ab", dC, dB), channels = 1
            y = y + (u_corr * dCB[:, None]).real  # .float() of a complex tensor: its real part
    return y.transpose(0, 2, 1)


@pytest.mark.parametrize("base", ["s4d", "s4"])
@pytest.mark.parametrize("kind,conv", [("pb", "linear"), ("kb", "linear"), ("kb", "published")])
@pytest.mark.parametrize("allcombs,tied,lcontract", [(True, True, "none"), (False, True, "tanh"),
                                                     (True, False, "lecun")])
def test_pb_kb_reproduce_the_published_layer(base, kind, conv, allcombs, tied, lcontract):
    L = 8
    # bilinear: the published liquid coefficients always use the bilinear dB (difference 4)
    cfg = ls.Config(H, N, base=base, liquid_kernel=kind, liquid_degree=3, allcombs=allcombs,
                    tied=tied, lcontract=lcontract, l_max=L, kb_convolution=conv,
                    discretization="bilinear")
    layer, p = _published_layer(cfg, _params(cfg))
    u = np.random.default_rng(6).normal(size=(B, L, H))
    want = _published_output(cfg, p, layer, u)
    base_module = s4 if base == "s4" else s4d
    base_p = {k: p[k] for k in base_module.param_shapes(ls.base_config(cfg))}
    base_y = base_module.forward(ls.base_config(cfg), base_p, u)
    assert np.max(np.abs(want - base_y)) > 1e-2  # the liquid terms are visible
    np.testing.assert_allclose(ls.forward(cfg, p, u), want, rtol=0, atol=1e-12)


def test_pb_coefficient_is_conjugate_and_true_c():
    """The PB coefficient 2 Re sum conj(C) Bbar with the s4 base's true C (not C-tilde), against
    the alternatives the spec used to compute, so that the test fails if either comes back."""
    L = 8
    u = np.random.default_rng(12).normal(size=(B, L, H))
    for base in ("s4d", "s4"):
        cfg = ls.Config(H, N, base=base, liquid_kernel="pb", liquid_degree=2, l_max=L,
                        discretization="bilinear")
        layer, p = _published_layer(cfg, _params(cfg))
        extra = ls.forward(cfg, p, u) - s4d.forward(ls.base_config(cfg), p, u) if base == "s4d" \
            else ls.forward(cfg, p, u) - s4.forward(ls.base_config(cfg), p, u)
        dt, w, Bw, Cw = layer
        Bbar = dt[:, None] * Bw / (1 - dt[:, None] * w / 2)
        s = 2 * np.sum(Bbar, -1).real
        w2 = np.flip(_published_products(u.transpose(0, 2, 1), 2, True), -1)
        Cp = p["C_re"] + 1j * p["C_im"]  # the kernel's C (s4d) / C-tilde (s4) parameter
        wrong = [Cp] if base == "s4d" else [Cp, np.conj(Cp), np.conj(Cw)]
        for C, ok in [(Cw, True)] + [(c, False) for c in wrong]:
            cb = 2 * np.sum(C * Bbar, -1).real * s
            err = np.max(np.abs(extra - (cb[:, None] * w2).transpose(0, 2, 1)))
            assert (err < 1e-12) if ok else (err > 1e-3), (base, ok, err)


def test_kb_convolutions_differ_and_linear_is_causal():
    """"published" is not a convolution: it differs from "linear" and leaks the future of w
    into the past; published_kb_product equals its FFT formula."""
    rng = np.random.default_rng(13)
    L = 6
    w, K = rng.normal(size=(B, H, L)), rng.normal(size=(H, L))
    direct = np.stack([[np.convolve(w[b, h], K[h])[:L] for h in range(H)] for b in range(B)])
    np.testing.assert_allclose(s4d.causal_fft_conv(w, K), direct, rtol=0, atol=1e-12)
    pub = ls.published_kb_product(w, K)
    want = np.fft.irfft(np.fft.rfft(w, 2 * L) * np.fft.fft(K.astype(complex), L + 1), 2 * L)
    np.testing.assert_allclose(pub, want[..., :L], rtol=0, atol=1e-12)
    assert np.max(np.abs(pub - direct)) > 1e-2
    w2 = w.copy()
    w2[..., -1] += 1.0  # a change at the last step moves every earlier output of "published"
    assert np.all(np.abs(ls.published_kb_product(w2, K) - pub)[..., :-1] > 1e-6)
    np.testing.assert_allclose(s4d.causal_fft_conv(w2, K)[..., :-1], direct[..., :-1], rtol=0,
                               atol=1e-12)


@pytest.mark.parametrize("base", ["s4d", "s4"])
@pytest.mark.parametrize("kind", ["pb", "kb"])
def test_pb_kb_degree_one_is_the_base(base, kind):
    cfg = ls.Config(H, N, base=base, liquid_kernel=kind, liquid_degree=1, l_max=6)
    p = _params(cfg)
    u = np.random.default_rng(7).normal(size=(B, 6, H))
    module = s4 if base == "s4" else s4d
    np.testing.assert_allclose(ls.forward(cfg, p, u),
                               module.forward(ls.base_config(cfg), p, u), rtol=0, atol=1e-14)


def test_allcombs_indices_follow_the_published_rule():
    # L = 5, q = 2: n = 4 (C(4, 2) = 6 >= 5), pairs of positions 1..4, the last 5 in order
    np.testing.assert_array_equal(ls.allcombs_indices(5, 2),
                                  [[1, 3], [1, 4], [2, 3], [2, 4], [3, 4]])
    # too short for L subsets: all of them, zero-padded (the published code fails here)
    np.testing.assert_array_equal(ls.allcombs_indices(3, 2), [[0, 1], [0, 2], [1, 2]])
    u = np.arange(1.0, 4.0)[None, :]
    np.testing.assert_array_equal(ls.input_products(u, 2, True), [[2.0, 3.0, 6.0]])
    np.testing.assert_array_equal(ls.input_products(np.arange(1.0, 3.0)[None, :], 3, True),
                                  [[0.0, 0.0]])
    v = np.array([[1.0, 2.0, 3.0, 4.0]])
    np.testing.assert_array_equal(ls.input_products(v, 2, False), [[0, 2, 6, 12]])
    np.testing.assert_array_equal(ls.input_products(v, 3, False), [[0, 0, 12, 72]])


def test_whole_sequence_kernels_refuse_streaming():
    cfg = ls.Config(H, N, liquid_kernel="pb")
    p = _params(cfg)
    u = np.zeros((B, 4, H))
    for call in (lambda: ls.step(cfg, p, {"x": None}, u[:, 0]),
                 lambda: ls.initial_state(cfg, B),
                 lambda: ls.forward(cfg, p, u, return_state=True),
                 lambda: ls.forward(cfg, p, u, state={"x": np.zeros(1)})):
        with pytest.raises(ValueError, match="non-causal.*liquid_kernel='scan'"):
            call()


@pytest.mark.parametrize(
    "kwargs,err,match",
    [
        ({"liquid_kernel": "scan", "base": "s4"}, ValueError, "base: liquid_kernel='scan'"),
        ({"liquid_kernel": "polyb"}, ValueError, "liquid_kernel"),
        ({"liquid_degree": 0}, ValueError, "liquid_degree"),
        ({"lcontract": "relu"}, ValueError, "lcontract"),
        ({"tied": 1}, TypeError, "tied"),
        ({"allcombs": "yes"}, TypeError, "allcombs"),
        ({"kb_convolution": "circular"}, ValueError, "kb_convolution"),
        ({"liquid_kernel": "kb", "kb_convolution": None}, ValueError, "kb_convolution"),
        ({"base": "s5"}, ValueError, "base"),
        ({"base": "s4", "liquid_kernel": "pb", "discretization": "zoh"}, ValueError,
         "discretization"),
        ({"d_state": 3}, ValueError, "d_state"),
        # the s4 base's fields are checked with the s4d base too
        ({"rank": 0}, ValueError, "rank: expected an int >= 1, got 0"),
        ({"l_max": -1}, ValueError, "l_max: expected an int >= 1, got -1"),
        ({"rank": 1.5}, TypeError, "rank: expected an int"),
        ({"l_max": True}, TypeError, "l_max: expected an int"),
        ({"base": "s4", "liquid_kernel": "pb", "rank": 0}, ValueError, "rank"),
        ({"base": "s4", "liquid_kernel": "kb", "l_max": 0}, ValueError, "l_max"),
    ],
)
def test_config_validation(kwargs, err, match):
    with pytest.raises(err, match=match):
        ls.Config(H, **kwargs)


def test_s4_base_init_does_not_clip_b():
    """raminmh/liquid-s4's nplr has no B_clip: the s4 base's B is hippo.nplr's unclipped V^* B
    (at N = 8, Im B[0] = -5.154), while s4.init clips it to [-2, 2]."""
    cfg = ls.Config(H, 8, base="s4", liquid_kernel="pb")
    p = ls.init(cfg)
    _, _, Bt, _ = hippo.nplr(8)
    np.testing.assert_allclose(p["B_re"] + 1j * p["B_im"], np.tile(Bt, (H, 1)), rtol=0,
                               atol=1e-14)
    assert np.min(p["B_im"]) < -5 and ls.base_config(cfg).B_clip is None
    assert np.min(s4.init(s4.Config(H, 8))["B_im"]) == -2.0


def test_untied_parameters_and_bad_state():
    cfg = ls.Config(H, N, tied=False)
    p = ls.init(cfg)
    np.testing.assert_array_equal(p["BL_re"], p["B_re"])
    np.testing.assert_array_equal(p["BL_im"], p["B_im"])
    u = np.zeros((B, 3, H))
    with pytest.raises(ValueError, match=r"missing \['BL_im'\]"):
        ls.forward(cfg, {k: v for k, v in p.items() if k != "BL_im"}, u)
    with pytest.raises(ValueError, match=r"state\['x'\]: expected shape \(2, 2, 2, 2\)"):
        ls.forward(cfg, p, u, state={"x": np.zeros((B, H, N // 2), complex)})


@pytest.mark.parametrize("kind,base,conv", [("scan", "s4d", "linear"), ("pb", "s4", "linear"),
                                           ("kb", "s4d", "linear"), ("kb", "s4", "published")])
def test_array_api_strict_matches_numpy(kind, base, conv):
    cfg = ls.Config(H, N, base=base, liquid_kernel=kind, liquid_degree=3, lcontract="tanh",
                    l_max=7, tied=False, kb_convolution=conv)
    p = _params(cfg)
    u = np.random.default_rng(8).normal(size=(B, 7, H))
    ps = {k: xps.asarray(v) for k, v in p.items()}
    np.testing.assert_allclose(np.asarray(ls.forward(cfg, ps, xps.asarray(u))),
                               ls.forward(cfg, p, u), rtol=0, atol=1e-12)


@pytest.mark.parametrize("tied", [True, False])
def test_array_api_strict_step_matches_numpy(tied):
    cfg = ls.Config(H, N, liquid_degree=3, lcontract="tanh", tied=tied)
    p = _params(cfg)
    ps = {k: xps.asarray(v) for k, v in p.items()}
    u = np.random.default_rng(9).normal(size=(B, 3, H))
    x0 = 0.3 * np.random.default_rng(10).normal(size=(B, 3, H, N // 2)) + 0.1j
    st, sts = {"x": x0}, {"x": xps.asarray(x0)}
    for t in range(3):
        y, st = ls.step(cfg, p, st, u[:, t])
        ys, sts = ls.step(cfg, ps, sts, xps.asarray(u[:, t]))
        assert type(ys) is type(sts["x"]) is type(ps["D"])  # strict arrays throughout
        np.testing.assert_allclose(np.asarray(ys), y, rtol=0, atol=1e-12)
        np.testing.assert_allclose(np.asarray(sts["x"]), st["x"], rtol=0, atol=1e-12)


@pytest.mark.parametrize("base,length", [("s4d", 7), ("s4", 5), ("s4", 12)])
def test_array_api_strict_kernel_matches_numpy(base, length):
    cfg = ls.Config(H, N, base=base, liquid_kernel="kb", l_max=7)
    p = _params(cfg)
    ps = {k: xps.asarray(v) for k, v in p.items()}
    np.testing.assert_allclose(np.asarray(ls.kernel(cfg, ps, length)),
                               ls.kernel(cfg, p, length), rtol=0, atol=1e-12)
