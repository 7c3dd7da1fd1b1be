"""Reliability: kill -9 and resume bit-exactly, clean stops on SIGINT/SIGTERM, atomic checkpoints, non-finite steps,
determinism, and a data pipeline that does not leak over a long run."""
from __future__ import annotations

import dataclasses
import errno
import gc
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import i2i
from i2i.cli import main as cli
from i2i.config import make_config
from i2i.modes.base import StepOutput
from i2i.train import checkpoint as checkpoint_module
from i2i.train.checkpoint import checkpoint_problem, find_checkpoint, list_checkpoints, load_state, save_checkpoint
from i2i.train.trainer import Trainer

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
TINY_FLAGS = ["--mode", "cyclegan", "--size", "32", "--ngf", "8", "--ndf", "8", "--n-blocks", "2", "--batch-size", "2",
              "--no-tensorboard", "--device", "cpu", "--seed", "0", "--deterministic", "--log-every", "1",
              "--sample-every", "1000", "--checkpoint-every", "1", "--keep-checkpoints", "2"]


def train_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "i2i", "train", *args]


def latest_step(run: Path) -> int:
    found = list_checkpoints(run)
    return int(found[-1].name.split("_")[1]) if found else 0


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(find_checkpoint(run) / "weights.safetensors"))


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], note: str = "") -> None:
    assert a.keys() == b.keys(), note
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differing, f"{len(differing)} tensors differ, e.g. {differing[:3]} {note}"


def wait_for(predicate, timeout: float, process: subprocess.Popen | None = None) -> bool:
    """Poll until ``predicate()`` holds, the process exits, or the timeout passes."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        if process is not None and process.poll() is not None:
            return predicate()
        time.sleep(0.02)
    return False


def test_kill9_resume_bit_exact(tmp_path, example_data):
    """kill -9 at random moments (mid-step, mid-save), resume each time: the final weights equal an uninterrupted run."""
    steps = 40  # a small image pool and instance noise draw random numbers every step: the RNG must resume exactly
    data = ["--data", str(example_data / "unpaired"), "--steps", str(steps), "--workers", "0", "--pool-size", "4",
            "--instance-noise", "0.05", *TINY_FLAGS]
    run = tmp_path / "killed"
    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    note = f"(random delays from seed {seed})"
    kills = 0
    for attempt in range(3):
        args = data + ["--out", str(run)] if attempt == 0 else ["--resume", str(run)]
        before = latest_step(run)
        process = subprocess.Popen(train_cmd(*args), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_for(lambda: latest_step(run) > before, 60, process), f"no new checkpoint {note}"
        time.sleep(rng.uniform(0.0, 0.6))
        if process.poll() is None:
            process.kill()  # SIGKILL: no handler, no cleanup, possibly in the middle of writing a checkpoint
            kills += 1
        process.wait()
        assert latest_step(run) >= before + 1  # the folder a resume would use is complete
        load_state(find_checkpoint(run))  # and loadable, whatever was half-written next to it
    assert kills >= 1, f"every run finished before its kill {note}"
    assert latest_step(run) < steps, f"the kills never interrupted training {note}"
    finished = subprocess.run(train_cmd("--resume", str(run)), env=ENV, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert latest_step(run) == steps
    reference = tmp_path / "reference"  # the same run uninterrupted, in a process with the same thread count
    subprocess.run(train_cmd(*data, "--out", str(reference)), env=ENV, check=True, capture_output=True, timeout=120)
    assert_same_weights(final_weights(reference), final_weights(run), note)
    leftovers = [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    assert not leftovers, f"temporary folders left after a save: {leftovers}"
    assert len(list_checkpoints(run)) == 2  # keep_checkpoints


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_stop_signal_to_process_group_saves_and_exits(tmp_path, example_data, signum):
    """Ctrl-C in a terminal / SIGTERM from SLURM reach the whole group, workers included: the run saves the step it
    reached and exits 130 / 143."""
    run = tmp_path / "run"
    process = subprocess.Popen(train_cmd("--data", str(example_data / "unpaired"), "--steps", "1000", "--workers", "2",
                                         "--out", str(run), *TINY_FLAGS), env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert wait_for(lambda: latest_step(run) >= 2, 60, process)
    os.killpg(process.pid, signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, stderr[-2000:]
    name = signal.Signals(signum).name
    assert f"stopped by {name} at step" in stderr and f"--resume {run}" in stderr
    reached = int(stderr.split(f"stopped by {name} at step ")[1].split(";")[0])
    assert latest_step(run) == reached
    assert json.loads((run / "log.jsonl").read_text().splitlines()[-1])["step"] == reached  # log_every=1
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("signum,exception", [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, SystemExit)])
def test_signal_finishes_step_saves_then_raises(tmp_path, example_data, tiny, signum, exception):
    """In-process: the signal arrives during step 3; the step completes, step 3 is saved, then the signal's exception."""
    cfg = make_config({**tiny, "mode": "cyclegan", "data": str(example_data / "unpaired"), "out": str(tmp_path / "r"),
                       "steps": 50})
    trainer = Trainer(cfg)
    step = trainer.train_step

    def train_step(batch):
        if trainer.step == 2:
            os.kill(os.getpid(), signum)  # delivered to fit()'s handler, in the main thread, mid-step
        return step(batch)

    trainer.train_step = train_step
    handler = signal.getsignal(signum)
    with pytest.raises(exception) as caught:
        trainer.fit()
    if exception is SystemExit:
        assert caught.value.code == 128 + signal.SIGTERM
    assert latest_step(trainer.run_dir) == 3 and trainer.step == 3
    assert signal.getsignal(signum) is handler  # fit() restored the previous handler


