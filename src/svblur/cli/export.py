"""``svblur-export``: the deployable network of a checkpoint as an ONNX file.

Examples:
    svblur-export ckpt=logs/train/runs/<time>/checkpoints/last.ckpt output=cmos.onnx
    svblur-export ckpt=pbasr_generator.pth output=pbasr.onnx

The checkpoint holds an RRDBNet generator (kind ``gan_sr``: a GANSRTask or PBaSRTask
checkpoint, whose branches are merged, the state dict a GAN system exports, or a file
``svblur-convert`` wrote) or a CMOS (kind ``blur_semantics``: a BlurSemanticsTask
checkpoint or the authors' released ``CMOS_*.pth``). Other kinds are refused with a
message naming the checkpoint and the kinds that export. The ONNX file has one input,
``lr`` ``(batch, 3, height, width)`` RGB in ``[0, 1]``, and the outputs ``sr``, or
``blur`` and ``seg``; batch, height and width are dynamic, and every file takes any
height and width (CMOS is traced on at least 16 x 16 pixels). The file is checked in
onnxruntime on an input of another size (``verify=false`` skips this) and written under a
temporary name, then renamed: a failed export leaves no file.

This module reads the config; the export is :func:`svblur.inference.export.export_onnx`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from svblur.experiments.training import apply_extras, require
from svblur.inference.export import OnnxExport, export_onnx, load_for_export

from ._common import CONFIG_PATH, exit_on_input_error, run_hydra_app

log = logging.getLogger("svblur")

__all__ = ["export", "main"]


def export(cfg: DictConfig) -> OnnxExport:
    """Export the network of ``cfg.ckpt`` to ``cfg.output`` (:func:`export_onnx`)."""
    apply_extras(cfg)
    ckpt = Path(require(cfg, "ckpt", "a checkpoint (ckpt=PATH)"))
    output = Path(require(cfg, "output", "the ONNX file to write (output=model.onnx)"))
    loaded = load_for_export(ckpt)
    size = cfg.get("size")
    result = export_onnx(
        loaded,
        output,
        size=None if size is None else list(size),
        opset=int(cfg.opset),
        verify=bool(cfg.verify),
    )
    mh, mw = result.size_multiple
    sizes = (
        "any height and width" if mh == mw == 1 else f"heights and widths multiples of {mh}x{mw}"
    )
    checked = (
        f"; onnxruntime agrees with PyTorch at {result.verified_size} (max difference "
        f"{result.max_error:.1e})"
        if result.verified_size is not None
        else "; not checked in onnxruntime"
    )
    log.info(
        "%s: %s (%s) from %s, outputs %s, %s%s",
        output,
        result.network,
        result.kind,
        ckpt,
        ", ".join(result.outputs),
        sizes,
        checked,
    )
    return result


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="export")
@exit_on_input_error("svblur-export")
def _hydra_main(cfg: DictConfig) -> None:
    export(cfg)


def main() -> None:
    """Console-script entry point."""
    run_hydra_app(_hydra_main)


if __name__ == "__main__":
    main()
