"""BSRGAN's degradation (``degradation=bsrgan``) and Real-ESRGAN's (``degradation=realesrgan``):
the shuffled order, each step's ranges, the output size, photos without depth, the configs
that use them and ``svblur-degrade``'s exit status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from skimage import data as skdata

from svblur.conf import config_dir
from svblur.degradation import (
    BSRGANDegradation,
    BSRGANPlan,
    PartialBlur,
    SamplePipeline,
    SceneInput,
    SecondOrderDegradation,
    add_correlated_gaussian_noise,
    add_gaussian_noise,
)
from svblur.degradation.bsrgan import BSRGAN_STEPS, NOISE_KINDS

DRAWS = 3000


def compose_train(*overrides: str):
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=config_dir()):
            return compose("train", overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()


@pytest.fixture(scope="module")
def plans() -> list[BSRGANPlan]:
    degradation = BSRGANDegradation(scale=4)
    return [degradation.draw(np.random.default_rng(seed)) for seed in range(DRAWS)]


def _within(count: int, prob: float, n: int = DRAWS) -> bool:
    """Whether ``count`` of ``n`` is within 5 standard deviations of ``n * prob``."""
    return abs(count - n * prob) <= 5 * np.sqrt(n * prob * (1 - prob)) + 1


# ------------------------------------------------------------------- the order


def test_the_order_is_shuffled_with_the_downsampling_before_the_resize(plans):
    positions = {name: Counter() for name in BSRGAN_STEPS}
    for plan in plans:
        assert sorted(plan.order) == sorted(BSRGAN_STEPS)
        assert plan.order.index("downsample") < plan.order.index("resize")
        for position, name in enumerate(plan.order):
            positions[name][position] += 1
    # the five free steps take every place, uniformly (1/7 each)
    for name in ("blur_1", "blur_2", "noise", "jpeg", "camera"):
        assert set(positions[name]) == set(range(7)), name
        assert all(_within(positions[name][p], 1 / 7) for p in range(7)), positions[name]
    # the ordered pair: the down-sampling never last, the resize never first
    assert set(positions["downsample"]) == set(range(6))
    assert set(positions["resize"]) == set(range(1, 7))
    # the down-sampling takes the earlier of the pair's two places: the first with
    # probability 2/7, the last place of the resize likewise
    assert _within(positions["downsample"][0], 2 / 7)
    assert _within(positions["resize"][6], 2 / 7)
    assert len({plan.order for plan in plans}) > DRAWS // 2


# ------------------------------------------------------------------- the ranges


def test_each_step_draws_in_its_documented_range(plans):
    kinds, sizes, noise_kinds, levels, qualities = Counter(), Counter(), Counter(), Counter(), []
    prescaled, skipped_jpeg, nearest = 0, 0, 0
    for plan in plans:
        sf = plan.stage_scale
        assert plan.scale == 4
        assert (plan.prescale is None and sf == 4) or (
            plan.prescale in ("matlab", "bilinear", "bicubic", "area") and sf == 2
        )
        prescaled += plan.prescale is not None
        for name in ("blur_1", "blur_2"):
            blur = plan.steps[name]
            kinds[blur["kind"]] += 1
            sizes[blur["size"]] += 1
            if blur["kind"] == "iso":
                assert 0.0 <= blur["sigma"] <= 2.0 + 0.2 * sf
            else:
                assert all(0.0 <= v <= 4.0 + sf for v in blur["variances"])
                assert 0.0 <= blur["theta"] <= np.pi
        down = plan.steps["downsample"]
        if down["kind"] == "resize":
            assert 1.0 <= down["factor"] <= 2.0 * sf
            assert down["mode"] in ("bilinear", "bicubic", "area")
        else:
            nearest += 1
            assert down["kind"] == "nearest" and 0.1 <= down["sigma"] <= 0.6 * sf
        assert plan.steps["resize"]["mode"] in ("bilinear", "bicubic", "area")
        noise = plan.steps["noise"]
        noise_kinds[noise["kind"]] += 1
        levels[noise["level"]] += 1
        assert isinstance(noise["level"], int) and 2 <= noise["level"] <= 25
        if noise["kind"] == "correlated":
            cov = np.asarray(noise["covariance"])
            assert noise["level"] == 25 and cov.shape == (3, 3) and (cov >= 0).all()
            np.testing.assert_allclose(cov, cov.T)
            assert np.trace(cov) <= 3 * (25 / 255) ** 2 + 1e-12
        quality = plan.steps["jpeg"]["quality"]
        skipped_jpeg += quality is None
        qualities += [q for q in (quality, plan.final_jpeg) if q is not None]
        assert plan.steps["camera"] == {}
    assert set(sizes) == set(range(7, 26, 2))
    assert _within(kinds["aniso"], 0.5, 2 * DRAWS)
    assert min(qualities) == 30 and max(qualities) == 95
    assert all(isinstance(q, int) for q in qualities)
    assert {2, 25} <= set(levels)
    assert _within(prescaled, 0.25) and _within(skipped_jpeg, 0.1) and _within(nearest, 0.25)
    for kind, prob in zip(NOISE_KINDS, (0.4, 0.4, 0.2)):
        assert _within(noise_kinds[kind], prob), noise_kinds
    json.dumps([plan.as_dict() for plan in plans[:20]])  # a record, JSON-serialisable


def test_the_pre_downsample_is_only_for_x4():
    for scale in (2, 3):
        degradation = BSRGANDegradation(scale=scale)
        plans = [degradation.draw(np.random.default_rng(seed)) for seed in range(300)]
        assert all(p.prescale is None and p.stage_scale == scale for p in plans)
        assert max(p.steps["downsample"].get("factor", 1.0) for p in plans) > scale


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="odd"):
        BSRGANDegradation(kernel_range=(6, 25))
    with pytest.raises(ValueError, match="probability"):
        BSRGANDegradation(jpeg_prob=1.5)
    with pytest.raises(ValueError, match="resize_modes"):
        BSRGANDegradation(resize_modes=("lanczos",))
    with pytest.raises(ValueError, match="noise_kind_prob"):
        BSRGANDegradation(noise_kind_prob=(0.5, 0.5))
    with pytest.raises(ValueError, match="smaller than the scale"):
        BSRGANDegradation()(np.zeros((3, 8, 3), np.float32), np.random.default_rng(0))


# ------------------------------------------------------------------- the image


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_the_lr_image_is_the_hr_size_over_the_scale_on_the_8bit_grid(scale):
    degradation = BSRGANDegradation(scale=scale)
    rng = np.random.default_rng(0)
    for height, width in ((64, 80), (67, 45), (32, 48)):
        image = rng.random((height, width, 3)).astype(np.float32)
        for seed in range(12):
            lr = degradation(image, np.random.default_rng(seed))
            assert lr.shape == (height // scale, width // scale, 3) and lr.dtype == np.float32
            assert 0.0 <= lr.min() and lr.max() <= 1.0
            np.testing.assert_allclose(lr * 255, np.round(lr * 255), atol=1e-4)


def test_a_seed_gives_one_image_and_tensors_follow_the_numpy_path():
    image = np.random.default_rng(1).random((48, 64, 3))
    degradation = BSRGANDegradation()
    a = degradation(image, np.random.default_rng(7))
    b = degradation(image, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float64
    assert not np.array_equal(a, degradation(image, np.random.default_rng(8)))
    tensor = torch.from_numpy(image.transpose(2, 0, 1).copy())
    out = degradation(tensor, np.random.default_rng(7))
    np.testing.assert_array_equal(out.numpy().transpose(1, 2, 0), a)
    batch = degradation(torch.stack([tensor, tensor]), np.random.default_rng(7))
    assert batch.shape == (2, 3, 12, 16)


def _quiet_plan(downsample: dict, order: tuple[str, ...] = BSRGAN_STEPS) -> BSRGANPlan:
    """Every step but the down-sampling (almost) the identity; final JPEG at quality 100."""
    delta = {"kind": "iso", "size": 7, "sigma": 0.0}
    steps = {
        "blur_1": delta,
        "blur_2": delta,
        "downsample": downsample,
        "resize": {"mode": "bilinear"},
        "noise": {"kind": "color", "level": 0},
        "jpeg": {"quality": None},
        "camera": {},
    }
    return BSRGANPlan(4, None, 4, order, steps, 100)


def test_the_nearest_variant_keeps_the_centre_of_each_block():
    """A horizontal ramp: the LR pixel m of the shifted-Gaussian + nearest variant is the
    ramp at the centre of HR block m, x = 4 m + 1.5, not at its corner x = 4 m."""
    width = 96
    ramp = np.tile((np.arange(width) / (width - 1) * 0.8 + 0.1)[None, :, None], (32, 1, 3))
    plan = _quiet_plan({"kind": "nearest", "sigma": 1.2})
    lr = BSRGANDegradation().apply(ramp.astype(np.float32), plan, np.random.default_rng(0))
    expected = ((4 * np.arange(width // 4) + 1.5) / (width - 1) * 0.8 + 0.1)[2:-2]
    np.testing.assert_allclose(lr[2:-2, 2:-2, 1].mean(0), expected, atol=1.5 / 255)


def test_the_down_up_variant_enlarges_to_the_target_size():
    image = np.random.default_rng(0).random((64, 96, 3)).astype(np.float32)
    shrink = _quiet_plan({"kind": "resize", "factor": 7.5, "mode": "area"})
    lr = BSRGANDegradation().apply(image, shrink, np.random.default_rng(0))
    assert lr.shape == (16, 24, 3)
    # shrunk to 8x12 then enlarged: smoother than the direct x4 shrink
    direct = _quiet_plan({"kind": "resize", "factor": 4.0, "mode": "area"})
    sharp = BSRGANDegradation().apply(image, direct, np.random.default_rng(0))
    assert np.abs(np.diff(lr, axis=1)).mean() < 0.7 * np.abs(np.diff(sharp, axis=1)).mean()


def test_grey_colour_and_correlated_noise():
    grey = np.full((96, 96, 3), 0.5)
    rng = np.random.default_rng(0)
    shared = add_gaussian_noise(grey, rng, 10 / 255, gray=True) - grey
    np.testing.assert_array_equal(shared[..., 0], shared[..., 2])
    basis = np.linalg.svd(np.random.default_rng(3).random((3, 3)))[0]
    cov = (25 / 255) ** 2 * basis.T @ np.diag([0.9, 0.5, 0.1]) @ basis
    noise = add_correlated_gaussian_noise(grey, rng, cov) - grey
    np.testing.assert_allclose(np.cov(noise.reshape(-1, 3).T), cov, atol=4e-4)
    with pytest.raises(ValueError, match="symmetric"):
        add_correlated_gaussian_noise(grey, rng, np.arange(9.0).reshape(3, 3))


# ------------------------------------------------------------------- photos and configs


@pytest.mark.parametrize("name", ["bsrgan", "realesrgan"])
def test_both_degrade_a_photo_without_depth(name):
    cfg = compose_train(f"degradation={name}")
    pipeline: SamplePipeline = instantiate(cfg.degradation, _convert_="all")
    expected = BSRGANDegradation if name == "bsrgan" else SecondOrderDegradation
    assert pipeline.blur is None and isinstance(pipeline.downsample, expected)
    photo = skdata.chelsea()[:296, :448].astype(np.float32) / 255  # a cat, no depth
    sample = pipeline(SceneInput(photo), np.random.default_rng(0))
    assert set(sample) == {"lr", "hr"} and sample["lr"].shape == (74, 112, 3)
    assert np.abs(sample["lr"] - cv2.resize(photo, (112, 74), cv2.INTER_AREA)).mean() > 0.005
    # degradation/blur= adds svblur's blur of the HR image before the LR model
    blurred = instantiate(
        compose_train(f"degradation={name}", "degradation/blur=partial").degradation,
        _convert_="all",
    )
    assert isinstance(blurred.blur, PartialBlur) and isinstance(blurred.downsample, expected)


def test_the_paper_experiment_and_the_pbasr_data_use_bsrgan():
    target = "svblur.degradation.BSRGANDegradation"
    cfg = compose_train("experiment=reblursr_pbasr")
    assert cfg.degradation.downsample._target_ == target
    assert cfg.data.general.degradation.downsample._target_ == target
    assert cfg.data.blur.degradation.downsample._target_ == target
    cfg = compose_train("data=pbasr_synthetic")
    for half in ("general", "blur"):
        assert cfg.data[half].degradation.downsample._target_ == target


# ------------------------------------------------------------------- svblur-degrade


def _degrade(tmp_path: Path, name: str, source: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("svblur-degrade")
    return subprocess.run(
        [str(exe), f"input={source}", f"output={tmp_path / name}", f"degradation={name}"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_svblur_degrade_on_a_photo_and_its_exit_status_when_an_input_fails(tmp_path):
    photo = cv2.cvtColor(skdata.chelsea()[:128, :160], cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(tmp_path / "photo.png"), photo)
    result = _degrade(tmp_path, "bsrgan", tmp_path / "photo.png")
    assert result.returncode == 0, result.stderr[-3000:]
    assert cv2.imread(str(tmp_path / "bsrgan" / "photo_lr.png")).shape == (32, 40, 3)

    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), photo)
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    result = _degrade(tmp_path, "realesrgan", folder)
    assert result.returncode == 1
    assert "1 of 2 inputs failed: b.png" in result.stderr
    assert "skipping b.png" in result.stdout + result.stderr
    summary = json.loads((tmp_path / "realesrgan" / "summary.json").read_text())
    assert summary["processed"] == ["a.png"] and list(summary["failed"]) == ["b.png"]
    assert cv2.imread(str(tmp_path / "realesrgan" / "a_lr.png")).shape == (32, 40, 3)
