"""UNIT: shared blocks are one set of parameters everywhere (nets, optimiser, reloaded model); training and
translation work end to end."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import i2i
from i2i.config import make_config
from i2i.modes.base import create_mode
from i2i.nets.unit import UnitTranslator, unit_networks
from i2i.train.trainer import Trainer

# 32 px images: a 2-scale PatchGAN needs d_layers=2 (its 16 px scale is too small for 3 layers)
UNIT = dict(mode="unit", d_scales=2, d_layers=2)


def shared_pairs(nets) -> list[tuple[nn.Parameter, nn.Parameter]]:
    return [*zip(nets["E_A"].shared.parameters(), nets["E_B"].shared.parameters()),
            *zip(nets["G_A"].shared.parameters(), nets["G_B"].shared.parameters())]


def test_networks_share_blocks_and_keep_shapes():
    e_a, e_b, g_a, g_b = unit_networks(ngf=8, n_blocks=6, n_down=2, shared_blocks=2)
    assert e_a.shared is e_b.shared and g_a.shared is g_b.shared and e_a.shared is not g_a.shared
    assert len(e_a.shared) == 2 and len(e_a.private[-1]) == 1 and len(g_a.private[0]) == 1  # 3 per side, 2 shared
    x = torch.randn(2, 3, 24, 40)
    z = e_a(x)
    assert z.shape == (2, 32, 6, 10)
    y = g_b(z)
    assert y.shape == x.shape and y.abs().max() <= 1
    unique = sum(p.numel() for p in nn.ModuleList([e_a, e_b, g_a, g_b]).parameters())
    assert unique < sum(p.numel() for net in (e_a, e_b, g_a, g_b) for p in net.parameters())


def test_bad_shared_block_count_and_size_are_clear_errors():
    with pytest.raises(i2i.I2IError, match="unit-shared-blocks"):
        create_mode(make_config(dict(mode="unit", ngf=8, n_blocks=2, unit_shared_blocks=2)))
    with pytest.raises(i2i.I2IError, match="too small for a discriminator with --d-layers 3 and --d-scales 3"):
        create_mode(make_config(dict(mode="unit", ngf=8, ndf=8, size=64, d_scales=3)))  # explicit: not adapted


@pytest.mark.parametrize("size,scales,layers", [(16, 1, 2), (32, 1, 3), (64, 2, 3), (96, 3, 3), (256, 3, 3)])
def test_discriminator_scales_follow_the_size_unless_given(size, scales, layers):
    mode = create_mode(make_config(dict(mode="unit", ngf=4, ndf=4, n_blocks=2, size=size)))
    assert (mode.cfg.d_scales, mode.cfg.d_layers) == (scales, layers)
    assert len(mode.nets["D_A"].scales if scales > 1 else [mode.nets["D_A"]]) == scales
    assert bool(mode.notes) == (size < 96)  # the choice is said when it differs from the paper's 3 scales
    given = create_mode(make_config(dict(mode="unit", ngf=4, ndf=4, n_blocks=2, size=64, d_scales=1, d_layers=2)))
    assert (given.cfg.d_scales, given.cfg.d_layers, given.notes) == (1, 2, [])


def test_trains_with_one_copy_of_shared_parameters_and_reloads_shared(example_data, tiny, tmp_path):
    cfg = make_config({**tiny, **UNIT, "data": str(example_data / "unpaired"), "out": str(tmp_path / "run"),
                       "steps": 3})
    trainer = Trainer(cfg)
    nets = trainer.nets
    for a, b in shared_pairs(nets):
        assert a is b
    g_params = trainer.phase_params["G"]
    assert len({id(p) for p in g_params}) == len(g_params)  # each shared parameter once in the optimiser
    assert len(g_params) == len(list(nn.ModuleList([nets[n] for n in ("E_A", "E_B", "G_A", "G_B")]).parameters()))
    before = {k: v.clone() for k, v in nets.state_dict().items()}
    run = trainer.fit()

    logs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    last = logs[-1]
    for key in ("G", "D", "recon_A", "kl_B", "cycle_A", "cycle_kl_B", "G_adv_A", "D_B"):
        assert math.isfinite(last[key]), key
    after = nets.state_dict()
    for name in ("E_A.shared.0.body.0.1.weight", "G_B.private.2.1.weight", "D_A.scales.1.model.0.weight"):
        assert not torch.equal(before[name], after[name]), name
    assert torch.equal(after["E_A.shared.0.body.0.1.weight"], after["E_B.shared.0.body.0.1.weight"])

    model = i2i.load(run, device="cpu")
    loaded = model.nets
    for a, b in shared_pairs(loaded):
        assert a is b
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, after[key].cpu()), key


def test_translates_both_directions_at_non_square_sizes(example_data, tiny, tmp_path):
    run = i2i.train(**{**tiny, **UNIT, "data": str(example_data / "unpaired"), "out": str(tmp_path / "run"), "steps": 1})
    for direction in ("AtoB", "BtoA"):
        model = i2i.load(run, device="cpu", direction=direction)
        assert isinstance(model.net, UnitTranslator) and model.net.stride == 4
        for h, w in ((24, 40), (21, 30)):
            x = torch.rand(2, 3, h, w) * 2 - 1
            y = model.translate(x)
            assert y.shape == x.shape and torch.isfinite(y).all() and y.abs().max() <= 1
    mode = create_mode(make_config({**tiny, **UNIT}))
    batch = {"A": torch.rand(2, 3, 32, 32) * 2 - 1, "B": torch.rand(2, 3, 32, 32) * 2 - 1}
    with torch.no_grad():
        rows = mode.visuals(batch, mode.nets.eval())
    assert len(rows) == 6 and all(r.shape == (2, 3, 32, 32) for r in rows)
    assert rows[0] is batch["A"] and rows[3] is batch["B"]
