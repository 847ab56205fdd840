"""ReBlurSR reader, data set, data module and config; metrics by region (blurred / sharp)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import piq
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from skimage.metrics import structural_similarity

from svblur.conf import config_dir
from svblur.data.reblursr import (
    ReBlurSRDataError,
    ReBlurSRDataModule,
    ReBlurSRDataset,
    ReBlurSRFolder,
    blur_mask_from_released,
)
from svblur.data.rgbd import RGBDSample
from svblur.degradation.pipeline import Bicubic, SamplePipeline
from svblur.errors import InputError
from svblur.io import read_image
from svblur.metrics import psnr_y, rgb_to_y, ssim_y
from svblur.metrics import regions as regions_module
from svblur.metrics.regions import (
    RegionMetrics,
    local_perceptual_metrics,
    perceptual_weight_files,
    region_scores,
)

HR = (48, 64)  # (H, W)
TRAIN = {"defocus": ("d1", "d2", "d3"), "motion": ("m1", "m2")}
TEST = {"defocus": ("t1", "t2"), "motion": ("t3",)}


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(path), array)


def _released_mask(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A released mask: a random rectangle sharp (255) on a blurred (0) background."""
    mask = np.zeros(shape, np.uint8)
    top, left = rng.integers(0, shape[0] // 2), rng.integers(0, shape[1] // 2)
    mask[top : top + shape[0] // 2, left : left + shape[1] // 2] = 255
    return mask


def make_reblursr(root: Path, encode_mask: bool = False) -> Path:
    """``root/{train,valid}/{defocus,motion}/{HR,mask}`` (+ ``valid/*/LR/X4``).

    With ``encode_mask`` every photo is white where its mask is sharp and black where it
    is blurred, so a crop's alignment with its mask can be read off the pixels.
    """
    rng = np.random.default_rng(0)
    for split, tree in (("train", TRAIN), ("valid", TEST)):
        for blur_type, stems in tree.items():
            base = root / split / blur_type
            for stem in stems:
                mask = _released_mask(rng, HR)
                if encode_mask:
                    image = np.repeat(mask[..., None], 3, axis=2)
                else:
                    image = rng.integers(0, 256, (*HR, 3), dtype=np.uint8)
                _write(base / "HR" / f"{stem}.png", image)
                _write(base / "mask" / f"{stem}.png", mask)
                if split == "valid":
                    lr = rng.integers(0, 256, (HR[0] // 4, HR[1] // 4, 3), dtype=np.uint8)
                    _write(base / "LR" / "X4" / f"{stem}.png", lr)
    return root


@pytest.fixture(scope="module")
def reblursr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_reblursr(tmp_path_factory.mktemp("reblursr"))


# --------------------------------------------------------------------------- reader
def test_folder_lists_and_converts_masks(reblursr: Path) -> None:
    train = ReBlurSRFolder(reblursr, "train")
    assert train.names == ["defocus/d1", "defocus/d2", "defocus/d3", "motion/m1", "motion/m2"]
    assert train.indices_of("motion") == [3, 4] and not train.has_lr
    assert all(item.size == HR for item in train.items)
    sample = train.load(1)
    assert isinstance(sample, RGBDSample) and sample.depth is None and sample.seg is None
    image, mask = train.load_with_mask(1)
    np.testing.assert_array_equal(image, read_image(reblursr / "train/defocus/HR/d2.png"))
    released = cv2.imread(str(reblursr / "train/defocus/mask/d2.png"), cv2.IMREAD_UNCHANGED)
    assert mask.dtype == np.float32 and mask.shape == HR
    # released 0 (blurred) -> 1, released 255 (sharp) -> 0
    np.testing.assert_array_equal(mask, (released == 0).astype(np.float32))
    assert 0 < mask.mean() < 1
    test = ReBlurSRFolder(reblursr, "test", lr_folder="LR/X4")
    assert test.split_folder == reblursr / "valid" and len(test) == 3 and test.has_lr
    assert test.load_lr(2).shape == (HR[0] // 4, HR[1] // 4, 3)
    flat = ReBlurSRFolder(reblursr / "train", "train", blur_types=None, split_folder="motion")
    assert flat.names == ["m1", "m2"]


def test_missing_mask_and_orphan_mask_named(tmp_path: Path) -> None:
    root = make_reblursr(tmp_path)
    (root / "train/defocus/mask/d2.png").unlink()
    orphan = root / "train/motion/mask/m9.png"
    shutil.copy(root / "train/motion/mask/m1.png", orphan)
    with pytest.raises(ReBlurSRDataError) as info:
        ReBlurSRFolder(root, "train")
    message = str(info.value)
    assert f"d2.png in {root / 'train/defocus/HR'} without a file in " in message
    assert f"m9.png in {root / 'train/motion/mask'} without an image in" in message
    assert len(info.value.problems) == 2 and isinstance(info.value, InputError)


def test_size_mismatch_and_unreadable_named(tmp_path: Path) -> None:
    root = make_reblursr(tmp_path)
    small = root / "train/defocus/mask/d3.png"
    _write(small, np.zeros((HR[0], HR[1] - 8), np.uint8))
    broken = root / "train/motion/HR/m2.png"
    broken.write_bytes(broken.read_bytes()[:100])
    bad_lr = root / "valid/motion/LR/X4/t3.png"
    _write(bad_lr, np.zeros((5, 16, 3), np.uint8))
    with pytest.raises(ReBlurSRDataError) as info:
        ReBlurSRFolder(root, "train")
    message = str(info.value)
    assert f"mask {small} is 56x48 (WxH) but its image" in message
    assert str(broken) in message and "truncated" in message
    with pytest.raises(ReBlurSRDataError, match=f"LR {bad_lr} is 16x5"):
        ReBlurSRFolder(root, "test", lr_folder="LR/X4")


def test_missing_folders_named(tmp_path: Path) -> None:
    root = make_reblursr(tmp_path)
    shutil.rmtree(root / "train/motion/mask")
    with pytest.raises(ReBlurSRDataError, match=f"missing folder {root / 'train/motion/mask'}"):
        ReBlurSRFolder(root, "train")
    with pytest.raises(ReBlurSRDataError, match=f"missing folder {root / 'valid/motion/LR/X2'}"):
        ReBlurSRFolder(root, "test", lr_folder="LR/X2", scale=2)
    unsplit = tmp_path / "release"
    (unsplit / "ALL_HR").mkdir(parents=True)
    with pytest.raises(ReBlurSRDataError, match="train_validation_split.py"):
        ReBlurSRFolder(unsplit, "test")


def test_mask_conversion_rules(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    released = np.array([[0, 255], [255, 0]], np.uint8)
    mask, binary = blur_mask_from_released(released)
    np.testing.assert_array_equal(mask, [[1, 0], [0, 1]])
    assert binary and mask.dtype == np.float32
    mask, binary = blur_mask_from_released(np.array([[0, 1]], np.uint8))  # 0 / 1 masks
    assert binary and mask.tolist() == [[1.0, 0.0]]
    mask, binary = blur_mask_from_released(np.array([[3, 127, 128, 250]], np.uint8))
    assert not binary and mask.tolist() == [[1.0, 1.0, 0.0, 0.0]]
    colour = np.repeat(released[..., None], 3, axis=2)
    assert blur_mask_from_released(colour)[0].tolist() == [[1, 0], [0, 1]]
    wide = released.astype(np.uint16) * 257
    assert blur_mask_from_released(wide)[0].tolist() == [[1, 0], [0, 1]]

    root = make_reblursr(tmp_path)
    for stem in ("d1", "d2"):  # JPEG-like grey levels
        _write(root / f"train/defocus/mask/{stem}.png", np.full(HR, 200, np.uint8))
    folder = ReBlurSRFolder(root, "train")
    with caplog.at_level(logging.WARNING, logger="svblur.data.reblursr"):
        assert folder.load_mask(0).max() == 0 and folder.load_mask(1).max() == 0
    notes = [r for r in caplog.records if "not binary" in r.getMessage()]
    assert len(notes) == 1 and "d1.png" in notes[0].getMessage()


# --------------------------------------------------------------------------- data set
def test_crops_aligned_with_mask_and_bicubic_lr(tmp_path: Path) -> None:
    folder = ReBlurSRFolder(make_reblursr(tmp_path, encode_mask=True), "train")
    data = ReBlurSRDataset(folder, scale=4, crop_size=(16, 24), seed=1)
    flips = 0
    for index in range(len(data)):
        for _ in range(4):
            item = data[index]
            hr, mask = item["hr"], item["blur_mask"]
            assert hr.shape == (3, 16, 24) and mask.shape == (1, 16, 24)
            assert item["lr"].shape == (3, 4, 6) and item["name"] == folder.names[index]
            # the photo is white exactly where its mask says sharp
            torch.testing.assert_close(hr[0], 1.0 - mask[0], rtol=0, atol=0)
            lr = Bicubic(4)(hr.permute(1, 2, 0).numpy())
            np.testing.assert_array_equal(item["lr"].permute(1, 2, 0).numpy(), lr)
            full_mask = folder.load_mask(index)
            crop = mask[0].numpy()
            direct, mirrored = _positions(crop, full_mask), _positions(crop[:, ::-1], full_mask)
            assert direct or mirrored, "the mask crop is not a window of the mask"
            flips += not direct
    assert flips > 0  # random flips happen


def _positions(patch: np.ndarray, full: np.ndarray) -> set[tuple[int, int]]:
    h, w = patch.shape
    return {
        (top, left)
        for top in range(full.shape[0] - h + 1)
        for left in range(full.shape[1] - w + 1)
        if np.array_equal(full[top : top + h, left : left + w], patch)
    }


def test_fixed_whole_and_stored_lr(reblursr: Path) -> None:
    test = ReBlurSRFolder(reblursr, "test", lr_folder="LR/X4")
    stored = ReBlurSRDataset(test, crop_size=None, fixed=True)
    item = stored[2]
    np.testing.assert_array_equal(
        item["lr"].permute(1, 2, 0).numpy(), read_image(reblursr / "valid/motion/LR/X4/t3.png")
    )
    assert item["hr"].shape == (3, *HR) and item["blur_mask"].shape == (1, *HR)
    made = ReBlurSRDataset(test, crop_size=None, fixed=True, use_stored_lr=False)
    assert not torch.equal(made[2]["lr"], item["lr"])
    noisy = SamplePipeline(None, noise=[lambda lr, rng: lr + rng.normal(0, 0.1, lr.shape)])
    again = ReBlurSRDataset(test, crop_size=16, fixed=True, degradation=noisy, use_stored_lr=False)
    torch.testing.assert_close(again[0]["lr"], again[0]["lr"])  # fixed draws repeat
    cropped = ReBlurSRDataset(test, crop_size=16, fixed=True)[0]
    lr_full = read_image(reblursr / "valid/defocus/LR/X4/t1.png")
    top, left = (HR[0] // 4 - 4) // 2, (HR[1] // 4 - 4) // 2
    np.testing.assert_array_equal(
        cropped["lr"].permute(1, 2, 0).numpy(), lr_full[top : top + 4, left : left + 4]
    )
    image, _ = test.load_with_mask(0)
    np.testing.assert_array_equal(
        cropped["hr"].permute(1, 2, 0).numpy(),
        image[top * 4 : top * 4 + 16, left * 4 : left * 4 + 16],
    )
    with pytest.raises(ValueError, match="divisible by scale"):
        ReBlurSRDataset(test, crop_size=18)


def test_blur_step_not_applied(reblursr: Path, caplog: pytest.LogCaptureFixture) -> None:
    from svblur.data import reblursr as module
    from svblur.degradation.pipeline import PartialBlur

    module._noted_blur_steps.clear()
    folder = ReBlurSRFolder(reblursr, "train")
    with caplog.at_level(logging.INFO, logger="svblur.data.reblursr"):
        data = ReBlurSRDataset(
            folder, crop_size=16, fixed=True, degradation=SamplePipeline(PartialBlur())
        )
        ReBlurSRDataset(folder, crop_size=16, degradation=SamplePipeline(PartialBlur()))
    assert (
        sum("blur step (PartialBlur) is not applied" in r.getMessage() for r in caplog.records) == 1
    )
    item = data[0]
    np.testing.assert_array_equal(
        item["lr"].permute(1, 2, 0).numpy(), Bicubic(4)(item["hr"].permute(1, 2, 0).numpy())
    )


def test_data_module(reblursr: Path) -> None:
    train, test = (
        ReBlurSRFolder(reblursr, "train"),
        ReBlurSRFolder(reblursr, "test", lr_folder="LR/X4"),
    )
    module = ReBlurSRDataModule(
        train, test, crop_size=16, val_crop_size=32, val_fraction=0.4, batch_size=2, seed=0
    )
    assert module.test_group_names == ["defocus", "motion"]
    train_names, val_names = module.datasets["train"].names, module.datasets["val"].names
    assert len(train_names) == 3 and len(val_names) == 2 and not set(train_names) & set(val_names)
    batch = next(iter(module.train_dataloader()))
    assert batch["lr"].shape == (2, 3, 4, 4) and batch["hr"].shape == (2, 3, 16, 16)
    assert batch["blur_mask"].shape == (2, 1, 16, 16) and len(batch["name"]) == 2
    val = next(iter(module.val_dataloader()))
    assert val["hr"].shape == (1, 3, 32, 32)
    loaders = module.test_dataloader()
    assert [len(loader.dataset) for loader in loaders] == [2, 1]
    whole = next(iter(loaders[1]))
    assert whole["hr"].shape == (1, 3, *HR) and whole["name"] == ["motion/t3"]
    single = ReBlurSRDataModule(train, test, crop_size=16, test_by_blur_type=False)
    assert single.test_group_names == [] and len(single.test_dataloader().dataset) == 3
    with pytest.raises(InputError, match="lower data.crop_size"):
        ReBlurSRDataModule(train, crop_size=64)


def test_config_instantiates(reblursr: Path) -> None:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=config_dir()):
            cfg = compose(
                config_name="train",
                overrides=[
                    "data=reblursr",
                    f"data.root={reblursr}",
                    "data.crop_size=[16,16]",
                    "data.val_crop_size=[32,32]",
                    "data.num_workers=0",
                    "data.pin_memory=false",
                ],
            )
    finally:
        GlobalHydra.instance().clear()
    assert cfg.data.test_source.lr_folder == "LR/X4"
    module = instantiate(cfg.data, _convert_="all")
    assert isinstance(module, ReBlurSRDataModule) and module.num_classes == 8
    assert module.test_group_names == ["defocus", "motion"]
    assert module.datasets["defocus"].stored_lr and not module.datasets["train"].stored_lr
    assert module.source_settings["root"] == str(reblursr)
    batch = next(iter(module.train_dataloader()))
    assert set(batch) == {"lr", "hr", "blur_mask", "name"}


# --------------------------------------------------------------------------- metrics
def _pair(seed: int, shape: tuple[int, ...] = (2, 3, 48, 56)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    hr = torch.randint(0, 256, shape, generator=g).float() / 255
    noise = torch.randn(shape, generator=g) * 0.08
    sr = ((hr + noise).clamp(0, 1) * 255).round() / 255
    return sr, hr


def _half_mask(shape: tuple[int, ...], columns: int = 24) -> torch.Tensor:
    mask = torch.zeros(shape[0], 1, *shape[-2:])
    mask[..., :columns] = 1.0
    return mask


def test_region_psnr_and_ssim_match_hand_computation() -> None:
    sr, hr = _pair(0)
    g = torch.Generator().manual_seed(1)
    mask = (torch.rand(2, 1, 48, 56, generator=g) < 0.4).float()
    scores = region_scores(sr, hr, mask, crop_border=4, metrics=("psnr_y", "ssim_y"))
    y_sr, y_hr = (
        rgb_to_y((x.double() * 255).round() / 255)[:, 0, 4:-4, 4:-4].numpy() for x in (sr, hr)
    )
    blurred = mask[:, 0, 4:-4, 4:-4].numpy() > 0.5
    for b in range(2):
        for region, pixels in (("blurred", blurred[b]), ("sharp", ~blurred[b])):
            mse = np.mean((y_sr[b][pixels] - y_hr[b][pixels]) ** 2)
            expected = 10 * np.log10(255.0**2 / mse)
            assert scores[f"{region}/psnr_y"][b].item() == pytest.approx(expected, rel=1e-12)
            # independent SSIM map (scikit-image, Gaussian 11 x 11, sigma 1.5); interior only
            _, ssim_map = structural_similarity(
                y_sr[b],
                y_hr[b],
                data_range=255,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                full=True,
            )
            inner = pixels[5:-5, 5:-5]
            expected = ssim_map[5:-5, 5:-5][inner].mean()
            assert scores[f"{region}/ssim_y"][b].item() == pytest.approx(expected, abs=1e-9)
    torch.testing.assert_close(scores["all/psnr_y"], psnr_y(sr, hr, 4))
    torch.testing.assert_close(scores["all/ssim_y"], ssim_y(sr, hr, 4))


def test_all_blurred_mask_equals_whole_image_and_sharp_is_nan() -> None:
    sr, hr = _pair(2)
    scores = region_scores(sr, hr, torch.ones(2, 1, 48, 56), crop_border=4)
    for name in ("psnr_y", "ssim_y", "gmsd", "vif", "vsi"):
        torch.testing.assert_close(scores[f"blurred/{name}"], scores[f"all/{name}"])
        assert torch.isnan(scores[f"sharp/{name}"]).all(), name
    empty = region_scores(sr, hr, torch.zeros(2, 48, 56), crop_border=4)  # (B, H, W) works
    assert torch.isnan(empty["blurred/gmsd"]).all() and torch.isnan(empty["blurred/psnr_y"]).all()
    torch.testing.assert_close(empty["sharp/vif"], empty["all/vif"])


def test_identical_images_are_perfect_in_both_regions() -> None:
    _, hr = _pair(3)
    scores = region_scores(hr, hr, _half_mask(hr.shape), crop_border=4)
    for region in ("all", "blurred", "sharp"):
        torch.testing.assert_close(scores[f"{region}/gmsd"], torch.zeros(2))
        torch.testing.assert_close(scores[f"{region}/vif"], torch.ones(2))
        torch.testing.assert_close(scores[f"{region}/vsi"], torch.ones(2))
        assert torch.isinf(scores[f"{region}/psnr_y"]).all()
        torch.testing.assert_close(scores[f"{region}/ssim_y"], torch.ones(2, dtype=torch.float64))


def test_piq_scores_and_reference_filled_regions() -> None:
    sr, hr = _pair(4)
    mask = _half_mask(sr.shape)
    scores = region_scores(sr, hr, mask, crop_border=4)
    blurred = mask.bool().expand_as(sr)
    for name, fn in (("gmsd", piq.gmsd), ("vif", piq.vif_p), ("vsi", piq.vsi)):
        torch.testing.assert_close(scores[f"all/{name}"], fn(sr, hr, reduction="none"))
        filled = torch.where(blurred, sr, hr)
        torch.testing.assert_close(scores[f"blurred/{name}"], fn(filled, hr, reduction="none"))
    # errors only in the sharp region: the blurred region scores perfect
    only_sharp = torch.where(blurred, hr, sr)
    scores = region_scores(only_sharp, hr, mask, crop_border=4)
    assert (
        torch.isinf(scores["blurred/psnr_y"]).all() and torch.isfinite(scores["sharp/psnr_y"]).all()
    )
    torch.testing.assert_close(scores["blurred/gmsd"], torch.zeros(2))
    assert (scores["sharp/gmsd"] > 0).all()
    torch.testing.assert_close(scores["sharp/gmsd"], scores["all/gmsd"])
    with pytest.raises(ValueError, match="unknown region metrics"):
        region_scores(sr, hr, mask, metrics=("lpips",))
    with pytest.raises(ValueError, match="blur_mask must be"):
        region_scores(sr, hr, mask[..., :-1])


def test_region_metrics_accumulate_and_skip_nan() -> None:
    sr, hr = _pair(5)
    masks = [_half_mask(sr.shape), torch.ones(2, 1, 48, 56)]
    metric = RegionMetrics(crop_border=4, metrics=("psnr_y", "gmsd"))
    per_image = {key: [] for key in metric.keys}
    for mask in masks:
        metric.update(sr, hr, mask)
        for key, values in region_scores(sr, hr, mask, 4, ("psnr_y", "gmsd")).items():
            per_image[key] += values.double().tolist()
    result = metric.compute()
    assert set(result) == set(metric.keys) and len(result) == 6
    for key, values in per_image.items():
        kept = [v for v in values if not np.isnan(v)]
        assert result[key].item() == pytest.approx(np.mean(kept), rel=1e-6), key
    # the all-ones masks have no sharp region: only the first batch counts there
    assert metric.count.tolist()[metric.keys.index("sharp/gmsd")] == 2
    metric.reset()
    metric.update(hr, hr, masks[0])
    assert metric.compute()["blurred/psnr_y"].item() == 100.0  # capped
    no_sharp = RegionMetrics(metrics=("gmsd",))
    no_sharp.update(sr, hr, masks[1])
    assert torch.isnan(no_sharp.compute()["sharp/gmsd"])


# ------------------------------------------------------------- LPIPS / DISTS, offline
@pytest.fixture
def empty_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    return hub


def test_perceptual_metrics_skipped_without_weights(
    empty_hub: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert perceptual_weight_files("lpips") == ("lpips_weights.pt", "vgg16-397923af.pth")
    with caplog.at_level(logging.INFO, logger="svblur.metrics.regions"):
        assert local_perceptual_metrics() == {}
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "LPIPS, DISTS skipped" in lines[0]
    assert "dists_weights.pt" in lines[0] and str(empty_hub / "checkpoints") in lines[0]
    with pytest.raises(InputError) as info:
        local_perceptual_metrics(empty_hub / "mine", names=["lpips"])
    message = str(info.value)
    assert "LPIPS lacks lpips_weights.pt" in message and "vgg16-397923af.pth" in message
    assert str(empty_hub / "mine") in message and "does not download" in message


def test_no_download_inside_offline_hub(empty_hub: Path) -> None:
    with regions_module._offline_hub({}):
        with pytest.raises(InputError, match="does not download weights: nothing.pt"):
            torch.hub.load_state_dict_from_url("https://example.invalid/nothing.pt")
    assert torch.hub.get_dir() == str(empty_hub)  # restored


def test_perceptual_metrics_built_from_local_files(
    empty_hub: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The build reads piq's and torchvision's files from the given folder (small stand-ins
    here; piq's real networks need the 0.5 GB VGG16 file)."""
    weights = tmp_path / "weights"
    weights.mkdir()
    torch.save([torch.ones(1)], weights / "lpips_weights.pt")
    (empty_hub / "checkpoints").joinpath("vgg16-397923af.pth").write_bytes(b"")
    torch.save({"w": torch.full((2,), 3.0)}, weights / "vgg16-397923af.pth")
    loaded = {}

    class FakeLPIPS(torch.nn.Module):
        _weights_url = piq.LPIPS._weights_url

        def __init__(self, reduction: str) -> None:
            super().__init__()
            from torchvision.models import VGG16_Weights

            loaded["own"] = torch.hub.load_state_dict_from_url(self._weights_url)
            loaded["vgg"] = VGG16_Weights.IMAGENET1K_V1.get_state_dict(check_hash=True)
            loaded["reduction"] = reduction

    monkeypatch.setattr(piq, "LPIPS", FakeLPIPS)
    built = local_perceptual_metrics(weights, names=["lpips"])
    assert isinstance(built["lpips"], FakeLPIPS) and not built["lpips"].training
    assert loaded["own"][0].item() == 1.0 and loaded["vgg"]["w"].tolist() == [3.0, 3.0]
    assert loaded["reduction"] == "none"


@pytest.mark.skipif(
    not all(
        (Path(torch.hub.get_dir()) / "checkpoints" / f).is_file()
        for f in ("lpips_weights.pt", "vgg16-397923af.pth")
    ),
    reason="LPIPS weights are not in the torch hub cache",
)
def test_real_lpips_when_cached() -> None:
    lpips = local_perceptual_metrics(names=["lpips"])["lpips"]
    sr, hr = _pair(6, (1, 3, 64, 64))
    scores = region_scores(hr, hr, _half_mask(hr.shape, 32), perceptual={"lpips": lpips})
    torch.testing.assert_close(scores["blurred/lpips"], torch.zeros(1), atol=1e-6, rtol=0)
    # errors in the blurred half only (region LPIPS: the spatial map averaged over a region)
    mask = _half_mask(hr.shape, 32)
    only_blurred = torch.where(mask.bool(), sr, hr)
    scores = region_scores(only_blurred, hr, mask, perceptual={"lpips": lpips})
    assert (scores["blurred/lpips"] > scores["sharp/lpips"]).all()
