"""Linux `struct input_event` records: a pure codec (bytes in, key events out).

On 64-bit Linux a record is 24 bytes: `struct timeval` (two longs), `__u16 type`,
`__u16 code`, `__s32 value`. Real evdev devices and our raw event streams (FIFOs)
deliver exactly these records, so both go through this one decoder.

A record that cannot be real (an unknown event type, a key value other than
0/1/2, microseconds past a second) is reported and the decoder slides one byte to
find the record boundary again: a lost byte costs a few records, never the stream.
"""

from __future__ import annotations

import struct
import time as _time
from dataclasses import dataclass

from evdev import ecodes

RECORD = struct.Struct("@qqHHi")  # tv_sec, tv_usec, type, code, value
RECORD_SIZE = RECORD.size  # 24 on 64-bit

EV_SYN, EV_KEY, EV_MSC = ecodes.EV_SYN, ecodes.EV_KEY, ecodes.EV_MSC
_KNOWN_TYPES = frozenset(code for code in ecodes.EV if code < 0x20)

PRESS, RELEASE, REPEAT = 1, 0, 2


@dataclass(frozen=True)
class InputEvent:
    time: float
    type: int
    code: int
    value: int


@dataclass(frozen=True)
class KeyEvent:
    """A key going down (1), up (0) or auto-repeating (2)."""

    time: float
    key: str  # "KEY_KPENTER"
    code: int
    value: int


def key_name(code: int) -> str:
    name = ecodes.KEY.get(code) or ecodes.BTN.get(code)
    if isinstance(name, (list, tuple)):
        name = name[-1] if name[-1] != "KEY_MIN_INTERESTING" else name[0]
    return str(name) if name else f"KEY_{code}"


def key_code(name: str) -> int:
    code = ecodes.ecodes.get(name)
    if code is None or not (name.startswith("KEY_") or name.startswith("BTN_")):
        raise ValueError(f"unknown key name {name!r}")
    return int(code)


def encode(event: InputEvent) -> bytes:
    sec = int(event.time)
    return RECORD.pack(
        sec, round((event.time - sec) * 1e6) % 1_000_000, event.type, event.code, event.value
    )


def encode_key(key: str, value: int, at: float | None = None) -> bytes:
    """One key transition followed by the SYN_REPORT a real device sends."""
    stamp = _time.time() if at is None else at
    return encode(InputEvent(stamp, EV_KEY, key_code(key), value)) + encode(
        InputEvent(stamp, EV_SYN, 0, 0)
    )


def _plausible(sec: int, usec: int, kind: int, code: int, value: int) -> bool:
    if not 0 <= usec < 1_000_000 or not 0 <= sec < 1 << 34 or kind not in _KNOWN_TYPES:
        return False
    if kind == EV_KEY:
        return value in (0, 1, 2) and code < 0x300
    if kind == EV_SYN:
        return code <= 3
    return True


class Decoder:
    """Feed bytes as they come; get key events. Partial records wait for more bytes."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.corrupt = 0  # bytes skipped to resynchronise
        self.last_problem = ""

    def feed(self, data: bytes) -> list[KeyEvent]:
        self._buffer += data
        keys: list[KeyEvent] = []
        while len(self._buffer) >= RECORD_SIZE:
            sec, usec, kind, code, value = RECORD.unpack_from(self._buffer)
            if not _plausible(sec, usec, kind, code, value):
                self.corrupt += 1
                self.last_problem = (
                    f"implausible input_event (type={kind} code={code} "
                    f"value={value} usec={usec}); skipping a byte to resync"
                )
                del self._buffer[0]
                continue
            del self._buffer[:RECORD_SIZE]
            if kind == EV_KEY:
                keys.append(KeyEvent(sec + usec / 1e6, key_name(code), code, value))
        return keys
