"""What a kiosk may print while the hall does not answer, and what it did. Pure, sans-I/O.

The hall leases the kiosk blocks of a service's day (`lease`): numbers nobody else will
ever issue. `Leases` is the kiosk's view of them, rebuilt at start from its durable record
(kiosk/offline_store.py): the blocks it was granted and every ticket it printed. It
decides, never does: which number an offline ticket gets (in a block, always above every
number it ever recorded in that block, so a restart never reuses one), whether a person
is within the quota by this kiosk's own record, what to hand over (tickets, and requests
it gave up on with nothing printed for them) and release, when to ask for a new block.
The caller stores what it decides (before printing) and sends what it asks.
docs/architecture.md, "Offline issuing: the lease protocol", argues why no number can be
printed twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from quhao.config import Service, SiteConfig


@dataclass(frozen=True)
class Block:
    """Numbers first…last of a service's day, leased to this kiosk."""

    day: str
    service: str
    first: int
    last: int
    state: str = "held"  # held | releasing (never issued from again) | released

    @property
    def size(self) -> int:
        return self.last - self.first + 1


@dataclass(frozen=True)
class Printed:
    """A ticket this kiosk issued: online (for the quota) or offline (also to hand over)."""

    rid: str
    day: str
    service: str
    number: int | None  # offline: the lease number; online: None (the hall's number)
    issued_at: float
    person_key: str | None  # erased by the hall's retention rule
    age: int | None
    priority: str | None  # an offline ticket's wish: "appointment" or None
    state: str = "online"  # online | issued (offline, to hand over) | voided | handed
    # the rid of the `issue` the hall did not answer before this was printed offline: if
    # the hall got it after all, it voids (or refuses) that online ticket at handover
    abandoned_rid: str | None = None


# A given-up request the hall has not acknowledged after this long is dropped, so the
# record cannot grow for ever: the hall keeps a kiosk's leases a week (LEASES_KEPT_DAYS
# in hall/engine.py), and refuses the offline tickets of an outage that long ago too.
ABANDONED_KEPT_S = 7 * 86400


@dataclass(frozen=True)
class Refusal:
    code: str  # no_lease | quota_exceeded | closed | override
    message: str  # what the screen says


SCREEN = {
    "no_lease": "暂停服务：系统连接中断，本机离线号已用完",
    "quota_exceeded": "该证件本项业务取号已达上限",
    "closed": "当前不在取号时间",
    "override": "系统连接中断，暂不能办理工作人员授权取号",
}


def day_of(config: SiteConfig, now: float) -> str:
    return datetime.fromtimestamp(now, config.site.timezone).date().isoformat()


def site_open(config: SiteConfig, now: float) -> bool:
    """The hall's opening hours, as the hall's engine reads them."""
    local = datetime.fromtimestamp(now, config.site.timezone)
    if local.weekday() not in config.site.days:
        return False
    moment = local.time()
    return any(
        start <= moment and (end is None or moment < end) for start, end in config.site.hours
    )


def new_rid() -> str:
    return uuid.uuid4().hex


