"""The reports' inline SVG charts: well-formed, one mark per value, text escaped."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from app.jobs import svgplot

NS = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{NS}svg"
    return root


def test_grouped_bars_draw_two_bars_per_bin_with_their_labels():
    labels = ["<= 0.5", "(0.5, 2]", "> 2 & more"]
    root = parse(svgplot.grouped_bars("amount — PSI 0.412 (alert)", labels, [0.2, 0.5, 0.3], [0.6, 0.1, 0.3]))
    bars = [r for r in root.iter(f"{NS}rect") if r.find(f"{NS}title") is not None]
    assert len(bars) == 2 * len(labels)
    texts = [t.text for t in root.iter(f"{NS}text")]
    assert set(labels) <= set(texts) and "amount — PSI 0.412 (alert)" in texts
    heights = [float(b.get("height", "nan")) for b in bars]
    assert max(heights) == pytest.approx(heights[1])  # observed 0.6, the tallest, sets the scale
    assert heights[1] == pytest.approx(6 * heights[3], abs=0.5)  # 0.6 against 0.1


def test_grouped_bars_with_all_zero_shares_still_draw():
    root = parse(svgplot.grouped_bars("empty", ["a"], [0.0], [0.0]))
    assert all(float(r.get("height", "0")) == 0 for r in root.iter(f"{NS}rect") if r.find(f"{NS}title") is not None)


def test_reliability_places_points_on_the_unit_square():
    points = [(0.1, 0.05, 0.5), (0.9, 0.95, 0.5)]
    root = parse(svgplot.reliability("v2 <ios>", points))
    marks = [c for c in root.iter(f"{NS}circle") if c.find(f"{NS}title") is not None]
    assert len(marks) == 2
    (x0, y0), (x1, y1) = ((float(c.get("cx", "nan")), float(c.get("cy", "nan"))) for c in marks)
    assert x0 < x1 and y0 > y1  # up and to the right, in SVG's downward y
    assert root.find(f"{NS}title").text == "v2 <ios>"  # type: ignore[union-attr]


def test_reliability_without_bins_is_an_empty_frame():
    root = parse(svgplot.reliability("none", []))
    assert not list(root.iter(f"{NS}polyline"))
