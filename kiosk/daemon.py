"""One ticket machine (`kiosk-K1`): card readers and keypad → the hall → the printer.

One owner thread (`quhao.owner.OwnerLoop`) holds all of the kiosk's state: the flow,
the staff entry, the printer state, what the screen says, the tickets being issued.
The keypad, the MQTT socket and the GA 467 SAM reader's serial port are read by that
thread's select (the SAM's find poll is one of its timers); the PC/SC reader, whose
driver blocks, runs in a thread that only posts each card to it. A ticket is issued
one at a time, in order: one printer connection per ticket (its status asked once,
then the job and the proof it printed whole), the `issue` request sent without
blocking the loop, the answer printed on the same connection, a failed print voided. Card data is
turned into a `Person` (key, age, mask) at once; the raw ID number is never logged,
sent or kept.

The kiosk is out of service while the printer cannot print. While the hall does not
answer, it prints from its lease (kiosk/offline.py, docs/architecture.md "Offline
issuing: the lease protocol"): 离线取号, no "people ahead", the quota from its own
record; out of service once the lease is used up. `device/{name}/status` says which.

Staff authority is proven, never named: a staff card read here becomes a card
proof (HMAC of its UID with the site secret; the UID never leaves the kiosk), a
staff number typed here goes with the PIN typed after it. The hall checks either.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from kiosk import ticket
from kiosk.entry import (
    AppointmentChosen,
    Cleared,
    GreenChosen,
    IdEntry,
    NumberTyped,
    ServiceChosen,
    StaffStep,
    StaffTyped,
)
from kiosk.escpos_status import PrinterState
from kiosk.flow import Issue, KioskFlow, StaffProof
from kiosk.lease import Printed
from kiosk.offline import OfflineBook
from kiosk.offline_store import OfflineStore
from kiosk.person import Person, from_identity, from_number, from_uid
from kiosk.printer import PrinterSession, TicketPrinter
from quhao import idnumber, messages, ticketpage
from quhao.clock import Clock
from quhao.config import SiteConfig
from quhao.devices.cards import CardRead
from quhao.devices.inputevent import KeyEvent
from quhao.devices.keysource import KeySource
from quhao.messages.appointments import CheckinRequest
from quhao.mqtt import Message, device_bus
from quhao.owner import BusDriver, OwnerLoop, Timer
from quhao.rpc import HallClient, HallRequests
from quhao.staffauth import card_proof, staff_id_for
from quhao.topics import Topics
from quhao.wire import BadPayload, decode_object

log = logging.getLogger("quhao.kiosk")

PRINTER_CHECK_S = 5.0  # real seconds between printer checks while idle
# A printer readied when a card was noticed and not used (the card made no ticket) is
# closed after this many real seconds: its status is then too old to stand for a ticket.
PREPARED_S = 2.0
TICK_S = 0.2  # real seconds between looks at the flow's timeouts
RESULT_S = 5.0  # real seconds the outcome (请取票 A001, a refusal) stays on the screen
FLOW_TIMEOUT_S = 30.0  # hall seconds a swipe or a service key waits for the other
# ... but never less than this many real seconds: card readers (pcscd polls every
# 400 ms) and hands do not speed up with a simulated hall's fast clock.
FLOW_TIMEOUT_MIN_REAL_S = 5.0
REFUSAL_SLIPS = {"daily_cap_reached": "今日号源已满，请改日办理"}
REFUSAL_MESSAGES = {
    "quota_exceeded": "该证件本项业务取号已达上限",
    "daily_cap_reached": "今日号源已满",
    "closed": "当前不在取号时间",
    "unknown_service": "业务暂停办理",
}
# What the screen says to staff (授权: one ticket beyond the quota, or the green channel).
STAFF_PROMPTS = {
    "number": "工作人员授权：请输入工号，按确认键",
    "pin": "工作人员授权：请输入密码，按确认键",
}
STAFF_REFUSED = {  # the hall refused the proof (forbidden): no ticket
    "pin": "工作人员授权未通过：工号或密码错误，本次未取号",
    "card": "工作人员授权未通过：工作证无效，本次未取号",
}
UNKNOWN_STAFF_NUMBER = "工号或密码错误，请重新授权"
NO_OVERRIDE_RIGHT = "该工作人员无超额授权权限"
GREEN_NEEDS_STAFF = "绿色通道须工作人员先刷工作证或输入工号密码"
PRIORITY_NAMES = {"elderly": "老年人优先", "appointment": "预约优先", "green": "绿色通道"}
CHECKIN_REFUSED = {  # a refused check-in (网上预约): the normal service choice follows
    "too_early": "未到预约签到时间（预约时段开始前{early}分钟起可签到），请选择业务取普通号",
    "too_late": "已过预约签到时间，请选择业务取普通号",
}
SYNC_S = 1.0  # real seconds between steps of the lease protocol (hand over, release, lease)
OFFLINE_MARK = "{center}{bold}离线取号 · 系统恢复后按取号时间排队"


@dataclass(frozen=True)
class InputTiming:
    """One ticket's clock: when its input came (a card first noticed, a key pressed) and
    the waits on the devices and the hall along the way, so the kiosk's own share of
    input → first byte can be told apart from theirs."""

    at: float  # monotonic: the card noticed by its reader, or the key pressed
    card_read_s: float = 0.0  # the reader reading the card's data after noticing it
    printer_s: float = 0.0  # the printer answering its status
    hall_s: float = 0.0  # the hall answering `issue`

    def report(self, first_byte_at: float) -> dict[str, float]:
        total = first_byte_at - self.at
        own = total - self.card_read_s - self.printer_s - self.hall_s
        return {
            "input_to_print_ms": round(total * 1000, 3),
            "hall_ms": round(self.hall_s * 1000, 3),
            "card_read_ms": round(self.card_read_s * 1000, 3),
            "printer_status_ms": round(self.printer_s * 1000, 3),
            "own_ms": round(own * 1000, 3),
        }


class KioskDaemon:
    def __init__(
        self,
        config: SiteConfig,
        device: str,
        broker: str,
        clock: Clock | None = None,
        credentials_dir: Path | None = None,
        state_dir: Path = Path("state"),
    ) -> None:
        if device not in config.kiosks:
            raise ValueError(f"{device!r} is not a [[kiosks]] entry of {config.source}")
        self.config, self.device = config, device
        self.kiosk = config.kiosks[device]
        self.secret = config.read_secret()
        self._page_key = ticketpage.page_key(self.secret)  # the ticket QR's phone page
        self.clock = clock or Clock()
        self.topics = Topics(config.site.id)
        self.loop = OwnerLoop(f"{device}-owner")
        self.bus = device_bus(broker, device, self.topics.availability(device), credentials_dir)
        self.hall = HallRequests(
            self.loop,
            self.bus,
            self.topics,
            device,
            timeout_s=config.devices.hall_timeout_s,
            attempts=config.devices.hall_attempts,
        )
        wait_s = max(FLOW_TIMEOUT_S, FLOW_TIMEOUT_MIN_REAL_S * self.clock.speed)
        self.flow = KioskFlow(self.kiosk.services, wait_s)
        self.entry = IdEntry(config.keys.kiosk, self.kiosk.services, wait_s)
        self.printer = TicketPrinter(self.kiosk.printer) if self.kiosk.printer else None
        # All of the following belong to the owner loop: only its thread reads or writes them.
        self.waiting: deque[tuple[Issue, InputTiming]] = deque()
        self.issuing = False  # one ticket at a time, in order
        self.health: dict[str, Any] = {"readers": {}}
        self.hall_online = True
        self.printer_state = (
            PrinterState("ok")
            if self.printer is None
            else PrinterState("offline", "not checked yet")
        )
        self.message = ""
        self._result: Timer | None = None  # while set, the screen shows an outcome
        self.issued = 0
        self.last_ticket: dict[str, float] = {}  # timings of the last ticket printed
        self._input = InputTiming(time.monotonic())  # the input that completes an issue
        # The printer connection opened, and its status asked, when a card was noticed;
        # the next ticket takes it (one connection to the printer at a time, as ever).
        self._prepared: PrinterSession | None = None
        self._prepared_timer: Timer | None = None
        self._threads: list[threading.Thread] = []
        # Offline issuing: the lease book on disk, one lease-protocol request at a time.
        offline = state_dir / f"{device}.offline.sqlite" if config.devices.lease_numbers else None
        self.offline = OfflineBook(config, OfflineStore(offline or ":memory:"))
        self._syncing = False
        # (person key, rid) of a check-in the hall did not answer: the offline ticket this
        # person takes next names it, as it would an unanswered `issue`
        self._checkin_given_up: tuple[str, str] | None = None

    @property
    def heartbeat(self) -> float:
        """The owner loop's last round, for the systemd watchdog."""
        return self.loop.heartbeat

    # ---- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        self.bus.subscribe(self.topics.availability("hall"), self._on_hall_availability)
        BusDriver(self.loop, self.bus).start()
        self._check_printer()
        for index, uri in enumerate(self.kiosk.readers):
            self._reader(uri, f"{self.device} reader {index + 1}", f"reader{index}")
        if self.kiosk.keypad:
            keys = KeySource(
                self.kiosk.keypad,
                f"{self.device} keypad",
                lambda ok, why: self._set_health("keypad", "ok" if ok else why),
            )
            keys.attach(self.loop, self._on_key)
        self.loop.every(TICK_S, self._tick)
        self.loop.every(PRINTER_CHECK_S, self._idle_printer_check)
        self.loop.every(SYNC_S, self._sync)
        self._say(self._prompt())
        # What start-up made (modules, the configuration's models, the clients) lives as
        # long as the process: frozen out of the collector's sight, a full collection no
        # longer walks it — 30-57 ms for the ~51,000 objects, measured, on whichever swipe
        # it fell; under 0.1 ms frozen. Garbage is collected first so none is kept for good.
        gc.collect()
        gc.freeze()
        self.loop.start()
        log.info(
            "%s: ready with %d reader(s), services %s",
            self.device,
            len(self.kiosk.readers),
            ", ".join(self.kiosk.services),
        )

    def close(self) -> None:
        self.loop.stop()
        self.loop.join(5)
        for thread in self._threads:
            thread.join(2)
        self.bus.stop()

    def _spawn(self, name: str, target: Any) -> None:
        thread = threading.Thread(target=target, name=f"{self.device}-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _reader(self, uri: str, label: str, name: str) -> None:
        """A card reader. The SAM reader is driven by the owner loop itself (its port in
        the select, its polls on the timers); the PC/SC reader blocks in its driver, so
        it gets a thread that only posts each card to the loop."""
        absent_s = self.kiosk.card_absent_ms / 1000
        if uri.startswith("serial:"):
            from kiosk.readers.sam_serial import SamReader

            sam = SamReader(
                uri,
                label,
                self._on_card,
                lambda state, detail: self._reader_state(label, state, detail),
                absent_s=absent_s,
                on_noticed=self._card_noticed,
            )
            sam.attach(self.loop)
            return
        if not uri.startswith("pcsc:"):
            raise ValueError(f"{self.device}: reader URI {uri!r} is not pcsc:// or serial://")
        from quhao.devices.pcsc import PcscReader

        post = self.loop.post

        def on_card(read: CardRead) -> None:
            post(lambda: self._on_card(read))

        def on_state(state: str, detail: str) -> None:
            post(lambda: self._reader_state(label, state, detail))

        reader = PcscReader(
            uri,
            label,
            on_card,
            on_state,
            absent_s=absent_s,
            on_noticed=lambda: post(self._card_noticed),
        )
        self._spawn(name, lambda: reader.run(self.loop.stopping))

    def _reader_state(self, label: str, state: str, detail: str) -> None:
        self.health["readers"][label] = state if not detail else f"{state}: {detail}"
        self._publish_status()

    # ---- inputs -------------------------------------------------------------

    def _today(self) -> Any:
        return datetime.fromtimestamp(self.clock.now(), self.config.site.timezone).date()

    def _prompt(self) -> str:
        """What the screen asks for now: the next step of a staff entry, or the flow's."""
        stage = self.entry.stage
        return STAFF_PROMPTS[stage] if stage else self.flow.prompt

    def _on_card(self, read: CardRead) -> None:
        self._end_result()  # a new presentation: the last outcome gives way
        now = time.monotonic()
        detected_at = read.detected_at or now
        self._input = InputTiming(detected_at, (read.read_at or now) - detected_at)
        if read.uid is not None:
            staff = self.config.staff_by_card(read.uid)
            if staff is not None:
                # Known here as staff; proven to the hall by the card proof, not the UID.
                self._authorise(
                    staff.id, StaffProof(staff.id, card=card_proof(self.secret, read.uid))
                )
                return
            person = from_uid(self.secret, read.uid)
        else:
            assert read.identity is not None
            try:
                person = from_identity(self.secret, read.identity, self._today())
            except idnumber.InvalidIdNumber as exc:
                log.warning("%s: card refused: %s", self.device, exc)
                self._say("证件信息无效，请联系工作人员")
                return
        self._person(person)

    def _authorise(self, staff_id: str, proof: StaffProof) -> None:
        staff = self.config.staff[staff_id]
        if not staff.can_override:
            log.info("%s: staff %s has no override right (%s)", self.device, staff_id, proof.by)
            self._say(NO_OVERRIDE_RIGHT)
            return
        self.flow.authorise(proof, self.clock.now())
        log.info(
            "%s: staff %s authorised one ticket beyond the quota (%s)",
            self.device,
            staff_id,
            proof.by,
        )
        self._say(self._prompt())

    def _on_key(self, event: KeyEvent) -> None:
        self._end_result()
        self._input = InputTiming(time.monotonic())
        result = self.entry.press(event, self.clock.now())
        if isinstance(result, ServiceChosen):
            issue = self.flow.choose(result.service, self.clock.now())
            self._say(self._prompt())
            if issue:
                self._enqueue(issue)
        elif isinstance(result, NumberTyped):
            try:
                person = from_number(self.secret, result.number, self._today())
            except idnumber.InvalidIdNumber as exc:
                log.info("%s: typed ID number refused: %s", self.device, exc)
                self._say("身份证号码有误，请重新输入")
                return
            self._person(person)
        elif isinstance(result, AppointmentChosen):
            self.flow.appoint(self.clock.now())
            self._say(self._prompt())
        elif isinstance(result, StaffStep):
            self._say(STAFF_PROMPTS[result.stage])
        elif isinstance(result, StaffTyped):
            staff_id = staff_id_for(self.config.staff, result.number)
            if staff_id is None:
                log.info("%s: typed staff number %s is not known", self.device, result.number)
                self._say(UNKNOWN_STAFF_NUMBER)
                return
            self._authorise(staff_id, StaffProof(staff_id, pin=result.pin))
        elif isinstance(result, GreenChosen):
            green = self.flow.choose_green(self.clock.now())
            if green:
                log.info("%s: green channel chosen for the authorised ticket", self.device)
            self._say(self._prompt() if green else GREEN_NEEDS_STAFF)
        elif isinstance(result, Cleared):
            self.flow.reset()
            self._say(self._prompt())

    def _person(self, person: Person) -> None:
        log.debug("%s: person from %s", self.device, person.source)
        issue = self.flow.present(person, self.clock.now())
        if issue:
            self._enqueue(issue)
        else:
            self._say(self._prompt())

    def _on_hall_availability(self, message: Message) -> None:
        try:
            online = decode_object(message.payload).get("state") == "online"
        except BadPayload:
            return
        if online != self.hall_online:
            self.hall_online = online
            log.warning("%s: the hall is %s", self.device, "back" if online else "offline")
            self._publish_status()

    # ---- issuing ------------------------------------------------------------

    def _enqueue(self, issue: Issue) -> None:
        self.waiting.append((issue, self._input))
        self._next_issue()

    def _next_issue(self) -> None:
        while self.waiting and not self.issuing:
            issue, timing = self.waiting.popleft()
            self.issuing = True
            try:
                self._ask_hall(issue, timing)
            except Exception:
                log.exception("%s: issuing failed", self.device)
                self._done(None)

    def _card_noticed(self) -> None:
        """A card is being read: open the printer and send it the status query now, so
        its answer arrives while the card's data still comes, not after it."""
        if self.printer is None or self.issuing or self.waiting:
            return  # a busy kiosk readies the printer for each ticket in turn
        self._drop_prepared()
        session = self.printer.session()
        session.ask()
        self._prepared = session
        self._prepared_timer = self.loop.call_later(PREPARED_S, self._drop_prepared)

    def _take_prepared(self) -> PrinterSession | None:
        """The readied printer connection, now the caller's (its expiry cancelled)."""
        if self._prepared_timer is not None:
            self._prepared_timer.cancel()
            self._prepared_timer = None
        session, self._prepared = self._prepared, None
        return session

    def _drop_prepared(self) -> None:
        session = self._take_prepared()
        if session is not None:
            session.close()

    def _ask_hall(self, issue: Issue, timing: InputTiming) -> None:
        session = self._take_prepared() or (self.printer.session() if self.printer else None)
        if session is not None:
            status_from = time.monotonic()
            self._printer_is(session.status())
            timing = replace(timing, printer_s=time.monotonic() - status_from)
            if not self.printer_state.can_print:
                log.warning("%s: no ticket: printer %s", self.device, self.printer_state.detail)
                self._say("暂停服务：打印机故障")
                self._done(session)
                return
        if issue.checkin:  # a card with no service: the hall says if it is booked
            person = messages.Person(key=issue.person.key, age=issue.person.age)
            checkin = CheckinRequest(rid=HallClient.new_rid(), person=person)
            self.hall.send(
                checkin,
                partial(self._checked_in, issue, session, timing, time.monotonic()),
                partial(self._checkin_unanswered, issue, session, checkin.rid),
            )
            return
        if issue.override is None:
            refusal = self.offline.quota_before_online(
                issue.service, issue.person.key, self.clock.now()
            )
            if refusal is not None:  # offline tickets the hall has not seen yet fill it
                log.warning("%s: no ticket: %s (offline tickets)", self.device, refusal.code)
                self._say(refusal.message)
                self._done(session)
                return
        left = self.offline.left(self.clock.now(), (issue.service,))[issue.service]
        if not self.hall_online and left:  # known unreachable: print from the lease at once
            self._issue_offline(issue, session)
            return
        log.debug("%s: printer %s; asking the hall", self.device, self.printer_state.state)
        fields: dict[str, Any] = {
            "service": issue.service,
            "person": messages.Person(key=issue.person.key, age=issue.person.age),
        }
        if issue.override:
            fields["override"] = messages.StaffProof(**issue.override.wire())
        if issue.priority:
            fields["priority"] = issue.priority
        # The rid is ours before sending: if the hall never answers, the offline ticket
        # printed instead names it, so the hall can undo what it may have issued for it.
        request = messages.IssueRequest(rid=HallClient.new_rid(), **fields)
        asked_at = time.monotonic()
        self.hall.send(
            request,
            partial(self._answered, issue, session, timing, asked_at),
            partial(self._unanswered, issue, session, request.rid),
        )

    def _unanswered(
        self, issue: Issue, session: PrinterSession | None, rid: str | None, why: str
    ) -> None:
        self.hall_online = False
        log.warning("%s: the hall does not answer (%s): issuing offline", self.device, why)
        try:
            self._issue_offline(issue, session, abandoned_rid=rid)
        except Exception:
            log.exception("%s: offline issuing failed", self.device)
            if rid is not None:
                self._give_up(rid)  # unless a ticket naming it was recorded
            self._done(session)

    def _give_up(self, rid: str) -> None:
        """A request given up with nothing printed for it: the hall is told at the next
        handover, and voids what it may have issued for it (no phantom in its queue)."""
        try:
            self.offline.abandon(rid, self.clock.now())
        except Exception:
            log.exception("%s: given-up request %s not recorded", self.device, rid)

    def _issue_offline(
        self, issue: Issue, session: PrinterSession | None, abandoned_rid: str | None = None
    ) -> None:
        """A ticket from the lease: on disk first, then printed, marked 离线取号.
        `abandoned_rid`: the `issue` the hall did not answer (a late answer to it is
        dropped by `HallRequests`; the hall voids or refuses it at handover, named by this
        ticket or, if none prints, alone: `OfflineBook` records it before we say why)."""
        person = (issue.person.key, issue.person.age)
        given_up, self._checkin_given_up = self._checkin_given_up, None
        if abandoned_rid is None and given_up is not None and given_up[0] == issue.person.key:
            abandoned_rid = given_up[1]  # the check-in just given up for this person
        decided = self.offline.issue(
            issue.service,
            person,
            issue.priority == "appointment",
            issue.override is not None or issue.priority == "green",
            self.clock.now(),
            abandoned_rid,
        )
        if not isinstance(decided, Printed):
            log.warning("%s: no ticket: offline: %s", self.device, decided.code)
            self._say(decided.message)
            self._publish_status()
            self._done(session)
            return
        service = self.config.services[issue.service]
        number = f"{service.prefix}{decided.number:0{self.config.rules.number_width}d}"
        fields = self._fields(issue, service.name)
        priority = self.offline.priority(decided)
        fields.update(number=number, priority=PRIORITY_NAMES.get(priority or "", ""))
        lines = [line for line in self.config.ticket.lines if "{ahead}" not in line]
        at = lines.index("{qr}") if "{qr}" in lines else len(lines)
        lines.insert(at, OFFLINE_MARK)
        qr = self._qr(f"{decided.day}/{number}")  # the id the hall gives it at handover
        job = ticket.render(tuple(lines), fields, qr)
        state = session.print_job(job) if session else PrinterState("ok")
        self.printer_state = state
        if state.can_print:
            self.issued += 1
            log.info("%s: offline ticket %s printed", self.device, number)
            self.message = f"请取票 {number}（离线取号）"
        else:
            log.warning("%s: offline ticket %s not printed: voided", self.device, number)
            self.offline.voided(decided.rid)
            self._say("打印失败，请重新取号或联系工作人员")
        self._publish_status()
        self._done(session)

    # ---- the lease protocol -------------------------------------------------

    def _sync(self) -> None:
        """One request of the lease protocol at a time: hand over what was printed
        offline, release what is done with, lease more; an answer says the hall is back."""
        if self._syncing:
            return
        now = self.clock.now()
        self.offline.forget(now)
        request = self.offline.next_request(now, self.kiosk.services)
        if request is None:
            return
        self._syncing = True
        self.hall.send(
            request,
            partial(self._synced, request),
            partial(self._sync_unanswered, request),
        )

    def _synced(self, request: messages.ActionRequest, response: dict[str, Any]) -> None:
        self._syncing = False
        self.offline.answered(request, response, self.clock.now())
        if not self.hall_online:
            self.hall_online = True
            log.warning("%s: the hall answers again", self.device)
        self._publish_status()

    def _sync_unanswered(self, request: messages.ActionRequest, why: str) -> None:
        self._syncing = False
        if isinstance(request, messages.ReleaseRequest):
            self.offline.leases.block_state(request.day, request.service, "releasing")
        if self.hall_online:
            self.hall_online = False
            self._publish_status()

    def _answered(
        self,
        issue: Issue,
        session: PrinterSession | None,
        timing: InputTiming,
        asked_at: float,
        response: dict[str, Any],
    ) -> None:
        hall_s = time.monotonic() - asked_at
        try:
            if not self.hall_online:
                self.hall_online = True
                self._publish_status()
            log.debug("%s: hall answered", self.device)
            if not response.get("ok"):
                self._refused(issue, response.get("error", {}), session)
            else:
                self._print(issue, response["ticket"], session, replace(timing, hall_s=hall_s))
        except Exception:
            log.exception("%s: issuing failed", self.device)
            self._say(self._prompt())
        finally:
            self._done(session)

    def _checked_in(
        self,
        issue: Issue,
        session: PrinterSession | None,
        timing: InputTiming,
        asked_at: float,
        response: dict[str, Any],
    ) -> None:
        """The booked service's ticket is printed like any; a refusal holds the person
        for the normal service choice, saying why."""
        if response.get("ok"):
            service = response["ticket"]["service"]
            log.info("%s: appointment checked in for %s", self.device, service)
            booked = replace(issue, service=service, priority="appointment", checkin=False)
            self._answered(booked, session, timing, asked_at, response)
            return
        code = response.get("error", {}).get("code", "")
        log.info("%s: no check-in: %s", self.device, code)
        early = self.config.appointments.early_minutes
        self._hold(issue, session, CHECKIN_REFUSED.get(code, "").format(early=early))

    def _checkin_unanswered(
        self, issue: Issue, session: PrinterSession | None, rid: str | None, why: str
    ) -> None:
        self.hall_online = False
        log.warning("%s: the hall does not answer check-in (%s)", self.device, why)
        if rid is not None:
            self._give_up(rid)  # on disk first; an offline ticket for this person takes it
            self._checkin_given_up = (issue.person.key, rid)
        self._hold(issue, session, "")

    def _hold(self, issue: Issue, session: PrinterSession | None, why: str) -> None:
        ready = self.flow.hold(issue.person, self.clock.now())
        self._done(session)
        if ready is not None:  # a service key came while the hall was asked
            self._enqueue(ready)
            return
        self._end_result()
        self._say(why or self._prompt())
        if why:  # the reason stays a moment, then the normal prompt
            self._result = self.loop.call_later(RESULT_S, self._result_over)

    def _done(self, session: PrinterSession | None) -> None:
        """One ticket's turn is over: the outcome stays on the screen a moment (or until
        the next key or card), and the next waiting ticket goes."""
        if session is not None:
            session.close()
        self.issuing = False
        self._end_result()
        self._result = self.loop.call_later(RESULT_S, self._result_over)
        self._next_issue()

    def _qr(self, ticket_id: str) -> str:
        """The ticket's QR: its phone page (silent calling) when the site has a public URL."""
        public_url = self.config.screens.public_url
        return ticketpage.qr_text(public_url, self._page_key, self.config.site.id, ticket_id)

    def _fields(self, issue: Issue, service_name: str) -> dict[str, Any]:
        now = datetime.fromtimestamp(self.clock.now(), self.config.site.timezone)
        return {
            "hall_name": self.config.site.name,
            "service_name": service_name,
            "service": issue.service,
            "masked_id": issue.person.masked,
            "date": now.strftime("%Y-%m-%d"),
            "time": now.strftime("%H:%M"),
            "kiosk": self.device,
            "notice": self.config.texts.ticket_notice,
        }

    def _print(
        self,
        issue: Issue,
        issued: dict[str, Any],
        session: PrinterSession | None,
        timing: InputTiming,
    ) -> None:
        fields = self._fields(issue, issued.get("service_name", issue.service))
        fields.update(
            number=issued["number"],
            ahead=issued["ahead"],
            priority=PRIORITY_NAMES.get(issued.get("priority") or "", ""),
        )
        qr = self._qr(issued["id"])
        job = ticket.render(self.config.ticket.lines, fields, qr)
        printing_at = time.monotonic()  # the first byte goes out now
        state = session.print_job(job) if session else PrinterState("ok")
        self.printer_state = state
        if state.can_print:
            self.issued += 1
            person = (issue.person.key, issue.person.age)
            self.offline.online(issue.service, person, self.clock.now())  # for the quota
            self.last_ticket = timing.report(printing_at)
            log.info("%s: ticket %s printed", self.device, issued["number"])
            self.message = f"请取票 {issued['number']}"
            self._publish_status()  # one status for the ticket: count, timings, screen
            return
        # Printed badly or not at all: void it so the number is never called.
        log.warning(
            "%s: ticket %s not printed (%s): voiding", self.device, issued["number"], state.detail
        )
        self._publish_status()
        number = issued["number"]
        self.hall.send(
            messages.VoidRequest(ticket=issued["id"]),
            partial(self._voided, number),
            lambda why: log.error("%s: void of %s not answered: %s", self.device, number, why),
        )
        self._say("打印失败，请重新取号或联系工作人员")

    def _voided(self, number: str, response: dict[str, Any]) -> None:
        if not response.get("ok"):
            log.error("%s: void of %s refused: %s", self.device, number, response.get("error"))

    def _refused(self, issue: Issue, error: dict[str, Any], session: PrinterSession | None) -> None:
        code = error.get("code", "")
        log.info("%s: no ticket for %s: %s", self.device, issue.service, code)
        self._say(self._refusal_message(issue, code))
        slip = self.config.texts.quota_slip if code == "quota_exceeded" else REFUSAL_SLIPS.get(code)
        if slip and session is not None:
            service = self.config.services.get(issue.service)
            fields = self._fields(issue, service.name if service else issue.service)
            fields["slip"] = slip
            self.printer_state = session.print_job(
                ticket.render(self.config.ticket.slip_lines, fields, None)
            )

    def _refusal_message(self, issue: Issue, code: str) -> str:
        if code != "forbidden":
            return REFUSAL_MESSAGES.get(code, "暂时无法取号")
        service = self.config.services.get(issue.service)
        if issue.priority and service and issue.priority not in service.priorities:
            return f"本业务不设{PRIORITY_NAMES.get(issue.priority, issue.priority)}"
        if issue.override:
            return STAFF_REFUSED[issue.override.by]
        return "暂时无法取号"

    # ---- time, health -------------------------------------------------------

    def _tick(self) -> None:
        """Unfinished flows and staff entries time out."""
        dropped = self.flow.tick(self.clock.now())
        if self.entry.tick(self.clock.now()):
            log.info("%s: staff entry left unfinished; dropped", self.device)
            dropped = True
        if dropped:
            self._say(self._prompt())

    def _result_over(self) -> None:
        self._result = None
        self._say(self._prompt())

    def _end_result(self) -> None:
        if self._result is not None:
            self._result.cancel()
            self._result = None

    def _idle_printer_check(self) -> None:
        if not self.issuing and not self.waiting and self._prepared is None:
            self._check_printer()

    def _check_printer(self) -> None:
        if self.printer is None:
            return
        self._printer_is(self.printer.status())

    def _printer_is(self, state: PrinterState) -> None:
        """The printer's state as just read; a change is logged and published, a repeat
        costs nothing (a swipe reads it on every ticket)."""
        if state != self.printer_state:
            (log.info if state.can_print else log.warning)(
                "%s: printer %s %s", self.device, state.state, state.detail
            )
            self.printer_state = state
            self._publish_status()

    def _say(self, message: str) -> None:
        """What the kiosk's screen shows the citizen."""
        if message != self.message:
            self.message = message
            self._publish_status()

    def _set_health(self, part: str, state: str) -> None:
        self.health[part] = state
        self._publish_status()

    @property
    def in_service(self) -> bool:
        return self.printer_state.can_print and (self.hall_online or self._lease_left() > 0)

    def _lease_left(self) -> int:
        return sum(self.offline.left(self.clock.now(), self.kiosk.services).values())

    def _publish_status(self) -> None:
        reasons = []
        if not self.printer_state.can_print:
            reasons.append(f"printer: {self.printer_state.detail or self.printer_state.state}")
        left = self.offline.left(self.clock.now(), self.kiosk.services)
        if not self.hall_online and not any(left.values()):
            reasons.append("hall not reachable")  # and no lease number left
        status = {
            "state": "in_service" if not reasons else "out_of_service",
            "reasons": reasons,
            "printer": {
                "state": self.printer_state.state,
                "detail": self.printer_state.detail,
                "paper": {"ok": "ok", "near_end": "near_end", "out": "out"}.get(
                    self.printer_state.state, "unknown"
                ),
                "cover": "open" if self.printer_state.state == "cover_open" else "closed",
            },
            **self.health,
            "message": self.message
            if not reasons
            else ("暂停服务：系统连接中断，离线号已用完" if not self.hall_online else "暂停服务"),
            "issued": self.issued,
            "offline": {
                "issuing": not self.hall_online,
                "lease_left": left,
                "to_hand_over": self.offline.to_hand_over(),
                "given_up": self.offline.given_up(),
            },
            "last_ticket": self.last_ticket,
            "at": self.clock.now(),
        }
        self.bus.publish(self.topics.status(self.device), status, retain=True)
