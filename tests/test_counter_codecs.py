"""Pure cores of the counter: input_event records, LED frames, keypad and rating logic."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from counter.keypad import AskPin, CallerKeypad, Ignored, Intent
from counter.led import PROTOCOLS
from counter.led.quhao_led import (
    ACK,
    NAK,
    SHOW,
    Frame,
    FrameDecoder,
    FrameError,
    QuhaoLed,
    encode_frame,
)
from counter.rating import Rating, RatingPad
from quhao.config import CallerKeys
from quhao.devices import led as led_names
from quhao.devices.inputevent import RECORD_SIZE, Decoder, KeyEvent, encode_key
from quhao.staffauth import staff_id_for

frames = st.builds(Frame, st.integers(0, 255), st.integers(0, 255), st.binary(max_size=300))


@given(st.lists(frames, max_size=5), st.integers(1, 40))
def test_led_frames_round_trip_in_any_chunking(sent: list[Frame], chunk: int) -> None:
    stream = b"".join(encode_frame(f) for f in sent)
    decoder = FrameDecoder()
    out = []
    for i in range(0, len(stream), chunk):
        out += decoder.feed(stream[i : i + chunk])
    assert out == sent


@given(st.binary(max_size=2000))
def test_random_bytes_never_crash_the_led_decoder(data: bytes) -> None:
    out = FrameDecoder().feed(data)
    assert all(isinstance(item, Frame | FrameError) for item in out)


@given(st.binary(max_size=50), frames, st.binary(max_size=50))
def test_led_decoder_finds_a_frame_after_noise(noise: bytes, frame: Frame, tail: bytes) -> None:
    noise = noise.replace(b"\x02", b"")
    out = FrameDecoder().feed(noise + encode_frame(frame))
    assert out[-1] == frame


def test_damaged_led_frame_is_reported_and_the_next_one_read() -> None:
    good = encode_frame(Frame(5, SHOW, b"\x00hi"))
    bad = bytearray(good)
    bad[-2] ^= 0xFF  # checksum
    out = FrameDecoder().feed(bytes(bad) + good)
    assert isinstance(out[0], FrameError) and "checksum" in out[0].reason
    assert out[1] == Frame(5, SHOW, b"\x00hi")


def test_show_frame_bytes_match_the_documented_layout() -> None:
    raw = QuhaoLed().show(5, "请 A023 号到 5 号窗口", flash=True)
    text = "请 A023 号到 5 号窗口".encode("gbk")
    assert raw[:3] == bytes([0x02, 5, SHOW])
    assert int.from_bytes(raw[3:5], "big") == 1 + len(text)
    assert raw[5] == 1 and raw[6:-2] == text and raw[-1] == 0x03
    parser = QuhaoLed().reply_parser()
    assert parser.feed(encode_frame(Frame(5, ACK, bytes([SHOW]))))[0].ok
    nak = parser.feed(encode_frame(Frame(5, NAK, bytes([SHOW, 1]))))[0]
    assert not nak.ok and "checksum" in nak.detail


@given(st.binary(max_size=500))
def test_random_bytes_never_crash_the_input_event_decoder(data: bytes) -> None:
    decoder = Decoder()
    for event in decoder.feed(data):
        assert event.value in (0, 1, 2)


@given(
    st.lists(st.sampled_from(["KEY_KPENTER", "KEY_KP5", "KEY_F1", "KEY_X", "KEY_1"]), max_size=20),
    st.integers(1, 30),
    st.binary(max_size=RECORD_SIZE - 1),
)
def test_input_events_round_trip_and_resync(keys: list[str], chunk: int, junk: bytes) -> None:
    stream = b"".join(encode_key(k, 1, 1795406000.0 + i) for i, k in enumerate(keys))
    decoder = Decoder()
    out = []
    data = junk.replace(b"\x00", b"\x01") + stream
    for i in range(0, len(data), chunk):
        out += decoder.feed(data[i : i + chunk])
    # junk shorter than a record may eat into the first record at most
    assert (
        [e.key for e in out][-max(0, len(keys) - 1) :] == keys[-max(0, len(keys) - 1) :]
        if keys
        else out == []
    )


def press(key: str, t: float = 0.0, value: int = 1) -> KeyEvent:
    return KeyEvent(t, key, 0, value)


def test_caller_keypad_intents() -> None:
    pad = CallerKeypad(CallerKeys())
    assert pad.press(press("KEY_KPENTER"), 0.0) == Intent("call")
    assert pad.press(press("KEY_KPENTER", value=2), 0.05) is None  # auto-repeat
    assert pad.press(press("KEY_KPENTER"), 0.05) == Ignored("KEY_KPENTER", "bounce")
    assert pad.press(press("KEY_KPENTER"), 0.6) == Ignored("KEY_KPENTER", "bounce")  # lockout
    assert pad.press(press("KEY_KPENTER"), 1.2) == Intent("call")
    assert pad.press(press("KEY_KPPLUS"), 1.3) == Intent("recall")
    assert pad.press(press("KEY_KPDOT"), 1.4) == Intent("finish")
    assert pad.press(press("KEY_KPDOT"), 1.6) == Intent("finish")  # debounced, not locked
    for key in ("KEY_KP1", "KEY_KP1", "KEY_KP7"):  # digits repeat on purpose
        assert pad.press(press(key), 1.7) is None
    assert pad.press(press("KEY_KPENTER"), 1.8) == AskPin("117")
    for key in ("KEY_KP4", "KEY_KP3", "KEY_KP2", "KEY_KP1"):
        assert pad.press(press(key), 1.85) is None
    assert pad.press(press("KEY_KPENTER"), 1.9) == Intent("login", "117", pin="4321")
    for key in ("KEY_KPSLASH", "KEY_KP3"):
        pad.press(press(key), 3.0)
    assert pad.press(press("KEY_KPENTER"), 3.1) == Intent("transfer", "3")
    assert pad.press(press("KEY_KPASTERISK"), 4.0) == Intent("pause")
    pad.paused = True
    assert pad.press(press("KEY_KPASTERISK"), 5.0) == Intent("resume")
    assert pad.press(press("KEY_Q"), 6.0) == Ignored("KEY_Q", "not a caller key")
    assert pad.press(press("KEY_KPENTER", value=0), 7.0) is None


def test_rating_pad_levels_reasons_and_timeout() -> None:
    keys = ("KEY_1", "KEY_2", "KEY_3", "KEY_4", "KEY_5")
    reasons = ("等候时间长", "服务态度差")
    pad = RatingPad(keys, reasons, "未说明原因", timeout_s=30)
    assert pad.press(press("KEY_1"), 0) == []  # not armed: nothing to rate
    pad.arm("T1", 0)
    assert pad.press(press("KEY_1"), 1) == [Rating("T1", 5)]
    assert pad.press(press("KEY_1"), 2) == []  # one rating per ticket
    pad.arm("T2", 10)
    assert pad.press(press("KEY_4"), 11) == []  # 不满意: asks for a reason
    assert pad.press(press("KEY_2"), 12) == [Rating("T2", 2, "服务态度差")]
    pad.arm("T3", 20)
    assert pad.tick(49) == []
    assert pad.tick(50) == [Rating("T3", None)]  # unrated, never satisfied
    pad.arm("T4", 60)
    pad.press(press("KEY_5"), 61)
    assert pad.tick(91) == [Rating("T4", 1, "未说明原因")]
    pad.arm("T5", 100)
    assert pad.arm("T6", 101) == [Rating("T5", None)]  # the next finish closes the last
    assert pad.ticket == "T6"


def test_rating_pad_timeout_counts_from_the_last_step_on_the_time_passed_in() -> None:
    """The timeout on injected time: a key just inside it counts, a tick at it closes the
    rating, and a bad level starts the reason's own timeout from its press."""
    keys = ("KEY_1", "KEY_2", "KEY_3", "KEY_4", "KEY_5")
    pad = RatingPad(keys, ("等候时间长", "服务态度差"), "未说明原因", timeout_s=30)
    pad.arm("T1", 1000.0)
    assert pad.tick(1029.999) == []
    assert pad.press(press("KEY_3"), 1029.999) == [Rating("T1", 3)]  # 基本满意, just in time
    pad.arm("T2", 2000.0)
    assert pad.tick(2030.0) == [Rating("T2", None)]
    assert pad.press(press("KEY_1"), 2030.5) == []  # too late: the rating is closed
    pad.arm("T3", 3000.0)
    assert pad.press(press("KEY_4"), 3025.0) == []  # 不满意 at 25 s: now the reason
    assert pad.tick(3054.9) == []  # the reason has its own 30 s from that press
    assert pad.press(press("KEY_1"), 3054.9) == [Rating("T3", 2, "等候时间长")]
    pad.arm("T4", 4000.0)
    pad.press(press("KEY_5"), 4001.0)
    assert pad.tick(4030.9) == []
    assert pad.tick(4031.0) == [Rating("T4", 1, "未说明原因")]
    assert not pad.armed


