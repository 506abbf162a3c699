"""One presentation, one read: when a card on a reader counts as a new presentation.

Pure (sans I/O): a reader reports what it observes, with the time passed in, and
is told whether that is a new presentation to deliver. Both card readers use it.

Real readers drop out: a card lying at the edge of the field, or nudged, answers
"no card" to a GA 467 find for a poll or two, and pcscd may report its reader
EMPTY for a moment. So a card counts as removed only after it has been absent
for `absent_s` without a break (default 0.5 s), or when a different card appears.

Observations:

- `absent(now)`: the reader says no card is there;
- `present(now)`: a card is there, not identified yet (a GA 467 find answer does
  not say which card). Answers whether it must be identified (read): only when no
  card is held, or after a break in the card's presence;
- `identified(card, now)`: the card on the reader is `card` (a fingerprint, see
  `Fingerprints`). Answers True when this is a new presentation: no card was held,
  the held card had been absent for `absent_s` or longer, or it is a different card.

An absence lasts from the first "no card" to the next time a card is seen; a card
seen in between, even one that could not be read, ends it. Silence (a reader that
answers nothing, or a port being reopened) is no evidence either way.
"""

from __future__ import annotations

import hmac
import secrets

DEFAULT_ABSENT_S = 0.5


class Presence:
    """The presentation state of one reader. Not thread-safe: one reader thread owns it."""

    def __init__(self, absent_s: float = DEFAULT_ABSENT_S) -> None:
        if absent_s < 0:
            raise ValueError(f"absent_s must not be negative, got {absent_s}")
        self.absent_s = absent_s
        self._card: bytes | None = None  # the card of the current presentation
        self._absent_since: float | None = None  # first "no card" of the current absence
        self._unbroken = False  # the held card has been seen without a break since identified

    @property
    def holding(self) -> bool:
        """A presentation is under way: a card is held and has not counted as removed."""
        return self._card is not None

    def absent(self, now: float) -> None:
        """The reader says no card is there."""
        if self._absent_since is None:
            self._absent_since = now
        self._unbroken = False
        self._expire(now)

    def present(self, now: float) -> bool:
        """A card is there, not identified. True: identify it (read it) now."""
        self._expire(now)
        self._absent_since = None
        return not self._unbroken

    def identified(self, card: bytes, now: float) -> bool:
        """The card there is `card`. True: a new presentation, deliver one read."""
        self._expire(now)
        self._absent_since = None
        self._unbroken = True
        if card == self._card:
            return False
        self._card = card
        return True

    def _expire(self, now: float) -> None:
        if self._absent_since is not None and now - self._absent_since >= self.absent_s:
            self._card = None  # removed: forget it


class Fingerprints:
    """Tell cards apart without keeping what is on them.

    HMAC-SHA256 under a random key made when the reader starts and never stored or
    shown: the digest of a card's data means nothing outside this process, and an ID
    number cannot be recovered from it by trying every number. Digests are compared
    in memory only; never log them.
    """

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)

    def of(self, data: bytes) -> bytes:
        return hmac.digest(self._key, data, "sha256")

    def __repr__(self) -> str:
        return "Fingerprints(<key withheld>)"
