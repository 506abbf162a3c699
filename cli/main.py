"""`quhao`: one command for every daemon and tool. See `quhao --help`."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from cli.screens import add_arguments as screens_arguments
from quhao import logs
from quhao.clock import Clock
from quhao.config import ConfigError, SiteConfig, load
from quhao.mqtt import credentials
from quhao.sdnotify import Notifier

log = logging.getLogger("quhao")

DEFAULT_BROKER = "mqtt://localhost:1883"


def _common(parser: argparse.ArgumentParser, *, state: bool = True, secret: bool = False) -> None:
    parser.add_argument("--config", required=True, type=Path, help="site TOML file")
    parser.add_argument(
        "--broker",
        default=DEFAULT_BROKER,
        help=f"mqtt[s]://[user[:password]@]host[:port] (default {DEFAULT_BROKER})",
    )
    if state:
        parser.add_argument(
            "--state-dir",
            type=Path,
            default=Path("state"),
            help="where this daemon keeps its files (default ./state)",
        )
    parser.add_argument(
        "--credentials",
        type=Path,
        help="the credentials/ folder from `quhao broker gen`: this device's password and "
        "TLS files are taken from its sub-folder named after the device",
    )
    parser.add_argument(
        "--clock",
        default="system",
        help="hall clock: 'system' or HALL_ISO_TIME[@REAL_EPOCH][xSPEED]",
    )
    parser.add_argument("--log-level", default="INFO")
    if secret:
        _secret_options(parser)


def _secret_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--secret-file",
        type=Path,
        help="the site secret, instead of [site] secret_file (e.g. a systemd credential)",
    )
    parser.add_argument(
        "--allow-example-secret",
        action="store_true",
        help="accept the published example secret (a simulated hall only)",
    )


def _load(args: argparse.Namespace) -> SiteConfig:
    logs.setup(args.log_level)
    return _site_config(args)


def _site_config(args: argparse.Namespace) -> SiteConfig:
    """The site file with the command line's overrides, refused as the daemon refuses it
    at start. The hall re-reads it with this on SIGHUP."""
    from quhao.config import check

    config = load(args.config)
    changes: dict[str, object] = {}
    if getattr(args, "secret_file", None):
        changes["secret_file"] = args.secret_file
    if getattr(args, "allow_example_secret", False):
        changes["allow_example_secret"] = True
    if changes:
        config = config.model_copy(update={"site": config.site.model_copy(update=changes)})
    # A daemon refuses at start what `quhao check` reports, before it opens anything.
    command = getattr(args, "command", "")
    if command in ("hall", "kiosk", "counter"):
        device = getattr(args, "device", None)
        devices = ["hall"] if command == "hall" else [device] if isinstance(device, str) else device
        problems = check(config, devices)
        if problems:
            raise ConfigError(problems)
    return config


def stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handle(signum: int, frame: object) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop


def cmd_hall(args: argparse.Namespace) -> int:
    from hall import record
    from hall.service import HallService

    config = _load(args)
    if args.reinit:
        record.check_writable(args.state_dir)
        moved = record.reinit(args.state_dir)
        log.warning("--reinit: a new, empty record starts; set aside: %s", moved)
    # The hall checks staff card proofs with the site secret (when the site has one).
    secret = config.read_secret() if config.site.secret_file else None
    password, tls = credentials(args.credentials, "hall")
    try:
        service = HallService(
            config,
            args.broker,
            args.state_dir,
            Clock.parse(args.clock),
            password=password,
            tls=tls,
            secret=secret,
            snapshot_every=max(1, args.snapshot_every),
        )
    except record.RecordError as exc:
        # A person must act: systemd does not restart on this status (quhao-hall.service).
        log.error("not starting: %s", exc)
        print(f"quhao hall: {exc}", file=sys.stderr)
        return record.EXIT_RECORD
    stop = stop_on_signals()
    reload = threading.Event()
    signal.signal(signal.SIGHUP, lambda signum, frame: reload.set())
    service.start()
    log.info(
        "hall of %s (%s) serving %d services, %d windows",
        config.site.name,
        config.site.id,
        len(config.services),
        len(config.windows),
    )
    notifier = Notifier()
    notifier.watch("queue", lambda: service.heartbeat)
    notifier.ready(f"{len(service.engine.tickets)} tickets on record")
    notifier.start_watchdog()
    try:
        service.run(stop, reload, partial(_site_config, args))
    finally:
        notifier.stopping()
        service.close()
    return 0


def cmd_counter(args: argparse.Namespace) -> int:
    from counter.terminal import CounterTerminal

    config = _load(args)
    clock = Clock.parse(args.clock)
    terminals = [
        CounterTerminal(config, name, args.broker, clock, args.credentials) for name in args.device
    ]
    stop = stop_on_signals()
    notifier = Notifier()
    for terminal in terminals:
        terminal.start()
        notifier.watch(terminal.device, _heartbeat_of(terminal))
    log.info("counter serving %s", ", ".join(args.device))
    notifier.ready(f"windows {', '.join(str(t.window) for t in terminals)}")
    notifier.start_watchdog()
    stop.wait()
    notifier.stopping()
    for terminal in terminals:
        terminal.close()
    return 0


def _heartbeat_of(daemon: Any) -> Callable[[], float]:
    """A daemon's owner loop heartbeat, read by the systemd watchdog."""
    return lambda: float(daemon.heartbeat)


