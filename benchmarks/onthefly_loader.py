"""Does on-the-fly defocus keep up with training? Loader samples/s vs training samples/s.

Measures, on the same machine:

1. the loader: ``OnTheFlyDefocusDataset`` through a ``DataLoader`` with ``--workers``
   processes (rendering in the workers, ``render_on="loader"``), and with
   ``render_on="device"`` (workers only read and crop; the batch is rendered on the
   device by :func:`svblur.data.onthefly.render_batch`);
2. the training step of CMOS (forward + backward + Adam) on batches of the same size.

If the loader's samples/s exceeds the training step's, the GPU/CPU training loop is not
starved. Without ``--mat`` a synthetic RGB-D source is used (random texture on a
slanted floor with boxes, 480x640 like NYUv2).

Example::

    python benchmarks/onthefly_loader.py --workers 8 --batch-size 8 --crop 256 256
    python benchmarks/onthefly_loader.py --mat nyu_depth_v2_labeled.mat --class-map classMapping40.mat
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.utils.data import DataLoader

from svblur.data.onthefly import OnTheFlyDefocusDataset, render_batch
from svblur.data.rgbd import NYUv2RGBD, RGBDSample


class SyntheticRGBD:
    """Random RGB-D scenes (no files needed)."""

    def __init__(self, n: int = 64, size: tuple[int, int] = (480, 640)) -> None:
        self.n, self.size = n, size

    def __len__(self) -> int:
        return self.n

    def load(self, index: int) -> RGBDSample:
        rng = np.random.default_rng(index)
        h, w = self.size
        image = rng.random((h, w, 3), dtype=np.float32)
        depth = np.linspace(1500.0, 6000.0, h)[:, None] * np.ones((1, w))
        for _ in range(3):
            top, left = rng.integers(0, h // 2), rng.integers(0, w // 2)
            depth[top : top + h // 4, left : left + w // 4] = rng.uniform(800, 3000)
        seg = rng.integers(0, 40, (h, w)).astype(np.int64)
        return RGBDSample(image, depth, seg)


def loader_rate(dataset, workers: int, batch_size: int, batches: int, device: str) -> float:
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        drop_last=True,
    )
    iterator = iter(loader)
    next(iterator)  # worker start-up is not part of the steady state
    start = time.perf_counter()
    seen = 0
    for _ in range(batches):
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            batch = next(iterator)
        if "camera" in batch:
            batch = render_batch({k: v.to(device) for k, v in batch.items()}, dataset.max_coc, 4)
            if device == "cuda":
                torch.cuda.synchronize()
        seen += batch["hr"].shape[0]
    return seen / (time.perf_counter() - start)


def train_rate(batch_size: int, crop: tuple[int, int], steps: int, device: str) -> float:
    from svblur.models import CMOS
    from svblur.systems.losses import BlurSemanticsLoss

    net = CMOS(num_classes=40, pretrained=False).to(device)
    optimizer = torch.optim.Adam(net.parameters(), 1e-4)
    criterion = BlurSemanticsLoss()
    h, w = crop
    batch = {
        "lr": torch.rand(batch_size, 3, h // 4, w // 4, device=device),
        "blur": torch.rand(batch_size, 1, h, w, device=device) * 5,
        "seg": torch.randint(0, 40, (batch_size, h, w), device=device),
    }

    def step() -> None:
        loss = criterion(net(batch["lr"]), batch)["total"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mat", default=None, help="nyu_depth_v2_labeled.mat (default: synthetic)")
    parser.add_argument("--class-map", default=None)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", type=int, nargs=2, default=[256, 256])
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    source = NYUv2RGBD(args.mat, args.class_map, "train") if args.mat else SyntheticRGBD()
    crop = tuple(args.crop)
    print(f"device={args.device} workers={args.workers} batch={args.batch_size} crop={crop}")
    for render_on in ("loader", "device"):
        dataset = OnTheFlyDefocusDataset(source, crop, render_on=render_on)
        rate = loader_rate(dataset, args.workers, args.batch_size, args.batches, args.device)
        print(f"loader, render_on={render_on:6s}: {rate:8.1f} samples/s")
    rate = train_rate(args.batch_size, crop, args.steps, args.device)
    print(f"CMOS training step          : {rate:8.1f} samples/s")


if __name__ == "__main__":
    main()
