"""Tests for what the data readers and data sets share (svblur.data.folders, folder_sr,
transforms.crop_windows, mixins, loaders.WorkerRNG) and the modules' old names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from svblur.data import folders
from svblur.data.folder_sr import FolderSRDataModule, FolderSRDataset, image_tensor
from svblur.data.folders import (
    DataLayoutError,
    check_crop_fits,
    check_data_folder,
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
from svblur.data.loaders import WorkerRNG
from svblur.data.mixins import ResumableDataMixin
from svblur.data.transforms import crop_windows
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


def test_check_data_folder_names_the_root_and_the_layout(tmp_path: Path) -> None:
    check_data_folder(tmp_path, "GoPro", "a layout")
    with pytest.raises(DataLayoutError) as caught:
        check_data_folder(tmp_path / "nope", "GoPro", "a layout")
    assert caught.value.problems == [
        f"data root {tmp_path / 'nope'} does not exist or is not a folder"
    ]
    assert str(caught.value).splitlines()[-1] == "Expected a layout"


def test_old_module_names_still_import_the_same_objects() -> None:
    from svblur.data import (
        DefocusDataModule,
        datamodule,
        loaders,
        mixins,
        onthefly,
        rgbd,
        rgbd_io,
        samplers,
        synthetic,
    )

    assert datamodule.DefocusDataModule is synthetic.DefocusDataModule is DefocusDataModule
    for name in ("EpochSampler", "WorkerRNG", "make_loader"):
        assert getattr(samplers, name) is getattr(loaders, name)
    for name in ("ResumableDataMixin", "SplitsDataMixin"):
        assert getattr(samplers, name) is getattr(mixins, name)
    assert set(folders.__all__) <= set(dir(folders))
    # The RGB-D sources moved from onthefly (and the Sintel reader from rgbd_io) to rgbd.
    moved = ["CityscapesRGBD", "ImageFolder", "NYUv2RGBD", "RGBDFolder", "RGBDSample"]
    for name in [*moved, "RGBDSource", "load_image_sample"]:
        assert getattr(onthefly, name) is getattr(rgbd, name) and name in onthefly.__all__
    for name in ("SINTEL_TAG", "read_sintel_depth"):
        assert getattr(rgbd_io, name) is getattr(rgbd, name)
    import svblur.data as data

    assert all(getattr(data, name) is getattr(rgbd, name) for name in moved[:4])


# --------------------------------------------------------------------------- data sets
def test_crop_windows_on_a_grid_random_or_centred() -> None:
    rng, again = np.random.default_rng(5), np.random.default_rng(5)
    (rows, cols), (hr_rows, hr_cols) = crop_windows((10, 12), (16, 8), 4, rng)
    top, left = int(again.integers(0, 10 - 4 + 1)), int(again.integers(0, 12 - 2 + 1))
    assert (rows, cols) == (slice(top, top + 4), slice(left, left + 2))
    assert (hr_rows, hr_cols) == (slice(4 * top, 4 * top + 16), slice(4 * left, 4 * left + 8))
    assert crop_windows((10, 12), (16, 8), 4) == (
        (slice(3, 7), slice(5, 7)),
        (slice(12, 28), slice(20, 28)),
    )
    assert crop_windows((3, 5), None, 2) == (
        (slice(0, 3), slice(0, 5)),
        (slice(0, 6), slice(0, 10)),
    )


class _Source:
    names = ["a", "b", "c", "d"]

    def __len__(self) -> int:
        return 4


class _Served(FolderSRDataset):
    salt = 5
    what = "test photo"

    def __init__(self, fixed: bool, crop_size: tuple[int, int] | None) -> None:
        super().__init__(_Source(), [3, 1], scale=2, fixed=fixed, seed=7)
        self.crop_size = crop_size

    def fixed_stream(self, position: int) -> list[int]:
        return [self.seed, 99, position]


def test_folder_sr_dataset_streams_names_and_windows() -> None:
    fixed, training = _Served(True, (4, 4)), _Served(False, (4, 4))
    assert len(fixed) == 2 and fixed.names == ["d", "b"]
    draw = fixed._rng(3).random()
    assert draw == np.random.default_rng([7, 99, 3]).random()
    torch.manual_seed(1)
    expected = np.random.default_rng([7, torch.initial_seed() % 2**63, 5]).random()
    assert training._rng(3).random() == expected
    assert fixed._windows((4, 6), "d", training._rng(0))[0] == (slice(1, 3), slice(2, 4))
    assert _Served(True, None)._windows((4, 6), "d", None)[1] == (slice(0, 8), slice(0, 12))
    with pytest.raises(InputError, match=r"larger than the test photo d \(2x12, HxW\)"):
        training._windows((1, 6), "d", np.random.default_rng(0))
    image = np.arange(24, dtype=np.float64).reshape(2, 4, 3)
    tensor = image_tensor(image)
    assert tensor.dtype == torch.float32 and tensor.shape == (3, 2, 4)
    assert torch.equal(tensor[1], torch.from_numpy(image[..., 1]).float())


def test_worker_rng_keys_follow_the_seed() -> None:
    torch.manual_seed(3)
    base = torch.initial_seed() % 2**63
    plain, keyed = WorkerRNG(4, 1)(), WorkerRNG(4, 1, [2])()
    assert plain.random() == np.random.default_rng([4, base, 1]).random()
    assert keyed.random() == np.random.default_rng([4, 2, base, 1]).random()


class _Module(ResumableDataMixin):
    pass


class _Split:
    title, split, scale = "Photos", "train", 2

    def __len__(self) -> int:
        return 10


class _SplitModule(FolderSRDataModule):
    seed = 3


def test_loader_settings_and_held_out_validation() -> None:
    module = _Module()
    module.set_loader_settings(4, None, 0, 1, True, "5")
    assert (module.batch_size, module.num_workers, module.seed) == (4, 0, 5)
    assert module.pin_memory is True and module.persistent_workers is False
    assert not hasattr(module, "eval_batch_size")
    module.set_loader_settings(4, 2, 2, False, True, 0)
    assert module.eval_batch_size == 2 and module.persistent_workers is True
    with pytest.raises(ValueError, match="val_max_images"):
        module.set_loader_settings(4, 2, 2, False, True, 0, val_max_images=0)

    data = _SplitModule()
    source = _Split()
    data._keep_settings((source, None), {"root": "r"}, 3, 2)
    assert (data.source_settings, data.num_classes, data.scale) == ({"root": "r"}, 3, 2)
    with pytest.raises(ValueError, match="the Photos train source's scale 2"):
        data._keep_settings((source,), {}, 3, 4)
    train, base, val = data._train_and_val(source, None, 0.3, 2)
    kept, held = hold_out(10, 0.3, 3, owner="the Photos train split", unit="photo")
    assert (train, base, val) == (kept, source, evenly_spaced(held, 2))
    other = _Split()
    assert data._train_and_val(source, other, 0.3, None) == (
        list(range(10)),
        other,
        list(range(10)),
    )
