"""Datasets for every folder layout: unpaired, paired (A/B stems or side-by-side AB), single folder, class folders.

Items are keyed by ``(index, sample_seed)`` pairs from :class:`ResumableSampler`, so augmentation depends only on
the seed, epoch and index: identical with any number of workers, and exactly reproducible after a resume.
"""
from __future__ import annotations

import os
import random
import signal
import sys
import threading
from pathlib import Path
from typing import Iterator, Sequence

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from ..errors import I2IError
from .images import ImageReadError, check_image, list_images, read_image, to_tensor

DATA_KINDS = ("unpaired", "paired", "single", "classes")


def index_image_sizes(folder: Path, skip_bad: bool, max_pixels: int) -> dict[Path, tuple[int, int]]:
    """A folder's images with their (width, height), from a header check of each; bad files are reported and
    skipped, or fail fast."""
    files, bad = {}, []
    for path in list_images(folder):
        try:
            files[path] = check_image(path, max_pixels)
        except ImageReadError as e:
            if not skip_bad:
                raise
            bad.append(str(e))
    for message in bad:
        print(f"i2i: skipping {message}", file=sys.stderr)
    if bad:
        print(f"i2i: skipped {len(bad)} unreadable image(s) in {folder}", file=sys.stderr)
    if not files:
        raise I2IError(f"no readable images in {folder}")
    return files


def index_images(folder: Path, skip_bad: bool, max_pixels: int) -> list[Path]:
    """A folder's readable images (see :func:`index_image_sizes`)."""
    return list(index_image_sizes(folder, skip_bad, max_pixels))


def warn(message: str) -> None:
    """A one-line warning about the data, on stderr."""
    print(f"i2i: warning: {message}", file=sys.stderr)


def some(names: Sequence[str], shown: int = 3) -> str:
    """The first few of a list of names, and how many more there are."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def make_augmentation(size: int, load_size: int, train: bool, flip: bool, crop: bool = True,
                      paired: bool = False) -> A.Compose:
    """Resize to ``load_size``, random crop to ``size`` and random flip when training; a plain resize otherwise."""
    if not train:
        steps = [A.Resize(size, size)]
    else:
        steps = [A.Resize(load_size, load_size)]
        if crop:
            steps.append(A.RandomCrop(size, size))
        if flip:
            steps.append(A.HorizontalFlip(p=0.5))
    return A.Compose(steps, additional_targets={"image_b": "image"} if paired else None)


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: workers ignore the SIGINT/SIGTERM that reach a whole process group (Ctrl-C,
    ``kill -- -PGID``, SLURM) so the main process can finish its step and checkpoint; it shuts them down itself.

    A SIGTERM from the main process (how DataLoader and multiprocessing stop workers) still ends the worker: a
    thread reads each SIGTERM with its sender and exits only for the parent's.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not hasattr(signal, "sigwaitinfo"):  # macOS: group SIGTERMs still reach the workers
        return
    parent = os.getppid()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # threads started later inherit the mask

    def watch() -> None:
        while signal.sigwaitinfo({signal.SIGTERM}).si_pid != parent:
            pass
        os._exit(0)

    threading.Thread(target=watch, name="i2i-sigterm", daemon=True).start()


class FolderDataset(Dataset):
    """Base: holds the augmentation and decodes with a fallback so one bad file never stops a long run.

    A file that passed the header check but fails to decode is reported once (per worker) and replaced by the next
    item; with ``skip_bad=False`` it raises instead.
    """

    def __init__(self, augment: A.Compose, max_pixels: int, skip_bad: bool = True):
        self.augment = augment
        self.max_pixels = max_pixels
        self.skip_bad = skip_bad
        self.bad: set[Path] = set()

    def read(self, path: Path) -> np.ndarray | None:
        if path in self.bad:
            return None
        try:
            return read_image(path, self.max_pixels)
        except ImageReadError as e:
            if not self.skip_bad:
                raise
            print(f"i2i: skipping {e}", file=sys.stderr)
            self.bad.add(path)
            return None

    def __getitem__(self, key: tuple[int, int] | int) -> dict[str, torch.Tensor]:
        index, seed = key if isinstance(key, tuple) else (key, key)
        for attempt in range(len(self)):
            item = self.load((index + attempt) % len(self), seed)
            if item is not None:
                return item
        raise I2IError("no image in the dataset could be decoded")

    def load(self, index: int, seed: int) -> dict[str, torch.Tensor] | None:
        raise NotImplementedError


class UnpairedDataset(FolderDataset):
    """``root/<split>A`` and ``root/<split>B``: A in order, B drawn at random (CycleGAN's unaligned dataset)."""

    def __init__(self, root: Path, split: str, augment: A.Compose, skip_bad: bool, max_pixels: int):
        super().__init__(augment, max_pixels, skip_bad)
        self.files_a = index_images(root / f"{split}A", skip_bad, max_pixels)
        self.files_b = index_images(root / f"{split}B", skip_bad, max_pixels)

    def __len__(self) -> int:
        return max(len(self.files_a), len(self.files_b))

    def load(self, index, seed):
        a = self.read(self.files_a[index % len(self.files_a)])
        if a is None:
            return None
        n = len(self.files_b)
        start = random.Random(seed).randrange(n)  # a random B; the next readable one if it cannot be decoded
        b = next((image for i in range(n) if (image := self.read(self.files_b[(start + i) % n])) is not None), None)
        if b is None:
            return None
        self.augment.set_random_seed(seed)
        a = self.augment(image=a)["image"]
        self.augment.set_random_seed(seed + 1)
        b = self.augment(image=b)["image"]
        return {"A": to_tensor(a), "B": to_tensor(b)}


class PairedDataset(FolderDataset):
    """``root/<split>`` with side-by-side AB images, or ``root/<split>A`` + ``root/<split>B`` with matching stems.

    A and B get the very same random crop and flip.
    """

    def __init__(self, root: Path, split: str, augment: A.Compose, skip_bad: bool, max_pixels: int):
        super().__init__(augment, max_pixels, skip_bad)
        side_by_side, folder_a, folder_b = root / split, root / f"{split}A", root / f"{split}B"
        if folder_a.is_dir() and side_by_side.is_dir():
            warn(f"{root} holds both paired layouts: {split}A/ + {split}B/ (used) and side-by-side {split}/ "
                 f"(ignored); move one away")
        if folder_a.is_dir() or not side_by_side.is_dir():
            sizes_a = index_image_sizes(folder_a, skip_bad, max_pixels)
            sizes_b = index_image_sizes(folder_b, skip_bad, max_pixels)
            files_b = {p.relative_to(folder_b).with_suffix(""): p for p in sizes_b}
            missing = [str(p) for p in sizes_a if p.relative_to(folder_a).with_suffix("") not in files_b]
            if missing:
                raise I2IError(f"{len(missing)} image(s) in {folder_a} have no partner with the same "
                               f"name in {folder_b}: {', '.join(missing[:5])}")
            self.pairs = [(a, files_b[a.relative_to(folder_a).with_suffix("")]) for a in sizes_a]
            unequal = [f"{a.relative_to(root)} {'x'.join(map(str, sizes_a[a]))} vs {b.relative_to(root)} "
                       f"{'x'.join(map(str, sizes_b[b]))}" for a, b in self.pairs if sizes_a[a] != sizes_b[b]]
            if unequal:
                warn(f"{len(unequal)} pair(s) in {root} differ in size, so B is resized to A: {some(unequal)}")
        else:
            sizes = index_image_sizes(side_by_side, skip_bad, max_pixels)
            self.pairs = [(p, None) for p in sizes]
            odd = [f"{p.relative_to(root)} ({w}x{h})" for p, (w, h) in sizes.items() if w % 2]
            if odd:
                warn(f"{len(odd)} side-by-side image(s) in {side_by_side} have an odd width, so their last pixel "
                     f"column is dropped: {some(odd)}")

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index, seed):
        path_a, path_b = self.pairs[index]
        a = self.read(path_a)
        if a is None:
            return None
        if path_b is None:
            half = a.shape[1] // 2
            a, b = a[:, :half], a[:, half:2 * half]
        else:
            b = self.read(path_b)
            if b is None:
                return None
            if b.shape != a.shape:
                b = A.Resize(a.shape[0], a.shape[1])(image=b)["image"]
        self.augment.set_random_seed(seed)
        out = self.augment(image=a, image_b=b)
        return {"A": to_tensor(out["image"]), "B": to_tensor(out["image_b"])}


