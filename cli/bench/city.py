"""`quhao bench city`: many simulated halls' feeds through bridged brokers into one
`quhao city`, beside a bare batched insert of the same rows into the same PostgreSQL.

The city as in production, on one machine (cli/bench/citynet.py): the city broker that
`quhao city broker` writes (TLS listener, a user per hall), 4 hall brokers each carrying
the generated bridges of a quarter of the halls (persistent sessions, QoS 1), the
`quhao city` process, PostgreSQL (fsync on). The halls are simulated — not 200 hall
processes: a load generator per hall broker publishes each hall's feed exactly as
hall/feed.py does (the same `supervision_event` and `pack`, one message per round, a
heartbeat every 10 s) and answers replay requests from each hall's log in memory.

Load: a busy hall's real peak is about 250 tickets an hour (the surge day's busiest
service issued 1,458 in a day); a ticket makes about four events (issued, called,
finished, rated or not, now and then a refusal, a skip, an alert), so ≈ 1,000 events an
hour, 0.28 a second. At `speed`× that per hall, events stamped with the real time.

Phases (the halls start first, then `quhao city`, which catches up before the clock starts):
1. steady: `STEADY_S` seconds of load; throughput and end-to-end lag (the event's time
   in the hall → its row inserted in the city's write transaction) p50/p99;
2. cut: every bridge's link cut for `minutes` simulated minutes (`minutes`·60/`speed`
   real seconds) while the halls go on, then mended: the catch-up time until the city
   holds every hall's head at the mend, what it wrote per second meanwhile, and when it
   was back with the live stream (holding what every hall had a second before);
3. outage: `quhao city` stopped for `OUTAGE_S` while the halls go on, then started: it
   pulls what it missed from every hall. Until it holds every hall's head of its restart
   it runs flat out; everything it wrote meanwhile (the backlog and the live stream,
   which goes on) over that time, start-up included, is the ingest's throughput;
4. bare: `quhao city` and the halls stopped, the same rows, read back from the city's
   `events`, COPYed (binary, as the city writes `events`) in batches of the same size
   straight into a twin table with the same key and indexes, a commit each; then, for a
   second figure, the rows of its other tables as they ended up (tickets, ratings,
   alerts, appointments) into their twins the same way.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from city.project import micros
from city.writer import EVENT_TYPES
from cli.bench.citycpu import Meter, main_thread_cpu, postmaster, with_children
from cli.bench.citynet import CityNet
from hall.feed import ReplayQueue, pack_encoded, supervision_event
from quhao.messages.feed import ReplayRequest
from quhao.mqtt import Bus, Message
from quhao.processes import quhao, stop
from quhao.wire import encode

REAL_PEAK_EVENTS_PER_S = 1000 / 3600  # one busy hall at its real peak
ROUND_S = 0.25  # a simulated hall publishes what it committed once a round
REPLAY_ROUND_S = 0.02  # and serves a waiting replay request as often as this
STEADY_S = 30.0
OUTAGE_S = 20.0  # `quhao city` stopped this long: the backlog its catch-up is timed on
HALL_BROKERS = 4


@dataclass
class SimHall:
    site: str
    db: str
    log: list[bytes] = field(default_factory=list)  # each event encoded once, as it left
    tickets: list[tuple[str, int]] = field(default_factory=list)  # (id, stage) in progress
    number: int = 0
    owed: float = 0.0

    def step(self, rnd: random.Random, now: float) -> bytes:
        """The hall's next event: a new ticket, or the next stage of one in progress."""
        day = time.strftime("%Y-%m-%d", time.localtime(now))
        if not self.tickets or rnd.random() < 0.28:
            self.number += 1
            ticket = f"{day}/A{self.number:04d}"
            if rnd.random() < 0.02:
                return self._add(
                    now,
                    "ticket.refused",
                    {
                        "kiosk": "kiosk-K1",
                        "service": "social",
                        "reason": "quota_exceeded",
                        "day": day,
                    },
                )
            self.tickets.append((ticket, 0))
            return self._add(
                now,
                "ticket.issued",
                {
                    "ticket": ticket,
                    "day": day,
                    "number": f"A{self.number:04d}",
                    "service": "social",
                    "kiosk": "kiosk-K1",
                    "priority": None,
                    "override_staff": None,
                    "person_key": "ab" * 32,
                    "seq": self.number,
                },
            )
        ticket, stage = self.tickets.pop(0)
        window = 1 + self.number % 8
        if stage == 0:
            self.tickets.append((ticket, 1))
            return self._add(
                now,
                "ticket.called",
                {
                    "ticket": ticket,
                    "terminal": f"counter-W{window}",
                    "window": window,
                    "staff": "S001",
                    "ordinary_waiting": True,
                },
            )
        if stage == 1:
            if rnd.random() < 0.08:
                return self._add(
                    now,
                    "ticket.skipped",
                    {"ticket": ticket, "terminal": f"counter-W{window}", "reason": "no_show"},
                )
            self.tickets.append((ticket, 2))
            return self._add(
                now,
                "ticket.finished",
                {
                    "ticket": ticket,
                    "terminal": f"counter-W{window}",
                    "window": window,
                    "staff": "S001",
                },
            )
        level = rnd.choice([None, 5, 5, 5, 4, 4, 3, 2, 1])
        return self._add(
            now,
            "ticket.rated",
            {
                "ticket": ticket,
                "number": ticket[-5:],
                "service": "social",
                "window": window,
                "level": level,
                "reason": "等太久" if level and level <= 2 else "",
                "staff": "S001",
            },
        )

    def _add(self, now: float, kind: str, data: dict[str, Any]) -> bytes:
        event = encode(supervision_event(len(self.log) + 1, now, kind, data))
        self.log.append(event)
        return event


