"""The `quhao-led` frame: the project's documented LED protocol (docs/devices.md).

    STX  ADDR  CMD  LEN(2, big-endian)  DATA(LEN)  CHK  ETX
    0x02 1..254                                  XOR   0x03
                                          of ADDR, CMD, LEN and DATA

Host → display: 0x31 SHOW (DATA = mode byte + GB2312/GBK text; mode 0 steady,
1 flash), 0x32 CLEAR, 0x33 PING. Display → host: 0x06 ACK (DATA = the command
acknowledged), 0x15 NAK (DATA = command, reason: 1 checksum, 2 length, 3 unknown
command, 4 text not GB2312/GBK). Address 0xFF reaches every display (no reply).
"""

from __future__ import annotations

from dataclasses import dataclass

from counter.led.base import LedProtocol, Reply, ReplyParser

STX, ETX = 0x02, 0x03
SHOW, CLEAR, PING = 0x31, 0x32, 0x33
ACK, NAK = 0x06, 0x15
BROADCAST = 0xFF
MAX_DATA = 1024
HEADER = 5  # STX ADDR CMD LENH LENL
NAK_REASONS = {1: "checksum", 2: "length", 3: "unknown command", 4: "text encoding"}
TEXT_ENCODING = "gbk"  # GB2312 plus the GBK extension, as these displays accept


@dataclass(frozen=True)
class Frame:
    address: int
    command: int
    data: bytes = b""


@dataclass(frozen=True)
class FrameError:
    reason: str


def checksum(body: bytes) -> int:
    value = 0
    for byte in body:
        value ^= byte
    return value


def encode_frame(frame: Frame) -> bytes:
    if not 0 <= frame.address <= 0xFF or not 0 <= frame.command <= 0xFF:
        raise ValueError("address and command are single bytes")
    if len(frame.data) > MAX_DATA:
        raise ValueError(f"frame data longer than {MAX_DATA} bytes")
    body = bytes([frame.address, frame.command]) + len(frame.data).to_bytes(2, "big") + frame.data
    return bytes([STX]) + body + bytes([checksum(body), ETX])


class FrameDecoder:
    """Frames out of a byte stream; garbage and damaged frames are reported and skipped."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame | FrameError]:
        self._buffer += data
        out: list[Frame | FrameError] = []
        buf = self._buffer
        while buf:
            start = buf.find(STX)
            if start < 0:
                out.append(FrameError(f"{len(buf)} bytes of noise"))
                buf.clear()
                break
            if start:
                out.append(FrameError(f"{start} bytes of noise before a frame"))
                del buf[:start]
            if len(buf) < HEADER:
                break
            length = int.from_bytes(buf[3:5], "big")
            if length > MAX_DATA:
                out.append(FrameError(f"length {length} over {MAX_DATA}"))
                del buf[0]
                continue
            end = HEADER + length + 2
            if len(buf) < end:
                break
            body = bytes(buf[1 : HEADER + length])
            if buf[end - 1] != ETX:
                out.append(FrameError("no ETX where the length says the frame ends"))
                del buf[0]
                continue
            if buf[end - 2] != checksum(body):
                out.append(FrameError("bad checksum"))
                del buf[:end]
                continue
            out.append(Frame(body[0], body[1], body[4:]))
            del buf[:end]
        return out


class _Replies(ReplyParser):
    def __init__(self) -> None:
        self.decoder = FrameDecoder()

    def feed(self, data: bytes) -> list[Reply]:
        replies = []
        for item in self.decoder.feed(data):
            if isinstance(item, FrameError):
                replies.append(Reply(False, f"damaged reply: {item.reason}"))
            elif item.command == ACK:
                replies.append(Reply(True))
            elif item.command == NAK:
                reason = item.data[1] if len(item.data) > 1 else 0
                replies.append(Reply(False, f"display refused: {NAK_REASONS.get(reason, reason)}"))
        return replies


class QuhaoLed(LedProtocol):
    name = "quhao-led"

    def show(self, address: int, text: str, flash: bool) -> bytes:
        data = bytes([1 if flash else 0]) + text.encode(TEXT_ENCODING, errors="replace")
        return encode_frame(Frame(address, SHOW, data))

    def ping(self, address: int) -> bytes:
        return encode_frame(Frame(address, PING))

    def reply_parser(self) -> ReplyParser:
        return _Replies()
