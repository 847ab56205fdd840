"""ONNX export of the deployable networks: an RRDBNet generator and CMOS.

:func:`load_for_export` rebuilds the network of a checkpoint (:func:`~svblur.checkpoints.
load_network`) and refuses the kinds that cannot be exported (:data:`EXPORTABLE_KINDS`);
:func:`export_onnx` writes it as an ONNX file whose batch, height and width are dynamic,
checks that file in onnxruntime on an input of another size, and renames it into place
only then (``svblur-export`` is its command line). Needs the optional extra ``onnx``.

The file takes one input, ``lr`` ``(B, C, H, W)``, RGB in ``[0, 1]`` like the PyTorch
network, and gives the network's outputs by name: ``sr`` for an RRDBNet (not clamped),
``blur`` (sigma map) and ``seg`` (logits) for CMOS (the auxiliary heads are left out),
each at ``scale`` times the input size. The metadata (``svblur.*`` entries) records the
kind, the network config and the size multiple.

Export traces the network once, with the TorchScript-based exporter of ``torch.onnx``
(``dynamo=False``): it needs only the ``onnx`` package and exports a CMOS in seconds, where
the ``torch.export``-based one takes minutes and fixes CMOS's sizes. Tracing records one
path through the Python code, so every size-dependent step of CMOS computes from the
traced shapes while ``torch.jit.is_tracing()``: the flow warp's grid
(:func:`svblur.nn.flow.flow_warp`), GIA's reflect padding up to a multiple of its window
(a gather at indices computed from the size, :func:`svblur.nn.blocks.reflect_pad_to_multiple`),
the split into windows and the crop back. Both networks' files therefore take any height
and width (:func:`size_multiple` is ``(1, 1)``; CMOS's backbone resizes its coarser
branches to the exact size of the finer ones, so it needs no multiple of its stride
either), except a BasicSR x2 / x1 RRDBNet, which takes multiples of its pixel-unshuffle
factor. CMOS is traced on at least :data:`CMOS_MIN_TRACE_SIZE` pixels a side, where every
scale of its backbone is larger than the next coarser one.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import json
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from svblur import __version__
from svblur.checkpoints import (
    SYSTEM_KINDS,
    LoadedNetwork,
    detect_esrgan_kind,
    from_esrgan_rrdbnet,
    load_network,
)
from svblur.errors import InputError
from svblur.io import atomic_path

__all__ = [
    "CMOS_MIN_TRACE_SIZE",
    "EXPORTABLE_KINDS",
    "ONNX_EXTRA_HINT",
    "OnnxExport",
    "OnnxExportError",
    "export_onnx",
    "load_for_export",
    "size_multiple",
]

#: The kinds (see :mod:`svblur.checkpoints.kinds`) that export, and the network of each.
EXPORTABLE_KINDS: dict[str, str] = {"gan_sr": "RRDBNet", "blur_semantics": "CMOS"}

#: What to install when ``onnx`` or ``onnxruntime`` is missing.
ONNX_EXTRA_HINT = (
    "install the optional extra: pip install 'svblur[onnx]' (adds onnx and onnxruntime)"
)

#: The smallest height and width CMOS is traced on: twice its coarsest stride (8). On a
#: smaller input the two coarsest feature maps can both be one pixel, and the trace would
#: leave out the resizing between them that larger inputs need.
CMOS_MIN_TRACE_SIZE = 16

#: The opset written by default (GridSample, which CMOS's flow alignment uses, needs 16).
DEFAULT_OPSET = 17

_EXPORTABLE = "; ".join(f"{kind} ({network})" for kind, network in EXPORTABLE_KINDS.items())


class OnnxExportError(RuntimeError):
    """The ONNX file does not compute what the network computes (a bug: please report)."""


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote.

    Attributes:
        path: The ONNX file.
        kind: The checkpoint's kind (a key of :data:`EXPORTABLE_KINDS`).
        network: The network's class name.
        outputs: The output names, in order.
        size_multiple: ``(mh, mw)``: the file takes heights and widths that are multiples
            of these (``(1, 1)``: any size).
        example_size: ``(H, W)`` of the input the network was traced with.
        verified_size: ``(H, W)`` of the input onnxruntime was checked on (``None``: not
            checked).
        max_error: The largest difference from PyTorch there (``None``: not checked).
    """

    path: Path
    kind: str
    network: str
    outputs: tuple[str, ...]
    size_multiple: tuple[int, int]
    example_size: tuple[int, int]
    verified_size: tuple[int, int] | None
    max_error: float | None


