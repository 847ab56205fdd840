"""Blur kernels: Gaussian families (BasicSR / Real-ESRGAN), circular low-pass, motion.

Every kernel is a ``(size, size)`` array normalized to sum 1, to be applied as a
cross-correlation (see :func:`svblur.degradation.fields.apply_kernel`). Tap ``(i, j)``
(row ``i``, column ``j``) sits at the offset ``(x, y) = (j - c, i - c)`` from the centre
``c = (size - 1) / 2``: ``x`` runs along the columns (rightwards), ``y`` along the
rows (downwards), as in BasicSR's ``mesh_grid``. For odd sizes the centre is a tap
and the grid equals BasicSR's; for even sizes it lies between four taps (MANet's
convention; BasicSR's even grid is off-centre by half a pixel).

Parametric kernels follow one pattern. Python floats (or NumPy scalars) give a NumPy
float64 ``(size, size)`` array; 1-D NumPy arrays give ``(N, size, size)``. If any
parameter is a ``torch.Tensor`` of shape ``(N,)`` (or a scalar tensor), the result is a
tensor ``(N, size, size)`` on that tensor's device and floating dtype, differentiable in
every tensor parameter; the other parameters broadcast against it.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.special
import torch
import torch.nn.functional as F

__all__ = [
    "SIGMA_MIN",
    "gaussian_kernel",
    "generalized_gaussian_kernel",
    "linear_motion_kernel",
    "motion_kernel",
    "plateau_kernel",
    "sinc_kernel",
]

Param = float | np.ndarray | torch.Tensor
Kernel = np.ndarray | torch.Tensor

#: Standard deviations below this (pixels) are raised to it: the kernel is then a delta
#: to machine precision for odd sizes, and ``sigma -> 0`` cannot divide by zero.
SIGMA_MIN = 1e-6

#: ``beta * log(q)`` is capped here in the generalized Gaussian (``exp(-0.5 e^80)`` is 0
#: in every float dtype), so ``q ** beta`` cannot overflow to ``inf`` in float32.
_LOG_POWER_MAX = 80.0

#: Samples per kernel-size pixel along a linear motion path (midpoint rule).
_LINE_SAMPLES_PER_PIXEL = 8

#: Path length of the reference trajectories (pixels): Boracchi & Foi's model is not
#: scale-invariant (its inertial pull grows with the distance travelled), so paths are
#: drawn at DeblurGAN's scale (``max_len=60``) and then resized to the requested length.
_TRAJECTORY_REFERENCE_LENGTH = 60.0


# --------------------------------------------------------------------------- helpers
def _check_size(size: int) -> int:
    if isinstance(size, bool) or int(size) != size or size < 1:
        raise ValueError(f"size: expected a positive integer, got {size!r}")
    return int(size)


def _batch_params(
    names: tuple[str, ...], values: tuple[Param, ...]
) -> tuple[list[torch.Tensor], tuple[int, ...] | None]:
    """Broadcast the parameters to 1-D tensors of one length ``N``.

    Returns:
        The tensors, and ``None`` when the caller passed a ``torch.Tensor`` (torch
        output) or else the NumPy broadcast shape, ``()`` or ``(N,)`` (NumPy output).
    """
    tensors = [v for v in values if isinstance(v, torch.Tensor)]
    for name, value in zip(names, values):
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else np.shape(value)
        if len(shape) > 1:
            raise ValueError(f"{name}: expected a scalar or a 1-D (N,) batch, got shape {shape}")
    if tensors:
        devices = {t.device for t in tensors}
        if len(devices) > 1:
            raise ValueError(
                f"kernel parameters are on different devices: {sorted(map(str, devices))}"
            )
        dtype = torch.get_default_dtype()
        floats = [t.dtype for t in tensors if t.is_floating_point()]
        if floats:
            dtype = floats[0]
            for other in floats[1:]:
                dtype = torch.promote_types(dtype, other)
        device = tensors[0].device
        batch = [torch.as_tensor(v, dtype=dtype, device=device).reshape(-1) for v in values]
        try:
            return list(torch.broadcast_tensors(*batch)), None
        except RuntimeError as error:
            shapes = {n: tuple(b.shape) for n, b in zip(names, batch)}
            raise ValueError(f"kernel parameters do not broadcast: {shapes}") from error
    arrays = [np.asarray(v, dtype=np.float64) for v in values]
    try:
        shape = np.broadcast_shapes(*(a.shape for a in arrays))
    except ValueError as error:
        shapes = {n: a.shape for n, a in zip(names, arrays)}
        raise ValueError(f"kernel parameters do not broadcast: {shapes}") from error
    batch = [torch.from_numpy(np.broadcast_to(a, shape).reshape(-1).copy()) for a in arrays]
    return batch, shape


def _finish(kernels: torch.Tensor, numpy_shape: tuple[int, ...] | None) -> Kernel:
    """Return ``(N, s, s)`` as a tensor, or as NumPy ``(s, s)`` / ``(N, s, s)``."""
    if numpy_shape is None:
        return kernels
    array = kernels.detach().numpy()
    return array[0] if numpy_shape == () else array


def _check_numpy_values(
    numpy_shape: tuple[int, ...] | None, checks: dict[str, tuple[torch.Tensor, float, bool]]
) -> None:
    """Validate NumPy-mode parameters (tensors are not checked: that would sync a GPU)."""
    if numpy_shape is None:
        return
    for name, (values, bound, strict) in checks.items():
        bad = (values <= bound) if strict else (values < bound)
        if bool(bad.any()) or not bool(torch.isfinite(values).all()):
            relation = ">" if strict else ">="
            raise ValueError(
                f"{name}: expected finite values {relation} {bound}, got {values.tolist()}"
            )


def _offsets(size: int, like: torch.Tensor) -> torch.Tensor:
    """Tap offsets from the kernel centre along one axis, ``(size,)``."""
    return torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2.0


def _quadratic_form(
    size: int, sigma_x: torch.Tensor, sigma_y: torch.Tensor, theta: torch.Tensor
) -> torch.Tensor:
    """``x^T S^-1 x`` on the tap grid, ``(N, size, size)``.

    ``S = R diag(sigma_x^2, sigma_y^2) R^T`` with ``R = [[cos, -sin], [sin, cos]]`` (BasicSR's
    ``sigma_matrix2``), so ``x^T S^-1 x = (u / sigma_x)^2 + (v / sigma_y)^2`` where
    ``(u, v) = R^T (x, y)``; this form stays finite for any positive sigma.
    """
    offsets = _offsets(size, sigma_x)
    x = offsets.view(1, 1, size)
    y = offsets.view(1, size, 1)
    cos = torch.cos(theta).view(-1, 1, 1)
    sin = torch.sin(theta).view(-1, 1, 1)
    u = (cos * x + sin * y) / sigma_x.clamp_min(SIGMA_MIN).view(-1, 1, 1)
    v = (cos * y - sin * x) / sigma_y.clamp_min(SIGMA_MIN).view(-1, 1, 1)
    return u * u + v * v


def _log_power(q: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """``beta * log(q)`` for ``q >= 0`` (``-inf`` at ``q = 0``, with finite gradients there)."""
    positive = q > 0
    safe = torch.where(positive, q, torch.ones_like(q))
    return torch.where(positive, beta.view(-1, 1, 1) * torch.log(safe), -torch.inf)


def _normalize_logits(logits: torch.Tensor) -> torch.Tensor:
    """Kernel ``exp(logits)`` normalized to sum 1 per item (a softmax over the taps).

    Working with log-weights keeps every kernel finite: as ``sigma -> 0`` all off-centre
    logits go to ``-inf`` and the softmax tends to a delta instead of ``0 / 0``.
    """
    n, size, _ = logits.shape
    return torch.softmax(logits.reshape(n, size * size), dim=1).reshape(n, size, size)


def _gaussian_family(
    size: int,
    sigma_x: Param,
    sigma_y: Param | None,
    theta: Param,
    beta: Param,
    family: str,
) -> Kernel:
    size = _check_size(size)
    names = ("sigma_x", "sigma_y", "theta", "beta")
    values = (sigma_x, sigma_x if sigma_y is None else sigma_y, theta, beta)
    (sx, sy, th, b), numpy_shape = _batch_params(names, values)
    _check_numpy_values(
        numpy_shape,
        {"sigma_x": (sx, 0.0, False), "sigma_y": (sy, 0.0, False), "beta": (b, 0.0, True)},
    )
    q = _quadratic_form(size, sx, sy, th)
    if family == "gaussian":
        logits = -0.5 * q
    elif family == "generalized":
        logits = -0.5 * torch.exp(_log_power(q, b).clamp_max(_LOG_POWER_MAX))
    else:  # plateau: log(1 / (1 + q^beta)) = -softplus(beta log q), stable for any q
        logits = -F.softplus(_log_power(q, b))
    return _finish(_normalize_logits(logits), numpy_shape)


# --------------------------------------------------------------------------- Gaussians
def gaussian_kernel(
    size: int, sigma_x: Param, sigma_y: Param | None = None, theta: Param = 0.0
) -> Kernel:
    """Isotropic or anisotropic Gaussian kernel, normalized to sum 1.

    Conventions (BasicSR's ``bivariate_Gaussian``, MANet's ``cal_sigma``):
    ``k(x, y) ∝ exp(-0.5 [x y] S^-1 [x y]^T)`` with covariance
    ``S = R(theta) diag(sigma_x^2, sigma_y^2) R(theta)^T``, ``R = [[cos, -sin], [sin, cos]]``.
    ``sigma_x`` and ``sigma_y`` are standard deviations in pixels along the kernel's own
    axes; ``theta`` (radians) turns the ``sigma_x`` axis from ``+x`` (rightwards) towards
    ``+y`` (downwards), i.e. clockwise on screen. ``theta = pi / 2`` swaps the axes. The
    Gaussian is sampled at the tap centres (not integrated over the pixel) and not
    truncated below ``eps`` (BasicSR does neither; MANet zeroes taps below ``eps * max``).

    Args:
        size: Kernel side ``s`` (odd for use with :func:`~svblur.degradation.fields.apply_kernel`).
        sigma_x: Standard deviation along the first axis, ``>= 0``. Values below
            :data:`SIGMA_MIN` give a delta (an even ``size`` splits it over four taps).
        sigma_y: Standard deviation along the second axis; ``None`` = ``sigma_x``
            (isotropic, ``theta`` is then irrelevant).
        theta: Rotation in radians.

    Returns:
        ``(s, s)`` float64 NumPy array for scalar parameters, ``(N, s, s)`` for 1-D
        NumPy arrays, or a ``(N, s, s)`` tensor when any parameter is a tensor ``(N,)``.
    """
    return _gaussian_family(size, sigma_x, sigma_y, theta, 1.0, "gaussian")


def generalized_gaussian_kernel(
    size: int,
    sigma_x: Param,
    sigma_y: Param | None = None,
    theta: Param = 0.0,
    beta: Param = 1.0,
) -> Kernel:
    """Generalized Gaussian kernel ``∝ exp(-0.5 (x^T S^-1 x)^beta)``, normalized to sum 1.

    Real-ESRGAN's "generalized" family (BasicSR's ``bivariate_generalized_Gaussian``):
    ``beta = 1`` is :func:`gaussian_kernel`, ``beta < 1`` has heavier tails and a sharper
    peak, ``beta > 1`` tends to a flat-topped ellipse. ``S``, ``sigma_x``, ``sigma_y`` and
    ``theta`` are as in :func:`gaussian_kernel` (``sigma`` is then a scale, not a
    standard deviation).

    Args:
        size: Kernel side ``s``.
        sigma_x: Scale along the first axis, ``>= 0`` (below :data:`SIGMA_MIN`: a delta).
        sigma_y: Scale along the second axis; ``None`` = ``sigma_x``.
        theta: Rotation in radians.
        beta: Shape exponent, ``> 0`` (Real-ESRGAN draws it from ``[0.5, 4]``).

    Returns:
        As :func:`gaussian_kernel`.
    """
    return _gaussian_family(size, sigma_x, sigma_y, theta, beta, "generalized")


def plateau_kernel(
    size: int,
    sigma_x: Param,
    sigma_y: Param | None = None,
    theta: Param = 0.0,
    beta: Param = 1.0,
) -> Kernel:
    """Plateau kernel ``∝ 1 / (1 + (x^T S^-1 x)^beta)``, normalized to sum 1.

    Real-ESRGAN's "plateau" family (BasicSR's ``bivariate_plateau``); ``beta = 1`` is a
    Cauchy-like (rational) kernel. ``S``, ``sigma_x``, ``sigma_y`` and ``theta`` are as
    in :func:`gaussian_kernel`.

    Args:
        size: Kernel side ``s``.
        sigma_x: Scale along the first axis, ``>= 0`` (below :data:`SIGMA_MIN`: a delta).
        sigma_y: Scale along the second axis; ``None`` = ``sigma_x``.
        theta: Rotation in radians.
        beta: Shape exponent, ``> 0`` (Real-ESRGAN draws it from ``[1, 2]``).

    Returns:
        As :func:`gaussian_kernel`.
    """
    return _gaussian_family(size, sigma_x, sigma_y, theta, beta, "plateau")


# --------------------------------------------------------------------------- sinc
def _bessel(order: int, z: torch.Tensor) -> torch.Tensor:
    """``J0`` or ``J1``: SciPy's on the CPU (``torch.special``'s are only ~5e-7 accurate)."""
    if z.device.type == "cpu":
        function = scipy.special.j0 if order == 0 else scipy.special.j1
        return torch.from_numpy(function(z.detach().double().numpy())).to(z.dtype)
    return torch.special.bessel_j0(z) if order == 0 else torch.special.bessel_j1(z)


class _BesselJ1(torch.autograd.Function):
    """``J1(z)`` with a gradient (``torch.special.bessel_j1`` has none)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, z: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(z)
        return _bessel(1, z)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        (z,) = ctx.saved_tensors
        nonzero = z != 0
        safe = torch.where(nonzero, z, torch.ones_like(z))
        # J1'(z) = J0(z) - J1(z) / z, and J1'(0) = 1/2
        slope = _bessel(0, z) - _bessel(1, safe) / safe
        return grad * torch.where(nonzero, slope, torch.full_like(z, 0.5))


