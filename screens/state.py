"""The hall's public state as the screens show it. Pure: messages and time in, views out.

`HallView.feed(topic, payload, retained, now)` folds one MQTT message (the topic below
`quhao/{site}/`) into the view and says what changed (`Changes`); the views
(`board`, `window`, `ticket`) are plain JSON-ready dicts for the pages. Nothing here
reads a clock or a socket: `now` is hall time, passed in.

Where each part comes from:

- windows (status, number being served, clerk): the retained `window/{n}/state`;
  **calls** are read from them too — a terminal's (ticket, called_at) pair that changes
  in a live (not retained) message is a call, a new called_at for the same ticket a
  recall. Window states go at QoS 1, so the board never misses a call that an event
  (QoS 0) might lose, and a reconnect (retained copies) is not mistaken for new calls;
- the clerks (五公开): the retained `window/{n}/profile`;
- waiting counts and estimated waits per service: the retained `hall/state`;
- **a ticket's place in its queue** (the phone page's "people ahead"): the hall
  publishes no per-ticket position, so the view keeps its own copy of the queues,
  folded from the events exactly as the hall's engine orders them — by (day of the
  queue, service, priority lane), sorted by (rank time, tie-break): issue time and
  issue sequence on `ticket.issued`, the original issue time on `ticket.transferred`,
  the hall's new place on `ticket.reinstated`; out on called, voided, expired; moved
  on carried. People ahead = the priority tickets waiting before it (all of them, for
  an ordinary ticket) + the ordinary ones before it. A ticket issued before the view
  started (the daemon restarted) is not in that copy: its page shows the service's
  waiting count, less itself, as an upper bound ("approximate");
- the rating prompt of a window screen: `ticket.finished` at that window, open for
  `[queue] rating_timeout_s` (hall time) or until `ticket.rated` names the ticket;
- whether the hall is up: the retained `device/hall/availability` (its Last Will says
  offline) and the daemon's own broker connection (`set_connected`).
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from quhao.config import SiteConfig
from quhao.config.screens import Board
from quhao.messages import (
    Availability,
    HallState,
    WindowProfile,
    WindowState,
    decode_event,
)
from quhao.messages.base import Wire
from quhao.messages.events import TicketCalled, TicketCarried, TicketReinstated, TicketTransferred
from quhao.ticketpage import TICKET_ID
from quhao.wire import BadPayload, decode_object

MAX_CALLS = 40  # recent calls kept for the boards
MAX_TICKETS = 50_000  # tickets followed at once; a day of the busiest hall is ~5,000
THANKS_S = 8.0  # hall seconds a window screen says 感谢您的评价 after a rating
QueueKey = tuple[str, str, bool]  # (day of the queue, service, priority lane)


@dataclass(frozen=True)
class Call:
    number: str
    ticket_id: str
    window: int
    service: str
    at: float  # hall time of the call
    recall: bool


@dataclass
class TicketInfo:
    id: str
    number: str
    service: str
    priority: bool
    status: str  # waiting | called | finished | skipped | voided | expired
    order: tuple[float, float]
    queue_day: str
    issued_at: float
    window: int | None = None
    recalls: int = 0
    last: str = "issued"  # the last thing that happened to it (the page says it)
    transferred_from: str | None = None

    @property
    def key(self) -> QueueKey:
        return (self.queue_day, self.service, self.priority)


@dataclass
class RatingPrompt:
    ticket_id: str
    number: str
    deadline: float  # hall time
    rated: int | None = None  # level once rated (感谢您的评价 until thanks_until)
    thanks_until: float = 0.0


@dataclass
class Changes:
    """What one message changed, for the pages that show it."""

    board: bool = False  # hall name, day, online, service counts
    windows: set[int] = field(default_factory=set)
    profiles: set[int] = field(default_factory=set)
    services: set[str] = field(default_factory=set)  # their queues moved
    tickets: set[str] = field(default_factory=set)
    calls: list[Call] = field(default_factory=list)
    ratings: set[int] = field(default_factory=set)  # windows whose rating prompt changed
    problem: str | None = None  # the message was garbage: why (it changed nothing)

    @property
    def empty(self) -> bool:
        return not (
            self.board
            or self.windows
            or self.profiles
            or self.services
            or self.tickets
            or self.calls
            or self.ratings
        )


class HallView:
    def __init__(self, config: SiteConfig) -> None:
        self.config = config
        self.hall: HallState | None = None
        self.hall_online: bool | None = None  # None: not heard yet
        self.connected = False  # the daemon's own broker connection
        self.windows: dict[int, WindowState] = {}
        self.profiles: dict[int, WindowProfile] = {}
        self.calls: deque[Call] = deque(maxlen=MAX_CALLS)
        self.tickets: dict[str, TicketInfo] = {}
        self.queues: dict[QueueKey, list[tuple[float, float, str]]] = {}
        self.prompts: dict[int, RatingPrompt] = {}
        self._seen_calls: dict[tuple[int, str], tuple[str | None, float | None]] = {}

    # ---- folding messages -------------------------------------------------

    @property
    def online(self) -> bool:
        """The board is live: connected to the broker and the hall is not known down."""
        return self.connected and self.hall_online is not False

    def set_connected(self, connected: bool) -> Changes:
        changed = connected != self.connected
        self.connected = connected
        return Changes(board=changed)

    def feed(self, topic: str, payload: bytes, retained: bool, now: float) -> Changes:
        """One message on `topic` (below `quhao/{site}/`). Garbage changes nothing and
        comes back as `Changes(problem=…)`."""
        parts = topic.split("/")
        try:
            obj = decode_object(payload)
            if topic == "hall/state":
                return self._hall_state(HallState.model_validate(obj))
            if len(parts) == 3 and parts[0] == "window" and parts[2] in ("state", "profile"):
                number = _window_number(parts[1])
                if number not in self.config.windows:
                    return Changes(problem=f"no window {parts[1][:12]!r} in this site")
                if parts[2] == "state":
                    return self._window_state(number, WindowState.model_validate(obj), retained)
                return self._profile(number, WindowProfile.model_validate(obj))
            if topic == "device/hall/availability":
                state = Availability.model_validate(obj).state
                changed = self.hall_online != (state == "online")
                self.hall_online = state == "online"
                return Changes(board=changed)
            if len(parts) == 2 and parts[0] == "event":
                return self._event(decode_event(obj), now)
        except (BadPayload, ValidationError, ValueError, KeyError) as exc:
            return Changes(problem=f"{topic}: {_short(exc)}")
        return Changes()  # a topic the screens do not show (another device's status)

    def _hall_state(self, state: HallState) -> Changes:
        old = self.hall
        if old is None or old.day != state.day:
            self._forget_before(state.day)  # raises on a day that is not a date: skipped
        self.hall = state
        changes = Changes(board=True)
        # a new count or estimate changes the pages of that service's tickets
        before = {s.id: (s.waiting, s.estimated_wait_s) for s in (old.services if old else [])}
        changes.services = {
            s.id for s in state.services if before.get(s.id) != (s.waiting, s.estimated_wait_s)
        }
        return changes

    def _window_state(self, number: int, state: WindowState, retained: bool) -> Changes:
        changes = Changes(windows={number})
        self.windows[number] = state
        for term in state.terminals:
            key = (number, term.device)
            now_serving = (term.ticket_id, term.called_at)
            before = self._seen_calls.get(key)
            self._seen_calls[key] = now_serving
            if term.ticket_id is None or term.ticket is None or term.called_at is None:
                continue
            ticket = self.tickets.get(term.ticket_id)
            if ticket is not None and (ticket.status != "called" or ticket.window != number):
                self._dequeue(ticket)
                ticket.status, ticket.window, ticket.last = "called", number, "called"
                changes.tickets.add(ticket.id)
                changes.services.add(ticket.service)
            if retained or before == now_serving:
                continue  # what was already on the broker, or a repeat: no new call
            recall = before is not None and before[0] == term.ticket_id
            call = Call(
                term.ticket,
                term.ticket_id,
                number,
                term.service or "",
                term.called_at,
                recall,
            )
            self.calls.appendleft(call)
            changes.calls.append(call)
            changes.tickets.add(term.ticket_id)
        return changes

    def _profile(self, number: int, profile: WindowProfile) -> Changes:
        self.profiles[number] = profile
        return Changes(profiles={number})

    def _event(self, event: Wire, now: float) -> Changes:
        kind = getattr(event, "type", "")
        ticket_id = getattr(event, "ticket", None)
        if not isinstance(ticket_id, str) or not TICKET_ID.match(ticket_id):
            return Changes()  # terminal and lease events: the window states say enough
        at: float = getattr(event, "at", now)
        changes = Changes(tickets={ticket_id})
        ticket = self.tickets.get(ticket_id)
        if kind == "ticket.issued":
            if ticket is None:
                self._follow(event, ticket_id)
                changes.services.add(getattr(event, "service", ""))
            return changes
        if kind == "ticket.finished":
            window = getattr(event, "window", None)
            if isinstance(window, int) and window in self.config.windows:
                number = getattr(event, "number", None) or ticket_id.split("/")[-1]
                deadline = at + self.config.rules.rating_timeout_s
                self.prompts[window] = RatingPrompt(ticket_id, number, deadline)
                changes.ratings.add(window)
        if kind in ("ticket.rated", "alert.bad_rating"):
            for window, prompt in self.prompts.items():
                if prompt.ticket_id == ticket_id and prompt.rated is None:
                    prompt.rated = getattr(event, "level", None) or 0
                    prompt.thanks_until = at + THANKS_S
                    changes.ratings.add(window)
        if ticket is None:
            return changes
        changes.services.add(ticket.service)
        self._ticket_event(ticket, kind, event, at)
        changes.services.add(ticket.service)  # after a transfer: the new one too
        return changes

    def _follow(self, event: Wire, ticket_id: str) -> None:
        if len(self.tickets) >= MAX_TICKETS:
            self._drop_oldest()
        at = float(getattr(event, "at", 0.0))
        ticket = TicketInfo(
            id=ticket_id,
            number=str(getattr(event, "number", "")),
            service=str(getattr(event, "service", "")),
            priority=getattr(event, "priority", None) is not None,
            status="waiting",
            order=(at, float(getattr(event, "seq", 0))),
            queue_day=str(getattr(event, "day", ticket_id.split("/")[0])),
            issued_at=at,
        )
        self.tickets[ticket_id] = ticket
        self._enqueue(ticket)

    def _ticket_event(self, ticket: TicketInfo, kind: str, event: Wire, at: float) -> None:
        short = kind.removeprefix("ticket.")
        if isinstance(event, TicketCalled):
            self._dequeue(ticket)
            ticket.status, ticket.window, ticket.last = "called", event.window, short
        elif kind == "ticket.recalled":
            ticket.recalls += 1
            ticket.last = short
        elif kind in ("ticket.finished", "ticket.skipped", "ticket.voided", "ticket.expired"):
            self._dequeue(ticket)
            ticket.status = {"ticket.voided": "voided", "ticket.expired": "expired"}.get(
                kind, short
            )
            ticket.last = short
            if kind != "ticket.skipped":
                ticket.window = getattr(event, "window", None) or ticket.window
        elif isinstance(event, TicketTransferred):
            self._dequeue(ticket)
            ticket.transferred_from = ticket.service
            ticket.service = event.to
            ticket.status, ticket.window, ticket.last = "waiting", None, short
            ticket.order = (ticket.issued_at, ticket.order[1])  # keeps its issue time
            self._enqueue(ticket)
        elif isinstance(event, TicketReinstated):
            self._dequeue(ticket)
            ticket.order = (float(event.order[0]), float(event.order[1]))
            ticket.status, ticket.window, ticket.last = "waiting", None, short
            self._enqueue(ticket)
        elif isinstance(event, TicketCarried):
            self._dequeue(ticket)
            ticket.queue_day = event.to_day
            self._enqueue(ticket)

    # ---- the queues -------------------------------------------------------

    def _enqueue(self, ticket: TicketInfo) -> None:
        if ticket.status == "waiting":
            queue = self.queues.setdefault(ticket.key, [])
            bisect.insort(queue, (*ticket.order, ticket.id))

    def _dequeue(self, ticket: TicketInfo) -> None:
        queue = self.queues.get(ticket.key)
        if not queue:
            return
        entry = (*ticket.order, ticket.id)
        index = bisect.bisect_left(queue, entry)
        if index < len(queue) and queue[index] == entry:
            queue.pop(index)
        if not queue:
            del self.queues[ticket.key]

    def ahead(self, ticket: TicketInfo) -> int:
        """Tickets the hall would call before this one in its service (as its engine
        orders them: the priority lane first)."""
        day, service, _ = ticket.key
        entry = (*ticket.order, ticket.id)
        prio = self.queues.get((day, service, True), [])
        if ticket.priority:
            return bisect.bisect_left(prio, entry)
        return len(prio) + bisect.bisect_left(self.queues.get((day, service, False), []), entry)

    def _forget_before(self, day: str) -> None:
        """A new day: tickets of the days before yesterday's are done with (a carried one
        waits in a later day's queue and stays)."""
        keep_from = _day_before(day)
        for ticket in [t for t in self.tickets.values() if t.queue_day < keep_from]:
            self._dequeue(ticket)
            del self.tickets[ticket.id]

    def _drop_oldest(self) -> None:
        """Over MAX_TICKETS: forget the oldest tenth, settled ones first."""
        ordered = sorted(
            self.tickets.values(), key=lambda t: (t.status in ("waiting", "called"), t.issued_at)
        )
        for ticket in ordered[: max(1, len(ordered) // 10)]:
            self._dequeue(ticket)
            del self.tickets[ticket.id]

    # ---- views ------------------------------------------------------------

    def board_windows(self, board: Board | None) -> list[int]:
        """The windows a board shows: all, or its windows plus those serving its services."""
        if board is None:
            return sorted(self.config.windows)
        chosen = set(board.windows)
        for number, window in self.config.windows.items():
            if set(window.services) & set(board.services):
                chosen.add(number)
        return sorted(chosen)

    def board(self, board: Board | None = None, title: str = "") -> dict[str, Any]:
        windows = self.board_windows(board)
        shown = set(windows)
        services = [
            s
            for s in self.services_view()
            if board is None or s["id"] in _board_services(self, board)
        ]
        return {
            "hall": self.hall_view(),
            "title": title,
            "services": services,
            "windows": [self.window_cell(n) for n in windows],
            "calls": [call_view(self, c) for c in self.calls if c.window in shown][:12],
        }

    def hall_view(self) -> dict[str, Any]:
        return {
            "name": self.hall.name if self.hall else self.config.site.name,
            "day": self.hall.day if self.hall else None,
            "open": self.hall.open if self.hall else None,
            "online": self.online,
        }

    def services_view(self) -> list[dict[str, Any]]:
        if self.hall is None:
            return [
                {"id": s.id, "name": s.name, "prefix": s.prefix, "waiting": None, "wait_s": None}
                for s in self.config.services.values()
            ]
        return [
            {
                "id": s.id,
                "name": s.name,
                "prefix": s.prefix,
                "waiting": s.waiting,
                "wait_s": s.estimated_wait_s,
            }
            for s in self.hall.services
        ]

    def window_cell(self, number: int) -> dict[str, Any]:
        """One window of a board's grid."""
        state = self.windows.get(number)
        name = self.config.windows[number].name
        if state is None:
            return {"window": number, "name": name, "status": "closed", "ticket": None}
        return {
            "window": number,
            "name": state.name,
            "status": state.status,
            "ticket": state.ticket,
            "service_name": state.service_name,
        }

    def window(self, number: int, now: float) -> dict[str, Any]:
        """A window screen (服务评价器): 五公开, the number served, the rating prompt."""
        cell = self.window_cell(number)
        profile = self.profiles.get(number)
        state = self.windows.get(number)
        services = (
            profile.services
            if profile
            else [
                self.config.services[s].name
                for s in self.config.windows[number].services
                if s in self.config.services
            ]
        )
        return {
            **cell,
            "hall": self.hall_view(),
            "services": services,
            "staff": [c.model_dump() for c in profile.staff] if profile else [],
            "staff_on_duty": state.staff if state else None,
            "rating": self.rating_view(number, now),
            "levels": LEVELS,
            "reasons": list(self.config.texts.rating_reasons),
        }

    def rating_view(self, number: int, now: float) -> dict[str, Any] | None:
        prompt = self.prompts.get(number)
        if prompt is None:
            return None
        if prompt.rated is not None:
            if now >= prompt.thanks_until:
                return None
            return {
                "ticket": prompt.ticket_id,
                "number": prompt.number,
                "rated": prompt.rated,
                "remaining_s": prompt.thanks_until - now,
            }
        if now >= prompt.deadline:
            return None
        return {
            "ticket": prompt.ticket_id,
            "number": prompt.number,
            "rated": None,
            "remaining_s": prompt.deadline - now,
        }

    def rating_open(self, number: int, ticket_id: str, now: float) -> bool:
        """Whether window `number`'s screen may take a touch rating for this ticket now."""
        prompt = self.prompts.get(number)
        return (
            prompt is not None
            and prompt.ticket_id == ticket_id
            and prompt.rated is None
            and now < prompt.deadline
        )

    def ticket(self, ticket_id: str) -> dict[str, Any]:
        """The phone page of one ticket (the caller checked its token)."""
        day, number = ticket_id.split("/", 1)
        info = self.tickets.get(ticket_id)
        serving = self._serving_window(ticket_id)
        counts = {s.id: s for s in self.hall.services} if self.hall else {}
        if info is None:
            service = next(
                (s for s in self.config.services.values() if s.prefix == number[:1]), None
            )
            sid = service.id if service else ""
            known = counts.get(sid)
            status, window = ("called", serving) if serving is not None else ("unknown", None)
            # at most everyone waiting for its service but itself
            ahead = max(known.waiting - 1, 0) if known and status == "unknown" else None
            wait_s = known.estimated_wait_s if known and status == "unknown" else None
            return {
                "id": ticket_id,
                "number": number,
                "day": day,
                "service": sid,
                "service_name": service.name if service else "",
                "status": status,
                "window": window,
                "ahead": ahead,
                "wait_s": wait_s,
                "approximate": True,
                "last": status,
                "recalls": 0,
                "transferred_from": None,
                "hall": self.hall_view(),
            }
        status, window = info.status, info.window
        if serving is not None and status == "waiting":
            status, window = "called", serving
        ahead = self.ahead(info) if status == "waiting" else None
        known = counts.get(info.service)
        wait_s = None
        if ahead is not None and known is not None:
            # the hall's estimate for the whole queue, pro rata for the people ahead
            wait_s = round(known.estimated_wait_s * (ahead + 1) / max(known.waiting, ahead + 1))
        service = self.config.services.get(info.service)
        origin = self.config.services.get(info.transferred_from or "")
        return {
            "id": ticket_id,
            "number": info.number,
            "day": day,
            "service": info.service,
            "service_name": service.name if service else info.service,
            "status": status,
            "window": window,
            "ahead": ahead,
            "wait_s": wait_s,
            "approximate": False,
            "last": info.last,
            "recalls": info.recalls,
            "transferred_from": origin.name if origin else info.transferred_from,
            "hall": self.hall_view(),
        }

    def _serving_window(self, ticket_id: str) -> int | None:
        for number, state in self.windows.items():
            if any(t.ticket_id == ticket_id for t in state.terminals):
                return number
        return None


LEVELS = [
    {"level": 5, "name": "非常满意"},
    {"level": 4, "name": "满意"},
    {"level": 3, "name": "基本满意"},
    {"level": 2, "name": "不满意"},
    {"level": 1, "name": "非常不满意"},
]


def call_view(view: HallView, call: Call) -> dict[str, Any]:
    service = view.config.services.get(call.service)
    return {
        "number": call.number,
        "window": call.window,
        "service_name": service.name if service else "",
        "at": call.at,
        "recall": call.recall,
        "key": f"{call.ticket_id}@{call.at}",
    }


def _board_services(view: HallView, board: Board) -> set[str]:
    chosen = set(board.services)
    for number in board.windows:
        window = view.config.windows.get(number)
        if window is not None:
            chosen |= set(window.services)
    return chosen


def _window_number(text: str) -> int:
    if not text.isdigit() or len(text) > 6:
        raise ValueError(f"not a window number: {text[:12]!r}")
    return int(text)


def _day_before(day: str) -> str:
    from datetime import date, timedelta

    return (date.fromisoformat(day) - timedelta(days=1)).isoformat()


def _short(exc: Exception) -> str:
    text = str(exc).replace("\n", " ")
    return text if len(text) <= 200 else text[:200] + "…"