def cmd_kiosk(args: argparse.Namespace) -> int:
    from kiosk.daemon import KioskDaemon

    config = _load(args)
    kiosk = KioskDaemon(
        config, args.device, args.broker, Clock.parse(args.clock), args.credentials, args.state_dir
    )
    stop = stop_on_signals()
    kiosk.start()
    log.info("kiosk %s serving", args.device)
    notifier = Notifier()
    notifier.watch("issuing", lambda: kiosk.heartbeat)
    notifier.ready(f"{args.device} ready")
    notifier.start_watchdog()
    stop.wait()
    notifier.stopping()
    kiosk.close()
    return 0


def cmd_screens(args: argparse.Namespace) -> int:
    from cli.screens import run_screens

    return run_screens(_load(args), args)


def cmd_sim(args: argparse.Namespace) -> int:
    logs.setup(args.log_level)
    stop = stop_on_signals()
    if args.device == "led":
        from simulators.led import LedSimulator

        sim = LedSimulator(args.link, args.addr, args.snapshots).start()
        log.info("LED display %d at %s", args.addr, args.link)
        shown = 0
        while not stop.wait(0.2):
            for item in sim.history[shown:]:
                print(
                    f"LED {args.addr}: {item.text}{'  (flash)' if item.flash else ''}", flush=True
                )
            shown = len(sim.history)
        sim.unplug()
    elif args.device == "printer":
        from simulators.printer import Panel, PrinterSimulator

        printer = PrinterSimulator(
            args.out, port=args.port, link=args.link, panel=Panel(paper=args.paper)
        ).start()
        log.info(
            "ESC/POS printer on %s, tickets in %s",
            f"127.0.0.1:{printer.port}" if args.port is not None else args.link,
            args.out,
        )
        printed = 0
        while not stop.wait(0.2):
            for paper in printer.tickets[printed:]:
                print(f"--- ticket {printed + 1} ---\n{paper.text}", flush=True)
                printed += 1
        printer.close()
    elif args.device == "sam":
        from datetime import date

        from quhao.idnumber import with_check
        from simulators.sam import CardHolder, SamSimulator

        sam = SamSimulator(args.link).start()
        if args.id_number:
            sam.present(
                CardHolder(
                    args.name, with_check(args.id_number[:17]), date.fromisoformat(args.birth)
                )
            )
        log.info("GA 467 SAM reader at %s", args.link)
        stop.wait()
        sam.close()
    elif args.device == "card":
        from simulators.idcard import VirtualIdCard

        card = VirtualIdCard(args.port, args.slot)
        card.insert(args.uid)
        log.info("card %s on vpcd slot %d; Ctrl-C removes it", args.uid, args.slot)
        stop.wait()
        card.remove()
    elif args.device == "keys":
        from simulators.keys import KeypadFeeder

        feeder = KeypadFeeder(args.fifo)
        feeder.type(*args.keys, gap_s=args.gap)
        feeder.close()
    return 0


