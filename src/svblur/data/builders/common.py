"""What every BSR builder shares: cameras, test groups, rendering, atomic writes, resuming.

A build turns a raw RGB-D source into the released layout::

    <out>/train/{GT,LRx4,blur,semseg}/<name>.png
    <out>/val/{GT,semseg}/<name>.png
    <out>/val/Group{1..5}/{LRx4,blur}/<name>.png
    <out>/metadata.jsonl      one line per rendered sample (train image, or test image x group)
    <out>/manifest.sha256     "<sha256>  <relative path>" for every file above, sorted by path
    <out>/build.json          the build settings (a resumed build must use the same ones)

Sample ``i`` of a split draws its camera from ``np.random.default_rng([seed, split_code, i])``
(``split_code``: 0 = train, 1 = test), so the output is a pure function of the source and
the settings: the same seed gives byte-identical files, whatever the number of workers.

Each sample is written file by file under a temporary name and renamed; its record in
``<out>/.svblur-build/records/`` is written last and marks it finished. A build that is
interrupted and started again skips the finished samples, removes left-over temporary
files and redoes only the rest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import multiprocessing
import pickle
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import torch

from svblur.degradation import fill_invalid_depth
from svblur.degradation.pipeline import Bicubic, Camera, CameraPrior, DefocusBlur, SceneInput
from svblur.io import atomic_write_bytes, remove_temporaries

__all__ = [
    "BUILD_DIR",
    "GROUP_NAMES",
    "BuildConfig",
    "BuildSummary",
    "Camera",
    "Job",
    "RawSample",
    "RawSource",
    "encode_blur_png",
    "invariant_masks",
    "render_sample",
    "run_build",
    "sha256_file",
]

#: Hidden folder of per-sample completion records (the resume state).
BUILD_DIR = ".svblur-build"
GROUP_NAMES: tuple[str, ...] = tuple(f"Group{g}" for g in range(1, 6))
SPLIT_CODES = {"train": 0, "test": 1}


@dataclass(frozen=True)
class RawSample:
    """One raw RGB-D sample, as a builder reads it.

    Attributes:
        image: Sharp RGB ``(H, W, 3)`` uint8.
        depth: Depth in millimetres ``(H, W)`` float; NaN / 0 where unknown.
        labels: Labels ``(H, W)`` uint8 in the *stored* convention of the data set
            (NYUv2: 0 = unlabelled, 1..40; Cityscapes: train ids 0..18, 255).
    """

    image: np.ndarray
    depth: np.ndarray
    labels: np.ndarray


class RawSource(Protocol):
    """A picklable reader of raw samples (opened lazily in each worker)."""

    def load(self, key: Any) -> RawSample:  # pragma: no cover - protocol
        ...


@dataclass(frozen=True)
class BuildConfig:
    """Settings of a build; stored in ``build.json``.

    Attributes:
        dataset: ``"nyuv2"`` or ``"cityscapes"``.
        seed: Seed of every camera draw and of the choice of space-invariant images.
        scale: LR factor (folder ``LRx{scale}``).
        max_coc: Largest circle of confusion in HR pixels (SYNDOF: 29); also the
            largest CoC of space-invariant samples.
        camera: The camera prior (focal lengths and their weights).
        invariant_fraction: Share of space-invariant images in each split / test group
            (``floor(n * fraction)`` images). The paper's Table 1 has 159 of 795 train
            and 130 of 654 test images, i.e. 0.2 (one invariant image per four
            space-variant ones).
        source: Description of the raw source (file names only, for the record).
    """

    dataset: str
    seed: int = 0
    scale: int = 4
    max_coc: float = 29.0
    camera: CameraPrior = field(default_factory=CameraPrior)
    invariant_fraction: float = 0.2
    source: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.scale < 1:
            raise ValueError(f"scale must be >= 1, got {self.scale}")
        if not (math.isfinite(self.max_coc) and self.max_coc > 1):
            raise ValueError(f"max_coc must be > 1 pixel, got {self.max_coc}")
        if not 0.0 <= self.invariant_fraction <= 1.0:
            raise ValueError(f"invariant_fraction must be in [0, 1], got {self.invariant_fraction}")

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        camera = data.pop("camera")
        data["focal_lengths"] = list(camera.focal_lengths)
        data["focal_weights"] = list(camera.focal_weights)
        return data


def invariant_masks(n: int, fraction: float, seed: int, groups: int) -> np.ndarray:
    """Which images are space-invariant, per group.

    The images are put in a seeded random order; group ``g`` makes the ``floor(n *
    fraction)`` images starting at position ``floor(g n / groups)`` space-invariant. For
    ``fraction <= 1 / groups`` the groups' sets are disjoint (with the paper's 0.2 and
    five groups every test image is space-invariant in exactly one group, apart from
    rounding); with ``groups=1`` it is the training split's choice.

    Args:
        n: Number of images.
        fraction: Share of space-invariant images per group.
        seed: Seed of the order.
        groups: Number of groups.

    Returns:
        Boolean ``(groups, n)``.
    """
    order = np.random.default_rng([int(seed), 7919, groups]).permutation(n)
    count = math.floor(n * fraction + 1e-9)
    masks = np.zeros((groups, n), dtype=bool)
    for g in range(groups):
        start = (g * n) // groups
        masks[g, order[(start + np.arange(count)) % max(n, 1)]] = True
    return masks


def render_sample(
    image: np.ndarray,
    depth_mm: np.ndarray,
    camera: Camera,
    space_variant: bool,
    max_coc: float,
    scale: int,
    *,
    device: str | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Render one variant of a camera draw with the sample pipeline's defocus and bicubic
    steps: LR ``(H/s, W/s, 3)``, blur map ``(H, W)`` sigma and the camera record."""
    blur = DefocusBlur(device=device)
    degraded = blur.render(SceneInput(image, depth_mm), camera, space_variant, max_coc)
    return Bicubic(scale)(degraded.image), degraded.maps["blur"], degraded.meta


