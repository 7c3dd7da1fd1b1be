"""Folder datasets, safe image decoding and augmentation."""
from .datasets import DATA_KINDS, ResumableSampler, make_dataset
from .images import IMAGE_EXTENSIONS, ImageReadError, list_images, read_image

__all__ = ["DATA_KINDS", "IMAGE_EXTENSIONS", "ImageReadError", "ResumableSampler", "list_images", "make_dataset",
           "read_image"]
