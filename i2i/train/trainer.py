"""The one training loop: every mode runs through it (phases G then D, autocast, grad scaling, EMA, checkpoints)."""
from __future__ import annotations

import copy
import dataclasses
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..config import TrainConfig, save_config
from ..data import ResumableSampler, make_dataset
from ..data.datasets import ignore_stop_signals
from ..errors import I2IError
from ..losses.adversarial import clip_weights_
from ..modes.base import Mode, StepOutput, create_mode
from ..nets.layers import set_grad_checkpoint, use_fused_instance_norm
from ..runtime import (autocast, data_workers, default_precision, pick_device, rng_state, seed_everything,
                       set_rng_state, to_model_range)
from . import distributed as dist
from .checkpoint import RunLock, find_checkpoint, load_state, load_weights, save_checkpoint
from .graph import CapturedStep
from .guard import BufferGuard, LogSums, SkipCounter, all_finite, guarded_step
from .evaluation import PeriodicEval
from .logging import RunLogger
from .start import move_aside, plan_start, say

PHASES = ("G", "D")


def linear_decay(total_steps: int, decay_fraction: float) -> Callable[[int], float]:
    """CycleGAN's schedule: constant LR, then linear decay to 0 over the last ``decay_fraction`` of the run
    (0: a constant LR)."""
    if decay_fraction <= 0:
        return lambda step: 1.0
    decay_steps = max(1, int(round(total_steps * decay_fraction)))
    start = total_steps - decay_steps

    def factor(step: int) -> float:
        return 1.0 if step < start else max(0.0, 1.0 - (step - start + 1) / (decay_steps + 1))

    return factor


