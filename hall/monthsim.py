"""A simulated month of a hall, made through the real engine and store, for the period
report's test and `quhao bench report`.

The days are `hall/history.py`'s (kiosks issue, clerks call, recall and skip, transfer,
finish; citizens rate), in a site with departments, a supervisor and a maximum wait; on
top, the hall office follows up every bad rating as `quhao cases` would: a call-back
(`case_update contacted`) and most of the time a resolution, some late and some never
(the hall's tick then raises `alert.case_overdue`); some rated clerks appeal and the
supervisor upholds or rejects. Every action is an `Engine.handle` committed with
`Store.commit`, as the hall does. Every day is whole (the month ends after its last
closing), so every ticket of the period is settled.
"""

from __future__ import annotations

import heapq
import json
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from hall.cases import case_id
from hall.history import KIOSKS, SERVICES, HistorySpec, _Simulation, fresh_record
from hall.store import Store
from quhao.config import SiteConfig
from quhao.staffauth import hash_pin

SITE_ID = "monthhall"
FORMAT = 1  # of this generator: a cached month of another format is made again
DEPARTMENTS = {  # service → department (部门)
    "social": "人社局",
    "medical": "医保局",
    "tax": "税务局",
    "housing": "住建局",
    "business": "市场监管局",
    "enquiry": "综合窗口",
}
MAX_WAIT_MINUTES = 10
EXPECTED_MINUTES = 5
SUPERVISOR = "S900"
PIN = "1234"


@dataclass(frozen=True)
class MonthSpec(HistorySpec):
    """`days` whole days of `per_day` tickets from `first_day`."""

    days: int = 30
    first_day: str = "2026-11-01"
    seed: int = 14

    @property
    def windows(self) -> int:
        # every service has windows even in a small hall (each window serves two)
        return max(len(SERVICES), round(self.per_day / 80))


@dataclass(frozen=True)
class Month:
    folder: Path
    spec: MonthSpec
    tickets: int
    events: int
    build_s: float

    @property
    def database(self) -> Path:
        return self.folder / "hall.sqlite"

    @property
    def site(self) -> Path:
        return self.folder / "site.toml"


def site_toml(spec: MonthSpec) -> str:
    pin = hash_pin(PIN, salt=b"month-fixed-salt", iterations=1000)
    lines = [
        "# A simulated hall (hall/monthsim.py): open every day, 08:30-17:30.",
        "[site]",
        f'id = "{SITE_ID}"',
        'name = "模拟政务服务中心"',
        'timezone = "Asia/Shanghai"',
        'hours = ["08:30-17:30"]',
        'days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]',
        'secret_file = "month.secret"',
        "",
        "[queue]",
        "number_width = 4",
        "",
        "[cases]",
        "deadline_working_days = 5",
        f'supervisors = ["{SUPERVISOR}"]',
        "",
    ]
    for sid, prefix, _share, quota in SERVICES:
        lines += [
            "[[services]]",
            f'id = "{sid}"',
            f'name = "{sid}"',
            f'prefix = "{prefix}"',
            f'department = "{DEPARTMENTS[sid]}"',
            f"max_wait_minutes = {MAX_WAIT_MINUTES}",
            f"expected_minutes = {EXPECTED_MINUTES}",
            "quota = { tickets = 2, hours = 2 }" if quota else "quota = false",
            *(["id_required = false"] if sid == "enquiry" else []),
            "",
        ]
    ids = [s[0] for s in SERVICES]
    for n in range(1, spec.windows + 1):
        served = [ids[(n - 1) % len(ids)], ids[n % len(ids)]]
        lines += ["[[windows]]", f"number = {n}", f"services = {json.dumps(served)}", ""]
        lines += ["[[counters]]", f'name = "counter-W{n}"', f"window = {n}", ""]
        lines += ["[[staff]]", f'id = "S{n:03d}"', f'name = "职员{n}"', f'pin_hash = "{pin}"', ""]
    lines += ["[[staff]]", f'id = "{SUPERVISOR}"', 'name = "督查员"', f'pin_hash = "{pin}"', ""]
    for k in range(1, KIOSKS + 1):
        lines += ["[[kiosks]]", f'name = "kiosk-K{k}"', ""]
    return "\n".join(lines)


