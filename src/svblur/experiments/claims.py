"""What a comparison measures and the CMOS paper's orderings it checks.

:data:`METRICS` are the columns of the results table, :data:`STAGE2_LABELS` the labels of
the blind-SR reference rows, and :data:`CLAIMS` the paper's comparative claims, each an
ordering of two labels on one metric; :func:`claim_lines` says whether each holds.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

__all__ = ["CLAIMS", "METRICS", "STAGE2_LABELS", "claim_lines", "summarize"]

#: Columns of the results table: (metric key, label, higher is better).
METRICS: tuple[tuple[str, str, bool], ...] = (
    ("test/blur/psnr", "blur PSNR (dB)", True),
    ("test/blur/ssim", "blur SSIM", True),
    ("test/blur/mae", "blur MAE (px)", False),
    ("test/blur/boundary_mae", "boundary MAE (px)", False),
    ("test/blur/boundary_psnr", "boundary PSNR (dB)", True),
    ("test/seg/miou", "mIoU", True),
    ("test/sr/psnr_y", "blind-SR PSNR-Y (dB)", True),
    ("test/sr/ssim_y", "blind-SR SSIM-Y", True),
)

#: Labels of the stage-2 reference rows (RRDB-SFT tested on ground-truth maps, the
#: paper's "upper bound"), by the maps it takes: blur + semantics, or blur only.
STAGE2_LABELS: dict[str, str] = {"seg": "stage2_gt_blur_seg", "blur": "stage2_gt_blur"}

#: The paper's orderings (better model, worse model, metric, where the paper states it).
CLAIMS: tuple[tuple[str, str, str, str], ...] = (
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


def claim_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One line per paper ordering: whether it holds here, and by how much.

    Args:
        rows: One dict per run with ``model`` and every key of :data:`METRICS` (NaN where
            not measured). Orderings whose models or values are missing are left out.

    Returns:
        Markdown list items, e.g. ``"- cmos_full > manet on blur PSNR (dB) (...): holds;
        30.5000 vs 28.5000"``; "(difference within seed spread)" is added when the
        difference is smaller than the combined standard deviations.
    """
    by_model: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        for key, _, _ in METRICS:
            value = row.get(key, math.nan)
            by_model.setdefault(row["model"], {}).setdefault(key, []).append(value)
    higher = {key: better for key, _, better in METRICS}
    lines = []
    for good, bad, key, source in CLAIMS:
        if good not in by_model or bad not in by_model:
            continue
        (m_good, s_good), (m_bad, s_bad) = (
            summarize(by_model[good][key]),
            summarize(by_model[bad][key]),
        )
        if math.isnan(m_good) or math.isnan(m_bad):
            continue
        diff = m_good - m_bad
        holds = diff > 0 if higher[key] else diff < 0
        spread = math.hypot(s_good, s_bad) if not (math.isnan(s_good) or math.isnan(s_bad)) else 0
        clear = abs(diff) > spread if spread > 0 else None
        verdict = "holds" if holds else "does NOT hold"
        if clear is False:
            verdict += " (difference within seed spread)"
        label = next(lbl for k, lbl, _ in METRICS if k == key)
        lines.append(
            f"- {good} {'>' if higher[key] else '<'} {bad} on {label} ({source}): {verdict}; "
            f"{m_good:.4f} vs {m_bad:.4f}"
        )
    return lines
