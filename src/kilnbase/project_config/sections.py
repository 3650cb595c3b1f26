"""What the config needs of the capabilities whose settings it holds, as protocols: auth's config and
storage's buckets. `services.py` hands it the real services (`AuthAdmin`, `StorageService`), so every change
goes through the very methods the individual APIs use (their checks, their audit entries); a capability
never imports another.

Each `..._in` method works inside the caller's transaction (its cursor), so that a whole apply commits or
rolls back as one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from psycopg import AsyncCursor
from psycopg.rows import DictRow

from kilnbase.identity.actor import Actor


class AuthConfigStore(Protocol):
    @property
    def access_token_seconds(self) -> int: ...

    def check_config_change(self, change: Mapping[str, Any]) -> None: ...

    async def config_in(self, cur: AsyncCursor[DictRow]) -> dict[str, Any]: ...

    async def update_config_in(
        self, cur: AsyncCursor[DictRow], actor: Actor, change: Mapping[str, Any]
    ) -> None: ...


class BucketStore(Protocol):
    def check_bucket_name(self, bucket: str) -> None: ...

    async def buckets_in(self, cur: AsyncCursor[DictRow]) -> dict[str, bool]: ...

    async def create_bucket_in(
        self, cur: AsyncCursor[DictRow], actor: Actor, bucket: str, is_public: bool
    ) -> None: ...

    async def update_bucket_in(
        self, cur: AsyncCursor[DictRow], actor: Actor, bucket: str, is_public: bool
    ) -> None: ...

    async def delete_empty_bucket_in(self, cur: AsyncCursor[DictRow], actor: Actor, bucket: str) -> None: ...