class Leases:
    def __init__(
        self,
        config: SiteConfig,
        blocks: Iterable[Block] = (),
        printed: Iterable[Printed] = (),
        abandoned: Iterable[tuple[str, float]] = (),
    ) -> None:
        self.config = config
        self.blocks: list[Block] = list(blocks)
        self.printed: dict[str, Printed] = {p.rid: p for p in printed}
        # rid -> when: requests given up with nothing printed for them, oldest first,
        # until the hall acknowledges them (it voids what it issued for one)
        self.abandoned: dict[str, float] = dict(abandoned)

    # ---- what the kiosk holds ----------------------------------------------

    def _used(self, day: str, service: str) -> set[int]:
        return {
            p.number
            for p in self.printed.values()
            if p.number is not None and p.day == day and p.service == service
        }

    def _free(self, day: str, service: str) -> list[tuple[int, int]]:
        """The free numbers of each held block (lowest, last), the highest block first.

        The hall leases from the top of the day's numbers downward, so a kiosk's older
        block is its higher one: it is used up first. Within a block a number is only
        taken above every number ever recorded in it, so a crash or restart between
        recording and printing only skips one."""
        used = self._used(day, service)
        free = []
        for b in self.blocks:
            if b.day != day or b.service != service or b.state != "held":
                continue
            floor = max((n for n in used if b.first <= n <= b.last), default=b.first - 1)
            if floor < b.last:
                free.append((floor + 1, b.last))
        return sorted(free, key=lambda run: -run[1])

    def _next(self, day: str, service: str) -> int | None:
        """The next free number of the held blocks, or None."""
        free = self._free(day, service)
        return free[0][0] if free else None

    def left(self, day: str, service: str) -> int:
        """Numbers still free in the held blocks of a day and service."""
        return sum(last - first + 1 for first, last in self._free(day, service))

    # ---- deciding an offline ticket ---------------------------------------

    def take(
        self,
        service: Service,
        person_key: str | None,
        age: int | None,
        appointment: bool,
        override: bool,
        now: float,
        abandoned_rid: str | None = None,
    ) -> Printed | Refusal:
        """An offline ticket, or why not. Store it durably before printing it."""
        if override:
            return Refusal("override", SCREEN["override"])
        if not site_open(self.config, now):
            return Refusal("closed", SCREEN["closed"])
        day = day_of(self.config, now)
        if person_key is not None and service.quota is not None:
            held = self.held(person_key, service.id, now, service.quota.seconds)
            if held >= service.quota.tickets:
                return Refusal("quota_exceeded", SCREEN["quota_exceeded"])
        number = self._next(day, service.id)
        if number is None:
            return Refusal("no_lease", SCREEN["no_lease"])
        priority = "appointment" if appointment and "appointment" in service.priorities else None
        return Printed(
            new_rid(),
            day,
            service.id,
            number,
            now,
            person_key,
            age,
            priority,
            "issued",
            abandoned_rid,
        )

    def quota_before_online(
        self, service: Service, person_key: str | None, now: float
    ) -> Refusal | None:
        """Before asking the hall: a person holding tickets this kiosk printed offline and
        has not handed over yet (the hall cannot count them) is held to the quota here."""
        if person_key is None or service.quota is None:
            return None
        pending = any(
            p.person_key == person_key and p.service == service.id and p.state == "issued"
            for p in self.printed.values()
        )
        if pending and self.held(person_key, service.id, now, service.quota.seconds) >= (
            service.quota.tickets
        ):
            return Refusal("quota_exceeded", SCREEN["quota_exceeded"])
        return None

    def held(self, person_key: str, service: str, now: float, seconds: int) -> int:
        """Tickets this kiosk printed for the person and service within the quota window."""
        return sum(
            1
            for p in self.printed.values()
            if p.person_key == person_key
            and p.service == service
            and p.state != "voided"
            and now - p.issued_at < seconds
        )

    def priority(self, service: Service, printed: Printed) -> str | None:
        """The lane the ticket shows: as the hall will decide it at handover."""
        if printed.priority:
            return printed.priority
        elderly = printed.age is not None and printed.age >= self.config.rules.elderly_age
        return "elderly" if elderly and "elderly" in service.priorities else None

    # ---- what happened (each also stored by the caller) -------------------

    def record(self, printed: Printed) -> None:
        self.printed[printed.rid] = printed
        if printed.abandoned_rid is not None:  # the ticket names it to the hall now
            self.abandoned.pop(printed.abandoned_rid, None)

    def abandon(self, rid: str, at: float) -> None:
        """A request given up with nothing printed for it (or its ticket voided)."""
        self.abandoned.setdefault(rid, at)

    def acknowledged(self, rids: Iterable[str]) -> None:
        for rid in rids:
            self.abandoned.pop(rid, None)

    def set_state(self, rid: str, state: str) -> Printed:
        self.printed[rid] = replace(self.printed[rid], state=state)
        return self.printed[rid]

    def granted(self, block: Block) -> None:
        if block not in self.blocks:
            self.blocks.append(block)

    def block_state(self, day: str, service: str, state: str, only: str | None = None) -> None:
        self.blocks = [
            replace(b, state=state)
            if b.day == day and b.service == service and (only is None or b.state == only)
            else b
            for b in self.blocks
        ]

    def forget(self, before: float) -> None:
        """Retention, by the hall's rule (`privacy.person_key_days`): tickets printed before
        `before` (days ago: their days' blocks are never drawn from again) are forgotten,
        but for one still to hand over, which only loses its person key; released blocks
        of those days too."""
        for rid, p in list(self.printed.items()):
            if p.issued_at < before:
                if p.state == "issued":
                    self.printed[rid] = replace(p, person_key=None)
                else:
                    del self.printed[rid]
        cutoff = day_of(self.config, before)
        self.blocks = [b for b in self.blocks if b.day >= cutoff or b.state != "released"]

    def forget_abandoned(self, before: float) -> None:
        """Given-up rids older than the hall takes them (see `ABANDONED_KEPT_S`)."""
        self.abandoned = {rid: at for rid, at in self.abandoned.items() if at >= before}

    # ---- what to ask the hall next ----------------------------------------

    def to_hand_over(self, limit: int) -> list[Printed]:
        issued = [p for p in self.printed.values() if p.state == "issued"]
        return sorted(issued, key=lambda p: p.issued_at)[:limit]

    def abandoned_to_hand_over(self, limit: int) -> list[str]:
        return list(self.abandoned)[:limit]

    def to_release(self, today: str) -> tuple[str, str] | None:
        """A (day, service) whose held blocks are done with: drawn from (every ticket of it
        handed over), or of a past day; or one whose release was not answered yet."""
        pending = {(p.day, p.service) for p in self.printed.values() if p.state == "issued"}
        for b in self.blocks:
            key = (b.day, b.service)
            if key in pending:
                continue
            if b.state == "releasing":
                return key
            if b.state == "held" and (b.day < today or self._drawn(b)):
                return key
        return None

    def _drawn(self, block: Block) -> bool:
        return any(block.first <= n <= block.last for n in self._used(block.day, block.service))

    def wants_lease(self, today: str, services: Iterable[str]) -> str | None:
        """A service whose stock for today is under half a block (none: no block yet)."""
        for service in services:
            held = [
                b
                for b in self.blocks
                if b.day == today and b.service == service and b.state == "held"
            ]
            size = max((b.size for b in held), default=0)
            if not held or self.left(today, service) * 2 < size:
                return service
        return None
