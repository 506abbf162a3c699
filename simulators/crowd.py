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
from datetime import time as dtime
from zoneinfo import ZoneInfo

from quhao.clock import Clock
from quhao.idnumber import with_check
from simulators.idcard import VirtualIdCard
from simulators.keys import KeypadFeeder
from simulators.led import LedSimulator
from simulators.printer import PrinterSimulator
from simulators.sam import CardHolder, SamSimulator

log = logging.getLogger("sim.crowd")

CALLED = re.compile(r"请 (\w+) 号到 (\d+) 号窗口")
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华"
RATING_KEYS = ("KEY_1", "KEY_2", "KEY_3", "KEY_4", "KEY_5")  # 非常满意 … 非常不满意
PIN_PROMPT = "请输入密码"  # what the counter's LED asks after a staff number
# A reader takes a card as removed only after it was away for the kiosk's card_absent_ms
# (0.5 s by default, real time) as the reader saw it: a citizen putting the same card
# back sooner is still the same presentation, read once. Margins for the polls:
# the SAM reader asks every 50 ms, pcscd looks every 400 ms.
SAME_CARD_AGAIN_S = {"sam": 0.75, "pcsc": 1.2}


@dataclass(frozen=True)
class Scenario:
    name: str
    day: date
    opens: dtime
    closes: dtime
    loads: dict[str, int]  # tickets a day per service
    minutes: dict[str, float]  # mean service time per service
    windows: dict[str, int]  # windows per service at opening
    kiosks: int = 14
    pcsc_kiosks: int = 2  # K1, K2 also have a PC/SC reader (vpcd slots 0 and 1)
    surge_service: str | None = None
    surge_plan: tuple[tuple[dtime, int], ...] = ()  # (from, windows for the surge service)
    elderly: float = 0.15
    appointment: float = 0.04
    second_service: float = 0.06
    no_show: float = 0.05
    third_try: float = 0.02
    typed: float = 0.15
    pcsc: float = 0.3  # at a kiosk with a PC/SC reader
    breaks: float = 0.02  # chance a clerk takes a break after a citizen
    ratings: tuple[tuple[int | None, float], ...] = (
        (5, 0.66),
        (4, 0.16),
        (3, 0.06),
        (2, 0.03),
        (1, 0.02),
        (None, 0.07),
    )

    def at(self, moment: dtime, tz: ZoneInfo) -> float:
        return datetime.combine(self.day, moment, tz).timestamp()


def surge_day(day: date) -> Scenario:
    """The surge day: 社保 jumps to ~1,400 tickets; windows 8 → 15 → 32."""
    others = {
        "medical": 60,
        "housing_fund": 45,
        "real_estate": 30,
        "tax": 55,
        "business": 40,
        "household": 40,
        "exit_entry": 35,
        "civil": 25,
        "enquiry": 50,
    }
    return Scenario(
        "surge",
        day,
        dtime(8, 30),
        dtime(17, 30),
        loads={"social": 1400, **others},
        minutes={
            "social": 8,
            "medical": 6,
            "housing_fund": 10,
            "real_estate": 15,
            "tax": 10,
            "business": 12,
            "household": 8,
            "exit_entry": 10,
            "civil": 10,
            "enquiry": 4,
        },
        windows={"social": 8, **{s: 1 for s in others}},
        surge_service="social",
        surge_plan=((dtime(10, 0), 15), (dtime(12, 0), 32)),
    )


def short_day(day: date) -> Scenario:
    """An hour of a small hall, with a surge: for CI."""
    return Scenario(
        "short",
        day,
        dtime(9, 0),
        dtime(10, 0),
        loads={"social": 36, "tax": 10, "enquiry": 10},
        minutes={"social": 6, "tax": 8, "enquiry": 4},
        windows={"social": 2, "tax": 1, "enquiry": 1},
        kiosks=4,
        pcsc_kiosks=1,
        surge_service="social",
        surge_plan=((dtime(9, 20), 3), (dtime(9, 40), 4)),
        third_try=0.08,
        no_show=0.08,
        second_service=0.08,
        appointment=0.1,
    )


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
    rating: int | None
    reason: int
    second_service: str | None = None
    minutes: float = 8.0
    appointment: bool = False
    number: str | None = None
    done: bool = False


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
    calls_by_window: dict[int, int] = field(default_factory=dict)


