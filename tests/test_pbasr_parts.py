"""PBaSR's parts: RRDBNet, the U-Net discriminators, the GAN-SR losses, cross-branch fusion."""

from __future__ import annotations

import copy
import functools
import math
import re
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import Logger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from svblur.conf import config_dir
from svblur.errors import CheckpointError, CheckpointMismatchError, InputError
from svblur.models.discriminators import ConditionalUNetDiscriminatorSN, UNetDiscriminatorSN
from svblur.models.rrdb_sft import RRDB, RRDBSFT, RRDBSFTBlock
from svblur.models.rrdbnet import RRDBNet
from svblur.systems import fusion
from svblur.systems.fusion import CrossBranchFusion, cross_branch_fusion
from svblur.systems.gan_losses import (
    REAL_ESRGAN_LAYER_WEIGHTS,
    VGG19_FILENAME,
    GANLoss,
    PerceptualLoss,
    default_vgg19_path,
)
from svblur.systems.pbasr import GANSRTask, PBaSRTask

torch.set_num_threads(1)
CONFIG_DIR = config_dir()


def tiny_rrdbnet(scale: int = 4) -> RRDBNet:
    return RRDBNet(num_features=8, num_blocks=2, growth_channels=4, scale=scale)


# ---------------------------------------------------------------------------- RRDBNet


@pytest.mark.parametrize(("scale", "stages"), [(1, 0), (2, 1), (4, 2)])
def test_rrdbnet_shapes_and_stages(scale, stages):
    net = tiny_rrdbnet(scale)
    out = net(torch.rand(2, 3, 5, 7))
    assert out.shape == (2, 3, 5 * scale, 7 * scale) and net.scale == scale
    assert sum(name.startswith("conv_up") for name, _ in net.named_children()) == stages
    with pytest.raises(ValueError, match="power of two"):
        RRDBNet(scale=3)
    with pytest.raises(ValueError, match=r"\(B, 3, h, w\)"):
        net(torch.rand(1, 4, 5, 7))


def test_rrdbnet_default_is_esrgan_x4():
    net = RRDBNet()
    assert sum(p.numel() for p in net.parameters()) == 16_697_987
    keys = net.state_dict().keys()
    assert "body.22.dense3.conv5.weight" in keys and "body.23.dense1.conv1.weight" not in keys
    for name in ("conv_first", "conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"):
        assert f"{name}.weight" in keys


def test_rrdbnet_forward_matches_hand_written_esrgan():
    net = tiny_rrdbnet(4).double()
    lr = torch.rand(1, 3, 4, 6, dtype=torch.float64)

    def rdb(block, x):
        feats = [x]
        for k in range(1, 5):
            conv = getattr(block, f"conv{k}")
            feats.append(F.leaky_relu(conv(torch.cat(feats, 1)), 0.2))
        return block.conv5(torch.cat(feats, 1)) * 0.2 + x

    def rrdb(block, x):
        return rdb(block.dense3, rdb(block.dense2, rdb(block.dense1, x))) * 0.2 + x

    fea = net.conv_first(lr)
    trunk = fea
    for block in net.body:
        trunk = rrdb(block, trunk)
    fea = fea + net.conv_body(trunk)
    for conv in (net.conv_up1, net.conv_up2):
        fea = F.leaky_relu(conv(fea.repeat_interleave(2, -1).repeat_interleave(2, -2)), 0.2)
    expected = net.conv_last(F.leaky_relu(net.conv_hr(fea), 0.2))
    torch.testing.assert_close(net(lr), expected, rtol=1e-12, atol=1e-12)


def test_rrdb_is_shared_and_rrdb_sft_keys_unchanged():
    sft_net = RRDBSFT(num_features=8, num_blocks=2, growth_channels=4, prior_channels=8,
                      gia_groups=2, window_size=(4, 4))  # fmt: skip
    assert all(type(block) is RRDBSFTBlock and isinstance(block, RRDB) for block in sft_net.trunk)
    assert all(type(block) is RRDB and block.sft is None for block in tiny_rrdbnet().body)
    keys = list(sft_net.trunk[0].state_dict())
    assert keys[0].startswith("sft.") and "dense3.conv5.bias" in keys
    with pytest.raises(ValueError, match="prior"):
        sft_net.trunk[0](torch.rand(1, 8, 4, 4))


# ---------------------------------------------------------------------------- discriminators


