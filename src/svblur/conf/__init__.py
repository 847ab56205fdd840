"""svblur's Hydra configs, shipped inside the package (``pkg://svblur.conf``).

The entry points compose ``train.yaml``, ``eval.yaml`` and ``predict.yaml`` from here;
a user project adds its own groups or overrides ours with ``--config-dir DIR`` or
``hydra.searchpath=[file://DIR]``. The repository's top-level ``conf`` is a link to
this folder, not a copy.
"""
