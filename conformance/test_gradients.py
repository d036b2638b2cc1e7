"""Gradients (vjp) vs the fixtures' reference directional derivatives and exact vjps."""

import pytest
from liquidssm.conformance import checks
from liquidssm.conformance.cases import CASES
from liquidssm.conformance.plugin import run


@pytest.mark.parametrize("case", CASES, ids=str)
def test_gradients(conformance_adapter, case, dtype):
    run(checks.check_gradients, conformance_adapter, case, dtype)
