"""The queue engine: pure and deterministic. No I/O, no clock — `now` is passed in.

Every request is *decided* against the current state into a list of events
(or a refusal), and state changes only by *applying* events. The store
persists the events; replaying them rebuilds exactly the same state.

Rules, all from the site configuration:
- numbers are per service and per local day: prefix + zero-padded counter;
  the day is derived from `now` in the site's time zone, so numbering starts
  again at midnight by itself;
- a window serves several services with weights (一窗受理): the next ticket
  is the one with the largest weighted wait, (now - rank time + 1) * weight;
- priority tickets (elderly, appointment, green channel) go first, but after
  `interleave` priority calls in a row at a terminal an ordinary ticket waiting
  there is called (anti-starvation);
- per-person quota as a sliding window over the person key; a staff override
  issues anyway and records the staff id;
- several terminals at one window call independently (一窗双岗);
- the live state stays small however long the hall runs: once a day `tick` archives
  the settled tickets of the days before yesterday (`tickets.archived`) — the store
  keeps them for reports; an action naming one is answered `unknown_ticket`;
- offline issuing (docs/architecture.md, "Offline issuing: the lease protocol"): a
  kiosk's `lease` reserves a block of a service's day for it alone, taken from the TOP
  of the day's number space downward (A990–A999, then A980–A989, …), while online
  numbering counts up from 001 and skips any leased number it reaches; its `handover`
  puts what it printed offline into the queue by issue time, checked against its lease;
  `release` gives up the rest (released numbers are never issued again); an offline
  ticket printed because an `issue` went unanswered names that request's rid, and the
  online ticket the hall issued for it after all (its answer lost) is voided, or the
  request refused `superseded` should it arrive only after the handover; a request the
  kiosk gave up on and printed nothing for is handed over by its rid alone (`abandoned`)
  to the same end, and remembered (`request.abandoned`) a week, at most
  `ABANDONED_KEPT` per kiosk.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from hall.appointments import APPOINTMENT_EVENTS, AppointmentBook
from hall.cases import CASE_EVENTS, CaseBook
from hall.model import Event, LeaseBlock, Refused, Status, Terminal, Ticket
from quhao.config import Service, SiteConfig
from quhao.messages import (
    ACTION_REQUESTS,
    ActionRequest,
    BadRequest,
    CallRequest,
    HandoverRequest,
    IssueRequest,
    LeaseRequest,
    LoginRequest,
    OfflineTicket,
    RateRequest,
    ReinstateRequest,
    ReleaseRequest,
    StaffProof,
    TransferRequest,
    VoidRequest,
    decode_request,
)
from quhao.messages.appointments import AppointmentImportRequest, CheckinRequest
from quhao.messages.office import CaseAppealRequest, CaseDecideRequest, CaseUpdateRequest
from quhao.staffauth import StaffAuthority
from quhao.wire import shown

QueueEntry = tuple[float, float, str]  # (rank time, tie-break, ticket id)


Decided = tuple[dict[str, Any], list[Event]]  # the response (without ok/rid) and the events


@dataclass
class Outcome:
    response: dict[str, Any]  # without "ok"/"rid": the service adds those
    events: list[Event]
    error: Refused | None = None


LEASE_BLOCKS_HELD = 2  # unreleased blocks a kiosk may hold per service and day
MAX_NUMBER = 999_999  # the largest number counter a ticket can show
LEASES_KEPT_DAYS = 7  # a lease stays known this long after its day is archived
OFFLINE_SKEW_S = 300  # an offline ticket may be this far in the hall's future (clocks)
ARCHIVE_AFTER_DAYS = 1  # settled tickets of days before yesterday leave the live state
# Given-up requests remembered per kiosk, the oldest forgotten first. A rid matters only
# until its request, queued in the kiosk's MQTT client, arrives: on the reconnection that
# also carries the handover. A kiosk gives up at most one request per citizen, each after
# the hall's whole timeout (6 s by default), so this is over an hour and a half of
# citizens at one cut-off kiosk with nothing left to print — and at most 1000 rids of
# 128 characters a kiosk, however hostile.
ABANDONED_KEPT = 1000
ABANDONED = "abandoned by the kiosk"  # a voided ticket's reason
SETTLED = frozenset({Status.FINISHED, Status.SKIPPED, Status.VOIDED, Status.EXPIRED})


class Engine:
    def __init__(self, config: SiteConfig, secret: bytes | None = None) -> None:
        self.config = config
        self.secret = secret
        self.authority = StaffAuthority(config.staff, secret)
        self.tickets: dict[str, Ticket] = {}
        # (day, service): the highest number given out online (leases sit above it)
        self.last_number: dict[tuple[str, str], int] = defaultdict(int)
        self.issued_count: dict[tuple[str, str], int] = defaultdict(int)  # tickets, for caps
        self.leases: dict[tuple[str, str, str], list[LeaseBlock]] = {}  # (day, svc, kiosk)
        # (kiosk, rid of an `issue`) -> the live ticket that stands for it: the online
        # ticket issued for it, or, once handed over, the offline ticket printed instead.
        # Derived from the tickets (`reindex`), so a snapshot need not hold it.
        self.by_request: dict[tuple[str, str], str] = {}
        # kiosk -> {rid: the day it was handed over} of the requests it gave up on and
        # printed nothing for (`request.abandoned`), oldest first: refused if they come
        self.abandoned: dict[str, dict[str, str]] = {}
        self.terminals: dict[str, Terminal] = {
            name: Terminal(name, c.window) for name, c in config.counters.items()
        }
        # waiting tickets per (day, service), priority and ordinary, kept sorted
        self.queues: dict[tuple[str, str, bool], list[QueueEntry]] = defaultdict(list)
        self.person_history: dict[tuple[str, str], list[tuple[float, str]]] = defaultdict(list)
        self.service_time: dict[tuple[str, str], tuple[float, int]] = {}  # (day, svc) -> sum, n
        self.seq = 0
        self.cases = CaseBook()  # bad-rating follow-up (hall/cases.py)
        self.appointments = AppointmentBook()  # online bookings (hall/appointments.py)
        quotas = [s.quota.seconds for s in config.services.values() if s.quota]
        self.longest_quota_s = max(quotas, default=0)

    def reconfigure(self, config: SiteConfig) -> None:
        """Take a new configuration live: new windows, counters, services and staff.

        Terminals of counters no longer configured are kept until they are idle
        (their device is refused from now on), so no ticket is stranded.
        """
        self.config = config
        self.authority = StaffAuthority(config.staff, self.secret)
        for name, counter in config.counters.items():
            term = self.terminals.get(name)
            if term is None:
                self.terminals[name] = Terminal(name, counter.window)
            elif not term.current:
                term.window = counter.window
        for name in [n for n, t in self.terminals.items() if n not in config.counters]:
            if not self.terminals[name].current:
                del self.terminals[name]
        quotas = [s.quota.seconds for s in config.services.values() if s.quota]
        self.longest_quota_s = max(quotas, default=0)

    # ---- time -------------------------------------------------------------

    def day_of(self, now: float) -> str:
        return datetime.fromtimestamp(now, self.config.site.timezone).date().isoformat()

    def is_open(self, now: float) -> bool:
        local = datetime.fromtimestamp(now, self.config.site.timezone)
        if local.weekday() not in self.config.site.days:
            return False
        moment = local.time()
        return any(
            start <= moment and (end is None or moment < end)
            for start, end in self.config.site.hours
        )

    def day_ends_at(self, day: str) -> float:
        """When a day's waiting tickets expire: the end of its last opening span, plus
        `site.expire_after_minutes`, and never later than the day itself."""
        site = self.config.site
        date = datetime.fromisoformat(day).date()
        midnight = datetime.combine(date + timedelta(days=1), datetime.min.time(), site.timezone)
        ends = [end for _, end in site.hours]
        if None in ends or not ends:
            return midnight.timestamp()
        last = datetime.combine(date, max(e for e in ends if e is not None), site.timezone)
        return min(last.timestamp() + site.expire_after_s, midnight.timestamp())

    # ---- deciding ---------------------------------------------------------

    def handle(self, device: str, action: str, payload: Mapping[str, Any], now: float) -> Outcome:
        """Decide one request and apply its events. Refusals change nothing.

        The payload is decoded against the action's model (quhao.messages) once the
        device may ask it at all; anything that does not fit is `bad_request` naming the
        field. A `rid` is the service's business: the engine takes payloads without one."""
        try:
            role = self.config.device_role(device)
            if role is None:
                raise Refused("forbidden", f"{shown(device)} is not a device of this site")
            method = _HANDLERS.get(action)
            if method is None:
                raise Refused("unknown_action", f"no action {shown(action)}")
            # A rater (rater-W{n}, a window's touch screen) may rate, and nothing else.
            if role != ACTION_REQUESTS[action].role and (role, action) != ("rater", "rate"):
                raise Refused("forbidden", f"a {role} may not {action}")
            try:
                request = decode_request(action, payload, rid_required=False)
            except BadRequest as exc:
                raise Refused("bad_request", exc.message) from None
            response, events = method(self, device, request, now)
        except Refused as refusal:
            events = self._refusal_events(device, action, payload, refusal, now)
            for event in events:
                self.apply(event)
            return Outcome({}, events, refusal)
        for event in events:
            self.apply(event)
        return Outcome(response, events)

    def _refusal_events(
        self, device: str, action: str, payload: Mapping[str, Any], refusal: Refused, now: float
    ) -> list[Event]:
        # Quota and cap refusals are facts the report counts; nothing else is logged.
        if action == "issue" and refusal.code in ("quota_exceeded", "daily_cap_reached"):
            service = payload.get("service")
            return [
                Event(
                    "ticket.refused",
                    now,
                    {
                        "kiosk": device,
                        "service": service,
                        "reason": refusal.code,
                        "day": self.day_of(now),
                    },
                )
            ]
        return []

    def _given_up(self, device: str, rid: str | None) -> None:
        """Refuse a request the kiosk gave up on and has handed over, by an offline ticket
        printed instead or by its rid alone: paho's resend, after the handover."""
        if rid is None:
            return
        stands = self.tickets.get(self.by_request.get((device, rid), ""))
        if stands is not None and stands.offline:
            raise Refused(
                "superseded",
                f"given up by the kiosk: offline ticket {stands.number} was printed instead",
            )
        if rid in self.abandoned.get(device, {}):
            raise Refused("superseded", "given up by the kiosk, which printed nothing for it")

    def _issue(self, device: str, r: IssueRequest, now: float) -> Decided:
        self._given_up(device, r.rid)
        service = self._service(r.service)
        wanted = r.priority
        key = r.person.key if r.person else None
        age = r.person.age if r.person else None
        if r.person is None and service.id_required:
            raise Refused(
                "bad_request", f"service {service.id!r} needs a person (ID card or number)"
            )
        staff_id = None
        if r.override is not None:
            staff_id = self._proven_staff(r.override)
            if not self.config.staff[staff_id].can_override:
                raise Refused("forbidden", f"staff {staff_id} may not override the quota")
        if wanted == "green" and staff_id is None:
            raise Refused("forbidden", "the green channel needs a staff card or PIN at the kiosk")
        if not self.is_open(now):
            raise Refused("closed", "the hall does not issue tickets now")
        day = self.day_of(now)
        booking = self._booking(key, service.id, now, day)
        if booking is not None and wanted is None:
            wanted = "appointment"  # a booked citizen checks in, whatever key was pressed
        elif booking is None and wanted == "appointment":
            wanted = None  # the appointment key alone grants nothing (no booking open now)
        issued = self.issued_count.get((day, service.id), 0)
        if service.daily_cap is not None and issued >= service.daily_cap:
            raise Refused(
                "daily_cap_reached",
                f"{service.name}: all {service.daily_cap} numbers for today are issued",
            )
        if key is not None and service.quota is not None and staff_id is None and not booking:
            held = self._tickets_held(key, service.id, now, service.quota.seconds)
            if held >= service.quota.tickets:
                raise Refused(
                    "quota_exceeded",
                    f"{held} tickets for {service.name} within "
                    f"{service.quota.seconds // 60} minutes",
                )
        priority = self._priority(service, wanted, age)
        number = self._number(service, self._next_online(day, service.id))
        ticket_id = f"{day}/{number}"
        data = {
            "ticket": ticket_id,
            "day": day,
            "number": number,
            "service": service.id,
            "kiosk": device,
            "priority": priority,
            "person_key": key,
            "override_staff": staff_id,
            "seq": self.seq + 1,
        }
        if r.rid is not None:  # the request it answers: an offline ticket may supersede it
            data["rid"] = r.rid
        event = Event("ticket.issued", now, data)
        events = [event]
        if booking is not None and priority == "appointment":
            events.append(self.appointments.checked_in(booking, ticket_id, device, now))
        ahead = self._ahead(day, service.id, priority is not None)
        return {
            "ticket": {
                "id": ticket_id,
                "number": number,
                "service": service.id,
                "service_name": service.name,
                "issued_at": now,
                "ahead": ahead,
                "priority": priority,
                "override": staff_id is not None,
            }
        }, events

    def _number(self, service: Service, counter: int) -> str:
        return f"{service.prefix}{counter:0{self.config.rules.number_width}d}"

    # ---- offline issuing: leases, handover, release -----------------------

    def _lease(self, device: str, r: LeaseRequest, now: float) -> Decided:
        """Reserve a block of today's `service` for this kiosk alone, from the top down."""
        service = self._service(r.service)
        if service.id not in self.config.kiosks[device].services:
            raise Refused("forbidden", f"{device} does not issue {service.name}")
        size = self.config.devices.lease_numbers
        if size == 0:
            raise Refused("forbidden", "this hall does not issue offline ([devices] lease_numbers)")
        day = self.day_of(now)
        held = [b for b in self.leases.get((day, service.id, device), ()) if not b.released]
        if len(held) >= LEASE_BLOCKS_HELD:
            raise Refused("bad_state", f"{len(held)} leases of {service.id} held: release first")
        if service.daily_cap is not None:
            size = min(size, service.daily_cap - self.issued_count.get((day, service.id), 0))
            if size <= 0:
                raise Refused("daily_cap_reached", f"{service.name}: the daily cap is reached")
        block = self._lease_block(day, service.id, size)
        if block is None:
            raise Refused("daily_cap_reached", f"{service.name}: no numbers left today")
        first, last = block
        lease = {"day": day, "service": service.id, "first": first, "last": last}
        return {"lease": lease}, [Event("lease.granted", now, {"kiosk": device, **lease})]

    def _leased_blocks(self, day: str, service: str) -> list[tuple[int, int]]:
        """Every block ever leased of a day and service (any kiosk, released or not),
        sorted: numbers online issuing must skip and no new lease may take. (A scan of a
        few hundred keys at most: days kept × services × kiosks.)"""
        return sorted(
            (b.first, b.last)
            for (d, s, _), blocks in self.leases.items()
            if d == day and s == service
            for b in blocks
        )

    def _next_online(self, day: str, service: str) -> int:
        """The next online number: counting up from 001, over any leased block."""
        number = self.last_number.get((day, service), 0) + 1
        for first, last in self._leased_blocks(day, service):
            if first <= number <= last:
                number = last + 1
        return number

    def _lease_block(self, day: str, service: str, size: int) -> tuple[int, int] | None:
        """Up to `size` numbers just below the lowest block leased so far in the number
        band online issuing is in (band w: 1…10**w - 1; band d > w: 10**(d-1)…10**d - 1,
        where online numbers go once a busy day passes 10**w - 1), above every online
        number; the next band's top once that band has no room left. None: no room below
        MAX_NUMBER."""
        online = self.last_number.get((day, service), 0)
        width = self.config.rules.number_width
        band = max(width, len(str(online + 1)))
        leased = self._leased_blocks(day, service)
        while 10**band - 1 <= MAX_NUMBER:
            bottom = 1 if band == width else 10 ** (band - 1)
            lowest = min(
                (first for first, _ in leased if bottom <= first < 10**band), default=10**band
            )
            last = lowest - 1
            first = max(online + 1, bottom, last - size + 1)
            if first <= last:
                return first, last
            band += 1
        return None

    def _handover(self, device: str, r: HandoverRequest, now: float) -> Decided:
        """Offline tickets into the queue, each checked against this kiosk's lease.

        Each is decided alone: placed (by its issue time, as if issued live), already
        placed (the same rid: a repeat), or refused with an alert. Quota and cap breaches
        only the hall can see are alerts beside the ticket, which stands. A ticket printed
        because an `issue` went unanswered voids the online ticket the hall issued for that
        request if nobody has called it yet (`_superseded`): the citizen holds the offline
        one. A request handed over by its rid alone (`abandoned`: the kiosk printed nothing
        for it) voids it the same way (`_abandoned`). The appointment lane needs a booking
        the hall can see (`_booking`)."""
        placed: list[dict[str, Any]] = []
        refused: list[dict[str, Any]] = []
        batch: dict[str, str] = {}  # ticket id -> rid, of this request
        superseded: set[str] = set()  # online tickets this request voids
        # first: what they void no longer counts against the quota of the tickets placed
        abandoned, events = self._abandoned(device, r.abandoned, superseded, now)
        checked_in: set[str] = set()  # bookings this request checks in
        held: dict[tuple[str, str], int] = defaultdict(int)  # (key, service) in this request
        counted: dict[tuple[str, str], int] = defaultdict(int)  # (day, service) in it
        keys_needed_from = self.person_keys_expire_before(now)
        for t in r.tickets:
            try:
                ticket, new = self._offline_ticket(device, t, now, batch)
            except Refused as refusal:
                refused.append({"rid": t.rid, "code": refusal.code, "message": refusal.message})
                if refusal.code == "not_leased":
                    events.append(self._lease_breach(device, t, refusal.message, now))
                continue
            if not new:
                placed.append({**ticket, "placed": False})
                continue
            service = self.config.services[t.service]
            day = ticket["id"].split("/")[0]
            key = t.person.key if t.person and t.issued_at >= keys_needed_from else None
            age = t.person.age if t.person else None
            # 预约优先 only with a booking open for check-in when it was printed (checked in
            # by it now); a kiosk's word alone gives the lane the hall would give anyway.
            booking = self._booking(key, service.id, t.issued_at, day) if t.priority else None
            if booking is not None and booking.ref in checked_in:
                booking = None
            try:
                priority = self._priority(service, "appointment" if booking else None, age)
            except Refused:
                priority, booking = self._priority(service, None, age), None  # no such lane
            batch[ticket["id"]] = t.rid
            replaced = self._superseded(device, t, superseded)
            data = {
                "ticket": ticket["id"],
                "day": day,
                "number": ticket["number"],
                "service": service.id,
                "kiosk": device,
                "priority": priority,
                "person_key": key,
                "override_staff": None,
                "seq": self.seq + 1 + len(batch) - 1,
                "offline": True,
                "rid": t.rid,
                "handed_over_at": now,
            }
            if t.abandoned_rid is not None:
                data["abandoned_rid"] = t.abandoned_rid
            events.append(Event("ticket.issued", t.issued_at, data))
            if booking is not None:
                checked_in.add(booking.ref)
                events.append(self.appointments.checked_in(booking, ticket["id"], device, now))
            if replaced is not None and replaced.status == Status.WAITING:
                superseded.add(replaced.id)
                why = f"superseded by offline ticket {ticket['number']}"
                void = {"ticket": replaced.id, "kiosk": device, "reason": why}
                events.append(Event("ticket.voided", now, {**void, "superseded_by": ticket["id"]}))
            alert = {"ticket": ticket["id"], "number": ticket["number"], "service": service.id}
            alert["kiosk"] = device
            if key is not None and service.quota is not None and booking is None:
                before = held[(key, service.id)] + self._tickets_held(
                    key, service.id, t.issued_at, service.quota.seconds, superseded
                )
                held[(key, service.id)] += 1
                if before >= service.quota.tickets:
                    events.append(Event("alert.quota_breach", now, {**alert, "held": before}))
            counted[(day, service.id)] += 1
            if service.daily_cap is not None and (
                self.issued_count.get((day, service.id), 0) + counted[(day, service.id)]
                > service.daily_cap
            ):
                events.append(Event("alert.daily_cap_exceeded", now, alert))
            view = {**ticket, "placed": True}
            if replaced is not None:
                voided = replaced.id in superseded
                view["superseded"] = {
                    "id": replaced.id,
                    "number": replaced.number,
                    "voided": voided,
                }
            placed.append(view)
        return {"tickets": placed, "refused": refused, "abandoned": abandoned}, events

    def _abandoned(
        self, device: str, rids: list[str], voiding: set[str], now: float
    ) -> tuple[list[dict[str, Any]], list[Event]]:
        """Requests the kiosk gave up on and printed nothing for: each is remembered (it
        is refused `superseded` should it come), and the ticket issued for it, if still
        waiting, voided — quota given back, as for a ticket an offline one supersedes.

        Looked up under the sending kiosk's own name, as `_superseded`. A rid an offline
        ticket already stands for is left to it; one remembered already is not again."""
        views: list[dict[str, Any]] = []
        events: list[Event] = []
        known = self.abandoned.get(device, {})
        for rid in dict.fromkeys(rids):  # a repeat within the request is one
            view: dict[str, Any] = {"rid": rid}
            views.append(view)
            found = self.tickets.get(self.by_request.get((device, rid), ""))
            if found is not None and found.offline:
                continue
            if rid not in known:
                data = {"kiosk": device, "rid": rid, "day": self.day_of(now)}
                events.append(Event("request.abandoned", now, data))
            if found is None or found.kiosk != device:
                continue
            if found.status == Status.WAITING and found.id not in voiding:
                voiding.add(found.id)
                void = {"ticket": found.id, "kiosk": device, "reason": ABANDONED}
                events.append(Event("ticket.voided", now, void))
            voided = found.id in voiding or found.status == Status.VOIDED
            view["superseded"] = {"id": found.id, "number": found.number, "voided": voided}
        return views, events

    def _superseded(self, device: str, t: OfflineTicket, taken: set[str]) -> Ticket | None:
        """The online ticket this hall issued for the `issue` the kiosk gave up on before
        printing `t` (its answer was lost): voided by the handover if still waiting.

        Looked up under the sending kiosk's own name (the broker's, never the payload's),
        so a kiosk can only ever name its own requests. None: the hall never issued for
        it (the request may still come: `_issue` refuses it then), or it is superseded
        already."""
        if t.abandoned_rid is None:
            return None
        found = self.tickets.get(self.by_request.get((device, t.abandoned_rid), ""))
        if found is None or found.offline or found.kiosk != device or found.id in taken:
            return None
        return found

    def _offline_ticket(
        self, device: str, t: OfflineTicket, now: float, batch: Mapping[str, str]
    ) -> tuple[dict[str, Any], bool]:
        """The ticket id and number an offline ticket gets, and whether it is new."""
        service = self._service(t.service)
        if t.issued_at > now + OFFLINE_SKEW_S:
            raise Refused("bad_request", f"issued_at {t.issued_at:.0f} is in the future")
        day = self.day_of(t.issued_at)
        blocks = self.leases.get((day, service.id, device), ())
        if not any(t.number in block for block in blocks):
            raise Refused("not_leased", f"{service.id} {t.number} of {day} is not leased here")
        number = self._number(service, t.number)
        ticket_id = f"{day}/{number}"
        view = {"rid": t.rid, "id": ticket_id, "number": number}
        known = self.tickets.get(ticket_id)
        rid = known.rid if known is not None else batch.get(ticket_id)
        if rid is None and known is None:
            return view, True
        if rid == t.rid:
            return view, False
        raise Refused("not_leased", f"{number} of {day} was handed over as another ticket")

    def _lease_breach(self, device: str, t: OfflineTicket, why: str, now: float) -> Event:
        day = self.day_of(t.issued_at)
        return Event(
            "alert.lease_breach",
            now,
            {"kiosk": device, "day": day, "service": t.service, "number": t.number, "reason": why},
        )

    def _release_lease(self, device: str, r: ReleaseRequest, now: float) -> Decided:
        """Give up the unused numbers of this kiosk's lease for one day and service."""
        held = [b for b in self.leases.get((r.day, r.service, device), ()) if not b.released]
        if not held:
            return {"released": 0}, []
        used = {
            int(t.number[1:])
            for t in self.tickets.values()
            if t.offline and t.kiosk == device and t.day == r.day and t.origin_service == r.service
        }
        unused = sum(b.last - b.first + 1 - sum(1 for n in used if n in b) for b in held)
        data = {"kiosk": device, "day": r.day, "service": r.service, "unused": unused}
        return {"released": unused}, [Event("lease.released", now, data)]

    def _proven_staff(self, proof: StaffProof) -> str:
        """The staff member who proved presence at the device: card proof or id + PIN."""
        if proof.card is not None:
            staff_id = self.authority.by_card(proof.card)
            if staff_id is None:
                raise Refused("forbidden", "not a staff card of this site")
            return staff_id
        claimed, pin = proof.staff, proof.pin
        if claimed is None or pin is None:
            raise Refused("forbidden", "a typed staff number needs the staff PIN (or the card)")
        staff_id = self.authority.by_pin(claimed, pin)
        if staff_id is None:
            raise Refused("forbidden", "wrong staff number or PIN")
        return staff_id

    def _priority(self, service: Service, wanted: str | None, age: int | None) -> str | None:
        if wanted is not None:
            if wanted not in service.priorities:
                raise Refused("forbidden", f"{service.name} has no {wanted} lane")
            return wanted
        if (
            age is not None
            and age >= self.config.rules.elderly_age
            and "elderly" in service.priorities
        ):
            return "elderly"
        return None

    def _tickets_held(
        self, key: str, service: str, now: float, seconds: int, voiding: Set[str] = frozenset()
    ) -> int:
        # An archived ticket (no longer in `tickets`) was settled and not voided: archiving
        # drops voided tickets from the history. `voiding`: voided by the request at hand.
        return sum(
            1
            for at, tid in self.person_history.get((key, service), ())
            if now - at < seconds
            and tid not in voiding
            and ((ticket := self.tickets.get(tid)) is None or ticket.status != Status.VOIDED)
        )

    def _ahead(self, day: str, service: str, priority: bool) -> int:
        ahead = len(self.queues.get((day, service, True), ()))
        if not priority:
            ahead += len(self.queues.get((day, service, False), ()))
        return ahead

    def _void(self, device: str, r: VoidRequest, now: float) -> Decided:
        ticket = self._ticket(r.ticket, now)
        if ticket.kiosk != device:
            raise Refused("forbidden", "only the kiosk that issued a ticket may void it")
        if ticket.status == Status.VOIDED:
            return {"ticket": ticket.public()}, []
        if ticket.status != Status.WAITING:
            raise Refused("bad_state", f"ticket {ticket.number} is {ticket.status.value}")
        return {"ticket": {**ticket.public(), "status": "voided"}}, [
            Event("ticket.voided", now, {"ticket": ticket.id, "kiosk": device})
        ]

    def _call(self, device: str, r: CallRequest, now: float) -> Decided:
        term = self._open_terminal(device, now)
        events: list[Event] = []
        if r.expects:
            # The counter says which ticket it believes is current. If that is stale
            # (a doubled key press already called the next one), call nobody new.
            current = self.tickets[term.current].number if term.current else None
            if r.expect != current:
                return {"ticket": self._current_view(term), "changed": False}, []
        finished = term.current
        if term.current:
            events.append(self._finish_event(term, now))
        if not term.open:
            events.append(Event("terminal.login", now, {"terminal": device, "staff": None}))
        chosen = self._next_for(term, now)
        if chosen is None:
            return {"ticket": None, "changed": bool(events), "finished": finished}, events
        ticket, ordinary_waiting = chosen
        events.append(
            Event(
                "ticket.called",
                now,
                {
                    "ticket": ticket.id,
                    "terminal": device,
                    "window": term.window,
                    "staff": term.staff,
                    "ordinary_waiting": ordinary_waiting,
                },
            )
        )
        view = {**ticket.public(), "status": "called", "window": term.window}
        return {"ticket": view, "changed": True, "finished": finished}, events

    def _next_for(self, term: Terminal, now: float) -> tuple[Ticket, bool] | None:
        """The ticket this terminal calls next, and whether an ordinary one was waiting."""
        day = self.day_of(now)
        weights = self.config.windows[term.window].services

        def best(priority: bool) -> QueueEntry | None:
            top: tuple[float, float, float, str] | None = None
            for service, weight in weights.items():
                queue = self.queues.get((day, service, priority))
                if queue:
                    rank, tie, tid = queue[0]
                    score = (-(now - rank + 1.0) * weight, rank, tie, tid)
                    if top is None or score < top:
                        top = score
            return None if top is None else (top[1], top[2], top[3])

        ordinary, prioritised = best(False), best(True)
        if prioritised and (
            ordinary is None or term.priority_streak < self.config.rules.interleave
        ):
            return self.tickets[prioritised[2]], ordinary is not None
        if ordinary:
            return self.tickets[ordinary[2]], True
        return None

    def _recall(self, device: str, r: ActionRequest, now: float) -> Decided:
        term, ticket = self._serving(device)
        if ticket.recalls >= self.config.rules.max_recalls:
            event = Event(
                "ticket.skipped",
                now,
                {"ticket": ticket.id, "terminal": device, "reason": "recall_limit"},
            )
            return {"ticket": {**ticket.public(), "status": "skipped"}, "skipped": True}, [event]
        event = Event(
            "ticket.recalled", now, {"ticket": ticket.id, "terminal": device, "window": term.window}
        )
        return {"ticket": ticket.public(), "recalls": ticket.recalls + 1, "skipped": False}, [event]

    def _skip(self, device: str, r: ActionRequest, now: float) -> Decided:
        _, ticket = self._serving(device)
        event = Event(
            "ticket.skipped", now, {"ticket": ticket.id, "terminal": device, "reason": "no_show"}
        )
        return {"ticket": {**ticket.public(), "status": "skipped"}}, [event]

    def _finish(self, device: str, r: ActionRequest, now: float) -> Decided:
        term, ticket = self._serving(device)
        return {"ticket": {**ticket.public(), "status": "finished"}}, [
            self._finish_event(term, now)
        ]

    def _finish_event(self, term: Terminal, now: float) -> Event:
        return Event(
            "ticket.finished",
            now,
            {
                "ticket": term.current,
                "terminal": term.device,
                "window": term.window,
                "staff": term.staff,
            },
        )

    def _pause(self, device: str, r: ActionRequest, now: float) -> Decided:
        term = self._open_terminal(device, now, opening=False)
        if term.current:
            raise Refused("busy", "finish or skip the current ticket before pausing")
        if term.paused:
            return {"status": "paused"}, []
        return {"status": "paused"}, [Event("terminal.paused", now, {"terminal": device})]

    def _resume(self, device: str, r: ActionRequest, now: float) -> Decided:
        term = self.terminals[device]
        if not term.paused:
            return {"status": term.status}, []
        return {"status": "idle"}, [Event("terminal.resumed", now, {"terminal": device})]

    def _login(self, device: str, r: LoginRequest, now: float) -> Decided:
        if r.card is None and r.staff not in self.config.staff:
            raise Refused("unknown_staff", f"no staff {shown(r.staff)}")
        staff = self.config.staff[self._proven_staff(r)]
        term = self.terminals[device]
        if term.current:
            raise Refused("busy", "finish or skip the current ticket before changing clerk")
        return {"staff": {"id": staff.id, "name": staff.name}}, [
            Event("terminal.login", now, {"terminal": device, "staff": staff.id})
        ]

    def _logout(self, device: str, r: ActionRequest, now: float) -> Decided:
        term = self.terminals[device]
        if term.current:
            raise Refused("busy", "finish or skip the current ticket before logging out")
        if not term.open:
            return {"status": "closed"}, []
        return {"status": "closed"}, [Event("terminal.logout", now, {"terminal": device})]

    def _transfer(self, device: str, r: TransferRequest, now: float) -> Decided:
        term = self.terminals[device]
        target = self._service(r.service)
        ref = r.ticket
        if ref is None:
            if not term.current:
                raise Refused("no_ticket", "no ticket to transfer")
            ticket = self.tickets[term.current]
        else:
            ticket = self._ticket(ref, now)
            if ticket.id != term.current:
                raise Refused("bad_state", f"ticket {ticket.number} is not at this terminal")
        if target.id == ticket.service:
            raise Refused("bad_request", f"ticket {ticket.number} is already for {target.name}")
        event = Event(
            "ticket.transferred",
            now,
            {"ticket": ticket.id, "terminal": device, "from": ticket.service, "to": target.id},
        )
        ahead = self._ahead(ticket.queue_day, target.id, ticket.priority is not None)
        view = {**ticket.public(), "service": target.id, "status": "waiting", "window": None}
        return {"ticket": view, "ahead": ahead}, [event]

    def _reinstate(self, device: str, r: ReinstateRequest, now: float) -> Decided:
        term = self.terminals[device]
        ticket = self._ticket(r.ticket, now)
        if ticket.status != Status.SKIPPED:
            raise Refused(
                "bad_state", f"ticket {ticket.number} is {ticket.status.value}, not skipped"
            )
        if ticket.service not in self.config.windows[term.window].services:
            raise Refused("forbidden", f"window {term.window} does not serve {ticket.service}")
        queue = self.queues.get((ticket.queue_day, ticket.service, ticket.priority is not None), [])
        behind = self.config.rules.reinstate_behind
        if behind == 0 and queue:
            order = (queue[0][0], queue[0][1] - 0.5)
        elif len(queue) > 0 and behind <= len(queue):
            order = (queue[behind - 1][0], queue[behind - 1][1] + 0.5)
        elif queue:
            order = (max(queue[-1][0], now), queue[-1][1] + 0.5)
        else:
            order = (now, float(self.seq) + 0.5)
        position = sum(1 for entry in queue if entry[:2] < order)
        event = Event(
            "ticket.reinstated",
            now,
            {"ticket": ticket.id, "terminal": device, "order": list(order)},
        )
        return {
            "ticket": {**ticket.public(), "status": "waiting", "window": None},
            "ahead": position,
        }, [event]

    def _rate(self, device: str, r: RateRequest, now: float) -> Decided:
        # The window's counter (its rating pad) or the window's rater touch screen.
        window = self.config.rater_window(device)
        if window is None:
            window = self.terminals[device].window
        ticket = self._ticket(r.ticket, now)
        level = r.level
        reason = (r.reason or "").strip()
        if ticket.window != window or ticket.status != Status.FINISHED:
            raise Refused(
                "bad_state", f"ticket {ticket.number} was not finished at window {window}"
            )
        if ticket.rating_state != "none":
            return {"ticket": ticket.id, "level": ticket.rating, "changed": False}, []
        if level is not None and not 1 <= level <= 5:
            raise Refused("bad_request", "level must be 1 (非常不满意) to 5 (非常满意)")
        if level is not None and level <= 2 and not reason:
            raise Refused("reason_required", "不满意 and 非常不满意 need a reason for follow-up")
        data = {
            "ticket": ticket.id,
            "number": ticket.number,
            "level": level,
            "reason": reason,
            "window": ticket.window,
            "staff": ticket.staff,
            "service": ticket.service,
            "device": device,  # the channel: the pad's counter or the window's touch screen
        }
        events = [Event("ticket.rated", now, data)]
        if level is not None and level <= 2:
            events.append(Event("alert.bad_rating", now, dict(data)))
            events.append(
                self.cases.opening(data, now, self.config.site.timezone, self.config.cases)
            )
        return {"ticket": ticket.id, "level": level, "changed": True}, events

    # ---- online appointments (hall/appointments.py) -------------------------

    def _booking(self, key: str | None, service: str, now: float, day: str) -> Any:
        """The booking of this person and service open for check-in now, or None."""
        if key is None:
            return None
        try:
            return self.appointments.open_for(key, service, now, day, self.config.appointments)
        except Refused:
            return None

    def _appointment_import(self, device: str, r: AppointmentImportRequest, now: float) -> Decided:
        lanes = {sid: s.priorities for sid, s in self.config.services.items()}
        tz, rules = self.config.site.timezone, self.config.appointments
        return self.appointments.importing(r.bookings, lanes, tz, now, rules)

    def _checkin(self, device: str, r: CheckinRequest, now: float) -> Decided:
        """A card with no service chosen: the booked service's ticket, or why not."""
        self._given_up(device, r.rid)  # before the booking: it may be gone by now
        rules = self.config.appointments
        booking = self.appointments.open_for(r.person.key, None, now, self.day_of(now), rules)
        issue = IssueRequest(
            rid=r.rid, service=booking.service, person=r.person, priority="appointment"
        )
        response, events = self._issue(device, issue, now)
        return {**response, "slot": {"start": booking.start, "end": booking.end}}, events

    # ---- the office: follow-up cases (hall/cases.py) ------------------------

    def _case_update(self, device: str, r: CaseUpdateRequest, now: float) -> Decided:
        events = self.cases.update(r.case, r.state, self._proven_staff(r.by), r.note, now)
        return self._case_view(events)

    def _case_appeal(self, device: str, r: CaseAppealRequest, now: float) -> Decided:
        return self._case_view(self.cases.appeal(r.case, self._proven_staff(r.by), r.note, now))

    def _case_decide(self, device: str, r: CaseDecideRequest, now: float) -> Decided:
        staff = self._proven_staff(r.by)
        events = self.cases.decide(r.case, r.decision, staff, r.note, now, self.config.cases)
        return self._case_view(events)

    def _case_view(self, events: list[Event]) -> Decided:
        case = self.cases.cases[events[0].data["case"]]
        d = events[0].data
        state = d.get("state", case.state)
        appeal = {"case.appealed": "pending", "case.decided": d.get("decision")}.get(
            events[0].type, case.appeal
        )
        return {"case": {"id": case.id, "state": state, "appeal": appeal, "due": case.due_at}}, (
            events
        )

    # ---- helpers for deciding ---------------------------------------------

    def _service(self, service_id: str) -> Service:
        service = self.config.services.get(service_id)
        if service is None:
            raise Refused("unknown_service", f"no service {shown(service_id)}")
        return service

    def _ticket(self, ref: str, now: float) -> Ticket:
        ticket_id = ref if "/" in ref else f"{self.day_of(now)}/{ref}"
        ticket = self.tickets.get(ticket_id)
        if ticket is None:
            raise Refused("unknown_ticket", f"no ticket {shown(ref)}")
        return ticket

    def _open_terminal(self, device: str, now: float, opening: bool = True) -> Terminal:
        term = self.terminals[device]
        if term.paused and opening:
            raise Refused("paused", "resume before calling")
        if not term.open and self.config.rules.require_login:
            raise Refused("not_logged_in", "log in with a staff number first")
        return term

    def _serving(self, device: str) -> tuple[Terminal, Ticket]:
        term = self.terminals[device]
        if not term.current:
            raise Refused("no_ticket", "no ticket is being served here")
        return term, self.tickets[term.current]

    def _current_view(self, term: Terminal) -> dict[str, Any] | None:
        return self.tickets[term.current].public() if term.current else None

    def forget_person_keys(self, issued_before: float) -> int:
        """Forget in memory what the store erases: person keys of older tickets."""
        forgotten = 0
        for ticket in self.tickets.values():
            if ticket.person_key and ticket.issued_at < issued_before:
                ticket.person_key = None
                forgotten += 1
        for key in [k for k, history in self.person_history.items() if history]:
            history = self.person_history[key]
            history[:] = [(at, tid) for at, tid in history if at >= issued_before]
            if not history:
                del self.person_history[key]
        return forgotten

    def person_keys_expire_before(self, now: float) -> float:
        """Tickets issued before this time no longer need their person key: the end of
        the Nth day after their own day is past (`privacy.person_key_days`)."""
        tz = self.config.site.timezone
        today = datetime.fromtimestamp(now, tz).date()
        first_kept = today - timedelta(days=self.config.privacy.person_key_days)
        return datetime.combine(first_kept, datetime.min.time(), tz).timestamp()

    # ---- ticking ----------------------------------------------------------

    def tick(self, now: float) -> list[Event]:
        """Time-driven facts: the end of a day for tickets still waiting, the archiving of
        settled tickets of earlier days, and a waiting ticket passing its service's
        maximum wait."""
        day = self.day_of(now)
        events = self._day_end(day, now)
        for event in events:
            self.apply(event)
        archive = self._archive(day, now)
        for event in archive:
            self.apply(event)
        events += archive
        alerts: list[Event] = []
        for (queue_day, service_id, _), queue in self.queues.items():
            service = self.config.services.get(service_id)
            if queue_day != day or service is None:
                continue
            limit = service.max_wait_s
            for _rank, _tie, tid in queue:
                ticket = self.tickets[tid]
                if now - ticket.issued_at > limit and not ticket.wait_alerted:
                    alerts.append(
                        Event(
                            "alert.max_wait",
                            now,
                            {
                                "ticket": tid,
                                "number": ticket.number,
                                "service": service_id,
                                "waited_s": round(now - ticket.issued_at),
                            },
                        )
                    )
        alerts += self.cases.alerts(now)
        alerts += self.appointments.ticking(now, day, self.config.appointments)
        for event in alerts:
            self.apply(event)
        return events + alerts

    def _archive(self, today: str, now: float) -> list[Event]:
        """Once a day: settled tickets of the days before yesterday leave the live state.

        Nothing the rules decide needs them (their numbers and queues are past; the store
        keeps them for reports), and the live state — what a snapshot holds and start-up
        loads — stays one or two days of tickets however long the hall has run. Settled
        tickets of yesterday stay, so a rating or a reinstatement just after midnight still
        finds its ticket. Due whenever a day before yesterday still has a number counter."""
        before = (date.fromisoformat(today) - timedelta(days=ARCHIVE_AFTER_DAYS)).isoformat()
        if not any(day < before for day, _ in self.last_number):
            return []
        return [Event("tickets.archived", now, {"before": before})]

    def _day_end(self, today: str, now: float) -> list[Event]:
        """Waiting tickets of a day that has ended: expired, or carried into today."""
        carry = self.config.site.day_end == "carry_over"
        events: list[Event] = []
        for (queue_day, _service, _prio), queue in self.queues.items():
            if not queue:
                continue
            if carry:
                if queue_day < today:
                    events += [
                        Event("ticket.carried", now, {"ticket": tid, "to_day": today})
                        for _, _, tid in queue
                    ]
            elif queue_day < today or now >= self.day_ends_at(queue_day):
                events += [
                    Event("ticket.expired", now, {"ticket": tid, "reason": "day_end"})
                    for _, _, tid in queue
                ]
        return events

    # ---- applying ---------------------------------------------------------

    def apply(self, event: Event) -> None:
        handler = _APPLY.get(event.type)
        if handler is not None:
            handler(self, event)

    def _apply_case(self, e: Event) -> None:
        self.cases.apply(e)

    def _apply_appointment(self, e: Event) -> None:
        self.appointments.apply(e)

    def _enqueue(self, ticket: Ticket) -> None:
        bisect.insort(
            self.queues[(ticket.queue_day, ticket.service, ticket.priority is not None)],
            (*ticket.order, ticket.id),
        )

    def _dequeue(self, ticket: Ticket) -> None:
        queue = self.queues[(ticket.queue_day, ticket.service, ticket.priority is not None)]
        entry = (*ticket.order, ticket.id)
        index = bisect.bisect_left(queue, entry)
        if index < len(queue) and queue[index] == entry:
            queue.pop(index)

    def _apply_issued(self, e: Event) -> None:
        d = e.data
        self.seq = max(self.seq, d["seq"])
        ticket = Ticket(
            id=d["ticket"],
            day=d["day"],
            number=d["number"],
            origin_service=d["service"],
            service=d["service"],
            issued_at=e.at,
            kiosk=d["kiosk"],
            priority=d["priority"],
            person_key=d.get("person_key"),  # erased once no quota window needs it
            override_staff=d["override_staff"],
            order=(e.at, float(d["seq"])),
            queue_day=d["day"],
            offline=d.get("offline", False),
            rid=d.get("rid"),
            abandoned_rid=d.get("abandoned_rid"),
        )
        self.tickets[ticket.id] = ticket
        self._index(ticket)
        key = (ticket.day, ticket.service)
        if not ticket.offline:  # an offline ticket's number is in a lease, above these
            self.last_number[key] = max(self.last_number[key], int(ticket.number[1:]))
        self.issued_count[key] += 1
        if ticket.person_key:
            history = self.person_history[(ticket.person_key, ticket.service)]
            bisect.insort(history, (e.at, ticket.id))  # an offline ticket comes in late
            while history and e.at - history[0][0] >= self.longest_quota_s:
                history.pop(0)  # forget what no quota window can see any more
        self._enqueue(ticket)

    def _index(self, ticket: Ticket) -> None:
        """`by_request` for a ticket: an online ticket stands for its own `issue`; an
        offline one for the `issue` it was printed instead of, in place of the online
        ticket the hall issued for it (if any), and never replaced in turn."""
        if ticket.offline:
            key = (ticket.kiosk, ticket.abandoned_rid) if ticket.abandoned_rid else None
        else:
            key = (ticket.kiosk, ticket.rid) if ticket.rid else None
        if key is None:
            return
        known = self.tickets.get(self.by_request.get(key, ""))
        if known is None or not known.offline:
            self.by_request[key] = ticket.id

    def reindex(self) -> None:
        """Rebuild what is derived from the tickets (a restored snapshot holds only them):
        online tickets first, as the offline tickets that supersede them came later."""
        self.by_request = {}
        for ticket in sorted(self.tickets.values(), key=lambda t: t.offline):
            self._index(ticket)

    def _apply_called(self, e: Event) -> None:
        ticket = self.tickets[e.data["ticket"]]
        term = self.terminals[e.data["terminal"]]
        self._dequeue(ticket)
        ticket.status = Status.CALLED
        ticket.terminal, ticket.window, ticket.staff = term.device, term.window, term.staff
        ticket.first_called_at = ticket.first_called_at or e.at
        ticket.called_at = e.at
        term.current, term.since, term.open = ticket.id, e.at, True
        term.priority_streak = term.priority_streak + 1 if ticket.priority else 0

    def _release(self, e: Event) -> Ticket:
        ticket = self.tickets[e.data["ticket"]]
        term = self.terminals.get(e.data.get("terminal", ""))
        if term and term.current == ticket.id:
            term.current, term.since = None, e.at
        return ticket

    def _apply_finished(self, e: Event) -> None:
        ticket = self._release(e)
        ticket.status, ticket.finished_at = Status.FINISHED, e.at
        if ticket.called_at is not None:
            key = (ticket.day, ticket.service)
            total, count = self.service_time.get(key, (0.0, 0))
            self.service_time[key] = (total + e.at - ticket.called_at, count + 1)

    def _apply_skipped(self, e: Event) -> None:
        self._release(e).status = Status.SKIPPED

    def _apply_recalled(self, e: Event) -> None:
        ticket = self.tickets[e.data["ticket"]]
        ticket.recalls += 1
        ticket.called_at = e.at

    def _apply_transferred(self, e: Event) -> None:
        ticket = self._release(e)
        ticket.path.append(ticket.service)
        ticket.service = e.data["to"]
        ticket.status, ticket.window, ticket.terminal = Status.WAITING, None, None
        ticket.order = (ticket.issued_at, ticket.order[1])  # keeps its original issue time
        self._enqueue(ticket)

    def _apply_reinstated(self, e: Event) -> None:
        ticket = self.tickets[e.data["ticket"]]
        ticket.status, ticket.window, ticket.terminal = Status.WAITING, None, None
        ticket.order = (float(e.data["order"][0]), float(e.data["order"][1]))
        self._enqueue(ticket)

    def _apply_voided(self, e: Event) -> None:
        ticket = self.tickets[e.data["ticket"]]
        self._dequeue(ticket)
        ticket.status = Status.VOIDED

    def _apply_expired(self, e: Event) -> None:
        ticket = self.tickets[e.data["ticket"]]
        self._dequeue(ticket)
        ticket.status = Status.EXPIRED

    def _apply_carried(self, e: Event) -> None:
        ticket = self.tickets[e.data["ticket"]]
        self._dequeue(ticket)
        ticket.queue_day = e.data["to_day"]
        self._enqueue(ticket)

    def _apply_rated(self, e: Event) -> None:
        ticket = self.tickets[e.data["ticket"]]
        ticket.rating = e.data["level"]
        ticket.rating_state = "unrated" if e.data["level"] is None else "rated"
        ticket.rating_reason = e.data.get("reason", "")

    def _apply_archived(self, e: Event) -> None:
        """Drop what only days before `before` needed: settled tickets, number counters,
        service times, empty queues, and quota history no window can see any more.
        Offline tickets stay as long as their lease (a week): a handover repeated after
        its answer was lost must still find them, or they would be placed twice."""
        before = e.data["before"]
        kept = (date.fromisoformat(before) - timedelta(days=LEASES_KEPT_DAYS)).isoformat()
        for ticket in [
            t
            for t in self.tickets.values()
            if t.queue_day < before and t.status in SETTLED and not (t.offline and t.day >= kept)
        ]:
            del self.tickets[ticket.id]
            for rid in (ticket.rid, ticket.abandoned_rid):
                if rid is not None and self.by_request.get((ticket.kiosk, rid)) == ticket.id:
                    del self.by_request[(ticket.kiosk, rid)]
            if ticket.status == Status.VOIDED and ticket.person_key:
                history = self.person_history.get((ticket.person_key, ticket.origin_service))
                if history and (ticket.issued_at, ticket.id) in history:
                    history.remove((ticket.issued_at, ticket.id))
        for key in [k for k in self.last_number if k[0] < before]:
            del self.last_number[key]
        for key in [k for k in self.issued_count if k[0] < before]:
            del self.issued_count[key]
        # A kiosk cut off for days still hands over what it printed: leases stay a week.
        for lease in [k for k in self.leases if k[0] < kept]:
            del self.leases[lease]
        for key in [k for k in self.service_time if k[0] < before]:
            del self.service_time[key]
        # Given-up requests as long as offline tickets: a week (a kiosk's queued resend
        # comes when it reconnects, far sooner; the hall's answers are kept two days).
        for kiosk, rids in list(self.abandoned.items()):
            for rid in [rid for rid, day in rids.items() if day < kept]:
                del rids[rid]
            if not rids:
                del self.abandoned[kiosk]
        for qkey in [k for k, queue in self.queues.items() if k[0] < before and not queue]:
            del self.queues[qkey]
        for hkey, history in list(self.person_history.items()):
            history[:] = [(at, tid) for at, tid in history if e.at - at < self.longest_quota_s]
            if not history:
                del self.person_history[hkey]
        self.cases.archive(e.at, self.config.cases.keep_days)

    def _apply_abandoned(self, e: Event) -> None:
        kept = self.abandoned.setdefault(e.data["kiosk"], {})
        kept[e.data["rid"]] = e.data["day"]
        while len(kept) > ABANDONED_KEPT:
            del kept[next(iter(kept))]  # the oldest

    def _apply_lease_granted(self, e: Event) -> None:
        d = e.data
        self.leases.setdefault((d["day"], d["service"], d["kiosk"]), []).append(
            LeaseBlock(d["first"], d["last"])
        )
        key = (d["day"], d["service"])
        self.last_number.setdefault(key, 0)  # the day is known (archived with the rest)

    def _apply_lease_released(self, e: Event) -> None:
        d = e.data
        for block in self.leases.get((d["day"], d["service"], d["kiosk"]), ()):
            block.released = True

    def _apply_alert(self, e: Event) -> None:
        """An alert is a fact for people (the report, the log); the queue is unchanged."""

    def _apply_max_wait(self, e: Event) -> None:
        self.tickets[e.data["ticket"]].wait_alerted = True

    def _apply_login(self, e: Event) -> None:
        term = self.terminals[e.data["terminal"]]
        term.open, term.staff, term.since = True, e.data["staff"], e.at

    def _apply_logout(self, e: Event) -> None:
        term = self.terminals[e.data["terminal"]]
        term.open, term.staff, term.paused, term.since = False, None, False, e.at
        term.priority_streak = 0

    def _apply_paused(self, e: Event) -> None:
        term = self.terminals[e.data["terminal"]]
        term.paused, term.open, term.since = True, True, e.at

    def _apply_resumed(self, e: Event) -> None:
        term = self.terminals[e.data["terminal"]]
        term.paused, term.since = False, e.at


