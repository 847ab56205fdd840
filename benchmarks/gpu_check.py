"""GPU readiness check: every CUDA path of svblur in one prepared run, one summary table.

Checks, in the order of the table (each is guarded: a failure becomes a FAILED row with a
one-line reason and the other checks still run; the exit status is 1 if any check failed):

- ``CMOS forward`` / ``CMOS training``: throughput of CMOS (40 classes) at LR 120x160,
  batch 8, 5 warm-up + 20 timed steps, in fp32, bf16-mixed (autocast) and bf16 +
  channels_last + ``torch.compile`` (inductor; the fp32 and bf16 rows keep CMOS in NCHW).
  PyTorch's default precision switches are left alone (fp32 convolutions may use TF32
  in cuDNN, matmuls do not). Forward: ``eval()`` under ``torch.inference_mode``;
  training: the paper's loss (blur L1 + seg cross-entropy, auxiliary terms x 0.5) in
  fp32, backward, Adam. Result: images/s and the median time per batch; the compiled rows
  add the first step's (compilation) time.
- ``svblur-train debug=fdr``: the real CLI end to end (one batch of fit, validation and
  test on the built-in data set) with ``trainer=gpu`` (bf16-mixed) and with
  ``trainer=ddp trainer.devices=1`` (DDP strategy, SyncBatchNorm); it must exit with 0 and
  print finite test metrics.
- ``render_defocus``: a 480x640 procedural scene (``svblur.data.generate_scene``, seed 0,
  focus on the centre pixel, f = 50 mm) rendered with ``device="cuda"`` and on the CPU:
  the largest image difference (must be at most 1e-4, the test suite's tolerance), whether
  the sigma maps are equal, and the median time of 3 renders each.
- ``svblur-predict``: the real CLI on a 960x540 LR photo (a procedural scene) with a
  randomly initialised BlindSR checkpoint (``model=blind_sr``, 40 classes) and the default
  tiling (256-pixel LR tiles, fp32). "4K" is the output size, 3840x2160: svblur-predict
  takes an LR image and returns it x4.
- ``LatentDiffusionSR``: SSR's latent diffusion SR at Stable Diffusion 2.1-base sizes. The
  UNet, VAE and DDIM scheduler configs of ``stabilityai/stable-diffusion-2-1-base`` (written
  here, nothing is downloaded) are built with random weights on the GPU, saved as a
  diffusers folder and loaded by ``LatentDiffusionSR.from_pretrained`` (the model's
  defaults, 21x21 kernels, oracle kernels and depth). Measured in bf16 autocast: seconds
  per training step at 512x512 HR, batch 2 (``DiffusionSRTask``'s Eq. 5 loss, backward,
  AdamW over the trainable parameters; 5 warm-up + 20 timed), seconds per DDIM step (the
  slope between 5- and 25-step sampling of one 512x512 image, medians of 3, so that the
  VAE and the timestep-free encoders are left out) and the whole 25-step image, peak CUDA
  memory of training and of sampling (the row shows the larger), and the trainable and
  frozen parameter counts. The counts are also computed from the configs alone on the
  ``meta`` device, and must equal those of the loaded network, and the UNet's and the
  VAE's must equal the released checkpoints' (865,910,724 and 83,653,863).

Columns: check, setting, result, time (wall time of the check, compilation and the CLI's
start-up included), peak memory, status. Peak memory is ``torch.cuda.max_memory_allocated``
over the row (reset before it); the CLI rows report it for their whole process. Every
check runs in a worker process (one for all, started again after a crash or a timeout)
under its own time budget, and the whole run under ``--budget`` seconds (default 450:
under 8 minutes on one H200). ``--workdir DIR`` keeps the logs (``worker.log``, each CLI
run's output) and outputs there; by default they go to a temporary folder, removed.

``--dry-run`` rehearses the same plan on the CPU with tiny sizes, so that every part of
this script except the CUDA calls runs without a GPU (the test suite runs it; about 1.5
minutes on 2 busy cores, one thread per process): LR 32x40, batch 2, 1 + 2 steps;
``torch.compile`` with the ``eager`` backend; the CLI runs with
``trainer.accelerator=cpu`` (and ``sync_batchnorm=false``: CPU has no SyncBatchNorm),
``model=unet`` and 64x80 images; a 48x64 scene rendered with ``device="cpu"`` against
the default device; a toy BlindSR predicting a 24x40 photo in 16-pixel tiles. Peak memory
on the CPU is the max RSS of the CLI processes (marked RSS) and not measured for the
in-process rows. The latent diffusion check is rehearsed only when named
(``--dry-run --checks latent-sd21``, about half a minute): a tiny random SD-layout folder,
64x64 HR, 1 + 2 training steps and 1- against 2-step sampling in bf16 autocast on the CPU;
SD 2.1-base itself is not built there (its fp32 weights alone are 3.8 GB, and the folder
as large), so its parameter counts come from the configs on the ``meta`` device (checked
against the released ones).

Usage::

    python benchmarks/gpu_check.py                          # on a machine with a CUDA GPU
    python benchmarks/gpu_check.py --json gpu_check.json    # also write the rows as JSON
    python benchmarks/gpu_check.py --checks defocus predict-4k   # a subset, by key
    python benchmarks/gpu_check.py --dry-run                # CPU rehearsal, tiny sizes
    python benchmarks/gpu_check.py --dry-run --checks latent-sd21   # + the latent check
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import importlib.metadata
import json
import math
import os
import queue
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve()
#: Line prefixes of the worker protocol (worker stdout -> parent).
START, ROW, PEAK = "GPU_CHECK_START ", "GPU_CHECK_ROW ", "GPU_CHECK_PEAK "
#: Time a worker may take to start (imports, CUDA context) on top of its first check's budget.
STARTUP_S = 60.0
#: Largest CUDA-vs-CPU difference of a rendered image (``[0, 1]`` units) that passes.
DEFOCUS_TOLERANCE = 1e-4
#: A toy BlindSR for the dry run (as in the test suite's ``TINY_BLIND_NET``).
TINY_BLIND_SR = (
    "model.net.sr.num_features=8",
    "model.net.sr.num_blocks=1",
    "model.net.sr.growth_channels=4",
    "model.net.sr.prior_channels=8",
    "model.net.sr.gia_groups=2",
    "model.net.sr.window_size=[8,8]",
    "model.net.estimator.window_size=[4,5]",
    "model.net.estimator.channels_last=false",
)


@dataclass(frozen=True)
class Plan:
    """Sizes and settings of one run: the GPU plan, or the CPU dry run."""

    dry_run: bool
    device: str
    lr_size: tuple[int, int]
    batch: int
    warmup: int
    steps: int
    compile_backend: str
    scene_size: tuple[int, int]
    defocus_runs: int
    predict_lr_size: tuple[int, int]
    predict_overrides: tuple[str, ...]
    gpu_trainer: tuple[str, ...]
    ddp_trainer: tuple[str, ...]
    train_overrides: tuple[str, ...]
    latent_sizes: str
    latent_hr_size: tuple[int, int]
    latent_batch: int
    latent_sample_steps: tuple[int, int]
    latent_runs: int
    min_budget_s: float
    total_budget_s: float
    cpu_threads: int | None


def make_plan(dry_run: bool) -> Plan:
    """The plan for one H200 (``dry_run=False``) or the tiny CPU rehearsal."""
    if not dry_run:
        return Plan(
            dry_run=False,
            device="cuda",
            lr_size=(120, 160),
            batch=8,
            warmup=5,
            steps=20,
            compile_backend="inductor",
            scene_size=(480, 640),
            defocus_runs=3,
            predict_lr_size=(540, 960),
            predict_overrides=(),
            gpu_trainer=("trainer=gpu",),
            ddp_trainer=("trainer=ddp", "trainer.devices=1"),
            train_overrides=(),
            latent_sizes="sd21",
            latent_hr_size=(512, 512),
            latent_batch=2,
            latent_sample_steps=(5, 25),
            latent_runs=3,
            min_budget_s=0.0,
            total_budget_s=450.0,
            cpu_threads=None,
        )
    return Plan(
        dry_run=True,
        device="cpu",
        lr_size=(32, 40),
        batch=2,
        warmup=1,
        steps=2,
        compile_backend="eager",
        scene_size=(48, 64),
        defocus_runs=1,
        predict_lr_size=(24, 40),
        predict_overrides=(*TINY_BLIND_SR, "tile_size=16", "tile_overlap=4", "min_tile_size=16"),
        gpu_trainer=("trainer=gpu", "trainer.accelerator=cpu"),
        ddp_trainer=(
            "trainer=ddp",
            "trainer.devices=1",
            "trainer.accelerator=cpu",
            "trainer.sync_batchnorm=false",
        ),
        train_overrides=(
            "model=unet",
            "data.hr_size=[64,80]",
            "data.batch_size=2",
            "data.train_size=4",
            "data.val_size=2",
            "data.test_size=2",
        ),
        latent_sizes="tiny",
        latent_hr_size=(64, 64),
        latent_batch=2,
        latent_sample_steps=(1, 2),
        latent_runs=1,
        # budgets only against hangs: a shared 2-core machine may be slow at any moment
        min_budget_s=300.0,
        total_budget_s=900.0,
        # one thread per process: on a busy 2-core machine two threads can be 10x slower
        cpu_threads=1,
    )


class CheckFailed(Exception):
    """A check ran but its result is wrong (the message is the table's reason)."""


@dataclass
class Outcome:
    """What one check measured.

    Attributes:
        result: The table's result cell, e.g. ``"812.4 img/s, 9.8 ms/batch"``.
        metrics: Named figures behind the result (finite numbers), for ``--json``.
        peak_mb: Peak memory in MiB, or ``None`` where it is not measured.
        peak_kind: ``"cuda"`` (``max_memory_allocated``) or ``"rss"`` (host max RSS).
        failure: Set when the check ran but failed (the result is still shown).
    """

    result: str
    metrics: dict[str, float] = field(default_factory=dict)
    peak_mb: float | None = None
    peak_kind: str | None = None
    failure: str | None = None


@dataclass(frozen=True)
class Check:
    """One row of the table: what it measures, its time budget and how to run it."""

    key: str
    name: str
    budget_s: float
    setting: Callable[[Plan], str]
    run: Callable[[Plan, Path], Outcome]

    def budget(self, plan: Plan) -> float:
        """Seconds this check may take under ``plan``."""
        return max(self.budget_s, plan.min_budget_s)


# --------------------------------------------------------------------------- helpers
def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _reset_peak(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak(device: str) -> tuple[float | None, str | None]:
    """Peak CUDA memory since the last reset, in MiB (``None`` on the CPU)."""
    if device != "cuda":
        return None, None
    import torch

    return torch.cuda.max_memory_allocated() / 2**20, "cuda"


def _timed(step: Callable[[], Any], warmup: int, steps: int, device: str) -> list[float]:
    """Wall times of ``warmup + steps`` calls of ``step`` (synchronized), in seconds."""
    times = []
    for _ in range(warmup + steps):
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def _one_line(text: str, limit: int = 160) -> str:
    """A single table-safe line of at most ``limit`` characters."""
    line = " ".join(str(text).split()).replace("|", "/")
    return line if len(line) <= limit else line[: limit - 3] + "..."


#: The last line of a traceback, e.g. ``ImportError: cannot import name 'x'``.
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)\b.*")


def _last_error(stderr: str) -> str:
    """The error of a failed command's stderr: its root exception (the first of a chain),
    naming the exception it surfaced as; else the last non-empty line."""
    errors = [line for line in stderr.splitlines() if _EXCEPTION_LINE.match(line)]
    if not errors:
        lines = [line for line in stderr.splitlines() if line.strip()]
        return lines[-1] if lines else "no error output"
    root, final = errors[0], errors[-1]
    if root == final:
        return root
    return f"{root} (raised as {final.split(':', 1)[0]})"


def _describe(error: BaseException) -> str:
    """``Type: message`` of an exception's root cause, naming the exception raised."""
    root = error
    while root.__cause__ is not None:
        root = root.__cause__
    text = f"{type(root).__name__}: {root}".strip().rstrip(":")
    return text if root is error else f"{text} (raised as {type(error).__name__})"


def _quote(path: Path) -> str:
    """A path as a quoted Hydra override value (safe with spaces, commas, '=')."""
    return "'" + str(path).replace("'", "\\'") + "'"


# --------------------------------------------------------------------------- CMOS throughput
def _cmos_loss(out: dict[str, Any], blur: Any, seg: Any) -> Any:
    """The paper's loss (as in ``benchmarks/cmos_speed.py``), computed in fp32."""
    import torch.nn.functional as F

    loss = F.l1_loss(out["blur"].float(), blur) + F.cross_entropy(out["seg"].float(), seg)
    if "aux_blur" in out:
        aux = F.l1_loss(out["aux_blur"].float(), blur)
        loss = loss + 0.5 * (aux + F.cross_entropy(out["aux_seg"].float(), seg))
    return loss


def check_cmos(plan: Plan, workdir: Path, precision: str, mode: str) -> Outcome:
    """Throughput of CMOS forward (``mode="forward"``) or training steps (``"train"``).

    Args:
        plan: Sizes and device.
        workdir: Unused (no files).
        precision: ``"fp32"``, ``"bf16"`` (autocast) or ``"compiled"`` (bf16 autocast,
            channels_last, ``torch.compile`` with ``plan.compile_backend``).
        mode: ``"forward"`` or ``"train"``.
    """
    import torch

    from svblur.models import CMOS

    device = plan.device
    compiled = precision == "compiled"
    torch.manual_seed(0)
    model = CMOS(num_classes=40, channels_last=compiled).to(device)
    if compiled:
        model.compile(backend=plan.compile_backend)
    gen = torch.Generator().manual_seed(0)
    h, w = plan.lr_size
    lr = torch.rand(plan.batch, 3, h, w, generator=gen).to(device)
    blur = (5 * torch.rand(plan.batch, 1, 4 * h, 4 * w, generator=gen)).to(device)
    seg = torch.randint(0, 40, (plan.batch, 4 * h, 4 * w), generator=gen).to(device)

    def autocast() -> torch.autocast:
        return torch.autocast(device, dtype=torch.bfloat16, enabled=precision != "fp32")

    if mode == "forward":
        model.eval()

        def step() -> None:
            with torch.inference_mode(), autocast():
                model(lr)

    else:
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.99))

        def step() -> None:
            with autocast():
                out = model(lr)
            loss = _cmos_loss(out, blur, seg)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    _reset_peak(device)
    times = _timed(step, plan.warmup, plan.steps, device)
    peak_mb, peak_kind = _peak(device)
    median = statistics.median(times[plan.warmup :])
    metrics = {
        "images_per_s": plan.batch / median,
        "median_ms": 1000 * median,
        "first_step_s": times[0],
        "batch": plan.batch,
        "steps": plan.steps,
    }
    result = f"{plan.batch / median:.1f} img/s, {1000 * median:.1f} ms/batch"
    if compiled:
        result += f", first step (compile) {times[0]:.0f} s"
    return Outcome(result, metrics, peak_mb, peak_kind)


