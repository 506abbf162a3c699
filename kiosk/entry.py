"""The kiosk keypad's meaning. Pure: key events (and hall time) in, what was done out.

Citizens: digits (KEY_0…KEY_9 or keypad digits) and KEY_X type an ID number;
KEY_BACKSPACE deletes; KEY_ENTER submits; KEY_ESC clears; KEY_A marks an appointment
(预约) for the next ticket; KEY_F1…KEY_F12 pick the kiosk's services in order.

Staff: KEY_S, the staff number's digits, KEY_ENTER, the PIN's digits, KEY_ENTER
authorise one ticket beyond the quota (`StaffTyped`; the hall checks the PIN).
KEY_G after an authorisation puts that ticket in the green channel (绿色通道).
A staff entry left half-typed for `staff_timeout_s` (hall seconds) is dropped, so
later digits are a citizen's again. The PIN is held only here and in `StaffTyped`,
never in a `repr`. All keys are configurable in [keys.kiosk].
"""

from __future__ import annotations

from dataclasses import dataclass

from quhao.config import KioskKeys
from quhao.devices.inputevent import PRESS, KeyEvent

DIGITS = {
    **{f"KEY_{i}": str(i) for i in range(10)},
    **{f"KEY_KP{i}": str(i) for i in range(10)},
    "KEY_X": "X",
}
MAX_STAFF_DIGITS = 8
MAX_PIN_DIGITS = 12


@dataclass(frozen=True)
class ServiceChosen:
    service: str


@dataclass(frozen=True)
class NumberTyped:
    number: str

    def __repr__(self) -> str:
        return "NumberTyped(<withheld>)"


@dataclass(frozen=True)
class Cleared:
    pass


@dataclass(frozen=True)
class AppointmentChosen:
    """The citizen has an appointment (预约): the next ticket takes that lane."""


@dataclass(frozen=True)
class GreenChosen:
    """Staff asked for the green channel (绿色通道) for the authorised ticket."""


@dataclass(frozen=True)
class StaffStep:
    """The staff key sequence moved on; `stage` is what the keypad waits for now:
    "number" (the staff number) or "pin"."""

    stage: str


@dataclass(frozen=True)
class StaffTyped:
    """A staff number and PIN, typed and confirmed."""

    number: str
    pin: str

    def __repr__(self) -> str:
        return f"StaffTyped(number={self.number!r}, pin=<withheld>)"


Pressed = (
    ServiceChosen
    | NumberTyped
    | Cleared
    | AppointmentChosen
    | GreenChosen
    | StaffStep
    | StaffTyped
    | None
)


class IdEntry:
    def __init__(
        self, keys: KioskKeys, services: tuple[str, ...], staff_timeout_s: float = 30.0
    ) -> None:
        self.keys = keys
        self.service_keys = dict(zip(keys.services, services, strict=False))
        self.staff_timeout_s = staff_timeout_s
        self.typed = ""
        self.stage: str | None = None  # None: a citizen's keypad; "number" / "pin": staff
        self._staff = ""
        self._pin = ""
        self._deadline: float | None = None

    def __repr__(self) -> str:
        return f"IdEntry(stage={self.stage!r}, <typed digits withheld>)"

    def press(self, event: KeyEvent, now: float | None = None) -> Pressed:
        """One key event; `now` is hall time, for the staff entry's timeout (None: no
        timeout)."""
        if event.value != PRESS:
            return None
        self.tick(now)
        key = event.key
        if key in self.service_keys:
            return ServiceChosen(self.service_keys[key])
        if key == self.keys.cancel:
            self.typed = ""
            self._end_staff()
            return Cleared()
        if key == self.keys.staff:
            self.typed, self._staff, self._pin = "", "", ""
            self._begin("number", now)
            return StaffStep("number")
        if self.stage is not None:
            return self._staff_key(key, now)
        if key == self.keys.appointment:
            return AppointmentChosen()
        if key == self.keys.green:
            return GreenChosen()
        if key in DIGITS:
            if len(self.typed) < 18:
                self.typed += DIGITS[key]
            return None
        if key == self.keys.backspace:
            self.typed = self.typed[:-1]
            return None
        if key == self.keys.enter and self.typed:
            number, self.typed = self.typed, ""
            return NumberTyped(number)
        return None

    def tick(self, now: float | None) -> bool:
        """Drop a staff entry left half-typed. True if one was dropped."""
        if self.stage is None or now is None or self._deadline is None or now < self._deadline:
            return False
        self._end_staff()
        return True

    def _begin(self, stage: str, now: float | None) -> None:
        self.stage = stage
        self._deadline = None if now is None else now + self.staff_timeout_s

    def _staff_key(self, key: str, now: float | None) -> Pressed:
        pin = self.stage == "pin"
        typed = self._pin if pin else self._staff
        if DIGITS.get(key, "X") != "X":
            if len(typed) < (MAX_PIN_DIGITS if pin else MAX_STAFF_DIGITS):
                typed += DIGITS[key]
        elif key == self.keys.backspace:
            typed = typed[:-1]
        elif key == self.keys.enter and typed and not pin:
            self._begin("pin", now)
            return StaffStep("pin")
        elif key == self.keys.enter and typed:
            done = StaffTyped(self._staff, self._pin)
            self._end_staff()
            return done
        # anything else (the appointment or green key, KEY_X) means nothing here
        if pin:
            self._pin = typed
        else:
            self._staff = typed
        return None

    def _end_staff(self) -> None:
        self.stage, self._staff, self._pin, self._deadline = None, "", "", None
