"""liquidssm.tasks: deterministic NumPy data sources for training (framework-free).

    task = liquidssm.tasks.get("digits", seed=0)
    x, y = task.train_batch(step, batch_size)          # the same arrays for torch and JAX
    for x, y in task.eval_batches("test", batch_size): ...
    task.baseline("test")                              # the trivial baseline, in task.metric

Every split is fixed by `seed` (and the task's options); train batch `step` is a pure function of
(seed, step, batch_size), so a resumed run sees exactly the batches it would have seen.

Kinds (what x and y are; `kind` decides the model's head and the loss):
    "classify":  x (B, L, d_input) float64 | (B, L) int64 tokens;  y (B,) int64 class ids.
                 loss: mean cross-entropy; metric "accuracy".
    "sequence":  x (B, L) int64 tokens;  y (B, L) int64 targets, -1 where no target.
                 loss: mean cross-entropy over the targets; metric "accuracy" over them.
    "lm":        x (B, L) int64 bytes;  y (B, L) the next bytes (every position a target).
                 loss: mean cross-entropy (nats); metric "bits_per_byte" = loss / ln 2.

Tasks (TASKS): digits, digits-long, listops, listops-short, selective-copy, induction, bytes,
gunpoint (see each builder's docstring; docs/training.md).
"""

from __future__ import annotations

import hashlib
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["Task", "TASKS", "get"]


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])