def _cmos_setting(precision: str, mode: str, plan: Plan) -> str:
    label = {
        "fp32": "fp32",
        "bf16": "bf16-mixed",
        "compiled": f"bf16 + channels_last + compile ({plan.compile_backend})",
    }[precision]
    h, w = plan.lr_size
    return f"{label}, batch {plan.batch}, LR {h}x{w}, {plan.warmup}+{plan.steps} steps"


# --------------------------------------------------------------------------- CLI runs
def run_cli(tool: str, overrides: list[str]) -> int:
    """Run ``svblur-<tool>`` in this process, then print its peak memory (``--cli`` mode).

    The entry point is the console script's own ``main``; the peak is the process's
    ``torch.cuda.max_memory_allocated`` if it used CUDA, else its max RSS.
    """
    import torch

    module = importlib.import_module(f"svblur.cli.{tool}")
    sys.argv = [f"svblur-{tool}", *overrides]
    code = 0
    try:
        module.main()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        peak = {"peak_mb": torch.cuda.max_memory_allocated() / 2**20, "peak_kind": "cuda"}
    else:
        rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = {"peak_mb": rss_kb / 1024, "peak_kind": "rss"}
    print(PEAK + json.dumps(peak), flush=True)
    return code


def _cli(tool: str, overrides: list[str], workdir: Path) -> tuple[str, dict[str, Any]]:
    """Run ``svblur-<tool> overrides`` in a subprocess started in ``workdir``.

    Returns:
        The command's stdout and its peak-memory record.

    Raises:
        CheckFailed: If it exits with an error (the reason is its last stderr line).
    """
    run_dir = workdir / "run"
    overrides = [*overrides, f"hydra.run.dir={_quote(run_dir)}"]
    overrides.append(f"paths.log_dir={_quote(workdir / 'logs')}")
    env = dict(os.environ, COLUMNS="200", HYDRA_FULL_ERROR="1", WANDB_MODE="offline")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--cli", tool, *overrides],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
    )
    (workdir / f"{tool}.log").write_text(done.stdout + "\n--- stderr ---\n" + done.stderr)
    if done.returncode != 0:
        raise CheckFailed(
            f"svblur-{tool} exited with {done.returncode}: {_last_error(done.stderr)}"
        )
    peaks = [line for line in done.stdout.splitlines() if line.startswith(PEAK)]
    if not peaks:
        raise CheckFailed(f"svblur-{tool} printed no peak-memory record")
    return done.stdout, json.loads(peaks[-1][len(PEAK) :])


