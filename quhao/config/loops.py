"""The site file's `[appointments]`, `[cases]` and `[scoring]` tables: the loops that close
after a ticket — appointment check-in, the follow-up of every bad rating (好差评), and the
monthly performance score (电子监察). docs/configuration.md and docs/supervision.md.

Its own module so the site model only hooks it in.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, Strict, StrictInt, StrictStr, field_validator


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Appointments(_Table):
    """A booked citizen's card at a kiosk checks in within this window around the slot."""

    early_minutes: Annotated[StrictInt, Field(ge=0, le=720, description="must be 0 to 720")] = 30
    late_minutes: Annotated[StrictInt, Field(ge=0, le=720, description="must be 0 to 720")] = 15
    # A booking may be imported this many days ahead at most (a typo in a year stays out).
    max_days_ahead: Annotated[StrictInt, Field(ge=1, le=366, description="must be 1 to 366")] = 60


class Cases(_Table):
    """The follow-up case every 不满意/非常不满意 opens."""

    # due at the end of the Nth working day after the rating's day
    deadline_working_days: Annotated[
        StrictInt, Field(ge=1, le=60, description="must be 1 to 60")
    ] = 5
    # `alert.case_due` this long before the deadline
    remind_before_hours: Annotated[
        StrictInt, Field(ge=0, le=24 * 30, description="must be 0 to 720 hours")
    ] = 24
    # public holidays that are not working days, as "2026-10-01"
    holidays: tuple[date, ...] = ()
    # weekend days worked instead (调休), as "2026-09-27"
    workdays: tuple[date, ...] = ()
    # staff ids who decide appeals (申诉); a clerk never decides on their own rating
    supervisors: tuple[StrictStr, ...] = ()
    # settled cases leave the hall's live state this long after they opened (the
    # database keeps them; the report and `quhao cases show` read it)
    keep_days: Annotated[StrictInt, Field(ge=7, le=3660, description="must be 7 to 3660")] = 90

    @field_validator("holidays", "workdays", mode="before")
    @classmethod
    def _dates(cls, value: object) -> object:
        # TOML has dates of its own; a quoted "2026-10-01" is taken too
        if isinstance(value, list):
            return [date.fromisoformat(v) if isinstance(v, str) else v for v in value]
        return value


Weight = Annotated[float, Strict(), Field(ge=0, le=100, description="must be 0 to 100")]


class Scoring(_Table):
    """The performance score (0–100) of a clerk or a department for a period: a weighted
    mean of part scores, each 0–100 (docs/supervision.md, "The score")."""

    satisfaction: Weight = 40  # the satisfaction rate
    followup: Weight = 20  # bad-rating cases resolved on time
    wait: Weight = 20  # tickets served within the service's max wait
    speed: Weight = 20  # service time against the service's expected minutes

    @property
    def weights(self) -> dict[str, float]:
        return {
            "satisfaction": self.satisfaction,
            "followup": self.followup,
            "wait": self.wait,
            "speed": self.speed,
        }
