#!/usr/bin/env python
"""The one GPU check (run it through ``tools/gpu_check.sh OUT_DIR``): the CUDA tests, ``i2i bench`` for cyclegan and
pix2pix at 256x256 (batch 1/4/16; eager bf16, torch.compile, CUDA graph; synthetic and JPEG-folder data) and one
short real training per mode, within one time budget (default 530 s). Writes OUT_DIR/gpu_check.json and
OUT_DIR/gpu_check.md, plus each part's log and bench reports.

Every part is its own process group with its own timeout, so one failure or hang costs only that part; parts that
no longer fit in the budget are recorded as skipped. ``--dry-run`` prints the plan and needs no GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

MIN_PART_S = 30      # a part is skipped when less than this is left of the budget
REPORT_RESERVE_S = 10  # kept for writing the reports
TRAIN_MODES = ("cyclegan", "pix2pix", "unit", "encoder", "gan", "cgan")
# bench variants: the same bf16 step eager, captured in a CUDA graph, and compiled (with channels-last, as compiled
# runs use it); compile goes last and sweeps batch 16 first, since its compile time is the least known
VARIANTS = {"eager": (["--compile", "off", "--cuda-graph", "off", "--channels-last", "off"], "1,4,16",
                      "synthetic,folder"),
            "cuda-graph": (["--compile", "off", "--cuda-graph", "on", "--channels-last", "off"], "1,4,16",
                           "synthetic,folder"),
            "compile": (["--compile", "on", "--cuda-graph", "off", "--channels-last", "on"], "16,1,4", "synthetic")}
TIMEOUTS = {("eager", "cyclegan"): 120, ("eager", "pix2pix"): 90, ("cuda-graph", "cyclegan"): 150,
            ("cuda-graph", "pix2pix"): 100, ("compile", "cyclegan"): 240, ("compile", "pix2pix"): 150}
# (target, mode, source, batch, img/s at least, peak GiB at most, data wait below): issue 12's figures
TARGETS = (("CycleGAN batch 1: >= 60 img/s in <= 2 GiB", "cyclegan", "synthetic", 1, 60.0, 2.0, None),
           ("CycleGAN batch 16: >= 125 img/s", "cyclegan", "synthetic", 16, 125.0, None, None),
           ("pix2pix batch 16 from JPEGs: >= 700 img/s, data wait < 5%", "pix2pix", "folder", 16, 700.0, None, 0.05))


@dataclass
class Part:
    """One command of the check."""

    name: str
    command: list[str]
    timeout_s: int
    bench_json: Optional[str] = None
    result: dict[str, Any] = field(default_factory=dict)


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def plan(out: Path, data: Path) -> list[Part]:
    """Every part, in the order it runs (most needed first)."""
    parts = [Part("cuda tests", python("-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "tests"), 180)]
    for mode in TRAIN_MODES:
        parts.append(Part(f"train {mode}", python("-m", "i2i", *train_flags(mode, out, data)), 45))
    for variant, (flags, batches, sources) in VARIANTS.items():
        for mode in ("cyclegan", "pix2pix"):
            stem = out / f"bench_{mode}_{variant}"
            command = python("-m", "i2i", "bench", "--modes", mode, "--precisions", "bf16", "--batch-sizes", batches,
                             "--sources", sources, *flags, "--size", "256", "--device", "cuda", "--warmup", "5",
                             "--steps", "10", "--repeats", "3", "--make-jpegs", "64",
                             "--json", f"{stem}.json", "--markdown", f"{stem}.md")
            parts.append(Part(f"bench {mode} {variant}", command, TIMEOUTS[variant, mode], f"{stem}.json"))
    return parts


def train_flags(mode: str, out: Path, data: Path) -> list[str]:
    """A short real training: 64 px, small nets, 30 steps of batch 4 in bf16, one checkpoint at the end."""
    kind = {"pix2pix": "paired", "gan": "single", "cgan": "classes"}.get(mode, "unpaired")
    flags = ["train", "--mode", mode, "--data", str(data / kind), "--out", str(out / "train" / mode),
             "--steps", "30", "--batch-size", "4", "--size", "64", "--ngf", "16", "--ndf", "16", "--n-blocks", "2",
             "--device", "cuda", "--precision", "bf16", "--workers", "2", "--no-tensorboard", "--no-progress",
             "--log-every", "10", "--sample-every", "1000", "--checkpoint-every", "30"]
    if mode == "unit":
        flags += ["--d-scales", "1"]
    if mode == "encoder":
        flags += ["--encoder", "resnet18", "--encoder-weights", str(data / "random_resnet18.safetensors")]
    return flags


def make_data(data: Path) -> None:
    """Small JPEG sets for the trainings, and a randomly initialised encoder (no download on the GPU machine)."""
    from i2i.bench import make_jpeg_dataset, random_encoder
    for kind in ("unpaired", "paired", "single", "classes"):
        make_jpeg_dataset(data / kind, kind, 16, 72)
    random_encoder("resnet18", data)


def run_part(part: Part, timeout_s: float, logs: Path) -> None:
    """Run one part in its own process group; on timeout the whole group is stopped."""
    log = logs / (part.name.replace(" ", "_") + ".log")
    start = time.monotonic()
    with open(log, "w") as stream:
        process = subprocess.Popen(part.command, stdout=stream, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc: Optional[int] = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            rc = None
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
    status = "timed out" if rc is None else ("passed" if rc == 0 else f"failed (exit {rc})")
    part.result = {"status": status, "seconds": round(time.monotonic() - start, 1), "timeout_s": round(timeout_s),
                   "log": str(log), "last_line": tail[0][:300]}


def run_all(parts: list[Part], budget_s: float, logs: Path) -> None:
    start = time.monotonic()
    for part in parts:
        left = budget_s - (time.monotonic() - start) - REPORT_RESERVE_S
        if left < MIN_PART_S:
            part.result = {"status": "skipped (out of time)", "seconds": 0.0}
            continue
        print(f"gpu_check: {part.name} (up to {min(part.timeout_s, left):.0f} s)", flush=True)
        run_part(part, min(part.timeout_s, left), logs)
        print(f"gpu_check: {part.name}: {part.result['status']} in {part.result['seconds']} s", flush=True)


def bench_rows(parts: list[Part]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every bench row measured (a part stopped half-way keeps its finished rows), and one report's header."""
    rows, header = [], {}
    for part in parts:
        if part.bench_json and Path(part.bench_json).exists():
            report = json.loads(Path(part.bench_json).read_text())
            header = header or {k: report[k] for k in ("environment", "peak_tflops_note")}
            rows += [{"variant": part.name.split()[-1], **row} for row in report["rows"]]
    return rows, header