#: A metric of Lightning's test table, e.g. ``│  test/blur/psnr  │  14.04  │``.
_TEST_METRIC = re.compile(
    r"(test/[\w/]+)[\s│┃|]+([-+]?(?:nan|inf|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?))", re.IGNORECASE
)


def parse_test_metrics(stdout: str) -> dict[str, float]:
    """The ``test/...`` metrics of the table that ``trainer.test`` prints."""
    return {name: float(value) for name, value in _TEST_METRIC.findall(stdout)}


def check_fdr(plan: Plan, workdir: Path, trainer: str) -> Outcome:
    """``svblur-train <trainer> debug=fdr``: exit 0 and finite test metrics.

    Args:
        plan: Sizes and device.
        workdir: Where the run starts and writes.
        trainer: ``"gpu"`` or ``"ddp"`` (the plan gives the overrides).
    """
    trainer_overrides = plan.gpu_trainer if trainer == "gpu" else plan.ddp_trainer
    overrides = [*trainer_overrides, "debug=fdr", *plan.train_overrides]
    stdout, peak = _cli("train", overrides, workdir)
    metrics = parse_test_metrics(stdout)
    if not metrics:
        raise CheckFailed("no test metrics printed")
    bad = sorted(name for name, value in metrics.items() if not math.isfinite(value))
    if bad:
        raise CheckFailed(f"non-finite test metrics: {', '.join(bad)}")
    loss = metrics.get("test/loss", math.nan)
    return Outcome(
        f"ok, {len(metrics)} finite test metrics, test/loss {loss:.3g}",
        {"test_metrics": len(metrics), "test_loss": loss},
        peak["peak_mb"],
        peak["peak_kind"],
    )


