"""Offline issuing at a kiosk: its lease book (kiosk/lease.py) kept on disk
(kiosk/offline_store.py), and the next request of the lease protocol to send.

Thin: every decision is `Leases`'s; this writes each one to the store first (a number is
on disk before it prints, a grant before a number of it is used, a release before it is
sent, a request given up with nothing printed for it before the citizen is told) and only
then changes the book. The kiosk's owner loop is its only user.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from kiosk.lease import ABANDONED_KEPT_S, Block, Leases, Printed, Refusal, day_of, new_rid
from kiosk.offline_store import OfflineStore
from quhao import messages
from quhao.config import SiteConfig
from quhao.wire import MAX_PAYLOAD_BYTES, encode

# Room a request leaves for the rid its sender stamps on it (a 32-digit hex) and more.
RID_ROOM_BYTES = 200

log = logging.getLogger("quhao.kiosk")


class OfflineBook:
    def __init__(self, config: SiteConfig, store: OfflineStore) -> None:
        self.config, self.store = config, store
        self.leases = Leases(config, store.blocks(), store.printed(), store.abandoned())

    # ---- tickets ------------------------------------------------------------

    def issue(
        self,
        service: str,
        person: tuple[str, int | None] | None,
        appointment: bool,
        override: bool,
        now: float,
        abandoned_rid: str | None = None,
    ) -> Printed | Refusal:
        """An offline ticket recorded on disk (print it now), or why not. `abandoned_rid`:
        the `issue` the hall did not answer, handed over with the ticket (the hall may have
        issued a ticket for it after all: it voids that one) — or alone, if no ticket is
        printed for it."""
        key, age = person if person else (None, None)
        decided = self.leases.take(
            self.config.services[service], key, age, appointment, override, now, abandoned_rid
        )
        if isinstance(decided, Printed):
            self.store.record(decided)  # on disk before it prints
            self.leases.record(decided)
        elif abandoned_rid is not None:
            self.abandon(abandoned_rid, now)
        return decided

    def abandon(self, rid: str, now: float) -> None:
        """A request given up with nothing printed for it: on disk before the citizen is
        told, handed over by its rid alone (the hall voids what it issued for it). One a
        ticket to hand over names already goes with that ticket."""
        if any(
            p.abandoned_rid == rid and p.state != "voided" for p in self.leases.printed.values()
        ):
            return
        self.store.abandon(rid, now)
        self.leases.abandon(rid, now)

    def quota_before_online(
        self, service: str, person_key: str | None, now: float
    ) -> Refusal | None:
        """Refused here, before asking the hall, if offline tickets it has not seen yet
        already fill the person's quota."""
        return self.leases.quota_before_online(self.config.services[service], person_key, now)

    def priority(self, printed: Printed) -> str | None:
        return self.leases.priority(self.config.services[printed.service], printed)

    def voided(self, rid: str) -> None:
        """It did not print: never handed over (its number stays used); the request it
        was printed instead of is given up alone now."""
        printed = self.leases.printed[rid]
        given_up = printed.abandoned_rid
        abandoned = (given_up, printed.issued_at) if given_up is not None else None
        self.store.void(rid, abandoned)
        self.leases.set_state(rid, "voided")
        if abandoned is not None:
            self.leases.abandon(*abandoned)

    def online(self, service: str, person: tuple[str, int | None] | None, now: float) -> None:
        """A ticket the hall issued and this kiosk printed: kept for the quota offline."""
        if person is None:
            return
        printed = Printed(new_rid(), day_of(self.config, now), service, None, now, *person, None)
        self.store.record(printed)
        self.leases.record(printed)

    def left(self, now: float, services: tuple[str, ...]) -> dict[str, int]:
        today = day_of(self.config, now)
        return {s: self.leases.left(today, s) for s in services}

    def to_hand_over(self) -> int:
        return sum(1 for p in self.leases.printed.values() if p.state == "issued")

    def given_up(self) -> int:
        """Requests given up with nothing printed for them, not yet told to the hall."""
        return len(self.leases.abandoned)

    # ---- the lease protocol -------------------------------------------------

    def next_request(self, now: float, services: tuple[str, ...]) -> messages.ActionRequest | None:
        """What to ask the hall next: hand over, then release, then a new lease."""
        today = day_of(self.config, now)
        tickets = [_wire(p) for p in self.leases.to_hand_over(messages.MAX_HANDOVER)]
        abandoned = self.leases.abandoned_to_hand_over(messages.MAX_ABANDONED)
        if tickets or abandoned:
            return _handover(tickets, abandoned)
        done = self.leases.to_release(today)
        if done is not None:
            day, service = done
            self.store.set_blocks(day, service, "releasing", only="held")  # never drawn again
            self.leases.block_state(day, service, "releasing", only="held")
            return messages.ReleaseRequest(day=day, service=service)
        wanted = self.leases.wants_lease(today, services)
        if wanted is not None and self.config.devices.lease_numbers:
            return messages.LeaseRequest(service=wanted)
        return None

    def answered(
        self, request: messages.ActionRequest, response: dict[str, Any], now: float
    ) -> bool:
        """Take the hall's answer; False if the same request is not worth sending again
        soon (refused for good)."""
        if isinstance(request, messages.HandoverRequest):
            return self._handed_over(request, response)
        if isinstance(request, messages.ReleaseRequest):
            if response.get("ok") or response.get("error", {}).get("code") == "bad_request":
                self.store.set_blocks(request.day, request.service, "released")
                self.leases.block_state(request.day, request.service, "released")
            return bool(response.get("ok"))
        assert isinstance(request, messages.LeaseRequest)
        if response.get("ok"):
            lease = response["lease"]
            block = Block(lease["day"], lease["service"], lease["first"], lease["last"])
            self.store.grant(block)  # on disk before a number of it is used
            self.leases.granted(block)
            log.info("lease of %s %d-%d for %s", block.service, block.first, block.last, block.day)
            return True
        code = response.get("error", {}).get("code")
        if code == "bad_state":  # the hall holds leases this kiosk lost track of: release
            today = day_of(self.config, now)
            self.leases.blocks.append(Block(today, request.service, 0, 0, "releasing"))
        log.info("no lease of %s: %s", request.service, response.get("error"))
        return False

    def _handed_over(self, request: messages.HandoverRequest, response: dict[str, Any]) -> bool:
        if not response.get("ok"):
            log.warning("handover refused: %s", response.get("error"))
            return False
        for item in response.get("abandoned", []):
            if superseded := item.get("superseded"):
                log.warning(
                    "the hall had issued %s for a request given up here: %s",
                    superseded.get("number"),
                    "voided" if superseded.get("voided") else "it had been called: it stands",
                )
        self.store.acknowledged(list(request.abandoned))  # the hall remembers them now
        self.leases.acknowledged(request.abandoned)
        placed = [t["rid"] for t in response.get("tickets", [])]
        for t in response.get("tickets", []):
            if superseded := t.get("superseded"):  # the hall had got the abandoned issue
                log.warning(
                    "offline ticket %s stands for the issue whose answer was lost: the hall's "
                    "%s %s",
                    t["number"],
                    superseded.get("number"),
                    "voided" if superseded.get("voided") else "had been called: it stands",
                )
        refused = response.get("refused", [])
        for item in refused:
            log.error("offline ticket %s refused by the hall: %s", item["rid"], item["message"])
        done = placed + [r["rid"] for r in refused]
        self.store.set_state(done, "handed")
        for rid in done:
            if rid in self.leases.printed:
                self.leases.set_state(rid, "handed")
        return True

    # ---- retention ----------------------------------------------------------

    def forget(self, now: float) -> None:
        """The hall's retention rule, for this kiosk's record."""
        tz = self.config.site.timezone
        today = datetime.fromtimestamp(now, tz).date()
        first_kept = today - timedelta(days=self.config.privacy.person_key_days)
        before = datetime.combine(first_kept, datetime.min.time(), tz).timestamp()
        self.store.forget(before, first_kept.isoformat(), now - ABANDONED_KEPT_S)
        self.leases.forget(before)
        self.leases.forget_abandoned(now - ABANDONED_KEPT_S)


