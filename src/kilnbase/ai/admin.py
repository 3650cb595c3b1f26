"""Administration of the gateway: configurations, credentials, gateway keys, limits, policy, providers,
prices, and reading the ledger. Every change is audited (module `AI`) in the same transaction, and drops the
cached policy so the next request sees it."""

from __future__ import annotations

import re
import secrets
from decimal import Decimal
from typing import Any

from psycopg import errors as pg_errors

from kilnbase import audit
from kilnbase.ai import credentials
from kilnbase.ai.errors import GatewayError, invalid
from kilnbase.ai.gateway import Gateway
from kilnbase.ai.policy import hash_key
from kilnbase.ai.providers import OpenAICompatibleProvider, UpstreamError
from kilnbase.db.session import Database
from kilnbase.identity.actor import Actor
from kilnbase.keys.secret_box import SecretBox

_TS = "to_char({} at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
LIMIT_FIELDS = ("rpm", "tpm", "tokens_per_day", "usd_per_day", "usd_per_month")
_LIMIT_NAMES = {
    "rpm": "rpm",
    "tpm": "tpm",
    "tokensPerDay": "tokens_per_day",
    "usdPerDay": "usd_per_day",
    "usdPerMonth": "usd_per_month",
}

#: A provider's name, as the table's CHECK has it (`ai.providers.name`).
_PROVIDER_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
_PROVIDER_NAME_RULE = "A provider name is lowercase letters, digits, '.', '_' or '-'."

#: What an agent key cannot do with the gateway's money controls (`Admin._refuse_agents_money_control`).
_CREDENTIALS = (
    "set or remove the gateway's provider credentials: they decide whose account pays for model calls and "
    "where prompts go"
)
_PROVIDERS = (
    "add, change or remove model providers: a provider's URL and key decide where prompts go and who pays"
)
_PRICES = (
    "set or remove model prices: spend caps count cost by them, and a lower price lets spending pass a cap"
)
_POLICY = (
    "change the gateway policy: it decides which models, how many tokens and which callers spend the "
    "project's money"
)