def _import_optional(name: str) -> Any:
    """``onnx`` / ``onnxruntime``, or an :class:`InputError` that says how to install them."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise InputError(f"ONNX export needs the {name} package: {ONNX_EXTRA_HINT}") from None


def _rrdbnet_config(
    path: str | Path,
) -> Callable[[Mapping[str, torch.Tensor]], dict[str, Any]]:
    """The fallback of :func:`load_network` for a file without a record: the config of an
    RRDBNet state dict (sizes read from the shapes), else an error naming what exports."""

    def config_of(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        layout = detect_esrgan_kind(state)
        if layout == "svblur_rrdbnet":
            return from_esrgan_rrdbnet(state, str(path))[1]
        if layout is not None:
            raise InputError(
                f"{path}: an ESRGAN-family file ({layout}); convert it first with "
                f"svblur-convert {path} OUT.pth, then export OUT.pth"
            )
        raise InputError(
            f"{path}: records no network and holds no RRDBNet state dict; export a "
            f"checkpoint svblur trained, a converted file or an RRDBNet state dict "
            f"(exportable kinds: {_EXPORTABLE})"
        )

    return config_of


def load_for_export(path: str | Path) -> LoadedNetwork:
    """The network of ``path`` with its weights, in eval mode, if it can be exported.

    Built by :func:`svblur.checkpoints.load_network` from the checkpoint's record; a file
    without one may be an RRDBNet state dict (e.g. the generator a GAN system exports,
    PBaSR's merged branches), whose sizes are read from the shapes, or one of the CMOS
    authors' released files.

    Raises:
        InputError: The checkpoint's kind or network is not one of
            :data:`EXPORTABLE_KINDS`; the message names the checkpoint and those kinds.
        CheckpointError: As :func:`~svblur.checkpoints.load_network`.
    """
    from svblur.models import CMOS, RRDBNet  # here: the module loads without the networks

    loaded = load_network(path, fallback_config=_rrdbnet_config(path))
    network = type(loaded.net).__name__
    exportable = isinstance(loaded.net, (RRDBNet, CMOS))
    # A file without a record is typed by its network (an RRDBNet config counts as blind_sr).
    if exportable and (not loaded.recorded or loaded.kind in EXPORTABLE_KINDS):
        kind = "gan_sr" if isinstance(loaded.net, RRDBNet) else "blur_semantics"
        return LoadedNetwork(loaded.net, kind, loaded.config, loaded.recorded)
    known = "" if loaded.kind in SYSTEM_KINDS else " (an unknown kind)"
    raise InputError(
        f"{path}: a checkpoint of kind {loaded.kind!r}{known} with a {network} cannot be "
        f"exported to ONNX; svblur-export exports the kinds {_EXPORTABLE}"
    )


def size_multiple(net: nn.Module) -> tuple[int, int]:
    """``(mh, mw)``: the exported ``net`` takes heights and widths that are multiples.

    CMOS: ``(1, 1)``, any size. GIA pads each feature map up to a multiple of its window
    with indices computed from the traced size, and the backbone resizes its coarser
    branches to the exact (rounded-up) size of the finer ones, so neither the window nor
    the backbone's strides restrict the input; exported files were checked against PyTorch
    from 1 x 1 to 120 x 160, odd sizes included. RRDBNet: the factor a BasicSR x2 / x1
    variant pixel-unshuffles its input by (1 otherwise).
    """
    factor = int(getattr(net, "unshuffle_factor", 1))
    return (factor, factor)


def _output_names(net: nn.Module) -> tuple[str, ...]:
    tasks = getattr(net, "tasks", None)
    return tuple(tasks) if tasks is not None else ("sr",)


def _in_channels(net: nn.Module) -> int:
    return int(getattr(net, "in_channels", 3))


class _NamedOutputs(nn.Module):
    """The network with its outputs as a tuple in the order of ``names`` (ONNX outputs are
    positional); a dict's other entries (CMOS's auxiliary heads) are left out."""

    def __init__(self, net: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.net = net
        self.names = tuple(names)

    def forward(self, lr: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.net(lr)
        if isinstance(out, torch.Tensor):
            return (out,)
        return tuple(out[name] for name in self.names)


@contextlib.contextmanager
def _traceable() -> Iterator[None]:
    """While tracing: the tracer's warnings about Python values silenced (the export checks
    its result instead; CMOS's flow warp, GIA's window padding, split and crop trace their
    sizes themselves)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch.onnx")
        yield


