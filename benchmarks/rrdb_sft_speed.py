"""Cost and quality of RRDB-SFT with the prior fused at HR (released) or LR resolution.

Cost (always): parameters, GFLOPs per forward (``torch.utils.flop_counter.FlopCounterMode``
on the meta device, batch 1; FLOPs = 2 x multiply-adds) in total and in the prior (the
GIA), and forward latency (batch 1, eval, median of ``--repeats``) on ``--device``; on
CUDA also the peak memory.

Quality (``--train-steps N``): both variants, same seed and data, are trained for ``N``
steps on the built-in SyntheticDefocus data (ground-truth maps, L1, Adam 2e-4) and
evaluated on its validation split (PSNR-Y / SSIM-Y, BasicSR convention); bicubic
upsampling is the floor. Network size for this part: ``--train-features``,
``--train-blocks`` (the released 64 / 10 need a GPU for a meaningful run).

Usage::

    python benchmarks/rrdb_sft_speed.py [--size 120 160] [--device cpu|cuda] [--threads 2]
        [--train-steps 300 --train-features 32 --train-blocks 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode


def _inputs(size: tuple[int, int], device: str | torch.device, classes: int = 40):
    gen = torch.Generator().manual_seed(0)
    h, w = size
    lr = torch.rand(1, 3, h, w, generator=gen)
    blur = torch.rand(1, 1, 4 * h, 4 * w, generator=gen) * 5
    seg = torch.randint(0, classes, (1, 4 * h, 4 * w), generator=gen)
    return lr.to(device), blur.to(device), seg.to(device)


def cost(fuse: str, size: tuple[int, int], device: str, repeats: int) -> dict[str, float]:
    from svblur.models import RRDBSFT

    h, w = size
    with torch.device("meta"):
        net = RRDBSFT(prior_channels=64, fuse_resolution=fuse)
        meta_inputs = (
            torch.empty(1, 3, h, w),
            torch.empty(1, 1, 4 * h, 4 * w),
            torch.zeros(1, 4 * h, 4 * w, dtype=torch.long),
        )
    with FlopCounterMode(display=False) as counter:
        net(*meta_inputs)
    counts = counter.get_flop_counts()
    prior = sum(counts.get("RRDBSFT.prior", {}).values())
    torch.manual_seed(0)
    net = RRDBSFT(prior_channels=64, fuse_resolution=fuse).to(device).eval()
    inputs = _inputs(size, device)
    times = []
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        for _ in range(repeats + 1):
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            net(*inputs)
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    result = {
        "params_M": sum(p.numel() for p in net.parameters()) / 1e6,
        "gflops": counter.get_total_flops() / 1e9,
        "prior_gflops": prior / 1e9,
        "forward_s": statistics.median(times[1:]),
    }
    if device == "cuda":
        result["peak_GiB"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def quality(fuse: str, args: argparse.Namespace) -> dict[str, float]:
    from svblur.data import SyntheticDefocus
    from svblur.metrics import psnr_y, ssim_y
    from svblur.models import RRDBSFT

    common = {"hr_size": (64, 80), "num_classes": 8, "seed": 0}
    train = SyntheticDefocus(num_samples=args.train_samples, split="train", **common)
    val = SyntheticDefocus(num_samples=args.val_samples, split="val", **common)
    torch.manual_seed(0)
    net = RRDBSFT(
        num_features=args.train_features,
        num_blocks=args.train_blocks,
        growth_channels=args.train_features // 2,
        prior_channels=args.train_features,
        fuse_resolution=fuse,
        window_size=(8, 10),
    ).to(args.device)
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-4, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(args.train_steps):
        idx = torch.randint(0, len(train), (args.batch,), generator=gen).tolist()
        batch = {k: torch.stack([train[i][k] for i in idx]).to(args.device) for k in train[0]}
        loss = F.l1_loss(net(batch["lr"], batch["blur"], batch["seg"]), batch["hr"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    net.eval()
    scores: dict[str, list[float]] = {"psnr_y": [], "ssim_y": [], "bicubic_psnr_y": []}
    with torch.no_grad():
        for i in range(len(val)):
            s = {k: v[None].to(args.device) for k, v in val[i].items()}
            sr = net(s["lr"], s["blur"], s["seg"]).clamp(0, 1)
            bic = F.interpolate(s["lr"], scale_factor=4, mode="bicubic").clamp(0, 1)
            scores["psnr_y"].append(float(psnr_y(sr, s["hr"])))
            scores["ssim_y"].append(float(ssim_y(sr, s["hr"])))
            scores["bicubic_psnr_y"].append(float(psnr_y(bic, s["hr"])))
    out = {k: statistics.mean(v) for k, v in scores.items()}
    out["train_s"] = seconds
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, nargs=2, default=(120, 160), help="LR h w")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: default)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=0)
    parser.add_argument("--train-features", type=int, default=32)
    parser.add_argument("--train-blocks", type=int, default=2)
    parser.add_argument("--train-samples", type=int, default=32)
    parser.add_argument("--val-samples", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    size = (args.size[0], args.size[1])
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}")
    print(f"cost at LR {size[0]}x{size[1]} (HR x4), released sizes (64 features, 10 blocks):")
    for fuse in ("hr", "lr"):
        r = cost(fuse, size, args.device, args.repeats)
        extra = f", peak {r['peak_GiB']:.2f} GiB" if "peak_GiB" in r else ""
        print(
            f"  fuse_resolution={fuse}: {r['params_M']:.2f} M params, {r['gflops']:.1f} GFLOPs "
            f"(prior/GIA {r['prior_gflops']:.1f}), forward {r['forward_s'] * 1e3:.0f} ms{extra}"
        )
    if args.train_steps:
        print(
            f"quality after {args.train_steps} steps (batch {args.batch}, "
            f"{args.train_features} features, {args.train_blocks} blocks), SyntheticDefocus "
            f"64x80 HR, {args.val_samples} val images:"
        )
        for fuse in ("hr", "lr"):
            q = quality(fuse, args)
            print(
                f"  fuse_resolution={fuse}: PSNR-Y {q['psnr_y']:.2f} dB, SSIM-Y "
                f"{q['ssim_y']:.4f} (bicubic {q['bicubic_psnr_y']:.2f} dB), "
                f"training {q['train_s']:.0f} s"
            )


if __name__ == "__main__":
    main()