def test_partial_checkpoints_are_ignored_and_cleaned(tmp_path, example_data, tiny):
    """Half-written (.tmp_step_*) and incomplete step folders are never loaded; the next save removes the leftovers
    of dead processes and never the temporary folder of a live one."""
    fields = {**tiny, "mode": "cyclegan", "data": str(example_data / "unpaired"), "checkpoint_every": 1}
    run = i2i.train(out=str(tmp_path / "r"), steps=2, **fields)
    folder = run / "checkpoints"
    dead = subprocess.Popen(["true"])
    dead.wait()  # a PID that no longer runs
    live = subprocess.Popen(["sleep", "60"])
    dead_tmp, live_tmp = folder / f".tmp_step_00000099_{dead.pid}", folder / f".tmp_step_00000099_{live.pid}"
    for tmp in (dead_tmp, live_tmp):
        tmp.mkdir()
        (tmp / "weights.safetensors").write_bytes(b"half written")
    (folder / "step_00000098").mkdir()  # a step folder missing files (e.g. copied or deleted half-way)
    (folder / "step_00000098" / "weights.safetensors").write_bytes(b"")
    assert find_checkpoint(run).name == "step_00000002"
    try:
        i2i.train(out=str(run), steps=3, resume=str(run), **fields)
    finally:
        live.kill()
        live.wait()
    assert find_checkpoint(run).name == "step_00000003"
    assert not dead_tmp.exists() and (live_tmp / "weights.safetensors").read_bytes() == b"half written"


def test_run_lock_refuses_a_second_trainer_and_takes_over_a_dead_ones(tmp_path, example_data, capfd):
    """A second trainer on a run being trained by another process is refused (exit 2, naming the owner's PID and
    the folder) and the first trains on; after the first is killed (-9), its lock is stale: a resume takes it over
    with a warning."""
    run = tmp_path / "run"
    first = subprocess.Popen(train_cmd("--data", str(example_data / "unpaired"), "--steps", "1000", "--workers", "0",
                                       "--out", str(run), *TINY_FLAGS), env=ENV, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: latest_step(run) >= 1, 60, first)
        assert cli(["train", "--resume", str(run)]) == 2
        assert f"i2i: error: run folder {run} is being trained by process {first.pid} on " in capfd.readouterr().err
        reached = latest_step(run)
        assert wait_for(lambda: latest_step(run) > reached + 1, 60, first) and first.poll() is None
    finally:
        first.kill()
        first.wait()
    assert (run / ".lock").read_text().split()[0] == str(first.pid)  # kill -9 left the lock file
    assert cli(["train", "--resume", str(run), "--steps", str(latest_step(run) + 1)]) == 0
    assert f"taking over the lock of {run} left by process {first.pid} on " in capfd.readouterr().err
    assert not (run / ".lock").exists()


def test_run_lock_in_one_process(tmp_path, example_data, tiny):
    """Two trainers of one run in one process are refused too; fit() and a failed start release the lock."""
    cfg = make_config({**tiny, "mode": "cyclegan", "data": str(example_data / "unpaired"), "out": str(tmp_path / "r"),
                       "steps": 1})
    first = Trainer(cfg)
    with pytest.raises(i2i.I2IError, match=f"is being trained by process {os.getpid()} on "):
        Trainer(cfg)
    first.fit()
    assert not (tmp_path / "r" / ".lock").exists()
    with pytest.raises(i2i.I2IError, match="does not match"):
        Trainer(dataclasses.replace(cfg, ngf=16), resume=tmp_path / "r")
    Trainer(cfg, resume=tmp_path / "r").fit()  # neither left the lock behind


