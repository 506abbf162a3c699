"""The period report as one HTML page with inline SVG charts (no script, nothing fetched):
tickets per day, satisfaction per ISO week, waits per service, the score per clerk; then
the tables per department, service, window and clerk, and the follow-up of bad ratings.
`write` puts it beside the CSV files (hall/periods_csv.py)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hall.periods import KINDS, LEVELS, PeriodReport, ordered
from hall.periods_csv import minutes, row, write_csv

W, H, PAD = 860, 260, 48
BLUE, GREEN, ORANGE, GREY = "#1f77b4", "#2ca02c", "#ff7f0e", "#bbbbbb"
WEIGHT_NAMES = {
    "satisfaction": "满意率 satisfaction",
    "followup": "按时整改 follow-up on time",
    "wait": "等候达标 waits within the maximum",
    "speed": "办理时长达标 service within the expected time",
}


def write(report: PeriodReport, out: Path) -> list[Path]:
    """period.html, period.csv and period-days.csv in `out`; the page first."""
    files = write_csv(report, out)
    page = out / "period.html"
    page.write_text(render(report), encoding="utf-8")
    return [page, *files]


def render(r: PeriodReport) -> str:
    title = f"电子监察 Period report {r.period.label}"
    parts = [
        "<!doctype html><html lang='zh-CN'><meta charset='utf-8'>",
        f"<title>{_e(title)}</title><style>{_CSS}</style>",
        f"<h1>{_e(r.site)} — {_e(title)}</h1>",
        f"<p class='when'>{r.period.first} – {r.period.last}, {len(r.days)} days</p>",
        _summary(r),
        "<h2>每日取号 Tickets per day</h2>",
        _day_bars(r),
        "<h2>每周满意率 Satisfaction per week</h2>",
        _week_bars(r),
        "<h2>各事项等候 Waits per service (minutes, p50 and p90)</h2>",
        _wait_bars(r),
        "<h2>工作人员绩效 Score per clerk</h2>",
        _score_bars(r),
    ]
    for kind, heading in KINDS[1:]:
        parts.append(f"<h2>{_e(heading)}</h2>{_table(r, kind)}")
    parts.append("<h2>差评整改 Follow-up of bad ratings</h2>")
    parts.append(_cases(r))
    parts.append(_weights(r))
    parts.append(
        "<p class='files'>CSV: <a href='period.csv'>period.csv</a> (every group) · "
        "<a href='period-days.csv'>period-days.csv</a> (every day)</p>"
    )
    return "\n".join(parts) + "</html>\n"


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, suffix: str = "") -> str:
    return "—" if value is None else f"{value:g}{suffix}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _summary(r: PeriodReport) -> str:
    h = row(r.hall, r, "hall")
    appointments = (
        f"{h['appointment_checkins']} checked in, {h['appointment_no_shows']} no-shows"
        if r.appointments_seen
        else "—"
    )
    items = [
        ("取号 tickets", h["tickets"]),
        ("办结 served", h["served"]),
        ("过号 no-shows", h["no_shows"]),
        ("等候 wait p50 / p90", f"{_fmt(h['wait_p50_min'])} / {_fmt(h['wait_p90_min'])} min"),
        ("办理 mean service", f"{_fmt(h['service_mean_min'])} min"),
        ("满意率 satisfaction", _pct(r.hall.satisfaction)),
        ("评价 ratings", f"{h['rated']} ({h['excluded_by_appeal']} taken out by appeals)"),
        ("差评 bad ratings", h["bad_ratings"]),
        (
            "整改 cases",
            f"{h['cases']}: {h['cases_on_time']} on time, {h['cases_late']} late, "
            f"{h['cases_overdue']} overdue, {h['cases_open']} open; "
            f"{h['cases_appealed']} appealed, {h['appeals_upheld']} upheld",
        ),
        ("超时等候 max-wait alerts", h["max_wait_alerts"]),
        ("预约 appointments", appointments),
        ("综合得分 score", _fmt(h["score"])),
    ]
    cells = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in items)
    return f"<table class='summary'>{cells}</table>"


def _table(r: PeriodReport, kind: str) -> str:
    levels = sorted(LEVELS, reverse=True)
    head = (
        "<tr><th></th><th>tickets</th><th>served</th><th>no-shows</th><th>wait p50</th>"
        "<th>p90</th><th>service</th><th>满意率</th>"
        + "".join(f"<th>{LEVELS[n]}</th>" for n in levels)
        + "<th>差评</th><th>申诉成立</th><th>cases on time / late / overdue / open</th>"
        "<th>申诉</th><th>超时</th><th>预约 in / no-show</th><th>score</th></tr>"
    )
    body = []
    for g in ordered(r.groups[kind].values()):
        x = row(g, r, kind)
        appointments = (
            f"{x['appointment_checkins']} / {x['appointment_no_shows']}"
            if r.appointments_seen
            else "—"
        )
        cells = [
            x["tickets"],
            x["served"],
            x["no_shows"],
            _fmt(x["wait_p50_min"]),
            _fmt(x["wait_p90_min"]),
            _fmt(x["service_mean_min"]),
            _pct(g.satisfaction),
            *(x[f"level_{n}"] for n in levels),
            x["bad_ratings"],
            x["excluded_by_appeal"],
            f"{x['cases_on_time']} / {x['cases_late']} / {x['cases_overdue']} / {x['cases_open']}",
            x["cases_appealed"],
            x["max_wait_alerts"],
            appointments,
            _fmt(x["score"]),
        ]
        body.append(
            f"<tr><th>{_e(g.name)}</th>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>"
        )
    if not body:
        return "<p>None.</p>"
    return f"<table>{head}{''.join(body)}</table>"


def _cases(r: PeriodReport) -> str:
    h = r.hall
    if not h.cases:
        return "<p>No bad ratings in the period.</p>"
    return (
        f"<p>{h.cases} cases: <b>{h.on_time}</b> resolved on time, {h.late} late, "
        f"<b>{h.overdue}</b> overdue, {h.open} still open within their deadline; "
        f"{h.appealed} appealed, {h.upheld} upheld (those ratings stay on record but leave "
        "the satisfaction rate and the score). Per clerk and service in the tables above; "
        "every case: <code>quhao cases list</code>.</p>"
    )


def _weights(r: PeriodReport) -> str:
    total = sum(r.weights.values())
    items = "".join(
        f"<li>{_e(WEIGHT_NAMES.get(name, name))}: weight {weight:g}"
        f"{f' ({weight / total:.0%})' if total else ''}</li>"
        for name, weight in r.weights.items()
    )
    return (
        "<h2>评分方法 How the score is made</h2><p>Each part is 0–100; the score is their "
        "mean weighted by the site file's <code>[scoring]</code>; a part with nothing to "
        f"judge is left out and the others' weights rescaled.</p><ul>{items}</ul>"
    )


# ---- SVG ----------------------------------------------------------------------


def _svg(width: float, height: float, body: str, label: str) -> str:
    return (
        f"<svg class='chart' role='img' aria-label='{_e(label)}' width='{width:.0f}' "
        f"height='{height:.0f}' viewBox='0 0 {width:.0f} {height:.0f}'>{body}</svg>"
    )


def _columns(
    bars: Sequence[tuple[str, float, str]], top: float, label: str, fmt: str = "{:g}"
) -> str:
    """Vertical bars (label, value, title) on a 0…top axis."""
    if not bars:
        return "<p>No data.</p>"
    top = top or 1.0
    step = (W - 2 * PAD) / len(bars)
    every = -(-len(bars) // 15)  # at most 15 labels under the axis
    out = [
        f"<line x1='{PAD}' y1='{H - PAD}' x2='{W - PAD}' y2='{H - PAD}' stroke='#444'/>",
        f"<text x='{PAD - 6}' y='{PAD + 4}' font-size='11' text-anchor='end'>"
        f"{_e(fmt.format(top))}</text>",
    ]
    for i, (name, value, title) in enumerate(bars):
        height = max(0.0, value) / top * (H - 2 * PAD)
        x = PAD + i * step
        out.append(
            f"<rect x='{x + 1:.1f}' y='{H - PAD - height:.1f}' width='{max(1.0, step - 2):.1f}' "
            f"height='{height:.1f}' fill='{BLUE}'><title>{_e(title)}</title></rect>"
        )
        if len(bars) <= 12:  # few bars: each with its value
            out.append(
                f"<text x='{x + step / 2:.1f}' y='{H - PAD - height - 4:.1f}' font-size='11' "
                f"text-anchor='middle'>{_e(fmt.format(round(value, 1)))}</text>"
            )
        if i % every == 0:
            out.append(
                f"<text x='{x + step / 2:.1f}' y='{H - PAD + 14}' font-size='10' "
                f"text-anchor='middle'>{_e(name)}</text>"
            )
    return _svg(W, H, "".join(out), label)


def _day_bars(r: PeriodReport) -> str:
    days = list(r.days.values())
    top = max((g.tickets for g in days), default=0)
    bars = [
        (g.key[5:], g.tickets, f"{g.key}: {g.tickets} tickets, {g.served} served") for g in days
    ]
    return _columns(bars, top, "tickets per day")


def _week_bars(r: PeriodReport) -> str:
    bars = [
        (
            g.key,
            100 * (g.satisfaction or 0.0),
            f"{g.key}: {_pct(g.satisfaction)} of {g.counted} ratings",
        )
        for g in r.weeks.values()
    ]
    return _columns(bars, 100.0, "satisfaction per week", "{:g}%")


def _rows(items: list[tuple[str, list[tuple[float, str, str]]]], top: float, label: str) -> str:
    """Horizontal bars: per item one or more (value, colour, text) bars."""
    if not items:
        return "<p>No data.</p>"
    top = top or 1.0
    bar, gap, left = 12, 8, 170
    width = W - left - 80
    y, out = 6.0, []
    for name, bars in items:
        out.append(
            f"<text x='{left - 6}' y='{y + bar * len(bars) / 2 + 4:.1f}' font-size='11' "
            f"text-anchor='end'>{_e(name)}</text>"
        )
        for value, colour, text in bars:
            length = max(0.0, value) / top * width
            out.append(
                f"<rect x='{left}' y='{y:.1f}' width='{length:.1f}' height='{bar - 2}' "
                f"fill='{colour}'><title>{_e(text)}</title></rect>"
                f"<text x='{left + length + 4:.1f}' y='{y + bar - 3:.1f}' font-size='10'>"
                f"{_e(text.rsplit(': ', 1)[-1])}</text>"
            )
            y += bar
        y += gap
    return _svg(W, y + 6, "".join(out), label)


def _wait_bars(r: PeriodReport) -> str:
    items = []
    top = 0.0
    for g in ordered(r.groups["service"].values()):
        p50, p90 = minutes(g.wait(50)), minutes(g.wait(90))
        if p50 is None or p90 is None:
            continue
        top = max(top, p90)
        items.append(
            (g.name, [(p50, BLUE, f"p50: {p50:g} min"), (p90, ORANGE, f"p90: {p90:g} min")])
        )
    return _rows(items, top, "waits per service")


def _score_bars(r: PeriodReport) -> str:
    items = []
    for g in ordered(r.groups["clerk"].values()):
        score = g.score(r.weights)
        if score is not None:
            items.append((g.name, [(score, GREEN, f"score: {score:.1f}")]))
    return _rows(items, 100.0, "score per clerk")


_CSS = """body{font-family:'WenQuanYi Micro Hei',sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;font-size:13px;margin-bottom:1em}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}th{background:#f4f4f4}
table.summary td{text-align:left}th{white-space:nowrap}
.chart{background:#fcfcfc;border:1px solid #eee}
.when{color:#666}"""
