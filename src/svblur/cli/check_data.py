"""``svblur-check-data``: check a released NYUv2-BSR / Cityscapes-BSR tree before training.

Example::

    svblur-check-data /data/NYUv2-BSR --dataset nyuv2 --decode
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from svblur.data.bsr import BSR_DATASETS, BSRDataError, validate_bsr_root

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="svblur-check-data",
        description=(
            "Check the released layout <root>/train/{GT,LRx4,blur,semseg}, <root>/val/{GT,semseg}, "
            "<root>/val/Group{1..5}/{LRx4,blur}: folders, counts, names, sizes, readable images."
        ),
    )
    parser.add_argument("root", help="data root (the folder holding train/ and val/)")
    parser.add_argument("--dataset", choices=sorted(BSR_DATASETS), default="nyuv2")
    parser.add_argument("--scale", type=int, default=4, help="LR factor (folder LRx<scale>)")
    parser.add_argument(
        "--decode", action="store_true", help="fully decode every image and check label values"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    parser.add_argument(
        "--checksums",
        action="store_true",
        help="also re-hash every file listed in ROOT/manifest.sha256 (trees built by svblur-make-dataset)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check; prints the sample counts and returns 0, or prints the problems and returns 1."""
    args = _parser().parse_args(argv)
    try:
        counts = validate_bsr_root(args.root, args.dataset, scale=args.scale, decode=args.decode)
    except BSRDataError as error:
        if args.debug:
            raise
        print(f"svblur-check-data: {error}", file=sys.stderr)
        return 1
    if args.checksums:
        from svblur.data.builders import verify_manifest

        problems = verify_manifest(args.root)
        if problems:
            print("\n".join(["checksum check failed:", *problems]), file=sys.stderr)
            return 1
    title = BSR_DATASETS[args.dataset].title
    print(f"{title} at {args.root} is valid:")
    for split, count in counts.items():
        print(f"  {split}: {count} samples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
