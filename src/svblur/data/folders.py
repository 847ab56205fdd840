"""What the readers of data folders share: the layout error, listings, hold-outs, checks.

The readers of released trees (GoPro and REDS in :mod:`svblur.data.motion`, ReBlurSR in
:mod:`svblur.data.reblursr`, NYUv2-BSR and Cityscapes-BSR in :mod:`svblur.data.bsr`) check
a whole tree when they are built and raise one :class:`DataLayoutError` that lists every
problem, each naming its file or folder, and ends with the layout expected. The folder
sources of :mod:`svblur.data.rgbd` list their images with :func:`list_images` too.

The DataModules hold out a seeded share of their training data for validation
(:func:`hold_out`), keep at most a number of evenly spaced validation samples
(:func:`evenly_spaced`), and check their loader settings, crops and scale alike.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from svblur.errors import InputError
from svblur.io import IMAGE_SUFFIXES

__all__ = [
    "DataLayoutError",
    "check_crop_fits",
    "check_data_folder",
    "check_fraction",
    "check_loader_settings",
    "check_scale",
    "check_source_scales",
    "crop_pair",
    "evenly_spaced",
    "hold_out",
    "images_by_stem",
    "list_images",
    "require_root",
    "shown_names",
    "subfolders",
]

#: Most problems a :class:`DataLayoutError` message lists (the rest are counted).
MAX_PROBLEMS_SHOWN = 25


class DataLayoutError(InputError):
    """A data tree that cannot be used; ``problems`` lists each finding.

    The message has a header naming the data set and its root, one line per problem (at
    most :data:`MAX_PROBLEMS_SHOWN`, then a count of the others) and a last line with the
    layout expected.

    Args:
        problems: One line per problem, each naming the file or folder concerned.
        root: The data root, for the message header.
        title: Data set name for the message header (``"GoPro"``, ``"NYUv2-BSR"`` ...).
        expected: The layout expected, for the message's last line (after ``"Expected "``).

    Attributes:
        problems: The problems, in order.
        root: The data root, as a string.
    """

    def __init__(
        self, problems: Sequence[str], root: str | Path, title: str, expected: str
    ) -> None:
        self.problems = list(problems)
        self.root = str(root)
        shown = self.problems[:MAX_PROBLEMS_SHOWN]
        lines = [f"{title} data at {self.root} is not usable ({len(self.problems)} problem(s)):"]
        lines += [f"  - {problem}" for problem in shown]
        if len(self.problems) > len(shown):
            lines.append(f"  ... and {len(self.problems) - len(shown)} more")
        lines.append(f"Expected {expected}")
        super().__init__("\n".join(lines))


# --------------------------------------------------------------------------- listings
def shown_names(names: Sequence[str], limit: int = 5) -> str:
    """The first ``limit`` of ``names``, comma-separated, with the total when there are more."""
    head = ", ".join(names[:limit])
    return head + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def subfolders(folder: Path) -> list[str]:
    """Names of the folders directly inside ``folder`` (hidden ones left out), sorted."""
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def list_images(folder: str | Path, suffixes: Collection[str] = IMAGE_SUFFIXES) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name.

    Args:
        folder: The folder.
        suffixes: File name endings (lower case) read as images; a file's ending is
            compared in lower case. Hidden files (``.name``) are left out.
    """
    return sorted(
        (
            p
            for p in Path(folder).iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in suffixes
        ),
        key=lambda p: p.name,
    )


def images_by_stem(folder: Path, problems: list[str], kind: str = "files") -> dict[str, Path]:
    """The images of ``folder`` (:func:`list_images`) by file stem.

    Two images with one stem (``a.png``, ``a.jpg``) cannot be paired with other folders:
    the second is left out and a problem naming both is appended to ``problems``
    (``"two <kind> named a in <folder>: a.jpg, a.png"``).
    """
    found: dict[str, Path] = {}
    for path in list_images(folder):
        if path.stem in found:
            problems.append(
                f"two {kind} named {path.stem} in {folder}: {found[path.stem].name}, {path.name}"
            )
            continue
        found[path.stem] = path
    return found


# --------------------------------------------------------------------------- hold-outs
def hold_out(
    count: int,
    fraction: float,
    seed: int,
    *,
    owner: str,
    unit: str,
    setting: str = "val_fraction",
    purpose: str = "for validation",
    hint: str = "give data.val_source",
    salt: int = 11,
) -> tuple[list[int], list[int]]:
    """Split positions ``0 .. count - 1`` into kept and held-out ones, chosen by ``seed``.

    ``max(1, round(count * fraction))`` positions (halves rounded up) are held out: the
    first ones of the permutation drawn from ``np.random.default_rng([seed, salt])``.

    Args:
        count: Number of positions (samples, or groups such as sequences).
        fraction: Share held out, in ``(0, 1)``.
        seed: Seed of the choice.
        owner: What the positions belong to, for messages (``"the GoPro train split"``).
        unit: What one position is, for messages (``"sequence"``, ``"photo"``).
        setting: The config setting of ``fraction``, for messages.
        purpose: What the held-out positions are for, for messages.
        hint: The other way out, for the message when nothing would be kept.
        salt: Keeps this choice's stream apart from other draws of ``seed``.

    Returns:
        ``(kept, held)``: sorted positions.

    Raises:
        ValueError: ``fraction`` is not in ``(0, 1)``.
        InputError: Holding out leaves nothing to keep.
    """
    check_fraction(setting, fraction)
    held = max(1, math.floor(count * fraction + 0.5))
    if held >= count:
        raise InputError(
            f"{owner} has {count} {unit}(s): holding out {held} {purpose} ({setting}={fraction}) "
            f"leaves none to train on; lower data.{setting} or {hint}"
        )
    order = np.random.default_rng([int(seed), int(salt)]).permutation(count)
    return sorted(order[held:].tolist()), sorted(order[:held].tolist())


