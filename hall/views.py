"""What the hall publishes, derived from the engine: the retained states and the public
form of its events. Pure. Each payload is one of the wire models of quhao/messages/
(`WindowState`, `WindowProfile`, `HallState`, the events); built as plain dicts here, on
the hall's hot path, and checked against the models by tests/test_wire_contract.py."""

from __future__ import annotations

from typing import Any

from hall.engine import Engine
from hall.model import Event, Status, Terminal


def terminal_view(engine: Engine, term: Terminal) -> dict[str, Any]:
    ticket = engine.tickets.get(term.current) if term.current else None
    staff = engine.config.staff.get(term.staff) if term.staff else None
    return {
        "device": term.device,
        "status": term.status,
        "ticket": ticket.number if ticket else None,
        "ticket_id": ticket.id if ticket else None,
        "service": ticket.service if ticket else None,
        "called_at": ticket.called_at if ticket else None,
        "staff": term.staff,
        "staff_name": staff.name if staff else None,
        "since": term.since,
    }


_STATUS_RANK = {"serving": 0, "idle": 1, "paused": 2, "closed": 3}


def window_state(engine: Engine, number: int) -> dict[str, Any]:
    """`window/{n}/state`: the window as its display shows it.

    With two terminals at one window (一窗双岗) the top-level fields follow the
    most recent call; `terminals` has each one.
    """
    window = engine.config.windows[number]
    terms = [terminal_view(engine, t) for t in engine.terminals.values() if t.window == number]
    status = min((t["status"] for t in terms), key=_STATUS_RANK.__getitem__, default="closed")
    serving = [t for t in terms if t["status"] == "serving"]
    lead = (
        max(serving, key=lambda t: t["called_at"] or 0)
        if serving
        else (max(terms, key=lambda t: t["since"]) if terms else None)
    )
    service = engine.config.services.get(lead["service"]) if lead and lead["service"] else None
    called = lead if serving else None  # the lead terminal, when it serves a ticket
    return {
        "window": number,
        "name": window.name,
        "status": status,
        "ticket": called["ticket"] if called else None,
        "ticket_id": called["ticket_id"] if called else None,
        "service": service.id if service and serving else None,
        "service_name": service.name if service and serving else None,
        "called_at": called["called_at"] if called else None,
        "staff": lead["staff"] if lead else None,
        "staff_name": lead["staff_name"] if lead else None,
        "since": lead["since"] if lead else None,
        "services": list(window.services),
        "terminals": terms,
    }


def window_profile(engine: Engine, number: int) -> dict[str, Any]:
    """`window/{n}/profile`: the 五公开 shown on an evaluator screen — who serves here,
    their photo, staff number, services and service pledge."""
    config = engine.config
    window = config.windows[number]
    clerks: list[dict[str, Any]] = []
    for term in engine.terminals.values():
        staff = config.staff.get(term.staff) if term.window == number and term.staff else None
        if staff is not None and staff.id not in {c["id"] for c in clerks}:
            clerks.append(
                {
                    "id": staff.id,
                    "name": staff.name,
                    "photo": staff.photo,
                    "pledge": staff.pledge,
                    "contact": staff.contact,
                    "party_member": staff.party_member,
                    "services": [
                        config.services[s].name for s in staff.services if s in config.services
                    ],
                }
            )
    return {
        "window": number,
        "name": window.name,
        "services": [config.services[s].name for s in window.services if s in config.services],
        "staff": clerks,
    }


def estimated_wait_s(engine: Engine, service_id: str, waiting: int, day: str) -> int:
    """Waiting count times the mean service time, spread over the terminals serving it."""
    service = engine.config.services[service_id]
    total, count = engine.service_time.get((day, service_id), (0.0, 0))
    mean = total / count if count >= 5 else float(service.expected_service_s)
    serving = sum(
        1
        for t in engine.terminals.values()
        if t.open
        and not t.paused
        and service_id in getattr(engine.config.windows.get(t.window), "services", ())
    )
    return round(waiting * mean / max(serving, 1))


def hall_state(engine: Engine, now: float) -> dict[str, Any]:
    day = engine.day_of(now)
    services = []
    for service in engine.config.services.values():
        waiting = len(engine.queues.get((day, service.id, True), ())) + len(
            engine.queues.get((day, service.id, False), ())
        )
        services.append(
            {
                "id": service.id,
                "name": service.name,
                "prefix": service.prefix,
                "waiting": waiting,
                "estimated_wait_s": estimated_wait_s(engine, service.id, waiting, day),
                "issued": engine.issued_count.get((day, service.id), 0),
            }
        )
    windows = []
    for number in engine.config.windows:
        state = window_state(engine, number)
        windows.append({"window": number, "status": state["status"], "ticket": state["ticket"]})
    return {
        "site": engine.config.site.id,
        "name": engine.config.site.name,
        "day": day,
        "open": engine.is_open(now),
        "updated": now,
        "services": services,
        "windows": windows,
    }


def day_counts(engine: Engine, day: str) -> dict[str, int]:
    counts = {status.value: 0 for status in Status}
    for ticket in engine.tickets.values():
        if ticket.day == day:
            counts[ticket.status.value] += 1
    return counts


def public_event(engine: Engine, event: Event) -> dict[str, Any]:
    """`event/{type}`: the fact without the person key, with its type and time; a ticket
    event also says the ticket's number, service and window as they are now."""
    payload = {k: v for k, v in event.data.items() if k != "person_key"}
    payload["type"], payload["at"] = event.type, event.at
    ticket = engine.tickets.get(event.data.get("ticket", ""))
    if ticket is not None:
        payload["number"] = ticket.number
        payload.setdefault("service", ticket.service)
        payload.setdefault("window", ticket.window)
    return payload
