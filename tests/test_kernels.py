"""Blur kernels, kernel fields and applying them, against closed forms and explicit loops."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import scipy.special
import torch
import torch.nn.functional as F

from svblur.degradation.fields import (
    apply_kernel,
    apply_kernel_field,
    depth_gaussian_field,
    field_from_kernel,
    focus_at_quantile,
    gaussian_field,
    iter_patch_rows,
    motion_field,
    signed_defocus,
)
from svblur.degradation.kernels import (
    gaussian_kernel,
    generalized_gaussian_kernel,
    linear_motion_kernel,
    motion_kernel,
    plateau_kernel,
    sinc_kernel,
)

NUMPY_PAD = {"reflect": "reflect", "zeros": "constant", "replicate": "edge"}


def offsets(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Column offsets x and row offsets y of the taps from the kernel centre."""
    centre = (size - 1) / 2
    rows, cols = np.mgrid[:size, :size].astype(np.float64)
    return cols - centre, rows - centre


def quadratic_form_loop(size: int, sx: float, sy: float, theta: float) -> np.ndarray:
    """x^T S^-1 x tap by tap, with S built from its eigen-decomposition."""
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    inverse = np.linalg.inv(rotation @ np.diag([sx**2, sy**2]) @ rotation.T)
    c = (size - 1) / 2
    q = np.empty((size, size))
    for i in range(size):
        for j in range(size):
            v = np.array([j - c, i - c])
            q[i, j] = v @ inverse @ v
    return q


def second_moments(kernel: np.ndarray) -> tuple[float, float, float, float, float]:
    """Centre of mass (x, y) and central moments (xx, yy, xy) of a kernel."""
    x, y = offsets(kernel.shape[0])
    mx, my = (kernel * x).sum(), (kernel * y).sum()
    dx, dy = x - mx, y - my
    return mx, my, (kernel * dx * dx).sum(), (kernel * dy * dy).sum(), (kernel * dx * dy).sum()


# --------------------------------------------------------------------------- Gaussian family
@pytest.mark.parametrize(("size", "sx", "sy", "theta"), [(7, 1.5, 0.8, 0.6), (8, 2.0, 1.1, -1.2)])
def test_gaussian_matches_closed_form(size: int, sx: float, sy: float, theta: float) -> None:
    expected = np.exp(-0.5 * quadratic_form_loop(size, sx, sy, theta))
    kernel = gaussian_kernel(size, sx, sy, theta)
    assert isinstance(kernel, np.ndarray) and kernel.dtype == np.float64
    assert kernel.shape == (size, size)
    np.testing.assert_allclose(kernel, expected / expected.sum(), rtol=1e-12, atol=1e-15)
    # ratios to the centre at a few points (odd size): exp(-q / 2)
    if size % 2:
        c = size // 2
        for di, dj in [(0, 1), (2, -1), (-3, 3)]:
            ratio = kernel[c + di, c + dj] / kernel[c, c]
            assert ratio == pytest.approx(expected[c + di, c + dj], rel=1e-12)


def test_isotropic_gaussian_is_separable_closed_form() -> None:
    kernel = gaussian_kernel(9, 1.3)
    np.testing.assert_array_equal(kernel, gaussian_kernel(9, 1.3, 1.3, 0.0))
    np.testing.assert_allclose(kernel, gaussian_kernel(9, 1.3, 1.3, 0.9), atol=1e-15)
    taps = np.exp(-((np.arange(9) - 4.0) ** 2) / (2 * 1.3**2))
    np.testing.assert_allclose(kernel, np.outer(taps, taps) / taps.sum() ** 2, atol=1e-15)


def test_gaussian_rotation_convention() -> None:
    wide = gaussian_kernel(9, 2.0, 0.7)
    # theta = pi/2 swaps the axes: sigma_x now runs down the rows
    np.testing.assert_allclose(gaussian_kernel(9, 2.0, 0.7, math.pi / 2), wide.T, atol=1e-15)
    np.testing.assert_allclose(gaussian_kernel(9, 0.7, 2.0), wide.T, atol=1e-15)
    _, _, xx, yy, _ = second_moments(wide)
    assert xx > 4 * yy  # sigma_x is the horizontal axis at theta = 0
    # theta turns +x towards +y (downwards): the long axis runs top-left to bottom-right
    assert second_moments(gaussian_kernel(9, 2.0, 0.7, math.pi / 4))[4] > 1.0


