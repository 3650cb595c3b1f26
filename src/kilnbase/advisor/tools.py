"""The advisor's MCP tools: the same `Advisor` calls as `/api/advisor` (admin, audited by the service).

Scanning changes nothing in the project (it only records what it found), so `run-advisor-scan` is a read tool,
open to `advisor:read`, as are the findings and the suppressions. Suppressing a finding hides it from people,
so an agent's suppression waits for a person's approval; restoring one hides nothing and does not.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from kilnbase.advisor.rules import RULE_IDS
from kilnbase.advisor.service import DEFAULT_ISSUE_LIMIT, MAX_ISSUE_LIMIT, MAX_ISSUE_OFFSET, Advisor
from kilnbase.capability import Tool
from kilnbase.identity.actor import Actor

RuleId = Annotated[
    str, Field(description=f"The rule: one of {', '.join(RULE_IDS)}", min_length=1, max_length=200)
]


def advisor_tools(advisor: Advisor) -> list[Tool]:
    async def run_advisor_scan(actor: Actor) -> dict[str, Any]:
        return await advisor.scan(actor)

    async def get_advisor_summary(actor: Actor) -> dict[str, Any] | None:
        return await advisor.latest(actor)

    async def get_advisor_issues(
        actor: Actor,
        severity: Literal["critical", "warning", "info"] | None = None,
        category: Literal["security", "performance", "health"] | None = None,
        limit: Annotated[int, Field(ge=1, le=MAX_ISSUE_LIMIT)] = DEFAULT_ISSUE_LIMIT,
        offset: Annotated[int, Field(ge=0, le=MAX_ISSUE_OFFSET)] = 0,
    ) -> dict[str, Any]:
        return await advisor.issues(actor, severity=severity, category=category, limit=limit, offset=offset)

    async def list_advisor_suppressions(actor: Actor) -> dict[str, Any]:
        return {"suppressions": await advisor.suppressions(actor)}

    async def suppress_advisor_finding(
        actor: Actor,
        ruleId: RuleId,
        scope: Annotated[
            Literal["instance", "rule"],
            Field(description="instance: one finding (by affectedObject); rule: every finding of the rule"),
        ],
        reason: Literal["false_positive", "accepted_risk", "wont_fix", "other"],
        affectedObject: Annotated[
            str | None, Field(description="The finding's affectedObject (instance scope)", max_length=500)
        ] = None,
        note: Annotated[
            str | None, Field(description="Why (required with reason other)", max_length=1000)
        ] = None,
    ) -> dict[str, Any]:
        body = {
            "ruleId": ruleId,
            "scope": scope,
            "reason": reason,
            "affectedObject": affectedObject,
            "note": note,
        }
        return await advisor.suppress(
            actor, {name: value for name, value in body.items() if value is not None}
        )

    async def restore_advisor_finding(
        actor: Actor,
        id: Annotated[str, Field(description="The suppression's id", min_length=1, max_length=64)],
    ) -> dict[str, Any]:
        await advisor.unsuppress(actor, id)
        return {"deleted": True}

    return [
        Tool(
            "run-advisor-scan",
            "Scan the database for security, performance and health problems (RLS off or too open, "
            "SECURITY DEFINER functions, missing indexes, sequences near their limit, stuck sessions...); "
            "answers the summary. Read the findings with get-advisor-issues.",
            run_advisor_scan,
        ),
        Tool(
            "get-advisor-summary",
            "The latest advisor scan: when, and how many findings of each severity.",
            get_advisor_summary,
        ),
        Tool(
            "get-advisor-issues",
            "The latest scan's findings, most severe first: what is wrong, and the SQL that fixes it.",
            get_advisor_issues,
        ),
        Tool(
            "list-advisor-suppressions",
            "The findings and rules hidden from the advisor's results.",
            list_advisor_suppressions,
        ),
        Tool(
            "suppress-advisor-finding",
            "Hide a finding (scope instance, by its affectedObject) or a whole rule from the results.",
            suppress_advisor_finding,
            read_only=False,
            needs_approval=lambda arguments: (
                f"hides advisor findings of {arguments.get('ruleId')}"
                + (f" on {arguments.get('affectedObject')}" if arguments.get("scope") == "instance" else "")
            ),
        ),
        Tool(
            "restore-advisor-finding",
            "Remove a suppression: what it hid shows again.",
            restore_advisor_finding,
            read_only=False,
        ),
    ]
