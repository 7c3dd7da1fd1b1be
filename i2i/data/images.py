"""Finding and decoding image files safely: any common format to 8-bit RGB, with clear errors."""
from __future__ import annotations

import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps

from ..errors import I2IError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
DEFAULT_MAX_PIXELS = 200_000_000
_PIL_LIMIT_LOCK = threading.Lock()  # Image.MAX_IMAGE_PIXELS is a global: lifted only while one thread opens


class ImageReadError(I2IError):
    """An image file that cannot be decoded (empty, truncated, not an image, too large)."""


def list_images(folder: str | Path, recursive: bool = True) -> list[Path]:
    """Image files under ``folder`` sorted by path; a missing folder or one without images is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise I2IError(f"folder not found: {folder}")
    pattern = "**/*" if recursive else "*"
    files = sorted(p for p in folder.glob(pattern) if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise I2IError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {folder}")
    return files


def _open(path: Path, max_pixels: int) -> Image.Image:
    try:  # PIL's own bomb check is replaced by the max_pixels check below
        with _PIL_LIMIT_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            old_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                image = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = old_limit
    except Exception as e:  # any parser failure on a malformed file (OSError, SyntaxError, struct.error, ...)
        raise ImageReadError(f"unreadable image {path}: {e.__class__.__name__}: {e}") from None
    if image.width * image.height > max_pixels:
        image.close()
        raise ImageReadError(f"image {path} has {image.width}x{image.height} pixels, above the limit of "
                             f"{max_pixels} (raise --max-pixels if this is intended)")
    return image


def check_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """Cheap header check used when indexing: opens the file without decoding its pixels. Returns its (width,
    height) as decoded, i.e. after the EXIF rotation."""
    with _open(Path(path), max_pixels) as image:
        try:  # only EXIF already read with the header: PNG's getexif() would decode the whole image
            rotated = "exif" in image.info and image.getexif().get(ExifTags.Base.Orientation) in (5, 6, 7, 8)
        except Exception as e:  # a malformed EXIF block
            raise ImageReadError(f"unreadable image {path}: {e.__class__.__name__}: {e}") from None
        return (image.height, image.width) if rotated else (image.width, image.height)


def to_rgb8(image: Image.Image) -> np.ndarray:
    """HxWx3 uint8 from any PIL mode: grayscale, 16/32-bit, float, palette, RGBA (alpha dropped), CMYK."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        if image.mode == "F":
            top = max(1.0, float(values.max(initial=1.0)))
        gray = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return np.asarray(image.convert("RGB"))


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image file to HxWx3 uint8 RGB, honouring EXIF orientation; raises ImageReadError naming the file."""
    path = Path(path)
    image = _open(path, max_pixels)
    try:
        with image:
            image = ImageOps.exif_transpose(image)
            return to_rgb8(image)
    except Exception as e:  # decoders raise many types on malformed data; all mean "this file is unreadable"
        raise ImageReadError(f"unreadable image {path}: {e.__class__.__name__}: {e}") from None


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 array to a 3xHxW uint8 tensor (normalisation to [-1, 1] happens on the device).

    Always one copy: the transpose needs one anyway, and it keeps the tensor off a read-only decoder buffer (which
    an image of one pixel per row or column, whose transpose is already contiguous, would otherwise share)."""
    return torch.from_numpy(np.array(image.transpose(2, 0, 1), order="C"))
