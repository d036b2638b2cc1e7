import numpy as np
import pytest
from liquidssm.spec import hippo


def test_legs_entries_n3():
    A, B, P = hippo.legs(3)
    r3, r5, r15 = np.sqrt(3), np.sqrt(5), np.sqrt(15)
    np.testing.assert_allclose(A, [[-1, 0, 0], [-r3, -2, 0], [-r5, -r15, -3]], atol=1e-15)
    np.testing.assert_allclose(B, [1, r3, r5], atol=1e-15)
    np.testing.assert_allclose(P, np.sqrt([0.5, 1.5, 2.5]), atol=1e-15)


def test_legs_plus_rank_one_is_half_identity_plus_skew():
    A, _, P = hippo.legs(8)
    S = A + np.outer(P, P) + 0.5 * np.eye(8)
    np.testing.assert_allclose(S, -S.T, atol=1e-13)


@pytest.mark.parametrize("N", [2, 6, 16])
def test_nplr_reconstructs_legs(N):
    A, B, P = hippo.legs(N)
    Lam, Pt, Bt, V = hippo.nplr(N, rank=1)
    assert Lam.shape == (N // 2,) and Pt.shape == (1, N // 2) and V.shape == (N, N // 2)
    np.testing.assert_allclose(Lam.real, -0.5, atol=1e-12)
    # published convention: negative imaginary parts, ascending
    assert np.all(Lam.imag < 0) and np.all(np.diff(Lam.imag) > 0)
    np.testing.assert_allclose(V.conj().T @ V, np.eye(N // 2), atol=1e-12)
    normal = V @ np.diag(Lam) @ V.conj().T
    np.testing.assert_allclose(2 * normal.real - np.outer(P, P), A, atol=1e-10)
    np.testing.assert_allclose(Pt[0], V.conj().T @ P, atol=1e-12)
    np.testing.assert_allclose(Bt, V.conj().T @ B, atol=1e-12)
    eig = np.linalg.eigvals(A + np.outer(P, P))
    eig = eig[np.argsort(eig.imag)]
    both = np.concatenate([Lam, Lam.conj()])
    np.testing.assert_allclose(both[np.argsort(both.imag)], eig, atol=1e-9)


def test_nplr_extra_ranks_are_zero():
    _, Pt, _, _ = hippo.nplr(6, rank=3)
    assert Pt.shape == (3, 3)
    assert np.all(Pt[1:] == 0) and np.all(np.abs(Pt[0]) > 0)


def test_nplr_odd_state_size_is_refused():
    with pytest.raises(ValueError, match="d_state"):
        hippo.nplr(5)


def test_nplr_b_clip_clips_the_imaginary_part_of_the_transformed_b():
    # state-spaces/s4 nplr(..., B_clip=2.0): B = V^* B, then Im B clamped to [-2, 2]
    Lam, Pt, Bt, V = hippo.nplr(8)
    _, B, _ = hippo.legs(8)
    np.testing.assert_allclose(Bt, V.conj().T @ B, atol=1e-12)  # default: no clip
    np.testing.assert_allclose(Bt[0].imag, -5.154, atol=5e-4)
    Lc, Pc, Bc, Vc = hippo.nplr(8, B_clip=2.0)
    np.testing.assert_array_equal(Bc.real, Bt.real)
    np.testing.assert_array_equal(Bc.imag, np.clip(Bt.imag, -2.0, 2.0))
    assert Bc[0].imag == -2.0 and np.sum(np.abs(Bt.imag) > 2) == 1  # only B[0] is clipped
    for a, b in ((Lc, Lam), (Pc, Pt), (Vc, V)):
        np.testing.assert_array_equal(a, b)  # Lambda, P and V are not clipped
    np.testing.assert_array_equal(hippo.nplr(8, B_clip=0.0)[2].imag, 0.0)


@pytest.mark.parametrize("clip,err", [(-1.0, ValueError), (float("nan"), ValueError),
                                      ("2", TypeError), (True, TypeError)])
def test_nplr_bad_b_clip(clip, err):
    with pytest.raises(err, match="B_clip: expected None or a float >= 0"):
        hippo.nplr(8, B_clip=clip)