def _check_size(
    size: Sequence[int], multiple: tuple[int, int], network: str, minimum: int
) -> tuple[int, int]:
    """The example size, checked against the network's size multiple and smallest traced
    size."""
    if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size):
        raise InputError(f"size: expected [height, width], two positive ints, got {list(size)}")
    height, width = int(size[0]), int(size[1])
    mh, mw = multiple
    if height % mh or width % mw:
        up = [math.ceil(height / mh) * mh, math.ceil(width / mw) * mw]
        raise InputError(
            f"size={[height, width]}: the ONNX {network} takes heights and widths that are "
            f"multiples of ({mh}, {mw}); use e.g. size={up}"
        )
    if min(height, width) < minimum:
        up = [max(height, minimum), max(width, minimum)]
        raise InputError(
            f"size={[height, width]}: trace {network} on at least {minimum} x {minimum} "
            f"pixels, e.g. size={up} (the file it writes takes smaller inputs too; a "
            "smaller trace would leave out steps that larger inputs need)"
        )
    return height, width


def _min_trace_size(net: nn.Module) -> int:
    """The smallest height and width ``net`` is traced on (:data:`CMOS_MIN_TRACE_SIZE`
    for CMOS, 1 otherwise)."""
    from svblur.models import CMOS

    return CMOS_MIN_TRACE_SIZE if isinstance(net, CMOS) else 1


def _default_size(multiple: tuple[int, int]) -> tuple[int, int]:
    """About 32 pixels a side, a multiple of ``multiple``."""
    return tuple(math.ceil(32 / m) * m for m in multiple)  # type: ignore[return-value]


