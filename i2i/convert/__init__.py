"""Inference at scale: whole folders (batched, tiled, safe writes) and model export."""
from .export import ExportReport, export_translator
from .folder import ConvertReport, translate_folder
from .tiling import translate_tiled

__all__ = ["ConvertReport", "ExportReport", "export_translator", "translate_folder", "translate_tiled"]
