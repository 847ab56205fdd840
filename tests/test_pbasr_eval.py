"""PBaSR's evaluation: LPIPS and DISTS by region from local weight files only, and the
general and blur test sets as separate test groups."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import piq
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision.models.vgg import cfgs, make_layers

from svblur.data import CombinedDataModule
from svblur.errors import InputError
from svblur.experiments.training import train
from svblur.metrics import RegionMetrics, local_perceptual_metrics, region_scores
from svblur.models import RRDBNet, UNetDiscriminatorSN
from svblur.systems import GANSRTask

from .test_pbasr_app import TINY_PBASR

torch.set_num_threads(1)

#: Channels of the VGG16 layers that LPIPS and DISTS read (DISTS adds the image's 3).
VGG16_CHANNELS = (64, 128, 256, 512, 512)
#: Weight files piq's LPIPS and DISTS load (stand-ins written by the fixture).
WEIGHT_FILES = ("lpips_weights.pt", "dists_weights.pt", "vgg16-397923af.pth")


def _random_vgg16_features(seed: int) -> nn.Sequential:
    """torchvision's VGG16 feature layers with He-normal weights from ``seed``."""
    features = make_layers(cfgs["D"])
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in features.modules():
            if isinstance(layer, nn.Conv2d):
                std = math.sqrt(2.0 / (layer.in_channels * 9))
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * std)
                layer.bias.zero_()
    return features


@pytest.fixture
def weights_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A torch hub cache holding random stand-ins of LPIPS's and DISTS's layer weights
    (written here, in piq's formats) and of VGG16 (piq's ``vgg16`` call patched to random
    feature layers: the real file is 0.5 GB); nothing is downloaded."""
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    lpips = [torch.rand(1, c, 1, 1, generator=generator) for c in VGG16_CHANNELS]
    torch.save(lpips, folder / "lpips_weights.pt")
    alpha, beta = (torch.rand(1, 3 + sum(VGG16_CHANNELS), 1, 1, generator=generator) for _ in "ab")
    total = alpha.sum() + beta.sum()
    torch.save({"alpha": alpha / total, "beta": beta / total}, folder / "dists_weights.pt")
    (folder / "vgg16-397923af.pth").write_bytes(b"")
    monkeypatch.setattr(
        piq.perceptual,
        "vgg16",
        lambda pretrained, progress: SimpleNamespace(features=_random_vgg16_features(1)),
    )
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(folder.parent))
    return folder


@pytest.fixture
def empty_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "empty" / "checkpoints"
    folder.mkdir(parents=True)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(folder.parent))
    return folder


def _images(seed: int, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """An SR / HR pair on the 8-bit grid (so that quantizing changes nothing)."""
    generator = torch.Generator().manual_seed(seed)
    hr = torch.rand(shape, generator=generator)
    sr = (hr + 0.15 * torch.randn(shape, generator=generator)).clamp(0, 1)
    return (sr * 255).round() / 255, (hr * 255).round() / 255


def _piq_on_columns(
    network: nn.Module, name: str, x: torch.Tensor, y: torch.Tensor, start: float, stop: float
) -> torch.Tensor:
    """piq's own LPIPS / DISTS code on the columns ``[start, stop)`` (shares of the width)
    of every feature map: the score of the image region those columns stand for."""

    def cut(feature: torch.Tensor) -> torch.Tensor:
        width = feature.shape[-1]
        return feature[..., round(start * width) : round(stop * width)]

    with torch.no_grad():
        fx, fy = network.get_features(x), network.get_features(y)
        distances = network.compute_distance([cut(f) for f in fx], [cut(f) for f in fy])
        loss = torch.cat(
            [(d * w).mean([2, 3]) for d, w in zip(distances, network.weights)], dim=1
        ).sum(1)
    return 1 - loss if name == "dists" else loss


def test_region_lpips_and_dists_against_piq_on_the_region(weights_hub: Path) -> None:
    """``all`` is piq's score; a region of whole feature columns (the left third, 16 of 48
    pixels: 8, 4, 2, 1 columns down the layers) is piq's score of those columns."""
    networks = local_perceptual_metrics()
    assert sorted(networks) == ["dists", "lpips"]
    sr, hr = _images(0, (2, 3, 32, 48))
    mask = torch.zeros(2, 1, 32, 48)
    mask[..., :16] = 1
    scores = region_scores(sr, hr, mask, metrics=(), perceptual=networks)
    assert set(scores) == {f"{r}/{n}" for r in ("all", "blurred", "sharp") for n in networks}
    for name, network in networks.items():
        with torch.no_grad():
            whole = network(sr, hr)
        torch.testing.assert_close(scores[f"all/{name}"], whole)
        left = _piq_on_columns(network, name, sr, hr, 0, 1 / 3)
        right = _piq_on_columns(network, name, sr, hr, 1 / 3, 1)
        torch.testing.assert_close(scores[f"blurred/{name}"], left)
        torch.testing.assert_close(scores[f"sharp/{name}"], right)
        assert not torch.allclose(left, right)
    # LPIPS is a mean over positions: a third of every layer's positions in one region
    torch.testing.assert_close(
        scores["all/lpips"], scores["blurred/lpips"] / 3 + scores["sharp/lpips"] * 2 / 3
    )
    # errors only outside a region: it scores better than the other, but not perfect (its
    # feature positions see the errors through their receptive fields, wide here)
    only_right = torch.where(mask.bool(), hr, sr)
    scores = region_scores(only_right, hr, mask, metrics=(), perceptual=networks)
    for name in networks:
        assert (0 < scores[f"blurred/{name}"]).all()
        assert (scores[f"blurred/{name}"] < scores[f"sharp/{name}"]).all()


