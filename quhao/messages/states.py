"""Retained states: what the hall keeps on the broker for displays, counters and screens
(`window/{n}/state`, `window/{n}/profile`, `hall/state`, `device/hall/status`) and every
daemon's `device/{name}/availability`. A reader decodes the last one it got with
`Model.model_validate(obj)`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from quhao.messages.base import Seconds, TerminalStatus, Wire


class TerminalState(Wire):
    """One caller position at a window (two for 一窗双岗)."""

    device: str
    status: TerminalStatus
    ticket: str | None = Field(description="the number being served")
    ticket_id: str | None
    service: str | None
    called_at: Seconds | None = Field(description="changes on every recall")
    staff: str | None
    staff_name: str | None
    since: Seconds = Field(description="when the status last changed")


class WindowState(Wire):
    """`window/{n}/state`: the window as its display shows it. With two terminals the
    top-level ticket is the most recent call; `terminals` has each one."""

    window: int
    name: str
    status: TerminalStatus = Field(description="serving if any terminal serves, else idle, …")
    ticket: str | None
    ticket_id: str | None
    service: str | None
    service_name: str | None
    called_at: Seconds | None
    staff: str | None
    staff_name: str | None
    since: Seconds | None
    services: list[str]
    terminals: list[TerminalState]


class Clerk(Wire):
    id: str
    name: str
    photo: str
    pledge: str
    services: list[str] = Field(description="service names")
    # Absent in profiles retained by a hall from before these fields: readers default them.
    contact: str = Field(default="", description="how to reach the clerk (五公开)")
    party_member: bool = Field(default=False, description="共产党员岗: show the badge")


class WindowProfile(Wire):
    """`window/{n}/profile`: the 五公开 of an evaluator screen — who serves here."""

    window: int
    name: str
    services: list[str] = Field(description="service names")
    staff: list[Clerk]


class ServiceState(Wire):
    id: str
    name: str
    prefix: str
    waiting: int
    estimated_wait_s: int
    issued: int = Field(description="the last number issued today")


class WindowSummary(Wire):
    window: int
    status: TerminalStatus
    ticket: str | None


class HallState(Wire):
    """`hall/state`: services with waiting counts and estimated waits; windows."""

    site: str
    name: str
    day: str = Field(description="the hall's local day, YYYY-MM-DD")
    open: bool = Field(description="whether tickets are issued now")
    updated: Seconds
    services: list[ServiceState]
    windows: list[WindowSummary]


class HallStatus(Wire):
    """`device/hall/status`: the hall's health, published when it changes."""

    state: Literal["ok", "storage_failed"]
    disk: Literal["ok", "low"]
    disk_free_mb: int | None = None
    detail: str | None = Field(default=None, description="why storage failed")
    at: Seconds


class Availability(Wire):
    """`device/{name}/availability`: offline is also the Last Will."""

    state: Literal["online", "offline"]


STATES: dict[str, type[Wire]] = {
    "window": WindowState,
    "profile": WindowProfile,
    "hall": HallState,
    "hall-status": HallStatus,
    "availability": Availability,
}
# Where each is published, under quhao/{site}/ (quhao.topics has the functions).
STATE_TOPICS = {
    "window": "window/{n}/state",
    "profile": "window/{n}/profile",
    "hall": "hall/state",
    "hall-status": "device/hall/status",
    "availability": "device/{device}/availability",
}
