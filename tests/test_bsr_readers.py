"""Readers of the released NYUv2-BSR / Cityscapes-BSR layout, on tiny trees made here."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from svblur.cli import check_data
from svblur.data.bsr import (
    GROUP_NAMES,
    BSRDataError,
    BSRFolderDataset,
    CityscapesBSRDataModule,
    NYUv2BSRDataModule,
    convert_labels,
    sample_key,
    validate_bsr_root,
)
from svblur.degradation import blur_map_to_png

HR = (32, 40)  # (H, W)


def _write_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _write_gray(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def make_bsr_tree(
    root: Path,
    dataset: str = "nyuv2",
    n_train: int = 6,
    n_test: int = 3,
    seed: int = 0,
    hr: tuple[int, int] = HR,
) -> dict[str, dict[str, np.ndarray]]:
    """Write a tiny released-layout tree; returns the stored arrays by ``split/name``."""
    rng = np.random.default_rng(seed)
    h, w = hr
    stored: dict[str, dict[str, np.ndarray]] = {}
    top = 41 if dataset == "nyuv2" else 19

    def sample() -> dict[str, np.ndarray]:
        labels = rng.integers(0, top, (h, w)).astype(np.uint8)
        if dataset == "cityscapes":
            labels[0, :] = 255
        return {
            "hr": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
            "lr": rng.integers(0, 256, (h // 4, w // 4, 3), dtype=np.uint8),
            "blur": np.round(rng.uniform(0, 7, (h, w)), 1).astype(np.float32),
            "seg": labels,
        }

    for i in range(n_train):
        name = f"{i:04d}.png"
        s = sample()
        _write_rgb(root / "train/GT" / name, s["hr"])
        _write_rgb(root / "train/LRx4" / name, s["lr"])
        (root / "train/blur").mkdir(parents=True, exist_ok=True)
        blur_map_to_png(s["blur"], root / "train/blur" / name)
        _write_gray(root / "train/semseg" / name, s["seg"])
        stored[f"train/{i:04d}"] = s
    for i in range(n_test):
        name = f"{i:04d}.png"
        s = sample()
        _write_rgb(root / "val/GT" / name, s["hr"])
        _write_gray(root / "val/semseg" / name, s["seg"])
        for group in GROUP_NAMES:
            g = sample()
            _write_rgb(root / "val" / group / "LRx4" / name, g["lr"])
            (root / "val" / group / "blur").mkdir(parents=True, exist_ok=True)
            blur_map_to_png(g["blur"], root / "val" / group / "blur" / name)
            stored[f"{group}/{i:04d}"] = {
                "hr": s["hr"],
                "seg": s["seg"],
                **{k: g[k] for k in ("lr", "blur")},
            }
    return stored


@pytest.fixture
def nyu_tree(tmp_path: Path) -> tuple[Path, dict]:
    root = tmp_path / "nyuv2_bsr"
    return root, make_bsr_tree(root, "nyuv2")


def test_convert_labels_conventions() -> None:
    raw = np.array([[0, 1, 40]], np.uint8)
    assert convert_labels(raw, "nyuv2").tolist() == [[255, 0, 39]]
    city = np.array([[0, 18, 255]], np.uint8)
    assert convert_labels(city, "cityscapes").tolist() == [[0, 18, 255]]
    assert convert_labels(raw, "nyuv2").dtype == np.int64
    with pytest.raises(ValueError, match="dataset must be one of"):
        convert_labels(raw, "kitti")


def test_sample_key_strips_role_suffixes() -> None:
    assert sample_key("a/aachen_000000_000019_leftImg8bit.png") == "aachen_000000_000019"
    assert sample_key("aachen_000000_000019_gtFine_labelTrainIds.png") == "aachen_000000_000019"
    assert sample_key("0001.png") == "0001"


def test_validate_counts(nyu_tree) -> None:
    root, _ = nyu_tree
    counts = validate_bsr_root(root, "nyuv2", decode=True)
    assert counts == {"train": 6, **{g: 3 for g in GROUP_NAMES}}


def test_dataset_reads_stored_values(nyu_tree) -> None:
    root, stored = nyu_tree
    for split in ("train", "Group3"):
        ds = BSRFolderDataset(root, split, "nyuv2")
        item = ds[1]
        ref = stored[f"{split}/0001"]
        assert item["hr"].shape == (3, *HR) and item["lr"].shape == (3, HR[0] // 4, HR[1] // 4)
        assert item["blur"].shape == (1, *HR) and item["seg"].shape == HR
        assert item["seg"].dtype == torch.int64
        torch.testing.assert_close(
            item["hr"], torch.from_numpy(ref["hr"].transpose(2, 0, 1)).float() / 255
        )
        torch.testing.assert_close(
            item["lr"], torch.from_numpy(ref["lr"].transpose(2, 0, 1)).float() / 255
        )
        torch.testing.assert_close(
            item["blur"][0], torch.from_numpy(ref["blur"]), atol=1e-5, rtol=0
        )
        expected_seg = np.where(ref["seg"] == 0, 255, ref["seg"].astype(np.int64) - 1)
        assert np.array_equal(item["seg"].numpy(), expected_seg)
        assert "depth" not in item
    assert ds.names == ["0000", "0001", "0002"]


def test_training_crops_are_aligned(nyu_tree) -> None:
    root, _ = nyu_tree
    full = BSRFolderDataset(root, "train", "nyuv2")[0]
    ds = BSRFolderDataset(root, "train", "nyuv2", crop_size=(16, 20), hflip=True, seed=3)
    for _ in range(4):
        item = ds[0]
        assert item["hr"].shape == (3, 16, 20) and item["lr"].shape == (3, 4, 5)
        assert item["blur"].shape == (1, 16, 20) and item["seg"].shape == (16, 20)
        # The HR crop is a window of the (possibly flipped) full image at an LR-aligned offset.
        for hr_full in (full["hr"], full["hr"].flip(-1)):
            for top in range(0, HR[0] - 16 + 1, 4):
                for left in range(0, HR[1] - 20 + 1, 4):
                    if torch.equal(hr_full[:, top : top + 16, left : left + 20], item["hr"]):
                        break
                else:
                    continue
                break
            else:
                continue
            break
        else:
            raise AssertionError("crop is not an LR-aligned window of the HR image")
    with pytest.raises(ValueError, match="divisible by scale"):
        BSRFolderDataset(root, "train", "nyuv2", crop_size=(15, 20))


def test_datamodule_groups_and_split(nyu_tree) -> None:
    root, _ = nyu_tree
    dm = NYUv2BSRDataModule(root=root, batch_size=2, crop_size=(16, 16), val_fraction=0.34)
    assert dm.num_classes == 40 and dm.scale == 4
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 4 and len(dm.datasets["val"]) == 2
    assert set(dm.datasets["train"].indices).isdisjoint(dm.datasets["val"].indices)
    batch = next(iter(dm.train_dataloader()))
    assert batch["hr"].shape == (2, 3, 16, 16) and batch["lr"].shape == (2, 3, 4, 4)
    dm.setup("test")
    loaders = dm.test_dataloader()
    assert dm.test_group_names == [f"Group{g}" for g in range(1, 6)]
    assert len(loaders) == 5
    batches = [next(iter(loader)) for loader in loaders]
    # Same GT and labels in every group; LR and blur differ per group.
    for b in batches[1:]:
        assert torch.equal(b["hr"], batches[0]["hr"]) and torch.equal(b["seg"], batches[0]["seg"])
    assert not torch.equal(batches[0]["lr"], batches[1]["lr"])
    with pytest.raises(ValueError, match="has 40 classes"):
        NYUv2BSRDataModule(root=root, num_classes=19)


def test_cityscapes_datamodule(tmp_path: Path) -> None:
    root = tmp_path / "cs"
    stored = make_bsr_tree(root, "cityscapes", n_train=3, n_test=2)
    dm = CityscapesBSRDataModule(root=root, val_source="test", val_group="Group2")
    dm.setup("fit")
    assert dm.num_classes == 19 and len(dm.datasets["train"]) == 3
    item = dm.datasets["val"][0]
    assert np.array_equal(item["seg"].numpy(), stored["Group2/0000"]["seg"].astype(np.int64))
    assert (item["seg"] == 255).any()


# ---------------------------------------------------------------- bad input, one by one


def _expect(root: Path, match: str, decode: bool = False) -> BSRDataError:
    with pytest.raises(BSRDataError, match=match) as info:
        validate_bsr_root(root, "nyuv2", decode=decode)
    return info.value


def test_missing_folder(nyu_tree) -> None:
    root, _ = nyu_tree
    for path in (root / "val/Group4/blur").iterdir():
        path.unlink()
    (root / "val/Group4/blur").rmdir()
    error = _expect(root, "missing folder")
    assert str(root / "val/Group4/blur") in str(error)
    with pytest.raises(BSRDataError, match="does not exist"):
        validate_bsr_root(root / "nope")


def test_unequal_counts(nyu_tree) -> None:
    root, _ = nyu_tree
    (root / "train/LRx4/0005.png").unlink()
    error = _expect(root, "unequal image counts in split train")
    assert str(root / "train/LRx4") in str(error)


def test_mismatched_names(nyu_tree) -> None:
    root, _ = nyu_tree
    (root / "train/semseg/0002.png").rename(root / "train/semseg/0002b.png")
    error = _expect(root, "mismatched names")
    assert "0002b.png" in str(error)


def test_lr_not_quarter(nyu_tree) -> None:
    root, _ = nyu_tree
    _write_rgb(root / "val/Group2/LRx4/0001.png", np.zeros((9, 10, 3), np.uint8))
    error = _expect(root, "exactly 1/4 of HR")
    assert str(root / "val/Group2/LRx4/0001.png") in str(error)


def test_blur_size_mismatch(nyu_tree) -> None:
    root, _ = nyu_tree
    blur_map_to_png(np.zeros((8, 8), np.float32), root / "train/blur/0003.png")
    _expect(root, "blur map .*0003.png")


def test_truncated_and_unreadable(nyu_tree) -> None:
    root, _ = nyu_tree
    path = root / "train/GT/0004.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    (root / "val/GT/0000.png").write_bytes(b"not an image at all")
    error = _expect(root, "truncated image")
    assert str(path) in str(error)
    assert f"unreadable image {root / 'val/GT/0000.png'}" in str(error)


def test_decode_catches_bad_labels(nyu_tree) -> None:
    root, _ = nyu_tree
    _write_gray(root / "train/semseg/0000.png", np.full(HR, 77, np.uint8))
    validate_bsr_root(root, "nyuv2")  # header-only check does not look at values
    _expect(root, "labels out of range", decode=True)


def test_datamodule_setup_validates_first(nyu_tree) -> None:
    root, _ = nyu_tree
    (root / "train/LRx4/0001.png").unlink()
    dm = NYUv2BSRDataModule(root=root)
    with pytest.raises(BSRDataError, match="unequal image counts"):
        dm.setup("fit")


def test_check_data_cli(nyu_tree, capsys) -> None:
    root, _ = nyu_tree
    assert check_data.main([str(root), "--dataset", "nyuv2"]) == 0
    assert "train: 6" in capsys.readouterr().out
    (root / "val/semseg/0001.png").unlink()
    assert check_data.main([str(root), "--dataset", "nyuv2"]) == 1
    assert "unequal image counts" in capsys.readouterr().err
