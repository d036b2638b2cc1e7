"""JAX backend tests: float64 needs x64, which is a global jax switch (set once, here).

Arrays the tests want in float32 are created as float32 explicitly.
"""

import pytest

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)


@pytest.fixture
def small_chunks(monkeypatch):
    """The default (auto) strategy with chunks of 4 steps, so that short sequences span several
    chunks (the last one padded). Functions must be traced afresh under it (new lambdas)."""
    import liquidssm.jax.scans as scans

    monkeypatch.delenv("LIQUIDSSM_JAX_SCAN", raising=False)
    monkeypatch.setattr(scans, "CHUNK", 4)


@pytest.fixture(params=["sequential", "associative", "chunked"])
def strategy(request, monkeypatch, small_chunks):
    """Each scan strategy (LIQUIDSSM_JAX_SCAN), with chunks of 4 steps."""
    monkeypatch.setenv("LIQUIDSSM_JAX_SCAN", request.param)
    return request.param
