"""SSR's parts: DKENet, the depth estimators, the SVKR loop and its kernel PCA basis."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from svblur.degradation import GaussianFieldBlur, SceneInput, imresize
from svblur.errors import InputError
from svblur.models import RRDBSFT
from svblur.models.depth import (
    DEFOCUS_SCALE,
    DepthEstimator,
    GroundTruthDepth,
    HFDepth,
    SMPDepthNet,
    dpt_input_size,
    normalize_depth,
    resize_depth,
)
from svblur.models.dkenet import DKENet
from svblur.models.ssr import SVKR, fit_kernel_pca

K = 5  # kernel side of the toy networks
SCALE = 2


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _dkenet(scale: int = SCALE) -> DKENet:
    torch.manual_seed(0)
    return DKENet(K, scale, channels=(8, 12), depth_channels=4, sft_channels=4).eval()


def _rrdbsft(kernel_channels: int = K * K) -> RRDBSFT:
    torch.manual_seed(0)
    return RRDBSFT(
        num_features=8,
        num_blocks=1,
        growth_channels=4,
        prior_channels=8,
        scale=SCALE,
        kernel_channels=kernel_channels,
    ).eval()


def _smp_depth() -> SMPDepthNet:
    torch.manual_seed(0)
    return SMPDepthNet("tu-resnet18", encoder_depth=3, decoder_channels=(16, 8, 8)).eval()


def _fields(n: int, batch: int, size: tuple[int, int], seed: int) -> list[torch.Tensor]:
    """``n`` random normalized kernel fields ``(batch, K*K, *size)``."""
    logits = torch.randn(n, batch, K * K, *size, generator=_gen(seed))
    return list(logits.softmax(dim=2))


# ----------------------------------------------------------------------------- DKENet


@pytest.mark.parametrize("size", [(7, 9), (8, 8), (1, 1)])
@pytest.mark.parametrize("scale", [1, 2])
def test_dkenet_kernels_are_normalized_and_hr_sized(size, scale):
    net = _dkenet(scale)
    lr = torch.rand(2, 3, *size, generator=_gen(1))
    with torch.no_grad():
        kernels = net(lr, torch.rand(2, 1, *size, generator=_gen(2)))
    assert kernels.shape == (2, K * K, scale * size[0], scale * size[1])
    assert (kernels >= 0).all()
    torch.testing.assert_close(kernels.sum(1), torch.ones(2, scale * size[0], scale * size[1]))


def test_dkenet_upscales_by_nearest_neighbour():
    net = _dkenet()
    with torch.no_grad():
        kernels = net(torch.rand(1, 3, 6, 5, generator=_gen(1)), torch.rand(1, 1, 6, 5))
    lr_grid = kernels[..., ::SCALE, ::SCALE]
    blocks = lr_grid.repeat_interleave(SCALE, -2).repeat_interleave(SCALE, -1)
    assert torch.equal(kernels, blocks)


def test_dkenet_takes_depth_at_lr_or_hr_size():
    net = _dkenet()
    lr = torch.rand(2, 3, 6, 7, generator=_gen(1))
    depth_lr = torch.rand(2, 1, 6, 7, generator=_gen(2))
    depth_hr = depth_lr.repeat_interleave(SCALE, -2).repeat_interleave(SCALE, -1)
    with torch.no_grad():
        torch.testing.assert_close(net(lr, depth_hr), net(lr, depth_lr), rtol=0, atol=1e-7)


def test_dkenet_sees_relative_depth_only():
    """Depth is normalized per image: metric depth, any units or offset, gives the same
    kernels; a different depth layout gives different kernels."""
    net = _dkenet()
    lr = torch.rand(2, 3, 6, 6, generator=_gen(1))
    depth = torch.rand(2, 1, 6, 6, generator=_gen(2))
    with torch.no_grad():
        reference = net(lr, depth)
        torch.testing.assert_close(net(lr, 3500.0 * depth + 800.0), reference)
        assert not torch.allclose(net(lr, depth.flip(-1)), reference, atol=1e-4)


def test_dkenet_batch_independence_and_gradients():
    net = _dkenet()
    lr = torch.rand(3, 3, 6, 7, generator=_gen(1))
    depth = torch.rand(3, 1, 12, 14, generator=_gen(2), requires_grad=True)
    kernels = net(lr, depth)
    torch.testing.assert_close(net(lr[1:2], depth[1:2]), kernels[1:2])
    (kernels * torch.randn(kernels.shape, generator=_gen(3))).sum().backward()
    assert depth.grad is not None and depth.grad.abs().sum() > 0  # depth enters (SFT)
    assert all(p.grad is not None for p in net.parameters())


def test_dkenet_rejects_bad_depth():
    net = _dkenet()
    with pytest.raises(ValueError, match="unsqueeze"):
        net(torch.rand(1, 3, 6, 6), torch.rand(1, 6, 6))
    with pytest.raises(ValueError, match="batch size"):
        net(torch.rand(2, 3, 6, 6), torch.rand(1, 1, 6, 6))


# ------------------------------------------------------------------- depth estimators


def test_normalize_depth_closed_form():
    depth = torch.tensor([[[[2.0, 4.0], [6.0, 10.0]]], [[[5.0, 5.0], [5.0, 5.0]]]])
    expected = torch.tensor([[[[0.0, 0.25], [0.5, 1.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    assert torch.equal(normalize_depth(depth), expected)  # constant depth: zeros
    with pytest.raises(InputError, match="unsqueeze"):
        normalize_depth(torch.rand(2, 4, 4))


def test_resize_depth_shrinks_by_block_means():
    depth = torch.rand(2, 1, 8, 12, generator=_gen(1))
    means = depth.view(2, 1, 4, 2, 6, 2).mean((3, 5))
    torch.testing.assert_close(resize_depth(depth, (4, 6)), means)
    assert resize_depth(depth, (8, 12)) is depth
    assert resize_depth(depth, (16, 20)).shape == (2, 1, 16, 20)


def _defocus_reference(depth_mm: torch.Tensor, quantile: float = 0.5) -> torch.Tensor:
    """``DEFOCUS_SCALE * (1 / z_f - 1 / z)`` (1/m) per image, ``z_f`` NumPy's lower quantile."""
    out = torch.empty(depth_mm.shape, dtype=torch.float64)
    for b in range(depth_mm.shape[0]):
        values = depth_mm[b].double().numpy()
        focus_m = np.quantile(values, quantile, method="lower") / 1000.0
        out[b] = DEFOCUS_SCALE * (1.0 / focus_m - 1.0 / torch.from_numpy(values / 1000.0))
    return out.float()


