"""The caller keypad's meaning: key presses in, intents for the hall out. Pure.

Keys (defaults, configurable in [keys.caller]):
  call      KEY_KPENTER     call next — or, after digits, the next step of a login / a transfer
  recall    KEY_KPPLUS      call the current citizen again
  skip      KEY_KPMINUS     the citizen did not come
  finish    KEY_KPDOT       service done
  pause     KEY_KPASTERISK  pause / resume (暂停服务)
  transfer  KEY_KPSLASH     then the service number (its position in the site file) and call
  logout    KEY_NUMLOCK
  digits    KEY_KP0…KEY_KP9 (or KEY_0…KEY_9)

Logging in by keypad: staff number, call (→ `AskPin`: the LED asks for the PIN),
PIN digits, call (→ `Intent("login", number, pin=…)`). The PIN stage lasts
`pin_timeout_s` (30 s); any other action key in it cancels the login without doing
its action. The PIN is held only here and in the intent, never in a `repr`.

A key held down auto-repeats (value 2): ignored. The same action key pressed
again within `debounce_s` (0.15 s), with no other key between, is a bounce:
ignored. Call and recall are locked for `lockout_s` (1 s) after they were
pressed: a clerk's doubled press arrives after the LED has already changed, so
only a lockout keeps it from calling a second citizen (or recalling one into a
skip). Any other key is logged and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from quhao.config import CallerKeys
from quhao.devices.inputevent import PRESS, KeyEvent

DIGITS = {**{f"KEY_KP{i}": str(i) for i in range(10)}, **{f"KEY_{i}": str(i) for i in range(10)}}
MAX_DIGITS = 8
MAX_PIN_DIGITS = 12
LOCKED_ACTIONS = ("call", "recall")


@dataclass(frozen=True)
class Intent:
    action: str  # call recall skip finish pause resume transfer login logout
    argument: str = ""  # service number for transfer, staff number for login
    pin: str = field(default="", repr=False)  # login by keypad: the PIN typed
    card: str = field(default="", repr=False)  # login by staff card: its proof


@dataclass(frozen=True)
class AskPin:
    """A staff number was typed and confirmed: the keypad now waits for the PIN."""

    staff: str


@dataclass(frozen=True)
class Ignored:
    key: str
    why: str


class CallerKeypad:
    def __init__(
        self,
        keys: CallerKeys,
        debounce_s: float = 0.15,
        lockout_s: float = 1.0,
        pin_timeout_s: float = 30.0,
    ) -> None:
        self.keys = keys
        self.actions = {v: k for k, v in vars(keys).items()}
        self.debounce_s, self.lockout_s = debounce_s, lockout_s
        self.pin_timeout_s = pin_timeout_s
        self.digits = ""
        self.transferring = False
        self.paused = False  # believed state; the window state corrects it
        self._last: tuple[str, float] = ("", -1e9)
        self._login_staff: str | None = None  # the staff number whose PIN is being typed
        self._pin = ""
        self._pin_deadline = 0.0

    def __repr__(self) -> str:
        return f"CallerKeypad(paused={self.paused}, waiting_for_pin={self.waiting_for_pin})"

    @property
    def waiting_for_pin(self) -> bool:
        return self._login_staff is not None

    def press(self, event: KeyEvent, now: float) -> Intent | AskPin | Ignored | None:
        """One key event at monotonic time now. None: nothing to do (release, repeat)."""
        if event.value != PRESS:
            return None
        if self._login_staff is not None and now >= self._pin_deadline:
            self._cancel_login()  # the clerk walked away: these keys mean something else
        if event.key in DIGITS:  # typed numbers repeat digits on purpose: no debounce
            self._last = (event.key, now)  # a key between two presses: neither is a bounce
            if self._login_staff is not None:
                if len(self._pin) >= MAX_PIN_DIGITS:
                    return Ignored(event.key, "too many digits")
                self._pin += DIGITS[event.key]
                return None
            if len(self.digits) >= MAX_DIGITS:
                return Ignored(event.key, "too many digits")
            self.digits += DIGITS[event.key]
            return None
        action = self.actions.get(event.key)
        if action is None:
            return Ignored(event.key, "not a caller key")
        last_key, last_at = self._last
        if event.key == last_key and now - last_at < self.debounce_s:
            return Ignored(event.key, "bounce")
        typing = bool(self.digits or self.transferring or self._login_staff is not None)
        if (
            event.key == last_key
            and action in LOCKED_ACTIONS
            and now - last_at < self.lockout_s
            and not typing
        ):
            return Ignored(event.key, "bounce")  # a doubled press of call/recall
        self._last = (event.key, now)
        if self._login_staff is not None:
            return self._pin_step(event.key, action)
        if action == "transfer":
            self.transferring, self.digits = True, ""
            return None
        if action == "call" and (self.digits or self.transferring):
            typed, transferring = self.digits, self.transferring
            self.digits, self.transferring = "", False
            if transferring:
                return (
                    Intent("transfer", typed) if typed else Ignored(event.key, "no service number")
                )
            self._login_staff, self._pin, self._pin_deadline = typed, "", now + self.pin_timeout_s
            return AskPin(typed)
        self.digits, self.transferring = "", False
        if action == "pause":
            return Intent("resume" if self.paused else "pause")
        return Intent(action)

    def _pin_step(self, key: str, action: str) -> Intent | Ignored:
        if action != "call":
            self._cancel_login()
            return Ignored(key, "login cancelled")
        if not self._pin:
            return Ignored(key, "no PIN typed")
        staff, pin = self._login_staff or "", self._pin
        self._cancel_login()
        return Intent("login", staff, pin=pin)

    def _cancel_login(self) -> None:
        self._login_staff, self._pin = None, ""
