"""Draw svblur's floors (``docs/floors.svg``) from :data:`svblur.floors.FLOORS`.

Each floor is a row of boxes, one per package, the lowest floor at the bottom; a package
imports only from the rows below its own. The picture is plain SVG text, so it needs no
plotting library and changes only when the floors do.

Usage::

    python docs/floors.py                  # writes docs/floors.svg
    python docs/floors.py --output f.svg
"""

from __future__ import annotations

import argparse
from html import escape
from pathlib import Path

from svblur.floors import FLOORS

ROW_HEIGHT = 46
BOX_HEIGHT = 32
BOX_WIDTH = 118
BOX_GAP = 12
LABEL_WIDTH = 78
ARROW_WIDTH = 150
MARGIN = 16
FONT = "font-family='DejaVu Sans, Helvetica, Arial, sans-serif'"


def floors_svg(floors: tuple[tuple[str, ...], ...] = FLOORS) -> str:
    """The SVG text of the picture: one row per floor, the lowest at the bottom."""
    widest = max(len(names) for names in floors)
    rows_width = widest * BOX_WIDTH + (widest - 1) * BOX_GAP
    width = 2 * MARGIN + LABEL_WIDTH + rows_width + ARROW_WIDTH
    height = 2 * MARGIN + len(floors) * ROW_HEIGHT
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}' {FONT} font-size='13'>",
        f"<rect width='{width}' height='{height}' fill='white'/>",
    ]
    for index, names in enumerate(floors):
        # floor 0 in the bottom row
        top = MARGIN + (len(floors) - 1 - index) * ROW_HEIGHT
        box_top = top + (ROW_HEIGHT - BOX_HEIGHT) / 2
        middle = top + ROW_HEIGHT / 2
        shade = "#eef3fb" if index % 2 == 0 else "#f7f7f7"
        parts.append(
            f"<rect x='{MARGIN}' y='{top}' width='{LABEL_WIDTH + rows_width}' "
            f"height='{ROW_HEIGHT}' fill='{shade}'/>"
        )
        parts.append(
            f"<text x='{MARGIN + 8}' y='{middle}' dominant-baseline='middle' "
            f"fill='#555'>floor {index}</text>"
        )
        # the floor's boxes, centred in the row
        used = len(names) * BOX_WIDTH + (len(names) - 1) * BOX_GAP
        left = MARGIN + LABEL_WIDTH + (rows_width - used) / 2
        for position, name in enumerate(names):
            x = left + position * (BOX_WIDTH + BOX_GAP)
            parts.append(
                f"<rect x='{x}' y='{box_top}' width='{BOX_WIDTH}' height='{BOX_HEIGHT}' "
                "rx='5' fill='white' stroke='#2f5597' stroke-width='1.5'/>"
            )
            parts.append(
                f"<text x='{x + BOX_WIDTH / 2}' y='{middle}' text-anchor='middle' "
                f"dominant-baseline='middle' font-family='DejaVu Sans Mono, monospace'>"
                f"{escape(name)}</text>"
            )
    # one arrow down the right side: the direction imports may point
    arrow_x = MARGIN + LABEL_WIDTH + rows_width + 28
    top, bottom = MARGIN + 8, height - MARGIN - 8
    parts += [
        "<defs><marker id='head' markerWidth='10' markerHeight='10' refX='5' refY='9' "
        "orient='auto' markerUnits='userSpaceOnUse'>"
        "<path d='M0,0 L10,0 L5,10 z' fill='#2f5597'/></marker></defs>",
        f"<line x1='{arrow_x}' y1='{top}' x2='{arrow_x}' y2='{bottom}' stroke='#2f5597' "
        "stroke-width='2' marker-end='url(#head)'/>",
        f"<text x='{arrow_x + 12}' y='{height / 2 - 9}' fill='#2f5597'>imports only</text>",
        f"<text x='{arrow_x + 12}' y='{height / 2 + 9}' fill='#2f5597'>from lower floors</text>",
        "</svg>",
    ]
    return "\n".join(parts) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).with_name("floors.svg"), help="SVG file"
    )
    args = parser.parse_args()
    args.output.write_text(floors_svg())
    print(args.output)


if __name__ == "__main__":
    main()
