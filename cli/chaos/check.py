"""What the chaos run asserts, from the clients' record files and the hall's database.

- **Nothing lost.** Every answer a client got (ok or a refusal) is the hall's stored
  answer for that (device, rid), and every ticket answered ok is in the `tickets` table
  with the number and service the kiosk was told.
- **No duplicates.** No (day, service, number) twice — in the table, in the event log,
  or in the hands of two different requests.
- **One answer per rid.** Every answer that arrived for one (device, rid) — retries
  after kills, doubled sends, late duplicates — is the same (`unavailable` and
  `rate_limited` excepted: they say "ask again").
- **Nothing called twice.** Folding the event log, a ticket is called only while it
  waits (after issue, transfer or reinstate); a recall is its own event; a terminal
  serves one ticket at a time; and the `tickets` projection agrees with the log.
- **Good requests never fail.** A well-formed request of the load is answered ok or
  refused only because the queue moved under it (`no_ticket`, `bad_state`, …).
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cli.chaos.clients import ALLOWED_REFUSALS, RETRY_CODES, answer_code

SHOWN = 5  # examples kept per kind of problem


@dataclass
class Findings:
    requests: int = 0  # distinct (device, rid) the clients asked
    attempts: int = 0  # publishes, retries included
    ok_answers: int = 0  # requests whose final answer was ok
    answers: int = 0  # answers that arrived, duplicates and retries included
    refusals: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)  # answered ok, by action
    retried: int = 0  # requests sent more than once (timeouts across kills, unavailable)
    compared: int = 0  # (device, rid) with two or more answers compared
    tickets_answered: int = 0  # distinct tickets kiosks were told about
    tickets_in_db: int = 0
    events: int = 0
    unanswered: list[str] = field(default_factory=list)
    differing: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    store_differs: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    called_twice: list[str] = field(default_factory=list)
    projection: list[str] = field(default_factory=list)
    failed_good: list[str] = field(default_factory=list)
    misdirected: list[str] = field(default_factory=list)

    COUNTED = (
        "unanswered",
        "differing",
        "lost",
        "store_differs",
        "duplicates",
        "called_twice",
        "projection",
        "failed_good",
        "misdirected",
    )

    def problems(self) -> list[str]:
        lines = []
        for name in self.COUNTED:
            found: list[str] = getattr(self, name)
            if found:
                lines.append(f"{name}: {len(found)} (e.g. {'; '.join(found[:SHOWN])})")
        return lines

    def merge(self, other: Findings) -> None:
        for name in ("requests", "attempts", "ok_answers", "answers", "tickets_answered"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("retried", "compared"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.refusals.update(other.refusals)
        self.actions.update(other.actions)
        for name in self.COUNTED:
            getattr(self, name).extend(getattr(other, name))


def snapshot(source: Path, target: Path) -> None:
    """A consistent copy of a hall database (SQLite's backup), even while the hall runs."""
    target.unlink(missing_ok=True)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def _canon(answer: dict[str, Any]) -> str:
    return json.dumps(answer, sort_keys=True, ensure_ascii=False)


def read_records(
    folder: Path,
) -> tuple[dict[tuple[str, str], dict[str, Any]], list[dict[str, Any]]]:
    """(device, rid) → its `req` line, and every `ans` line, from all record files."""
    requests: dict[tuple[str, str], dict[str, Any]] = {}
    answers: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.jsonl")):
        with path.open(encoding="utf-8") as handle:
            for raw in handle:
                if not raw.endswith("\n"):
                    continue  # a line cut by a killed writer
                line = json.loads(raw)
                if line["k"] == "req":
                    requests[(line["dev"], line["rid"])] = line
                elif line["k"] == "ans":
                    answers.append(line)
    return requests, answers


def check_records(folder: Path, db_path: Path) -> Findings:
    """Check every record file in `folder` against the hall database `db_path`."""
    findings = Findings()
    requests, arrived = read_records(folder)
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        stored = {
            (d, r): json.loads(resp)
            for d, r, resp in db.execute("SELECT device, rid, response FROM requests")
        }
        tickets = {
            row[0]: row for row in db.execute("SELECT id, day, origin_service, number FROM tickets")
        }
        findings.tickets_in_db = len(tickets)
        _check_log(db, findings)
    finally:
        db.close()

    seen: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for line in arrived:
        findings.answers += 1
        if not line.get("ours", True) and str(line["rid"]).startswith("fz"):
            findings.misdirected.append(f"{line['topic']} got fuzz answer {line['rid']}")
        if answer_code(line["ans"]) not in RETRY_CODES:
            seen[(line["dev"], line["rid"])].append(line["ans"])
    for key, answers in seen.items():
        findings.compared += len(answers) > 1
        if len({_canon(a) for a in answers}) > 1:
            findings.differing.append(f"{key[0]} rid {key[1]}: {len(answers)} answers differ")

    holders: dict[str, list[str]] = defaultdict(list)
    for key, req in requests.items():
        findings.requests += 1
        findings.attempts += int(req["attempts"])
        findings.retried += int(req["attempts"]) > 1
        final = req["final"]
        if final is None:
            findings.unanswered.append(f"{key[0]} {req['action']} rid {key[1]}")
            continue
        code = answer_code(final)
        if code == "ok":
            findings.ok_answers += 1
            findings.actions[req["action"]] += 1
        else:
            findings.refusals[code] += 1
            if code not in ALLOWED_REFUSALS:
                findings.failed_good.append(f"{key[0]} {req['action']} → {code}")
        if key not in stored:
            findings.lost.append(f"{key[0]} {req['action']} rid {key[1]} ({code}) not stored")
        elif _canon(stored[key]) != _canon(final):
            findings.store_differs.append(f"{key[0]} rid {key[1]}")
        if req["action"] == "issue" and code == "ok":
            ticket = final["ticket"]
            holders[ticket["id"]].append(f"{key[0]}/{key[1]}")
            row = tickets.get(ticket["id"])
            if row is None:
                findings.lost.append(f"ticket {ticket['id']} answered to {key[0]} not in the db")
            elif (row[2], row[3]) != (ticket["service"], ticket["number"]):
                findings.store_differs.append(f"ticket {ticket['id']}: db has {row[2:]}")
    findings.tickets_answered = len(holders)
    for ticket_id, who in holders.items():
        if len(who) > 1:
            findings.duplicates.append(f"{ticket_id} answered to {len(who)} requests: {who[:3]}")
    return findings


_FROM = {
    "ticket.called": ("waiting",),
    "ticket.recalled": ("called",),
    "ticket.skipped": ("called",),
    "ticket.finished": ("called",),
    "ticket.transferred": ("called",),
    "ticket.reinstated": ("skipped",),
    "ticket.voided": ("waiting",),
    "ticket.expired": ("waiting",),
    "ticket.carried": ("waiting",),
}
_TO = {
    "ticket.called": "called",
    "ticket.skipped": "skipped",
    "ticket.finished": "finished",
    "ticket.transferred": "waiting",
    "ticket.reinstated": "waiting",
    "ticket.voided": "voided",
    "ticket.expired": "expired",
}


def fold_log(db: sqlite3.Connection) -> tuple[dict[str, str], list[str], list[str], int]:
    """(ticket id → status, lifecycle violations, duplicate numbers, events) from the log."""
    status: dict[str, str] = {}
    serving: dict[str, str] = {}  # terminal → ticket it serves
    numbers: Counter[tuple[str, str, str]] = Counter()
    violations: list[str] = []
    count = 0
    for seq, kind, data in db.execute("SELECT seq, type, data FROM events ORDER BY seq"):
        count += 1
        event = json.loads(data)
        tid = event.get("ticket")
        if kind == "ticket.issued":
            if tid in status:
                violations.append(f"#{seq} {tid} issued again")
            status[tid] = "waiting"
            numbers[(event["day"], event["service"], event["number"])] += 1
            continue
        if kind not in _FROM:
            continue
        now = status.get(tid)
        if now not in _FROM[kind]:
            violations.append(f"#{seq} {kind} {tid} while {now}")
        terminal = event.get("terminal")
        if kind == "ticket.called" and terminal:
            if serving.get(terminal):
                violations.append(
                    f"#{seq} {terminal} called {tid} still serving {serving[terminal]}"
                )
            serving[terminal] = tid
        elif kind in ("ticket.skipped", "ticket.finished", "ticket.transferred"):
            for term, held in list(serving.items()):
                if held == tid:
                    del serving[term]
        if kind in _TO:
            status[tid] = _TO[kind]
    duplicates = [f"{k} issued {n} times" for k, n in numbers.items() if n > 1]
    return status, violations, duplicates, count


def _check_log(db: sqlite3.Connection, findings: Findings) -> None:
    status, violations, duplicates, findings.events = fold_log(db)
    findings.called_twice.extend(violations)
    findings.duplicates.extend(duplicates)
    for day, service, number, n in db.execute(
        "SELECT day, origin_service, number, COUNT(*) FROM tickets "
        "GROUP BY day, origin_service, number HAVING COUNT(*) > 1"
    ):
        findings.duplicates.append(f"{day} {service} {number} {n} times in tickets")
    projected = dict(db.execute("SELECT id, status FROM tickets"))
    for tid, state in status.items():
        if projected.get(tid) != state:
            findings.projection.append(f"{tid}: log says {state}, table {projected.get(tid)}")
    for tid in projected.keys() - status.keys():
        findings.projection.append(f"{tid} in the table, never issued in the log")
