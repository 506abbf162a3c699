"""`quhao cases list|show|update|appeal|decide` — the hall office's commands for the
follow-up of bad ratings — and `quhao export ratings` (好差评 records) (docs/supervision.md).

`list` and `show` read the hall's database (read-only, like `quhao report`); `update`,
`appeal` and `decide` ask the running hall as the device `office`, so the hall's loop
decides and logs every change. The acting staff member proves who they are with their
staff number and PIN: the PIN from `$QUHAO_PIN`, else asked for on the terminal.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from quhao import logs
from quhao.config import SiteConfig, load
from quhao.config.model import OFFICE_DEVICE

DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
LIST_DAYS = 90  # `cases list` looks this far back unless told otherwise


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("cases", help="bad-rating follow-up cases: list, show, update, appeal")
    actions = p.add_subparsers(dest="action", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--config", required=True, type=Path, help="site file")
        q.add_argument("--log-level", default="WARNING")

    def reading(q: argparse.ArgumentParser) -> None:
        common(q)
        q.add_argument("--db", type=Path, help="the hall's hall.sqlite")
        q.add_argument("--state-dir", type=Path, default=Path("state"), help="or its state dir")

    def asking(q: argparse.ArgumentParser) -> None:
        common(q)
        q.add_argument("--broker", default=DEFAULT_BROKER)
        q.add_argument("--credentials", type=Path, help="credentials/ of `quhao broker gen`")
        q.add_argument("--staff", required=True, help="your staff number (PIN: $QUHAO_PIN)")
        q.add_argument("--timeout", type=float, default=3.0, help="seconds per attempt")

    q = actions.add_parser("list", help="cases of recent tickets, newest first")
    reading(q)
    q.add_argument("--from", dest="start", help="first ticket day (default: 90 days ago)")
    q.add_argument("--to", dest="end", help="last ticket day (default: today)")
    q.add_argument(
        "--state", choices=["open", "contacted", "resolved", "overdue", "appealed", "all"]
    )
    q.set_defaults(func=cmd_cases_list)

    q = actions.add_parser("show", help="one case with its history")
    reading(q)
    q.add_argument("case", help="case id (C20261123-A003) or ticket id (2026-11-23/A003)")
    q.set_defaults(func=cmd_cases_show)

    q = actions.add_parser("update", help="record a call-back (contacted) or resolve a case")
    asking(q)
    q.add_argument("case")
    q.add_argument("state", choices=["contacted", "resolved"])
    q.add_argument("--note", required=True, help="what was done or said (回访记录)")
    q.set_defaults(func=cmd_cases_ask, request="case_update")

    q = actions.add_parser("appeal", help="the rated clerk appeals the rating (申诉)")
    asking(q)
    q.add_argument("case")
    q.add_argument("--note", required=True, help="why the rating was not deserved")
    q.set_defaults(func=cmd_cases_ask, request="case_appeal")

    q = actions.add_parser("decide", help="a supervisor upholds or rejects an appeal")
    asking(q)
    q.add_argument("case")
    q.add_argument("decision", choices=["upheld", "rejected"])
    q.add_argument("--note", required=True)
    q.set_defaults(func=cmd_cases_ask, request="case_decide")

    p = sub.add_parser("export", help="好差评 records for the provincial platform")
    p.add_argument("what", choices=["ratings"])
    reading(p)
    p.add_argument("--from", dest="start", required=True, help="first ticket day, YYYY-MM-DD")
    p.add_argument("--to", dest="end", required=True, help="last ticket day, YYYY-MM-DD")
    p.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    p.add_argument("--out", type=Path, help="file to write (default: standard output)")
    p.set_defaults(func=cmd_export)

    from cli.appointments_cmd import add_parser  # quhao appointments import

    add_parser(sub)


# ---- reading --------------------------------------------------------------------


def open_db(args: argparse.Namespace) -> sqlite3.Connection | None:
    path = args.db or args.state_dir / "hall.sqlite"
    if not Path(path).exists():
        print(f"quhao: no database at {path}", file=sys.stderr)
        return None
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def _when(at: float | None, config: SiteConfig) -> str:
    if at is None:
        return ""
    return dt.datetime.fromtimestamp(at, config.site.timezone).strftime("%Y-%m-%d %H:%M")


def cmd_cases_list(args: argparse.Namespace) -> int:
    from hall import caselog

    logs.setup(args.log_level)
    config = load(args.config)
    db = open_db(args)
    if db is None:
        return 2
    today = dt.datetime.now(config.site.timezone).date()
    end = args.end or today.isoformat()
    start = args.start or (today - dt.timedelta(days=LIST_DAYS)).isoformat()
    now = time.time()
    with db:
        cases = caselog.read(db, start, end)
    shown = 0
    print(
        f"{'case':<16} {'window':>6} {'clerk':<8} lvl {'state':<10} {'follow-up':<9} "
        f"{'appeal':<8} due"
    )
    for case in sorted(cases.values(), key=lambda c: c.opened_at, reverse=True):
        followup = case.followup(now)
        if args.state == "overdue" and followup != "overdue":
            continue
        if args.state == "appealed" and case.appeal == "none":
            continue
        if args.state in STATE_FILTERS and case.state != args.state:
            continue
        print(
            f"{case.id:<16} {case.window or '':>6} {case.staff or '':<8} {case.level:>3} "
            f"{case.state:<10} {followup:<9} {case.appeal:<8} {_when(case.due_at, config)}"
        )
        shown += 1
    print(f"{shown} of {len(cases)} cases of tickets from {start} to {end}")
    return 0


STATE_FILTERS = ("open", "contacted", "resolved")


def cmd_cases_show(args: argparse.Namespace) -> int:
    from hall import caselog
    from hall.cases import case_id

    logs.setup(args.log_level)
    config = load(args.config)
    db = open_db(args)
    if db is None:
        return 2
    wanted = args.case if args.case.startswith("C") else case_id(args.case)
    day = f"{wanted[1:5]}-{wanted[5:7]}-{wanted[7:9]}"
    with db:
        case = caselog.read(db, day, day).get(wanted)
    if case is None:
        print(f"quhao: no case {args.case}", file=sys.stderr)
        return 1
    service = config.services.get(case.service)
    staff = config.staff.get(case.staff or "")
    print(f"case      {case.id}   ticket {case.ticket}")
    print(
        f"service   {service.name if service else case.service}"
        f"   department {service.department if service else ''}"
    )
    print(f"window    {case.window}   clerk {case.staff} {staff.name if staff else ''}")
    print(f"rating    {case.level} ({LEVELS.get(case.level, '')})   reason {case.reason}")
    print(f"opened    {_when(case.opened_at, config)}   due {_when(case.due_at, config)}")
    print(f"state     {case.state}   follow-up {case.followup(time.time())}   appeal {case.appeal}")
    for step in case.history:
        who = f" by {step.by}" if step.by else ""
        note = f": {step.note}" if step.note else ""
        print(f"  {_when(step.at, config)}  {step.kind}{who}{note}")
    return 0


LEVELS = {5: "非常满意", 4: "满意", 3: "基本满意", 2: "不满意", 1: "非常不满意"}


def cmd_export(args: argparse.Namespace) -> int:
    from hall import export

    logs.setup(args.log_level)
    config = load(args.config)
    db = open_db(args)
    if db is None:
        return 2
    with db:
        rows = export.records(db, config, args.start, args.end)
    text = export.jsonl(rows) if args.format == "jsonl" else export.csv_text(rows)
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text, encoding="utf-8")
        print(f"{args.out}: {len(rows)} ratings of tickets from {args.start} to {args.end}")
    return 0


# ---- asking the hall ------------------------------------------------------------


def office_client(args: argparse.Namespace, config: SiteConfig) -> Any:
    """A `HallClient` as the office device, connected."""
    from quhao.mqtt import Bus, credentials
    from quhao.rpc import HallClient
    from quhao.topics import Topics

    password, tls = credentials(args.credentials, OFFICE_DEVICE)
    bus = Bus(
        args.broker,
        OFFICE_DEVICE if password or tls else f"office-{os.getpid()}",
        username=OFFICE_DEVICE if password or tls else None,
        password=password,
        tls=tls,
    )
    client = HallClient(bus, Topics(config.site.id), OFFICE_DEVICE)
    bus.start()
    return client


def staff_proof(staff: str) -> dict[str, str]:
    pin = os.environ.get("QUHAO_PIN") or getpass.getpass(f"PIN for {staff}: ")
    return {"staff": staff, "pin": pin}


def cmd_cases_ask(args: argparse.Namespace) -> int:
    from quhao.rpc import HallUnavailable

    logs.setup(args.log_level)
    config = load(args.config)
    payload: dict[str, Any] = {"case": args.case, "note": args.note}
    if args.request == "case_update":
        payload["state"] = args.state
    if args.request == "case_decide":
        payload["decision"] = args.decision
    payload["by"] = staff_proof(args.staff)
    client = office_client(args, config)
    try:
        answer = client.request(args.request, payload, timeout=args.timeout)
    except HallUnavailable as exc:
        print(f"quhao cases: the hall did not answer: {exc}", file=sys.stderr)
        return 1
    finally:
        client.bus.stop()
    if not answer.get("ok"):
        error = answer.get("error", {})
        print(f"quhao cases: {error.get('code')}: {error.get('message')}", file=sys.stderr)
        return 1
    case = answer["case"]
    print(
        f"{case['id']}: {case['state']}, appeal {case['appeal']}, due {_when(case['due'], config)}"
    )
    return 0