@pytest.mark.parametrize("size", [1, 4, 5, 21])
def test_kernels_are_normalized(size: int) -> None:
    kernels = [
        gaussian_kernel(size, 1.7, 0.6, 0.3),
        generalized_gaussian_kernel(size, 1.7, 0.6, 0.3, beta=0.6),
        plateau_kernel(size, 1.7, 0.6, 0.3, beta=1.5),
        sinc_kernel(size, math.pi / 3),
        linear_motion_kernel(size, 3.5, 20.0),
        motion_kernel(size, np.random.default_rng(1)),
    ]
    for kernel in kernels:
        assert kernel.shape == (size, size)
        assert kernel.sum() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("sigma", [0.0, 1e-9, 1e-7])
def test_zero_sigma_gives_a_delta(sigma: float) -> None:
    delta = np.zeros((5, 5))
    delta[2, 2] = 1.0
    for kernel in (
        gaussian_kernel(5, sigma),
        gaussian_kernel(5, sigma, sigma, 0.7),
        generalized_gaussian_kernel(5, sigma, beta=0.5),
        generalized_gaussian_kernel(5, sigma, beta=4.0),
        plateau_kernel(5, sigma, beta=1.0),
    ):
        assert np.isfinite(kernel).all()
        np.testing.assert_allclose(kernel, delta, atol=1e-11)
    # even size: the centre lies between four taps
    np.testing.assert_allclose(gaussian_kernel(4, sigma)[1:3, 1:3], 0.25, atol=1e-12)
    # one zero-width axis: a 1-D Gaussian along the other axis
    line = gaussian_kernel(5, 1.0, sigma)
    taps = np.exp(-((np.arange(5) - 2.0) ** 2) / 2)
    np.testing.assert_allclose(line[2], taps / taps.sum(), atol=1e-12)
    assert line.sum() == pytest.approx(line[2].sum(), abs=1e-12)
    # float32 tensors: finite kernels and gradients down to sigma = 0
    sigmas = torch.tensor([sigma, 0.5], requires_grad=True)
    kernels = generalized_gaussian_kernel(5, sigmas, beta=torch.tensor(4.0))
    kernels[:, 2, 1].sum().backward()
    assert torch.isfinite(kernels).all() and torch.isfinite(sigmas.grad).all()


def test_generalized_and_plateau_closed_forms() -> None:
    q = quadratic_form_loop(7, 1.4, 0.9, 0.5)
    np.testing.assert_allclose(
        generalized_gaussian_kernel(7, 1.4, 0.9, 0.5, beta=1.0), gaussian_kernel(7, 1.4, 0.9, 0.5)
    )
    for beta in (0.5, 2.0):
        expected = np.exp(-0.5 * q**beta)
        np.testing.assert_allclose(
            generalized_gaussian_kernel(7, 1.4, 0.9, 0.5, beta=beta),
            expected / expected.sum(),
            rtol=1e-12,
        )
        expected = 1.0 / (1.0 + q**beta)
        np.testing.assert_allclose(
            plateau_kernel(7, 1.4, 0.9, 0.5, beta=beta), expected / expected.sum(), rtol=1e-12
        )


def test_sinc_closed_form() -> None:
    cutoff = math.pi / 4
    x, y = offsets(9)
    r = np.hypot(x, y)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = cutoff * scipy.special.j1(cutoff * r) / (2 * math.pi * r)
    expected[4, 4] = cutoff**2 / (4 * math.pi)
    np.testing.assert_allclose(sinc_kernel(9, cutoff), expected / expected.sum(), rtol=1e-12)


