"""Clean-environment sessions: `nox` runs lint, the spec's tests, every backend's conformance and
the benchmark smoke run (the main job in quick mode).

Adding a backend is one line in CONFORMANCE: its pip extras and environment variables.
Every install is constrained by .ci/constraints.txt (pinned torch, jax, triton).
"""

import nox

nox.options.sessions = ["lint", "tests", "conformance", "bench"]
nox.options.reuse_existing_virtualenvs = True

CONSTRAINTS = ".ci/constraints.txt"

#: pytest over every core (pytest-xdist; the conformance report is gathered on the controller).
#: On CI's 2 cores this takes the jax conformance from 8.1 to 5.8 minutes (idle machine).
PYTEST = ("pytest", "-q", "-n", "auto")

#: backend -> (pip extras, environment). The session runs the conformance suite for the backend
#: and that backend's own tests (tests/<package>/) when they exist.
CONFORMANCE = {
    "numpy": ("test", {}),
    "array_api_strict": ("test", {}),
    "torch": ("test,torch,hf,train", {"LIQUIDSSM_TORCH_IMPL": "eager"}),
    "torch-triton": ("test,triton", {"LIQUIDSSM_TORCH_IMPL": "triton", "TRITON_INTERPRET": "1"}),
    "torch-numba": ("test,torch,cpu", {"LIQUIDSSM_TORCH_IMPL": "numba"}),
    # torch and transformers too: tests/jax/test_cross_framework.py, test_readme.py and
    # test_train.py (the cross-framework training equivalence)
    "jax": ("test,jax,torch,hf,train", {}),
    "jax-pallas": ("test,jax", {"LIQUIDSSM_JAX_SCAN": "pallas", "LIQUIDSSM_PALLAS_INTERPRET": "1"}),
}

#: backend -> its own test folder
BACKEND_TESTS = {
    "torch": "tests/torch",
    "torch-triton": "tests/torch/test_triton.py",
    "torch-numba": "tests/torch/test_numba.py",
    "jax": "tests/jax",
    "jax-pallas": "tests/jax/test_pallas.py",
}


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
    ignore = [f"--ignore={d}" for d in sorted(set(BACKEND_TESTS.values()))]
    session.run(*PYTEST, "tests", *ignore, *session.posargs)


@nox.session
@nox.parametrize("backend", list(CONFORMANCE), ids=list(CONFORMANCE))
def conformance(session, backend):
    extras, env = CONFORMANCE[backend]
    install(session, extras)
    report = "conformance-report"  # one matrix: each backend adds its column (report.py)
    session.run(
        *PYTEST, "--pyargs", "liquidssm.conformance", "--backend", backend,
        "--report-dir", report, *session.posargs, env=env,
    )
    if backend in BACKEND_TESTS:
        session.run(*PYTEST, BACKEND_TESTS[backend], *session.posargs, env=env)


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
