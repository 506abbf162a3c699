"""Card readers. Each turns a card presentation into one `CardRead`, once."""

from __future__ import annotations

from dataclasses import dataclass

from kiosk.sam import Identity


@dataclass(frozen=True)
class CardRead:
    """One presentation of a card. Holds personal data: never log it."""

    reader: str  # the reader's label
    uid: str | None = None  # PC/SC: the card's serial number (hex, upper case)
    identity: Identity | None = None  # SAM: the card's text

    def __repr__(self) -> str:
        return f"CardRead(reader={self.reader!r}, <card data withheld>)"

    __str__ = __repr__
