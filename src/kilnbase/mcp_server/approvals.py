"""Approvals: an agent's high-risk tool call waits for a person instead of running.

When an agent key calls a tool that says the call needs approval (dropping a table, deleting users, SQL the
migration dry run rates DANGER), the call is stored as a change request: the exact tool and arguments, why
it needs approval, its dry run, and who asked. The agent gets "pending approval" and the request's id, and
can poll it (`get-change-request`). A person with admin rights (or another agent key allowed to approve)
approves or rejects it by REST or `kilnbase approvals`; an approval runs exactly the stored call, once, as
the agent that asked (so its scopes and audit apply), and keeps the outcome for the agent to read. A request
not decided within 24 hours expires. Calls by people are never held: the gate is for agents.

An agent key reads only its own requests: another key's arguments and results may hold what this key's
scopes do not reach. People with admin rights read all, and so does a key allowed to approve, which is
there to decide other keys' requests and should not decide blind.

A held upload's file (up to 4 MB) is shown by its size and SHA-256 wherever requests are listed, polled or
decided (summarised once, as the call is held); only `GET /api/approvals/:id` (`get(..., in_full=True)`)
shows the call with its bytes, and an approval runs the call as it was stored.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson

from kilnbase import audit
from kilnbase.db.session import Database
from kilnbase.http.errors import ApiError, error_body, require_admin_actor
from kilnbase.identity.actor import Actor
from kilnbase.identity.agent_keys import AgentKeys
from kilnbase.identity.principal import agent_principal

MODULE = "APPROVALS"
STATUSES = ("pending", "running", "done", "failed", "rejected", "expired")
#: Runs a stored tool call as an actor, in a session: the same path as a live call (audit, result bound),
#: without the gate.
Execute = Callable[[str, Actor, dict[str, Any], str], Awaitable[str]]

_OTHER_COLUMNS = (
    "id::text, status, tool, reason, dry_run, requested_by, agent_key::text, session, created_at, "
    "expires_at, decided_by, decided_at, decision_note, result"
)
#: A held upload's file (or a held bulk upsert's rows), by its size and SHA-256 (`system.held_file_summary`),
#: as the request was stored with it: summarised once, when the call was held, not on each listing. A request
#: held by a server from before migration 0202 (several API processes on one database, upgraded one by one)
#: has none stored: summarised as it is read.
_FILE = "coalesce(file_summary, system.held_file_summary(tool, arguments)) as file"
#: A request with its call in full: what an approval runs, and what `GET /api/approvals/:id` shows.
_COLUMNS = f"{_OTHER_COLUMNS}, arguments, {_FILE}"
#: A request as lists, polls and decisions show it: a held upload's file, or a held bulk upsert's rows, by
#: size and hash (`file`), not in full (up to 4 MB, 5.6 MB as base64, or 10 MB of rows, for each request
#: listed).
_SHOWN_COLUMNS = (
    f"{_OTHER_COLUMNS}, case when tool = 'upload-object' then arguments - 'base64Data' - 'text' "
    f"when tool = 'bulk-upsert' then arguments - 'content' else arguments end as arguments, {_FILE}"
)


def _json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "status": row["status"],
        "tool": row["tool"],
        "arguments": row["arguments"],
        "file": row["file"],
        "reason": row["reason"],
        "dryRun": row["dry_run"],
        "requestedBy": row["requested_by"],
        "agentKey": row["agent_key"],
        "createdAt": row["created_at"],
        "expiresAt": row["expires_at"],
        "decidedBy": row["decided_by"],
        "decidedAt": row["decided_at"],
        "decisionNote": row["decision_note"],
        "result": row["result"],
    }


def _not_found() -> ApiError:
    return ApiError(404, "NOT_FOUND", "No change request with this id.", "List them with GET /api/approvals.")


def _only_requests_of(actor: Actor) -> str | None:
    """The agent key whose requests alone `actor` may read; None when it may read every request (a person
    with admin rights, or a key allowed to approve)."""
    agent = actor.principal.agent
    return agent.id if agent is not None and not agent.can_approve else None


class Approvals:
    def __init__(self, database: Database, agent_keys: AgentKeys) -> None:
        self.database = database
        self.agent_keys = agent_keys
        self._execute: Execute | None = None

    def runs_with(self, execute: Execute) -> None:
        """Given once the MCP server has adapted its tools (approvals run them)."""
        self._execute = execute

    async def _expire(self, cur: Any) -> None:
        await cur.execute(
            "update system.change_requests set status = 'expired' "
            "where status = 'pending' and expires_at <= now()"
        )

    async def request(
        self, actor: Actor, tool: str, arguments: dict[str, Any], reason: str, session: str
    ) -> dict[str, Any]:
        agent = actor.principal.agent
        assert agent is not None, "only agents' calls are held"
        async with self.database.as_owner() as cur:
            await cur.execute(
                "insert into system.change_requests (tool, arguments, reason, requested_by, agent_key, "
                "session, file_summary) values (%(tool)s, %(arguments)s::jsonb, %(reason)s, %(by)s, "
                "%(agent)s, %(session)s, system.held_file_summary(%(tool)s, %(arguments)s::jsonb)) "
                "returning id::text",
                {
                    "tool": tool,
                    "arguments": orjson.dumps(arguments, default=str).decode(),
                    "reason": reason,
                    "by": actor.name,
                    "agent": agent.id,
                    "session": session,
                },
            )
            row = await cur.fetchone()
            assert row is not None
            details = {"changeRequestId": row["id"], "tool": tool, "reason": reason}
            await audit.record(cur, actor, "REQUEST_APPROVAL", MODULE, details)
        return {
            "status": "pending_approval",
            "changeRequestId": row["id"],
            "reason": reason,
            "message": f"{tool} needs a person's approval ({reason}); it has not run. Poll "
            "get-change-request with this id for the outcome.",
        }

    async def get(self, actor: Actor, request_id: str, *, in_full: bool = False) -> dict[str, Any]:
        """One request; `in_full`, with a held upload's file in its arguments (for the person deciding it,
        by REST), else by its size and hash (for an agent polling it)."""
        require_admin_actor(actor)
        columns = _COLUMNS if in_full else _SHOWN_COLUMNS
        async with self.database.as_owner() as cur:
            await self._expire(cur)
            await cur.execute(
                f"select {columns} from system.change_requests where id::text = %s "
                "and (%s::uuid is null or agent_key = %s::uuid)",
                (request_id, *[_only_requests_of(actor)] * 2),
            )
            row = await cur.fetchone()
        if row is None:
            raise _not_found()  # (another key's request too: its id tells nothing)
        return _json(row)

    async def list_requests(self, actor: Actor, status: str | None, limit: int) -> list[dict[str, Any]]:
        require_admin_actor(actor)
        async with self.database.as_owner() as cur:
            await self._expire(cur)
            await cur.execute(
                f"select {_SHOWN_COLUMNS} from system.change_requests "
                "where (%s::text is null or status = %s) and (%s::uuid is null or agent_key = %s::uuid) "
                "order by created_at desc limit %s",
                (status, status, *[_only_requests_of(actor)] * 2, limit),
            )
            return [_json(row) for row in await cur.fetchall()]

    def _check_approver(self, actor: Actor, row: Mapping[str, Any]) -> None:
        require_admin_actor(actor)
        agent = actor.principal.agent
        if agent is not None and (not agent.can_approve or agent.id == row["agent_key"]):
            raise ApiError(
                403,
                "FORBIDDEN",
                "This agent key may not decide this change request.",
                "A person with admin rights, or another agent key created with canApprove, decides it.",
            )

    async def _decide(
        self, actor: Actor, request_id: str, status: str, note: str | None, returning: str = _SHOWN_COLUMNS
    ) -> dict[str, Any]:
        """Move a pending request to `status`, once: a second decision finds it no longer pending. The
        request as `returning` reads it (the call in full only for the approval that runs it)."""
        async with self.database.as_owner() as cur:
            await self._expire(cur)
            await cur.execute(
                "select status, tool, agent_key::text from system.change_requests where id::text = %s "
                "for update",
                (request_id,),
            )
            row = await cur.fetchone()
            if row is None:
                raise _not_found()
            self._check_approver(actor, row)
            if row["status"] != "pending":
                raise ApiError(
                    409,
                    "ALREADY_DECIDED",
                    f"This change request is {row['status']}, not pending.",
                    "Read its outcome with GET /api/approvals/:id.",
                )
            await cur.execute(
                "update system.change_requests set status = %s, decided_by = %s, decided_at = now(), "
                f"decision_note = %s where id::text = %s returning {returning}",
                (status, actor.name, note, request_id),
            )
            decided = await cur.fetchone()
            assert decided is not None
            action = "APPROVE_CHANGE" if status == "running" else "REJECT_CHANGE"
            await audit.record(
                cur, actor, action, MODULE, {"changeRequestId": request_id, "tool": row["tool"]}
            )
        return dict(decided)

    async def reject(self, actor: Actor, request_id: str, note: str | None) -> dict[str, Any]:
        return _json(await self._decide(actor, request_id, "rejected", note))

    async def approve(self, actor: Actor, request_id: str, note: str | None) -> dict[str, Any]:
        row = await self._decide(actor, request_id, "running", note, returning=_COLUMNS)
        key = self.agent_keys.by_id(row["agent_key"])
        status: str = "failed"
        result: Any = None
        try:
            if key is None:
                result = {"error": "the agent key that asked has been revoked or has expired; nothing ran"}
            else:
                assert self._execute is not None
                requester = Actor(agent_principal(key), tool=row["tool"], approved_request=request_id)
                session = row["session"] or f"approval-{request_id}"
                text = await self._execute(row["tool"], requester, dict(row["arguments"]), session)
                status, result = "done", orjson.loads(text)
        except ApiError as exc:
            result = error_body(exc.status, exc.code, exc.message, exc.next_actions)
        finally:
            async with self.database.as_owner() as cur:
                await cur.execute(
                    f"update system.change_requests set status = %s, result = %s::jsonb where id::text = %s "
                    f"returning {_SHOWN_COLUMNS}",
                    (status, orjson.dumps(result, default=str).decode(), request_id),
                )
                done = await cur.fetchone()
        assert done is not None
        return _json(done)
