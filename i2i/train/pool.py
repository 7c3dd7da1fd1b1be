"""Image history pool (Shrivastava et al. 2017), as used by CycleGAN to show D a mix of old and new fakes."""
from __future__ import annotations

from typing import Any

import torch


class ImagePool:
    """Keeps up to ``size`` past fakes; each query returns, per image, the new one or (p=0.5) a swapped-out old one.

    Random draws use torch's global CPU generator, whose state the trainer checkpoints, so a resume is exact.
    """

    def __init__(self, size: int):
        self.size = size
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size <= 0:
            return images.detach()
        out = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand(()).item() < 0.5:
                slot = int(torch.randint(0, self.size, ()).item())
                out.append(self.images[slot].clone())
                self.images[slot] = image.clone()
            else:
                out.append(image)
        return torch.cat(out, dim=0)

    def state_dict(self) -> dict[str, Any]:
        return {"images": torch.cat(self.images).cpu() if self.images else None}

    def load_state_dict(self, state: dict[str, Any], device: torch.device | str = "cpu") -> None:
        stored = state.get("images")
        self.images = [] if stored is None else [x.unsqueeze(0).to(device) for x in stored]
