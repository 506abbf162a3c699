"""The kiosk's conversation with a citizen. Pure: what happened in, what to do out.

A ticket needs a service and a person, in either order: swipe first or key
first. Each waits `timeout_s`; then it is forgotten. A kiosk with one service
needs no key.

A staff member with the override right may authorise the next ticket beyond the
quota, before the citizen's card: with their staff card at the kiosk's reader, or
with their staff number and PIN on the keypad. The authorisation is a `StaffProof`
that goes to the hall with the ticket request; the hall checks it and records the
staff id. After an authorisation the green key puts that ticket in the green
channel (绿色通道), which the hall grants only with a proof.

A card with no service chosen (at a kiosk of several services, without a staff
authorisation) is first a check-in (网上预约): an `Issue` with `checkin` set, which the
hall answers with the booked service's ticket or a refusal; refused, the daemon `hold`s
the person for the normal service choice. The appointment key grants nothing by itself:
the hall gives the appointment lane to a booking, never to a key.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kiosk.person import Person


@dataclass(frozen=True)
class StaffProof:
    """How a staff member proved presence at this kiosk: one of a card proof
    (HMAC of the card UID with the site secret) or the PIN they typed. Neither
    the card's UID nor the PIN is in a `repr`."""

    staff: str  # who, as this kiosk recognised them: for logs and the screen
    card: str = field(default="", repr=False)
    pin: str = field(default="", repr=False)

    def wire(self) -> dict[str, str]:
        """The `override` of an `issue` request."""
        if self.card:
            return {"card": self.card}
        return {"staff": self.staff, "pin": self.pin}

    @property
    def by(self) -> str:
        return "card" if self.card else "pin"


@dataclass(frozen=True)
class Issue:
    service: str
    person: Person
    override: StaffProof | None
    priority: str | None = None  # "green" by staff (the appointment lane is the hall's)
    checkin: bool = False  # no service: the hall gives the booked one's ticket, or refuses


class KioskFlow:
    def __init__(self, services: tuple[str, ...], timeout_s: float = 30.0) -> None:
        self.services = services
        self.timeout_s = timeout_s
        self.service: str | None = None
        self.person: Person | None = None
        self.override: StaffProof | None = None
        self.appointment = False
        self.green = False
        self.deadline = 0.0

    def choose(self, service: str, now: float) -> Issue | None:
        if service not in self.services:
            return None
        self.service, self.deadline = service, now + self.timeout_s
        return self._ready()

    def present(self, person: Person, now: float) -> Issue | None:
        self.person, self.deadline = person, now + self.timeout_s
        if self.service is None and len(self.services) == 1:
            self.service = self.services[0]
        if self.service is None and self.override is None and not self.green:
            self.person, self.appointment = None, False  # until the hall has answered
            return Issue("", person, None, checkin=True)
        return self._ready()

    def hold(self, person: Person, now: float) -> Issue | None:
        """A refused check-in: the person waits for a service key (or one came meanwhile)."""
        self.person, self.deadline = person, now + self.timeout_s
        return self._ready()

    def authorise(self, proof: StaffProof, now: float) -> None:
        """A staff member proved presence: the next ticket may go beyond the quota."""
        self.override, self.deadline = proof, now + self.timeout_s

    def choose_green(self, now: float) -> bool:
        """The green key: only after a staff authorisation. False if there was none."""
        if self.override is None:
            return False
        self.green, self.deadline = True, now + self.timeout_s
        return True

    def appoint(self, now: float) -> None:
        self.appointment, self.deadline = True, now + self.timeout_s

    def tick(self, now: float) -> bool:
        """Forget a half-finished request after the timeout. True if something was dropped."""
        pending = self.service or self.person or self.override or self.appointment
        if pending and now >= self.deadline:
            self.reset()
            return True
        return False

    def reset(self) -> None:
        self.service = self.person = self.override = None
        self.appointment = self.green = False

    @property
    def prompt(self) -> str:
        if self.override and not self.person:
            if self.green:
                return "已选绿色通道，请刷市民身份证或输入身份证号"
            return "工作人员已授权，请刷市民身份证（绿色通道请按绿色通道键）"
        if self.appointment and not self.person and not self.service:
            return "预约签到：请刷身份证或输入身份证号"
        if self.service and not self.person:
            return "请刷身份证或输入身份证号"
        if self.person and not self.service:
            return "请选择业务"
        return "请选择业务并刷身份证"

    def _ready(self) -> Issue | None:
        if self.service is None or self.person is None:
            return None
        priority = "green" if self.green else None
        issue = Issue(self.service, self.person, self.override, priority)
        self.reset()
        return issue
