"""The wire contract as types, defined once (docs/protocol.md shows them with examples,
and tests/test_wire_contract.py checks that the two agree).

- `requests`: one model per action a device may ask of the hall (`ACTION_REQUESTS`),
  `decode_request` for the hall, the models themselves and `encode` for senders;
- `replies`: the reply envelope and each action's reply (`ACTION_REPLIES`), the error
  codes;
- `states`: the retained states the hall publishes (`STATES`);
- `events`: the public events on `event/{type}` (`EVENTS`, `decode_event`).

A sender builds a model and publishes its encoding, e.g. with a `HallClient`:

    request = IssueRequest(service="social", person=Person(key=key, age=70))
    hall.request(request.action, encode(request), rid=rid)
"""

from typing import get_args

from quhao.messages.appointments import (
    APPOINTMENT_EVENTS,
    APPOINTMENT_REPLIES,
    APPOINTMENT_REQUESTS,
)
from quhao.messages.base import (
    MAX_AGE,
    MAX_REASON,
    MAX_RID,
    MAX_TEXT,
    BadRequest,
    Wire,
    encode,
)
from quhao.messages.events import EVENTS, Fact, decode_event
from quhao.messages.office import OFFICE_EVENTS, OFFICE_REPLIES, OFFICE_REQUESTS
from quhao.messages.replies import (
    ACTION_REPLIES,
    ERROR_CODES,
    CallReply,
    ErrorBody,
    ErrorReply,
    HandedOver,
    HandoverReply,
    IssuedTicket,
    IssueReply,
    LeaseReply,
    LeaseView,
    LoginReply,
    MovedReply,
    OfflineRefusal,
    RateReply,
    RecallReply,
    ReleaseReply,
    Reply,
    StaffView,
    StatusReply,
    TicketReply,
    TicketView,
    decode_reply,
)
from quhao.messages.requests import (
    ACTION_REQUESTS,
    MAX_ABANDONED,
    MAX_HANDOVER,
    ActionRequest,
    CallRequest,
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
    TransferRequest,
    VoidRequest,
    decode_request,
)
from quhao.messages.states import (
    STATES,
    Availability,
    HallState,
    HallStatus,
    WindowProfile,
    WindowState,
)

# The office's actions and facts (quhao/messages/office.py) and the appointments'
# (quhao/messages/appointments.py) join the contract's tables.
ACTION_REQUESTS.update((model.action, model) for model in OFFICE_REQUESTS + APPOINTMENT_REQUESTS)
ACTION_REPLIES.update(OFFICE_REPLIES | APPOINTMENT_REPLIES)
EVENTS.update(
    (get_args(model.model_fields["type"].annotation)[0], model)
    for model in OFFICE_EVENTS + APPOINTMENT_EVENTS
)

__all__ = [
    "ACTION_REPLIES",
    "ACTION_REQUESTS",
    "ERROR_CODES",
    "EVENTS",
    "MAX_ABANDONED",
    "MAX_AGE",
    "MAX_HANDOVER",
    "MAX_REASON",
    "MAX_RID",
    "MAX_TEXT",
    "STATES",
    "ActionRequest",
    "Availability",
    "BadRequest",
    "CallReply",
    "CallRequest",
    "ErrorBody",
    "ErrorReply",
    "Fact",
    "FinishRequest",
    "HallState",
    "HallStatus",
    "HandedOver",
    "HandoverReply",
    "HandoverRequest",
    "IssueReply",
    "IssueRequest",
    "IssuedTicket",
    "LeaseReply",
    "LeaseRequest",
    "LeaseView",
    "LoginReply",
    "LoginRequest",
    "LogoutRequest",
    "MovedReply",
    "OfflineRefusal",
    "OfflineTicket",
    "PauseRequest",
    "Person",
    "RateReply",
    "RateRequest",
    "RecallReply",
    "RecallRequest",
    "ReinstateRequest",
    "ReleaseReply",
    "ReleaseRequest",
    "Reply",
    "ResumeRequest",
    "SkipRequest",
    "StaffProof",
    "StaffView",
    "StatusReply",
    "TicketReply",
    "TicketView",
    "TransferRequest",
    "VoidRequest",
    "WindowProfile",
    "WindowState",
    "Wire",
    "decode_event",
    "decode_reply",
    "decode_request",
    "encode",
]
