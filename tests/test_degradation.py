"""Tests of the depth-driven defocus engine against hand arithmetic and the reference, and of
SSR's depth-informed kernel fields (GaussianFieldBlur)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from svblur.degradation import (
    GaussianFieldBlur,
    SceneInput,
    apply_kernel_field,
    defocus,
    defocus_sigma,
    fill_invalid_depth,
    gaussian_kernel,
    render_defocus,
    render_uniform_blur,
    solve_f_number,
)
from svblur.degradation import _harmonic as harmonic
from svblur.degradation._camera import coc_pixels
from svblur.degradation._harmonic import prepare_fill
from svblur.degradation.reference import (
    fspecial_gaussian,
    regionfill,
    render_defocus_reference,
)


def defocus_scene(
    height: int = 48, width: int = 64, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Textured image; slanted floor, a near disc and a far block (depth in mm)."""
    rng = np.random.default_rng(seed)
    image = rng.random((height, width, 3))
    yy, xx = np.mgrid[:height, :width]
    depth = 2000.0 + 40.0 * yy + 6.0 * xx
    depth = np.where((yy - height // 2) ** 2 + (xx - width // 2) ** 2 < 120, 800.0, depth)
    depth = np.where((xx > width - 18) & (yy < 14), 6000.0, depth)
    # Fractions that float32 cannot hold: the engine must keep float64 depth.
    return image, depth + 0.123456789 * np.sin(xx)


def test_sigma_matches_hand_arithmetic() -> None:
    # width 640 -> m = 640 / 36 = 17.7778 px/mm; f = 50, z_f = 2000, N = 2 -> A = 25 mm;
    # z_v = 50 * 2000 / (2000 - 50 + 1e-4) = 51.28205; z_v / z_f = 0.02564102.
    # m * (z_v / z_f) * A = 17.7778 * 0.02564102 * 25 = 11.39601.
    # z = 4000: 11.39601 * 2000 / 4000.0001 = 5.698 -> 5.7 px -> sigma (5.7 - 1) / 4 = 1.175
    # z = 1000: 11.39601 * 1000 / 1000.0001 = 11.396 -> 11.4 px -> sigma 2.6
    # z = 2100: 11.39601 * 100 / 2100.0001 = 0.543 -> 0.5 px (in focus) -> sigma 0
    depth = np.array([[4000.0, 1000.0, 2100.0]])
    sigma = defocus_sigma(depth, 640, 50.0, 2000.0, 2.0)
    assert sigma.dtype == np.float32 and sigma.shape == (1, 3)
    np.testing.assert_allclose(sigma, [[1.175, 2.6, 0.0]], rtol=0, atol=1e-6)
    as_tensor = defocus_sigma(torch.from_numpy(depth), 640, 50.0, 2000.0, 2.0)
    assert isinstance(as_tensor, torch.Tensor)
    np.testing.assert_array_equal(as_tensor.numpy(), sigma)


@pytest.mark.parametrize(
    ("depth", "focus"),
    [
        (np.array([[1000.0, 3000.0], [2000.0, 2500.0]]), 2900.0),  # nearest dominates
        (np.array([[2000.0, 9000.0], [2100.0, 50000.0]]), 2100.0),
    ],  # farthest dominates
)
def test_solve_f_number_reaches_max_coc(depth: np.ndarray, focus: float) -> None:
    n = solve_f_number(depth, 640, 70.0, focus, max_coc=29.0)
    cocs = coc_pixels(depth, 640, 70.0, focus, n)
    assert cocs.max() == pytest.approx(29.0)
    sigma = defocus_sigma(depth, 640, 70.0, focus, n)
    assert sigma.max() == pytest.approx(7.0)


@pytest.mark.parametrize("depth_scale", [1.0, 0.1])  # 0.1: nearest 80 mm < 5 f, shifted
def test_solve_f_number_is_the_renderers_aperture(depth_scale: float) -> None:
    image, depth = defocus_scene(36, 44, seed=3)
    depth = depth * depth_scale
    focus = float(depth[30, 5])
    f_number = solve_f_number(depth, 44, 70.0, focus)
    solved, solved_sigma = render_defocus(image, depth, 70.0, focus)
    given, given_sigma = render_defocus(image, depth, 70.0, focus, f_number=f_number)
    np.testing.assert_array_equal(given_sigma, solved_sigma)
    np.testing.assert_array_equal(given, solved)
    assert solved_sigma.max() == pytest.approx(7.0)  # the largest CoC is max_coc = 29
    _, reference_sigma = render_defocus_reference(image, depth, 70.0, focus)
    np.testing.assert_array_equal(solved_sigma, reference_sigma)
    unshifted = solve_f_number(depth, 44, 70.0, focus, shift_depth=False)
    if depth_scale == 1.0:
        assert unshifted == f_number
    else:  # the unshifted thin-lens model's aperture: a 9x larger f-number here
        assert unshifted > 5 * f_number
        assert defocus_sigma(depth, 44, 70.0, focus, unshifted).max() == pytest.approx(7.0)


def test_zero_sigma_and_all_in_focus_leave_image_unchanged() -> None:
    image, _ = defocus_scene()
    image = image.astype(np.float32)
    same, sigma_map = render_uniform_blur(image, 0.0)
    np.testing.assert_array_equal(same, image)
    assert (sigma_map == 0).all()
    depth = np.full(image.shape[:2], 3000.0)
    out, sigma = render_defocus(image, depth, 50.0, 3000.0, f_number=2.0)
    np.testing.assert_allclose(out, image, atol=1e-6)
    assert (sigma == 0).all()


def test_uniform_blur_equals_independent_gaussian() -> None:
    image, _ = defocus_scene(40, 52)
    out, sigma_map = render_uniform_blur(image, 1.5, dtype=torch.float64)
    assert out.shape == image.shape and (sigma_map == 1.5).all()
    # 2-D fspecial kernel with SciPy's 'reflect' (= MATLAB 'symmetric'): equal everywhere.
    kernel = fspecial_gaussian(29, 1.5)
    expected = np.stack(
        [ndi.correlate(image[:, :, c], kernel, mode="reflect") for c in range(3)], 2
    )
    np.testing.assert_allclose(out, expected, atol=1e-6)
    # Plain Gaussian filter, away from the borders (different truncation only).
    plain = ndi.gaussian_filter(image, (1.5, 1.5, 0), mode="reflect", truncate=14 / 1.5)
    np.testing.assert_allclose(out[10:-10, 10:-10], plain[10:-10, 10:-10], atol=1e-6)


def test_large_uniform_sigma_support_is_truncated_to_max_coc() -> None:
    image, _ = defocus_scene(40, 52)
    out, _ = render_uniform_blur(image, 7.0, dtype=torch.float64)
    expected = np.stack(
        [
            ndi.correlate(image[:, :, c], fspecial_gaussian(29, 7.0), mode="reflect")
            for c in range(3)
        ],
        2,
    )
    np.testing.assert_allclose(out, expected, atol=1e-6)


def _edge_scene() -> tuple[np.ndarray, np.ndarray]:
    """Left half white at 1000 mm, right half black at 5000 mm."""
    image = np.zeros((32, 64, 3))
    image[:, :32] = 1.0
    depth = np.full((32, 64), 5000.0)
    depth[:, :32] = 1000.0
    return image, depth


def test_sharp_foreground_over_blurred_background_stays_sharp() -> None:
    image, depth = _edge_scene()
    out, sigma = render_defocus(image, depth, 50.0, 1000.0)
    assert sigma[0, 0] == 0 and sigma[0, -1] > 2
    row = out[16, :, 0]
    np.testing.assert_allclose(row[:32], 1.0, atol=1e-5)  # in-focus near side untouched
    assert row[31] - row[32] > 0.99  # the edge stays a one-pixel step
    np.testing.assert_allclose(row[33:], 0.0, atol=1e-5)  # black background, nothing leaks in


def test_blurred_foreground_spreads_over_sharp_background() -> None:
    image, depth = _edge_scene()
    out, sigma = render_defocus(image, depth, 50.0, 5000.0)
    assert sigma[0, 0] > 2 and sigma[0, -1] == 0
    row = out[16, :, 0]
    assert row[32] > 0.2 and row[34] > 0.05  # white foreground bleeds over the background
    assert row[-1] < 1e-6
    assert np.all(np.diff(row[28:48]) <= 1e-9)  # a smooth monotone fall-off, no halo


def test_invalid_depth_is_filled_without_nans() -> None:
    depth = np.full((6, 7), 2000.0)
    depth[0, 0] = 0.0
    depth[1, 1] = np.nan
    depth[2, 2] = -5.0
    depth[3, 3] = -np.inf
    depth[4, 4] = np.inf
    depth[5, 5] = 1e11
    depth[5, 6] = 3000.0
    filled = fill_invalid_depth(depth, max_depth=1e5)
    assert filled.dtype == np.float32 and np.isfinite(filled).all() and (filled > 0).all()
    assert filled[0, 0] == 2000 and filled[1, 1] == 2000 and filled[3, 3] == 2000
    assert filled[4, 4] == 1e5 and filled[5, 5] == 1e5
    assert fill_invalid_depth(depth)[4, 4] == 1e11  # +inf -> largest finite valid depth
    with pytest.raises(ValueError, match="no valid pixel"):
        fill_invalid_depth(np.full((3, 3), np.nan))
    image = np.random.default_rng(1).random((6, 7, 3))
    out, sigma = render_defocus(image, depth, 50.0, 2000.0, max_depth=1e5)
    expected, expected_sigma = render_defocus_reference(
        image, np.minimum(fill_invalid_depth(depth), 1e5), 50.0, 2000.0
    )
    np.testing.assert_array_equal(sigma, expected_sigma)
    assert np.abs(out - expected).max() * 255 < 0.01


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("focus_at", [(2, 2), (24, 32), (46, 10), (3, 60)])
def test_fast_matches_reference(dtype: torch.dtype, focus_at: tuple[int, int]) -> None:
    image, depth = defocus_scene()
    focus = float(depth[focus_at])
    expected, expected_sigma = render_defocus_reference(image, depth, 50.0, focus)
    out, sigma = render_defocus(image, depth, 50.0, focus, dtype=dtype)
    np.testing.assert_array_equal(sigma, expected_sigma)
    assert np.abs(out - expected).max() * 255 < 0.01


def test_fast_matches_reference_with_shift_and_given_f_number() -> None:
    image, depth = defocus_scene(36, 44, seed=3)
    depth = depth / 10.0  # nearest 80 mm < 5 f: both engines shift depth and focus
    focus = float(depth[30, 5])
    expected, expected_sigma = render_defocus_reference(image, depth, 70.0, focus, f_number=2.8)
    out, sigma = render_defocus(image, depth, 70.0, focus, f_number=2.8)
    np.testing.assert_array_equal(sigma, expected_sigma)
    assert np.abs(out - expected).max() * 255 < 0.01


def test_torch_input_returns_tensors() -> None:
    image, depth = defocus_scene(20, 24)
    out, sigma = render_defocus(torch.from_numpy(image), torch.from_numpy(depth), 50.0, 2500.0)
    assert isinstance(out, torch.Tensor) and isinstance(sigma, torch.Tensor)
    assert out.shape == (20, 24, 3) and out.dtype == torch.float32 and sigma.dtype == torch.float32
    expected, expected_sigma = render_defocus(image, depth, 50.0, 2500.0)
    np.testing.assert_array_equal(out.numpy(), expected)
    np.testing.assert_array_equal(sigma.numpy(), expected_sigma)


@pytest.mark.parametrize("threads", [2, 3])
def test_threaded_rendering_is_identical_to_one_thread(threads: int) -> None:
    # Wide enough for several tiles per layer and a look-ahead of many layers.
    image, depth = defocus_scene(96, 160, seed=5)
    focus = float(depth[60, 20])
    one, sigma_one = render_defocus(image, depth, 50.0, focus, threads=1)
    many, sigma_many = render_defocus(image, depth, 50.0, focus, threads=threads)
    np.testing.assert_array_equal(many, one)
    np.testing.assert_array_equal(sigma_many, sigma_one)
    expected, _ = render_defocus_reference(image, depth, 50.0, focus)
    assert np.abs(many - expected).max() * 255 < 0.01


@pytest.mark.parametrize("threads", [1, 2])
def test_error_in_a_planned_layer_reaches_the_caller(
    threads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    image, depth = defocus_scene(96, 160, seed=5)
    focus = float(depth[60, 20])
    plan = defocus._Renderer.plan

    def failing_plan(self, index, region, upcoming):
        if index == 7:
            raise RuntimeError("layer 7 failed")
        return plan(self, index, region, upcoming)

    monkeypatch.setattr(defocus._Renderer, "plan", failing_plan)
    before = threading.active_count()
    with pytest.raises(RuntimeError, match="layer 7 failed"):
        render_defocus(image, depth, 50.0, focus, threads=threads)
    assert threading.active_count() == before  # helper threads joined


def test_pool_runs_queued_tasks_on_the_waiting_thread() -> None:
    pool = defocus._Pool(0)  # no helper: every task runs when waited for, in order
    ran: list[int] = []
    tasks = [pool.submit(ran.append, i) for i in range(3)]
    pool.wait(tasks[1])
    assert ran == [0, 1] and not tasks[2].done.is_set()
    pool.wait(tasks[2])
    assert ran == [0, 1, 2]
    pool.shutdown()


@pytest.fixture(params=["compiled", "numpy"])
def fill_setup(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with the Numba set-up of the fill systems and with the NumPy fallback."""
    if request.param == "compiled":
        if harmonic._compiled() is None:
            pytest.skip("Numba is not available")
    else:
        monkeypatch.setattr(harmonic, "_compiled", lambda: None)
    return request.param


@pytest.mark.parametrize("factor", ["banded", "per part", "sparse"])
def test_fill_system_matches_regionfill_on_needed_parts(
    factor: str, fill_setup: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if factor == "per part":  # a separate banded factor per connected part
        monkeypatch.setattr(harmonic, "_BLOCK_OVERHEAD", 0.0)
    if factor == "sparse":  # every band too wide: SuperLU
        monkeypatch.setattr(harmonic, "_MAX_BANDWIDTH", 2)
    rng = np.random.default_rng(7)
    height, width = 40, 52
    known = rng.random((height, width, 3))
    region = np.zeros((height, width), dtype=bool)
    region[3:6, 2:30] = True  # a thin strip touching nothing else (a narrower band)
    region[20:38, 10:14] = True  # an L-shaped part reaching the image border
    region[34:40, 10:40] = True
    region[12:16, 44:50] = True  # a part without needed pixels
    rows, cols = np.nonzero(region)
    needed = np.zeros(rows.size, dtype=bool)
    needed[(rows == 5) & (cols == 20)] = True
    needed[(rows == 39) & (cols == 35)] = True
    system = prepare_fill(rows, cols, (height, width), needed)
    assert system is not None
    solution = system.solve(known[system.boundary_rows, system.boundary_cols])
    expected = regionfill(known, region)
    # Every pixel of the two needed parts is solved, the part without one is not.
    solved = np.zeros_like(region)
    solved[system.rows, system.cols] = True
    np.testing.assert_array_equal(solved, region & ~(np.arange(width) >= 44)[None, :])
    np.testing.assert_allclose(solution, expected[system.rows, system.cols], atol=1e-12)
    kind = {"banded": harmonic._BandedCholesky, "sparse": harmonic._SparseLU}
    assert isinstance(system.factor, kind.get(factor, harmonic._BlockDiagonal))
    assert prepare_fill(rows, cols, (height, width), np.zeros(rows.size, dtype=bool)) is None


def test_compiled_ordering_keeps_bands_narrow() -> None:
    compiled = harmonic._compiled()
    if compiled is None:
        pytest.skip("Numba is not available")
    yy, xx = np.mgrid[:60, :200]
    strip = (yy >= 10) & (yy < 16) & (xx >= 5) & (xx < 195)  # 6 x 190
    radius = np.hypot(yy - 30, xx - 100)
    ring = (radius >= 20) & (radius < 26)  # 6 wide, closed
    for region, widest in ((strip, 6), (ring, 2 * 6 + 2)):
        rows, cols = np.nonzero(region)
        out = compiled.order_fill(rows, cols, np.ones(rows.size, dtype=bool), 60, 200)
        kept, degree, first, second, equation, boundary_rows, boundary_cols = out
        np.testing.assert_array_equal(np.sort(kept), np.arange(rows.size))
        assert (first < second).all() and (second - first).max() <= widest
        starts, widths = compiled.parts(first, second, rows.size)  # one part, its bandwidth
        np.testing.assert_array_equal(starts, [0])
        np.testing.assert_array_equal(widths, [(second - first).max()])
        # Every unknown has 4 in-image neighbours here: couplings + known terms.
        np.testing.assert_array_equal(degree, 4.0)
        assert 2 * first.size + equation.size == 4 * rows.size
        assert not region[boundary_rows, boundary_cols].any()


def test_numpy_fill_setup_renders_like_the_compiled_one(monkeypatch: pytest.MonkeyPatch) -> None:
    if harmonic._compiled() is None:
        pytest.skip("Numba is not available")
    image, depth = defocus_scene(96, 160, seed=5)
    focus = float(depth[60, 20])
    compiled, _ = render_defocus(image, depth, 50.0, focus)
    monkeypatch.setattr(harmonic, "_compiled", lambda: None)
    fallback, _ = render_defocus(image, depth, 50.0, focus)
    assert np.abs(compiled - fallback).max() * 255 < 1e-3  # other orderings: rounding only
    expected, _ = render_defocus_reference(image, depth, 50.0, focus)
    assert np.abs(fallback - expected).max() * 255 < 0.01


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    image, depth = defocus_scene()
    cpu, _ = render_defocus(image, depth, 50.0, 2500.0)
    gpu, _ = render_defocus(image, depth, 50.0, 2500.0, device="cuda")
    assert np.abs(cpu - gpu).max() < 1e-4


def test_bad_inputs_raise_clear_errors() -> None:
    image, depth = defocus_scene(8, 10)
    with pytest.raises(ValueError, match="depth: expected a 2-D"):
        render_defocus(image, depth[None], 50.0, 2500.0)
    with pytest.raises(ValueError, match=r"image: expected an \(H, W, 3\)"):
        render_defocus(image[:, :, :2], depth, 50.0, 2500.0)
    with pytest.raises(ValueError, match="does not match"):
        render_defocus(image, depth[:, :9], 50.0, 2500.0)
    with pytest.raises(ValueError, match="focus_distance"):
        render_defocus(image, depth, 50.0, 40.0)
    with pytest.raises(ValueError, match="f_number"):
        render_defocus(image, depth, 50.0, 2500.0, f_number=0.0)
    with pytest.raises(ValueError, match="threads"):
        render_defocus(image, depth, 50.0, 2500.0, threads=0)
    with pytest.raises(ValueError, match="f_number"):
        defocus_sigma(depth, 10, 50.0, 2500.0, -1.0)
    with pytest.raises(ValueError, match="sigma"):
        render_uniform_blur(image, -1.0)
    with pytest.raises(ValueError, match="every depth equals"):
        solve_f_number(np.full((4, 4), 2500.0), 4, 50.0, 2500.0)


# ------------------------------------------- SSR's kernel fields (degradation=gaussian_sv)
def _field_scene() -> SceneInput:
    """A 12 x 14 scene: depth 1000-3390 mm rising to the right and down, a fixed texture."""
    ys, xs = np.mgrid[0:12, 0:14]
    depth = (1000.0 + 150.0 * xs + 40.0 * ys).astype(np.float32)
    image = np.stack(
        [np.sin(xs / 2.0 + ys), np.cos(ys / 3.0) * 0.5 + 0.5, (xs * ys % 7) / 7.0], -1
    ).astype(np.float32)
    return SceneInput((image - image.min()) / (image.max() - image.min()), depth)


def test_camera_blur_follows_the_thin_lens_about_the_median_depth() -> None:
    scene = _field_scene()
    blur = GaussianFieldBlur(kernel_size=9, model="camera", aperture_range=(20.0, 40.0))
    assert blur.isotropic and blur.cap == 1.6  # (9 - 1) / 5
    degraded = blur(scene, np.random.default_rng(5))
    meta, depth = degraded.meta, scene.depth.astype(np.float64)
    assert 20.0 <= meta["aperture"] <= 40.0 and meta["space_variant"]
    # the focus: the lower median of the scene's depths, an actual pixel's depth
    flat = np.sort(depth.ravel())
    assert meta["focus_depth"] == flat[(flat.size - 1) // 2]
    kernels = degraded.maps["kernels"]
    np.testing.assert_allclose(kernels.sum(0), 1.0, atol=1e-5)
    # sigma = clip(A |1/z_f - 1/z|, 0, cap) with depths in m, per pixel
    unclipped = np.empty_like(depth)
    for (y, x), z in np.ndenumerate(depth):
        unclipped[y, x] = meta["aperture"] * abs(
            1.0 / (meta["focus_depth"] / 1000.0) - 1.0 / (z / 1000.0)
        )
    sigma = np.minimum(unclipped, blur.cap)
    np.testing.assert_allclose(degraded.maps["blur"], sigma, rtol=1e-6, atol=1e-6)
    in_focus = depth == meta["focus_depth"]
    assert in_focus.any() and (degraded.maps["blur"][in_focus] == 0).all()
    assert (kernels[81 // 2][in_focus] == 1.0).all()  # the focal plane is sharp
    for y, x in ((0, 0), (5, 7), (11, 13)):
        kernel = kernels[:, y, x].reshape(9, 9)
        np.testing.assert_allclose(kernel, gaussian_kernel(9, sigma[y, x]), atol=1e-6)
        np.testing.assert_allclose(kernel, kernel.T, atol=1e-7)  # isotropic
    # the image is what the field makes of the sharp one
    again = apply_kernel_field(
        torch.from_numpy(scene.image.transpose(2, 0, 1).copy())[None],
        torch.from_numpy(kernels)[None],
    )[0].numpy()
    np.testing.assert_allclose(degraded.image.transpose(2, 0, 1), again, atol=1e-6)
    # a farther scene blurs less: the scale of the depth matters (1/z)
    farther = SceneInput(scene.image, 2 * scene.depth)
    far = blur(farther, np.random.default_rng(5))
    assert far.meta["aperture"] == meta["aperture"]
    np.testing.assert_allclose(far.maps["blur"], np.minimum(unclipped / 2, blur.cap), atol=1e-6)


def test_camera_blur_options() -> None:
    scene = _field_scene()
    # a space-invariant draw: one pixel's sigma everywhere
    invariant = GaussianFieldBlur(kernel_size=9, model="camera")(
        scene, np.random.default_rng(1), invariant=True
    )
    kernels = invariant.maps["kernels"].reshape(81, -1)
    assert np.ptp(kernels, axis=1).max() == 0 and not invariant.meta["space_variant"]
    assert np.ptp(invariant.maps["blur"]) == 0
    # focus at a random pixel; an explicit cap; anisotropy only when asked
    blur = GaussianFieldBlur(
        kernel_size=9, model="camera", focus_quantile=None, sigma_cap=1.0, aspect_range=(0.5, 0.5)
    )
    degraded = blur(scene, np.random.default_rng(2))
    assert degraded.meta["focus_depth"] in scene.depth and "blur" not in degraded.maps
    assert degraded.meta["aspect"] == 0.5 and not blur.isotropic
    # without depth the camera has nothing to follow: smooth blends, as the linear model
    no_depth = SceneInput(scene.image)
    a = GaussianFieldBlur(kernel_size=9, model="camera")(no_depth, np.random.default_rng(3))
    b = GaussianFieldBlur(kernel_size=9, model="linear", aspect_range=(1.0, 1.0))(
        no_depth, np.random.default_rng(3)
    )
    np.testing.assert_array_equal(a.maps["kernels"], b.maps["kernels"])
    for bad in ({"model": "thin"}, {"aperture_range": (2.0, 1.0)}, {"focus_quantile": 2.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            GaussianFieldBlur(**bad)


def test_linear_blur_draws_the_field_it_drew_before_the_camera_model() -> None:
    """``model="linear"`` (the class default) is the first design, to the draw: values
    pinned from the code before the camera model was added."""
    degraded = GaussianFieldBlur(kernel_size=5)(_field_scene(), np.random.default_rng(123))
    assert degraded.meta["sigma_max"] == pytest.approx(2.888231521368502, rel=1e-12)
    assert degraded.meta["focus_depth"] == 1430.0
    expected = [
        [1.0112290e-02, 8.2608704e-03, 1.5452000e-03, 6.6180000e-05, 6.5000000e-07],
        [4.0250339e-02, 1.0990603e-01, 6.8715580e-02, 9.8371804e-03, 3.2245001e-04],
        [1.2763670e-02, 1.1649385e-01, 2.4345134e-01, 1.1649385e-01, 1.2763670e-02],
        [3.2245001e-04, 9.8371804e-03, 6.8715580e-02, 1.0990603e-01, 4.0250339e-02],
        [6.5000000e-07, 6.6180000e-05, 1.5452000e-03, 8.2608704e-03, 1.0112290e-02],
    ]
    kernel = degraded.maps["kernels"][:, 5, 7].reshape(5, 5)
    np.testing.assert_allclose(kernel, expected, rtol=0, atol=2e-8)
    assert float(degraded.image.astype(np.float64).sum()) == pytest.approx(320.14336996, abs=1e-5)
    assert "blur" not in degraded.maps  # anisotropic: no single sigma per pixel