def _fdr_setting(trainer: str, plan: Plan) -> str:
    overrides = plan.gpu_trainer if trainer == "gpu" else plan.ddp_trainer
    return " ".join([*overrides, "debug=fdr", *plan.train_overrides])


# --------------------------------------------------------------------------- defocus
def check_defocus(plan: Plan, workdir: Path) -> Outcome:
    """``render_defocus`` on ``plan.device`` against the CPU: equality and median times."""
    import numpy as np

    from svblur.data import generate_scene
    from svblur.degradation import render_defocus

    height, width = plan.scene_size
    scene = generate_scene(np.random.default_rng(0), (height, width))
    focus = float(scene.depth[height // 2, width // 2])

    def render(device: str | None) -> tuple[list[float], Any, Any]:
        times, out = [], None
        warmup = 1 if device == "cuda" else 0  # CUDA context and kernel caches
        for _ in range(warmup + plan.defocus_runs):
            start = time.perf_counter()
            out = render_defocus(scene.image, scene.depth, 50.0, focus, device=device)
            times.append(time.perf_counter() - start)
        return times[warmup:], *out

    cpu_times, cpu_image, cpu_sigma = render(None)
    _reset_peak(plan.device)
    dev_times, dev_image, dev_sigma = render(plan.device)
    peak_mb, peak_kind = _peak(plan.device)
    diff = float(np.abs(cpu_image - dev_image).max())
    sigma_diff = float(np.abs(cpu_sigma - dev_sigma).max())
    cpu_s, dev_s = statistics.median(cpu_times), statistics.median(dev_times)
    result = (
        f"max diff {diff:.1e}, sigma {'equal' if sigma_diff == 0 else 'DIFFERENT'}; "
        f"{plan.device} {dev_s:.2f} s, cpu {cpu_s:.2f} s"
    )
    failure = None
    if sigma_diff != 0:
        failure = f"sigma maps differ by up to {sigma_diff:.2e}"
    elif not diff <= DEFOCUS_TOLERANCE:
        failure = f"images differ by {diff:.2e} > {DEFOCUS_TOLERANCE:.0e}"
    metrics = {
        "max_abs_diff": diff,
        "sigma_max_abs_diff": sigma_diff,
        "device_s": dev_s,
        "cpu_s": cpu_s,
        "runs": plan.defocus_runs,
    }
    return Outcome(result, metrics, peak_mb, peak_kind, failure)


def _defocus_setting(plan: Plan) -> str:
    h, w = plan.scene_size
    against = "default (cpu)" if plan.dry_run else "cpu"
    return f"{w}x{h} scene, f 50 mm, {plan.device} vs {against}, median of {plan.defocus_runs}"


# --------------------------------------------------------------------------- predict
def check_predict(plan: Plan, workdir: Path) -> Outcome:
    """Tiled ``svblur-predict`` of one LR photo with a random BlindSR checkpoint."""
    import numpy as np
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate
    from PIL import Image

    from svblur.conf import config_dir
    from svblur.data import generate_scene
    from svblur.inference import tile_starts

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=config_dir()):
        cfg = compose(config_name="predict", overrides=list(plan.predict_overrides))
    GlobalHydra.instance().clear()
    torch.manual_seed(0)
    net = instantiate(cfg.model.net)
    ckpt = workdir / "blind_sr.pth"
    torch.save(net.state_dict(), ckpt)
    del net
    height, width = plan.predict_lr_size
    scene = generate_scene(np.random.default_rng(0), (height, width))
    photo = workdir / "photo.png"
    Image.fromarray((scene.image * 255).round().astype(np.uint8)).save(photo)
    out_dir = workdir / "out"
    overrides = [
        f"ckpt={_quote(ckpt)}",
        f"input={_quote(photo)}",
        f"output={_quote(out_dir)}",
        f"device={plan.device}",
        *plan.predict_overrides,
    ]
    _, peak = _cli("predict", overrides, workdir)
    summary = json.loads((out_dir / "summary.json").read_text())
    if summary["processed"] != [photo.name]:
        raise CheckFailed(f"not processed: {summary['failed'] or 'no output'}")
    with Image.open(out_dir / "photo_sr.png") as sr:
        size = sr.size
    scale = int(cfg.data.scale)
    if size != (scale * width, scale * height):
        raise CheckFailed(
            f"SR image is {size[0]}x{size[1]}, expected {scale * width}x{scale * height}"
        )
    tile, overlap = int(summary["tile_size"]), int(cfg.tile_overlap)
    tiles = len(tile_starts(height, tile, overlap)) * len(tile_starts(width, tile, overlap))
    result = f"{size[0]}x{size[1]} in {summary['seconds']:.1f} s, {tiles} tiles of {tile}"
    if tile < int(cfg.tile_size):
        result += f" (out of memory at {int(cfg.tile_size)})"
    metrics = {
        "predict_s": float(summary["seconds"]),
        "tiles": tiles,
        "tile_size": tile,
        "output_width": size[0],
        "output_height": size[1],
    }
    return Outcome(result, metrics, peak["peak_mb"], peak["peak_kind"])


def _predict_setting(plan: Plan) -> str:
    h, w = plan.predict_lr_size
    tiles = [o.split("=", 1)[1] for o in plan.predict_overrides if o.startswith("tile_size=")]
    tile = tiles[-1] if tiles else "256"  # predict.yaml's default
    net = "toy BlindSR" if plan.dry_run else "BlindSR (model=blind_sr)"
    return f"LR {w}x{h} -> x4 {4 * w}x{4 * h}, {net}, tile {tile}, fp32, device={plan.device}"


# --------------------------------------------------------------------------- latent diffusion
#: ``stabilityai/stable-diffusion-2-1-base``'s ``unet/config.json`` (the values that differ
#: from diffusers' defaults, and the sizes).
SD21_UNET: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "cross_attention_dim": 1024,
    "attention_head_dim": (5, 10, 20, 20),
    "use_linear_projection": True,
    "norm_num_groups": 32,
}
#: Its ``vae/config.json``.
SD21_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 768,
    "scaling_factor": 0.18215,
}
#: Its ``scheduler/scheduler_config.json`` (DDIM).
SD21_SCHEDULER: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "timestep_spacing": "leading",
    "steps_offset": 1,
    "prediction_type": "epsilon",
    "clip_sample": False,
    "set_alpha_to_one": False,
}
#: Parameter counts of the released SD 2.1-base ``unet/`` and ``vae/`` weights: the
#: configs above must give them.
SD21_UNET_PARAMS = 865_910_724
SD21_VAE_PARAMS = 83_653_863
#: A tiny UNet and VAE of the same layout for the dry run (VAE x2, UNet two levels).
TINY_UNET: dict[str, Any] = {
    "sample_size": 32,
    "block_out_channels": (8, 16),
    "layers_per_block": 1,
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 8,
    "attention_head_dim": 2,
    "use_linear_projection": True,
    "norm_num_groups": 4,
}
TINY_VAE: dict[str, Any] = {
    "down_block_types": ("DownEncoderBlock2D",) * 2,
    "up_block_types": ("UpDecoderBlock2D",) * 2,
    "block_out_channels": (8, 8),
    "latent_channels": 4,
    "norm_num_groups": 4,
    "sample_size": 64,
    "scaling_factor": 0.18215,
}
#: ``LatentDiffusionSR`` options of the check (the rest are the model's defaults, those of
#: ``model=latent_diffusion_sr``) and its training loss and optimizer (the config's).
LATENT_OPTIONS: dict[str, Any] = {"kernel_size": 21, "condition": "ground_truth"}
LATENT_SPARSITY = {"kernel": 1e-4, "depth": 1e-4, "lr": 1e-4}
LATENT_ADAMW: dict[str, Any] = {"lr": 5e-5, "betas": (0.9, 0.999), "weight_decay": 0.0}


