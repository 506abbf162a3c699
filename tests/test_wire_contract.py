"""The wire contract: the models (quhao/messages), docs/protocol.md and the hall agree.

- every action, reply, state and event the doc names has a model, and every model is in
  the doc with an example;
- every JSON example in the doc validates against its model and round-trips;
- the doc's field tables are what the models say;
- any well-formed request (hypothesis) round-trips through JSON and passes the hall
  engine's decoding;
- a wrong-typed, missing, unknown or oversized field of any action is `bad_request`
  naming the field, and changes nothing;
- what a real engine, and a real hall over MQTT, answer and publish fits the models.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, get_args

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from hall.engine import _APPLY, ACTIONS, Engine
from hall.snapshot import snapshot
from hall.views import hall_state, public_event, window_profile, window_state
from quhao.config import load
from quhao.messages import (
    ACTION_REPLIES,
    ACTION_REQUESTS,
    ERROR_CODES,
    EVENTS,
    MAX_ABANDONED,
    MAX_AGE,
    MAX_HANDOVER,
    MAX_REASON,
    MAX_RID,
    MAX_TEXT,
    STATES,
    ActionRequest,
    BadRequest,
    CallRequest,
    ErrorReply,
    FinishRequest,
    HandoverRequest,
    IssueRequest,
    LeaseRequest,
    LoginRequest,
    LogoutRequest,
    OfflineTicket,
    PauseRequest,
    Person,
    RateRequest,
    RecallRequest,
    ReinstateRequest,
    ReleaseRequest,
    ResumeRequest,
    SkipRequest,
    StaffProof,
    TicketView,
    TransferRequest,
    VoidRequest,
    decode_event,
    decode_reply,
    decode_request,
    encode,
)
from quhao.messages.appointments import (
    MAX_IMPORT,
    AppointmentImportRequest,
    Booking,
    CheckinRequest,
)
from quhao.messages.doc import render
from quhao.messages.office import CaseAppealRequest, CaseDecideRequest, CaseUpdateRequest
from quhao.messages.replies import ErrorCode
from quhao.staffauth import card_proof
from quhao.topics import Topics
from quhao.wire import error, ok
from tests.helpers import SITE_ID, Recorder, wait_until

ROOT = Path(__file__).parent.parent
DOC = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
SMALL = load(Path(__file__).parent / "sites" / "small.toml")
CONFIG = SMALL.model_copy(  # kiosks may issue offline: `lease` is answered
    update={"devices": SMALL.devices.model_copy(update={"lease_numbers": 20})}
)
SECRET = b"wire-contract-test-secret"
NINE = 1795395600.0  # 2026-11-23 09:00 in Asia/Shanghai
KEY = "ab" * 32

# ---- the doc's examples -----------------------------------------------------

FENCE = re.compile(r"^```json(?: (\S+))?\n(.*?)^```$", re.MULTILINE | re.DOTALL)
EXAMPLES = [(label or "", body) for label, body in FENCE.findall(DOC)]


def model_for(label: str) -> type[BaseModel]:
    """The model an example's label names: request:issue, reply:call, error, ticket,
    state:window, event:ticket.called."""
    kind, _, name = label.partition(":")
    table: dict[str, dict[str, Any]] = {
        "request": ACTION_REQUESTS,
        "reply": ACTION_REPLIES,
        "state": STATES,
        "event": EVENTS,
    }
    if kind == "error":
        return ErrorReply
    if kind == "ticket":
        return TicketView
    return table[kind][name]  # a KeyError names a label without a model


def section(heading: str) -> str:
    """The doc from a heading to the next heading of the same or a higher level."""
    start = DOC.index(f"\n{heading}\n")
    level = heading.split(" ")[0]
    ends = [m.start() for m in re.finditer(rf"^#{{1,{len(level)}}} ", DOC, re.MULTILINE)]
    return DOC[start : min([e for e in ends if e > start + 1] or [len(DOC)])]


def labels(kind: str) -> set[str]:
    return {label.partition(":")[2] for label, _ in EXAMPLES if label.startswith(kind + ":")}


def test_every_json_block_of_the_doc_is_a_labelled_example() -> None:
    assert len(EXAMPLES) == DOC.count("```json") > 40
    assert all(label for label, _ in EXAMPLES), "a ```json block without a model label"


@pytest.mark.parametrize(("label", "body"), EXAMPLES, ids=[label for label, _ in EXAMPLES])
def test_each_example_validates_and_round_trips(label: str, body: str) -> None:
    obj = json.loads(body)
    model = model_for(label)
    if label.startswith("request:"):
        decoded: BaseModel = decode_request(label.partition(":")[2], obj)
    else:
        decoded = model.model_validate(obj)
    assert type(decoded) is model
    encoded = encode(decoded)
    assert encoded == obj, "the example has a key or value its model would not send"
    assert model.model_validate(encoded) == decoded
    assert model.model_validate_json(json.dumps(encoded)) == decoded


def test_every_action_is_modelled_answered_documented_and_exemplified() -> None:
    actions = set(ACTION_REQUESTS)
    assert set(ACTIONS) == actions, "the engine's actions and the models differ"
    assert set(ACTION_REPLIES) == actions
    kiosk = set(re.findall(r"^\*\*`(\w+)`\*\* — ", section("### Kiosk actions"), re.MULTILINE))
    table = section("### Counter actions").split("<!-- generated")[0]
    counter_rows = re.findall(r"^\| `(\w+)`(?: / `(\w+)`)? \|", table, re.MULTILINE)
    counter = {name for row in counter_rows for name in row if name}
    office = set(re.findall(r"^\| `(\w+)` \|", section("### Office actions"), re.MULTILINE))
    assert kiosk | counter | office == actions, "an action the doc describes has no model, or back"
    assert {a for a in actions if ACTION_REQUESTS[a].role == "office"} == office
    assert {a for a in actions if ACTION_REQUESTS[a].role == "kiosk"} == kiosk
    assert labels("request") == actions, "an action without a request example"
    assert labels("reply") == actions, "an action without a reply example"


def test_every_state_and_event_is_modelled_documented_and_exemplified() -> None:
    assert labels("state") == set(STATES)
    assert labels("event") == set(EVENTS)
    # every fact the engine decides: the ones it applies, and two it only reports
    assert set(EVENTS) == set(_APPLY) | {"ticket.refused", "alert.bad_rating"}


def test_error_codes_are_one_list() -> None:
    assert set(get_args(ErrorCode)) == set(ERROR_CODES)
    table = section("### Error codes")
    assert set(re.findall(r"^\| `(\w+)` \|", table, re.MULTILINE)) == set(ERROR_CODES)


def test_the_doc_tables_are_written_from_the_models() -> None:
    assert render(DOC) == DOC, "run: python -m quhao.messages.doc docs/protocol.md"


# ---- any well-formed request ------------------------------------------------

text = st.text(max_size=MAX_TEXT)
rids = st.text(min_size=1, max_size=MAX_RID)
persons = st.builds(
    Person,
    key=st.from_regex(r"[0-9a-f]{16,128}", fullmatch=True),
    age=st.none() | st.integers(0, MAX_AGE),
)
proofs = st.builds(StaffProof, card=text) | st.builds(
    StaffProof, staff=text, pin=st.none() | st.sampled_from(["1111", "2222"]) | text
)


def requests_of(
    model: type[ActionRequest], always: tuple[str, ...] = (), **fields: st.SearchStrategy[Any]
) -> Any:
    """The model with a rid, its required fields (and `always`), and each optional field
    given or left out."""
    required: dict[str, st.SearchStrategy[Any]] = {"rid": rids}
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for name, strategy in fields.items():
        given = name in always or model.model_fields[name].is_required()
        (required if given else optional)[name] = strategy
    return st.fixed_dictionaries(required, optional=optional).map(lambda kw: model(**kw))


CASE_REFS = st.sampled_from(["C20261123-A001", "2026-11-23/A001"]) | text
NOTES = st.text(min_size=1, max_size=MAX_REASON)
REQUESTS = {
    "issue": requests_of(
        IssueRequest,
        service=st.sampled_from(["social", "tax", "enquiry"]) | text,
        person=st.none() | persons,
        priority=st.sampled_from([None, "appointment", "green"]),
        override=st.none() | proofs,
    ),
    "void": requests_of(VoidRequest, ticket=st.sampled_from(["A001", "2026-11-23/A001"]) | text),
    "lease": requests_of(LeaseRequest, service=st.sampled_from(["social", "enquiry"]) | text),
    "handover": requests_of(
        HandoverRequest,
        tickets=st.lists(
            st.builds(
                OfflineTicket,
                rid=rids,
                service=st.sampled_from(["social", "enquiry"]) | text,
                number=st.integers(1, 999_999),
                issued_at=st.floats(NINE - 86400, NINE + 600),
                person=st.none() | persons,
                priority=st.sampled_from([None, "appointment"]),
            ),
            max_size=MAX_HANDOVER,
        ),
        abandoned=st.lists(rids, max_size=MAX_ABANDONED),
    ),
    "release": requests_of(
        ReleaseRequest,
        day=st.sampled_from(["2026-11-23", "2026-11-22"]),
        service=st.sampled_from(["social"]) | text,
    ),
    "call": requests_of(CallRequest, expect=st.none() | st.just("A001") | text),
    "recall": requests_of(RecallRequest),
    "skip": requests_of(SkipRequest),
    "finish": requests_of(FinishRequest),
    "pause": requests_of(PauseRequest),
    "resume": requests_of(ResumeRequest),
    "login": st.one_of(
        requests_of(LoginRequest, ("card",), card=text),
        requests_of(
            LoginRequest, ("staff",), staff=st.sampled_from(["S001", "S002"]) | text, pin=text
        ),
    ),
    "logout": requests_of(LogoutRequest),
    "transfer": requests_of(
        TransferRequest, service=st.sampled_from(["tax", "social"]) | text, ticket=st.none() | text
    ),
    "reinstate": requests_of(ReinstateRequest, ticket=text),
    "rate": requests_of(
        RateRequest,
        ticket=text,
        level=st.none() | st.integers(1, 5),
        reason=st.none() | st.text(max_size=MAX_REASON),
    ),
    "case_update": requests_of(
        CaseUpdateRequest,
        case=CASE_REFS,
        state=st.sampled_from(["contacted", "resolved"]),
        note=NOTES,
        by=proofs,
    ),
    "case_appeal": requests_of(CaseAppealRequest, case=CASE_REFS, note=NOTES, by=proofs),
    "case_decide": requests_of(
        CaseDecideRequest,
        case=CASE_REFS,
        decision=st.sampled_from(["upheld", "rejected"]),
        note=NOTES,
        by=proofs,
    ),
}
REQUESTS["appointment_import"] = requests_of(
    AppointmentImportRequest,
    bookings=st.lists(
        st.builds(
            Booking,
            ref=st.sampled_from(["WB-1", "WB-2"]) | st.text(min_size=1, max_size=64),
            person_key=st.just(KEY),
            service=st.sampled_from(["social", "tax"]) | text,
            start=st.floats(NINE - 86400, NINE + 86400),
            end=st.floats(NINE - 86400, NINE + 2 * 86400),
        ),
        min_size=1,
        max_size=MAX_IMPORT,
    ),
)
REQUESTS["checkin"] = requests_of(CheckinRequest, person=persons)
DEVICE = {"kiosk": "kiosk-K1", "counter": "counter-W1", "office": "office"}
DECODING = ("missing field", "field ", "unknown field")  # how the decoding step words it


def test_there_is_a_strategy_for_every_action() -> None:
    assert set(REQUESTS) == set(ACTION_REQUESTS)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=st.one_of(*REQUESTS.values()))
def test_any_well_formed_request_round_trips_and_is_decoded(request: ActionRequest) -> None:
    as_json = request.model_dump_json(by_alias=True, exclude_unset=True)
    assert type(request).model_validate_json(as_json) == request
    payload = json.loads(as_json)
    assert payload == encode(request)
    decoded = decode_request(request.action, payload)
    assert decoded == request and decoded.model_fields_set == request.model_fields_set
    # The engine decodes it too: whatever it answers, it is not the decoding refusing it.
    engine = Engine(CONFIG, SECRET)
    outcome = engine.handle(DEVICE[request.role], request.action, payload, NINE)
    if outcome.error is not None and outcome.error.code == "bad_request":
        assert not outcome.error.message.startswith(DECODING), outcome.error.message


# ---- abuse: every field of every action -------------------------------------


def busy_engine() -> Engine:
    """A hall with tickets waiting, one being served at window 1, one finished there."""
    engine = Engine(CONFIG, SECRET)
    steps: list[tuple[str, str, dict[str, Any]]] = [
        ("kiosk-K1", "issue", {"service": "social", "person": {"key": f"{n:064x}", "age": 40}})
        for n in range(1, 5)
    ]
    steps += [
        ("counter-W1", "login", {"staff": "S001", "pin": "1111"}),
        ("counter-W1", "call", {}),
        ("counter-W1", "finish", {}),
        ("counter-W1", "call", {}),
    ]
    for n, (device, action, payload) in enumerate(steps):
        assert engine.handle(device, action, payload, NINE + n).error is None
    return engine


PROOF = {"staff": "S001", "pin": "1111"}
# A payload each action would take (the engine may still refuse it by its rules).
VALID: dict[str, dict[str, Any]] = {
    "issue": {
        "service": "social",
        "person": {"key": KEY, "age": 40},
        "priority": None,
        "override": {"staff": "S001", "pin": "1111"},
    },
    "void": {"ticket": "A003"},
    "lease": {"service": "social"},
    "handover": {"tickets": [{"rid": "t-1", "service": "social", "number": 7, "issued_at": NINE}]},
    "release": {"day": "2026-11-23", "service": "social"},
    "call": {"expect": "A002"},
    "recall": {},
    "skip": {},
    "finish": {},
    "pause": {},
    "resume": {},
    "login": {"staff": "S001", "pin": "1111"},
    "logout": {},
    "transfer": {"service": "tax", "ticket": "A002"},
    "reinstate": {"ticket": "A001"},
    "rate": {"ticket": "A001", "level": 4, "reason": "快"},
    "case_update": {"case": "C20261123-A001", "state": "contacted", "note": "回访", "by": PROOF},
    "case_appeal": {"case": "C20261123-A001", "note": "申诉", "by": PROOF},
    "case_decide": {"case": "C20261123-A001", "decision": "upheld", "note": "维持", "by": PROOF},
    "appointment_import": {
        "bookings": [
            {
                "ref": "WB-1",
                "person_key": KEY,
                "service": "social",
                "start": NINE + 3600,
                "end": NINE + 5400,
            }
        ]
    },
    "checkin": {"person": {"key": KEY, "age": 40}},
}
WRONG = {str: 5, int: "5", dict: "x"}  # a value of the wrong JSON type for each kind


def fields_of(action: str) -> list[tuple[str, Any]]:
    """(dotted name, value) of every field in the action's valid payload, nested too,
    and the rid."""
    found: list[tuple[str, Any]] = [("rid", "r-1")]

    def walk(prefix: str, obj: dict[str, Any]) -> None:
        for name, value in obj.items():
            found.append((prefix + name, value))
            if isinstance(value, dict):
                walk(f"{prefix}{name}.", value)

    walk("", VALID[action])
    return found


def changed(payload: dict[str, Any], dotted: str, value: Any = ..., *, drop: bool = False) -> Any:
    """A deep copy of payload with one (dotted) field set to value, or dropped."""
    out = json.loads(json.dumps(payload))
    *path, last = dotted.split(".")
    inner = out
    for part in path:
        inner = inner[part]
    if drop:
        del inner[last]
    else:
        inner[last] = value
    return out


def refused(action: str, payload: dict[str, Any]) -> str:
    """The engine's bad_request message for the payload; asserts nothing changed."""
    engine = busy_engine()
    before = snapshot(engine)
    outcome = engine.handle(DEVICE[ACTION_REQUESTS[action].role], action, payload, NINE + 10)
    assert outcome.error is not None and outcome.error.code == "bad_request", (
        action,
        payload,
        outcome.error and outcome.error.code,
    )
    assert outcome.events == [] and snapshot(engine) == before
    with pytest.raises(BadRequest) as raised:  # and the wire decoding says the same
        decode_request(action, {"rid": "r-1", **payload})
    assert raised.value.message == outcome.error.message
    return outcome.error.message


