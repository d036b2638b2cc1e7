"""The torch training loop's framework part (common.run drives it): the model
(liquidssm.torch.nn.SequenceModel, or the Transformer baseline), torch.optim.AdamW over
model.param_groups (the SSM parameters at ssm_lr without weight decay), the schedule set on every
group before each update, clip_grad_norm_, bfloat16 by torch.autocast, checkpoints. Under
torchrun (WORLD_SIZE > 1: `liquidssm train --nproc N`) it trains data parallel: the model in
DistributedDataParallel (gloo on CPU, nccl on CUDA), each rank a contiguous part of every global
batch, the loss scaled so that DDP's gradient average is the gradient of the global mean loss;
every rank evaluates the whole batch (the same numbers), rank 0 alone writes.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import transformer as tf
from .common import lr_factor, model_config

__all__ = ["Trainer", "Transformer", "masked_loss"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.float32, "float64": torch.float64}


class Transformer(nn.Module):
    """The baseline (liquidssm.train.transformer's docstring), torch's default init under
    torch.manual_seed-like generator `seed`."""

    def __init__(self, task, d_model: int, n_layers: int, seed: int = 0, dtype=torch.float32):
        super().__init__()
        torch.manual_seed(seed)
        d, self.kind, self.n_heads = d_model, task.kind, tf.n_heads_for(d_model)
        self.encoder = (nn.Embedding(task.vocab_size, d) if task.tokens
                        else nn.Linear(task.d_input, d))
        self.layers = nn.ModuleList()
        for _ in range(n_layers):
            self.layers.append(nn.ModuleDict(dict(
                ln1=nn.LayerNorm(d), qkv=nn.Linear(d, 3 * d), out=nn.Linear(d, d),
                ln2=nn.LayerNorm(d), fc1=nn.Linear(d, 4 * d), fc2=nn.Linear(4 * d, d))))
        self.norm_f = nn.LayerNorm(d)
        self.head = (nn.Linear(d, task.vocab_size, bias=False) if task.kind == "lm"
                     else nn.Linear(d, task.n_classes))
        self.to(dtype)

    def forward(self, u):
        x = self.encoder(u)
        b, L, d = x.shape
        x = x + torch.as_tensor(tf.positions(L, d), dtype=x.dtype, device=x.device)
        h = self.n_heads
        for blk in self.layers:
            q, k, v = blk["qkv"](blk["ln1"](x)).view(b, L, 3, h, d // h).unbind(2)
            a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                               v.transpose(1, 2), is_causal=True)
            x = x + blk["out"](a.transpose(1, 2).reshape(b, L, d))
            x = x + blk["fc2"](F.gelu(blk["fc1"](blk["ln2"](x))))
        x = self.norm_f(x)
        return self.head(x.mean(1) if self.kind == "classify" else x)


def masked_loss(kind: str, logits, y):
    """(loss_sum, correct, count) over the targets: classify y (B,), else y (B, L) with -1 =
    no target."""
    if kind == "classify":
        return (F.cross_entropy(logits, y, reduction="sum"), (logits.argmax(-1) == y).sum(),
                y.numel())
    flat, t = logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
    keep = t >= 0
    return (F.cross_entropy(flat, t, ignore_index=-1, reduction="sum"),
            ((flat.argmax(-1) == t) & keep).sum(), int(keep.sum()))


class Trainer:
    def __init__(self, config, task, d_model: int):
        from ..torch import nn as lnn

        self.config, self.task = config, task
        dtype = _DTYPES[config.dtype]
        if config.model == "transformer":
            self.model = Transformer(task, d_model, config.n_layers, config.seed, dtype)
            ssm_ids = set()
            groups = [{"params": list(self.model.parameters()), "lr": config.lr,
                       "weight_decay": config.weight_decay}]
        else:
            fields = model_config(task, config.model, d_model, config.n_layers)
            self.model = lnn.SequenceModel(**fields, seed=config.seed, dtype=dtype)
            groups = self.model.param_groups(config.lr, config.weight_decay, config.ssm_lr)
            ssm_ids = {id(p) for g in groups[1:] for p in g["params"]}
        self.n_params = sum(p.numel() for p in self.model.parameters())
        self.ssm_params = sum(p.numel() for p in self.model.parameters() if id(p) in ssm_ids)
        for g in groups:
            g["base_lr"] = g["lr"]
        self.opt = torch.optim.AdamW(groups, betas=(0.9, 0.999), eps=1e-8)
        self.dtype = dtype
        self.net, self.rank, self.world = self.model, 0, int(os.environ.get("WORLD_SIZE", "1"))
        if self.world > 1:  # launched by torchrun: DistributedDataParallel over the ranks
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
            self.rank = dist.get_rank()
            self.net = torch.nn.parallel.DistributedDataParallel(self.model)
        self.is_main = self.rank == 0

    def _tensor(self, a):
        a = np.asarray(a)
        return torch.as_tensor(a, dtype=self.dtype if a.dtype.kind == "f" else torch.long)

    def _forward(self, x, net=None):
        net = net or self.model
        if self.config.dtype == "bfloat16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return net(x).to(torch.float32)
        return net(x)

    def train_step(self, step, x, y) -> float:
        c = self.config
        factor = lr_factor(step, c.steps, c.warmup_steps)
        for g in self.opt.param_groups:
            g["lr"] = g["base_lr"] * factor
        self.model.train()
        if self.world > 1:  # this rank's contiguous part of the global batch
            part = len(x) // self.world
            x, y = (a[self.rank * part:(self.rank + 1) * part] for a in (x, y))
        loss_sum, _, count = masked_loss(self.task.kind, self._forward(self._tensor(x), self.net),
                                         self._tensor(y))
        if self.world > 1:
            import torch.distributed as dist

            # DDP averages the ranks' gradients: scaling each rank's sum by world / (the global
            # count) makes that the gradient of the global mean loss, masks included
            total = torch.stack([loss_sum.detach().double(),
                                 torch.tensor(float(count), dtype=torch.float64)])
            dist.all_reduce(total)
            loss = loss_sum * (self.world / total[1])
            value = float(total[0] / total[1])
        else:
            loss = loss_sum / count
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.clip)
        self.opt.step()
        return value if self.world > 1 else loss.item()

    @torch.no_grad()
    def eval_batch(self, x, y):
        self.model.eval()
        s, correct, count = masked_loss(self.task.kind, self._forward(self._tensor(x)),
                                        self._tensor(y))
        return float(s), float(correct), float(count)

    def save(self, path) -> None:
        """model/ (save_pretrained in float64: exact for float32 weights; the Transformer:
        model.pt), optimizer.pt."""
        if self.config.model == "transformer":
            torch.save(self.model.state_dict(), path / "model.pt")
        else:
            self.model.save_pretrained(path / "model", dtype=np.float64)
        torch.save(self.opt.state_dict(), path / "optimizer.pt")

    def load(self, path) -> None:
        if self.config.model == "transformer":
            self.model.load_state_dict(torch.load(path / "model.pt"))
        else:
            from ..torch import nn as lnn

            loaded = lnn.SequenceModel.from_pretrained(path / "model", dtype=self.dtype)
            with torch.no_grad():
                for name, p in self.model.state_dict().items():
                    p.copy_(loaded.state_dict()[name])
        self.opt.load_state_dict(torch.load(path / "optimizer.pt"))
        for g in self.opt.param_groups:  # base_lr is restored with the groups
            g.setdefault("base_lr", g["lr"])
