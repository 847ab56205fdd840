"""What a comparison measures and the papers' orderings it checks.

:data:`METRICS` are every measured quantity, :data:`ESTIMATOR`, :data:`DIRECT_SR` and
:data:`STAGE2` the kinds of rows, :data:`STAGE2_LABELS` the labels of the blind-SR
reference rows, and :data:`PAPERS` what a preset compares against (its ``paper``
key): the table's columns, how they are measured, and the paper's comparative claims,
each an ordering of two labels on one metric (:data:`CLAIMS` for CMOS,
:data:`ARCSR_CLAIMS` for ArcSR, :data:`PBASR_CLAIMS` for PBaSR, :data:`SSR_CLAIMS` for
SSR); :func:`claim_lines` says whether each holds.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ARCSR_CLAIMS",
    "BETTER",
    "CLAIMS",
    "BASELINE",
    "DIRECT_SR",
    "ESTIMATOR",
    "EQUAL",
    "METRICS",
    "NOT_WORSE",
    "PAPERS",
    "PBASR_CLAIMS",
    "SSR_CLAIMS",
    "SSR_STAGE",
    "STAGE2",
    "SVKR_EVAL",
    "STAGE2_LABELS",
    "Paper",
    "claim_lines",
    "paper_of",
    "summarize",
]

#: Every measured quantity: (metric key, label, higher is better). A row holds each key
#: (NaN where not logged); a preset's table shows its paper's :attr:`Paper.columns`.
METRICS: tuple[tuple[str, str, bool], ...] = (
    ("test/blur/psnr", "blur PSNR (dB)", True),
    ("test/blur/ssim", "blur SSIM", True),
    ("test/blur/mae", "blur MAE (px)", False),
    ("test/blur/boundary_mae", "boundary MAE (px)", False),
    ("test/blur/boundary_psnr", "boundary PSNR (dB)", True),
    ("test/seg/miou", "mIoU", True),
    ("test/sr/psnr_y", "blind-SR PSNR-Y (dB)", True),
    ("test/sr/ssim_y", "blind-SR SSIM-Y", True),
    ("test/kernels/l1", "kernel L1", False),
    # SR by region of the test image's blur_mask (svblur.metrics.RegionMetrics; PBaSR)
    *(
        (f"test/sr/{region}/{metric}", f"{name} {label}", better)
        for metric, label, better in (
            ("psnr_y", "PSNR-Y (dB)", True),
            ("ssim_y", "SSIM-Y", True),
            ("gmsd", "GMSD", False),
        )
        for region, name in (("all", "whole"), ("blurred", "blurred"), ("sharp", "sharp"))
    ),
    # the deployed generator (a model's export): its size and time per test image
    ("inference/params", "inference params", False),
    ("inference/ms", "inference (ms/image)", False),
)

#: The keys of :data:`METRICS` that only the PBaSR comparison measures.
_PBASR_ONLY = tuple(
    k
    for k, _, _ in METRICS
    if k.startswith(("test/sr/all/", "test/sr/blurred/", "test/sr/sharp/", "inference/"))
)

#: The ``kind`` of a comparison's row: a stage-1 estimator (blur / semantic maps or a
#: kernel field; blind SR by stages 2 and 3), a direct blind-SR model (trained and tested
#: on SR itself, e.g. ArcSR), or a stage-2 reference network.
ESTIMATOR, DIRECT_SR, STAGE2 = "estimator", "direct_sr", "stage2"

#: The trivial baselines' rows (:func:`svblur.experiments.baselines.baseline_scores`):
#: ``constant`` (the training split's mean sigma or mean kernel) and ``bicubic``.
BASELINE = "baseline"

#: SSR's kinds of rows: one measurement of the SVKR evaluation (experiment=
#: synthetic_ssr_svkr; one row per refinement step T and one without depth), and a
#: training stage of SSR shared by a seed's SSR rows (stage 1, DKENet; stage 2, RRDB-SFT
#: on ground-truth kernel codes), listed with the references.
SVKR_EVAL, SSR_STAGE = "svkr", "ssr_stage"

#: Labels of the stage-2 reference rows (RRDB-SFT tested on ground-truth inputs, the
#: paper's "upper bound"), by what it takes: blur + semantic maps, the blur map only, or
#: the kernel field (for the kernel estimators, e.g. MANet's kernel head).
STAGE2_LABELS: dict[str, str] = {
    "seg": "stage2_gt_blur_seg",
    "blur": "stage2_gt_blur",
    "kernels": "stage2_gt_kernels",
}

#: How a claim's two models compare: ``good`` better than ``bad``; not worse (better, or
#: worse by less than the combined seed spread); equal (the same value in every run).
BETTER, NOT_WORSE, EQUAL = ">", ">=", "="

#: A claim: (better model, worse model, metric key, where the paper states it), with the
#: relation as an optional fifth item (:data:`BETTER` when absent).
Claim = tuple[str, ...]

#: The CMOS paper's orderings.
CLAIMS: tuple[Claim, ...] = (
    (
        "cmos_full",
        "manet",
        "test/blur/psnr",
        "Tab. 2/3 (SR): CMOS outperforms MANet by large margins",
    ),
    (
        "cmos_full",
        "manet",
        "test/blur/boundary_mae",
        "the paper's motivation: semantics help at depth edges",
    ),
    (
        "cmos_single_blur",
        "cmos_full",
        "test/blur/psnr",
        "Tab. 7: single-task blur slightly higher, 24.58 vs 24.52 dB",
    ),
    (
        "cmos_full",
        "cmos_single_blur",
        "test/blur/boundary_mae",
        "the paper's motivation: semantics help at depth edges",
    ),
    ("cmos_full", "cmos_no_gia", "test/blur/psnr", "Tab. 5: full GIA best on blur PSNR"),
    ("cmos_full", "cmos_no_gia", "test/seg/miou", "Tab. 5: full GIA best on mIoU"),
    (
        "cmos_full",
        "manet",
        "test/sr/psnr_y",
        "Tab. 2/3: blind SR with CMOS's maps beats blind SR with MANet's",
    ),
    (
        STAGE2_LABELS["seg"],
        "cmos_full",
        "test/sr/psnr_y",
        "Tab. 2/3: SR from ground-truth maps is the upper bound of blind SR",
    ),
)

_ARCSR_BLIND = ("arcsr_full", "arcsr_no_dmconv", "arcsr_no_kgconv", "arcsr_baseline", "manet")

#: The ArcSR paper's orderings (Liu & Hao; REDS / GoPro PSNR), on blind-SR PSNR-Y.
ARCSR_CLAIMS: tuple[Claim, ...] = (
    (
        "arcsr_full",
        "arcsr_no_dmconv",
        "test/sr/psnr_y",
        "Tab. 1: DMConv helps, 24.04/24.33 vs 23.76/24.28 dB",
    ),
    (
        "arcsr_full",
        "arcsr_no_kgconv",
        "test/sr/psnr_y",
        "Tab. 1: KGConv helps, 24.04/24.33 vs 23.74/24.23 dB",
    ),
    (
        "arcsr_no_dmconv",
        "arcsr_baseline",
        "test/sr/psnr_y",
        "Tab. 1: KGConv alone beats the baseline, 23.76/24.28 vs 23.63/24.17 dB",
    ),
    (
        "arcsr_no_kgconv",
        "arcsr_baseline",
        "test/sr/psnr_y",
        "Tab. 1: DMConv alone beats the baseline, 23.74/24.23 vs 23.63/24.17 dB",
    ),
    (
        "arcsr_full",
        "manet",
        "test/sr/psnr_y",
        "Tab. 2: ArcSR beats MANet's blind SR, 24.04/24.33 vs 23.95/23.89 dB",
    ),
    *(
        (
            STAGE2_LABELS["kernels"],
            model,
            "test/sr/psnr_y",
            "SR from the ground-truth kernels is the upper bound of blind SR",
        )
        for model in _ARCSR_BLIND
    ),
)

#: The PBaSR paper's claims (Qin et al., ECCV 2024; stated there with LPIPS on ReBlurSR-Test
#: and DIV2K), checked here by region of the blur mask: the merged two-branch generator
#: against the general anchor and the one-branch model fine-tuned on the mixed data.
PBASR_CLAIMS: tuple[Claim, ...] = (
    (
        "pbasr",
        "anchor",
        "test/sr/blurred/psnr_y",
        "abstract, Tab. 3: better on blur data than the anchor",
    ),
    (
        "pbasr",
        "anchor_ft_mixed",
        "test/sr/blurred/psnr_y",
        "Tab. 2: two branches + CFM beat one model trained on the mixed data",
    ),
    (
        "pbasr",
        "anchor",
        "test/sr/sharp/psnr_y",
        "Sec. 1: blur handled without affecting general quality (here: sharp regions)",
        NOT_WORSE,
    ),
    (
        "pbasr",
        "anchor",
        "inference/params",
        "CFM: no extra inference or deployment cost (the deployed generator's size)",
        EQUAL,
    ),
)


#: The SSR paper's orderings (no code released; DIV2K valid, x4), checked on the rows that
#: ``svblur-compare preset=ssr_small`` makes: ``svkr_t{1,2,3}`` (SVKR after T refinement
#: steps, depth from the SR image by the stage-1 depth network), ``svkr_no_depth`` (T = 3,
#: DKENet without depth), ``diffusion_amf`` (stage 3 on that SVKR) and ``manet``.
SSR_CLAIMS: tuple[Claim, ...] = (
    (
        "svkr_t3",
        "svkr_no_depth",
        "test/kernels/l1",
        "Sec. 3.1 / Tab. 2: depth-informed kernels are more accurate than kernels without depth",
    ),
    (
        "svkr_t3",
        "svkr_no_depth",
        "test/sr/psnr_y",
        "Tab. 2: DI-Kernel + depth 21.98 vs DI-Kernel alone 21.26 dB",
    ),
    (
        "svkr_t3",
        "svkr_t1",
        "test/kernels/l1",
        "Alg. 1 / Fig. 4: refinement (T = 3) improves the kernels over one pass",
    ),
    (
        "svkr_t3",
        "svkr_t1",
        "test/sr/psnr_y",
        "Tab. 2: SVKR adds 3.59 % PSNR, 22.77 vs 21.98 dB",
    ),
    (
        "diffusion_amf",
        "svkr_t3",
        "test/sr/psnr_y",
        "Tab. 1/2: the diffusion SR with AMF is SSR's output (reported gains are mostly "
        "perceptual, LPIPS / MUSIQ / NIQE; PSNR need not favour diffusion)",
    ),
    (
        # both on the HR grid: diffusion_amf's kernels are its frozen SVKR's (T = 3)
        "diffusion_amf",
        "manet",
        "test/kernels/l1",
        "Sec. 1-2: depth-informed spatially variant kernels beat MANet's (SVKR's T = 3 "
        "kernels as diffusion_amf measures them, per HR pixel as MANet's)",
    ),
    (
        "diffusion_amf",
        "manet",
        "test/sr/psnr_y",
        "Tab. 1: SSR beats MANet's blind SR",
    ),
    (
        "svkr_t3",
        "manet",
        "test/sr/psnr_y",
        "Tab. 1, SVKR's non-blind SR alone: SSR's kernel pipeline beats MANet's blind SR",
    ),
)


@dataclass(frozen=True)
class Paper:
    """What a comparison preset is measured against (its ``paper`` key).

    Attributes:
        title: The paper, as the tables name it.
        columns: Metric keys (of :data:`METRICS`) shown in the tables, in order.
        metrics_note: How these metrics are measured (the tables' opening paragraph).
        claims: The paper's orderings checked by :func:`claim_lines`.
    """

    title: str
    columns: tuple[str, ...]
    metrics_note: str
    claims: tuple[Claim, ...]


#: The papers a preset may name (``paper: cmos`` unless it says otherwise).
PAPERS: dict[str, Paper] = {
    "cmos": Paper(
        title="CMOS",
        columns=tuple(
            k for k, _, _ in METRICS if not k.startswith("test/kernels/") and k not in _PBASR_ONLY
        ),
        metrics_note=(
            "Blur PSNR/SSIM: sigma/5, range 1; MAE in sigma pixels (lower is better); "
            "boundary = pixels within 3 px of a depth jump > 10 % (svblur.metrics.boundary)."
        ),
        claims=CLAIMS,
    ),
    "arcsr": Paper(
        title="ArcSR",
        columns=("test/sr/psnr_y", "test/sr/ssim_y", "test/kernels/l1"),
        metrics_note=(
            "Kernel L1: the stage-1 kernel estimate against the ground-truth kernel field, "
            "summed over the taps, mean over pixels (svblur.metrics.kernel_l1; 0 to 2, lower "
            "is better; ArcSR's kernels are unsupervised and measured only where their size "
            "is the data's). Blind-SR PSNR-Y/SSIM-Y: ArcSR's own SR, MANet's by stages 2 "
            "and 3 (see the notes)."
        ),
        claims=ARCSR_CLAIMS,
    ),
    "pbasr": Paper(
        title="PBaSR",
        columns=_PBASR_ONLY,
        metrics_note=(
            "Every model is tested on the same partially blurred test images (blur_mask: 1 "
            "blurred, 0 sharp), by region (svblur.metrics.RegionMetrics): PSNR-Y/SSIM-Y "
            "(Y channel, a border of `scale` pixels cropped, 8-bit) over the whole image, "
            "its blurred and its sharp pixels; GMSD (lower is better) of the SR image with "
            "the other region replaced by the reference. Inference: the deployed generator "
            "(the model's export, PBaSR's merged (W_G + W_B) / 2) loaded into a plain "
            "network of the anchor's architecture, its parameters and the time of a forward "
            "pass per test image (best of 11, first test batch) on this machine."
        ),
        claims=PBASR_CLAIMS,
    ),
    "ssr": Paper(
        title="SSR",
        columns=("test/kernels/l1", "test/sr/psnr_y", "test/sr/ssim_y"),
        metrics_note=(
            "Kernel L1: the estimated kernel field against the ground truth of "
            "degradation=gaussian_sv, summed over the taps, mean over pixels "
            "(svblur.metrics.kernel_l1; 0 to 2, lower is better); the svkr_* and "
            "ssr_stage1* rows on the LR grid (both fields averaged over each x4 block, as "
            "stage 1 is trained), diffusion_amf (its SVKR's T = 3 kernels) and manet per HR "
            "pixel, which is larger for the same estimate: compare within each group. "
            "svkr_tT: SVKR (Alg. 1, gamma 0.9) after T refinement steps, depth estimated "
            "from the current SR image by the stage-1 depth network; svkr_no_depth: T = 3 "
            "with the no-depth DKENet (see the notes); diffusion_amf: SSR's stage 3, its "
            "kernels the frozen SVKR's (T = 3). PSNR-Y/SSIM-Y: Y channel, a border of "
            "`scale` pixels cropped, 8-bit."
        ),
        claims=SSR_CLAIMS,
    ),
}


def paper_of(name: str | None) -> Paper:
    """The :data:`PAPERS` entry named by a preset's ``paper`` key (``None``: CMOS).

    Raises:
        ValueError: An unknown name (the message lists the known ones).
    """
    key = name or "cmos"
    if key not in PAPERS:
        raise ValueError(f"paper={key!r} is unknown; known: {sorted(PAPERS)}")
    return PAPERS[key]


def summarize(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation of the non-NaN ``values``.

    Returns:
        ``(mean, std)``: the mean is NaN without values, the std with fewer than two.
    """
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return math.nan, math.nan
    mean = statistics.fmean(finite)
    std = statistics.stdev(finite) if len(finite) > 1 else math.nan
    return mean, std


def claim_lines(rows: list[dict[str, Any]], claims: tuple[Claim, ...] = CLAIMS) -> list[str]:
    """One line per paper ordering: whether it holds here, and by how much.

    Args:
        rows: One dict per run with ``model`` and keys of :data:`METRICS` (missing keys
            count as NaN). Orderings whose models or values are missing are left out.
        claims: The orderings to check (the CMOS paper's unless given).

    Returns:
        Markdown list items, e.g. ``"- cmos_full > manet on blur PSNR (dB) (...): holds;
        30.5000 vs 28.5000"``; "(difference within seed spread)" is added when the
        difference is smaller than the combined standard deviations. A :data:`NOT_WORSE`
        claim (``>=``) holds when ``good`` is better, equal, or worse by no more than the
        combined standard deviations (with one seed: not worse at all); an :data:`EQUAL`
        claim (``=``) when every run of both models has the same value.
    """
    by_model: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        for key, _, _ in METRICS:
            value = row.get(key, math.nan)
            by_model.setdefault(row["model"], {}).setdefault(key, []).append(value)
    higher = {key: better for key, _, better in METRICS}
    lines = []
    for claim in claims:
        good, bad, key, source = claim[:4]
        relation = claim[4] if len(claim) > 4 else BETTER
        if good not in by_model or bad not in by_model:
            continue
        (m_good, s_good), (m_bad, s_bad) = (
            summarize(by_model[good][key]),
            summarize(by_model[bad][key]),
        )
        if math.isnan(m_good) or math.isnan(m_bad):
            continue
        diff = m_good - m_bad
        better = diff > 0 if higher[key] else diff < 0
        spread = math.hypot(s_good, s_bad) if not (math.isnan(s_good) or math.isnan(s_bad)) else 0
        clear = abs(diff) > spread if spread > 0 else None
        symbol = {True: ">", False: "<"}[higher[key]]
        if relation == EQUAL:
            holds = all(v == m_bad for v in by_model[good][key] + by_model[bad][key])
            verdict, symbol = ("holds" if holds else "does NOT hold"), "="
        elif relation == NOT_WORSE:
            # not worse: better, equal, or worse by no more than the combined seed spread
            holds = better or diff == 0 or (spread > 0 and abs(diff) <= spread)
            verdict, symbol = ("holds" if holds else "does NOT hold"), symbol + "="
            if holds and not better and diff != 0:
                verdict += " (worse, but within seed spread)"
        else:
            verdict = "holds" if better else "does NOT hold"
            if clear is False:
                verdict += " (difference within seed spread)"
        label = next(lbl for k, lbl, _ in METRICS if k == key)
        lines.append(
            f"- {good} {symbol} {bad} on {label} ({source}): {verdict}; {m_good:.4f} vs {m_bad:.4f}"
        )
    return lines