def test_the_valid_payloads_are_valid() -> None:
    for action, payload in VALID.items():
        assert decode_request(action, {"rid": "r-1", **payload}).rid == "r-1"


@pytest.mark.parametrize("action", sorted(ACTION_REQUESTS))
def test_a_wrong_typed_field_is_refused_naming_it(action: str) -> None:
    for name, value in fields_of(action):
        if name == "rid":
            with pytest.raises(BadRequest, match="field 'rid' must be str"):
                decode_request(action, {**VALID[action], "rid": 5})
            continue
        kind = dict if isinstance(value, dict) else int if isinstance(value, int) else str
        message = refused(action, changed(VALID[action], name, WRONG[kind]))
        assert message.startswith(f"field {name!r} must be "), message


@pytest.mark.parametrize("action", sorted(ACTION_REQUESTS))
def test_a_missing_required_field_is_refused_naming_it(action: str) -> None:
    with pytest.raises(BadRequest, match="missing field 'rid'"):
        decode_request(action, VALID[action])
    model = ACTION_REQUESTS[action]
    for name, _ in fields_of(action):
        *path, last = name.split(".")
        owner: type[BaseModel] = model
        for part in path:
            nested: dict[str, type[BaseModel]] = {"person": Person, "by": StaffProof}
            owner = nested.get(part, StaffProof)
        if name == "rid" or not owner.model_fields[last].is_required():
            continue
        message = refused(action, changed(VALID[action], name, drop=True))
        assert message == f"missing field {name!r}", message
    if action == "login":  # one of card or staff is needed: staff is what is missing
        assert refused(action, {}) == "missing field 'staff'"
        assert refused("issue", {**VALID["issue"], "override": {}}) == (
            "missing field 'override.staff'"
        )


