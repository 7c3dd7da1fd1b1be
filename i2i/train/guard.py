"""Device-side pieces of a training step that never waits for the host: updates skipped on the device when a step
is not finite, buffers put back after such a step, skip counters and log sums read only at log points."""
from __future__ import annotations

from typing import Callable, Iterable, Optional

import torch
from torch import nn


def all_finite(loss: torch.Tensor, grads: list[torch.Tensor]) -> torch.Tensor:
    """A device bool: the loss and every gradient are finite (an fp16 overflow shows up as an inf gradient)."""
    ok = torch.isfinite(loss.detach())
    if grads:
        ok = ok & torch.isfinite(torch.nn.utils.get_total_norm(grads))
    return ok


def guarded_step(optimizer: torch.optim.Optimizer, ok: torch.Tensor) -> None:
    """``optimizer.step()`` that leaves parameters and optimiser state exactly as they were where ``ok`` is False.

    Fused Adam takes the decision itself (its ``found_inf`` input, as GradScaler uses it); other optimisers
    (RMSprop for weight clipping) step, then parameters and state are put back with ``torch.where``.
    """
    if all(group.get("fused") for group in optimizer.param_groups):
        optimizer.found_inf = (~ok).float()
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf
        return
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    tensors = params + [t for p in params for t in optimizer.state[p].values() if isinstance(t, torch.Tensor)]
    before = [t.detach().clone() for t in tensors]
    optimizer.step()
    tensors += [t for p in params for t in optimizer.state[p].values()  # state created by this first step
                if isinstance(t, torch.Tensor) and not any(t is s for s in tensors)]
    before += [torch.zeros_like(t) for t in tensors[len(before):]]
    with torch.no_grad():
        for t, old in zip(tensors, before):
            t.copy_(torch.where(ok, t, old))


class BufferGuard:
    """Snapshots the buffers of some networks (batch-norm statistics, spectral-norm vectors) before a phase and puts
    them back after it unless the phase was finite: a skipped step leaves no NaN statistics behind."""

    def __init__(self, nets: Iterable[nn.Module]):
        seen: dict[int, torch.Tensor] = {}
        for net in nets:
            for buffer in net.buffers():
                seen.setdefault(id(buffer), buffer)
        self.buffers = list(seen.values())
        self.saved = [b.detach().clone() for b in self.buffers]

    def snapshot(self) -> None:
        if self.buffers:
            torch._foreach_copy_(self.saved, self.buffers)

    @torch.no_grad()
    def restore_unless(self, ok: torch.Tensor) -> None:
        for buffer, saved in zip(self.buffers, self.saved):
            buffer.copy_(torch.where(ok, buffer, saved))


class SkipCounter:
    """Counts skipped (non-finite) steps on the device: the total, the current run of consecutive ones and the
    longest run since the last read."""

    def __init__(self, device: torch.device, total: int = 0):
        self.total = torch.tensor(total, dtype=torch.int64, device=device)
        self.in_a_row = torch.zeros((), dtype=torch.int64, device=device)
        self.longest = torch.zeros((), dtype=torch.int64, device=device)

    def record(self, ok: torch.Tensor) -> None:
        skipped = (~ok).to(torch.int64)
        self.total.add_(skipped)
        self.in_a_row.add_(skipped).mul_(skipped)
        torch.maximum(self.longest, self.in_a_row, out=self.longest)

    def read(self) -> tuple[int, int]:
        """(total skipped, longest run since the last read): one host sync; then the run window starts again."""
        total, longest = (int(v) for v in torch.stack([self.total, self.longest]).cpu())
        self.longest.zero_()  # a run that goes on is measured whole at its next record()
        return total, longest


class LogSums:
    """Sums logged values of the finite steps between two log points, on the device; ``mean`` copies them once."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count: Optional[torch.Tensor] = None

    def add(self, values: dict[str, torch.Tensor], ok: torch.Tensor) -> None:
        """Add one step's values where ``ok`` (a skipped step's NaN losses would hide the window's others)."""
        for key, value in values.items():
            value = torch.where(ok, value.detach().float(), 0.0)
            if key in self.sums:
                self.sums[key].add_(value)
            else:
                self.sums[key] = value.clone()
        if self.count is None:
            self.count = torch.zeros((), device=ok.device)
        self.count.add_(ok.float())

    def mean(self, reduce: Optional[Callable[[dict], dict]] = None) -> dict[str, float]:
        """The window's means as floats (NaN when no step of it was finite); ``reduce`` e.g. averages the device
        tensors over DDP ranks first. One copy to the host."""
        if not self.sums:
            return {}
        means = {k: torch.where(self.count > 0, v / self.count.clamp(min=1), float("nan")) for k, v in self.sums.items()}
        if reduce is not None:
            means = reduce(means)
        keys = list(means)
        values = torch.stack([means[k] for k in keys]).cpu().tolist()
        for total in [*self.sums.values(), self.count]:  # in place: a captured step keeps adding into them
            total.zero_()
        return dict(zip(keys, values))