def sinc_kernel(size: int, cutoff: Param) -> Kernel:
    """Circular low-pass ("2-D sinc", jinc) kernel, normalized to sum 1.

    The ideal low-pass filter with a disc-shaped pass band of radius ``cutoff`` (radians
    per pixel) has the impulse response ``cutoff * J1(cutoff r) / (2 pi r)``, with limit
    ``cutoff^2 / (4 pi)`` at ``r = 0`` (Real-ESRGAN's ``circular_lowpass_kernel``, which
    adds ringing / overshoot artefacts). It is sampled at the tap centres and divided
    by its sum; unlike the other kernels it has negative taps.

    Args:
        size: Kernel side ``s``.
        cutoff: Cut-off frequency in radians per pixel, ``> 0`` (``pi`` = Nyquist;
            Real-ESRGAN draws it from ``[pi / 3, pi]``, or ``[pi / 5, pi]`` for ``s >= 13``).

    Returns:
        As :func:`gaussian_kernel`.
    """
    size = _check_size(size)
    (omega,), numpy_shape = _batch_params(("cutoff",), (cutoff,))
    _check_numpy_values(numpy_shape, {"cutoff": (omega, 0.0, True)})
    offsets = _offsets(size, omega)
    radius = torch.sqrt(offsets.view(1, size, 1) ** 2 + offsets.view(1, 1, size) ** 2)
    at_centre = radius == 0
    safe_radius = torch.where(at_centre, torch.ones_like(radius), radius)
    omega = omega.view(-1, 1, 1)
    response = omega * _BesselJ1.apply(omega * safe_radius) / (2.0 * math.pi * safe_radius)
    kernel = torch.where(at_centre, omega * omega / (4.0 * math.pi), response)
    kernel = kernel / kernel.sum(dim=(1, 2), keepdim=True)
    return _finish(kernel, numpy_shape)


