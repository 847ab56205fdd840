"""GoPro and REDS readers, augmentation, evaluation noise and configs, on tiny fake trees."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from svblur.conf import config_dir
from svblur.data.motion import (
    GoProPairs,
    MotionDataError,
    MotionSRDataModule,
    MotionSRDataset,
    REDSPairs,
    noise_group_name,
)
from svblur.degradation import imresize
from svblur.io import read_image

HR = (32, 48)  # (H, W)
SEQUENCES = ("GOPR0001_11_00", "GOPR0002_11_01")
FRAMES = ("000001", "000002", "000003")


def _write(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _random(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return rng.integers(0, 256, (*shape, 3), dtype=np.uint8)


def make_gopro(root: Path, hr: tuple[int, int] = HR, flat: bool = False) -> Path:
    """``root/GOPRO_Large/{train,test}/<seq>/{blur,sharp}/<frame>.png``."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for seq in SEQUENCES:
            for frame in FRAMES:
                for role in ("blur", "sharp"):
                    image = np.full((*hr, 3), 128, np.uint8) if flat else _random(rng, hr)
                    _write(root / "GOPRO_Large" / split / seq / role / f"{frame}.png", image)
    return root


def make_reds(root: Path, nested_val: bool = False) -> Path:
    """``root/{train,val}_{sharp,blur,blur_bicubic/X4}/<seq>/<frame>.png`` (val one level
    down with ``nested_val``, as the archives unpack)."""
    rng = np.random.default_rng(1)
    for split in ("train", "val"):
        base = root / split if split == "val" and nested_val else root
        for seq in ("000", "001"):
            for frame in ("00000000", "00000001", "00000002"):
                _write(base / f"{split}_sharp" / seq / f"{frame}.png", _random(rng, HR))
                _write(base / f"{split}_blur" / seq / f"{frame}.png", _random(rng, HR))
                lr = _random(rng, (HR[0] // 4, HR[1] // 4))
                _write(base / f"{split}_blur_bicubic" / "X4" / seq / f"{frame}.png", lr)
    return root


@pytest.fixture(scope="module")
def gopro(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_gopro(tmp_path_factory.mktemp("gopro"))


@pytest.fixture(scope="module")
def reds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_reds(tmp_path_factory.mktemp("reds"))


# --------------------------------------------------------------------------- readers
def test_gopro_pairs_and_lr(gopro: Path) -> None:
    train = GoProPairs(gopro, "train")
    test = GoProPairs(gopro / "GOPRO_Large", "test")  # GOPRO_Large itself works too
    assert len(train) == len(test) == len(SEQUENCES) * len(FRAMES)
    assert train.names[:3] == [f"{SEQUENCES[0]}/{f}" for f in FRAMES]
    assert train.sequences == [s for s in SEQUENCES for _ in FRAMES]
    assert all(p.hr_size == HR for p in train.pairs)
    lr, hr = train.load(4)
    pair = train.pairs[4]
    assert pair.source == gopro / "GOPRO_Large/train" / SEQUENCES[1] / "blur" / "000002.png"
    expected = np.clip(imresize(read_image(pair.source), 0.25), 0, 1)
    np.testing.assert_array_equal(lr, expected)
    np.testing.assert_array_equal(hr, read_image(pair.hr))
    assert lr.shape == (8, 12, 3) and lr.dtype == np.float32


def test_gopro_crops_hr_to_multiple_of_scale(tmp_path: Path) -> None:
    pairs = GoProPairs(make_gopro(tmp_path, hr=(34, 49)), "test")
    lr, hr = pairs.load(0)
    blur = read_image(pairs.pairs[0].source)[:32, :48]
    assert hr.shape == (32, 48, 3) and lr.shape == (8, 12, 3)
    np.testing.assert_array_equal(lr, np.clip(imresize(blur, 0.25), 0, 1))


def test_reds_pairs(tmp_path: Path) -> None:
    root = make_reds(tmp_path, nested_val=True)
    train, val = REDSPairs(root, "train"), REDSPairs(root, "val")
    assert len(train) == len(val) == 6
    assert train.names[3] == "001/00000000"
    assert val.hr_folder == root / "val" / "val_sharp"
    lr, hr = train.load(3)
    np.testing.assert_array_equal(lr, read_image(root / "train_blur_bicubic/X4/001/00000000.png"))
    np.testing.assert_array_equal(hr, read_image(root / "train_sharp/001/00000000.png"))
    blur_lr, _ = REDSPairs(root, "train", lr_source="blur").load(3)
    made = np.clip(imresize(read_image(root / "train_blur/001/00000000.png"), 0.25), 0, 1)
    np.testing.assert_array_equal(blur_lr, made)


# --------------------------------------------------------------------------- validation
def test_gopro_missing_folder_and_mismatched_frames(tmp_path: Path) -> None:
    root = make_gopro(tmp_path)
    shutil.rmtree(root / "GOPRO_Large/test" / SEQUENCES[0] / "sharp")
    (root / "GOPRO_Large/test" / SEQUENCES[1] / "blur" / "000002.png").unlink()
    with pytest.raises(MotionDataError) as info:
        GoProPairs(root, "test")
    message = str(info.value)
    missing = root / "GOPRO_Large/test" / SEQUENCES[0] / "sharp"
    assert (
        f"missing folder {missing} (expected GOPRO_Large/<split>/<sequence>/{{blur,sharp}})"
        in message
    )
    assert f"sequence {SEQUENCES[1]}" in message and "only in sharp/: 000002" in message
    assert len(info.value.problems) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MotionDataError) as info:
        GoProPairs(empty, "train")
    assert f"missing folder {empty / 'GOPRO_Large' / 'train'}" in str(info.value)


def test_gopro_size_mismatch_named(tmp_path: Path) -> None:
    root = make_gopro(tmp_path)
    bad = root / "GOPRO_Large/train" / SEQUENCES[0] / "blur" / "000003.png"
    _write(bad, np.zeros((16, 48, 3), np.uint8))
    with pytest.raises(MotionDataError, match=f"blurred frame {bad} is 48x16"):
        GoProPairs(root, "train")


def test_reds_validation(tmp_path: Path) -> None:
    root = make_reds(tmp_path)
    shutil.rmtree(root / "val_blur_bicubic")
    with pytest.raises(MotionDataError) as info:
        REDSPairs(root, "val")
    assert f"missing folder {root / 'val_blur_bicubic' / 'X4'}" in str(info.value)
    shutil.rmtree(root / "train_blur_bicubic/X4/001")
    bad = root / "train_blur_bicubic/X4/000/00000001.png"
    _write(bad, np.zeros((9, 12, 3), np.uint8))
    with pytest.raises(MotionDataError) as info:
        REDSPairs(root, "train")
    message = str(info.value)
    assert f"sequences in {root / 'train_sharp'} but not in" in message and ": 001" in message
    assert f"LR {bad} is 12x9 (WxH)" in message and "exactly 1/4 of HR" in message


# --------------------------------------------------------------------------- augmentation
def _locate(patch: np.ndarray, full: np.ndarray) -> set[tuple[int, int, int]]:
    """Every (top, left, turns) whose rotated window of ``full`` equals ``patch``."""
    h, w = patch.shape[:2]
    found = set()
    for turns in range(4):
        for top in range(full.shape[0] - h + 1):
            for left in range(full.shape[1] - w + 1):
                window = np.rot90(full[top : top + h, left : left + w], turns, axes=(0, 1))
                if window.shape == patch.shape and np.array_equal(window, patch):
                    found.add((top, left, turns))
    return found


def test_training_crops_aligned_and_rotated(gopro: Path) -> None:
    source = GoProPairs(gopro, "train")
    data = MotionSRDataset(source, crop_size=16, noise_range=(0, 0), seed=3)
    turns_seen = set()
    for index in range(24):
        item = data[index % len(data)]
        lr_full, hr_full = source.load(index % len(data))
        lr = item["lr"].permute(1, 2, 0).numpy()
        hr = item["hr"].permute(1, 2, 0).numpy()
        assert lr.shape == (4, 4, 3) and hr.shape == (16, 16, 3)
        lr_at = _locate(lr, lr_full)
        hr_at = {(t // 4, left // 4, k) for t, left, k in _locate(hr, hr_full) if not t % 4}
        assert lr_at & hr_at, f"LR and HR crops of item {index} are not the same region"
        turns_seen |= {k for _, _, k in lr_at & hr_at}
        assert item["name"] == source.names[index % len(data)]
    assert turns_seen == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="square crop_size"):
        MotionSRDataset(source, crop_size=(16, 32))


def test_training_noise_in_range(tmp_path: Path) -> None:
    source = GoProPairs(make_gopro(tmp_path, hr=(128, 128), flat=True), "train")
    data = MotionSRDataset(source, crop_size=128, noise_range=(0.2, 20), seed=0)
    stds = [float(data[i]["lr"].std()) * 255 for i in range(6)]
    assert all(0.1 < s < 21 for s in stds) and max(stds) - min(stds) > 1.0


# --------------------------------------------------------------------------- evaluation noise
def source_lr(source: GoProPairs, index: int) -> torch.Tensor:
    return torch.from_numpy(source.load(index)[0].transpose(2, 0, 1).copy())


def test_eval_noise_fixed_per_index(tmp_path: Path) -> None:
    source = GoProPairs(make_gopro(tmp_path, hr=(128, 128), flat=True), "test")
    clean = source_lr(source, 2)
    noise0 = MotionSRDataset(source, fixed=True, noise_level=0, seed=5)
    noise10 = MotionSRDataset(source, fixed=True, noise_level=10, seed=5)
    assert torch.equal(noise0[2]["lr"], clean)
    # independent of the global torch seed (which seeds the training draws)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        first = noise10[2]["lr"]
        torch.manual_seed(2)
        again = MotionSRDataset(source, fixed=True, noise_level=10, seed=5)[2]["lr"]
    assert torch.equal(first, again)
    # every flat frame has the same clean LR, so a different field shows as a different LR
    assert torch.equal(source_lr(source, 3), clean) and not torch.equal(first, noise10[3]["lr"])
    assert abs(float((first - clean).std()) * 255 - 10) < 0.6
    other_seed = MotionSRDataset(source, fixed=True, noise_level=10, seed=6)[2]["lr"]
    assert not torch.equal(first, other_seed)


# --------------------------------------------------------------------------- DataModule
def test_datamodule_groups_and_batches(gopro: Path) -> None:
    module = MotionSRDataModule(
        GoProPairs(gopro, "train"), GoProPairs(gopro, "test"), crop_size=16, batch_size=2
    )
    assert (
        module.test_group_names
        == ["noise0", "noise10"]
        == [
            noise_group_name(0),
            noise_group_name(10.0),
        ]
    )
    loaders = module.test_dataloader()
    assert len(loaders) == 2
    for loader in loaders:
        batches = list(loader)
        names = [name for batch in batches for name in batch["name"]]
        assert sorted(names) == sorted(f"{s}/{f}" for s in SEQUENCES for f in FRAMES)
        assert batches[0]["lr"].shape == (1, 3, 8, 12) and batches[0]["hr"].shape == (1, 3, 32, 48)
        assert set(batches[0]) == {"lr", "hr", "name"}
    clean, noisy = (next(iter(loader))["lr"] for loader in loaders)
    assert not torch.equal(clean, noisy)
    train, val = module.datasets["train"], module.datasets["val"]
    train_seqs = {n.split("/")[0] for n in train.names}
    val_seqs = {n.split("/")[0] for n in val.names}
    assert len(train_seqs) == len(val_seqs) == 1 and not train_seqs & val_seqs
    batch = next(iter(module.train_dataloader()))
    assert batch["lr"].shape == (2, 3, 4, 4) and batch["hr"].shape == (2, 3, 16, 16)
    assert len(module.val_dataloader().dataset) == 3
    with pytest.raises(ValueError, match="lower data.crop_size"):
        MotionSRDataModule(GoProPairs(gopro, "train"), crop_size=64)


@pytest.mark.parametrize("name", ["gopro", "reds"])
def test_config_instantiates(name: str, gopro: Path, reds: Path) -> None:
    root = gopro if name == "gopro" else reds
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=config_dir()):
            cfg = compose(
                config_name="train",
                overrides=[f"data={name}", f"data.root={root}", "data.crop_size=16"],
            )
    finally:
        GlobalHydra.instance().clear()
    assert cfg.data.noise_range == [0.2, 20] and cfg.data.test_noise_levels == [0, 10]
    module = instantiate(cfg.data, _convert_="all")
    assert isinstance(module, MotionSRDataModule)
    assert module.test_group_names == ["noise0", "noise10"]
    assert len(module.datasets["noise10"]) == 6 and module.num_classes == 8
    expected = GoProPairs if name == "gopro" else REDSPairs
    assert isinstance(module.datasets["train"].source, expected)
