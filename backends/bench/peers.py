"""Other libraries timed on the same shapes, when installed (all PyTorch):

    mambapy           diag_scan (mambapy.pscan, (B, L, H, N) as ours); selective_scan
                      (MambaBlock.selective_scan, Blelloch scan over (B, L, H, N), with the
                      softplus(delta + bias) and silu(z) gate of our op inside the timed call)
    accelerated-scan  diag_scan on (B, H*N, L): accelerated_scan.ref (torch, any device);
                      .scalar (Triton) and .warp (CUDA) on CUDA only
    mamba_ssm         selective_scan (selective_scan_fn, CUDA only)
    s5-pytorch        s5 layer forward: discretize_zoh + apply_ssm per sequence (vmapped); our
                      conj_sym system is passed as its 2 * Ctilde (s5-pytorch has no 2Re fold)
    numba fused-loop  not a library: selective_scan / liquid_selective_scan (BL tied to B, no
                      lcontract) forward as one plain numba loop (prange over B x H, the state
                      in a local array; B, C transposed to (B, L, N) before timing): issue 17's
                      roofline reference, the speed of this op here without a new algorithm

Before timing, a peer's output is compared with the spec (NumPy float64) on the same inputs:
max |peer - spec| / max |spec| must be <= AGREE_RTOL, else the row is a mismatch and not timed.
Layout changes (transposes, reshapes) are made before the timed region.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .. import registry
from . import cases as _cases

__all__ = ["PEERS", "Peer", "AGREE_RTOL", "available", "reference"]

#: fp32 scans over up to 64K steps accumulate rounding; 1e-3 of the output's scale separates
#: rounding (measured <= 2e-5 at L = 8192) from a different computation.
AGREE_RTOL = 1e-3


_RECORDS = {r.key: r for r in registry.PEERS}


@dataclass(frozen=True)
class Peer:
    """How `bench` calls one peer implementation (registry.PEERS: its package, devices, style)
    on one target."""

    key: str  # 'package:impl', a registry.PEERS key
    target: str
    build: Callable  # (torch, device, case, inputs) -> (fn () -> output (B, ...) as ours)

    @property
    def package(self) -> str:  # the distribution name (pip install ...)
        return _RECORDS[self.key].package

    @property
    def module(self) -> str:  # what must import
        return _RECORDS[self.key].module

    @property
    def impl(self) -> str:
        return _RECORDS[self.key].name

    @property
    def cuda_only(self) -> bool:
        return "cpu" not in _RECORDS[self.key].devices


def _diag_bhnl(torch, device, inputs):
    """a, b as (B, H*N, L) contiguous, and the map back to (B, L, H, N)."""
    a, b = (torch.from_numpy(inputs[k]).float().to(device) for k in ("a", "b"))
    B, L, H, N = a.shape
    to = lambda x: x.permute(0, 2, 3, 1).reshape(B, H * N, L).contiguous()  # noqa: E731
    back = lambda y: y.reshape(B, H, N, L).permute(0, 3, 1, 2)  # noqa: E731
    return to(a), to(b), back


def _mambapy_pscan(torch, device, case, inputs):
    from mambapy.pscan import pscan

    a, b = (torch.from_numpy(inputs[k]).float().to(device) for k in ("a", "b"))
    return lambda: pscan(a, b)


def _accel(name):
    def build(torch, device, case, inputs):
        scan = importlib.import_module(f"accelerated_scan.{name}").scan
        a, b, back = _diag_bhnl(torch, device, inputs)
        return lambda: back(scan(a, b))

    return build


def _selective_inputs(torch, device, inputs, layout_bld):
    t = {k: torch.from_numpy(np.ascontiguousarray(v)).float().to(device)
         for k, v in inputs.items()}
    if layout_bld:  # (B, L, H) / (B, L, N)
        for k in ("u", "delta", "z", "B", "C"):
            t[k] = t[k].transpose(1, 2).contiguous()
    return t


def _mambapy_selective(torch, device, case, inputs):
    import torch.nn.functional as F
    from mambapy.mamba import MambaBlock

    t = _selective_inputs(torch, device, inputs, True)

    def fn():
        delta = F.softplus(t["delta"] + t["delta_bias"])
        y = MambaBlock.selective_scan(None, t["u"], delta, t["A"], t["B"], t["C"], t["D"])
        return (y * F.silu(t["z"])).transpose(1, 2)

    return fn


def _mamba_ssm_selective(torch, device, case, inputs):
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    t = _selective_inputs(torch, device, inputs, False)
    return lambda: selective_scan_fn(t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"],
                                     z=t["z"], delta_bias=t["delta_bias"], delta_softplus=True)


def _s5_pytorch(torch, device, case, inputs):
    from s5.s5_model import apply_ssm, discretize_zoh

    spec_s5 = importlib.import_module("liquidssm.spec.s5")
    cfg = _cases.variant_config(spec_s5, "s5", case)
    p = {k: torch.from_numpy(v).to(device) for k, v in spec_s5.init(cfg, 0).items()}
    Lam = torch.complex(p["Lambda_re"], p["Lambda_im"]).to(torch.complex64)
    Bt = torch.complex(p["B_re"], p["B_im"]).to(torch.complex64)
    C2 = (2 * torch.complex(p["C_re"], p["C_im"])).to(torch.complex64)
    D, log_step = p["D"].float(), p["log_step"].float()
    u = torch.from_numpy(inputs["u"]).float().to(device)

    def fn():
        Lb, Bb = discretize_zoh(Lam, Bt, cfg.step_rescale * torch.exp(log_step))
        return torch.vmap(lambda x: apply_ssm(Lb, Bb, C2, D, x)[0])(u)

    return fn


def fused_loop(inputs: dict, degree: int = 1) -> Callable:
    """fn() -> out (B, H, L) float32 NumPy: the selective scan of degree `degree` on `inputs`
    (cases.op_inputs' names and layout) as one numba loop, per (batch i, channel c):
        dt = softplus(delta + bias);  x = dt u B_t;  h0 <- exp(dt A) h0 + x;
        hm <- exp(dt A) hm + x h(m-1) (old value);  out = (C_t . sum_m hm + D u) silu(z)."""
    import math

    import numba as nb

    @nb.njit(parallel=True, fastmath=True, cache=True)
    def loop(u, delta, A, Bt, Ct, D, z, bias, p, out):
        b, d, l = u.shape
        n = A.shape[1]
        for job in nb.prange(b * d):
            i, ch = job // d, job % d
            h = np.zeros((p, n), np.float32)
            a = np.empty(n, np.float32)
            for t in range(l):
                v = delta[i, ch, t] + bias[ch]
                dt = v if v > 20.0 else np.float32(math.log1p(math.exp(v)))
                ut = u[i, ch, t]
                for k in range(n):
                    a[k] = math.exp(dt * A[ch, k])
                y = np.float32(0.0)
                for k in range(n):
                    xk = dt * ut * Bt[i, t, k]
                    for m in range(p - 1, 0, -1):  # level m reads level m - 1's old value
                        h[m, k] = a[k] * h[m, k] + xk * h[m - 1, k]
                    h[0, k] = a[k] * h[0, k] + xk
                    tot = h[0, k]
                    for m in range(1, p):
                        tot += h[m, k]
                    y += Ct[i, t, k] * tot
                zt = z[i, ch, t]
                out[i, ch, t] = (y + D[ch] * ut) * zt / (np.float32(1.0) + math.exp(-zt))

    f = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in inputs.items()}
    Bt, Ct = (np.ascontiguousarray(f[k].transpose(0, 2, 1)) for k in ("B", "C"))
    out = np.empty_like(f["u"])
    args = (f["u"], f["delta"], f["A"], Bt, Ct, f["D"], f["z"], f["delta_bias"], degree, out)

    def fn():
        loop(*args)
        return out

    return fn


def _fused_loop(degree):
    def build(torch, device, case, inputs):
        fn = fused_loop(inputs, degree)
        return lambda: torch.from_numpy(fn())

    return build


PEERS = (
    Peer("mambapy:pscan", "diag_scan", _mambapy_pscan),
    Peer("accelerated-scan:ref", "diag_scan", _accel("ref")),
    Peer("accelerated-scan:triton", "diag_scan", _accel("scalar")),
    Peer("accelerated-scan:warp", "diag_scan", _accel("warp")),
    Peer("mambapy:pscan", "selective_scan", _mambapy_selective),
    Peer("mamba_ssm:cuda", "selective_scan", _mamba_ssm_selective),
    Peer("s5-pytorch:apply_ssm", "s5", _s5_pytorch),
    Peer("numba:fused-loop", "selective_scan", _fused_loop(1)),
    Peer("numba:fused-loop", "liquid_selective_scan", _fused_loop(2)),
)


def available(peer: Peer, cuda: bool) -> str | None:
    """None if the peer can run here, else the reason it cannot."""
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed"
    if importlib.util.find_spec(peer.module) is None:
        return f"{peer.package} is not installed (pip install {peer.package})"
    if peer.cuda_only and not cuda:
        return f"{peer.package} ({peer.impl}) runs on CUDA only"
    return None


def version(peer: Peer) -> str:
    try:
        return importlib.metadata.version(peer.package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def peer_inputs(case) -> dict[str, np.ndarray]:
    if case.kind == "layer":
        rng = np.random.default_rng(0)
        return {"u": rng.normal(size=(case.batch, case.length, case.channels))}
    return _cases.op_inputs(case)


def reference(case, inputs) -> np.ndarray:
    """The spec's float64 output for the peer case's inputs (our layout)."""
    from liquidssm import spec

    if case.target == "diag_scan":
        return spec.diag_scan(inputs["a"], inputs["b"])
    if case.target == "selective_scan":
        i = inputs
        return spec.selective_scan(i["u"], i["delta"], i["A"], i["B"], i["C"], i["D"], i["z"],
                                   i["delta_bias"], delta_softplus=True)
    if case.target == "liquid_selective_scan":
        i = inputs
        return spec.liquid_selective_scan(i["u"], i["delta"], i["A"], i["B"], i["C"], i["D"],
                                          i["z"], i["delta_bias"], delta_softplus=True,
                                          liquid_degree=2)
    if case.target == "s5":
        cfg = _cases.variant_config(spec.s5, "s5", case)
        return spec.s5.forward(cfg, spec.s5.init(cfg, 0), inputs["u"])
    raise ValueError(f"case.target: expected one of diag_scan, selective_scan, "
                     f"liquid_selective_scan, s5, got "
                     f"{case.target!r}")
