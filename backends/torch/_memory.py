"""Peak tensor memory of a computation, counted op by op (CPU and CUDA alike).

A TorchDispatchMode sees every aten op (forward and autograd backward); each new storage an op
returns (not a view, not an input's storage: in-place and out= ops add nothing) is counted until
it is freed (a weak reference to the storage expires). The peak of the live total, sampled at
every op, is the memory the computation allocated beyond what existed before it started.
Scratch space private to one kernel is not seen (it is not a tensor).
"""

from __future__ import annotations

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = ["PeakMemory"]


def _ptr(t):
    return t.untyped_storage().data_ptr() if isinstance(t, torch.Tensor) else None


class PeakMemory(TorchDispatchMode):
    """with PeakMemory() as m: ...; m.peak is the largest number of live bytes allocated inside."""

    def __init__(self):
        super().__init__()
        self.live: dict[int, tuple[int, StorageWeakRef]] = {}
        self.current = 0
        self.peak = 0

    def _sweep(self):
        for key in [k for k, (_, ref) in self.live.items() if ref.expired()]:
            self.current -= self.live.pop(key)[0]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self._sweep()
        out = func(*args, **(kwargs or {}))
        if func.is_view:
            return out
        seen = {_ptr(t) for t in tree_leaves((args, kwargs))}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key not in self.live and key not in seen and storage.nbytes() > 0:
                    self.live[key] = (storage.nbytes(), StorageWeakRef(storage))
                    self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)
        return out
