"""Noise, JPEG and Real-ESRGAN's second-order degradation: statistics, monotonicity, seeding."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from svblur.degradation.noise import (
    add_gaussian_noise,
    add_poisson_noise,
    jpeg_compress,
    jpeg_encode,
    random_gaussian_noise,
    random_jpeg,
    random_poisson_noise,
)
from svblur.degradation.second_order import (
    KERNEL_TYPES,
    SecondOrderDegradation,
    degrade_second_order,
)

# Tolerances below are this many standard errors of the estimate.
Z = 5.0


def _grey(value: float, shape: tuple[int, int] = (256, 256)) -> np.ndarray:
    return np.full((*shape, 3), value, dtype=np.float32)


def _textured(height: int = 96, width: int = 128, seed: int = 0) -> np.ndarray:
    """Colour sinusoids plus a fine random texture, in [0, 1]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    waves = [
        np.sin(2 * np.pi * x / (11 + 4 * c)) * np.cos(2 * np.pi * y / (13 + 3 * c))
        for c in range(3)
    ]
    texture = cv2.GaussianBlur(rng.random((height, width, 3)), (0, 0), 1.0)
    return np.clip(0.5 + 0.3 * np.stack(waves, -1) + 0.3 * (texture - 0.5), 0, 1).astype(np.float32)


# --------------------------------------------------------------------------- Gaussian
def test_gaussian_noise_has_zero_mean_and_sigma_std() -> None:
    image = _grey(0.5)  # 0.5 is 12 sigma from both clip bounds
    sigma = 10 / 255
    noise = (add_gaussian_noise(image, np.random.default_rng(0), sigma) - image).astype(np.float64)
    n = noise.size
    assert abs(noise.mean()) < Z * sigma / np.sqrt(n)
    assert abs(noise.std() - sigma) < Z * sigma / np.sqrt(2 * n)


def test_gray_gaussian_noise_is_shared_and_colour_noise_independent() -> None:
    image = _grey(0.5)
    sigma = 20 / 255
    gray = add_gaussian_noise(image, np.random.default_rng(1), sigma, gray=True) - image
    np.testing.assert_array_equal(gray[..., 0], gray[..., 1])
    np.testing.assert_array_equal(gray[..., 0], gray[..., 2])
    assert abs(gray.std() - sigma) < Z * sigma / np.sqrt(2 * gray[..., 0].size)

    colour = add_gaussian_noise(image, np.random.default_rng(1), sigma) - image
    channels = colour.reshape(-1, 3).T
    correlation = np.corrcoef(channels)
    n = channels.shape[1]
    off_diagonal = correlation[~np.eye(3, dtype=bool)]
    assert np.abs(off_diagonal).max() < Z / np.sqrt(n)


def test_random_gaussian_noise_draws_level_and_grey_choice() -> None:
    image = _grey(0.5, (128, 128))
    sigma = 15 / 255
    noise = random_gaussian_noise(image, np.random.default_rng(2), (sigma, sigma), gray_prob=1.0)
    noise = noise - image
    np.testing.assert_array_equal(noise[..., 0], noise[..., 2])
    assert abs(noise.std() - sigma) < Z * sigma / np.sqrt(2 * noise[..., 0].size)
    colour = random_gaussian_noise(image, np.random.default_rng(2), (sigma, sigma), gray_prob=0.0)
    assert not np.array_equal(colour[..., 0], colour[..., 2])


def test_gaussian_noise_clips_and_keeps_dtype() -> None:
    image = np.zeros((32, 32, 3), dtype=np.float64)
    out = add_gaussian_noise(image, np.random.default_rng(0), 0.5)
    assert out.dtype == np.float64
    assert out.min() == 0.0 and out.max() <= 1.0
    # Half of the samples are negative and clipped to 0.
    assert abs((out == 0).mean() - 0.5) < Z * 0.5 / np.sqrt(out.size)


# --------------------------------------------------------------------------- Poisson
def test_poisson_noise_variance_grows_with_intensity() -> None:
    levels, scale = 256, 1.0
    codes = [26, 64, 102, 153]  # exact 8-bit values, 0.10 .. 0.60
    image = np.concatenate([_grey(k / 255, (128, 128)) for k in codes], axis=1)
    noise = (
        add_poisson_noise(image, np.random.default_rng(3), scale, levels=levels) - image
    ).astype(np.float64)
    variances = []
    for i, k in enumerate(codes):
        patch = noise[:, 128 * i : 128 * (i + 1)]
        expected = scale**2 * (k / 255) / levels
        n = patch.size
        assert abs(patch.mean()) < Z * np.sqrt(expected / n)
        assert abs(patch.var() / expected - 1) < Z * np.sqrt(2 / n)
        variances.append(patch.var())
    assert np.all(np.diff(variances) > 0)


