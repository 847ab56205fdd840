"""The image-quality metrics of diffusion-SR tables (SSR Tab. 1, as StableSR's), through
``pyiqa``, read from weight files already on this machine.

SSR reports PSNR, SSIM, LPIPS, MUSIQ, NIQE and CLIP-IQA. PSNR and SSIM are svblur's own
(:mod:`svblur.metrics.sr`, Y channel, BasicSR's convention); the other four need learned
weights or fitted statistics, and come from pyiqa (:data:`PAPER_IQA_METRICS`), the
toolbox those papers measured with:

- ``lpips``: LPIPS (AlexNet; full reference; lower is better);
- ``musiq``: MUSIQ trained on KonIQ-10k (no reference; higher is better);
- ``niqe``: NIQE with the pristine-image statistics of the original release (no
  reference; lower is better);
- ``clipiqa``: CLIP-IQA with the RN50 CLIP (no reference; higher is better).

pyiqa fetches its files on first use. Here every fetch looks in one local folder
(``weights_dir``; ``None``: pyiqa's and torch's own caches) and never downloads: pyiqa's
own files and CLIP's are looked for as ``weights_dir/<file>``, torchvision's backbones as
``weights_dir/checkpoints/<file>`` (torch hub's layout). A metric whose file is absent is
skipped with one log line that names the path it looked for (:func:`local_iqa_metrics`).

pyiqa is installed by ``make install`` without its declared dependencies
(``pip install --no-deps pyiqa``: they include a GUI build of OpenCV that would replace
``opencv-python-headless``, and training-only packages); the ``iqa`` extra lists what its
metrics import.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import sys
import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from svblur.errors import InputError

from .regions import SRPerceptual

__all__ = [
    "IQA_LOWER_IS_BETTER",
    "PAPER_IQA_METRICS",
    "IQAMean",
    "MissingWeightFile",
    "local_iqa_metrics",
    "offline_iqa",
]

log = logging.getLogger(__name__)

#: SSR Tab. 1's learned and no-reference metrics, by pyiqa name.
PAPER_IQA_METRICS: tuple[str, ...] = ("lpips", "musiq", "niqe", "clipiqa")
#: Their direction: ``True`` where lower is better.
IQA_LOWER_IS_BETTER: dict[str, bool] = {
    "lpips": True,
    "musiq": False,
    "niqe": True,
    "clipiqa": False,
}
#: The smallest image side (after the crop) a metric measures: NIQE fits its statistics on
#: 96 x 96 blocks. Smaller images get NaN, left out of the mean, with one warning.
MIN_SIDE: dict[str, int] = {"niqe": 96}
#: What ``make install`` runs; the hint of every "pyiqa is missing" message.
PYIQA_INSTALL = 'pip install --no-deps "pyiqa==0.1.16" && pip install "svblur[iqa]"'


class MissingWeightFile(InputError):
    """A metric asked for a weight file that is not on this machine."""

    def __init__(self, path: str | os.PathLike[str], url: str) -> None:
        self.path = str(path)
        self.url = url
        super().__init__(f"weight file {self.path} not found (pyiqa fetches it from {url})")


@contextlib.contextmanager
def offline_iqa(weights_dir: str | os.PathLike[str] | None = None) -> Iterator[None]:
    """While active, every file pyiqa fetches is read from ``weights_dir`` (see the module
    docstring for the layout) or raises :class:`MissingWeightFile`; nothing is downloaded.

    Covers pyiqa's own fetcher (``pyiqa.utils.download_util``), torch hub (torchvision's
    ImageNet backbones) and pyiqa's CLIP loader.
    """
    download_util = importlib.import_module("pyiqa.utils.download_util")
    clip_model = importlib.import_module("pyiqa.archs.clip_model")

    def refuse(url: str, dst: str, *args: Any, **kwargs: Any) -> None:
        raise MissingWeightFile(dst, url)

    def local_clip(url: str, root: str) -> str:
        folder = Path(weights_dir) if weights_dir is not None else Path(root)
        target = folder / os.path.basename(url)
        if not target.is_file():
            raise MissingWeightFile(target, url)
        return str(target)

    saved = (
        download_util.DEFAULT_CACHE_DIR,
        download_util.download_url_to_file,
        torch.hub.download_url_to_file,
        clip_model._download,
        torch.hub.get_dir(),
    )
    if weights_dir is not None:
        download_util.DEFAULT_CACHE_DIR = str(weights_dir)
        torch.hub.set_dir(str(weights_dir))
    download_util.download_url_to_file = refuse
    torch.hub.download_url_to_file = refuse
    clip_model._download = local_clip
    try:
        yield
    finally:
        download_util.DEFAULT_CACHE_DIR = saved[0]
        download_util.download_url_to_file = saved[1]
        torch.hub.download_url_to_file = saved[2]
        clip_model._download = saved[3]
        torch.hub.set_dir(saved[4])


def _import_pyiqa() -> Any:
    """Import pyiqa. Its CLIP metrics import OpenAI's ``clip`` package, which reads
    ``pkg_resources.packaging`` (the ``packaging`` library) at import; setuptools 81+ no
    longer ships ``pkg_resources``, so where it is absent that one attribute is provided."""
    try:
        importlib.import_module("pkg_resources")
    except ImportError:
        # optional (the iqa extra), so imported by name; clip reads packaging.version
        importlib.import_module("packaging.version")
        shim = types.ModuleType("pkg_resources")
        shim.packaging = importlib.import_module("packaging")  # type: ignore[attr-defined]
        sys.modules.setdefault("pkg_resources", shim)
    return importlib.import_module("pyiqa")


def local_iqa_metrics(
    names: Sequence[str], weights_dir: str | os.PathLike[str] | None = None
) -> dict[str, nn.Module]:
    """pyiqa's metrics ``names``, built from local files only (:func:`offline_iqa`).

    A metric whose weight file is absent, or every metric when pyiqa is not installed, is
    left out with one warning that says why (the file it looked for); the others are
    returned, in eval mode on the CPU, as pyiqa's ``InferenceModel`` (``metric(sr)``, or
    ``metric(sr, hr)`` for LPIPS: per-image scores).

    Raises:
        ValueError: A name pyiqa does not know.
    """
    if not names:
        return {}
    try:
        pyiqa = _import_pyiqa()
    except ImportError:
        log.warning(
            "IQA metrics %s skipped: pyiqa is not installed (%s)", list(names), PYIQA_INSTALL
        )
        return {}
    known = set(pyiqa.list_models())
    unknown = sorted(set(names) - known)
    if unknown:
        raise ValueError(f"unknown IQA metrics {unknown}; pyiqa knows e.g. {PAPER_IQA_METRICS}")
    metrics: dict[str, nn.Module] = {}
    for name in names:
        try:
            # pyiqa prints "Downloading: ..." before each fetch, which never happens here
            with offline_iqa(weights_dir), contextlib.redirect_stdout(io.StringIO()):
                metric = pyiqa.create_metric(name, device=torch.device("cpu"))
        except MissingWeightFile as missing:
            log.warning("IQA metric %s skipped: %s", name, missing)
            continue
        metrics[name] = metric.eval()
    return metrics


class IQAMean(SRPerceptual):
    """Mean over images of a pyiqa metric of SR images in ``[0, 1]`` (against HR for a
    full-reference one), a border of ``crop_border`` removed. Not capped; images smaller
    than the metric's :data:`MIN_SIDE` are left out (NaN per image, one warning).

    As :class:`~svblur.metrics.SRPerceptual`, the pyiqa model is kept outside the module
    tree (its weights stay out of checkpoints) and follows the inputs' device.
    """

    # the direction depends on the metric: see ``lower_is_better``
    higher_is_better = None

    def __init__(self, name: str, metric: nn.Module, crop_border: int = 4, **kwargs) -> None:
        super().__init__(metric, crop_border, **kwargs)
        self.name = name
        #: The metric's direction (torchmetrics' ``higher_is_better`` is per class).
        self.lower_is_better = IQA_LOWER_IS_BETTER.get(
            name, bool(getattr(metric, "lower_better", False))
        )
        self._warned = False

    @property
    def full_reference(self) -> bool:
        return getattr(self._network[0], "metric_mode", "NR") == "FR"

    def _measure(
        self, network: nn.Module, pred: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        side = MIN_SIDE.get(self.name, 1)
        if min(pred.shape[-2:]) < side:
            if not self._warned:
                log.warning(
                    "IQA metric %s needs images of at least %d x %d pixels after the %d-pixel "
                    "crop, got %d x %d: not measured",
                    self.name,
                    side,
                    side,
                    self.crop_border,
                    *pred.shape[-2:],
                )
                self._warned = True
            return pred.new_full((pred.shape[0],), torch.nan)
        out = network(pred, target) if self.full_reference else network(pred)
        return torch.as_tensor(out).reshape(-1).float()

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        scores = self.scores(pred, target)
        scores = scores[~torch.isnan(scores)]
        self.total += scores.sum().to(self.total)
        self.count += scores.numel()
