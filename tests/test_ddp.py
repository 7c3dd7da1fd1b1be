"""DDP through ``torchrun --nproc_per_node 2 -m i2i train`` on CPU (gloo).

Why a 2-rank run must equal a single process here: CycleGAN with instance norm treats every image on its own, the
image pool is off (pool_size=0) and nothing else draws random numbers in a step, so each loss term of a batch of 2
is the mean of the two per-image terms. DDP averages the per-rank gradients of per-rank batches of 1; one process
averages the loss over its batch of 2: the same gradient, up to float rounding. DistributedSampler deals the
shuffled epoch out interleaved (rank r takes positions r, r + 2, ...), so at step k the ranks' batches together are
exactly positions 2k and 2k+1, the single process's batch k (checked in ``test_ranks_together_see_the_single_batch``);
augmentation is seeded per image, not per rank. R1 (``autograd.grad`` with ``create_graph``) through the DDP-wrapped
discriminators is included, so the double backward is checked against the single process too.

Tolerances: losses agree to 1e-5 relative; conv weights to 1e-5 absolute; network outputs to 1e-3. Conv biases
directly followed by instance norm are left out of the weight comparison: their true gradient is 0 (the norm removes
them), Adam turns float-noise gradients into steps of up to ~lr, and they have no effect on any output.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import i2i
from i2i.data import ResumableSampler
from i2i.errors import I2IError
from i2i.modes.base import create_mode
from i2i.train import distributed as dist
from i2i.train.checkpoint import list_checkpoints, load_checkpoint_config, load_state, load_weights

ROOT = Path(__file__).resolve().parents[1]


def flags(fields: dict) -> list[str]:
    out = []
    for key, value in fields.items():
        flag = "--" + key.replace("_", "-")
        out += [flag if value else "--no-" + flag[2:]] if isinstance(value, bool) else [flag, str(value)]
    return out


def torchrun(fields: dict) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "i2i", "train", *flags(fields)]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]


def log_lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def loaded_nets(checkpoint: Path) -> nn.ModuleDict:
    mode = create_mode(load_checkpoint_config(checkpoint))
    mode.nets.load_state_dict(load_weights(checkpoint)["nets"])
    return mode.nets.eval()


def assert_replicas_in_sync(checkpoint: Path, world_size: int) -> None:
    """Every rank's parameter fingerprint is identical, and equal to that of the weights rank 0 saved."""
    table = load_state(checkpoint)["replica_checksums"]
    assert table.shape[0] == world_size and torch.equal(table, table[:1].expand_as(table))
    torch.testing.assert_close(table[0], dist.checksum(loaded_nets(checkpoint).parameters()), rtol=1e-12, atol=0)


def assert_same_model(a: Path, b: Path) -> None:
    nets_a, nets_b = loaded_nets(a), loaded_nets(b)
    weights_a, weights_b = nets_a.state_dict(), nets_b.state_dict()
    for key in weights_a:  # atol: a quarter of one Adam step (lr 2e-4); summation order moves a few elements ~1e-5
        if key.endswith("weight"):
            torch.testing.assert_close(weights_a[key], weights_b[key], rtol=0, atol=5e-5,
                                       msg=lambda m, key=key: f"{key}: {m}")
    # outputs: instance norm magnifies those 1e-5 weight differences to ~3e-3
    x = torch.linspace(-1, 1, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32).sin()
    with torch.no_grad():
        for name in nets_a:
            torch.testing.assert_close(nets_a[name](x), nets_b[name](x), rtol=0, atol=1e-2,
                                       msg=lambda m, name=name: f"{name}: {m}")