def test_poisson_noise_scale_multiplies_the_std() -> None:
    image = _grey(102 / 255)
    scale = 2.5
    noise = add_poisson_noise(image, np.random.default_rng(4), scale, levels=256) - image
    expected = scale**2 * (102 / 255) / 256
    assert abs(noise.var() / expected - 1) < Z * np.sqrt(2 / noise.size)


def test_poisson_levels_follow_real_esrgan_rule() -> None:
    # All 256 8-bit values: levels = 256.
    ramp = np.repeat((np.arange(256) / 255).reshape(16, 16, 1), 3, axis=2).astype(np.float32)
    np.testing.assert_array_equal(
        add_poisson_noise(ramp, np.random.default_rng(5), 1.0),
        add_poisson_noise(ramp, np.random.default_rng(5), 1.0, levels=256),
    )
    # Three distinct values: levels = 4 (the next power of two).
    few = np.stack([_grey(k / 255, (8, 8)) for k in (0, 100, 200)]).reshape(24, 8, 3)
    np.testing.assert_array_equal(
        add_poisson_noise(few, np.random.default_rng(5), 1.0),
        add_poisson_noise(few, np.random.default_rng(5), 1.0, levels=4),
    )
    assert not np.array_equal(
        add_poisson_noise(few, np.random.default_rng(5), 1.0),
        add_poisson_noise(few, np.random.default_rng(5), 1.0, levels=256),
    )


def test_gray_poisson_noise_is_shared_by_channels() -> None:
    image = _textured()
    out = add_poisson_noise(image, np.random.default_rng(6), 0.5, gray=True)
    noise = out - image
    unclipped = (out > 0).all(-1) & (out < 1).all(-1)
    np.testing.assert_allclose(noise[..., 0][unclipped], noise[..., 1][unclipped], atol=1e-6)
    np.testing.assert_allclose(noise[..., 0][unclipped], noise[..., 2][unclipped], atol=1e-6)
    assert np.abs(noise).max() > 0


# --------------------------------------------------------------------------- seeding, layouts
NOISES = {
    "gaussian": lambda img, rng: add_gaussian_noise(img, rng, 0.05),
    "random_gaussian": random_gaussian_noise,
    "poisson": lambda img, rng: add_poisson_noise(img, rng, 1.0),
    "random_poisson": random_poisson_noise,
    "random_jpeg": random_jpeg,
}


@pytest.mark.parametrize("name", sorted(NOISES))
def test_same_seed_same_output_other_seed_other_output(name: str) -> None:
    fn = NOISES[name]
    image = _textured(48, 64)
    first = fn(image, np.random.default_rng(7))
    np.testing.assert_array_equal(first, fn(image, np.random.default_rng(7)))
    others = [fn(image, np.random.default_rng(seed)) for seed in (8, 9, 10)]
    # random_jpeg draws one of 66 qualities, so one of three other seeds must differ.
    assert any(not np.array_equal(first, other) for other in others)


@pytest.mark.parametrize("name", sorted(NOISES))
def test_tensor_layout_matches_numpy(name: str) -> None:
    fn = NOISES[name]
    image = _textured(24, 32)
    expected = fn(image, np.random.default_rng(11))
    tensor = torch.from_numpy(image).permute(2, 0, 1)
    single = fn(tensor, np.random.default_rng(11))
    assert single.shape == tensor.shape and single.dtype == torch.float32
    np.testing.assert_allclose(single.permute(1, 2, 0).numpy(), expected, atol=1e-7)
    batch = fn(torch.stack([tensor, tensor]), np.random.default_rng(11))
    assert batch.shape == (2, *tensor.shape)
    np.testing.assert_allclose(batch[0].permute(1, 2, 0).numpy(), expected, atol=1e-7)


def test_noise_rejects_bad_input() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(TypeError, match="floating-point"):
        add_gaussian_noise(np.zeros((4, 4, 3), np.uint8), rng, 0.1)
    with pytest.raises(ValueError, match="sigma"):
        add_gaussian_noise(_grey(0.5, (4, 4)), rng, -0.1)
    with pytest.raises(ValueError, match="3 \\(RGB\\)"):
        add_poisson_noise(np.zeros((4, 4, 2), np.float32), rng, 1.0, gray=True)


