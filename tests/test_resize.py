"""Tests for the MATLAB-compatible bicubic ``imresize``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from svblur.degradation.resize import imresize


def _reference_imresize_axis(signal: np.ndarray, scale: float) -> np.ndarray:
    """Independent per-output-pixel loop over MATLAB's bicubic contributions (1-D)."""

    def cubic(x: float) -> float:
        ax = abs(x)
        if ax <= 1:
            return 1.5 * ax**3 - 2.5 * ax**2 + 1
        if ax <= 2:
            return -0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2
        return 0.0

    n = len(signal)
    out_n = math.ceil(n * scale)
    support = 2.0 / scale if scale < 1 else 2.0  # half width of the (stretched) kernel
    out = np.zeros(out_n)
    for i in range(out_n):
        centre = (i + 1) / scale + 0.5 * (1 - 1 / scale)  # 1-based input coordinate
        total, weight_sum = 0.0, 0.0
        for k in range(math.floor(centre - support) - 1, math.ceil(centre + support) + 2):
            d = centre - k
            w = scale * cubic(scale * d) if scale < 1 else cubic(d)
            if w == 0:
                continue
            # Mirror the 1-based index k into [1, n], repeating the edge sample.
            j = k
            while j < 1 or j > n:
                j = 1 - j if j < 1 else 2 * n + 1 - j
            total += w * signal[j - 1]
            weight_sum += w
        out[i] = total / weight_sum
    return out


def _reference_imresize(image: np.ndarray, scale: float) -> np.ndarray:
    rows = np.stack([_reference_imresize_axis(col, scale) for col in image.T], axis=1)
    return np.stack([_reference_imresize_axis(row, scale) for row in rows], axis=0)


def _reference_imresize_rgb(image: np.ndarray, scale: float) -> np.ndarray:
    channels = [_reference_imresize(image[:, :, c].astype(np.float64), scale) for c in range(3)]
    return np.stack(channels, axis=2)


def test_matlab_known_values() -> None:
    # MATLAB: imresize([1 2 3 4], 0.5) -> [1.4609 3.5391];
    #         imresize([1 2 3 4], 2)   -> [0.9062 1.1797 1.7266 2.2500 2.7500 3.2734 3.8203 4.0938]
    # (exact binary fractions, derived by hand from the a = -0.5 kernel).
    row = np.array([[1.0, 2.0, 3.0, 4.0]])
    np.testing.assert_allclose(imresize(row, 0.5), [[1.4609375, 3.5390625]], atol=1e-12)
    up = imresize(row, 2.0)
    expected = [0.90625, 1.1796875, 1.7265625, 2.25, 2.75, 3.2734375, 3.8203125, 4.09375]
    assert up.shape == (2, 8)
    np.testing.assert_allclose(up[0], expected, atol=1e-12)
    np.testing.assert_allclose(up[1], expected, atol=1e-12)


@pytest.mark.parametrize("scale", [0.25, 0.5, 1 / 3, 2.0, 0.3])
def test_matches_independent_loop(scale: float) -> None:
    rng = np.random.default_rng(0)
    image = rng.random((11, 13))
    np.testing.assert_allclose(
        imresize(image, scale), _reference_imresize(image, scale), atol=1e-12
    )


def test_constant_image_quarter_is_exact() -> None:
    image = np.full((32, 48, 3), 0.37, dtype=np.float64)
    out = imresize(image, 0.25)
    assert out.shape == (8, 12, 3)
    np.testing.assert_allclose(out, 0.37, atol=1e-14)


def test_linear_ramp_preserved_in_interior() -> None:
    # The cubic kernel reproduces linear functions; away from borders a ramp stays a ramp.
    image = np.tile(np.arange(64, dtype=np.float64), (8, 1))
    out = imresize(image, 0.25)
    interior = out[:, 3:-3]
    # Output pixel j (0-based) is centred on input coordinate 4 j + 1.5.
    expected = 4 * np.arange(16, dtype=np.float64)[3:-3] + 1.5
    np.testing.assert_allclose(interior, np.broadcast_to(expected, interior.shape), atol=1e-10)


def test_output_size_is_ceil() -> None:
    assert imresize(np.zeros((10, 7)), 0.25).shape == (3, 2)
    assert imresize(torch.zeros(2, 3, 10, 7), 0.25).shape == (2, 3, 3, 2)


def test_numpy_and_torch_agree_and_keep_dtype() -> None:
    rng = np.random.default_rng(1)
    image = rng.random((24, 20, 3)).astype(np.float32)
    out_np = imresize(image, 0.25)
    out_t = imresize(torch.from_numpy(image).permute(2, 0, 1), 0.25)
    assert out_np.dtype == np.float32
    assert out_t.dtype == torch.float32
    np.testing.assert_allclose(out_t.permute(1, 2, 0).numpy(), out_np, atol=1e-5)
    batched = imresize(torch.from_numpy(image).permute(2, 0, 1)[None].double(), 0.25)
    assert batched.shape == (1, 3, 6, 5) and batched.dtype == torch.float64
    np.testing.assert_allclose(
        batched[0].permute(1, 2, 0).numpy(), _reference_imresize_rgb(image, 0.25), atol=1e-12
    )


def test_rejects_bad_inputs() -> None:
    with pytest.raises(TypeError, match="floating-point"):
        imresize(np.zeros((4, 4), dtype=np.uint8), 0.5)
    with pytest.raises(ValueError, match="scale"):
        imresize(np.zeros((4, 4)), 0.0)
    with pytest.raises(ValueError, match="shape"):
        imresize(np.zeros((2, 4, 4, 3)), 0.5)
