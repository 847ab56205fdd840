"""One way to make a training pair: degrade the sharp HR scene, then make the LR image.

Every data set of svblur (the built-in one, the on-the-fly ones, any folder of images) and
the data-set builders make their samples with a :class:`SamplePipeline`:

1. ``blur``: a degradation of the sharp HR image that also returns what it knows:
   :class:`DefocusBlur` (thin-lens defocus from depth, SYNDOF's generator),
   :class:`GaussianFieldBlur` (spatially variant Gaussian kernels, guided by depth as in
   SSR), :class:`MotionFieldBlur` (region-wise motion, as ArcSR), :class:`PartialBlur`
   (defocus or motion in parts of the image, with the mask, as PBaSR), or ``None``
   (stages in :mod:`~svblur.degradation.defocus_blur` and
   :mod:`~svblur.degradation.field_blurs`, their contract in
   :mod:`~svblur.degradation.sample`; all re-exported here);
2. ``downsample``: HR to LR, MATLAB-style antialiased bicubic (:class:`Bicubic`, the
   default), BSRGAN's shuffled model (:class:`~svblur.degradation.BSRGANDegradation`,
   the ``bsrgan`` config) or Real-ESRGAN's second-order model
   (:class:`~svblur.degradation.SecondOrderDegradation`, the ``realesrgan`` config);
   both carry their own Gaussian-family blurs, so they need no ``blur`` step;
3. ``noise``: steps on the LR image in order (Gaussian / Poisson noise, JPEG), each a
   callable ``(image, rng) -> image``.

Randomness comes from the ``np.random.Generator`` the caller passes, so a sample stays a
pure function of its seed (DDP- and resume-correct). Hydra configs: ``conf/degradation/``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from svblur.errors import InputError

# The stages and the sample contract live in their own modules; re-exported here.
from .defocus_blur import SYNDOF_MAX_COC, Camera, CameraPrior, DefocusBlur
from .field_blurs import GaussianFieldBlur, MotionFieldBlur, PartialBlur
from .resize import imresize
from .sample import SAMPLE_KEYS, Degradation, Degraded, SceneInput, maps_to_tensors

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
