"""HiPPO-LegS and its normal-plus-low-rank (NPLR) form, used to initialise S4, S4D-LegS and S5.

NumPy only (initialisation, not computation). Conventions as state-spaces/s4 `hippo.py`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["legs", "nplr"]


def legs(N: int):
    """HiPPO-LegS: A (N, N), B (N,), P (N,) with
    A_nk = -sqrt(2n+1) sqrt(2k+1) for n > k, -(n+1) for n = k, 0 for n < k;  B_n = sqrt(2n+1);
    P_n = sqrt(n + 1/2), so that A + P P^T = -I/2 + (skew-symmetric)."""
    q = np.sqrt(2 * np.arange(N, dtype=np.float64) + 1)
    A = -np.tril(np.outer(q, q), -1) - np.diag(np.arange(N, dtype=np.float64) + 1)
    return A, q.copy(), np.sqrt(np.arange(N, dtype=np.float64) + 0.5)


def nplr(N: int, rank: int = 1):
    """Diagonalise the normal part of HiPPO-LegS: A = V (Lambda - Ptilde Ptilde^*) V^*.

    Returns Lambda (N/2,) complex (real part -1/2, the modes with Im >= 0... one of each conjugate
    pair), Ptilde (rank, N/2), Btilde (N/2,), V (N, N/2): Lambda_im, V from eigh(-i (A + P P^T)),
    Ptilde = V^* P, Btilde = V^* B. Extra ranks (rank > 1) are zero, as in the published code.
    """
    if N % 2:
        raise ValueError(f"d_state: expected an even number (conjugate pairs), got {N}")
    A, B, P = legs(N)
    S = A + np.outer(P, P)
    lam_im, V = np.linalg.eigh(-1j * S)
    # eigh sorts ascending; keep the N/2 modes with positive imaginary part (one of each pair),
    # in the published order (largest frequency last is irrelevant: keep ascending).
    keep = lam_im > 0 if np.count_nonzero(lam_im > 0) == N // 2 else np.argsort(lam_im)[N // 2 :]
    lam_im, V = lam_im[keep], V[:, keep]
    Lambda = -0.5 + 1j * lam_im
    Vh = V.conj().T
    Ptilde = np.zeros((rank, N // 2), dtype=np.complex128)
    Ptilde[0] = Vh @ P
    return Lambda, Ptilde, Vh @ B, V
