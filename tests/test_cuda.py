"""CUDA-only checks (skipped without a GPU): every mode trains under fp16/bf16 autocast with channels-last, the
fp16 grad scaler is used, compiled steps match eager ones, and inference runs in half precision."""
import pytest
import torch
from safetensors.torch import load_file

import i2i
from i2i.train.checkpoint import find_checkpoint

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

MODES = [("cyclegan", "unpaired", {}), ("pix2pix", "paired", {}), ("unit", "unpaired", {"d_scales": 1}),
         ("gan", "unpaired/trainA", {})]


@pytest.fixture
def gpu(tiny):
    return {**tiny, "device": "cuda"}


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("mode,layout,extra", MODES)
def test_modes_train_under_autocast_on_cuda(tmp_path, example_data, gpu, mode, layout, extra, precision):
    # 8 steps: with fp16 the grad scaler skips the first few while it backs off from its initial scale of 2**16
    run = i2i.train(mode=mode, data=str(example_data / layout), out=str(tmp_path / "r"), steps=8,
                    precision=precision, channels_last=True, **{**gpu, **extra, "checkpoint_every": 1,
                                                                "keep_checkpoints": 10})
    first = load_file(str(run / "checkpoints" / "step_00000001" / "weights.safetensors"))
    last = load_file(str(find_checkpoint(run) / "weights.safetensors"))
    assert all(torch.isfinite(t).all() for t in last.values())
    assert any(not torch.equal(first[k], last[k]) for k in first if first[k].is_floating_point())
    state = torch.load(find_checkpoint(run) / "state.pt", weights_only=True)
    assert bool(state["scalers"]["G"]) == (precision == "fp16")  # a GradScaler only for fp16


def test_compiled_step_matches_eager_on_cuda(tmp_path, example_data, gpu):
    runs = {c: i2i.train(mode="cyclegan", data=str(example_data / "unpaired"), out=str(tmp_path / str(c)), steps=2,
                         precision="fp32", compile=c, **gpu) for c in (False, True)}
    eager, compiled = (load_file(str(find_checkpoint(runs[c]) / "weights.safetensors")) for c in (False, True))
    assert all(torch.allclose(eager[k], compiled[k], rtol=1e-3, atol=1e-4) for k in eager)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_precision_inference_on_cuda(cyclegan_run, precision):
    model = i2i.load(cyclegan_run, device="cuda", precision=precision)
    x = torch.rand(2, 3, 40, 56) * 2 - 1
    y = model.translate(x)
    reference = i2i.load(cyclegan_run, device="cpu", precision="fp32").translate(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert (y.cpu() - reference).abs().mean() < 0.05


@pytest.mark.parametrize("mode,layout,extra", MODES)
def test_cuda_graph_step_matches_eager(tmp_path, example_data, gpu, mode, layout, extra, capsys):
    """3 eager warm-up steps, then the captured step replayed: the weights after 6 steps match an eager run."""
    runs = {g: i2i.train(mode=mode, data=str(example_data / layout), out=str(tmp_path / str(g)), steps=6,
                         precision="fp32", cuda_graph=g, **{**gpu, **extra}) for g in (False, True)}
    assert "could not be captured" not in capsys.readouterr().err
    eager, graphed = (load_file(str(find_checkpoint(runs[g]) / "weights.safetensors")) for g in (False, True))
    assert all(torch.allclose(eager[k].float(), graphed[k].float(), rtol=1e-3, atol=1e-4) for k in eager)
