"""The crowd: citizens and clerks of a simulated hall day, acting only through devices.

Citizens walk up to kiosks: they press a service key on the kiosk keypad (FIFO),
put their ID card on the SAM reader (pty) or a PC/SC reader (vpcd), or type their
number, and take the ticket out of the printer simulator — reading the number off
the paper. They watch the LED displays for their number. Clerks log in with their
staff number and PIN (the LED asks for it), press keys on their caller keypads,
read their own LED, and citizens rate on the rating pads. Nobody here talks to the
hall.

Deterministic for a seed: the same arrivals, people, services, no-shows and
ratings. (Thread timing still varies: which clerk calls whom is up to the hall.)
"""

from __future__ import annotations

import logging
import math
import queue
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from quhao.clock import Clock
from quhao.idnumber import with_check
from simulators.bookings import book
from simulators.idcard import VirtualIdCard
from simulators.keys import KeypadFeeder
from simulators.led import LedSimulator
from simulators.printer import PrinterSimulator, Ticket
from simulators.sam import CardHolder, SamSimulator
from simulators.scenario import SERVICE_TIME_SIGMA, WAIT_REASON, Scenario, rating_after

log = logging.getLogger("sim.crowd")

CALLED = re.compile(r"请 (\w+) 号到 (\d+) 号窗口")
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华"
RATING_KEYS = ("KEY_1", "KEY_2", "KEY_3", "KEY_4", "KEY_5")  # 非常满意 … 非常不满意
PIN_PROMPT = "请输入密码"  # what the counter's LED asks after a staff number
CLOSED_SLIP = "不在取号时间"  # on the kiosk's slip when the hall no longer issues tickets
# The caller keypad ignores a second call press within 1 s (real time, by the key's own
# stamp) unless another key came between: a clerk who found nobody waits that long.
CALL_LOCKOUT_S = 1.05
# Real seconds a citizen waits for the ticket before giving up. A kiosk prints within a
# fraction of a second (Stats.kiosk_s); on a machine shared with heavy work it can take
# seconds, and a citizen then waits rather than walks off without a ticket.
KIOSK_PATIENCE_S = 20.0
# A booked citizen with no ticket by then has read the kiosk's 未到/已过预约签到时间 and
# chooses the service (real seconds: the hall answers a check-in in well under one).
CHECKIN_PATIENCE_S = 4.0
APPOINTMENT_MARK = "预约优先"
CALL_ANSWER_S = 1.5  # how long a clerk looks at the LED for the answer to a call
LATE_ANSWER_S = 3.0  # after no answer, how long before the clerk presses call again
RATING_DELAY_S = 0.15  # the citizen reaches for the pad once the finish is answered
# A reader takes a card as removed only after it was away for the kiosk's card_absent_ms
# (0.5 s by default, real time) as the reader saw it: a citizen putting the same card
# back sooner is still the same presentation, read once. Margins for the polls:
# the SAM reader asks every 50 ms, pcscd looks every 400 ms.
SAME_CARD_AGAIN_S = {"sam": 0.75, "pcsc": 1.2}


@dataclass
class Citizen:
    key: int
    holder: CardHolder
    service: str
    arrives: float
    kiosk: int
    method: str  # sam | typed | pcsc
    uid: str
    no_show: bool
    rating: int | None  # the rating after a short wait (rating_after lowers it for long ones)
    reason: int
    second_service: str | None = None
    minutes: float = 8.0
    appointment: bool = False
    slot: tuple[float, float] | None = None  # booked online (simulators/bookings.py)
    number: str | None = None
    done: bool = False
    queue: str = ""  # the service whose queue the ticket is in now
    queued_at: float = 0.0  # hall time it joined that queue
    waited_s: float = 0.0  # hall seconds waited in queues so far