# --------------------------------------------------------------------------- JPEG
def test_jpeg_error_falls_and_size_grows_with_quality() -> None:
    image = _textured()
    qualities = [10, 30, 50, 70, 90]
    sizes = [len(jpeg_encode(image, q)) for q in qualities]
    errors = [np.mean((jpeg_compress(image, q) - image) ** 2) for q in qualities]
    assert np.all(np.diff(sizes) > 0)
    assert np.all(np.diff(errors) < 0)


def test_jpeg_output_shape_dtype_and_grid() -> None:
    for dtype in (np.float32, np.float64):
        image = _textured(37, 53).astype(dtype)
        out = jpeg_compress(image, 75)
        assert out.shape == image.shape and out.dtype == dtype
        np.testing.assert_allclose(out * 255, np.round(out * 255), atol=1e-4)


def test_jpeg_quality_100_reproduces_a_grey_image() -> None:
    # With equal channels the chroma planes are flat, so 4:2:0 subsampling loses nothing.
    grey = cv2.GaussianBlur(np.random.default_rng(0).random((96, 128)), (0, 0), 1.0)
    grey = (grey - grey.min()) / (grey.max() - grey.min())
    image = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    out = jpeg_compress(image, 100)
    assert np.abs(out - np.round(image * 255) / 255).max() <= 1 / 255 + 1e-6


def test_random_jpeg_with_one_quality_is_jpeg_compress() -> None:
    image = _textured(32, 32)
    np.testing.assert_array_equal(
        random_jpeg(image, np.random.default_rng(0), (42, 42)), jpeg_compress(image, 42)
    )
    with pytest.raises(ValueError, match="quality"):
        jpeg_compress(image, 101)


# --------------------------------------------------------------------------- second order
ALL_OFF = dict(
    blur_prob=0.0,
    second_blur_prob=0.0,
    resize_prob=(0.0, 0.0, 1.0),
    resize_prob2=(0.0, 0.0, 1.0),
    noise_prob=0.0,
    noise_prob2=0.0,
    jpeg_prob=0.0,
    jpeg_prob2=0.0,
    final_sinc_prob=0.0,
    resize_modes=("area",),
    quantize=False,
)


def test_defaults_are_real_esrgan_x4plus() -> None:
    d = SecondOrderDegradation()
    assert d.scale == 4 and d.kernel_range == (7, 21)
    assert d.kernel_list == KERNEL_TYPES == d.kernel_list2
    assert d.kernel_prob == (0.45, 0.25, 0.12, 0.03, 0.12, 0.03) == d.kernel_prob2
    assert (d.sinc_prob, d.sinc_prob2, d.final_sinc_prob) == (0.1, 0.1, 0.8)
    assert (d.blur_sigma, d.blur_sigma2) == ((0.2, 3.0), (0.2, 1.5))
    assert d.betag_range == (0.5, 4.0) and d.betap_range == (1.0, 2.0)
    assert (d.resize_prob, d.resize_range) == ((0.2, 0.7, 0.1), (0.15, 1.5))
    assert (d.resize_prob2, d.resize_range2) == ((0.3, 0.4, 0.3), (0.3, 1.2))
    assert (d.noise_range, d.noise_range2) == ((1.0, 30.0), (1.0, 25.0))
    assert (d.poisson_scale_range, d.poisson_scale_range2) == ((0.05, 3.0), (0.05, 2.5))
    assert d.gaussian_noise_prob == d.gaussian_noise_prob2 == 0.5
    assert d.gray_noise_prob == d.gray_noise_prob2 == 0.4
    assert d.jpeg_range == d.jpeg_range2 == (30, 95)
    assert d.second_blur_prob == 0.8 and d.quantize


