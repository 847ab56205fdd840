"""``svblur-compare``: train several models with one budget over several seeds; tabulate.

Checks the CMOS paper's comparative claims on the built-in data: every model of a
preset (``conf/compare/<preset>.yaml``) is trained by :func:`svblur.cli.train.train`
with the same overrides (data, steps, batch size, learning rate), once per seed, then
tested on the same test split. With the preset's ``sr`` section, each of these stage-1
models is also measured on blind SR (the paper's stages 2 and 3): per seed, RRDB-SFT is
trained on the ground-truth maps (stage 2, shared by the models of that seed), then for
every model and seed it is fine-tuned on that model's frozen estimates and tested
(stage 3). The results go to ``<out_dir>/compare_<preset>.csv`` (one row per run) and
``<out_dir>/compare_<preset>.md`` (mean +- std per model, the paper's orderings checked
against them, the exact commands, the hardware, wall times).

Examples:
    svblur-compare                              # preset=small, 2-core CPU, ~35 min
    svblur-compare preset=full                  # one GPU
    svblur-compare preset=small seeds=[0,1] out_dir=/tmp/results
    svblur-compare preset=small 'only=[manet,cmos_full]'             # a subset of models
    svblur-compare preset=small 'overrides=[trainer.max_epochs=1]'   # replaces the list
    svblur-compare preset=small 'extra=[data.batch_size=2]'          # appended, every stage
    svblur-compare preset=small sr=null                              # no blind SR

Bad input (an unknown preset, a malformed value) ends the run with one line on stderr and
status 2; ``--debug`` or ``HYDRA_FULL_ERROR=1`` shows the traceback instead. Any
``key=value`` after the preset is merged into the preset (OmegaConf dotlist, so list
items may contain ``=``). The runner, the tables and the paper's orderings are in
:mod:`svblur.experiments`.
"""

from __future__ import annotations

import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from svblur.experiments import load_preset, run_comparison

from ._common import debug_requested, ensure_tty_safe, exit_on_input_error

log = logging.getLogger("svblur")


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: ``svblur-compare [preset=NAME] [key=value ...]``."""
    ensure_tty_safe()
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s")
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return
    debug = debug_requested(args)
    args = [a for a in args if a != "--debug"]
    cfg = exit_on_input_error("svblur-compare", debug=debug)(load_preset)(args)
    command = "svblur-compare " + " ".join(shlex.quote(a) for a in args)
    rows = run_comparison(cfg, command)
    out_dir = Path(cfg.get("out_dir") or "results")
    log.info(
        "compare: %d rows (%d with blind SR); tables in %s",
        len(rows),
        sum(1 for r in rows if r.get("sr_command")),
        out_dir / f"compare_{cfg.preset}.{{md,csv}}",
    )


if __name__ == "__main__":
    main()
