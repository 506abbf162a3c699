"""Voice calling's pure parts: the announcement text and the announcement queue."""

from __future__ import annotations

import re
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quhao.config.voice import Voice
from screens.voice.queue import AnnouncementQueue, Call, Policy
from screens.voice.text import DIGITS, announcement, spoken_digits, spoken_number

SHANGHAI = ZoneInfo("Asia/Shanghai")
NOON = 1795406400.0  # 2026-11-23 12:00 in Shanghai

# ---- text -------------------------------------------------------------------------


def test_ticket_numbers_are_read_digit_by_digit() -> None:
    assert spoken_digits("A001") == "A 零零一"
    assert spoken_digits("K120") == "K 一二零"
    assert spoken_digits("ab12") == "A B 一二"
    assert spoken_digits("Ａ０１") == "A 零一"  # full-width, as some keypads send
    assert spoken_digits("A-001") == "A 零零一"


@pytest.mark.parametrize(
    ("n", "said"),
    [
        (1, "一"),
        (5, "五"),
        (10, "十"),
        (12, "十二"),
        (20, "二十"),
        (41, "四十一"),
        (100, "一百"),
        (101, "一百零一"),
        (110, "一百一十"),
        (1005, "一千零五"),
        (1010, "一千零一十"),
        (10005, "一万零五"),
        (120000, "十二万"),
        (100001000, "一亿零一千"),
    ],
)
def test_window_numbers_are_read_as_numbers(n: int, said: str) -> None:
    assert spoken_number(n) == said


def test_the_default_template() -> None:
    voice = Voice()
    assert announcement(voice.template, "A001", 5) == "请 A 零零一 号 到 五 号窗口 办理"
    assert announcement(voice.recall_template, "A001", 12) == "请 A 零零一 号 再次 到 十二 号窗口"
    assert announcement("{service} {number}", "B7", 1, "税务业务") == "税务业务 B 七"


@given(st.from_regex(r"[A-Z]{0,2}[0-9]{1,8}", fullmatch=True))
def test_every_digit_is_said_in_order_and_none_left_arabic(number: str) -> None:
    said = spoken_digits(number)
    assert not re.search(r"[0-9]", said)
    assert [c for c in said if c in DIGITS] == [DIGITS[int(d)] for d in number if d.isdigit()]
    assert [c for c in said if c.isascii() and c.isalpha()] == [c for c in number if c.isalpha()]


@given(st.integers(0, 10**12 - 1))
def test_any_number_is_read_in_chinese(n: int) -> None:
    said = spoken_number(n)
    assert said and set(said) <= set(DIGITS + "十百千万亿")
    assert ("零零" not in said and not said.endswith("零")) or n == 0


def _value(said: str) -> int:
    """Chinese numerals below 一亿 back to a number (the test's own reading)."""
    total, group, digit = 0, 0, 0
    for char in said:
        if char in DIGITS:
            digit = DIGITS.index(char)
        elif char in "十百千":
            group += (digit or 1) * {"十": 10, "百": 100, "千": 1000}[char]
            digit = 0
        else:  # 万 (the test reads numbers below 一亿)
            total, group, digit = (group + digit) * 10_000, 0, 0
    return total + group + digit


@given(st.integers(0, 99_999_999))
def test_what_is_said_is_the_number(n: int) -> None:
    assert _value(spoken_number(n)) == n


# ---- queue ---------------------------------------------------------------------------


def policy(**voice: object) -> Policy:
    return Policy(Voice.model_validate(voice), SHANGHAI, {"social": "社保业务"})


def call(i: int, recall: bool = False, at: float = NOON, service: str = "social") -> Call:
    return Call(f"2026-11-23/A{i:03d}", f"A{i:03d}", i % 41 + 1, service, recall, at + i)


@given(st.lists(st.sampled_from(["add", "dup", "next", "done"]), max_size=200))
def test_calls_are_announced_in_order_one_at_a_time_and_none_lost(steps: list[str]) -> None:
    queue = AnnouncementQueue(policy())
    added: list[int] = []
    started: list[int] = []
    now = NOON
    for step in steps:
        now += 0.05
        if step == "add" or (step == "dup" and not added):
            item = queue.add(call(len(added) + 1), now)
            assert item is not None
            added.append(item.seq)
        elif step == "dup":  # the same event again: announced once
            assert queue.add(call(len(added)), now) is None
        elif step == "next":
            playing = queue.playing
            item = queue.next(now)
            if playing is not None:
                assert item is None  # never two at once
            elif item is not None:
                started.append(item.seq)
        elif queue.playing is not None:
            assert queue.done(queue.playing.seq, now)
    while queue.backlog:  # drain: every call is announced
        if queue.playing is not None:
            queue.done(queue.playing.seq, now)
        item = queue.next(now)
        if item is not None:
            started.append(item.seq)
    assert started == added


def test_done_for_another_announcement_changes_nothing() -> None:
    queue = AnnouncementQueue(policy())
    queue.add(call(1), NOON)
    queue.add(call(2), NOON)
    first = queue.next(NOON)
    assert first is not None and not queue.done(first.seq + 1, NOON)
    assert queue.next(NOON) is None and queue.done(first.seq, NOON)


def test_a_burst_is_spoken_once_each_and_none_dropped() -> None:
    queue = AnnouncementQueue(policy(repeats=3, burst=2))
    for i in range(1, 7):
        queue.add(call(i), NOON)
    repeats = []
    while (item := queue.next(NOON)) is not None:
        repeats.append(item.repeats)
        queue.done(item.seq, NOON)
    # with 5, 4, 3, 2 waiting behind it: once; with 1 or 0: three times
    assert repeats == [1, 1, 1, 1, 3, 3]


def test_recall_uses_the_recall_template() -> None:
    queue = AnnouncementQueue(policy())
    item = queue.add(call(1, recall=True), NOON)
    assert item is not None and item.text == "请 A 零零一 号 再次 到 二 号窗口"


@pytest.mark.parametrize(
    ("voice", "service", "at", "mode"),
    [
        ({}, "social", NOON, "speech"),
        ({"mode": "chime"}, "social", NOON, "chime"),
        ({"mode": "silent"}, "social", NOON, "silent"),
        ({"services": {"social": "silent"}}, "social", NOON, "silent"),
        ({"services": {"social": "silent"}}, "tax", NOON, "speech"),
        ({"mode": "chime", "services": {"social": "speech"}}, "social", NOON, "chime"),
        ({"quiet_hours": ["12:00-13:30"]}, "social", NOON, "chime"),
        ({"quiet_hours": ["12:00-13:30"]}, "social", NOON + 90 * 60, "speech"),
        ({"quiet_hours": ["12:00-13:30"], "quiet_mode": "silent"}, "social", NOON, "silent"),
        ({"quiet_hours": ["22:00-06:00"]}, "social", NOON + 11 * 3600, "chime"),  # 23:00
        ({"quiet_hours": ["22:00-06:00"]}, "social", NOON - 7 * 3600, "chime"),  # 05:00
        ({"quiet_hours": ["22:00-06:00"]}, "social", NOON - 5 * 3600, "speech"),  # 07:00
        ({"quiet_hours": ["20:00-24:00"]}, "social", NOON + 11 * 3600, "chime"),
    ],
)
def test_the_quietest_mode_applies(
    voice: dict[str, object], service: str, at: float, mode: str
) -> None:
    assert policy(**voice).mode(service, at) == mode


def test_speech_text_only_in_speech_mode() -> None:
    queue = AnnouncementQueue(policy(mode="chime"))
    item = queue.add(call(1), NOON)
    assert item is not None and item.mode == "chime" and item.text is None