class Generator:
    """The simulated halls of one hall broker: live feed, heartbeats, replays — each
    hall's replays at the pace of hall/feed.py (its `ReplayQueue`: a few requests
    waiting, one page a round, `REPLAY_RATE` pages a second)."""

    def __init__(self, url: str, halls: list[SimHall], rate: float, seed: int) -> None:
        self.halls = {h.site: h for h in halls}
        self.queues = {h.site: ReplayQueue() for h in halls}
        self.rate = rate
        self.rnd = random.Random(seed)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.bus = Bus(url, f"generator-{seed}")
        self.bus.subscribe("quhao/+/feed/req", self._on_request)
        self.bus.start()
        self.replays = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.replay_thread = threading.Thread(target=self._serve_replays, daemon=True)

    def _on_request(self, message: Message) -> None:
        site = message.topic.split("/")[1]
        if site not in self.halls:
            return
        request = ReplayRequest.model_validate_json(message.payload)
        with self.lock:
            self.queues[site].offer(request)

    def _serve_replays(self) -> None:
        """A hall's loop serves a replay request a round; its rounds come at least every
        0.1 s, and as often as messages arrive: here every REPLAY_ROUND_S."""
        while not self.stop.is_set():
            started = time.monotonic()
            for site, hall in self.halls.items():
                with self.lock:
                    request = self.queues[site].next(started)
                    if request is None:
                        continue
                    page = hall.log[request.after : request.after + request.limit]
                    head = len(hall.log)
                for raw in pack_encoded(site, hall.db, head, page, replay=True):
                    self.bus.publish(f"quhao/{site}/feed/replay", raw)
                self.replays += 1
            self.stop.wait(max(0.0, REPLAY_ROUND_S - (time.monotonic() - started)))

    def _run(self) -> None:
        next_beat = 0.0
        while not self.stop.is_set():
            started = time.monotonic()
            now = time.time()
            beat = started >= next_beat
            if beat:
                next_beat = started + 10.0
            for site, hall in self.halls.items():
                with self.lock:
                    hall.owed += self.rate * ROUND_S
                    events = []
                    while hall.owed >= 1.0:
                        hall.owed -= 1.0
                        events.append(hall.step(self.rnd, now))
                    head = len(hall.log)
                if events or beat:
                    for raw in pack_encoded(site, hall.db, head, events):
                        self.bus.publish(f"quhao/{site}/feed", raw)
            self.stop.wait(max(0.0, ROUND_S - (time.monotonic() - started)))

    def heads(self) -> dict[str, int]:
        with self.lock:
            return {site: len(h.log) for site, h in self.halls.items()}

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.replay_thread.join(5)
        self.bus.stop()


def _generator_process(url: str, sites: list[str], rate: float, seed: int, heads_file: str) -> None:
    """One hall broker's simulated halls in a process of their own (one Python process
    cannot publish for 200 halls at 100x on a small machine: the GIL)."""
    gen = Generator(url, [SimHall(site, f"db-{site}") for site in sites], rate, seed)
    signal.signal(signal.SIGTERM, lambda signum, frame: gen.stop.set())
    gen.thread.start()
    gen.replay_thread.start()
    path = Path(heads_file)
    while not gen.stop.is_set():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(gen.heads()))
        tmp.replace(path)
        gen.stop.wait(0.2)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(gen.heads()))
    tmp.replace(path)
    gen.close()