def test_unet_discriminator_shape_and_spectral_norm():
    torch.manual_seed(0)
    disc = UNetDiscriminatorSN(num_features=8)
    assert disc(torch.rand(2, 3, 16, 24)).shape == (2, 1, 16, 24)
    normed = [f"conv{i}" for i in range(1, 9)]
    assert all(hasattr(getattr(disc, name), "weight_orig") for name in normed)
    assert not hasattr(disc.conv0, "weight_orig") and not hasattr(disc.conv9, "weight_orig")
    # after enough power iterations, the largest singular value of every SN weight is 1
    with torch.no_grad():
        for _ in range(400):
            disc(torch.rand(1, 3, 8, 8))
    for name in normed:
        weight = getattr(disc, name).weight
        sigma = torch.linalg.matrix_norm(weight.reshape(weight.shape[0], -1), ord=2)
        assert sigma.item() == pytest.approx(1.0, abs=1e-3), name
    with pytest.raises(ValueError, match="divisible by 8"):
        disc(torch.rand(1, 3, 12, 16))


def test_released_discriminator_key_names():
    keys = set(UNetDiscriminatorSN().state_dict())
    assert {"conv0.weight", "conv1.weight_orig", "conv1.weight_u", "conv9.bias"} <= keys
    assert len(keys) == 2 + 8 * 3 + 2


def test_conditional_discriminator_ignores_condition_at_init_then_learns_it():
    torch.manual_seed(0)
    disc = ConditionalUNetDiscriminatorSN(num_features=8)
    fuse = disc.fuse.weight[:, :, 0, 0]
    assert torch.equal(fuse[:, :8], torch.eye(8)) and not fuse[:, 8:].any()
    plain = UNetDiscriminatorSN(num_features=8)
    plain.load_state_dict(disc.state_dict(), strict=False)
    gen = torch.Generator().manual_seed(1)
    image = torch.rand(2, 3, 16, 16, generator=gen)
    cond_a = (torch.rand(2, 1, 16, 16, generator=gen) > 0.5).float()
    cond_b = torch.rand(2, 1, 16, 16, generator=gen) * 3
    disc.eval(), plain.eval()
    with torch.no_grad():
        out_a, out_b = disc(image, cond_a), disc(image, cond_b)
        assert torch.equal(out_a, out_b)
        torch.testing.assert_close(out_a, plain(image), rtol=0, atol=0)
    disc.train()
    optimizer = torch.optim.SGD(disc.parameters(), lr=0.1)
    (disc(image, cond_a) * cond_a).mean().backward()
    optimizer.step()
    disc.eval()
    with torch.no_grad():
        assert (disc(image, cond_a) - disc(image, cond_b)).abs().max() > 1e-6
    with pytest.raises(ValueError, match="condition must have shape"):
        disc(image, cond_a[:, :, :8])


def _trained_discriminator(num_features: int = 8) -> UNetDiscriminatorSN:
    """A discriminator whose weights and spectral-norm vectors differ from a fresh one's."""
    torch.manual_seed(5)
    disc = UNetDiscriminatorSN(num_features=num_features)
    with torch.no_grad():
        for _ in range(3):
            disc(torch.rand(1, 3, 8, 8))
        for param in disc.parameters():
            param.add_(0.01 * torch.randn_like(param))
    return disc.eval()


def _gan_system(cls, **kwargs):
    adam = functools.partial(torch.optim.Adam, lr=1e-4)
    parts = {"blur_discriminator": ConditionalUNetDiscriminatorSN(num_features=8)}
    return cls(
        net=tiny_rrdbnet(),
        discriminator=UNetDiscriminatorSN(num_features=8),
        g_optimizer=adam,
        d_optimizer=adam,
        **(parts if cls is PBaSRTask else {}),
        **kwargs,
    )


