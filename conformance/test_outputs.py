"""Outputs and final states vs the fixtures; the dtype policy; step == forward; chunked forward
== one forward."""

import pytest
from liquidssm.conformance import checks
from liquidssm.conformance.cases import CASES, DTYPE_CASES
from liquidssm.conformance.plugin import run


@pytest.mark.parametrize("case", CASES, ids=str)
def test_outputs(conformance_adapter, case, dtype):
    run(checks.check_outputs, conformance_adapter, case, dtype)


@pytest.mark.io_dtypes  # dtype runs over the adapter's io_dtypes
@pytest.mark.parametrize("case", DTYPE_CASES, ids=str)
def test_dtypes(conformance_adapter, case, dtype):
    run(checks.check_dtypes, conformance_adapter, case, dtype)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_step(conformance_adapter, case, dtype):
    run(checks.check_step, conformance_adapter, case, dtype)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_chunked(conformance_adapter, case, dtype):
    run(checks.check_chunked, conformance_adapter, case, dtype)