def test_torch_batch_matches_numpy_per_item() -> None:
    sx = torch.tensor([0.0, 0.8, 2.5], dtype=torch.float64)
    sy = torch.tensor([1.0, 0.5, 2.5], dtype=torch.float64)
    theta = torch.tensor([0.0, 0.4, -2.0], dtype=torch.float64)
    beta = torch.tensor([0.7, 1.0, 3.0], dtype=torch.float64)
    batched = {
        gaussian_kernel: gaussian_kernel(9, sx, sy, theta),
        generalized_gaussian_kernel: generalized_gaussian_kernel(9, sx, sy, theta, beta),
        plateau_kernel: plateau_kernel(9, sx, sy, theta, beta),
    }
    for function, kernels in batched.items():
        assert isinstance(kernels, torch.Tensor) and kernels.shape == (3, 9, 9)
        assert kernels.dtype == torch.float64
        for n in range(3):
            args = (9, sx[n].item(), sy[n].item(), theta[n].item())
            extra = {} if function is gaussian_kernel else {"beta": beta[n].item()}
            np.testing.assert_allclose(kernels[n].numpy(), function(*args, **extra), atol=1e-14)
    cutoff = torch.tensor([0.5, 2.0], dtype=torch.float32)
    sinc = sinc_kernel(7, cutoff)
    assert sinc.dtype == torch.float32 and sinc.shape == (2, 7, 7)
    np.testing.assert_allclose(sinc[1].numpy(), sinc_kernel(7, 2.0), atol=1e-6)
    lines = linear_motion_kernel(9, torch.tensor([2.0, 5.5]), 30.0)  # a float broadcasts
    np.testing.assert_allclose(lines[1].numpy(), linear_motion_kernel(9, 5.5, 30.0), atol=1e-6)
    # NumPy arrays give a NumPy batch
    assert gaussian_kernel(5, np.array([1.0, 2.0])).shape == (2, 5, 5)


def test_kernel_gradients() -> None:
    def params(*values: float) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float64, requires_grad=True)

    checks = [
        (
            lambda a, b, t: gaussian_kernel(5, a, b, t),
            (params(0.9, 1.6), params(0.7, 2.0), params(0.3, 1.0)),
        ),
        (
            lambda a, t, b: generalized_gaussian_kernel(5, a, None, t, b),
            (params(1.1), params(0.4), params(0.6)),
        ),
        (lambda a, b: plateau_kernel(5, a, beta=b), (params(1.3), params(1.7))),
        (lambda c: sinc_kernel(5, c), (params(0.9, 2.5),)),
        (lambda n, a: linear_motion_kernel(5, n, a), (params(2.3), params(31.0))),
    ]
    for function, inputs in checks:
        assert torch.autograd.gradcheck(function, inputs)
    # the gradient reaches sigma through a loss that depends on the shape
    sigma = params(1.5)
    (gaussian_kernel(7, sigma)[0, 3, 3]).backward()
    assert sigma.grad.item() < 0  # wider kernel, lower peak


def test_kernel_parameter_errors() -> None:
    with pytest.raises(ValueError, match="sigma_x"):
        gaussian_kernel(5, -1.0)
    with pytest.raises(ValueError, match="beta"):
        plateau_kernel(5, 1.0, beta=0.0)
    with pytest.raises(ValueError, match="size"):
        gaussian_kernel(0, 1.0)
    with pytest.raises(ValueError, match="1-D"):
        gaussian_kernel(5, torch.ones(2, 2))


# --------------------------------------------------------------------------- motion
def test_linear_motion_kernel_geometry() -> None:
    horizontal = linear_motion_kernel(21, 8.0, 0.0)
    assert np.abs(horizontal[np.arange(21) != 10]).max() == 0.0  # only the middle row
    mx, my, xx, yy, _ = second_moments(horizontal)
    assert (mx, my) == (pytest.approx(0.0, abs=1e-12), pytest.approx(0.0, abs=1e-12))
    # uniform on [-L/2, L/2] plus the bilinear splat's 1/6
    assert xx == pytest.approx(8.0**2 / 12 + 1 / 6, abs=1e-9) and yy == 0.0
    spreads = [
        second_moments(linear_motion_kernel(21, length, 0.0))[2] for length in (0, 3.3, 9.7, 16.3)
    ]
    assert spreads[0] == 0.0 and spreads == sorted(spreads)
    assert spreads[3] == pytest.approx(16.3**2 / 12 + 1 / 6, abs=0.02)
    np.testing.assert_allclose(linear_motion_kernel(21, 8.0, 90.0), horizontal.T, atol=1e-15)
    np.testing.assert_allclose(linear_motion_kernel(21, 8.0, 180.0), horizontal, atol=1e-15)
    # counter-clockwise on screen: 45 degrees runs bottom-left to top-right (rows grow down)
    diagonal = linear_motion_kernel(21, 8.0, 45.0)
    assert second_moments(diagonal)[4] < -2.0
    assert diagonal[10 - 3, 10 + 3] > 0 and diagonal[10 + 3, 10 + 3] == 0
    delta = linear_motion_kernel(5, 0.0, 10.0)
    assert delta[2, 2] == 1.0


