"""HiPPO-LegS and its normal-plus-low-rank (NPLR) form, used to initialise S4, S4D-LegS and S5.

NumPy only (initialisation, not computation). Conventions as state-spaces/s4 `hippo.py`
(`transition('legs')`, `rank_correction('legs')`, `nplr('legs')`); its `B_clip` defaults to
None here (no clip, as raminmh/liquid-s4's copy of `nplr`), and `s4.init` passes 2.0 (the
state-spaces/s4 default).
"""

from __future__ import annotations

import numpy as np

__all__ = ["legs", "nplr", "check_b_clip"]


def legs(N: int):
    """HiPPO-LegS: A (N, N), B (N,), P (N,) with
    A_nk = -sqrt(2n+1) sqrt(2k+1) for n > k, -(n+1) for n = k, 0 for n < k;  B_n = sqrt(2n+1);
    P_n = sqrt(n + 1/2), so that A + P P^T = -I/2 + (skew-symmetric)."""
    n = np.arange(N, dtype=np.float64)
    q = np.sqrt(2 * n + 1)
    A = -np.tril(np.outer(q, q), -1) - np.diag(n + 1)
    return A, q.copy(), np.sqrt(n + 0.5)


def check_b_clip(B_clip) -> None:
    """B_clip must be None or a real number >= 0 (TypeError / ValueError naming B_clip)."""
    if B_clip is None:
        return
    if isinstance(B_clip, bool) or not isinstance(B_clip, (int, float)):
        raise TypeError(f"B_clip: expected None or a float >= 0, got {B_clip!r}")
    if not B_clip >= 0:
        raise ValueError(f"B_clip: expected None or a float >= 0, got {B_clip!r}")


def nplr(N: int, rank: int = 1, B_clip: float | None = None):
    """Diagonalise the normal part of HiPPO-LegS: A = V diag(Lambda) V^* + conj(...) - P P^T.

    S = A + P P^T = -I/2 + skew. Lambda_re = mean(diag S) = -1/2; (Lambda_im, V) = eigh(-i S),
    sorted by Lambda_im ascending, keeping the first N/2 (negative imaginary parts: one mode of
    each conjugate pair, as the published code). Returns
    Lambda (N/2,) complex, Ptilde = V^* P (rank, N/2) (rows >= 1 are zero), Btilde = V^* B (N/2,),
    V (N, N/2), so that A = 2 Re(V diag(Lambda) V^*) - P P^T.

    B_clip (None: no clip, else a float >= 0): Btilde <- Re Btilde + i clip(Im Btilde, -B_clip,
    B_clip), applied to the transformed B only (not to Ptilde), as state-spaces/s4
    `nplr(..., B_clip=2.0)`; Btilde is then no longer exactly V^* B.
    """
    if N % 2 or N < 2:
        raise ValueError(f"d_state: expected an even number >= 2 (conjugate pairs), got {N}")
    check_b_clip(B_clip)
    A, B, P = legs(N)
    S = A + np.outer(P, P)
    lam_im, V = np.linalg.eigh(-1j * S)
    order = np.argsort(lam_im, kind="stable")[: N // 2]
    Lambda = np.mean(np.diag(S)) + 1j * lam_im[order]
    V = V[:, order]
    Vh = V.conj().T
    Ptilde = np.zeros((rank, N // 2), dtype=np.complex128)
    Ptilde[0] = Vh @ P
    Btilde = Vh @ B
    if B_clip is not None:
        Btilde = Btilde.real + 1j * np.clip(Btilde.imag, -B_clip, B_clip)
    return Lambda, Ptilde, Btilde, V