class Admin:
    """Bound to one actor, for the audit trail."""

    def __init__(self, db: Database, gateway: Gateway, box: SecretBox, actor: Actor) -> None:
        self.db = db
        self.gateway = gateway
        self.box = box
        self.actor = actor

    async def _audit(self, cur: Any, action: str, details: dict[str, Any]) -> None:
        await audit.record(cur, self.actor, action, "AI", details)

    def _changed(self) -> None:
        self.gateway.policy.invalidate()

    async def _refuse_agent(self, action: str, details: dict[str, Any], error: GatewayError) -> None:
        """Refuse an agent key's call with `error`, audited as refused under `action` (the action the call
        would have been recorded as); people pass."""
        if self.actor.principal.agent is None:
            return
        await audit.record(
            self.db, self.actor, action, "AI", {**details, "error": error.message}, outcome="refused"
        )
        raise error

    async def _refuse_agents_money_control(self, action: str, details: dict[str, Any], what: str) -> None:
        """The gateway's money controls (provider credentials, providers, prices, the policy) are refused to
        agent keys, as minting a gateway key is, and for the same reason: `ai:write`, which an agent needs
        to call models at all, would otherwise lift the bounds set on that very spending. A price of 0
        lets any spend pass a dollar cap; the policy decides which models, how many tokens and which
        callers (anon) spend; a credential or a provider's URL decides whose account pays and where
        prompts go. Refused, not held for approval: a held call keeps its arguments, a credential among
        them, in plain text in the change request, and none of these is an agent's work that a person
        would approve more readily than make. Limits are apart (`put_limits`): an agent may lower them."""
        error = GatewayError(403, f"Agent keys cannot {what}.", code="agent_money_control")
        await self._refuse_agent(action, details, error)

    # -- configurations (InsForge's shape) -----------------------------------------------------------------
    @staticmethod
    def _configuration(row: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": str(row["id"]),
            "inputModality": row["input_modality"],
            "outputModality": row["output_modality"],
            "provider": row["provider"],
            "modelId": row["model_id"],
            "systemPrompt": row["system_prompt"],
            "clientSystemMessages": row["client_system_messages"],
            "fallbackModels": row["fallback_models"],
            "createdAt": row["created_at"],
            "updatedAt": row["updated_at"],
        }

    _CONFIG_COLUMNS = (
        "id, input_modality, output_modality, provider, model_id, system_prompt, client_system_messages, "
        f"fallback_models, {_TS.format('created_at')} as created_at, {_TS.format('updated_at')} as updated_at"
    )

    async def list_configurations(self) -> list[dict[str, Any]]:
        async with self.db.as_owner() as cur:
            await cur.execute(f"select {self._CONFIG_COLUMNS} from ai.configurations order by created_at")
            return [self._configuration(r) for r in await cur.fetchall()]

    async def create_configuration(self, values: dict[str, Any]) -> dict[str, Any]:
        try:
            async with self.db.as_owner() as cur:
                await cur.execute(
                    "insert into ai.configurations (input_modality, output_modality, provider, model_id, "
                    "system_prompt, client_system_messages, fallback_models) "
                    "values (%s, %s, %s, %s, %s, %s, %s) "
                    "returning id::text",
                    (
                        values["input_modality"],
                        values["output_modality"],
                        values["provider"],
                        values["model_id"],
                        values.get("system_prompt"),
                        values.get("client_system_messages") or "append",
                        values.get("fallback_models") or [],
                    ),
                )
                row = await cur.fetchone()
                assert row is not None
                await self._audit(
                    cur,
                    "CREATE_CONFIGURATION",
                    {"configId": row["id"], "modelId": values["model_id"], "provider": values["provider"]},
                )
        except pg_errors.UniqueViolation:
            raise GatewayError(
                409, f"A configuration for {values['model_id']} already exists.", code="already_exists"
            ) from None
        self._changed()
        return {"id": row["id"], "message": "AI configuration created successfully"}

    async def update_configuration(self, config_id: str, changes: dict[str, Any]) -> None:
        sets = ", ".join(f"{column} = %s" for column in changes)
        async with self.db.as_owner() as cur:
            await cur.execute(
                f"update ai.configurations set {sets}, updated_at = now() where id::text = %s returning id",
                (*changes.values(), config_id),
            )
            if await cur.fetchone() is None:
                raise GatewayError(404, "AI configuration not found", code="not_found")
            await self._audit(
                cur, "UPDATE_CONFIGURATION", {"configId": config_id, "changes": sorted(changes)}
            )
        self._changed()

    async def delete_configuration(self, config_id: str) -> None:
        async with self.db.as_owner() as cur:
            await cur.execute("delete from ai.configurations where id::text = %s returning id", (config_id,))
            if await cur.fetchone() is None:
                raise GatewayError(404, "AI configuration not found", code="not_found")
            await self._audit(cur, "DELETE_CONFIGURATION", {"configId": config_id})
        self._changed()

    # -- credentials (BYOK) ----------------------------------------------------------------------------------
    async def credential_status(self) -> dict[str, Any]:
        snapshot = await self.gateway.policy.get(self.db)
        resolved = await self.gateway.openrouter_key(snapshot)
        return {
            "provider": "openrouter",
            "source": resolved.source if resolved else None,
            "configured": resolved is not None,
            "maskedKey": credentials.mask(resolved.key) if resolved else None,
            "hasByok": snapshot.byok_key is not None,
        }

    async def insforge_config(self) -> dict[str, Any]:
        snapshot = await self.gateway.policy.get(self.db)
        resolved = await self.gateway.openrouter_key(snapshot)
        return {
            "apiKey": {
                "configured": resolved is not None,
                "maskedKey": credentials.mask(resolved.key) if resolved else None,
                "source": resolved.source if resolved else None,
            },
            "managementKey": {
                "configured": snapshot.management_key is not None,
                "maskedKey": credentials.mask(snapshot.management_key) if snapshot.management_key else None,
            },
        }

    async def set_credential(self, name: str, key: str, *, validate: bool) -> None:
        await self._refuse_agents_money_control(
            "UPDATE_MODEL_GATEWAY_CONFIG", {"updatedFields": [name]}, _CREDENTIALS
        )
        if validate:
            try:
                accepted = await self.gateway.openrouter.validate_key(key)
            except UpstreamError as exc:
                raise GatewayError(
                    502,
                    f"Could not validate the key with OpenRouter: {exc.message}",
                    type_="api_error",
                    code="upstream_error",
                ) from None
            if not accepted:
                raise GatewayError(
                    400, "OpenRouter rejected this key; it was not saved.", code="invalid_api_key"
                )
        async with self.db.as_owner() as cur:
            await cur.execute(
                "insert into ai.credentials (name, encrypted_value, masked) values (%s, %s, %s) "
                "on conflict (name) do update set encrypted_value = excluded.encrypted_value, "
                "masked = excluded.masked, updated_at = now()",
                (name, self.box.encrypt(key, context=name), credentials.mask(key)),
            )
            await self._audit(
                cur, "UPDATE_MODEL_GATEWAY_CONFIG", {"updatedFields": [name], "outcome": "succeeded"}
            )
        self._changed()

    async def delete_credential(self, name: str) -> bool:
        await self._refuse_agents_money_control("DELETE_MODEL_GATEWAY_KEY", {"name": name}, _CREDENTIALS)
        async with self.db.as_owner() as cur:
            await cur.execute("delete from ai.credentials where name = %s returning name", (name,))
            deleted = await cur.fetchone() is not None
            await self._audit(cur, "DELETE_MODEL_GATEWAY_KEY", {"name": name, "deleted": deleted})
        self._changed()
        return deleted

    # -- gateway keys ----------------------------------------------------------------------------------------
    async def _refuse_agents_minting(self, name: str) -> None:
        """A gateway key is a credential of its own that spends the project's money: one minted by an agent
        key would outlive that key's revocation and spend outside the agent's own model budget
        (`agent/<id>` limits), as an agent session token minting another would outlive the key, and as an
        S3 access key would reach storage past the agent's scopes. So, like those, it needs a person: not a
        narrower scope (`ai:write` is what an agent needs to call models at all, and any scope that mints
        would be a scope to mint spending), and not an approval (the approved call's result, the key
        itself, would be kept in the change request for the agent to read). An agent calls the gateway
        with its own key instead, within its budget; listing and revoking keys stay open to it. The
        refusal is audited."""
        error = GatewayError(
            403,
            "Agent keys cannot create gateway keys: a gateway key spends the project's money and would "
            "outlive the agent key.",
            code="agent_cannot_mint_keys",
        )
        await self._refuse_agent("CREATE_GATEWAY_KEY", {"name": name}, error)

    async def create_key(
        self, name: str, models: list[str] | None, max_tokens: int | None, limits: dict[str, Any]
    ) -> dict[str, Any]:
        await self._refuse_agents_minting(name)
        key = "kbk_" + secrets.token_urlsafe(32)
        async with self.db.as_owner() as cur:
            await cur.execute(
                "insert into ai.gateway_keys (name, key_hash, key_prefix, models, max_tokens) "
                "values (%s, %s, %s, %s, %s) returning id::text, "
                + _TS.format("created_at")
                + " as created_at",
                (name, hash_key(key), key[:10], models, max_tokens),
            )
            row = await cur.fetchone()
            assert row is not None
            if any(v is not None for v in limits.values()):
                await self._put_limits(cur, "key", row["id"], limits)
            await self._audit(
                cur,
                "CREATE_GATEWAY_KEY",
                {
                    "keyId": row["id"],
                    "name": name,
                    "models": models,
                    "maxTokens": max_tokens,
                    "limits": _jsonable(limits),
                },
            )
        self._changed()
        return {
            "id": row["id"],
            "name": name,
            "key": key,
            "models": models,
            "maxTokens": max_tokens,
            "limits": _jsonable(limits),
            "createdAt": row["created_at"],
        }

    async def list_keys(self) -> list[dict[str, Any]]:
        async with self.db.as_owner() as cur:
            await cur.execute(
                "select k.id::text, k.name, k.key_prefix, k.models, k.max_tokens, "
                + _TS.format("k.created_at")
                + " as created_at, "
                + _TS.format("k.revoked_at")
                + " as revoked_at, "
                "l.rpm, l.tpm, l.tokens_per_day, l.usd_per_day, l.usd_per_month from ai.gateway_keys k "
                "left join ai.limits l on l.scope = 'key' and l.subject = k.id::text order by k.created_at"
            )
            return [
                {
                    "id": r["id"],
                    "name": r["name"],
                    "keyPrefix": r["key_prefix"],
                    "models": r["models"],
                    "maxTokens": r["max_tokens"],
                    "createdAt": r["created_at"],
                    "revokedAt": r["revoked_at"],
                    "limits": _limits_json(r),
                }
                for r in await cur.fetchall()
            ]

    async def revoke_key(self, key_id: str) -> None:
        async with self.db.as_owner() as cur:
            await cur.execute(
                "update ai.gateway_keys set revoked_at = now() where id::text = %s and revoked_at is null "
                "returning id",
                (key_id,),
            )
            if await cur.fetchone() is None:
                raise GatewayError(404, "Gateway key not found (or already revoked).", code="not_found")
            await self._audit(cur, "REVOKE_GATEWAY_KEY", {"keyId": key_id})
        self._changed()

    # -- limits and policy -----------------------------------------------------------------------------------
    async def _put_limits(self, cur: Any, scope: str, subject: str, values: dict[str, Any]) -> None:
        await cur.execute(
            "insert into ai.limits (scope, subject, rpm, tpm, tokens_per_day, usd_per_day, usd_per_month) "
            "values (%s, %s, %s, %s, %s, %s, %s) on conflict (scope, subject) do update set "
            "rpm = excluded.rpm, tpm = excluded.tpm, tokens_per_day = excluded.tokens_per_day, "
            "usd_per_day = excluded.usd_per_day, "
            "usd_per_month = excluded.usd_per_month, updated_at = now()",
            (scope, subject, *(values.get(f) for f in LIMIT_FIELDS)),
        )

    async def list_limits(self) -> list[dict[str, Any]]:
        async with self.db.as_owner() as cur:
            await cur.execute("select * from ai.limits order by scope, subject")
            return [
                {"scope": r["scope"], "subject": r["subject"], **_limits_json(r)}
                for r in await cur.fetchall()
            ]

    async def put_limits(self, scope: str, subject: str, values: dict[str, Any]) -> dict[str, Any]:
        async with self.db.as_owner() as cur:
            raised = await self._raised_by_agent(cur, scope, subject, values)
            details = {"scope": scope, "subject": subject, "limits": _jsonable(values)}
            if raised is not None:  # nothing written; the refusal alone commits
                details["error"] = raised.message
                await audit.record(cur, self.actor, "SET_AI_LIMITS", "AI", details, outcome="refused")
            else:
                await self._put_limits(cur, scope, subject, values)
                await self._audit(cur, "SET_AI_LIMITS", details)
        if raised is not None:
            raise raised
        self._changed()
        return {"scope": scope, "subject": subject, **_limits_json(values)}

    async def _raised_by_agent(
        self, cur: Any, scope: str, subject: str, values: dict[str, Any]
    ) -> GatewayError | None:
        """Why an agent key's new limits for `scope/subject` are refused: they raise or remove one that
        applies now (None: a person's, or every limit kept at or below its value). Limits bound the spending
        `ai:write` allows, the agent's own budget (`agent/<id>`, else `agent/*`) and the project's caps among
        them, so an agent may only tighten them; lifting one needs a person, as minting a gateway key does.
        Compared with what applies to the subject now, as `limits.applicable_rules` picks it: its own row,
        else, for users, agents and anon clients, the default row (`*`), so that a new row of its own cannot
        lift an agent past the default. The table is locked against other writes (reads go on) until the
        write commits, so a person's change made meanwhile is not overwritten by a check made before it."""
        if self.actor.principal.agent is None:
            return None
        await cur.execute("lock table ai.limits in share row exclusive mode")
        fallback = subject if scope in ("project", "key") else "*"
        await cur.execute(
            "select * from ai.limits where scope = %s and subject in (%s, %s) order by subject = '*'",
            (scope, subject, fallback),
        )
        rows = await cur.fetchall()
        current = rows[0] if rows else {}
        for column in LIMIT_FIELDS:
            now, new = current.get(column), values.get(column)
            if now is not None and (new is None or new > now):
                name = {v: k for k, v in _LIMIT_NAMES.items()}[column]
                after = "no limit" if new is None else _number(new)
                return _agent_cannot_raise(
                    f"{name} of {scope}/{subject} would go from {_number(now)} to {after}."
                )
        return None

    async def delete_limits(self, scope: str, subject: str) -> None:
        error = _agent_cannot_raise(f"removing the limits of {scope}/{subject} needs a person.")
        await self._refuse_agent("DELETE_AI_LIMITS", {"scope": scope, "subject": subject}, error)
        async with self.db.as_owner() as cur:
            await cur.execute(
                "delete from ai.limits where scope = %s and subject = %s returning scope", (scope, subject)
            )
            if await cur.fetchone() is None:
                raise GatewayError(404, "No limits are set for that scope and subject.", code="not_found")
            await self._audit(cur, "DELETE_AI_LIMITS", {"scope": scope, "subject": subject})
        self._changed()

    async def get_policy(self) -> dict[str, Any]:
        snapshot = await self.gateway.policy.get(self.db)
        return {
            "allowedModels": list(snapshot.allowed_models) if snapshot.allowed_models is not None else None,
            "maxTokensCap": snapshot.max_tokens_cap,
            "cacheEnabled": snapshot.cache_enabled,
            "anonAccess": snapshot.anon_access,
            "allowedRequestFields": sorted(snapshot.allowed_request_fields),
        }

    async def put_policy(self, values: dict[str, Any]) -> dict[str, Any]:
        """The whole policy, in InsForge's field names (`admin_requests.PolicyUpdate`)."""
        await self._refuse_agents_money_control("UPDATE_AI_POLICY", values, _POLICY)
        async with self.db.as_owner() as cur:
            await cur.execute(
                "update ai.policy set allowed_models = %s, max_tokens_cap = %s, cache_enabled = %s, "
                "anon_access = %s, allowed_request_fields = %s, updated_at = now()",
                (
                    values["allowedModels"],
                    values["maxTokensCap"],
                    values["cacheEnabled"],
                    values["anonAccess"],
                    values["allowedRequestFields"],
                ),
            )
            await self._audit(cur, "UPDATE_AI_POLICY", values)
        self._changed()
        return await self.get_policy()

    # -- providers -------------------------------------------------------------------------------------------
    async def list_providers(self) -> list[dict[str, Any]]:
        async with self.db.as_owner() as cur:
            await cur.execute("select name, base_url, masked_key from ai.providers order by name")
            return [
                {"name": r["name"], "baseUrl": r["base_url"], "maskedKey": r["masked_key"]}
                for r in await cur.fetchall()
            ]

    async def put_provider(self, name: str, base_url: str, api_key: str | None) -> dict[str, Any]:
        details = {"name": name, "baseUrl": base_url, "withKey": api_key is not None}
        await self._refuse_agents_money_control("PUT_AI_PROVIDER", details, _PROVIDERS)
        if not _PROVIDER_NAME.fullmatch(name):
            # Before the key is tried: a call that cannot be saved makes no call out. (The table's CHECK
            # says the same, below, for anything that writes the table another way.)
            raise invalid(_PROVIDER_NAME_RULE, param="name")
        provider = OpenAICompatibleProvider(name, base_url, self.gateway.client)
        if api_key:
            try:
                accepted = await provider.validate_key(api_key)
            except UpstreamError as exc:
                raise GatewayError(
                    502,
                    f"Could not reach {base_url} to validate the key: {exc.message}",
                    type_="api_error",
                    code="upstream_error",
                ) from None
            if not accepted:
                raise invalid(
                    f"{base_url} rejected this key; the provider was not saved.", code="invalid_api_key"
                )
        context = f"ai.provider.{name}"
        try:
            async with self.db.as_owner() as cur:
                await cur.execute(
                    "insert into ai.providers (name, base_url, encrypted_key, masked_key) "
                    "values (%s, %s, %s, %s) "
                    "on conflict (name) do update set base_url = excluded.base_url, "
                    "encrypted_key = excluded.encrypted_key, masked_key = excluded.masked_key",
                    (
                        name,
                        base_url,
                        self.box.encrypt(api_key, context=context) if api_key else None,
                        credentials.mask(api_key) if api_key else None,
                    ),
                )
                await self._audit(
                    cur,
                    "PUT_AI_PROVIDER",
                    {"name": name, "baseUrl": base_url, "withKey": api_key is not None},
                )
        except pg_errors.CheckViolation:
            raise invalid(_PROVIDER_NAME_RULE, param="name") from None
        self._changed()
        return {
            "name": name,
            "baseUrl": base_url,
            "maskedKey": credentials.mask(api_key) if api_key else None,
        }

    async def delete_provider(self, name: str) -> None:
        await self._refuse_agents_money_control("DELETE_AI_PROVIDER", {"name": name}, _PROVIDERS)
        async with self.db.as_owner() as cur:
            await cur.execute("delete from ai.providers where name = %s returning name", (name,))
            if await cur.fetchone() is None:
                raise GatewayError(404, f"No provider named {name}.", code="not_found")
            await self._audit(cur, "DELETE_AI_PROVIDER", {"name": name})
        self._changed()

    # -- prices (for models no catalog prices) ---------------------------------------------------------------
    async def list_prices(self) -> list[dict[str, Any]]:
        async with self.db.as_owner() as cur:
            await cur.execute(
                "select model_id, prompt, completion, request, image from ai.model_prices order by model_id"
            )
            return [_price_json(r) for r in await cur.fetchall()]

    async def put_price(self, model_id: str, per_token: dict[str, Decimal]) -> dict[str, Any]:
        """`per_token`: prompt and completion in USD per token, request and image in USD each."""
        await self._refuse_agents_money_control("SET_AI_MODEL_PRICE", {"modelId": model_id}, _PRICES)
        async with self.db.as_owner() as cur:
            await cur.execute(
                "insert into ai.model_prices (model_id, prompt, completion, request, image) "
                "values (%s, %s, %s, %s, %s) on conflict (model_id) do update set prompt = excluded.prompt, "
                "completion = excluded.completion, request = excluded.request, image = excluded.image, "
                "updated_at = now()",
                (model_id, *(per_token[k] for k in ("prompt", "completion", "request", "image"))),
            )
            await self._audit(cur, "SET_AI_MODEL_PRICE", {"modelId": model_id, **_jsonable(per_token)})
        self._changed()
        return _price_json({"model_id": model_id, **per_token})

    async def delete_price(self, model_id: str) -> None:
        await self._refuse_agents_money_control("DELETE_AI_MODEL_PRICE", {"modelId": model_id}, _PRICES)
        async with self.db.as_owner() as cur:
            await cur.execute(
                "delete from ai.model_prices where model_id = %s returning model_id", (model_id,)
            )
            if await cur.fetchone() is None:
                raise GatewayError(404, f"No price is set for {model_id}.", code="not_found")
            await self._audit(cur, "DELETE_AI_MODEL_PRICE", {"modelId": model_id})
        self._changed()