@pytest.mark.parametrize("form", ["state_dict", "lightning"])
def test_discriminators_start_from_the_anchor_discriminator(tmp_path, form):
    anchor = _trained_discriminator()
    path = tmp_path / "anchor_d.pth"
    if form == "state_dict":  # e.g. Real-ESRGAN's released netD
        torch.save(anchor.state_dict(), path)
    else:  # the anchor run's Lightning checkpoint (generator and discriminator)
        state = {f"net.{k}": v for k, v in tiny_rrdbnet().state_dict().items()}
        state.update({f"discriminator.{k}": v for k, v in anchor.state_dict().items()})
        torch.save({"state_dict": state, "global_step": 4}, path)
    expected = anchor.state_dict()
    gen = torch.Generator().manual_seed(2)
    image = torch.rand(2, 3, 16, 24, generator=gen)
    masks = [
        torch.zeros(2, 1, 16, 24),
        torch.ones(2, 1, 16, 24),
        (torch.rand(2, 1, 16, 24, generator=gen) > 0.5).float(),
    ]
    with torch.no_grad():
        reference = anchor(image)

    gan = _gan_system(GANSRTask, anchor_discriminator_ckpt=str(path))
    gan.load_anchor()  # no anchor_ckpt: the generator stays random, the discriminator loads
    loaded = gan.discriminator.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)

    pbasr = _gan_system(PBaSRTask, anchor_discriminator_ckpt=str(path))
    fresh = copy.deepcopy(pbasr.blur_discriminator.state_dict())
    pbasr.load_anchor()
    general = pbasr.discriminator.state_dict()
    assert all(torch.equal(general[k], expected[k]) for k in expected)
    blur = pbasr.blur_discriminator
    shared = {k: v for k, v in blur.state_dict().items() if k in expected}
    assert shared.keys() == expected.keys()
    assert all(torch.equal(shared[k], expected[k]) for k in expected)
    # the condition path keeps its initialization: identity on the image, zero condition
    for key, value in blur.state_dict().items():
        if key.startswith(("condition_conv.", "fuse.")):
            assert torch.equal(value, fresh[key]), key
    blur.eval()
    with torch.no_grad():
        for mask in masks:
            torch.testing.assert_close(blur(image, mask), reference, rtol=0, atol=0)


def test_anchor_discriminator_errors_name_the_file_and_default_keeps_random(tmp_path):
    system = _gan_system(PBaSRTask)
    before = copy.deepcopy(system.state_dict())
    system.load_anchor()  # neither option: nothing loaded
    after = system.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)

    wrong = tmp_path / "wide_d.pth"
    torch.save(UNetDiscriminatorSN(num_features=16).state_dict(), wrong)
    missing = tmp_path / "missing.pth"
    for path, error in ((wrong, CheckpointMismatchError), (missing, CheckpointError)):
        system = _gan_system(GANSRTask, anchor_discriminator_ckpt=str(path))
        with pytest.raises(error, match=re.escape(str(path))) as info:
            system.load_anchor()
        assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------- losses


def test_gan_loss_closed_forms():
    logits = torch.tensor([[-2.0, -0.5], [0.0, 1.5]]).view(1, 1, 2, 2)
    sigmoid = torch.sigmoid(logits)
    vanilla, hinge = GANLoss("vanilla"), GANLoss("hinge")
    cases = {
        (vanilla, True, True): -torch.log(sigmoid),
        (vanilla, False, True): -torch.log(1 - sigmoid),
        (vanilla, True, False): -torch.log(sigmoid),
        (hinge, True, True): torch.clamp(1 - logits, min=0),
        (hinge, False, True): torch.clamp(1 + logits, min=0),
        (hinge, True, False): -logits,
    }
    for (loss, real, for_d), expected in cases.items():
        torch.testing.assert_close(loss(logits, real, for_d), expected.mean())
    torch.testing.assert_close(
        hinge(logits, False, True), torch.tensor([0.0, 0.5, 1.0, 2.5]).mean()
    )
    with pytest.raises(ValueError, match="target_is_real=True"):
        hinge(logits, False, False)
    with pytest.raises(ValueError, match="kind"):
        GANLoss("lsgan")  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["vanilla", "hinge"])
def test_masked_gan_loss(kind):
    loss = GANLoss(kind)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 1, 6, 5, generator=gen) * 2
    ones = torch.ones_like(logits)
    for real, for_d in ((True, True), (False, True), (True, False)):
        torch.testing.assert_close(loss(logits, real, for_d, ones), loss(logits, real, for_d))
    mask = torch.zeros_like(logits, dtype=torch.bool)
    mask[0, 0, 1:4, 2:] = True
    mask[1, 0, 5, :2] = True
    region = logits[mask]
    by_hand = torch.relu(1 - region) if kind == "hinge" else F.softplus(-region)
    torch.testing.assert_close(loss(logits, True, True, mask), by_hand.mean())
    torch.testing.assert_close(loss(logits, True, True, mask.float()), by_hand.mean())
    # a mask shared by the batch counts once per sample
    shared = torch.zeros(1, 1, 6, 5)
    shared[..., 0, 0] = 1
    expected = loss.per_element(logits[:, :, :1, :1], True, True).mean()
    torch.testing.assert_close(loss(logits, True, True, shared), expected)
    empty = loss(logits, True, True, torch.zeros_like(logits))
    assert empty.item() == 0.0
    with pytest.raises(ValueError, match="broadcast"):
        loss(logits, True, True, torch.ones(2, 1, 3, 5))


