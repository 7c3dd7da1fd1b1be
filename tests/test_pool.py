"""The on-device image pool keeps the paper's pool statistics, never synchronises with the host and resumes exactly."""
from __future__ import annotations

import pytest
import torch

from i2i.train.pool import ImagePool


def marked(first: int, n: int) -> torch.Tensor:
    """``n`` tiny images whose every pixel holds its id (first, first + 1, ...)."""
    return torch.arange(first, first + n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, 2, 2).clone()


def ids(images: torch.Tensor) -> list[int]:
    return images[:, 0, 0, 0].long().tolist()


def reference_query(stored: list[int], size: int, batch: list[int], coins, slots) -> list[int]:
    """The paper's one-by-one pool (CycleGAN's ImagePool) on ids, consuming the given draws."""
    out = []
    for image, coin, slot in zip(batch, coins.tolist(), slots.tolist()):
        if len(stored) < size:
            stored.append(image)
            out.append(image)
        elif coin < 0.5:
            out.append(stored[slot])
            stored[slot] = image
        else:
            out.append(image)
    return out


def test_fill_phase_stores_and_returns_every_new_image():
    pool = ImagePool(5)
    assert ids(pool.query(marked(0, 3))) == [0, 1, 2]
    assert ids(pool.query(marked(3, 2))) == [3, 4]
    assert int(pool.count) == 5 and ids(pool.images[:5]) == [0, 1, 2, 3, 4]


def test_matches_the_one_by_one_pool_given_the_same_draws():
    # pool of 3, batches of 4: the pool fills mid-batch and images of one batch often draw the same slot
    size, pool, stored, next_id = 3, ImagePool(3), [], 0
    for step in range(40):
        torch.manual_seed(step)
        out = ids(pool.query(marked(next_id, 4)))
        torch.manual_seed(step)
        coins, slots = torch.rand(4), torch.randint(0, size, (4,))  # the pool draws these, in this order
        assert out == reference_query(stored, size, list(range(next_id, next_id + 4)), coins, slots), step
        assert ids(pool.images[:size]) == stored, step
        next_id += 4


def test_swap_rate_is_one_half_once_full():
    torch.manual_seed(0)
    pool, next_id = ImagePool(50), 0
    pool.query(marked(0, 50))
    seen, swapped, returned_old = set(range(50)), 0, 0
    for _ in range(500):
        batch = marked(50 + next_id, 4)
        out = ids(pool.query(batch))
        for new, got in zip(ids(batch), out):
            swapped += got != new
            returned_old += got != new and got in seen  # seen: every earlier image, this batch's included
            seen.add(new)
        next_id += 4
    rate = swapped / 2000
    assert abs(rate - 0.5) < 0.035, rate  # 2000 draws: standard deviation 0.011
    assert returned_old == swapped  # a swap returns a stored fake, never anything else


def test_query_never_synchronises_with_the_host(monkeypatch):
    pool = ImagePool(4)
    pool.query(marked(0, 2))  # first query allocates the buffer

    def no_sync(*args, **kwargs):
        raise AssertionError("host synchronisation in ImagePool.query")

    for name in ("item", "__bool__", "__float__", "__int__", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, no_sync)
    for first in range(2, 30, 3):
        out = pool.query(marked(first, 3))
    monkeypatch.undo()
    assert out.shape == (3, 3, 2, 2) and int(pool.count) == 4


def test_state_round_trip_resumes_exactly_and_reads_old_format():
    pool = ImagePool(4)
    pool.query(marked(0, 3))
    state = pool.state_dict()
    assert ids(state["images"]) == [0, 1, 2] and state["images"].device.type == "cpu"
    resumed = ImagePool(4)
    resumed.load_state_dict(state)
    for step in range(10):
        torch.manual_seed(step)
        a = pool.query(marked(10 * step, 2))
        torch.manual_seed(step)
        b = resumed.query(marked(10 * step, 2))
        assert torch.equal(a, b) and torch.equal(pool.images, resumed.images)
    empty = ImagePool(4)
    empty.load_state_dict({"images": None})  # a checkpoint saved before the first query
    assert empty.state_dict() == {"images": None} and ids(empty.query(marked(7, 1))) == [7]
    assert ImagePool(0).query(marked(1, 2)).shape[0] == 2 and ImagePool(0).state_dict() == {"images": None}


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_query_replays_in_a_cuda_graph():
    pool = ImagePool(3)
    static = marked(0, 2).cuda()
    pool.query(static)  # allocate outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = pool.query(static)
    for first in range(2, 40, 2):
        static.copy_(marked(first, 2))
        graph.replay()
        got, new = ids(out.cpu()), [first, first + 1]
        assert all(g == n or g < first for g, n in zip(got, new))
    assert int(pool.count) == 3 and len(set(ids(pool.images[:3].cpu()))) == 3
