"""The README's python code blocks run as written (in order, in one namespace, in a temporary
directory); a block preceded by a `<!-- no-test -->` line is skipped. Needs torch and jax (the
README shows both)."""

import re
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("flax")
pytest.importorskip("optax")
pytest.importorskip("safetensors")

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(r"(<!-- no-test -->\s*\n)?```python\n(.*?)```", re.S)


def blocks():
    return [code for skip, code in BLOCK.findall(README.read_text()) if not skip]


def test_readme_has_the_framework_examples():
    code = "\n".join(blocks())
    for needle in ("lnn.SequenceModel", "lnn.MambaLM", "param_groups", ".generate(",
                   "save_pretrained", "from_pretrained", "lnnx.SequenceModel", "nnx.Optimizer"):
        assert needle in code, needle


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__readme__"}
    for i, code in enumerate(blocks()):
        exec(compile(code, f"README.md python block {i}", "exec"), namespace)
