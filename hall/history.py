"""A hall's record of many simulated days, made through the real engine and store.

`build_history(folder, spec)` drives `Engine.handle` and `Engine.tick` over simulated days
— kiosks issue tickets through the day (some voided, some refused by the quota), clerks
log in, call, recall and skip no-shows, transfer some tickets (三证联办), finish, and
citizens rate — and commits every batch with `Store.commit` (events, the tickets they
touched, the answers), as the hall does. Each night it does what the hall does at a day's
end: stored answers and person keys past their time are erased, and a snapshot is taken
(and one every `snapshot_every` events). The last day stops in mid-morning, with tickets
waiting and windows serving, so a hall started on the record has live state to rebuild.

`cached_history(folder, spec)` builds once and reuses: building a year of a
2,000-ticket-a-day hall takes minutes. The folder holds `hall.sqlite`, the site file
and its secret, and `history.json` (the spec and what was built).
"""

from __future__ import annotations

import heapq
import json
import logging
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from hall import snapshot
from hall.engine import Engine
from hall.model import Event
from hall.store import Store
from quhao.config import SiteConfig, load
from quhao.staffauth import hash_pin
from quhao.wire import error, ok

log = logging.getLogger("quhao.history")

SITE_ID = "historyhall"
TZ = ZoneInfo("Asia/Shanghai")
SERVICES = (  # id, prefix, share of the tickets, quota
    ("social", "A", 0.30, True),
    ("medical", "B", 0.20, True),
    ("tax", "C", 0.15, True),
    ("housing", "D", 0.12, True),
    ("business", "E", 0.13, False),
    ("enquiry", "K", 0.10, False),
)
OPENS, ISSUE_UNTIL, CLOSES = 8.5, 17.0, 17.5  # hours of the day
STOP_LAST_DAY = 10.5  # the last day ends here, mid-morning
REQUEST_MEMORY_S = 2 * 86400  # as the hall: answers are kept two days for retries
FORMAT = 2  # of this generator: a cached record of another format is built again
KIOSKS = 6


@dataclass(frozen=True)
class HistorySpec:
    days: int = 365
    per_day: int = 2000
    seed: int = 1
    first_day: str = "2025-11-24"
    snapshot_every: int = snapshot.EVERY_EVENTS

    @property
    def windows(self) -> int:
        return max(2, round(self.per_day / 80))

    @property
    def last_day(self) -> str:
        return (date.fromisoformat(self.first_day) + timedelta(days=self.days - 1)).isoformat()

    @property
    def ends_at(self) -> float:
        """Hall time when the record ends (the last day, mid-morning)."""
        return _at(date.fromisoformat(self.last_day), STOP_LAST_DAY)


@dataclass(frozen=True)
class History:
    folder: Path
    spec: HistorySpec
    tickets: int
    events: int
    snapshots: list[int]
    build_s: float
    database_mb: float

    @property
    def database(self) -> Path:
        return self.folder / "hall.sqlite"

    @property
    def site(self) -> Path:
        return self.folder / "site.toml"


def site_toml(spec: HistorySpec) -> str:
    lines = [
        "# A simulated hall (hall/history.py): open every day, 08:30-17:30.",
        "[site]",
        f'id = "{SITE_ID}"',
        'name = "模拟政务服务中心"',
        'timezone = "Asia/Shanghai"',
        'hours = ["08:30-17:30"]',
        'days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]',
        'secret_file = "history.secret"',
        "",
        "[queue]",
        "number_width = 4",
        "",
    ]
    for sid, prefix, _share, quota in SERVICES:
        lines += [
            "[[services]]",
            f'id = "{sid}"',
            f'name = "{sid}"',
            f'prefix = "{prefix}"',
            "quota = { tickets = 2, hours = 2 }" if quota else "quota = false",
            *(["id_required = false"] if sid == "enquiry" else []),
            "",
        ]
    ids = [s[0] for s in SERVICES]
    pin = hash_pin("1234", salt=b"history-fixed-sa", iterations=1000)
    for n in range(1, spec.windows + 1):
        served = [ids[(n - 1) % len(ids)], ids[n % len(ids)]]
        lines += ["[[windows]]", f"number = {n}", f"services = {json.dumps(served)}", ""]
        lines += ["[[counters]]", f'name = "counter-W{n}"', f"window = {n}", ""]
        lines += ["[[staff]]", f'id = "S{n:03d}"', f'name = "职员{n}"', f'pin_hash = "{pin}"', ""]
    for k in range(1, KIOSKS + 1):
        lines += ["[[kiosks]]", f'name = "kiosk-K{k}"', ""]
    return "\n".join(lines)


