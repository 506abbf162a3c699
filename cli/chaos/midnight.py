"""Midnight with a kill just after it, for one day-end policy.

A 24-hour site (`day_end` = "expire" or "carry_over") and a hall whose clock starts a
few seconds before a local midnight. A kiosk issues without pause across midnight; a
counter calls one ticket before it. Just after midnight (hall time) the hall is SIGKILLed
— under "expire" 0.2–0.6 s after, before its first tick of the new day has ended the old
one; under "carry_over" right after that tick, once the day-end snapshot is written, so
the next hall starts from it — and started again with the same clock. Then the counter
calls again.

Checked from the database: each day's numbers of each service run 1, 2, 3 … with no gap
and no repeat (the new day starts again at 00001); the old day's waiting tickets are all
expired ("expire") or all carried into the new day and none expired ("carry_over"); the
first call after midnight takes a new-day ticket ("expire") or the oldest carried one
("carry_over"); and the usual record checks hold.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from cli.chaos.check import check_records, snapshot
from cli.chaos.clients import Requester
from cli.chaos.procs import HallProc
from cli.chaos.site import chaos_site, write_site
from hall.record import DATABASE
from quhao.clock import Clock

if TYPE_CHECKING:
    from cli.chaos.run import ChaosRun

TZ = ZoneInfo("Asia/Shanghai")
OLD_DAY, NEW_DAY = "2030-01-01", "2030-01-02"
MIDNIGHT = datetime(2030, 1, 2, 0, 0, tzinfo=TZ)
DAY_END = b"(day end)"  # the hall's log line for the snapshot it writes when a day ends


def _wait_hall_time(clock: Clock, at: float) -> None:
    while clock.now() < at:
        time.sleep(min(0.02, max(0.0, clock.real_seconds(at - clock.now()))))


def midnight_phase(run: ChaosRun, policy: str) -> None:
    site_id = f"chaos-midnight-{policy.replace('_', '-')}"
    config = write_site(
        run.work / f"site-{site_id}.toml", chaos_site(site_id, 1, 1, 1), day_end=policy
    )
    lead = run.plan.midnight_lead_s
    real_start = time.time() + 1.5  # the hall's start-up, before its clock matters
    spec = f"{(MIDNIGHT - timedelta(seconds=lead)).isoformat()}@{real_start:.3f}x1"
    clock = Clock.parse(spec)
    state = run.work / f"midnight-{policy}"
    hall = HallProc(config, run.broker.url, state, run.work / "logs" / f"{site_id}.log", spec)
    records = run.work / "records" / site_id
    if not hall.start():
        run.problem(f"midnight {policy}: the hall did not start: {hall.new_output()[-300:]!r}")
        return
    kiosk = Requester(run.broker.port, site_id, "kiosk-S", records / "kiosk-S.jsonl")
    counter = Requester(run.broker.port, site_id, "counter-S", records / "counter-S.jsonl")
    stop = threading.Event()

    def issue() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            person = None
            if n % 2:  # tax needs a person (enquiry does not)
                person = {"key": hashlib.sha256(f"midnight {n}".encode()).hexdigest(), "age": 40}
            kiosk.ask("issue", {"service": ("enquiry", "tax")[n % 2], "person": person}, f"m.{n}")
            time.sleep(0.02)

    issuer = threading.Thread(target=issue, name="midnight-kiosk", daemon=True)
    calls: list[dict[str, Any] | None] = []
    killed_at = 0.0
    try:
        _wait_hall_time(clock, MIDNIGHT.timestamp() - lead + 0.3)
        issuer.start()
        _wait_hall_time(clock, MIDNIGHT.timestamp() - 1.0)
        first = counter.ask("call", {}, "c.before")
        calls.append((first.final or {}).get("ticket"))
        if policy == "expire":
            # before the hall's first tick of the new day has done the day's end
            _wait_hall_time(clock, MIDNIGHT.timestamp() + run.rng.uniform(0.2, 0.6))
        else:
            # just after it: the day-end snapshot is written, the next hall starts from it
            deadline = time.monotonic() + 2.0
            while DAY_END not in hall.new_output() and time.monotonic() < deadline:
                time.sleep(0.005)
        killed_at = clock.now() - MIDNIGHT.timestamp()
        hall.kill()
        run.figures["kills"] += 1
        if not hall.start():
            run.problem(f"midnight {policy}: no restart after the kill: {hall.new_output()!r}")
            return
        _wait_hall_time(clock, MIDNIGHT.timestamp() + 2.5)
        after = counter.ask("call", {}, "c.after")
        calls.append((after.final or {}).get("ticket"))
    finally:
        stop.set()
        if issuer.is_alive():
            issuer.join(60)
        kiosk.close()
        counter.close()
        if hall.alive and hall.stop() != 0:
            run.problem(f"midnight {policy}: the hall did not stop cleanly")
        hall.kill()
    copy = run.work / f"{site_id}.sqlite"
    snapshot(state / DATABASE, copy)
    summary = _check_days(run, policy, copy, calls)
    run.report_findings(site_id, check_records(records, copy))
    started_from = "a snapshot" if b"rebuilt from snapshot" in hall.new_output() else "the log"
    run.figures.setdefault("phases", {})[f"midnight {policy}"] = (
        f"killed {killed_at:.2f} s after midnight, restarted from {started_from}; {summary}"
    )


def _check_days(
    run: ChaosRun, policy: str, db_path: Path, calls: list[dict[str, Any] | None]
) -> str:
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT id, day, origin_service, number, status FROM tickets").fetchall()
        carried = {
            json.loads(data)["ticket"]
            for (data,) in db.execute("SELECT data FROM events WHERE type = 'ticket.carried'")
        }
    finally:
        db.close()
    numbers: dict[tuple[str, str], list[int]] = defaultdict(list)
    status: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for _tid, day, service, number, state in rows:
        numbers[(day, service)].append(int(number[1:]))
        status[day][state] += 1
    name = f"midnight {policy}"
    for (day, service), issued in sorted(numbers.items()):
        if sorted(issued) != list(range(1, len(issued) + 1)):
            run.problem(
                f"{name}: {day} {service} numbers are not 1..{len(issued)}: gaps or repeats"
            )
    old, new = status.get(OLD_DAY, {}), status.get(NEW_DAY, {})
    if not old or not new:
        run.problem(f"{name}: tickets on the old day {dict(old)}, on the new day {dict(new)}")
    waiting_old = old.get("waiting", 0)
    before, after = ([*calls, None, None])[:2]
    after_day = str(after["id"]).split("/")[0] if isinstance(after, dict) else None
    if policy == "expire":
        if waiting_old or not old.get("expired"):
            run.problem(f"{name}: old day left {waiting_old} waiting, {old.get('expired')} expired")
        if after_day != NEW_DAY:
            run.problem(f"{name}: the first call after midnight took {after}")
    else:
        old_ids = {tid for tid, day, *_ in rows if day == OLD_DAY}
        if old.get("expired"):
            run.problem(f"{name}: {old['expired']} old-day tickets expired under carry_over")
        if not carried or not carried <= old_ids:
            run.problem(f"{name}: {len(carried)} tickets carried into the new day")
        if after_day != OLD_DAY:
            run.problem(f"{name}: the first call after midnight took {after}, not a carried one")
    counts = {day: sum(s.values()) for day, s in status.items()}
    return (
        f"old day {counts.get(OLD_DAY, 0)} tickets ({dict(old)}), new day "
        f"{counts.get(NEW_DAY, 0)} from 00001 ({dict(new)}); called before "
        f"{before['number'] if isinstance(before, dict) else None}, after "
        f"{after['id'] if isinstance(after, dict) else None}"
        + (f"; {len(carried)} carried" if policy != "expire" else "")
    )