def test_motion_kernel_properties() -> None:
    kernel = motion_kernel(21, np.random.default_rng(7), length=15.0)
    assert kernel.dtype == np.float64 and (kernel >= 0).all()
    assert kernel.sum() == pytest.approx(1.0, abs=1e-12)
    mx, my, *_ = second_moments(kernel)
    assert abs(mx) < 1e-9 and abs(my) < 1e-9  # centred: no mean shift of the image
    np.testing.assert_array_equal(kernel, motion_kernel(21, np.random.default_rng(7), length=15.0))
    assert np.abs(kernel - motion_kernel(21, np.random.default_rng(8), length=15.0)).max() > 1e-3
    assert (kernel > 0).sum() > 15  # a path, not a point
    # anxiety 0: a straight path, all mass on a line through the centre
    straight = motion_kernel(21, np.random.default_rng(3), length=12.0, anxiety=0.0)
    _, _, xx, yy, xy = second_moments(straight)
    eigen = np.linalg.eigvalsh(np.array([[xx, xy], [xy, yy]]))
    assert eigen[1] > 10.0 and eigen[0] < 0.2
    # too long for the support: shrunk to fit, still centred and complete
    long = motion_kernel(9, np.random.default_rng(4), length=100.0)
    assert long.sum() == pytest.approx(1.0, abs=1e-12)
    assert max(map(abs, second_moments(long)[:2])) < 1e-9
    assert motion_kernel(5, np.random.default_rng(0), length=0.0)[2, 2] == pytest.approx(1.0)


# --------------------------------------------------------------------------- fields
def roughness(field: torch.Tensor) -> float:
    """Largest L1 change of the kernel between neighbours over the largest between any pixels."""
    flat = field.reshape(field.shape[0], -1)
    spread = (flat[:, :, None] - flat[:, None, ::97]).abs().sum(0).max()
    step_x = (field[:, :, 1:] - field[:, :, :-1]).abs().sum(0).max()
    step_y = (field[:, 1:] - field[:, :-1]).abs().sum(0).max()
    assert spread > 0.5  # the kernels do vary across the image
    return float(max(step_x, step_y) / spread)


def test_gaussian_field_is_smooth_and_normalized() -> None:
    field = gaussian_field(9, (48, 56), np.random.default_rng(0), correlation_length=48)
    assert field.shape == (81, 48, 56) and field.dtype == torch.float32
    torch.testing.assert_close(field.sum(0), torch.ones(48, 56), atol=1e-5, rtol=0)
    assert field.min() >= 0
    again = gaussian_field(9, (48, 56), np.random.default_rng(0), correlation_length=48)
    torch.testing.assert_close(field, again, atol=0, rtol=0)
    assert roughness(field) < 0.1  # neighbours differ little ...
    rougher = gaussian_field(9, (48, 56), np.random.default_rng(0), correlation_length=12)
    assert roughness(rougher) > 2 * roughness(field)  # ... on the scale of correlation_length
    # every pixel's kernel is a convex blend of the drawn anisotropic Gaussians
    kernels = field.reshape(81, -1).T.double().reshape(-1, 9, 9).numpy()
    widths = [second_moments(k)[2] + second_moments(k)[3] for k in kernels[::211]]
    assert 2 * 0.2**2 * 0.9 < min(widths) and max(widths) < 2 * 4.0**2