@pytest.mark.parametrize("size", [(64, 64), (67, 90), (33, 130)])
def test_second_order_shape_range_and_grid(size: tuple[int, int]) -> None:
    image = _textured(*size)
    for seed in range(4):
        out = SecondOrderDegradation()(image, np.random.default_rng(seed))
        assert out.shape == (size[0] // 4, size[1] // 4, 3) and out.dtype == np.float32
        assert out.min() >= 0 and out.max() <= 1
        np.testing.assert_allclose(out * 255, np.round(out * 255), atol=1e-4)
    out = degrade_second_order(image.astype(np.float64), np.random.default_rng(0), scale=2)
    assert out.shape == (size[0] // 2, size[1] // 2, 3) and out.dtype == np.float64


def test_second_order_is_deterministic_per_seed() -> None:
    image = _textured()
    d = SecondOrderDegradation()
    first = d(image, np.random.default_rng(12))
    np.testing.assert_array_equal(first, d(image, np.random.default_rng(12)))
    for seed in (13, 14):
        assert not np.array_equal(first, d(image, np.random.default_rng(seed)))


def test_second_order_with_every_stage_off_is_a_plain_resize() -> None:
    image = _textured(67, 90)
    out = degrade_second_order(image, np.random.default_rng(0), **ALL_OFF)
    expected = cv2.resize(image, (90 // 4, 67 // 4), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(out, np.clip(expected, 0, 1))


@pytest.mark.parametrize(
    "stage",
    [
        {"blur_prob": 1.0},
        {"second_blur_prob": 1.0},
        {"resize_prob": (0.0, 1.0, 0.0)},
        {"resize_prob2": (1.0, 0.0, 0.0)},
        {"noise_prob": 1.0},
        {"noise_prob2": 1.0},
        {"jpeg_prob": 1.0},
        {"jpeg_prob2": 1.0},
        {"final_sinc_prob": 1.0},
    ],
)
def test_each_stage_switches_on_alone(stage: dict[str, object]) -> None:
    image = _textured(64, 64)
    plain = degrade_second_order(image, np.random.default_rng(0), **ALL_OFF)
    out = degrade_second_order(image, np.random.default_rng(0), **{**ALL_OFF, **stage})
    assert out.shape == plain.shape
    assert np.abs(out - plain).mean() > 1e-3


def test_second_order_on_tensors() -> None:
    image = _textured(64, 80)
    d = SecondOrderDegradation()
    expected = d(image, np.random.default_rng(15))
    tensor = torch.from_numpy(image).permute(2, 0, 1)
    single = d(tensor, np.random.default_rng(15))
    np.testing.assert_allclose(single.permute(1, 2, 0).numpy(), expected, atol=1e-6)
    batch = d(torch.stack([tensor, tensor]), np.random.default_rng(15))
    assert batch.shape == (2, 3, 16, 20)
    np.testing.assert_allclose(batch[0].permute(1, 2, 0).numpy(), expected, atol=1e-6)
    assert not torch.equal(batch[0], batch[1])  # each image draws its own degradation


def test_blur_kernels_cover_the_odd_sizes_and_are_normalised() -> None:
    d = SecondOrderDegradation(kernel_list=("iso",), kernel_prob=(1.0,), sinc_prob=0.0)
    rng = np.random.default_rng(16)
    sizes = set()
    for _ in range(200):
        kernel = d.sample_blur_kernel(rng)
        sizes.add(kernel.shape[0])
        assert kernel.shape[0] == kernel.shape[1]
        assert abs(kernel.sum() - 1) < 1e-9 and kernel.min() >= 0
        np.testing.assert_allclose(kernel, kernel.T, atol=1e-12)  # isotropic
    # P(an odd size is never drawn in 200 draws) = 8 * (7/8)^200 < 1e-10.
    assert sizes == set(range(7, 22, 2))
    sinc = SecondOrderDegradation(sinc_prob2=1.0).sample_blur_kernel(rng, stage=2)
    assert sinc.min() < 0 and abs(sinc.sum() - 1) < 1e-9


@pytest.mark.parametrize("kind", KERNEL_TYPES)
def test_every_kernel_family_is_drawn_normalised(kind: str) -> None:
    d = SecondOrderDegradation(kernel_list=(kind,), kernel_prob=(1.0,), sinc_prob=0.0)
    rng = np.random.default_rng(17)
    kernels = [d.sample_blur_kernel(rng) for _ in range(20)]
    for kernel in kernels:
        assert abs(kernel.sum() - 1) < 1e-9 and kernel.min() >= 0
        assert np.unravel_index(kernel.argmax(), kernel.shape) == (kernel.shape[0] // 2,) * 2
    symmetric = [np.allclose(k, k.T, atol=1e-12) for k in kernels]
    # Isotropic kernels are symmetric; rotated anisotropic ones almost never are.
    assert all(symmetric) if kind.endswith("_iso") or kind == "iso" else not any(symmetric)


def test_config_lists_are_accepted_and_bad_ranges_rejected() -> None:
    d = SecondOrderDegradation(resize_prob=[0.2, 0.7, 0.1], kernel_range=[7, 13])
    assert d.resize_prob == (0.2, 0.7, 0.1) and d.kernel_range == (7, 13)
    with pytest.raises(ValueError, match="odd"):
        SecondOrderDegradation(kernel_range=(6, 21))
    with pytest.raises(ValueError, match="up, down, keep"):
        SecondOrderDegradation(resize_prob2=(0.5, 0.5))
    with pytest.raises(ValueError, match="unknown kernel"):
        SecondOrderDegradation(kernel_list=("box",), kernel_prob=(1.0,))
    with pytest.raises(ValueError, match="smaller than the scale"):
        SecondOrderDegradation()(_grey(0.5, (3, 8)), np.random.default_rng(0))