def test_hinge_loss_is_eq1_by_hand():
    # Eq. 1 averaged over W H C = 2 * 1 * 2 = 4 elements (and the batch of one)
    real = torch.tensor([2.0, 0.5, -1.0, 0.0]).view(1, 2, 1, 2)
    fake = torch.tensor([-2.0, -0.5, 1.0, 0.0]).view(1, 2, 1, 2)
    hinge = GANLoss("hinge")
    # relu(1 - real) = (0, 0.5, 2, 1), relu(1 + fake) = (0, 0.5, 2, 1)
    assert hinge(real, True, True).item() == pytest.approx(3.5 / 4)
    assert hinge(fake, False, True).item() == pytest.approx(3.5 / 4)
    # the generator's term, -mean D(SR) (the release's): -(-2 - 0.5 + 1 + 0) / 4
    assert hinge(fake, True, False).item() == pytest.approx(1.5 / 4)
    # a mask over the last two elements: (2 + 1) / 2 and -(1 + 0) / 2
    mask = torch.tensor([0.0, 0.0, 1.0, 1.0]).view(1, 2, 1, 2)
    assert hinge(real, True, True, mask).item() == pytest.approx(1.5)
    assert hinge(fake, True, False, mask).item() == pytest.approx(-0.5)


class _RecordingOptimizer:
    """Stands for an optimizer: records the module's gradients at ``step()``, changes nothing."""

    def __init__(self, module: nn.Module) -> None:
        self.module, self.grads = module, []

    def zero_grad(self) -> None:
        self.module.zero_grad(set_to_none=True)

    def step(self) -> None:
        self.grads.append(
            [
                torch.zeros_like(p) if p.grad is None else p.grad.clone()
                for p in self.module.parameters()
            ]
        )


def _blur_branch_step(region: str, mask: torch.Tensor):
    """One step of PBaSR's blur branch (GAN term only, hinge): the logged terms, the
    generator's and discriminator's gradients, and D's logits on HR and SR."""
    torch.manual_seed(0)
    options = {"gan_kind": "hinge", "blur_gan_region": region, "l1_weight": 0.0, "gan_weight": 0.5}
    system = _gan_system(PBaSRTask, **options)
    system.eval()  # no spectral-norm power iteration: D gives the same logits when called again
    logged: dict[str, torch.Tensor] = {}
    system._log_terms = lambda _, terms, *args: logged.update(terms)  # type: ignore[method-assign]
    system.manual_backward = lambda loss: loss.backward()  # type: ignore[method-assign]
    gen = torch.Generator().manual_seed(1)
    lr, hr = torch.rand(2, 3, 4, 4, generator=gen), torch.rand(2, 3, 16, 16, generator=gen)
    batch = {"lr": lr, "hr": hr, "blur_mask": mask}
    g_opt, d_opt = _RecordingOptimizer(system.blur), _RecordingOptimizer(system.blur_discriminator)
    system._branch_step("blur", system.blur, system.blur_discriminator, batch, g_opt, d_opt)
    with torch.no_grad():
        sr = system.blur(batch["lr"])
        d_real = system.blur_discriminator(batch["hr"], mask)
        d_fake = system.blur_discriminator(sr, mask)
    return logged, g_opt.grads[0], d_opt.grads[0], d_real, d_fake


def test_blur_gan_region_all_is_eq1_and_blurred_is_the_masked_mean():
    sharp = torch.zeros(2, 1, 16, 16)  # no blurred pixel
    logged, g_grads, d_grads, d_real, d_fake = _blur_branch_step("blurred", sharp)
    assert logged["gan"].item() == 0.0 and logged["discriminator"].item() == 0.0
    assert all(not g.any() for g in g_grads) and all(not g.any() for g in d_grads)

    logged, g_grads, d_grads, d_real, d_fake = _blur_branch_step("all", sharp)
    torch.testing.assert_close(logged["gan"], 0.5 * -d_fake.mean())
    torch.testing.assert_close(
        logged["discriminator"], (1 - d_real).clamp(min=0).mean() + (1 + d_fake).clamp(min=0).mean()
    )
    assert any(g.abs().sum() > 0 for g in g_grads) and any(g.abs().sum() > 0 for g in d_grads)

    partial = torch.zeros(2, 1, 16, 16)
    partial[0, :, :5, :] = 1
    partial[1, :, 8:, 3:7] = 1
    logged, *_, d_real, d_fake = _blur_branch_step("blurred", partial)
    region = partial.bool()
    torch.testing.assert_close(logged["gan"], 0.5 * -d_fake[region].mean())
    torch.testing.assert_close(
        logged["discriminator"],
        (1 - d_real[region]).clamp(min=0).mean() + (1 + d_fake[region]).clamp(min=0).mean(),
    )
    logged_all, *_, _, d_fake_all = _blur_branch_step("all", partial)
    torch.testing.assert_close(logged_all["gan"], 0.5 * -d_fake_all.mean())


