"""Training throughput benchmark: images/s, peak GPU memory, data-wait share and achieved TFLOP/s per mode and
setting (precision, channels-last, torch.compile, gradient checkpointing, batch size), through the real Trainer.

Two data sources: ``synthetic`` (uint8 batches already on the device, fed straight to ``Trainer.train_step``: the
compute ceiling) and ``folder`` (JPEG files through the trainer's own DataLoader: what a run really gets).
Used by ``i2i bench`` and ``tools/bench.py``.
"""
from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's datasheets, TFLOP/s, by the words of the name torch
# reports ("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB"); the first entry whose words all appear wins, so
# variants come before their family. A measured H100 SXM reaches about 775-800 (anchors.md).
BF16_DENSE_PEAK_TFLOPS = (("H100 PCIE", "H100 PCIe", 756.0), ("H100 NVL", "H100 NVL", 835.0),
                          ("H100", "H100 SXM", 989.0), ("H200 NVL", "H200 NVL", 835.0), ("H200", "H200", 989.0),
                          ("GH200", "GH200", 989.0), ("A100", "A100", 312.0), ("L40S", "L40S", 362.0),
                          ("A10", "A10", 125.0), ("L4", "L4", 121.0))
TABLE_COLUMNS = ("mode", "source", "precision", "channels_last", "compile", "cuda_graph", "grad_checkpoint", "batch",
                 "img_s", "step_ms", "peak_mem_gib", "data_wait", "gflop_per_img", "tflops", "peak_frac")


@dataclass(frozen=True)
class Setting:
    """One benchmarked configuration."""

    mode: str
    source: str
    precision: str
    channels_last: bool
    compile: bool
    cuda_graph: bool
    grad_checkpoint: bool
    batch: int


# --- data ----------------------------------------------------------------------------------------------------
def _smooth_image(rng: np.random.Generator, size: int) -> "Image.Image":
    """A smooth random colour field with mild noise: decodes like a photo, unlike pure noise."""
    from PIL import Image
    coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
    noisy = np.asarray(coarse, dtype=np.int16) + rng.integers(-12, 13, (size, size, 3))
    return Image.fromarray(noisy.clip(0, 255).astype(np.uint8))


def make_jpeg_dataset(root: str | Path, kind: str, n: int, size: int, seed: int = 0) -> Path:
    """Write ``n`` JPEGs per folder in the layout a data kind reads (unpaired/paired: trainA, trainB and a small
    test split; single: one folder; classes: two class folders); returns ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    if kind in ("unpaired", "paired"):
        folders = {f"{split}{side}": count for split, count in (("train", n), ("test", 2)) for side in "AB"}
    elif kind == "single":
        folders = {".": n}
    elif kind == "classes":
        folders = {"class0": (n + 1) // 2, "class1": n // 2}
    else:
        raise ValueError(f"unknown data kind '{kind}'")
    for folder, count in folders.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            _smooth_image(rng, size).save(root / folder / f"{i:05d}.jpg", quality=90)
    return root


def synthetic_batch(kind: str, batch: int, size: int, device: torch.device,
                    num_classes: Optional[int] = None) -> dict[str, torch.Tensor]:
    """A random uint8 batch already on ``device``, keyed as the trainer's loader would key it."""
    def images() -> torch.Tensor:
        return torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)

    out = {"A": images(), "B": images()} if kind in ("unpaired", "paired") else {"B": images()}
    if kind == "classes":
        out["label"] = torch.randint(0, num_classes or 1, (batch,), device=device)
    return out


def loader_batches(trainer) -> Iterator[dict[str, torch.Tensor]]:
    """The trainer's DataLoader, epoch after epoch."""
    for epoch in itertools.count():
        trainer.sampler.set_epoch(epoch)
        yield from trainer.loader


# --- measuring -------------------------------------------------------------------------------------------------
def gpu_peak(gpu_name: str) -> Optional[tuple[str, float]]:
    """The known GPU a device name denotes and its dense bf16 peak in TFLOP/s, or None for a GPU not in the table."""
    words = set(gpu_name.upper().replace("-", " ").split())
    return next(((label, tflops) for key, label, tflops in BF16_DENSE_PEAK_TFLOPS if set(key.split()) <= words),
                None)


