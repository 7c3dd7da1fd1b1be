"""``--cuda-graph``: the whole training step (G and D phases, optimiser steps, EMA, counters) captured once in a
CUDA graph and replayed every step, so the host launches one graph instead of thousands of kernels."""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Optional

import torch

from ..errors import I2IError
from .guard import LogSums

if TYPE_CHECKING:
    from .trainer import Trainer

WARMUP_STEPS = 3  # eager steps on a side stream before the capture (cuDNN/cuBLAS plans, optimiser state, pools)


class CapturedStep:
    """Runs ``trainer.device_step``: eagerly on a side stream for the first steps, then captured from static uint8
    input buffers (normalisation happens inside the graph) and replayed. Everything that changes per step is a
    device tensor the trainer fills before each replay (progress, EMA rate, LR). A checkpoint is restored before
    the capture (the trainer restores at start-up). If the capture fails, the run goes on eagerly and says why."""

    def __init__(self, trainer: "Trainer"):
        if trainer.device.type != "cuda":
            raise I2IError(f"--cuda-graph captures the training step on a CUDA GPU; this run is on "
                           f"{trainer.device.type}: drop --cuda-graph")
        if trainer.world_size > 1:
            raise I2IError("--cuda-graph runs on one GPU; under torchrun (DDP) drop --cuda-graph")
        if trainer.cfg.gpu_augment:
            raise I2IError("--cuda-graph needs fixed inputs; kornia's --gpu-augment draws its parameters on the "
                           "host: drop one of them")
        self.trainer = trainer
        self.steps_done = 0
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.inputs: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, torch.Tensor] = {}
        self.failed = False
        self.side_stream = torch.cuda.Stream(trainer.device)

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.failed:
            return self.trainer.device_step(batch)
        if self.graph is None and self.steps_done >= WARMUP_STEPS:
            self._capture(batch)
        self.steps_done += 1
        if self.graph is None:
            return self._warm_up(batch)
        for key, value in batch.items():
            self.inputs[key].copy_(value, non_blocking=True)
        self.graph.replay()
        return self.outputs

    def _warm_up(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        side = self.side_stream
        side.wait_stream(torch.cuda.current_stream(self.trainer.device))
        with torch.cuda.stream(side):
            logs = self.trainer.device_step(batch)
        torch.cuda.current_stream(self.trainer.device).wait_stream(side)
        return logs

    def _capture(self, batch: dict[str, torch.Tensor]) -> None:
        trainer = self.trainer
        self.inputs = {k: v.to(trainer.device, copy=True) for k, v in batch.items()}
        for optimizer in trainer.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):  # the trainer's autocast runs with its cache off for this
                self.outputs = trainer.device_step(self.inputs)
        except Exception as e:  # a mode or setting that cannot be captured: train on, eagerly
            self.failed = True
            torch.cuda.synchronize(trainer.device)
            trainer.log_sums = LogSums()
            for optimizer in trainer.optimizers.values():
                optimizer.zero_grad(set_to_none=True)
            first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
            print(f"i2i: note: --cuda-graph: the step of mode '{trainer.cfg.mode}' could not be captured "
                  f"({first_line}); training continues without the graph", file=sys.stderr)
            return
        self.graph = graph
