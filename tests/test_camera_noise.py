"""Processed camera-sensor noise (Brooks et al.'s unprocess / noise / process) and BSRGAN's
optional ``camera`` step that uses it: the exact round trip, the noise statistics against
a first-order prediction, seeding, odd sizes, the parameter ranges and the step's
probability."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from svblur.conf import config_dir
from svblur.degradation import BSRGANDegradation, add_camera_sensor_noise, draw_camera_params
from svblur.degradation.camera_noise import (
    CAMERA_PARAM_KEYS,
    GAMMA,
    add_raw_noise,
    demosaic,
    mosaic,
    process,
    unprocess,
)

DRAWS = 2000


def _camera(seed: int, **overrides: float) -> dict:
    return {**draw_camera_params(np.random.default_rng(seed)), **overrides}


def _smoothstep(x: np.ndarray) -> np.ndarray:
    return 3 * x**2 - 2 * x**3


def _gains(params: dict) -> np.ndarray:
    return params["rgb_gain"] * np.array([params["red_gain"], 1.0, params["blue_gain"]])


# ------------------------------------------------------------------- the round trip


@pytest.mark.parametrize("seed", range(6))
def test_process_undoes_unprocess_for_every_value_in_0_1(seed):
    params = _camera(seed)
    image = np.random.default_rng(100 + seed).random((31, 45, 3))
    image[0, :3] = [[0, 0, 0], [1, 1, 1], [0, 1, 0]]  # the ends of the range, a saturated green
    np.testing.assert_allclose(process(unprocess(image, params), params), image, atol=1e-10)
    float32 = image.astype(np.float32)
    np.testing.assert_allclose(process(unprocess(float32, params), params), float32, atol=1e-6)


def test_unprocess_inverts_the_tone_curve_and_the_gamma_and_divides_the_gains():
    params = _camera(3)
    levels = np.linspace(0.0, 1.0, 11)
    grey = np.repeat(levels[:, None, None], 3, axis=2)  # (11, 1, 3)
    raw = unprocess(grey, params)[:, 0]
    # rows of rgb2cam sum to 1, so a grey stays grey in camera RGB before the gains
    camera = raw * _gains(params)
    np.testing.assert_allclose(camera, camera[:, :1].repeat(3, axis=1), atol=1e-12)
    # the linear value t^2.2 of each level, pushed through the smoothstep, is the level
    np.testing.assert_allclose(_smoothstep(camera[:, 0] ** (1 / GAMMA)), levels, atol=1e-12)
    np.testing.assert_allclose(raw[-1], 1 / _gains(params), rtol=1e-12)  # white


def test_without_noise_a_flat_image_comes_back_and_others_change_only_by_demosaicking():
    params = _camera(1, shot_noise=0.0, read_noise=0.0)
    rng = np.random.default_rng(0)
    flat = np.full((16, 20, 3), [0.2, 0.55, 0.9], np.float32)
    np.testing.assert_allclose(add_camera_sensor_noise(flat, rng, params), flat, atol=1e-6)
    # the reference: the same pipeline with the mosaic and the demosaicking by hand
    image = rng.random((16, 20, 3))
    expected = process(demosaic(mosaic(unprocess(image, params))), params)
    np.testing.assert_allclose(add_camera_sensor_noise(image, rng, params), expected, atol=1e-12)


def test_bilinear_demosaicking_reproduces_linear_ramps_inside_and_constants_everywhere():
    rows, cols = np.mgrid[0:12, 0:15].astype(np.float64)
    ramp = np.stack([0.1 + 0.03 * rows, 0.2 + 0.02 * cols, 0.05 + 0.01 * rows + 0.02 * cols], -1)
    np.testing.assert_allclose(demosaic(mosaic(ramp))[1:-1, 1:-1], ramp[1:-1, 1:-1], atol=1e-12)
    constant = np.broadcast_to([0.3, 0.6, 0.8], (5, 7, 3))
    np.testing.assert_allclose(demosaic(mosaic(constant)), constant, atol=1e-12)
    bayer = mosaic(ramp)
    assert bayer[0, 0] == ramp[0, 0, 0] and bayer[1, 1] == ramp[1, 1, 2]  # RGGB
    assert bayer[0, 1] == ramp[0, 1, 1] and bayer[1, 0] == ramp[1, 0, 1]


# ------------------------------------------------------------------- the noise


def test_raw_noise_variance_is_shot_times_signal_plus_read():
    signal = np.repeat([[0.05], [0.3], [0.8]], 40000, axis=1)
    noisy = add_raw_noise(signal, np.random.default_rng(0), 4e-3, 1e-4)
    np.testing.assert_allclose(noisy.var(axis=1), 4e-3 * signal[:, 0] + 1e-4, rtol=0.03)
    np.testing.assert_allclose(noisy.mean(axis=1), signal[:, 0], atol=3e-4)
    with pytest.raises(ValueError, match="variances"):
        add_raw_noise(signal, np.random.default_rng(0), -1.0, 0.0)


def test_the_noise_at_red_sites_of_a_grey_image_matches_the_first_order_prediction():
    """Grey 0.5 at red photosites (even row and column): red is the site's own noisy
    sample, green and blue means of four independent neighbours; the gains and cam2rgb
    mix them linearly, and the gamma + smoothstep scales the standard deviation by their
    derivative (the delta method, accurate for small noise)."""
    params = _camera(2, shot_noise=2e-4, read_noise=2e-6)
    size = 160
    out = add_camera_sensor_noise(np.full((size, size, 3), 0.5), np.random.default_rng(4), params)
    red_sites = out[2:-2:2, 2:-2:2].reshape(-1, 3)

    gains = _gains(params)
    linear = 0.5**GAMMA  # the smoothstep's inverse keeps 0.5; grey stays grey in camera RGB
    raw = linear / gains
    raw_var = (params["shot_noise"] * raw + params["read_noise"]) * np.array([1, 1 / 4, 1 / 4])
    cam2rgb = np.linalg.inv(np.asarray(params["rgb2cam"]))
    linear_var = np.diag(cam2rgb @ np.diag(gains**2 * raw_var) @ cam2rgb.T)
    tone = linear ** (1 / GAMMA)
    slope = (6 * tone - 6 * tone**2) * tone / (GAMMA * linear)
    np.testing.assert_allclose(red_sites.var(axis=0), slope**2 * linear_var, rtol=0.1)
    np.testing.assert_allclose(red_sites.mean(axis=0), 0.5, atol=2e-3)


def test_the_noise_grows_with_the_shot_level_and_keeps_the_mean():
    grey = np.full((64, 64, 3), 0.5)
    variances, means = [], []
    for shot in (0.0, 1e-4, 1e-3, 1e-2):
        params = _camera(5, shot_noise=shot, read_noise=0.0)
        out = add_camera_sensor_noise(grey, np.random.default_rng(0), params)
        variances.append(out.var(axis=(0, 1)).mean())
        means.append(out.mean(axis=(0, 1)))
    assert variances[0] < 1e-20
    assert variances[1] > 1e-5 and all(b > 3 * a for a, b in zip(variances[1:], variances[2:]))
    np.testing.assert_allclose(means, 0.5, atol=0.02)


def test_a_seed_gives_one_noise_field():
    image = np.random.default_rng(0).random((24, 30, 3)).astype(np.float32)
    params = _camera(7)
    a = add_camera_sensor_noise(image, np.random.default_rng(11), params)
    b = add_camera_sensor_noise(image, np.random.default_rng(11), params)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, add_camera_sensor_noise(image, np.random.default_rng(12), params))
    assert draw_camera_params(np.random.default_rng(3)) == draw_camera_params(
        np.random.default_rng(3)
    )


@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (7, 1), (7, 3), (33, 47)])
def test_odd_and_tiny_sizes(shape):
    flat = np.full((*shape, 3), [0.7, 0.4, 0.1], np.float32)
    quiet = _camera(0, shot_noise=0.0, read_noise=0.0)
    out = add_camera_sensor_noise(flat, np.random.default_rng(0), quiet)
    assert out.shape == flat.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, flat, atol=1e-6)
    noisy = add_camera_sensor_noise(flat, np.random.default_rng(0), _camera(0, shot_noise=1e-2))
    assert noisy.shape == flat.shape and 0 <= noisy.min() and noisy.max() <= 1
    assert not np.allclose(noisy, flat)


def test_bad_input_is_refused_with_the_field_named():
    params = _camera(0)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        add_camera_sensor_noise(np.zeros((8, 8)), rng, params)
    with pytest.raises(ValueError, match="float"):
        add_camera_sensor_noise(np.zeros((8, 8, 3), np.uint8), rng, params)
    with pytest.raises(ValueError, match="read_noise"):
        add_camera_sensor_noise(
            np.zeros((8, 8, 3)), rng, {k: params[k] for k in params if k != "read_noise"}
        )
    with pytest.raises(ValueError, match="red_gain"):
        add_camera_sensor_noise(np.zeros((8, 8, 3)), rng, {**params, "red_gain": 0.0})
    with pytest.raises(ValueError, match="rgb2cam"):
        add_camera_sensor_noise(np.zeros((8, 8, 3)), rng, {**params, "rgb2cam": np.zeros((3, 3))})


# ------------------------------------------------------------------- the parameters


def test_camera_parameters_follow_brooks_ranges():
    draws = [draw_camera_params(np.random.default_rng(seed)) for seed in range(DRAWS)]
    json.dumps(draws[:5])
    assert all(tuple(d) == CAMERA_PARAM_KEYS for d in draws)
    ccms = np.array([d["rgb2cam"] for d in draws])
    np.testing.assert_allclose(ccms.sum(axis=2), 1.0, atol=1e-12)  # white stays white
    assert (np.linalg.det(ccms) > 0).all() and (np.diagonal(ccms, axis1=1, axis2=2) > 0).all()
    assert len({c.tobytes() for c in ccms}) == DRAWS
    inverse_gain = 1 / np.array([d["rgb_gain"] for d in draws])
    assert abs(inverse_gain.mean() - 0.8) < 0.01 and abs(inverse_gain.std() - 0.1) < 0.01
    red = np.array([d["red_gain"] for d in draws])
    blue = np.array([d["blue_gain"] for d in draws])
    assert 1.9 <= red.min() < 1.91 and 2.39 < red.max() <= 2.4
    assert 1.5 <= blue.min() < 1.51 and 1.89 < blue.max() <= 1.9
    log_shot = np.log([d["shot_noise"] for d in draws])
    low, high = math.log(1e-4), math.log(1.2e-2)
    assert low <= log_shot.min() < low + 0.05 and high - 0.05 < log_shot.max() <= high
    assert abs(log_shot.mean() - (low + high) / 2) < 0.1  # uniform in the log
    residual = np.log([d["read_noise"] for d in draws]) - (2.18 * log_shot + 1.20)
    assert abs(residual.mean()) < 0.03 and abs(residual.std() - 0.26) < 0.015
    assert np.abs(residual).max() < 6 * 0.26


# ------------------------------------------------------------------- BSRGAN's camera step


def test_camera_prob_adds_only_the_camera_draw_to_the_plan():
    for seed in range(30):
        off = BSRGANDegradation(camera_prob=0.0).draw(np.random.default_rng(seed))
        on = BSRGANDegradation(camera_prob=1.0).draw(np.random.default_rng(seed))
        assert off.steps["camera"] == {} and tuple(on.steps["camera"]) == CAMERA_PARAM_KEYS
        assert dataclasses.replace(on, steps={**on.steps, "camera": {}}) == off
        json.dumps(on.as_dict())


def test_the_camera_step_is_the_camera_noise_function_in_the_plans_order():
    """A plan with the camera step moved first equals the noise function followed by the
    same plan without it, drawing from the same generator (x2: no pre-downsample runs
    before the shuffled steps)."""
    degradation = BSRGANDegradation(scale=2, camera_prob=1.0)
    image = np.random.default_rng(0).random((64, 72, 3)).astype(np.float32)
    for seed in range(4):
        plan = degradation.draw(np.random.default_rng(seed))
        order = ("camera", *(name for name in plan.order if name != "camera"))
        first = dataclasses.replace(plan, order=order)
        without = dataclasses.replace(first, steps={**plan.steps, "camera": {}})
        lr = degradation.apply(image, first, np.random.default_rng(50 + seed))
        rng = np.random.default_rng(50 + seed)
        noisy = add_camera_sensor_noise(image, rng, plan.steps["camera"])
        np.testing.assert_array_equal(lr, degradation.apply(noisy, without, rng))
        assert not np.array_equal(lr, degradation.apply(image, without, np.random.default_rng(0)))
        # in the drawn order too, the camera step changes the image
        drawn = degradation.apply(image, plan, np.random.default_rng(9))
        assert not np.array_equal(
            drawn, degradation.apply(image, without, np.random.default_rng(9))
        )


def test_camera_prob_sets_how_often_the_step_applies():
    plans = [BSRGANDegradation().draw(np.random.default_rng(seed)) for seed in range(DRAWS)]
    assert all(plan.steps["camera"] == {} for plan in plans)  # the default never applies it
    quarter = BSRGANDegradation(camera_prob=0.25)
    count = sum(bool(quarter.draw(np.random.default_rng(s)).steps["camera"]) for s in range(DRAWS))
    assert abs(count - 0.25 * DRAWS) <= 5 * math.sqrt(DRAWS * 0.25 * 0.75)
    with pytest.raises(ValueError, match="camera_prob"):
        BSRGANDegradation(camera_prob=1.5)


def test_the_bsrgan_config_keeps_the_release_default():
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=config_dir()):
            cfg = compose("train", overrides=["degradation=bsrgan"])
    finally:
        GlobalHydra.instance().clear()
    assert cfg.degradation.downsample.camera_prob == 0.0
    pipeline = instantiate(cfg.degradation, _convert_="all")
    assert pipeline.downsample.camera_prob == 0.0