@dataclass
class Task:
    """A task's splits and what a model for it needs (module docstring).

    splits: name -> (x, y) arrays (kind "lm": name -> 1-D uint8 byte stream). length: the
    training length L. tokens / d_input / vocab_size: the model's input; n_classes: the
    output size (classify, sequence). eval_splits: the splits evaluated during training
    ("val" first; extrapolation tasks add longer test splits)."""

    name: str
    kind: str
    splits: dict
    length: int
    seed: int
    d_input: int | None = None
    vocab_size: int | None = None
    n_classes: int | None = None
    eval_splits: tuple = ("val", "test")
    eval_windows: int = 64  # kind "lm": windows per evaluation
    info: dict = field(default_factory=dict)

    @property
    def tokens(self) -> bool:
        return self.vocab_size is not None

    @property
    def metric(self) -> str:
        return "bits_per_byte" if self.kind == "lm" else "accuracy"

    def n_train(self) -> int:
        return len(self.splits["train"][0]) if self.kind != "lm" else len(self.splits["train"])

    def train_batch(self, step: int, batch_size: int):
        """Batch `step` (0-based) of the training stream. classify / sequence: epoch
        e = step * B // N walks a permutation from default_rng([seed, 1, e]) (batches wrap
        across epochs). lm: B windows of L + 1 bytes at offsets from default_rng([seed, 2,
        step])."""
        if step < 0 or batch_size < 1:
            raise ValueError(f"step, batch_size: expected step >= 0 and batch_size >= 1, got "
                             f"{step}, {batch_size}")
        if self.kind == "lm":
            stream = self.splits["train"]
            starts = _rng(self.seed, 2, step).integers(0, len(stream) - self.length - 1,
                                                       batch_size)
            return self._windows(stream, starts)
        x, y = self.splits["train"]
        n, first = len(x), step * batch_size
        index = np.empty(batch_size, dtype=np.int64)
        for j in range(batch_size):
            epoch, pos = divmod(first + j, n)
            index[j] = _perm(self.seed, epoch, n)[pos]
        return x[index], y[index]

    def _windows(self, stream, starts):
        w = np.stack([stream[s:s + self.length + 1] for s in starts]).astype(np.int64)
        return w[:, :-1], w[:, 1:]

    def eval_batches(self, split: str, batch_size: int):
        """The whole split in order, batches of at most batch_size (kind "lm": eval_windows
        non-overlapping windows spread evenly over the split's stream)."""
        if split not in self.splits:
            raise ValueError(f"split: expected one of {sorted(self.splits)}, got {split!r}")
        if self.kind == "lm":
            stream = self.splits[split]
            count = min(self.eval_windows, (len(stream) - 1) // self.length)
            stride = (len(stream) - 1 - self.length) // max(count - 1, 1)
            starts = np.arange(count) * stride
            for i in range(0, count, batch_size):
                yield self._windows(stream, starts[i:i + batch_size])
            return
        x, y = self.splits[split]
        for i in range(0, len(x), batch_size):
            yield x[i:i + batch_size], y[i:i + batch_size]

    def baseline(self, split: str = "test") -> float:
        """The trivial baseline in `metric` on `split`: the train split's most frequent class
        (classify) or target token (sequence), as accuracy; kind "lm": the bits per byte of the
        train split's unigram distribution (add-one smoothed) on the split's bytes."""
        if self.kind == "lm":
            counts = np.bincount(self.splits["train"], minlength=256) + 1.0
            p = counts / counts.sum()
            test = self.splits[split]
            return float(-np.log2(p[test]).mean())
        y_train, y = self.splits["train"][1], self.splits[split][1]
        t, v = y_train[y_train >= 0], y[y >= 0]
        return float((v == np.bincount(t).argmax()).mean())


_PERMS: dict = {}


def _perm(seed, epoch, n):
    key = (seed, epoch, n)
    if key not in _PERMS:
        if len(_PERMS) > 8:
            _PERMS.clear()
        _PERMS[key] = _rng(seed, 1, epoch).permutation(n)
    return _PERMS[key]


def _split(n, seed, fractions=(0.7, 0.15)):
    """Indices (train, val, test) of a permutation from default_rng([seed, 0, n])."""
    order = _rng(seed, 0, n).permutation(n)
    a, b = int(fractions[0] * n), int((fractions[0] + fractions[1]) * n)
    return order[:a], order[a:b], order[b:]


# ---------------------------------------------------------------- sequential images
def _upsample(images, size):
    """(N, h, w) -> (N, size, size), bilinear on pixel centres (separable np.interp)."""
    n, h, w = images.shape
    ys, xs = (np.arange(size) + 0.5) * h / size - 0.5, (np.arange(size) + 0.5) * w / size - 0.5
    rows = np.stack([[np.interp(xs, np.arange(w), r) for r in im] for im in images])
    return np.stack([[np.interp(ys, np.arange(h), c) for c in im.T] for im in rows]
                    ).transpose(0, 2, 1)


def digits(seed=0, size=8):
    """scikit-learn's bundled 8x8 digits (1797 images, 10 classes), pixel by pixel: x (B, 64, 1)
    in [0, 1]; size 32: bilinearly upsampled to 32x32 (length 1024). Split 70/15/15 by seed."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("task digits: needs scikit-learn (pip install 'liquidssm[train]')") \
            from e
    data = load_digits()
    images = data.images / 16.0
    if size != 8:
        images = _upsample(images, size)
    x = images.reshape(len(images), -1, 1).astype(np.float64)
    y = data.target.astype(np.int64)
    tr, va, te = _split(len(x), seed)
    return Task(name="digits" if size == 8 else "digits-long", kind="classify",
                splits={"train": (x[tr], y[tr]), "val": (x[va], y[va]), "test": (x[te], y[te])},
                length=size * size, seed=seed, d_input=1, n_classes=10)


# ---------------------------------------------------------------- ListOps
#: token ids: 0 pad, 1-10 the digits 0-9, 11 [MIN, 12 [MAX, 13 [MED, 14 [SM, 15 ]
LISTOPS_OPS = ("MIN", "MAX", "MED", "SM")
LISTOPS_VOCAB = 16


def _listops_value(op, args):
    if op == "MIN":
        return min(args)
    if op == "MAX":
        return max(args)
    if op == "MED":
        return int(np.median(args))  # the LRA generator's median, truncated to an int
    return sum(args) % 10


class _TooLong(Exception):
    pass


def _listops_tree(rng, depth, max_depth, max_args, p_op, out, max_len):
    """Append one subtree's tokens to `out`, return its value: an operator node with
    probability p_op below max_depth (2..max_args arguments), else a digit. The root (depth 0)
    is always an operator. Raises _TooLong once `out` passes max_len (rejected early)."""
    if depth == 0 or (depth < max_depth and rng.random() < p_op):
        k = int(rng.integers(2, max_args + 1))
        op = int(rng.integers(len(LISTOPS_OPS)))
        out.append(11 + op)
        values = [_listops_tree(rng, depth + 1, max_depth, max_args, p_op, out, max_len)
                  for _ in range(k)]
        out.append(15)
        if len(out) > max_len:
            raise _TooLong
        return _listops_value(LISTOPS_OPS[op], values)
    v = int(rng.integers(10))
    out.append(1 + v)
    if len(out) > max_len:
        raise _TooLong
    return v


def listops_example(rng, min_len, max_len, max_depth=10, max_args=10, p_op=0.25):
    """One ListOps expression with length in [min_len, max_len] (rejection sampling):
    (token ids, value in 0-9)."""
    while True:
        out = []
        try:
            value = _listops_tree(rng, 0, max_depth, max_args, p_op, out, max_len)
        except _TooLong:
            continue
        if len(out) >= min_len:
            return out, value


def listops(seed=0, short=False, n=None):
    """ListOps (the Long Range Arena's, written from its description): nested MIN, MAX, MED
    (median), SM (sum mod 10) over digits 0-9, depth <= 10, <= 10 arguments per operator, an
    operator node with probability 0.25 below the maximum depth; label = the value (10 classes).
    Lengths: the LRA's 500-2000 (`listops`), 16-128 (`listops-short`); right-padded with the
    pad id 0 to the maximum length. n examples (default 2000 short, 1000 long), split 70/15/15."""
    lo, hi = (16, 128) if short else (500, 2000)
    n = n or (2000 if short else 1000)
    rng = _rng(seed, 3, int(short))
    x = np.zeros((n, hi), dtype=np.int64)
    y = np.zeros(n, dtype=np.int64)
    for i in range(n):
        t, v = listops_example(rng, lo, hi)
        x[i, :len(t)], y[i] = t, v
    tr, va, te = _split(n, seed)
    return Task(name="listops-short" if short else "listops", kind="classify",
                splits={"train": (x[tr], y[tr]), "val": (x[va], y[va]), "test": (x[te], y[te])},
                length=hi, seed=seed, vocab_size=LISTOPS_VOCAB, n_classes=10)


# ---------------------------------------------------------------- the Mamba paper's synthetics
def _selective_copy(rng, n, length, n_tokens, vocab):
    """Token ids: 0 noise, 1..vocab-2 data, vocab-1 the marker. x = L noise positions holding
    n_tokens data tokens at random sorted positions, then n_tokens markers; y = the data tokens
    in order at the marker positions (-1 elsewhere)."""
    total = length + n_tokens
    x = np.zeros((n, total), dtype=np.int64)
    y = np.full((n, total), -1, dtype=np.int64)
    for i in range(n):
        pos = np.sort(rng.choice(length, n_tokens, replace=False))
        data = rng.integers(1, vocab - 1, n_tokens)
        x[i, pos] = data
        x[i, length:] = vocab - 1
        y[i, length:] = data
    return x, y


def selective_copy(seed=0, length=64, n_tokens=8, vocab=10, n=2000, extrapolate=(4,)):
    """Selective copying (Gu & Dao 2023, section 4.1.1): memorise n_tokens data tokens spread at
    random among `length` noise tokens, output them in order after the markers (sequence kind,
    targets at the last n_tokens positions). Train/val/test at `length` (n examples 70/15/15);
    test_{k}x at k * length (n // 5 examples) for length extrapolation."""
    x, y = _selective_copy(_rng(seed, 4, length), n, length, n_tokens, vocab)
    tr, va, te = _split(n, seed)
    splits = {"train": (x[tr], y[tr]), "val": (x[va], y[va]), "test": (x[te], y[te])}
    for k in extrapolate:
        splits[f"test_{k}x"] = _selective_copy(_rng(seed, 5, k * length), n // 5, k * length,
                                               n_tokens, vocab)
    return Task(name="selective-copy", kind="sequence", splits=splits, length=length + n_tokens,
                seed=seed, vocab_size=vocab, n_classes=vocab,
                eval_splits=("val", "test", *[f"test_{k}x" for k in extrapolate]))


def _induction(rng, n, length, vocab):
    """Token ids: 0 the trigger, 1..vocab-1 ordinary. A random sequence of ordinary tokens; at a
    random position p < L - 2 the trigger followed by the answer a; the last token is the trigger
    again; y = a at the last position (-1 elsewhere)."""
    x = rng.integers(1, vocab, (n, length))
    y = np.full((n, length), -1, dtype=np.int64)
    for i in range(n):
        p = int(rng.integers(0, length - 3))
        x[i, p] = 0
        x[i, -1] = 0
        y[i, -1] = x[i, p + 1]
    return x.astype(np.int64), y


def induction(seed=0, length=64, vocab=16, n=20000, extrapolate=(4, 16)):
    """Induction heads (Gu & Dao 2023, section 4.1.2; Olsson et al. 2022): after seeing
    "trigger a" once, recall a when the trigger appears at the end (sequence kind, one target
    per sequence). test_{k}x at k * length for length extrapolation. n is 10x the other tasks'
    default: with one supervised token per sequence, 1400 training sequences (n = 2000) let no
    model, the Transformer included, beat the baseline in 300 steps (measured 2026-12-02); the
    Mamba paper trains on freshly drawn sequences."""
    x, y = _induction(_rng(seed, 6, length), n, length, vocab)
    tr, va, te = _split(n, seed)
    splits = {"train": (x[tr], y[tr]), "val": (x[va], y[va]), "test": (x[te], y[te])}
    for k in extrapolate:
        splits[f"test_{k}x"] = _induction(_rng(seed, 7, k * length), n // 5, k * length, vocab)
    return Task(name="induction", kind="sequence", splits=splits, length=length, seed=seed,
                vocab_size=vocab, n_classes=vocab,
                eval_splits=("val", "test", *[f"test_{k}x" for k in extrapolate]))


# ---------------------------------------------------------------- bytes of the standard library
def stdlib_files() -> list[Path]:
    """The top-level .py files of this Python's standard library, sorted by name."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(root.glob("*.py"))


def bytes_lm(seed=0, length=256, eval_windows=64):
    """Byte-level language modelling on the Python standard library's top-level source files
    (stdlib_files()): file f goes to train / val / test by sha256(f"{seed}:{name}") mod 20
    (0: val, 1: test, else train); each split is its files' bytes joined, files separated by
    a 0 byte. Metric: bits per byte on eval_windows windows of `length` bytes."""
    parts = {"train": [], "val": [], "test": []}
    files = stdlib_files()
    if not files:  # pragma: no cover - depends on the environment
        raise FileNotFoundError("task bytes: no .py files in the standard library directory "
                                f"{sysconfig.get_paths()['stdlib']}")
    for f in files:
        h = int(hashlib.sha256(f"{seed}:{f.name}".encode()).hexdigest(), 16) % 20
        split = "val" if h == 0 else "test" if h == 1 else "train"
        parts[split].append(np.frombuffer(f.read_bytes() + b"\0", dtype=np.uint8))
    splits = {k: np.concatenate(v) for k, v in parts.items()}
    return Task(name="bytes", kind="lm", splits=splits, length=length, seed=seed,
                vocab_size=256, eval_windows=eval_windows,
                info={"python": sys.version.split()[0], "files": len(files),
                      "bytes": {k: int(len(v)) for k, v in splits.items()}})


# ---------------------------------------------------------------- UCR time series (aeon's wheel)
def _read_ts(path):
    """A univariate equal-length .ts file (sktime / aeon format) -> (x (N, L) float64, labels)."""
    rows, labels, data = [], [], False
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.lower() == "@data":
            data = True
            continue
        if data:
            *values, label = line.split(":")
            rows.append(np.array(values[0].split(","), dtype=np.float64))
            labels.append(label)
    return np.stack(rows), labels


def gunpoint(seed=0):
    """UCR GunPoint (2 classes, length 150, 50 train / 150 test series), read from the data files
    inside the `aeon` wheel (`pip install --no-deps aeon`: only the files are used, aeon is not
    imported). The official test split is kept; val = a seeded 20% of the official train split
    (10 series). Each series is z-normalised as in the UCR archive (already is)."""
    import importlib.metadata as md

    try:
        dist = md.distribution("aeon")
    except md.PackageNotFoundError as e:
        raise ImportError("task gunpoint: needs the data files of the aeon wheel: "
                          "pip install --no-deps aeon") from e
    base = "aeon/datasets/data/GunPoint/GunPoint_{}.ts"
    xtr, ltr = _read_ts(dist.locate_file(base.format("TRAIN")))
    xte, lte = _read_ts(dist.locate_file(base.format("TEST")))
    classes = sorted(set(ltr))
    ytr = np.array([classes.index(c) for c in ltr], dtype=np.int64)
    yte = np.array([classes.index(c) for c in lte], dtype=np.int64)
    order = _rng(seed, 0, len(xtr)).permutation(len(xtr))
    va, tr = order[:len(xtr) // 5], order[len(xtr) // 5:]
    x3 = lambda a: a[..., None]  # noqa: E731
    return Task(name="gunpoint", kind="classify",
                splits={"train": (x3(xtr[tr]), ytr[tr]), "val": (x3(xtr[va]), ytr[va]),
                        "test": (x3(xte), yte)},
                length=xtr.shape[1], seed=seed, d_input=1, n_classes=len(classes))


#: task name -> builder(seed, **options)
TASKS = {
    "digits": digits,
    "digits-long": lambda seed=0, **kw: digits(seed, size=32, **kw),
    "listops": lambda seed=0, **kw: listops(seed, short=False, **kw),
    "listops-short": lambda seed=0, **kw: listops(seed, short=True, **kw),
    "selective-copy": selective_copy,
    "induction": induction,
    "bytes": bytes_lm,
    "gunpoint": gunpoint,
}

_CACHE: dict = {}


def get(name: str, seed: int = 0, **options) -> Task:
    """The task `name` (TASKS) with its splits fixed by `seed` (cached per arguments)."""
    if name not in TASKS:
        raise ValueError(f"task: expected one of {sorted(TASKS)}, got {name!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: expected an int >= 0, got {seed!r}")
    key = (name, seed, tuple(sorted(options.items())))
    if key not in _CACHE:
        _CACHE[key] = TASKS[name](seed, **options)
    return _CACHE[key]

