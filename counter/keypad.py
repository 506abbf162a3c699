"""The caller keypad's meaning: key presses in, intents for the hall out. Pure.

Keys (defaults, configurable in [keys.caller]):
  call      KEY_KPENTER     call next — or, after digits, log in / confirm a transfer
  recall    KEY_KPPLUS      call the current citizen again
  skip      KEY_KPMINUS     the citizen did not come
  finish    KEY_KPDOT       service done
  pause     KEY_KPASTERISK  pause / resume (暂停服务)
  transfer  KEY_KPSLASH     then the service number (its position in the site file) and call
  logout    KEY_NUMLOCK
  digits    KEY_KP0…KEY_KP9 (or KEY_0…KEY_9): staff number then call = log in

A key held down auto-repeats (value 2): ignored. The same action key pressed
again within `debounce_s` (0.15 s) is a bounce: ignored. Call and recall are
locked for `lockout_s` (1 s) after they were pressed: a clerk's doubled press
arrives after the LED has already changed, so only a lockout keeps it from
calling a second citizen (or recalling one into a skip). Any other key is logged
and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

from quhao.config import CallerKeys
from quhao.devices.inputevent import PRESS, KeyEvent

DIGITS = {**{f"KEY_KP{i}": str(i) for i in range(10)}, **{f"KEY_{i}": str(i) for i in range(10)}}
MAX_DIGITS = 8
LOCKED_ACTIONS = ("call", "recall")


@dataclass(frozen=True)
class Intent:
    action: str  # call recall skip finish pause resume transfer login logout
    argument: str = ""  # service number for transfer, staff number for login


@dataclass(frozen=True)
class Ignored:
    key: str
    why: str


class CallerKeypad:
    def __init__(self, keys: CallerKeys, debounce_s: float = 0.15, lockout_s: float = 1.0) -> None:
        self.keys = keys
        self.actions = {v: k for k, v in vars(keys).items()}
        self.debounce_s, self.lockout_s = debounce_s, lockout_s
        self.digits = ""
        self.transferring = False
        self.paused = False  # believed state; the window state corrects it
        self._last: tuple[str, float] = ("", -1e9)

    def press(self, event: KeyEvent, now: float) -> Intent | Ignored | None:
        """One key event at monotonic time now. None: nothing to do (release, repeat)."""
        if event.value != PRESS:
            return None
        if event.key in DIGITS:  # typed numbers repeat digits on purpose: no debounce
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
        if (
            event.key == last_key
            and action in LOCKED_ACTIONS
            and now - last_at < self.lockout_s
            and not (self.digits or self.transferring)
        ):
            return Ignored(event.key, "bounce")  # a doubled press of call/recall
        self._last = (event.key, now)
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
            return Intent("login", typed)
        self.digits, self.transferring = "", False
        if action == "pause":
            return Intent("resume" if self.paused else "pause")
        return Intent(action)