def peak_for(device: torch.device, given: Optional[float]) -> tuple[Optional[float], str]:
    """The peak TFLOP/s that ``peak_frac`` divides by, and a sentence saying where it comes from (or why none)."""
    if given is not None:
        return given, f"peak_frac = achieved TFLOP/s / {given:g} TFLOP/s (given with --peak-tflops)"
    if device.type != "cuda":
        return None, f"no peak_frac: no peak figure for device {device.type} (give --peak-tflops to get one)"
    gpu = torch.cuda.get_device_name(device)
    known = gpu_peak(gpu)
    if known is None:
        return None, (f"no peak_frac: no dense bf16 peak known for GPU '{gpu}' (give --peak-tflops to get one)")
    label, tflops = known
    return tflops, (f"peak_frac = achieved TFLOP/s / {tflops:g} TFLOP/s, the {label} datasheet's dense bf16 "
                    f"tensor-core peak (GPU '{gpu}')")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_step_flops(trainer, batch: dict[str, torch.Tensor]) -> float:
    """FLOPs of one training step (G and D phases, forward and backward) counted by FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with counter:
        trainer.train_step(batch)
    return float(counter.get_total_flops())


def time_windows(trainer, next_batch: Callable[[], dict[str, torch.Tensor]], warmup: int, steps: int,
                 repeats: int) -> tuple[list[float], float]:
    """Seconds per window of ``steps`` steps after ``warmup`` steps (CUDA-synchronised at window edges), and the
    share of the timed wall time spent waiting for the next batch."""
    for _ in range(warmup):
        trainer.train_step(next_batch())
    _sync(trainer.device)
    windows, waited = [], 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            t = time.perf_counter()
            batch = next_batch()
            waited += time.perf_counter() - t
            trainer.train_step(batch)
        _sync(trainer.device)
        windows.append(time.perf_counter() - start)
    return windows, waited / sum(windows)


def _peak_rss_mib() -> float:
    """This process's resident-memory high-water mark (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


# --- one setting -----------------------------------------------------------------------------------------------
@dataclass
class Options:
    """Everything but the swept settings."""

    size: int = 256
    ngf: int = 64
    ndf: int = 64
    n_blocks: int = 9
    warmup: int = 3
    steps: int = 10
    repeats: int = 5
    workers: Optional[int] = None  # None: the trainer's default (from the CPU count)
    device: str = "auto"
    peak_tflops: Optional[float] = None
    work_dir: str = ""
    folder_data: dict[str, str] | None = None   # data kind -> JPEG folder for the folder source
    extra: dict[str, Any] | None = None          # further TrainConfig fields (``--set``)


def build_trainer(setting: Setting, opts: Options, data: str, out: str):
    """The real Trainer for one setting (LR kept constant: the run is declared practically endless)."""
    from .config import make_config
    from .train.trainer import Trainer
    extra = dict(opts.extra or {})
    if setting.mode == "encoder" and "encoder_weights" not in extra:
        extra.update(random_encoder(extra.get("encoder", "vgg16"), opts.work_dir))
    fields = dict(mode=setting.mode, data=data, out=out, steps=10**9, batch_size=setting.batch, size=opts.size,
                  ngf=opts.ngf, ndf=opts.ndf, n_blocks=opts.n_blocks, precision=setting.precision,
                  channels_last=setting.channels_last, compile=setting.compile, cuda_graph=setting.cuda_graph,
                  grad_checkpoint=setting.grad_checkpoint, workers=opts.workers, device=opts.device,
                  tensorboard=False, log_every=10**9, sample_every=10**9, checkpoint_every=10**9, **extra)
    return Trainer(make_config(fields))


def random_encoder(name: str, work_dir: str | Path) -> dict[str, str]:
    """A randomly initialised torchvision encoder saved to a file: the perceptual term costs the same to compute
    with random weights, so the encoder mode can be timed without the pretrained file."""
    import torchvision
    from safetensors.torch import save_file
    path = Path(work_dir) / f"random_{name}.safetensors"
    if not path.exists():
        save_file(torchvision.models.get_model(name).state_dict(), str(path))
    return {"encoder": name, "encoder_weights": str(path)}