def encode_blur_png(sigma: np.ndarray) -> bytes:
    """PNG bytes of a blur map in the released format (uint16, 3 equal channels, x10)."""
    scaled = np.floor(np.asarray(sigma, np.float64) * 10.0 + 0.5)
    if scaled.size and (scaled.min() < 0 or scaled.max() > 65535):
        raise ValueError(f"sigma out of [0, 6553.5]: [{sigma.min()}, {sigma.max()}]")
    channel = scaled.astype(np.uint16)
    return _encode_png(np.repeat(channel[:, :, None], 3, axis=2))


def _encode_png(array: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", np.ascontiguousarray(array))
    if not ok:
        raise OSError("cv2.imencode failed to encode a PNG")
    return buffer.tobytes()


def _rgb_png(rgb_u8: np.ndarray) -> bytes:
    return _encode_png(cv2.cvtColor(np.ascontiguousarray(rgb_u8), cv2.COLOR_RGB2BGR))


def _to_u8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(np.asarray(image, np.float64) * 255.0 + 0.5), 0, 255).astype(np.uint8)


def atomic_write(path: Path, data: bytes) -> str:
    """Write ``data`` atomically (:func:`svblur.io.atomic_write_bytes`); returns its SHA-256."""
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- jobs
@dataclass(frozen=True)
class Job:
    """One image to build.

    Attributes:
        split: ``"train"`` or ``"test"`` (written to ``val/`` with five groups).
        position: Index of the image in its split (seeds its camera).
        name: Output file stem.
        key: What the source's ``load`` takes.
        invariant: Space-invariant flag per output (1 for train, 5 for test groups).
    """

    split: str
    position: int
    name: str
    key: Any
    invariant: tuple[bool, ...]

    @property
    def record_name(self) -> str:
        return f"{self.split}__{self.name}.json"


def make_jobs(
    split: str, names: Sequence[str], keys: Sequence[Any], config: BuildConfig
) -> list[Job]:
    """Jobs of one split, with the space-invariant choice of :func:`invariant_masks`."""
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate sample names in split {split}")
    groups = 1 if split == "train" else len(GROUP_NAMES)
    masks = invariant_masks(
        len(names), config.invariant_fraction, config.seed + SPLIT_CODES[split], groups
    )
    return [
        Job(split, i, names[i], keys[i], tuple(bool(m) for m in masks[:, i]))
        for i in range(len(names))
    ]


