"""One feed message from a hall, parsed and checked: pure, bytes in, a batch or a refusal
out (the daemon counts and logs refusals; `quhao bench citycore` times this very code).

A hall is trusted to be itself (its topic, the city broker's ACL), not to be right: the
payload is at most `MAX_FEED_BYTES`, has no NUL character (PostgreSQL keeps none in text
nor jsonb), and is a `FeedBatch` — parsed and bounded in one pass by pydantic's own JSON
parser (UTF-8, types, at most 1,000 events of at most 32 flat scalar fields, text of at
most 512 characters, finite numbers within 2^53, times within 2000–2100); its `site` is
the topic's hall and no event is beyond its head.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from quhao.messages.feed import MAX_FEED_BYTES, FeedBatch
from quhao.wire import shown


@dataclass(frozen=True)
class Refused:
    why: str  # "malformed", "identity", "implausible": what the daemon counts
    detail: str


def check_feed(hall: str, payload: bytes) -> FeedBatch | Refused:
    if len(payload) > MAX_FEED_BYTES:
        return Refused("malformed", f"payload is {len(payload)} bytes")
    if b"\\u0000" in payload:
        return Refused("malformed", "a NUL character")
    try:
        batch = FeedBatch.model_validate_json(payload)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        return Refused("malformed", f"{where}: {first['msg']}")
    if batch.site != hall:
        return Refused("identity", f"a batch of {shown(batch.site)} on {hall}'s topic")
    if batch.events and max(e.seq for e in batch.events) > batch.head:
        return Refused("implausible", "an event beyond the hall's head")
    return batch
