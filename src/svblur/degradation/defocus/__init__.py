"""Depth-driven defocus: thin-lens blur maps and the layered renderer of SYNDOF.

A fast re-implementation of SYNDOF's ``blur_by_depth.m`` (Lee et al., CVPR 2019),
the generator of NYUv2-BSR and Cityscapes-BSR. Units: depth, focus distance and
focal length in millimetres; images RGB in ``[0, 1]``.

- :mod:`.lens`: cleaning depth maps, the thin-lens blur map and the aperture.
- :mod:`.layers`: the depth shift and the split of the scene into layers.
- :mod:`.renderer`: the tiled layered renderer and the space-invariant blur.
- :mod:`.threads`: the renderer's task pool and per-thread OpenMP/MKL settings.
"""

# ``name as name``: names of the former module svblur.degradation.defocus outside its
# ``__all__`` (its constants, and the renderer internals that the tests patch or drive).
from .layers import DefocusLayers, decompose_layers
from .lens import Array as Array
from .lens import defocus_sigma, fill_invalid_depth, solve_f_number
from .renderer import DEFAULT_MAX_THREADS as DEFAULT_MAX_THREADS
from .renderer import FILL_FLOOR as FILL_FLOOR
from .renderer import MASK_FLOOR as MASK_FLOOR
from .renderer import TILE as TILE
from .renderer import _Renderer as _Renderer
from .renderer import render_defocus, render_uniform_blur
from .threads import _intra_op_setters as _intra_op_setters
from .threads import _Pool as _Pool

__all__ = [
    "DefocusLayers",
    "decompose_layers",
    "defocus_sigma",
    "fill_invalid_depth",
    "render_defocus",
    "render_uniform_blur",
    "solve_f_number",
]