def test_ground_truth_depth_minmax_is_the_batch_depth_normalized_at_image_size():
    estimator = GroundTruthDepth("minmax")
    assert isinstance(estimator, DepthEstimator)
    depth_mm = 1000.0 + 4000.0 * torch.rand(2, 1, 8, 8, generator=_gen(1))
    image = torch.rand(2, 3, 4, 4)
    out = estimator(image, depth=depth_mm)
    expected = normalize_depth(depth_mm.view(2, 1, 4, 2, 4, 2).mean((3, 5)))
    torch.testing.assert_close(out, expected)
    assert torch.equal(out.amin((1, 2, 3)), torch.zeros(2))
    assert torch.equal(out.amax((1, 2, 3)), torch.ones(2))
    torch.testing.assert_close(estimator(image, depth=depth_mm[:, 0]), out)  # (B, H, W) too
    torch.testing.assert_close(estimator(image, depth=2 * depth_mm), out)  # no scale
    with pytest.raises(InputError, match="depth=batch"):
        estimator(image)


def test_ground_truth_depth_defocus_keeps_the_scale_and_carries_the_focus():
    estimator = GroundTruthDepth()  # form="defocus", focus at the median depth
    assert (estimator.form, estimator.focus_quantile) == ("defocus", 0.5)
    depth_mm = 700.0 + 5000.0 * torch.rand(2, 1, 8, 10, generator=_gen(1))
    image = torch.rand(2, 3, 8, 10)
    out = estimator(image, depth=depth_mm)
    torch.testing.assert_close(out, _defocus_reference(depth_mm))
    # zero at the focal plane, positive behind it, negative in front of it
    for b in range(2):
        focus = depth_mm[b].flatten().sort().values[(80 - 1) // 2]
        assert out[b][depth_mm[b] == focus].abs().max() < 1e-5
        assert (out[b][depth_mm[b] > focus] > 0).all() and (out[b][depth_mm[b] < focus] < 0).all()
    # the scale is kept: a scene twice as far gives half the defocus (minmax would not move)
    torch.testing.assert_close(estimator(image, depth=2 * depth_mm), out / 2)
    # at another size: the defocus of the full map (its focus), averaged over blocks
    small = estimator(torch.rand(2, 3, 4, 5), depth=depth_mm)
    torch.testing.assert_close(small, out.view(2, 1, 4, 2, 5, 2).mean((3, 5)))
    metric = GroundTruthDepth("metric")(image, depth=depth_mm)
    torch.testing.assert_close(metric, depth_mm / 1000.0)
    other = GroundTruthDepth(focus_quantile=0.0, defocus_scale=1.0)(image, depth=depth_mm)
    torch.testing.assert_close(other, _defocus_reference(depth_mm, 0.0) / DEFOCUS_SCALE)
    assert (other >= 0).all()  # focused on the nearest pixel: everything behind it
    for bad in ({"form": "relative"}, {"focus_quantile": -0.1}, {"defocus_scale": 0.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            GroundTruthDepth(**bad)
    with pytest.raises(InputError, match="positive"):
        estimator(image, depth=depth_mm - 3000.0)


def test_camera_kernels_are_a_function_of_the_ground_truth_depth_input():
    """What degradation=gaussian_sv blurs with is a function of what DKENet is given: the
    sigma of every pixel is ``clip(A / DEFOCUS_SCALE * |input|, 0, cap)``, one unknown ``A``
    per image."""
    rng = np.random.default_rng(0)
    depth = rng.uniform(800.0, 5000.0, (16, 20)).astype(np.float32)
    scene = SceneInput(rng.random((16, 20, 3)).astype(np.float32), depth)
    blur = GaussianFieldBlur(kernel_size=K, model="camera")
    degraded = blur(scene, np.random.default_rng(1))
    given = GroundTruthDepth()(torch.rand(1, 3, 16, 20), depth=torch.from_numpy(depth)[None, None])
    aperture = degraded.meta["aperture"]
    expected = (aperture / DEFOCUS_SCALE * given[0, 0].abs()).clamp(max=blur.cap)
    torch.testing.assert_close(torch.from_numpy(degraded.maps["blur"]), expected)
    # the same after a horizontal flip (augmentation): the focus is a depth quantile
    flipped = GroundTruthDepth()(
        torch.rand(1, 3, 16, 20), depth=torch.from_numpy(depth[:, ::-1].copy())[None, None]
    )
    torch.testing.assert_close(flipped, given.flip(-1))


@pytest.mark.parametrize("size", [(20, 27), (5, 3)])
def test_smp_depth_net_gives_relative_depth_at_image_size(size):
    net = _smp_depth()
    image = torch.rand(2, 3, *size, generator=_gen(1))
    with torch.no_grad():
        depth = net(image, depth=torch.rand(2, 1, 4, 4))  # the batch's depth is ignored
        torch.testing.assert_close(depth, net(image))
    assert depth.shape == (2, 1, *size)
    torch.testing.assert_close(depth.amin((1, 2, 3)), torch.zeros(2))
    torch.testing.assert_close(depth.amax((1, 2, 3)), torch.ones(2))


def test_smp_depth_net_trains_on_a_single_small_image():
    net = _smp_depth().train()
    image = torch.rand(1, 3, 6, 6, generator=_gen(1))
    loss = F.l1_loss(net(image), normalize_depth(torch.rand(1, 1, 6, 6, generator=_gen(2))))
    loss.backward()
    grads = [p.grad for p in net.unet.encoder.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)


def test_dpt_input_size_follows_the_processor_rule():
    # Depth Anything: 518 x 518, multiple of 14, keep the aspect ratio (scale 518/480)
    assert dpt_input_size((480, 640), (518, 518), 14, True) == (518, 686)
    assert dpt_input_size((480, 640), (518, 518), 14, False) == (518, 518)
    # the factor closer to 1 wins: 384/400 for both sides
    assert dpt_input_size((100, 400), (384, 384), 32, True) == (96, 384)


def test_hf_depth_reports_a_missing_folder(tmp_path: Path):
    with pytest.raises(InputError, match="not found"):
        HFDepth(tmp_path / "no-such-model")


def test_hf_depth_without_transformers_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails as if absent
    with pytest.raises(InputError, match=r"svblur\[depth\]"):
        HFDepth(tmp_path)


class _RampModel(nn.Module):
    """Stands in for a transformers depth model: "disparity" = the first input channel."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))

    def forward(self, pixel_values: torch.Tensor) -> types.SimpleNamespace:
        return types.SimpleNamespace(predicted_depth=self.weight * pixel_values[:, 0])


def _fake_transformers(calls: list[tuple[str, dict]]) -> types.ModuleType:
    processor = types.SimpleNamespace(
        size={"height": 14, "width": 14},
        ensure_multiple_of=7,
        keep_aspect_ratio=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )

    def loader(result):
        def from_pretrained(path: str, **kwargs):
            calls.append((path, kwargs))
            return result()

        return types.SimpleNamespace(from_pretrained=from_pretrained)

    module = types.ModuleType("transformers")
    module.AutoModelForDepthEstimation = loader(_RampModel)
    module.AutoImageProcessor = loader(lambda: processor)
    return module


def test_hf_depth_loads_locally_and_turns_disparity_into_depth(tmp_path, monkeypatch):
    calls: list[tuple[str, dict]] = []
    monkeypatch.setitem(sys.modules, "transformers", _fake_transformers(calls))
    ramp = torch.linspace(0, 1, 14).expand(1, 3, 14, 14)  # at the network size: no resampling
    estimator = HFDepth(tmp_path)
    assert [kwargs for _, kwargs in calls] == [{"local_files_only": True}] * 2
    assert calls[0][0] == str(tmp_path)
    depth = estimator(ramp)
    torch.testing.assert_close(depth, 1 - ramp[:, :1])  # near (high disparity) -> 0
    torch.testing.assert_close(HFDepth(tmp_path, output="depth")(ramp), ramp[:, :1])
    # frozen by default: no trainable parameters, and the model stays in eval mode
    assert not any(p.requires_grad for p in estimator.parameters())
    assert not estimator.train().model.training


# ------------------------------------------------------------------------------- SVKR


class _ScriptedKernels(nn.Module):
    """Returns the given fields in turn, recording the depth it was given."""

    def __init__(self, fields: list[torch.Tensor]) -> None:
        super().__init__()
        self.fields = fields
        self.depths: list[torch.Tensor] = []
        self.scale = SCALE

    def forward(self, lr: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        self.depths.append(depth)
        return self.fields[len(self.depths) - 1]


class _RecordingDepth(DepthEstimator):
    """Depth = the image's mean over channels; records its inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[torch.Tensor] = []

    def forward(self, image: torch.Tensor, depth: torch.Tensor | None = None) -> torch.Tensor:
        self.images.append(image)
        return image.mean(1, keepdim=True)


class _RecordingSR(nn.Module):
    """Records its condition; the SR image is the upscaled LR plus a step counter."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = SCALE
        self.conditions: list[torch.Tensor] = []

    def forward(self, lr: torch.Tensor, *, kernels: torch.Tensor) -> torch.Tensor:
        self.conditions.append(kernels)
        up = F.interpolate(lr, scale_factor=SCALE, mode="nearest")
        return up + 0.1 * len(self.conditions)


@pytest.mark.parametrize("update", ["alg1", "eq2"])
def test_svkr_blends_kernels_by_the_chosen_rule(update):
    gamma = 0.9
    e = _fields(3, 2, (8, 10), seed=1)  # the estimator's successive outputs E[0], E[2], E[3]
    estimator, depth, sr = _ScriptedKernels(e), _RecordingDepth(), _RecordingSR()
    svkr = SVKR(estimator, depth, sr, iterations=3, gamma=gamma, update=update)
    out = svkr(torch.rand(2, 3, 4, 5, generator=_gen(2)))
    k1 = e[0]  # both rules: D[1] = D[0], so K[1] = K[0] = E[0]
    k2 = gamma * e[1] + (1 - gamma) * k1  # alike: K[1] = E[1] = E[0]
    if update == "alg1":
        k3 = gamma * e[2] + (1 - gamma) * k2  # running blend
    else:
        k3 = gamma * e[2] + (1 - gamma) * e[1]  # the two latest estimates
    for got, expected in zip(sr.conditions, [k1, k2, k3], strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-7)
    assert out["kernels"] is sr.conditions[-1]
    assert len(estimator.depths) == len(depth.images) == 3  # once for t = 0, once per later t
    for kernels in sr.conditions:  # convex blends of normalized kernels stay normalized
        torch.testing.assert_close(kernels.sum(1), torch.ones(2, 8, 10))


def test_svkr_estimates_depth_from_the_previous_sr_image():
    estimator = _ScriptedKernels(_fields(3, 1, (8, 8), seed=1))
    depth, sr = _RecordingDepth(), _RecordingSR()
    lr = torch.rand(1, 3, 4, 4, generator=_gen(2))
    out = SVKR(estimator, depth, sr, iterations=3)(lr)
    assert len(out["sr_steps"]) == 3 and out["sr"] is out["sr_steps"][-1]
    torch.testing.assert_close(depth.images[0], imresize(lr, SCALE).clamp(0, 1))  # I[0]
    torch.testing.assert_close(depth.images[1], out["sr_steps"][0].clamp(0, 1))  # I[1]
    torch.testing.assert_close(depth.images[2], out["sr_steps"][1].clamp(0, 1))  # I[2]
    assert out["depth"] is estimator.depths[-1]  # D[T], from which K's last estimate came


def test_svkr_with_one_iteration_is_a_single_pass_of_the_parts():
    ke, de, sr = _dkenet(), _smp_depth(), _rrdbsft()
    svkr = SVKR(ke, de, sr, iterations=1)
    lr = torch.rand(2, 3, 6, 5, generator=_gen(1))
    with torch.no_grad():
        out = svkr(lr)
        image = imresize(lr, SCALE).clamp(0, 1)
        depth = de(image)
        kernels = ke(lr, depth)
        expected = sr(lr, kernels=kernels)
    assert torch.equal(out["depth"], depth)
    assert torch.equal(out["kernels"], kernels)
    assert torch.equal(out["sr"], expected)
    assert out["sr"].shape == (2, 3, 12, 10) and len(out["sr_steps"]) == 1


def test_svkr_with_real_parts_keeps_kernels_normalized_and_uses_ground_truth_depth():
    svkr = SVKR(_dkenet(), GroundTruthDepth(), _rrdbsft(), iterations=3)
    lr = torch.rand(2, 3, 6, 5, generator=_gen(1))
    depth_mm = 500.0 + 3000.0 * torch.rand(2, 1, 12, 10, generator=_gen(2))
    out = svkr(lr, depth=depth_mm)
    torch.testing.assert_close(out["depth"], _defocus_reference(depth_mm))
    torch.testing.assert_close(out["kernels"].sum(1), torch.ones(2, 12, 10))
    assert (out["kernels"] >= 0).all()
    out["sr"].mean().backward()
    assert all(p.grad is not None for p in svkr.kernel_estimator.parameters())


def test_svkr_gives_the_sr_net_the_pca_code_of_the_kernels(tmp_path: Path):
    blur = GaussianFieldBlur(kernel_size=K)
    pca = fit_kernel_pca(blur, num_kernels=200, num_components=6, seed=0)
    fields = _fields(1, 2, (8, 10), seed=1)
    sr = _RecordingSR()
    svkr = SVKR(_ScriptedKernels(fields), _RecordingDepth(), sr, iterations=1, pca=pca)
    svkr(torch.rand(2, 3, 4, 5, generator=_gen(2)))
    code = sr.conditions[0]
    assert code.shape == (2, 6, 4, 5)  # on the LR grid
    pooled = F.avg_pool2d(fields[0], SCALE)
    torch.testing.assert_close(code, pca.encode(pooled))
    torch.testing.assert_close(code, F.avg_pool2d(pca.encode(fields[0]), SCALE))  # affine
    # the basis is saved with the network
    state = svkr.state_dict()
    assert torch.equal(state["pca_components"], pca.components)
    torch.testing.assert_close(svkr.pca.decode(svkr.pca.encode(pooled)), pca.decode(code))
    pca.save(tmp_path / "basis.pt")  # configs pass the basis by path
    loaded = SVKR(_ScriptedKernels(fields), _RecordingDepth(), sr, pca=tmp_path / "basis.pt")
    assert torch.equal(loaded.pca_components, pca.components)


def test_svkr_checks_its_arguments():
    parts = (_ScriptedKernels([]), _RecordingDepth(), _RecordingSR())
    with pytest.raises(ValueError, match="iterations"):
        SVKR(*parts, iterations=0)
    with pytest.raises(ValueError, match="gamma"):
        SVKR(*parts, gamma=1.5)
    with pytest.raises(ValueError, match="update"):
        SVKR(*parts, update="eq3")
    pca = fit_kernel_pca(GaussianFieldBlur(kernel_size=K), 50, 4)
    with pytest.raises(ValueError, match="kernel_channels=4"):
        SVKR(_dkenet(), GroundTruthDepth(), _rrdbsft(K * K), pca=pca)
    assert SVKR(*parts).pca is None


# ------------------------------------------------------------------- kernel PCA basis


@pytest.mark.parametrize(
    ("model", "depth_guided"), [("linear", True), ("linear", False), ("camera", True)]
)
def test_fit_kernel_pca_basis_identities(model, depth_guided):
    blur = GaussianFieldBlur(
        kernel_size=7, sigma_range=(0.5, 3.0), aspect_range=(0.3, 1.0), model=model
    )
    pca = fit_kernel_pca(blur, 300, 8, seed=3, depth_guided=depth_guided)
    assert (pca.kernel_size, pca.num_components) == (7, 8)
    eye = torch.eye(8, dtype=torch.float64)
    torch.testing.assert_close(pca.components @ pca.components.T, eye)  # orthonormal
    # every kernel sums to 1: the mean does too, and the components lie in the sum-0 plane
    torch.testing.assert_close(pca.mean.sum(), torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(pca.components.sum(1), torch.zeros(8, dtype=torch.float64))
    assert (pca.explained[:-1] >= pca.explained[1:]).all()
    again = fit_kernel_pca(blur, 300, 8, seed=3, depth_guided=depth_guided)
    assert torch.equal(again.components, pca.components)  # the seed fixes the draw


@pytest.mark.parametrize(
    "blur",
    [
        GaussianFieldBlur(kernel_size=7, sigma_range=(0.5, 3.0), aspect_range=(1.0, 1.0)),
        GaussianFieldBlur(kernel_size=7, model="camera"),  # isotropic by default
    ],
)
def test_fit_kernel_pca_isotropic_kernels_have_a_symmetric_mean(blur):
    mean = fit_kernel_pca(blur, 100, 4).mean.view(7, 7)
    torch.testing.assert_close(mean, mean.T)
    torch.testing.assert_close(mean, mean.flip(0))
    torch.testing.assert_close(mean, mean.flip(1))
