"""The training benchmark (i2i bench / tools/bench.py) runs on CPU at tiny sizes and writes complete reports."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from conftest import ROOT, load_script
from i2i.cli import main as cli_main
from i2i.data import list_images
import torch

from i2i.bench import TABLE_COLUMNS, gpu_peak, main, make_jpeg_dataset, peak_for

TINY = ["--size", "32", "--ngf", "8", "--ndf", "8", "--n-blocks", "2", "--batch-sizes", "2", "--warmup", "1",
        "--steps", "2", "--repeats", "1", "--workers", "0", "--device", "cpu"]


def test_synthetic_sweep_writes_json_and_table(tmp_path):
    out_json, out_md = tmp_path / "bench.json", tmp_path / "bench.md"
    assert main(["--modes", "cyclegan,pix2pix", "--precisions", "fp32,bf16", *TINY,
                 "--json", str(out_json), "--markdown", str(out_md)]) == 0
    report = json.loads(out_json.read_text())
    rows = report["rows"]
    assert [(r["mode"], r["precision"]) for r in rows] == [("cyclegan", "fp32"), ("cyclegan", "bf16"),
                                                            ("pix2pix", "fp32"), ("pix2pix", "bf16")]
    for row in rows:
        assert "error" not in row, row
        assert row["source"] == "synthetic" and row["batch"] == 2 and row["device"] == "cpu"
        assert row["img_s"] > 0 and math.isclose(row["step_ms"], 2 / row["img_s"] * 1e3)
        assert len(row["window_img_s"]) == 1
        assert row["peak_mem_gib"] is None and row["peak_frac"] is None  # no GPU, no default peak on CPU
        assert 0 <= row["data_wait"] < 0.5  # synthetic batches are already on the device
        assert row["gflop_per_img"] > 0 and row["tflops"] > 0 and row["cuda_graph"] is False
    assert report["settings_total"] == len(rows)
    # FLOPs depend on the networks, not the precision; the ResNet CycleGAN costs more than the tiny U-Net pix2pix
    assert rows[0]["gflop_per_img"] == rows[1]["gflop_per_img"] > rows[2]["gflop_per_img"]
    assert report["environment"]["torch"]
    note = "no peak_frac: no peak figure for device cpu (give --peak-tflops to get one)"
    assert report["peak_tflops_note"] == note
    lines = out_md.read_text().splitlines()
    assert lines[0] == note + "." and lines[1] == ""  # said plainly above the table, which has no peak_frac column
    table = lines[2:]
    columns = [c for c in TABLE_COLUMNS if c != "peak_frac"]
    assert table[0] == "| " + " | ".join(columns) + " |" and len(table) == 2 + len(rows)
    assert table[3].startswith("| cyclegan | synthetic | bf16 | off | off | off | off | 2 |")


def test_folder_source_through_cli_with_peak(tmp_path):
    out_json = tmp_path / "b.json"
    assert cli_main(["bench", "--modes", "pix2pix", "--sources", "folder", "--precisions", "fp32",
                     "--make-jpegs", "4", "--peak-tflops", "1.0", *TINY, "--json", str(out_json),
                     "--markdown", str(tmp_path / "b.md")]) == 0
    report = json.loads(out_json.read_text())
    (row,) = report["rows"]
    assert report["peak_tflops_note"] == "peak_frac = achieved TFLOP/s / 1 TFLOP/s (given with --peak-tflops)"
    assert row["source"] == "folder" and "error" not in row
    assert 0 <= row["data_wait"] <= 1
    assert math.isclose(row["peak_frac"], row["tflops"] / 1.0)
    assert (tmp_path / "b.md").read_text().splitlines()[2].endswith("| peak_frac |")


def test_failed_setting_is_reported_not_fatal(tmp_path):
    out_json, out_md = tmp_path / "b.json", tmp_path / "b.md"
    assert main(["--modes", "cyclegan", "--precisions", "fp32", *TINY, "--set", "gan_loss=nonsense",
                 "--json", str(out_json), "--markdown", str(out_md)]) == 0
    (row,) = json.loads(out_json.read_text())["rows"]
    assert "gan_loss" in row["error"] and "error: " in out_md.read_text()


def test_unknown_mode_is_a_clear_error(tmp_path, capsys):
    assert main(["--modes", "nope", "--json", str(tmp_path / "b.json")]) == 2
    assert "unknown mode(s) nope" in capsys.readouterr().err


@pytest.mark.parametrize("kind,folders", [("unpaired", {"trainA": 3, "trainB": 3, "testA": 2, "testB": 2}),
                                          ("paired", {"trainA": 3, "trainB": 3, "testA": 2, "testB": 2}),
                                          ("classes", {"class0": 2, "class1": 1})])
def test_generated_jpeg_layouts(tmp_path, kind, folders):
    root = make_jpeg_dataset(tmp_path, kind, 3, 16)
    assert {name: len(list_images(root / name)) for name in folders} == folders
    assert all(p.suffix == ".jpg" for p in list_images(root / next(iter(folders))))


@pytest.mark.parametrize("name,peak", [("NVIDIA H100 80GB HBM3", ("H100 SXM", 989.0)),
                                       ("NVIDIA H100 PCIe", ("H100 PCIe", 756.0)),
                                       ("NVIDIA H200", ("H200", 989.0)),
                                       ("NVIDIA A100-SXM4-80GB", ("A100", 312.0)),
                                       ("NVIDIA L40S", ("L40S", 362.0)), ("NVIDIA L4", ("L4", 121.0)),
                                       ("NVIDIA A10G", None), ("NVIDIA GeForce RTX 4090", None)])
def test_gpu_peak_table_matches_whole_words(name, peak):
    assert gpu_peak(name) == peak


def test_peak_note_names_the_gpu_and_its_figure_or_says_there_is_none(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    assert peak_for(torch.device("cuda"), None) == (
        989.0, "peak_frac = achieved TFLOP/s / 989 TFLOP/s, the H200 datasheet's dense bf16 tensor-core peak "
               "(GPU 'NVIDIA H200')")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA GeForce RTX 4090")
    assert peak_for(torch.device("cuda"), None) == (
        None, "no peak_frac: no dense bf16 peak known for GPU 'NVIDIA GeForce RTX 4090' (give --peak-tflops to get one)")
    assert peak_for(torch.device("cuda"), 100.0)[0] == 100.0


def test_gpu_check_dry_run_prints_the_plan_and_refuses_without_cuda(tmp_path):
    script = [str(ROOT / "tools" / "gpu_check.sh"), str(tmp_path / "out")]
    plan = subprocess.run([*script, "--dry-run"], capture_output=True, text=True, timeout=120)
    assert plan.returncode == 0, plan.stderr
    lines = plan.stdout.splitlines()
    assert lines[0] == f"gpu_check plan: 13 parts, budget 530 s, reports in {tmp_path / 'out'}"
    assert "-m pytest -q -m cuda" in lines[1]
    assert [line.split(":")[0].split("] ")[1] for line in lines[2:8]] == [
        f"train {m}" for m in ("cyclegan", "pix2pix", "unit", "encoder", "gan", "cgan")]
    bench = [line for line in lines if "-m i2i bench" in line]
    assert len(bench) == 6 and all("--size 256 --device cuda" in line and "--precisions bf16" in line
                                   for line in bench)
    assert sum("--cuda-graph on" in line and "--batch-sizes 1,4,16 --sources synthetic,folder" in line
               for line in bench) == 2
    assert sum("--compile on" in line for line in bench) == 2
    assert not (tmp_path / "out").exists()
    if not torch.cuda.is_available():
        refused = subprocess.run(script, capture_output=True, text=True, timeout=120)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr
        assert refused.stderr.strip() == ("gpu_check: error: no CUDA GPU here; run it on a GPU machine (--dry-run "
                                          "prints the plan)")


def test_gpu_check_training_commands_run_on_cpu(tmp_path):
    """The check's training commands are real: each mode's, shortened and moved to the CPU, trains and saves."""
    gpu_check = load_script("tools/gpu_check.py")
    data = tmp_path / "data"
    gpu_check.make_data(data)
    replace = {"--device": "cpu", "--precision": "fp32", "--steps": "1", "--checkpoint-every": "1", "--size": "32",
               "--ngf": "8", "--ndf": "8", "--workers": "0"}
    for part in gpu_check.plan(tmp_path, data)[1:7]:
        assert part.command[1:3] == ["-m", "i2i"]
        args = part.command[3:]  # run in this process: the same CLI without six interpreter start-ups
        for flag, value in replace.items():
            args[args.index(flag) + 1] = value
        assert cli_main(args) == 0, part.name
        mode = part.name.split()[1]
        assert (tmp_path / "train" / mode / "checkpoints" / "step_00000001" / "weights.safetensors").exists(), mode


def test_gpu_check_parts_time_out_fail_or_skip_alone(tmp_path):
    gpu_check = load_script("tools/gpu_check.py")
    parts = [gpu_check.Part("fails", [sys.executable, "-c", "print('bad'); raise SystemExit(3)"], 30),
             gpu_check.Part("hangs", [sys.executable, "-c", "import time; time.sleep(60)"], 4),
             gpu_check.Part("passes", [sys.executable, "-c", "print('fine')"], 30)]
    # 3 s more than a part needs: "fails" (well under 3 s) leaves enough for "hangs", whose 4 s do not for "passes"
    gpu_check.run_all(parts, budget_s=gpu_check.REPORT_RESERVE_S + gpu_check.MIN_PART_S + 3, logs=tmp_path)
    assert parts[0].result["status"] == "failed (exit 3)" and parts[0].result["last_line"] == "bad"
    assert parts[1].result["status"] == "timed out" and 4 <= parts[1].result["seconds"] < 15
    assert parts[2].result["status"] == "skipped (out of time)"


def test_gpu_check_targets_take_the_best_fitting_row():
    gpu_check = load_script("tools/gpu_check.py")
    rows = [
        {"variant": "eager", "mode": "cyclegan", "source": "synthetic", "batch": 1, "img_s": 20.0, "peak_mem_gib": 1.5,
         "data_wait": 0.0},
        {"variant": "cuda-graph", "mode": "cyclegan", "source": "synthetic", "batch": 1, "img_s": 70.0,
         "peak_mem_gib": 2.5, "data_wait": 0.0},  # fast enough but over 2 GiB
        {"variant": "compile", "mode": "cyclegan", "source": "synthetic", "batch": 16, "error": "out of memory"},
        {"variant": "eager", "mode": "pix2pix", "source": "folder", "batch": 16, "img_s": 800.0, "peak_mem_gib": 3.0,
         "data_wait": 0.04},
    ]
    targets = gpu_check.check_targets(rows)
    assert [(t["met"], t["best"] and t["best"]["img_s"]) for t in targets] == [(False, 20.0), (False, None),
                                                                               (True, 800.0)]
    part = gpu_check.Part("bench cyclegan eager", ["i2i"], 60, result={"status": "passed", "seconds": 12.5,
                                                                     "last_line": "i2i: wrote b.json and b.md"})
    header = {"environment": {"gpu": "NVIDIA H200", "torch": "2.11.0", "cuda": "12.8"},
              "peak_tflops_note": "no peak_frac: none known"}
    for row in rows:
        row.update({"precision": "bf16", "channels_last": False, "compile": False, "cuda_graph": False,
                    "grad_checkpoint": False})
    lines = gpu_check.markdown([part], rows, header, targets).splitlines()
    assert lines[0].startswith("# GPU check (") and lines[0].endswith(", NVIDIA H200, torch 2.11.0, CUDA 12.8)")
    assert "| bench cyclegan eager | passed | 12.5 | i2i: wrote b.json and b.md |" in lines
    assert "| CycleGAN batch 1: >= 60 img/s in <= 2 GiB | no | 20.0 img/s (eager; peak 1.50 GiB, data wait 0.0%) |" \
        in lines
    assert "| CycleGAN batch 16: >= 125 img/s | no | not measured |" in lines
    assert "no peak_frac: none known." in lines
    assert "| compile | cyclegan | synthetic | bf16 | off | off | off | off | 16 | error: out of memory |" in \
        "\n".join(lines)
