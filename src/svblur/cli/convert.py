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
from collections.abc import Sequence
from pathlib import Path

import torch

from svblur.checkpoints import (
    RELEASED_KINDS,
    convert_released,
    read_state_dict,
    save_state_dict,
)
from svblur.errors import InputError

from ._common import debug_requested, exit_on_input_error


def _parameters(state: dict[str, torch.Tensor]) -> int:
    return sum(
        v.numel()
        for k, v in state.items()
        if v.is_floating_point() and not k.endswith(("running_mean", "running_var"))
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="svblur-convert",
        description=(
            "Convert the CMOS authors' released checkpoint (CMOS_*.pth, RRDB_SFT_*.pth or "
            "BlindSR_*.pth; the kind is detected) into a state dict for svblur's CMOS, "
            "RRDBSFT or BlindSR. Load it with model.load_state_dict(torch.load(OUT, "
            "weights_only=True)) or svblur.checkpoints.load_weights(model, OUT)."
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
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    return parser


def convert_file(input: Path, output: Path, part: str = "all") -> list[str]:
    """Convert a released file into an svblur state dict written atomically to ``output``.

    Returns:
        The report lines (what was read, detected, converted and written).

    Raises:
        CheckpointError: ``input`` is not a readable checkpoint.
        InputError: It is not a released file this converter knows, or its keys or shapes
            do not fit the detected architecture (the message names the offending key).
    """
    state = read_state_dict(input)
    try:
        result = convert_released(state, part)
    except (KeyError, ValueError) as error:  # KeyError quotes its message; unwrap it
        reason = error.args[0] if isinstance(error, KeyError) and error.args else error
        raise InputError(f"{input}: {reason}") from error
    save_state_dict(result.state_dict, output)
    lines = [
        f"read      {input} ({len(state)} entries)",
        f"detected  {result.detected} ({RELEASED_KINDS[result.detected]})",
    ]
    converted = result.state_dict
    if result.kind == "cmos":
        num_classes = converted["output_heads.seg.classifier.weight"].shape[0]
        lines.append(
            f"converted {len(converted)} CMOS entries, {_parameters(converted):,} parameters, "
            f"{num_classes} classes"
        )
    else:
        lines.append(f"converted {len(converted)} entries, {_parameters(converted):,} parameters")
    if result.prefixes:
        lines.append(f"stripped  prefixes {', '.join(repr(p) for p in result.prefixes)}")
    if result.left_out:
        other = "RRDB-SFT" if result.kind == "cmos" else "CMOS"
        lines.append(
            f"left out  {result.left_out} non-{RELEASED_KINDS[result.kind].split('(')[0]} "
            f"entries (the {other} of a stage-3 file)"
        )
    lines.append(f"wrote     {output} (loads into {RELEASED_KINDS[result.kind]})")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Run the converter; returns 0, or exits with status 2 and one line on stderr for bad
    input (``--debug``: the traceback instead)."""
    args = _parser().parse_args(argv)

    @exit_on_input_error("svblur-convert", debug=args.debug or debug_requested())
    def run() -> int:
        print("\n".join(convert_file(args.input, args.output, args.part)))
        return 0

    return run()


if __name__ == "__main__":
    raise SystemExit(main())
