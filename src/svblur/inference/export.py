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
path through the Python code, so CMOS's ONNX file takes the sizes for which that path is
the network's: heights and widths that are multiples of :func:`size_multiple`, the GIA
window times the backbone's coarsest stride (``(120, 160)`` for the released window
``(15, 20)``). There no window needs padding; pad or crop a photo to such a size, or cut
it into tiles of such a size, before running the file. Another size fails in onnxruntime
with a reshape error. While tracing, CMOS's flow warp takes its sizes from the traced
shapes (:func:`_traceable`). An RRDBNet takes any size.
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
        size_multiple: ``(mh, mw)``: the file takes heights and widths that are multiples.
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

    CMOS: its GIA window times the backbone's coarsest stride (windows tile every scale
    without padding); CMOS without a spatial stream: 1. RRDBNet: the factor a BasicSR x2 /
    x1 variant pixel-unshuffles its input by (1 otherwise).
    """
    from svblur.models import CMOS
    from svblur.nn.gia import SpatialInteraction

    if isinstance(net, CMOS):
        windows = {m.window_size for m in net.modules() if isinstance(m, SpatialInteraction)}
        if not windows:
            return (1, 1)
        stride = max(net.backbone.reductions)
        (window,) = windows
        return (window[0] * stride, window[1] * stride)
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
    its result instead; :func:`svblur.nn.flow.flow_warp` traces its sizes itself)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch.onnx")
        yield


def _check_size(
    size: Sequence[int], multiple: tuple[int, int], network: str, grid: bool
) -> tuple[int, int]:
    """The example size, checked against the network's size multiple."""
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
    if grid and height == mh and width == mw:
        raise InputError(
            f"size={[height, width]}: trace {network} at a size of at least two ({mh}, {mw}) "
            f"cells, e.g. size={[2 * mh, mw]} (one cell takes a shortcut that larger inputs "
            "do not)"
        )
    return height, width


def _default_size(multiple: tuple[int, int], grid: bool) -> tuple[int, int]:
    """One by two cells of the size multiple for a windowed CMOS; else about 32 pixels a
    side."""
    if grid:
        return (multiple[0], 2 * multiple[1])
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
    of another height (one size multiple more) and another width (one less, or more) and
    must agree with PyTorch (see ``_verify``). Only then is the
    file renamed to ``output``: a failed export leaves no file (and an existing ``output``
    untouched).

    Args:
        loaded: A network of :data:`EXPORTABLE_KINDS` (:func:`load_for_export`).
        output: The ONNX file to write.
        size: ``[height, width]`` of the traced input, multiples of
            :func:`size_multiple`; ``None``: one by two multiples (CMOS: ``(120, 320)``
            for the released window), else about 32 pixels a side.
        opset: ONNX opset (at least 16).
        verify: Check the file in onnxruntime.

    Raises:
        InputError: ``size`` does not fit the network, or onnx / onnxruntime is missing.
        OnnxExportError: The file does not compute what the network computes.
    """
    _import_optional("onnx")
    net = loaded.net.eval()
    network = type(net).__name__
    multiple = size_multiple(net)
    grid = multiple != (1, 1) and network == "CMOS"
    if size is None:
        example_size = _default_size(multiple, grid)
    else:
        example_size = _check_size(size, multiple, network, grid)
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
    # another height and another width (CMOS's default: two by one cells)
    height, width = example_size
    mh, mw = multiple
    verify_size = (height + mh, width - mw if width > mw else width + mw)
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
