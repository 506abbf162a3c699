"""Follow-up cases as the hall's database records them: for `quhao cases list|show`, the
period report and the 好差评 export. Read-only; the hall's loop is the only writer.

Case events carry the rated ticket's day, so the store's day index (`EVENT_DAY`) finds
the cases of a range of days in one range scan; the fold (`fold`) is pure.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass, field
from typing import Any

from hall.cases import CASE_EVENTS, Case, CaseBook
from hall.model import Event
from hall.store import EVENT_DAY


@dataclass
class Step:
    at: float
    kind: str  # contacted | resolved | appealed | upheld | rejected | reminded | overdue
    by: str | None
    note: str


@dataclass
class CaseRecord(Case):
    """A case as the log tells it: the hall's own state (`CaseBook.apply`), and its history."""

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


def _step(at: float, kind: str, d: dict[str, Any]) -> Step | None:
    """What a case event adds to the case's history (`case.opened`: nothing)."""
    if kind == "case.updated":
        return Step(at, d["state"], d["by"], d["note"])
    if kind == "case.appealed":
        return Step(at, "appealed", d["by"], d["note"])
    if kind == "case.decided":
        return Step(at, d["decision"], d["by"], d["note"])
    if kind == "alert.case_due":
        return Step(at, "reminded", None, "")
    if kind == "alert.case_overdue":
        return Step(at, "overdue", None, "")
    return None


def fold(events: list[tuple[float, str, dict[str, Any]]]) -> dict[str, CaseRecord]:
    """(at, type, data) of case events in commit order → the cases, by id. The state is
    the hall's own fold (`CaseBook.apply`, as the live hall and its replay do)."""
    book = CaseBook()
    history: dict[str, list[Step]] = {}
    for at, kind, d in events:
        book.apply(Event(kind, at, d))
        step = _step(at, kind, d)
        if step is not None and d.get("case") in book.cases:
            history.setdefault(d["case"], []).append(step)
    return {
        case_id: CaseRecord(**asdict(case), history=history.get(case_id, []))
        for case_id, case in book.cases.items()
    }


def read(db: sqlite3.Connection, first_day: str, last_day: str) -> dict[str, CaseRecord]:
    """The cases of tickets of days first_day…last_day (inclusive), as recorded now."""
    kinds = sorted(CASE_EVENTS)
    rows = db.execute(
        f"SELECT at, type, data FROM events WHERE {EVENT_DAY} >= ? AND {EVENT_DAY} < ? "
        f"AND type IN ({', '.join('?' for _ in kinds)}) ORDER BY seq",
        (first_day, last_day + "0", *kinds),  # "…/A001" sorts below "0": the whole last day
    )
    return fold([(at, kind, json.loads(data)) for at, kind, data in rows])
