"""Follow-up cases as the hall's database records them: for `quhao cases list|show`, the
period report and the 好差评 export. Read-only; the hall's loop is the only writer.

Case events carry the rated ticket's day, so the store's day index (`EVENT_DAY`) finds
the cases of a range of days in one range scan; the fold (`fold`) is pure.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from hall.cases import CASE_EVENTS
from hall.store import EVENT_DAY

STEP_EVENTS = ("case.updated", "case.appealed", "case.decided")


@dataclass
class Step:
    at: float
    kind: str  # contacted | resolved | appealed | upheld | rejected | reminded | overdue
    by: str | None
    note: str


@dataclass
class CaseRecord:
    id: str
    ticket: str
    day: str
    number: str
    service: str
    window: int | None
    staff: str | None
    level: int
    reason: str
    opened_at: float
    due_at: float
    state: str = "open"
    appeal: str = "none"
    contacted_at: float | None = None
    resolved_at: float | None = None
    overdue: bool = False  # the hall raised alert.case_overdue (by its clock)
    history: list[Step] = field(default_factory=list)

    def followup(self, now: float) -> str:
        """on_time | late (resolved after the deadline) | open | overdue (open, past it)."""
        if self.resolved_at is not None:
            return "on_time" if self.resolved_at <= self.due_at else "late"
        return "overdue" if self.overdue or now > self.due_at else "open"

    @property
    def upheld(self) -> bool:
        """An upheld appeal: the rating leaves the clerk's score, stays on record."""
        return self.appeal == "upheld"


def fold(events: list[tuple[float, str, dict[str, Any]]]) -> dict[str, CaseRecord]:
    """(at, type, data) of case events in commit order → the cases, by id."""
    cases: dict[str, CaseRecord] = {}
    for at, kind, d in events:
        if kind == "case.opened":
            cases[d["case"]] = CaseRecord(
                id=d["case"],
                ticket=d["ticket"],
                day=d["day"],
                number=d["number"],
                service=d["service"],
                window=d["window"],
                staff=d["staff"],
                level=d["level"],
                reason=d["reason"],
                opened_at=at,
                due_at=d["due"],
            )
            continue
        case = cases.get(d.get("case", ""))
        if case is None:
            continue
        if kind == "case.updated":
            case.state = d["state"]
            if d["state"] == "contacted" and case.contacted_at is None:
                case.contacted_at = at
            if d["state"] == "resolved":
                case.resolved_at = at
            case.history.append(Step(at, d["state"], d["by"], d["note"]))
        elif kind == "case.appealed":
            case.appeal = "pending"
            case.history.append(Step(at, "appealed", d["by"], d["note"]))
        elif kind == "case.decided":
            case.appeal = d["decision"]
            case.history.append(Step(at, d["decision"], d["by"], d["note"]))
        elif kind == "alert.case_due":
            case.history.append(Step(at, "reminded", None, ""))
        elif kind == "alert.case_overdue":
            case.overdue = True
            case.history.append(Step(at, "overdue", None, ""))
    return cases


def read(db: sqlite3.Connection, first_day: str, last_day: str) -> dict[str, CaseRecord]:
    """The cases of tickets of days first_day…last_day (inclusive), as recorded now."""
    kinds = sorted(CASE_EVENTS)
    rows = db.execute(
        f"SELECT at, type, data FROM events WHERE {EVENT_DAY} >= ? AND {EVENT_DAY} < ? "
        f"AND type IN ({', '.join('?' for _ in kinds)}) ORDER BY seq",
        (first_day, last_day + "0", *kinds),  # "…/A001" sorts below "0": the whole last day
    )
    return fold([(at, kind, json.loads(data)) for at, kind, data in rows])
