"""Cost of ArcSR next to an RRDB-SFT of about the same parameter count, on CPU.

For each LR size (default 64x64 and 180x320, x4) and network:

- parameters;
- GFLOPs of one forward pass, batch 1 (``torch.utils.flop_counter.FlopCounterMode`` on
  the meta device; FLOPs = 2 x multiply-adds). ``torchvision::deform_conv2d`` is not
  counted by FlopCounterMode, so ArcSR's deformable convolutions are added analytically
  from their shapes: per output pixel ``2 * C_out * C_in * k*k`` (the convolution) plus
  ``7 * C_in * k*k`` for the bilinear sampling (4 multiplies, 3 adds per sampled value;
  plus ``C_in * k*k`` for a DCN v2 mask). Elementwise products are not counted by
  FlopCounterMode (for a KGConv the kernel scaling is ``1 / (2 C_out)`` of its
  multiply-adds);
- forward time: ``eval()``, ``torch.inference_mode``, batch 1, median of ``--repeats``
  after ``--warmup``;
- training step: forward, L1 loss, backward and an Adam step, batch ``--batch``, median
  of ``--steps`` after ``--warmup``;
- peak memory: the growth of the process's max RSS, each of the two measurements in a
  fresh subprocess so that the peak belongs to it alone.

ArcSR is the default configuration (the paper's counts, the defaults of
:class:`svblur.models.arcsr.ArcSR`). RRDB-SFT has 64 features and the number of blocks
that brings its parameter count closest to ArcSR's (``--rrdb-blocks`` to override);
its inputs are a zero blur map and an all-zero class map at HR size. Its prior is fused
at LR size (``--rrdb-fuse hr`` for the released HR fusion, whose GIA runs on
``scale**2`` times more pixels).

Usage::

    python benchmarks/arcsr_speed.py                      # ~5-10 min on 2 cores
    python benchmarks/arcsr_speed.py --sizes 64x64 --steps 3 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

MODELS = ("arcsr", "rrdb_sft")
SCALE = 4


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def rrdb_blocks_matching_arcsr() -> int:
    """RRDB-SFT blocks (64 features) whose parameter count is closest to ArcSR's."""
    from svblur.models import RRDBSFT
    from svblur.models.arcsr import ArcSR

    with torch.device("meta"):
        target = _count(ArcSR(scale=SCALE))
        counts = {n: _count(RRDBSFT(num_blocks=n, scale=SCALE)) for n in range(1, 16)}
    return min(counts, key=lambda n: abs(counts[n] - target))


def build(name: str, args: argparse.Namespace) -> torch.nn.Module:
    from svblur.models import RRDBSFT
    from svblur.models.arcsr import ArcSR

    if name == "arcsr":
        return ArcSR(scale=SCALE)
    if name == "rrdb_sft":
        return RRDBSFT(num_blocks=args.rrdb_blocks, scale=SCALE, fuse_resolution=args.rrdb_fuse)
    raise ValueError(f"unknown model {name!r}; expected one of {MODELS}")


def inputs(name: str, batch: int, size: tuple[int, int], device: str = "cpu") -> tuple:
    h, w = size
    lr = torch.rand(batch, 3, h, w, device=device)
    if name == "rrdb_sft":
        blur = torch.zeros(batch, 1, SCALE * h, SCALE * w, device=device)
        seg = torch.zeros(batch, SCALE * h, SCALE * w, dtype=torch.long, device=device)
        return (lr, blur, seg)
    return (lr,)


def _sr(out: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
    return out["sr"] if isinstance(out, dict) else out


def deform_conv_flops(module: torch.nn.Module, x: torch.Tensor, out: torch.Tensor) -> int:
    """Analytical FLOPs of one ``DeformConv2d`` call (see the module docstring)."""
    batch, c_out, h_out, w_out = out.shape
    c_in = x.shape[1]
    taps = module.weight.shape[-2] * module.weight.shape[-1]
    per_pixel = 2 * c_out * (c_in // module.groups) * taps + 7 * c_in * taps
    return batch * h_out * w_out * per_pixel


def count_flops(name: str, size: tuple[int, int], args: argparse.Namespace) -> dict[str, float]:
    from torchvision.ops import DeformConv2d

    with torch.device("meta"):
        net = build(name, args)
        x = inputs(name, 1, size, "meta")
    deform = [0]

    def hook(module, args_, out):
        extra = args_[2] if len(args_) > 2 else None
        deform[0] += deform_conv_flops(module, args_[0], out)
        if extra is not None:  # DCN v2 modulation
            deform[0] += out.shape[0] * args_[0].shape[1] * extra.shape[1] * out[0, 0].numel()

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, DeformConv2d)]
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(*x)
    for handle in handles:
        handle.remove()
    counted = counter.get_total_flops()
    return {"gflops": (counted + deform[0]) / 1e9, "deform_gflops": deform[0] / 1e9}


