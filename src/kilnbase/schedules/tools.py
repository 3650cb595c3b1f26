"""The schedules capability's MCP tools: the same `Schedules` calls as `/api/schedules` (admin, audited by
the service). An agent's delete waits for a person's approval, as its other deletes do; switching a schedule
off (`isActive: false`) does not, since it loses nothing and is undone by switching it on. Header values are
returned as they were given (`${{secrets.KEY}}` placeholders, never a secret's value)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from kilnbase.capability import Tool, given_fields
from kilnbase.identity.actor import Actor
from kilnbase.schedules import definitions
from kilnbase.schedules.service import DEFAULT_LOG_LIMIT, MAX_LOG_LIMIT, Schedules

ScheduleId = Annotated[str, Field(description="The schedule's id (a UUID)", min_length=1, max_length=64)]
Name = Annotated[str, Field(min_length=definitions.MIN_NAME, max_length=definitions.MAX_NAME)]
CronSchedule = Annotated[
    str,
    Field(
        description='5-field cron in UTC ("*/5 * * * *": every 5 minutes) or "N seconds" (1 to 59)',
        min_length=1,
        max_length=100,
    ),
]
FunctionUrl = Annotated[
    str,
    Field(
        description="The URL called (http or https), or a path on this server such as /functions/my-slug",
        min_length=1,
        max_length=definitions.MAX_URL,
    ),
]
Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
Headers = Annotated[
    dict[str, str] | None,
    Field(description="Request headers; a value may hold ${{secrets.KEY}}, replaced at each run"),
]
Body = Annotated[dict[str, Any] | None, Field(description="The JSON object sent (not with GET)")]


def schedules_tools(schedules: Schedules) -> list[Tool]:
    async def list_schedules(actor: Actor) -> dict[str, Any]:
        return {"schedules": await schedules.list(actor)}

    async def get_schedule(actor: Actor, id: ScheduleId) -> dict[str, Any]:
        return await schedules.get(actor, id)

    async def create_schedule(
        actor: Actor,
        name: Name,
        cronSchedule: CronSchedule,
        functionUrl: FunctionUrl,
        httpMethod: Method = "POST",
        headers: Headers = None,
        body: Body = None,
    ) -> dict[str, Any]:
        fields = given_fields(locals(), definitions.UPDATE_FIELDS)
        created = await schedules.create(actor, fields)
        return {**created, "message": "Schedule created successfully"}

    async def update_schedule(
        actor: Actor,
        id: ScheduleId,
        name: Name | None = None,
        cronSchedule: CronSchedule | None = None,
        functionUrl: FunctionUrl | None = None,
        httpMethod: Method | None = None,
        headers: Headers = None,
        body: Body = None,
        isActive: Annotated[bool | None, Field(description="false: stop running it; true: run again")] = None,
    ) -> dict[str, Any]:
        fields = given_fields(locals(), definitions.UPDATE_FIELDS)
        updated = await schedules.update(actor, id, fields)
        return {**updated, "message": "Schedule updated successfully"}

    async def delete_schedule(actor: Actor, id: ScheduleId) -> dict[str, Any]:
        await schedules.delete(actor, id)
        return {"message": "Schedule deleted successfully."}

    async def get_schedule_logs(
        actor: Actor,
        id: ScheduleId,
        limit: Annotated[int, Field(ge=1, le=MAX_LOG_LIMIT)] = DEFAULT_LOG_LIMIT,
        offset: Annotated[int, Field(ge=0, le=10_000_000)] = 0,
    ) -> dict[str, Any]:
        return await schedules.logs(actor, id, limit, offset)

    return [
        Tool("list-schedules", "The schedules: what each calls, when, and its next run.", list_schedules),
        Tool("get-schedule", "One schedule by id.", get_schedule),
        Tool(
            "get-schedule-logs",
            "A schedule's runs, newest first: status code, success, duration, message.",
            get_schedule_logs,
        ),
        Tool(
            "create-schedule",
            "Call a URL (an edge function, say) on a cron schedule or every N seconds.",
            create_schedule,
            read_only=False,
        ),
        Tool(
            "update-schedule",
            "Change a schedule, or switch it off and on (isActive).",
            update_schedule,
            read_only=False,
        ),
        Tool(
            "delete-schedule",
            "Delete a schedule and its logs.",
            delete_schedule,
            read_only=False,
            needs_approval=lambda arguments: f"deletes schedule {arguments.get('id')}",
        ),
    ]