class SingleFolderDataset(FolderDataset):
    """All images under one folder (recursively): for unconditional GANs."""

    def __init__(self, root: Path, augment: A.Compose, skip_bad: bool, max_pixels: int):
        super().__init__(augment, max_pixels, skip_bad)
        self.files = index_images(root, skip_bad, max_pixels)

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index, seed):
        image = self.read(self.files[index])
        if image is None:
            return None
        self.augment.set_random_seed(seed)
        return {"B": to_tensor(self.augment(image=image)["image"])}


class ClassFolderDataset(FolderDataset):
    """``root/<class>/*``: images labelled by their sub-folder name (sorted, so labels are stable)."""

    def __init__(self, root: Path, augment: A.Compose, skip_bad: bool, max_pixels: int):
        super().__init__(augment, max_pixels, skip_bad)
        if not root.is_dir():
            raise I2IError(f"folder not found: {root}")
        self.classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        if not self.classes:
            raise I2IError(f"no class sub-folders in {root} (expected {root}/<class>/*.png)")
        self.items = [(path, label) for label, name in enumerate(self.classes)
                      for path in index_images(root / name, skip_bad, max_pixels)]

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index, seed):
        path, label = self.items[index]
        image = self.read(path)
        if image is None:
            return None
        self.augment.set_random_seed(seed)
        return {"B": to_tensor(self.augment(image=image)["image"]), "label": torch.tensor(label)}


def make_dataset(kind: str, root: str | Path, split: str, size: int, load_size: int, train: bool = True,
                 flip: bool = True, crop: bool = True, skip_bad: bool = True,
                 max_pixels: int = 200_000_000) -> FolderDataset:
    """The dataset for a mode's data kind (see DATA_KINDS) over ``root``."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise I2IError(f"data folder not found: {root}")
    augment = make_augmentation(size, load_size, train, flip, crop, paired=(kind == "paired"))
    if kind == "unpaired":
        return UnpairedDataset(root, split, augment, skip_bad, max_pixels)
    if kind == "paired":
        return PairedDataset(root, split, augment, skip_bad, max_pixels)
    folder = root / split if (root / split).is_dir() else root
    if kind == "single":
        return SingleFolderDataset(folder, augment, skip_bad, max_pixels)
    if kind == "classes":
        return ClassFolderDataset(folder, augment, skip_bad, max_pixels)
    raise I2IError(f"unknown data kind '{kind}'; choose one of: {', '.join(DATA_KINDS)}")


class ResumableSampler(DistributedSampler):
    """DistributedSampler (per-epoch shuffle, one shard per rank) that yields ``(index, sample_seed)`` keys and
    can skip the batches of an epoch that a resumed run has already seen."""

    def __init__(self, dataset: Sequence, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True):
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        super().set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for position, index in enumerate(super().__iter__()):
            if position >= self.skip:
                seed = int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0])
                yield index, seed
