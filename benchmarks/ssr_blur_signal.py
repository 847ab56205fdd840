"""How strongly each parameter of SSR's degradation moves the LR image, against the noise.

A kernel estimator can only learn the parameters that its inputs determine: what the LR
image shows above the noise and JPEG, and what it is given (the depth input). For
``degradation=gaussian_sv`` on the built-in data at the size of
``experiment=synthetic_ssr_stage1`` (64x80 HR, x4, its seed and scene mix; only the
space-variant samples), this prints, for the current design (``model=camera``) and the
first one (``model=linear`` with Real-ESRGAN's noise 1-25 grey levels and JPEG 30-95):

- ``mean |dLR|``: the mean absolute change of the LR image (RGB in ``[0, 1]``, before
  noise) caused by the blur itself (blurred vs sharp), by a change of one parameter with
  the others kept (the field rendered again), and by the noise + JPEG step (noisy vs
  clean LR of the same blurred image);
- ``mean |dY|``: the same on the luma (BT.601, ``[0, 1]``): JPEG's 4:2:0 chroma
  subsampling changes colour more than brightness;
- ``kernel L1``: what the change costs in the metric stage 1 is judged by
  (:func:`svblur.metrics.kernel_l1` on the LR grid, the fields averaged over each 4x4
  block), i.e. what a network that cannot see the parameter loses.

Parameter changes. Camera: ``A`` times 1.25 and 0.75 (mean of both), ``A`` at the middle
of its range (what a network reading the defocus but not ``A`` predicts at best), the
focus quantile 0.5 -> 0.25 and 0.75. Linear: ``sigma_max`` times 1.25 and 0.75, the focus
at another random pixel's depth, the aspect 0.65 vs 1, the angle turned by 90 degrees.
Also printed: the kernel L1 of the samples' mean kernel (the constant baseline, measured
on these samples).

Usage::

    python benchmarks/ssr_blur_signal.py                 # ~1 min on one core
    python benchmarks/ssr_blur_signal.py --samples 64 --threads 2
"""

from __future__ import annotations

import argparse
import functools
import itertools
import math
import time
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from svblur.conf import config_dir
from svblur.data import SyntheticDefocus
from svblur.data.scenes import generate_scene, stereo_motorcycle_scene
from svblur.degradation import (
    Bicubic,
    GaussianFieldBlur,
    SamplePipeline,
    SceneInput,
    apply_kernel_field,
    depth_gaussian_field,
    random_gaussian_noise,
    random_jpeg,
)
from svblur.metrics import kernel_l1

LUMA = np.array([65.481, 128.553, 24.966]) / 255.0
BLUR = "blur (blurred vs sharp)"
NOISE = "noise + JPEG (noisy vs clean LR)"


def compose_stage1(*overrides: str):
    """``experiment=synthetic_ssr_stage1`` as ``svblur-train`` composes it."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=config_dir()):
            return compose("train", overrides=["experiment=synthetic_ssr_stage1", *overrides])
    finally:
        GlobalHydra.instance().clear()


def first_design(pipeline: SamplePipeline) -> SamplePipeline:
    """The first ``gaussian_sv``: linear model, anisotropic, Real-ESRGAN's noise ranges."""
    blur = replace(pipeline.blur, model="linear", sigma_range=(0.5, 4.0), aspect_range=(0.3, 1.0))
    noise = [
        functools.partial(random_gaussian_noise, sigma_range=(1 / 255, 25 / 255), gray_prob=0.4),
        functools.partial(random_jpeg, quality_range=(30, 95)),
    ]
    return SamplePipeline(blur, noise=noise, scale=pipeline.scale)


def _blur(image: np.ndarray, kernels: torch.Tensor) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
    out = apply_kernel_field(x, kernels[None].float())[0].permute(1, 2, 0).numpy()
    return np.clip(out, 0.0, 1.0)


def _on_lr_grid(kernels: torch.Tensor, scale: int) -> torch.Tensor:
    return F.avg_pool2d(kernels[None].float(), scale)


class Measure:
    """Accumulates ``mean |dLR|``, ``mean |dY|`` and kernel L1 per named change."""

    def __init__(self) -> None:
        self.rows: dict[str, list[tuple[float, float, float]]] = {}

    def add(self, name: str, lr: np.ndarray, other: np.ndarray, l1: float = math.nan) -> None:
        diff = np.abs(lr.astype(np.float64) - other)
        luma = np.abs((lr.astype(np.float64) - other) @ LUMA)
        self.rows.setdefault(name, []).append((float(diff.mean()), float(luma.mean()), l1))

    def table(self, title: str, noise: str) -> str:
        reference = np.mean([r[0] for r in self.rows[noise]])
        lines = [
            f"{title}",
            "| change | mean abs dLR | mean abs dY | / noise+JPEG | kernel L1 |",
            "|---|---|---|---|---|",
        ]
        for name, values in self.rows.items():
            rgb, luma, l1 = np.mean(values, axis=0)
            l1_text = "" if math.isnan(l1) else f"{l1:.3f}"
            lines.append(f"| {name} | {rgb:.4f} | {luma:.4f} | {rgb / reference:.2f} | {l1_text} |")
        blur = np.array([r[0] for r in self.rows[BLUR]])
        noise_rgb = np.array([r[0] for r in self.rows[noise]])
        lines.append(
            f"blur above noise + JPEG in {int((blur > noise_rgb).sum())} of {blur.size} images; "
            f"blur per image {blur.min():.4f} to {blur.max():.4f}"
        )
        return "\n".join(lines)


