"""Plotly figures for the dashboard, built on the server and drawn by ``static/app.js``.

Each function returns the figure as JSON text (``fig.to_json()``) for a
``<script type="application/json">`` block, and the page shows the same numbers in a
table, so the chart is an enhancement: nothing is only in the picture. Colours are the
stylesheet's (WCAG AA against white) and every trace is named in a legend or title, so
no meaning rests on colour alone.

Traces are validated by ``plotly.graph_objects`` on every build; a layout is validated
once per kind of chart and reused (validating it again costs ~20 ms a chart, which a page
with three charts cannot afford).
"""

from __future__ import annotations

import json
import math
from datetime import date
from decimal import Decimal
from functools import lru_cache
from typing import Any

import plotly.graph_objects as go

from meshclaw.analytics.series import Series

ACCENT = "#0a58ca"
OK = "#116329"
MUTED = "#4a5360"
_FONT = {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 13}
_TICKS = {"day": "%b %d", "week": "%b %d", "month": "%b %Y"}


def period_label(period: str) -> str:
    """How a period's first day is named in headings: "Day", "Week of", "Month"."""
    return {"day": "Day", "week": "Week of", "month": "Month"}.get(period, period)


def point_label(start: date, period: str) -> str:
    """A period as the data table names it: ``2026-03-04``, or ``March 2026`` for a month."""
    return start.strftime("%B %Y") if period == "month" else start.isoformat()


def cost_figure(series: Series) -> str:
    """Cost per period (bars, US dollars)."""
    bars = go.Bar(
        x=_x(series),
        y=[_usd(p.cost_usd) for p in series.points],
        name="Cost",
        marker_color=ACCENT,
        hovertemplate="%{x}: $%{y:,.4f}<extra></extra>",
    )
    return _json([bars], _layout(series.period, "Cost (USD)", money=True))


def outcomes_figure(series: Series) -> str:
    """Outcomes recorded and outcomes accepted (credited) per period (grouped bars)."""
    recorded = go.Bar(
        x=_x(series),
        y=[p.outcomes for p in series.points],
        name="Recorded",
        marker={"color": "#ffffff", "line": {"color": MUTED, "width": 1.5}},
        hovertemplate="%{x}: %{y} recorded<extra></extra>",
    )
    accepted = go.Bar(
        x=_x(series),
        y=[p.credited for p in series.points],
        name="Accepted (credited)",
        marker_color=OK,
        hovertemplate="%{x}: %{y} accepted<extra></extra>",
    )
    layout = _layout(series.period, "Outcomes", legend=True)
    # Counts are whole numbers: without a step Plotly puts ticks at 0.2 and labels them 0, 1.
    most = max((max(p.outcomes, p.credited) for p in series.points), default=0)
    layout["yaxis"]["dtick"] = max(1, math.ceil(most / 5))
    return _json([recorded, accepted], layout)


def cost_per_outcome_figure(series: Series) -> str:
    """Cost per accepted outcome per period (a line; periods without one are gaps)."""
    line = go.Scatter(
        x=_x(series),
        y=[_usd(p.cost_per_outcome) for p in series.points],
        name="Cost per accepted outcome",
        mode="lines+markers",
        connectgaps=False,
        line={"color": ACCENT, "width": 2},
        marker={"size": 8, "symbol": "circle"},
        hovertemplate="%{x}: $%{y:,.4f} per accepted outcome<extra></extra>",
    )
    return _json([line], _layout(series.period, "Cost per accepted outcome (USD)", money=True))


def _x(series: Series) -> list[str]:
    return [p.start.isoformat() for p in series.points]


def _usd(amount: Decimal | None) -> float | None:
    return None if amount is None else float(amount)


def _json(traces: list[Any], layout: dict[str, Any]) -> str:
    """The figure as JSON; the layout was validated when it was first built."""
    return str(go.Figure(data=traces, layout=layout, _validate=False).to_json())


@lru_cache(maxsize=64)
def _layout_json(period: str, y_title: str, money: bool, legend: bool) -> str:
    yaxis: dict[str, Any] = {
        "title": {"text": y_title},
        "automargin": True,  # long money tick labels must not run into the axis title
        "rangemode": "tozero",
        "gridcolor": "#d0d7de",
        "zerolinecolor": "#8c959f",
    }
    if money:
        # Agent costs are often fractions of a cent: plain decimals, not SI ("800µ").
        yaxis["tickprefix"] = "$"
        yaxis["tickformat"] = ",.4~f"
    else:
        yaxis["tickformat"] = ",d"
    layout = go.Layout(
        template="none",
        font={**_FONT, "color": "#1b1f24"},
        height=320,
        margin={"l": 64, "r": 16, "t": 32 if not legend else 48, "b": 48},
        showlegend=legend,
        xaxis={
            "type": "date",
            "tickformat": _TICKS[period],
            "title": {"text": period_label(period)},
        },
        yaxis=yaxis,
        paper_bgcolor="#ffffff",
        plot_bgcolor="#ffffff",
    )
    if legend:
        layout.update(barmode="group", legend={"orientation": "h", "y": 1.15})
    return json.dumps(layout.to_plotly_json())


def _layout(
    period: str, y_title: str, *, money: bool = False, legend: bool = False
) -> dict[str, Any]:
    """A fresh copy of a validated layout (validated once per kind of chart)."""
    layout: dict[str, Any] = json.loads(_layout_json(period, y_title, money, legend))
    return layout