def cmd_ctl(args: argparse.Namespace) -> int:
    from hall.ctl import run_ctl

    config = _load(args)
    return run_ctl(
        config, args.broker, once=args.once, timeout=args.timeout, credentials_dir=args.credentials
    )


def cmd_voice(args: argparse.Namespace) -> int:
    from quhao.config.voice import Voice
    from screens.voice import standalone

    if args.action == "clips":
        logs.setup(args.log_level)
        voice = _load(args).voice if args.config else Voice()
        return standalone.clips(voice, args.out or Path("voice-clips"))
    if args.config is None:
        raise ValueError("quhao voice: --config is required")
    config = _load(args)
    return standalone.run(
        config,
        args.broker,
        Clock.parse(args.clock),
        stop_on_signals(),
        credentials_dir=args.credentials,
        out=args.out,
        work_dir=args.state_dir,
        user=args.user,
    )


def cmd_bench(args: argparse.Namespace) -> int:
    logs.setup(args.log_level)
    results = {}
    if args.target in ("hall", "all"):
        from cli.bench.hall import run_hall_bench

        results["hall"] = run_hall_bench(clients=args.clients, requests=args.requests)
    if args.target in ("kiosk", "all"):
        from cli.bench.kiosk import run_kiosk_bench

        results["kiosk"] = run_kiosk_bench(swipes=args.swipes)
    if args.target in ("counter", "all"):
        from cli.bench.counter import run_counter_bench

        results["counter"] = run_counter_bench(presses=args.presses)
    if args.target in ("surge", "all"):
        from cli.bench.surge import run_surge_bench

        results["surge"] = run_surge_bench()
    if args.target == "screens":  # not in "all": it drives Chromium and 2,000 pages
        from cli.bench.screens import run_screens_bench

        results["screens"] = run_screens_bench(presses=args.presses // 2, pages=args.pages)
    if args.target == "city":  # not in "all": 200 halls through bridges, minutes
        from cli.bench.city import run_city_bench

        results["city"] = run_city_bench(halls=args.halls, speed=args.speed, minutes=args.minutes)
    if args.target == "startup":  # not in "all": building its record takes minutes once
        from hall.history import run_startup_bench

        results["startup"] = run_startup_bench(args.days, args.per_day, args.cache)
    if args.target == "report":  # not in "all": making its month takes minutes once
        from cli.bench.report import run_report_bench

        results["report"] = run_report_bench(args.per_day, args.cache)
    if args.target == "all":
        _bench_summary(results)
    if args.json:
        import json

        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _bench_summary(results: dict[str, Any]) -> None:
    import json

    hall, kiosk, counter = results["hall"], results["kiosk"], results["counter"]
    print("\n== summary ==")
    print(
        f"hall issue, 14 kiosks:   p50 {hall['ratio_p50']}x echo, throughput "
        f"{hall['ratio_throughput']}x echo ({hall['issue']['per_s']:.0f}/s durable)"
    )
    print(
        f"kiosk card → ticket:     SAM p50 {kiosk['sam']['swipe_to_first_byte']['p50_ms']} ms, "
        f"PC/SC p50 {kiosk['pcsc']['swipe_to_first_byte']['p50_ms']} ms"
    )
    print(
        f"counter key → LED:       p50 {counter['key_to_led']['p50_ms']} ms "
        f"({counter['ratio_p50']}x echo)"
    )
    print(f"surge day fastest speed: x{results['surge']['fastest_speed']}")
    print(json.dumps(results, separators=(",", ":")))


def cmd_demo(args: argparse.Namespace) -> int:
    logs.setup(args.log_level)
    from cli.demo import run_demo

    result = run_demo(args.scenario, args.speed, args.out, args.seed, render=not args.no_pictures)
    if result.lost or result.leftovers:
        print(
            f"quhao: {result.lost} tickets not ended, {len(result.leftovers)} processes left",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    import os
    import shutil

    from quhao.brokergen import generate

    if args.free_port:
        from quhao.broker import free_port

        print(free_port())
        return 0
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if args.dev:  # the project's development broker, in the foreground (cli/demo needs none)
        import tempfile

        from quhao.broker import free_port, write_dev_conf

        port = args.port or free_port()
        conf = write_dev_conf(port, Path(tempfile.mkdtemp(prefix="quhao-dev-broker-")))
        print(f"mqtt://127.0.0.1:{port} — Mosquitto with {conf}", file=sys.stderr, flush=True)
        os.execv(binary, [binary, "-c", str(conf)])
    if args.config is None:
        print("quhao broker: --config is required (or --dev)", file=sys.stderr)
        return 2
    args.port = args.port or 1883
    config = _load(args)
    conf = generate(
        config,
        args.out,
        port=args.port,
        tls_port=args.tls_port,
        ws_port=args.ws_port,
        lan_bind=args.bind,
        hosts=tuple(args.host),
        run_as=args.run_as,
        data_dir=args.data_dir,
    )
    if args.action == "gen":
        print(f"{conf}\ndevice credentials: {args.out.resolve() / 'credentials'}/<device>/")
        return 0
    log.info("starting %s -c %s", binary, conf)
    os.execv(binary, [binary, "-c", str(conf)])  # foreground; signals go to mosquitto


def cmd_report(args: argparse.Namespace) -> int:
    from hall.report import build, write

    if args.city:
        from cli.city_cmd import cmd_city_report

        return cmd_city_report(args)
    logs.setup(args.log_level)
    from cli.period_cmd import cmd_period_report, wants_period

    if wants_period(args):  # a week, a month or a range: hall/periods.py
        return cmd_period_report(args)
    if args.day is None:
        print(
            "quhao report: --day, --week, --month or --from with --to is required",
            file=sys.stderr,
        )
        return 2
    config = load(args.config) if args.config else None
    db = args.db or args.state_dir / "hall.sqlite"
    if not db.exists():
        print(f"quhao: no database at {db}", file=sys.stderr)
        return 2
    names = {s.id: s.name for s in config.services.values()} if config else {}
    staff = {m.id: m.name for m in config.staff.values()} if config else {}
    tz = config.site.timezone if config else None
    page = write(build(db, args.day, tz, names, staff), args.out)
    print(page)
    return cmd_period_report(args) if config else 0  # and the day's scores beside it


def cmd_backup(args: argparse.Namespace) -> int:
    import contextlib
    import os

    from hall.backup import BackupError, backup

    logs.setup(args.log_level)
    with contextlib.suppress(OSError):
        os.nice(10)  # the hall comes first
    try:
        result = backup(args.state_dir, args.to, args.keep)
    except BackupError as exc:
        print(f"quhao backup: {exc}", file=sys.stderr)
        return 1
    for line in result.lines():
        print(line)
    if result.same_disk:
        print(
            f"warning: {args.to} is on the same disk as {args.state_dir}: if that disk fails "
            "the backups go with it; back up to a second disk",
            file=sys.stderr,
        )
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from hall.backup import BackupError, restore

    logs.setup(args.log_level)
    try:
        result = restore(args.state_dir, args.source, force=args.force)
    except BackupError as exc:
        print(f"quhao restore: refused: {exc}", file=sys.stderr)
        return 1
    for line in result.lines():
        print(line)
    return 0


def cmd_secret(args: argparse.Namespace) -> int:
    import os
    import secrets

    if args.out.exists() and not args.force:
        print(
            f"quhao: {args.out} exists; a new secret changes every person key "
            "(quota history is lost): pass --force to replace it",
            file=sys.stderr,
        )
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(48) + "\n")
    os.chmod(args.out, 0o600)
    print(f"{args.out}: a fresh site secret (mode 0600); give it to the hall and every kiosk")
    return 0


def cmd_staff(args: argparse.Namespace) -> int:
    from quhao.staffauth import hash_pin

    pin = args.pin if args.pin is not None else sys.stdin.readline().strip()
    print(f'pin_hash = "{hash_pin(pin)}"')
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Everything the daemons would refuse, file and beyond, one problem a line."""
    from quhao.config import check

    try:
        config = _load(args)
        problems = check(config)
    except ConfigError as exc:
        problems = exc.problems
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        print(f"quhao check: {count} in {args.config}", file=sys.stderr)
        return 2
    print(
        f"{args.config}: ok — site {config.site.id} ({config.site.name}), "
        f"{len(config.services)} services, {len(config.windows)} windows, "
        f"{len(config.kiosks)} kiosks, {len(config.counters)} counters, "
        f"{len(config.staff)} staff"
    )
    return 0


def cmd_chaos(args: argparse.Namespace) -> int:
    import json

    from cli.chaos import Plan, run_chaos

    plan = Plan.short() if args.short else Plan()
    chosen = {
        "kills": args.kills,
        "kiosks": args.kiosks,
        "counters": args.counters,
        "malformed": args.malformed,
        "broker_restarts": args.broker_restarts,
    }
    plan = dataclasses.replace(plan, **{k: v for k, v in chosen.items() if v is not None})
    result = run_chaos(plan, args.out)
    if args.json:
        args.json.write_text(json.dumps({**result.figures, "ok": result.ok}, indent=2) + "\n")
    if result.work is not None:
        print(f"the run's files: {result.work}")
    return 0 if result.ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quhao", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("hall", help="run the hall: the queue authority")
    _common(p, secret=True)
    p.add_argument(
        "--reinit",
        action="store_true",
        help="start a new, empty record; the old database is set aside, never deleted",
    )
    p.add_argument(
        "--snapshot-every",
        type=int,
        default=20_000,
        help="events between snapshots of the state (start-up replays at most about this "
        "many); one is also taken at each day's end (default 20000)",
    )
    p.set_defaults(func=cmd_hall)

    p = sub.add_parser("counter", help="run counter terminals (keypad, LED, rating pad)")
    _common(p, secret=True)
    p.add_argument(
        "--device",
        action="append",
        required=True,
        help="a [[counters]] name; repeat for several windows in one process",
    )
    p.set_defaults(func=cmd_counter)

    p = sub.add_parser("kiosk", help="run a ticket machine (card readers, keypad, printer)")
    _common(p, secret=True)
    p.add_argument("--device", required=True, help="a [[kiosks]] name, e.g. kiosk-K1")
    p.set_defaults(func=cmd_kiosk)

    p = sub.add_parser("screens", help="serve the hall board, window screens and ticket pages")
    _common(p, state=False, secret=True)
    screens_arguments(p)
    p.set_defaults(func=cmd_screens)

    p = sub.add_parser("sim", help="device simulators")
    sims = p.add_subparsers(dest="device", required=True)
    s = sims.add_parser("printer", help="an ESC/POS thermal printer on TCP or a pty")
    s.add_argument("--port", type=int, help="TCP port (9100 on a real printer)")
    s.add_argument("--link", type=Path, help="or: path where its serial pty appears")
    s.add_argument("--out", type=Path, default=Path("tickets"), help="PNG and text per ticket")
    s.add_argument("--paper", choices=["ok", "near_end", "out"], default="ok")
    s.add_argument("--log-level", default="INFO")
    s = sims.add_parser("sam", help="a GA 467 SAM ID-card reader on a pty")
    s.add_argument("--link", type=Path, required=True)
    s.add_argument("--id-number", help="first 17 digits (the check digit is computed)")
    s.add_argument("--name", default="张三")
    s.add_argument("--birth", default="1980-01-01")
    s.add_argument("--log-level", default="INFO")
    s = sims.add_parser("card", help="put a virtual ID card on a vpcd reader")
    s.add_argument("--uid", required=True, help="8-byte UID, hex")
    s.add_argument("--port", type=int, default=0x8C7B)
    s.add_argument("--slot", type=int, default=0)
    s.add_argument("--log-level", default="INFO")
    s = sims.add_parser("led", help="an LED window display on a pty")
    s.add_argument("--link", type=Path, required=True, help="path where the pty appears")
    s.add_argument("--addr", type=int, default=1)
    s.add_argument("--snapshots", type=Path, help="write a PNG of every text shown here")
    s.add_argument("--log-level", default="INFO")
    s = sims.add_parser("keys", help="tap keys on a keypad FIFO")
    s.add_argument("--fifo", type=Path, required=True)
    s.add_argument("--gap", type=float, default=0.05, help="seconds between keys")
    s.add_argument("keys", nargs="+", help="Linux key names, e.g. KEY_KPENTER")
    s.add_argument("--log-level", default="WARNING")
    p.set_defaults(func=cmd_sim)

    p = sub.add_parser("ctl", help="show the live queue and windows")
    _common(p, state=False)
    p.add_argument("--once", action="store_true", help="print one snapshot and exit")
    p.add_argument("--timeout", type=float, default=5.0, help="with --once: wait this long")
    p.set_defaults(func=cmd_ctl)

    p = sub.add_parser(
        "voice",
        help="voice calling (语音叫号): announce every call; or make clips",
        conflict_handler="resolve",  # --config below is optional for clips
    )
    p.add_argument("action", nargs="?", choices=["run", "clips"], default="run")
    _common(p)
    p.add_argument("--config", type=Path, help="site TOML file (optional for clips)")
    p.add_argument("--out", type=Path, help="run: a WAV file per announcement here; clips: DIR")
    p.add_argument("--user", default="voice", help="read-only broker user (default voice)")
    p.set_defaults(func=cmd_voice)

    p = sub.add_parser("demo", help="a whole simulated hall day through the real daemons")
    p.add_argument(
        "--scenario",
        choices=["surge", "short"],
        default="surge",
        help="surge: the surge day (社保 surges, windows opened live); "
        "short: an hour of a small hall",
    )
    p.add_argument(
        "--speed", type=float, default=300.0, help="hall seconds per real second (default 300)"
    )
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", type=Path, help="where the run's files go (default out/demo-…)")
    p.add_argument("--no-pictures", action="store_true", help="no ticket and LED PNGs")
    p.add_argument("--log-level", default="WARNING")

    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("broker", help="generate a hall's Mosquitto configuration, or run it")
    p.add_argument(
        "action",
        nargs="?",
        choices=["gen", "run"],
        default="run",
        help="gen: write the files; run (default): write them and start Mosquitto",
    )
    p.add_argument("--config", type=Path, help="the site file (not with --dev)")
    p.add_argument(
        "--dev",
        action="store_true",
        help="run a development broker (broker-config/dev.conf: loopback, anonymous) in the "
        "foreground on --port, or a free port; its URL goes to stderr",
    )
    p.add_argument("--free-port", action="store_true", help="print a free loopback port, exit")
    p.add_argument("--out", type=Path, default=Path("broker"), help="where the files go")
    p.add_argument("--port", type=int, help="loopback listener (default 1883)")
    p.add_argument("--tls-port", type=int, default=8883, help="LAN TLS listener")
    p.add_argument("--ws-port", type=int, default=9001, help="websockets listener")
    p.add_argument("--bind", default="0.0.0.0", help="address of the LAN listeners")
    p.add_argument("--data-dir", type=Path, help="Mosquitto's persistence (default OUT/data)")
    p.add_argument(
        "--run-as",
        default="mosquitto",
        help="the user Mosquitto drops to when started as root (default mosquitto)",
    )
    p.add_argument(
        "--host",
        action="append",
        default=[],
        help="a name or address of the hall server for its certificate",
    )
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser("report", help="a day's, week's, month's report (HTML with charts, CSV)")
    p.add_argument("--day", help="YYYY-MM-DD, local to the hall")
    p.add_argument("--week", help="an ISO week, 2026-W47: the period report")
    p.add_argument("--month", help="2026-11: the period report")
    p.add_argument("--config", type=Path, help="site file (service names, time zone)")
    p.add_argument("--city", action="store_true", help="the city's report: --config city.toml")
    p.add_argument("--from", dest="start", help="the first day of a range, YYYY-MM-DD")
    p.add_argument("--to", dest="end", help="the last day of a range, YYYY-MM-DD")
    p.add_argument("--db", type=Path, help="the hall's hall.sqlite")
    p.add_argument("--state-dir", type=Path, default=Path("state"), help="or the hall's state dir")
    p.add_argument("--out", type=Path, default=Path("report"))
    p.add_argument("--log-level", default="WARNING")
    p.set_defaults(func=cmd_report)

    from cli.city_cmd import add_parser as add_city_parser

    add_city_parser(sub)

    from cli.loops_cmd import add_parsers as add_loops_parsers  # cases, export, appointments

    add_loops_parsers(sub)

    p = sub.add_parser("backup", help="a verified copy of the hall's database, while it runs")
    p.add_argument("--state-dir", type=Path, required=True, help="the hall's state directory")
    p.add_argument(
        "--to",
        type=Path,
        required=True,
        help="the backup file; or a directory (on a second disk): then a file named after "
        "the site and the time is made there and the oldest beyond --keep are deleted",
    )
    p.add_argument(
        "--keep",
        type=int,
        help="with a directory --to: how many backups of the site to keep (default 96: a "
        "day at one every 15 minutes)",
    )
    p.add_argument("--log-level", default="WARNING")
    p.set_defaults(func=cmd_backup)

    p = sub.add_parser("restore", help="put a backup in place of the hall's database")
    p.add_argument("--state-dir", type=Path, required=True, help="the hall's state directory")
    p.add_argument("--from", dest="source", type=Path, required=True, help="the backup file")
    p.add_argument(
        "--force",
        action="store_true",
        help="restore even over an intact database that is newer or another site's (it is "
        "kept aside)",
    )
    p.add_argument("--log-level", default="WARNING")
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser("check", help="validate a site configuration")
    p.add_argument("--config", required=True, type=Path)
    _secret_options(p)
    p.add_argument("--log-level", default="WARNING")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("secret", help="make a fresh site secret (keys person pseudonyms)")
    p.add_argument("action", choices=["gen"])
    p.add_argument("--out", required=True, type=Path, help="file to write (mode 0600)")
    p.add_argument("--force", action="store_true", help="replace an existing secret")
    p.set_defaults(func=cmd_secret)

    p = sub.add_parser("staff", help="staff PIN hashes for the site file")
    p.add_argument("action", choices=["pin"])
    p.add_argument("--pin", help="the PIN (default: read from standard input)")
    p.set_defaults(func=cmd_staff)

    p = sub.add_parser("bench", help="benchmarks against a bare MQTT baseline")
    p.add_argument(
        "target",
        choices=[
            "hall",
            "kiosk",
            "counter",
            "surge",
            "startup",
            "report",
            "screens",
            "city",
            "all",
        ],
    )
    p.add_argument("--halls", type=int, default=200, help="city: simulated halls")
    p.add_argument("--speed", type=float, default=100.0, help="city: times the real peak rate")
    p.add_argument("--minutes", type=float, default=10.0, help="city: simulated minutes cut")
    p.add_argument("--pages", type=int, default=2000, help="screens: ticket pages at once")
    p.add_argument("--days", type=int, default=365, help="startup: days of record")
    p.add_argument("--per-day", type=int, default=2000, help="startup, report: tickets a day")
    p.add_argument(
        "--cache", type=Path, help="startup, report: where the record is built and reused"
    )
    p.add_argument("--swipes", type=int, default=60, help="kiosk: cards per reader type")
    p.add_argument("--presses", type=int, default=200, help="counter: key presses")
    p.add_argument("--clients", type=int, default=14)
    p.add_argument("--requests", type=int, default=300, help="per client")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--log-level", default="WARNING")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("chaos", help="SIGKILL, flood and starve a hall under load; lose nothing")
    p.add_argument("--short", action="store_true", help="the small version `make test` runs")
    p.add_argument("--kills", type=int, help="SIGKILLs of the serving hall (default 100)")
    p.add_argument("--kiosks", type=int, help="kiosk processes (default 6)")
    p.add_argument("--counters", type=int, help="counter processes (default 3)")
    p.add_argument("--malformed", type=int, help="malformed requests (default 30000)")
    p.add_argument("--broker-restarts", type=int, help="Mosquitto kills (default 4)")
    p.add_argument("--out", type=Path, help="keep the run's files here (default: a temp dir)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.set_defaults(func=cmd_chaos)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ConfigError as exc:
        for problem in exc.problems:  # one a line, each with its file:line
            print(f"quhao: configuration error: {problem}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"quhao: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
