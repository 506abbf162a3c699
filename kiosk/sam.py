"""GA 467 SAM (居民身份证验证安全控制模块) serial protocol. Pure: bytes in, bytes out.

Every frame, both ways:

    AA AA AA 96 69   LEN_HI LEN_LO   BODY…   CHK
    preamble         bytes after LEN, CHK included
                                             XOR of LEN_HI, LEN_LO and BODY

Host → SAM body: CMD, PARA[, data]. SAM → host body: SW1 SW2 SW3[, data];
SW3 tells the result (0x90 success, 0x9F card found, 0x80 no card, …).

Commands used by the kiosk: reset (10 FF), status (11 FF), find card (20 01),
select card (20 02), read base message (30 01). The base message is
2 bytes text length, 2 bytes photo length, 256 bytes of UCS-2LE text, then the
photo (WLT, ignored here).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from quhao.devices.cards import Identity

PREAMBLE = bytes.fromhex("AAAAAA9669")
MAX_LEN = 4096  # a base message with fingerprints is under 2.5 kB

RESET = (0x10, 0xFF)
STATUS = (0x11, 0xFF)
READ_SAM_ID = (0x12, 0xFF)
FIND_CARD = (0x20, 0x01)
SELECT_CARD = (0x20, 0x02)
READ_BASE = (0x30, 0x01)

OK, FOUND, NO_CARD = 0x90, 0x9F, 0x80
SW3_MEANING = {
    0x90: "success",
    0x91: "no such content on the card",
    0x9F: "card found",
    0x10: "checksum error in the command",
    0x11: "length error in the command",
    0x21: "unknown command",
    0x23: "operation not permitted",
    0x24: "unrecognised error",
    0x31: "card failed to authenticate the reader",
    0x32: "reader failed to authenticate the card",
    0x33: "information verification error",
    0x40: "unknown card type",
    0x41: "card read failed",
    0x47: "random number failed",
    0x60: "SAM self-test failed",
    0x66: "SAM not authorised",
    0x80: "no card found",
    0x81: "card selection failed",
}


class FrameError(ValueError):
    pass


def checksum(data: bytes) -> int:
    value = 0
    for byte in data:
        value ^= byte
    return value


def encode(body: bytes) -> bytes:
    """A frame around body (a command: CMD PARA …; a response: SW1 SW2 SW3 …)."""
    length = (len(body) + 1).to_bytes(2, "big")
    return PREAMBLE + length + body + bytes([checksum(length + body)])


def command(cmd: tuple[int, int], data: bytes = b"") -> bytes:
    return encode(bytes(cmd) + data)


@dataclass(frozen=True)
class Response:
    sw1: int
    sw2: int
    sw3: int
    data: bytes = b""

    @property
    def ok(self) -> bool:
        return self.sw3 in (OK, FOUND)

    @property
    def meaning(self) -> str:
        return SW3_MEANING.get(self.sw3, f"status 0x{self.sw3:02X}")


class Decoder:
    """Frames out of a byte stream. Damaged frames are reported (FrameError) and skipped."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes | FrameError]:
        """Bodies of complete frames (and errors), in order."""
        self._buffer += data
        buf = self._buffer
        out: list[bytes | FrameError] = []
        while True:
            start = buf.find(PREAMBLE)
            if start < 0:
                keep = _partial_preamble(buf)
                if len(buf) > keep:
                    out.append(FrameError(f"{len(buf) - keep} bytes of noise"))
                    del buf[: len(buf) - keep]
                return out
            if start:
                out.append(FrameError(f"{start} bytes of noise before a frame"))
                del buf[:start]
            if len(buf) < 7:
                return out
            length = int.from_bytes(buf[5:7], "big")
            if not 1 <= length <= MAX_LEN:
                out.append(FrameError(f"impossible length {length}"))
                del buf[: len(PREAMBLE)]
                continue
            if len(buf) < 7 + length:
                return out
            body, check = bytes(buf[7 : 6 + length]), buf[6 + length]
            if checksum(bytes(buf[5:7]) + body) != check:
                out.append(FrameError("bad checksum"))
                del buf[: len(PREAMBLE)]  # resync: a real frame may start inside this one
                continue
            out.append(body)
            del buf[: 7 + length]


