import math

import pytest
import torch
import torch.nn.functional as F

from svblur.ops.colour import colorize_labels, colorize_scalar, palette
from svblur.ops.pictures import prediction_panel
from svblur.systems import BlurSemanticsLoss, WarmupCosineLR


def _batch(b: int = 2, k: int = 4, h: int = 16, w: int = 20) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    seg = torch.randint(0, k, (b, h, w), generator=g)
    seg[:, 0] = 255
    return {"blur": torch.rand(b, 1, h, w, generator=g), "seg": seg}


def _outputs(b: int = 2, k: int = 4, h: int = 16, w: int = 20) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        "blur": torch.rand(b, 1, h, w, generator=g),
        "seg": torch.randn(b, k, h, w, generator=g),
        "aux_blur": torch.rand(b, 1, h, w, generator=g),
        "aux_seg": torch.randn(b, k, h, w, generator=g),
    }


def test_loss_is_the_cmos_weighted_sum():
    batch, out = _batch(), _outputs()
    terms = BlurSemanticsLoss()(out, batch)
    l1 = (out["blur"] - batch["blur"]).abs().mean()
    aux_l1 = (out["aux_blur"] - batch["blur"]).abs().mean()
    valid = batch["seg"] != 255
    logp = F.log_softmax(out["seg"], 1).permute(0, 2, 3, 1)[valid]
    ce = -logp.gather(1, batch["seg"][valid].unsqueeze(1)).mean()
    logp_aux = F.log_softmax(out["aux_seg"], 1).permute(0, 2, 3, 1)[valid]
    aux_ce = -logp_aux.gather(1, batch["seg"][valid].unsqueeze(1)).mean()
    expected = 0.5 * aux_l1 + 0.5 * aux_ce + l1 + ce
    assert terms["total"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert set(terms) == {"blur", "seg", "aux_blur", "aux_seg", "total"}


def test_loss_without_aux_and_single_task():
    batch, out = _batch(), _outputs()
    no_aux = BlurSemanticsLoss(use_aux=False)(out, batch)
    assert set(no_aux) == {"blur", "seg", "total"}
    full = BlurSemanticsLoss()(out, batch)
    for term in ("blur", "seg"):  # the same terms as with aux, without the aux halves
        assert no_aux[term].item() == pytest.approx(full[term].item())
    assert no_aux["total"].item() == pytest.approx((no_aux["blur"] + no_aux["seg"]).item())
    blur_only = BlurSemanticsLoss()({"blur": out["blur"]}, batch)
    assert blur_only["total"].item() == pytest.approx(blur_only["blur"].item())


def test_loss_errors_name_the_problem():
    batch = _batch()
    with pytest.raises(KeyError, match="no network output has a target in the batch"):
        BlurSemanticsLoss()({"depth": torch.zeros(1)}, batch)
    with pytest.raises(KeyError, match="manet_kernel"):  # kernels predicted, none given
        BlurSemanticsLoss()({"kernels": torch.zeros(2, 9, 8, 10)}, batch)
    with pytest.raises(ValueError, match="output 'blur'"):
        BlurSemanticsLoss()({"blur": torch.zeros(2, 1, 4, 5)}, batch)


def test_warmup_cosine_schedule_values():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    sched = WarmupCosineLR(opt, total_steps=110, steps_per_epoch=10, warmup_epochs=1)
    lrs = []
    for _ in range(110):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1 / 11)
    assert lrs[9] == pytest.approx(10 / 11)
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))


def test_schedule_state_round_trip():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    sched = WarmupCosineLR(opt, total_steps=50, steps_per_epoch=5, warmup_epochs=2)
    for _ in range(17):
        opt.step()
        sched.step()
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched2 = WarmupCosineLR(opt2, total_steps=50, steps_per_epoch=5, warmup_epochs=2)
    sched2.load_state_dict(sched.state_dict())
    opt2.load_state_dict(opt.state_dict())
    sched.step()
    sched2.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])


def test_visualization_colours_and_layout():
    vmax = 2.0
    first, last = torch.tensor([0.19, 0.07, 0.23]), torch.tensor([0.48, 0.02, 0.01])
    values = torch.tensor([0.0, vmax, -1.0, 5.0]).view(1, 1, 1, 4)
    rgb = colorize_scalar(values, vmax=vmax)
    assert rgb.shape == (1, 3, 1, 4)
    torch.testing.assert_close(rgb[0, :, 0, 0], first)  # 0 -> first anchor
    torch.testing.assert_close(rgb[0, :, 0, 1], last)  # vmax -> last anchor
    torch.testing.assert_close(rgb[0, :, 0, 2:], rgb[0, :, 0, :2])  # clamped outside [0, vmax]
    # Seven anchors, linear in between: the sixth of the range is anchor 1, its half the mean.
    between = colorize_scalar(torch.tensor([vmax / 6, vmax / 12]).view(1, 1, 1, 2), vmax)
    sixth, twelfth = between[0, :, 0, 0], between[0, :, 0, 1]
    torch.testing.assert_close(sixth, torch.tensor([0.27, 0.51, 0.96]))
    torch.testing.assert_close(twelfth, (first + sixth) / 2)
    pal = palette(40)
    assert pal.shape == (40, 3) and len({tuple(c) for c in pal.mul(255).round().tolist()}) == 40
    labels = torch.tensor([[[0, 1], [255, 2]]])
    col = colorize_labels(labels, 3)
    assert torch.equal(col[0, :, 1, 0], torch.zeros(3))  # ignored: black
    assert torch.equal(col[0, :, 0, 1], palette(3)[1]) and torch.equal(
        col[0, :, 1, 1], palette(3)[2]
    )
    b = _batch()
    out = _outputs()
    lr = torch.rand(2, 3, 4, 5)
    panel = prediction_panel(lr, b["blur"], out["blur"], b["seg"], out["seg"], 4, 1.0)
    assert panel.shape == (3, 2 * 16, 5 * 20)
    # Row i: LR (nearest x4) | GT blur | predicted blur | GT labels | predicted labels.
    for i in range(2):
        row = panel[:, 16 * i : 16 * (i + 1)]
        tiles = [
            lr[i].repeat_interleave(4, 1).repeat_interleave(4, 2),
            colorize_scalar(b["blur"][i : i + 1], 1.0)[0],
            colorize_scalar(out["blur"][i : i + 1], 1.0)[0],
            colorize_labels(b["seg"][i : i + 1], 4)[0],
            colorize_labels(out["seg"][i : i + 1].argmax(1), 4)[0],
        ]
        for k, tile in enumerate(tiles):
            torch.testing.assert_close(row[:, :, 20 * k : 20 * (k + 1)], tile)