def check_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target against the best measured row of its mode, source and batch (any variant)."""
    results = []
    for name, mode, source, batch, img_s, mem_gib, wait in TARGETS:
        fitting = [r for r in rows if "error" not in r and (r["mode"], r["source"], r["batch"]) == (mode, source, batch)
                   and (mem_gib is None or (r.get("peak_mem_gib") or 0) <= mem_gib)
                   and (wait is None or r["data_wait"] < wait)]
        best = max(fitting, key=lambda r: r["img_s"], default=None)
        results.append({"target": name, "met": bool(best and best["img_s"] >= img_s),
                        "best": None if best is None else {k: best.get(k) for k in
                                                           ("variant", "img_s", "peak_mem_gib", "data_wait")}})
    return results


def markdown(parts: list[Part], rows: list[dict[str, Any]], header: dict[str, Any],
             targets: list[dict[str, Any]]) -> str:
    from i2i.bench import markdown_table, table_columns
    env = header.get("environment", {})
    lines = [f"# GPU check ({time.strftime('%Y-%m-%d')}, {env.get('gpu', 'GPU not reported')}, torch "
             f"{env.get('torch', '?')}, CUDA {env.get('cuda', '?')})", "", "| part | status | seconds | last line |",
             "|---|---|---:|---|"]
    lines += [f"| {p.name} | {p.result['status']} | {p.result['seconds']} | {p.result.get('last_line', '')} |"
              for p in parts]
    lines += ["", "| target | met | best measured |", "|---|---|---|"]
    for t in targets:
        best = t["best"]
        measured = "not measured" if best is None else (
            f"{best['img_s']:.1f} img/s ({best['variant']}; peak {best['peak_mem_gib'] or 0:.2f} GiB, "
            f"data wait {best['data_wait']:.1%})")
        lines.append(f"| {t['target']} | {'yes' if t['met'] else 'no'} | {measured} |")
    if rows:
        with_peak = any(r.get("peak_frac") is not None for r in rows)
        columns = ("variant", *table_columns(with_peak))
        lines += ["", f"{header.get('peak_tflops_note', '')}.", "", markdown_table(rows, columns)]
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="folder for the reports and logs")
    parser.add_argument("--budget", type=float, default=530.0, help="seconds for everything (default 530)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit (no GPU needed)")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    parts = plan(out, out / "data")
    if args.dry_run:
        print(f"gpu_check plan: {len(parts)} parts, budget {args.budget:.0f} s, reports in {out}")
        for part in parts:
            print(f"[{part.timeout_s:>3} s] {part.name}: {' '.join(part.command)}")
        return 0
    import torch
    if not torch.cuda.is_available():
        print("gpu_check: error: no CUDA GPU here; run it on a GPU machine (--dry-run prints the plan)",
              file=sys.stderr)
        return 2
    (out / "logs").mkdir(parents=True, exist_ok=True)
    make_data(out / "data")
    run_all(parts, args.budget, out / "logs")
    rows, header = bench_rows(parts)
    targets = check_targets(rows)
    report = {**header, "budget_s": args.budget,
              "parts": [{"name": p.name, "command": p.command, **p.result} for p in parts],
              "targets": targets, "bench_rows": rows}
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    (out / "gpu_check.md").write_text(markdown(parts, rows, header, targets))
    print(f"gpu_check: wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
    return 0 if all(p.result["status"] == "passed" for p in parts) else 1


if __name__ == "__main__":
    sys.exit(main())
