"""liquidssm.train: one training loop per framework over liquidssm.tasks.

    from liquidssm.train import TrainConfig, run
    result = run(TrainConfig(task="digits", model="s4d", backend="torch", steps=200, out="runs/x"))

`run` dispatches to liquidssm.train.torch_loop or liquidssm.train.jax_loop (the same
schedule, optimizer, clipping, batches and checkpoint layout; common.py holds what they share).
"""

from .common import MODELS, TrainConfig, model_config, run

__all__ = ["TrainConfig", "MODELS", "model_config", "run"]