def test_depth_gaussian_field_widens_away_from_focus() -> None:
    depth = np.tile(np.linspace(1.0, 9.0, 17), (6, 1))  # depth grows to the right
    field = depth_gaussian_field(torch.from_numpy(depth), 21, focus_depth=3.0, sigma_max=2.0)
    assert field.shape == (441, 6, 17)
    torch.testing.assert_close(field.sum(0), torch.ones(6, 17), atol=1e-5, rtol=0)
    kernels = field[:, 3].T.reshape(17, 21, 21).double().numpy()
    spread = np.array([sum(second_moments(k)[2:4]) for k in kernels])
    distance = np.abs(depth[3] - 3.0)
    order = np.argsort(distance, kind="stable")
    assert (np.diff(spread[order]) >= -1e-6).all()  # wider with distance from focus
    assert spread[4] == pytest.approx(0.0, abs=1e-6)  # depth 3.0: in focus, a delta
    # linear model: sigma = 2 * |z - 3| / 6, and E[x^2 + y^2] = 2 sigma^2
    np.testing.assert_allclose(spread[-1], 2 * 2.0**2, rtol=1e-3)
    # (for sigma >= 0.8 px the sampled Gaussian's variance is sigma^2 to 1e-3)
    np.testing.assert_allclose(spread[10:], 2 * (2.0 * distance[10:] / 6.0) ** 2, rtol=1e-3)


def test_depth_gaussian_field_thin_lens_and_anisotropy() -> None:
    depth = np.array([[1.0, 2.0, 4.0, 8.0]] * 3)
    field = depth_gaussian_field(depth, 9, 2.0, 1.5, model="thin_lens", aspect=0.5, theta=0.3)
    coc = np.abs(depth[0] - 2.0) / depth[0]
    sigma = 1.5 * coc / coc.max()
    for x in range(4):
        expected = gaussian_kernel(9, sigma[x], 0.5 * sigma[x], 0.3).reshape(-1)
        np.testing.assert_allclose(field[:, 1, x].numpy(), expected, atol=1e-6)
    drawn = depth_gaussian_field(
        depth, 9, 2.0, 1.5, aspect=(0.3, 0.6), rng=np.random.default_rng(0)
    )
    _, _, xx, yy, _ = second_moments(drawn[:, 0, 3].double().reshape(9, 9).numpy())
    assert 0.3**2 - 0.05 < yy / xx < 0.6**2 + 0.05
    with pytest.raises(ValueError, match="rng"):
        depth_gaussian_field(depth, 9, 2.0, 1.5, theta=(0.0, 1.0))


def test_signed_defocus_is_the_inverse_depth_difference_in_dioptres() -> None:
    depth = np.array([500.0, 1000.0, 2000.0, 4000.0])  # mm
    np.testing.assert_allclose(signed_defocus(depth, 1000.0), [-1.0, 0.0, 0.5, 0.75])
    # doubling every depth halves it: the scale is kept
    np.testing.assert_allclose(signed_defocus(2 * depth, 2000.0), [-0.5, 0.0, 0.25, 0.375])
    batch = torch.tensor([[[[500.0, 2000.0]]], [[[1000.0, 4000.0]]]])
    focus = torch.tensor([1000.0, 2000.0]).view(2, 1, 1, 1)
    expected = torch.tensor([[[[-1.0, 0.5]]], [[[-0.5, 0.25]]]])
    torch.testing.assert_close(signed_defocus(batch, focus), expected)


def test_focus_at_quantile_is_a_pixel_depth_in_numpy_and_torch() -> None:
    rng = np.random.default_rng(0)
    depth = rng.uniform(500.0, 6000.0, (9, 13)).astype(np.float32)
    for quantile in (0.0, 0.25, 0.5, 0.9, 1.0):
        expected = float(np.quantile(depth, quantile, method="lower"))
        assert focus_at_quantile(depth, quantile) == expected
        assert expected in depth  # an actual pixel's depth: that pixel is in focus
        assert focus_at_quantile(depth[:, ::-1], quantile) == expected  # flips keep it
        batch = torch.from_numpy(np.stack([depth, depth[::-1] + 1.0]))[:, None]
        focus = focus_at_quantile(batch, quantile)
        assert focus.tolist() == [expected, expected + 1.0]
    assert focus_at_quantile(depth, 0.0) == depth.min()
    assert focus_at_quantile(depth, 1.0) == depth.max()
    with pytest.raises(ValueError, match="quantile"):
        focus_at_quantile(depth, 1.5)


