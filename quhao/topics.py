"""Every MQTT topic of the wire contract (docs/protocol.md), in one place."""

from __future__ import annotations


class Topics:
    def __init__(self, site: str) -> None:
        self.root = f"quhao/{site}"

    def request(self, device: str, action: str) -> str:
        return f"{self.root}/hall/req/{device}/{action}"

    @property
    def request_filter(self) -> str:
        return f"{self.root}/hall/req/+/+"

    def parse_request(self, topic: str) -> tuple[str, str] | None:
        prefix = f"{self.root}/hall/req/"
        if not topic.startswith(prefix):
            return None
        parts = topic[len(prefix) :].split("/")
        return (parts[0], parts[1]) if len(parts) == 2 and all(parts) else None

    def reply(self, device: str) -> str:
        return f"{self.root}/reply/{device}"

    def window_state(self, window: int | str) -> str:
        return f"{self.root}/window/{window}/state"

    def window_profile(self, window: int | str) -> str:
        return f"{self.root}/window/{window}/profile"

    @property
    def hall_state(self) -> str:
        return f"{self.root}/hall/state"

    def event(self, event_type: str) -> str:
        return f"{self.root}/event/{event_type}"

    def availability(self, device: str) -> str:
        return f"{self.root}/device/{device}/availability"

    def status(self, device: str) -> str:
        return f"{self.root}/device/{device}/status"