def test_empty_regions_and_images_without_a_mask(weights_hub: Path) -> None:
    networks = local_perceptual_metrics()
    sr, hr = _images(1, (2, 3, 32, 48))
    mask = torch.zeros(2, 1, 32, 48)
    mask[1, :, 8:20, 4:40] = 1  # image 0 has no blurred pixel
    scores = region_scores(sr, hr, mask, metrics=("psnr_y",), perceptual=networks)
    for name in networks:
        assert torch.isnan(scores[f"blurred/{name}"][0]) and scores[f"blurred/{name}"][1] > 0
        torch.testing.assert_close(scores[f"sharp/{name}"][0], scores[f"all/{name}"][0])
    unmasked = region_scores(sr, hr, None, metrics=("psnr_y",), perceptual=networks)
    assert sorted(unmasked) == ["all/dists", "all/lpips", "all/psnr_y"]
    for key, value in unmasked.items():
        torch.testing.assert_close(value, scores[key])
    metric = RegionMetrics(metrics=("psnr_y",), perceptual=networks)
    metric.update(sr, hr, None)
    result = metric.compute()
    assert math.isnan(result["blurred/lpips"]) and math.isnan(result["sharp/psnr_y"])
    assert result["all/lpips"].item() == pytest.approx(scores["all/lpips"].mean().item())
    metric.update(sr, hr, mask)  # the masked batch adds its regions
    assert metric.compute()["blurred/lpips"].item() == pytest.approx(scores["blurred/lpips"][1])


def test_dists_resizes_large_images_as_piq(weights_hub: Path) -> None:
    dists = local_perceptual_metrics(names=["dists"])["dists"]
    sr, hr = _images(2, (1, 3, 258, 260))
    scores = region_scores(
        sr, hr, torch.ones(1, 1, 258, 260), metrics=(), perceptual={"dists": dists}
    )
    with torch.no_grad():
        torch.testing.assert_close(scores["all/dists"], dists(sr, hr))
    torch.testing.assert_close(scores["blurred/dists"], scores["all/dists"])


# ------------------------------------------------------------- GAN systems: which metrics
def _tiny_gan(**kwargs) -> GANSRTask:
    return GANSRTask(
        RRDBNet(num_features=8, num_blocks=1, growth_channels=4),
        UNetDiscriminatorSN(num_features=8),
        torch.optim.Adam,
        torch.optim.Adam,
        eval_metrics=("psnr_y",),
        **kwargs,
    )


def _logged_names(system: GANSRTask) -> list[str]:
    return system.metrics["test"]["sr"].keys


def test_missing_weights_skip_with_one_line_unless_asked_for(
    empty_hub: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="svblur.metrics.regions"):
        system = _tiny_gan()
    assert _logged_names(system) == ["all/psnr_y", "blurred/psnr_y", "sharp/psnr_y"]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "LPIPS, DISTS skipped" in lines[0]
    assert all(name in lines[0] for name in WEIGHT_FILES) and str(empty_hub) in lines[0]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="svblur.metrics.regions"):
        _tiny_gan(perceptual_metrics=[])
    assert not caplog.records
    mine = empty_hub.parent / "mine"
    with pytest.raises(InputError, match="LPIPS lacks lpips_weights.pt") as info:
        _tiny_gan(perceptual_metrics=["lpips"], perceptual_weights_dir=str(mine))
    assert str(mine) in str(info.value) and "does not download" in str(info.value)
    with pytest.raises(ValueError, match=r"perceptual_metrics=\['lpips'\]"):
        GANSRTask(
            RRDBNet(num_features=8, num_blocks=1, growth_channels=4),
            UNetDiscriminatorSN(num_features=8),
            torch.optim.Adam,
            torch.optim.Adam,
            eval_metrics=("psnr_y", "lpips"),
            perceptual_metrics=[],
        )


