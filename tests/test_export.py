"""Export to TorchScript and ONNX: the exported graphs match PyTorch at the traced size and at others."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import i2i
from i2i.cli import main
from i2i.convert.export import TOLERANCE, export_translator

@pytest.fixture(scope="module")
def run_dir(cyclegan_run) -> Path:
    return cyclegan_run


@pytest.fixture(scope="module")
def translator(run_dir):
    return i2i.load(run_dir, device="cpu", direction="BtoA")


def _batch(*shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(1)) * 2 - 1


@pytest.mark.filterwarnings("ignore:.*torch.jit.load.*:FutureWarning")
def test_torchscript_matches_pytorch(translator, tmp_path):
    report = export_translator(translator, tmp_path / "g.pt", "torchscript")
    assert report.ok and set(report.differences) == {(1, 3, 32, 32), (2, 3, 36, 40)}
    assert report.max_abs_diff <= TOLERANCE
    scripted = torch.jit.load(str(tmp_path / "g.pt"))
    x = _batch(3, 3, 44, 28)
    with torch.no_grad():
        assert torch.allclose(scripted(x), translator.net(x), atol=TOLERANCE)


def test_onnx_matches_pytorch_with_dynamic_axes(translator, tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    report = export_translator(translator, tmp_path / "g.onnx", "onnx", size=40)
    assert report.ok and report.max_abs_diff <= TOLERANCE and report.input_shape == (1, 3, 40, 40)
    session = ort.InferenceSession(str(tmp_path / "g.onnx"), providers=["CPUExecutionProvider"])
    x = _batch(3, 3, 28, 52)
    (y,) = session.run(["output"], {"input": x.numpy()})
    with torch.no_grad():
        assert (torch.from_numpy(y) - translator.net(x)).abs().max() <= TOLERANCE


def test_export_cli(run_dir, tmp_path, capsys):
    out = tmp_path / "model" / "g.pt"
    assert main(["export", "--checkpoint", str(run_dir), "--format", "torchscript", "--out", str(out)]) == 0
    assert out.is_file() and "max |exported - pytorch|" in capsys.readouterr().out
    assert main(["export", "--checkpoint", str(run_dir), "--format", "onnx", "--out", str(out),
                 "--size", "30"]) == 2
    assert "multiple of the net's stride (4)" in capsys.readouterr().err


def test_export_leaves_translator_usable(translator, tmp_path):
    before = translator.translate(_batch(1, 3, 32, 32))
    export_translator(translator, tmp_path / "g.pt", "torchscript", verify=False)
    assert torch.equal(translator.translate(_batch(1, 3, 32, 32)), before)