def plan_arrivals(scenario: Scenario, tz: ZoneInfo, seed: int) -> list[Citizen]:
    """Who comes when: morning and afternoon peaks over the opening hours."""
    rng = random.Random(seed)
    opens, closes = scenario.at(scenario.opens, tz), scenario.at(scenario.closes, tz)
    span = closes - opens - 300  # nobody in the last five minutes
    services = list(scenario.loads)
    citizens: list[Citizen] = []
    serial = 0

    def moment() -> float:
        while True:
            peak = rng.random()
            if peak < 0.45:
                x = rng.gauss(0.22, 0.12)
            elif peak < 0.85:
                x = rng.gauss(0.7, 0.12)
            else:
                x = rng.random()
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
            minutes = max(1.0, rng.lognormvariate(math.log(scenario.minutes[service]), 0.45))
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
    keys: KeypadFeeder
    led: LedSimulator
    rating: KeypadFeeder
    staff_digits: str | None
    service_keys: dict[str, str]  # service id -> its number typed for a transfer
    pin: str | None = None  # the clerk's PIN, typed after the staff number

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
        self.rng = random.Random(seed + 1)
        self.stats = Stats()
        self.lock = threading.Lock()
        self.by_number: dict[str, Citizen] = {}
        self.lines: dict[int, queue.Queue[Citizen]] = {k: queue.Queue() for k in kiosks}
        self.windows: dict[int, WindowDevices] = {}
        self.stop = threading.Event()
        self.arrivals_done = threading.Event()
        self.threads: list[threading.Thread] = []
        self.empty_since: dict[int, float] = {}  # window -> when it last found no one waiting

    # ---- time ---------------------------------------------------------------

    def sleep_hall(self, seconds: float, at_least_real: float = 0.0) -> None:
        self.stop.wait(max(self.clock.real_seconds(seconds), at_least_real))

    def sleep_until(self, hall_time: float) -> None:
        delay = self.clock.real_seconds(hall_time - self.clock.now())
        if delay > 0:
            self.stop.wait(delay)

    # ---- running ------------------------------------------------------------

    def start(self) -> None:
        self._spawn("arrivals", self._arrivals)
        for number in self.kiosks:
            self._spawn(f"kiosk-{number}", self._kiosk, number)

    def add_window(self, devices: WindowDevices) -> None:
        self.windows[devices.number] = devices
        self._spawn(f"clerk-{devices.number}", self._clerk, devices)

    def _spawn(self, name: str, target: Callable[..., object], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=f"crowd-{name}", daemon=True)
        thread.start()
        self.threads.append(thread)

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(5)

    @property
    def outstanding(self) -> int:
        """Tickets the crowd holds that are not finished, skipped or given up."""
        with self.lock:
            return sum(1 for c in self.by_number.values() if not c.done)

    def diagnosis(self) -> str:
        """Why the day is not over yet (for the progress line)."""
        last = self.citizens[-1].arrives if self.citizens else 0.0
        busy = sorted(w for w in self.windows if self.empty_since.get(w, 0.0) <= last)
        with self.lock:
            held = sorted(n for n, c in self.by_number.items() if not c.done)
        queued = sum(q.qsize() for q in self.lines.values())
        return (
            f"arrivals {'done' if self.arrivals_done.is_set() else 'coming'}, "
            f"in kiosk lines {queued}, held {held[:6]}, windows not yet idle {busy[:8]}"
        )

    def finished(self) -> bool:
        """The day is over: everyone came, every ticket held was dealt with, and every
        window has since found nobody waiting."""
        if not self.arrivals_done.is_set() or any(not q.empty() for q in self.lines.values()):
            return False
        if self.outstanding:
            return False
        last_arrival = self.citizens[-1].arrives if self.citizens else 0.0
        return all(self.empty_since.get(w, 0.0) > last_arrival for w in self.windows)

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
        before = len(devices.printer.wait_for_tickets(0))  # every ticket cut so far
        method = citizen.method if (citizen.method != "pcsc" or devices.card) else "sam"
        card = f"pcsc:{citizen.uid}" if method == "pcsc" else f"sam:{citizen.holder.id_number}"
        if method != "typed" and card == devices.last_card:
            # the same card again (a third try): it must have been away long enough
            again = devices.card_gone_at + SAME_CARD_AGAIN_S[method]
            time.sleep(max(0.0, again - time.monotonic()))
        if citizen.appointment:
            devices.keys.tap("KEY_A")  # 预约: the appointment lane
        devices.keys.tap(self.service_keys[citizen.service])
        if method == "typed":
            digits = [f"KEY_{c}" for c in citizen.holder.id_number]
            devices.keys.type(*digits, "KEY_ENTER", gap_s=0.002)
        elif method == "pcsc":
            assert devices.card is not None
            devices.card.insert(citizen.uid)
        else:
            devices.sam.present(citizen.holder)
        try:
            ticket = devices.printer.wait_for_tickets(before + 1, timeout=4.0)[-1]
        except AssertionError:
            ticket = None
        if method == "pcsc" and devices.card:
            devices.card.remove()
            devices.last_card, devices.card_gone_at = card, time.monotonic()
            time.sleep(0.6)  # pcscd looks every 400 ms: it must see the reader empty
        elif method == "sam":
            devices.sam.remove()
            devices.last_card, devices.card_gone_at = card, time.monotonic()
            time.sleep(0.12)  # the SAM reader looks every 50 ms

        with self.lock:
            if ticket is None:
                self.stats.kiosk_failures += 1
                log.warning("kiosk gave citizen %d nothing", citizen.key)
                return
            big = [line.text.strip() for line in ticket.lines if line.width >= 3]
            if not big:
                self.stats.slips += 1  # 额满: the quota slip
                return
            citizen.number = big[0]
            self.by_number[citizen.number] = citizen
            self.stats.printed += 1

    # ---- clerks at windows --------------------------------------------------

    def _clerk(self, w: WindowDevices) -> None:
        led = w.led
        try:
            if w.staff_digits and w.pin:
                # staff number, Enter; the LED asks for the PIN; PIN, Enter
                w.keys.type(*[f"KEY_KP{d}" for d in w.staff_digits], "KEY_KPENTER")
                led.wait_for(lambda t: t == PIN_PROMPT, timeout=10)
                w.keys.type(*[f"KEY_KP{d}" for d in w.pin], "KEY_KPENTER")
                led.wait_for(lambda t: "号窗口 " in t, timeout=10)
                time.sleep(1.05)  # the call key is the login key: its lockout
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
    ) -> str:
        """Press a key; the first text the LED then shows that answers it.

        The LED also changes by itself (a notice going back to the idle text after
        3 s): a clerk looks for the change the key should cause, not just any change.
        """
        seen = len(w.led.history)
        w.keys.tap(key)
        deadline = time.monotonic() + timeout
        with w.led.changed:
            while time.monotonic() < deadline:
                for shown in w.led.history[seen:]:
                    if answer(shown.text):
                        return shown.text
                seen = len(w.led.history)
                w.led.changed.wait(0.05)
        return w.led.text

    def _serve_next(self, w: WindowDevices) -> None:
        shown = self._press_and_watch(
            w, "KEY_KPENTER", lambda t: bool(CALLED.search(t)) or "暂无" in t or "暂停" in t
        )
        called = CALLED.search(shown)
        if not called or called.group(2) != str(w.number):
            self.empty_since[w.number] = self.clock.now()
            self.sleep_hall(60, at_least_real=1.1)  # nobody waiting: look again in a minute
            return
        with self.lock:
            self.stats.calls_by_window[w.number] = self.stats.calls_by_window.get(w.number, 0) + 1
        citizen = self._citizen(called.group(1))
        if citizen is None or citizen.no_show:
            self.sleep_hall(120)
            self._press_and_watch(w, "KEY_KPPLUS", timeout=2.0)  # recall
            self.sleep_hall(120)
            self._press_and_watch(w, "KEY_KPMINUS", _idle)  # skip: 过号
            with self.lock:
                self.stats.no_shows += 1
                if citizen is not None:
                    citizen.done = True
            return
        self.sleep_hall(citizen.minutes * 60)
        if citizen.second_service and citizen.second_service in w.service_keys:
            target = w.service_keys[citizen.second_service]
            citizen.second_service = None  # 三证联办: the same number goes on
            citizen.minutes = max(1.0, citizen.minutes * 0.6)
            w.keys.type("KEY_KPSLASH", *[f"KEY_KP{d}" for d in target], gap_s=0.02)
            self._press_and_watch(w, "KEY_KPENTER", _idle)
            with self.lock:
                self.stats.transfers += 1
            return
        self._press_and_watch(w, "KEY_KPDOT", _idle)  # finish: the rating pad lights up
        with self.lock:
            citizen.done = True
            self.stats.served += 1
        if citizen.rating is not None:
            time.sleep(0.15)
            w.rating.tap(RATING_KEYS[5 - citizen.rating])
            if citizen.rating <= 2:
                time.sleep(0.05)
                w.rating.tap(RATING_KEYS[citizen.reason])
            with self.lock:
                self.stats.ratings += 1
        if self.rng.random() < self.scenario.breaks:
            self._press_and_watch(w, "KEY_KPASTERISK")
            self.sleep_hall(self.rng.uniform(600, 1200))
            self._press_and_watch(w, "KEY_KPASTERISK")
            with self.lock:
                self.stats.breaks += 1

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


def _idle(text: str) -> bool:
    """The LED shows no call: the window is free (or a notice)."""
    return not CALLED.search(text)


def hall_time(scenario: Scenario, tz: ZoneInfo, minutes_before: float = 5) -> float:
    """When the simulated clock starts: a few minutes before the doors open."""
    start = datetime.combine(scenario.day, scenario.opens, tz) - timedelta(minutes=minutes_before)
    return start.timestamp()
