"""Training runs built from configs: one job (``svblur-train`` / ``svblur-eval``), and
many (``svblur-compare``'s comparison of models over seeds).

- :mod:`~svblur.experiments.training`: one job: :func:`build`, :func:`train`,
  :func:`evaluate`;
- :mod:`~svblur.experiments.presets`: a preset (``conf/compare/<preset>.yaml``) with
  command-line ``key=value`` arguments merged in (:func:`load_preset`);
- :mod:`~svblur.experiments.overrides`: ``svblur-train`` jobs as overrides
  (:func:`hydra_value`) and their configs (:func:`compose_train_config`);
- :mod:`~svblur.experiments.runner`: every model and seed trained and tested, with the
  blind-SR stages 2 and 3 (:func:`run_comparison`);
- :mod:`~svblur.experiments.claims`: the measured :data:`METRICS` and the CMOS paper's
  orderings (:data:`CLAIMS`, :func:`claim_lines`);
- :mod:`~svblur.experiments.report`: the CSV and Markdown tables (:func:`write_tables`).

This layer may compose configs with Hydra; ``cli/`` sits above it.
"""

from svblur.experiments.claims import CLAIMS, METRICS, STAGE2_LABELS, claim_lines, summarize
from svblur.experiments.overrides import compose_train_config, hydra_value
from svblur.experiments.presets import DEFAULT_PRESET, load_preset, selected_models
from svblur.experiments.report import hardware, sr_note, write_tables
from svblur.experiments.runner import WEIGHTS_FILE, run_comparison
from svblur.experiments.training import build, evaluate, train

__all__ = [
    "CLAIMS",
    "DEFAULT_PRESET",
    "METRICS",
    "STAGE2_LABELS",
    "WEIGHTS_FILE",
    "build",
    "claim_lines",
    "compose_train_config",
    "evaluate",
    "hardware",
    "hydra_value",
    "load_preset",
    "run_comparison",
    "selected_models",
    "sr_note",
    "summarize",
    "train",
    "write_tables",
]
