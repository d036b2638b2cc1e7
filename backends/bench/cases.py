"""What is measured: cases (op or layer, mode, dtype, shape) and the sweeps that list them.

Shape fields: batch B, length L, channels H (d for the selective scans, d_model for layers),
state N. Inputs per op (float64 NumPy, seed 0, then cast):
    diag_scan              a (B, L, H, N) in [0.5, 1), b (B, L, H, N);  h_t = a_t h_{t-1} + b_t
    liquid_scan            a, b, c (B, L, H, N), degree 2
    selective_scan         u, delta, z (B, H, L); A (H, N); B, C (B, N, L); D, delta_bias (H,);
                           delta_softplus
    liquid_selective_scan  the same, liquid_degree 2
    s4d_kernel, s4_kernel  kernel(config(d_model=H, d_state=N), params, L) -> (H, L)
    fft_conv               causal_fft_conv(u (B, H, L), K (H, L))
Layers: every variant's forward (u (B, L, H)), forward + backward (gradient of sum(y) with
respect to u and every parameter) and step (u_t (B, H), from the initial state).
`bytes_moved` is the minimal traffic of an op (inputs read once, outputs written once).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..spec import VARIANTS  # the one list of variants

OPS = ("diag_scan", "liquid_scan", "selective_scan", "liquid_selective_scan", "s4d_kernel",
       "s4_kernel", "fft_conv")
SCAN_OPS = OPS[:4]
FP32_ONLY = ("s4d_kernel", "s4_kernel", "fft_conv")  # complex / FFT paths: no bf16
MODES = ("fwd", "fwd+bwd", "step")
DTYPES = ("float32", "bfloat16")
ITEMSIZE = {"float32": 4, "bfloat16": 2, "float64": 8}

__all__ = ["OPS", "VARIANTS", "MODES", "DTYPES", "Case", "Sweep", "SWEEPS", "sweep",
           "uses_scan", "variant_config", "op_inputs", "bytes_moved"]


@dataclass(frozen=True)
class Case:
    """One measurement: target (an op or a variant), kind (op | layer), mode, dtype, shape, and
    the sweep axis it belongs to (length | batch | channels | state)."""

    target: str
    kind: str
    mode: str
    dtype: str
    batch: int
    length: int
    channels: int
    state: int
    axis: str = "length"

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Sweep:
    """Lengths per kind (ops; layer forward and step; layer forward + backward) at the base shape
    (batch, channels, state); ops and layer forwards also at other batch / channel / state
    values at `length_at`.
    float32 everywhere; bfloat16 too at `bf16_lengths` (length axis)."""

    op_lengths: tuple[int, ...]
    layer_lengths: tuple[int, ...]
    grad_lengths: tuple[int, ...]
    batch: int
    channels: int
    state: int
    length_at: int
    batches: tuple[int, ...] = ()
    channel_values: tuple[int, ...] = ()
    states: tuple[int, ...] = ()
    bf16_lengths: tuple[int, ...] = ()


SWEEPS = {
    # --quick: three short lengths (lines in the plots), tiny shapes (a smoke run: about 2 min
    # on 2 CPU cores)
    "quick-cpu": Sweep((64, 128, 256), (64, 128, 256), (64, 128, 256), 1, 16, 8, 256),
    "quick-cuda": Sweep((1024, 2048, 4096), (1024, 2048, 4096), (1024, 2048, 4096), 2, 64, 16,
                        4096, bf16_lengths=(4096,)),
    "cpu": Sweep((256, 1024, 4096, 8192), (256, 1024, 4096), (1024,), 2, 32, 16, 1024,
                 batches=(8,), channel_values=(128,), states=(64,), bf16_lengths=(1024,)),
    "cuda": Sweep((1024, 4096, 16384, 65536), (1024, 4096, 16384), (1024, 4096), 4, 256, 16,
                  4096, batches=(16,), channel_values=(1024,), states=(64,),
                  bf16_lengths=(1024, 4096, 16384, 65536)),
}

#: the NumPy spec is a sequential reference: only small sizes
NUMPY_MAX_WORK = 2 * 1024 * 32 * 16  # batch * length * channels * state
#: layers whose forward runs a diag / liquid / selective scan (S4D and S4 run as FFT convolutions)
SCAN_VARIANTS = ("liquid_s4", "s5", "liquid_s5", "mamba", "liquid_mamba")


def uses_scan(case: Case) -> bool:
    """Whether a scan strategy (LIQUIDSSM_JAX_SCAN) can change the case's time."""
    if case.kind == "op":
        return case.target in SCAN_OPS
    return case.target in SCAN_VARIANTS and case.mode != "step"


