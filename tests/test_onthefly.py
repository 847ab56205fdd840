"""On-the-fly defocus from raw RGB-D sources: new cameras per draw, fixed eval cameras."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from svblur.data.onthefly import (
    CityscapesRGBD,
    NYUv2RGBD,
    OnTheFlyDefocusDataModule,
    OnTheFlyDefocusDataset,
    RGBDFolder,
    render_batch,
)

from .test_builders import make_cityscapes, make_nyuv2_mat


@pytest.fixture(scope="module")
def nyu_raw(tmp_path_factory) -> dict:
    return make_nyuv2_mat(tmp_path_factory.mktemp("otf_nyu"))


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
    assert len(nyu) == 4 and len(NYUv2RGBD(nyu_raw["mat"], nyu_raw["npy"], "test")) == 3
    sample = nyu.load(0)
    assert sample.image.dtype == np.float32 and sample.image.max() <= 1.0
    assert set(np.unique(sample.seg)) <= set(range(40)) | {255}
    assert (sample.seg[0] == 255).all()
    make_cityscapes(tmp_path / "cs", per_split=1)
    city = CityscapesRGBD(tmp_path / "cs", "val").load(0)
    assert np.isnan(city.depth[0, :5]).all() and city.seg.max() <= 255
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
    assert float(first["blur"].max()) <= (9.0 - 1) / 4 + 1e-6
    fixed = OnTheFlyDefocusDataset(
        source, None, max_coc=9.0, fixed=True, invariant=[True, False, False, False]
    )
    a, b = fixed[1], fixed[1]
    assert torch.equal(a["lr"], b["lr"]) and a["hr"].shape == (3, 32, 40)
    assert fixed[0]["blur"].unique().numel() == 1


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
    flags = [[float(b["blur"].unique().numel() == 1) for b in loader] for loader in loaders]
    assert sum(map(sum, flags)) <= 3 + 1e-9  # each test image invariant in at most one group