@dataclass
class Stats:
    arrived: int = 0
    printed: int = 0
    slips: int = 0
    kiosk_failures: int = 0
    served: int = 0
    no_shows: int = 0
    transfers: int = 0
    ratings: int = 0
    breaks: int = 0
    unknown_calls: int = 0
    checked_in: int = 0  # booked citizens whose ticket says 预约优先
    closed: int = 0  # turned away: the kiosk said tickets are no longer issued
    calls_by_window: dict[int, int] = field(default_factory=dict)
    # real seconds a citizen held a kiosk (keys, card, ticket, card off), by method
    kiosk_s: dict[str, list[float]] = field(default_factory=dict)
    last_finish: float = 0.0  # hall time of the last finish or skip
    led_timeouts: dict[str, int] = field(default_factory=dict)  # key -> LED showed no answer


def plan_arrivals(scenario: Scenario, tz: ZoneInfo, seed: int) -> list[Citizen]:
    """Who comes when: morning and afternoon peaks over the opening hours."""
    rng = random.Random(seed)
    opens, closes = scenario.at(scenario.opens, tz), scenario.at(scenario.closes, tz)
    span = closes - opens - scenario.last_call_min * 60
    services = list(scenario.loads)
    citizens: list[Citizen] = []
    serial = 0

    def moment() -> float:
        while True:
            roll, x = rng.random(), rng.random()  # uniform unless the roll falls in a peak
            for share, centre, spread in scenario.peaks:
                if roll < share:
                    x = rng.gauss(centre, spread)
                    break
                roll -= share
            if 0 <= x <= 1:
                return opens + x * span

    for service, count in scenario.loads.items():
        for _ in range(count):
            serial += 1
            elderly = rng.random() < scenario.elderly
            age = rng.randint(65, 88) if elderly else rng.randint(18, 64)
            born = date(scenario.day.year - age, rng.randint(1, 12), rng.randint(1, 28))
            number = with_check(f"440111{born:%Y%m%d}{serial % 1000:03d}")
            name = rng.choice(SURNAMES) + rng.choice(GIVEN) + rng.choice(GIVEN)
            holder = CardHolder(name, number, born, gender=rng.choice("12"))
            kiosk = rng.randrange(scenario.kiosks) + 1
            roll = rng.random()
            method = (
                "typed"
                if roll < scenario.typed
                else "pcsc"
                if kiosk <= scenario.pcsc_kiosks and roll < scenario.typed + scenario.pcsc
                else "sam"
            )
            levels, weights = zip(*scenario.ratings, strict=True)
            rating = rng.choices(levels, weights)[0]
            second = (
                rng.choice([s for s in services if s != service])
                if rng.random() < scenario.second_service
                else None
            )
            minutes = max(
                1.0, rng.lognormvariate(math.log(scenario.minutes[service]), SERVICE_TIME_SIGMA)
            )
            citizen = Citizen(
                serial,
                holder,
                service,
                moment(),
                kiosk,
                method,
                f"{0xC0DE0000 + serial:016X}",
                rng.random() < scenario.no_show,
                rating,
                rng.randrange(5),
                second,
                minutes,
            )
            citizen.appointment = rng.random() < scenario.appointment
            citizens.append(citizen)
            if rng.random() < scenario.third_try:
                # the same person twice more for the same service: the third is over quota
                for later in (600, 1200):
                    serial += 1
                    citizens.append(
                        Citizen(
                            serial,
                            holder,
                            service,
                            # well before closing: each return with the same card waits
                            # SAME_CARD_AGAIN_S of real time, which is minutes of hall
                            # time at a fast demo speed
                            min(citizen.arrives + later, closes - 600 - later // 2),
                            kiosk,
                            "sam",
                            citizen.uid,
                            citizen.no_show,
                            rating,
                            citizen.reason,
                            None,
                            minutes,
                        )
                    )
    citizens.sort(key=lambda c: c.arrives)
    return citizens


@dataclass
class KioskDevices:
    keys: KeypadFeeder
    sam: SamSimulator
    printer: PrinterSimulator
    card: VirtualIdCard | None
    last_card: str = ""  # the card last taken off a reader here ("sam:…" or "pcsc:…")
    card_gone_at: float = 0.0  # when (monotonic) it was taken off


@dataclass
class WindowDevices:
    number: int
    service: str  # the one service this window serves
    keys: KeypadFeeder
    led: LedSimulator
    rating: KeypadFeeder
    staff_digits: str | None
    service_keys: dict[str, str]  # service id -> its number typed for a transfer
    pin: str | None = None  # the clerk's PIN, typed after the staff number
    opens_at: float = 0.0  # hall time the clerk logs in (a window opened live)
    rated: threading.Event = field(default_factory=threading.Event)  # no rating pending
    last_call_press: float = 0.0  # monotonic: the call key's lockout runs from here
    last_number: str = ""  # the ticket last called here
    claimed: bool = False  # the last call press took a waiting ticket from the count
    unanswered_at: float = -1e9  # monotonic: the last call whose answer the LED did not show

    def __repr__(self) -> str:
        return f"WindowDevices(window {self.number}, <PIN withheld>)"


class Crowd:
    def __init__(
        self,
        scenario: Scenario,
        clock: Clock,
        tz: ZoneInfo,
        kiosks: dict[int, KioskDevices],
        service_keys: dict[str, str],
        seed: int = 7,
    ) -> None:
        self.scenario, self.clock, self.tz = scenario, clock, tz
        self.kiosks = kiosks
        self.service_keys = service_keys  # service -> F-key on the kiosks
        self.citizens = plan_arrivals(scenario, tz, seed)
        self.bookings = book(self.citizens, scenario, tz, seed)  # for the demo to import
        self.rng = random.Random(seed + 1)
        self.stats = Stats()
        self.lock = threading.Lock()
        self.by_number: dict[str, Citizen] = {}
        self.lines: dict[int, queue.Queue[Citizen]] = {k: queue.Queue() for k in kiosks}
        self.windows: dict[int, WindowDevices] = {}
        self.stop = threading.Event()
        self.arrivals_done = threading.Event()
        self.threads: list[threading.Thread] = []
        self.started = False
        self.empty_since: dict[int, float] = {}  # window -> when it last found no one waiting
        # Tickets the crowd holds that wait, per service queue, as the crowd knows them (a
        # clerk watches the hall's waiting count on the screen): an idle clerk calls again
        # when it changes, instead of pressing call on a fixed round.
        self.waiting: dict[str, int] = dict.fromkeys(scenario.loads, 0)
        self.news = threading.Condition(self.lock)
        self.ratings: queue.Queue[tuple[float, WindowDevices, list[str]]] = queue.Queue()

    # ---- time ---------------------------------------------------------------

    def sleep_hall(self, seconds: float, at_least_real: float = 0.0) -> None:
        self.stop.wait(max(self.clock.real_seconds(seconds), at_least_real))

    def sleep_until(self, hall_time: float) -> None:
        delay = self.clock.real_seconds(hall_time - self.clock.now())
        if delay > 0:
            self.stop.wait(delay)

    # ---- running ------------------------------------------------------------

    def start(self) -> None:
        """The doors open: citizens come, clerks log in (the daemons are ready)."""
        self.started = True
        self._spawn("arrivals", self._arrivals)
        self._spawn("ratings", self._rate)
        for devices in self.windows.values():
            self._spawn(f"clerk-{devices.number}", self._clerk, devices)
        for number in self.kiosks:
            self._spawn(f"kiosk-{number}", self._kiosk, number)

    def add_window(self, devices: WindowDevices) -> None:
        self.windows[devices.number] = devices
        if self.started:
            self._spawn(f"clerk-{devices.number}", self._clerk, devices)

    def _spawn(self, name: str, target: Callable[..., object], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=f"crowd-{name}", daemon=True)
        thread.start()
        self.threads.append(thread)

    def close(self) -> None:
        self.stop.set()
        with self.news:
            self.news.notify_all()
        for thread in self.threads:
            thread.join(5)

    @property
    def outstanding(self) -> int:
        """Tickets the crowd holds that are not finished, skipped or given up."""
        with self.lock:
            return sum(1 for c in self.by_number.values() if not c.done)

    def diagnosis(self) -> str:
        """Why the day is not over yet (for the progress line)."""
        with self.lock:
            held = sorted(n for n, c in self.by_number.items() if not c.done)
        queued = sum(q.qsize() for q in self.lines.values())
        rating = sorted(n for n, w in self.windows.items() if not w.rated.is_set())
        return (
            f"arrivals {'done' if self.arrivals_done.is_set() else 'coming'}, "
            f"in kiosk lines {queued}, held {held[:6]}, ratings at windows {rating[:8]}"
        )

    def finished(self) -> bool:
        """The day is over: everyone came, every ticket held was dealt with (finished,
        skipped or given up), and every rating was given."""
        return self.settled() and not self.outstanding

    def settled(self) -> bool:
        """Everyone came and went through the kiosks, and every rating was given."""
        if not self.arrivals_done.is_set() or any(not q.empty() for q in self.lines.values()):
            return False
        if not self.ratings.empty():
            return False
        return all(w.rated.is_set() for w in self.windows.values())

    # ---- citizens at kiosks -------------------------------------------------

    def _arrivals(self) -> None:
        for citizen in self.citizens:
            self.sleep_until(citizen.arrives)
            if self.stop.is_set():
                return
            with self.lock:
                self.stats.arrived += 1
            self.lines[citizen.kiosk].put(citizen)
        self.arrivals_done.set()

    def _kiosk(self, number: int) -> None:
        devices = self.kiosks[number]
        while not self.stop.is_set():
            try:
                citizen = self.lines[number].get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._use_kiosk(devices, citizen)
            except Exception:
                log.exception("citizen %d at kiosk %d", citizen.key, number)

    def _use_kiosk(self, devices: KioskDevices, citizen: Citizen) -> None:
        began = time.monotonic()
        before = len(devices.printer.wait_for_tickets(0))  # every ticket cut so far
        method = citizen.method if (citizen.method != "pcsc" or devices.card) else "sam"
        card = f"pcsc:{citizen.uid}" if method == "pcsc" else f"sam:{citizen.holder.id_number}"
        if method != "typed" and card == devices.last_card:
            # the same card again (a third try): it must have been away long enough, as
            # the reader saw it (from its first "no card", which a busy machine delays)
            gone = devices.card_gone_at
            if method == "sam" and devices.sam.wait_seen_empty(finds=1):
                gone = max(gone, devices.sam.first_empty_at)
            time.sleep(max(0.0, gone + SAME_CARD_AGAIN_S[method] - time.monotonic()))
        booked = citizen.slot is not None
        if not booked:  # a booked citizen checks in with the card alone, no service key
            devices.keys.tap(self.service_keys[citizen.service])
        if method == "typed":
            digits = [f"KEY_{c}" for c in citizen.holder.id_number]
            devices.keys.type(*digits, "KEY_ENTER", gap_s=0.002)
        elif method == "pcsc":
            assert devices.card is not None
            try:
                devices.card.insert(citizen.uid)
            except OSError as exc:  # no vpcd reader there: the citizen uses the SAM reader
                log.warning("citizen %d: PC/SC reader unusable (%s): SAM instead", citizen.key, exc)
                method, card = "sam", f"sam:{citizen.holder.id_number}"
                devices.sam.present(citizen.holder)
        else:
            devices.sam.present(citizen.holder)
        ticket = None
        if booked:
            try:
                ticket = devices.printer.wait_for_tickets(before + 1, timeout=CHECKIN_PATIENCE_S)[
                    -1
                ]
            except AssertionError:  # too early or too late (the kiosk says so): an ordinary one
                devices.keys.tap(self.service_keys[citizen.service])
        try:
            ticket = (
                ticket or devices.printer.wait_for_tickets(before + 1, timeout=KIOSK_PATIENCE_S)[-1]
            )
        except AssertionError:
            ticket = None
        self._read_paper(citizen, ticket)  # at once: a window may call the number soon
        if method == "pcsc" and devices.card:
            devices.card.remove()
            devices.last_card, devices.card_gone_at = card, time.monotonic()
            time.sleep(1.0)  # pcscd looks every 400 ms (later when busy): it must see it empty
        elif method == "sam":
            devices.sam.remove()
            devices.last_card, devices.card_gone_at = card, time.monotonic()
            # the next card goes on once the reader has seen this one gone (it polls every
            # 50 ms): otherwise it takes the next card for this one, still there
            devices.sam.wait_seen_empty(finds=2)
        with self.lock:
            self.stats.kiosk_s.setdefault(method, []).append(time.monotonic() - began)

    def _read_paper(self, citizen: Citizen, ticket: Ticket | None) -> None:
        with self.lock:
            if ticket is None and self.stop.is_set():
                return  # the day was stopped while this citizen stood at the kiosk
            if ticket is None:
                self.stats.kiosk_failures += 1
                log.warning("kiosk gave citizen %d nothing", citizen.key)
                return
            big = [line.text.strip() for line in ticket.lines if line.width >= 3]
            if not big:
                if CLOSED_SLIP in ticket.text:
                    self.stats.closed += 1
                else:
                    self.stats.slips += 1  # 额满: the quota slip
                return
            citizen.number = big[0]
            if APPOINTMENT_MARK in ticket.text:
                self.stats.checked_in += 1
            citizen.queue, citizen.queued_at = citizen.service, self.clock.now()
            self.by_number[citizen.number] = citizen
            self.stats.printed += 1
            self.waiting[citizen.service] += 1
            self.news.notify_all()

    # ---- clerks at windows --------------------------------------------------

    def _clerk(self, w: WindowDevices) -> None:
        led = w.led
        w.rated.set()
        self.sleep_until(w.opens_at)
        try:
            while w.staff_digits and w.pin and not self.stop.is_set():
                # staff number, Enter; the LED asks for the PIN; PIN, Enter
                try:
                    w.keys.type(*[f"KEY_KP{d}" for d in w.staff_digits], "KEY_KPENTER")
                    led.wait_for(lambda t: t == PIN_PROMPT, timeout=10)
                    w.keys.type(*[f"KEY_KP{d}" for d in w.pin], "KEY_KPENTER")
                    led.wait_for(lambda t: "号窗口 " in t, timeout=10)
                    w.last_call_press = time.monotonic()  # the call key is the login key
                    break
                except AssertionError as exc:  # a counter slow to start: try again
                    log.warning("clerk at window %d: login: %s; again", w.number, exc)
                    w.keys.tap("KEY_NUMLOCK")  # logout: whatever was typed is dropped
                    self.stop.wait(1.0)
            while not self.stop.is_set():
                self._serve_next(w)
        except AssertionError as exc:
            log.warning("clerk at window %d: %s", w.number, exc)
        except Exception:
            log.exception("clerk at window %d", w.number)

    def _press_and_watch(
        self,
        w: WindowDevices,
        key: str,
        answer: Callable[[str], bool] = lambda text: True,
        timeout: float = 5.0,
        what: str = "",
    ) -> str:
        """Press a key; the first text the LED then shows that answers it.

        The LED also changes by itself (a notice going back to the idle text after
        3 s): a clerk looks for the change the key should cause, not just any change.
        """
        seen = len(w.led.history)
        if key == "KEY_KPENTER":
            w.last_call_press = time.monotonic()
        w.keys.tap(key)
        deadline = time.monotonic() + timeout
        with w.led.changed:
            while time.monotonic() < deadline:
                for shown in w.led.history[seen:]:
                    if answer(shown.text):
                        return shown.text
                seen = len(w.led.history)
                w.led.changed.wait(0.05)
        what = what or key
        with self.lock:
            self.stats.led_timeouts[what] = self.stats.led_timeouts.get(what, 0) + 1
        return w.led.text

    def _claim(self, w: WindowDevices) -> bool | None:
        """Wait until a ticket for this window's service is waiting (as the clerk's queue
        screen shows) and take it for this call, so that two idle clerks do not both call
        for one citizen; then the call key's lockout. Every half hour (hall time) the clerk
        calls anyway (False: nothing claimed). None: the LED shows a call after all."""
        claimed = False
        deadline = time.monotonic() + self.clock.real_seconds(1800)
        with self.news:
            while not self.stop.is_set():
                if self._late_call(w):
                    return None
                # after a call the LED showed no answer to, give a late answer time to
                # arrive: a call pressed while a citizen is at the window finishes them
                settled = time.monotonic() >= w.unanswered_at + LATE_ANSWER_S
                if settled and self.waiting[w.service] > 0:
                    self.waiting[w.service] -= 1
                    claimed = True
                    break
                left = deadline - time.monotonic()
                if left <= 0 and settled:
                    break
                self.news.wait(min(max(left, 0.0), 0.1) or 0.1)
        lockout = w.last_call_press + CALL_LOCKOUT_S - time.monotonic()
        if lockout > 0:
            self.stop.wait(lockout)
        return claimed

    def _try_claim(self, w: WindowDevices) -> bool:
        """Take a waiting ticket for the next call if there is one now (no waiting)."""
        with self.news:
            settled = time.monotonic() >= w.unanswered_at + LATE_ANSWER_S
            if settled and self.waiting[w.service] > 0:
                self.waiting[w.service] -= 1
                return True
        return False

    def _late_call(self, w: WindowDevices) -> re.Match[str] | None:
        """The LED shows a call here that the clerk has not taken up (its answer came after
        the clerk stopped looking)."""
        late = CALLED.search(w.led.text)
        if late and late.group(2) == str(w.number) and late.group(1) != w.last_number:
            return late
        return None

    def _serve_next(self, w: WindowDevices) -> None:
        called = self._late_call(w)
        if called is None:
            claimed = self._claim(w)
            if claimed is None or self.stop.is_set():
                return  # a late call: taken up next round
            w.claimed = claimed
            # A call that finds nobody twice in a row changes nothing on the LED (the hall
            # answers "unchanged"): a clerk who sees no change for a moment takes it so.
            shown = self._press_and_watch(
                w,
                "KEY_KPENTER",
                lambda t: bool(CALLED.search(t)) or "暂无" in t or "暂停" in t,
                timeout=CALL_ANSWER_S,
                what="call",
            )
            called = CALLED.search(shown)
            if not called or called.group(2) != str(w.number) or called.group(1) == w.last_number:
                self.empty_since[w.number] = self.clock.now()
                if not (called or "暂无" in shown or "暂停" in shown):
                    w.unanswered_at = time.monotonic()  # no answer seen: maybe a late one
                return
        began = self.clock.now()  # the service time runs from the call
        w.last_number = called.group(1)
        now = self.clock.now()
        citizen = self._citizen(called.group(1))
        with self.lock:
            self.stats.calls_by_window[w.number] = self.stats.calls_by_window.get(w.number, 0) + 1
            if not w.claimed:
                self.waiting[w.service] -= 1
            if citizen is not None and citizen.queue:
                citizen.waited_s += max(0.0, now - citizen.queued_at)
                citizen.queue = ""
        if citizen is None or citizen.no_show:
            self.sleep_hall(120)
            self._press_and_watch(w, "KEY_KPPLUS", timeout=0.5, what="recall")  # no change
            self.sleep_hall(120)
            self._press_and_watch(w, "KEY_KPMINUS", _idle, what="skip")  # 过号
            with self.lock:
                self.stats.no_shows += 1
                self.stats.last_finish = self.clock.now()
                if citizen is not None:
                    citizen.done = True
            return
        self.sleep_until(began + citizen.minutes * 60)
        if citizen.second_service and citizen.second_service in w.service_keys:
            target = w.service_keys[citizen.second_service]
            w.keys.type("KEY_KPSLASH", *[f"KEY_KP{d}" for d in target], gap_s=0.02)
            self._press_and_watch(w, "KEY_KPENTER", _idle, what="transfer")
            with self.lock:
                # 三证联办: the same number goes on to the next service's queue
                citizen.queue, citizen.queued_at = citizen.second_service, self.clock.now()
                self.waiting[citizen.second_service] += 1
                citizen.second_service = None
                citizen.minutes = max(1.0, citizen.minutes * 0.6)
                self.stats.transfers += 1
                self.news.notify_all()
            return
        w.rated.wait(2.0)  # the last citizen here has rated (the pad holds one ticket)
        take_break = self.rng.random() < self.scenario.breaks
        unlocked = time.monotonic() >= w.last_call_press + CALL_LOCKOUT_S
        if not take_break and unlocked and self._try_claim(w):
            # 下一位: with someone waiting, the call key finishes this citizen and calls the
            # next in one request (the rating pad lights up for this one all the same)
            w.claimed, current = True, called.group(1)
            self._press_and_watch(
                w,
                "KEY_KPENTER",
                lambda t: _calls_other(t, current) or "暂无" in t,
                timeout=CALL_ANSWER_S,
                what="call+finish",
            )
        else:
            self._press_and_watch(w, "KEY_KPDOT", _idle, what="finish")  # the pad lights up
        level = rating_after(citizen.rating, citizen.waited_s / 60, self.scenario)
        with self.lock:
            citizen.done = True
            self.stats.served += 1
            self.stats.last_finish = self.clock.now()
        if level is not None:
            # the citizen rates while the clerk calls the next one
            keys = [RATING_KEYS[5 - level]]
            if level <= 2:
                long_wait = citizen.waited_s / 60 > self.scenario.patience_min
                keys.append(RATING_KEYS[WAIT_REASON if long_wait else citizen.reason])
            w.rated.clear()
            self.ratings.put((time.monotonic() + RATING_DELAY_S, w, keys))
        if take_break:
            self._press_and_watch(w, "KEY_KPASTERISK")
            self.sleep_hall(self.rng.uniform(600, 1200))
            self._press_and_watch(w, "KEY_KPASTERISK")
            with self.lock:
                self.stats.breaks += 1

    def _rate(self) -> None:
        """The citizens at the rating pads, one after another as they finish."""
        while not self.stop.is_set():
            try:
                due, w, keys = self.ratings.get(timeout=0.2)
            except queue.Empty:
                continue
            for key in keys:
                self.stop.wait(max(0.0, due - time.monotonic()))
                w.rating.tap(key)
                due = time.monotonic() + 0.05
            with self.lock:
                self.stats.ratings += 1
            w.rated.set()

    def _citizen(self, number: str) -> Citizen | None:
        deadline = time.monotonic() + 3.0  # the kiosk may still be reading the paper
        while time.monotonic() < deadline:
            with self.lock:
                citizen = self.by_number.get(number)
            if citizen is not None:
                return citizen
            time.sleep(0.02)
        with self.lock:
            self.stats.unknown_calls += 1
        log.warning("called %s, whom nobody holds", number)
        return None


def _calls_other(text: str, number: str) -> bool:
    """The LED calls a ticket other than `number`."""
    match = CALLED.search(text)
    return match is not None and match.group(1) != number


def _idle(text: str) -> bool:
    """The LED shows no call: the window is free (or a notice)."""
    return not CALLED.search(text)


def hall_time(scenario: Scenario, tz: ZoneInfo, minutes_before: float = 5) -> float:
    """When the simulated clock starts: a few minutes before the doors open."""
    start = datetime.combine(scenario.day, scenario.opens, tz) - timedelta(minutes=minutes_before)
    return start.timestamp()
