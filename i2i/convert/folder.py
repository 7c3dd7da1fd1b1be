"""``translate_folder``: a folder (or one file) of images through a Translator into a mirrored output folder.

Pipeline: DataLoader workers decode files to uint8 tensors, the main thread batches images of equal size and
runs the net, a few threads encode and write the results, so the device does not wait on the disk.

Safety: the output folder may not be the input folder or lie inside it; no output ever replaces an input file,
leaves the output folder (through a symbolic link) or goes through a symbolic link; every image is written to a
hidden temporary file next to its final path and renamed into place, so an interrupted run never leaves a
half-written image under a final name; unreadable inputs are reported and skipped, and so are inputs that are not
regular files (a FIFO named ``a.png`` would block the reader forever). Images too small for the net are padded up to
the smallest size it accepts; an image that still fails is reported, the others are converted.
"""
from __future__ import annotations

import contextlib
import os
import stat
import time
import uuid
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..data.images import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, ImageReadError, read_image, to_tensor
from ..errors import I2IError, os_error_message
from ..runtime import to_model_range
from .tiling import smallest_side, translate_at_least, translate_tiled

if TYPE_CHECKING:
    from ..api import Translator

FORMATS = ("png", "jpg", "webp", "same")
SAVE_OPTIONS = {"JPEG": dict(quality=95), "WEBP": dict(quality=95), "PNG": dict(compress_level=3)}
TEMP_SUFFIX = ".i2i-tmp"


@dataclass
class ConvertReport:
    """What a conversion did: output files written, inputs skipped (output already there), inputs that failed,
    and the other files found under the input folder (formats convert does not read; hidden files not counted)."""

    converted: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return len(self.converted) / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        text = (f"converted {len(self.converted)}, skipped {len(self.skipped)} (already done), "
                f"failed {len(self.failed)} in {self.seconds:.1f}s ({self.images_per_second:.1f} images/s)")
        if self.ignored:
            text += f"; ignored {len(self.ignored)} file(s) in other formats: {_by_suffix(self.ignored)}"
        return text


def _by_suffix(paths: list[Path]) -> str:
    """``.gif 2, .txt 1``: how many files of each extension."""
    counts = Counter(p.suffix.lower() or "(no extension)" for p in paths)
    return ", ".join(f"{suffix} {n}" for suffix, n in counts.most_common())


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def find_inputs(src: Path) -> tuple[list[Path], list[Path]]:
    """``src`` itself if it is a file, else the image files under it, sorted, and the other (not hidden) files
    there, which are not read; symlinked folders are not entered."""
    if not src.is_dir():
        return [src], []
    files, others = [], []
    for root, dirs, names in os.walk(src):
        dirs.sort()
        for name in sorted(names):
            if Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                files.append(Path(root, name))
            elif not name.startswith("."):
                others.append(Path(root, name))
    return files, others


