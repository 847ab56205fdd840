"""Speed and memory of svblur's CMOS at the paper's LR size (120 x 160).

Prints, per device (CPU; CUDA when present) and precision (fp32; bf16 autocast):
forward latency (batch 1, eval, median), training-step time (batch 2: forward, the paper's
loss, backward, Adam step; median) and peak memory (max RSS of a fresh process on CPU;
``torch.cuda.max_memory_allocated`` on CUDA), plus parameters and FLOPs per forward
(``torch.utils.flop_counter.FlopCounterMode``, batch 1; FLOPs = 2 x multiply-adds).

Each configuration runs in its own subprocess so that peak RSS is not polluted by the
others. ``--baseline`` adds the released-style forward of the test suite
(``tests/test_convert.py``: the authors' GIA / head code path on svblur's backbone, NCHW)
as a same-machine reference. Figures of the released implementation measured on a 2-core
CPU with torch 2.14: 1.0 s forward, 7.3 s training step, 3.6 GB peak RSS, 53 GFLOPs.

Usage::

    python benchmarks/cmos_speed.py [--size 120 160] [--threads 2] [--baseline] [--compile]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _loss(out: dict[str, torch.Tensor], blur: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
    main = F.l1_loss(out["blur"].float(), blur) + F.cross_entropy(out["seg"].float(), seg)
    aux = F.l1_loss(out["aux_blur"].float(), blur) + F.cross_entropy(out["aux_seg"].float(), seg)
    return main + 0.5 * aux


def _build(impl: str, device: str):
    from svblur.models.cmos import CMOS

    torch.manual_seed(0)
    if impl == "svblur":
        return CMOS(num_classes=40).to(device), None
    # Released-style reference: svblur's backbone (NCHW) + the test suite's reference heads.
    sys.path.insert(0, str(ROOT))
    from tests.test_convert import ref_cmos_from_features

    from svblur.checkpoints import to_official_cmos

    model = CMOS(num_classes=40, channels_last=False).to(device)
    params = to_official_cmos(model.state_dict(keep_vars=True))

    def forward(lr: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = model.backbone((lr - model.mean) / model.std)
        return ref_cmos_from_features(params, feats, training=model.training)

    return model, forward


def worker(impl: str, device: str, precision: str, size: tuple[int, int], args) -> dict:
    """Measure one configuration in this process."""
    torch.set_num_threads(args.threads) if device == "cpu" and args.threads else None
    model, forward = _build(impl, device)
    call = forward or model
    if args.compile:
        call = torch.compile(call)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16")
    gen = torch.Generator().manual_seed(0)
    lr1 = torch.rand(1, 3, *size, generator=gen).to(device)
    lr2 = torch.rand(2, 3, *size, generator=gen).to(device)
    hr = (2, 1, 4 * size[0], 4 * size[1])
    blur = torch.rand(hr, generator=gen).to(device)
    seg = torch.randint(0, 40, (2, 4 * size[0], 4 * size[1]), generator=gen).to(device)
    result: dict = {"impl": impl, "device": device, "precision": precision}

    model.eval()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    with torch.inference_mode(), autocast:
        for i in range(args.warmup + args.repeats):
            _sync(device)
            start = time.perf_counter()
            call(lr1)
            _sync(device)
            if i >= args.warmup:
                times.append(time.perf_counter() - start)
    result["forward_s"] = statistics.median(times)
    result["forward_peak_gb"] = (
        torch.cuda.max_memory_allocated() / 1e9
        if device == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    )

    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.99))
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(1 + args.train_repeats):
        _sync(device)
        start = time.perf_counter()
        with autocast:
            out = call(lr2)
        loss = _loss(out, blur, seg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _sync(device)
        if i >= 1:
            times.append(time.perf_counter() - start)
        del out, loss
    result["train_step_s"] = statistics.median(times)
    result["peak_gb"] = (
        torch.cuda.max_memory_allocated() / 1e9
        if device == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    )
    return result


def count_flops(size: tuple[int, int]) -> tuple[int, float, float]:
    """Parameters and forward GFLOPs (batch 1): default and with the explicit affinity."""
    from torch.utils.flop_counter import FlopCounterMode

    from svblur.models.cmos import CMOS

    model = CMOS(num_classes=40).eval()
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lr = torch.rand(1, 3, *size)
    flops = []
    for materialize in (False, True):
        for module in model.modules():
            if hasattr(module, "materialize_affinity"):
                module.materialize_affinity = materialize
        counter = FlopCounterMode(display=False)
        with torch.inference_mode(), counter:
            model(lr)
        flops.append(counter.get_total_flops() / 1e9)
    return params, flops[0], flops[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=(120, 160), metavar=("H", "W"))
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--train-repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu (+ cuda)")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--baseline", action="store_true", help="also time the released-style path")
    parser.add_argument("--compile", action="store_true", help="torch.compile the forward")
    parser.add_argument("--worker", nargs=3, metavar=("IMPL", "DEVICE", "PRECISION"))
    args = parser.parse_args(argv)
    size = tuple(args.size)

    if args.worker:
        print(json.dumps(worker(*args.worker, size, args)))
        return

    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    params, gflops, gflops_explicit = count_flops(size)
    print(f"CMOS (40 classes) at LR {size[0]}x{size[1]}, torch {torch.__version__}")
    print(f"parameters: {params:,}")
    print(
        f"forward GFLOPs (batch 1): {gflops:.2f} "
        f"(with the explicit P x P affinity as released: {gflops_explicit:.2f})"
    )
    if "cpu" in devices:
        print(f"CPU threads: {args.threads or torch.get_num_threads()}")
    print()
    header = (
        f"{'impl':<10}{'device':<8}{'precision':<10}{'forward (s)':>12}"
        f"{'train step (s)':>16}{'peak fwd (GB)':>15}{'peak train (GB)':>17}"
    )
    print(header)
    print("-" * len(header))
    impls = ["svblur"] + (["released"] if args.baseline else [])
    passthrough = [
        "--size", *map(str, size), "--threads", str(args.threads), "--repeats", str(args.repeats),
        "--train-repeats", str(args.train_repeats), "--warmup", str(args.warmup),
    ]  # fmt: skip
    if args.compile:
        passthrough.append("--compile")
    for impl in impls:
        for device in devices:
            for precision in args.precisions:
                cmd = [sys.executable, __file__, "--worker", impl, device, precision, *passthrough]
                proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
                if proc.returncode:
                    print(f"{impl:<10}{device:<8}{precision:<10} failed: {proc.stderr[-300:]}")
                    continue
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                print(
                    f"{impl:<10}{device:<8}{precision:<10}{r['forward_s']:>12.3f}"
                    f"{r['train_step_s']:>16.2f}{r['forward_peak_gb']:>15.2f}{r['peak_gb']:>17.2f}"
                )
    print()
    print("peak = max RSS of the process (CPU) / torch.cuda.max_memory_allocated (CUDA)")


if __name__ == "__main__":
    main()
