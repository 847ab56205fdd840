"""Time and peak memory of ``apply_kernel_field`` against the naive full unfold, on CPU.

Usage: ``python benchmarks/kernel_field_speed.py [--runs 3] [--threads 1] [--sizes 256 1024]
[--naive auto|always|never]``

Case: an RGB image ``(1, 3, S, S)`` and a random normalized 21 x 21 kernel field
``(1, 441, S, S)``, float32, reflect padding. Methods:

- chunked: :func:`svblur.degradation.apply_kernel_field` (default ``max_chunk_bytes``);
- naive: ``F.unfold`` of the whole padded image to ``(1, 3 * 441, S * S)``, multiplied
  in place by the field and summed over the taps (MANet's ``BatchBlur_SV`` does the
  same with one more copy for the product).

Each measurement runs in its own subprocess. "peak extra memory" (MiB) is the increase of that
process's peak resident set size (``ru_maxrss``) from just before the first call to just
after the last, so it counts every allocation of the method; the inputs (the field alone
is 441 floats per pixel, 1.8 GB at 1024 x 1024) are made first and not counted. Times
are the median of ``--runs`` calls after one warm-up call on a 64 x 64 image. "max diff"
is the largest absolute difference between the two methods' outputs. With
``--naive auto`` the naive method is skipped where its unfolded tensor (computed:
``3 * 441 * S * S * 4`` bytes) would not fit in 2/3 of the machine's available memory;
its row then shows that computed size instead of a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

KERNEL = 21
CHANNELS = 3


def _inputs(size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(1, CHANNELS, size, size, generator=generator)
    field = torch.rand(1, KERNEL * KERNEL, size, size, generator=generator)
    field.div_(field.sum(dim=1, keepdim=True))  # in place: no field-sized temporary
    return image, field


def _naive(image: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
    import torch.nn.functional as F

    batch, channels, height, width = image.shape
    r = KERNEL // 2
    xpad = F.pad(image, (r, r, r, r), mode="reflect")
    patches = F.unfold(xpad, KERNEL).view(batch, channels, KERNEL * KERNEL, height, width)
    patches.mul_(field.unsqueeze(1))
    return patches.sum(dim=2)


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _worker(size: int, method: str, runs: int, threads: int, out: str) -> None:
    import numpy as np
    import torch

    from svblur.degradation.fields import apply_kernel_field

    torch.set_num_threads(threads)
    run = apply_kernel_field if method == "chunked" else _naive
    with torch.no_grad():
        run(*_inputs(64))  # warm-up: imports, allocator, thread pool
        image, field = _inputs(size)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        slack = before - _rss_mb()  # > 0: an earlier peak could hide part of this one
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            result = run(image, field)
            times.append(time.perf_counter() - start)
            if len(times) < runs:
                del result
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0 - before
    np.save(out, result.numpy())
    print(json.dumps({"seconds": statistics.median(times), "peak_mb": peak, "slack_mb": slack}))


def _measure(size: int, method: str, runs: int, threads: int, out: Path) -> dict:
    command = [sys.executable, __file__, "--worker", str(size), method]
    command += ["--runs", str(runs), "--threads", str(threads), "--out", str(out)]
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def _available_mb() -> float:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--naive", choices=["auto", "always", "never"], default="auto")
    parser.add_argument("--worker", nargs=2, metavar=("SIZE", "METHOD"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(int(args.worker[0]), args.worker[1], args.runs, args.threads, args.out)
        return
    import numpy as np
    import torch

    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, {args.threads} thread(s), "
        f"k = {KERNEL}, float32, median of {args.runs} runs, "
        f"{_available_mb() / 1024:.1f} GB available"
    )
    header = ["image", "method", "median time (s)", "peak extra memory (MiB)"]
    header += ["time naive / chunked", "memory naive / chunked", "max diff"]
    table = [header, ["---", "---"] + ["---:"] * 5]
    with tempfile.TemporaryDirectory() as scratch:
        fast_out, naive_out = Path(scratch, "fast.npy"), Path(scratch, "naive.npy")
        for size in args.sizes:
            name = f"{size}x{size} RGB"
            unfold_mb = CHANNELS * KERNEL * KERNEL * size * size * 4 / 2**20
            fast = _measure(size, "chunked", args.runs, args.threads, fast_out)
            table.append(
                [name, "chunked (apply_kernel_field)", f"{fast['seconds']:.3f}"]
                + [f"{fast['peak_mb']:.0f}", "", "", ""]
            )
            fits = unfold_mb < _available_mb() * 2 / 3
            if args.naive == "never" or (args.naive == "auto" and not fits):
                table.append(
                    [name, "naive unfold (not run)", "-"]
                    + [f">= {unfold_mb:.0f} (computed: the unfolded tensor alone)", "-"]
                    + [f">= {unfold_mb / max(fast['peak_mb'], 1.0):.0f}x", "-"]
                )
                continue
            naive = _measure(size, "naive", args.runs, args.threads, naive_out)
            diff = float(np.abs(np.load(naive_out) - np.load(fast_out)).max())
            table.append(
                [name, "naive unfold", f"{naive['seconds']:.3f}"]
                + [f"{naive['peak_mb']:.0f} (unfolded tensor: {unfold_mb:.0f})"]
                + [f"{naive['seconds'] / fast['seconds']:.1f}x"]
                + [f"{naive['peak_mb'] / max(fast['peak_mb'], 1.0):.0f}x", f"{diff:.1e}"]
            )
            for method, result in (("chunked", fast), ("naive", naive)):
                if result["slack_mb"] > 16:
                    print(
                        f"note: {name} {method}: peak may be under-counted by up to "
                        f"{result['slack_mb']:.0f} MiB (an earlier peak of the process)"
                    )
    print()
    for row in table:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