@pytest.mark.parametrize("cls", [GANSRTask, PBaSRTask])
def test_blur_gan_region_is_validated(cls):
    assert _gan_system(cls).blur_gan_region == "blurred"  # the default: svblur's earlier behaviour
    assert _gan_system(cls, blur_gan_region="all").blur_gan_region == "all"
    with pytest.raises(ValueError, match=r"blur_gan_region must be 'all' .* got 'sharp'"):
        _gan_system(cls, blur_gan_region="sharp")


def _torchvision_vgg19_state() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """torchvision's VGG19 feature stack, randomly initialized, and its state-dict entries."""
    from torchvision.models.vgg import make_layers

    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M"]
    cfg += [512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]
    torch.manual_seed(3)
    features = make_layers(cfg)  # type: ignore[arg-type]
    with torch.no_grad():
        for module in features:
            if isinstance(module, nn.Conv2d):
                module.bias.normal_(0, 0.1)
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    return features, state


def test_perceptual_loss_matches_torchvision_vgg19(tmp_path):
    features, state = _torchvision_vgg19_state()
    torch.save(state, tmp_path / "vgg.pth")
    loss = PerceptualLoss(tmp_path / "vgg.pth")
    assert loss.layer_weights == dict(REAL_ESRGAN_LAYER_WEIGHTS)
    gen = torch.Generator().manual_seed(0)
    sr, hr = torch.rand(2, 3, 32, 32, generator=gen), torch.rand(2, 3, 32, 32, generator=gen)

    # independent reference: torchvision's modules, taps at the conv outputs (before ReLU)
    taps = {"conv1_2": 2, "conv2_2": 7, "conv3_4": 16, "conv4_4": 25, "conv5_4": 34}
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def reference(x):
        out, x = {}, (x - mean) / std
        for index, module in enumerate(features):
            x = module(x.clone())
            for name, tap in taps.items():
                if index == tap:
                    out[name] = x.clone()
        return out

    with torch.no_grad():
        ref_sr, ref_hr = reference(sr), reference(hr)
    expected = sum(
        REAL_ESRGAN_LAYER_WEIGHTS[k] * (ref_sr[k] - ref_hr[k]).abs().mean() for k in taps
    )
    value = loss(sr.requires_grad_(), hr)
    torch.testing.assert_close(value, expected, rtol=1e-4, atol=1e-6)
    value.backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in loss.parameters())
    assert loss.state_dict() == {}  # fixed weights stay out of checkpoints
    host = nn.Module()
    host.perceptual = loss
    host.load_state_dict({}, strict=True)
    relu = PerceptualLoss(tmp_path / "vgg.pth", {"relu1_1": 1.0})
    torch.testing.assert_close(relu(sr, hr), (F.relu(features[0]((sr - mean) / std))
                               - F.relu(features[0]((hr - mean) / std))).abs().mean())  # fmt: skip


def test_perceptual_loss_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    assert default_vgg19_path() == tmp_path / "hub" / "checkpoints" / VGG19_FILENAME
    with pytest.raises(InputError, match=r"hub.checkpoints.vgg19-dcbb9e9d\.pth"):
        PerceptualLoss()
    with pytest.raises(InputError, match="not found"):
        PerceptualLoss(tmp_path / "missing.pth")
    _, state = _torchvision_vgg19_state()
    default_vgg19_path().parent.mkdir(parents=True)
    torch.save(state, default_vgg19_path())
    loaded = PerceptualLoss(layer_weights={"conv2_1": 1.0})
    torch.testing.assert_close(loaded.conv2_1_weight, state["features.5.weight"])
    assert not hasattr(loaded, "conv2_2_weight")  # only the layers up to the deepest used
    del state["features.34.weight"]
    torch.save(state, tmp_path / "cut.pth")
    with pytest.raises(InputError, match=r"features\.34\.weight"):
        PerceptualLoss(tmp_path / "cut.pth")
    random = PerceptualLoss(pretrained=False)
    other = PerceptualLoss(pretrained=False)
    assert torch.equal(random.conv5_4_weight, other.conv5_4_weight)  # seeded, no global RNG
    assert random(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16)).item() == 0.0
    with pytest.raises(ValueError, match="layer_weights"):
        PerceptualLoss(pretrained=False, layer_weights={"conv6_1": 1.0})


