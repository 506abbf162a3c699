"""Snapshots of the engine's state, so start-up replays only the events after one.

`snapshot(engine)` is the engine's whole live state as plain JSON-able data;
`restore(config, secret, data)` makes an engine that is exactly that state — the same
tickets with every field, the same queues in the same order, number counters,
terminals, quota history, service times and sequence — so a snapshot plus the events
after it gives the same engine as replaying the whole log. Both are pure.

`encode` / `decode` turn that data into the stored form: compact JSON, zlib-compressed
(zlib's checksum catches a damaged blob). A snapshot whose format this code does not
know, or whose tickets or terminals have other fields than today's, is refused with
`SnapshotError`, and start-up uses an older snapshot or the whole log instead.

Person keys: a snapshot holds the keys the engine held when it was taken. The store
records the earliest issue time of any of them (`person_keys_since`), and erasing keys
by retention rewrites every snapshot holding one of the erased keys without them
(`forget_person_keys`, as the engine forgets them), or deletes it if it cannot be read
(`Store.erase_person_keys`).
"""

from __future__ import annotations

import dataclasses
import json
import operator
import time
import zlib
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hall.appointments import APPOINTMENT_FIELDS, AppointmentBook, forget_snapshot_keys
from hall.cases import CASE_FIELDS, CaseBook
from hall.engine import Engine
from hall.model import LeaseBlock, Status, Terminal, Ticket
from quhao.config import SiteConfig

if TYPE_CHECKING:
    from hall.store import Store

FORMAT = 2  # bump whenever the data below changes meaning (2: leases, offline tickets)
COMPRESSION_LEVEL = 1  # ~5x smaller; higher levels cost 3x the time for ~25 % less
EVERY_EVENTS = 20_000  # default: a snapshot after this many events, and at each day's end
KEEP = 3  # snapshots kept in the store; older ones are deleted

_TICKET_FIELDS = tuple(f.name for f in dataclasses.fields(Ticket))
_TERMINAL_FIELDS = tuple(f.name for f in dataclasses.fields(Terminal))
# What an engine holds: its state (all in the snapshot) and what it derives from the config.
_STATE = {
    "tickets",
    "last_number",
    "issued_count",
    "leases",
    "terminals",
    "queues",
    "person_history",
    "service_time",
    "seq",
    "cases",
    "appointments",
    "abandoned",
}
_FROM_CONFIG = {"config", "secret", "authority", "longest_quota_s"}
_DERIVED = {"by_request"}  # rebuilt from the tickets (`Engine.reindex`)


class SnapshotError(Exception):
    """A stored snapshot that cannot be used: damaged, another format, another site."""


def snapshot(engine: Engine) -> dict[str, Any]:
    """The engine's live state. Dict orders are kept: they decide event order in `tick`."""
    unknown = set(vars(engine)) - _STATE - _FROM_CONFIG - _DERIVED
    if unknown:  # a new piece of state that nobody taught the snapshot
        raise SnapshotError(f"the engine holds state a snapshot does not know: {sorted(unknown)}")
    return {
        "format": FORMAT,
        "site": engine.config.site.id,
        "seq": engine.seq,
        # tickets and terminals as rows under one list of their fields: the names are
        # not repeated a few thousand times, and taking a row is one attrgetter call
        "ticket_fields": list(_TICKET_FIELDS),
        "tickets": [_ticket_row(t) for t in engine.tickets.values()],
        "last_number": [[day, svc, n] for (day, svc), n in engine.last_number.items()],
        "issued_count": [[day, svc, n] for (day, svc), n in engine.issued_count.items()],
        "leases": [
            [day, svc, kiosk, [[b.first, b.last, b.released] for b in blocks]]
            for (day, svc, kiosk), blocks in engine.leases.items()
        ],
        "terminal_fields": list(_TERMINAL_FIELDS),
        "terminals": [_terminal_row(t) for t in engine.terminals.values()],
        "queues": [
            [day, svc, prio, [list(entry) for entry in queue]]
            for (day, svc, prio), queue in engine.queues.items()
        ],
        "person_history": [
            [key, svc, [list(entry) for entry in history]]
            for (key, svc), history in engine.person_history.items()
        ],
        "service_time": [
            [day, svc, total, n] for (day, svc), (total, n) in engine.service_time.items()
        ],
        # bad-rating cases still watched (hall/cases.py); absent before cases existed
        "case_fields": list(CASE_FIELDS),
        "cases": engine.cases.rows(),
        # online bookings of today and later (hall/appointments.py); absent before them
        "appointment_fields": list(APPOINTMENT_FIELDS),
        "appointments": engine.appointments.rows(),
        # given-up requests each kiosk handed over, oldest first; absent before them
        "abandoned": [
            [kiosk, list(map(list, rids.items()))] for kiosk, rids in engine.abandoned.items()
        ],
    }