def _agent_cannot_raise(why: str) -> GatewayError:
    return GatewayError(
        403, f"Agent keys cannot raise or remove AI limits: {why}", code="agent_cannot_raise_limits"
    )


def _number(value: Any) -> str:
    """A limit as people write it: 0.5, 100 (not Decimal's 0.500000 or 1E+2)."""
    return format(value.normalize(), "f") if isinstance(value, Decimal) else str(value)


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (float(v) if isinstance(v, Decimal) else v) for k, v in values.items()}


def _limits_json(row: Any) -> dict[str, Any]:
    names = {v: k for k, v in _LIMIT_NAMES.items()}
    return {
        names[f]: (float(row[f]) if isinstance(row.get(f), Decimal) else row.get(f)) for f in LIMIT_FIELDS
    }


def _price_json(row: dict[str, Any]) -> dict[str, Any]:
    """A price as the admin set it: per million tokens, per request, per image."""
    return {
        "modelId": row["model_id"],
        "inputPrice": float(row["prompt"] * 1_000_000),
        "outputPrice": float(row["completion"] * 1_000_000),
        "requestPrice": float(row["request"]),
        "imagePrice": float(row["image"]),
    }


# -- the ledger ----------------------------------------------------------------------------------------------
_USAGE_COLUMNS = (
    "id::text, "
    + _TS.format("created_at")
    + " as created_at, endpoint, principal, user_id, key_id, key_source, "
    "provider, requested_model, model, config_id::text, input_tokens, output_tokens, cached_tokens, "
    "image_count, "
    "cost_usd, latency_ms, ttft_ms, status, http_status, streamed, cache_hit"
)


