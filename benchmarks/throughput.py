"""Training throughput, inference latency and peak memory of svblur's networks.

One line of JSON per (model, device, precision) plus a markdown table, so that runs can be
compared over time (``--json results.jsonl`` appends the lines to a file). Each
measurement runs in a fresh subprocess, so that peak memory (max RSS on CPU,
``torch.cuda.max_memory_allocated`` on CUDA) belongs to that configuration only.

- inference: batch 1, ``eval()``, ``torch.inference_mode``, median over ``--repeats``;
- training: batch ``--batch`` (default 2), forward + loss + backward + Adam step, median
  step time over ``--steps``, reported as images/s;
- models: ``cmos`` (CMOS, 40 classes), ``rrdb_sft`` (released RRDB-SFT, prior fused at HR),
  ``rrdb_sft_lr`` (the cheaper fusion at LR), ``blind_sr`` (frozen CMOS + RRDB-SFT).

Usage::

    python benchmarks/throughput.py                            # CPU (+ CUDA when present)
    python benchmarks/throughput.py --models cmos --precisions fp32 bf16 --steps 5
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

from svblur.experiments.report import cpu_name

MODELS = ("cmos", "rrdb_sft", "rrdb_sft_lr", "blind_sr")


def build(name: str) -> torch.nn.Module:
    from svblur.models import CMOS, RRDBSFT
    from svblur.models.blind_sr import BlindSR

    if name == "cmos":
        return CMOS(num_classes=40)
    if name == "rrdb_sft":
        return RRDBSFT()
    if name == "rrdb_sft_lr":
        return RRDBSFT(fuse_resolution="lr")
    if name == "blind_sr":
        return BlindSR(CMOS(num_classes=40), RRDBSFT())
    raise ValueError(f"unknown model {name!r}; expected one of {MODELS}")


def inputs(name: str, batch: int, size: tuple[int, int], device: str) -> tuple:
    h, w = size
    lr = torch.rand(batch, 3, h, w, device=device)
    if name.startswith("rrdb_sft"):
        blur = torch.rand(batch, 1, 4 * h, 4 * w, device=device) * 5
        seg = torch.randint(0, 40, (batch, 4 * h, 4 * w), device=device)
        return (lr, blur, seg)
    return (lr,)


def loss_of(name: str, out, batch: int, size: tuple[int, int], device: str) -> torch.Tensor:
    if name == "cmos":
        h, w = 4 * size[0], 4 * size[1]
        seg = torch.randint(0, 40, (batch, h, w), device=device)
        total = F.l1_loss(out["blur"].float(), torch.zeros_like(out["blur"], dtype=torch.float))
        total = total + F.cross_entropy(out["seg"].float(), seg)
        total = total + 0.5 * F.l1_loss(out["aux_blur"].float(), out["aux_blur"].detach().float())
        return total + 0.5 * F.cross_entropy(out["aux_seg"].float(), seg)
    sr = out["sr"] if isinstance(out, dict) else out
    return F.l1_loss(sr.float(), torch.zeros_like(sr, dtype=torch.float))


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def worker(name: str, device: str, precision: str, args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    size = tuple(args.size)
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    model = build(name).to(device)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)

    def autocast():
        return torch.autocast(device, dtype=dtype, enabled=dtype is not None)

    # Inference latency, batch 1.
    model.eval()
    x = inputs(name, 1, size, device)
    times = []
    with torch.inference_mode():
        for i in range(args.warmup + args.repeats):
            _sync(device)
            t = time.perf_counter()
            with autocast():
                model(*x)
            _sync(device)
            if i >= args.warmup:
                times.append(time.perf_counter() - t)
    latency = statistics.median(times)

    # Training step time.
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(trainable, lr=1e-4)
    x = inputs(name, args.batch, size, device)
    steps = []
    for i in range(1 + args.steps):
        _sync(device)
        t = time.perf_counter()
        with autocast():
            out = model(*x)
        loss = loss_of(name, out, args.batch, size, device)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        if i >= 1:
            steps.append(time.perf_counter() - t)
    step = statistics.median(steps)
    if device == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024
    return {
        "model": name,
        "device": torch.cuda.get_device_name() if device == "cuda" else cpu_name(),
        "threads": torch.get_num_threads(),
        "precision": precision,
        "lr_size": list(size),
        "params_m": round(params / 1e6, 3),
        "latency_s": round(latency, 4),
        "train_batch": args.batch,
        "train_step_s": round(step, 4),
        "train_images_per_s": round(args.batch / step, 3),
        "peak_mb": round(peak_mb, 1),
        "torch": torch.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu (+ cuda)")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--size", nargs=2, type=int, default=[120, 160], metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    parser.add_argument("--json", default=None, help="append JSON lines to this file")
    parser.add_argument("--worker", nargs=3, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(worker(*args.worker, args)))
        return
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    rows = []
    for device in devices:
        for precision in args.precisions:
            for name in args.models:
                cmd = [sys.executable, __file__, "--worker", name, device, precision]
                for key in ("size",):
                    cmd += [f"--{key}", *map(str, getattr(args, key))]
                for key in ("batch", "steps", "repeats", "warmup", "threads"):
                    cmd += [f"--{key}", str(getattr(args, key))]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode != 0:
                    print(f"{name} {device} {precision}: failed\n{done.stderr[-2000:]}")
                    continue
                row = json.loads(done.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(json.dumps(row), flush=True)
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(json.dumps(row) + "\n")
    print()
    print(
        "| model | device | precision | params (M) | inference (s, batch 1) "
        "| train (images/s) | peak memory (MB) |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['device']} ({r['threads']} threads) | {r['precision']} "
            f"| {r['params_m']} | {r['latency_s']} | {r['train_images_per_s']} | {r['peak_mb']} |"
        )


if __name__ == "__main__":
    main()