def _wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, every: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


def _stop_generators(processes: list[multiprocessing.process.BaseProcess]) -> None:
    for process in processes:
        if process.is_alive() and process.pid is not None:
            os.kill(process.pid, signal.SIGTERM)
    for process in processes:
        process.join(10)
        if process.is_alive():
            process.kill()


def _positions(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return {h: int(d) for h, d in conn.execute("SELECT hall, done FROM feed_positions")}


def _lag(dsn: str, since: float, until: float) -> dict[str, float]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*), "
            "percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM written) - at_s), "
            "percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM written) - at_s) "
            "FROM events WHERE at_s >= %s AND at_s < %s",
            (since, until),
        ).fetchone()
    assert row is not None
    return {
        "events": int(row[0]),
        "p50_ms": round(float(row[1] or 0) * 1000, 1),
        "p99_ms": round(float(row[2] or 0) * 1000, 1),
    }


def _twin(conn: psycopg.Connection[Any], table: str) -> str:
    """`bare_{table}`: the same columns, defaults, key and indexes (and partitions)."""
    twin = f"bare_{table}"
    key = {"events": "at", "tickets": "day"}.get(table)
    like = f"CREATE TABLE {twin} (LIKE {table} INCLUDING DEFAULTS INCLUDING INDEXES)"
    conn.execute(like + (f" PARTITION BY RANGE ({key})" if key else ""))
    if key:
        for n, (bound,) in enumerate(
            conn.execute(
                "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i JOIN pg_class c "
                "ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass",
                (table,),
            ).fetchall()
        ):
            conn.execute(f"CREATE TABLE {twin}_{n} PARTITION OF {twin} {bound}")
    return twin


# What the city writes besides `events` (final rows: the city inserts and updates them).
_OTHER_TABLES = ("tickets", "ratings", "alerts", "appointments")


def _bare(dsn: str, batch: int, pg_data: Path) -> dict[str, float]:
    """The same rows, batch by batch, into twin tables: one COPY and a commit each — the
    fastest batched insert there is. `events` (binary, the way the city writes it), and
    then the rows of the city's other tables as they ended up, for `all_per_s`."""
    with psycopg.connect(dsn) as conn:
        # in the binary forms the city's projection makes (city/writer.py _FORMATTED_AS)
        rows = [
            (row[0], row[1], micros(row[3]), row[3], row[4], row[5], b"\x01" + row[6].encode())
            for row in conn.execute(
                "SELECT hall, seq, at, at_s, type, ticket, data::text FROM events "
                "ORDER BY written, hall, seq"
            )
        ]
        others = {
            table: conn.execute(f"SELECT * FROM {table}").fetchall() for table in _OTHER_TABLES
        }
        twins = {table: _twin(conn, table) for table in ("events", *_OTHER_TABLES)}
        conn.commit()
        postgres = Meter({"postgresql": lambda: with_children(postmaster(pg_data))})
        postgres.start()
        client = main_thread_cpu()
        started = time.perf_counter()
        for start in range(0, len(rows), batch):
            with conn.transaction(), conn.cursor() as cur:
                columns = "hall, seq, at, at_s, type, ticket, data"
                sql = f"COPY {twins['events']} ({columns}) FROM STDIN (FORMAT BINARY)"
                with cur.copy(sql) as copy:
                    copy.set_types(EVENT_TYPES)
                    for row in rows[start : start + batch]:
                        copy.write_row(row)
        seconds = time.perf_counter() - started
        cpu = postgres.stop()["postgresql"] + main_thread_cpu() - client
        started_all = time.perf_counter()
        for table, table_rows in others.items():
            for start in range(0, len(table_rows), batch):
                with (
                    conn.transaction(),
                    conn.cursor() as cur,
                    cur.copy(f"COPY {twins[table]} FROM STDIN") as copy,
                ):
                    for row in table_rows[start : start + batch]:
                        copy.write_row(row)
        all_seconds = seconds + time.perf_counter() - started_all
    return {
        "events": len(rows),
        "seconds": round(seconds, 2),
        "per_s": round(len(rows) / seconds),
        "cpu_us_per_event": round(cpu / len(rows) * 1e6, 1),
        "all_rows": len(rows) + sum(len(r) for r in others.values()),
        "all_per_s": round(len(rows) / all_seconds),  # events a second, all their rows
    }