def write_sd_folder(folder: Path, unet: dict[str, Any], vae: dict[str, Any], device: str) -> Path:
    """Save a random Stable Diffusion folder (``unet/``, ``vae/``, ``scheduler/``; no text
    encoder, so the prompt embedding is zeros) of the given configs to ``folder``.

    The weights are initialised on ``device`` (on a GPU, SD 2.1-base's 950 M parameters
    are drawn there, not on the host's CPU); the scheduler is SD 2.1-base's DDIM.
    """
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    torch.manual_seed(0)
    for name, cls, config in (("unet", UNet2DConditionModel, unet), ("vae", AutoencoderKL, vae)):
        with torch.device(device):
            model = cls(**config)
        model.save_pretrained(folder / name)
        del model
    DDIMScheduler(**SD21_SCHEDULER).save_pretrained(folder / "scheduler")
    return folder


def latent_task(folder: Path) -> Any:
    """``LatentDiffusionSR.from_pretrained(folder, **LATENT_OPTIONS)`` in a
    ``DiffusionSRTask`` with the config's loss weights and AdamW (oracle conditions)."""
    import torch

    from svblur.models import LatentDiffusionSR
    from svblur.systems import DiffusionSRTask

    torch.manual_seed(0)
    net = LatentDiffusionSR.from_pretrained(folder, **LATENT_OPTIONS)
    return DiffusionSRTask(
        net,
        condition="ground_truth",
        sparsity_weights=LATENT_SPARSITY,
        optimizer=functools.partial(torch.optim.AdamW, **LATENT_ADAMW),
    )


def _parameter_counts(net: Any) -> dict[str, int]:
    """Trainable and frozen parameters of a ``LatentDiffusionSR``, and its UNet's and VAE's."""
    params = list(net.parameters())
    return {
        "trainable": sum(p.numel() for p in params if p.requires_grad),
        "frozen": sum(p.numel() for p in params if not p.requires_grad),
        "unet": sum(p.numel() for p in net.unet.parameters()),
        "vae": sum(p.numel() for p in net.vae.parameters()),
    }


def sd21_parameter_counts(folder: Path) -> dict[str, int]:
    """Parameter counts of ``LatentDiffusionSR`` on SD 2.1-base, from the configs alone.

    ``folder`` gets the configs (no weights); the network is built on the ``meta`` device
    (no memory, no initialisation), its frozen UNet and VAE from their configs:
    ``LatentDiffusionSR`` reads them with ``load_frozen``, which needs weights, so that
    function is replaced, for this construction only, by one that builds from the config.
    """
    from unittest import mock

    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    import svblur.models.latent_diffusion_sr as latent_module
    from svblur.models import LatentDiffusionSR

    def from_config(cls: type, source: Path, subfolder: str) -> Any:
        return cls.from_config(cls.load_config(str(source), subfolder=subfolder))

    with torch.device("meta"):
        UNet2DConditionModel(**SD21_UNET).save_config(folder / "unet")
        AutoencoderKL(**SD21_VAE).save_config(folder / "vae")
    DDIMScheduler(**SD21_SCHEDULER).save_config(folder / "scheduler")
    with torch.device("meta"), mock.patch.object(latent_module, "load_frozen", from_config):
        net = LatentDiffusionSR.from_pretrained(folder, **LATENT_OPTIONS)
    return _parameter_counts(net)