def worker(name: str, kind: str, size: tuple[int, int], args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    net = build(name, args)
    times = []
    if kind == "forward":
        net.eval()
        x = inputs(name, 1, size)
        with torch.inference_mode():
            for i in range(args.warmup + args.repeats):
                start = time.perf_counter()
                net(*x)
                if i >= args.warmup:
                    times.append(time.perf_counter() - start)
    else:
        net.train()
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
        x = inputs(name, args.batch, size)
        hr = torch.rand(args.batch, 3, SCALE * size[0], SCALE * size[1])
        for i in range(args.warmup + args.steps):
            start = time.perf_counter()
            loss = F.l1_loss(_sr(net(*x)), hr)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if i >= args.warmup:
                times.append(time.perf_counter() - start)
    peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024
    return {"seconds": statistics.median(times), "peak_mb": peak_mb}


def _size(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", type=_size, default=[(64, 64), (180, 320)])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--batch", type=int, default=1, help="training batch")
    parser.add_argument("--repeats", type=int, default=3, help="timed forward passes")
    parser.add_argument("--steps", type=int, default=2, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    parser.add_argument("--rrdb-blocks", type=int, default=0, help="0: match ArcSR's params")
    parser.add_argument("--rrdb-fuse", choices=("lr", "hr"), default="lr")
    parser.add_argument("--worker", nargs=3, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        name, kind, size = args.worker
        print(json.dumps(worker(name, kind, _size(size), args)))
        return
    if not args.rrdb_blocks:
        args.rrdb_blocks = rrdb_blocks_matching_arcsr()
    threads = args.threads or torch.get_num_threads()
    print(
        f"torch {torch.__version__}, CPU, {threads} threads; x{SCALE}; training batch "
        f"{args.batch}; RRDB-SFT: 64 features, {args.rrdb_blocks} blocks, prior fused at "
        f"{args.rrdb_fuse.upper()}",
        flush=True,
    )
    rows = []
    for size in args.sizes:
        for name in args.models:
            with torch.device("meta"):
                params = _count(build(name, args))
            row = {"model": name, "size": size, "params_m": params / 1e6}
            row |= count_flops(name, size, args)
            for kind in ("forward", "train"):
                cmd = [sys.executable, __file__, "--worker", name, kind, f"{size[0]}x{size[1]}"]
                for key in ("batch", "repeats", "steps", "warmup", "threads"):
                    cmd += [f"--{key}", str(getattr(args, key))]
                cmd += ["--rrdb-blocks", str(args.rrdb_blocks), "--rrdb-fuse", args.rrdb_fuse]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode != 0:
                    raise SystemExit(f"{name} {kind} {size}: failed\n{done.stderr[-2000:]}")
                result = json.loads(done.stdout.strip().splitlines()[-1])
                row[f"{kind}_s"], row[f"{kind}_mb"] = result["seconds"], result["peak_mb"]
            rows.append(row)
            print(json.dumps(row), flush=True)

    print()
    print(
        "| LR size | model | params (M) | GFLOPs (deform) | forward (s) | forward peak (MB) "
        "| train step (s) | train peak (MB) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        deform = f" ({r['deform_gflops']:.2f})" if r["deform_gflops"] else ""
        print(
            f"| {r['size'][0]}x{r['size'][1]} | {r['model']} | {r['params_m']:.2f} "
            f"| {r['gflops']:.1f}{deform} | {r['forward_s']:.3f} | {r['forward_mb']:.0f} "
            f"| {r['train_s']:.2f} | {r['train_mb']:.0f} |"
        )
    by = {(r["model"], tuple(r["size"])): r for r in rows}
    if set(args.models) == set(MODELS):
        print()
        print("| LR size | ArcSR / RRDB-SFT: GFLOPs | forward time | train time | train peak |")
        print("|---|---|---|---|---|")
        for size in args.sizes:
            a, b = by[("arcsr", size)], by[("rrdb_sft", size)]
            print(
                f"| {size[0]}x{size[1]} | {a['gflops'] / b['gflops']:.2f} "
                f"| {a['forward_s'] / b['forward_s']:.2f} | {a['train_s'] / b['train_s']:.2f} "
                f"| {a['train_mb'] / max(b['train_mb'], 1):.2f} |"
            )


if __name__ == "__main__":
    main()
