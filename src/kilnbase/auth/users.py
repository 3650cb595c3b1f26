"""Users (`auth.users`): create, find, list, delete, profiles, and the JSON shape InsForge's clients read.

That shape is built by Postgres (`USER_JSON`), with the row it describes, and read back with orjson: on the
refresh path, where a user is read per request, it costs less than converting each column (two of them JSON)
and assembling the object again in Python. Timestamps are written as JavaScript's `toISOString` writes them,
as InsForge's are: UTC, milliseconds, `Z`.
"""

from __future__ import annotations

from typing import Any

import orjson
from psycopg import AsyncCursor, errors
from psycopg.rows import DictRow

from kilnbase.http.errors import ApiError

_ISO = """'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'"""
#: The user as InsForge's clients read it; "email" leads the providers when the account has a password.
USER_JSON = f"""json_build_object(
    'id', u.id, 'email', u.email, 'emailVerified', u.email_verified,
    'providers', case when coalesce(u.password, '') <> '' then array['email'] else '{{}}'::text[] end
        || array(select distinct p.provider from auth.user_providers p
                 where p.user_id = u.id and p.provider <> 'email' order by 1),
    'createdAt', to_char(u.created_at at time zone 'UTC', {_ISO}),
    'updatedAt', to_char(u.updated_at at time zone 'UTC', {_ISO}),
    'profile', u.profile, 'metadata', u.metadata)::text"""
#: What every read of a user selects (from `auth.users u`): what the flows decide by, and the JSON.
USER_COLUMNS = f"u.id, u.email, u.password, u.email_verified, {USER_JSON} as user_json"


def user_json(row: DictRow) -> dict[str, Any]:
    user: dict[str, Any] = orjson.loads(row["user_json"])
    return user


async def by_id(cur: AsyncCursor[DictRow], user_id: str) -> DictRow | None:
    await cur.execute(f"select {USER_COLUMNS} from auth.users u where u.id = %s", (user_id,))
    return await cur.fetchone()


async def by_email(cur: AsyncCursor[DictRow], email: str, *, lock: bool = False) -> DictRow | None:
    suffix = " for update of u" if lock else ""
    await cur.execute(f"select {USER_COLUMNS} from auth.users u where u.email = %s{suffix}", (email,))
    return await cur.fetchone()


async def create(
    cur: AsyncCursor[DictRow],
    *,
    email: str,
    password_hash: str | None,
    name: str | None,
    email_verified: bool,
) -> DictRow:
    profile = {"name": name} if name else {}
    try:
        await cur.execute(
            "insert into auth.users (email, password, email_verified, profile) values (%s, %s, %s, "
            "%s::jsonb) "
            "returning id",
            (email, password_hash, email_verified, orjson.dumps(profile).decode()),
        )
    except errors.UniqueViolation:
        raise ApiError(
            409,
            "AUTH_EMAIL_EXISTS",
            "User already exists",
            "Sign in instead, or reset the password.",
        ) from None
    created = await cur.fetchone()
    assert created is not None
    row = await by_id(cur, str(created["id"]))
    assert row is not None
    return row


async def set_password(cur: AsyncCursor[DictRow], user_id: str, password_hash: str) -> None:
    await cur.execute(
        "update auth.users set password = %s, updated_at = now() where id = %s", (password_hash, user_id)
    )


async def mark_verified(cur: AsyncCursor[DictRow], user_id: str) -> None:
    await cur.execute(
        "update auth.users set email_verified = true, updated_at = now() where id = %s and not "
        "email_verified",
        (user_id,),
    )


class ProfileTooLarge(Exception):
    """The profile, merged with a change, would pass its size limit; `size` is what it would be."""

    def __init__(self, size: int) -> None:
        super().__init__(f"profile of {size} bytes")
        self.size = size


async def merge_profile(
    cur: AsyncCursor[DictRow], user_id: str, profile: dict[str, Any], max_bytes: int | None = None
) -> DictRow | None:
    """The user's profile merged with `profile`, unless the result (as stored, JSON text) passes `max_bytes`:
    checked on the merged value, in the update itself, because a merge only adds, and one field at a time
    would otherwise grow a profile without end. None when there is no such user. (Without `max_bytes`,
    for what Kilnbase writes itself: a provider's name and avatar at an OAuth sign-up.)"""
    change = orjson.dumps(profile).decode()
    params = {"change": change, "id": user_id, "max": max_bytes}
    await cur.execute(
        "update auth.users set profile = profile || %(change)s::jsonb, updated_at = now() "
        "where id = %(id)s and (%(max)s::int is null "
        "or octet_length((profile || %(change)s::jsonb)::text) <= %(max)s) returning id",
        params,
    )
    if await cur.fetchone() is None:
        await cur.execute(
            "select octet_length((profile || %(change)s::jsonb)::text) as size "
            "from auth.users where id = %(id)s",
            params,
        )
        row = await cur.fetchone()
        if row is None:
            return None
        raise ProfileTooLarge(row["size"])
    return await by_id(cur, user_id)


async def public_profile(cur: AsyncCursor[DictRow], user_id: str) -> DictRow | None:
    await cur.execute("select id, profile from auth.users where id = %s", (user_id,))
    return await cur.fetchone()


async def list_page(
    cur: AsyncCursor[DictRow], *, limit: int, offset: int, search: str | None
) -> tuple[list[DictRow], int]:
    where, params = "", []
    if search:
        escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where = "where u.email ilike %s or u.profile->>'name' ilike %s or u.id::text = %s"
        params = [f"%{escaped}%", f"%{escaped}%", search]
    await cur.execute(f"select count(*) as total from auth.users u {where}", params)
    total_row = await cur.fetchone()
    await cur.execute(
        f"select {USER_COLUMNS} from auth.users u {where} order by u.created_at desc, u.id limit %s offset "
        f"%s",
        [*params, limit, offset],
    )
    rows = await cur.fetchall()
    return rows, int(total_row["total"]) if total_row else 0


async def delete_many(cur: AsyncCursor[DictRow], user_ids: list[str]) -> tuple[list[str], int]:
    """Delete users (their sessions go with them): the session families that ended, and how many users."""
    await cur.execute(
        "select distinct family_id::text from auth.sessions where user_id = any(%s::uuid[]) "
        "and revoked_at is null",
        (user_ids,),
    )
    ended = [row["family_id"] for row in await cur.fetchall()]
    await cur.execute("delete from auth.users where id = any(%s::uuid[])", (user_ids,))
    return ended, cur.rowcount
