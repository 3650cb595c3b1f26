"""The MCP tools' arguments that every payment provider's lists take (`tools.py`, `razorpay_tools.py`): a
limit and a billing subject, read by the same rules as the routes' query strings (`definitions.list_query`),
so a tool and its route refuse the same values with the same messages."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from kilnbase.payments import definitions

Limit = Annotated[int, Field(ge=1, le=definitions.MAX_LIST)]
SubjectType = Annotated[
    str | None, Field(description="A billing subject's type (user, team...)", max_length=100)
]
SubjectId = Annotated[
    str | None, Field(description="The billing subject's id (with subjectType)", max_length=255)
]


def list_query(limit: int, subject_type: str | None, subject_id: str | None) -> definitions.ListQuery:
    given = {"limit": str(limit)}
    if subject_type is not None:
        given["subjectType"] = subject_type
    if subject_id is not None:
        given["subjectId"] = subject_id
    return definitions.list_query(given)
