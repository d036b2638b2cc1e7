"""Clean-environment sessions: `nox` runs lint, the spec's tests, every backend's conformance and
the benchmark smoke run (the main job in quick mode).

The conformance sessions are the implementations of backends/registry.py: adding one is a
record there (its pip extras, selecting environment, tests).
Every install is constrained by .ci/constraints.txt (pinned torch, jax, triton).
"""

import importlib.util
import sys
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests", "conformance", "bench"]
nox.options.reuse_existing_virtualenvs = True

CONSTRAINTS = ".ci/constraints.txt"

#: pytest over every core (pytest-xdist; the conformance report is gathered on the controller).
#: On CI's 2 cores this takes the jax conformance from 8.1 to 5.8 minutes (idle machine).
PYTEST = ("pytest", "-q", "-n", "auto")


def _registry():
    """backends/registry.py, loaded by path (liquidssm is not installed where nox runs)."""
    path = Path(__file__).parent / "backends" / "registry.py"
    spec = importlib.util.spec_from_file_location("liquidssm_registry", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while building classes
    spec.loader.exec_module(module)
    return module


#: one conformance session per registered implementation that names one (Implementation.
#: conformance): its pip extras, the environment that selects it (and on this CPU-only machine
#: runs a GPU kernel in its interpreter), and its own tests
SESSIONS = _registry().conformance()


def install(session, extras):
    session.install("-c", CONSTRAINTS, "-e", f".[{extras}]")
    if "train" in extras.split(","):  # the gunpoint task reads only the aeon wheel's data files
        session.install("-c", CONSTRAINTS, "--no-deps", "aeon")


@nox.session
def lint(session):
    session.install("ruff")
    session.run("ruff", "check", ".")


@nox.session
def tests(session):
    """The specification's own tests (NumPy and array-api-strict), the front package, the
    conformance suite's own tests and the command line (everything outside tests/<backend>/)."""
    install(session, "test,bench,train")
    ignore = [f"--ignore={t}" for i in SESSIONS.values() for t in i.tests]
    session.run(*PYTEST, "tests", *ignore, *session.posargs)


@nox.session
@nox.parametrize("backend", list(SESSIONS), ids=list(SESSIONS))
def conformance(session, backend):
    impl = SESSIONS[backend]
    env = {**impl.select, **impl.interpret_env}
    install(session, impl.extras)
    report = "conformance-report"  # one matrix: each backend adds its column (report.py)
    session.run(
        *PYTEST, "--pyargs", "liquidssm.conformance", "--backend", backend,
        "--report-dir", report, *session.posargs, env=env,
    )
    if impl.tests:
        session.run(*PYTEST, *impl.tests, *session.posargs, env=env)


@nox.session
def fixtures(session):
    """Regenerate the conformance fixtures from the spec (commit the result)."""
    install(session, "test")
    session.run("python", "-m", "liquidssm.conformance.fixtures")


@nox.session
def bench(session):
    """The main job, `liquidssm bench --quick`: every installed backend and peer on the smoke
    sweep, rows + tables + plots in bench-quick/ (a smoke run: no timing is asserted)."""
    install(session, "all")
    session.run("liquidssm", "info")
    session.run("liquidssm", "bench", "--quick", "--no-progress", "--out", "bench-quick",
                *session.posargs)
