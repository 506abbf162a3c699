"""One counter terminal (a `counter-W5` device): keypad → hall, window state → LED, rating pad.

One owner thread (`quhao.owner.OwnerLoop`) holds all of the terminal's state and does
all of its I/O that can wait in a select: the caller keypad and the rating pad (their
input_event streams), the MQTT socket, the LED display's serial port. A key press is
decoded, turned into an intent and published to the hall in the same thread that
later reads the hall's window state and writes the LED frame: no hand-off on the way.
Intents go to the hall one at a time, in order (`rid` and `expect` stamped at press
time); notices and the rating pad's timeout are timers of that loop. Only the staff
card reader (PC/SC blocks in SCardGetStatusChange) has a thread, which posts each
card to the loop.

The LED follows the retained `window/{n}/state`, so it is right after any restart of
the counter, the hall or the broker; until that state has arrived it is sent nothing
(it keeps what it showed), never a blank frame.

A clerk proves who they are: staff number, PIN (the LED asks for it and never shows
the digits), or the staff card. The hall checks the proof. Key timing (debounce, the
call lockout, the PIN timeout) uses each key event's own kernel timestamp.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from counter.keypad import AskPin, CallerKeypad, Ignored, Intent
from counter.led.display import LedDisplay
from counter.rating import LEVEL_NAMES, Rating, RatingPad
from quhao.clock import Clock
from quhao.config import SiteConfig
from quhao.devices.cards import CardRead
from quhao.devices.inputevent import KeyEvent
from quhao.devices.keysource import KeySource
from quhao.messages import (
    ACTION_REQUESTS,
    ActionRequest,
    CallRequest,
    LoginRequest,
    RateRequest,
    TransferRequest,
)
from quhao.mqtt import Message, device_bus
from quhao.owner import BusDriver, OwnerLoop, Timer
from quhao.rpc import HallClient, HallRequests
from quhao.staffauth import card_proof, staff_id_for
from quhao.topics import Topics
from quhao.wire import BadPayload, decode_object

log = logging.getLogger("quhao.counter")

# Short feedback on the LED when the hall refuses a key (shown for NOTICE_S seconds).
REFUSAL_NOTICES = {
    "paused": "暂停中 请先恢复",
    "busy": "请先完成当前业务",
    "no_ticket": "当前无办理号",
    "not_logged_in": "请先登录工号",
    "unknown_staff": "工号或密码错误",
    "unknown_service": "业务编号不存在",
    "unavailable": "系统繁忙 请重试",
}
# A refused login: a wrong PIN, an unknown staff number, a card the hall does not know.
LOGIN_REFUSED = {"unknown_staff": "工号或密码错误", "forbidden": "工号或密码错误"}
CARD_REFUSED = "工作证无效"
PIN_PROMPT = "请输入密码"
NOTICE_S = 3.0
RATING_TICK_S = 0.1  # how often the rating pad's timeout is looked at
QUEUE_EMPTY_NOTICE = "暂无等候"


@dataclass(frozen=True)
class Pending:
    """An intent as it was pressed: its rid and what the clerk saw then."""

    intent: Intent
    rid: str
    expect: str | None


class CounterTerminal:
    def __init__(
        self,
        config: SiteConfig,
        device: str,
        broker: str,
        clock: Clock | None = None,
        credentials_dir: Path | None = None,
    ) -> None:
        if device not in config.counters:
            raise ValueError(f"{device!r} is not a [[counters]] entry of {config.source}")
        self.config, self.device = config, device
        self.counter = config.counters[device]
        self.window = self.counter.window
        # A staff card is proven to the hall with the site secret, so a reader needs it.
        self.secret = config.read_secret() if self.counter.reader else None
        self.clock = clock or Clock()
        self.topics = Topics(config.site.id)
        self.loop = OwnerLoop(f"{device}-owner")
        self.bus = device_bus(broker, device, self.topics.availability(device), credentials_dir)
        self.hall = HallRequests(
            self.loop,
            self.bus,
            self.topics,
            device,
            timeout_s=config.devices.hall_timeout_s,
            attempts=config.devices.hall_attempts,
        )
        self.keypad = CallerKeypad(config.keys.caller)
        self.pad = RatingPad(
            config.keys.rating.levels,
            config.texts.rating_reasons,
            config.texts.rating_no_reason,
            config.rules.rating_timeout_s,
        )
        self.display = (
            LedDisplay(self.counter.display, device, self._display_state)
            if self.counter.display
            else None
        )
        # All of the following belong to the owner loop: only its thread reads or writes them.
        self.current: str | None = None  # the number this terminal serves, as last known
        self.staff: str | None = None  # the clerk logged in here, as last known
        self.window_state: dict[str, Any] | None = None
        self._shown_call: float | None = None
        self._notice: Timer | None = None  # while set, the LED shows a notice
        self._prompting = False  # the LED asks for the PIN
        self.actions: deque[Pending] = deque()  # intents pressed, not yet sent
        self._sending = False  # one intent at the hall at a time, in order
        self.health: dict[str, str] = {}
        self._threads: list[threading.Thread] = []

    @property
    def heartbeat(self) -> float:
        """The owner loop's last round, for the systemd watchdog."""
        return self.loop.heartbeat

    # ---- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        self.bus.subscribe(self.topics.window_state(self.window), self._on_window_state)
        BusDriver(self.loop, self.bus).start()
        if self.display:
            self.display.attach(self.loop)
        if self.counter.keypad:
            source = KeySource(
                self.counter.keypad,
                f"{self.device} keypad",
                lambda ok, why: self._health("keypad", "ok" if ok else why),
            )
            source.attach(self.loop, self._on_caller_key)
        if self.counter.reader:
            from quhao.devices.pcsc import PcscReader

            post = self.loop.post
            reader = PcscReader(
                self.counter.reader,
                f"{self.device} staff card reader",
                lambda read: post(lambda: self._on_staff_card(read)),
                lambda state, why: post(lambda: self._health("reader", state)),
                absent_s=self.counter.card_absent_ms / 1000,
            )
            self._spawn("reader", reader.run, self.loop.stopping)
        if self.counter.rating:
            pad = KeySource(
                self.counter.rating,
                f"{self.device} rating pad",
                lambda ok, why: self._health("rating", "ok" if ok else why),
            )
            pad.attach(self.loop, self._on_rating_key)
            self.loop.every(RATING_TICK_S, self._rating_tick)
        self.loop.start()
        log.info("%s: window %d ready", self.device, self.window)

    def close(self) -> None:
        self.loop.stop()
        self.loop.join(5)
        for thread in self._threads:
            thread.join(2)
        self.bus.stop()

    def _spawn(self, name: str, target: Any, *args: Any) -> None:
        thread = threading.Thread(
            target=target, args=args, name=f"{self.device}-{name}", daemon=True
        )
        thread.start()
        self._threads.append(thread)

    # ---- keys ---------------------------------------------------------------

    def _on_caller_key(self, event: KeyEvent) -> None:
        result = self.keypad.press(event, event.time)  # the kernel's stamp: when it was pressed
        if isinstance(result, Ignored):
            if result.why != "bounce":
                log.info("%s: key %s ignored: %s", self.device, result.key, result.why)
            else:
                log.debug("%s: key %s ignored: bounce", self.device, result.key)
        # The PIN was confirmed or the login cancelled: the prompt goes before anything
        # this key does shows (a refused login's notice), and after the key is logged.
        if self._prompting and not self.keypad.waiting_for_pin:
            self._prompting = False
            self._end_notice()
        if isinstance(result, AskPin):
            log.info("%s: staff number typed; asking for the PIN", self.device)
            self._prompting = True
            self._show_notice(PIN_PROMPT, self.keypad.pin_timeout_s, flash=False)
        elif isinstance(result, Intent):
            self.press(result)

    def _on_staff_card(self, read: CardRead) -> None:
        """A staff card logs its clerk in; the same card again logs out."""
        uid = read.uid or ""
        staff = self.config.staff_by_card(uid)
        if staff is None or self.secret is None:
            log.info("%s: a card that is not a staff card", self.device)
            self._show_notice("非工作人员卡")
        elif staff.id == self.staff:
            self.press(Intent("logout"))
        else:
            self.press(Intent("login", staff.id, card=card_proof(self.secret, uid)))

    def press(self, intent: Intent) -> None:
        """Queue an intent as pressed now: one rid per press, and what the clerk saw."""
        self.actions.append(Pending(intent, HallClient.new_rid(), self.current))
        self._send_next()

    def _send_next(self) -> None:
        while self.actions and not self._sending:
            pending = self.actions.popleft()
            payload = self._payload(pending.intent, pending.expect)
            if payload is None:
                continue  # refused here, before the hall (the LED says why)
            self._sending = True
            intent = pending.intent
            self.hall.send(
                payload,
                partial(self._answered, intent),
                self._unanswered,
                rid=pending.rid,
            )

    def _payload(self, intent: Intent, expect: str | None) -> ActionRequest | None:
        """The request an intent makes, or None if it is refused here (the LED says why)."""
        if intent.action == "call":
            return CallRequest(expect=expect)
        if intent.action == "login" and intent.card:
            return LoginRequest(card=intent.card)  # the hall finds the clerk from the proof
        if intent.action == "login":
            staff = staff_id_for(self.config.staff, intent.argument)
            if staff is None or not intent.pin:
                log.info("%s: login refused here: no staff number %s", self.device, intent.argument)
                self._show_notice(LOGIN_REFUSED["unknown_staff"])
                return None
            return LoginRequest(staff=staff, pin=intent.pin)
        if intent.action == "transfer":
            service = self._service_for(intent.argument)
            if service is None:
                self._show_notice(REFUSAL_NOTICES["unknown_service"])
                return None
            return TransferRequest(service=service)
        return ACTION_REQUESTS[intent.action]()

    def _unanswered(self, why: str) -> None:
        log.warning("%s: %s", self.device, why)
        self._show_notice(REFUSAL_NOTICES["unavailable"])
        self._sending = False
        self._send_next()

    def _answered(self, intent: Intent, response: dict[str, Any]) -> None:
        self._sending = False
        if not response.get("ok"):
            code = response.get("error", {}).get("code", "")
            log.info("%s: %s refused: %s", self.device, intent.action, code)
            if intent.action == "login" and code in LOGIN_REFUSED:
                self._show_notice(CARD_REFUSED if intent.card else LOGIN_REFUSED[code])
            elif code in REFUSAL_NOTICES:
                self._show_notice(REFUSAL_NOTICES[code])
        else:
            self._after(intent.action, response)
        self._send_next()

    def _after(self, action: str, response: dict[str, Any]) -> None:
        ticket = response.get("ticket")
        if action == "call":
            if response.get("changed") is False:
                log.info(
                    "%s: call ignored: %s is still current (doubled key press)",
                    self.device,
                    ticket and ticket["number"],
                )
                return
            self.current = ticket["number"] if ticket else None
            if response.get("finished"):
                self._arm_rating(response["finished"])
            if ticket is None:
                self._show_notice(QUEUE_EMPTY_NOTICE)
        elif action == "finish":
            self.current = None
            if ticket:
                self._arm_rating(ticket["id"])
        elif action in ("skip", "transfer") or (action == "recall" and response.get("skipped")):
            self.current = None
        elif action == "pause":
            self.keypad.paused = True
        elif action == "resume":
            self.keypad.paused = False

    def _service_for(self, typed: str) -> str | None:
        """A typed service number: its position (from 1) in the site file."""
        services = list(self.config.services)
        index = int(typed) if typed.isdigit() else 0
        return services[index - 1] if 1 <= index <= len(services) else None

    # ---- rating -------------------------------------------------------------

    def _arm_rating(self, ticket_id: str) -> None:
        if not self.counter.rating:
            return
        self._send_ratings(self.pad.arm(ticket_id, self.clock.now()))

    def _on_rating_key(self, event: KeyEvent) -> None:
        self._send_ratings(self.pad.press(event, self.clock.now()))

    def _rating_tick(self) -> None:
        self._send_ratings(self.pad.tick(self.clock.now()))

    def _send_ratings(self, ratings: list[Rating]) -> None:
        for rating in ratings:
            self.hall.send(
                RateRequest(ticket=rating.ticket, level=rating.level, reason=rating.reason),
                partial(self._rated, rating),
                partial(self._rating_lost, rating),
            )

    def _rating_lost(self, rating: Rating, why: str) -> None:
        log.warning("%s: rating of %s not recorded: %s", self.device, rating.ticket, why)

    def _rated(self, rating: Rating, response: dict[str, Any]) -> None:
        name = LEVEL_NAMES.get(rating.level or 0, "unrated")
        if response.get("ok"):
            log.info("%s: %s rated %s", self.device, rating.ticket, name)
        else:
            log.warning(
                "%s: rating of %s refused: %s", self.device, rating.ticket, response.get("error")
            )

    # ---- window state → display ---------------------------------------------

    def _on_window_state(self, message: Message) -> None:
        try:
            state = decode_object(message.payload)
        except BadPayload as exc:
            log.warning("%s: ignored window state: %s", self.device, exc)
            return
        mine = next((t for t in state.get("terminals", []) if t.get("device") == self.device), None)
        if mine is not None:
            self.current = mine.get("ticket")
            self.staff = mine.get("staff")
            self.keypad.paused = mine.get("status") == "paused"
        self.window_state = state
        self._render()

    def _render(self) -> None:
        state = self.window_state
        if self.display is None or state is None or self._notice is not None:
            return
        texts = self.config.texts
        fields = {
            "window": self.window,
            "staff": state.get("staff") or "",
            "staff_name": state.get("staff_name") or "",
        }
        status = state.get("status")
        flash = False
        if status == "serving":
            called_at = state.get("called_at")
            text = texts.display_call.format(
                ticket=state["ticket"], window=self.window, service=state.get("service_name") or ""
            )
            # a new call or a recall flashes; the same state seen again does not
            flash = self._shown_call is not None and called_at != self._shown_call
            self._shown_call = called_at
        elif status == "paused":
            text = texts.display_paused.format(**fields)
        elif status == "idle" and state.get("staff"):
            text = texts.display_idle.format(**fields)
        else:
            text = texts.display_closed.format(window=self.window)
        if status != "serving" and self._shown_call is None:
            self._shown_call = 0.0  # from now on, any call is new
        self.display.show(text, flash)

    def _show_notice(self, text: str, seconds: float = NOTICE_S, flash: bool = True) -> None:
        """Show text instead of the window state for a while (a refusal, the PIN prompt)."""
        if self.display is None:
            return
        if self._notice is not None:
            self._notice.cancel()
        self._notice = self.loop.call_later(seconds, self._end_notice)
        self.display.show(text, flash=flash)

    def _end_notice(self) -> None:
        """Back to the window state now."""
        if self._notice is not None:
            self._notice.cancel()
            self._notice = None
        self._render()

    # ---- health -------------------------------------------------------------

    def _display_state(self, state: str, detail: str) -> None:
        self._health("display", state if not detail else f"{state}: {detail}")

    def _health(self, part: str, state: str) -> None:
        if self.health.get(part) == state:
            return
        self.health[part] = state
        self.bus.publish(
            self.topics.status(self.device),
            {**self.health, "window": self.window, "at": self.clock.now()},
            retain=True,
        )
