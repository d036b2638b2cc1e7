"""The bad-input table (bad_input.py) through the backend under test: every row raises its
exception type with a message naming its argument and saying what was expected; and the edge
cases that are valid (zero batch or length, B and C with different group counts) work."""

import re

import numpy as np
import pytest
from liquidssm.conformance import bad_input
from liquidssm.conformance.adapters import NumpyAdapter
from liquidssm.conformance.bad_input import (
    ROWS,
    SCAN,
    SEL,
    UPD,
    Arrays,
    NoForeign,
    _diag,
    _liquid,
    _sel,
    _upd,
)


@pytest.fixture(scope="module")
def arrays(conformance_adapter):
    return Arrays(conformance_adapter)


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"{r.target}-{r.label}")
def test_bad_input(request, conformance_adapter, arrays, row):
    why = bad_input.pending(row, conformance_adapter.name)
    if why:
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"issue 20: {why}"))
    try:
        call = bad_input.thunk(row, arrays)
    except NoForeign as e:
        pytest.skip(str(e))
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    msg = str(info.value)
    assert isinstance(info.value, row.error), (
        f"raised {type(info.value).__name__}, expected {row.error.__name__}: {msg}")
    assert re.search(rf"(^|[^\w]){re.escape(row.arg)}([^\w]|$)", msg), (
        f"the message does not name {row.arg!r}: {msg}")
    assert "expected" in msg, f"the message does not say what was expected: {msg}"


def _cut(x, batch, length, time_axis):
    x = x[:batch] if batch is not None else x
    if length is None:
        return x
    idx = [slice(None)] * x.ndim
    idx[time_axis] = slice(0, length)
    return x[tuple(idx)]


def _edge_calls():
    """Valid calls at the edges: zero batch, zero length (an empty result; the final state is
    the initial state), B and C with different group counts in selective_state_update."""
    s, e, u = SCAN, SEL, UPD
    for nb, nl in ((0, None), (None, 0)):
        tag = "batch0" if nb == 0 else "length0"

        def cut(x, t=1, nb=nb, nl=nl):
            return _cut(x, nb, nl, t)

        yield f"diag_scan-{tag}", _diag(a=cut(s["a"]), b=cut(s["b"]),
                                        h0=_cut(s["h0"], nb, None, 1))
        yield f"liquid_scan-{tag}", _liquid(a=cut(s["a"]), b=cut(s["b"]), c=cut(s["c"]),
                                            h0=_cut(s["h0p"], nb, None, 1))
        for name in ("selective_scan", "liquid_selective_scan"):
            over = {k: cut(e[k], -1) for k in ("u", "delta", "B", "z")}
            over["initial_state"] = _cut(np.ones((2, 1, 4, 3)) if "liquid" in name
                                         else np.ones((2, 4, 3)), nb, None, 1)
            if "liquid" in name:
                over.update(BL=cut(e["BL"], -1), liquid_degree=1)
            yield f"{name}-{tag}", _sel(name, return_last_state=True, **over)
    yield "selective_state_update-batch0", _upd(**{k: v[:0] for k, v in u.items()
                                                    if k in ("state", "x", "dt", "B", "C", "z")})
    yield "selective_state_update-groups-1-2", _upd()
    yield "selective_state_update-groups-2-1", _upd(B=u["C"], C=u["B"])


EDGES = list(_edge_calls())


@pytest.mark.parametrize("build", [b for _, b in EDGES], ids=[n for n, _ in EDGES])
def test_valid_edges(conformance_adapter, arrays, build):
    import liquidssm.spec as spec

    name, first, kw = build(arrays)
    fn = conformance_adapter.primitive(name)
    head = kw.pop(first)
    got = fn(head, **kw)
    sname, sfirst, skw = build(Arrays(NumpyAdapter()))
    want = getattr(spec, sname)(skw.pop(sfirst), **skw)
    got, want = (got, want) if isinstance(want, tuple) else ((got,), (want,))
    assert len(got) == len(want)
    tol = 1e-10 if arrays.dtype == "float64" else 1e-4
    for g, w in zip(got, want):
        g = conformance_adapter.to_numpy(g)
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol)
