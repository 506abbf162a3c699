"""The day's report from the hall's database: HTML with charts, and CSV.

`quhao report --db state/hall.sqlite --day 2026-11-23 --out report/` works on a
real hall's database as well as on a simulated day's. Everything is computed
from the `tickets` projection and the event log; no person key is read or written.

Per service, window and clerk (by name and staff number): issued (and of them, per
service and in total, issued offline from a kiosk's lease), served, no-shows,
voided, wait p50/p90/max, mean service time, satisfaction (rate = 非常满意 + 满意 over
rated tickets) with the five-level distribution and the unrated count, quota refusals.
Charts: queue length through the day per service, the wait distribution, window
utilisation. Alerts summarised for a hall manager — counts by kind, by window and by
hour, the 20 longest waits, every bad rating — with every alert in alerts.csv. Times
in the CSV files are local ISO 8601 (`2026-11-23T09:41:07+08:00`).
"""

from __future__ import annotations

import csv
import html
import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from hall.store import TICKET_COLUMNS, DayEvent, day_events

LEVELS = {5: "非常满意", 4: "满意", 3: "基本满意", 2: "不满意", 1: "非常不满意"}


@dataclass
class Group:
    """Figures for one service, window or clerk."""

    name: str
    issued: int = 0
    offline: int = 0  # of them issued offline by a kiosk from its lease (handed over later)
    served: int = 0
    no_shows: int = 0
    voided: int = 0
    waits: list[float] = field(default_factory=list)
    service_times: list[float] = field(default_factory=list)
    levels: dict[int, int] = field(default_factory=lambda: dict.fromkeys(LEVELS, 0))
    unrated: int = 0
    refusals: int = 0
    busy_s: float = 0.0
    open_s: float = 0.0

    @property
    def rated(self) -> int:
        return sum(self.levels.values())

    @property
    def satisfaction(self) -> float | None:
        return (self.levels[5] + self.levels[4]) / self.rated if self.rated else None

    def row(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "issued": self.issued,
            "offline": self.offline,
            "served": self.served,
            "no_shows": self.no_shows,
            "voided": self.voided,
            "wait_p50_min": _minutes(_pct(self.waits, 50)),
            "wait_p90_min": _minutes(_pct(self.waits, 90)),
            "wait_max_min": _minutes(max(self.waits, default=None)),
            "service_mean_min": _minutes(
                sum(self.service_times) / len(self.service_times) if self.service_times else None
            ),
            "satisfaction": None if self.satisfaction is None else round(self.satisfaction, 3),
            **{f"level_{n}": self.levels[n] for n in sorted(LEVELS, reverse=True)},
            "unrated": self.unrated,
            "quota_refusals": self.refusals,
            "utilisation": round(self.busy_s / self.open_s, 3) if self.open_s else None,
        }


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def _minutes(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 60, 1)


@dataclass
class DayReport:
    day: str
    services: dict[str, Group]
    windows: dict[str, Group]
    clerks: dict[str, Group]
    tickets: list[dict[str, Any]]
    alerts: list[dict[str, Any]]
    queue: dict[str, list[tuple[float, int]]]  # service -> (time, waiting) steps
    total: Group
    service_names: dict[str, str]
    tz: ZoneInfo