@pytest.mark.parametrize("action", sorted(ACTION_REQUESTS))
def test_an_unknown_key_is_refused_naming_it(action: str) -> None:
    assert refused(action, {**VALID[action], "colour": "red"}) == "unknown field 'colour'"
    for name, value in fields_of(action):
        if isinstance(value, dict):
            payload = changed(VALID[action], f"{name}.colour", "red")
            assert refused(action, payload) == f"unknown field '{name}.colour'"


@pytest.mark.parametrize("action", sorted(ACTION_REQUESTS))
def test_an_oversized_string_is_refused_naming_it(action: str) -> None:
    with pytest.raises(BadRequest, match=f"field 'rid' is longer than {MAX_RID} characters"):
        decode_request(action, {**VALID[action], "rid": "r" * (MAX_RID + 1)})
    limits = {"reason": MAX_REASON, "note": MAX_REASON, "person.key": 128}
    for name, value in fields_of(action):
        if isinstance(value, str) and name not in ("rid", "state", "decision"):  # not literals
            limit = limits.get(name, MAX_TEXT)
            long = "a" * (limit + 1)
            message = refused(action, changed(VALID[action], name, long))
            assert message == f"field {name!r} is longer than {limit} characters", message


def test_values_the_contract_excludes_are_refused_naming_the_field() -> None:
    issue = VALID["issue"]
    cases = {
        "field 'person.key' must be 16 to 128 lower-case hex digits": changed(
            issue, "person.key", "AB" * 16
        ),
        "field 'person.age' must be at most 130": changed(issue, "person.age", 131),
        "field 'person.age' must be at least 0": changed(issue, "person.age", -1),
        "field 'person.age' must be int": changed(issue, "person.age", 40.0),
        "field 'priority' must be 'appointment' or 'green'": changed(issue, "priority", "vip"),
        "'card' goes alone; 'staff' goes with 'pin'": changed(
            issue, "override", {"card": "c", "staff": "S001"}
        ),
    }
    for message, payload in cases.items():
        assert message in refused("issue", payload)
    assert refused("rate", {**VALID["rate"], "level": True}) == "field 'level' must be int"


