"""Sampling and training cost of SSR's diffusion SR, pixel and latent, against the number
of steps, and of one SVKR iteration.

Networks (random weights: speed does not depend on them), batch 1, LR ``--size``
(default 64 x 64, HR 256 x 256), 21x21 kernels, on the CPU with ``--threads`` threads;
``--model`` picks ``pixel``, ``latent`` or ``both`` (default).

- **Pixel model** (``model=diffusion_sr``'s defaults: pixel space, UNet widths 32/64,
  encoders 16/32 and 32/64, AMF hidden 128) and its SVKR (DKENet 16/32, RRDB-SFT 16
  features x 2 blocks), eval mode.
- **Latent model** (``LatentDiffusionSR`` with its defaults, those of
  ``model=latent_diffusion_sr``) on a small random Stable-Diffusion-layout folder written
  to a temporary directory: UNet 32-64-64 (one residual block per level, cross-attention
  at the first two levels, width 64), VAE 16-32-32-32 (x8 down-sampling, 4 latent
  channels), SD 2.1-base's DDIM schedule. The SD 2.1-base sizes themselves are measured
  on a GPU by ``benchmarks/gpu_check.py`` (``make gpu-check``).

What is measured:

- **Sampling** (``sample`` with given kernels and depth, DDIM by default, the whole image
  at once or in ``--tile`` LR-pixel tiles): seconds per image for each step count, the
  median of ``--repeats`` runs, divided by the steps, and the slope between the fewest and
  the most steps (seconds per extra step, without the fixed costs: VAE, encoders of the
  timestep-free conditions). Step counts are measured side by side: every repeat runs all
  of them in turn, so drifts of the machine hit them alike.
- **Training step** (latent model): the training loss of ``DiffusionSRTask`` (Eq. 5: noise
  MSE at a random timestep + the AMF sparsity term, weights 1e-4 as in
  ``model=latent_diffusion_sr``) on a batch of ``--batch`` images with given kernels and
  depth, backward, and an AdamW step over the trainable parameters (encoders, AMFs,
  injections; the UNet and the VAE are frozen); median of ``--repeats`` after one
  warm-up step, measured in the same repeats as sampling. Trainable and frozen parameter
  counts are ``DiffusionSRTask.parameter_counts``.
- **Peak memory**: each step count (and the training step) is also run once in a fresh
  child process (networks and inputs built without transient copies), which reports its
  peak resident set size (``VmHWM``, the whole process: Python, torch, networks and
  inputs) and that peak minus the RSS just before sampling (or training): what the run
  adds (an upper bound, should an earlier moment of the process have peaked higher). The
  training step's peak includes the gradients and AdamW's state, allocated by the first
  step. ``tracemalloc`` does not see torch's allocations, and ``ru_maxrss`` carries the
  starting process's peak over, hence ``/proc/self/status``.
- **SVKR** (with the pixel model): one iteration is timed as ``SVKR(iterations=1)``
  (depth, kernels, blend, RRDB-SFT; depth from the data set, ``GroundTruthDepth``, as the
  config's default), and per extra iteration as ``(T=3 - T=1) / 2``; the same with a
  trainable ``SMPDepthNet(tu-resnet18)`` depth network.

Usage::

    python benchmarks/diffusion_speed.py [--model pixel|latent|both] [--size 64 64]
        [--steps 5 10 20 50] [--repeats 3] [--threads 2] [--batch 2]
        [--sampler ddim|dpm_solver] [--tile 32] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

# the latent model's folder and task are gpu_check's (a script beside this one)
from gpu_check import latent_task, write_sd_folder

from svblur.experiments.report import cpu_name

#: The small Stable-Diffusion-layout UNet of the latent model (SD's block types and
#: linear attention projections, far narrower and shallower).
SMALL_UNET = {
    "sample_size": 32,
    "block_out_channels": (32, 64, 64),
    "layers_per_block": 1,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 64,
    "attention_head_dim": 8,
    "use_linear_projection": True,
    "norm_num_groups": 8,
}
#: The small VAE: four blocks, so that it down-samples by 8 as SD's does.
SMALL_VAE = {
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (16, 32, 32, 32),
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 8,
    "sample_size": 256,
    "scaling_factor": 0.18215,
}


# ---------------------------------------------------------------------- networks
def _diffusion(kernel_size: int = 21):
    from svblur.models import DiffusionSR

    torch.manual_seed(0)
    return DiffusionSR(kernel_size=kernel_size).eval()


def _svkr(iterations: int, depth: str):
    from svblur.models import RRDBSFT, SVKR, DKENet, GroundTruthDepth, SMPDepthNet

    torch.manual_seed(0)
    estimator = DKENet(kernel_size=21, channels=(16, 32), depth_channels=8, sft_channels=8)
    sr_net = RRDBSFT(
        num_features=16, num_blocks=2, growth_channels=8, prior_channels=16, kernel_channels=441
    )
    depth_net = GroundTruthDepth() if depth == "ground truth" else SMPDepthNet("tu-resnet18")
    return SVKR(estimator, depth_net, sr_net, iterations=iterations).eval()


def _inputs(size: tuple[int, int], batch: int = 1, hr: bool = False) -> dict[str, torch.Tensor]:
    """Random, seeded ``lr (B, 3, h, w)``, ``depth (B, 1, 4h, 4w)``, normalised ``kernels
    (B, 441, 4h, 4w)`` (built without a transient copy of the field) and, with ``hr``, an
    ``hr (B, 3, 4h, 4w)`` image to train on."""
    gen = torch.Generator().manual_seed(0)
    h, w = size
    lr = torch.rand(batch, 3, h, w, generator=gen)
    depth = torch.rand(batch, 1, 4 * h, 4 * w, generator=gen)
    kernels = torch.rand(batch, 441, 4 * h, 4 * w, generator=gen)
    kernels /= kernels.sum(1, keepdim=True)  # in place: no transient copy of the field
    inputs = {"lr": lr, "depth": depth, "kernels": kernels}
    if hr:
        inputs["hr"] = torch.rand(batch, 3, 4 * h, 4 * w, generator=gen)
    return inputs


def _training_step(
    task: Any, batch: dict[str, torch.Tensor], generator: torch.Generator
) -> Callable[[], float]:
    """Return a function running one training step of ``task`` on ``batch``: Eq. 5's loss
    (noise and timesteps from ``generator``), backward, AdamW over the trainable
    parameters."""
    optimizer = task.configure_optimizers()["optimizer"]
    conditions = {"kernels": batch["kernels"], "depth": batch["depth"]}

    def step() -> float:
        terms = task.diffusion_loss(batch, conditions, generator)
        loss = terms["epsilon"] + terms["sparsity"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def _timed(fn: Callable[..., object], *args: object, **kwargs: object) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------- peak memory
def _memory_mib(field: str) -> float:
    """``VmRSS`` (current) or ``VmHWM`` (peak) resident set size of this process, in MiB
    (Linux ``/proc/self/status``; unlike ``ru_maxrss``, the peak is not inherited from the
    process that started this one)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"/proc/self/status has no {field}")


