"""The online hall's bookings (网上预约) of a simulated day: the crowd's "appointment"
citizens booked a half-hour slot, and the file `quhao appointments import` reads.

Most booked citizens come near their slot (inside the check-in window, which opens 30
minutes before the start and closes 15 after); some come hours early or late (the kiosk
tells them so and they take an ordinary ticket); a few booked people never come (no-shows).
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from quhao.idnumber import with_check
from simulators.scenario import Scenario

if TYPE_CHECKING:
    from simulators.crowd import Citizen

SLOT_S = 1800
EARLY, LATE = 0.12, 0.08  # shares of booked citizens who come hours early, hours late
NO_SHOWS = 5  # booked people who never come
OFF_SLOT_S = (2 * 3600, 3 * 3600)  # how far from the slot the early and late ones come
OFF_SLOT_LAST_S = 3600


@dataclass(frozen=True)
class Booking:
    ref: str
    id_number: str
    service: str
    start: float  # hall time
    kind: str  # on_time | early | late | no_show


def book(citizens: list[Citizen], scenario: Scenario, tz: ZoneInfo, seed: int) -> list[Booking]:
    """Give each appointment citizen a slot (`citizen.slot`), add the no-shows' bookings.

    Its own random stream: the day's plan of arrivals stays what it is without bookings."""
    rng = random.Random(f"{seed}-bookings")
    opens, closes = scenario.at(scenario.opens, tz), scenario.at(scenario.closes, tz)
    bookings: list[Booking] = []
    for citizen in (c for c in citizens if c.appointment):
        if citizen.method == "pcsc":
            citizen.method = "sam"  # a PC/SC card identifies only itself: no booking matches
        roll, off = rng.random(), rng.uniform(*OFF_SLOT_S)
        # the early and late ones spend seconds of real time (many hall minutes) at the
        # kiosk before they choose: not in the last hour, or tickets stop meanwhile
        if citizen.arrives > closes - OFF_SLOT_LAST_S:
            roll = 1.0
        if roll < EARLY and citizen.arrives + off + SLOT_S < closes:
            kind, start = "early", citizen.arrives + off
        elif roll < EARLY + LATE and citizen.arrives - off > opens:
            kind, start = "late", citizen.arrives - off
        else:  # comes up to 20 minutes before the start: well inside the check-in window
            kind, start = "on_time", citizen.arrives + rng.uniform(0, 20 * 60)
        start -= start % 60
        citizen.slot = (start, start + SLOT_S)
        ref = f"WB{scenario.day:%Y%m%d}-{len(bookings) + 1:04d}"
        bookings.append(Booking(ref, citizen.holder.id_number, citizen.service, start, kind))
    services = list(scenario.loads)
    for n in range(NO_SHOWS):
        born = date(scenario.day.year - rng.randint(20, 70), rng.randint(1, 12), rng.randint(1, 28))
        number = with_check(f"440112{born:%Y%m%d}{n:03d}")  # nobody of the crowd
        start = opens + rng.uniform(0, closes - opens - SLOT_S)
        start -= start % 60
        ref = f"WB{scenario.day:%Y%m%d}-{len(bookings) + 1:04d}"
        bookings.append(Booking(ref, number, rng.choice(services), start, "no_show"))
    return bookings


def write_csv(bookings: list[Booking], path: Path, tz: ZoneInfo) -> Path:
    """The online hall's export, with its Chinese column names (no names: never used)."""

    def local(at: float) -> str:
        return datetime.fromtimestamp(at, tz).strftime("%Y-%m-%d %H:%M")

    with path.open("w", encoding="utf-8", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["身份证号", "事项", "开始时间", "结束时间", "预约号"])
        for b in bookings:
            out.writerow([b.id_number, b.service, local(b.start), local(b.start + SLOT_S), b.ref])
    return path