def test_keypad_login_asks_for_the_pin_and_never_shows_it() -> None:
    pad = CallerKeypad(CallerKeys(), pin_timeout_s=30)
    for key in ("KEY_KP1", "KEY_KPENTER"):
        pad.press(press(key), 0.0)
    assert pad.waiting_for_pin
    assert pad.press(press("KEY_KPENTER"), 0.5) == Ignored("KEY_KPENTER", "no PIN typed")
    for key in ("KEY_KP9", "KEY_KP8", "KEY_KP7", "KEY_KP6"):
        pad.press(press(key), 0.6)
    # a PIN is never in a repr, neither the keypad's nor the intent's
    assert "9876" not in repr(pad)
    intent = pad.press(press("KEY_KPENTER"), 0.65)  # a PIN between: not a bounce
    assert intent == Intent("login", "1", pin="9876") and "9876" not in repr(intent)
    assert not pad.waiting_for_pin
    assert pad.press(press("KEY_KPENTER"), 2.0) == Intent("call")  # the next Enter calls


def test_keypad_login_is_cancelled_by_another_key_or_by_time() -> None:
    pad = CallerKeypad(CallerKeys(), pin_timeout_s=30)
    for key in ("KEY_KP2", "KEY_KPENTER", "KEY_KP1"):
        pad.press(press(key), 0.0)
    # skip during the PIN: the login is dropped and nobody is skipped
    assert pad.press(press("KEY_KPMINUS"), 1.0) == Ignored("KEY_KPMINUS", "login cancelled")
    assert not pad.waiting_for_pin
    assert pad.press(press("KEY_KPMINUS"), 2.0) == Intent("skip")
    for key in ("KEY_KP2", "KEY_KPENTER", "KEY_KP1", "KEY_KP1"):
        pad.press(press(key), 10.0)
    # the clerk walked away: 30 s later the digits are a new staff number, not the PIN
    pad.press(press("KEY_KP3"), 40.0)
    assert pad.press(press("KEY_KPENTER"), 40.1) == AskPin("3")
    pad = CallerKeypad(CallerKeys(), pin_timeout_s=30)
    for key in ("KEY_KP2", "KEY_KPENTER"):
        pad.press(press(key), 0.0)
    assert pad.press(press("KEY_KPENTER"), 31.0) == Intent("call")  # timed out: a call


def test_typed_staff_numbers_match_the_id_or_its_digits() -> None:
    ids = ["S001", "S002", "T120", "42"]
    assert staff_id_for(ids, "1") == "S001"
    assert staff_id_for(ids, "001") == "S001"
    assert staff_id_for(ids, "S002") == "S002"
    assert staff_id_for(ids, "0120") == "T120"
    assert staff_id_for(ids, "42") == "42"
    assert staff_id_for(ids, "7") is None and staff_id_for(ids, "") is None


def test_the_configuration_check_knows_every_led_protocol_the_counter_speaks() -> None:
    assert set(led_names.PROTOCOL_NAMES) == set(PROTOCOLS)
    assert led_names.DEFAULT_PROTOCOL in PROTOCOLS
