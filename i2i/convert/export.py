"""Exporting a translator's generator to TorchScript or ONNX, checked against PyTorch.

The exported graph is the bare generator in fp32 on the CPU: input ``input`` is a float32 Bx3xHxW batch in
[-1, 1] with H and W multiples of the net's stride, output ``output`` has the same shape, in [-1, 1].
Batch, height and width are dynamic (ONNX axes ``batch``, ``height``, ``width``; TorchScript by tracing, which
these convolutional generators allow). Each export is run at the export size and at a second size and compared
with the PyTorch module; the largest absolute difference must stay below ``TOLERANCE``.
"""
from __future__ import annotations

import copy
import importlib.util
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable, Optional

import numpy as np
import torch

from ..errors import I2IError, os_error_message

if TYPE_CHECKING:
    from ..api import Translator

EXPORT_FORMATS = ("torchscript", "onnx")
TOLERANCE = 1e-4  # fp32; outputs are tanh values in [-1, 1]
# Deprecation notices of the exporters themselves (torch >= 2.9), not problems with the model.
_QUIET = ("legacy TorchScript-based ONNX export", "Constant folding", "will be removed", "torch.jit.trace",
          "torch.jit.save", "torch.jit.load")


@dataclass
class ExportReport:
    """Where the model went and how far its outputs are from PyTorch's at each checked input shape."""

    path: Path
    format: str
    input_shape: tuple[int, ...]
    differences: dict[tuple[int, ...], float] = field(default_factory=dict)
    note: str = ""

    @property
    def max_abs_diff(self) -> Optional[float]:
        return max(self.differences.values()) if self.differences else None

    @property
    def ok(self) -> bool:
        return self.max_abs_diff is None or self.max_abs_diff <= TOLERANCE

    def summary(self) -> str:
        lines = [f"exported {self.format} to {self.path} (traced at {'x'.join(map(str, self.input_shape))})"]
        for shape, diff in self.differences.items():
            lines.append(f"  max |exported - pytorch| at {'x'.join(map(str, shape))}: {diff:.2e} "
                         f"(tolerance {TOLERANCE:.0e})")
        if self.note:
            lines.append(f"  {self.note}")
        return "\n".join(lines)


def export_translator(translator: "Translator", out: str | Path, format: str = "onnx", size: Optional[int] = None,
                      opset: int = 17, verify: bool = True) -> ExportReport:
    """Export (a fp32 CPU copy of) the translator's generator to ``out``; ``size`` defaults to the training size."""
    if format not in EXPORT_FORMATS:
        raise I2IError(f"export format must be one of {', '.join(EXPORT_FORMATS)}; got {format!r}")
    stride = translator.stride
    size = size or translator.cfg.size
    if size < 1 or size % stride:
        raise I2IError(f"export size must be a positive multiple of the net's stride ({stride}); got {size}")
    out = Path(out)
    net = copy.deepcopy(translator.net).to("cpu", torch.float32).eval()
    generator = torch.Generator().manual_seed(0)
    example = torch.rand(1, 3, size, size, generator=generator) * 2 - 1
    other = torch.rand(2, 3, size + stride, size + 2 * stride, generator=generator) * 2 - 1
    report = ExportReport(out, format, tuple(example.shape))
    with warnings.catch_warnings(), torch.no_grad():
        for message in _QUIET:
            warnings.filterwarnings("ignore", message=f".*{message}")
        if format == "torchscript":
            traced = torch.jit.trace(net, example)
            _write(out, lambda f: torch.jit.save(traced, f))
            if verify:
                loaded = torch.jit.load(str(out))
                for x in (example, other):
                    report.differences[tuple(x.shape)] = float((loaded(x) - net(x)).abs().max())
        else:
            axes = {0: "batch", 2: "height", 3: "width"}
            _write(out, lambda f: torch.onnx.export(net, (example,), f, dynamo=False, opset_version=opset,
                                                    input_names=["input"], output_names=["output"],
                                                    dynamic_axes={"input": axes, "output": axes}))
            if verify:
                _verify_onnx(out, net, (example, other), report)
    return report


def _write(out: Path, write: Callable[[BinaryIO], object]) -> None:
    """``write(file)`` into a temporary file next to ``out``, then renamed to it: no half-written model, and a
    full disk or read-only folder is one clear error."""
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, out)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise I2IError(f"cannot write {out}: {os_error_message(e, out.parent)}") from None


def _verify_onnx(path: Path, net: torch.nn.Module, inputs: tuple[torch.Tensor, ...], report: ExportReport) -> None:
    if importlib.util.find_spec("onnx") is not None:
        import onnx
        onnx.checker.check_model(str(path))
    if importlib.util.find_spec("onnxruntime") is None:
        report.note = "not verified: onnxruntime is not installed (pip install 'i2i[export]')"
        return
    import onnxruntime
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for x in inputs:
        (y,) = session.run(["output"], {"input": x.numpy()})
        report.differences[tuple(x.shape)] = float(np.abs(y - net(x).numpy()).max())
