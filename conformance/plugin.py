"""The pytest plugin of the conformance suite.

    pytest --pyargs liquidssm.conformance --backend <name>
           [--device cpu|cuda] [--report-dir DIR] [--no-report]

Installing liquidssm registers this module as the pytest11 entry point `liquidssm_conformance`
(pytest reads options only from plugins and rootdir conftests, not from a package's conftest
under --pyargs). The plugin acts only on the conformance test modules, so being loaded in other
pytest runs changes nothing there.

--backend: numpy | array_api_strict | torch | torch-triton | jax | package.module:AdapterClass.
The `dtype` parameter of the checks runs over the adapter's dtypes (its io_dtypes for tests
marked io_dtypes: the dtype check). At the end the session prints
the target x check matrix and writes the report (report.py) to --report-dir.
"""

from __future__ import annotations

import pytest

from . import adapters, report
from .adapters import Unsupported

_ADAPTER = pytest.StashKey()
_RECORDS = pytest.StashKey()


def pytest_addoption(parser):
    g = parser.getgroup("liquidssm-conformance")
    g.addoption("--backend", default="numpy",
                help="backend to check: " + " | ".join(adapters.BUILTIN)
                + " | package.module:AdapterClass (default numpy)")
    g.addoption("--device", default="cpu", choices=("cpu", "cuda"), help="device (default cpu)")
    g.addoption("--report-dir", default="conformance-report",
                help="where report.md / report.json go (default ./conformance-report)")
    g.addoption("--no-report", action="store_true", help="write no report files")


#: the records of this pytest session (logreport gets no config argument)
_RECORDS_OF: dict = {}


def pytest_configure(config):
    config.stash[_RECORDS] = _RECORDS_OF["records"] = []
    config.addinivalue_line("markers", "io_dtypes: dtype runs over the adapter's io_dtypes")


def get_adapter(config) -> adapters.Adapter:
    if _ADAPTER not in config.stash:
        name, device = config.getoption("--backend"), config.getoption("--device")
        try:
            config.stash[_ADAPTER] = adapters.get(name, device)
        except ImportError as e:
            raise pytest.UsageError(f"--backend {name}: cannot import the backend: {e}") from e
    return config.stash[_ADAPTER]


def _ours(module_name: str) -> bool:
    return "conformance" in module_name.split(".")[:-1]


def pytest_generate_tests(metafunc):
    if "dtype" in metafunc.fixturenames and _ours(metafunc.module.__name__):
        ad = get_adapter(metafunc.config)
        io = metafunc.definition.get_closest_marker("io_dtypes") is not None
        metafunc.parametrize("dtype", ad.io_dtypes if io else ad.dtypes)


@pytest.fixture(scope="session")
def conformance_adapter(request):
    """The adapter of --backend."""
    return get_adapter(request.config)


def run(check, *args):
    """Run a check; Unsupported becomes a skip with its reason."""
    try:
        check(*args)
    except Unsupported as e:
        pytest.skip(str(e))


def _target_and_check(item):
    params = getattr(getattr(item, "callspec", None), "params", {})
    case = params.get("case")
    target = case.target if case is not None else params.get("target", "?")
    return target, item.originalname.removeprefix("test_"), params.get("dtype")


_RECORD = "liquidssm_conformance_record"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach this test's matrix record to its report (user_properties travel with the report
    from a pytest-xdist worker to the controller, which collects them in logreport below)."""
    outcome = yield
    rep = outcome.get_result()
    if not _ours(getattr(item.module, "__name__", "")):
        return
    if rep.when == "call" or (rep.when == "setup" and not rep.passed):
        target, check, dtype = _target_and_check(item)
        if rep.skipped:
            reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
            reason = reason.removeprefix("Skipped: ")
        elif rep.failed:
            crash = getattr(rep.longrepr, "reprcrash", None)
            reason = crash.message if crash is not None else str(rep.longrepr)[-500:]
        else:
            reason = ""
        rep.user_properties.append((_RECORD, {
            "test": item.nodeid.split("::", 1)[-1], "target": target, "check": check,
            "dtype": dtype, "outcome": "failed" if rep.failed else rep.outcome,
            "reason": reason.splitlines()[0][:300] if reason else "",
        }))


def pytest_runtest_logreport(report):
    """Runs in the process that reports (the only one without xdist, the controller with it)."""
    records = _RECORDS_OF.get("records")
    if records is None:
        return
    records.extend(value for key, value in report.user_properties if key == _RECORD)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    records = config.stash.get(_RECORDS, [])
    if not records or hasattr(config, "workerinput"):  # a worker: the controller writes it
        return
    ad = get_adapter(config)
    terminalreporter.write_sep("=", "liquidssm conformance")
    terminalreporter.write_line(report.terminal_matrix(ad.name, records))
    if not config.getoption("--no-report"):
        directory = config.getoption("--report-dir")
        meta = {"device": ad.device, "dtypes": list(ad.dtypes)}
        report.write(directory, ad.name, meta, records)
        terminalreporter.write_line(f"report written to {directory}/report.md and report.json")
