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

    @property
    def feed(self) -> str:
        """The durable feed to the city (hall/feed.py): events in sequence, QoS 1."""
        return f"{self.root}/feed"

    @property
    def feed_replay(self) -> str:
        """The hall's answers to replay requests: a topic of their own, so the city can
        stop taking the live feed while it catches up and still get them."""
        return f"{self.feed}/replay"

    @property
    def feed_request(self) -> str:
        """Where the city (through its bridge) asks for the events after a sequence."""
        return f"{self.root}/feed/req"

    def availability(self, device: str) -> str:
        return f"{self.root}/device/{device}/availability"

    def status(self, device: str) -> str:
        return f"{self.root}/device/{device}/status"


# The city broker's side of the feed: each hall's bridge maps `quhao/{site}/feed…` to
# `city/halls/{site}/feed…` (docs/city.md).
CITY_ROOT = "city/halls"


def city_feed(site: str) -> str:
    return f"{CITY_ROOT}/{site}/feed"


def city_feed_replay(site: str) -> str:
    return f"{CITY_ROOT}/{site}/feed/replay"


def city_feed_request(site: str) -> str:
    return f"{CITY_ROOT}/{site}/feed/req"


CITY_FEED_FILTER = f"{CITY_ROOT}/+/feed"
CITY_REPLAY_FILTER = f"{CITY_ROOT}/+/feed/replay"


def parse_city_feed(topic: str) -> str | None:
    """The site a city feed topic (live or replay) names, or None if it is not one."""
    parts = topic.split("/")
    if len(parts) < 4 or f"{parts[0]}/{parts[1]}" != CITY_ROOT or parts[3] != "feed":
        return None
    if len(parts) == 4 or (len(parts) == 5 and parts[4] == "replay"):
        return parts[2] or None
    return None