def _write_metadata(path: Path, entries: dict[str, str]) -> None:
    onnx = _import_optional("onnx")
    model = onnx.load(str(path))
    for key, value in entries.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "svblur"
    model.producer_version = __version__
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _verify(
    path: Path,
    model: nn.Module,
    names: Sequence[str],
    size: tuple[int, int],
    channels: int,
    output: str | Path,
) -> float:
    """The largest difference between onnxruntime and PyTorch on a batch of two random
    images of ``size``.

    Allowed: ten times PyTorch's own float32 rounding error (measured on the first image
    against a float64 copy of the network; a network with random weights rounds far more
    than a trained one), plus 1e-5 of the outputs' range. A size fixed by the trace gives
    errors of the order of the outputs themselves.
    """
    ort = _import_optional("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    lr = torch.rand(2, channels, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(lr)
        exact = copy.deepcopy(model).double()(lr[:1].double())
    got = session.run(list(names), {"lr": lr.numpy()})
    worst = 0.0
    for name, want, have, truth in zip(names, expected, got, exact):
        if tuple(have.shape) != tuple(want.shape):
            raise OnnxExportError(
                f"{output}: output {name} has shape {tuple(have.shape)} in onnxruntime, "
                f"{tuple(want.shape)} in PyTorch, for an input of size {size}"
            )
        error = float((torch.from_numpy(have).double() - want).abs().max())
        rounding = float((want[:1].double() - truth).abs().max())
        allowed = 10 * rounding + 1e-5 * max(1.0, float(truth.abs().max()))
        if error > allowed:
            raise OnnxExportError(
                f"{output}: output {name} of onnxruntime differs from PyTorch by {error:.2e} "
                f"(allowed {allowed:.2e}) on an input of size {size}; the traced graph does "
                "not generalize from the example's size"
            )
        worst = max(worst, error)
    return worst


def export_onnx(
    loaded: LoadedNetwork,
    output: str | Path,
    size: Sequence[int] | None = None,
    opset: int = DEFAULT_OPSET,
    verify: bool = True,
) -> OnnxExport:
    """Write ``loaded``'s network as an ONNX file with dynamic batch, height and width.

    The network is traced on a random image of ``size`` and written to a temporary name
    beside ``output``; with ``verify``, onnxruntime runs the file on a batch of two images
    of another height (one size multiple more) and another width (one less, or one more
    where one less would be below the smallest traced size) and must agree with PyTorch
    (see ``_verify``). Only then is the
    file renamed to ``output``: a failed export leaves no file (and an existing ``output``
    untouched).

    Args:
        loaded: A network of :data:`EXPORTABLE_KINDS` (:func:`load_for_export`).
        output: The ONNX file to write.
        size: ``[height, width]`` of the traced input, multiples of
            :func:`size_multiple`, for CMOS at least :data:`CMOS_MIN_TRACE_SIZE` each;
            ``None``: about 32 pixels a side. The file takes other sizes as well.
        opset: ONNX opset (at least 16).
        verify: Check the file in onnxruntime.

    Raises:
        InputError: ``size`` is not a multiple of :func:`size_multiple` or is smaller than
            the network is traced on, or onnx / onnxruntime is missing.
        OnnxExportError: The file does not compute what the network computes.
    """
    _import_optional("onnx")
    net = loaded.net.eval()
    network = type(net).__name__
    multiple = size_multiple(net)
    minimum = _min_trace_size(net)
    if size is None:
        example_size = _default_size(multiple)
    else:
        example_size = _check_size(size, multiple, network, minimum)
    names = _output_names(net)
    model = _NamedOutputs(net, names).eval()
    channels = _in_channels(net)
    example = torch.rand(1, channels, *example_size, generator=torch.Generator().manual_seed(0))
    dynamic_axes = {"lr": {0: "batch", 2: "height", 3: "width"}}
    for name in names:
        dynamic_axes[name] = {0: "batch", 2: f"{name}_height", 3: f"{name}_width"}
    metadata = {
        "svblur.kind": loaded.kind,
        "svblur.network": json.dumps(loaded.config, default=str),
        "svblur.inputs": f"lr (batch, {channels}, height, width), RGB in [0, 1]",
        "svblur.outputs": ", ".join(names),
        "svblur.size_multiple": f"{multiple[0]},{multiple[1]}",
    }
    # another height and another width, neither below the smallest traced size
    height, width = example_size
    mh, mw = multiple
    verify_size = (height + mh, width - mw if width - mw >= max(mw, minimum) else width + mw)
    error = None
    with atomic_path(output) as temp:
        with _traceable(), torch.no_grad():
            torch.onnx.export(
                model,
                (example,),
                str(temp),
                dynamo=False,
                opset_version=opset,
                input_names=["lr"],
                output_names=list(names),
                dynamic_axes=dynamic_axes,
            )
        _write_metadata(temp, metadata)
        if verify:
            error = _verify(temp, model, names, verify_size, channels, output)
    return OnnxExport(
        path=Path(output),
        kind=loaded.kind,
        network=network,
        outputs=names,
        size_multiple=multiple,
        example_size=example_size,
        verified_size=verify_size if verify else None,
        max_error=error,
    )
