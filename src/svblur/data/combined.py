"""Two data modules trained on together: every training batch holds a batch of each.

PBaSR trains its general branch on general data and its blur branch on partially blurred
data, half of each batch each (:class:`~svblur.systems.PBaSRTask`). Validation uses the
``eval_on`` module (the blur data: their ``blur_mask`` splits the metrics into blurred and
sharp regions); testing uses the test splits of the ``test_on`` modules, each a test group
of its own (the paper reports the general test set and ReBlurSR's defocus and motion sets
apart).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader

from svblur.data.mixins import ResumableDataMixin

__all__ = ["CombinedDataModule"]

#: The two modules, in the order of their test groups.
MODULE_NAMES: tuple[str, ...] = ("general", "blur")


class CombinedDataModule(ResumableDataMixin, L.LightningDataModule):
    """Training batches ``{"general": batch, "blur": batch}`` from two data modules.

    The two training loaders advance together (Lightning's :class:`CombinedLoader`,
    ``min_size``: an epoch ends with the shorter one), so every optimizer step sees one
    batch of each. A checkpoint's data position (epoch, batches done) is handed to both
    modules, so a resumed run continues both orders exactly.

    Validation uses the ``eval_on`` module's validation split. Testing uses the test splits
    of the ``test_on`` modules as separate test groups (:attr:`test_group_names`, one test
    loader each; the general module's first): a module without test groups of its own is one group
    named after it (``general``, ``blur``); a module with test groups (ReBlurSR: one per
    blur type) gives those, under their own names (``defocus``, ``motion``). The systems
    log each group as ``test/<group>/...`` and their mean as ``test/...``.

    Args:
        general: The general data module.
        blur: The blur data module (with ``blur_mask``).
        eval_on: ``"blur"`` or ``"general"``: whose validation split is used.
        test_on: The modules whose test splits are tested, among ``"general"`` and
            ``"blur"`` (``None``: both).
        **settings: Values the Hydra configs interpolate into the two modules and the model
            (``num_classes``, ``scale``); kept in :attr:`settings` only.

    Raises:
        ValueError: An unknown ``eval_on`` / ``test_on`` name, or two test groups of the
            same name.
    """

    def __init__(
        self,
        general: L.LightningDataModule,
        blur: L.LightningDataModule,
        eval_on: str = "blur",
        test_on: Sequence[str] | None = None,
        **settings: Any,
    ) -> None:
        super().__init__()
        self.settings = settings
        if eval_on not in MODULE_NAMES:
            raise ValueError(f"eval_on must be 'blur' or 'general', got {eval_on!r}")
        test_on = list(MODULE_NAMES if test_on is None else test_on)
        unknown = [name for name in test_on if name not in MODULE_NAMES]
        if unknown or not test_on or len(set(test_on)) != len(test_on):
            raise ValueError(
                f"test_on must name 'general' and/or 'blur' once each, got {test_on!r}"
            )
        self.modules = {"general": general, "blur": blur}
        self.eval_on = eval_on
        self.test_on = [name for name in MODULE_NAMES if name in test_on]
        self._check_test_groups()  # now, not hours later when testing starts

    @property
    def test_group_names(self) -> list[str]:
        """The test groups: per module of ``test_on``, its own groups or its name."""
        return self._check_test_groups()

    def _check_test_groups(self) -> list[str]:
        names = [
            group
            for module in self.test_on
            for group in getattr(self.modules[module], "test_group_names", None) or [module]
        ]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(
                f"the test groups {names} of the modules {self.test_on} repeat {repeated}: "
                "test one module (test_on) or give the modules distinct group names"
            )
        return names

    def setup(self, stage: str | None = None) -> None:
        for module in self.modules.values():
            module.trainer = self.trainer
            module.setup(stage)

    def train_dataloader(self) -> CombinedLoader:
        loaders = {name: m.train_dataloader() for name, m in self.modules.items()}
        return CombinedLoader(loaders, mode="min_size")

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        return self.modules[self.eval_on].val_dataloader()

    def test_dataloader(self) -> list[DataLoader]:
        """One loader per name of :attr:`test_group_names`, in that order."""
        loaders: list[DataLoader] = []
        for name in self.test_on:
            made = self.modules[name].test_dataloader()
            loaders += list(made) if isinstance(made, (list, tuple)) else [made]
        return loaders

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        for module in self.modules.values():
            loader = getattr(module, "load_state_dict", None)
            if loader is not None:
                loader(state_dict)
