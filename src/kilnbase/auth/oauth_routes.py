"""OAuth sign-in under `/api/auth/oauth`: provider configs and the PKCE-style flow."""

from __future__ import annotations

from starlette.routing import BaseRoute

from kilnbase.db.session import Database


async def oauth_providers_public(db: Database) -> tuple[list[str], list[str]]:
    """(built-in providers with a client id, custom OIDC keys), for `/public-config`."""
    async with db.as_owner() as cur:
        await cur.execute(
            "select provider from auth.oauth_configs where client_id is not null order by provider"
        )
        built_in = [r["provider"] for r in await cur.fetchall()]
        await cur.execute("select key from auth.custom_oauth_configs order by key")
        custom = [r["key"] for r in await cur.fetchall()]
    return built_in, custom


routes: list[BaseRoute] = []
