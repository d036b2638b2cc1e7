"""liquidssm.tasks: splits fixed by the seed, batches a pure function of the step, the generators'
labels checked by independent evaluators, the trivial baselines."""

import importlib.metadata

import numpy as np
import pytest
from liquidssm import tasks

SMALL = {"listops-short": dict(n=40), "listops": dict(n=4), "selective-copy": dict(n=50),
         "induction": dict(n=50), "bytes": dict(length=64, eval_windows=4)}


def _fresh(name, seed=0):
    return tasks.TASKS[name](seed, **SMALL.get(name, {}))


def _arrays(task):
    return {k: (v if isinstance(v, np.ndarray) else np.concatenate([v[0].reshape(len(v[0]), -1),
                                                                    v[1].reshape(len(v[1]), -1)],
                                                                   axis=1))
            for k, v in task.splits.items()}


@pytest.mark.parametrize("name", ["digits", "listops-short", "selective-copy", "induction",
                                  "bytes"])
def test_seeded_and_deterministic(name):
    a, b, c = _fresh(name, 0), _fresh(name, 0), _fresh(name, 1)
    for k, v in _arrays(a).items():
        np.testing.assert_array_equal(v, _arrays(b)[k])
    if name != "bytes":  # bytes: the seed moves files between splits; checked below
        assert any(not np.array_equal(v, _arrays(c)[k]) for k, v in _arrays(a).items())
    for step in (0, 7):
        xa, ya = a.train_batch(step, 5)
        xb, yb = b.train_batch(step, 5)
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_train_stream_walks_each_epoch_once():
    t = _fresh("selective-copy")
    n = t.n_train()
    assert n % 5 == 0
    seen = np.concatenate([t.train_batch(s, 5)[0] for s in range(n // 5)])
    rows = {r.tobytes() for r in t.splits["train"][0]}
    assert len(seen) == n and {r.tobytes() for r in seen} == rows


def _eval_listops(tokens):
    """An independent stack evaluator of the token ids (0 pad, 1-10 digits, 11-14 ops, 15 ])."""
    ops = {11: min, 12: max, 13: lambda a: int(np.median(a)), 14: lambda a: sum(a) % 10}
    stack = []
    for t in tokens:
        if t == 0:
            break
        if t in ops:
            stack.append([t])
        elif t == 15:
            node = stack.pop()
            value = ops[node[0]](node[1:])
            if not stack:
                return value
            stack[-1].append(value)
        else:
            stack[-1].append(t - 1)
    raise AssertionError("unbalanced expression")


def test_listops_labels_and_lengths():
    t = _fresh("listops-short")
    for split in ("train", "test"):
        x, y = t.splits[split]
        lengths = (x > 0).sum(axis=1)
        assert lengths.min() >= 16 and lengths.max() <= 128
        assert [_eval_listops(r) for r in x] == list(y)
    long = _fresh("listops")
    assert long.length == 2000 and ((long.splits["train"][0] > 0).sum(1) >= 500).all()


def test_selective_copy_targets_are_the_data_tokens():
    t = _fresh("selective-copy")
    x, y = t.splits["train"]
    for xi, yi in zip(x[:20], y[:20]):
        data = xi[:64][xi[:64] > 0]
        np.testing.assert_array_equal(yi[64:], data)
        assert (yi[:64] == -1).all() and (xi[64:] == 9).all()
    assert t.splits["test_4x"][0].shape[1] == 4 * 64 + 8


def test_induction_target_follows_the_trigger():
    t = _fresh("induction")
    for split in ("train", "test_16x"):
        x, y = t.splits[split]
        for xi, yi in zip(x, y):
            first = int(np.flatnonzero(xi == 0)[0])
            assert first < len(xi) - 3 and yi[-1] == xi[first + 1]
            assert (yi[:-1] == -1).all() and (xi[first + 1:-1] > 0).all()


def test_bytes_split_by_file_and_windows():
    t = _fresh("bytes")
    assert t.info["files"] > 20 and all(n > 0 for n in t.info["bytes"].values())
    x, y = t.train_batch(3, 4)
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
    assert x.shape == (4, 64) and x.max() < 256
    assert 3.0 < t.baseline("test") < 8.0  # unigram bits per byte of Python source
    other = tasks.TASKS["bytes"](1, length=64, eval_windows=4)
    assert other.info["bytes"] != t.info["bytes"]


def test_baselines():
    t = _fresh("digits")
    _, y = t.splits["test"]
    major = np.bincount(t.splits["train"][1]).argmax()
    assert t.baseline("test") == pytest.approx((y == major).mean())
    assert t.splits["train"][0].shape[1:] == (64, 1)
    long = tasks.get("digits-long")
    assert long.splits["train"][0].shape[1:] == (1024, 1)
    # the upsampled image keeps the 8x8 image's mean brightness (bilinear, centre-aligned)
    np.testing.assert_allclose(long.splits["train"][0].mean(), t.splits["train"][0].mean(),
                               rtol=0.05)


def test_gunpoint():
    try:
        importlib.metadata.distribution("aeon")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the aeon wheel's data files are not installed (pip install --no-deps aeon)")
    t = tasks.get("gunpoint")
    assert t.splits["test"][0].shape == (150, 150, 1)
    assert len(t.splits["train"][0]) + len(t.splits["val"][0]) == 50
    assert 0.4 < t.baseline("test") < 0.6


def test_bad_arguments():
    with pytest.raises(ValueError, match="task: expected one of"):
        tasks.get("mnist")
    with pytest.raises(ValueError, match="split: expected one of"):
        next(_fresh("induction").eval_batches("test_99x", 4))