def test_camera_field_follows_the_thin_lens_and_is_isotropic() -> None:
    depth = np.tile(np.array([600.0, 800.0, 1000.0, 1250.0, 2000.0, 5000.0]), (3, 1))
    aperture, focus, cap = 3.0, 1000.0, 2.0
    field = depth_gaussian_field(depth, 21, focus, cap, model="camera", aperture=aperture)
    assert field.shape == (441, 3, 6)
    torch.testing.assert_close(field.sum(0), torch.ones(3, 6), atol=1e-5, rtol=0)
    for x, z in enumerate(depth[0]):
        sigma = min(aperture * abs(1000.0 / focus - 1000.0 / z), cap)  # px, 1/m
        kernel = field[:, 1, x].double().reshape(21, 21).numpy()
        mx, my, xx, yy, xy = second_moments(kernel)
        assert abs(mx) < 1e-6 and abs(my) < 1e-6 and abs(xy) < 1e-6
        if z == focus:  # the focal plane is sharp: a delta
            assert kernel[10, 10] == pytest.approx(1.0, abs=1e-6)
            continue
        np.testing.assert_allclose(kernel, gaussian_kernel(21, sigma), atol=1e-6)
        assert xx == pytest.approx(yy, rel=1e-6)  # isotropic
        if sigma >= 0.8:  # a sampled Gaussian's variance is sigma^2 to 1e-3 from there
            assert xx == pytest.approx(sigma**2, rel=2e-3)
    # the cap: 600 mm (sigma 2.0) and 5000 mm (sigma 2.4 -> 2.0) share the widest kernel
    torch.testing.assert_close(field[:, 0, 0], field[:, 0, 5])
    with pytest.raises(ValueError, match="aperture"):
        depth_gaussian_field(depth, 21, focus, cap, model="camera")
    with pytest.raises(ValueError, match="positive depths"):
        depth_gaussian_field(depth - 1000.0, 21, focus, cap, model="camera", aperture=3.0)


def test_motion_field_regions() -> None:
    regions = np.zeros((40, 48), dtype=np.int64)
    regions[5:20, 6:22] = 3  # object
    regions[25:38, 28:44] = 5  # object
    regions[0:2, 0:2] = 9  # too small to move
    field = motion_field(regions, 11, np.random.default_rng(2), num_moving=2)
    assert field.shape == (121, 40, 48)
    torch.testing.assert_close(field.sum(0), torch.ones(40, 48), atol=1e-5, rtol=0)
    assert field.min() >= 0
    per_region = {}
    for label in (0, 3, 5, 9):
        kernels = field[:, torch.from_numpy(regions == label)]  # (121, pixels)
        assert (kernels - kernels[:, :1]).abs().max() == 0  # one kernel inside a region
        per_region[label] = kernels[:, 0]
    torch.testing.assert_close(per_region[9], per_region[0])  # the small one moves with the camera
    for a, b in [(0, 3), (0, 5), (3, 5)]:
        assert (per_region[a] - per_region[b]).abs().sum() > 0.1
    again = motion_field(regions, 11, np.random.default_rng(2), num_moving=2)
    torch.testing.assert_close(field, again, atol=0, rtol=0)

    soft = motion_field(regions, 11, np.random.default_rng(2), num_moving=2, feather=1.5)
    torch.testing.assert_close(soft.sum(0), torch.ones(40, 48), atol=1e-5, rtol=0)
    torch.testing.assert_close(soft[:, 12, 14], per_region[3])  # deep inside: unchanged
    torch.testing.assert_close(soft[:, 39, 2], per_region[0])
    edge = soft[:, 12, 6]  # on the object's left border: a convex blend of both kernels
    weight = ((edge - per_region[0]) @ (per_region[3] - per_region[0])) / (
        per_region[3] - per_region[0]
    ).square().sum()
    assert 0.2 < weight < 0.8
    torch.testing.assert_close(edge, per_region[0] + weight * (per_region[3] - per_region[0]))