def bench_setting(setting: Setting, opts: Options, flops_cache: dict[tuple, float]) -> dict[str, Any]:
    """Measure one setting; failures (e.g. out of memory) become a row with an ``error``."""
    from .modes.base import mode_class
    row: dict[str, Any] = asdict(setting)
    kind = mode_class(setting.mode).data_kind
    data = (opts.folder_data or {})[kind]
    out = str(Path(opts.work_dir) / "runs" / setting.mode)
    trainer = None
    try:
        key = (setting.mode, setting.batch)
        if key not in flops_cache:  # model FLOPs: the same for any precision, layout, compile or recomputation
            flops_cache[key] = model_flops(setting, opts, data, out, kind)
        trainer = build_trainer(setting, opts, data, out)
        device = trainer.device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        if setting.source == "synthetic":
            fixed = synthetic_batch(kind, setting.batch, opts.size, device, trainer.cfg.num_classes)
            next_batch: Callable[[], dict[str, torch.Tensor]] = lambda: fixed
        else:
            batches = loader_batches(trainer)
            next_batch = lambda: next(batches)
        windows, wait_share = time_windows(trainer, next_batch, opts.warmup, opts.steps, opts.repeats)
        step_s = statistics.median(windows) / opts.steps
        tflops = flops_cache[key] / step_s / 1e12
        row.update(
            img_s=setting.batch / step_s,
            step_ms=step_s * 1e3,
            window_img_s=[setting.batch * opts.steps / w for w in windows],
            peak_mem_gib=torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
            data_wait=wait_share,
            gflop_per_img=flops_cache[key] / setting.batch / 1e9,
            tflops=tflops,
            peak_frac=tflops / opts.peak_tflops if opts.peak_tflops else None,
            process_peak_rss_mib=_peak_rss_mib(),
            device=str(device),
        )
    except torch.cuda.OutOfMemoryError:
        row["error"] = "out of memory"
    except Exception as e:  # one failing setting must not end the sweep
        row["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    finally:
        del trainer
        _release_memory()
        if setting.compile:
            torch._dynamo.reset()
    return row


def model_flops(setting: Setting, opts: Options, data: str, out: str, kind: str) -> float:
    """FLOPs of one step of a plain (eager, not checkpointed) trainer for the setting's mode and batch size."""
    plain = Setting(**{**asdict(setting), "compile": False, "cuda_graph": False, "grad_checkpoint": False})
    counter = build_trainer(plain, opts, data, out)
    try:
        return count_step_flops(counter, synthetic_batch(kind, setting.batch, opts.size, counter.device,
                                                         counter.cfg.num_classes))
    finally:
        del counter
        _release_memory()


def _release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --- sweep and reports -----------------------------------------------------------------------------------------
def settings(modes: list[str], sources: list[str], precisions: list[str], channels_last: list[bool],
             compile: list[bool], cuda_graph: list[bool], grad_checkpoint: list[bool], batches: list[int]
             ) -> list[Setting]:
    """The cross product of the swept lists."""
    return [Setting(*values) for values in itertools.product(modes, sources, precisions, channels_last, compile,
                                                             cuda_graph, grad_checkpoint, batches)]


def environment(device: str) -> dict[str, Any]:
    """What the numbers were measured on."""
    info = {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available() and device != "cpu":
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def table_columns(with_peak: bool) -> tuple[str, ...]:
    """The table's columns; ``peak_frac`` only when there is a peak to divide by."""
    return TABLE_COLUMNS if with_peak else tuple(c for c in TABLE_COLUMNS if c != "peak_frac")


def markdown_table(rows: list[dict[str, Any]], columns: tuple[str, ...] = TABLE_COLUMNS) -> str:
    """One line per setting; failed settings show their error."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    named = columns.index("batch") + 1  # the setting's own columns come first, batch last
    for row in rows:
        if "error" in row:
            cells = [_cell(row.get(c)) for c in columns[:named]] + [f"error: {row['error']}"] + \
                    [""] * (len(columns) - named - 1)
        else:
            cells = [_cell(row.get(c)) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_benchmark(setting_list: list[Setting], opts: Options,
                  measured: Callable[[list[dict[str, Any]]], None] = lambda rows: None) -> list[dict[str, Any]]:
    """Measure every setting in turn; ``measured`` sees the rows so far after each one."""
    flops_cache: dict[tuple, float] = {}
    rows: list[dict[str, Any]] = []
    for setting in setting_list:
        rows.append(bench_setting(setting, opts, flops_cache))
        measured(rows)
    return rows


# --- command line ----------------------------------------------------------------------------------------------
def _list(kind: Callable[[str], Any]) -> Callable[[str], list]:
    def parse(text: str) -> list:
        return [kind(v.strip()) for v in text.split(",") if v.strip()]
    return parse


def _on_off(text: str) -> bool:
    if text.lower() in ("on", "true", "1", "yes"):
        return True
    if text.lower() in ("off", "false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected on or off, got {text!r}")


def _assignment(text: str) -> tuple[str, Any]:
    import yaml
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, got {text!r}")
    return key.strip().replace("-", "_"), yaml.safe_load(value)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The benchmark's flags (shared by ``i2i bench`` and ``tools/bench.py``)."""
    p.add_argument("--modes", type=_list(str), default=None,
                   help="comma-separated modes; not given: every registered mode")
    p.add_argument("--sources", type=_list(str), default=["synthetic"],
                   help="synthetic (device tensors straight to the step) and/or folder (JPEGs through the loader)")
    p.add_argument("--precisions", type=_list(str), default=["fp32", "bf16"], help="fp32, bf16, fp16")
    p.add_argument("--channels-last", type=_list(_on_off), default=[False], help="on, off or on,off")
    p.add_argument("--compile", type=_list(_on_off), default=[False], help="on, off or on,off (torch.compile)")
    p.add_argument("--cuda-graph", type=_list(_on_off), default=[False],
                   help="on, off or on,off (the whole step captured in a CUDA graph; CUDA only)")
    p.add_argument("--grad-checkpoint", type=_list(_on_off), default=[False], help="on, off or on,off")
    p.add_argument("--batch-sizes", type=_list(int), default=[1, 4, 16], help="comma-separated batch sizes")
    p.add_argument("--size", type=int, default=256, help="training crop size")
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--ndf", type=int, default=64)
    p.add_argument("--n-blocks", type=int, default=9)
    p.add_argument("--set", dest="extra", type=_assignment, action="append", default=[], metavar="FIELD=VALUE",
                   help="any other training config field, e.g. --set gan_loss=hinge (repeatable)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compile happens here)")
    p.add_argument("--steps", type=int, default=10, help="steps per timed window")
    p.add_argument("--repeats", type=int, default=5, help="timed windows; the median is reported")
    p.add_argument("--workers", type=int, default=None,
                   help="DataLoader workers for the folder source (default: the trainer's, from the CPU count)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="peak to report achieved TFLOP/s against (default: the GPU's dense bf16 datasheet peak for "
                        f"{', '.join(label for _, label, _ in BF16_DENSE_PEAK_TFLOPS)}; none for other GPUs "
                        "and on CPU)")
    p.add_argument("--data", default=None, help="image folder for the folder source, in the layout of the "
                   "modes' data kind (not given: generated JPEGs)")
    p.add_argument("--make-jpegs", type=int, default=64, metavar="N",
                   help="images per folder to generate for the folder source when --data is not given")
    p.add_argument("--jpeg-size", type=int, default=None, help="side of generated JPEGs (not given: --size)")
    p.add_argument("--json", default="bench.json", help="where to write the results as JSON")
    p.add_argument("--markdown", default="bench.md", help="where to write the Markdown table")


def run_from_args(args: argparse.Namespace) -> int:
    """Run the sweep the flags describe and write the JSON and Markdown reports."""
    from .errors import I2IError
    from .modes import load_all_modes
    from .modes.base import MODES
    from .runtime import pick_device
    load_all_modes()
    modes = args.modes or sorted(MODES)
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise I2IError(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(sorted(MODES))}")
    bad = [s for s in args.sources if s not in ("synthetic", "folder")]
    if bad:
        raise I2IError(f"unknown source(s) {', '.join(bad)}; choose synthetic and/or folder")
    largest = max(args.batch_sizes)
    with tempfile.TemporaryDirectory(prefix="i2i-bench-") as work:
        folder_data = {}
        for kind in sorted({MODES[m].data_kind for m in modes}):
            if "folder" in args.sources and args.data:
                folder_data[kind] = args.data
            else:  # the trainer needs a data folder even when it is fed synthetic batches
                n = args.make_jpegs if "folder" in args.sources else largest
                size = args.jpeg_size or (args.size if "folder" in args.sources else 32)
                folder_data[kind] = str(make_jpeg_dataset(Path(work) / kind, kind, max(n, largest), size))
        peak, peak_note = peak_for(pick_device(args.device), args.peak_tflops)
        opts = Options(size=args.size, ngf=args.ngf, ndf=args.ndf, n_blocks=args.n_blocks, warmup=args.warmup,
                       steps=args.steps, repeats=args.repeats, workers=args.workers, device=args.device,
                       peak_tflops=peak, work_dir=work, folder_data=folder_data,
                       extra=dict(args.extra))
        setting_list = settings(modes, args.sources, args.precisions, args.channels_last, args.compile,
                                args.cuda_graph, args.grad_checkpoint, args.batch_sizes)
        columns = table_columns(peak is not None)
        print(peak_note)
        print(markdown_table([], columns).splitlines()[0])

        def write_reports(rows: list[dict[str, Any]]) -> None:
            """Both reports, rewritten after every setting: a sweep stopped half-way keeps what it measured."""
            print(markdown_table(rows[-1:], columns).splitlines()[-1], flush=True)
            report = {"environment": environment(args.device),
                      "options": {k: v for k, v in asdict(opts).items() if k not in ("work_dir", "folder_data")},
                      "peak_tflops_note": peak_note,
                      "flops_note": "model FLOPs counted once per mode and batch with torch.utils.flop_counter."
                                    "FlopCounterMode on one eager training step (gradient-checkpointing "
                                    "recomputation not counted)",
                      "settings_total": len(setting_list), "rows": rows}
            table = f"{peak_note}.\n\n{markdown_table(rows, columns)}"
            for path, text in ((args.json, json.dumps(report, indent=2)), (args.markdown, table)):
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                Path(path).write_text(text)

        run_benchmark(setting_list, opts, write_reports)
    print(f"i2i: wrote {args.json} and {args.markdown}")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """``tools/bench.py`` entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    from .errors import I2IError
    try:
        return run_from_args(parser.parse_args(argv))
    except I2IError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2
