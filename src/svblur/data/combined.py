"""Two data modules trained on together: every training batch holds a batch of each.

PBaSR trains its general branch on general data and its blur branch on partially blurred
data, half of each batch each (:class:`~svblur.systems.PBaSRTask`). Validation and testing
use the ``eval_on`` module (the blur data: their ``blur_mask`` splits the metrics into
blurred and sharp regions).
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader

from svblur.data.mixins import ResumableDataMixin

__all__ = ["CombinedDataModule"]


class CombinedDataModule(ResumableDataMixin, L.LightningDataModule):
    """Training batches ``{"general": batch, "blur": batch}`` from two data modules.

    The two training loaders advance together (Lightning's :class:`CombinedLoader`,
    ``min_size``: an epoch ends with the shorter one), so every optimizer step sees one
    batch of each. A checkpoint's data position (epoch, batches done) is handed to both
    modules, so a resumed run continues both orders exactly.

    Args:
        general: The general data module.
        blur: The blur data module (with ``blur_mask``).
        eval_on: ``"blur"`` or ``"general"``: whose validation and test splits are used.
        **settings: Values the Hydra configs interpolate into the two modules and the model
            (``num_classes``, ``scale``); kept in :attr:`settings` only.
    """

    def __init__(
        self,
        general: L.LightningDataModule,
        blur: L.LightningDataModule,
        eval_on: str = "blur",
        **settings: Any,
    ) -> None:
        super().__init__()
        self.settings = settings
        if eval_on not in ("blur", "general"):
            raise ValueError(f"eval_on must be 'blur' or 'general', got {eval_on!r}")
        self.modules = {"general": general, "blur": blur}
        self.eval_on = eval_on

    @property
    def test_group_names(self) -> list[str]:
        return list(getattr(self.modules[self.eval_on], "test_group_names", None) or [])

    def setup(self, stage: str | None = None) -> None:
        for module in self.modules.values():
            module.trainer = self.trainer
            module.setup(stage)

    def train_dataloader(self) -> CombinedLoader:
        loaders = {name: m.train_dataloader() for name, m in self.modules.items()}
        return CombinedLoader(loaders, mode="min_size")

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        return self.modules[self.eval_on].val_dataloader()

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        return self.modules[self.eval_on].test_dataloader()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        for module in self.modules.values():
            loader = getattr(module, "load_state_dict", None)
            if loader is not None:
                loader(state_dict)