# ---------------------------------------------------------------------------- fusion


class Pair(nn.Module):
    def __init__(self, a: list[float], b: list[float]) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a, dtype=torch.float64))
        self.b = nn.Parameter(torch.tensor(b, dtype=torch.float64))
        self.register_buffer("count", torch.tensor([float(a[0])]))


def flat(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def test_fusion_paper_rule_on_hand_made_weights():
    # W_G = (1, 0, 0, 0), W_B = (1, 1, 0, 0): cosine 1/sqrt(2)
    general, blur = Pair([1.0, 0.0], [0.0, 0.0]), Pair([1.0, 1.0], [0.0, 0.0])
    lam = cross_branch_fusion(general, blur, lambda0=0.9)
    assert lam == pytest.approx(0.9 + 0.1 * (1 / math.sqrt(2)) / 2, abs=1e-15)
    torch.testing.assert_close(
        flat(general), torch.tensor([1.0, 1 - lam, 0, 0], dtype=torch.float64)
    )
    torch.testing.assert_close(flat(blur), torch.tensor([1.0, lam, 0, 0], dtype=torch.float64))
    assert general.count.item() == 1.0 and blur.count.item() == 1.0  # buffers untouched


def test_fusion_keeps_sum_and_scales_difference():
    torch.manual_seed(0)
    general = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Linear(4, 5)).double()
    blur = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Linear(4, 5)).double()
    g0, b0 = flat(general), flat(blur)
    lam = cross_branch_fusion(general, blur)
    cosine = (g0 @ b0 / (g0.norm() * b0.norm())).item()
    assert lam == pytest.approx(0.99 + 0.01 * cosine / 2, abs=1e-14)
    torch.testing.assert_close(flat(general) + flat(blur), g0 + b0, rtol=0, atol=1e-14)
    torch.testing.assert_close(
        flat(general) - flat(blur), (2 * lam - 1) * (g0 - b0), rtol=0, atol=1e-14
    )


def test_fusion_released_femasr_rule_and_frozen_parameters():
    # per-tensor cosines: a: 1 (parallel), b: -1 (opposite) -> mean 0; concatenated: 0.6
    general, blur = Pair([1.0, 0.0], [3.0, 0.0]), Pair([2.0, 0.0], [-1.0, 0.0])
    g0, b0 = flat(general), flat(blur)
    lam = cross_branch_fusion(general, blur, lambda0=0.8, variant="released_femasr")
    assert lam == pytest.approx(0.8, abs=1e-15)
    torch.testing.assert_close(flat(general), 0.8 * g0 + 0.2 * b0)
    paper = cross_branch_fusion(Pair([1.0, 0.0], [3.0, 0.0]), Pair([2.0, 0.0], [-1.0, 0.0]), 0.8)
    assert paper == pytest.approx(0.8 + 0.2 * (-1 / math.sqrt(50)) / 2, abs=1e-15)
    # frozen parameters are skipped by default; trainable_only=False mixes them (released)
    general, blur = Pair([1.0, 0.0], [3.0, 0.0]), Pair([2.0, 0.0], [-1.0, 0.0])
    general.b.requires_grad_(False), blur.b.requires_grad_(False)
    lam = cross_branch_fusion(general, blur, lambda0=0.8, variant="released_femasr")
    assert lam == pytest.approx(1.0) and general.b[0].item() == 3.0
    lam = cross_branch_fusion(general, blur, 0.8, "released_femasr", trainable_only=False)
    assert lam == pytest.approx(0.8) and general.b[0].item() == pytest.approx(0.8 * 3 - 0.2)
    blur.b.requires_grad_(True)
    with pytest.raises(ValueError, match="trainable in one branch"):
        cross_branch_fusion(general, blur)
    with pytest.raises(ValueError, match="same network"):
        cross_branch_fusion(general, nn.Linear(2, 2))
    with pytest.raises(ValueError, match="variant"):
        cross_branch_fusion(general, general, variant="mean")  # type: ignore[arg-type]