def build(
    db_path: Path,
    day: str,
    tz: ZoneInfo | None = None,
    service_names: dict[str, str] | None = None,
    staff_names: dict[str, str] | None = None,
) -> DayReport:
    """The day's figures. `staff_names` (staff id -> name, from the site file) names the
    clerks; without it they are listed by staff number only."""
    tz = tz or ZoneInfo("Asia/Shanghai")
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    tickets = [
        dict(r)
        for r in db.execute(
            f"SELECT {', '.join(TICKET_COLUMNS)} FROM tickets WHERE day = ? ORDER BY issued_at",
            (day,),
        )
    ]
    events = day_events(db, day)  # one day's, by index: a year of log is not read
    db.close()
    names = dict(service_names or {})
    services: dict[str, Group] = {}
    windows: dict[str, Group] = {}
    clerks: dict[str, Group] = {}
    total = Group("全部 all")

    def groups(ticket: dict[str, Any]) -> list[Group]:
        out = [
            total,
            services.setdefault(
                ticket["service"], Group(names.get(ticket["service"], ticket["service"]))
            ),
        ]
        if ticket["window"] is not None:
            out.append(
                windows.setdefault(str(ticket["window"]), Group(f"{ticket['window']}号窗口"))
            )
        if ticket["staff"]:
            staff = ticket["staff"]
            name = (staff_names or {}).get(staff)
            out.append(clerks.setdefault(staff, Group(f"{name} {staff}" if name else staff)))
        return out

    for t in tickets:
        # a transferred ticket's first call was at the service it was issued for: its wait
        # counts there, not at the service it ended at
        origin_id: str = t["origin_service"]
        origin = services.setdefault(origin_id, Group(names.get(origin_id, origin_id)))
        if t["first_called_at"] and t["origin_service"] != t["service"]:
            origin.waits.append(t["first_called_at"] - t["issued_at"])
        final_id: str = t["service"]
        final = services.setdefault(final_id, Group(names.get(final_id, final_id)))
        for g in groups(t):
            g.issued += 1
            if t["status"] == "finished":
                g.served += 1
                if t["called_at"] and t["finished_at"]:
                    g.service_times.append(t["finished_at"] - t["called_at"])
            elif t["status"] == "skipped":
                g.no_shows += 1
            elif t["status"] == "voided":
                g.voided += 1
            if t["first_called_at"] and (g is not final or t["origin_service"] == t["service"]):
                g.waits.append(t["first_called_at"] - t["issued_at"])
            if t["rating_state"] == "rated" and t["rating"] in LEVELS:
                g.levels[t["rating"]] += 1
            elif t["status"] == "finished":
                g.unrated += 1
    alerts = []
    ids = {t["id"] for t in tickets}
    for at, kind, data in events:
        if kind == "ticket.refused" and data.get("day") == day:
            total.refusals += 1
            service = data.get("service") or ""
            services.setdefault(service, Group(names.get(service, service))).refusals += 1
        elif kind == "ticket.issued" and data.get("offline") and data.get("ticket") in ids:
            total.offline += 1
            service = data.get("service") or ""
            services.setdefault(service, Group(names.get(service, service))).offline += 1
        elif kind.startswith("alert.") and data.get("ticket") in ids:
            alerts.append(
                {
                    "at": at,
                    "type": kind,
                    "ticket": data.get("number"),
                    "service": data.get("service"),
                    "window": data.get("window"),
                    "staff": data.get("staff"),
                    "level": data.get("level"),
                    "reason": data.get("reason", ""),
                    "waited_s": data.get("waited_s"),
                }
            )
    _utilisation(events, ids, windows)
    return DayReport(
        day,
        services,
        windows,
        clerks,
        tickets,
        alerts,
        _queue_lengths(events, ids),
        total,
        names,
        tz,
    )


def _queue_lengths(events: list[DayEvent], ids: set[str]) -> dict[str, list[tuple[float, int]]]:
    """Waiting tickets per service after every event of the day: an exact step function."""
    waiting: dict[str, int] = defaultdict(int)
    where: dict[str, str] = {}
    steps: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for at, kind, data in events:
        ticket = data.get("ticket")
        if ticket not in ids:
            continue
        changed = None
        if kind == "ticket.issued":
            where[ticket] = changed = data["service"]
            waiting[changed] += 1
        elif kind in ("ticket.called", "ticket.voided") and ticket in where:
            changed = where[ticket]
            waiting[changed] -= 1
        elif kind == "ticket.transferred":
            where[ticket] = changed = data["to"]
            waiting[changed] += 1
        elif kind == "ticket.reinstated" and ticket in where:
            changed = where[ticket]
            waiting[changed] += 1
        if changed is not None:
            steps[changed].append((at, waiting[changed]))
    return dict(steps)


