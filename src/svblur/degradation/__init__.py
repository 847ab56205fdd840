"""Blur synthesis: SYNDOF's depth-driven defocus, blur-map storage and resizing."""

from .blur_map import blur_map_from_png, blur_map_to_png
from .defocus import (
    defocus_sigma,
    fill_invalid_depth,
    render_defocus,
    render_uniform_blur,
    solve_f_number,
)
from .resize import imresize

__all__ = [
    "blur_map_from_png",
    "blur_map_to_png",
    "defocus_sigma",
    "fill_invalid_depth",
    "imresize",
    "render_defocus",
    "render_uniform_blur",
    "solve_f_number",
]
