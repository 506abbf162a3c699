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
from quhao.messages.replies import (
    ACTION_REPLIES,
    ERROR_CODES,
    CallReply,
    ErrorBody,
    ErrorReply,
    IssuedTicket,
    IssueReply,
    LoginReply,
    MovedReply,
    RateReply,
    RecallReply,
    Reply,
    StaffView,
    StatusReply,
    TicketReply,
    TicketView,
    decode_reply,
)
from quhao.messages.requests import (
    ACTION_REQUESTS,
    ActionRequest,
    CallRequest,
    FinishRequest,
    IssueRequest,
    LoginRequest,
    LogoutRequest,
    PauseRequest,
    Person,
    RateRequest,
    RecallRequest,
    ReinstateRequest,
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

__all__ = [
    "ACTION_REPLIES",
    "ACTION_REQUESTS",
    "ERROR_CODES",
    "EVENTS",
    "MAX_AGE",
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
    "IssueReply",
    "IssueRequest",
    "IssuedTicket",
    "LoginReply",
    "LoginRequest",
    "LogoutRequest",
    "MovedReply",
    "PauseRequest",
    "Person",
    "RateReply",
    "RateRequest",
    "RecallReply",
    "RecallRequest",
    "ReinstateRequest",
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
