"""The hall office's actions and the facts they leave: bad-rating follow-up cases
(好差评 整改).

The office is a device of its own, `office` (its broker user is made by `quhao broker
gen`): the `quhao cases` commands ask the running hall through
it, so every change is decided by the hall's one loop and logged as an event. Who acts
is proven on each request (`by`: staff number and PIN, or a staff card), never named.

Registered into the action, reply and event tables by `quhao.messages`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from quhao.messages.base import Reason, Seconds, Text, Wire
from quhao.messages.events import Fact
from quhao.messages.replies import Reply
from quhao.messages.requests import ActionRequest, StaffProof

CaseId = Text
CaseState = Literal["open", "contacted", "resolved"]
Appeal = Literal["none", "pending", "upheld", "rejected"]


# ---- requests ---------------------------------------------------------------


class CaseUpdateRequest(ActionRequest):
    """A follow-up step: the citizen was called back (`contacted`), or it is settled."""

    action = "case_update"
    role = "office"

    case: CaseId = Field(description='the case id ("C20261123-A003") or its ticket id')
    state: Literal["contacted", "resolved"]
    note: Reason = Field(min_length=1, description="what was done or said (回访记录)")
    by: StaffProof = Field(description="who did it")


class CaseAppealRequest(ActionRequest):
    """申诉: the rated clerk asks for the rating to be taken out of their score."""

    action = "case_appeal"
    role = "office"

    case: CaseId
    note: Reason = Field(min_length=1, description="why the rating was not deserved")
    by: StaffProof = Field(description="the rated clerk")


class CaseDecideRequest(ActionRequest):
    """A supervisor's decision on an appeal."""

    action = "case_decide"
    role = "office"

    case: CaseId
    decision: Literal["upheld", "rejected"] = Field(
        description="upheld: the rating leaves the clerk's score (it stays on record)"
    )
    note: Reason = Field(min_length=1)
    by: StaffProof = Field(description="a supervisor (`[cases] supervisors`), not the clerk")


# ---- replies ----------------------------------------------------------------


class CaseView(Wire):
    id: str
    state: CaseState
    appeal: Appeal
    due: Seconds = Field(description="the deadline")


class CaseReply(Reply):
    case: CaseView


# ---- events -----------------------------------------------------------------


class CaseFact(Fact):
    case: str = Field(description='"C" + the rated ticket\'s day and number')
    day: str = Field(description="the rated ticket's day")
    number: str
    service: str
    window: int | None
    staff: str | None = Field(description="the rated clerk")


class CaseOpened(CaseFact):
    """A 不满意/非常不满意 rating opened a follow-up case."""

    type: Literal["case.opened"]
    ticket: str
    level: int
    reason: str
    due: Seconds = Field(description="end of the Nth working day after the rating's day")
    remind_at: Seconds = Field(description="when `alert.case_due` fires if still open")


class CaseUpdated(CaseFact):
    """A follow-up step, with who and a note."""

    type: Literal["case.updated"]
    state: Literal["contacted", "resolved"]
    by: str
    note: str


class CaseAppealed(CaseFact):
    """The clerk appealed the rating."""

    type: Literal["case.appealed"]
    by: str
    note: str


class CaseDecided(CaseFact):
    """A supervisor decided the appeal."""

    type: Literal["case.decided"]
    decision: Literal["upheld", "rejected"]
    by: str
    note: str


class CaseDue(CaseFact):
    """A case not yet resolved is due soon (`[cases] remind_before_hours`)."""

    type: Literal["alert.case_due"]
    due: Seconds


class CaseOverdue(CaseFact):
    """A case passed its deadline unresolved."""

    type: Literal["alert.case_overdue"]
    due: Seconds


OFFICE_REQUESTS: tuple[type[ActionRequest], ...] = (
    CaseUpdateRequest,
    CaseAppealRequest,
    CaseDecideRequest,
)
OFFICE_REPLIES: dict[str, type[Reply]] = {
    "case_update": CaseReply,
    "case_appeal": CaseReply,
    "case_decide": CaseReply,
}
OFFICE_EVENTS: tuple[type[Fact], ...] = (
    CaseOpened,
    CaseUpdated,
    CaseAppealed,
    CaseDecided,
    CaseDue,
    CaseOverdue,
)
