"""JAX backend tests: float64 needs x64, which is a global jax switch (set once, here).

Arrays the tests want in float32 are created as float32 explicitly.
"""

import pytest

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)


@pytest.fixture(params=["sequential", "associative", "chunked"])
def strategy(request, monkeypatch):
    """Each scan strategy, with chunks of 4 steps so that short sequences span several chunks
    (and the last one is padded). Functions must be traced afresh under it (new lambdas)."""
    import liquidssm.jax.scans as scans

    monkeypatch.setenv("LIQUIDSSM_JAX_SCAN", request.param)
    monkeypatch.setattr(scans, "CHUNK", 4)
    return request.param
