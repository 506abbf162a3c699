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
from collections.abc import Callable
from typing import Any

from city.check import Refused, check_feed
from city.ingest import Batch, Ingest
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


def _cpu(step: Callable[[], Any]) -> tuple[Any, float]:
    started = time.thread_time()
    value = step()
    return value, time.thread_time() - started


def run_once(
    pg: PgCluster, name: str, pages: list[tuple[str, bytes]], batch: int
) -> dict[str, Any]:
    dsn = pg.create_database(name)
    migrate(dsn, dt.date.today(), 2)
    halls = sorted({hall for hall, _ in pages})

    parsed, parse_s = _cpu(lambda: [(h, check_feed(h, raw)) for h, raw in pages])
    assert not any(isinstance(b, Refused) for _, b in parsed)
    events = sum(len(b.events) for _, b in parsed if not isinstance(b, Refused))

    def ingest_all() -> list[Batch]:
        ingest = Ingest({h: (0, None) for h in halls})
        batches = []
        for hall, message in parsed:
            assert not isinstance(message, Refused)
            ingest.receive(hall, message, 0.0)
            while ingest.pending() >= batch and (taken := ingest.take(batch)):
                batches.append(taken)
        while taken := ingest.take(batch):
            batches.append(taken)
        return batches

    batches, ingest_s = _cpu(ingest_all)
    assert sum(len(b.events) for b in batches) == events
    _, project_s = _cpu(lambda: [project(b.events) for b in batches])

    writer = Writer(dsn)
    writer.register(HallInfo(h) for h in halls)
    postgres = Meter({"postgresql": lambda: with_children(postmaster(pg.data))})
    postgres.start()
    wall = time.perf_counter()
    _, write_s = _cpu(lambda: [writer.write(b) for b in batches])
    wall = time.perf_counter() - wall
    pg_s = postgres.stop()["postgresql"]
    writer.close()
    bare = _bare(dsn, 5000, pg.data)

    def us(seconds: float) -> float:
        return round(seconds / events * 1e6, 1)

    python = parse_s + ingest_s + write_s
    return {
        "events": events,
        "batches": len(batches),
        "parse_us": us(parse_s),
        "ingest_us": us(ingest_s),
        "project_us": us(project_s),
        "write_python_us": us(write_s),
        "write_postgres_us": us(pg_s),
        "write_per_s": round(events / wall),
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
        f"included), PostgreSQL {median['write_postgres_us']}, {median['write_per_s']:,.0f} "
        f"events/s\ncity {median['city_us']} against bare {median['bare_us']}: "
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
