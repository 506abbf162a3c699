"""The ticket page's token: who holds the printed ticket may watch it, nobody else.

The kiosk prints `{base}/t/{day}/{number}/{token}` in the ticket's QR code; the screens
daemon serves that page only when the token is right. The token is
HMAC-SHA256(page key, "{site}\\n{ticket id}"), cut to 128 bits and written in base64url
(22 characters): unguessable, and checked without a database — both sides read the
site secret. The page key is derived from the secret for this one use (HMAC with a
fixed label), so a token never reveals anything about person keys or staff card proofs
made with the same secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

LABEL = b"quhao ticket page v1"
TOKEN_BYTES = 16
TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9_-]{22}$")
# "2026-11-23/A001": the ticket ids the hall gives (a day, a prefix letter, digits).
TICKET_ID = re.compile(r"^(\d{4}-\d{2}-\d{2})/([A-Z]\d{1,6})$")


def page_key(secret: bytes) -> bytes:
    return hmac.new(secret, LABEL, hashlib.sha256).digest()


def token(key: bytes, site: str, ticket_id: str) -> str:
    """The token for one ticket; `key` is `page_key(site secret)`."""
    mac = hmac.new(key, f"{site}\n{ticket_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:TOKEN_BYTES]).rstrip(b"=").decode("ascii")


def verify(key: bytes, site: str, ticket_id: str, candidate: str) -> bool:
    """Whether `candidate` is this ticket's token (compared in constant time)."""
    if not TOKEN_PATTERN.match(candidate) or not TICKET_ID.match(ticket_id):
        return False
    return hmac.compare_digest(token(key, site, ticket_id), candidate)


def path(key: bytes, site: str, ticket_id: str) -> str:
    """`/t/2026-11-23/A001/{token}`: the page's path under the public base URL."""
    return f"/t/{ticket_id}/{token(key, site, ticket_id)}"


def url(base: str, key: bytes, site: str, ticket_id: str) -> str:
    return base.rstrip("/") + path(key, site, ticket_id)


def qr_text(public_url: str, key: bytes, site: str, ticket_id: str) -> str:
    """What a ticket's QR code carries: its page's URL when the site has a public base
    URL (`[screens] public_url`), else the bare `quhao:{site}:{ticket id}`."""
    return url(public_url, key, site, ticket_id) if public_url else f"quhao:{site}:{ticket_id}"
