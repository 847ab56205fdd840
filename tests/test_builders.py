"""``svblur-make-dataset``: raw NYUv2 / Cityscapes fixtures made here -> released layout."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import scipy.io
import torch

from svblur.cli import check_data, make_dataset
from svblur.data.bsr import GROUP_NAMES, BSRFolderDataset, validate_bsr_root
from svblur.data.builders import (
    CityscapesRaw,
    NYUv2Mat,
    build_cityscapes,
    build_nyuv2,
    invariant_masks,
    label_ids_to_train_ids,
    load_class_map,
    verify_manifest,
)
from svblur.degradation import blur_map_from_png, imresize, render_defocus

H, W = 32, 40


def _scene(rng: np.random.Generator, h: int = H, w: int = W) -> tuple[np.ndarray, np.ndarray]:
    """Textured RGB uint8 and a depth (m) with a near box on a slanted floor."""
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    rows = np.linspace(2.0, 5.0, h)[:, None] * np.ones((1, w))
    depth = rows.copy()
    top, left = int(rng.integers(2, h // 2)), int(rng.integers(2, w // 2))
    depth[top : top + h // 3, left : left + w // 3] = 1.0
    return image, depth


def make_nyuv2_mat(folder: Path, n: int = 7, seed: int = 0) -> dict[str, Path]:
    """An HDF5 file shaped like nyu_depth_v2_labeled.mat, splits.mat and class maps."""
    rng = np.random.default_rng(seed)
    images, depths, labels = [], [], []
    for _ in range(n):
        image, depth = _scene(rng)
        images.append(image)
        depths.append(depth)
        raw = rng.integers(0, 895, (H, W))
        raw[:2] = 0
        labels.append(raw)
    folder.mkdir(parents=True, exist_ok=True)
    mat = folder / "nyu_depth_v2_labeled.mat"
    with h5py.File(mat, "w") as handle:  # MATLAB stores arrays transposed
        handle["images"] = np.stack(images).transpose(0, 3, 2, 1)
        handle["depths"] = np.stack(depths).astype(np.float32).transpose(0, 2, 1)
        handle["labels"] = np.stack(labels).astype(np.uint16).transpose(0, 2, 1)
    train = [1, 3, 4, 6] if n >= 7 else list(range(1, n // 2 + 1))
    test = [i for i in range(1, n + 1) if i not in train]
    scipy.io.savemat(
        folder / "splits.mat",
        {"trainNdxs": np.array(train)[:, None], "testNdxs": np.array(test)[:, None]},
    )
    table = np.concatenate([[0], (np.arange(894) % 40) + 1])
    np.save(folder / "map.npy", table)
    scipy.io.savemat(folder / "classMapping40.mat", {"mapClass": table[1:][None, :]})
    (folder / "map.txt").write_text("\n".join(str(v) for v in table))
    (folder / "map.csv").write_text(",".join(str(v) for v in table))
    return {"mat": mat, "splits": folder / "splits.mat", "npy": folder / "map.npy", "table": table}


def make_cityscapes(root: Path, per_split: int = 3, seed: int = 1) -> None:
    """A Cityscapes-shaped root: leftImg8bit, 16-bit disparity, camera json, gtFine."""
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for i in range(per_split):
            city = "aachen" if i % 2 == 0 else "bochum"
            stem = f"{city}_{i:06d}_000019"
            image, depth = _scene(rng)
            baseline, fx = 0.2, 100.0
            disparity = baseline * fx / depth
            stored = np.round(disparity * 256.0 + 1.0).astype(np.uint16)
            stored[0, :5] = 0  # invalid
            label_ids = rng.integers(0, 34, (H, W)).astype(np.uint8)
            files = {
                "leftImg8bit": (f"{stem}_leftImg8bit.png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR)),
                "disparity": (f"{stem}_disparity.png", stored),
                "gtFine": (f"{stem}_gtFine_labelIds.png", label_ids),
            }
            for folder, (name, array) in files.items():
                path = root / folder / split / city / name
                path.parent.mkdir(parents=True, exist_ok=True)
                assert cv2.imwrite(str(path), array)
            camera = root / "camera" / split / city / f"{stem}_camera.json"
            camera.parent.mkdir(parents=True, exist_ok=True)
            camera.write_text(
                json.dumps({"extrinsic": {"baseline": baseline}, "intrinsic": {"fx": fx}})
            )


@pytest.fixture(scope="module")
def nyu_raw(tmp_path_factory) -> dict:
    # 9 images: train 1, 3, 4, 6 and 5 test images, so that with the default fraction 0.2
    # each of the five groups has floor(5 * 0.2) = 1 space-invariant image.
    return make_nyuv2_mat(tmp_path_factory.mktemp("nyu_raw"), n=9)


@pytest.fixture(scope="module")
def nyu_built(nyu_raw, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("nyu_bsr") / "NYUv2-BSR"
    build_nyuv2(nyu_raw["mat"], nyu_raw["npy"], out, seed=5, max_coc=9.0)
    return out


def _manifest(root: Path) -> str:
    return (root / "manifest.sha256").read_text()


# ------------------------------------------------------------------------- class maps, readers
@pytest.mark.parametrize("kind", ["npy", "txt", "csv", "mat"])
def test_class_map_formats(nyu_raw, kind) -> None:
    name = {"npy": "map.npy", "txt": "map.txt", "csv": "map.csv", "mat": "classMapping40.mat"}[kind]
    table = load_class_map(nyu_raw["mat"].parent / name)
    assert table.shape == (895,) and np.array_equal(table, nyu_raw["table"])


def test_bad_class_maps(tmp_path) -> None:
    short = tmp_path / "short.txt"
    short.write_text("0 1 2")
    with pytest.raises(ValueError, match=r"short.txt has 3 entries, expected 895"):
        load_class_map(short)
    big = tmp_path / "big.npy"
    np.save(big, np.full(895, 41))
    with pytest.raises(ValueError, match="big.npy: values must lie in 0..40"):
        load_class_map(big)
    with pytest.raises(ValueError, match="does not exist"):
        load_class_map(tmp_path / "nope.npy")


def test_nyuv2_reader_transposes_and_converts(nyu_raw) -> None:
    reader = NYUv2Mat(nyu_raw["mat"], nyu_raw["table"])
    sample = reader.load(2)
    with h5py.File(nyu_raw["mat"]) as handle:
        image = handle["images"][2].transpose(2, 1, 0)
        depth_m = handle["depths"][2].T
        raw = handle["labels"][2].T
    assert sample.image.shape == (H, W, 3) and np.array_equal(sample.image, image)
    np.testing.assert_allclose(sample.depth, depth_m.astype(np.float64) * 1000.0)
    assert np.array_equal(sample.labels, nyu_raw["table"][raw])
    assert sample.labels[0].max() == 0  # raw 0 stays unlabelled


def test_nyuv2_reader_rejects_wrong_file(tmp_path) -> None:
    bad = tmp_path / "bad.mat"
    with h5py.File(bad, "w") as handle:
        handle["images"] = np.zeros((2, 3, 4, 4), np.uint8)
    with pytest.raises(ValueError, match=r"bad.mat: missing datasets \['depths', 'labels'\]"):
        NYUv2Mat(bad, np.zeros(895, np.int64))


def test_cityscapes_reader_depth_and_train_ids(tmp_path) -> None:
    make_cityscapes(tmp_path / "cs", per_split=2)
    reader = CityscapesRaw(tmp_path / "cs", "train")
    stem = reader.stems[0]
    sample = reader.load(stem)
    stored = cv2.imread(str(tmp_path / f"cs/disparity/train/aachen/{stem}_disparity.png"), -1)
    valid = stored > 0
    expected = 0.2 * 100.0 / ((stored[valid] - 1.0) / 256.0) * 1000.0
    np.testing.assert_allclose(sample.depth[valid], expected)
    assert np.isnan(sample.depth[~valid]).all()
    assert label_ids_to_train_ids(np.array([7, 26, 0, 33])).tolist() == [0, 13, 255, 18]
    (tmp_path / f"cs/camera/train/aachen/{stem}_camera.json").unlink()
    with pytest.raises(ValueError, match=f"missing file .*{stem}_camera.json"):
        reader.load(stem)


# ------------------------------------------------------------------------- groups
def test_invariant_masks_groups() -> None:
    masks = invariant_masks(654, 0.2, seed=0, groups=5)
    assert masks.sum(axis=1).tolist() == [130] * 5  # the paper's Table 1
    assert masks.sum(axis=0).max() == 1  # disjoint: each image invariant in at most one group
    train = invariant_masks(795, 0.2, seed=0, groups=1)
    assert train.sum() == 159
    quarters = invariant_masks(100, 0.25, seed=0, groups=5)
    assert quarters.sum(axis=1).tolist() == [25] * 5
    assert len({tuple(np.flatnonzero(m)) for m in quarters}) == 5


# ------------------------------------------------------------------------- NYUv2 build
def test_nyuv2_build_layout_metadata_and_round_trip(nyu_raw, nyu_built) -> None:
    out = nyu_built
    counts = validate_bsr_root(out, "nyuv2", decode=True)
    assert counts == {"train": 4, **{g: 5 for g in GROUP_NAMES}}
    assert sorted(p.name for p in (out / "train/GT").iterdir()) == [
        "0001.png",
        "0003.png",
        "0004.png",
        "0006.png",
    ]
    lines = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert len(lines) == 4 + 5 * 5
    for line in lines:
        assert {
            "focal_length_mm",
            "f_number",
            "focus_distance_mm",
            "max_coc",
            "space_variant",
            "seed",
        } <= set(line)
        assert line["max_coc"] == 9.0
        if line["space_variant"]:
            assert line["focal_length_mm"] in (50.0, 70.0, 85.0) and line["f_number"] > 0
    assert verify_manifest(out) == []
    listed = {line.split("  ", 1)[1] for line in _manifest(out).splitlines()}
    on_disk = {
        str(p.relative_to(out)) for p in out.rglob("*.png") if ".svblur-build" not in p.parts
    }
    assert listed == on_disk | {"metadata.jsonl"}

    # Read back through the released-layout reader: identical to what the builder rendered.
    reader = NYUv2Mat(nyu_raw["mat"], nyu_raw["table"])
    raw = reader.load(0)  # NYU image 1 = first training image
    item = BSRFolderDataset(out, "train", "nyuv2")[0]
    torch.testing.assert_close(
        item["hr"], torch.from_numpy(raw.image).permute(2, 0, 1).float() / 255
    )
    expected_seg = np.where(raw.labels == 0, 255, raw.labels.astype(np.int64) - 1)
    assert np.array_equal(item["seg"].numpy(), expected_seg)
    line = lines[0]
    assert line["name"] == "0001" and line["space_variant"]  # floor(4 * 0.2) = 0 invariant
    blurred, _ = render_defocus(
        raw.image.astype(np.float32) / 255,
        raw.depth,
        line["focal_length_mm"],
        line["focus_distance_mm"],
        line["f_number"],
        9.0,
    )
    lr = np.clip(imresize(np.asarray(blurred, np.float32), 0.25), 0, 1)
    lr_u8 = np.floor(lr.astype(np.float64) * 255 + 0.5) / 255
    torch.testing.assert_close(item["lr"], torch.from_numpy(lr_u8.transpose(2, 0, 1)).float())


def test_nyuv2_groups_share_everything_but_the_invariant_quarter(nyu_built) -> None:
    out = nyu_built
    lines = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    by_name: dict[str, dict[str, dict]] = {}
    for line in lines:
        if line["split"] == "test":
            by_name.setdefault(line["name"], {})[line["group"]] = line
    invariant_in = {
        name: [g for g, meta in groups.items() if not meta["space_variant"]]
        for name, groups in by_name.items()
    }
    # 5 test images, fraction 0.2: each group makes one image space-invariant, and the
    # groups are disjoint, so every image is space-invariant in exactly one group.
    assert sorted(invariant_in) == ["0002", "0005", "0007", "0008", "0009"]
    assert all(len(gs) == 1 for gs in invariant_in.values())
    assert sorted(g for gs in invariant_in.values() for g in gs) == list(GROUP_NAMES)
    for name, groups in by_name.items():
        blurs = {
            g: blur_map_from_png(out / "val" / g / "blur" / f"{name}.png") for g in GROUP_NAMES
        }
        variant = [g for g in GROUP_NAMES if groups[g]["space_variant"]]
        for g in variant[1:]:  # space-variant groups are byte-identical
            assert (out / "val" / g / "LRx4" / f"{name}.png").read_bytes() == (
                out / "val" / variant[0] / "LRx4" / f"{name}.png"
            ).read_bytes()
            assert np.array_equal(blurs[g], blurs[variant[0]])
        for g in invariant_in[name]:
            assert np.unique(blurs[g]).size == 1 and np.unique(blurs[variant[0]]).size > 1
            assert blurs[g][0, 0] == pytest.approx(round(groups[g]["sigma"] * 10) / 10)
            assert (out / "val" / g / "LRx4" / f"{name}.png").read_bytes() != (
                out / "val" / variant[0] / "LRx4" / f"{name}.png"
            ).read_bytes()


def test_same_seed_same_bytes_other_seed_differs(nyu_raw, nyu_built, tmp_path) -> None:
    again = tmp_path / "again"
    build_nyuv2(nyu_raw["mat"], nyu_raw["npy"], again, seed=5, max_coc=9.0, workers=2)
    assert _manifest(again) == _manifest(nyu_built)
    assert (again / "metadata.jsonl").read_bytes() == (nyu_built / "metadata.jsonl").read_bytes()
    other = tmp_path / "other"
    build_nyuv2(nyu_raw["mat"], nyu_raw["npy"], other, seed=6, max_coc=9.0, limit=2)
    assert (other / "train/LRx4/0001.png").read_bytes() != (
        nyu_built / "train/LRx4/0001.png"
    ).read_bytes()


def test_resume_after_interruption(nyu_raw, nyu_built, tmp_path) -> None:
    out = tmp_path / "resumed"
    seen: list[str] = []

    def crash_after_three(record: dict) -> None:
        seen.append(record["name"])
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_nyuv2(
            nyu_raw["mat"], nyu_raw["npy"], out, seed=5, max_coc=9.0, on_record=crash_after_three
        )
    assert not (out / "manifest.sha256").exists()
    # A half-written file left by a killed writer, and a finished file whose record is lost.
    (out / "train/GT/.0006.png.tmp-999").write_bytes(b"partial")
    summary = build_nyuv2(nyu_raw["mat"], nyu_raw["npy"], out, seed=5, max_coc=9.0)
    assert summary.skipped == 3 and summary.built == 6
    assert not list(out.rglob("*.tmp-*"))
    assert _manifest(out) == _manifest(nyu_built)
    summary = build_nyuv2(nyu_raw["mat"], nyu_raw["npy"], out, seed=5, max_coc=9.0)
    assert summary.built == 0 and summary.skipped == 9
    with pytest.raises(ValueError, match="other settings .*seed"):
        build_nyuv2(nyu_raw["mat"], nyu_raw["npy"], out, seed=6, max_coc=9.0)


def test_cli_nyuv2_and_missing_splits(nyu_raw, tmp_path, capsys) -> None:
    out = tmp_path / "cli"
    args = [
        "nyuv2",
        "--source",
        str(nyu_raw["mat"]),
        "--class-map",
        str(nyu_raw["mat"].parent / "classMapping40.mat"),
    ]
    assert (
        make_dataset.main(
            [
                *args,
                "--out",
                str(out),
                "--workers",
                "1",
                "--limit",
                "1",
                "--max-coc",
                "9",
                "--no-progress",
            ]
        )
        == 0
    )
    assert "manifest.sha256" in capsys.readouterr().out
    assert validate_bsr_root(out) == {"train": 1, **{g: 1 for g in GROUP_NAMES}}
    assert check_data.main([str(out), "--checksums"]) == 0
    (out / "train/blur/0001.png").write_bytes((out / "val/Group1/blur/0002.png").read_bytes())
    assert check_data.main([str(out), "--checksums"]) == 1
    assert "checksum mismatch for" in capsys.readouterr().err
    code = make_dataset.main(
        [*args, "--out", str(tmp_path / "x"), "--splits", str(tmp_path / "none.mat")]
    )
    assert code == 1 and "none.mat does not exist" in capsys.readouterr().err


# ------------------------------------------------------------------------- Cityscapes build
def test_cityscapes_build(tmp_path) -> None:
    make_cityscapes(tmp_path / "cs", per_split=3)
    out = tmp_path / "Cityscapes-BSR"
    summary = build_cityscapes(tmp_path / "cs", out, max_coc=9.0, seed=1)
    assert summary.built == 6 and summary.samples == 3 + 3 * 5
    assert validate_bsr_root(out, "cityscapes", decode=True) == {
        "train": 3,
        **{g: 3 for g in GROUP_NAMES},
    }
    names = sorted(p.stem for p in (out / "train/GT").iterdir())
    assert names == ["aachen_000000_000019", "aachen_000002_000019", "bochum_000001_000019"]
    item = BSRFolderDataset(out, "Group2", "cityscapes")[0]
    stem = sorted(p.stem for p in (out / "val/GT").iterdir())[0]
    ids = cv2.imread(
        str(next((tmp_path / "cs/gtFine/val").rglob(f"{stem}_gtFine_labelIds.png"))), -1
    )
    assert np.array_equal(item["seg"].numpy(), label_ids_to_train_ids(ids).astype(np.int64))
    assert verify_manifest(out) == []
