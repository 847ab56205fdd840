"""``svblur-convert IN.pth OUT.pth``: convert a released CMOS checkpoint for svblur's CMOS."""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from svblur.models.convert import from_official_cmos, strip_prefixes


def _cmos_entries(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
    """Keep the CMOS entries of a released file; returns them and the number left out.

    Stage-3 (BlindSR) files hold the CMOS under ``cmos.`` next to the RRDB-SFT keys: when
    any key carries ``cmos.`` (after ``module.``), only those are CMOS keys.
    """
    if any(k.removeprefix("module.").startswith("cmos.") for k in state):
        kept = {k: v for k, v in state.items() if k.removeprefix("module.").startswith("cmos.")}
        return kept, len(state) - len(kept)
    return dict(state), 0


def _save_atomically(obj: object, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the converter; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="svblur-convert",
        description=(
            "Convert the CMOS authors' released checkpoint (CMOS_*.pth or BlindSR_*.pth) into "
            "a state dict for svblur.models.cmos.CMOS. Load it with "
            "CMOS(num_classes=K).load_state_dict(torch.load(OUT, weights_only=True))."
        ),
    )
    parser.add_argument("input", type=Path, help="released checkpoint (.pth, a state dict)")
    parser.add_argument("output", type=Path, help="where to write the svblur state dict")
    args = parser.parse_args(argv)

    state = torch.load(args.input, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        parser.error(f"{args.input} does not hold a state dict (got {type(state).__name__})")
    entries, skipped = _cmos_entries(state)
    converted = from_official_cmos(entries)
    _save_atomically(converted, args.output)

    num_classes = converted["output_heads.seg.classifier.weight"].shape[0]
    params = sum(
        v.numel()
        for k, v in converted.items()
        if v.is_floating_point() and not k.endswith(("running_mean", "running_var"))
    )
    prefixes = sorted({k[: len(k) - len(strip_prefixes(k))] for k in entries} - {""})
    print(f"read      {args.input} ({len(state)} entries)")
    print(f"converted {len(converted)} CMOS entries, {params:,} parameters, {num_classes} classes")
    if prefixes:
        print(f"stripped  prefixes {', '.join(repr(p) for p in prefixes)}")
    if skipped:
        print(f"left out  {skipped} non-CMOS entries (e.g. RRDB-SFT of a stage-3 file)")
    print(f"wrote     {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