def special_file(path: Path) -> Optional[str]:
    """What ``path`` is if it is not a regular file (a FIFO, device or socket), else None (also when it cannot be
    examined: the reader then reports why)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    kinds = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))
    return None if stat.S_ISREG(mode) else next((name for test, name in kinds if test(mode)), "not a regular file")


def pil_format(suffix: str) -> Optional[str]:
    """The Pillow writer for a file extension, or None when Pillow cannot write it."""
    Image.init()
    name = Image.registered_extensions().get(suffix.lower())
    return name if name in Image.SAVE else None


def plan_outputs(src: Path, dst: Path, format: str,
                 skip_existing: bool) -> tuple[list[tuple[Path, Path]], ConvertReport]:
    """Pair every input with its output path; inputs that must not (or need not) be converted go to the report."""
    if not src.exists():
        raise I2IError(f"input not found: {src}")
    if dst.exists() and not dst.is_dir():
        raise I2IError(f"output {dst} exists and is not a folder")
    src_abs, dst_abs = src.resolve(), dst.resolve()
    if src.is_dir() and _inside(dst_abs, src_abs):
        where = "is the input folder" if dst_abs == src_abs else f"is inside the input folder {src}"
        raise I2IError(f"output folder {dst} {where}: outputs would mix with (and later be read as) inputs; "
                       "choose an output folder outside the input")
    inputs, others = find_inputs(src)
    if not inputs:
        found = f" (only files in other formats: {_by_suffix(others)})" if others else ""
        raise I2IError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {src}{found}")
    root = src if src.is_dir() else src.parent
    input_files = {p.resolve() for p in inputs}
    report, jobs, claimed = ConvertReport(ignored=others), [], {}
    for path in inputs:
        rel = path.relative_to(root)
        out = dst / rel.parent / (rel.stem + (path.suffix if format == "same" else "." + format))
        final = out.parent.resolve() / out.name
        if kind := special_file(path):
            reason = f"{path} is {kind}, not an image file: skipped"
        elif not _inside(final, dst_abs):
            reason = f"output path {out} leads outside the output folder (through a symbolic link)"
        elif final in input_files or out.resolve() in input_files:
            reason = f"output path {out} would overwrite an input file"
        elif src.is_dir() and _inside(final, src_abs):
            reason = f"output path {out} lies inside the input folder"
        elif out.is_symlink():
            reason = f"output path {out} is a symbolic link"
        elif final in claimed:
            reason = f"output path {out} is also the output of {claimed[final]}"
        elif out.is_dir():
            reason = f"output path {out} is a folder"
        elif pil_format(out.suffix) is None:
            reason = f"cannot write {out.suffix} files (no Pillow writer for it)"
        else:
            claimed[final] = path
            if skip_existing and out.exists():
                report.skipped.append(path)
            else:
                jobs.append((path, out))
            continue
        report.failed.append((path, reason))
    return jobs, report


class DecodeDataset(Dataset):
    """Image files to 3xHxW uint8 tensors (optionally resized to ``resize`` x ``resize``) with their index and
    original size; an unreadable file gives ``{"index", "error"}`` instead of raising."""

    def __init__(self, files: list[Path], resize: Optional[int] = None, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.files, self.resize, self.max_pixels = files, resize, max_pixels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        path = self.files[index]
        try:
            array = read_image(path, self.max_pixels)
        except Exception as e:  # corrupt, truncated, not an image, too large, permission denied, ...
            reason = str(e) if isinstance(e, ImageReadError) else f"unreadable image {path}: {type(e).__name__}: {e}"
            return {"index": index, "error": reason}
        size = array.shape[:2]
        if self.resize:
            array = np.asarray(Image.fromarray(array).resize((self.resize, self.resize), Image.Resampling.BICUBIC))
        return {"index": index, "image": to_tensor(array),
                "size": size}


def write_image(array: np.ndarray, path: Path) -> None:
    """Write an HxWx3 uint8 array atomically: a hidden temporary file in the same folder, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = pil_format(path.suffix)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}")
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as f:
            Image.fromarray(array).save(f, format=fmt, **SAVE_OPTIONS.get(fmt, {}))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _write(array: np.ndarray, path: Path) -> Optional[str]:
    try:
        write_image(array, path)
    except OSError as e:
        return f"cannot write {path}: {os_error_message(e, path.parent)}"
    except Exception as e:
        return f"cannot write {path}: {type(e).__name__}: {e}"
    return None


class _Writer:
    """Encodes and writes on a few threads; at most ``limit`` results wait in memory, the oldest first."""

    def __init__(self, threads: int, limit: int, done: Callable[[int, Optional[str]], None]):
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="i2i-write")
        self.pending: deque[tuple[int, Future]] = deque()
        self.limit, self.done = limit, done

    def submit(self, index: int, array: np.ndarray, path: Path) -> None:
        while self.pending and (len(self.pending) >= self.limit or self.pending[0][1].done()):
            self._collect()
        self.pending.append((index, self.pool.submit(_write, array, path)))

    def _collect(self) -> None:
        index, future = self.pending.popleft()
        self.done(index, future.result())

    def drain(self) -> None:
        while self.pending:
            self._collect()

    def close(self) -> None:
        """Finish the writes under way (each lands whole or not at all) and drop the queued ones."""
        self.pool.shutdown(wait=True, cancel_futures=True)


def _uint8_hwc(y: torch.Tensor) -> np.ndarray:
    """[-1, 1] floats (...x3xHxW) to ...xHxWx3 uint8 on the CPU, in place on ``y`` (no full-size float copy)."""
    return y.add_(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8).movedim(-3, -1).contiguous().cpu().numpy()


@torch.inference_mode()
def _translate(translator: "Translator", items: list[dict], resize: Optional[int], tile: Optional[int],
               overlap: int, batch_size: int, minimum: int) -> list[np.ndarray]:
    """Translate decoded items of one size (or one tiled image) to HxWx3 uint8 arrays at their original size."""
    if tile and max(items[0]["image"].shape[-2:]) > tile:
        outputs = [translate_tiled(translator, items[0]["image"], tile, overlap, batch_size, minimum)]
    else:
        x = torch.stack([item["image"] for item in items]).to(translator.device, non_blocking=True)
        y = translate_at_least(translator, to_model_range(x), minimum)
        if not resize:
            return list(_uint8_hwc(y))
        outputs = list(y)
    if resize:
        outputs = [F.interpolate(y[None], size=tuple(item["size"]), mode="bicubic", antialias=True)[0]
                   for y, item in zip(outputs, items)]
    return [_uint8_hwc(y) for y in outputs]


