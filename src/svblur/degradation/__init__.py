"""Degradations: SYNDOF's depth-driven defocus, kernels and spatially variant kernel fields,
noise and JPEG, BSRGAN's shuffled model and Real-ESRGAN's second-order model, the sample
pipeline that combines them (:mod:`svblur.degradation.pipeline`), blur-map storage and
resizing."""

from .blur_map import blur_map_from_png, blur_map_to_png
from .bsrgan import BSRGANDegradation, BSRGANPlan
from .camera_noise import add_camera_sensor_noise, draw_camera_params
from .defocus import (
    defocus_sigma,
    fill_invalid_depth,
    render_defocus,
    render_uniform_blur,
    solve_f_number,
)
from .defocus_blur import SYNDOF_MAX_COC, Camera, CameraPrior, DefocusBlur
from .field_blurs import GaussianFieldBlur, MotionFieldBlur, PartialBlur
from .field_synthesis import (
    DEFAULT_FOCUS_QUANTILE,
    MM_PER_M,
    depth_gaussian_field,
    depth_sigma,
    field_from_kernel,
    focus_at_quantile,
    gaussian_field,
    motion_field,
    signed_defocus,
)
from .fields import apply_kernel, apply_kernel_field, filter_image, iter_patch_rows
from .kernels import (
    gaussian_kernel,
    generalized_gaussian_kernel,
    linear_motion_kernel,
    motion_kernel,
    plateau_kernel,
    sinc_kernel,
)
from .noise import (
    add_correlated_gaussian_noise,
    add_gaussian_noise,
    add_poisson_noise,
    jpeg_compress,
    jpeg_encode,
    random_gaussian_noise,
    random_jpeg,
    random_poisson_noise,
)
from .pca import KernelPCA
from .pipeline import Bicubic, SamplePipeline
from .resize import imresize
from .sample import SAMPLE_KEYS, Degradation, Degraded, SceneInput
from .second_order import SecondOrderDegradation, degrade_second_order

__all__ = [
    "DEFAULT_FOCUS_QUANTILE",
    "MM_PER_M",
    "SAMPLE_KEYS",
    "SYNDOF_MAX_COC",
    "BSRGANDegradation",
    "BSRGANPlan",
    "Bicubic",
    "Camera",
    "CameraPrior",
    "DefocusBlur",
    "Degradation",
    "Degraded",
    "GaussianFieldBlur",
    "KernelPCA",
    "MotionFieldBlur",
    "PartialBlur",
    "SamplePipeline",
    "SceneInput",
    "SecondOrderDegradation",
    "add_camera_sensor_noise",
    "add_correlated_gaussian_noise",
    "add_gaussian_noise",
    "add_poisson_noise",
    "apply_kernel",
    "apply_kernel_field",
    "blur_map_from_png",
    "blur_map_to_png",
    "defocus_sigma",
    "degrade_second_order",
    "depth_gaussian_field",
    "depth_sigma",
    "draw_camera_params",
    "field_from_kernel",
    "fill_invalid_depth",
    "filter_image",
    "focus_at_quantile",
    "gaussian_field",
    "gaussian_kernel",
    "generalized_gaussian_kernel",
    "imresize",
    "iter_patch_rows",
    "jpeg_compress",
    "jpeg_encode",
    "linear_motion_kernel",
    "motion_field",
    "motion_kernel",
    "plateau_kernel",
    "random_gaussian_noise",
    "random_jpeg",
    "random_poisson_noise",
    "render_defocus",
    "render_uniform_blur",
    "signed_defocus",
    "sinc_kernel",
    "solve_f_number",
]