def test_field_from_kernel_is_constant() -> None:
    kernel = gaussian_kernel(5, 1.0, 0.5, 0.2)
    field = field_from_kernel(kernel, (3, 4))
    assert field.shape == (25, 3, 4) and field.dtype == torch.float32
    np.testing.assert_allclose(field[:, 2, 1].numpy(), kernel.reshape(-1), rtol=1e-6)
    assert field.stride()[1:] == (0, 0)  # a broadcast view


# --------------------------------------------------------------------------- applying
def reference_field(image: np.ndarray, kernels: np.ndarray, padding: str) -> np.ndarray:
    """Explicit per-pixel loop of the field convention on a NumPy-padded input."""
    batch, channels, height, width = image.shape
    k = math.isqrt(kernels.shape[1])
    r = k // 2
    xpad = np.pad(image, ((0, 0), (0, 0), (r, r), (r, r)), mode=NUMPY_PAD[padding])
    out = np.zeros_like(image)
    for b in range(batch):
        for y in range(height):
            for x in range(width):
                kernel = kernels[b, :, y, x].reshape(k, k)
                patch = xpad[b, :, y : y + k, x : x + k]  # (C, k, k)
                out[b, :, y, x] = (patch * kernel).sum(axis=(1, 2))
    return out


@pytest.mark.parametrize("padding", ["reflect", "zeros", "replicate"])
@pytest.mark.parametrize("k", [1, 3, 5, 21])
def test_apply_kernel_field_matches_loop(k: int, padding: str) -> None:
    rng = np.random.default_rng(k)
    height, width = (12, 13) if k == 21 else (7, 9)
    image = rng.random((2, 3, height, width))
    kernels = rng.random((2, k * k, height, width))
    expected = reference_field(image, kernels, padding)
    for chunk in (1, 3 * 2 * k * k * width * 8 + 5, 256 * 2**20):  # 1 row, 3 rows, whole image
        out = apply_kernel_field(
            torch.from_numpy(image), torch.from_numpy(kernels), padding, max_chunk_bytes=chunk
        )
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-12)
    shared = apply_kernel_field(torch.from_numpy(image), torch.from_numpy(kernels[0]), padding)
    expected_shared = reference_field(image, np.repeat(kernels[:1], 2, axis=0), padding)
    np.testing.assert_allclose(shared.numpy(), expected_shared, rtol=1e-12, atol=1e-12)


def test_constant_field_equals_conv2d_and_apply_kernel() -> None:
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.random((2, 3, 16, 15)))
    kernel = torch.from_numpy(motion_kernel(7, rng, length=5.0))
    by_conv = F.conv2d(
        F.pad(image, (3, 3, 3, 3), mode="reflect"), kernel.expand(3, 1, 7, 7), groups=3
    )
    by_field = apply_kernel_field(image, field_from_kernel(kernel, (16, 15)), max_chunk_bytes=1)
    torch.testing.assert_close(by_field, by_conv, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(apply_kernel(image, kernel), by_conv, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(apply_kernel(image, kernel.numpy()), by_conv, rtol=1e-12, atol=1e-12)
    # one kernel per image
    second = torch.from_numpy(gaussian_kernel(7, 1.5, 0.5, 1.0))
    per_image = apply_kernel(image, torch.stack([kernel, second]), padding="zeros")
    for b, weight in enumerate((kernel, second)):
        expected = F.conv2d(image[b : b + 1], weight.expand(3, 1, 7, 7), padding=3, groups=3)
        torch.testing.assert_close(per_image[b : b + 1], expected, rtol=1e-12, atol=1e-12)


def test_apply_kernel_matches_cv2_filter2d() -> None:
    rng = np.random.default_rng(1)
    image = rng.random((20, 23, 3)).astype(np.float32)
    kernel = gaussian_kernel(9, 2.0, 0.8, 0.7).astype(np.float32)
    expected = cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT_101)
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None]
    by_field = apply_kernel_field(tensor, field_from_kernel(kernel, (20, 23)))
    by_kernel = apply_kernel(tensor, kernel)
    for out in (by_field, by_kernel):
        np.testing.assert_allclose(out[0].permute(1, 2, 0).numpy(), expected, atol=2e-6)


