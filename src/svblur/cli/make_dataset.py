"""``svblur-make-dataset``: build NYUv2-BSR or Cityscapes-BSR from the raw data.

Examples::

    svblur-make-dataset nyuv2 --source nyu_depth_v2_labeled.mat \\
        --class-map classMapping40.mat --out data/NYUv2-BSR --workers 8
    svblur-make-dataset cityscapes --source /data/cityscapes --out data/Cityscapes-BSR

The output is the released layout plus ``metadata.jsonl`` (every sample's camera),
``manifest.sha256`` and ``build.json``. The same seed gives byte-identical files; an
interrupted build resumes when the same command is run again.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from svblur.data.builders import build_cityscapes, build_nyuv2
from svblur.degradation.pipeline import CameraPrior

from ._common import debug_requested

__all__ = ["main"]


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output root (created; resumed if present)")
    parser.add_argument("--seed", type=int, default=0, help="build seed (default 0)")
    parser.add_argument(
        "--max-coc", type=float, default=29.0, help="largest circle of confusion in HR px (29)"
    )
    parser.add_argument(
        "--invariant-fraction",
        type=float,
        default=0.2,
        help="share of space-invariant images per split and test group (0.2, the paper's Table 1)",
    )
    parser.add_argument(
        "--focal-lengths",
        type=float,
        nargs="+",
        default=None,
        help="in mm (default: the camera prior's, SYNDOF's 50 70 85)",
    )
    parser.add_argument(
        "--focal-weights",
        type=float,
        nargs="+",
        default=None,
        help="their sampling weights (default: the camera prior's, SYNDOF's 0.1 0.4 0.4)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=max(1, min(8, (os.cpu_count() or 1))),
        help="parallel worker processes (default: CPU cores, at most 8)",
    )
    parser.add_argument("--limit", type=int, default=None, help="only the first N images per split")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="svblur-make-dataset",
        description="Render NYUv2-BSR / Cityscapes-BSR from raw RGB-D data in the released layout.",
    )
    commands = parser.add_subparsers(dest="dataset", required=True)
    nyu = commands.add_parser("nyuv2", help="from nyu_depth_v2_labeled.mat (HDF5, v7.3)")
    nyu.add_argument("--source", required=True, help="nyu_depth_v2_labeled.mat")
    nyu.add_argument(
        "--class-map",
        required=True,
        help="894 -> 40 class mapping: .npy/.txt/.csv of 895 ints, or classMapping40.mat",
    )
    nyu.add_argument(
        "--splits", default=None, help="official splits.mat (default: splits.mat beside --source)"
    )
    _common(nyu)
    city = commands.add_parser("cityscapes", help="from a Cityscapes root (leftImg8bit, ...)")
    city.add_argument("--source", required=True, help="Cityscapes root")
    city.add_argument("--train-split", default="train", help="Cityscapes split -> train/ (train)")
    city.add_argument("--test-split", default="val", help="Cityscapes split -> val/ groups (val)")
    city.add_argument(
        "--disparity-folder", default="disparity", help="disparity folder under the root"
    )
    _common(city)
    return parser


def camera_prior(lengths: list[float] | None, weights: list[float] | None) -> CameraPrior:
    """The camera prior with the given focal lengths / weights over its defaults."""
    default = CameraPrior()
    return CameraPrior(
        default.focal_lengths if lengths is None else tuple(lengths),
        default.focal_weights if weights is None else tuple(weights),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the build; returns 0 on success, 1 on bad input (printed to stderr)."""
    args = _parser().parse_args(argv)
    try:
        common = {
            "seed": args.seed,
            "max_coc": args.max_coc,
            "invariant_fraction": args.invariant_fraction,
            "camera": camera_prior(args.focal_lengths, args.focal_weights),
            "workers": args.workers,
            "progress": not args.no_progress,
            "limit": args.limit,
        }
        if args.dataset == "nyuv2":
            summary = build_nyuv2(
                args.source, args.class_map, args.out, splits=args.splits, **common
            )
        else:
            summary = build_cityscapes(
                args.source,
                args.out,
                train_split=args.train_split,
                test_split=args.test_split,
                disparity_folder=args.disparity_folder,
                **common,
            )
    except (ValueError, RuntimeError, OSError) as error:
        if args.debug or debug_requested():
            raise
        print(f"svblur-make-dataset: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    print(
        f"{summary.out}: {summary.built} images rendered, {summary.skipped} already done, "
        f"{summary.samples} samples in metadata.jsonl; checksums in manifest.sha256"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
