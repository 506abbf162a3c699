"""好差评 export: one record per rating for a provincial 好差评 platform, from the hall's
log (docs/ratings-export.md has the field mapping).

Read-only and deterministic: the ratings of tickets of a range of days, in log order,
each with a stable record id — SHA-256 of site, ticket id and the rating event's
sequence number in the log — so exporting the same range again gives the same ids (and,
while nothing was followed up in between, the same bytes). Unrated tickets (the pad
timed out) are no rating and are not exported.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
from datetime import datetime
from typing import Any

from hall import caselog
from hall.store import EVENT_DAY
from quhao.config import SiteConfig

# The national five-level scale (政务服务“好差评”): level → its name.
LEVELS = {5: "非常满意", 4: "满意", 3: "基本满意", 2: "不满意", 1: "非常不满意"}
CHANNELS = {"pad": "现场评价器", "touch": "触摸屏"}
FIELDS = (
    "record_id",
    "site_id",
    "hall",
    "matter_code",
    "matter",
    "department",
    "window",
    "clerk_id",
    "clerk",
    "ticket",
    "level",
    "level_name",
    "rated_at",
    "channel",
    "channel_name",
    "reason",
    "followup",
    "case",
    "case_state",
    "appeal",
)


def record_id(site: str, ticket: str, seq: int) -> str:
    return hashlib.sha256(f"{site}\x1f{ticket}\x1f{seq}".encode()).hexdigest()[:32]


def channel(device: str | None) -> str:
    """The touch screen rates as `rater-W{n}`; the rating pad through its counter."""
    return "touch" if device and device.startswith("rater-") else "pad"


def records(
    db: sqlite3.Connection, config: SiteConfig, first_day: str, last_day: str
) -> list[dict[str, Any]]:
    rows = db.execute(
        f"SELECT seq, at, data FROM events WHERE {EVENT_DAY} >= ? AND {EVENT_DAY} < ? "
        "AND type = 'ticket.rated' ORDER BY seq",
        (first_day, last_day + "0"),
    ).fetchall()
    cases = caselog.read(db, first_day, last_day)
    by_ticket = {c.ticket: c for c in cases.values()}
    tz = config.site.timezone
    out = []
    for seq, at, data in rows:
        d = json.loads(data)
        level = d.get("level")
        if level is None:
            continue
        service = config.services.get(d["service"])
        staff = config.staff.get(d.get("staff") or "")
        case = by_ticket.get(d["ticket"])
        kind = channel(d.get("device"))
        out.append(
            {
                "record_id": record_id(config.site.id, d["ticket"], seq),
                "site_id": config.site.id,
                "hall": config.site.name,
                "matter_code": d["service"],
                "matter": service.name if service else d["service"],
                "department": service.department if service else "",
                "window": d.get("window"),
                "clerk_id": d.get("staff"),
                "clerk": staff.name if staff else "",
                "ticket": d["ticket"],
                "level": level,
                "level_name": LEVELS[level],
                "rated_at": datetime.fromtimestamp(at, tz).isoformat(timespec="seconds"),
                "channel": kind,
                "channel_name": CHANNELS[kind],
                "reason": d.get("reason", "") if level <= 2 else "",
                # as the log records it (overdue once the hall said so): no wall clock,
                # so a re-export of an unchanged log is the same bytes
                "followup": case.followup(float("-inf")) if case else "none",
                "case": case.id if case else "",
                "case_state": case.state if case else "",
                "appeal": case.appeal if case else "",
            }
        )
    return out


def jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=False) + "\n" for r in rows)


def csv_text(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