KILLED_INSIDE_A_SAVE = """
import os, shutil, signal, sys
from pathlib import Path
from i2i.train import checkpoint
from i2i.cli import main

where, args = sys.argv[1], sys.argv[2:]
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
write, replace, rmtree = checkpoint._write_synced, os.replace, shutil.rmtree

def half_written_state(path, fill):  # weights and config written, state.pt half written
    if path.name == "state.pt" and not path.parent.name.startswith(".tmp_step_00000001_"):
        with open(path, "xb") as f:
            f.write(b"PK half a state")
        die()
    write(path, fill)

def complete_but_not_renamed(src, dst):
    if Path(dst).name.startswith("step_"):
        die()
    replace(src, dst)

def pruned_but_not_deleted(path, *a, **k):
    if Path(path).name.startswith(".old_step_"):
        die()
    rmtree(path, *a, **k)

if where == "state":
    checkpoint._write_synced = half_written_state
elif where == "rename":
    os.replace = complete_but_not_renamed
else:
    shutil.rmtree = pruned_but_not_deleted
sys.exit(main(args))
"""


def test_kill9_inside_checkpoint_writes(tmp_path, example_data):
    """kill -9 at three fixed moments of a save: state.pt half written, the folder complete but not yet renamed, an
    old checkpoint renamed for deletion but not deleted. Each time the newest complete checkpoint loads, a resume
    carries on, and the leftovers of the dead process are removed by the next save."""
    run, folder = tmp_path / "run", tmp_path / "run" / "checkpoints"
    new_run = ["--data", str(example_data / "unpaired"), "--steps", "6", "--workers", "0", "--out", str(run),
               *TINY_FLAGS]
    expected = {"state": ("step_00000001", ".tmp_step_00000002_"), "rename": ("step_00000001", ".tmp_step_00000002_"),
                "prune": ("step_00000003", ".old_step_00000001_")}
    for where, (newest, leftover) in expected.items():
        args = new_run if where == "state" else ["--resume", str(run)]
        killed = subprocess.run([sys.executable, "-c", KILLED_INSIDE_A_SAVE, where, "train", *args], env=ENV,
                                capture_output=True, text=True, timeout=120)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        assert find_checkpoint(run).name == newest and checkpoint_problem(find_checkpoint(run)) is None
        assert load_state(find_checkpoint(run))["step"] == int(newest[5:])
        leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".")]  # the older ones were removed
        assert len(leftovers) == 1 and leftovers[0].startswith(leftover), leftovers
    assert cli(["train", "--resume", str(run)]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["step_00000005", "step_00000006"]


class FillsUp(io.FileIO):
    """A file on a disk that is full after its first 64 bytes: the next write fails with ENOSPC."""

    def write(self, data) -> int:
        if self.tell() + memoryview(data).nbytes > 64:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


def test_full_disk_during_a_save_keeps_the_last_checkpoint(tmp_path, example_data, tiny, monkeypatch, capsys):
    """The disk fills up while the weights, then while state.pt are written: one line naming the cause and the
    folder (not torch's inline_container error), no partial folder, the last checkpoint kept; with space, it goes on."""
    run = i2i.train(mode="cyclegan", data=str(example_data / "unpaired"), out=str(tmp_path / "r"), steps=2,
                    **{**tiny, "checkpoint_every": 1})
    for filling in ("weights.safetensors", "state.pt"):
        def open_on_a_full_disk(path, mode="r", *args, **kwargs):
            full = Path(path).name == filling
            return FillsUp(path, mode.replace("b", "")) if full else open(path, mode, *args, **kwargs)

        monkeypatch.setattr(checkpoint_module, "open", open_on_a_full_disk, raising=False)
        assert cli(["train", "--resume", str(run), "--steps", "4"]) == 2
        err = capsys.readouterr().err
        assert (f"i2i: error: cannot save step 3: no space left on device at {run / 'checkpoints'} (the last "
                f"checkpoint, step_00000002, is kept); once that is fixed, continue with --resume {run}\n") in err
        assert "Traceback" not in err and "inline_container" not in err
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000001", "step_00000002"]
        assert not (run / ".lock").exists()
    monkeypatch.undo()  # space freed
    assert cli(["train", "--resume", str(run), "--steps", "4"]) == 0
    assert load_state(find_checkpoint(run))["step"] == 4


def test_nonfinite_weights_or_buffers_are_never_saved(tmp_path, example_data, tiny):
    cfg = make_config({**tiny, "mode": "cyclegan", "data": str(example_data / "unpaired"), "out": str(tmp_path / "r"),
                       "steps": 4, "checkpoint_every": 1})
    trainer = Trainer(cfg)
    train_step = trainer.train_step
    name, weight = next(iter(trainer.nets.named_parameters()))

    def diverging_step(batch):
        logs = train_step(batch)
        if trainer.step == 2:
            with torch.no_grad():
                weight.view(-1)[0] = float("nan")
        return logs

    trainer.train_step = diverging_step
    message = (f"not saving step 2: non-finite values (NaN/inf) in 1 weight/buffer tensor(s), e.g. nets.{name}; "
               "training diverged and the last checkpoint, step_00000001, is kept. Resume from it with a lower --lr "
               "or --precision fp32")
    with pytest.raises(i2i.I2IError, match=re.escape(message)):
        trainer.fit()
    assert [p.name for p in (trainer.run_dir / "checkpoints").iterdir()] == ["step_00000001"]
    assert not (trainer.run_dir / ".lock").exists()
    buffers = {"nets": {"D.norm.running_var": torch.tensor([1.0, float("inf")])}}
    with pytest.raises(i2i.I2IError, match=r"not saving step 7: .* e.g. nets.D.norm.running_var; .* no checkpoint was"):
        save_checkpoint(tmp_path / "other", 7, cfg, buffers, {}, keep=2)
    assert not (tmp_path / "other").exists()


@pytest.fixture(scope="module")
def three_checkpoints(example_data, tmp_path_factory) -> Path:
    from conftest import TINY
    return i2i.train(mode="cyclegan", data=str(example_data / "unpaired"), out=str(tmp_path_factory.mktemp("three")),
                     steps=3, **{**TINY, "checkpoint_every": 1, "keep_checkpoints": 3})


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damaged", ["state.pt", "weights.safetensors", "config.yaml"])
def test_damaged_newest_checkpoint_falls_back_to_the_one_before(three_checkpoints, tmp_path, capsys, damaged):
    """A truncated state.pt or weights file, or a config.yaml that is not text: load and resume use the newest
    undamaged checkpoint, with a warning naming the damaged one."""
    run = tmp_path / "run"
    shutil.copytree(three_checkpoints, run)
    newest = run / "checkpoints" / "step_00000003"
    if damaged == "config.yaml":
        (newest / damaged).write_bytes(b"\xff\xfe\x00 mode: [")
    else:
        _truncate(newest / damaged)
    assert find_checkpoint(run).name == "step_00000002"
    warning = f"i2i: warning: skipping damaged checkpoint step_00000003 (cannot read {newest / damaged}: "
    assert warning in capsys.readouterr().err
    assert i2i.load(run, device="cpu").translate(torch.zeros(1, 3, 32, 32)).isfinite().all()
    if damaged == "state.pt":  # resume from step 2 writes step 3 again; with nothing usable left, one line
        assert cli(["train", "--resume", str(run), "--steps", "3"]) == 0
        assert warning not in capsys.readouterr().err  # reported once per process
        assert checkpoint_problem(newest) is None and load_state(newest)["step"] == 3
        for checkpoint in list_checkpoints(run):
            _truncate(checkpoint / damaged)
        with pytest.raises(i2i.I2IError, match=re.escape(f"no usable checkpoint in {run}: step_00000003 is damaged "
                                                          f"(cannot read {newest / damaged}: ")):
            i2i.load(run, device="cpu")


class NaNGrad(torch.autograd.Function):
    """Identity forward (a finite loss) whose backward returns NaN gradients."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_nonfinite_steps_skipped_counted_then_stop(tmp_path, example_data, tiny, precision):
    """NaN loss (steps 2, 5-7) or NaN gradients (step 3): no update, counted in log.jsonl; 3 in a row stop the run."""
    cfg = make_config({**tiny, "mode": "cyclegan", "data": str(example_data / "unpaired"), "out": str(tmp_path / "r"),
                       "steps": 20, "max_nonfinite": 3, "checkpoint_every": 2, "precision": precision})
    trainer = Trainer(cfg)
    generator_step, train_step = trainer.phase_functions["G"], trainer.train_step
    nan_loss, nan_grad = {2, 5, 6, 7}, {3}

    def poisoned_generator_step(batch):
        out = generator_step(batch)
        if trainer.step in nan_loss:
            return StepOutput(out.loss * float("nan"), out.logs, out.outputs)
        if trainer.step in nan_grad:
            return StepOutput(NaNGrad.apply(out.loss), out.logs, out.outputs)
        return out

    changed = {}

    def recording_train_step(batch):
        before = [p.detach().clone() for p in trainer.nets.parameters()]
        index = trainer.step
        logs = train_step(batch)
        changed[index] = any(not torch.equal(a, p) for a, p in zip(before, trainer.nets.parameters()))
        return logs

    trainer.phase_functions["G"], trainer.train_step = poisoned_generator_step, recording_train_step
    with pytest.raises(i2i.I2IError, match=r"3 non-finite steps in a row by step 8 .*--resume"):
        trainer.fit()
    assert changed == {i: i not in nan_loss | nan_grad for i in range(8)}
    log = [json.loads(line) for line in (trainer.run_dir / "log.jsonl").read_text().splitlines()]
    assert [row["nonfinite_steps"] for row in log] == [0, 0, 1, 2, 2, 3, 4, 5]
    assert all(torch.isfinite(p).all() for p in trainer.nets.parameters())
    assert all(torch.isfinite(image).all() for pool in trainer.mode.pools.values() for image in pool.images)
    assert find_checkpoint(trainer.run_dir).name == "step_00000006"
    resumed = Trainer(cfg, resume=trainer.run_dir)  # the last checkpoint loads and resumes
    assert resumed.step == 6 and int(resumed.skips.total) == 3
    model = i2i.load(trainer.run_dir, device="cpu")
    assert torch.isfinite(model.translate(torch.zeros(1, 3, 32, 32))).all()


@pytest.mark.parametrize("workers", [0, 2])
def test_seeded_runs_are_bit_identical_on_cpu(tmp_path, example_data, tiny, workers):
    """Same seed + deterministic: identical weights, with or without worker processes (and across worker counts)."""
    fields = {**tiny, "mode": "cyclegan", "data": str(example_data / "unpaired"), "steps": 6, "deterministic": True}
    first = i2i.train(out=str(tmp_path / "a"), **{**fields, "workers": workers})
    second = i2i.train(out=str(tmp_path / "b"), **{**fields, "workers": workers})
    assert_same_weights(final_weights(first), final_weights(second))
    if workers:
        single = i2i.train(out=str(tmp_path / "c"), **{**fields, "workers": 0})
        assert_same_weights(final_weights(first), final_weights(single))
    other = final_weights(i2i.train(out=str(tmp_path / "d"), **{**fields, "seed": 1}))
    assert any(not torch.equal(a, other[k]) for k, a in final_weights(first).items())  # the seed matters


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")
def test_long_run_memory_and_files_stay_flat(tmp_path, example_data, tiny):
    """30 epochs (120 steps) with 2 workers: RSS (main + workers) and open files flat after a 30-step warm-up."""
    cfg = make_config({**tiny, "mode": "cyclegan", "data": str(example_data / "unpaired"), "out": str(tmp_path / "r"),
                       "steps": 120, "workers": 2, "checkpoint_every": 40, "log_every": 10})
    trainer = Trainer(cfg)
    after_step, samples = trainer._after_step, {}

    def measuring_after_step(bar):
        after_step(bar)
        if trainer.step in (30, 120):
            pids = [os.getpid(), *_children(os.getpid())]
            samples[trainer.step] = (sum(_rss_kib(p) for p in pids), len(os.listdir("/proc/self/fd")), len(pids))

    trainer._after_step = measuring_after_step
    trainer.fit()
    del trainer, after_step
    gc.collect()  # the patched method made a reference cycle: stop the workers now, not during a later test
    (rss_warm, fds_warm, procs_warm), (rss_end, fds_end, procs_end) = samples[30], samples[120]
    assert procs_warm == procs_end == 3  # persistent workers: no process churn
    assert fds_end <= fds_warm + 2, (fds_warm, fds_end)
    assert rss_end - rss_warm < 24 * 1024, f"RSS grew {(rss_end - rss_warm) / 1024:.1f} MiB over 90 steps"
    print(f"RSS main+workers {rss_warm / 1024:.0f} -> {rss_end / 1024:.0f} MiB, fds {fds_warm} -> {fds_end}")
