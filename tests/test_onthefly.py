"""On-the-fly defocus from raw RGB-D sources: new cameras per draw, fixed eval cameras."""

from __future__ import annotations

from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import torch

from svblur.data.builders import invariant_masks, label_ids_to_train_ids
from svblur.data.onthefly import (
    CityscapesRGBD,
    NYUv2RGBD,
    OnTheFlyDefocusDataModule,
    OnTheFlyDefocusDataset,
    RGBDFolder,
    render_batch,
)
from svblur.degradation import imresize, render_uniform_blur

from .test_builders import make_cityscapes, make_nyuv2_mat

# 14 images: training split 1, 3, 4, 6 and 10 test images, so that each of the five test
# groups has floor(10 * 0.2) = 2 space-invariant images.
NUM_TEST = 10


@pytest.fixture(scope="module")
def nyu_raw(tmp_path_factory) -> dict:
    return make_nyuv2_mat(tmp_path_factory.mktemp("otf_nyu"), n=4 + NUM_TEST)


def make_folder(root: Path, n: int = 3) -> None:
    rng = np.random.default_rng(4)
    for sub in ("rgb", "depth", "semseg"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(
            str(root / "rgb" / f"{i}.png"), rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
        )
        depth = np.tile(np.linspace(1000, 4000, 40), (32, 1)).astype(np.uint16)
        depth[0, 0] = 0  # unknown
        cv2.imwrite(str(root / "depth" / f"{i}.png"), depth)
        cv2.imwrite(
            str(root / "semseg" / f"{i}.png"), rng.integers(0, 3, (32, 40)).astype(np.uint8)
        )


def test_sources_convert_labels(nyu_raw, tmp_path) -> None:
    nyu = NYUv2RGBD(nyu_raw["mat"], nyu_raw["npy"], "train")
    assert len(nyu) == 4 and len(NYUv2RGBD(nyu_raw["mat"], nyu_raw["npy"], "test")) == NUM_TEST
    sample = nyu.load(1)  # the second training image: NYU image 3 (MATLAB, 1-based)
    with h5py.File(nyu_raw["mat"]) as handle:  # MATLAB stores arrays transposed
        image = handle["images"][2].transpose(2, 1, 0)
        raw_labels = handle["labels"][2].T
    assert sample.image.dtype == np.float32
    np.testing.assert_array_equal(sample.image, image.astype(np.float32) / np.float32(255))
    classes = nyu_raw["table"][raw_labels]  # 0 = unlabelled, else 1..40
    np.testing.assert_array_equal(sample.seg, np.where(classes == 0, 255, classes - 1))
    assert (sample.seg[0] == 255).all()
    make_cityscapes(tmp_path / "cs", per_split=1)
    city = CityscapesRGBD(tmp_path / "cs", "val").load(0)
    stem = "aachen_000000_000019"
    bgr = cv2.imread(str(tmp_path / f"cs/leftImg8bit/val/aachen/{stem}_leftImg8bit.png"))
    np.testing.assert_array_equal(city.image, bgr[:, :, ::-1].astype(np.float32) / 255)
    ids = cv2.imread(str(tmp_path / f"cs/gtFine/val/aachen/{stem}_gtFine_labelIds.png"), -1)
    np.testing.assert_array_equal(city.seg, label_ids_to_train_ids(ids).astype(np.int64))
    stored = cv2.imread(str(tmp_path / f"cs/disparity/val/aachen/{stem}_disparity.png"), -1)
    assert np.isnan(city.depth[0, :5]).all() and (stored[0, :5] == 0).all()
    valid = stored > 0  # depth = baseline * fx / disparity, in mm
    np.testing.assert_allclose(city.depth[valid], 0.2 * 100.0 / ((stored[valid] - 1) / 256) * 1e3)
    make_folder(tmp_path / "f")
    folder = RGBDFolder(tmp_path / "f", depth_scale=1.0)
    assert len(folder) == 3 and folder.load(1).depth[0, 1] == int(1000 + 3000 / 39)
    (tmp_path / "f/depth/2.png").unlink()
    with pytest.raises(ValueError, match="missing depth for .*2.png"):
        RGBDFolder(tmp_path / "f")


def test_new_camera_every_draw_and_fixed_eval(nyu_raw) -> None:
    source = NYUv2RGBD(nyu_raw["mat"], nyu_raw["npy"], "train")
    torch.manual_seed(0)
    train = OnTheFlyDefocusDataset(source, (16, 20), max_coc=9.0, space_invariant_fraction=0.0)
    first, second = train[0], train[0]
    assert first["lr"].shape == (3, 4, 5) and first["blur"].shape == (1, 16, 20)
    assert first["seg"].shape == (16, 20) and first["depth"].shape == (1, 16, 20)
    assert not torch.equal(first["blur"], second["blur"])  # a new camera (and crop) per draw
    # The f-number is solved on the crop: its largest CoC is max_coc, sigma (9 - 1) / 4.
    for draw in (first, second):
        assert float(draw["blur"].max()) == pytest.approx((9.0 - 1) / 4, abs=1e-6)
        assert draw["blur"].unique().numel() > 1
    fixed = OnTheFlyDefocusDataset(
        source, None, max_coc=9.0, fixed=True, invariant=[True, False, False, False]
    )
    a, b = fixed[1], fixed[1]
    assert torch.equal(a["lr"], b["lr"]) and torch.equal(a["blur"], b["blur"])
    assert a["hr"].shape == (3, 32, 40) and a["blur"].unique().numel() > 1
    # Sample 0 is space-invariant: its one sigma (a CoC in [1, max_coc] on the 0.1 px grid)
    # is the Gaussian its LR image was made with.
    uniform = fixed[0]
    sigma = float(uniform["blur"][0, 0, 0])
    assert uniform["blur"].unique().numel() == 1 and 0 <= sigma <= (9.0 - 1) / 4
    assert (4 * sigma + 1) * 10 == pytest.approx(round((4 * sigma + 1) * 10), abs=1e-4)
    blurred, _ = render_uniform_blur(uniform["hr"].permute(1, 2, 0).numpy(), sigma, max_coc=9.0)
    expected = np.clip(imresize(blurred, 0.25), 0, 1).transpose(2, 0, 1)
    np.testing.assert_allclose(uniform["lr"].numpy(), expected, atol=1e-5)


def test_device_rendering_matches_loader_rendering(nyu_raw) -> None:
    source = NYUv2RGBD(nyu_raw["mat"], nyu_raw["npy"], "train")
    kwargs = {"max_coc": 9.0, "fixed": True, "invariant": [False, True, False, False]}
    loader = OnTheFlyDefocusDataset(source, (16, 20), **kwargs)
    device = OnTheFlyDefocusDataset(source, (16, 20), render_on="device", **kwargs)
    items = [device[i] for i in range(2)]
    batch = {k: torch.stack([item[k] for item in items]) for k in items[0]}
    device_name = "cuda" if torch.cuda.is_available() else "cpu"
    batch = render_batch({k: v.to(device_name) for k, v in batch.items()}, 9.0, 4)
    assert "camera" not in batch
    for i in range(2):
        expected = loader[i]
        torch.testing.assert_close(batch["blur"][i].cpu(), expected["blur"])
        torch.testing.assert_close(batch["lr"][i].cpu(), expected["lr"], atol=1e-4, rtol=0)


def test_datamodule_groups_and_device_hook(nyu_raw) -> None:
    train = NYUv2RGBD(nyu_raw["mat"], nyu_raw["npy"], "train")
    test = NYUv2RGBD(nyu_raw["mat"], nyu_raw["npy"], "test")
    dm = OnTheFlyDefocusDataModule(
        train,
        test,
        crop_size=(16, 20),
        max_coc=9.0,
        batch_size=2,
        val_fraction=0.25,
        render_on="device",
        mat="x",
    )
    assert dm.test_group_names == [f"Group{g}" for g in range(1, 6)]
    assert len(dm.datasets["train"]) == 3 and len(dm.datasets["val"]) == 1
    batch = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert batch["lr"].shape == (2, 3, 4, 5) and batch["blur"].shape == (2, 1, 16, 20)
    loaders = dm.test_dataloader()
    assert len(loaders) == 5
    # eval_batch_size 1: one test image per batch, in order; uniform blur = space-invariant.
    batches = [list(loader) for loader in loaders]
    assert [len(group) for group in batches] == [NUM_TEST] * 5
    flags = np.array([[b["blur"].unique().numel() == 1 for b in group] for group in batches])
    assert flags.sum(axis=1).tolist() == [2] * 5  # floor(10 * 0.2) per group
    assert flags.sum(axis=0).tolist() == [1] * NUM_TEST  # disjoint groups cover every image
    np.testing.assert_array_equal(flags, invariant_masks(NUM_TEST, 0.2, 0, 5))
    # A space-variant image has the same camera in every group it is space-variant in.
    for image in range(NUM_TEST):
        variant = [batches[g][image] for g in range(5) if not flags[g, image]]
        assert len(variant) == 4
        for other in variant[1:]:
            assert torch.equal(other["lr"], variant[0]["lr"])
            assert torch.equal(other["blur"], variant[0]["blur"])
