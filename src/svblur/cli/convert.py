"""``svblur-convert IN.pth OUT.pth``: convert released checkpoints for svblur, and svblur's
ESRGAN-family networks back to BasicSR's layout.

The kind of file is recognised from its keys, and printed:

- the CMOS authors' released files: ``cmos`` (stage 1, ``CMOS_*.pth``) -> a state dict for
  ``svblur.models.CMOS``; ``rrdb_sft`` (stage 2, ``RRDB_SFT_*.pth``) -> for
  ``svblur.models.RRDBSFT``; ``blind_sr`` (stage 3, ``BlindSR_*.pth``: ``cmos.*`` +
  RRDB-SFT keys) -> for ``svblur.models.BlindSR`` (keys ``estimator.*`` and ``sr.*``).
  ``--part cmos`` or ``--part rrdb_sft`` writes only that network of a stage-3 file.
- the ESRGAN family (:data:`svblur.checkpoints.ESRGAN_KINDS`): BasicSR / Real-ESRGAN,
  ESRGAN and old-ESRGAN RRDBNets and svblur's own -> ``svblur.models.RRDBNet``;
  Real-ESRGAN's discriminator -> ``svblur.models.UNetDiscriminatorSN``; the released
  PBaSR-ESRGAN file -> its deployed generator (``combinet``, checked to be the mean of the
  branches), or with ``--branches`` both branches (``general.*``, ``blur.*``, as
  ``PBaSRTask`` names them). The file written carries svblur's record (the network and
  its sizes, read from the file), so ``svblur-predict ckpt=OUT`` runs it. Of a checkpoint
  of svblur's GAN systems, the evaluated generator is taken, or with ``--part
  discriminator`` its discriminator.
- ``--to basicsr`` writes an ESRGAN-family network in BasicSR's layout instead:
  ``{"params_ema": ...}`` for a generator (svblur's RRDBNet, PBaSR's merged export, any of
  the layouts above), ``{"params": ...}`` for the discriminator.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from svblur.checkpoints import (
    ESRGAN_KINDS,
    RELEASED_KINDS,
    ESRGANConversion,
    convert_esrgan,
    convert_released,
    detect_esrgan_kind,
    detect_official_kind,
    read_checkpoint,
    save_state_dict,
    select_network,
    to_basicsr,
)
from svblur.errors import CheckpointError, InputError
from svblur.io import atomic_path

from ._common import debug_requested, exit_on_input_error

# Keys of state dict entries that are no parameters (running statistics, spectral norm's
# power-iteration vectors).
_NOT_PARAMETERS = ("running_mean", "running_var", "weight_u", "weight_v")


def _parameters(state: Mapping[str, torch.Tensor]) -> int:
    return sum(
        v.numel()
        for k, v in state.items()
        if v.is_floating_point() and not k.endswith(_NOT_PARAMETERS)
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="svblur-convert",
        description=(
            "Convert a released checkpoint for svblur (the kind is detected): the CMOS "
            "authors' CMOS_*.pth, RRDB_SFT_*.pth or BlindSR_*.pth into a state dict for "
            "svblur's CMOS, RRDBSFT or BlindSR; an ESRGAN-family file (BasicSR / Real-ESRGAN, "
            "ESRGAN or old-ESRGAN RRDBNet, Real-ESRGAN's UNetDiscriminatorSN, the released "
            "PBaSR-ESRGAN file) into svblur's RRDBNet or UNetDiscriminatorSN with svblur's "
            "record, which svblur-predict ckpt=OUT runs. Load any of them with "
            "svblur.checkpoints.load_weights(model, OUT). --to basicsr writes svblur's "
            "RRDBNet or discriminator in BasicSR's layout instead."
        ),
    )
    parser.add_argument("input", type=Path, help="the checkpoint to convert (.pth, .ckpt)")
    parser.add_argument("output", type=Path, help="where to write the converted file")
    parser.add_argument(
        "--part",
        choices=("all", "cmos", "rrdb_sft", "discriminator"),
        default="all",
        help=(
            "of a stage-3 file, write only this network; of a checkpoint of svblur's GAN "
            "systems, 'discriminator' takes its discriminator (default: all, the generator)"
        ),
    )
    parser.add_argument(
        "--to",
        choices=("svblur", "basicsr"),
        default="svblur",
        help=(
            "svblur: svblur's names and record (default); basicsr: BasicSR's layout "
            "(params_ema for a generator, params for a discriminator), for ESRGAN-family tools"
        ),
    )
    parser.add_argument(
        "--branches",
        action="store_true",
        help=(
            "of the released PBaSR-ESRGAN file, write both branches (general.*, blur.*) "
            "instead of the deployed generator"
        ),
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    return parser


def _wrapper(checkpoint: Mapping[str, Any]) -> str | None:
    """The entry holding the tensors, as :func:`~svblur.checkpoints.read_state_dict` picks it."""
    for key in ("state_dict", "params_ema", "params", "model"):
        if isinstance(checkpoint.get(key), Mapping):
            return key
    return None


def _released_lines(
    input: Path, output: Path, state: dict[str, torch.Tensor], part: str
) -> list[str]:
    """Convert one of the CMOS authors' released files; the report lines."""
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