def test_fusion_released_esrgan_is_a_constant_mix():
    # ParallelNet_ncb.branch_weight_cross: lam = 0.999 whatever the branches, no cosine
    general, blur = Pair([1.0, 0.0], [0.0, 0.0]), Pair([0.0, 2.0], [0.0, 0.0])
    expected_g = [[0.999, 0.002], [0.998002, 0.003996]]
    expected_b = [[0.001, 1.998], [0.001998, 1.996004]]
    for g_hand, b_hand in zip(expected_g, expected_b, strict=True):
        assert cross_branch_fusion(general, blur, variant="released_esrgan") == 0.999
        torch.testing.assert_close(general.a, torch.tensor(g_hand, dtype=torch.float64))
        torch.testing.assert_close(blur.a, torch.tensor(b_hand, dtype=torch.float64))
    # the third step: the sum (1, 2) kept, the difference (1, -2) scaled by 0.998^3
    assert cross_branch_fusion(general, blur, 0.999, "released_esrgan") == 0.999
    torch.testing.assert_close(
        general.a, torch.tensor([1 + 0.998**3, 2 - 2 * 0.998**3], dtype=torch.float64) / 2
    )
    assert not general.b.any() and general.count.item() == 1.0  # zeros stay; buffers untouched
    # parallel or opposite branches: the same lam (no cosine); an explicit lambda0 is used
    for other in ([2.0, 0.0], [-1.0, 0.0]):
        lam = cross_branch_fusion(
            Pair([1.0, 0.0], [1.0, 1.0]), Pair(other, other), None, "released_esrgan"
        )
        assert lam == 0.999
    assert (
        cross_branch_fusion(Pair([1.0], [1.0]), Pair([3.0], [0.0]), 0.9, "released_esrgan") == 0.9
    )


def test_fusion_default_lambda0_per_variant():
    assert dict(fusion.FUSION_LAMBDA0) == {
        "paper": 0.99,
        "released_esrgan": 0.999,
        "released_femasr": 0.995,
    }
    general, blur = Pair([1.0, 0.0], [3.0, 0.0]), Pair([2.0, 0.0], [-1.0, 0.0])
    # per-tensor cosines 1 and -1: mean 0, so lam = lam0 = 0.995
    assert cross_branch_fusion(general, blur, variant="released_femasr") == pytest.approx(0.995)
    assert CrossBranchFusion(variant="released_esrgan").lambda0 == 0.999
    assert CrossBranchFusion().lambda0 == 0.99
    with pytest.raises(ValueError, match="lambda0"):
        CrossBranchFusion(lambda0=1.5)


def test_fusion_released_is_a_deprecated_alias_of_released_femasr(caplog):
    general, blur = Pair([1.0, 0.0], [3.0, 0.0]), Pair([2.0, 0.5], [-1.0, 0.0])
    twin_g, twin_b = copy.deepcopy(general), copy.deepcopy(blur)
    with pytest.warns(DeprecationWarning, match="'released_femasr'"):
        lam = cross_branch_fusion(general, blur, 0.8, "released")  # type: ignore[arg-type]
    assert lam == cross_branch_fusion(twin_g, twin_b, 0.8, "released_femasr")
    assert torch.equal(flat(general), flat(twin_g)) and torch.equal(flat(blur), flat(twin_b))
    with pytest.warns(DeprecationWarning, match="deprecated"):
        callback = CrossBranchFusion(variant="released")  # type: ignore[arg-type]
    assert callback.variant == "released_femasr" and callback.lambda0 == 0.995
    assert "deprecated" in caplog.text  # also logged: Hydra users see it


def test_merged_generator_is_the_released_combinet():
    torch.manual_seed(0)
    system = _gan_system(PBaSRTask)
    with torch.no_grad():
        for param in system.blur.parameters():
            param.add_(torch.randn_like(param))
    assert not list(system.general.buffers())  # RRDBNet: parameters only, as combinet mixes
    merged = dict(system.merged_generator().named_parameters())
    blur = dict(system.blur.named_parameters())
    for name, g in system.general.named_parameters():
        torch.testing.assert_close(merged[name], 0.5 * g + 0.5 * blur[name])


# ---------------------------------------------------------------------------- configs


