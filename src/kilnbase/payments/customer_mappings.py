"""Which provider customer pays for which billing subject (`payments.customer_mappings`), the same for every
provider: learnt from a checkout, an order or a subscription, and read back to bill the subject again
through the same customer, or to put a payment that names only its customer on its subject."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncCursor

from kilnbase.payments.definitions import Environment


async def map_customer(
    cur: AsyncCursor[Any], provider: str, environment: Environment, subject: tuple[str, str], customer_id: str
) -> None:
    await cur.execute(
        "insert into payments.customer_mappings (provider, environment, subject_type, subject_id, "
        "provider_customer_id) values (%s, %s, %s, %s, %s) "
        "on conflict (provider, environment, subject_type, subject_id) do update set "
        "provider_customer_id = excluded.provider_customer_id, updated_at = now()",
        (provider, environment, subject[0], subject[1], customer_id),
    )


async def subject_of_customer(
    cur: AsyncCursor[Any], provider: str, environment: Environment, customer_id: str | None
) -> tuple[str, str] | None:
    """The subject the customer last paid for (None: none known, or no customer)."""
    if customer_id is None:
        return None
    await cur.execute(
        "select subject_type, subject_id from payments.customer_mappings where provider = %s "
        "and environment = %s and provider_customer_id = %s order by updated_at desc limit 1",
        (provider, environment, customer_id),
    )
    row = await cur.fetchone()
    return (row["subject_type"], row["subject_id"]) if row else None


async def customer_of_subject(
    cur: AsyncCursor[Any], provider: str, environment: Environment, subject: tuple[str, str]
) -> str | None:
    await cur.execute(
        "select provider_customer_id from payments.customer_mappings where provider = %s "
        "and environment = %s and subject_type = %s and subject_id = %s",
        (provider, environment, subject[0], subject[1]),
    )
    row = await cur.fetchone()
    return str(row["provider_customer_id"]) if row else None
