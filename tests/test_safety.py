"""Safe loading: checkpoints never execute code, broken ones give clear errors, and runs write only their own folder."""
from __future__ import annotations

import os
import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

import i2i
from i2i.cli import main as cli
from i2i.config import make_config
from i2i.train.checkpoint import CHECKPOINT_FILES, find_checkpoint, load_state, load_weights
from i2i.train.trainer import Trainer

PACKAGE = Path(i2i.__file__).parent


class Payload:
    """Unpickling this runs a shell command that creates ``marker``: what a malicious state.pt would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


@pytest.fixture
def run(tmp_path, example_data, tiny) -> Path:
    return i2i.train(mode="cyclegan", data=str(example_data / "unpaired"), out=str(tmp_path / "run"), steps=1, **tiny)


def test_malicious_state_pickle_is_refused_without_running(run, tmp_path, capsys):
    marker = tmp_path / "pwned"
    state_path = find_checkpoint(run) / "state.pt"
    torch.save({"step": 1, "payload": Payload(marker)}, state_path)
    with open(state_path, "rb") as f:  # the payload is real: a plain unpickler runs it
        torch.load(f, weights_only=False)
    assert marker.exists()
    marker.unlink()
    assert cli(["train", "--resume", str(run), "--steps", "2"]) == 2
    err = capsys.readouterr().err
    assert f"refusing to load {state_path}: not a plain tensor/number state file" in err
    assert not marker.exists()
    with pytest.raises(i2i.I2IError, match="refusing to load"):
        load_state(state_path.parent)
    assert not marker.exists()


def test_config_yaml_with_python_tags_is_refused(run, tmp_path, capsys):
    marker = tmp_path / "pwned"
    config = find_checkpoint(run) / "config.yaml"
    config.write_text(f"mode: !!python/object/apply:os.system ['touch {marker}']\n" + config.read_text())
    assert cli(["train", "--resume", str(run), "--steps", "2"]) == 2
    assert "is not valid YAML" in capsys.readouterr().err and not marker.exists()


@pytest.mark.parametrize("content", [b"", b"garbage" * 10, b"\xff" * 8 + b"{}"])
def test_garbage_weights_give_a_clear_error(run, content, capsys):
    weights = find_checkpoint(run) / "weights.safetensors"
    weights.write_bytes(content)
    with pytest.raises(i2i.I2IError, match=re.escape(f"cannot read {weights}")):
        load_weights(weights.parent)
    with pytest.raises(i2i.I2IError, match="cannot read"):
        i2i.load(run, device="cpu")
    assert cli(["train", "--resume", str(run), "--steps", "2"]) == 2
    assert f"cannot read {weights}" in capsys.readouterr().err


def test_mismatched_or_incomplete_checkpoint_is_a_clear_error(run, tmp_path, example_data, tiny):
    cfg = make_config({**tiny, "mode": "cyclegan", "data": str(example_data / "unpaired"), "ngf": 16,
                           "out": str(tmp_path / "other")})
    with pytest.raises(i2i.I2IError, match="does not match this model/config"):
        Trainer(cfg, resume=run)  # ngf 16 against weights trained with ngf 8
    checkpoint = find_checkpoint(run)
    (checkpoint / "state.pt").unlink()
    with pytest.raises(i2i.I2IError, match="has no state.pt"):
        load_state(checkpoint)
    with pytest.raises(i2i.I2IError, match="no checkpoint found"):  # an incomplete folder is not a checkpoint
        find_checkpoint(run)
    assert i2i.load(checkpoint, device="cpu") is not None  # weights and config alone still load for inference


def test_state_with_missing_or_wrong_typed_fields_is_refused(run, capsys):
    path = find_checkpoint(run) / "state.pt"
    good = torch.load(path, weights_only=True)
    cases = [({k: v for k, v in good.items() if k != "step"}, "'step' is missing"),
             ({**good, "step": "3"}, "'step' is a str, not int"),
             ({**good, "step": True}, "'step' is a bool, not int"),
             ({k: v for k, v in good.items() if k not in ("rng", "scalers")}, "'scalers' is missing; 'rng' is missing"),
             ({**good, "optimizers": [1]}, "'optimizers' is a list, not dict"),
             ([1, 2], "a list")]
    for state, problem in cases:
        torch.save(state, path)
        with pytest.raises(i2i.I2IError, match=re.escape(f"not an i2i training state ({problem})")):
            load_state(path.parent)
        assert cli(["train", "--resume", str(run), "--steps", "2"]) == 2
        err = capsys.readouterr().err
        assert err == f"i2i: error: refusing to resume from {path}: not an i2i training state ({problem})\n"


def test_config_and_weights_that_do_not_match_are_named(run, tmp_path, capsys):
    """A config.yaml from another run next to the weights, or weights without the expected groups: one line naming
    the mismatch from i2i.load, convert and export (not a load_state_dict traceback)."""
    checkpoint = find_checkpoint(run)
    config = checkpoint / "config.yaml"
    config.write_text(config.read_text().replace("ngf: 8\n", "ngf: 16\n"))
    mismatch = (r"of its config.yaml: \d+ of another shape \(e.g. G_AB\.\S+: \(8, 3, 7, 7\) in the file, "
                r"\(16, 3, 7, 7\) in the model\); were files of different runs mixed\?")
    with pytest.raises(i2i.I2IError, match=mismatch):
        i2i.load(run, device="cpu")
    for argv in (["convert", "--input", str(tmp_path), "--output", str(tmp_path / "out")],
                 ["export", "--format", "torchscript", "--out", str(tmp_path / "g.pt")]):
        assert cli([*argv, "--checkpoint", str(run)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"i2i: error: {checkpoint}: weights.safetensors does not match the model of its "
                              "config.yaml: ") and err.count("\n") == 1
    save_file({"model.weight": torch.zeros(2)}, str(checkpoint / "weights.safetensors"))  # no 'nets' group
    with pytest.raises(i2i.I2IError, match=r"config.yaml: \d+ tensor\(s\) missing \(e.g. G_AB\.\S+\); were"):
        i2i.load(checkpoint, device="cpu")


def test_source_loads_only_safe_formats():
    """Every torch.load in the package passes weights_only=True; no pickle/unsafe YAML/eval loading anywhere."""
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, f"{path}: {call}"
        assert not re.search(r"\bpickle\.loads?\(|yaml\.load\(|yaml\.unsafe_load|(?<![\w.])(eval|exec)\(", text), path


def test_run_writes_only_its_own_folder_and_saves_absolute_paths(tmp_path, example_data, tiny, monkeypatch):
    data = tmp_path / "data"
    shutil.copytree(example_data / "unpaired", data)
    snapshot = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in data.rglob("*")}
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    run = i2i.train(mode="cyclegan", data="../data", out="runs/x", steps=2, **{**tiny, "checkpoint_every": 1})
    assert run == work / "runs" / "x"
    assert sorted(p.name for p in work.iterdir()) == ["runs"] and sorted(p.name for p in (work / "runs").iterdir()) == ["x"]
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.yaml", "log.jsonl", "samples"]
    for checkpoint in (run / "checkpoints").iterdir():
        assert re.fullmatch(r"step_\d{8}", checkpoint.name)
        assert sorted(p.name for p in checkpoint.iterdir()) == sorted(CHECKPOINT_FILES)
    assert [p.name for p in (run / "samples").iterdir()] == ["step_00000002.png"]
    assert {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in data.rglob("*")} == snapshot  # data untouched
    saved = yaml.safe_load((find_checkpoint(run) / "config.yaml").read_text())
    assert saved["data"] == str(data) and saved["out"] == str(run)
    monkeypatch.chdir(tmp_path)  # resuming from elsewhere finds the data through the saved absolute path
    assert cli(["train", "--resume", str(run), "--steps", "3"]) == 0
    assert find_checkpoint(run).name == "step_00000003"