def test_a_staff_proof_is_checked_by_the_hall_not_the_model() -> None:
    """Well-formed but unproven: the model lets it through, the engine says forbidden."""
    engine = busy_engine()
    for proof in ({"staff": "S001"}, {"card": "04A10001"}):
        assert engine.handle("counter-W2", "login", proof, NINE).error.code == "forbidden"
    by_card = {"card": card_proof(SECRET, "04A10001")}
    assert engine.handle("counter-W2", "login", by_card, NINE).error is None


# ---- what the hall produces fits the models ---------------------------------


def fits(model: type[BaseModel], obj: dict[str, Any]) -> None:
    """obj is an instance of model, and nothing of it is lost on the way through."""
    assert encode(model.model_validate(obj)) == obj


S001_PROOF = {"staff": "S001", "pin": "1111"}


def test_a_real_engine_answers_and_publishes_what_the_models_describe() -> None:
    engine = Engine(CONFIG, SECRET)
    seen: dict[str, set[str]] = {"reply": set(), "event": set()}

    def ask(device: str, action: str, payload: dict[str, Any], at: float) -> dict[str, Any]:
        outcome = engine.handle(device, action, payload, at)
        rid = f"r-{len(seen['reply'])}"
        answer = (
            error(rid, outcome.error.code, outcome.error.message)
            if outcome.error
            else ok(rid, outcome.response)
        )
        assert encode(decode_reply(action, answer)) == answer
        seen["reply"].add(action if outcome.error is None else "error")
        for event in outcome.events:
            published = public_event(engine, event)
            assert encode(decode_event(published)) == published
            seen["event"].add(event.type)
        for number in CONFIG.windows:
            fits(STATES["window"], window_state(engine, number))
            fits(STATES["profile"], window_profile(engine, number))
        fits(STATES["hall"], hall_state(engine, at))
        return answer

    person = {"key": KEY, "age": 70}
    ask("kiosk-K1", "issue", {"service": "social", "person": person}, NINE)
    ask("kiosk-K1", "issue", {"service": "social", "person": {"key": KEY}}, NINE + 1)
    ask("kiosk-K1", "issue", {"service": "social", "person": person}, NINE + 2)  # quota
    tax = ask("kiosk-K1", "issue", {"service": "tax", "person": None, "priority": None}, NINE + 3)
    assert tax["ok"] is False  # tax needs a person
    enquiry = ask("kiosk-K2", "issue", {"service": "enquiry"}, NINE + 4)
    ask("kiosk-K2", "void", {"ticket": enquiry["ticket"]["id"]}, NINE + 5)
    ask("counter-W1", "login", {"staff": "S001", "pin": "1111"}, NINE + 6)
    ask("counter-W1", "call", {"expect": None}, NINE + 7)
    ask("counter-W1", "call", {"expect": None}, NINE + 7.5)  # a doubled press
    ask("counter-W1", "recall", {}, NINE + 8)
    ask("counter-W1", "transfer", {"service": "tax"}, NINE + 9)
    ask("counter-W1b", "call", {}, NINE + 10)
    ask("counter-W1b", "skip", {}, NINE + 11)
    ask("counter-W1b", "reinstate", {"ticket": "A001"}, NINE + 12)
    ask("counter-W2", "login", S001_PROOF, NINE + 12.5)  # the clerk who may appeal
    ask("counter-W2", "call", {}, NINE + 13)
    ask("counter-W2", "finish", {}, NINE + 14)
    ask("counter-W2", "rate", {"ticket": "A001", "level": 1, "reason": "慢"}, NINE + 15)
    ask("counter-W2", "rate", {"ticket": "A001", "level": 5}, NINE + 16)
    case = {"case": "2026-11-23/A001", "note": "回访"}
    s002 = {"staff": "S002", "pin": "2222"}  # a supervisor in small.toml, not the clerk
    ask("office", "case_update", {**case, "state": "contacted", "by": S001_PROOF}, NINE + 16.1)
    ask("office", "case_appeal", {**case, "by": S001_PROOF}, NINE + 16.2)
    ask("office", "case_decide", {**case, "decision": "rejected", "by": s002}, NINE + 16.3)
    booked = {"person_key": "ef" * 32, "service": "social", "start": NINE + 1800}
    bookings = [{**booked, "ref": ref, "end": NINE + 3600} for ref in ("WB-1", "WB-2")]
    ask("office", "appointment_import", {"bookings": bookings}, NINE + 16.4)
    ask("kiosk-K1", "checkin", {"person": {"key": "ef" * 32}}, NINE + 16.5)
    ask("counter-W1", "call", {}, NINE + 17)
    for _ in range(3):
        ask("counter-W1", "recall", {}, NINE + 18)  # past max_recalls: skipped
    ask("counter-W1", "pause", {}, NINE + 19)
    ask("counter-W1", "resume", {}, NINE + 20)
    ask("counter-W1", "logout", {}, NINE + 21)
    ask("kiosk-K2", "issue", {"service": "enquiry", "person": None}, NINE + 22)  # waits on
    given_up = {"rid": "k1-given-up", "service": "enquiry", "person": None}
    ask("kiosk-K1", "issue", given_up, NINE + 22.5)  # its answer lost: handed over alone
    social = ask("kiosk-K1", "lease", {"service": "social"}, NINE + 23)["lease"]
    tax = ask("kiosk-K1", "lease", {"service": "tax"}, NINE + 24)["lease"]
    for n in range(3):  # tax's daily cap of 3, online
        ask("kiosk-K2", "issue", {"service": "tax", "person": {"key": f"{n + 9:064x}"}}, NINE + 25)
    offline = [
        {"rid": "o-1", "service": "social", "number": social["first"], "person": person},
        {"rid": "o-2", "service": "tax", "number": tax["first"], "person": {"key": "cd" * 32}},
        {"rid": "o-3", "service": "social", "number": social["last"] + 1},  # not leased
    ]
    handed = ask(
        "kiosk-K1",
        "handover",
        {"tickets": [{**t, "issued_at": NINE + 26} for t in offline], "abandoned": ["k1-given-up"]},
        NINE + 30,
    )
    assert [t["placed"] for t in handed["tickets"]] == [True, True]
    assert [r["code"] for r in handed["refused"]] == ["not_leased"]
    ask("kiosk-K1", "release", {"day": "2026-11-23", "service": "social"}, NINE + 31)
    for at in (NINE + 4000, NINE + 86400, NINE + 7 * 86400, NINE + 8 * 86400):
        for event in engine.tick(at):
            published = public_event(engine, event)
            assert encode(decode_event(published)) == published
            seen["event"].add(event.type)
    assert seen["reply"] == set(ACTION_REQUESTS) | {"error"}
    assert seen["event"] >= set(EVENTS) - {"ticket.carried"}


