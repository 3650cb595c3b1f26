"""What Kilnbase keeps of each payment provider's connection, the same for every provider: its keys, stored
encrypted in `payments.provider_secrets` (a table no request role reads) with the mask that is all an
answer ever shows; its row in `payments.provider_connections` (status, account, webhook, last sync); and
what changing the account or removing the keys does to both.

A provider's service (`service.py` for Stripe, `razorpay_service.py`) holds one `ProviderState` made from
its `Profile`: the provider's differences here are data (its name in the tables, how its connection names
the account, the tables it mirrors into), so a third provider adds a profile, not a copy of this flow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncCursor

from kilnbase.db.session import Database
from kilnbase.http.errors import ApiError
from kilnbase.keys.secret_box import SecretBox
from kilnbase.payments import shapes, stored_secrets
from kilnbase.payments.customers import Provider
from kilnbase.payments.definitions import ENVIRONMENTS, Environment

#: The tables every provider writes its rows into, told apart by their `provider` column.
SHARED_TABLES = ("transactions", "customer_mappings", "customers", "webhook_events")
_CONNECTION_COLUMNS = (
    "environment, status, provider_account_id, {account}, account_livemode, webhook_endpoint_id, "
    "webhook_endpoint_url, webhook_configured_at, last_synced_at, last_sync_status, last_sync_error, "
    "last_sync_counts"
)


@dataclass(frozen=True)
class Profile:
    """One provider as the shared tables know it."""

    #: The `provider` column's value.
    name: Provider
    #: The connection's field that describes the account, and its column (Stripe's email, Razorpay's
    #: merchant name).
    account: tuple[str, str]
    #: The SecretBox name of its secret key (Stripe's `secret_key`, Razorpay's `key_secret`).
    api_key_context: str
    #: The provider's own mirror tables (keyed by environment alone), in an order that deletes
    #: children before their parents.
    own_tables: tuple[str, ...]


class ProviderState:
    def __init__(self, database: Database, box: SecretBox, profile: Profile) -> None:
        self._database = database
        self._box = box
        self.profile = profile

    # -- stored secrets --------------------------------------------------------------------------------------

    def _context(self, environment: Environment, kind: str) -> str:
        """The SecretBox context of one secret: a ciphertext opens only as the secret it was stored as."""
        return f"payments.{self.profile.name}.{environment}.{kind}"

    def seal(self, environment: Environment, kind: str, value: str) -> str:
        return self._box.encrypt(value, context=self._context(environment, kind))

    def open(
        self, environment: Environment, kind: str, ciphertext: str, *, name: str, fix: str, status: int = 400
    ) -> str:
        """A stored secret, or `status` PAYMENT_CONFIG_INVALID naming it (`stored_secrets.decrypt`)."""
        context = self._context(environment, kind)
        return stored_secrets.decrypt(self._box, ciphertext, context, name=name, fix=fix, status=status)

    async def secrets(self, environment: Environment) -> Mapping[str, Any] | None:
        """The environment's stored ciphertexts and key mask (None: no keys set)."""
        async with self._database.as_owner() as cur:
            await cur.execute(
                "select key_id_ciphertext, secret_key_ciphertext, secret_key_mask, webhook_secret_ciphertext "
                "from payments.provider_secrets where provider = %s and environment = %s",
                (self.profile.name, environment),
            )
            return await cur.fetchone()

    async def webhook_ciphertext(self, environment: Environment, unset: str, fix: str) -> str:
        """The environment's stored webhook secret, for a delivery to be verified with; while none is set,
        503 PAYMENT_CONFIG_INVALID (`unset`, `fix`), so that the provider retries it once one is."""
        stored = await self.secrets(environment)
        if stored is None or stored["webhook_secret_ciphertext"] is None:
            raise ApiError(503, "PAYMENT_CONFIG_INVALID", unset, fix)
        return str(stored["webhook_secret_ciphertext"])

    async def stored_keys(self) -> dict[str, Mapping[str, Any]]:
        """Each environment with keys: its key mask, and whether it has a webhook secret."""
        async with self._database.as_owner() as cur:
            await cur.execute(
                "select environment, secret_key_mask, webhook_secret_ciphertext is not null as has_webhook "
                "from payments.provider_secrets where provider = %s",
                (self.profile.name,),
            )
            return {row["environment"]: row for row in await cur.fetchall()}

    async def store_keys(
        self,
        cur: AsyncCursor[Any],
        environment: Environment,
        *,
        secret_key: str,
        mask: str,
        key_id: str | None = None,
        webhook_secret: str | None = None,
        replace_webhook_secret: bool,
    ) -> None:
        """Store the environment's keys; its webhook secret is `webhook_secret` when
        `replace_webhook_secret`, else the one kept (`webhook_secret` only when none is)."""
        await cur.execute(
            "insert into payments.provider_secrets (provider, environment, key_id_ciphertext, "
            "secret_key_ciphertext, secret_key_mask, webhook_secret_ciphertext) "
            "values (%s, %s, %s, %s, %s, %s) on conflict (provider, environment) do update "
            "set key_id_ciphertext = excluded.key_id_ciphertext, "
            "secret_key_ciphertext = excluded.secret_key_ciphertext, "
            "secret_key_mask = excluded.secret_key_mask, webhook_secret_ciphertext = case when %s "
            "then excluded.webhook_secret_ciphertext else coalesce("
            "payments.provider_secrets.webhook_secret_ciphertext, "
            "excluded.webhook_secret_ciphertext) end, updated_at = now()",
            (
                self.profile.name,
                environment,
                None if key_id is None else self.seal(environment, "key_id", key_id),
                self.seal(environment, self.profile.api_key_context, secret_key),
                mask,
                None if webhook_secret is None else self.seal(environment, "webhook_secret", webhook_secret),
                replace_webhook_secret,
            ),
        )

    async def store_webhook_secret(
        self, cur: AsyncCursor[Any], environment: Environment, ciphertext: str
    ) -> None:
        await cur.execute(
            "update payments.provider_secrets set webhook_secret_ciphertext = %s, updated_at = now() "
            "where provider = %s and environment = %s",
            (ciphertext, self.profile.name, environment),
        )

    async def remove_keys(self, cur: AsyncCursor[Any], environment: Environment, reason: str) -> str | None:
        """Delete the environment's keys and leave its connection `unconfigured` for `reason` (its webhook
        forgotten, its last sync failed); the removed key's mask, or None when there were none."""
        await cur.execute(
            "delete from payments.provider_secrets where provider = %s and environment = %s "
            "returning secret_key_mask",
            (self.profile.name, environment),
        )
        removed = await cur.fetchone()
        if removed is None:
            return None
        await cur.execute(
            "update payments.provider_connections set status = 'unconfigured', webhook_endpoint_id = null, "
            "webhook_endpoint_url = null, webhook_configured_at = null, last_synced_at = null, "
            "last_sync_status = 'failed', last_sync_error = %s, last_sync_counts = '{}'::jsonb, "
            "updated_at = now() where provider = %s and environment = %s",
            (reason, self.profile.name, environment),
        )
        return str(removed["secret_key_mask"])

    # -- the connection --------------------------------------------------------------------------------------

    async def connection(self, environment: Environment) -> dict[str, Any]:
        """The environment's connection as InsForge answers it, with its key's mask."""
        columns = _CONNECTION_COLUMNS.format(account=self.profile.account[1])
        async with self._database.as_owner() as cur:
            await cur.execute(
                f"select {columns}, (select secret_key_mask from payments.provider_secrets s "
                "where s.provider = c.provider and s.environment = c.environment) as mask "
                "from payments.provider_connections c where provider = %s and environment = %s",
                (self.profile.name, environment),
            )
            row = await cur.fetchone()
        return shapes.connection(environment, row, row["mask"] if row else None, self.profile.account)

    async def connections(self) -> list[dict[str, Any]]:
        return [await self.connection(env) for env in ENVIRONMENTS]

    async def take_account(
        self, cur: AsyncCursor[Any], environment: Environment, account_id: str | None
    ) -> bool:
        """Lock the environment's connection for keys of `account_id`; when it was another account's, what
        was mirrored from that one is deleted (none of it belongs to the new one). Whether it was."""
        await cur.execute(
            "select provider_account_id from payments.provider_connections "
            "where provider = %s and environment = %s for update",
            (self.profile.name, environment),
        )
        previous = await cur.fetchone()
        changed = previous is not None and previous["provider_account_id"] not in (None, account_id)
        if changed:
            for table in self.profile.own_tables:
                await cur.execute(f"delete from payments.{table} where environment = %s", (environment,))
            for table in SHARED_TABLES:
                await cur.execute(
                    f"delete from payments.{table} where provider = %s and environment = %s",
                    (self.profile.name, environment),
                )
        return changed

    async def set_webhook_endpoint(
        self, cur: AsyncCursor[Any], environment: Environment, endpoint_id: str, url: str
    ) -> None:
        await cur.execute(
            "update payments.provider_connections set webhook_endpoint_id = %s, webhook_endpoint_url = %s, "
            "webhook_configured_at = now(), updated_at = now() where provider = %s and environment = %s",
            (endpoint_id, url, self.profile.name, environment),
        )

    async def rows(self, query: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        """The rows of one read of the mirror, as the owner (the admin's lists)."""
        async with self._database.as_owner() as cur:
            await cur.execute(query, params)
            return list(await cur.fetchall())
