"""The kiosk's conversation with a citizen. Pure: what happened in, what to do out.

A ticket needs a service and a person, in either order: swipe first or key
first. Each waits `timeout_s`; then it is forgotten. A kiosk with one service
needs no key. A staff card with the override right, shown before the citizen's
card, lets the next ticket go beyond the quota; it is recorded with the staff id.
"""

from __future__ import annotations

from dataclasses import dataclass

from kiosk.person import Person


@dataclass(frozen=True)
class Issue:
    service: str
    person: Person
    override_staff: str | None
    priority: str | None = None  # "appointment" when the citizen said so


class KioskFlow:
    def __init__(self, services: tuple[str, ...], timeout_s: float = 30.0) -> None:
        self.services = services
        self.timeout_s = timeout_s
        self.service: str | None = None
        self.person: Person | None = None
        self.override: str | None = None
        self.appointment = False
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
        return self._ready()

    def authorise(self, staff_id: str, now: float) -> None:
        self.override, self.deadline = staff_id, now + self.timeout_s

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
        self.appointment = False

    @property
    def prompt(self) -> str:
        if self.override and not self.person:
            return "工作人员已授权，请刷市民身份证"
        if self.service and not self.person:
            return "请刷身份证或输入身份证号"
        if self.person and not self.service:
            return "请选择业务"
        return "请选择业务并刷身份证"

    def _ready(self) -> Issue | None:
        if self.service is None or self.person is None:
            return None
        issue = Issue(
            self.service, self.person, self.override, "appointment" if self.appointment else None
        )

        self.reset()
        return issue