def process_job(source: RawSource, job: Job, config: BuildConfig, out: Path) -> dict[str, Any]:
    """Read, render and write one image; returns its record (metadata lines and hashes)."""
    try:
        raw = source.load(job.key)
    except Exception as error:
        raise RuntimeError(f"cannot read raw sample {job.key!r} ({job.name}): {error}") from error
    s = config.scale
    height, width = (raw.image.shape[0] // s) * s, (raw.image.shape[1] // s) * s
    image_u8 = np.ascontiguousarray(raw.image[:height, :width, :3])
    depth = np.asarray(raw.depth[:height, :width], np.float64)
    labels = np.ascontiguousarray(raw.labels[:height, :width]).astype(np.uint8)
    depth = np.asarray(fill_invalid_depth(depth), np.float64)
    image = image_u8.astype(np.float32) / np.float32(255.0)
    seed = [config.seed, SPLIT_CODES[job.split], job.position]
    camera = config.camera.draw(np.random.default_rng(seed), depth, config.max_coc)
    variants = {
        invariant: render_sample(image, depth, camera, not invariant, config.max_coc, s)
        for invariant in sorted(set(job.invariant))
    }

    files: dict[str, str] = {}
    name = f"{job.name}.png"

    def put(relative: str, data: bytes) -> None:
        files[relative] = atomic_write(out / relative, data)

    base = "train" if job.split == "train" else "val"
    put(f"{base}/GT/{name}", _rgb_png(image_u8))
    put(f"{base}/semseg/{name}", _encode_png(labels))
    lines = []
    outputs = (
        [("train", "train")] if job.split == "train" else [(g, f"val/{g}") for g in GROUP_NAMES]
    )
    for (group, folder), invariant in zip(outputs, job.invariant):
        lr, blur, meta = variants[invariant]
        put(f"{folder}/LRx{s}/{name}", _rgb_png(_to_u8(lr)))
        put(f"{folder}/blur/{name}", encode_blur_png(blur))
        lines.append(
            {
                "split": job.split,
                "group": None if job.split == "train" else group,
                "name": job.name,
                "source": str(job.key),
                "height": height,
                "width": width,
                **meta,
                "seed": seed,
            }
        )
    record = {"name": job.name, "split": job.split, "metadata": lines, "files": files}
    atomic_write(out / BUILD_DIR / "records" / job.record_name, json.dumps(record).encode())
    return record


def _job_done(job: Job, out: Path) -> dict[str, Any] | None:
    path = out / BUILD_DIR / "records" / job.record_name
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not all((out / relative).is_file() for relative in record.get("files", {})):
        return None
    return record


_WORKER: dict[str, Any] = {}


def _init_worker(source: RawSource, config: BuildConfig, out: str, threads: int) -> None:
    torch.set_num_threads(threads)
    # A pickled copy drops any open file handle inherited through fork (h5py is not fork-safe).
    _WORKER.update(source=pickle.loads(pickle.dumps(source)), config=config, out=Path(out))


def _run_in_worker(job: Job) -> dict[str, Any]:
    return process_job(_WORKER["source"], job, _WORKER["config"], _WORKER["out"])


@dataclass(frozen=True)
class BuildSummary:
    """What a build did.

    Attributes:
        out: Output root.
        built: Images rendered by this call.
        skipped: Images found finished (resumed or already complete).
        samples: Metadata lines written (train images + test images x 5 groups).
    """

    out: Path
    built: int
    skipped: int
    samples: int


def _check_settings(out: Path, config: BuildConfig) -> None:
    settings = out / "build.json"
    wanted = config.to_json()
    if settings.is_file():
        previous = json.loads(settings.read_text())
        if previous != wanted:
            changed = sorted(
                k for k in set(previous) | set(wanted) if previous.get(k) != wanted.get(k)
            )
            raise ValueError(
                f"{out} holds a build with other settings ({', '.join(changed)} differ, see "
                f"{settings}); use another --out folder or the same settings to resume"
            )
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(settings, (json.dumps(wanted, indent=2, sort_keys=True) + "\n").encode())


def run_build(
    source: RawSource,
    jobs: Sequence[Job],
    config: BuildConfig,
    out: str | Path,
    *,
    workers: int = 1,
    progress: bool = False,
    threads_per_worker: int = 1,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> BuildSummary:
    """Build (or finish building) ``jobs`` into ``out``, then write metadata and manifest.

    Args:
        source: Raw sample reader (pickled to each worker process).
        jobs: All images of the data set.
        config: Build settings; must equal those of an unfinished build in ``out``.
        out: Output root.
        workers: Worker processes; 1 renders in this process.
        progress: Show a progress bar (rich).
        threads_per_worker: Torch CPU threads per worker (1 keeps parallel runs fast).
        on_record: Called with each new record (tests use it to simulate interruptions).

    Returns:
        A :class:`BuildSummary`.
    """
    out = Path(out)
    _check_settings(out, config)
    remove_temporaries(out)
    records: dict[str, dict[str, Any]] = {}
    todo: list[Job] = []
    for job in jobs:
        done = _job_done(job, out)
        if done is None:
            todo.append(job)
        else:
            records[job.record_name] = done
    skipped = len(records)

    def finished(record: dict[str, Any]) -> None:
        records[f"{record['split']}__{record['name']}.json"] = record
        if on_record is not None:
            on_record(record)

    with _progress_bar(progress, len(jobs), skipped, config.dataset) as advance:
        if workers <= 1:
            previous = torch.get_num_threads()
            torch.set_num_threads(max(1, threads_per_worker))
            try:
                for job in todo:
                    finished(process_job(source, job, config, out))
                    advance()
            finally:
                torch.set_num_threads(previous)
        elif todo:
            _run_parallel(source, todo, config, out, workers, threads_per_worker, finished, advance)

    _write_index(out, jobs, records)
    samples = sum(len(r["metadata"]) for r in records.values())
    return BuildSummary(out, len(jobs) - skipped, skipped, samples)


def _run_parallel(
    source: RawSource,
    todo: Sequence[Job],
    config: BuildConfig,
    out: Path,
    workers: int,
    threads: int,
    finished: Callable[[dict[str, Any]], None],
    advance: Callable[[], None],
) -> None:
    # The platform's default start method, as torch's DataLoader uses (fork on Linux).
    context = multiprocessing.get_context()
    pending: set[Future] = set()
    queue = list(reversed(todo))
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_init_worker,
        initargs=(source, config, str(out), threads),
    ) as pool:
        try:
            while queue or pending:
                while queue and len(pending) < 2 * workers:
                    pending.add(pool.submit(_run_in_worker, queue.pop()))
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    finished(future.result())
                    advance()
        except BaseException:
            for future in pending:
                future.cancel()
            raise


class _progress_bar:
    """Context manager giving an ``advance()`` callable; a rich bar when enabled."""

    def __init__(self, enabled: bool, total: int, completed: int, title: str) -> None:
        self.enabled, self.total, self.completed, self.title = enabled, total, completed, title
        self._progress = None

    def __enter__(self) -> Callable[[], None]:
        if not self.enabled:
            return lambda: None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        self._progress.start()
        task = self._progress.add_task(
            f"building {self.title}", total=self.total, completed=self.completed
        )
        return lambda: self._progress.advance(task)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


def _write_index(out: Path, jobs: Iterable[Job], records: dict[str, dict[str, Any]]) -> None:
    """``metadata.jsonl`` in job order and ``manifest.sha256`` sorted by path."""
    lines: list[str] = []
    hashes: dict[str, str] = {}
    for job in jobs:
        record = records[job.record_name]
        lines += [json.dumps(line, sort_keys=True) for line in record["metadata"]]
        hashes.update(record["files"])
    metadata = ("\n".join(lines) + "\n").encode()
    hashes["metadata.jsonl"] = atomic_write(out / "metadata.jsonl", metadata)
    manifest = "".join(f"{hashes[path]}  {path}\n" for path in sorted(hashes))
    atomic_write(out / "manifest.sha256", manifest.encode())


def verify_manifest(root: str | Path) -> list[str]:
    """Re-hash every file listed in ``<root>/manifest.sha256``; returns the problems."""
    root = Path(root)
    manifest = root / "manifest.sha256"
    if not manifest.is_file():
        return [f"missing manifest {manifest}"]
    problems = []
    for number, line in enumerate(manifest.read_text().splitlines(), 1):
        digest, _, relative = line.partition("  ")
        if not relative:
            problems.append(f"{manifest}:{number}: malformed line {line!r}")
            continue
        path = root / relative
        if not path.is_file():
            problems.append(f"missing file {path} (listed in {manifest})")
        elif sha256_file(path) != digest:
            problems.append(f"checksum mismatch for {path}")
    return problems