def _latent_inputs(net: Any, plan: Plan, batch: int) -> dict[str, Any]:
    """Random, seeded ``lr``, ``hr``, ``depth`` and normalised ``kernels`` (the field at HR,
    as the data sets give it) of ``batch`` images of ``plan.latent_hr_size``, on the device."""
    import torch

    gen = torch.Generator().manual_seed(0)
    height, width = plan.latent_hr_size
    kernels = torch.rand(batch, net.kernel_size**2, height, width, generator=gen)
    kernels /= kernels.sum(1, keepdim=True)
    inputs = {
        "lr": torch.rand(batch, 3, height // net.scale, width // net.scale, generator=gen),
        "hr": torch.rand(batch, 3, height, width, generator=gen),
        "depth": torch.rand(batch, 1, height, width, generator=gen),
        "kernels": kernels,
    }
    return {key: value.to(plan.device) for key, value in inputs.items()}


def _latent_training(
    plan: Plan, task: Any
) -> tuple[list[float], list[float], float | None, str | None]:
    """Time ``plan.warmup + plan.steps`` training steps of ``task`` (a ``DiffusionSRTask``)
    in bf16 autocast: Eq. 5's loss, backward, AdamW over the trainable parameters.

    Returns:
        The step times (s), the losses, the peak memory (MiB) and its kind.
    """
    import torch

    device = plan.device
    batch = _latent_inputs(task.diffusion, plan, plan.latent_batch)
    conditions = {"kernels": batch["kernels"], "depth": batch["depth"]}
    noise = torch.Generator(device).manual_seed(0)
    optimizer = task.configure_optimizers()["optimizer"]  # over the trainable parameters
    losses: list[float] = []
    task.train()

    def step() -> None:
        with torch.autocast(device, dtype=torch.bfloat16):
            terms = task.diffusion_loss(batch, conditions, noise)
        loss = terms["epsilon"] + terms["sparsity"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))

    _reset_peak(device)
    times = _timed(step, plan.warmup, plan.steps, device)
    peak, kind = _peak(device)
    optimizer.zero_grad(set_to_none=True)
    return times, losses, peak, kind


def _latent_sampling(plan: Plan, net: Any) -> tuple[dict[int, float], float | None]:
    """Median seconds of DDIM sampling of one image with each of ``plan.latent_sample_steps``
    (after one warm-up run) in bf16 autocast, and the peak memory (MiB)."""
    import torch

    device = plan.device
    image = _latent_inputs(net, plan, 1)
    net.eval()

    def sample(steps: int) -> None:
        with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16):
            net.sample(image["lr"], image["depth"], image["kernels"], steps=steps, sampler="ddim")

    _reset_peak(device)
    sample(plan.latent_sample_steps[0])  # warm-up
    times = {
        steps: statistics.median(
            _timed(functools.partial(sample, steps), 0, plan.latent_runs, device)
        )
        for steps in plan.latent_sample_steps
    }
    peak, _ = _peak(device)
    return times, peak


def check_latent(plan: Plan, workdir: Path) -> Outcome:
    """``LatentDiffusionSR`` at SD 2.1-base sizes (tiny on the dry run): training and DDIM
    step times, peak memory and parameter counts (see the module docstring)."""
    import gc

    import torch

    device = plan.device
    counts_sd21 = sd21_parameter_counts(workdir / "sd21_config")
    failures = []
    released = {"unet": SD21_UNET_PARAMS, "vae": SD21_VAE_PARAMS}
    for part, expected in released.items():
        if counts_sd21[part] != expected:
            failures.append(
                f"SD 2.1-base {part} config gives {counts_sd21[part]:,} parameters, the "
                f"released weights have {expected:,}"
            )

    start = time.perf_counter()
    sd21 = plan.latent_sizes == "sd21"
    folder = write_sd_folder(
        workdir / "sd",
        SD21_UNET if sd21 else TINY_UNET,
        SD21_VAE if sd21 else TINY_VAE,
        device,
    )
    task = latent_task(folder).to(device)
    net = task.diffusion
    shutil.rmtree(folder)  # the loaded network needs the folder no more (3.5 GB at SD 2.1)
    build_s = time.perf_counter() - start
    counts = _parameter_counts(net)
    task_counts = task.parameter_counts()
    if (task_counts["trainable"], task_counts["frozen"]) != (counts["trainable"], counts["frozen"]):
        failures.append(f"DiffusionSRTask counts {task_counts}, the network's {counts}")
    if sd21 and counts != counts_sd21:
        failures.append(f"loaded network's counts {counts} differ from the config's {counts_sd21}")

    try:
        train_times, losses, train_peak, peak_kind = _latent_training(plan, task)
        gc.collect()  # the optimizer's state and the batch are gone before sampling
        sample_times, sample_peak = _latent_sampling(plan, net)
    finally:  # the network's hooks make reference cycles: free it for the next checks
        del task, net
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()

    height, width = plan.latent_hr_size
    few, many = plan.latent_sample_steps
    if not all(math.isfinite(loss) for loss in losses):
        failures.append(f"non-finite training loss: {losses}")
    train_s = statistics.median(train_times[plan.warmup :])
    step_s = (sample_times[many] - sample_times[few]) / (many - few)
    metrics: dict[str, float] = {
        "train_s_per_step": train_s,
        "train_images_per_s": plan.latent_batch / train_s,
        "train_first_step_s": train_times[0],
        "train_loss": losses[-1],
        "sample_s_per_step": step_s,
        "sample_s_per_image": sample_times[many],
        "sample_steps": many,
        "build_load_s": build_s,
        "batch": plan.latent_batch,
        "hr_height": height,
        "hr_width": width,
        "trainable_params": counts["trainable"],
        "frozen_params": counts["frozen"],
        "sd21_trainable_params": counts_sd21["trainable"],
        "sd21_frozen_params": counts_sd21["frozen"],
        "sd21_unet_params": counts_sd21["unet"],
        "sd21_vae_params": counts_sd21["vae"],
    }
    if train_peak is not None and sample_peak is not None:
        metrics.update(train_peak_mb=train_peak, sample_peak_mb=sample_peak)
    peak = None if train_peak is None else max(train_peak, sample_peak or 0.0)
    result = (
        f"train {train_s:.3f} s/step, DDIM {step_s:.4f} s/step ({many} steps: "
        f"{sample_times[many]:.2f} s/image); "
    )
    if sd21:
        result += (
            f"{counts['trainable'] / 1e6:.1f} M trainable, {counts['frozen'] / 1e6:.1f} M frozen"
        )
        if train_peak is not None:
            result += f"; peak train {train_peak:.0f} MiB, sample {sample_peak:.0f} MiB"
    else:
        result += (
            f"SD 2.1-base (meta): {counts_sd21['trainable'] / 1e6:.1f} M trainable, "
            f"{counts_sd21['frozen'] / 1e6:.1f} M frozen"
        )
    return Outcome(result, metrics, peak, peak_kind, "; ".join(failures) or None)


