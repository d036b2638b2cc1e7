"""The JAX training loop's framework part (common.run drives it): the model
(liquidssm.jax.nnx.SequenceModel, or the Transformer baseline), split into its nnx.Param state;
optax.multi_transform of two AdamW (the SSM parameters, named by the same leaf sets as torch's
param_groups, at ssm_lr without weight decay; the rest at lr with weight decay), each scheduled
by common.lr_factor; torch's clip_grad_norm_ formula; one jitted update; bfloat16 as parameters
cast for the forward (float32 master weights); checkpoints. float64 switches jax x64 on.
config.devices > 1: data parallel, each batch sharded over a ('data',) mesh of that many devices
(the parameters replicated by jit; the same losses as one device).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from .. import _modules
from . import transformer as tf
from .common import lr_factor, model_config

__all__ = ["Trainer", "Transformer", "masked_loss", "ssm_labels"]


class Transformer(nnx.Module):
    """The baseline (liquidssm.train.transformer's docstring) in Flax NNX, its default init
    from nnx.Rngs(seed); LayerNorm eps 1e-5 as torch's."""

    def __init__(self, task, d_model: int, n_layers: int, seed: int = 0, dtype=jnp.float32):
        rngs = nnx.Rngs(seed)
        d, self.kind, self.n_heads = d_model, task.kind, tf.n_heads_for(d_model)
        kw = dict(dtype=dtype, param_dtype=dtype, rngs=rngs)
        self.tokens = task.tokens
        self.encoder = (nnx.Embed(task.vocab_size, d, **kw) if task.tokens
                        else nnx.Linear(task.d_input, d, **kw))

        def ln():
            return nnx.LayerNorm(d, epsilon=1e-5, **kw)

        self.layers = nnx.List([nnx.Dict(
            ln1=ln(), qkv=nnx.Linear(d, 3 * d, **kw), out=nnx.Linear(d, d, **kw), ln2=ln(),
            fc1=nnx.Linear(d, 4 * d, **kw), fc2=nnx.Linear(4 * d, d, **kw))
            for _ in range(n_layers)])
        self.norm_f = ln()
        self.head = (nnx.Linear(d, task.vocab_size, use_bias=False, **kw) if task.kind == "lm"
                     else nnx.Linear(d, task.n_classes, **kw))

    def __call__(self, u):
        x = self.encoder(u)
        b, L, d = x.shape
        x = x + jnp.asarray(tf.positions(L, d), dtype=x.dtype)
        h = self.n_heads
        mask = jnp.tril(jnp.ones((L, L), dtype=bool))
        for blk in self.layers:
            q, k, v = jnp.split(blk["qkv"](blk["ln1"](x)).reshape(b, L, 3, h, d // h), 3, axis=2)
            q, k, v = (t[:, :, 0].transpose(0, 2, 1, 3) for t in (q, k, v))
            s = jnp.where(mask, q @ k.transpose(0, 1, 3, 2) / np.sqrt(d // h), -jnp.inf)
            a = jax.nn.softmax(s, axis=-1) @ v
            x = x + blk["out"](a.transpose(0, 2, 1, 3).reshape(b, L, d))
            x = x + blk["fc2"](jax.nn.gelu(blk["fc1"](blk["ln2"](x)), approximate=False))
        x = self.norm_f(x)
        return self.head(x.mean(1) if self.kind == "classify" else x)


def masked_loss(kind, logits, y):
    """(loss_sum, correct, count) over the targets, as torch_loop.masked_loss."""
    if kind == "classify":
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return ce.sum(), (logits.argmax(-1) == y).sum(), y.size
    keep = y >= 0
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(keep, y, 0))
    return (jnp.where(keep, ce, 0).sum(), ((logits.argmax(-1) == y) & keep).sum(), keep.sum())


def ssm_labels(params, leaves: frozenset):
    """"ssm" for every parameter whose spec name's last part is in `leaves`, else "regular"."""
    def label(path, _):
        names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
        return "ssm" if any(n.rsplit(".", 1)[-1] in leaves for n in names) else "regular"

    return jax.tree_util.tree_map_with_path(label, params)


def _data_parallel(devices: int):
    """None for one device, else the NamedSharding that splits a batch's first axis over a
    ('data',) mesh of the first `devices` devices."""
    if devices == 1:
        return None
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    have = jax.devices()
    if len(have) < devices:
        raise ValueError(f"devices: expected at most the {len(have)} {jax.default_backend()} "
                         f"devices here (on a CPU, XLA_FLAGS="
                         f"--xla_force_host_platform_device_count=N before jax starts), got "
                         f"{devices}")
    return NamedSharding(Mesh(np.array(have[:devices]), ("data",)), P("data"))


class Trainer:
    def __init__(self, config, task, d_model: int):
        from ..jax import nnx as lnnx

        if config.dtype == "float64":
            jax.config.update("jax_enable_x64", True)
        self.config, self.task = config, task
        self.dtype = jnp.float64 if config.dtype == "float64" else jnp.float32
        if config.model == "transformer":
            model, leaves = Transformer(task, d_model, config.n_layers, config.seed,
                                        self.dtype), frozenset()
        else:
            fields = model_config(task, config.model, d_model, config.n_layers)
            model = lnnx.SequenceModel(**fields, seed=config.seed, dtype=self.dtype)
            leaves = _modules.ssm_leaves(model.config)
        self.graphdef, self.params, self.rest = nnx.split(model, nnx.Param, ...)
        self.n_params = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(self.params))
        c = config

        def schedule(peak):
            return lambda count: peak * lr_factor(count, c.steps, c.warmup_steps, xp=jnp)

        self.tx = optax.multi_transform(
            {"regular": optax.adamw(schedule(c.lr), b1=0.9, b2=0.999, eps=1e-8,
                                    weight_decay=c.weight_decay),
             "ssm": optax.adamw(schedule(c.ssm_lr), b1=0.9, b2=0.999, eps=1e-8,
                                weight_decay=0.0)},
            ssm_labels(self.params, leaves))
        self.opt_state = self.tx.init(self.params)
        kind, graphdef, rest, tx, bf16 = task.kind, self.graphdef, self.rest, self.tx, \
            c.dtype == "bfloat16"

        def forward(params, x):
            if bf16:
                params = jax.tree_util.tree_map(
                    lambda a: a.astype(jnp.bfloat16) if jnp.issubdtype(a.dtype, jnp.floating)
                    else a, params)
                x = x.astype(jnp.bfloat16) if jnp.issubdtype(x.dtype, jnp.floating) else x
            logits = nnx.merge(graphdef, params, rest)(x)
            return logits.astype(jnp.float32) if bf16 else logits

        def loss_fn(params, x, y):
            s, _, count = masked_loss(kind, forward(params, x), y)
            return s / count

        def update(params, opt_state, x, y):
            loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
            norm = jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree_util.tree_leaves(grads)))
            scale = jnp.minimum(1.0, c.clip / (norm + 1e-6))  # torch's clip_grad_norm_
            grads = jax.tree_util.tree_map(lambda g: g * scale.astype(g.dtype), grads)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        self._update = jax.jit(update)
        self._eval = jax.jit(lambda params, x, y: masked_loss(kind, forward(params, x), y))
        self.batch_sharding = _data_parallel(c.devices)

    def _array(self, a):
        a = np.asarray(a)
        return jnp.asarray(a, dtype=self.dtype if a.dtype.kind == "f" else None)

    def train_step(self, step, x, y) -> float:
        x, y = self._array(x), self._array(y)
        if self.batch_sharding is not None:  # the batch split over the mesh (jit does the rest)
            x, y = jax.device_put(x, self.batch_sharding), jax.device_put(y, self.batch_sharding)
        self.params, self.opt_state, loss = self._update(self.params, self.opt_state, x, y)
        return float(loss)

    def eval_batch(self, x, y):
        s, correct, count = self._eval(self.params, self._array(x), self._array(y))
        return float(s), float(correct), float(count)

    def model(self):
        """The current model (nnx.merge of the trained parameters)."""
        return nnx.merge(self.graphdef, self.params, self.rest)

    def save(self, path) -> None:
        """model/ (save_pretrained in float64; the Transformer: model.npz of its parameter
        leaves), optimizer.npz (the optax state's leaves, in order)."""
        if self.config.model == "transformer":
            np.savez(path / "model.npz", *[np.asarray(a) for a in
                                          jax.tree_util.tree_leaves(self.params)])
        else:
            self.model().save_pretrained(path / "model", dtype=np.float64)
        np.savez(path / "optimizer.npz", *[np.asarray(a) for a in
                                          jax.tree_util.tree_leaves(self.opt_state)])

    @staticmethod
    def _restore(tree, file):
        with np.load(file) as f:
            arrays = [f[f"arr_{i}"] for i in range(len(f.files))]
        leaves, treedef = jax.tree_util.tree_flatten(tree)
        if len(arrays) != len(leaves):
            raise ValueError(f"checkpoint: {file} holds {len(arrays)} arrays, the run has "
                             f"{len(leaves)}")
        return jax.tree_util.tree_unflatten(
            treedef, [jnp.asarray(a, dtype=b.dtype) for a, b in zip(arrays, leaves)])

    def load(self, path) -> None:
        if self.config.model == "transformer":
            self.params = self._restore(self.params, path / "model.npz")
        else:
            from ..jax import nnx as lnnx

            loaded = lnnx.SequenceModel.from_pretrained(path / "model", dtype=self.dtype)
            _, self.params, _ = nnx.split(loaded, nnx.Param, ...)
        self.opt_state = self._restore(self.opt_state, path / "optimizer.npz")
