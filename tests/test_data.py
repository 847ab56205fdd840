"""Tests for the built-in offline data set: scenes, samples, augmentation, DataModule."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from svblur.data import (
    CLASS_NAMES,
    IGNORE_INDEX,
    DefocusAugment,
    DefocusDataModule,
    SyntheticDefocus,
    default_max_coc,
    generate_scene,
    stereo_motorcycle_scene,
)
from svblur.data.transforms import record_to_sample
from svblur.degradation import random_gaussian_noise, random_jpeg
from svblur.degradation.pipeline import CameraPrior, DefocusBlur, SamplePipeline
from svblur.degradation.resize import imresize

HR = (48, 64)
KEYS = ("lr", "hr", "blur", "seg", "depth")


@pytest.fixture(scope="module")
def dataset() -> SyntheticDefocus:
    return SyntheticDefocus(num_samples=16, hr_size=HR, split="train", seed=3)


@pytest.fixture(scope="module")
def scenes() -> list:
    return [generate_scene(np.random.default_rng([7, i]), (96, 128)) for i in range(8)]


def _horizontal_pairs(scene) -> tuple[np.ndarray, np.ndarray]:
    """Relative depth jump and class change between horizontal neighbours."""
    d0, d1 = scene.depth[:, :-1], scene.depth[:, 1:]
    jump = np.abs(d0 - d1) / np.minimum(d0, d1)
    changed = scene.semantics[:, :-1] != scene.semantics[:, 1:]
    return jump, changed


# ----------------------------------------------------------------------------- scenes


def test_scene_arrays(scenes: list) -> None:
    wall, floor = CLASS_NAMES.index("wall"), CLASS_NAMES.index("floor")
    seen: set[int] = set()
    for scene in scenes:
        assert scene.image.shape == (96, 128, 3) and scene.image.dtype == np.float32
        assert scene.depth.shape == (96, 128) and scene.depth.dtype == np.float32
        assert scene.semantics.shape == (96, 128) and scene.semantics.dtype == np.int64
        # The generator clips to [0, 1]; little of the image may sit at the clip.
        assert np.isin(scene.image, (0.0, 1.0)).mean() < 0.01
        assert np.isfinite(scene.depth).all() and scene.depth.min() > 425.0  # > 5 f for f = 85 mm
        classes = set(np.unique(scene.semantics).tolist())
        assert {wall, floor} <= classes and len(classes) >= 4  # a room with objects in it
        seen |= classes
        assert scene.source == "procedural"
    assert seen == set(range(len(CLASS_NAMES)))  # every kind occurs in eight scenes


def test_scenes_are_deterministic() -> None:
    a = generate_scene(np.random.default_rng(5), (64, 64))
    b = generate_scene(np.random.default_rng(5), (64, 64))
    c = generate_scene(np.random.default_rng(6), (64, 64))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.depth, b.depth)
    assert not np.array_equal(a.image, c.image)


def test_depth_discontinuities_coincide_with_semantic_edges(scenes: list) -> None:
    big_jumps, on_edges, scenes_with_jumps = 0, 0, 0
    for scene in scenes:
        jump, changed = _horizontal_pairs(scene)
        big = jump > 0.1
        big_jumps += int(big.sum())
        on_edges += int((big & changed).sum())
        scenes_with_jumps += bool(big.any())
    assert scenes_with_jumps == len(scenes)
    # Only overlapping objects of the same class may jump in depth without a class edge.
    assert on_edges / big_jumps > 0.8


def test_decals_change_class_without_changing_depth(scenes: list) -> None:
    host_of = {
        CLASS_NAMES.index("picture"): CLASS_NAMES.index("wall"),
        CLASS_NAMES.index("rug"): CLASS_NAMES.index("floor"),
    }
    with_decal = 0
    for scene in scenes:
        jump, changed = _horizontal_pairs(scene)
        left, right = scene.semantics[:, :-1], scene.semantics[:, 1:]
        decal_edge = np.zeros_like(changed)
        for decal, host in host_of.items():
            decal_edge |= ((left == decal) & (right == host)) | ((left == host) & (right == decal))
        # A decal edge is a class edge with no more depth change than the host's slant.
        assert jump[decal_edge].max(initial=0.0) < 0.02
        with_decal += int(decal_edge.sum()) >= 3
    assert with_decal >= len(scenes) - 2


def test_wall_and_floor_are_slanted_and_continuous(scenes: list) -> None:
    wall, floor = CLASS_NAMES.index("wall"), CLASS_NAMES.index("floor")
    slanted = 0
    for scene in scenes:
        depth = scene.depth[scene.semantics == wall]
        slanted += depth.max() / depth.min() > 1.05
        jump, _ = _horizontal_pairs(scene)
        both_wall = (scene.semantics[:, :-1] == wall) & (scene.semantics[:, 1:] == wall)
        both_floor = (scene.semantics[:, :-1] == floor) & (scene.semantics[:, 1:] == floor)
        assert jump[both_wall].max() < 0.02
        assert jump[both_floor].max(initial=0.0) < 0.02
    assert slanted >= len(scenes) // 2


def test_textures_have_high_frequency_content(scenes: list) -> None:
    for scene in scenes:
        grey = scene.image.mean(axis=2)
        detail = np.abs(grey[:, 1:] - grey[:, :-1]).mean() + np.abs(grey[1:] - grey[:-1]).mean()
        assert detail > 0.02


def test_fewer_classes_merge_kinds() -> None:
    full = generate_scene(np.random.default_rng(1), (64, 64))
    merged = generate_scene(np.random.default_rng(1), (64, 64), num_classes=3)
    # Same scene; kind k becomes class k * 3 // 8 (neighbouring kinds merge).
    np.testing.assert_array_equal(merged.image, full.image)
    np.testing.assert_array_equal(merged.semantics, full.semantics * 3 // 8)
    assert len(np.unique(full.semantics)) > len(np.unique(merged.semantics)) > 1


def test_motorcycle_scene_is_real_rgbd_without_labels() -> None:
    scene = stereo_motorcycle_scene(np.random.default_rng(0), (96, 128))
    assert scene.image.shape == (96, 128, 3) and scene.image.std() > 0.05
    assert np.isfinite(scene.depth).all()
    assert 1000.0 < scene.depth.min() and scene.depth.max() < 6000.0
    assert scene.depth.max() / scene.depth.min() > 1.1
    assert (scene.semantics == IGNORE_INDEX).all()


# ----------------------------------------------------------------------------- samples


def test_sample_shapes_dtypes_and_values(dataset: SyntheticDefocus) -> None:
    max_sigma = (dataset.max_coc - 1) / 4
    for index in range(len(dataset)):
        sample, rendered = dataset[index], dataset.render(index)
        assert set(sample) == set(KEYS)
        assert (
            sample["lr"].shape == (3, HR[0] // 4, HR[1] // 4)
            and sample["lr"].dtype == torch.float32
        )
        assert sample["hr"].shape == (3, *HR) and sample["hr"].dtype == torch.float32
        assert sample["blur"].shape == (1, *HR) and sample["blur"].dtype == torch.float32
        assert sample["seg"].shape == HR and sample["seg"].dtype == torch.int64
        assert sample["depth"].shape == (1, *HR) and sample["depth"].dtype == torch.float32
        # Without augmentation an item is the rendered sample, channels first.
        np.testing.assert_array_equal(sample["hr"].numpy(), rendered.hr.transpose(2, 0, 1))
        np.testing.assert_array_equal(sample["blur"][0].numpy(), rendered.blur)
        np.testing.assert_array_equal(sample["seg"].numpy(), rendered.seg)
        np.testing.assert_array_equal(sample["depth"][0].numpy(), rendered.depth)
        assert (sample["depth"] > 0).all() and torch.isfinite(sample["depth"]).all()
        blur = sample["blur"]
        if dataset.is_space_invariant(index):
            assert blur.unique().numel() == 1 and 0 <= float(blur.max()) <= max_sigma
        else:  # the f-number is solved so that the largest CoC is max_coc
            assert float(blur.max()) == pytest.approx(max_sigma, abs=1e-6)
            assert float(blur.min()) == 0.0  # the focus is on a depth of the scene


def test_blur_is_meaningful_and_space_variant(dataset: SyntheticDefocus) -> None:
    variant = [dataset[i]["blur"] for i in range(len(dataset)) if not dataset.is_space_invariant(i)]
    assert all(b.std() > 0 for b in variant)
    assert max(float(b.max()) for b in variant) == pytest.approx(
        (dataset.max_coc - 1) / 4, abs=0.05
    )


def test_deterministic_per_seed_split_index() -> None:
    a = SyntheticDefocus(num_samples=4, hr_size=HR, seed=11, cache=False)
    b = SyntheticDefocus(num_samples=4, hr_size=HR, seed=11)
    for index in (0, 3):
        first, again, other = a[index], b[index], a[index]
        for key in KEYS:
            assert torch.equal(first[key], again[key]), key
            assert torch.equal(first[key], other[key]), key
    assert not torch.equal(a[0]["hr"], a[1]["hr"])
    val = SyntheticDefocus(num_samples=4, hr_size=HR, seed=11, split="val")
    assert not torch.equal(a[0]["hr"], val[0]["hr"])
    reseeded = SyntheticDefocus(num_samples=4, hr_size=HR, seed=12)
    assert not torch.equal(a[0]["hr"], reseeded[0]["hr"])


def test_lr_is_imresize_of_blurred_hr(dataset: SyntheticDefocus) -> None:
    for index in (0, 3):
        rendered = dataset.render(index)
        expected = np.clip(imresize(rendered.hr_blurred, 0.25), 0, 1).transpose(2, 0, 1)
        np.testing.assert_allclose(dataset[index]["lr"].numpy(), expected, atol=1e-6)
        # The blurred image, not the sharp one, is what LR is made from (unless in focus).
        if rendered.blur.max() > 0:
            assert not np.allclose(rendered.hr_blurred, rendered.hr)


def test_exactly_a_quarter_space_invariant(dataset: SyntheticDefocus) -> None:
    uniform = [
        bool((dataset[i]["blur"] == dataset[i]["blur"][0, 0, 0]).all()) for i in range(len(dataset))
    ]
    assert sum(uniform) == len(dataset) // 4
    assert uniform == [dataset.is_space_invariant(i) for i in range(len(dataset))]


def test_camera_sampling(dataset: SyntheticDefocus) -> None:
    for index in range(len(dataset)):
        rendered = dataset.render(index)
        if not rendered.space_invariant:
            assert np.any(rendered.depth == np.float32(rendered.focus_distance_mm))
    # The focal length follows focal_weights: all weight on one length picks only it.
    focal = [dataset.render(i).focal_length_mm for i in range(len(dataset))]
    assert set(focal) == {50.0, 70.0, 85.0}  # 16 draws at weights 1/9, 4/9, 4/9
    prior = CameraPrior(focal_weights=(0.0, 1.0, 0.0))
    only_70 = SyntheticDefocus(
        num_samples=4, hr_size=HR, seed=3, degradation=SamplePipeline(DefocusBlur(prior))
    )
    assert [only_70.render(i).focal_length_mm for i in range(4)] == [70.0] * 4


def test_real_crops_are_included_and_unlabelled() -> None:
    ds = SyntheticDefocus(
        num_samples=8, hr_size=HR, real_fraction=0.5, space_invariant_fraction=0.25
    )
    real = [i for i in range(8) if ds.is_real(i)]
    assert len(real) == 3 and not any(ds.is_space_invariant(i) for i in real)
    assert ds.render(real[0]).source == "stereo_motorcycle"
    assert (ds[real[0]]["seg"] == IGNORE_INDEX).all()
    assert ds[real[0]]["blur"].std() > 0


def test_other_num_classes() -> None:
    ds = SyntheticDefocus(num_samples=2, hr_size=HR, num_classes=4, real_fraction=0.0)
    eight = SyntheticDefocus(num_samples=2, hr_size=HR, num_classes=8, real_fraction=0.0)
    for index in range(2):  # the same scenes, kinds merged in pairs
        assert torch.equal(ds[index]["seg"], eight[index]["seg"] * 4 // 8)
        assert torch.equal(ds[index]["hr"], eight[index]["hr"])


def test_default_max_coc_scales_with_width() -> None:
    assert default_max_coc(640) == 29.0
    assert default_max_coc(320) == 15.0
    assert default_max_coc(128) == 9.0


# ----------------------------------------------------------------------------- augmentation


def _record(sigma: float) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    hr = rng.random((*HR, 3)).astype(np.float32)
    seg = np.zeros(HR, np.int64)
    seg[:, HR[1] // 2 :] = 3
    seg[:2] = IGNORE_INDEX
    return {
        "hr": hr,
        "hr_blurred": hr.copy(),
        "blur": np.full(HR, sigma, np.float32),
        "seg": seg,
        "depth": np.linspace(1000, 2000, HR[0] * HR[1], dtype=np.float32).reshape(HR),
    }


@pytest.mark.parametrize(("sigma_scaling", "factor"), [("physical", 1.5), ("released", 1 / 1.5)])
def test_zoom_scales_sigma(sigma_scaling: str, factor: float) -> None:
    augment = DefocusAugment(HR, 4, flip_p=0.0, zooms=(1.5,), sigma_scaling=sigma_scaling)
    out = augment(_record(1.2), np.random.default_rng(0))
    np.testing.assert_allclose(out["blur"], 1.2 * factor, rtol=1e-6)
    assert out["hr"].shape == (*HR, 3) and out["hr_blurred"].shape == (*HR, 3)
    # The augmentation makes no LR: the data set makes it once, after augmenting.
    assert "lr" not in out
    # Labels are resampled nearest-neighbour: no class appears that was not there.
    assert {0, 3} <= set(np.unique(out["seg"])) <= {0, 3, IGNORE_INDEX}
    # LR is made from the augmented (here: unblurred) HR.
    lr = record_to_sample(out, 4)["lr"]
    assert lr.shape == (HR[0] // 4, HR[1] // 4, 3)
    np.testing.assert_allclose(lr, np.clip(imresize(out["hr"], 0.25), 0, 1), atol=1e-6)


def test_zoom_scales_sigma_of_real_samples() -> None:
    ds = SyntheticDefocus(num_samples=3, hr_size=HR, real_fraction=0.0)
    record = ds.render(0).record()
    out = DefocusAugment(HR, 4, flip_p=0.0, zooms=(1.5,))(record, np.random.default_rng(1))
    assert out["blur"].max() == pytest.approx(1.5 * record["blur"].max(), rel=1e-5)
    assert set(np.unique(out["blur"] / 1.5).round(4)) <= set(np.unique(record["blur"]).round(4))


def test_flip_is_consistent_across_maps() -> None:
    record = _record(0.5)
    out = DefocusAugment(HR, 4, flip_p=1.0, zooms=(1.0,))(record, np.random.default_rng(0))
    np.testing.assert_array_equal(out["hr"], record["hr"][:, ::-1])
    np.testing.assert_array_equal(out["seg"], record["seg"][:, ::-1])
    np.testing.assert_array_equal(out["depth"], record["depth"][:, ::-1])


def test_augmented_dataset_varies_but_keeps_shapes() -> None:
    ds = SyntheticDefocus(num_samples=2, hr_size=HR, augment=True, real_fraction=0.0)
    draws = [ds[0] for _ in range(6)]
    assert all(
        d["hr"].shape == (3, *HR) and d["lr"].shape == (3, HR[0] // 4, HR[1] // 4) for d in draws
    )
    assert any(not torch.equal(draws[0]["hr"], d["hr"]) for d in draws[1:])
    # The cached render is untouched by augmentation.
    assert torch.equal(
        SyntheticDefocus(num_samples=2, hr_size=HR, real_fraction=0.0)[0]["hr"],
        torch.from_numpy(ds.render(0).hr.transpose(2, 0, 1).copy()),
    )


# ----------------------------------------------------------------------------- DataModule


def test_datamodule_batches() -> None:
    dm = DefocusDataModule(
        train_size=8,
        val_size=4,
        test_size=4,
        hr_size=HR,
        batch_size=4,
        num_workers=0,
        num_classes=5,
    )
    assert dm.num_classes == 5 and dm.persistent_workers is False
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["lr"].shape == (4, 3, HR[0] // 4, HR[1] // 4)
    assert batch["hr"].shape == (4, 3, *HR)
    assert batch["blur"].shape == (4, 1, *HR)
    assert batch["seg"].shape == (4, *HR) and batch["seg"].dtype == torch.int64
    assert batch["depth"].shape == (4, 1, *HR)
    assert len(dm.val_dataloader()) == 1
    val = next(iter(dm.val_dataloader()))  # in order, not augmented
    for key in KEYS:
        assert torch.equal(val[key], torch.stack([dm.datasets["val"][i][key] for i in range(4)]))
    dm.setup("test")
    assert next(iter(dm.test_dataloader()))["hr"].shape == (4, 3, *HR)
    assert dm.datasets["train"].augment is not None and dm.datasets["val"].augment is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"hr_size": (50, 64)}, "hr_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"train_size": 0}, "train_size"),
        ({"real_fraction": 1.5}, "real_fraction"),
        ({"sigma_scaling": "inverse"}, "sigma_scaling"),
        ({"num_classes": 1}, "num_classes"),
    ],
)
def test_datamodule_rejects_bad_arguments(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        DefocusDataModule(**{"hr_size": HR, **kwargs})


def test_camera_prior_rejects_bad_weights() -> None:
    with pytest.raises(ValueError, match="focal_weights"):
        CameraPrior((50.0, 70.0), (1.0,))


def test_hr_size_error_says_what_is_expected() -> None:
    with pytest.raises(ValueError, match=r"hr_size.*divisible by scale=4.*\(48, 64\)"):
        SyntheticDefocus(hr_size=(50, 66))
    with pytest.raises(ValueError, match="split"):
        SyntheticDefocus(hr_size=HR, split="training")


def _noisy_pipeline() -> SamplePipeline:
    noise = [
        functools.partial(random_gaussian_noise, sigma_range=(0.004, 0.02), gray_prob=0.4),
        functools.partial(random_jpeg, quality_range=(90, 95)),
    ]
    return SamplePipeline(DefocusBlur(), noise=noise, scale=4)


@pytest.mark.parametrize("noisy", [False, True])
def test_lr_is_made_once_from_the_augmented_blurred_hr(noisy: bool) -> None:
    pipeline = _noisy_pipeline() if noisy else None
    seen: list[dict[str, np.ndarray]] = []

    def augment(record: dict[str, np.ndarray], rng: np.random.Generator) -> dict:
        seen.append(DefocusAugment(HR, 4, flip_p=1.0, zooms=(1.2,))(record, rng))
        return seen[-1]

    ds = SyntheticDefocus(
        num_samples=2, hr_size=HR, augment=augment, real_fraction=0.0, degradation=pipeline
    )
    item = ds[(1, 4)]
    hr_blurred = seen[-1]["hr_blurred"]
    if noisy:  # the LR steps draw from the stream of (seed, split, index, 3, epoch)
        expected = ds.pipeline.to_lr(hr_blurred, np.random.default_rng([0, 0, 1, 3, 4]))
    else:
        expected = np.clip(imresize(hr_blurred, 0.25), 0, 1)
    np.testing.assert_array_equal(item["lr"].numpy(), expected.transpose(2, 0, 1))


# Per item, (sum, sum weighted by linspace(0, 1)) of `lr` and `hr`, as the data set gave
# them before the LR image moved out of DefocusAugment (issue #22): items (1, epoch 2) and
# 3 (epoch 0 with augmentation) of a training split with seed 5. The samples of a seed
# must not change.
FIXED_SEED_STATS = {
    ("bicubic", False): [
        {"lr": (57.5784, 24.1821), "hr": (922.2572, 388.3289)},
        {"lr": (58.0329, 24.3193), "hr": (928.526, 389.7609)},
    ],
    ("bicubic", True): [
        {"lr": (57.5784, 24.1821), "hr": (922.2572, 388.3289)},
        {"lr": (56.1952, 23.0836), "hr": (904.3682, 369.9727)},
    ],
    ("noisy", False): [
        {"lr": (57.9608, 24.3946), "hr": (922.2572, 388.3289)},
        {"lr": (58.2039, 24.5398), "hr": (928.526, 389.7609)},
    ],
    ("noisy", True): [
        {"lr": (57.9608, 24.3946), "hr": (922.2572, 388.3289)},
        {"lr": (56.0863, 22.9046), "hr": (904.3682, 369.9727)},
    ],
}


@pytest.mark.parametrize(("pipeline", "augment"), sorted(FIXED_SEED_STATS))
def test_samples_of_a_fixed_seed_do_not_change(pipeline: str, augment: bool) -> None:
    ds = SyntheticDefocus(
        num_samples=4,
        hr_size=(32, 32),
        seed=5,
        augment=augment,
        degradation=_noisy_pipeline() if pipeline == "noisy" else None,
        real_fraction=0.0,
        cache=False,
    )
    items = [ds[(1, 2)], ds[(3, 0)] if augment else ds[3]]
    for item, expected in zip(items, FIXED_SEED_STATS[(pipeline, augment)]):
        assert set(item) == {"lr", "hr", "blur", "seg", "depth"}
        for key, (total, weighted) in expected.items():
            values = item[key].double().numpy().ravel()
            weights = np.linspace(0.0, 1.0, values.size)
            assert values.sum() == pytest.approx(total, abs=2e-4), key
            assert (values * weights).sum() == pytest.approx(weighted, abs=2e-4), key


def test_bad_labels_name_the_sample() -> None:
    def corrupt(record: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        out = DefocusAugment(HR, 4, flip_p=0.0, zooms=(1.0,))(record, rng)
        out["seg"] = np.full_like(out["seg"], 9)
        return out

    ds = SyntheticDefocus(num_samples=2, hr_size=HR, augment=corrupt, real_fraction=0.0)
    with pytest.raises(ValueError, match=r"sample 1 .*labels \[9\]"):
        ds[1]
