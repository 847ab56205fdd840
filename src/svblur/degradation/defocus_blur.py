"""The defocus stage of the sample pipeline: SYNDOF's camera prior and thin-lens defocus.

:class:`CameraPrior` draws a :class:`Camera` (focal length, focus distance, CoC of the
space-invariant variant); its defaults (SYNDOF's 50 / 70 / 85 mm with weights
0.1 / 0.4 / 0.4) are written only there. :class:`DefocusBlur` renders a draw with the
layered generator of :mod:`svblur.degradation.defocus`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from svblur.errors import InputError

from .defocus import decompose_layers, render_defocus, render_uniform_blur
from .sample import Degraded, SceneInput

__all__ = ["SYNDOF_MAX_COC", "Camera", "CameraPrior", "DefocusBlur"]

#: SYNDOF's largest circle of confusion (px), meant for 640 px wide images.
SYNDOF_MAX_COC = 29.0


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
