"""ESC/POS real-time status (DLE EOT n). Pure: the printer's answer bytes in, a state out.

DLE EOT 2 (offline cause): bit 2 cover open, bit 5 stopped by paper end, bit 6 error.
DLE EOT 4 (roll paper sensor): bits 2-3 near end, bits 5-6 paper end.
Each answer byte has bit 4 set and bit 7 clear; anything else is not an answer.
"""

from __future__ import annotations

from dataclasses import dataclass

DLE_EOT_OFFLINE = b"\x10\x04\x02"
DLE_EOT_PAPER = b"\x10\x04\x04"


@dataclass(frozen=True)
class PrinterState:
    state: str  # ok | near_end | out | cover_open | error | no_answer | offline
    detail: str = ""

    @property
    def can_print(self) -> bool:
        return self.state in ("ok", "near_end")


def is_status_byte(value: int) -> bool:
    return value & 0x90 == 0x10


def decode(offline: int | None, paper: int | None) -> PrinterState:
    if offline is None or paper is None:
        return PrinterState("no_answer", "the printer did not answer DLE EOT")
    if not (is_status_byte(offline) and is_status_byte(paper)):
        return PrinterState("no_answer", f"not a status answer: {offline:#04x} {paper:#04x}")
    if offline & 0x04:
        return PrinterState("cover_open", "cover open")
    if paper & 0x60 or offline & 0x20:
        return PrinterState("out", "paper out")
    if offline & 0x40:
        return PrinterState("error", "printer error")
    if paper & 0x0C:
        return PrinterState("near_end", "paper near end")
    return PrinterState("ok")
