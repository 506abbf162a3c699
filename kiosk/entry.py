"""The kiosk keypad's meaning. Pure: key events in, what the citizen did out.

Digits (KEY_0…KEY_9 or keypad digits) and KEY_X type an ID number;
KEY_BACKSPACE deletes; KEY_ENTER submits; KEY_ESC clears; KEY_A marks an appointment
(预约) for the next ticket. KEY_F1…KEY_F12 pick

the kiosk's services in order (configurable in [keys.kiosk]).
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


class IdEntry:
    def __init__(self, keys: KioskKeys, services: tuple[str, ...]) -> None:
        self.keys = keys
        self.service_keys = dict(zip(keys.services, services, strict=False))
        self.typed = ""

    def press(
        self, event: KeyEvent
    ) -> ServiceChosen | NumberTyped | Cleared | AppointmentChosen | None:
        if event.value != PRESS:
            return None
        key = event.key
        if key in self.service_keys:
            return ServiceChosen(self.service_keys[key])
        if key == self.keys.appointment:
            return AppointmentChosen()
        if key in DIGITS:
            if len(self.typed) < 18:
                self.typed += DIGITS[key]
            return None
        if key == self.keys.backspace:
            self.typed = self.typed[:-1]
            return None
        if key == self.keys.cancel:
            self.typed = ""
            return Cleared()
        if key == self.keys.enter and self.typed:
            number, self.typed = self.typed, ""
            return NumberTyped(number)
        return None
