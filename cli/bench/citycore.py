"""`python -m cli.bench.citycore`: the city's own work an event, `city/` driven directly in
one process — no brokers, no MQTT, no simulated halls beside it on the machine, so each
step's CPU shows alone and a change can be measured in seconds, not in the three minutes
of `quhao bench city`.

200 halls' feeds (cli/bench/city.py `SimHall`: the same events, encoded as the hall's
feed encodes them) as pages of 500 (`pack_encoded`, a replay answer each), taken in
round-robin as the city takes them catching up after an outage, into a PostgreSQL of
its own (fsync on). Steps, each timed over all events (µs of CPU an event):

- parse: `city.check.check_feed` of every page (the daemon's trust boundary);
- ingest: `Ingest.receive` of every page and `take` of a batch whenever one is ready;
- project: `city.project.project` of every batch (pure; timed on its own);
- write: `Writer.write` of every batch — the projection again, psycopg's COPYs and
  statements, the commit: the Python side (this thread's CPU) and PostgreSQL's (its
  postmaster and children, from /proc), and the wall time;
- bare: the same `events` rows COPYed into a twin table (cli/bench/city.py `_bare`),
  and all the rows of the city's tables as they ended up.

`--live` cuts the feed as the live stream does at 100x (a round's 7 events a hall, a
batch every 200 ms: ~1,100 events), so tickets move on across batches.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import statistics
import time
from typing import Any

from city.check import Refused, check_feed
from city.daemon import freeze_startup
from city.ingest import Ingest
from city.project import project
from city.schema import migrate
from city.writer import HallInfo, Writer
from cli.bench.city import SimHall, _bare
from cli.bench.citycpu import Meter, postmaster, with_children
from hall.feed import pack_encoded
from quhao.pgcluster import PgCluster

EVENTS_PER_S = 1000 / 3600 * 100  # a hall at 100x its real peak


def _pages(halls: int, per_hall: int, page: int, seed: int = 7) -> list[tuple[str, bytes]]:
    """Every hall's feed as (hall, message), pages in round-robin over the halls."""
    rnd = random.Random(seed)
    start = time.time() - per_hall / EVENTS_PER_S - 60
    logs: dict[str, list[bytes]] = {}
    for n in range(halls):
        hall = SimHall(f"h{n:03d}", f"db-h{n:03d}")
        for i in range(per_hall):
            hall.step(rnd, start + i / EVENTS_PER_S)
        logs[hall.site] = hall.log
    out: list[tuple[str, bytes]] = []
    for after in range(0, per_hall, page):
        for site, log in logs.items():
            for raw in pack_encoded(site, f"db-{site}", per_hall, log[after : after + page]):
                out.append((site, raw))
    return out


def run_once(
    pg: PgCluster, name: str, pages: list[tuple[str, bytes]], batch: int
) -> dict[str, Any]:
    """One pass as the daemon makes it (page by page, a batch written whenever one is
    ready, so as many events are alive at once as in the daemon), each step's CPU summed."""
    dsn = pg.create_database(name)
    migrate(dsn, dt.date.today(), 2)
    halls = sorted({hall for hall, _ in pages})
    writer = Writer(dsn)
    writer.register(HallInfo(h) for h in halls)
    ingest = Ingest({h: (0, None) for h in halls})
    cpu = dict.fromkeys(("parse", "ingest", "project", "write"), 0.0)
    events = batches = 0
    clock = time.thread_time

    def write(limit: int) -> bool:
        nonlocal events, batches
        started = clock()
        taken = ingest.take(limit)
        cpu["ingest"] += clock() - started
        if taken is None:
            return False
        started = clock()
        project(taken.events)  # timed alone; `write` projects it again
        cpu["project"] += clock() - started
        started = clock()
        writer.write(taken)
        cpu["write"] += clock() - started
        events += len(taken.events)
        batches += 1
        return True

    freeze_startup()  # as the daemon's loop does
    postgres = Meter({"postgresql": lambda: with_children(postmaster(pg.data))})
    postgres.start()
    wall = time.perf_counter()
    for hall, raw in pages:
        started = clock()
        message = check_feed(hall, raw)
        cpu["parse"] += clock() - started
        assert not isinstance(message, Refused)
        started = clock()
        ingest.receive(hall, message, 0.0)
        cpu["ingest"] += clock() - started
        while ingest.pending() >= batch and write(batch):
            pass
    while write(batch):
        pass
    wall = time.perf_counter() - wall
    pg_s = postgres.stop()["postgresql"]
    writer.close()
    bare = _bare(dsn, 5000, pg.data)

    def us(seconds: float) -> float:
        return round(seconds / events * 1e6, 1)

    python = cpu["parse"] + cpu["ingest"] + cpu["write"]
    return {
        "events": events,
        "batches": batches,
        "parse_us": us(cpu["parse"]),
        "ingest_us": us(cpu["ingest"]),
        "project_us": us(cpu["project"]),
        "write_python_us": us(cpu["write"]),
        "write_postgres_us": us(pg_s),
        "per_s": round(events / wall),
        "city_us": us(python + pg_s),
        "bare_us": bare["cpu_us_per_event"],
        "bare_per_s": bare["per_s"],
        "bare_all_per_s": bare["all_per_s"],
        "cpu_ratio": round(bare["cpu_us_per_event"] / (python + pg_s) * events / 1e6, 2),
    }


def run_city_core_bench(
    halls: int = 200, per_hall: int = 600, live: bool = False, repeat: int = 3
) -> dict[str, Any]:
    page, batch = (7, 1100) if live else (500, 5000)
    pages = _pages(halls, per_hall, page)
    runs = []
    with PgCluster() as pg:
        for n in range(repeat):
            runs.append(run_once(pg, f"city{n}", pages, batch))
            print(json.dumps(runs[-1]))
    median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(
        f"\n== city core: {halls} halls x {per_hall} events, pages of {page}, batches of "
        f"{batch}, median of {repeat} (µs of CPU an event) ==\n"
        f"parse+check {median['parse_us']}, ingest {median['ingest_us']}, projection "
        f"{median['project_us']}; write: Python {median['write_python_us']} (projection "
        f"included), PostgreSQL {median['write_postgres_us']}, {median['per_s']:,.0f} "
        f"events/s (the whole pass, projection twice)\n"
        f"city {median['city_us']} against bare {median['bare_us']}: "
        f"CPU ratio bare/city {median['cpu_ratio']}"
    )
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--halls", type=int, default=200)
    parser.add_argument("--per-hall", type=int, default=600)
    parser.add_argument("--live", action="store_true", help="live-sized pages and batches")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    run_city_core_bench(args.halls, args.per_hall, args.live, args.repeat)


if __name__ == "__main__":
    main()