def _parameter_changes(
    blur: GaussianFieldBlur, meta: dict, depth: np.ndarray, index: int
) -> list[tuple[str, torch.Tensor, torch.Tensor | None]]:
    """``(name, changed field, reference field or None for the drawn one)`` per change."""
    k = int(blur.kernel_size)
    if blur.model == "camera":
        aperture, focus, cap = meta["aperture"], meta["focus_depth"], blur.cap

        def camera(a: float, f: float) -> torch.Tensor:
            return depth_gaussian_field(depth, k, f, cap, model="camera", aperture=a)

        middle = 0.5 * sum(float(v) for v in blur.aperture_range)
        near, far = (float(np.quantile(depth, q, method="lower")) for q in (0.25, 0.75))
        return [
            ("A x 1.25 / x 0.75", camera(1.25 * aperture, focus), None),
            ("A x 1.25 / x 0.75", camera(0.75 * aperture, focus), None),
            ("A at the middle of its range", camera(middle, focus), None),
            ("focus quantile 0.5 -> 0.25 / 0.75", camera(aperture, near), None),
            ("focus quantile 0.5 -> 0.25 / 0.75", camera(aperture, far), None),
        ]
    sigma_max, focus = meta["sigma_max"], meta["focus_depth"]
    aspect, theta = meta["aspect"], meta["theta"]

    def linear(s: float, f: float, a: float, t: float) -> torch.Tensor:
        return depth_gaussian_field(depth, k, f, s, aspect=a, theta=t)

    moved = float(depth.flat[int(np.random.default_rng([index, 1]).integers(depth.size))])
    return [
        ("sigma_max x 1.25 / x 0.75", linear(1.25 * sigma_max, focus, aspect, theta), None),
        ("sigma_max x 1.25 / x 0.75", linear(0.75 * sigma_max, focus, aspect, theta), None),
        ("focus at another pixel", linear(sigma_max, moved, aspect, theta), None),
        (
            "aspect 0.65 vs 1",
            linear(sigma_max, focus, 0.65, theta),
            linear(sigma_max, focus, 1.0, theta),
        ),
        ("angle + 90 degrees", linear(sigma_max, focus, aspect, theta + math.pi / 2), None),
    ]


def measure(
    pipeline: SamplePipeline, dataset: SyntheticDefocus, samples: int
) -> tuple[Measure, float]:
    """The rows of :class:`Measure` and the mean-kernel L1 over the space-variant samples."""
    blur = pipeline.blur
    if not isinstance(blur, GaussianFieldBlur):
        raise TypeError(f"expected a GaussianFieldBlur pipeline, got {blur!r}")
    to_lr, scale = Bicubic(pipeline.scale), pipeline.scale
    rows, fields = Measure(), []
    variant = (i for i in range(len(dataset)) if not dataset.is_space_invariant(i))
    for index in itertools.islice(variant, samples):
        rng = dataset.generator(index)
        if dataset.is_real(index):
            scene = stereo_motorcycle_scene(rng, dataset.hr_size)
        else:
            scene = generate_scene(rng, dataset.hr_size, dataset.num_classes)
        degraded = pipeline.degrade(SceneInput(scene.image, scene.depth, scene.semantics), rng)
        base = _on_lr_grid(torch.from_numpy(degraded.maps["kernels"]), scale)
        blurred = np.clip(degraded.image, 0.0, 1.0)
        lr = to_lr(blurred)
        rows.add(BLUR, lr, to_lr(scene.image))
        depth = scene.depth.astype(np.float64)
        for name, field, reference in _parameter_changes(blur, degraded.meta, depth, index):
            before = lr if reference is None else to_lr(_blur(scene.image, reference))
            target = base if reference is None else _on_lr_grid(reference, scale)
            l1 = float(kernel_l1(_on_lr_grid(field, scale), target)[0])
            rows.add(name, before, to_lr(_blur(scene.image, field)), l1)
        noisy = pipeline.to_lr(blurred, np.random.default_rng([index, 3]))
        rows.add(NOISE, noisy, lr)
        fields.append(base)
    if len(fields) < samples:
        raise ValueError(f"the data set has only {len(fields)} space-variant samples")
    stacked = torch.cat(fields)
    mean = stacked.mean(dim=(0, 2, 3)).view(1, -1, 1, 1)
    constant = float(kernel_l1(mean.expand_as(stacked), stacked).mean())
    return rows, constant


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=32, help="space-variant samples")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = compose_stage1()
    new = instantiate(cfg.degradation, _convert_="all")
    data = cfg.data
    dataset = SyntheticDefocus(
        num_samples=10 * args.samples,
        hr_size=tuple(data.hr_size),
        scale=int(data.scale),
        num_classes=int(data.num_classes),
        split="train",
        seed=int(data.seed),
        space_invariant_fraction=float(data.space_invariant_fraction),
        real_fraction=float(data.real_fraction),
        degradation=new,
    )
    print(
        f"{args.samples} space-variant training samples of experiment=synthetic_ssr_stage1, "
        f"HR {tuple(data.hr_size)}, x{data.scale}, seed {data.seed}\n"
    )
    for title, pipeline in (
        ("camera model (now)", new),
        ("linear model (first design)", first_design(new)),
    ):
        start = time.perf_counter()
        rows, constant = measure(pipeline, dataset, args.samples)
        print(rows.table(f"{title}: {pipeline.blur}", NOISE))
        print(
            f"mean-kernel (constant) L1 on these samples: {constant:.3f}; "
            f"{time.perf_counter() - start:.0f} s\n"
        )


if __name__ == "__main__":
    main()
