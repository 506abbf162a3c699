"""The screens' state (screens/state.py), pure: random hall days through the real queue
engine, its public events and window states fed to the view as the hall publishes them.

- the people ahead of every waiting ticket, as the view folds them from the events,
  equal the engine's own order (priority lane first), after every step — whether a
  step's window states come before its events (as the hall publishes them) or after;
- a called ticket's page says its window; the board's calls name the window;
- garbage (any bytes, any JSON, on any topic) never raises and changes nothing.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hall.engine import Engine
from hall.views import hall_state, public_event, window_profile, window_state
from quhao.config import load
from quhao.wire import encode
from screens.state import HallView

CONFIG = load(Path(__file__).parent / "sites" / "screens.toml")
START = datetime(2026, 11, 23, 9, 0, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()
COUNTERS = ["counter-W2", "counter-W3", "counter-W4"]  # tax, enquiry, medical
SERVICES = ["tax", "enquiry", "medical"]

actions = st.lists(
    st.one_of(
        st.tuples(st.just("issue"), st.sampled_from(SERVICES), st.booleans()),
        st.tuples(
            st.sampled_from(["call", "recall", "skip", "finish"]),
            st.sampled_from(COUNTERS),
            st.just(False),
        ),
        st.tuples(st.just("transfer"), st.sampled_from(COUNTERS), st.sampled_from(SERVICES)),
        st.tuples(st.just("reinstate"), st.sampled_from(COUNTERS), st.integers(0, 30)),
        st.tuples(st.just("void"), st.just("kiosk-K1"), st.integers(0, 30)),
    ),
    max_size=60,
)


def engine_ahead(engine: Engine, ticket_id: str) -> int:
    ticket = engine.tickets[ticket_id]
    day, service, priority = ticket.queue_day, ticket.service, ticket.priority is not None
    entry = (*ticket.order, ticket.id)
    prio = engine.queues.get((day, service, True), [])
    if priority:
        return prio.index(entry)
    return len(prio) + engine.queues.get((day, service, False), []).index(entry)


class Hall:
    """The engine and what the hall would publish from it, fed to a view."""

    def __init__(self) -> None:
        self.engine = Engine(CONFIG, b"0123456789abcdef0123")
        self.view = HallView(CONFIG)
        self.view.set_connected(True)
        self.now = START
        self.issued: list[str] = []
        for number in CONFIG.windows:  # what a new subscriber gets: retained states
            self.feed(f"window/{number}/state", window_state(self.engine, number), True)
            self.feed(f"window/{number}/profile", window_profile(self.engine, number), True)
        self.feed("hall/state", hall_state(self.engine, self.now), True)

    def feed(self, topic: str, payload: object, retained: bool = False) -> None:
        changes = self.view.feed(topic, encode(payload), retained, self.now)
        assert changes.problem is None, changes.problem

    def act(
        self, device: str, action: str, payload: dict[str, object], states_first: bool = True
    ) -> None:
        """One request; its window states and events fed to the view in the hall's order
        (states first), or events first (a reader must not depend on it)."""
        self.now += 7.0
        outcome = self.engine.handle(device, action, payload, self.now)
        windows = sorted(
            {
                self.engine.terminals[e.data["terminal"]].window
                for e in outcome.events
                if e.data.get("terminal") in self.engine.terminals
            }
        )
        states = [(f"window/{n}/state", window_state(self.engine, n)) for n in windows]
        events = [(f"event/{e.type}", public_event(self.engine, e)) for e in outcome.events]
        for topic, payload_out in states + events if states_first else events + states:
            self.feed(topic, payload_out)
        if outcome.events:
            self.feed("hall/state", hall_state(self.engine, self.now))
        if action == "issue" and not outcome.error:
            self.issued.append(outcome.response["ticket"]["id"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions, st.lists(st.booleans(), min_size=60, max_size=60))
def test_people_ahead_follow_the_engines_queue_order(
    steps: list[tuple[str, str, object]], orders: list[bool]
) -> None:
    hall = Hall()
    for (kind, who, arg), states_first in zip(steps, orders, strict=False):
        if kind == "issue":
            payload: dict[str, object] = {"service": who, "person": None}
            if arg:
                payload["priority"] = "appointment"
            hall.act("kiosk-K1", "issue", payload, states_first)
        elif kind == "transfer":
            hall.act(who, "transfer", {"service": arg}, states_first)
        elif kind in ("reinstate", "void"):
            if hall.issued:
                ticket = hall.issued[int(str(arg)) % len(hall.issued)]
                hall.act(who, kind, {"ticket": ticket}, states_first)
        else:
            hall.act(who, kind, {}, states_first)
        for ticket_id, ticket in hall.engine.tickets.items():
            page = hall.view.ticket(ticket_id)
            if ticket.status.value == "waiting":
                assert page["status"] == "waiting"
                assert page["ahead"] == engine_ahead(hall.engine, ticket_id), ticket_id
                assert page["service"] == ticket.service
            elif ticket.status.value == "called":
                assert (page["status"], page["window"]) == ("called", ticket.window)
            else:
                assert page["status"] == ticket.status.value
    for call in hall.view.board()["calls"]:
        assert call["window"] in CONFIG.windows


topics = st.sampled_from(
    [
        "hall/state",
        "window/2/state",
        "window/2/profile",
        "window/0/state",
        "window/x/state",
        "event/ticket.called",
        "event/ticket.issued",
        "event/ticket.finished",
        "event/nope",
        "device/hall/availability",
    ]
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    topics, st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode()))
)
def test_garbage_never_raises_and_changes_nothing(topic: str, payload: bytes) -> None:
    hall = Hall()
    hall.act("kiosk-K1", "issue", {"service": "tax", "person": None})
    hall.act("counter-W2", "call", {})
    before = (hall.view.board(), hall.view.window(2, hall.now), hall.view.ticket(hall.issued[0]))
    changes = hall.view.feed(topic, payload, False, hall.now)
    after = (hall.view.board(), hall.view.window(2, hall.now), hall.view.ticket(hall.issued[0]))
    if changes.problem is not None or changes.empty:
        assert before == after


def test_a_recall_is_a_call_again_and_a_retained_state_is_no_call() -> None:
    hall = Hall()
    hall.act("kiosk-K1", "issue", {"service": "tax", "person": None})
    hall.act("counter-W2", "call", {})
    hall.act("counter-W2", "recall", {})
    calls = hall.view.board()["calls"]
    assert [(c["window"], c["recall"]) for c in calls] == [(2, True), (2, False)]
    # a reconnect: the same states again, retained — no new call
    hall.feed("window/2/state", window_state(hall.engine, 2), retained=True)
    assert len(hall.view.board()["calls"]) == 2


def test_the_rating_prompt_opens_on_finish_and_closes_when_rated_or_late() -> None:
    hall = Hall()
    hall.act("kiosk-K1", "issue", {"service": "tax", "person": None})
    hall.act("counter-W2", "call", {})
    hall.act("counter-W2", "finish", {})
    ticket = hall.issued[0]
    assert hall.view.rating_open(2, ticket, hall.now)
    assert not hall.view.rating_open(3, ticket, hall.now)
    assert not hall.view.rating_open(2, ticket, hall.now + CONFIG.rules.rating_timeout_s + 1)
    hall.act("counter-W2", "rate", {"ticket": ticket, "level": 4})
    assert not hall.view.rating_open(2, ticket, hall.now)
    rating = hall.view.window(2, hall.now)["rating"]
    assert rating is not None and rating["rated"] == 4  # 感谢您的评价 for a moment


def test_a_ticket_the_view_never_saw_shows_its_service_count_as_approximate() -> None:
    hall = Hall()
    hall.act("kiosk-K1", "issue", {"service": "tax", "person": None})
    hall.act("kiosk-K1", "issue", {"service": "tax", "person": None})
    late = HallView(CONFIG)  # started after the ticket was issued
    late.feed("hall/state", encode(hall_state(hall.engine, hall.now)), True, hall.now)
    page = late.ticket(hall.issued[1])
    assert (page["status"], page["ahead"], page["approximate"]) == ("unknown", 1, True)
    assert page["service"] == "tax"
