"""Tests for what the data readers share (svblur.data.folders) and the modules' old names."""

from __future__ import annotations

from pathlib import Path

import pytest

from svblur.data import folders
from svblur.data.folders import (
    DataLayoutError,
    check_crop_fits,
    check_loader_settings,
    crop_pair,
    evenly_spaced,
    hold_out,
    images_by_stem,
    list_images,
    require_root,
    shown_names,
    subfolders,
)
from svblur.errors import InputError


def _touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def test_layout_error_names_each_problem_and_the_layout() -> None:
    problems = [f"missing folder /d/{i}" for i in range(30)]
    error = DataLayoutError(problems, "/d", "GoPro", "GOPRO_Large/<split>/<sequence>")
    lines = str(error).splitlines()
    assert lines[0] == "GoPro data at /d is not usable (30 problem(s)):"
    assert lines[1] == "  - missing folder /d/0"
    assert lines[-2] == "  ... and 5 more" and len(lines) == 1 + 25 + 2
    assert lines[-1] == "Expected GOPRO_Large/<split>/<sequence>"
    assert error.problems == problems and error.root == "/d"
    assert isinstance(error, InputError)


def test_old_error_names_are_the_layout_error() -> None:
    from svblur.data import BSRDataError, MotionDataError, ReBlurSRDataError

    assert MotionDataError is ReBlurSRDataError is BSRDataError is DataLayoutError


def test_listings_leave_out_hidden_files_folders_and_other_files(tmp_path: Path) -> None:
    _touch(tmp_path, "b.png", "a.JPG", ".a.png", "notes.txt", "c.jpg")
    (tmp_path / "d.png").mkdir()
    _touch(tmp_path / "seq2")
    _touch(tmp_path / "seq1")
    _touch(tmp_path / ".cache")
    assert [p.name for p in list_images(tmp_path)] == ["a.JPG", "b.png", "c.jpg"]
    assert [p.name for p in list_images(tmp_path, (".png",))] == ["b.png"]
    assert subfolders(tmp_path) == ["d.png", "seq1", "seq2"]


def test_images_by_stem_reports_two_images_of_one_stem(tmp_path: Path) -> None:
    _touch(tmp_path, "a.jpg", "a.png", "b.png")
    problems: list[str] = []
    found = images_by_stem(tmp_path, problems, "frames")
    assert sorted(found) == ["a", "b"] and found["a"].name == "a.jpg"
    assert problems == [f"two frames named a in {tmp_path}: a.jpg, a.png"]


def test_shown_names_counts_the_rest() -> None:
    assert shown_names(["a", "b"]) == "a, b"
    assert shown_names([str(i) for i in range(7)]) == "0, 1, 2, 3, 4, ... (7 in all)"


def test_hold_out_is_the_datamodules_seeded_choice() -> None:
    # The positions the DataModules held out before the code moved here (issue #22).
    kept, held = hold_out(20, 0.25, 3, owner="the split", unit="image")
    assert held == [1, 3, 4, 12, 13]
    assert kept == sorted(set(range(20)) - set(held))
    assert hold_out(7, 0.1, 0, owner="the folder", unit="image", salt=13) == (
        [0, 1, 2, 3, 4, 6],
        [5],
    )


def test_hold_out_that_leaves_nothing_says_what_to_change() -> None:
    with pytest.raises(
        InputError, match=r"the GoPro train split has 2 sequence\(s\): holding out 2"
    ):
        hold_out(2, 0.9, 0, owner="the GoPro train split", unit="sequence")
    with pytest.raises(ValueError, match=r"test_fraction must be in \(0, 1\)"):
        hold_out(10, 0.0, 0, owner="x", unit="image", setting="test_fraction")


def test_evenly_spaced_keeps_the_ends() -> None:
    assert evenly_spaced(range(10, 20), None) == list(range(10, 20))
    assert evenly_spaced(range(10, 20), 3) == [10, 14, 19]
    assert evenly_spaced([4, 8], 5) == [4, 8]


def test_argument_checks_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="data.root is required: the GoPro folder"):
        require_root("???", "the GoPro folder")
    assert require_root(tmp_path, "x") == tmp_path
    with pytest.raises(ValueError, match="eval_batch_size"):
        check_loader_settings(2, 0)
    with pytest.raises(ValueError, match="num_workers"):
        check_loader_settings(2, 1, -1)
    with pytest.raises(ValueError, match="val_max_images"):
        check_loader_settings(2, 1, 0, 0)
    assert crop_pair(8) == (8, 8) and crop_pair([8, 12]) == (8, 12) and crop_pair(None) is None
    with pytest.raises(InputError, match=r"val_crop_size \(32, 32\) is larger than the photo /p"):
        check_crop_fits((32, 32), 4, [(Path("/p"), (31, 64))], "photo", "val_crop_size")
    check_crop_fits((32, 32), 4, [(Path("/p"), (33, 33)), (Path("/q"), None)], "photo")


def test_old_module_names_still_import_the_same_objects() -> None:
    from svblur.data import DefocusDataModule, datamodule, loaders, mixins, samplers, synthetic

    assert datamodule.DefocusDataModule is synthetic.DefocusDataModule is DefocusDataModule
    for name in ("EpochSampler", "WorkerRNG", "make_loader"):
        assert getattr(samplers, name) is getattr(loaders, name)
    for name in ("ResumableDataMixin", "SplitsDataMixin"):
        assert getattr(samplers, name) is getattr(mixins, name)
    assert set(folders.__all__) <= set(dir(folders))
