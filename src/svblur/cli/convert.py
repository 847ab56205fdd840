"""``svblur-convert IN.pth OUT.pth``: convert the CMOS authors' released checkpoints.

Three kinds of released files are recognised from their keys, and the one detected is
printed:

- ``cmos``: stage 1 (``CMOS_*.pth``) -> a state dict for ``svblur.models.CMOS``;
- ``rrdb_sft``: stage 2 (``RRDB_SFT_*.pth``) -> for ``svblur.models.RRDBSFT``;
- ``blind_sr``: stage 3 (``BlindSR_*.pth``: ``cmos.*`` + RRDB-SFT keys) -> for
  ``svblur.models.BlindSR`` (keys ``estimator.*`` and ``sr.*``). ``--part cmos`` or
  ``--part rrdb_sft`` writes only that network of a stage-3 file.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from svblur.models.convert import (
    detect_official_kind,
    from_official_blind_sr,
    from_official_cmos,
    from_official_rrdb_sft,
    strip_prefixes,
)

_LOAD_HINT = {
    "cmos": "CMOS(num_classes=K)",
    "rrdb_sft": "RRDBSFT(prior_channels=64)",
    "blind_sr": "BlindSR(CMOS(num_classes=K), RRDBSFT(prior_channels=64))",
}


def _is_cmos(key: str) -> bool:
    return key.removeprefix("module.").startswith("cmos.")


def _cmos_entries(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
    """Keep the CMOS entries of a released file; returns them and the number left out.

    Stage-3 (BlindSR) files hold the CMOS under ``cmos.`` next to the RRDB-SFT keys: when
    any key carries ``cmos.`` (after ``module.``), only those are CMOS keys.
    """
    if any(_is_cmos(k) for k in state):
        kept = {k: v for k, v in state.items() if _is_cmos(k)}
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


def _parameters(state: dict[str, torch.Tensor]) -> int:
    return sum(
        v.numel()
        for k, v in state.items()
        if v.is_floating_point() and not k.endswith(("running_mean", "running_var"))
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the converter; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="svblur-convert",
        description=(
            "Convert the CMOS authors' released checkpoint (CMOS_*.pth, RRDB_SFT_*.pth or "
            "BlindSR_*.pth; the kind is detected) into a state dict for svblur's CMOS, "
            "RRDBSFT or BlindSR. Load it with model.load_state_dict(torch.load(OUT, "
            "weights_only=True)) or svblur.models.load_weights(model, OUT)."
        ),
    )
    parser.add_argument("input", type=Path, help="released checkpoint (.pth, a state dict)")
    parser.add_argument("output", type=Path, help="where to write the svblur state dict")
    parser.add_argument(
        "--part",
        choices=("all", "cmos", "rrdb_sft"),
        default="all",
        help="of a stage-3 file, write only this network (default: all)",
    )
    args = parser.parse_args(argv)

    state = torch.load(args.input, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        parser.error(f"{args.input} does not hold a state dict (got {type(state).__name__})")
    kind = detect_official_kind(state)
    if kind is None:
        parser.error(
            f"{args.input}: no released CMOS / RRDB-SFT / BlindSR keys found (e.g. "
            f"{sorted(state)[:3]}); is it already an svblur state dict?"
        )
    skipped = 0
    if kind == "blind_sr" and args.part == "cmos":
        kind = "cmos"
    if kind == "blind_sr" and args.part == "rrdb_sft":
        state = {k: v for k, v in state.items() if not _is_cmos(k)}
        kind = "rrdb_sft"
    if kind == "cmos":
        entries, skipped = _cmos_entries(state)
        converted = from_official_cmos(entries)
    elif kind == "rrdb_sft":
        entries = state
        converted = from_official_rrdb_sft(entries)
    else:
        entries = state
        converted = from_official_blind_sr(entries)
    _save_atomically(converted, args.output)

    prefixes = sorted({k[: len(k) - len(strip_prefixes(k))] for k in entries} - {""})
    print(f"read      {args.input} ({len(state)} entries)")
    print(f"detected  {kind} ({_LOAD_HINT[kind]})")
    if kind == "cmos":
        num_classes = converted["output_heads.seg.classifier.weight"].shape[0]
        print(
            f"converted {len(converted)} CMOS entries, {_parameters(converted):,} parameters, "
            f"{num_classes} classes"
        )
    else:
        print(f"converted {len(converted)} entries, {_parameters(converted):,} parameters")
    if prefixes:
        print(f"stripped  prefixes {', '.join(repr(p) for p in prefixes)}")
    if skipped:
        print(f"left out  {skipped} non-CMOS entries (e.g. RRDB-SFT of a stage-3 file)")
    print(f"wrote     {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