def _utilisation(events: list[DayEvent], ids: set[str], windows: dict[str, Group]) -> None:
    """Busy time (a ticket at the window) over open time (first call to last release)."""
    since: dict[str, tuple[float, str]] = {}
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for at, kind, data in events:
        if data.get("ticket") not in ids:
            continue
        if kind == "ticket.called":
            window = str(data["window"])
            since[data["terminal"]] = (at, window)
            first.setdefault(window, at)
        elif kind in ("ticket.finished", "ticket.skipped", "ticket.transferred"):
            began = since.pop(data.get("terminal", ""), None)
            if began:
                window = began[1]
                if window in windows:
                    windows[window].busy_s += at - began[0]
                last[window] = at
    for window, group in windows.items():
        if window in first and window in last:
            group.open_s = max(last[window] - first[window], group.busy_s)


# ---- output -----------------------------------------------------------------

COLUMNS = [
    "name",
    "issued",
    "offline",
    "served",
    "no_shows",
    "voided",
    "wait_p50_min",
    "wait_p90_min",
    "wait_max_min",
    "service_mean_min",
    "satisfaction",
    "level_5",
    "level_4",
    "level_3",
    "level_2",
    "level_1",
    "unrated",
    "quota_refusals",
    "utilisation",
]


def write(report: DayReport, out: Path, assets: list[tuple[str, Path]] | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    tables = {"services": report.services, "windows": report.windows, "clerks": report.clerks}
    for name, groups in tables.items():
        with (out / f"{name}.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["key", *COLUMNS])
            writer.writeheader()
            for key, group in sorted(groups.items(), key=lambda kv: _order(kv[0])):
                writer.writerow({"key": key, **group.row()})
            writer.writerow({"key": "total", **report.total.row()})
    with (out / "tickets.csv").open("w", newline="", encoding="utf-8") as handle:
        # the projection's columns, but the day (one file is one day) and complaint texts
        fields = [c for c in TICKET_COLUMNS if c not in ("day", "rating_reason")]
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for ticket in report.tickets:
            writer.writerow(
                {k: _iso(v, report.tz) if k in TIME_COLUMNS else v for k, v in ticket.items()}
            )
    with (out / "alerts.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(
            handle,
            fieldnames=[
                "at",
                "type",
                "ticket",
                "service",
                "window",
                "staff",
                "level",
                "reason",
                "waited_s",
            ],
        )
        writer.writeheader()
        for alert in report.alerts:
            writer.writerow({**alert, "at": _iso(alert["at"], report.tz)})
    page = out / "report.html"
    page.write_text(_html(report, assets or []), encoding="utf-8")
    return page


TIME_COLUMNS = {"issued_at", "first_called_at", "called_at", "finished_at"}


def _iso(at: float | None, tz: ZoneInfo) -> str:
    """Local ISO 8601 with the offset, to the second: what a spreadsheet reads as a time."""
    return "" if at is None else datetime.fromtimestamp(at, tz).isoformat(timespec="seconds")


def _order(key: str) -> tuple[int, str]:
    return (int(key), "") if key.isdigit() else (0, key)


def _html(r: DayReport, assets: list[tuple[str, Path]]) -> str:
    t = r.total
    sat = f"{t.satisfaction:.1%}" if t.satisfaction is not None else "—"
    summary = (
        f"<p>Issued <b>{t.issued}</b> (offline <b>{t.offline}</b>), served "
        f"<b>{t.served}</b>, no-shows <b>{t.no_shows}</b>, voided <b>{t.voided}</b>, "
        f"quota refusals <b>{t.refusals}</b>. Wait p50 {_fmt(_minutes(_pct(t.waits, 50)))} min, "
        f"p90 {_fmt(_minutes(_pct(t.waits, 90)))} min. Satisfaction {sat} of "
        f"{t.rated} rated ({t.unrated} unrated). Alerts: {len(r.alerts)}.</p>"
    )
    series = {r.service_names.get(s, s): pts for s, pts in sorted(r.queue.items())}
    charts = [
        ("Queue length through the day", _line_chart(series, r.tz)),
        ("Wait before the first call (minutes)", _histogram([w / 60 for w in t.waits], "minutes")),
        (
            "Window utilisation",
            _bars(
                {
                    f"{k}号": g.busy_s / g.open_s
                    for k, g in sorted(r.windows.items(), key=lambda kv: _order(kv[0]))
                    if g.open_s
                }
            ),
        ),
    ]
    parts = [
        f"<!doctype html><html lang='zh-CN'><meta charset='utf-8'>"
        f"<title>Quhao report {r.day}</title><style>{_CSS}</style>",
        f"<h1>取号日报 Day report {html.escape(r.day)}</h1>",
        summary,
    ]
    for title, svg in charts:
        parts.append(f"<h2>{html.escape(title)}</h2>{svg}")
    for title, groups in (("Services", r.services), ("Windows", r.windows), ("Clerks", r.clerks)):
        parts.append(f"<h2>{title}</h2>{_table(groups, r.total)}")
    parts.append("<h2>Alerts</h2>")
    parts.append(_alert_summary(r) if r.alerts else "<p>None.</p>")
    if assets:
        parts.append("<h2>From the simulators</h2><div class='assets'>")
        for label, path in assets:
            src = html.escape(str(path))
            shown = (
                f"<audio controls src='{src}'></audio>"
                if path.suffix == ".wav"
                else f"<img src='{src}'>"
            )
            parts.append(
                f"<figure><a href='{src}'>{shown}</a><figcaption>{html.escape(label)}"
                "</figcaption></figure>"
            )
        parts.append("</div>")
    parts.append(
        "<p class='files'>CSV: <a href='services.csv'>services</a> · "
        "<a href='windows.csv'>windows</a> · <a href='clerks.csv'>clerks</a> · "
        "<a href='tickets.csv'>tickets</a> · <a href='alerts.csv'>alerts</a></p>"
    )
    return "\n".join(parts) + "</html>\n"


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:g}"


def _table(groups: dict[str, Group], total: Group) -> str:
    head = (
        "<tr><th></th><th>issued</th><th>offline</th><th>served</th><th>no-shows</th><th>voided</th>"
        "<th>wait p50</th><th>p90</th><th>max</th><th>service</th><th>satisfaction</th>"
        + "".join(f"<th>{LEVELS[n]}</th>" for n in sorted(LEVELS, reverse=True))
        + "<th>unrated</th><th>refusals</th><th>utilisation</th></tr>"
    )
    rows = []
    for _, group in [*sorted(groups.items(), key=lambda kv: _order(kv[0])), ("total", total)]:
        row = group.row()
        sat = "—" if row["satisfaction"] is None else f"{row['satisfaction']:.0%}"
        util = "—" if row["utilisation"] is None else f"{row['utilisation']:.0%}"
        cells = [
            row["issued"],
            row["offline"],
            row["served"],
            row["no_shows"],
            row["voided"],
            _fmt(row["wait_p50_min"]),
            _fmt(row["wait_p90_min"]),
            _fmt(row["wait_max_min"]),
            _fmt(row["service_mean_min"]),
            sat,
            *(row[f"level_{n}"] for n in sorted(LEVELS, reverse=True)),
            row["unrated"],
            row["quota_refusals"],
            util,
        ]
        rows.append(
            f"<tr><th>{html.escape(str(group.name))}</th>"
            + "".join(f"<td>{c}</td>" for c in cells)
            + "</tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


ALERT_KINDS = {
    "alert.max_wait": "waited too long 等候超时",
    "alert.bad_rating": "bad rating 差评",
    "alert.quota_breach": "over quota 超限",
    "alert.daily_cap_exceeded": "over the daily cap 超出日限",
    "alert.lease_breach": "offline lease breach 离线超限",
}
TOP_WAITS = 20


def _alert_summary(r: DayReport) -> str:
    """Counts by kind, by window and by hour; the longest waits; every bad rating. The
    full list is alerts.csv: a page of every alert of a surge day is too long to read."""
    kinds = sorted({a["type"] for a in r.alerts})

    def label(kind: str) -> str:
        return ALERT_KINDS.get(kind, kind)

    def counts(key: Any, title: str) -> str:
        table: dict[Any, dict[str, int]] = defaultdict(lambda: dict.fromkeys(kinds, 0))
        for a in r.alerts:
            table[key(a)][a["type"]] += 1
        head = f"<tr><th>{title}</th>" + "".join(f"<th>{label(k)}</th>" for k in kinds)
        rows = [
            f"<tr><th>{html.escape(str(name))}</th>"
            + "".join(f"<td>{row[k] or ''}</td>" for k in kinds)
            + "</tr>"
            for name, row in sorted(table.items(), key=lambda kv: str(kv[0]).zfill(4))
        ]
        return f"<table>{head}</tr>{''.join(rows)}</table>"

    by_kind = "".join(
        f"<tr><th>{label(k)}</th><td>{sum(1 for a in r.alerts if a['type'] == k)}</td></tr>"
        for k in kinds
    )
    parts = [
        f"<p>{len(r.alerts)} alerts; every one is in <a href='alerts.csv'>alerts.csv</a>.</p>",
        f"<div class='side'><table><tr><th>kind</th><th>count</th></tr>{by_kind}</table>",
        counts(lambda a: datetime.fromtimestamp(a["at"], r.tz).strftime("%H:00"), "hour"),
        counts(lambda a: f"{a['window']}号" if a["window"] else "—", "window"),
        "</div>",
    ]
    waits = sorted(
        (a for a in r.alerts if a["type"] == "alert.max_wait"),
        key=lambda a: -(a["waited_s"] or 0),
    )[:TOP_WAITS]
    if waits:
        parts.append(f"<h3>The {len(waits)} longest waits</h3>")
        parts.append(_alert_rows(waits, r))
    bad = [a for a in r.alerts if a["type"] == "alert.bad_rating"]
    parts.append(f"<h3>Every bad rating ({len(bad)})</h3>")
    parts.append(_alert_rows(bad, r) if bad else "<p>None.</p>")
    return "\n".join(parts)


def _alert_rows(alerts: list[dict[str, Any]], r: DayReport) -> str:
    rows = []
    for a in alerts:
        when = datetime.fromtimestamp(a["at"], r.tz).strftime("%H:%M")
        what = (
            f"waited {round((a['waited_s'] or 0) / 60)} min"
            if a["type"] == "alert.max_wait"
            else f"{LEVELS.get(a['level'] or 0, '')} — {a['reason']}"
        )
        clerk = r.clerks.get(a["staff"] or "")
        service = r.service_names.get(a["service"] or "", a["service"] or "")
        rows.append(
            f"<tr><td>{when}</td><td>{html.escape(str(a['ticket'] or ''))}</td>"
            f"<td>{html.escape(service)}</td><td>{a['window'] or ''}</td>"
            f"<td>{html.escape(clerk.name if clerk else a['staff'] or '')}</td>"
            f"<td>{html.escape(what)}</td></tr>"
        )
    return (
        "<table><tr><th>time</th><th>ticket</th><th>service</th><th>window</th><th>clerk</th>"
        f"<th></th></tr>{''.join(rows)}</table>"
    )


# ---- SVG charts (no plotting library needed) --------------------------------

_COLORS = [
    "#d62728",
    "#1f77b4",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
]
W, H, PAD = 860, 300, 48


def _line_chart(series: dict[str, list[tuple[float, int]]], tz: ZoneInfo) -> str:
    points = [p for pts in series.values() for p in pts]
    if not points:
        return "<p>No tickets.</p>"
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y1 = max(1, max(p[1] for p in points))
    span = max(x1 - x0, 1.0)

    def xy(t: float, v: float) -> str:
        return f"{PAD + (t - x0) / span * (W - 2 * PAD):.1f},{H - PAD - v / y1 * (H - 2 * PAD):.1f}"

    lines, legend = [], []
    for i, (name, pts) in enumerate(series.items()):
        color = _COLORS[i % len(_COLORS)]
        path, last = [], 0
        for t, v in pts:
            path += [xy(t, last), xy(t, v)]  # steps
            last = v
        lines.append(
            f"<polyline fill='none' stroke='{color}' stroke-width='1.5' points='{' '.join(path)}'/>"
        )
        legend.append(
            f"<text x='{W - PAD + 6}' y='{PAD + 14 * i}' fill='{color}' "
            f"font-size='11'>{html.escape(name)}</text>"
        )
    ticks = []
    for k in range(6):
        t = x0 + span * k / 5
        label = datetime.fromtimestamp(t, tz).strftime("%H:%M")
        ticks.append(
            f"<text x='{PAD + (W - 2 * PAD) * k / 5:.0f}' y='{H - PAD + 16}' "
            f"font-size='11' text-anchor='middle'>{label}</text>"
        )
    return (
        f"<svg width='{W + 120}' height='{H}' class='chart'>{_axes(y1)}{''.join(ticks)}"
        f"{''.join(lines)}{''.join(legend)}</svg>"
    )


def _axes(top: float) -> str:
    return (
        f"<line x1='{PAD}' y1='{H - PAD}' x2='{W - PAD}' y2='{H - PAD}' stroke='#444'/>"
        f"<line x1='{PAD}' y1='{PAD}' x2='{PAD}' y2='{H - PAD}' stroke='#444'/>"
        f"<text x='{PAD - 6}' y='{PAD + 4}' font-size='11' text-anchor='end'>{top:g}</text>"
        f"<text x='{PAD - 6}' y='{H - PAD}' font-size='11' text-anchor='end'>0</text>"
    )


def _histogram(values: list[float], unit: str, bins: int = 24) -> str:
    if not values:
        return "<p>No calls.</p>"
    top = max(values) or 1.0
    width = top / bins
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int(v / width))] += 1
    peak = max(counts)
    bar_w = (W - 2 * PAD) / bins
    bars = [
        f"<rect x='{PAD + i * bar_w + 1:.1f}' y='{H - PAD - c / peak * (H - 2 * PAD):.1f}' "
        f"width='{bar_w - 2:.1f}' height='{c / peak * (H - 2 * PAD):.1f}' fill='#1f77b4'>"
        f"<title>{i * width:.0f}-{(i + 1) * width:.0f} {unit}: {c}</title></rect>"
        for i, c in enumerate(counts)
    ]
    labels = [
        f"<text x='{PAD + (W - 2 * PAD) * k / 4:.0f}' y='{H - PAD + 16}' font-size='11' "
        f"text-anchor='middle'>{top * k / 4:.0f}</text>"
        for k in range(5)
    ]
    return (
        f"<svg width='{W}' height='{H}' class='chart'>{_axes(peak)}{''.join(bars + labels)}</svg>"
    )


def _bars(values: dict[str, float]) -> str:
    if not values:
        return "<p>No windows served.</p>"
    row = 18
    height = PAD + row * len(values)
    bars = []
    for i, (label, value) in enumerate(values.items()):
        y = 10 + i * row
        bars.append(
            f"<text x='{PAD - 6}' y='{y + 12}' font-size='11' text-anchor='end'>"
            f"{html.escape(label)}</text><rect x='{PAD}' y='{y}' "
            f"width='{value * (W - 2 * PAD):.1f}' height='{row - 4}' fill='#2ca02c'/>"
            f"<text x='{PAD + value * (W - 2 * PAD) + 4:.1f}' y='{y + 12}' "
            f"font-size='11'>{value:.0%}</text>"
        )
    return f"<svg width='{W}' height='{height}' class='chart'>{''.join(bars)}</svg>"


_CSS = """body{font-family:'WenQuanYi Micro Hei',sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;font-size:13px;margin-bottom:1em}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}th{background:#f4f4f4}
.chart{background:#fcfcfc;border:1px solid #eee}.assets{display:flex;flex-wrap:wrap;gap:12px}
figure img{max-width:260px;border:1px solid #ddd}figcaption{font-size:12px}
.side{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}"""