def child(args: argparse.Namespace) -> None:
    """One sampling run (``--child STEPS``) or one training step (``--child 0
    --child-train``) in this process; print its peak RSS and the RSS before (MiB)."""
    torch.set_num_threads(args.threads)
    if args.child_model == "pixel":
        net = _diffusion()
        inputs = _inputs(tuple(args.size))
    else:
        task = latent_task(Path(args.folder))
        net = task.diffusion.eval()
        batch = args.batch if args.child_train else 1
        inputs = _inputs(tuple(args.size), batch, hr=args.child_train)
    if args.child_train:
        step = _training_step(task.train(), inputs, torch.Generator().manual_seed(0))
        before = _memory_mib("VmRSS")
        step()
    else:
        before = _memory_mib("VmRSS")
        with torch.inference_mode():
            net.sample(
                inputs["lr"],
                inputs["depth"],
                inputs["kernels"],
                steps=args.child,
                sampler=args.sampler,
                tile_size=args.tile,
            )
    peak = _memory_mib("VmHWM")
    print(json.dumps({"peak_MiB": peak, "before_MiB": before}))


def peak_memory(
    args: argparse.Namespace, model: str, steps: int, folder: Path | None = None
) -> dict[str, float]:
    """Peak RSS of a fresh process sampling once with ``steps`` steps (``steps=0``: one
    training step of the latent model), and its RSS before (MiB)."""
    command = [sys.executable, __file__, "--child", str(steps), "--threads", str(args.threads)]
    command += ["--size", *map(str, args.size), "--sampler", args.sampler]
    command += ["--child-model", model, "--batch", str(args.batch)]
    if folder is not None:
        command += ["--folder", str(folder)]
    if steps == 0:
        command.append("--child-train")
    if args.tile:
        command += ["--tile", str(args.tile)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# ---------------------------------------------------------------------- reports


def _sampling_rows(
    args: argparse.Namespace, times: dict[int, list[float]], memory: dict[int, dict[str, float]]
) -> dict[str, Any]:
    """Print the sampling table of one model and return its figures."""
    print("| steps | s / image | s / step | peak RSS (MiB) | peak - RSS before sampling (MiB) |")
    print("|---:|---:|---:|---:|---:|")
    rows = {}
    for steps in args.steps:
        median = statistics.median(times[steps])
        peak, before = memory[steps]["peak_MiB"], memory[steps]["before_MiB"]
        print(
            f"| {steps} | {median:.2f} | {median / steps:.3f} | {peak:.0f} | {peak - before:.0f} |"
        )
        rows[str(steps)] = {
            "s_per_image": median,
            "s_per_step": median / steps,
            "peak_MiB": peak,
            "added_MiB": peak - before,
        }
    result: dict[str, Any] = {"sampling": rows}
    fewest, most = min(args.steps), max(args.steps)
    if most > fewest:
        slope = (statistics.median(times[most]) - statistics.median(times[fewest])) / (
            most - fewest
        )
        print(f"per extra step ({fewest} -> {most} steps): {slope:.3f} s")
        result["s_per_extra_step"] = slope
    return result


def bench_pixel(args: argparse.Namespace) -> dict[str, Any]:
    """Time the pixel model's sampling and the SVKR; print the tables, return the figures."""
    size = tuple(args.size)
    inputs = _inputs(size)
    lr, depth, kernels = inputs["lr"], inputs["depth"], inputs["kernels"]
    net = _diffusion()
    svkrs = {(name, t): _svkr(t, name) for name in ("ground truth", "SMPDepthNet") for t in (1, 3)}
    with torch.inference_mode():  # warm-up
        net.sample(lr, depth, kernels, steps=1, sampler=args.sampler, tile_size=args.tile)
        for svkr in svkrs.values():
            svkr(lr, depth=depth)
    sampling: dict[int, list[float]] = {s: [] for s in args.steps}
    svkr_times: dict[tuple[str, int], list[float]] = {key: [] for key in svkrs}
    with torch.inference_mode():
        for _ in range(args.repeats):
            for steps in args.steps:
                sampling[steps].append(
                    _timed(
                        net.sample,
                        lr,
                        depth,
                        kernels,
                        steps=steps,
                        sampler=args.sampler,
                        tile_size=args.tile,
                    )
                )
            for key, svkr in svkrs.items():
                svkr_times[key].append(_timed(svkr, lr, depth=depth))
    memory = {steps: peak_memory(args, "pixel", steps) for steps in args.steps}

    h, w = size
    print(
        f"DiffusionSR sampling, LR {h}x{w} -> HR {4 * h}x{4 * w}, {args.sampler}, "
        f"tiles: {args.tile or 'none'}, CPU {args.threads} threads, median of {args.repeats}"
    )
    parameters = _count(net)
    print(f"parameters: {parameters / 1e6:.2f} M")
    result = {"parameters": parameters, **_sampling_rows(args, sampling, memory)}
    print()
    print("| SVKR depth estimator | T=1 (one iteration) s | T=3 s | per extra iteration s |")
    print("|---|---:|---:|---:|")
    result["svkr"] = {}
    for name in ("ground truth", "SMPDepthNet"):
        one = statistics.median(svkr_times[(name, 1)])
        three = statistics.median(svkr_times[(name, 3)])
        print(f"| {name} | {one:.3f} | {three:.3f} | {(three - one) / 2:.3f} |")
        result["svkr"][name] = {
            "t1_s": one,
            "t3_s": three,
            "per_extra_iteration_s": (three - one) / 2,
        }
    return result


def bench_latent(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Time the latent model's sampling and training steps on the small SD folder
    ``folder``; print the tables, return the figures."""
    size = tuple(args.size)
    task = latent_task(folder)
    net = task.diffusion
    sample_inputs = _inputs(size)
    lr, depth, kernels = sample_inputs["lr"], sample_inputs["depth"], sample_inputs["kernels"]
    train_step = _training_step(
        task, _inputs(size, args.batch, hr=True), torch.Generator().manual_seed(0)
    )

    def sample(steps: int) -> None:
        net.eval()
        with torch.inference_mode():
            net.sample(lr, depth, kernels, steps=steps, sampler=args.sampler, tile_size=args.tile)

    def train() -> None:
        task.train()
        train_step()

    sample(1)  # warm-up
    train()
    sampling: dict[int, list[float]] = {s: [] for s in args.steps}
    training: list[float] = []
    for _ in range(args.repeats):
        for steps in args.steps:
            sampling[steps].append(_timed(sample, steps))
        training.append(_timed(train))
    memory = {steps: peak_memory(args, "latent", steps, folder) for steps in args.steps}
    train_memory = peak_memory(args, "latent", 0, folder)

    h, w = size
    counts = task.parameter_counts()
    print(
        f"LatentDiffusionSR (small SD layout: UNet {_count(net.unet) / 1e6:.2f} M, VAE "
        f"{_count(net.vae) / 1e6:.2f} M, x{net.vae_factor}), LR {h}x{w} -> HR "
        f"{4 * h}x{4 * w} (latent {4 * h // net.vae_factor}x{4 * w // net.vae_factor}), "
        f"CPU {args.threads} threads, median of {args.repeats}"
    )
    print(
        f"parameters: {counts['trainable'] / 1e6:.2f} M trainable, "
        f"{counts['frozen'] / 1e6:.2f} M frozen (UNet + VAE)"
    )
    print(f"sampling ({args.sampler}, batch 1, tiles: {args.tile or 'none'}):")
    result: dict[str, Any] = {
        "trainable_parameters": counts["trainable"],
        "frozen_parameters": counts["frozen"],
        "unet_parameters": _count(net.unet),
        "vae_parameters": _count(net.vae),
        **_sampling_rows(args, sampling, memory),
    }
    median = statistics.median(training)
    peak, before = train_memory["peak_MiB"], train_memory["before_MiB"]
    print()
    print(f"training step (Eq. 5 loss, backward, AdamW; batch {args.batch}):")
    print("| s / step | images / s | peak RSS (MiB) | peak - RSS before the step (MiB) |")
    print("|---:|---:|---:|---:|")
    print(f"| {median:.3f} | {args.batch / median:.2f} | {peak:.0f} | {peak - before:.0f} |")
    result["training"] = {
        "batch": args.batch,
        "s_per_step": median,
        "peak_MiB": peak,
        "added_MiB": peak - before,
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="both", choices=["pixel", "latent", "both"])
    parser.add_argument("--size", type=int, nargs=2, default=[64, 64], help="LR height width")
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20, 50])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2, help="training batch (latent model)")
    parser.add_argument("--sampler", default="ddim", choices=["ddim", "dpm_solver", "ddpm"])
    parser.add_argument("--tile", type=int, default=None, help="tile side in LR pixels")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the figures")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-model", default="pixel", help=argparse.SUPPRESS)
    parser.add_argument("--child-train", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args)
        return
    if min(args.steps) < 1 or args.repeats < 1 or args.batch < 1:
        parser.error("--steps, --repeats and --batch must be positive")
    torch.set_num_threads(args.threads)
    report: dict[str, Any] = {
        "machine": f"{cpu_name()}, torch {torch.__version__}",
        "settings": {k: v for k, v in vars(args).items() if not k.startswith(("child", "folder"))},
    }
    if args.model in ("pixel", "both"):
        report["pixel"] = bench_pixel(args)
        print()
    if args.model in ("latent", "both"):
        with tempfile.TemporaryDirectory(prefix="svblur-sd-") as tmp:
            report["latent"] = bench_latent(
                args, write_sd_folder(Path(tmp), SMALL_UNET, SMALL_VAE, "cpu")
            )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
