"""Image history pool (Shrivastava et al. 2017), as used by CycleGAN to show D a mix of old and new fakes."""
from __future__ import annotations

from typing import Any, Optional

import torch


class ImagePool:
    """Keeps up to ``size`` past fakes. Per image, in batch order: while the pool is not full, the image is stored and
    returned; once full, with p=0.5 a random stored image is returned and the new one takes its slot, else the new
    image is returned.

    Everything stays on the fakes' device: a fixed buffer (allocated on the first query), the filled count as a device
    tensor, the random draws from torch's device generator (checkpointed by the trainer, so a resume is exact) and
    per-image choices with ``torch.where``. No host synchronisation and no data-dependent shapes, so a query can be
    captured in a CUDA graph (restore a checkpoint before capturing: loading replaces the buffer).

    Images of one batch that draw the same slot behave as in the one-by-one loop of the paper: a later image gets
    the earlier image of this batch that was stored there, and the slot keeps the last of them.
    """

    def __init__(self, size: int):
        self.size = size
        self.images: Optional[torch.Tensor] = None  # (size + 1, C, H, W); the extra row takes discarded writes
        self.count: Optional[torch.Tensor] = None   # slots filled so far (int64 scalar on the device)

    def query(self, images: torch.Tensor, accept: Optional[torch.Tensor] = None) -> torch.Tensor:
        """D's batch for ``images``; where the device bool ``accept`` is False (a skipped step) the pool keeps its
        contents and count exactly, and the images are returned as they are."""
        images = images.detach()
        if self.size <= 0:
            return images
        if self.images is None:
            self._allocate(images.new_zeros((0, *images.shape[1:])))
        n, device = images.shape[0], images.device
        order = torch.arange(n, device=device)
        position = self.count + order
        filling = position < self.size
        swap = ~filling & (torch.rand(n, device=device) < 0.5)
        slot = torch.where(filling, position, torch.randint(0, self.size, (n,), device=device))
        stores = filling | swap
        if accept is not None:
            stores, swap = stores & accept, swap & accept
        # same[i, j]: image j of this batch is stored in image i's slot
        same = (slot[:, None] == slot[None, :]) & stores[None, :]
        earlier_writer = torch.where(same & (order[None, :] < order[:, None]), order[None, :], -1).amax(dim=1)
        stored = torch.where((earlier_writer >= 0).view(-1, 1, 1, 1), images[earlier_writer.clamp(min=0)],
                             self.images[slot].to(images.dtype))
        out = torch.where(swap.view(-1, 1, 1, 1), stored, images)
        overwritten_later = (same & (order[None, :] > order[:, None])).any(dim=1)
        target = torch.where(stores & ~overwritten_later, slot, self.size)
        self.images.index_copy_(0, target, images.to(self.images.dtype))
        self.count.add_(n if accept is None else n * accept.to(torch.int64)).clamp_(max=self.size)
        return out

    def _allocate(self, stored: torch.Tensor) -> None:
        self.images = stored.new_zeros((self.size + 1, *stored.shape[1:]))
        self.images[:len(stored)] = stored
        self.count = torch.tensor(len(stored), dtype=torch.int64, device=stored.device)

    def state_dict(self) -> dict[str, Any]:
        if self.images is None or int(self.count) == 0:
            return {"images": None}
        return {"images": self.images[:int(self.count)].cpu()}

    def load_state_dict(self, state: dict[str, Any], device: torch.device | str = "cpu") -> None:
        stored = state.get("images")
        if stored is None:
            self.images = self.count = None
        else:
            self._allocate(stored[:self.size].to(device))
