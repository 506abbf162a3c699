"""The durable feed out of a hall, for the city (docs/city.md, docs/protocol.md "Feed").

- `quhao/{site}/feed` (hall → city, QoS 1): a `FeedBatch` — events of the hall's log in
  sequence, each with its per-hall sequence number, person keys and whatever supervision
  does not need stripped; `head` is the hall's last committed sequence when it was sent
  (a batch without events is a heartbeat: it tells the city how far the log goes).
- `quhao/{site}/feed/req` (city → hall, QoS 1): a `ReplayRequest` — "events after N".
  The hall answers with `FeedBatch`es on `quhao/{site}/feed/replay` (`replay: true`), at
  most `MAX_PAGE` events, from its own log.

One topic for the live feed keeps it in order over an MQTT bridge (a broker keeps the
order of one publisher's QoS 1 messages on one topic); the answers have their own, so the
city can stop taking the live feed while it catches up (docs/city.md) and still hear
them. The city takes events in any order anyway: each carries its place in the log.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StrictBool, StrictInt, StrictStr

from quhao.messages.base import Wire

MAX_PAGE = 500  # events in one replay answer (sent as one or more batches)
MAX_BATCH_EVENTS = 1000  # events in one feed message: a bound for the city's decoder
MAX_FEED_BYTES = 256 * 1024  # one feed message at most (the brokers' max_packet_size)
SITE_PATTERN = r"^[a-z0-9_-]{1,32}$"
MAX_DATA_FIELDS = 32  # fields of one event's data (the allow-list names at most a dozen)
MAX_VALUE_TEXT = 512  # characters of one field (a case note is at most 500)
MAX_NUMBER = 2**53  # what JSON numbers carry exactly everywhere
EARLIEST, LATEST = 946_684_800.0, 4_102_444_800.0  # 2000-01-01 .. 2100-01-01: a hall's clock

# An event's fields are flat JSON scalars (hall/feed.py SUPERVISION_FIELDS): so one
# `model_validate_json` bounds every string, number and the depth of a whole feed
# message in pydantic's own parser, with no second walk over the decoded values. Tried
# left to right, the first member that takes a value wins: with strict members that is
# what the default "smart" mode picks too (an integer stays an int), but smart mode
# tries every member first — a third of the city's parse.
FeedValue = Annotated[
    Annotated[StrictStr, Field(max_length=MAX_VALUE_TEXT)]
    | Annotated[StrictInt, Field(ge=-MAX_NUMBER, le=MAX_NUMBER)]
    | Annotated[float, Field(allow_inf_nan=False, ge=-MAX_NUMBER, le=MAX_NUMBER)]
    | StrictBool
    | None,
    Field(union_mode="left_to_right"),
]

Seq = Annotated[int, Field(ge=1, le=2**53, description="the event's place in the hall's log")]


class FeedEvent(Wire):
    seq: Seq
    at: float = Field(
        allow_inf_nan=False, ge=EARLIEST, lt=LATEST, description="Unix seconds, hall clock"
    )
    type: Annotated[str, Field(min_length=1, max_length=64)]
    data: Annotated[
        dict[Annotated[str, Field(min_length=1, max_length=64)], FeedValue],
        Field(max_length=MAX_DATA_FIELDS, description="the fact's fields (no person keys)"),
    ]


class FeedBatch(Wire):
    site: Annotated[str, Field(pattern=SITE_PATTERN, description="the hall's site id")]
    db: Annotated[str, Field(min_length=1, max_length=64, description="the hall's database id")]
    head: Annotated[int, Field(ge=0, le=2**53, description="the hall's last committed seq")]
    events: Annotated[list[FeedEvent], Field(max_length=MAX_BATCH_EVENTS)]
    replay: bool = Field(default=False, description="an answer to a ReplayRequest")


class ReplayRequest(Wire):
    after: Annotated[int, Field(ge=0, le=2**53, description="send the events after this seq")]
    limit: Annotated[int, Field(ge=1, le=MAX_PAGE)] = MAX_PAGE