def _usage_row(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": r["id"],
        "createdAt": r["created_at"],
        "endpoint": r["endpoint"],
        "principal": r["principal"],
        "userId": r["user_id"],
        "keyId": r["key_id"],
        "keySource": r["key_source"],
        "provider": r["provider"],
        "requestedModel": r["requested_model"],
        "model": r["model"],
        "configId": r["config_id"],
        "inputTokens": r["input_tokens"],
        "outputTokens": r["output_tokens"],
        "cachedTokens": r["cached_tokens"],
        "imageCount": r["image_count"],
        "costUsd": float(r["cost_usd"]),
        "latencyMs": r["latency_ms"],
        "ttftMs": r["ttft_ms"],
        "status": r["status"],
        "httpStatus": r["http_status"],
        "streamed": r["streamed"],
        "cacheHit": r["cache_hit"],
    }


def _window(start: str | None, end: str | None, config_id: str | None = None) -> tuple[str, list[Any]]:
    conditions, params = [], []
    if start:
        conditions.append("created_at >= %s::timestamptz")
        params.append(start)
    if end:
        conditions.append("created_at <= %s::timestamptz")
        params.append(end)
    if config_id:
        conditions.append("config_id::text = %s")
        params.append(config_id)
    return ("where " + " and ".join(conditions)) if conditions else "", params


