"""Reading a local diffusers Stable Diffusion folder (``unet/``, ``vae/``, ``scheduler/``,
optionally ``text_encoder/`` and ``tokenizer/``) for :class:`~svblur.models.LatentDiffusionSR`:
one-line errors naming a missing part, no download unless asked for, the frozen parts
loaded strictly, the scheduler config and the empty prompt's embedding."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    DDPMScheduler,
)
from torch import nn

from svblur.errors import InputError

__all__ = ["REQUIRED_PARTS", "empty_prompt", "load_frozen", "resolve_folder", "scheduler_config"]

#: The sub-folders of a diffusers Stable Diffusion folder that svblur reads.
REQUIRED_PARTS = ("unet", "vae", "scheduler")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def resolve_folder(source: str | Path, allow_download: bool) -> Path:
    """The local folder of ``source``: itself, or a hub id's snapshot when allowed."""
    folder = Path(source).expanduser()
    if folder.is_dir():
        folder = folder.resolve()
        absent = [part for part in REQUIRED_PARTS if not (folder / part).is_dir()]
        if absent:
            raise InputError(
                f"pretrained: '{folder}' has no {', '.join(p + '/' for p in absent)} sub-folder; "
                "expected the diffusers Stable Diffusion layout (unet/, vae/, scheduler/; "
                "text_encoder/ and tokenizer/ optional)"
            )
        return folder
    if not allow_download:
        raise InputError(
            f"pretrained: no folder at '{folder}'; give a local diffusers Stable Diffusion "
            "folder (unet/, vae/, scheduler/), e.g. Stable Diffusion 2.1-base saved with "
            "save_pretrained. svblur downloads only a hub id given with allow_download=true"
        )
    from huggingface_hub import snapshot_download

    patterns = [f"{part}/*" for part in (*REQUIRED_PARTS, "text_encoder", "tokenizer")]
    try:
        return Path(snapshot_download(str(source), allow_patterns=patterns))
    except Exception as error:  # any hub failure is reported in one line
        raise InputError(
            f"pretrained: cannot download '{source}' from the hub ({_first_line(error)})"
        ) from None


def load_frozen(cls: type, folder: Path, subfolder: str) -> nn.Module:
    """A diffusers model from ``folder/subfolder``, strictly: any missing, unexpected or
    mismatched weight is an error."""
    try:
        model, info = cls.from_pretrained(
            str(folder),
            subfolder=subfolder,
            local_files_only=True,
            output_loading_info=True,
            low_cpu_mem_usage=importlib.util.find_spec("accelerate") is not None,
        )
    except (OSError, ValueError, RuntimeError) as error:
        raise InputError(
            f"pretrained: '{folder / subfolder}' holds no loadable {cls.__name__} "
            f"({_first_line(error)})"
        ) from None
    problems = {key: value for key, value in info.items() if value}
    if problems:
        found = "; ".join(f"{key}: {list(value)[:4]}" for key, value in problems.items())
        raise InputError(
            f"pretrained: '{folder / subfolder}' does not load strictly into "
            f"{cls.__name__} ({found})"
        )
    return model


def scheduler_config(folder: Path) -> dict[str, Any]:
    try:
        config = DDPMScheduler.load_config(str(folder), subfolder="scheduler")
    except (OSError, ValueError) as error:
        raise InputError(
            f"pretrained: '{folder / 'scheduler'}' holds no scheduler config ({_first_line(error)})"
        ) from None
    return dict(config)


def empty_prompt(folder: Path, use_text_encoder: bool, width: int) -> torch.Tensor:
    """``(1, L, width)``: the empty prompt through the folder's text encoder, else zeros
    (``L`` = 77, CLIP's context length)."""
    has_encoder = (folder / "text_encoder").is_dir()
    if not (use_text_encoder and has_encoder):
        return torch.zeros(1, 77, width)
    if not (folder / "tokenizer").is_dir():
        raise InputError(
            f"pretrained: '{folder}' has text_encoder/ but no tokenizer/; add it, or set "
            "use_text_encoder=false for a zero prompt embedding"
        )
    try:
        # optional (the ``depth`` extra), so imported by name
        transformers = importlib.import_module("transformers")
        CLIPTextModel, CLIPTokenizer = transformers.CLIPTextModel, transformers.CLIPTokenizer
    except ImportError:
        raise InputError(
            f"pretrained: '{folder}' has a text encoder, which needs transformers: pip install "
            "transformers (or svblur[depth]), or set use_text_encoder=false for a zero "
            "prompt embedding"
        ) from None
    tokenizer = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"), local_files_only=True)
    encoder = CLIPTextModel.from_pretrained(str(folder / "text_encoder"), local_files_only=True)
    ids = tokenizer(
        [""],
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    with torch.no_grad():
        embedding = encoder.eval()(ids)[0].float()
    if embedding.shape[-1] != width:
        raise InputError(
            f"pretrained: the text encoder gives {embedding.shape[-1]} channels, the UNet's "
            f"cross-attention takes {width}"
        )
    return embedding