# --------------------------------------------------------------------------- motion
def _splat(x: torch.Tensor, y: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear splat of path samples onto the tap grid, normalized to sum 1.

    Args:
        x: Column offsets of the samples from the kernel centre, ``(N, S)``.
        y: Row offsets, ``(N, S)``.
        size: Kernel side ``s``.

    Returns:
        ``(N, s, s)``. Each sample spreads its weight over its four nearest taps with the
        tent function ``max(0, 1 - |d|)`` per axis, which keeps the mass and the centre of
        mass of samples lying inside the grid; mass falling outside is dropped.
    """
    offsets = _offsets(size, x)
    tent_x = (1.0 - (x.unsqueeze(-1) - offsets).abs()).clamp_min(0.0)  # (N, S, s)
    tent_y = (1.0 - (y.unsqueeze(-1) - offsets).abs()).clamp_min(0.0)
    kernel = torch.einsum("nsi,nsj->nij", tent_y, tent_x)
    return kernel / kernel.sum(dim=(1, 2), keepdim=True)


def linear_motion_kernel(size: int, length: Param, angle: Param) -> Kernel:
    """Uniform linear motion blur: an anti-aliased line segment, normalized to sum 1.

    The segment is centred on the kernel centre, so its centre of mass is the centre and
    the blur does not shift the image. It is integrated with the bilinear (tent)
    footprint by the midpoint rule at ``8 * size`` samples. A segment longer than the
    kernel (``length`` beyond the support in that direction) is cut at the border.

    Args:
        size: Kernel side ``s``.
        length: Distance between the segment's end points in pixels, ``>= 0`` (``0``
            gives a delta).
        angle: Direction in degrees, counter-clockwise on screen from the ``+x`` axis
            (rightwards); ``90`` is a vertical line. ``angle`` and ``angle + 180`` agree.

    Returns:
        As :func:`gaussian_kernel`; differentiable in ``length`` and ``angle``.
    """
    size = _check_size(size)
    (extent, degrees), numpy_shape = _batch_params(("length", "angle"), (length, angle))
    _check_numpy_values(numpy_shape, {"length": (extent, 0.0, False)})
    samples = _LINE_SAMPLES_PER_PIXEL * size
    t = (torch.arange(samples, dtype=extent.dtype, device=extent.device) + 0.5) / samples - 0.5
    along = extent.view(-1, 1) * t  # (N, S), from -length/2 to length/2
    radians = torch.deg2rad(degrees).view(-1, 1)
    # rows grow downwards, so counter-clockwise on screen is -sin along the rows
    kernel = _splat(along * torch.cos(radians), -along * torch.sin(radians), size)
    return _finish(kernel, numpy_shape)


def _trajectory(rng: np.random.Generator, num_steps: int, anxiety: float) -> np.ndarray:
    """Boracchi & Foi's random camera-shake path, ``(num_steps,)`` complex (x + i y).

    A particle moves at constant speed; at each step its velocity receives a Gaussian
    perturbation, an inertial pull back towards the start, and with a small
    probability an impulsive near-reversal (the press of the shutter button). The
    random constants are drawn as in DeblurGAN's ``Trajectory``.
    """
    step = _TRAJECTORY_REFERENCE_LENGTH / (num_steps - 1)
    centripetal = 0.7 * rng.uniform()
    prob_big_shake = 0.2 * rng.uniform()
    gaussian_shake = 10.0 * rng.uniform()
    init_angle = 2.0 * np.pi * rng.uniform()
    shake = rng.uniform(size=num_steps - 1) < prob_big_shake * anxiety
    jitter = rng.uniform(size=num_steps - 1) - 0.5
    noise = rng.standard_normal(num_steps - 1) + 1j * rng.standard_normal(num_steps - 1)

    reversal = (2.0 * np.exp(1j * (np.pi + jitter))).tolist()
    # a plain-Python loop: each step depends on the previous position
    position = 0j
    positions = [position]
    velocity = complex(np.exp(1j * init_angle)) * step
    for t, (kick, big) in enumerate(zip(noise.tolist(), shake.tolist())):
        dv = anxiety * (gaussian_shake * kick - centripetal * position) * step
        if big:
            dv += velocity * reversal[t]
        velocity += dv
        velocity *= step / abs(velocity)
        position += velocity
        positions.append(position)
    return np.asarray(positions, dtype=np.complex128)


def motion_kernel(
    size: int,
    rng: np.random.Generator,
    *,
    length: float | None = None,
    anxiety: float | None = None,
    num_steps: int = 2000,
) -> np.ndarray:
    """Random camera-shake kernel from Boracchi & Foi's trajectory model, normalized.

    The trajectory model (Boracchi & Foi, "Modeling the performance of image restoration
    from motion blur", TIP 2012; the generator of DeblurGAN's training blur): a particle
    moves ``num_steps`` equal steps; its velocity gets Gaussian perturbations, an
    inertial pull back towards the start and rare impulsive reversals. The path is
    drawn at DeblurGAN's scale (60 px), rescaled to ``length``, then sampled at its
    ``num_steps`` points (equal exposure per point) and splatted with bilinear weights.

    Centring: the path is shifted so that its centre of mass lies on the kernel centre,
    so the kernel's centre of mass is the centre and the blur does not shift the image
    on average. A centred path that would leave the ``size x size`` support is shrunk
    about its centre of mass until it fits (``length`` is then an upper bound).

    Args:
        size: Kernel side ``s``.
        rng: Source of randomness.
        length: Path length in pixels; ``None`` draws it uniformly from
            ``[(s - 1) / 4, s - 1]``. ``0`` gives a delta.
        anxiety: Strength of the perturbations (Boracchi & Foi's "anxiety"); ``0`` gives
            a straight path; ``None`` draws it uniformly from ``[0.003, 0.01]``, the range
            DeblurGAN samples its data set from.
        num_steps: Samples along the path (2000 in Boracchi & Foi and DeblurGAN).

    Returns:
        ``(s, s)`` float64, non-negative, sums to 1.
    """
    size = _check_size(size)
    if num_steps < 2:
        raise ValueError(f"num_steps: expected an integer >= 2, got {num_steps!r}")
    if length is None:
        length = rng.uniform(0.25 * (size - 1), size - 1)
    if anxiety is None:
        anxiety = rng.uniform(0.003, 0.01)
    if not (math.isfinite(length) and length >= 0):
        raise ValueError(f"length: expected a finite value >= 0, got {length!r}")
    if not (math.isfinite(anxiety) and anxiety >= 0):
        raise ValueError(f"anxiety: expected a finite value >= 0, got {anxiety!r}")
    path = _trajectory(rng, int(num_steps), float(anxiety))
    path = (path - path.mean()) * (float(length) / _TRAJECTORY_REFERENCE_LENGTH)
    half = (size - 1) / 2.0
    reach = max(np.abs(path.real).max(), np.abs(path.imag).max())
    if reach > half:
        path *= half / reach
    x = torch.from_numpy(np.ascontiguousarray(path.real)).view(1, -1)
    y = torch.from_numpy(np.ascontiguousarray(path.imag)).view(1, -1)
    return _splat(x, y, size)[0].numpy()