def restore(config: SiteConfig, secret: bytes | None, data: dict[str, Any]) -> Engine:
    """An engine in exactly the state `data` describes, under `config`.

    Terminals are the snapshot's, then reconciled with `config` the way a live
    reconfiguration is (new counters added, idle removed ones dropped)."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        raise SnapshotError(f"format {found!r}, this hall reads format {FORMAT}")
    if data.get("site") != config.site.id:
        raise SnapshotError(f"a snapshot of site {data.get('site')!r}, not {config.site.id!r}")
    for kind, known in (("ticket", _TICKET_FIELDS), ("terminal", _TERMINAL_FIELDS)):
        if data.get(f"{kind}_fields") != list(known):  # added, removed or renamed since
            raise SnapshotError(
                f"{kind} fields {data.get(f'{kind}_fields')} are not today's {list(known)}"
            )
    engine = Engine(config, secret)
    try:
        engine.seq = int(data["seq"])
        engine.tickets = {t.id: t for t in map(_ticket, data["tickets"])}
        engine.last_number = defaultdict(
            int, {(day, svc): int(n) for day, svc, n in data["last_number"]}
        )
        engine.issued_count = defaultdict(
            int, {(day, svc): int(n) for day, svc, n in data["issued_count"]}
        )
        engine.leases = {
            (str(day), str(svc), str(kiosk)): [
                LeaseBlock(int(first), int(last), bool(released))
                for first, last, released in blocks
            ]
            for day, svc, kiosk, blocks in data["leases"]
        }
        engine.terminals = {t.device: t for t in map(_terminal, data["terminals"])}
        engine.queues = defaultdict(
            list,
            {
                (day, svc, bool(prio)): [(float(r), float(t), str(i)) for r, t, i in queue]
                for day, svc, prio, queue in data["queues"]
            },
        )
        engine.person_history = defaultdict(
            list,
            {
                (key, svc): [(float(at), str(tid)) for at, tid in history]
                for key, svc, history in data["person_history"]
            },
        )
        engine.service_time = {
            (day, svc): (float(total), int(n)) for day, svc, total, n in data["service_time"]
        }
        # A snapshot from before cases existed was taken before any case event.
        engine.cases = CaseBook.from_rows(
            data.get("case_fields", list(CASE_FIELDS)), data.get("cases", [])
        )
        engine.appointments = AppointmentBook.from_rows(
            data.get("appointment_fields", list(APPOINTMENT_FIELDS)), data.get("appointments", [])
        )
        engine.abandoned = {
            str(kiosk): {str(rid): str(day) for rid, day in rids}
            for kiosk, rids in data.get("abandoned", [])
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise SnapshotError(f"damaged snapshot: {exc!r}") from exc
    engine.reindex()
    engine.reconfigure(config)
    return engine


def person_keys_since(data: dict[str, Any]) -> float | None:
    """The earliest issue time of any person key the snapshot holds (None: it holds none)."""
    times = [t[_ISSUED_AT] for t in data["tickets"] if t[_PERSON_KEY]]
    times += [at for _key, _svc, history in data["person_history"] for at, _tid in history]
    return min(times, default=None)


def forget_person_keys(data: dict[str, Any], issued_before: float) -> dict[str, Any]:
    """The snapshot as if it had been taken after `Engine.forget_person_keys(issued_before)`:
    what retention makes of an older snapshot, so it stays usable without the keys."""
    tickets = [
        [*t[:_PERSON_KEY], None, *t[_PERSON_KEY + 1 :]]
        if t[_PERSON_KEY] and t[_ISSUED_AT] < issued_before
        else t
        for t in data["tickets"]
    ]
    history = []
    for key, svc, entries in data["person_history"]:
        if not entries:
            history.append([key, svc, entries])  # the engine leaves empty ones as they are
            continue
        kept = [entry for entry in entries if entry[0] >= issued_before]
        if kept:
            history.append([key, svc, kept])
    return {**data, "tickets": tickets, "person_history": history}


def forget_appointment_keys(data: dict[str, Any], before_day: str) -> dict[str, Any]:
    """The snapshot without the person keys of appointments of days before `before_day`
    (what `Store.erase_appointment_keys` makes of an older snapshot)."""
    return {**data, "appointments": forget_snapshot_keys(data.get("appointments", []), before_day)}


def encode(data: dict[str, Any]) -> bytes:
    return zlib.compress(_json(data), COMPRESSION_LEVEL)


def _json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


@dataclass(frozen=True)
class Saved:
    seq: int
    tickets: int  # live tickets in it
    json_bytes: int
    stored_bytes: int
    state_ms: float  # taking the state (the only part that must see a still engine)
    encode_ms: float  # JSON and zlib
    write_ms: float  # the SQLite transaction


def save(store: Store, engine: Engine, at: float, keep: int = KEEP) -> Saved:
    """Snapshot `engine` into `store` as of the store's last event; keep the newest
    `keep`. The engine must be exactly the fold of the stored events (between batches)."""
    t0 = time.perf_counter()
    data = snapshot(engine)
    t1 = time.perf_counter()
    text = _json(data)
    blob = zlib.compress(text, COMPRESSION_LEVEL)
    t2 = time.perf_counter()
    seq = store.last_seq()
    store.save_snapshot(seq, at, FORMAT, blob, person_keys_since(data), keep)
    t3 = time.perf_counter()
    return Saved(
        seq,
        len(data["tickets"]),
        len(text),
        len(blob),
        (t1 - t0) * 1000,
        (t2 - t1) * 1000,
        (t3 - t2) * 1000,
    )


def decode(blob: bytes) -> dict[str, Any]:
    try:
        data = json.loads(zlib.decompress(blob).decode("utf-8"))
    except (zlib.error, UnicodeDecodeError, ValueError) as exc:
        raise SnapshotError(f"damaged snapshot: {exc}") from exc
    if not isinstance(data, dict):
        raise SnapshotError("damaged snapshot: not an object")
    return data


# ---- tickets and terminals ---------------------------------------------------


_ticket_row = operator.attrgetter(*_TICKET_FIELDS)  # Status is a str: JSON writes its value
_terminal_row = operator.attrgetter(*_TERMINAL_FIELDS)
_STATUS, _ORDER, _PATH = (_TICKET_FIELDS.index(n) for n in ("status", "order", "path"))
_ISSUED_AT, _PERSON_KEY = (_TICKET_FIELDS.index(n) for n in ("issued_at", "person_key"))


def _ticket(row: list[Any]) -> Ticket:
    if len(row) != len(_TICKET_FIELDS):
        raise SnapshotError(f"damaged snapshot: a ticket of {len(row)} fields")
    values = list(row)
    rank, tie = values[_ORDER]
    values[_STATUS] = Status(values[_STATUS])
    values[_ORDER] = (float(rank), float(tie))
    values[_PATH] = list(values[_PATH])
    return Ticket(*values)


def _terminal(row: list[Any]) -> Terminal:
    if len(row) != len(_TERMINAL_FIELDS):
        raise SnapshotError(f"damaged snapshot: a terminal of {len(row)} fields")
    return Terminal(*row)
