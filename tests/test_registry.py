"""The registry is the one list of backends, implementations and peers: every reader agrees
with it, and a new record reaches every reader."""

import dataclasses
import importlib.util
import sys
import types
from pathlib import Path

import liquidssm
import pytest
from liquidssm import cli, registry
from liquidssm.bench import peers, report, runner
from liquidssm.conformance import adapters

ROOT = Path(__file__).resolve().parents[1]


def _noxfile(monkeypatch):
    """noxfile.py imported with a stand-in `nox` (the tests session does not install nox)."""
    nox = types.ModuleType("nox")
    nox.options = types.SimpleNamespace()
    nox.session = lambda fn: fn
    nox.parametrize = lambda *args, **kwargs: (lambda fn: fn)
    monkeypatch.setitem(sys.modules, "nox", nox)
    spec = importlib.util.spec_from_file_location("noxfile_under_test", ROOT / "noxfile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_records_are_complete_and_unique():
    keys = [r.key for r in (*registry.IMPLEMENTATIONS, *registry.PEERS)]
    assert len(keys) == len(set(keys))
    styles = list(registry.styles().values())
    assert len(styles) == len(set(styles)), "two series would look the same in a plot"
    for impl in registry.IMPLEMENTATIONS:
        assert impl.backend in registry.BACKENDS
        assert set(impl.bench) <= set(impl.devices) | {"cpu"}, impl.key
        assert impl.bench_cases in ("all", "scan", "other")
        assert set(impl.dtypes) <= {"float64", "float32", "bfloat16"}
        for path in impl.tests:
            assert (ROOT / path).exists(), path
        if impl.needs:
            assert impl.extra, f"{impl.key}: an extra must install {impl.needs}"
    with pytest.raises(KeyError, match="known"):
        registry.get("torch:nope")


def test_every_reader_lists_the_registry(monkeypatch):
    sessions = registry.conformance()
    assert list(_noxfile(monkeypatch).SESSIONS) == list(sessions)
    assert list(adapters.BUILTIN) == list(sessions)
    for name, impl in sessions.items():
        assert adapters.BUILTIN[name].__name__ == impl.adapter
    assert list(liquidssm.BACKENDS) == list(registry.BACKENDS)
    assert {b for b in runner.BACKENDS if b != "peers"} == set(registry.BACKENDS)
    assert report.STYLES == registry.styles()
    assert {p.key for p in peers.PEERS} == {p.key for p in registry.PEERS}
    lines = "\n".join(cli.info_lines())
    for impl in registry.IMPLEMENTATIONS:
        if importlib.util.find_spec(registry.BACKENDS[impl.backend].package):
            assert f"    {impl.name:16} {impl.summary}" in lines


def test_torch_choices_are_the_registry():
    pytest.importorskip("torch")
    from liquidssm.torch import _impl

    assert _impl.CHOICES == ("auto", *registry.names("torch"))


def test_jax_strategies_are_the_registry():
    pytest.importorskip("jax")
    from liquidssm.jax import scans

    assert scans.STRATEGIES == registry.names("jax")


def test_a_new_record_reaches_bench_check_and_info(monkeypatch):
    """Adding an implementation is one record: the bench groups, the conformance sessions and
    `liquidssm info` pick it up (its code and adapter aside)."""
    new = dataclasses.replace(registry.get("torch:numba"), name="mykernel",
                              summary="my kernels", style=("#123456", "H"),
                              conformance="torch-mykernel", adapter="TorchNumbaAdapter")
    monkeypatch.setattr(registry, "IMPLEMENTATIONS", (*registry.IMPLEMENTATIONS, new))
    assert registry.conformance()["torch-mykernel"] is new
    assert registry.names("torch")[-1] == "mykernel"
    if importlib.util.find_spec("torch") and importlib.util.find_spec("numba"):
        assert ("torch", "mykernel") in runner.groups(["torch"], "cpu")
        assert "    mykernel         my kernels" in "\n".join(cli.info_lines())
    assert registry.styles()["torch:mykernel"] == ("#123456", "H")


def test_a_new_torch_record_is_chosen_without_other_edits(monkeypatch):
    """torch's choice reads the records: a new one with a module of the backend's primitive
    names is a valid LIQUIDSSM_TORCH_IMPL, and auto picks it for a primitive only it has a
    kernel for."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("numba")
    from liquidssm.torch import _impl

    numba = registry.get("torch:numba")
    new = dataclasses.replace(numba, name="mykernel", style=("#123456", "H"), conformance=None,
                              kernels=("selective_state_update",))
    # the numba record without its selective_state_update kernel: the new one alone has it
    trimmed = dataclasses.replace(numba, kernels=tuple(k for k in numba.kernels
                                                       if k != "selective_state_update"))
    records = tuple(trimmed if r is numba else r for r in registry.IMPLEMENTATIONS)
    monkeypatch.setattr(registry, "IMPLEMENTATIONS", (*records, new))
    x = torch.zeros(1, 1, 1)
    monkeypatch.setenv("LIQUIDSSM_TORCH_IMPL", "mykernel")
    assert _impl.implementation(x, "diag_scan") == "mykernel"
    monkeypatch.setenv("LIQUIDSSM_TORCH_IMPL", "auto")
    assert _impl.implementation(x, "selective_state_update") == "mykernel"
    assert _impl.implementation(x, "diag_scan") == "numba"  # the earlier record first


def test_groups_follow_bench_devices():
    cpu = runner.groups(list(registry.BACKENDS), "cpu")
    cuda = runner.groups(list(registry.BACKENDS), "cuda:0")
    for impl in registry.IMPLEMENTATIONS:
        if impl.needs and not all(importlib.util.find_spec(p) for p in impl.packages):
            continue
        if not importlib.util.find_spec(registry.BACKENDS[impl.backend].package):
            continue
        assert ((impl.backend, impl.name) in cpu) == ("cpu" in impl.bench), impl.key
        assert ((impl.backend, impl.name) in cuda) == ("cuda" in impl.bench), impl.key
    quick = runner.groups(list(registry.BACKENDS), "cpu", quick=True)
    assert all(registry.get(f"{b}:{i}").quick for b, i in quick)