class Trainer:
    """Owns everything around a mode: device, precision, optimisers, schedule, EMA, data, logs and checkpoints."""

    def __init__(self, cfg: TrainConfig, resume: Optional[str | Path] = None):
        self.rank, self.world_size, local_rank = dist.init(cfg.device)
        checkpoint = find_checkpoint(resume) if resume else None
        if not cfg.data:
            raise I2IError("no dataset given: pass --data DIR")
        cfg = dataclasses.replace(cfg, data=str(Path(cfg.data).expanduser().resolve()),  # saved configs work from
                                  out=str(Path(cfg.out).expanduser().resolve()))       # any working directory
        if cfg.batch_size % self.world_size:
            raise I2IError(f"batch size {cfg.batch_size} is not divisible by the {self.world_size} DDP processes")
        self.device = pick_device(cfg.device, local_rank)
        seed_everything(cfg.seed)
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS (before its first use)
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.mode: Mode = create_mode(cfg)
        cfg = self.cfg = self.mode.cfg
        if self.rank == 0:
            for note in self.mode.notes:
                print(f"i2i: note: {note}", file=sys.stderr)
        self.precision = default_precision(self.device, cfg.precision)
        self.channels_last = cfg.channels_last if cfg.channels_last is not None else self.device.type == "cuda"
        self.run_dir = Path(cfg.out).expanduser().resolve()
        self.run_lock = RunLock(self.run_dir)  # one process trains a run at a time
        if self.rank == 0:
            self.run_lock.acquire()
        try:
            self._build(checkpoint)
        except BaseException:
            self.run_lock.release()
            raise

    def _build(self, checkpoint: Optional[Path]) -> None:
        """The set-up that runs under the run lock."""
        cfg = self.cfg
        seed_everything(cfg.seed + self.rank)  # weights are built; training randomness differs per rank
        self.nets = self.mode.nets.to(self.device)
        for module in self.mode.frozen_modules():
            module.to(self.device).eval().requires_grad_(False)
        if self.channels_last:
            self.nets.to(memory_format=torch.channels_last)
        use_fused_instance_norm(self.nets, not cfg.compile)  # fewer eager kernels; var_mean fuses under compile
        if not set_grad_checkpoint(self.nets, cfg.grad_checkpoint) and cfg.grad_checkpoint:
            raise I2IError(f"--grad-checkpoint: no network of mode '{cfg.mode}' has residual blocks to checkpoint "
                           "(cyclegan, unit, encoder and pix2pix --generator resnet do)")
        if cfg.sync_bn and self.world_size > 1:
            dist.convert_sync_batchnorm(self.nets, self.device)
        self.ema = self._make_ema()
        self.phase_params = {  # deduplicated by identity: nets may share modules (UNIT's shared blocks)
            "G": list({id(p): p for n in self.mode.generators for p in self.nets[n].parameters()}.values()),
            "D": list({id(p): p for n in self.mode.discriminators for p in self.nets[n].parameters()}.values())}
        self.phase_nets = {phase: self._wrap_for_phase(phase) for phase in PHASES}
        self.phase_functions = self._phase_functions()
        self.optimizers = {phase: self._make_optimizer(phase) for phase in PHASES}
        self.scalers = {phase: torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
                        for phase in PHASES}

        self.dataset = make_dataset(self.mode.data_kind, cfg.data, "train", cfg.size, cfg.load_size or cfg.size * 286 // 256,
                                    train=True, flip=cfg.flip and not cfg.gpu_augment, crop=not cfg.gpu_augment,
                                    skip_bad=cfg.skip_bad_images, max_pixels=cfg.max_pixels)
        self.local_batch = cfg.batch_size // self.world_size
        self.sampler = ResumableSampler(self.dataset, cfg.seed, self.rank, self.world_size)
        self.steps_per_epoch = len(self.sampler) // self.local_batch
        if self.steps_per_epoch == 0:
            raise I2IError(f"{len(self.dataset)} training image(s) in {cfg.data} is fewer than one batch of "
                           f"{cfg.batch_size}")
        workers = data_workers(cfg.workers)
        self.loader = DataLoader(self.dataset, batch_size=self.local_batch, sampler=self.sampler, drop_last=True,
                                 num_workers=workers, pin_memory=self.device.type == "cuda",
                                 persistent_workers=workers > 0, generator=torch.Generator(),
                                 worker_init_fn=ignore_stop_signals if workers > 0 else None,
                                 prefetch_factor=4 if workers > 0 else None)
        self.total_steps = cfg.steps or (cfg.epochs or 200) * self.steps_per_epoch
        self.lr_factor = linear_decay(self.total_steps, cfg.lr_decay)
        self.schedulers = {phase: torch.optim.lr_scheduler.LambdaLR(self.optimizers[phase], self.lr_factor)
                           for phase in PHASES}
        self.gpu_augment = self._make_gpu_augment() if cfg.gpu_augment else None
        self.step = 0
        self.skips = SkipCounter(self.device)
        self.log_sums = LogSums()
        self.buffers = BufferGuard(self.nets.values())
        self.progress = torch.zeros((), device=self.device)  # fraction of the run done, read by the mode
        self.mode.progress = self.progress
        self.ema_rate = torch.zeros((), device=self.device)  # 1 - EMA decay of this step
        self.cuda_graph = CapturedStep(self) if cfg.cuda_graph else None
        self.stop_requested = False
        self.stop_signal: Optional[int] = None  # the SIGINT/SIGTERM that stopped fit(), if any
        self.saved_step = -1
        if checkpoint is not None:
            self._restore(checkpoint)
        self.logger = None
        if self.rank == 0:
            self.logger = RunLogger(self.run_dir, cfg.tensorboard, self.mode.visual_names, cfg.batch_size, self.step)
            # the run's record shows what "auto" became; checkpoints keep "auto" so a run resumes on any machine
            save_config(dataclasses.replace(cfg, precision=self.precision, device=str(self.device)),
                        self.run_dir / "config.yaml")
        self.sample_batch = self._fixed_sample_batch() if self.rank == 0 else None
        self.evaluator = PeriodicEval(self) if cfg.eval_every else None

    # --- set-up helpers -----------------------------------------------------------------------------------
    def _make_ema(self) -> Optional[nn.ModuleDict]:
        if not self.cfg.ema_decay:
            return None
        ema = nn.ModuleDict({n: copy.deepcopy(self.nets[n]) for n in self.mode.generators})
        return ema.eval().requires_grad_(False)

    def _make_optimizer(self, phase: str) -> torch.optim.Optimizer:
        """Adam for every network, except a weight-clipped WGAN critic: RMSprop, as Arjovsky et al. 2017 advise."""
        params, cfg = self.phase_params[phase], self.cfg
        if phase == "D" and cfg.clip_weights:
            return torch.optim.RMSprop(params, lr=cfg.lr)
        # fused: one kernel per step, and it can skip a non-finite step on the device (guard.guarded_step). A
        # captured step needs the LR as a device tensor, which the scheduler then fills in place.
        lr = torch.tensor(cfg.lr, device=self.device) if cfg.cuda_graph else cfg.lr
        return torch.optim.Adam(params, lr=lr, betas=(cfg.beta1, cfg.beta2), fused=self.device.type in ("cuda", "cpu"),
                                capturable=cfg.cuda_graph)

    def _wrap_for_phase(self, phase: str) -> nn.ModuleDict:
        """The networks a phase calls: its trained nets wrapped in DDP, the others used raw."""
        trained = self.mode.generators if phase == "G" else self.mode.discriminators
        return nn.ModuleDict({name: dist.wrap_ddp(net, self.device) if name in trained and self.world_size > 1
                              else net for name, net in self.nets.items()})

    def _phase_functions(self) -> dict[str, Callable[..., StepOutput]]:
        """The mode's G and D phases, compiled whole with ``--compile`` (static shapes: each phase always sees the
        same batch shapes, so nothing recompiles after the first step; the GP/R1 double backward stays eager)."""
        phases = {"G": self.mode.generator_step, "D": self.mode.discriminator_step}
        if self.cfg.compile:
            phases = {k: torch.compile(f, dynamic=False) for k, f in phases.items()}
        return phases

    def _make_gpu_augment(self) -> Callable[[torch.Tensor], torch.Tensor]:
        import kornia.augmentation as K
        augment = K.AugmentationSequential(K.RandomCrop((self.cfg.size, self.cfg.size)),
                                           K.RandomHorizontalFlip(p=0.5 if self.cfg.flip else 0.0))
        return augment.to(self.device)

    def _fixed_sample_batch(self) -> dict[str, torch.Tensor]:
        """Up to 4 fixed images (test split when present) shown in every sample grid."""
        cfg = self.cfg
        try:
            dataset = make_dataset(self.mode.data_kind, cfg.data, "test", cfg.size, cfg.size, train=False,
                                   skip_bad=True, max_pixels=cfg.max_pixels)
        except I2IError:
            dataset = make_dataset(self.mode.data_kind, cfg.data, "train", cfg.size, cfg.size, train=False,
                                   skip_bad=True, max_pixels=cfg.max_pixels)
        items = [dataset[(i, i)] for i in range(min(4, len(dataset)))]
        batch = {k: torch.stack([item[k] for item in items]) for k in items[0]}
        return self._to_device(batch)

    # --- the step -----------------------------------------------------------------------------------------
    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for key, value in batch.items():
            value = value.to(self.device, non_blocking=True)
            if value.dtype == torch.uint8:
                value = to_model_range(value)
                if self.channels_last:
                    value = value.contiguous(memory_format=torch.channels_last)
            out[key] = value
        return out

    def _augment_on_gpu(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        images = [k for k in ("A", "B") if k in batch]
        if self.mode.data_kind == "paired":  # one crop/flip for both halves of a pair
            joint = self.gpu_augment(torch.cat([batch[k] for k in images], 1))
            return {**batch, **dict(zip(images, joint.split(3, dim=1)))}
        return {**batch, **{k: self.gpu_augment(batch[k]) for k in images}}

    def _run_phase(self, phase: str, compute: Callable[[], StepOutput],
                   allowed: Optional[torch.Tensor] = None) -> tuple[StepOutput, torch.Tensor]:
        """Forward under autocast, scaled backward into this phase's parameters only, then an optimiser step that
        the device skips unless the loss and every gradient are finite on every rank (and ``allowed``). A skipped
        phase leaves weights, optimiser state and buffers (batch-norm statistics) exactly as they were."""
        self.mode.nets = self.phase_nets[phase]
        optimizer, scaler, params = self.optimizers[phase], self.scalers[phase], self.phase_params[phase]
        self.buffers.snapshot()
        with autocast(self.device, self.precision, cache=not self.cfg.cuda_graph):
            out = compute()
        scaler.scale(out.loss).backward(inputs=params)
        if scaler.is_enabled():
            scaler.unscale_(optimizer)  # an fp16 overflow leaves inf gradients, which the check below sees
        ok = all_finite(out.loss, [p.grad for p in params if p.grad is not None])
        if allowed is not None:
            ok = ok & allowed
        ok = dist.all_ranks(ok)
        guarded_step(optimizer, ok)
        if scaler.is_enabled():
            scaler.update()  # backs off after an overflow, as GradScaler.step + update would
        if phase == "D" and self.cfg.clip_weights:
            clip_weights_(params, self.cfg.clip_weights)
        self.buffers.restore_unless(ok)
        optimizer.zero_grad(set_to_none=True)
        return out, ok

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One G step then one D step, with no host synchronisation; returns detached losses to log.

        A non-finite G step skips the whole step (D's update too, and G's fakes stay out of image pools); a
        non-finite D step skips D's update. Either way the step counts: the LR schedule advances. The values that
        change per step (progress, EMA decay, LR) are written into device tensors here, outside the device step,
        so a captured step (--cuda-graph) reads them on every replay.
        """
        self.progress.fill_(self.step / self.total_steps)
        if self.ema is not None:  # warm-up: forget the random init fast
            self.ema_rate.fill_(1.0 - min(self.cfg.ema_decay, (1 + self.step) / (10 + self.step)))
        if self.cuda_graph is not None:
            logs = self.cuda_graph.step(batch)
        else:
            logs = self.device_step(batch)
        for scheduler in self.schedulers.values():
            scheduler.step()
        self.step += 1
        return logs

    def device_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The device's part of a step: normalisation, augmentation, both phases, EMA, counters and log sums."""
        batch = self._to_device(batch)
        if self.gpu_augment is not None:
            batch = self._augment_on_gpu(batch)
        g, g_ok = self._run_phase("G", lambda: self.phase_functions["G"](batch))
        self.mode.fakes_accepted = g_ok
        d, d_ok = self._run_phase("D", lambda: self.phase_functions["D"](batch, g.outputs), allowed=g_ok)
        self.mode.nets = self.nets
        if self.ema is not None:
            self._update_ema(g_ok)
        self.skips.record(d_ok)  # d_ok includes g_ok
        logs = {k: v.detach() for k, v in {"G": g.loss, "D": d.loss, **g.logs, **d.logs}.items()}
        self.log_sums.add(logs, d_ok)
        return logs

    @torch.no_grad()
    def _update_ema(self, ok: torch.Tensor) -> None:
        """EMA of the generators; a skipped G step leaves it as it was (its lerp weight becomes 0)."""
        weight = ok.float() * self.ema_rate
        for name, ema_net in self.ema.items():
            net = self.nets[name]
            ema_params = list(ema_net.parameters())
            steps = torch._foreach_sub(list(net.parameters()), ema_params)
            torch._foreach_mul_(steps, weight)  # a device scalar: no host sync, and captured steps read it
            torch._foreach_add_(ema_params, steps)
            for b_ema, b in zip(ema_net.buffers(), net.buffers()):
                b_ema.copy_(b)

    # --- loop ---------------------------------------------------------------------------------------------
    def fit(self) -> Path:
        """Train until ``total_steps``; returns the run folder.

        SIGINT/SIGTERM finish the current step and save a checkpoint, then act as the signal would have: SIGINT raises
        KeyboardInterrupt (the CLI exits 130), SIGTERM raises SystemExit(143).
        """
        previous = {s: signal.signal(s, self._request_stop) for s in (signal.SIGINT, signal.SIGTERM)} \
            if _main_thread() else {}
        bar = tqdm(total=self.total_steps, initial=self.step, disable=self.rank != 0 or not self.cfg.progress,
                   dynamic_ncols=True, desc=f"{self.cfg.mode}")
        try:
            while self.step < self.total_steps and not self.stop_requested:
                epoch, position = divmod(self.step, self.steps_per_epoch)
                self.sampler.set_epoch(epoch, skip=position * self.local_batch)
                for batch in self.loader:
                    self.train_step(batch)
                    bar.update(1)
                    self._after_step(bar)
                    if self.world_size > 1 and self._log_point():  # a signal may reach the ranks at different
                        self.stop_requested = dist.any_true(self.stop_signal is not None, self.device)  # steps
                    if self.step >= self.total_steps or self.stop_requested:
                        break
            self.save()
        finally:
            bar.close()
            for s, handler in previous.items():
                signal.signal(s, handler)
            if self.logger is not None:
                self.logger.close()
            self.run_lock.release()
        if self.stop_signal is not None:
            if self.rank == 0:
                print(f"i2i: stopped by {signal.Signals(self.stop_signal).name} at step {self.step}; checkpoint saved. "
                      f"Continue with: i2i train --resume {self.run_dir}", file=sys.stderr)
            if self.stop_signal == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + self.stop_signal)
        return self.run_dir

    def _log_point(self) -> bool:
        """Every --log-every steps and at the end: the same steps on every rank (they meet in collectives there)."""
        return self.step % self.cfg.log_every == 0 or self.step == self.total_steps

    def _after_step(self, bar: tqdm) -> None:
        """Host-side work between steps: at log points the only copies from the device (log means, skip counts)."""
        cfg = self.cfg
        if self._log_point():
            values = self.log_sums.mean(dist.mean_over_ranks)  # means over the steps since the last log point
            nonfinite_total, longest_run = self.skips.read()
            values["lr"] = self.cfg.lr * self.lr_factor(self.step - 1)  # the LR the step just taken used
            values["nonfinite_steps"] = nonfinite_total
            values["epoch"] = round(self.step / self.steps_per_epoch, 3)  # epochs done, fractional
            if self.logger is not None:  # adds the wall time and images/s
                self.logger.scalars(self.step, values)
                bar.set_postfix({k: f"{v:.3g}" for k, v in values.items() if k in ("G", "D")})
            if longest_run >= cfg.max_nonfinite:
                raise I2IError(f"{longest_run} non-finite steps in a row by step {self.step} (these updates were "
                               f"skipped); stopping. Continue from the last checkpoint with --resume {self.run_dir}, "
                               f"e.g. with a lower --lr or --precision fp32.")
        if self.rank == 0 and (self.step % cfg.sample_every == 0 or self.step == self.total_steps):
            self.write_samples()
        if self.step % cfg.checkpoint_every == 0 and self.step < self.total_steps:
            self.save()
        if self.evaluator is not None and (self.step % cfg.eval_every == 0 or self.step == self.total_steps):
            self.evaluator(self)

    def _request_stop(self, signum: int, frame: Any) -> None:
        self.stop_signal = signum
        if self.world_size == 1:  # under DDP the ranks agree on stopping at the next log point (fit)
            self.stop_requested = True

    # --- outputs ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def write_samples(self) -> Path:
        """Sample grid of the fixed batch (one row per image: input | output | reconstruction/target)."""
        nets = self.nets if self.ema is None else nn.ModuleDict({**self.nets, **self.ema})
        nets.eval()
        try:
            with autocast(self.device, self.precision):
                rows = self.mode.visuals(self.sample_batch, nets)
        finally:
            self.nets.train()
        return self.logger.samples(self.step, rows)

    def save(self) -> Optional[Path]:
        """Checkpoint now (rank 0 writes; other ranks wait); a no-op when this step is already saved."""
        if self.step == self.saved_step:  # e.g. a stop or the end of the run right after a periodic save
            return None
        path = None
        replicas = dist.replica_checksums(self.nets.parameters(), self.device)  # one row per rank
        if self.rank == 0:
            weights = {"nets": self.nets.state_dict()}
            if self.ema is not None:
                weights["ema"] = self.ema.state_dict()
            state = {
                "step": self.step,
                "world_size": self.world_size,
                "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
                "scalers": {k: s.state_dict() for k, s in self.scalers.items()},
                "rng": rng_state(),
                "extra": self.mode.extra_state(),
                "nonfinite_total": int(self.skips.total),
                "replica_checksums": replicas,
            }
            path = save_checkpoint(self.run_dir, self.step, self.cfg, weights, state, self.cfg.keep_checkpoints)
        dist.barrier()
        self.saved_step = self.step
        return path

    def _restore(self, checkpoint: Path) -> None:
        weights, state = load_weights(checkpoint), load_state(checkpoint)
        if self.mode.upgrade_weights(weights):
            raise I2IError(f"{checkpoint} was written by an older i2i whose {self.cfg.mode} networks differ from "
                           "this version's: it still loads (i2i.load, i2i sample, i2i convert), but training cannot "
                           "continue from it; start a new run")
        try:
            self.nets.load_state_dict(weights["nets"])
            if self.ema is not None and "ema" in weights:
                self.ema.load_state_dict(weights["ema"])
            for group, objects in (("optimizers", self.optimizers), ("schedulers", self.schedulers),
                                   ("scalers", self.scalers)):
                for key, obj in objects.items():
                    obj.load_state_dict(state[group][key])
        except (KeyError, RuntimeError, ValueError) as e:
            raise I2IError(f"checkpoint {checkpoint} does not match this model/config: "
                           f"{str(e).strip().splitlines()[0]}") from None
        self.step = self.saved_step = int(state["step"])
        self._set_optimiser_settings()
        self.skips = SkipCounter(self.device, int(state.get("nonfinite_total", 0)))
        self.mode.load_extra_state(state.get("extra", {}))
        if state.get("world_size", 1) == self.world_size:
            set_rng_state(state["rng"])
        else:  # a different world size cannot replay the same streams; reseed per rank from the step
            seed_everything(self.cfg.seed + self.step * 1000 + self.rank)

    def _set_optimiser_settings(self) -> None:
        """After a restore: this config's --lr (on this config's schedule) and Adam betas, not the checkpoint's.

        An optimiser's state holds its LR and betas, and a scheduler its base LR; loaded as they are, a resumed
        run would silently keep the old --lr, and a stretched schedule would take one step at the old LR."""
        for phase, optimizer in self.optimizers.items():
            self.schedulers[phase].base_lrs = [self.cfg.lr] * len(optimizer.param_groups)
            lr = self.cfg.lr * self.lr_factor(self.step)
            for group in optimizer.param_groups:
                # a captured step (--cuda-graph) reads the LR from a device tensor, the scheduler fills it in place
                group["lr"] = torch.tensor(lr, device=self.device) if self.cfg.cuda_graph else lr
                if "betas" in group:
                    group["betas"] = (self.cfg.beta1, self.cfg.beta2)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def train(config: TrainConfig | dict[str, Any], resume: Optional[str | Path] = None, overwrite: bool = False) -> Path:
    """Train a model as configured, or continue from ``resume`` (a run or checkpoint folder); returns the run folder.

    ``config`` as a dict names only the fields to set: on resume the rest come from the checkpoint. Every check
    runs before anything is created (:func:`~i2i.train.start.plan_start`); ``overwrite`` moves an old run in the
    output folder aside first.
    """
    start = plan_start(config, resume, overwrite)
    if start.nothing_to_do:
        return start.run_dir
    if overwrite and os.environ.get("RANK", "0") == "0":
        move_aside(start.run_dir)
    try:
        trainer = Trainer(start.cfg, start.checkpoint)
        for note in start.notes:
            say(note)
        return trainer.fit()
    finally:
        dist.shutdown()