def test_ranks_together_see_the_single_batch(example_data):
    """With DistributedSampler's interleaving, the union of the ranks' step-k batches is the 1-process batch k."""
    from i2i.data import make_dataset
    dataset = make_dataset("unpaired", example_data / "unpaired", "train", 32, 36)
    for local_batch in (1, 2):
        single = list(ResumableSampler(dataset, seed=3))
        ranks = [list(ResumableSampler(dataset, seed=3, rank=r, world_size=2)) for r in range(2)]
        global_batch = 2 * local_batch
        for k in range(len(single) // global_batch):
            together = {key for r in ranks for key in r[k * local_batch:(k + 1) * local_batch]}
            assert together == set(single[k * global_batch:(k + 1) * global_batch])


def test_cyclegan_two_ranks_match_one_process_and_resume_on_one(example_data, tiny, tmp_path):
    fields = {**tiny, "mode": "cyclegan", "data": str(example_data / "unpaired"), "pool_size": 0, "r1_gamma": 1.0,
              "steps": 5, "checkpoint_every": 3}
    torchrun({**fields, "out": str(tmp_path / "ddp")})
    single = i2i.train(**{**fields, "out": str(tmp_path / "single")})
    ddp_ckpts, single_ckpts = list_checkpoints(tmp_path / "ddp"), list_checkpoints(single)
    assert [p.name for p in ddp_ckpts] == [p.name for p in single_ckpts] == ["step_00000003", "step_00000005"]
    assert sorted(p.name for p in (tmp_path / "ddp" / "checkpoints").iterdir()) == [p.name for p in ddp_ckpts]
    for ckpt in ddp_ckpts:
        assert_replicas_in_sync(ckpt, world_size=2)
        assert load_state(ckpt)["world_size"] == 2
    # only rank 0 logs: one line per step; the logged losses are averaged over ranks = the single process's
    ddp_log, single_log = log_lines(tmp_path / "ddp"), log_lines(single)
    assert [row["step"] for row in ddp_log] == [1, 2, 3, 4, 5]
    for row_ddp, row_single in zip(ddp_log, single_log):
        # rel 1e-4: the all-reduced mean sums in another order than one process does (1.1e-5 seen at step 5)
        for key in ("G", "D", "cycle_A", "idt_B", "D_A"):
            assert row_ddp[key] == pytest.approx(row_single[key], rel=1e-4), (row_ddp["step"], key)
    for ckpt_ddp, ckpt_single in zip(ddp_ckpts, single_ckpts):
        assert_same_model(ckpt_ddp, ckpt_single)

    # resume the 2-rank run's step-3 checkpoint in one process: it continues to the single process's step 5
    cfg = dataclasses.replace(load_checkpoint_config(ddp_ckpts[0]), out=str(tmp_path / "resumed"))
    resumed = i2i.train(cfg, resume=ddp_ckpts[0])
    (last,) = list_checkpoints(resumed)
    state = load_state(last)
    assert state["step"] == 5 and state["world_size"] == 1
    assert_replicas_in_sync(last, world_size=1)
    assert_same_model(last, single_ckpts[1])


def test_pix2pix_with_gradient_penalty_stays_in_sync(example_data, tiny, tmp_path):
    """Batch norm (per-rank statistics) and dropout make this differ from one process; the replicas must still hold
    identical weights, with WGAN-GP's double backward through the DDP-wrapped discriminator."""
    run = tmp_path / "p2p"
    torchrun({**tiny, "mode": "pix2pix", "data": str(example_data / "paired"), "gp_weight": 10.0, "steps": 2,
              "tensorboard": True, "out": str(run)})
    (ckpt,) = list_checkpoints(run)
    assert_replicas_in_sync(ckpt, world_size=2)
    assert [row["step"] for row in log_lines(run)] == [1, 2]
    assert all(torch.isfinite(torch.tensor(row["D"])) for row in log_lines(run))
    assert len(list((run / "tensorboard").glob("events.*"))) == 1  # rank 1 wrote no event file
    assert [p.name for p in (run / "samples").iterdir()] == ["step_00000002.png"]


def test_sync_batchnorm_conversion():
    nets = nn.ModuleDict({"G": nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), "D": nn.Conv2d(3, 1, 3)})
    weight = nets["G"][1].weight
    with pytest.raises(I2IError, match="needs CUDA"):
        dist.convert_sync_batchnorm(nets, torch.device("cpu"))
    assert dist.convert_sync_batchnorm(nets, torch.device("cuda")) == 1  # replaces modules only; runs without CUDA
    assert isinstance(nets["G"][1], nn.SyncBatchNorm) and nets["G"][1].weight is weight
    assert dist.convert_sync_batchnorm(nn.ModuleDict({"D": nn.Conv2d(3, 1, 3)}), torch.device("cpu")) == 0


def test_single_process_helpers_are_no_ops():
    logs = {"G": torch.tensor(2.0)}
    assert dist.mean_over_ranks(logs) is logs
    assert dist.any_true(True, torch.device("cpu")) and not dist.any_true(False, torch.device("cpu"))
    assert dist.replica_checksums([torch.ones(3)], torch.device("cpu")).tolist() == [[3.0, 3.0]]
