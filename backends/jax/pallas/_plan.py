"""Where the Pallas kernels run and with which block sizes.

A kernel's grid is (batch, channel blocks, sequence blocks). Inside a sequence block of T steps
a fori_loop walks chunks of K steps (K unrolled); the fp32 state is carried across chunks in the
loop and across sequence blocks in the resident last-state output block (the sequence grid axis
is sequential: "arbitrary" on TPU, a plain loop in the interpreter). The forward saves the state
at every chunk start; the backward recomputes a chunk's K states from it.

Per platform:
    tpu        channel block 128 (lanes), T = 128, K = 8; sequence blocks carried on the grid;
               a channel block below its array's axis (channel groups narrower than 128) is
               padded to the 128 lanes, since Mosaic wants a block's last two axes whole or
               tiled by (8, 128) (the kernels' arrays are batch-major: (b, L, d) blocks (T, d))
    gpu        channel block 32, state size padded to a power of two (Triton), K = 8 and one
               sequence block (T = the padded length): the grid is parallel on a GPU, so the
               carry lives in the in-kernel loop only
    interpret  (LIQUIDSSM_PALLAS_INTERPRET=1, any platform) channel block 8, T = 8, K = 4:
               small, so that the tests cross every block boundary
"""

from __future__ import annotations

import dataclasses
import os

import jax

__all__ = ["Plan", "plan", "interpret_requested", "PLANS"]


@dataclasses.dataclass(frozen=True)
class Plan:
    name: str
    chan_block: int  # channel (d or flattened state) block
    chunk: int  # K: steps per unrolled chunk (the recompute granularity of the backward)
    seq_block: int | None  # T (a multiple of K); None: one block over the whole padded length
    pow2: bool  # block shapes must be powers of two (Triton)
    interpret: bool
    lanes: int = 0  # a channel block smaller than its array's axis must be a multiple (TPU)

    def steps(self, length: int) -> int:
        """T for a sequence of `length` steps."""
        k = self.chunk
        if self.seq_block is None:
            return -(-length // k) * k
        return self.seq_block

    def chan(self, size: int, whole: bool = True) -> int:
        """The channel block for `size` channels: the whole axis when it is smaller and the
        block is the whole array axis (whole=False: one of several groups: on TPU, a block
        below the array's axis must fill the lanes, so the group is padded to them)."""
        if size >= self.chan_block:
            return self.chan_block
        if self.lanes and not whole:
            return self.lanes
        return next_pow2(size) if self.pow2 else size


PLANS = {
    "tpu": Plan("tpu", 128, 8, 128, False, False, lanes=128),
    "gpu": Plan("gpu", 32, 8, None, True, False),
    "interpret": Plan("interpret", 8, 4, 8, False, True),
}


def next_pow2(x: int) -> int:
    return 1 << max(0, (x - 1).bit_length())


def interpret_requested() -> bool:
    return os.environ.get("LIQUIDSSM_PALLAS_INTERPRET", "").strip() not in ("", "0")


def plan(platform: str | None = None) -> Plan:
    """The plan for `platform` (default jax.default_backend()); the interpreter's when
    LIQUIDSSM_PALLAS_INTERPRET=1."""
    if interpret_requested():
        return PLANS["interpret"]
    platform = platform or jax.default_backend()
    if platform in ("gpu", "cuda", "rocm"):
        return PLANS["gpu"]
    if platform == "tpu":
        return PLANS["tpu"]
    raise RuntimeError(
        f"LIQUIDSSM_JAX_SCAN=pallas: the Pallas kernels run on GPU and TPU, this platform is "
        f"{platform!r}; set LIQUIDSSM_PALLAS_INTERPRET=1 to run them in the Pallas interpreter "
        f"(slow; for tests) or choose another LIQUIDSSM_JAX_SCAN strategy")


def compiler_params(p: Plan):
    """The sequence grid axis is sequential (the state is carried across it)."""
    if p.name == "tpu":
        from jax.experimental.pallas import tpu as pltpu

        return pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "arbitrary"))
    if p.name == "gpu":  # Triton (newer jax lowers a pallas_call without params to Mosaic GPU)
        from jax.experimental.pallas import triton as pltriton

        return pltriton.CompilerParams()
    return None