async def usage_records(
    db: Database, *, limit: int, offset: int, start: str | None, end: str | None, config_id: str | None = None
) -> dict[str, Any]:
    where, params = _window(start, end, config_id)
    async with db.as_owner() as cur:
        await cur.execute(f"select count(*) as total from ai.usage {where}", params)
        total = await cur.fetchone()
        await cur.execute(
            f"select {_USAGE_COLUMNS} from ai.usage {where} order by created_at desc limit %s offset %s",
            [*params, limit, offset],
        )
        rows = await cur.fetchall()
    return {
        "records": [_usage_row(r) for r in rows],
        "total": int(total["total"]) if total else 0,
        "limit": limit,
        "offset": offset,
    }


async def usage_summary(
    db: Database, *, start: str | None, end: str | None, config_id: str | None
) -> dict[str, Any]:
    where, params = _window(start, end, config_id)
    totals = (
        "count(*) as requests, coalesce(sum(input_tokens), 0) as input_tokens, "
        "coalesce(sum(output_tokens), 0) as output_tokens, coalesce(sum(image_count), 0) as images, "
        "coalesce(sum(cost_usd), 0) as cost, count(*) filter (where cache_hit) as cache_hits, "
        "count(*) filter (where status <> 'ok') as failures"
    )
    groups = {
        "byDay": "to_char(created_at at time zone 'UTC', 'YYYY-MM-DD')",
        "byModel": "model",
        "byUser": "coalesce(user_id, principal)",
        "byConfiguration": "config_id::text",
    }
    result: dict[str, Any] = {}
    async with db.as_owner() as cur:
        await cur.execute(f"select {totals} from ai.usage {where}", params)
        row = await cur.fetchone()
        assert row is not None
        result.update(_totals(row))
        for name, expression in groups.items():
            await cur.execute(
                f"select {expression} as key, {totals} from ai.usage {where} group by 1 "
                "order by 1 nulls last limit 1000",
                params,
            )
            result[name] = [{"key": r["key"], **_totals(r)} for r in await cur.fetchall()]
    return result


def _totals(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "totalRequests": int(row["requests"]),
        "totalInputTokens": int(row["input_tokens"]),
        "totalOutputTokens": int(row["output_tokens"]),
        "totalTokens": int(row["input_tokens"]) + int(row["output_tokens"]),
        "totalImageCount": int(row["images"]),
        "totalCostUsd": float(row["cost"]),
        "cacheHits": int(row["cache_hits"]),
        "failures": int(row["failures"]),
    }
