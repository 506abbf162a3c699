"""The simulated hall day's parameters, in one place, and the rules derived from them.

A `Scenario` is everything the crowd and the demo need to know about a day: opening
hours, the load per service, service times, the surge and its plan of windows,
the kiosks and their readers, the arrival profile, the share of each kind of citizen,
and the rating model. `surge_day` and `short_day` are the two days `quhao demo` runs.

Derived here, so that every figure has one source:

- **staffing** (`staffing`): the windows a normal service opens with are what its
  busiest hour needs, as a hall manager plans from the expected load: the peak
  arrival rate (from the arrival profile) times the mean service time, over a target
  utilisation (`Scenario.utilisation`, 0.8), rounded up. The surge service follows its
  plan instead (windows opened live during the day).
- **ratings** (`rating_after`): a citizen's rating depends on how long they waited
  (see `Scenario.patience_min`): each has a base level drawn from `ratings` (how the
  service itself went), and every `patience_step_min` waited beyond `patience_min`
  lowers it by one level; a bad rating given after a long wait names the wait
  (等候时间长) as its reason.

Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime
from datetime import time as dtime
from zoneinfo import ZoneInfo

# How a service time is drawn: lognormal around the service's mean minutes.
SERVICE_TIME_SIGMA = 0.45
WAIT_REASON = 0  # index of 等候时间长 in [texts] rating_reasons


@dataclass(frozen=True)
class Scenario:
    name: str
    day: date
    opens: dtime  # tickets are issued from here ...
    closes: dtime  # ... to here (the hall's [site] hours); everyone holding one is served
    loads: dict[str, int]  # citizens a day per service
    minutes: dict[str, float]  # mean service time per service (hall minutes)
    windows: dict[str, int]  # windows per service at opening (see `staffing`)
    kiosks: int = 14
    # Kiosks K1..K{pcsc_kiosks} also have a PC/SC reader (vpcd). pcscd looks at a vpcd
    # reader every 400 ms of real time, so a PC/SC citizen holds a kiosk about a second
    # of real time (minutes of hall time at ×300): few citizens use one.
    pcsc_kiosks: int = 2
    pcsc: float = 0.05  # share of citizens at a PC/SC kiosk who use its PC/SC reader
    surge_service: str | None = None
    surge_plan: tuple[tuple[dtime, int], ...] = ()  # (from, windows for the surge service)
    # Arrivals: (share, centre, spread) of each peak as fractions of the opening hours; the
    # rest arrive uniformly. Nobody arrives in the last `last_call_min` minutes.
    peaks: tuple[tuple[float, float, float], ...] = ((0.45, 0.22, 0.12), (0.40, 0.70, 0.12))
    last_call_min: float = 5.0
    elderly: float = 0.15
    appointment: float = 0.04
    second_service: float = 0.06
    no_show: float = 0.05
    third_try: float = 0.02
    typed: float = 0.15
    breaks: float = 0.02  # chance a clerk takes a break after a citizen
    # The rating a citizen would give after a short wait (level, weight); None: no rating.
    ratings: tuple[tuple[int | None, float], ...] = (
        (5, 0.66),
        (4, 0.16),
        (3, 0.06),
        (2, 0.03),
        (1, 0.02),
        (None, 0.07),
    )
    patience_min: float = 30.0  # a wait up to this costs no satisfaction
    patience_step_min: float = 30.0  # every further step of waiting: one level lower
    utilisation: float = 0.8  # busiest-hour utilisation a normal service is staffed for

    def at(self, moment: dtime, tz: ZoneInfo) -> float:
        return datetime.combine(self.day, moment, tz).timestamp()

    @property
    def open_hours(self) -> float:
        return (
            self.closes.hour * 60 + self.closes.minute - self.opens.hour * 60 - self.opens.minute
        ) / 60


def peak_share_per_hour(scenario: Scenario) -> float:
    """The largest share of a day's arrivals that comes in one hour (at the busiest
    moment of the arrival profile, as a rate)."""
    uniform = 1.0 - sum(share for share, _, _ in scenario.peaks)

    def density(x: float) -> float:
        return uniform + sum(
            share
            * math.exp(-0.5 * ((x - centre) / spread) ** 2)
            / (spread * math.sqrt(2 * math.pi))
            for share, centre, spread in scenario.peaks
        )

    # the planner draws again when a draw falls outside the hours: renormalise
    inside = uniform + sum(
        share * (_phi((1 - centre) / spread) - _phi(-centre / spread))
        for share, centre, spread in scenario.peaks
    )
    span_h = scenario.open_hours - scenario.last_call_min / 60
    return max(density(i / 200) for i in range(201)) / inside / span_h


def _phi(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def windows_needed(scenario: Scenario, service: str) -> int:
    """Windows for the service's busiest hour at the target utilisation (at least one)."""
    mean_minutes = scenario.minutes[service] * math.exp(SERVICE_TIME_SIGMA**2 / 2)
    busy = scenario.loads[service] * peak_share_per_hour(scenario) * mean_minutes / 60
    return max(1, math.ceil(busy / scenario.utilisation))


def staffing(scenario: Scenario) -> dict[str, int]:
    """Windows per service at opening: derived from the load for normal services; the
    surge service opens with its plan's first figure."""
    return {
        service: scenario.windows.get(service, 1)
        if service == scenario.surge_service
        else windows_needed(scenario, service)
        for service in scenario.loads
    }


def rating_after(base: int | None, waited_min: float, scenario: Scenario) -> int | None:
    """The level a citizen gives after waiting `waited_min` (None: gives no rating)."""
    if base is None:
        return None
    over = max(0.0, waited_min - scenario.patience_min)
    return max(1, base - math.ceil(over / scenario.patience_step_min))


def surge_day(day: date) -> Scenario:
    """The surge day: 社保 jumps to ~1,400 citizens; its windows go 8 → 15 → 32."""
    others = {
        "medical": 70,
        "housing_fund": 45,
        "real_estate": 30,
        "tax": 55,
        "business": 40,
        "household": 50,
        "exit_entry": 35,
        "civil": 25,
        "enquiry": 60,
    }
    scenario = Scenario(
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
        windows={"social": 8},
        kiosks=16,
        pcsc_kiosks=2,
        surge_service="social",
        # the morning queue shows the surge by 09:15; by 10:15 the back office is called in
        surge_plan=((dtime(9, 15), 15), (dtime(10, 15), 32)),
    )
    return _staffed(scenario)


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
        pcsc=0.3,
        surge_service="social",
        surge_plan=((dtime(9, 20), 3), (dtime(9, 40), 4)),
        third_try=0.08,
        no_show=0.08,
        second_service=0.08,
        appointment=0.1,
    )


def _staffed(scenario: Scenario) -> Scenario:
    from dataclasses import replace

    return replace(scenario, windows=staffing(scenario))