def run_city_bench(halls: int = 200, speed: float = 100.0, minutes: float = 10.0) -> dict[str, Any]:
    # SIGTERM (a timeout, Ctrl-C from a supervisor) unwinds through `finally`: the
    # brokers, PostgreSQL and the generators are stopped, not left behind.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    work = Path(tempfile.mkdtemp(prefix="quhao-bench-city-"))
    sites = [f"h{i:03d}" for i in range(halls)]
    groups = [sites[i::HALL_BROKERS] for i in range(HALL_BROKERS)]
    net = CityNet(work / "net", groups).start()
    rate = REAL_PEAK_EVENTS_PER_S * speed
    processes: list[multiprocessing.process.BaseProcess] = []
    heads_files = [work / f"heads-{i}.json" for i in range(len(groups))]
    city: subprocess.Popen[bytes] | None = None
    try:
        # The halls first, as in a city (they were there before its daemon): every
        # bridge up, the generators running, then `quhao city`, which catches up with
        # what they made meanwhile before the clock starts.
        connected = "New client connected"
        _wait_until(
            lambda: net.city_broker.log_path.read_text().count(connected) >= halls,
            120,
            "every bridge to connect",
        )
        fork = multiprocessing.get_context("fork")
        for index, group in enumerate(groups):
            url = net.hall_brokers[index].url
            args = (url, group, rate, index, str(heads_files[index]))
            processes.append(fork.Process(target=_generator_process, args=args, daemon=True))
        for process in processes:
            process.start()
        _wait_until(lambda: all(f.exists() for f in heads_files), 30, "the generators")

        def heads() -> dict[str, int]:
            out: dict[str, int] = {}
            for path in heads_files:
                out.update({k: int(v) for k, v in json.loads(path.read_text()).items()})
            return out

        def caught_up(target: dict[str, int]) -> bool:
            done = _positions(net.dsn)
            return all(done.get(s, 0) >= n for s, n in target.items())

        def start_city() -> subprocess.Popen[bytes]:
            with (work / "city.log").open("ab") as log:
                return quhao("city", "--config", str(net.city_toml), "--log-level", "INFO", log=log)

        def live_again(timeout: float) -> float:
            """Seconds until the city holds what every hall had a second before."""
            started = time.monotonic()
            while True:
                target = heads()
                time.sleep(1.0)
                if caught_up(target):
                    return time.monotonic() - started
                if time.monotonic() - started > timeout:
                    raise TimeoutError(f"the city not caught up with the halls in {timeout:g} s")

        city = start_city()
        live_again(120)
        steady_from = time.time()
        time.sleep(STEADY_S)
        steady_to = time.time()
        steady = _lag(net.dsn, steady_from, steady_to - 2)
        # the cut: every link down for `minutes` of hall time
        before = sum(_positions(net.dsn).values())
        for relay in net.relays.values():
            relay.cut()
        time.sleep(minutes * 60 / speed)
        for relay in net.relays.values():
            relay.mend()
        mended = time.monotonic()
        target = heads()
        backlog = sum(target.values()) - before
        _wait_until(lambda: caught_up(target), 600, "the city to catch up", 0.25)
        catch_up_s = time.monotonic() - mended
        cut_written = sum(_positions(net.dsn).values()) - before  # the live stream too
        live_s = catch_up_s + live_again(600)  # and with the halls' live stream again
        # an outage of `quhao city` itself: the halls' feeds pile up; on its return it
        # pulls what it missed from every hall (pages of 500) — its ingest at full speed
        assert city is not None
        stop(city, 15)
        time.sleep(OUTAGE_S)
        target = heads()
        held = sum(_positions(net.dsn).values())
        city = start_city()
        restarted = time.monotonic()
        meter = Meter(
            {
                "quhao city": lambda: [city.pid] if city is not None else [],
                "postgresql": lambda: with_children(postmaster(net.pg.data)),
                "city broker": lambda: [net.city_broker.proc.pid],
                "hall brokers": lambda: [b.proc.pid for b in net.hall_brokers],
                "generators": lambda: [p.pid for p in processes if p.pid is not None],
                "bench (relays)": lambda: [os.getpid()],
            }
        )
        meter.start()
        _wait_until(lambda: caught_up(target), 900, "the city to catch up after its outage", 0.25)
        outage_s = time.monotonic() - restarted
        cpu = meter.stop()
        outage_backlog = sum(target.values()) - held
        # Everything it wrote meanwhile — the backlog and the halls' live stream, which
        # goes on: at 100x the live stream alone is most of what one daemon takes.
        outage_written = sum(_positions(net.dsn).values()) - held
        _stop_generators(processes)
        processes = []
        stop(city, 15)  # the bare insert has PostgreSQL and the machine to itself
        city = None
        total_events = sum(_positions(net.dsn).values())
        bare = _bare(net.dsn, 5000, net.pg.data)
        city_cpu = cpu["quhao city"] + cpu["postgresql"] + cpu["city broker"]
        ingest_per_s = outage_written / outage_s if outage_s else 0.0
        result = {
            "halls": halls,
            "speed": speed,
            "offered_per_s": round(rate * halls),
            "steady": {
                "seconds": round(steady_to - steady_from, 1),
                "written_per_s": round(steady["events"] / (steady_to - 2 - steady_from)),
                "lag_p50_ms": steady["p50_ms"],
                "lag_p99_ms": steady["p99_ms"],
            },
            "cut": {
                "simulated_minutes": minutes,
                "real_seconds": round(minutes * 60 / speed, 1),
                "backlog_events": backlog,
                "catch_up_s": round(catch_up_s, 1),
                "written": cut_written,
                "catch_up_per_s": round(cut_written / catch_up_s) if catch_up_s else None,
                "live_again_s": round(live_s, 1),
            },
            "outage": {
                "seconds": OUTAGE_S,
                "backlog_events": outage_backlog,
                "written": outage_written,
                "catch_up_s": round(outage_s, 1),
                "ingest_per_s": round(ingest_per_s),
                "cpu_s": cpu,  # per process group, while it caught up
                "cpu_us_per_event": round(city_cpu / outage_written * 1e6, 1),
            },
            "bare": bare,
            "ratio_to_bare": round(ingest_per_s / bare["per_s"], 2) if bare["per_s"] else None,
            "ratio_to_bare_all": round(ingest_per_s / bare["all_per_s"], 2),
            # CPU per event: the city's side (quhao city, PostgreSQL, the city broker)
            # against the bare insert's (PostgreSQL and its client), whatever else ran
            "cpu_ratio_to_bare": round(
                bare["cpu_us_per_event"] * outage_written / city_cpu / 1e6, 2
            )
            if city_cpu
            else None,
            "events_total": total_events,
        }
        _print(result)
        return result
    finally:
        _stop_generators(processes)
        if city is not None:
            stop(city, 15)
        net.close()