def _partial_preamble(buf: bytearray) -> int:
    """How many trailing bytes could be the start of a preamble still arriving."""
    for keep in range(min(len(PREAMBLE) - 1, len(buf)), 0, -1):
        if buf.endswith(PREAMBLE[:keep]):
            return keep
    return 0


def parse_response(body: bytes) -> Response:
    if len(body) < 3:
        raise FrameError(f"a response has at least 3 status bytes, got {len(body)}")
    return Response(body[0], body[1], body[2], body[3:])


# ---- the card's text --------------------------------------------------------

CARD_TYPES = {
    " ": "resident",
    "J": "hmt_residence",
    "I": "foreign_permanent",
    "Y": "foreign_permanent_2023",
}

# Field layouts of the 256-byte text, in UCS-2 characters (2 bytes each).
RESIDENT_LAYOUT = (
    ("name", 15),
    ("gender", 1),
    ("nation", 2),
    ("birth", 8),
    ("address", 35),
    ("id_number", 18),
    ("authority", 15),
    ("valid_from", 8),
    ("valid_to", 8),
)
HMT_LAYOUT = (
    ("name", 15),
    ("gender", 1),
    ("_reserved1", 2),
    ("birth", 8),
    ("address", 35),
    ("id_number", 18),
    ("authority", 15),
    ("valid_from", 8),
    ("valid_to", 8),
    ("pass_number", 9),
    ("issue_count", 2),
    ("_reserved2", 3),
    ("card_type", 1),
)
FOREIGN_LAYOUT = (
    ("english_name", 60),
    ("gender", 1),
    ("id_number", 15),
    ("nationality", 3),
    ("name", 15),
    ("valid_from", 8),
    ("valid_to", 8),
    ("birth", 8),
    ("version", 2),
    ("authority", 4),
    ("card_type", 1),
)
FOREIGN_2023_LAYOUT = (
    ("name", 15),
    ("gender", 1),
    ("_reserved1", 2),
    ("birth", 8),
    ("english_name", 35),
    ("id_number", 18),
    ("authority", 15),
    ("valid_from", 8),
    ("valid_to", 8),
    ("english_name_more", 9),
    ("nationality", 3),
    ("_reserved2", 2),
    ("card_type", 1),
)
LAYOUTS = {
    "resident": RESIDENT_LAYOUT,
    "hmt_residence": HMT_LAYOUT,
    "foreign_permanent": FOREIGN_LAYOUT,
    "foreign_permanent_2023": FOREIGN_2023_LAYOUT,
}
CARD_TYPE_CHAR = 124  # the card-type character of the non-resident layouts


def parse_text(text: bytes) -> Identity:
    """The 256-byte UCS-2LE base text of any of the four card types."""
    if len(text) != 256:
        raise FrameError(f"base text must be 256 bytes, got {len(text)}")
    chars = text.decode("utf-16-le", errors="replace")
    card_type = CARD_TYPES.get(chars[CARD_TYPE_CHAR], "resident")
    fields: dict[str, str] = {}
    position = 0
    for name, width in LAYOUTS[card_type]:
        fields[name] = chars[position : position + width].rstrip(" \x00")
        position += width
    birth_text = fields.get("birth", "")
    try:
        birth = date(int(birth_text[:4]), int(birth_text[4:6]), int(birth_text[6:8]))
    except ValueError:
        birth = None
    gender = {"1": "male", "2": "female", "M": "male", "F": "female"}.get(
        fields.get("gender", ""), "unknown"
    )
    return Identity(
        card_type,
        fields.get("name", ""),
        gender,
        birth,
        fields.get("id_number", ""),
        fields.get("valid_from", ""),
        fields.get("valid_to", ""),
        fields,
    )


def parse_base_message(data: bytes) -> Identity:
    """The data of a successful READ_BASE response."""
    if len(data) < 4:
        raise FrameError("base message shorter than its length fields")
    text_len = int.from_bytes(data[0:2], "big")
    if text_len != 256 or len(data) < 4 + text_len:
        raise FrameError(f"base message text length {text_len}, {len(data) - 4} bytes present")
    return parse_text(data[4 : 4 + text_len])