class MonthSimulation(_Simulation):
    """The history's days, and the office following up each bad rating."""

    def __init__(self, config: SiteConfig, store: Store, spec: MonthSpec) -> None:
        super().__init__(config, store, spec)
        self.office_rng = random.Random(spec.seed + 1)  # the days' draws stay as they were
        self.followups: list[tuple[float, int, str, dict[str, Any]]] = []
        self.order = 0
        self.committed_at = 0.0

    def commit(self, now: float) -> None:
        """In batches of at least 500 events or an hour of hall time: a month of a small
        hall would otherwise be mostly one commit a minute of a few events."""
        if len(self.pending) >= 500 or now - self.committed_at >= 3600:
            self.flush(now)

    def flush(self, now: float) -> None:
        super().commit(now)
        self.committed_at = now

    def later(self, at: float, action: str, payload: dict[str, Any]) -> None:
        self.order += 1
        heapq.heappush(self.followups, (at, self.order, action, payload))

    def act(
        self, device: str, action: str, payload: dict[str, Any], now: float
    ) -> dict[str, Any] | None:
        response = super().act(device, action, payload, now)
        level = payload.get("level")
        if action == "rate" and response and response["changed"] and level and level <= 2:
            self.follow_up(payload["ticket"], now)
        return response

    def follow_up(self, ticket: str, now: float) -> None:
        rng, case = self.office_rng, case_id(ticket)
        boss = {"staff": SUPERVISOR, "pin": PIN}
        contact = now + rng.uniform(3600, 4 * 86400)
        self.later(
            contact,
            "case_update",
            {"case": case, "state": "contacted", "note": "电话回访", "by": boss},
        )
        if rng.random() < 0.85:  # the rest stay open: overdue once the deadline passes
            done = contact + rng.uniform(3600, 6 * 86400)  # some late
            self.later(
                done,
                "case_update",
                {"case": case, "state": "resolved", "note": "已整改", "by": boss},
            )
        if rng.random() < 0.15:
            clerk = self.engine.tickets[ticket].staff
            appeal = now + rng.uniform(600, 86400)
            self.later(
                appeal,
                "case_appeal",
                {"case": case, "note": "已一次性告知", "by": {"staff": clerk, "pin": PIN}},
            )
            decision = rng.choice(("upheld", "rejected"))
            decide = {"case": case, "decision": decision, "note": "经核查", "by": boss}
            self.later(appeal + rng.uniform(3600, 2 * 86400), "case_decide", decide)

    def call(self, now: float, n: int, closes: float, at: Callable[..., None]) -> None:
        """As the history's clerk, but an idle window asks again every one to three
        minutes, not every 20-60 s: a small hall's idle calls would be most of the work."""
        rng = self.rng
        if now >= closes:
            at(now + rng.uniform(60, 600), "logout", n)
            return
        response = self.act(f"counter-W{n}", "call", {}, now)
        if response is None or response["ticket"] is None:
            at(now + rng.uniform(60, 180), "call", n)
        elif rng.random() < 0.05:  # nobody comes: recalled, then skipped
            at(now + 60, "recall", n)
        else:
            at(now + rng.uniform(90, 420), "done", n)

    def snapshot(self, now: float) -> None:
        """None: a report reads the log and the tickets, never a snapshot of the state."""

    def tick(self, now: float) -> None:
        while self.followups and self.followups[0][0] <= now:
            _, _, action, payload = heapq.heappop(self.followups)
            self.act("office", action, payload, now)  # the office acts on the hall's time
        super().tick(now)


def build_month(
    folder: Path, spec: MonthSpec, progress: Callable[[str], None] | None = None
) -> Month:
    """Simulate `spec` into a new record in `folder` (anything there is replaced)."""
    started = time.perf_counter()
    config, store = fresh_record(folder, site_toml(spec), "month.secret", SITE_ID)
    sim = MonthSimulation(config, store, spec)
    first = date.fromisoformat(spec.first_day)
    for n in range(spec.days):
        sim.day(first + timedelta(days=n))
        sim.flush(sim.committed_at)  # whatever the day left pending
        if progress and (n % 10 == 9 or n == spec.days - 1):
            progress(f"day {n + 1}/{spec.days}: {sim.events:,} events")
    store.checkpoint()
    tickets = int(store.db.execute("SELECT COUNT(*) FROM tickets").fetchone()[0])
    month = Month(folder, spec, tickets, store.last_seq(), round(time.perf_counter() - started, 1))
    store.close()
    (folder / "month.json").write_text(
        json.dumps(
            {
                "format": FORMAT,
                "spec": asdict(spec),
                "built": {
                    "tickets": month.tickets,
                    "events": month.events,
                    "build_s": month.build_s,
                },
            }
        )
    )
    return month


def cached_month(
    folder: Path, spec: MonthSpec, progress: Callable[[str], None] | None = None
) -> Month:
    """The month `spec` describes, from `folder` if it was made there before."""
    meta = folder / "month.json"
    if meta.exists() and (folder / "hall.sqlite").exists():
        try:
            saved = json.loads(meta.read_text())
            if saved.get("format") == FORMAT and saved.get("spec") == asdict(spec):
                return Month(folder, spec, **saved["built"])
        except (ValueError, TypeError, KeyError):
            pass
    return build_month(folder, spec, progress)


def default_cache(spec: MonthSpec) -> Path:
    return Path(tempfile.gettempdir()) / "quhao-month" / f"{spec.days}x{spec.per_day}-s{spec.seed}"
