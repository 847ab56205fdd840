"""Speed and peak memory of the layered defocus renderer vs the per-layer reference.

Usage: ``python benchmarks/defocus_speed.py [--runs 3] [--threads 1 2] [--processes 2]
[--skip-reference]``

Cases: a synthetic 480x640 scene (NYUv2 size) and 1024x436 (the real Sintel
``market_2`` sample when ``../shared/data/rgbd`` or ``$SVBLUR_RGBD_DIR`` exists,
else a synthetic depth with about 270 layers). Each measurement runs in its own
subprocess; "peak MB" is the increase of that process's peak resident set size
(``ru_maxrss``) from just before the render to just after it, so it counts
NumPy, SciPy and torch CPU allocations alike (the input data are loaded first and
not counted). Times are the median of ``--runs`` renders (the reference: 1 run),
as wall-clock and as CPU time of the process (``time.process_time``; on a busy
shared machine the wall-clock time also counts waiting for a core). "max diff" is
the largest absolute difference between the two engines' images, in grey levels
(x 255). The fast engine runs once per ``--threads`` value (its ``threads``
argument: 1 = everything on one thread; more = layers planned ahead by worker
threads); the images must be identical. "vs SYNDOF" divides the ~90 s that
SYNDOF's MATLAB generator needs under GNU Octave for the 1024x436 Sintel image
(the figure the project was given; not measured by this script) by the fast time.
``--processes P`` also starts P one-thread renders at the same moment in P processes
(how ``svblur-make-dataset`` and DataLoader workers render): "per image" is a
render's median time divided by P, the throughput of the whole machine.
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

import numpy as np

FOCAL_MM = 70.0


def _rgbd_dir() -> Path:
    env = os.environ.get("SVBLUR_RGBD_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data" / "rgbd"


def _synthetic(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.random((height, width, 3))
    yy, xx = np.mgrid[:height, :width].astype(np.float64)
    depth = 1500.0 + 20000.0 * (1.0 - yy / height) ** 2 + 300.0 * np.sin(xx / 37.0)
    for _ in range(12):  # objects in front
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(20, 80)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        depth[disc] = rng.uniform(800.0, 6000.0) + 3.0 * (yy[disc] - cy)
    return image, np.round(depth)


def _case(name: str) -> tuple[np.ndarray, np.ndarray, str]:
    if name == "480x640":
        image, depth = _synthetic(480, 640)
        return image, depth, "synthetic"
    root = _rgbd_dir() / "sintel_market_2"
    if root.is_dir():
        from svblur.data.rgbd import read_sintel_depth
        from svblur.degradation import fill_invalid_depth
        from svblur.io import read_image

        depth = np.asarray(
            fill_invalid_depth(read_sintel_depth(root / "depth.dpt"), max_depth=1000.0)
        )
        return read_image(root / "image.png"), depth.astype(np.float64) * 1000.0, "Sintel market_2"
    image, depth = _synthetic(436, 1024)
    return image, depth, "synthetic"


#: Seconds of SYNDOF's MATLAB code under GNU Octave for the 1024x436 Sintel image.
SYNDOF_OCTAVE_SECONDS = 90.0


def _worker(
    name: str, engine: str, runs: int, out: str | None, threads: int, start_at: float | None
) -> None:
    from svblur.degradation import render_defocus
    from svblur.degradation.defocus import decompose_layers
    from svblur.degradation.reference import render_defocus_reference

    image, depth, source = _case(name)
    focus = float(np.quantile(depth, 0.5))
    layers = len(decompose_layers(depth, depth.shape[1], FOCAL_MM, focus).coc)
    # Warm-up on a small scene with hole fills: imports and loads the compiled
    # fill set-up (a one-off per process, kept out of the per-image peak memory).
    yy, xx = np.mgrid[:64, :64]
    small_depth = np.where((yy - 32) ** 2 + (xx - 32) ** 2 < 200, 1000.0, 5000.0)
    render_defocus(image[:64, :64], small_depth, FOCAL_MM, 5000.0)
    if start_at is not None:  # several workers start rendering together
        time.sleep(max(0.0, start_at - time.time()))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, cpu_times = [], []
    for _ in range(runs if engine == "fast" else 1):
        start, cpu_start = time.perf_counter(), time.process_time()
        if engine == "fast":
            blurred, _ = render_defocus(image, depth, FOCAL_MM, focus, threads=threads)
        else:
            blurred, _ = render_defocus_reference(image, depth, FOCAL_MM, focus)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024.0
    if out:
        np.save(out, np.asarray(blurred, dtype=np.float64))
    print(
        json.dumps(
            {
                "seconds": statistics.median(times),
                "cpu_seconds": statistics.median(cpu_times),
                "peak_mb": peak,
                "layers": layers,
                "source": source,
            }
        )
    )


def _command(name: str, engine: str, runs: int, out: Path, threads: int) -> list[str]:
    return [
        sys.executable,
        __file__,
        "--worker",
        name,
        engine,
        "--runs",
        str(runs),
        "--out",
        str(out),
        "--threads",
        str(threads),
    ]


def _measure(name: str, engine: str, runs: int, out: Path, threads: int = 1) -> dict:
    result = subprocess.run(
        _command(name, engine, runs, out, threads), check=True, capture_output=True, text=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def _measure_parallel(name: str, runs: int, scratch: str, processes: int) -> dict:
    """``processes`` one-thread renderers at once (as in svblur-make-dataset's workers)."""
    start_at = time.time() + 20.0  # after every worker has loaded its data
    workers = [
        subprocess.Popen(
            [
                *_command(name, "fast", runs, Path(scratch, f"par{i}.npy"), 1),
                "--start-at",
                str(start_at),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(processes)
    ]
    results = []
    for worker in workers:
        stdout, _ = worker.communicate()
        if worker.returncode != 0:
            raise RuntimeError(f"benchmark worker failed with exit code {worker.returncode}")
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    seconds = statistics.median(r["seconds"] for r in results)
    return {
        "seconds": seconds,
        "per_image": seconds / processes,
        "peak_mb": max(r["peak_mb"] for r in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        help="thread counts of the fast engine (default: 1 and torch.get_num_threads())",
    )
    parser.add_argument(
        "--processes",
        type=int,
        help="also time this many one-thread renders in parallel processes, the data-set "
        "building mode (default: the number of CPUs, at most 4; 0: skip)",
    )
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--worker", nargs=2, metavar=("CASE", "ENGINE"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(*args.worker, args.runs, args.out, (args.threads or [1])[0], args.start_at)
        return
    import torch

    threads = args.threads or sorted({1, torch.get_num_threads()})
    processes = min(os.cpu_count() or 1, 4) if args.processes is None else args.processes
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, fast engine threads {threads}")
    with tempfile.TemporaryDirectory() as scratch:
        for name in ("480x640", "1024x436"):
            ref = None
            if not args.skip_reference:
                ref_out = Path(scratch, "reference.npy")
                ref = _measure(name, "reference", 1, ref_out)
                print(
                    f"{name} ({ref['source']}, {ref['layers']} layers): per-layer reference "
                    f"{ref['seconds']:.2f} s (CPU {ref['cpu_seconds']:.2f} s), "
                    f"peak +{ref['peak_mb']:.0f} MB",
                    flush=True,
                )
            first = None
            for count in threads:
                fast_out = Path(scratch, f"fast{count}.npy")
                fast = _measure(name, "fast", args.runs, fast_out, count)
                line = (
                    f"{name} ({fast['source']}, {fast['layers']} layers): fast, {count} "
                    f"thread{'s' if count > 1 else ''}: {fast['seconds']:.3f} s "
                    f"(CPU {fast['cpu_seconds']:.3f} s), peak +{fast['peak_mb']:.0f} MB"
                )
                if first is None:
                    first = np.load(fast_out)
                elif not np.array_equal(np.load(fast_out), first):
                    line += " | IMAGE DIFFERS FROM THE 1-THREAD RUN"
                if ref is not None:
                    diff = np.abs(np.load(fast_out) - np.load(ref_out)).max() * 255
                    line += (
                        f" | speed-up x{ref['seconds'] / fast['seconds']:.1f} "
                        f"(CPU x{ref['cpu_seconds'] / fast['cpu_seconds']:.1f})"
                        f" | max diff {diff:.5f} grey levels"
                    )
                if name == "1024x436":
                    line += f" | vs SYNDOF (Octave, ~90 s) x{SYNDOF_OCTAVE_SECONDS / fast['seconds']:.0f}"
                print(line, flush=True)
            if processes > 1:
                par = _measure_parallel(name, args.runs, scratch, processes)
                line = (
                    f"{name}: {processes} processes of 1 thread at once: {par['seconds']:.3f} s "
                    f"per render, {par['per_image']:.3f} s per image, peak +{par['peak_mb']:.0f} MB "
                    "per process"
                )
                if name == "1024x436":
                    line += f" | vs SYNDOF (Octave, ~90 s) x{SYNDOF_OCTAVE_SECONDS / par['per_image']:.0f}"
                print(line, flush=True)


if __name__ == "__main__":
    main()