def _print(r: dict[str, Any]) -> None:
    print(f"\n== city: {r['halls']} simulated halls at {r['speed']:g}x their peak ==")
    print(f"offered load            {r['offered_per_s']:>8,} events/s")
    s = r["steady"]
    print(
        f"steady ({s['seconds']:g} s)        {s['written_per_s']:>8,} events/s written, "
        f"lag p50 {s['lag_p50_ms']} ms, p99 {s['lag_p99_ms']} ms"
    )
    c = r["cut"]
    print(
        f"cut {c['simulated_minutes']:g} min ({c['real_seconds']:g} s)   backlog "
        f"{c['backlog_events']:,} events, caught up in {c['catch_up_s']} s "
        f"({c['catch_up_per_s'] or 0:,} events/s written meanwhile, live included), "
        f"with the live stream again {c['live_again_s']} s after the mend"
    )
    o = r["outage"]
    print(
        f"city down {o['seconds']:g} s         backlog {o['backlog_events']:,} events, caught up "
        f"in {o['catch_up_s']} s: ingest {o['ingest_per_s']:,} events/s written meanwhile "
        "(backlog and live stream, start-up included)"
    )
    cpu = ", ".join(f"{k} {v:g}" for k, v in o["cpu_s"].items())
    print(f"  CPU seconds meanwhile: {cpu}")
    print(
        "  the city's side (quhao city, PostgreSQL, city broker): "
        f"{o['cpu_us_per_event']} µs of CPU an event"
    )
    b = r["bare"]
    print(
        f"bare batched insert     {b['per_s']:>8,} events/s ({b['events']:,} rows), "
        f"{b['cpu_us_per_event']} µs of CPU an event (PostgreSQL and client)"
    )
    print(
        f"bare, all the city's rows {b['all_per_s']:>6,} events/s (events, tickets, ratings, "
        f"alerts, appointments: {b['all_rows']:,} rows)"
    )
    print(f"ingest / bare           {r['ratio_to_bare']}x (outage catch-up; target >= 0.5)")
    print(f"ingest / bare, all rows {r['ratio_to_bare_all']}x")
    print(f"CPU an event, bare / city: {r['cpu_ratio_to_bare']}x (whatever else ran)")
    print(json.dumps(r, separators=(",", ":")))
