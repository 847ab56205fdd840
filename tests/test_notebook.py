"""notebooks/quickstart.ipynb executes top to bottom on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from svblur.checkpoints import RECORD_KEY, network_record
from svblur.models import CMOS

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


def _tiny_cmos_checkpoint(path: Path) -> Path:
    """A checkpoint as svblur-train writes it (network record included) of a tiny CMOS."""
    config = {
        "_target_": "svblur.models.CMOS",
        "num_classes": 8,
        "window_size": [4, 5],
        "channels_last": False,
    }
    net = CMOS(num_classes=8, window_size=(4, 5), channels_last=False)
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    record = network_record("BlurSemanticsTask", config)
    torch.save({"state_dict": state, RECORD_KEY: record, "bn_recalibrated": True}, path)
    return path


def test_quickstart_notebook_runs_and_shows_pictures(tmp_path, monkeypatch):
    # make train's checkpoint is not there in a fresh clone and its 2-minute training is
    # too long here: a tiny CMOS and tiny data stand in (the notebook's own paths)
    monkeypatch.setenv("SVBLUR_QUICKSTART_CKPT", str(_tiny_cmos_checkpoint(tmp_path / "t.ckpt")))
    monkeypatch.setenv(
        "SVBLUR_QUICKSTART_DATA",
        "data.train_size=8 data.test_size=4 data.hr_size=[64,80] data.real_fraction=0",
    )
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    images = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]
    assert len(images) >= 4  # the defocus row and three test images
    printed = "".join(o.get("text", "") for c in notebook.cells for o in c.get("outputs", []))
    assert "constant sigma" in printed and "blur PSNR" in printed
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