def test_pbasr_paper_experiment_config(make_cfg):
    from hydra.utils import instantiate

    cfg = make_cfg("train", ["experiment=reblursr_pbasr"], tiny=False)
    assert cfg.model.gan_kind == "hinge" and cfg.model.blur_gan_region == "all"
    assert cfg.model.anchor_ckpt is None and cfg.model.anchor_discriminator_ckpt is None
    callback = instantiate(cfg.callbacks.cross_branch_fusion)
    assert (callback.variant, callback.lambda0, callback.every_n_steps) == (
        "released_esrgan",
        0.999,
        20,
    )
    small = [
        "model.perceptual=null",
        "model.net.num_features=8",
        "model.net.num_blocks=1",
        "model.net.growth_channels=4",
        "model.discriminator.num_features=8",
        "model.blur_discriminator.num_features=8",
    ]
    system = instantiate(make_cfg("train", ["experiment=reblursr_pbasr", *small], tiny=False).model)
    assert isinstance(system, PBaSRTask) and system.gan_loss.kind == "hinge"
    assert system.blur_gan_region == "all"
    # both anchors are options of the model (null: random), and the experiment says where
    # Real-ESRGAN's x4plus generator and discriminator come from
    for model in ("pbasr", "gan_sr"):
        model_cfg = make_cfg("train", [f"model={model}"], tiny=False).model
        assert model_cfg.anchor_ckpt is None and model_cfg.anchor_discriminator_ckpt is None
        assert (model_cfg.gan_kind, model_cfg.blur_gan_region) == ("vanilla", "blurred")
    text = (Path(CONFIG_DIR) / "experiment" / "reblursr_pbasr.yaml").read_text()
    assert "model.anchor_ckpt=/weights/RealESRGAN_x4plus.pth" in text
    assert "model.anchor_discriminator_ckpt=/weights/RealESRGAN_x4plus_netD.pth" in text


class TwoBranches(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.general, self.blur = nn.Linear(2, 1), nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        (x,) = batch
        return self.general(x).pow(2).mean() + (self.blur(x) - 1).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


class TwoBranchesManual(TwoBranches):
    """One optimizer per branch, stepped by hand: ``global_step`` grows by 2 per batch."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        (x,) = batch
        for optimizer, loss in zip(
            self.optimizers(), (self.general(x).pow(2).mean(), (self.blur(x) - 1).pow(2).mean())
        ):
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()

    def configure_optimizers(self):
        return [torch.optim.SGD(b.parameters(), lr=0.05) for b in (self.general, self.blur)]


class Recorder(Logger):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[int, dict[str, float]]] = []

    name, version = "recorder", 0

    def log_metrics(self, metrics, step=None):
        self.rows.append((step, dict(metrics)))

    def log_hyperparams(self, params, *args, **kwargs):
        pass


def make_trainer(callback: CrossBranchFusion, max_steps: int) -> tuple[L.Trainer, Recorder]:
    recorder = Recorder()
    trainer = L.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=recorder,
        log_every_n_steps=1,
        callbacks=[callback],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return trainer, recorder


def fit(trainer: L.Trainer, module: L.LightningModule) -> None:
    torch.manual_seed(0)
    trainer.fit(module, DataLoader(TensorDataset(torch.randn(64, 2)), batch_size=4))


def test_fusion_callback_fires_every_k_steps(monkeypatch):
    calls: list[tuple[int, float]] = []
    original = fusion.cross_branch_fusion

    def counting(general, blur, *args, **kwargs):
        g, b = flat(general).double(), flat(blur).double()
        lam = original(general, blur, *args, **kwargs)
        assert lam == pytest.approx(0.99 + 0.01 * (g @ b / (g.norm() * b.norm())).item() / 2)
        calls.append((trainer.global_step, lam))
        return lam

    monkeypatch.setattr(fusion, "cross_branch_fusion", counting)
    callback = CrossBranchFusion(every_n_steps=20)
    trainer, recorder = make_trainer(callback, max_steps=41)
    fit(trainer, TwoBranches())
    assert [step for step, _ in calls] == [20, 40] and callback.iterations == 41
    logged = {
        step: m["train/fusion_lambda"] for step, m in recorder.rows if "train/fusion_lambda" in m
    }
    lam20, lam40 = (lam for _, lam in calls)
    assert lam20 != lam40
    assert min(logged) == 19 and logged[19] == pytest.approx(lam20)  # logger steps count from 0
    assert logged[38] == pytest.approx(lam20) and logged[39] == pytest.approx(lam40)
    assert callback.state_dict() == {"iterations": 41, "last_lambda": lam40}


def test_fusion_callback_counts_iterations_not_optimizer_steps(monkeypatch):
    steps: list[int] = []
    original = fusion.cross_branch_fusion

    def counting(*args, **kwargs):
        steps.append(trainer.global_step)
        return original(*args, **kwargs)

    monkeypatch.setattr(fusion, "cross_branch_fusion", counting)
    callback = CrossBranchFusion(every_n_steps=5, variant="released_femasr", lambda0=0.995)
    trainer, _ = make_trainer(callback, max_steps=22)
    fit(trainer, TwoBranchesManual())
    assert steps == [10, 20] and callback.iterations == 11
    with pytest.raises(AttributeError, match="general_attr"):
        fit(make_trainer(CrossBranchFusion(general_attr="net.general"), 1)[0], TwoBranches())
