"""`quhao city [run|migrate|broker]` and `quhao report --city`: the city layer's commands."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from pathlib import Path

from quhao import logs
from quhao.config.city import load_city, resolve
from quhao.mqtt import credentials

log = logging.getLogger("quhao.city")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "city",
        help="the city view: every hall's feed into PostgreSQL (run), its schema (migrate), "
        "the city broker and the halls' bridges (broker)",
    )
    p.add_argument("action", nargs="?", default="run", choices=["run", "migrate", "broker"])
    p.add_argument("--config", required=True, type=Path, help="city TOML file")
    p.add_argument(
        "--credentials",
        type=Path,
        help="the city broker's credentials/ folder (its city/ sub-folder is used); default "
        "[city] credentials",
    )
    p.add_argument("--out", type=Path, help="broker: where to write the configuration")
    p.add_argument("--port", type=int, default=1883, help="broker: loopback port (city daemon)")
    p.add_argument("--tls-port", type=int, default=8883, help="broker: TLS port for the bridges")
    p.add_argument("--bind", default="0.0.0.0", help="broker: address of the TLS listener")
    p.add_argument("--host", action="append", default=[], help="broker: a name for its cert")
    p.add_argument("--address", help="broker: host:port the halls' bridges connect to")
    p.add_argument("--run-as", default="mosquitto", help="broker: the user Mosquitto drops to")
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(func=cmd_city)


def cmd_city(args: argparse.Namespace) -> int:
    logs.setup(args.log_level)
    config, base = load_city(args.config)
    if args.action == "migrate":
        from city.schema import migrate

        for line in migrate(config.city.database, dt.date.today(), config.city.months_ahead):
            print(line)
        return 0
    if args.action == "broker":
        from quhao.citybroker import generate

        if args.out is None:
            print("quhao city broker: --out DIR is required", file=sys.stderr)
            return 2
        conf = generate(
            config,
            args.out,
            port=args.port,
            tls_port=args.tls_port,
            bind=args.bind,
            hosts=tuple(args.host),
            address=args.address,
            run_as=args.run_as,
        )
        print(f"{conf}\nbridges: {args.out.resolve() / 'bridges'}/<site>.conf")
        return 0
    return run(config, base, args)


def run(config: object, base: Path, args: argparse.Namespace) -> int:
    import psycopg

    from city.daemon import CITY_USER, CityDaemon
    from cli.main import stop_on_signals
    from quhao.config.city import CityConfig
    from quhao.sdnotify import Notifier

    assert isinstance(config, CityConfig)
    folder = args.credentials or resolve(base, config.city.credentials)
    password, tls = credentials(folder, CITY_USER)
    try:
        daemon = CityDaemon(config, base, password=password, tls=tls)
    except (psycopg.Error, RuntimeError) as exc:
        print(f"quhao city: {str(exc).strip()}", file=sys.stderr)
        return 1
    stop = stop_on_signals()
    daemon.start()
    log.info("city serving %d halls", len(config.halls))
    notifier = Notifier()
    notifier.watch("ingest", lambda: daemon.heartbeat)
    notifier.ready(f"{len(config.halls)} halls")
    notifier.start_watchdog()
    try:
        daemon.run(stop)
    finally:
        notifier.stopping()
        replays = daemon.ingest.stats
        log.info(
            "stopping: %d messages, %d events written in %d batches, dropped %s; "
            "pages asked %d, lost %d; pulled instead of live %d times",
            daemon.stats.messages,
            daemon.stats.written,
            daemon.stats.batches,
            dict(daemon.stats.dropped),
            replays.replays_asked,
            replays.replays_lost,
            replays.to_pull,
        )
        daemon.close()
    return 0


def cmd_city_report(args: argparse.Namespace) -> int:
    from city.report import build, write

    logs.setup(args.log_level)
    if args.config is None or args.start is None or args.end is None:
        print("quhao report --city: needs --config city.toml --from DAY --to DAY", file=sys.stderr)
        return 2
    config, _ = load_city(args.config)
    start, end = dt.date.fromisoformat(args.start), dt.date.fromisoformat(args.end)
    if end < start:
        print("quhao report --city: --to is before --from", file=sys.stderr)
        return 2
    page = write(build(config.city.database, start, end), args.out)
    print(page)
    return 0