def sweep(name: str, targets=None, modes=None) -> list[Case]:
    """The cases of sweep `name` (quick-cpu, quick-cuda, cpu, cuda), restricted to `targets`
    (ops / variants) and `modes` when given; each series in increasing length."""
    if name not in SWEEPS:
        raise ValueError(f"sweep: expected one of {sorted(SWEEPS)}, got {name!r}")
    s = SWEEPS[name]
    others = [("batch", b, s.length_at, s.channels, s.state) for b in s.batches]
    others += [("channels", s.batch, s.length_at, h, s.state) for h in s.channel_values]
    others += [("state", s.batch, s.length_at, s.channels, n) for n in s.states]
    plan = [(op, "op", "fwd", s.op_lengths, others) for op in OPS]
    for v in VARIANTS:
        plan += [(v, "layer", "fwd", s.layer_lengths, others),
                 (v, "layer", "fwd+bwd", s.grad_lengths, []),
                 (v, "layer", "step", s.layer_lengths[:1], [])]  # a step does not depend on L
    cases = []
    for target, kind, mode, lengths, extra in plan:
        if (targets and target not in targets) or (modes and mode not in modes):
            continue
        for dtype in DTYPES:
            if dtype != "float32" and target in FP32_ONLY:
                continue
            Ls = lengths if dtype == "float32" else [L for L in lengths if L in s.bf16_lengths]
            shapes = [("length", s.batch, L, s.channels, s.state) for L in Ls]
            shapes += extra if dtype == "float32" else []
            cases += [Case(target, kind, mode, dtype, b, L, h, n, axis)
                      for axis, b, L, h, n in shapes]
    return cases


def variant_config(module, variant: str, case: Case):
    """The variant's Config for the case's shape (d_model = channels, d_state = state)."""
    H, N = case.channels, case.state
    extra = {"s4": {"l_max": case.length}, "liquid_s4": {"l_max": case.length},
             "s5": {"blocks": 1}, "liquid_s5": {"blocks": 1}}.get(variant, {})
    return module.Config(d_model=H, d_state=N, **extra)


def op_inputs(case: Case) -> dict[str, np.ndarray]:
    """The float64 NumPy inputs of an op case (see the module docstring)."""
    rng = np.random.default_rng(0)
    B, L, H, N = case.batch, case.length, case.channels, case.state
    if case.target in ("diag_scan", "liquid_scan"):
        out = {"a": rng.uniform(0.5, 1.0, (B, L, H, N)), "b": rng.normal(size=(B, L, H, N))}
        if case.target == "liquid_scan":
            out["c"] = 0.1 * rng.normal(size=(B, L, H, N))
        return out
    if case.target in ("selective_scan", "liquid_selective_scan"):
        return {
            "u": rng.normal(size=(B, H, L)),
            "delta": 0.5 * rng.normal(size=(B, H, L)),
            "A": -np.broadcast_to(np.arange(1.0, N + 1), (H, N)).copy(),
            "B": rng.normal(size=(B, N, L)),
            "C": rng.normal(size=(B, N, L)),
            "D": np.ones(H),
            "z": rng.normal(size=(B, H, L)),
            "delta_bias": np.full(H, -2.0),
        }
    if case.target == "fft_conv":
        return {"u": rng.normal(size=(B, H, L)), "K": rng.normal(size=(H, L)) / L}
    return {}


def bytes_moved(case: Case) -> int | None:
    """Minimal bytes read + written by an op case (None for layers)."""
    B, L, H, N = case.batch, case.length, case.channels, case.state
    e = ITEMSIZE[case.dtype]
    big = B * L * H * N
    if case.target == "diag_scan":
        return 3 * big * e
    if case.target == "liquid_scan":
        return 4 * big * e + 2 * B * H * N * e  # a, b, c in, y out; h_last (B, 2, H, N)
    if case.target in ("selective_scan", "liquid_selective_scan"):
        # u, delta, z, out (B, H, L) and B, C (B, N, L); A (H, N), D, delta_bias in float32
        return (4 * B * H * L + 2 * B * N * L) * e + (H * N + 2 * H) * 4
    if case.target in ("s4d_kernel", "s4_kernel"):
        return H * L * e
    if case.target == "fft_conv":
        return (2 * B * H * L + H * L) * e
    return None
