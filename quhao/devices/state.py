"""A device's health as last reported: each change is logged once and passed on."""

from __future__ import annotations

import logging
from collections.abc import Callable


class DeviceState:
    def __init__(
        self,
        what: str,
        label: str,
        log: logging.Logger,
        on_change: Callable[[str, str], None] | None = None,
    ) -> None:
        self.what, self.label, self.log = what, label, log
        self.on_change = on_change or (lambda state, detail: None)
        self.state = ""  # nothing reported yet: the first state is always reported

    def set(self, state: str, detail: str = "") -> None:
        if state == self.state:
            return
        (self.log.info if state == "ok" else self.log.warning)(
            "%s: %s %s%s", self.label, self.what, state, f" ({detail})" if detail else ""
        )
        self.state = state
        self.on_change(state, detail)