def translate_folder(translator: "Translator", src: str | Path, dst: str | Path, *, batch_size: int = 8,
                     workers: int = 2, format: str = "png", skip_existing: bool = False, resize: Optional[int] = None,
                     tile: Optional[int] = None, overlap: int = 32, progress: bool = True,
                     max_pixels: int = DEFAULT_MAX_PIXELS) -> ConvertReport:
    """Translate every image under ``src`` (recursively; or the single file ``src``) into ``dst``.

    Sub-folders are mirrored and file stems kept; outputs are RGB ``format`` files (``same``: the input's
    extension). Images are translated at their native size (padded to the net's stride and cropped back), or
    resized to ``resize`` x ``resize`` and back; images larger than ``tile`` are translated in overlapping tiles
    (see :mod:`i2i.convert.tiling`). ``skip_existing`` leaves inputs whose output exists (to finish a stopped run).
    Inputs that cannot be read, are not regular files or cannot be translated are listed in the report's
    ``failed``, the other files under ``src`` in its ``ignored``; the rest is converted.
    """
    if format not in FORMATS:
        raise I2IError(f"format must be one of {', '.join(FORMATS)}; got {format!r}")
    if batch_size < 1 or workers < 0:
        raise I2IError(f"batch_size must be >= 1 and workers >= 0; got {batch_size} and {workers}")
    if resize is not None and resize < 1:
        raise I2IError(f"resize must be a positive size in pixels; got {resize}")
    minimum = smallest_side(translator)
    if tile is not None:
        if tile < minimum:
            raise I2IError(f"tile must be at least {minimum} pixels (the smallest input this net translates); "
                           f"got {tile}")
        tile = tile // translator.stride * translator.stride
        if not 0 <= overlap < tile:
            raise I2IError(f"overlap must be between 0 and the tile size ({tile}); got {overlap}")
    jobs, report = plan_outputs(Path(src), Path(dst), format, skip_existing)
    start = time.perf_counter()
    loader = DataLoader(DecodeDataset([s for s, _ in jobs], resize, max_pixels), batch_size=None,
                        num_workers=workers, pin_memory=translator.device.type == "cuda")
    bar = tqdm(total=len(jobs), unit="img", desc="i2i convert", disable=not progress, dynamic_ncols=True)

    def done(index: int, error: Optional[str]) -> None:
        if error is None:
            report.converted.append(jobs[index][1])
        else:
            report.failed.append((jobs[index][0], error))
            bar.set_postfix(failed=len(report.failed))
        bar.update(1)

    def run(items: list[dict]) -> None:
        try:
            arrays = _translate(translator, items, resize, tile, overlap, batch_size, minimum)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            for item in items:
                done(item["index"], "out of GPU memory: lower --batch-size or use --tile")
            return
        except RuntimeError as e:  # the net refuses this input (shape, size): this batch fails, the others go on
            size = "x".join(map(str, items[0]["image"].shape[-2:]))
            for item in items:
                done(item["index"], f"cannot translate this {size} image: {str(e).strip().splitlines()[0]}")
            return
        for item, array in zip(items, arrays):
            writer.submit(item["index"], array, jobs[item["index"]][1])

    threads = max(2, min(8, os.cpu_count() or 2))
    writer = _Writer(threads, limit=4 * batch_size + threads, done=done)
    buckets: dict[tuple, list[dict]] = {}  # images of one size waiting to fill a batch
    try:
        for item in loader:
            if "error" in item:
                done(item["index"], item["error"])
            elif tile and max(item["image"].shape[-2:]) > tile:
                run([item])
            else:
                key = tuple(item["image"].shape)
                buckets.setdefault(key, []).append(item)
                if len(buckets[key]) == batch_size:
                    run(buckets.pop(key))
                elif sum(map(len, buckets.values())) > 2 * batch_size:  # many sizes: flush the oldest
                    run(buckets.pop(next(iter(buckets))))
        for items in buckets.values():
            run(items)
        writer.drain()
    finally:
        writer.close()
        bar.close()
    report.seconds = time.perf_counter() - start
    return report
