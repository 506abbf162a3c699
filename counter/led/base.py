"""What an LED display protocol provides to the driver. Pure: bytes only, no I/O."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    ok: bool
    detail: str = ""


class ReplyParser(ABC):
    @abstractmethod
    def feed(self, data: bytes) -> list[Reply]:
        """Replies found in the bytes received so far (partial ones wait for more)."""


class LedProtocol(ABC):
    name: str = ""
    expects_reply: bool = True  # False for write-only displays: no ACK to wait for

    @abstractmethod
    def show(self, address: int, text: str, flash: bool) -> bytes:
        """Bytes that make the display show text (flashing for a new call)."""

    @abstractmethod
    def ping(self, address: int) -> bytes:
        """Bytes that make the display answer without changing what it shows."""

    @abstractmethod
    def reply_parser(self) -> ReplyParser: ...