def test_found_weights_add_lpips_and_dists_by_region(weights_hub: Path) -> None:
    system = _tiny_gan(perceptual_weights_dir=str(weights_hub))
    names = _logged_names(system)
    assert {"all/lpips", "blurred/lpips", "sharp/dists"} <= set(names)
    # the networks stay out of the checkpoint
    assert {key.split(".")[0] for key in system.state_dict()} == {"net", "discriminator"}
    assert _logged_names(_tiny_gan(perceptual_metrics=["dists"])) == [
        *(f"{r}/psnr_y" for r in ("all", "blurred", "sharp")),
        *(f"{r}/dists" for r in ("all", "blurred", "sharp")),
    ]


# ------------------------------------------------------------- test groups of the data
class Split(L.LightningDataModule):
    """A stand-in data module: tensors of one value per split, optionally test groups."""

    def __init__(self, value: float, groups: list[str] | None = None) -> None:
        super().__init__()
        self.value = value
        if groups is not None:
            self.test_group_names = groups

    def _loader(self, offset: float) -> DataLoader:
        return DataLoader(TensorDataset(torch.full((2, 1), self.value + offset)))

    def val_dataloader(self) -> DataLoader:
        return self._loader(0.5)

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        groups = getattr(self, "test_group_names", None)
        if groups:
            return [self._loader(i + 1) for i in range(len(groups))]
        return self._loader(0)


def _first_values(loaders: list[DataLoader]) -> list[float]:
    return [next(iter(loader))[0][0, 0].item() for loader in loaders]


def test_combined_test_groups_and_loaders() -> None:
    both = CombinedDataModule(Split(0.0), Split(10.0))
    assert both.test_group_names == ["general", "blur"]
    assert _first_values(both.test_dataloader()) == [0.0, 10.0]
    assert next(iter(both.val_dataloader()))[0][0, 0].item() == 10.5  # eval_on=blur
    general_val = CombinedDataModule(Split(0.0), Split(10.0), eval_on="general")
    assert next(iter(general_val.val_dataloader()))[0][0, 0].item() == 0.5
    assert general_val.test_group_names == ["general", "blur"]  # eval_on: validation only
    reblursr = CombinedDataModule(Split(0.0), Split(10.0, ["defocus", "motion"]))
    assert reblursr.test_group_names == ["general", "defocus", "motion"]
    assert _first_values(reblursr.test_dataloader()) == [0.0, 11.0, 12.0]
    only_blur = CombinedDataModule(Split(0.0), Split(10.0), test_on=["blur"])
    assert only_blur.test_group_names == ["blur"]
    assert _first_values(only_blur.test_dataloader()) == [10.0]
    with pytest.raises(ValueError, match="repeat"):
        CombinedDataModule(Split(0.0, ["a", "b"]), Split(10.0, ["b"]))
    with pytest.raises(ValueError, match="test_on"):
        CombinedDataModule(Split(0.0), Split(10.0), test_on=["sharp"])
    with pytest.raises(ValueError, match="eval_on"):
        CombinedDataModule(Split(0.0), Split(10.0), eval_on="test")


def test_pbasr_tests_general_and_blur_groups_with_learned_metrics(make_cfg, weights_hub):
    """A short PBaSR run on the built-in data logs each test group apart (the general set
    on the whole image only), LPIPS and DISTS by region from the hub cache's files, and
    the groups' mean."""
    tiny = [o for o in TINY_PBASR if not o.startswith("callbacks.")]
    cfg = make_cfg("train", [*tiny, "debug=fdr"], tiny=False)
    metrics = train(cfg)
    for name in ("psnr_y", "ssim_y", "lpips", "dists"):
        assert math.isfinite(metrics[f"test/general/sr/all/{name}"]), sorted(metrics)
        assert math.isnan(metrics[f"test/general/sr/blurred/{name}"])
        for region in ("all", "blurred", "sharp"):
            assert math.isfinite(metrics[f"test/blur/sr/{region}/{name}"])
        # the general set has no regions: the mean over groups is the blur set's there
        assert metrics[f"test/sr/sharp/{name}"] == pytest.approx(
            metrics[f"test/blur/sr/sharp/{name}"]
        )
        assert metrics[f"test/sr/all/{name}"] == pytest.approx(
            (metrics[f"test/general/sr/all/{name}"] + metrics[f"test/blur/sr/all/{name}"]) / 2
        )
