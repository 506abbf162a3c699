"""`quhao appointments import FILE`: the online hall's bookings (网上预约) into the running
hall (docs/supervision.md, "Appointments").

The file is read here (hall/appointments.py `parse`): each ID number becomes its person
key with the site secret at once and is never stored, printed or logged. The bookings go
to the hall as `appointment_import` requests of the device `office`, so each is an event
in the hall's log (durable, replayed, snapshotted) decided by its one loop; a booking
reference the hall knows already changes nothing, so importing a file again is harmless.
A malformed line is reported by its line number and the others are imported.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
RATE_LIMITED_PAUSE_S = 1.0  # the office is held to a clerk's rate: wait, then the same rid


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from cli.main import _secret_options

    p = sub.add_parser("appointments", help="online appointments: import the online hall's")
    actions = p.add_subparsers(dest="action", required=True)
    q = actions.add_parser("import", help="bookings (CSV or JSON) into the running hall")
    q.add_argument("file", type=Path, help="the online hall's export, CSV or JSON")
    q.add_argument("--config", required=True, type=Path, help="site file")
    q.add_argument("--format", choices=["csv", "json"], help="default: from the content")
    q.add_argument("--broker", default=DEFAULT_BROKER)
    q.add_argument("--credentials", type=Path, help="credentials/ of `quhao broker gen`")
    q.add_argument("--timeout", type=float, default=3.0, help="seconds per attempt")
    q.add_argument("--clock", default="system", help="the hall's clock, as the hall's --clock")
    q.add_argument("--log-level", default="WARNING")
    _secret_options(q)
    q.set_defaults(func=cmd_import)


def cmd_import(args: argparse.Namespace) -> int:
    from cli.loops_cmd import office_client
    from cli.main import _load
    from hall.appointments import parse
    from quhao.clock import Clock
    from quhao.messages.appointments import MAX_IMPORT
    from quhao.rpc import HallUnavailable

    config = _load(args)
    secret = config.read_secret()
    try:
        text = args.file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"quhao appointments: {args.file}: {exc}", file=sys.stderr)
        return 2
    parsed = parse(
        text,
        secret,
        config.services,
        config.site.timezone,
        Clock.parse(args.clock).now(),  # a slot is over, or too far ahead, by hall time
        config.appointments,
        args.format,
    )
    del text  # the ID numbers: nothing below needs them
    name = args.file.name
    for line, why in parsed.errors:
        print(f"{name}:{line}: {why}", file=sys.stderr)
    line_of = {b.ref: line for line, b in parsed.bookings}
    booked = unchanged = refused = 0
    client = office_client(args, config) if parsed.bookings else None
    try:
        for first in range(0, len(parsed.bookings), MAX_IMPORT):
            chunk = [b for _, b in parsed.bookings[first : first + MAX_IMPORT]]
            payload = {"bookings": [b.model_dump() for b in chunk]}
            answer = _ask(client, payload, args.timeout)
            if not answer.get("ok"):
                error = answer.get("error", {})
                print(
                    f"quhao appointments: refused: {error.get('code')}: {error.get('message')}",
                    file=sys.stderr,
                )
                return 1
            booked += len(answer["booked"])
            unchanged += len(answer["unchanged"])
            for r in answer["refused"]:
                refused += 1
                print(
                    f"{name}:{line_of.get(r['ref'], '?')}: booking {r['ref']} refused: "
                    f"{r['code']}: {r['message']}",
                    file=sys.stderr,
                )
    except HallUnavailable as exc:
        print(f"quhao appointments: the hall did not answer: {exc}", file=sys.stderr)
        return 1
    finally:
        if client is not None:
            client.bus.stop()
    print(
        f"{name}: {booked} booked, {unchanged} known already, {refused} refused by the hall, "
        f"{len(parsed.errors)} bad lines"
    )
    return 1 if parsed.errors or refused else 0


def _ask(client: Any, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One request, the same rid again while the hall says `rate_limited`."""
    rid = client.new_rid()
    while True:
        answer: dict[str, Any] = client.request(
            "appointment_import", payload, rid=rid, timeout=timeout
        )
        if answer.get("error", {}).get("code") != "rate_limited":
            return answer
        time.sleep(RATE_LIMITED_PAUSE_S)
