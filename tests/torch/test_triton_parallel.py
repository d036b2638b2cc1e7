"""DDP and FSDP2 through the Triton kernels: tests/torch/test_data_parallel.py's ranks with
LIQUIDSSM_TORCH_IMPL=triton, in the Triton interpreter on CPU tensors (the torch-triton
session runs this file)."""

import pytest
from _ranks import run_ranks
from test_data_parallel import _RANK, HERE, MAMBA_FAMILY, WORLD


def test_ddp_and_fsdp2_with_the_triton_kernels():
    """The Triton custom ops (forward and backward kernels, run by the Triton interpreter on CPU
    tensors: float32 and small shapes only) compose with DDP's and FSDP2's autograd hooks:
    the one-process result to 1e-5 (float32; the gradient is summed over ranks in another
    order than in one process; measured <= 6.0e-8, LiquidMamba)."""
    pytest.importorskip("triton")
    errors = run_ranks(_RANK, WORLD, TESTS=str(HERE), LIQUIDSSM_TORCH_IMPL="triton",
                       TRITON_INTERPRET="1", DTYPE="float32", KEYS=",".join(MAMBA_FAMILY),
                       timeout=600)
    assert len(errors) == 2 * len(MAMBA_FAMILY)
    bad = {k: e for k, (e, moved) in errors.items() if not (e <= 1e-5 and moved > 1e-4)}
    assert not bad, errors
