"""One way to make a training pair: degrade the sharp HR scene, then make the LR image.

Every data set of svblur (the built-in one, the on-the-fly ones, any folder of images) and
the data-set builders make their samples with a :class:`SamplePipeline`:

1. ``blur``: a degradation of the sharp HR image that also returns what it knows:
   :class:`DefocusBlur` (thin-lens defocus from depth, SYNDOF's generator),
   :class:`GaussianFieldBlur` (spatially variant Gaussian kernels, guided by depth as in
   SSR), :class:`MotionFieldBlur` (region-wise motion, as ArcSR), :class:`PartialBlur`
   (defocus or motion in parts of the image, with the mask, as PBaSR), or ``None``;
2. ``downsample``: HR to LR, MATLAB-style antialiased bicubic (:class:`Bicubic`, the
   default) or Real-ESRGAN's second-order model
   (:class:`~svblur.degradation.SecondOrderDegradation`, the ``bsrgan`` config);
3. ``noise``: steps on the LR image in order (Gaussian / Poisson noise, JPEG), each a
   callable ``(image, rng) -> image``.

The camera prior of the defocus generator is :class:`CameraPrior`; its defaults (SYNDOF's
50 / 70 / 85 mm with weights 0.1 / 0.4 / 0.4) are written only there.

Randomness comes from the ``np.random.Generator`` the caller passes, so a sample stays a
pure function of its seed (DDP- and resume-correct). Hydra configs: ``conf/degradation/``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import torch

from svblur.errors import InputError

from .defocus import decompose_layers, render_defocus, render_uniform_blur
from .fields import (
    DEFAULT_FOCUS_QUANTILE,
    apply_kernel_field,
    depth_gaussian_field,
    depth_sigma,
    field_from_kernel,
    focus_at_quantile,
    gaussian_field,
    motion_field,
)
from .kernels import gaussian_kernel, motion_kernel
from .resize import imresize

__all__ = [
    "SAMPLE_KEYS",
    "SYNDOF_MAX_COC",
    "Bicubic",
    "Camera",
    "CameraPrior",
    "Degradation",
    "Degraded",
    "DefocusBlur",
    "GaussianFieldBlur",
    "MotionFieldBlur",
    "PartialBlur",
    "SamplePipeline",
    "SceneInput",
    "maps_to_tensors",
]

#: SYNDOF's largest circle of confusion (px), meant for 640 px wide images.
SYNDOF_MAX_COC = 29.0

#: Every key a sample (and so a batch) may carry, and what it holds. Shapes are per
#: sample; a batch adds the leading ``B``. ``H, W`` is the HR size, ``h, w = H/s, W/s``.
SAMPLE_KEYS: dict[str, str] = {
    "lr": "(3, h, w) float32 in [0, 1]: the network input, degraded and downsampled",
    "hr": "(3, H, W) float32 in [0, 1]: the sharp HR image, the SR target",
    "blur": (
        "(1, H, W) float32: Gaussian sigma per HR pixel in HR pixels (defocus, isotropic "
        "Gaussian fields; 0 = sharp)"
    ),
    "kernels": (
        "(k*k, H, W) float32: the kernel of every HR pixel, row-major, each summing to 1 "
        "(Gaussian and motion fields), applied as in svblur.degradation.apply_kernel_field"
    ),
    "blur_mask": "(1, H, W) float32 in {0, 1}: 1 = blurred (partial blur)",
    "depth": "(1, H, W) float32: depth in mm (where the source has it)",
    "seg": "(H, W) int64: class per HR pixel, 255 = ignore (where the source has it)",
}


@dataclass(frozen=True)
class SceneInput:
    """A sharp scene to degrade.

    Attributes:
        image: RGB ``(H, W, 3)`` float32 in ``[0, 1]``.
        depth: Depth ``(H, W)`` in mm (valid everywhere), or ``None``.
        seg: Labels ``(H, W)`` integer, or ``None``.
    """

    image: np.ndarray
    depth: np.ndarray | None = None
    seg: np.ndarray | None = None


@dataclass(frozen=True)
class Degraded:
    """The sharp HR image degraded at HR resolution, with what the degradation knows.

    Attributes:
        image: ``(H, W, 3)`` float32 (not clipped: a defocus render may exceed ``[0, 1]``
            by rounding, and the released data sets were made from the unclipped image).
        maps: Per-pixel maps in the layout of :data:`SAMPLE_KEYS` without the channel
            axis of one-channel maps: ``blur`` ``(H, W)``, ``kernels`` ``(k*k, H, W)``,
            ``blur_mask`` ``(H, W)``.
        meta: The draw (camera, kernels' parameters), JSON-serialisable.
    """

    image: np.ndarray
    maps: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)


class Degradation(Protocol):
    """A degradation of the sharp HR scene (the ``blur`` step of a pipeline)."""

    def __call__(
        self, scene: SceneInput, rng: np.random.Generator, *, invariant: bool = False
    ) -> Degraded: ...  # pragma: no cover


# ----------------------------------------------------------------------- the camera


@dataclass(frozen=True)
class Camera:
    """One draw of the camera prior.

    Attributes:
        focal_length_mm: Focal length ``f``.
        focus_distance_mm: Focus distance, a depth of the scene (before any shift); NaN
            when only the space-invariant variant was drawn.
        invariant_coc: CoC (px, 0.1 grid) of the space-invariant variant; NaN when only
            the thin-lens variant was drawn.
    """

    focal_length_mm: float
    focus_distance_mm: float
    invariant_coc: float

    @property
    def invariant_sigma(self) -> float:
        return (self.invariant_coc - 1.0) / 4.0


@dataclass(frozen=True)
class CameraPrior:
    """SYNDOF's camera prior: focal length by weight, focus on the depth of a random pixel.

    Args:
        focal_lengths: Candidate focal lengths in mm (SYNDOF: 50, 70, 85).
        focal_weights: Their sampling weights, normalised (SYNDOF: 0.1, 0.4, 0.4).
    """

    focal_lengths: tuple[float, ...] = (50.0, 70.0, 85.0)
    focal_weights: tuple[float, ...] = (0.1, 0.4, 0.4)

    def __post_init__(self) -> None:
        object.__setattr__(self, "focal_lengths", tuple(float(f) for f in self.focal_lengths))
        object.__setattr__(self, "focal_weights", tuple(float(w) for w in self.focal_weights))
        if len(self.focal_lengths) == 0 or len(self.focal_lengths) != len(self.focal_weights):
            raise InputError(
                f"focal_lengths and focal_weights must be non-empty and of equal length, got "
                f"{self.focal_lengths} and {self.focal_weights}"
            )
        if min(self.focal_weights) < 0 or sum(self.focal_weights) <= 0:
            raise InputError(
                f"focal_weights must be non-negative with a positive sum, got {self.focal_weights}"
            )
        if min(self.focal_lengths) <= 0:
            raise InputError(f"focal_lengths must be positive, got {self.focal_lengths}")

    @property
    def probabilities(self) -> np.ndarray:
        weights = np.asarray(self.focal_weights, np.float64)
        return weights / weights.sum()

    def draw(
        self,
        rng: np.random.Generator,
        depth_mm: np.ndarray,
        max_coc: float,
        variants: Literal["both", "variant", "invariant"] = "both",
    ) -> Camera:
        """Draw a camera for a scene, in this order: focal length, focus pixel, invariant CoC.

        Args:
            rng: The sample's generator.
            depth_mm: Valid depth ``(H, W)`` in mm.
            max_coc: Largest CoC in pixels (the invariant CoC is uniform on ``[1,
                max_coc]``, rounded to 0.1 px).
            variants: Which of the two variants to draw for: ``"both"`` (the data-set
                builders render both of one camera), or only the thin-lens
                (``"variant"``) or the space-invariant one (``"invariant"``); a variant
                not drawn takes no random numbers and is NaN.
        """
        focal = float(rng.choice(np.asarray(self.focal_lengths, np.float64), p=self.probabilities))
        focus = coc = math.nan
        if variants in ("both", "variant"):
            focus = float(depth_mm.flat[int(rng.integers(depth_mm.size))])
        if variants in ("both", "invariant"):
            coc = round(float(rng.uniform(1.0, max_coc)), 1)
        return Camera(focal, focus, coc)


@dataclass(frozen=True)
class DefocusBlur:
    """Thin-lens defocus from depth, rendered with SYNDOF's layered generator.

    A space-variant draw focuses on the depth of a random pixel and solves the f-number so
    that the largest CoC equals ``max_coc``; a space-invariant draw blurs the whole image
    with one Gaussian (CoC uniform in ``[1, max_coc]``). Maps: ``blur`` (sigma per pixel).

    Args:
        camera: The camera prior.
        max_coc: Largest circle of confusion in HR pixels (SYNDOF: 29 for 640 px wide
            images); ``None``: the data set's default for its image width.
        device: Torch device of the renderer (``None``: its default).
    """

    camera: CameraPrior = field(default_factory=CameraPrior)
    max_coc: float | None = None
    device: str | None = None

    def resolve_max_coc(self, default: float) -> float:
        max_coc = float(default if self.max_coc is None else self.max_coc)
        if not (math.isfinite(max_coc) and max_coc > 1):
            raise InputError(f"max_coc must be > 1 pixel, got {max_coc}")
        return max_coc

    def render(
        self,
        scene: SceneInput,
        camera: Camera,
        space_variant: bool,
        max_coc: float,
        *,
        support: float | None = None,
        record: bool = True,
    ) -> Degraded:
        """Render one variant of a camera draw (the builders render both of one draw).

        Args:
            scene: The sharp scene (depth needed when ``space_variant``).
            camera: The draw.
            space_variant: Thin-lens defocus, or one Gaussian of the invariant CoC.
            max_coc: Largest CoC in pixels.
            support: Kernel support (px) of the one Gaussian; ``None``: ``max_coc``.
            record: Also solve the f-number and depth shift for ``meta`` (the builders'
                records; the image is the same either way).
        """
        if space_variant:
            if scene.depth is None:
                raise InputError("defocus needs depth: the scene has none")
            f_number = None
            meta: dict[str, Any] = {"space_variant": True}
            if record:
                layers = decompose_layers(
                    np.asarray(scene.depth, np.float64),
                    scene.image.shape[1],
                    camera.focal_length_mm,
                    camera.focus_distance_mm,
                    None,
                    max_coc,
                )
                f_number = layers.f_number
                meta.update(
                    focal_length_mm=camera.focal_length_mm,
                    f_number=layers.f_number,
                    focus_distance_mm=camera.focus_distance_mm,
                    depth_shift_mm=layers.shift,
                    sigma=None,
                )
            blurred, blur = render_defocus(
                scene.image,
                scene.depth,
                camera.focal_length_mm,
                camera.focus_distance_mm,
                f_number,
                max_coc,
                device=self.device,
            )
        else:
            blurred, blur = render_uniform_blur(
                scene.image,
                camera.invariant_sigma,
                max_coc=max_coc if support is None else support,
                device=self.device,
            )
            meta = {
                "space_variant": False,
                "focal_length_mm": None,
                "f_number": None,
                "focus_distance_mm": None,
                "depth_shift_mm": None,
                "sigma": camera.invariant_sigma,
            }
        meta["max_coc"] = max_coc
        return Degraded(
            np.asarray(blurred, np.float32), {"blur": np.asarray(blur, np.float32)}, meta
        )

    def __call__(
        self,
        scene: SceneInput,
        rng: np.random.Generator,
        *,
        invariant: bool = False,
        max_coc: float = SYNDOF_MAX_COC,
    ) -> Degraded:
        max_coc = self.resolve_max_coc(max_coc)
        if scene.depth is None and not invariant:
            raise InputError(
                "degradation defocus needs depth: this data has none (give depth maps, or "
                "choose degradation=gaussian_sv or motion_sv)"
            )
        depth = scene.depth if scene.depth is not None else np.zeros((1, 1))
        camera = self.camera.draw(rng, depth, max_coc, "invariant" if invariant else "variant")
        return self.render(scene, camera, not invariant, max_coc)


# -------------------------------------------------------------- kernel-field degradations


def _apply_field(image: np.ndarray, kernels: torch.Tensor) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), np.float32))[None]
    out = apply_kernel_field(x, kernels.to(torch.float32)[None])
    return out[0].permute(1, 2, 0).numpy()


def _uniform(rng: np.random.Generator, bounds: Sequence[float]) -> float:
    low, high = float(bounds[0]), float(bounds[1])
    return low if high <= low else float(rng.uniform(low, high))


@dataclass(frozen=True)
class GaussianFieldBlur:
    """Spatially variant Gaussian kernels, one per HR pixel (SSR's degradation, MANet's
    kernels).

    With depth (``depth_guided`` and a scene with depth), the kernel width follows the
    depth (:func:`~svblur.degradation.depth_gaussian_field`):

    - ``model="camera"`` (``degradation=gaussian_sv``): a thin lens, ``sigma =
      clip(A * |1 / z_f - 1 / z|, 0, cap)`` HR pixels with depth ``z`` and focus
      ``z_f`` in mm and the defocus in 1/m (:func:`~svblur.degradation.signed_defocus`).
      ``A`` (px * m, the blur per dioptre) is drawn per image from ``aperture_range``; the
      camera focuses at the depth quantile ``focus_quantile`` of the scene
      (:func:`~svblur.degradation.focus_at_quantile`, so that a network given the depth
      map can recompute the focus: :class:`~svblur.models.GroundTruthDepth`), or, with
      ``None``, at the depth of a random pixel. Isotropic unless ``aspect_range`` says
      otherwise (defocus is; anisotropy is no function of depth). A space-invariant draw
      uses the sigma of a random pixel for the whole image. See
      ``docs/ssr_stage1_identifiability.md`` for why the kernels must follow quantities
      the network sees;
    - ``model="linear"`` (the first design, kept for comparison): the largest sigma of the
      image, ``sigma_max``, is drawn from ``sigma_range`` and given to the pixel farthest
      (in depth) from a focal plane at the depth of a random pixel, sigma falling
      linearly to 0 at the focal plane; ``aspect`` and ``theta`` are drawn per image. A
      space-invariant draw uses one kernel of width ``sigma_max`` for the image.

    Without depth, either model blends a few random Gaussians with smooth weights
    (:func:`~svblur.degradation.gaussian_field`; sigmas from ``sigma_range``), or uses one
    for a space-invariant draw. Maps: ``kernels``, and ``blur`` (sigma) when the kernels
    are isotropic Gaussians of a known sigma (not blends).

    Args:
        kernel_size: Odd kernel side ``k`` (SSR: 21).
        sigma_range: ``"linear"``: range of the largest sigma in HR pixels; without depth:
            the range the blended Gaussians are drawn from.
        aspect_range: Range of ``sigma_y / sigma_x`` (``(1, 1)``: isotropic); ``None``:
            ``(1, 1)`` for ``"camera"``, ``(0.3, 1)`` for ``"linear"``.
        depth_guided: Use depth when the scene has it.
        num_kernels: Kernels blended when there is no depth.
        model: ``"camera"`` or ``"linear"`` (see above).
        aperture_range: ``"camera"``: range of ``A`` in px * m.
        sigma_cap: ``"camera"``: the largest sigma in HR pixels; ``None``: ``(kernel_size -
            1) / 5`` (2.5 sigma within the support: 4 for 21x21 kernels).
        focus_quantile: ``"camera"``: where it focuses, a depth quantile in ``[0, 1]``, or
            ``None`` for a random pixel's depth.
    """

    kernel_size: int = 21
    sigma_range: tuple[float, float] = (0.5, 4.0)
    aspect_range: tuple[float, float] | None = None
    depth_guided: bool = True
    num_kernels: int = 4
    model: Literal["camera", "linear"] = "linear"
    aperture_range: tuple[float, float] = (24.0, 36.0)
    sigma_cap: float | None = None
    focus_quantile: float | None = DEFAULT_FOCUS_QUANTILE

    def __post_init__(self) -> None:
        # configs give lists: stored as float pairs, so that equal settings compare equal
        for name in ("sigma_range", "aspect_range", "aperture_range"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(float(v) for v in value))
        if self.model not in ("camera", "linear"):
            raise ValueError(f"model: expected 'camera' or 'linear', got {self.model!r}")
        low, high = self.aperture_range
        if not 0 <= low <= high:
            raise ValueError(
                f"aperture_range: expected 0 <= min <= max (px * m), got {self.aperture_range!r}"
            )
        if self.sigma_cap is not None and not self.sigma_cap > 0:
            raise ValueError(f"sigma_cap: expected a positive sigma, got {self.sigma_cap!r}")
        if self.focus_quantile is not None and not 0 <= self.focus_quantile <= 1:
            raise ValueError(
                f"focus_quantile: expected a quantile in [0, 1] or None, got {self.focus_quantile!r}"
            )

    @property
    def aspect_bounds(self) -> tuple[float, float]:
        """``aspect_range``, or the model's default when it is ``None``."""
        if self.aspect_range is None:
            return (1.0, 1.0) if self.model == "camera" else (0.3, 1.0)
        low, high = self.aspect_range
        return low, high

    @property
    def cap(self) -> float:
        """The camera's largest sigma: ``sigma_cap``, or ``(kernel_size - 1) / 5``."""
        if self.sigma_cap is None:
            return (int(self.kernel_size) - 1) / 5.0
        return float(self.sigma_cap)

    @property
    def isotropic(self) -> bool:
        return self.aspect_bounds == (1.0, 1.0)

    def __call__(
        self, scene: SceneInput, rng: np.random.Generator, *, invariant: bool = False, **_: Any
    ) -> Degraded:
        guided = self.depth_guided and scene.depth is not None
        if self.model == "camera" and guided:
            return self._camera(scene, rng, invariant)
        return self._linear(scene, rng, invariant, guided)

    def _camera(self, scene: SceneInput, rng: np.random.Generator, invariant: bool) -> Degraded:
        depth = np.asarray(scene.depth, np.float64)
        k = int(self.kernel_size)
        aperture = _uniform(rng, self.aperture_range)
        if self.focus_quantile is None:
            focus = float(depth.flat[int(rng.integers(depth.size))])
        else:
            focus = float(focus_at_quantile(depth, float(self.focus_quantile)))
        aspect = _uniform(rng, self.aspect_bounds)
        theta = float(rng.uniform(0.0, math.pi))
        cap = self.cap
        meta: dict[str, Any] = {
            "kind": "gaussian_field",
            "model": "camera",
            "aperture": aperture,
            "focus_depth": focus,
            "aspect": aspect,
            "theta": theta,
        }
        sigma = depth_sigma(depth, focus, cap, model="camera", aperture=aperture)
        if invariant:
            pixel = int(rng.integers(depth.size))
            sigma = np.full(depth.shape, sigma.flat[pixel])
            kernel = gaussian_kernel(k, sigma.flat[0], aspect * sigma.flat[0], theta)
            kernels = field_from_kernel(kernel, depth.shape).contiguous()
            meta.update(space_variant=False, sigma=float(sigma.flat[0]))
        else:
            kernels = depth_gaussian_field(
                depth, k, focus, cap, model="camera", aperture=aperture, aspect=aspect, theta=theta
            )
            meta.update(space_variant=True)
        maps = {"kernels": kernels.numpy()}
        if self.isotropic:
            maps["blur"] = sigma.astype(np.float32)
        return Degraded(_apply_field(scene.image, kernels), maps, meta)

    def _linear(
        self, scene: SceneInput, rng: np.random.Generator, invariant: bool, guided: bool
    ) -> Degraded:
        shape = scene.image.shape[:2]
        k = int(self.kernel_size)
        sigma_max = _uniform(rng, self.sigma_range)
        meta: dict[str, Any] = {"kind": "gaussian_field", "model": "linear", "sigma_max": sigma_max}
        sigma_map = None
        if invariant:
            aspect = _uniform(rng, self.aspect_bounds)
            theta = float(rng.uniform(0.0, math.pi))
            kernel = gaussian_kernel(k, sigma_max, aspect * sigma_max, theta)
            kernels = field_from_kernel(kernel.astype(np.float32), shape).contiguous()
            sigma_map = np.full(shape, sigma_max, np.float32)
            meta.update(space_variant=False, aspect=aspect, theta=theta)
        elif guided:
            depth = np.asarray(scene.depth, np.float64)
            focus = float(depth.flat[int(rng.integers(depth.size))])
            aspect = _uniform(rng, self.aspect_bounds)
            theta = float(rng.uniform(0.0, math.pi))
            kernels = depth_gaussian_field(depth, k, focus, sigma_max, aspect=aspect, theta=theta)
            sigma_map = depth_sigma(depth, focus, sigma_max).astype(np.float32)
            meta.update(space_variant=True, focus_depth=focus, aspect=aspect, theta=theta)
        else:
            kernels = gaussian_field(
                k,
                shape,
                rng,
                num_kernels=self.num_kernels,
                sigma_range=(float(self.sigma_range[0]), sigma_max),
                isotropic_prob=1.0 if self.isotropic else 0.0,
            )
            meta.update(space_variant=True)
        maps = {"kernels": kernels.numpy()}
        if self.isotropic and sigma_map is not None:
            maps["blur"] = sigma_map
        return Degraded(_apply_field(scene.image, kernels), maps, meta)


def _regions(scene: SceneInput, layers: int, rng: np.random.Generator) -> np.ndarray:
    """Regions that move together: the labels, else depth layers, else a random ellipse
    (an object) on the background."""
    if scene.seg is not None:
        return np.asarray(scene.seg, np.int64)
    if scene.depth is not None:
        depth = np.asarray(scene.depth, np.float64)
        edges = np.quantile(depth, np.linspace(0, 1, layers + 1)[1:-1])
        return np.digitize(depth, edges).astype(np.int64)
    height, width = scene.image.shape[:2]
    cy, cx = rng.uniform(0.25, 0.75) * height, rng.uniform(0.25, 0.75) * width
    ry, rx = rng.uniform(0.15, 0.35) * height, rng.uniform(0.15, 0.35) * width
    y, x = np.ogrid[:height, :width]
    return (((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0).astype(np.int64)


@dataclass(frozen=True)
class MotionFieldBlur:
    """Region-wise motion blur (ArcSR's degradation): the background shakes with the
    camera, moving objects (regions of the segmentation, else depth layers) move linearly
    in their own directions. A space-invariant draw blurs the whole image with one
    camera-shake kernel. Maps: ``kernels``.

    Args:
        kernel_size: Odd kernel side ``k``.
        background_length: Range of the camera-shake path length in HR pixels.
        object_length: Range of the moving objects' path length in HR pixels.
        num_moving: Moving regions per image.
        feather: Width (px) over which neighbouring regions' kernels blend.
        depth_layers: Layers cut from depth when the scene has no segmentation.
    """

    kernel_size: int = 21
    background_length: tuple[float, float] = (1.0, 8.0)
    object_length: tuple[float, float] = (3.0, 15.0)
    num_moving: int = 1
    feather: float = 1.0
    depth_layers: int = 4

    def __call__(
        self, scene: SceneInput, rng: np.random.Generator, *, invariant: bool = False, **_: Any
    ) -> Degraded:
        shape = scene.image.shape[:2]
        k = int(self.kernel_size)
        if invariant:
            length = _uniform(rng, self.background_length)
            kernel = motion_kernel(k, rng, length=length).astype(np.float32)
            kernels = torch.from_numpy(kernel).reshape(-1, 1, 1).expand(k * k, *shape)
            kernels = kernels.contiguous()
            meta = {"kind": "motion_field", "space_variant": False, "length": length}
        else:
            kernels = motion_field(
                _regions(scene, self.depth_layers, rng),
                k,
                rng,
                num_moving=self.num_moving,
                background_length=tuple(self.background_length),
                object_length=tuple(self.object_length),
                feather=float(self.feather),
            )
            meta = {"kind": "motion_field", "space_variant": True}
        return Degraded(_apply_field(scene.image, kernels), {"kernels": kernels.numpy()}, meta)


@dataclass(frozen=True)
class PartialBlur:
    """Blur in parts of the image, with the binary mask (PBaSR / ReBlurSR's photos).

    ``source="defocus"``: a shallow depth of field focused on a random pixel; the mask
    marks where the blur sigma exceeds ``threshold`` (the rest is in focus).
    ``source="motion"``: one or more regions (segmentation, else depth layers) move while
    the rest stays still; the mask marks the moving regions' blurred extent (kernel
    support beyond ``threshold`` of its peak mass, dilated by the motion).

    Args:
        source: ``"defocus"`` or ``"motion"``.
        defocus: The defocus degradation (``source="defocus"``).
        kernel_size: Odd kernel side (``source="motion"``).
        object_length: Range of the moving regions' path length in HR pixels.
        num_moving: Moving regions per image.
        threshold: Sigma (px) above which a pixel counts as blurred (defocus); kernel
            mass off the centre above which it counts as blurred (motion).
    """

    source: Literal["defocus", "motion"] = "defocus"
    defocus: DefocusBlur = field(default_factory=DefocusBlur)
    kernel_size: int = 21
    object_length: tuple[float, float] = (5.0, 15.0)
    num_moving: int = 1
    threshold: float = 0.5

    def __call__(
        self,
        scene: SceneInput,
        rng: np.random.Generator,
        *,
        invariant: bool = False,
        max_coc: float = SYNDOF_MAX_COC,
    ) -> Degraded:
        if self.source == "defocus":
            out = self.defocus(scene, rng, invariant=False, max_coc=max_coc)
            mask = (out.maps["blur"] > self.threshold).astype(np.float32)
            return Degraded(out.image, {**out.maps, "blur_mask": mask}, {**out.meta})
        if self.source != "motion":
            raise InputError(
                f"partial blur source must be 'defocus' or 'motion', got {self.source!r}"
            )
        k = int(self.kernel_size)
        regions = _regions(scene, 4, rng)
        kernels = motion_field(
            regions,
            k,
            rng,
            num_moving=self.num_moving,
            background_length=(0.0, 0.0),
            object_length=tuple(self.object_length),
            feather=0.0,
        )
        centre = kernels[(k * k) // 2].numpy()
        mask = (centre < 1.0 - 1e-6).astype(np.float32)
        maps = {"kernels": kernels.numpy(), "blur_mask": mask}
        meta = {"kind": "partial_motion", "blurred_fraction": float(mask.mean())}
        return Degraded(_apply_field(scene.image, kernels), maps, meta)


# ---------------------------------------------------------------- downsampling, pipeline


@dataclass(frozen=True)
class Bicubic:
    """HR to LR by MATLAB-style antialiased bicubic ``imresize`` (the BSR data sets' LR),
    clipped to ``[0, 1]``. Draws no random numbers."""

    scale: int = 4

    def __call__(self, image: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        lr = imresize(np.asarray(image, np.float32), 1.0 / self.scale)
        return np.clip(lr, 0.0, 1.0).astype(np.float32)


class SamplePipeline:
    """Sharp HR scene -> sample arrays (``lr``, ``hr`` and the degradation's maps).

    Args:
        blur: The degradation of the HR image (``None``: none, bicubic SR data).
        downsample: HR -> LR, a callable ``(image, rng) -> lr`` with a ``scale``
            attribute (``None``: :class:`Bicubic` of ``scale``).
        noise: Steps applied to the LR image in order, callables ``(image, rng) ->
            image`` (e.g. ``functools.partial(random_gaussian_noise, sigma_range=...)``).
        scale: The LR factor; must equal the downsampler's.
    """

    def __init__(
        self,
        blur: Degradation | None = None,
        downsample: Callable[..., np.ndarray] | None = None,
        noise: Sequence[Callable[..., np.ndarray]] = (),
        scale: int = 4,
    ) -> None:
        self.blur = blur
        self.scale = int(scale)
        self.downsample = Bicubic(self.scale) if downsample is None else downsample
        own = getattr(self.downsample, "scale", self.scale)
        if int(own) != self.scale:
            raise InputError(
                f"degradation: the downsampler's scale {own} differs from the pipeline's "
                f"{self.scale} (set both from data.scale)"
            )
        self.noise = list(noise)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(blur={self.blur!r}, downsample={self.downsample!r}, "
            f"noise={self.noise!r}, scale={self.scale})"
        )

    @property
    def is_defocus(self) -> bool:
        """Whether the blur step is plain defocus (renderable on the training device)."""
        return isinstance(self.blur, DefocusBlur)

    @property
    def bicubic_only(self) -> bool:
        """Whether LR = bicubic(HR degraded) with no random LR steps (cacheable LR)."""
        return isinstance(self.downsample, Bicubic) and not self.noise

    def degrade(
        self, scene: SceneInput, rng: np.random.Generator, *, invariant: bool = False, **kwargs: Any
    ) -> Degraded:
        """The blur step: the HR image degraded, with its maps (no downsampling)."""
        if self.blur is None:
            return Degraded(np.asarray(scene.image, np.float32), {}, {"kind": "none"})
        return self.blur(scene, rng, invariant=invariant, **kwargs)

    def to_lr(self, image: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        """Downsample a degraded HR image ``(H, W, 3)`` and apply the LR steps."""
        if rng is None and not self.bicubic_only:
            raise ValueError("this pipeline draws random numbers for the LR image: pass rng")
        lr = self.downsample(image, rng)
        for step in self.noise:
            lr = step(lr, rng)
        return np.asarray(lr, np.float32)

    def __call__(
        self,
        scene: SceneInput,
        rng: np.random.Generator,
        *,
        invariant: bool = False,
        **kwargs: Any,
    ) -> dict[str, np.ndarray]:
        """Sample arrays (HWC / HW numpy): ``lr``, ``hr``, the maps, ``depth``, ``seg``."""
        degraded = self.degrade(scene, rng, invariant=invariant, **kwargs)
        sample = {"lr": self.to_lr(degraded.image, rng), "hr": scene.image, **degraded.maps}
        if scene.depth is not None:
            sample["depth"] = scene.depth
        if scene.seg is not None:
            sample["seg"] = scene.seg
        return sample


def maps_to_tensors(maps: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """A degradation's maps in the sample layout of :data:`SAMPLE_KEYS` (channel axes),
    copied (so that in-place edits of a batch never reach a cache)."""
    out = {}
    for key, value in maps.items():
        tensor = torch.from_numpy(np.array(value, np.float32, order="C"))
        out[key] = tensor if key == "kernels" else tensor[None]
    return out
