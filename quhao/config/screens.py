"""`[screens]`: the screens daemon (`quhao screens`) — where it listens, the public base
URL printed in ticket QR codes, and the boards configured per floor or department.

```toml
[screens]
listen = "0.0.0.0"
port = 8080
public_url = "http://hall.local:8080"   # QR codes: {public_url}/t/{ticket}/{token}

[screens.boards.floor2]                 # /board/floor2
title = "二楼 社保医保"
services = ["social", "medical"]        # its services (and the windows serving them)
windows = [5, 6, 7]                     # and/or these windows
```
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

BOARD_NAME = r"^[a-z0-9_-]{1,32}$"


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Board(_Table):
    """A board for part of the hall: the windows of its services plus its windows."""

    title: StrictStr = ""
    services: tuple[StrictStr, ...] = ()
    windows: tuple[StrictInt, ...] = ()


class Screens(_Table):
    listen: StrictStr = "127.0.0.1"
    port: Annotated[StrictInt, Field(ge=1, le=65535, description="must be 1 to 65535")] = 8080
    # The address citizens' phones reach the daemon at; empty: tickets carry no page URL.
    public_url: Annotated[
        StrictStr,
        Field(
            pattern=r"^(https?://[^\s/?#]+(/[^\s?#]*)?)?$",
            description="an http:// or https:// URL without query, or empty",
        ),
    ] = ""
    boards: dict[
        Annotated[
            str,
            Field(pattern=BOARD_NAME, description="lower-case letters, digits, - and _ only"),
        ],
        Board,
    ] = Field(default_factory=dict)
    # Browsers connected for live updates at once, over every page; more are told 503.
    max_clients: Annotated[StrictInt, Field(ge=1, le=100_000)] = 5000
    # The windows whose screens may take a touch rating (the daemon holds their
    # rater-W{n} credentials); empty: every window.
    rating_windows: tuple[StrictInt, ...] = ()


def check_screens(screens: Screens, data: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    """The boards name services and windows the site has (key path, message each)."""
    services = {s.id for s in data.get("service_list", ())}
    windows = {w.number for w in data.get("window_list", ())}
    problems: list[tuple[tuple[Any, ...], str]] = []
    for name, board in screens.boards.items():
        for sid in board.services:
            if services and sid not in services:
                problems.append(
                    (("screens", "boards", name, "services"), f"unknown service {sid!r}")
                )
        for number in board.windows:
            if number not in windows:
                problems.append((("screens", "boards", name, "windows"), f"no window {number}"))
    for number in screens.rating_windows:
        if number not in windows:
            problems.append((("screens", "rating_windows"), f"no window {number}"))
    return problems