def evenly_spaced(indices: Sequence[int], limit: int | None) -> list[int]:
    """At most ``limit`` of ``indices``, evenly spaced from the first to the last, in order;
    ``None``: all."""
    indices = list(indices)
    if limit is None or len(indices) <= int(limit):
        return indices
    picks = np.linspace(0, len(indices) - 1, int(limit)).round().astype(int)
    return [indices[i] for i in sorted(set(picks.tolist()))]


# --------------------------------------------------------------------------- checks
def require_root(root: str | Path | None, what: str) -> Path:
    """``root`` as a path; unset (``None``, ``""`` or Hydra's ``???``) is an error.

    Raises:
        InputError: ``root`` is unset; the message says that ``data.root`` is ``what``.
    """
    if root is None or str(root) in ("", "???"):
        raise InputError(f"data.root is required: {what}")
    return Path(root)


def check_data_folder(root: Path, title: str, expected: str) -> None:
    """Fail early when the data root is not a folder.

    Raises:
        DataLayoutError: ``root`` does not exist or is not a folder (``title`` and
            ``expected`` as for the reader's other layout errors).
    """
    if not root.is_dir():
        raise DataLayoutError(
            [f"data root {root} does not exist or is not a folder"], root, title, expected
        )


def check_scale(scale: int) -> int:
    """``scale`` as an int; it must be at least 1."""
    if int(scale) < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    return int(scale)


def check_fraction(name: str, value: float) -> float:
    """``value`` as a float; it must lie in ``(0, 1)`` (``name`` is the setting, for messages)."""
    if not 0.0 < float(value) < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {value}")
    return float(value)


def check_loader_settings(
    batch_size: int,
    eval_batch_size: int | None = None,
    num_workers: int = 0,
    val_max_images: int | None = None,
) -> None:
    """Check a DataModule's loader settings: batch sizes and ``val_max_images`` (where
    given) at least 1, ``num_workers`` at least 0.

    Raises:
        ValueError: A setting is out of range; the message names it.
    """
    for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
        if value is not None and int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if int(num_workers) < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    if val_max_images is not None and int(val_max_images) < 1:
        raise ValueError(f"val_max_images must be >= 1 or null, got {val_max_images}")


def crop_pair(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    """A crop size, one side or ``(H, W)``, as ``(H, W)``; ``None`` stays ``None``."""
    if size is None:
        return None
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    values = [int(v) for v in size]
    if len(values) != 2:
        raise ValueError(f"crop sizes are a side or (H, W), got {size!r}")
    return values[0], values[1]


def check_crop_fits(
    crop: tuple[int, int] | None,
    scale: int,
    images: Iterable[tuple[Path, tuple[int, int] | None]],
    what: str,
    setting: str = "crop_size",
) -> None:
    """Fail now, not mid-epoch, when an image is smaller than the crop.

    Args:
        crop: HR crop ``(H, W)``; ``None``: whole images, nothing to check.
        scale: LR factor: images are cut to a multiple of it first.
        images: ``(path, (H, W))`` of each image; a size of ``None`` (not read) is skipped.
        what: What an image is, for messages (``"GoPro frame"``, ``"ReBlurSR photo"``).
        setting: The config setting of ``crop``, for messages.

    Raises:
        InputError: An image is smaller than ``crop``; the message names it.
    """
    if crop is None:
        return
    for path, size in images:
        if size is None:
            continue
        height, width = size[0] // scale * scale, size[1] // scale * scale
        if crop[0] > height or crop[1] > width:
            raise InputError(
                f"{setting} {crop} is larger than the {what} {path} "
                f"({height}x{width}, HxW); lower data.{setting}"
            )


def check_source_scales(scale: int, sources: Iterable[Any]) -> None:
    """Every source (with ``title``, ``split`` and ``scale``; ``None`` skipped) has ``scale``.

    Raises:
        ValueError: A source's scale differs; the message names the source.
    """
    for source in sources:
        if source is not None and source.scale != scale:
            raise ValueError(
                f"data.scale={scale} differs from the {source.title} {source.split} "
                f"source's scale {source.scale}"
            )