Handler = Callable[[Engine, str, Any, float], Decided]

# One handler per action of the contract; which role may ask it is the request model's.
_HANDLERS: dict[str, Handler] = {
    "issue": Engine._issue,
    "void": Engine._void,
    "lease": Engine._lease,
    "handover": Engine._handover,
    "release": Engine._release_lease,
    "call": Engine._call,
    "recall": Engine._recall,
    "skip": Engine._skip,
    "finish": Engine._finish,
    "pause": Engine._pause,
    "resume": Engine._resume,
    "login": Engine._login,
    "logout": Engine._logout,
    "transfer": Engine._transfer,
    "reinstate": Engine._reinstate,
    "rate": Engine._rate,
    "case_update": Engine._case_update,
    "appointment_import": Engine._appointment_import,
    "checkin": Engine._checkin,
    "case_appeal": Engine._case_appeal,
    "case_decide": Engine._case_decide,
}
ACTIONS = tuple(_HANDLERS)

_APPLY = {
    "ticket.issued": Engine._apply_issued,
    "ticket.called": Engine._apply_called,
    "ticket.recalled": Engine._apply_recalled,
    "ticket.skipped": Engine._apply_skipped,
    "ticket.finished": Engine._apply_finished,
    "ticket.transferred": Engine._apply_transferred,
    "ticket.reinstated": Engine._apply_reinstated,
    "ticket.voided": Engine._apply_voided,
    "ticket.expired": Engine._apply_expired,
    "ticket.carried": Engine._apply_carried,
    "ticket.rated": Engine._apply_rated,
    "tickets.archived": Engine._apply_archived,
    "alert.max_wait": Engine._apply_max_wait,
    "terminal.login": Engine._apply_login,
    "terminal.logout": Engine._apply_logout,
    "terminal.paused": Engine._apply_paused,
    "terminal.resumed": Engine._apply_resumed,
    "lease.granted": Engine._apply_lease_granted,
    "lease.released": Engine._apply_lease_released,
    "request.abandoned": Engine._apply_abandoned,
    "alert.quota_breach": Engine._apply_alert,
    "alert.daily_cap_exceeded": Engine._apply_alert,
    "alert.lease_breach": Engine._apply_alert,
    **dict.fromkeys(CASE_EVENTS, Engine._apply_case),
    **dict.fromkeys(APPOINTMENT_EVENTS, Engine._apply_appointment),
}
