"""What card readers deliver: one `CardRead` per card presentation, once.

Shared by every daemon with a reader: the kiosk (PC/SC and GA 467 SAM readers) and the
counter (a staff card on PC/SC). Both types hold personal data: never log them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True)
class Identity:
    card_type: str
    name: str
    gender: str
    birth: date | None
    id_number: str
    valid_from: str
    valid_to: str  # YYYYMMDD or 长期
    fields: dict[str, str]

    def __repr__(self) -> str:  # never print a person into a log by accident
        return f"Identity(card_type={self.card_type!r}, <personal data withheld>)"

    __str__ = __repr__


@dataclass(frozen=True)
class CardRead:
    """One presentation of a card. Holds personal data: never log it."""

    reader: str  # the reader's label
    uid: str | None = None  # PC/SC: the card's serial number (hex, upper case)
    identity: Identity | None = None  # SAM: the card's text
    detected_at: float | None = None  # monotonic time the reader first noticed the card
    read_at: float | None = None  # monotonic time the card's data was all read

    def __repr__(self) -> str:
        return f"CardRead(reader={self.reader!r}, <card data withheld>)"

    __str__ = __repr__