def _latent_setting(plan: Plan) -> str:
    height, width = plan.latent_hr_size
    sizes = "SD 2.1-base sizes, random weights" if plan.latent_sizes == "sd21" else "tiny SD layout"
    few, many = plan.latent_sample_steps
    return (
        f"{sizes}, HR {width}x{height}, batch {plan.latent_batch}, bf16 autocast, "
        f"{plan.warmup}+{plan.steps} train steps, DDIM {few} vs {many} steps "
        f"(median of {plan.latent_runs}), device={plan.device}"
    )


# --------------------------------------------------------------------------- registry
def _cmos_checks() -> list[Check]:
    checks = []
    for mode, name, budgets in (
        ("forward", "CMOS forward", {"fp32": 45.0, "bf16": 30.0, "compiled": 120.0}),
        ("train", "CMOS training", {"fp32": 45.0, "bf16": 30.0, "compiled": 180.0}),
    ):
        for precision, budget in budgets.items():
            checks.append(
                Check(
                    key=f"{mode}-{precision}",
                    name=name,
                    budget_s=budget,
                    setting=functools.partial(_cmos_setting, precision, mode),
                    run=functools.partial(check_cmos, precision=precision, mode=mode),
                )
            )
    return checks


CHECKS: dict[str, Check] = {
    check.key: check
    for check in [
        *_cmos_checks(),
        Check(
            "fdr-gpu",
            "svblur-train",
            75.0,
            functools.partial(_fdr_setting, "gpu"),
            functools.partial(check_fdr, trainer="gpu"),
        ),
        Check(
            "fdr-ddp",
            "svblur-train",
            75.0,
            functools.partial(_fdr_setting, "ddp"),
            functools.partial(check_fdr, trainer="ddp"),
        ),
        Check("defocus", "render_defocus", 60.0, _defocus_setting, check_defocus),
        Check("predict-4k", "svblur-predict", 120.0, _predict_setting, check_predict),
        Check("latent-sd21", "LatentDiffusionSR", 240.0, _latent_setting, check_latent),
    ]
}
#: Table order (as listed above) and run order: the compiled rows, the likeliest to run
#: long, go last so that they cannot eat the others' time.
TABLE_ORDER = [
    "forward-fp32",
    "forward-bf16",
    "forward-compiled",
    "train-fp32",
    "train-bf16",
    "train-compiled",
    "fdr-gpu",
    "fdr-ddp",
    "defocus",
    "predict-4k",
    "latent-sd21",
]
RUN_ORDER = [key for key in TABLE_ORDER if "compiled" not in key] + [
    "forward-compiled",
    "train-compiled",
]
#: Checks that the dry run runs only when ``--checks`` names them (too slow for the default
#: rehearsal, which the test suite runs).
DRY_RUN_ON_REQUEST = ("latent-sd21",)