def _network(conversion: ESRGANConversion) -> str:
    args = ", ".join(f"{k}={v}" for k, v in conversion.config.items() if not k.startswith("_"))
    network = f"{str(conversion.config['_target_']).rpartition('.')[2]}({args})"
    return f"two branches of {network}" if conversion.network == "branches" else network


def _written(conversion: ESRGANConversion, output: Path, to: str) -> str:
    if to == "basicsr":
        key = "params" if conversion.network == "discriminator" else "params_ema"
        return f"wrote     {output} (BasicSR's layout, under {key!r})"
    if conversion.network == "discriminator":
        use = "e.g. model.anchor_discriminator_ckpt"
    elif conversion.network == "branches":
        use = "PBaSRTask's general.* and blur.*; svblur-predict runs their mean"
    else:
        use = f"svblur-predict ckpt={output} runs it; e.g. model.anchor_ckpt"
    kind = conversion.record()["kind"]
    return f"wrote     {output} (svblur checkpoint with its record, kind {kind}: {use})"


def convert_file(
    input: Path,
    output: Path,
    part: str = "all",
    to: str = "svblur",
    branches: bool = False,
) -> list[str]:
    """Convert a released or ESRGAN-family file; the result is written atomically to
    ``output``.

    Args:
        input: The file.
        output: Where to write.
        part: ``"all"``; of a stage-3 CMOS file ``"cmos"`` or ``"rrdb_sft"``; of a
            checkpoint of svblur's GAN systems ``"discriminator"``.
        to: ``"svblur"`` or ``"basicsr"`` (ESRGAN-family networks only).
        branches: Of the released PBaSR-ESRGAN file, write both branches.

    Returns:
        The report lines (what was read, detected, converted and written).

    Raises:
        CheckpointError: ``input`` is not a readable checkpoint.
        InputError: It is not a file this converter knows, an option does not apply to it,
            or its keys or shapes do not fit the detected architecture (the message names
            the file and the offending key).
    """
    checkpoint = read_checkpoint(input)
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(
            f"{input}: holds a {type(checkpoint).__name__}, expected a state dict"
        )
    network = "discriminator" if part == "discriminator" else "generator"
    state, config = select_network(checkpoint, network, str(input))
    kind = detect_esrgan_kind(state)
    if kind is None and to == "svblur" and not branches and part != "discriminator":
        if detect_official_kind(state) is None:
            raise InputError(
                f"{input}: no released CMOS / RRDB-SFT / BlindSR keys and no ESRGAN-family "
                f"keys found (e.g. {sorted(state)[:3]}); expected one of the CMOS authors' "
                f"files or: {'; '.join(ESRGAN_KINDS.values())}"
            )
        return _released_lines(input, output, state, part)
    if part in ("cmos", "rrdb_sft"):
        raise InputError(f"{input}: --part {part} selects a network of a stage-3 CMOS file")
    conversion = convert_esrgan(state, str(input), branches=branches, config=config)
    written = to_basicsr(conversion, str(input)) if to == "basicsr" else conversion.checkpoint()
    with atomic_path(output) as temp:
        torch.save(written, temp)
    wrapper = _wrapper(checkpoint)
    source = f", {wrapper!r}" if wrapper else ""
    return [
        f"read      {input} ({len(state)} entries{source})",
        f"detected  {conversion.kind} ({ESRGAN_KINDS[conversion.kind]})",
        f"network   {_network(conversion)}: {_parameters(conversion.state_dict):,} parameters",
        *(f"note      {note}" for note in conversion.notes),
        _written(conversion, output, to),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the converter; returns 0, or exits with status 2 and one line on stderr for bad
    input (``--debug``: the traceback instead)."""
    args = _parser().parse_args(argv)

    @exit_on_input_error("svblur-convert", debug=args.debug or debug_requested())
    def run() -> int:
        lines = convert_file(args.input, args.output, args.part, args.to, args.branches)
        print("\n".join(lines))
        return 0

    return run()


if __name__ == "__main__":
    raise SystemExit(main())