def fresh_record(
    folder: Path, site: str, secret_file: str, site_id: str
) -> tuple[SiteConfig, Store]:
    """A new simulated record in `folder` (anything there is replaced): the site file, a
    secret for it that no hall uses, and an empty store that does not wait for the disk (a
    simulation has nothing to lose on a crash)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / "site.toml").write_text(site, encoding="utf-8")
    name = secret_file.removesuffix(".secret")
    (folder / secret_file).write_text(f"simulated-{name}-secret-not-for-halls\n")
    config = load(folder / "site.toml")
    store = Store(folder / "hall.sqlite", site=site_id)
    store.db.execute("PRAGMA synchronous=OFF")
    return config, store


def cached_history(
    folder: Path, spec: HistorySpec, progress: Callable[[str], None] | None = None
) -> History:
    """The record `spec` describes, from `folder` if it was built there before."""
    meta = folder / "history.json"
    if meta.exists() and (folder / "hall.sqlite").exists():
        try:
            saved = json.loads(meta.read_text())
            if saved.get("format") == FORMAT and saved.get("spec") == asdict(spec):
                return History(folder, spec, **saved["built"])
        except (ValueError, TypeError, KeyError):
            pass
    return build_history(folder, spec, progress)


def build_history(
    folder: Path, spec: HistorySpec, progress: Callable[[str], None] | None = None
) -> History:
    """Simulate `spec.days` days into a new record in `folder` (anything there is replaced)."""
    started = time.perf_counter()
    config, store = fresh_record(folder, site_toml(spec), "history.secret", SITE_ID)
    sim = _Simulation(config, store, spec)
    first = date.fromisoformat(spec.first_day)
    for n in range(spec.days):
        last = n == spec.days - 1
        sim.day(first + timedelta(days=n), stop=STOP_LAST_DAY if last else None)
        if progress and (n % 30 == 29 or last):
            progress(
                f"day {n + 1}/{spec.days}: {sim.events:,} events, "
                f"{time.perf_counter() - started:.0f} s"
            )
    store.checkpoint()
    tickets = int(store.db.execute("SELECT COUNT(*) FROM tickets").fetchone()[0])
    history = History(
        folder,
        spec,
        tickets=tickets,
        events=store.last_seq(),
        snapshots=store.snapshot_seqs(),
        build_s=round(time.perf_counter() - started, 1),
        database_mb=0.0,
    )
    store.close()
    history = History(
        **{**history.__dict__, "database_mb": round(history.database.stat().st_size / 1e6, 1)}
    )
    built = {k: v for k, v in history.__dict__.items() if k not in ("folder", "spec")}
    (folder / "history.json").write_text(
        json.dumps({"format": FORMAT, "spec": asdict(spec), "built": built}, indent=1)
    )
    return history


def _at(day: date, hour: float) -> float:
    midnight = datetime.combine(day, datetime.min.time(), TZ).timestamp()
    return midnight + hour * 3600


class _Simulation:
    """One hall, day after day: a heap of timed actions, committed in batches."""

    def __init__(self, config: SiteConfig, store: Store, spec: HistorySpec) -> None:
        self.config, self.store, self.spec = config, store, spec
        self.engine = Engine(config, config.read_secret())
        self.rng = random.Random(spec.seed)
        self.events = 0
        self.since_snapshot = 0
        self.rids = 0
        self.pending: list[Event] = []
        self.answers: list[tuple[str, str, float, dict[str, Any]]] = []
        self.people = [f"{self.rng.getrandbits(128):032x}" for _ in range(spec.per_day * 20)]

    # ---- one request, one batch ------------------------------------------

    def act(
        self, device: str, action: str, payload: dict[str, Any], now: float
    ) -> dict[str, Any] | None:
        """The response, or None when the hall refused."""
        outcome = self.engine.handle(device, action, payload, now)
        self.rids += 1
        rid = f"h{self.rids}"
        if outcome.error:
            answer = error(rid, outcome.error.code, outcome.error.message)
        else:
            answer = ok(rid, outcome.response)
        self.pending += outcome.events
        self.answers.append((device, rid, now, answer))
        return None if outcome.error else outcome.response

    def tick(self, now: float) -> None:
        self.pending += self.engine.tick(now)

    def commit(self, now: float) -> None:
        if not self.pending and not self.answers:
            return
        touched = {e.data["ticket"] for e in self.pending if "ticket" in e.data}
        self.store.commit(self.pending, [self.engine.tickets[t] for t in touched], self.answers)
        self.events += len(self.pending)
        self.since_snapshot += len(self.pending)
        self.pending, self.answers = [], []
        if self.since_snapshot >= self.spec.snapshot_every:
            self.snapshot(now)

    def snapshot(self, now: float) -> None:
        snapshot.save(self.store, self.engine, now)
        self.since_snapshot = 0

    # ---- a day -------------------------------------------------------------

    def day(self, today: date, stop: float | None = None) -> None:
        rng, spec = self.rng, self.spec
        end = _at(today, stop if stop is not None else 24.0)
        heap: list[tuple[float, int, str, tuple[Any, ...]]] = []
        order = 0

        def at(when: float, what: str, *args: Any) -> None:
            nonlocal order
            order += 1
            heapq.heappush(heap, (when, order, what, args))

        opens, closes = _at(today, OPENS), _at(today, CLOSES)
        at(_at(today, 0.01), "midnight")
        for minute in range(int(opens), int(closes) + 600, 60):
            at(float(minute), "tick")
        services = [s[0] for s in SERVICES]
        shares = [s[2] for s in SERVICES]
        for _ in range(spec.per_day):
            # two peaks: mid-morning and early afternoon
            hour = rng.choice((rng.triangular(8.5, 12.0, 9.5), rng.triangular(13.0, 17.0, 14.5)))
            service = rng.choices(services, shares)[0]
            at(_at(today, min(hour, ISSUE_UNTIL - 0.01)), "citizen", service)
        for n in range(1, spec.windows + 1):
            at(opens + rng.uniform(0, 300), "login", n)
        while heap and heap[0][0] < end:
            now, _, what, args = heapq.heappop(heap)
            if what == "midnight":
                self.tick(now)
                self.commit(now)
                self.night(now)
            elif what == "tick":
                self.tick(now)
                self.commit(now)
            elif what == "citizen":
                self.citizen(now, args[0], at)
            elif what == "login":
                staff = {"staff": f"S{args[0]:03d}", "pin": "1234"}
                self.act(f"counter-W{args[0]}", "login", staff, now)
                at(now + 1, "call", args[0])
            elif what == "call":
                self.call(now, args[0], closes, at)
            elif what == "recall":
                self.act(f"counter-W{args[0]}", "recall", {}, now)
                at(now + 60, "skip", args[0])
            elif what == "skip":
                self.act(f"counter-W{args[0]}", "skip", {}, now)
                at(now + 5, "call", args[0])
            elif what == "done":
                self.done(now, args[0], at)
            elif what == "rate":
                n, ticket, level = args
                rating = {
                    "ticket": ticket,
                    "level": level,
                    "reason": "等太久" if level <= 2 else "",
                }
                self.act(f"counter-W{n}", "rate", rating, now)
            elif what == "logout":
                self.act(f"counter-W{args[0]}", "logout", {}, now)
        self.commit(end)

    def night(self, now: float) -> None:
        """What the hall does when a day has ended: erase what is due, take a snapshot."""
        self.store.forget_requests_before(now - REQUEST_MEMORY_S)
        before = self.engine.person_keys_expire_before(now)
        self.store.erase_person_keys(before)
        self.engine.forget_person_keys(before)
        if self.events:
            self.snapshot(now)

    def citizen(self, now: float, service: str, at: Callable[..., None]) -> None:
        rng = self.rng
        kiosk = f"kiosk-K{rng.randint(1, KIOSKS)}"
        anonymous = service == "enquiry" and rng.random() < 0.5
        person = None if anonymous else {"key": rng.choice(self.people), "age": rng.randint(18, 90)}
        response = self.act(kiosk, "issue", {"service": service, "person": person}, now)
        if response is None:
            return
        if rng.random() < 0.01:  # the printer jammed: the kiosk voids the number
            self.act(kiosk, "void", {"ticket": response["ticket"]["id"]}, now + 2)
        elif person is not None and rng.random() < 0.02:  # tries for more (the quota answers)
            self.act(kiosk, "issue", {"service": service, "person": person}, now + 30)

    def call(self, now: float, n: int, closes: float, at: Callable[..., None]) -> None:
        rng = self.rng
        if now >= closes:
            at(now + rng.uniform(60, 600), "logout", n)
            return
        response = self.act(f"counter-W{n}", "call", {}, now)
        if response is None or response["ticket"] is None:
            at(now + rng.uniform(20, 60), "call", n)
        elif rng.random() < 0.05:  # nobody comes: recalled, then skipped
            at(now + 60, "recall", n)
        else:
            at(now + rng.uniform(90, 420), "done", n)

    def done(self, now: float, n: int, at: Callable[..., None]) -> None:
        rng = self.rng
        device = f"counter-W{n}"
        if rng.random() < 0.04:  # a second service at another window (三证联办)
            current = self.engine.terminals[device].current
            ticket = self.engine.tickets[current] if current else None
            others = [s[0] for s in SERVICES if ticket is None or s[0] != ticket.service]
            self.act(device, "transfer", {"service": rng.choice(others)}, now)
            at(now + 5, "call", n)
            return
        response = self.act(device, "finish", {}, now)
        if response is not None and rng.random() < 0.6:
            level = rng.choices((5, 4, 3, 2, 1), (70, 20, 6, 3, 1))[0]
            at(now + rng.uniform(3, 20), "rate", n, response["ticket"]["id"], level)
        at(now + rng.uniform(10, 40), "call", n)


# ---- `quhao bench startup` ---------------------------------------------------


def default_cache(spec: HistorySpec) -> Path:
    return (
        Path(tempfile.gettempdir())
        / "quhao-history"
        / (f"{spec.days}x{spec.per_day}-s{spec.seed}-e{spec.snapshot_every}")
    )


def measure_startup(folder: Path, snapshots: bool = True) -> dict[str, Any]:
    """What the hall does at start before it connects (hall/service.py): lock and check
    the record, open the store, rebuild the engine, load the answered rids. Run it in a
    fresh process: it is what a restarted hall does."""
    from hall import record
    from hall.service import load_state

    started = time.perf_counter()
    config = load(folder / "site.toml")
    lock = record.lock(folder)
    try:
        record.check(folder, config.site.id)
        store = Store(folder / record.DATABASE, site=config.site.id)
        rebuilt = load_state(config, store, config.read_secret(), snapshots=snapshots)
        answered = store.remembered_requests()
        store.close()
    finally:
        lock.close()
    return {
        "ms": round((time.perf_counter() - started) * 1000, 1),
        "rebuild_ms": round(rebuilt.ms, 1),
        "snapshot_seq": rebuilt.snapshot_seq,
        "replayed": rebuilt.replayed,
        "live_tickets": len(rebuilt.engine.tickets),
        "answered": len(answered),
    }


def measure_report(folder: Path, day: str, out: Path) -> dict[str, Any]:
    from hall.report import build, write

    config = load(folder / "site.toml")
    started = time.perf_counter()
    report = build(folder / "hall.sqlite", day, config.site.timezone)
    built = time.perf_counter()
    write(report, out)
    return {
        "ms": round((time.perf_counter() - started) * 1000, 1),
        "build_ms": round((built - started) * 1000, 1),
        "tickets": len(report.tickets),
    }


def measure_snapshot(folder: Path) -> dict[str, Any]:
    """One more snapshot of the record's end state, as the hall's loop would write it
    (into a copy of the record, so the cached one is left as it was)."""
    from hall.service import load_state

    with tempfile.TemporaryDirectory(prefix="quhao-snap-") as tmp:
        copy = Path(tmp) / "hall.sqlite"
        source = sqlite3.connect(folder / "hall.sqlite")
        target = sqlite3.connect(copy)
        source.backup(target)
        source.close()
        target.close()
        config = load(folder / "site.toml")
        store = Store(copy, site=config.site.id)
        engine = load_state(config, store, config.read_secret()).engine
        saves = [snapshot.save(store, engine, time.time()) for _ in range(3)]
        store.close()
    best = min(saves, key=lambda s: s.state_ms + s.encode_ms + s.write_ms)
    return {
        "live_tickets": best.tickets,
        "json_kb": best.json_bytes // 1024,
        "stored_kb": best.stored_bytes // 1024,
        "state_ms": round(best.state_ms, 1),
        "encode_ms": round(best.encode_ms, 1),
        "write_ms": round(best.write_ms, 1),
    }


def measure_process(history: History) -> dict[str, Any]:
    """A real `quhao hall` on a copy of the record, behind a private Mosquitto: the time
    from starting the process to its "serving" line (imports, record checks, rebuild,
    MQTT connection), and the rebuild line it logged."""
    from quhao.broker import Mosquitto
    from quhao.processes import quhao, stop

    with tempfile.TemporaryDirectory(prefix="quhao-start-") as tmp:
        work = Path(tmp)
        state = work / "hall"
        state.mkdir()
        for name in ("hall.sqlite", "site.toml", "history.secret"):
            shutil.copy(history.folder / name, state / name)
        clock = datetime.fromtimestamp(history.spec.ends_at + 60, TZ).isoformat()
        log_path = work / "hall.log"
        with Mosquitto(workdir=work / "broker") as broker, log_path.open("wb") as log_file:
            started = time.perf_counter()
            proc = quhao(
                *("hall", "--config", str(state / "site.toml"), "--broker", broker.url),
                *("--state-dir", str(state), "--clock", clock, "--log-level", "INFO"),
                log=log_file,
            )
            try:
                while "serving" not in log_path.read_text(errors="replace"):
                    if proc.poll() is not None or time.perf_counter() - started > 120:
                        raise RuntimeError(f"the hall did not start:\n{log_path.read_text()}")
                    time.sleep(0.005)
                ready_ms = (time.perf_counter() - started) * 1000
            finally:
                stop(proc, 15)
        line = next(
            (x for x in log_path.read_text().splitlines() if "state rebuilt" in x), "no rebuild"
        )
    return {"ms": round(ready_ms, 1), "log": line.split(": ", 1)[-1]}


def _in_fresh_process(what: str, *args: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "hall.history", what, *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def run_startup_bench(
    days: int = 365, per_day: int = 2000, cache: Path | None = None, runs: int = 3
) -> dict[str, Any]:
    """Start-up from the newest snapshot vs. a full replay, and one day's report, on a
    record of `days` simulated days (built once, then reused from `cache`)."""
    spec = HistorySpec(days=days, per_day=per_day)
    folder = cache or default_cache(spec)
    print(f"record: {folder} ({days} days of {per_day:,} tickets; built once, then reused)")
    history = cached_history(folder, spec, progress=lambda line: print(f"  building: {line}"))
    print(
        f"  {history.tickets:,} tickets, {history.events:,} events, "
        f"{history.database_mb:,.0f} MB (built in {history.build_s:,.0f} s)"
    )
    best = [_in_fresh_process("startup", str(folder), "snapshot") for _ in range(runs)]
    with_snapshot = min(best, key=lambda r: r["ms"])
    full = _in_fresh_process("startup", str(folder), "full")
    middle = (date.fromisoformat(spec.first_day) + timedelta(days=days // 2)).isoformat()
    with tempfile.TemporaryDirectory(prefix="quhao-report-") as out:
        reports = [_in_fresh_process("report", str(folder), middle, out) for _ in range(runs)]
    report = min(reports, key=lambda r: r["ms"])
    snap = _in_fresh_process("snapshot", str(folder))
    process = min((measure_process(history) for _ in range(runs)), key=lambda r: r["ms"])
    results = {
        "benchmark": "hall.startup",
        "days": days,
        "per_day": per_day,
        "tickets": history.tickets,
        "events": history.events,
        "database_mb": history.database_mb,
        "startup_snapshot": with_snapshot,
        "startup_full_replay": full,
        "report_one_day": {**report, "day": middle},
        "snapshot": snap,
        "hall_process": process,
    }
    print(
        f"\nhall start-up and report on {days} days x {per_day:,} tickets "
        f"({history.events:,} events)"
    )
    print(f"{'':34}{'ms':>10}  detail")
    print(
        f"{'start-up from the newest snapshot':34}{with_snapshot['ms']:10.0f}  snapshot at seq "
        f"{with_snapshot['snapshot_seq']:,} + {with_snapshot['replayed']:,} events; "
        f"{with_snapshot['live_tickets']:,} live tickets"
    )
    print(f"{'start-up by a full replay':34}{full['ms']:10.0f}  all {full['replayed']:,} events")
    print(f"{'quhao hall: start to serving':34}{process['ms']:10.0f}  {process['log']}")
    print(
        f"{'report of one day (' + middle + ')':34}{report['ms']:10.0f}  "
        f"{report['tickets']:,} tickets, HTML and CSV"
    )
    print(
        f"snapshot: {snap['live_tickets']:,} live tickets, {snap['json_kb']:,} KB of JSON, "
        f"{snap['stored_kb']:,} KB stored; state {snap['state_ms']:.0f} ms + JSON/zlib "
        f"{snap['encode_ms']:.0f} ms + write {snap['write_ms']:.0f} ms"
    )
    target = 2000
    print(
        f"targets: start-up < 2 s: {'met' if process['ms'] < target else 'MISSED'}; "
        f"one-day report < 2 s: {'met' if report['ms'] < target else 'MISSED'}"
    )
    print(json.dumps(results, separators=(",", ":")))
    return results


def _main(argv: list[str]) -> int:
    what, folder = argv[0], Path(argv[1])
    if what == "startup":
        result = measure_startup(folder, snapshots=argv[2] == "snapshot")
    elif what == "report":
        result = measure_report(folder, argv[2], Path(argv[3]))
    elif what == "snapshot":
        result = measure_snapshot(folder)
    else:
        raise SystemExit(f"unknown measurement {what!r}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