def _handover(
    tickets: list[messages.OfflineTicket], abandoned: list[str]
) -> messages.HandoverRequest:
    """As many of them as the hall takes in one request (MAX_PAYLOAD_BYTES): tickets
    first, the oldest first; the rest go with the next."""
    room = MAX_PAYLOAD_BYTES - RID_ROOM_BYTES - len(encode(messages.encode(_EMPTY)))
    taken_tickets: list[messages.OfflineTicket] = []
    taken_rids: list[str] = []
    for ticket in tickets:
        room -= len(encode(messages.encode(ticket))) + 1  # and a comma
        if room < 0:
            break
        taken_tickets.append(ticket)
    for rid in abandoned:
        room -= len(encode(rid)) + 1
        if room < 0:
            break
        taken_rids.append(rid)
    return messages.HandoverRequest(tickets=taken_tickets, abandoned=taken_rids)


_EMPTY = messages.HandoverRequest(tickets=[], abandoned=[])


def _wire(p: Printed) -> messages.OfflineTicket:
    person = messages.Person(key=p.person_key, age=p.age) if p.person_key else None
    fields: dict[str, Any] = {}
    if p.priority == "appointment":
        fields["priority"] = "appointment"
    if p.abandoned_rid is not None:
        fields["abandoned_rid"] = p.abandoned_rid
    assert p.number is not None
    return messages.OfflineTicket(
        rid=p.rid,
        service=p.service,
        number=p.number,
        issued_at=p.issued_at,
        person=person,
        **fields,
    )