def test_a_real_hall_over_mqtt_sends_only_what_the_models_describe(hall, device, broker) -> None:
    topics = Topics(SITE_ID)
    recorder = Recorder(broker.url, f"quhao/{SITE_ID}/#", client_id="contract")
    kiosk, counter = device("kiosk-K1"), device("counter-W1")
    answers = [
        ("issue", kiosk.request("issue", service="social", person={"key": KEY, "age": 70})),
        ("issue", kiosk.request("issue", service="social", person={"key": KEY}, colour="red")),
        ("login", counter.request("login", staff="S001", pin="1111")),
        ("call", counter.request("call", expect=None)),
        ("recall", counter.request("recall")),
        ("finish", counter.request("finish")),
        ("rate", counter.request("rate", ticket="A001", level=5)),
    ]
    for action, answer in answers:
        assert encode(decode_reply(action, answer)) == answer
    refusal = answers[1][1]
    assert refusal["error"] == {"code": "bad_request", "message": "unknown field 'colour'"}
    recorder.wait_for(topics.event("ticket.rated"))
    wait_until(lambda: recorder.payloads(topics.status("hall")), what="the hall's status")
    checked = 0
    for message in list(recorder.messages):
        parts = message.topic.split("/")[2:]
        obj = json.loads(message.payload)
        if parts[0] == "event":
            assert encode(decode_event(obj)) == obj
        elif parts[0] == "window":
            fits(STATES["window" if parts[2] == "state" else "profile"], obj)
        elif parts == ["hall", "state"]:
            fits(STATES["hall"], obj)
        elif parts[0] == "device":
            fits(STATES["hall-status" if parts[2] == "status" else "availability"], obj)
        else:
            continue  # requests and replies: checked above
        checked += 1
    assert checked > 10
    recorder.close()
