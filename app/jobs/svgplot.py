"""The two charts of the HTML reports, as inline SVG: no plotting library.

``drift --html`` draws one grouped bar chart per feature (reference against
observed shares); ``evaluate --html`` one reliability diagram per group.
Both are a few rectangles, lines and labels, so they are written here
rather than pulling matplotlib and its image stack (~75 MB) into the
jobs install. Each function returns one ``<svg>`` element, text escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

BLUE = "#1565c0"
ORANGE = "#ef6c00"
GREY = "#999"
FONT = "font-family='sans-serif'"


def _svg(width: int, height: int, label: str, body: list[str]) -> str:
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' role='img' aria-label='{escape(label, quote=True)}' "
        f"width='{width}' height='{height}' viewBox='0 0 {width} {height}'>"
        f"<title>{escape(label)}</title>{''.join(body)}</svg>"
    )


def _text(x: float, y: float, text: str, size: int = 10, anchor: str = "middle", extra: str = "") -> str:
    attrs = f"x='{x:.1f}' y='{y:.1f}' font-size='{size}' text-anchor='{anchor}' {FONT}{extra}"
    return f"<text {attrs}>{escape(text)}</text>"


def _legend(x: float, y: float, items: Sequence[tuple[str, str]]) -> list[str]:
    out = []
    for i, (name, color) in enumerate(items):
        top = y + 14 * i
        out.append(f"<rect x='{x:.1f}' y='{top:.1f}' width='10' height='10' fill='{color}'/>")
        out.append(_text(x + 14, top + 9, name, 9, "start"))
    return out


def grouped_bars(title: str, labels: Sequence[str], reference: Sequence[float], observed: Sequence[float]) -> str:
    """Reference and observed share per bin, side by side, with the bin labels under the axis."""
    width, height = 480, 260
    left, right, top, bottom = 48, 12, 28, 80
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max([*reference, *observed, 0.0]) or 1.0
    n = max(1, len(labels))
    slot = plot_w / n
    bar = slot * 0.4

    def y_of(share: float) -> float:
        return top + plot_h * (1 - share / peak)

    body = [_text(width / 2, 16, title, 11)]
    for tick in (0.0, peak / 2, peak):
        y = y_of(tick)
        body.append(f"<line x1='{left}' y1='{y:.1f}' x2='{left + plot_w}' y2='{y:.1f}' stroke='#eee'/>")
        body.append(_text(left - 4, y + 3, f"{tick:.2f}", 8, "end"))
    for i, label in enumerate(labels):
        x = left + slot * i + slot / 2
        for offset, share, color in ((-bar, reference[i], BLUE), (0.0, observed[i], ORANGE)):
            y = y_of(share)
            body.append(
                f"<rect x='{x + offset:.1f}' y='{y:.1f}' width='{bar:.1f}' height='{top + plot_h - y:.1f}' "
                f"fill='{color}'><title>{escape(label)}: {share:.3f}</title></rect>"
            )
        base = top + plot_h + 10
        body.append(_text(x, base, label, 8, "end", f" transform='rotate(-45 {x:.1f} {base:.1f})'"))
    body.append(f"<line x1='{left}' y1='{top + plot_h}' x2='{left + plot_w}' y2='{top + plot_h}' stroke='#333'/>")
    body.append(f"<line x1='{left}' y1='{top}' x2='{left}' y2='{top + plot_h}' stroke='#333'/>")
    body.append(_text(12, top + plot_h / 2, "share", 9, extra=f" transform='rotate(-90 12 {top + plot_h / 2:.1f})'"))
    body += _legend(left + plot_w - 80, top + 2, [("reference", BLUE), ("observed", ORANGE)])
    return _svg(width, height, title, body)


def reliability(title: str, points: Sequence[tuple[float, float, float]]) -> str:
    """Observed positive rate against mean predicted probability, one ``(x, y, weight)`` per bin.

    The diagonal is perfect calibration; each bin's halo grows with its share
    of the rows (``weight`` in 0..1).
    """
    size, margin = 320, 44
    plot = size - 2 * margin

    def at(x: float, y: float) -> tuple[float, float]:
        return margin + plot * x, margin + plot * (1 - y)

    body = [_text(size / 2, 18, title, 11)]
    for tick in (0.0, 0.5, 1.0):
        tx, ty = at(tick, tick)
        body.append(_text(tx, margin + plot + 12, f"{tick:.1f}", 8))
        body.append(_text(margin - 4, ty + 3, f"{tick:.1f}", 8, "end"))
    body.append(f"<rect x='{margin}' y='{margin}' width='{plot}' height='{plot}' fill='none' stroke='#333'/>")
    (x0, y0), (x1, y1) = at(0, 0), at(1, 1)
    body.append(
        f"<line x1='{x0}' y1='{y0}' x2='{x1}' y2='{y1}' stroke='{GREY}' stroke-dasharray='4 3'>"
        "<title>perfectly calibrated</title></line>"
    )
    xy = [at(x, y) for x, y, _ in points]
    if xy:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
        body.append(f"<polyline points='{path}' fill='none' stroke='{BLUE}' stroke-width='1.5'/>")
    for (x, y), (px, py, weight) in zip(xy, points, strict=True):
        halo = max(3.0, 17.0 * max(0.0, min(1.0, weight)) ** 0.5)
        body.append(f"<circle cx='{x:.1f}' cy='{y:.1f}' r='{halo:.1f}' fill='{BLUE}' fill-opacity='0.3'/>")
        body.append(
            f"<circle cx='{x:.1f}' cy='{y:.1f}' r='3' fill='{BLUE}'>"
            f"<title>predicted {px:.3f}, observed {py:.3f}</title></circle>"
        )
    body.append(_text(size / 2, size - 8, "mean predicted probability", 9))
    body.append(_text(12, size / 2, "observed positive rate", 9, extra=f" transform='rotate(-90 12 {size / 2})'"))
    body += _legend(margin + 6, margin + 6, [("perfectly calibrated", GREY), ("observed", BLUE)])
    return _svg(size, size, title, body)