def test_apply_kernel_field_gradients() -> None:
    rng = np.random.default_rng(5)
    image = torch.from_numpy(rng.random((2, 2, 5, 6))).requires_grad_()
    kernels = torch.from_numpy(rng.random((2, 9, 5, 6))).requires_grad_()
    shared = torch.from_numpy(rng.random((9, 5, 6))).requires_grad_()
    for padding in ("reflect", "zeros", "replicate"):
        assert torch.autograd.gradcheck(
            lambda x, f, p=padding: apply_kernel_field(x, f, p, max_chunk_bytes=1), (image, kernels)
        )
    assert torch.autograd.gradcheck(lambda x, f: apply_kernel_field(x, f), (image, shared))
    # kernels only
    loss = apply_kernel_field(image.detach(), kernels).square().sum()
    (grad,) = torch.autograd.grad(loss, kernels)
    assert grad.shape == kernels.shape and grad.abs().sum() > 0


def test_apply_kernel_field_dtype_and_errors() -> None:
    image = torch.rand(1, 3, 8, 8)
    field = field_from_kernel(gaussian_kernel(3, 1.0), (8, 8)).double()
    assert apply_kernel_field(image, field).dtype == torch.float32
    with pytest.raises(ValueError, match=r"kernels must be \(B, k\*k, H, W\)"):
        apply_kernel_field(image, torch.rand(1, 16, 8, 8))  # k = 4: even
    with pytest.raises(ValueError, match=r"kernels must be \(B, k\*k, H, W\).*got \(1, 9, 8, 7\)"):
        apply_kernel_field(image, torch.rand(1, 9, 8, 7))
    with pytest.raises(ValueError, match=r"image: expected a \(B, C, H, W\)"):
        apply_kernel_field(image[0], field)
    with pytest.raises(ValueError, match="replicate"):
        apply_kernel_field(torch.rand(1, 1, 4, 4), torch.rand(81, 4, 4))  # reflect by 4 on 4 rows
    with pytest.raises(ValueError, match="padding"):
        apply_kernel_field(image, field, padding="circular")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"kernel must be \(k, k\) or \(B, k, k\)"):
        apply_kernel(image, np.ones((4, 4)))


def test_iter_patch_rows_gathers_neighbourhoods() -> None:
    rng = np.random.default_rng(3)
    image = torch.from_numpy(rng.random((2, 3, 10, 7)))
    xpad = np.pad(image.numpy(), ((0, 0), (0, 0), (2, 2), (2, 2)), mode="edge")
    budget = 2 * 3 * 25 * 7 * 8 * 3  # three rows of patches
    chunks = list(iter_patch_rows(image, 5, "replicate", max_chunk_bytes=budget))
    assert [rows for rows, _ in chunks] == [slice(0, 3), slice(3, 6), slice(6, 9), slice(9, 10)]
    for rows, patches in chunks:
        assert patches.shape == (2, 3, 25, rows.stop - rows.start, 7)
        assert patches.numel() * patches.element_size() <= budget
        for y in range(rows.start, rows.stop):
            for i in range(5):
                for j in range(5):
                    np.testing.assert_array_equal(
                        patches[:, :, i * 5 + j, y - rows.start].numpy(),
                        xpad[:, :, y + i, j : j + 7],
                    )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.random((2, 3, 40, 33)))
    kernels = torch.from_numpy(rng.random((2, 441, 40, 33)))
    expected = apply_kernel_field(image, kernels)
    out = apply_kernel_field(image.cuda(), kernels.cuda(), max_chunk_bytes=2**20)
    torch.testing.assert_close(out.cpu(), expected, rtol=1e-12, atol=1e-12)
    image_grad = image[:, :, :8, :9].cuda().requires_grad_()
    field_grad = kernels[:, :25, :8, :9].cuda().requires_grad_()
    assert torch.autograd.gradcheck(apply_kernel_field, (image_grad, field_grad))
    sigma = torch.tensor([0.5, 2.0], device="cuda", requires_grad=True)
    cuda_kernels = gaussian_kernel(21, sigma, theta=0.3)
    assert cuda_kernels.device.type == "cuda"
    np.testing.assert_allclose(
        cuda_kernels[1].detach().cpu().numpy(), gaussian_kernel(21, 2.0), atol=1e-6
    )
    cuda_kernels[:, 10, 10].sum().backward()
    assert torch.isfinite(sigma.grad).all()
