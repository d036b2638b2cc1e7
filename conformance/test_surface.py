"""The API surface, bad-input errors, and no NaN / inf on long stable inputs."""

import pytest
from liquidssm.conformance import checks
from liquidssm.conformance.cases import MODULES, PRIMITIVES, STABILITY
from liquidssm.conformance.plugin import run


@pytest.mark.parametrize("target", MODULES + PRIMITIVES)
def test_api(conformance_adapter, target):
    run(checks.check_api, conformance_adapter, target)


@pytest.mark.parametrize(
    "target,scenario",
    [(t, s) for t in MODULES + PRIMITIVES for s in checks.ERROR_SCENARIOS[t]],
    ids=lambda x: x,
)
def test_errors(conformance_adapter, target, scenario):
    run(checks.check_errors, conformance_adapter, target, scenario)


@pytest.mark.parametrize("case", STABILITY, ids=str)
def test_stability(conformance_adapter, case, dtype):
    run(checks.check_stability, conformance_adapter, case, dtype)
