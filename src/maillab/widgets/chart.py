"""A small bar chart drawn as SVG, so the course needs no plotting library."""

from __future__ import annotations

from ..i18n import _
from ._common import esc

__all__ = ["bar_chart", "BarChart"]

PALETTE = ["#3d85c6", "#e69138", "#6aa84f", "#a64d79", "#999999"]


class BarChart:
    """Grouped bars: ``{group: {series: value}}``; renders in a notebook (``_repr_html_``)."""

    def __init__(self, data: dict[str, dict[str, float]], title: str = "", unit: str = "",
                 width: int = 560, bar_height: int = 22):
        self.data = data
        self.title = title
        self.unit = unit
        self.width = width
        self.bar_height = bar_height

    @property
    def svg(self) -> str:
        series = list(dict.fromkeys(s for group in self.data.values() for s in group))
        top = max([v for g in self.data.values() for v in g.values()] + [0]) or 1
        label_w, value_w = 150, 90
        plot_w = self.width - label_w - value_w
        y = 28 if self.title else 8
        parts = []
        if self.title:
            parts.append(f'<text x="0" y="16" font-size="14" font-weight="bold">{esc(self.title)}</text>')
        for group, values in self.data.items():
            parts.append(f'<text x="0" y="{y + 14}" font-size="13">{esc(group)}</text>')
            for s in series:
                if s not in values:
                    continue
                v = values[s]
                w = max(1, int(plot_w * v / top))
                colour = PALETTE[series.index(s) % len(PALETTE)]
                parts.append(f'<rect x="{label_w}" y="{y}" width="{w}" height="{self.bar_height - 4}" '
                             f'fill="{colour}"><title>{esc(s)}: {v:g} {esc(self.unit)}</title></rect>')
                parts.append(f'<text x="{label_w + w + 4}" y="{y + 14}" font-size="12">'
                             f"{_fmt(v)} {esc(self.unit)}</text>")
                y += self.bar_height
            y += 8
        legend_x = 0
        for i, s in enumerate(series):
            colour = PALETTE[i % len(PALETTE)]
            parts.append(f'<rect x="{legend_x}" y="{y}" width="12" height="12" fill="{colour}"/>'
                         f'<text x="{legend_x + 16}" y="{y + 11}" font-size="12">{esc(s)}</text>')
            legend_x += 24 + 8 * len(s)
        y += 20
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" height="{y}" '
                f'font-family="sans-serif" role="img" aria-label="{esc(self.title or _("chart"))}">'
                + "".join(parts) + "</svg>")

    def _repr_html_(self) -> str:
        return self.svg

    def __repr__(self) -> str:
        return f"<BarChart {self.title!r}: {len(self.data)} groups>"

    def _repr_svg_(self) -> str:
        return self.svg


def _fmt(v: float) -> str:
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def bar_chart(data: dict[str, dict[str, float]], title: str = "", unit: str = "") -> BarChart:
    """``bar_chart({"disk": {"POP3": 0.1, "IMAP": 2.3}}, "Server load", "MB")``."""
    return BarChart(data, title, unit)