# --------------------------------------------------------------------------- rows
def make_row(
    check: Check,
    plan: Plan,
    seconds: float,
    outcome: Outcome | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """One JSON row: ``key, check, setting, result, status, reason, time_s, peak_mb,
    peak_kind, metrics``."""
    if outcome is not None and outcome.failure:
        reason = outcome.failure
    peak_mb = None if outcome is None else outcome.peak_mb
    return {
        "key": check.key,
        "check": check.name,
        "setting": check.setting(plan),
        "result": outcome.result if outcome is not None else "-",
        "status": "FAILED" if reason else "ok",
        "reason": _one_line(reason) if reason else None,
        "time_s": round(seconds, 3),
        "peak_mb": None if peak_mb is None else round(peak_mb, 1),
        "peak_kind": None if outcome is None else outcome.peak_kind,
        "metrics": {} if outcome is None else outcome.metrics,
    }


def run_check(check: Check, plan: Plan, workdir: Path) -> dict[str, Any]:
    """Run one check in this process; an exception becomes a FAILED row."""
    folder = workdir / check.key
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        outcome = check.run(plan, folder)
    except Exception as error:  # every check is guarded: report it and go on
        traceback.print_exc()
        reason = str(error) if isinstance(error, CheckFailed) else _describe(error)
        return make_row(check, plan, time.perf_counter() - start, reason=reason)
    return make_row(check, plan, time.perf_counter() - start, outcome)


def worker(keys: list[str], plan: Plan, workdir: Path) -> None:
    """Run ``keys`` in order, announcing each and printing its row (``--worker`` mode)."""
    import torch  # start-up costs (imports, the CUDA context) are not any check's time

    if plan.device == "cuda":
        torch.cuda.init()
    for key in keys:
        print(START + key, flush=True)
        row = run_check(CHECKS[key], plan, workdir)
        print(ROW + json.dumps(row), flush=True)


# --------------------------------------------------------------------------- parent
def _kill(proc: subprocess.Popen) -> None:
    """End a worker and what it started (its process group), if still running."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _run_worker(
    keys: list[str],
    plan: Plan,
    workdir: Path,
    deadline: float,
    log: Path,
    report: Callable[[dict[str, Any]], None],
) -> None:
    """Run ``keys`` in a worker process, passing each row to ``report`` as it arrives.

    A check that crashes the worker or overruns its budget (or the deadline) gets a
    FAILED row and ends the worker (with what it started); the caller starts a new worker
    for the checks left.
    """
    command = [sys.executable, str(SCRIPT), "--worker", *keys, "--workdir", str(workdir)]
    if plan.dry_run:
        command.append("--dry-run")
    env = dict(os.environ)
    if plan.cpu_threads:  # inherited by the CLI runs the worker starts
        env["OMP_NUM_THREADS"] = str(plan.cpu_threads)
    with open(log, "a") as err:
        proc = subprocess.Popen(
            command,
            env=env,
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            start_new_session=True,  # so that _kill reaches the CLI runs too
        )
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    done = 0
    started, limit = time.monotonic(), STARTUP_S + CHECKS[keys[0]].budget(plan)
    log_offset = log.stat().st_size
    try:
        while done < len(keys):
            check = CHECKS[keys[done]]
            wait = min(started + limit, deadline) - time.monotonic()
            try:
                line = lines.get(timeout=max(0.0, wait))
            except queue.Empty:
                _kill(proc)
                spent = time.monotonic() - started
                if time.monotonic() >= deadline:
                    reason = f"stopped after {spent:.0f} s: the total budget is spent"
                else:
                    reason = f"timed out after {spent:.0f} s (budget {check.budget(plan):.0f} s)"
                report(make_row(check, plan, spent, reason=reason))
                return
            if line is None:
                code = proc.wait()
                with open(log, errors="replace") as f:
                    f.seek(log_offset)
                    error = _last_error(f.read())
                how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
                reason = f"worker died ({how}): {error}"
                report(make_row(check, plan, time.monotonic() - started, reason=reason))
                return
            if line.startswith(START):
                started, limit = time.monotonic(), check.budget(plan)
                log_offset = log.stat().st_size
            elif line.startswith(ROW):
                report(json.loads(line[len(ROW) :]))
                done += 1
                started, limit = time.monotonic(), STARTUP_S
        with contextlib.suppress(subprocess.TimeoutExpired):  # a worker stuck exiting
            proc.wait(timeout=STARTUP_S)
    finally:  # also on Ctrl-C and after a crash: the worker's session would live on
        _kill(proc)


def run_all(keys: list[str], plan: Plan, workdir: Path, budget_s: float) -> list[dict[str, Any]]:
    """Run every check of ``keys`` (in that order) in workers within ``budget_s`` seconds."""
    deadline = time.monotonic() + budget_s
    log = workdir / "worker.log"
    log.touch()
    rows: list[dict[str, Any]] = []

    def report(row: dict[str, Any]) -> None:
        rows.append(row)
        reason = f": {row['reason']}" if row["reason"] else ""
        print(
            f"[{len(rows)}/{len(keys)}] {row['check']} ({row['setting']}): "
            f"{row['status']} in {row['time_s']:.1f} s{reason}",
            file=sys.stderr,
            flush=True,
        )

    while len(rows) < len(keys):
        pending = keys[len(rows) :]
        if deadline - time.monotonic() < 5:
            for key in pending:
                reason = f"not run: the total budget of {budget_s:.0f} s is spent"
                report(make_row(CHECKS[key], plan, 0.0, reason=reason))
            break
        _run_worker(pending, plan, workdir, deadline, log, report)
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """The summary as a markdown table: check, setting, result, time, peak memory, status."""
    lines = [
        "| check | setting | result | time (s) | peak memory | status |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row["peak_mb"] is None:
            peak = "-"
        else:
            peak = f"{row['peak_mb']:.0f} MiB" + (" RSS" if row["peak_kind"] == "rss" else "")
        status = "ok" if row["status"] == "ok" else f"FAILED: {row['reason']}"
        cells = [row["check"], row["setting"], row["result"], f"{row['time_s']:.1f}", peak, status]
        lines.append("| " + " | ".join(_one_line(cell, 200) for cell in cells) + " |")
    return "\n".join(lines)


def describe_machine(plan: Plan) -> str:
    """One line naming the device, torch and the mode."""
    if plan.dry_run:
        from svblur.experiments.report import cpu_name

        device = f"CPU {cpu_name()} ({os.cpu_count()} cores), dry run"
        version = importlib.metadata.version("torch")
    else:
        import torch

        device = f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
        version = torch.__version__
    return f"svblur GPU check on {device}, torch {version}"


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and run the checks (or one of the internal modes)."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[-6:]),
    )
    parser.add_argument("--dry-run", action="store_true", help="tiny CPU rehearsal of the plan")
    parser.add_argument("--json", default=None, metavar="FILE", help="write the rows to FILE")
    parser.add_argument(
        "--checks",
        nargs="+",
        default=None,
        choices=TABLE_ORDER,
        metavar="KEY",
        help=f"run only these checks ({', '.join(TABLE_ORDER)})",
    )
    parser.add_argument(
        "--budget", type=float, default=None, help="seconds for everything (450; dry run 900)"
    )
    parser.add_argument(
        "--workdir",
        default=None,
        help="keep logs and outputs in this folder (default: a temporary one, removed)",
    )
    parser.add_argument("--worker", nargs="+", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cli", nargs=argparse.REMAINDER, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.cli:
        return run_cli(args.cli[0], args.cli[1:])
    plan = make_plan(args.dry_run)
    if args.worker:
        worker(args.worker, plan, Path(args.workdir))
        return 0
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            print(
                "gpu_check: no CUDA device; run `python benchmarks/gpu_check.py --dry-run` "
                "for the CPU rehearsal",
                file=sys.stderr,
            )
            return 2
    if args.checks is not None:
        keys = [key for key in RUN_ORDER if key in args.checks]
    else:
        skipped = DRY_RUN_ON_REQUEST if plan.dry_run else ()
        keys = [key for key in RUN_ORDER if key not in skipped]
    keep = args.workdir is not None
    workdir = Path(args.workdir) if keep else Path(tempfile.mkdtemp(prefix="svblur-gpu-check-"))
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    header = describe_machine(plan)
    print(header, file=sys.stderr, flush=True)
    start = time.monotonic()
    try:
        rows = run_all(keys, plan, workdir, args.budget or plan.total_budget_s)
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    total = time.monotonic() - start
    rows.sort(key=lambda row: TABLE_ORDER.index(row["key"]))
    failed = [row["key"] for row in rows if row["status"] != "ok"]
    print()
    print(header)
    print()
    print(format_table(rows))
    print()
    print(f"{len(rows) - len(failed)} of {len(rows)} checks ok in {total:.0f} s")
    if args.json:
        report = {
            "machine": header,
            "dry_run": plan.dry_run,
            "total_s": round(total, 1),
            "rows": rows,
        }
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
