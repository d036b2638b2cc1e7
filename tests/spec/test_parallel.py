"""spec.parallel: a liquid scan split into slices, each rerun from the levels the fold of the
slices' maps (G, h) gives it, equals the one-piece scan (NumPy, float64)."""

import numpy as np
import pytest
from liquidssm.spec import parallel, scan


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("p", [1, 3])
def test_slices_rerun_from_their_fold_equal_the_whole_scan(p, reverse):
    rng = np.random.default_rng(0)
    b, L, S, k = 2, 12, (3,), 3
    a = 0.4 + 0.5 * rng.random((b, L, *S))
    x, c = rng.standard_normal((b, L, *S)), 0.3 * rng.standard_normal((b, L, *S))
    h0 = rng.standard_normal((b, p, *S))
    y, last = scan.liquid_scan(a, x, c, h0, degree=p, reverse=reverse)

    levels_first = lambda v: np.moveaxis(v, 1, 0)  # noqa: E731  (b, p, ...) <-> (p, b, ...)
    parts = [slice(i * L // k, (i + 1) * L // k) for i in range(k)]
    unit = np.moveaxis(parallel.unit_levels(levels_first(np.zeros_like(h0))), 0, 1)
    Gs, hs = [], []
    for s in parts:
        Gs.append(levels_first(scan.liquid_scan(a[:, s], 0 * x[:, s], c[:, s], unit, degree=p,
                                                reverse=reverse)[1]))
        hs.append(levels_first(scan.liquid_scan(a[:, s], x[:, s], c[:, s], None, degree=p,
                                                reverse=reverse)[1]))
    starts, final = parallel.entries_and_final(np.stack(Gs), np.stack(hs), levels_first(h0),
                                               reverse)
    ys = [scan.liquid_scan(a[:, s], x[:, s], c[:, s], np.moveaxis(starts[i], 0, 1), degree=p,
                           reverse=reverse)[0] for i, s in enumerate(parts)]
    np.testing.assert_allclose(np.concatenate(ys, axis=1), y, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.moveaxis(final, 0, 1), last, rtol=0, atol=1e-12)


def test_compose_is_applying_one_map_after_the_other():
    rng = np.random.default_rng(1)
    f, g = [(rng.standard_normal((3, 4)), rng.standard_normal((3, 4))) for _ in range(2)]
    H = rng.standard_normal((3, 4))
    np.testing.assert_allclose(parallel.apply(parallel.compose(f, g), H),
                               parallel.apply(g, parallel.apply(f, H)), rtol=1e-12, atol=1e-12)
