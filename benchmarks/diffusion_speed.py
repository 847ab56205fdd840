"""Sampling cost of SSR's diffusion SR against the number of steps, and of one SVKR iteration.

Networks: ``model=diffusion_sr``'s defaults (pixel space, UNet widths 32/64, encoders
16/32 and 32/64, AMF hidden 128, 21x21 kernels) and its SVKR (DKENet 16/32, RRDB-SFT 16
features x 2 blocks), random weights (speed does not depend on them), eval mode, batch 1,
LR ``--size`` (default 64 x 64, HR 256 x 256), on the CPU with ``--threads`` threads.

- **Sampling** (``DiffusionSR.sample`` with given kernels and depth, the whole image at
  once or in ``--tile`` LR-pixel tiles): seconds per image for each step count, the median
  of ``--repeats`` runs. Step counts are measured side by side: every repeat runs all of
  them in turn, so drifts of the machine hit them alike.
- **Peak memory**: each step count is also run once in a fresh child process (networks
  and inputs built without transient copies), which reports its peak resident set size
  (``VmHWM``, the whole process: Python, torch, networks and inputs) and that peak minus
  the RSS just before sampling: what sampling adds (an upper bound, should an earlier
  moment of the process have peaked higher). ``tracemalloc`` does not see torch's
  allocations, and ``ru_maxrss`` carries the starting process's peak over, hence
  ``/proc/self/status``.
- **SVKR**: one iteration is timed as ``SVKR(iterations=1)`` (depth, kernels, blend,
  RRDB-SFT; depth from the data set, ``GroundTruthDepth``, as the config's default), and
  per extra iteration as ``(T=3 - T=1) / 2``; the same with a trainable
  ``SMPDepthNet(tu-resnet18)`` depth network.

Usage::

    python benchmarks/diffusion_speed.py [--size 64 64] [--steps 5 10 20 50] [--repeats 3]
        [--threads 2] [--sampler ddim|dpm_solver] [--tile 32]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch


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


def _inputs(size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    h, w = size
    lr = torch.rand(1, 3, h, w, generator=gen)
    depth = torch.rand(1, 1, 4 * h, 4 * w, generator=gen)
    kernels = torch.rand(1, 441, 4 * h, 4 * w, generator=gen)
    return lr, depth, kernels / kernels.sum(1, keepdim=True)


def _timed(fn: Callable[..., object], *args: object, **kwargs: object) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


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
    """One sampling run in this process; print its peak RSS and the RSS before (MiB)."""
    torch.set_num_threads(args.threads)
    net = _diffusion()
    gen = torch.Generator().manual_seed(0)
    h, w = args.size
    lr = torch.rand(1, 3, h, w, generator=gen)
    depth = torch.rand(1, 1, 4 * h, 4 * w, generator=gen)
    kernels = torch.rand(1, 441, 4 * h, 4 * w, generator=gen)
    kernels /= kernels.sum(1, keepdim=True)  # in place: no transient copy of the field
    before = _memory_mib("VmRSS")
    with torch.inference_mode():
        net.sample(lr, depth, kernels, steps=args.child, sampler=args.sampler, tile_size=args.tile)
    peak = _memory_mib("VmHWM")
    print(json.dumps({"peak_MiB": peak, "before_MiB": before}))


def peak_memory(args: argparse.Namespace, steps: int) -> dict[str, float]:
    """Peak RSS of a fresh process sampling once, and its RSS before sampling (MiB)."""
    command = [sys.executable, __file__, "--child", str(steps), "--threads", str(args.threads)]
    command += ["--size", *map(str, args.size), "--sampler", args.sampler]
    if args.tile:
        command += ["--tile", str(args.tile)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, nargs=2, default=[64, 64], help="LR height width")
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20, 50])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sampler", default="ddim", choices=["ddim", "dpm_solver", "ddpm"])
    parser.add_argument("--tile", type=int, default=None, help="tile side in LR pixels")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args)
        return
    torch.set_num_threads(args.threads)
    size = tuple(args.size)
    lr, depth, kernels = _inputs(size)
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
    memory = {steps: peak_memory(args, steps) for steps in args.steps}

    h, w = size
    print(
        f"DiffusionSR sampling, LR {h}x{w} -> HR {4 * h}x{4 * w}, {args.sampler}, "
        f"tiles: {args.tile or 'none'}, CPU {args.threads} threads, median of {args.repeats}"
    )
    print(f"parameters: {sum(p.numel() for p in net.parameters()) / 1e6:.2f} M")
    print("| steps | s / image | s / step | peak RSS (MiB) | peak - RSS before sampling (MiB) |")
    print("|---:|---:|---:|---:|---:|")
    for steps in args.steps:
        median = statistics.median(sampling[steps])
        peak, before = memory[steps]["peak_MiB"], memory[steps]["before_MiB"]
        print(
            f"| {steps} | {median:.2f} | {median / steps:.3f} | {peak:.0f} | {peak - before:.0f} |"
        )
    print()
    print("| SVKR depth estimator | T=1 (one iteration) s | T=3 s | per extra iteration s |")
    print("|---|---:|---:|---:|")
    for name in ("ground truth", "SMPDepthNet"):
        one = statistics.median(svkr_times[(name, 1)])
        three = statistics.median(svkr_times[(name, 3)])
        print(f"| {name} | {one:.3f} | {three:.3f} | {(three - one) / 2:.3f} |")


if __name__ == "__main__":
    main()
