"""The admin's customers list, `GET /api/payments/{stripe,razorpay}/:environment/customers`: InsForge's
`PaymentCustomerService.listCustomers`, read from `payments.customers` (`customer_mirror.py`) and the
payment history.

Each customer comes with what it paid: its successful payments (refunds are rows of their own and not
payments; a refunded payment still counts, less what was refunded), counted by its customer id, and also by
email for a payment that names no customer (a guest checkout) when exactly one customer of the provider has
that email, so a payment is never credited to two. The total is given only when every payment counted is
in one currency: amounts of two currencies do not add up, and the list would rather say null than a wrong
sum.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from kilnbase.db.session import Database
from kilnbase.http.errors import require_admin_actor
from kilnbase.identity.actor import Actor
from kilnbase.payments.definitions import Environment
from kilnbase.payments.shapes import iso

Provider = Literal["stripe", "razorpay"]

# The statuses of a payment that was made (InsForge's); `%(provider)s` and `%(environment)s` throughout.
_LIST = """
with paid as (
    select provider_customer_id as customer_id,
        case when provider_customer_id is null then lower(customer_email_snapshot) end as email,
        greatest(coalesce(amount, 0) - coalesce(amount_refunded, 0), 0) as net,
        currency,
        coalesce(paid_at, provider_created_at, created_at) as at
    from payments.transactions
    where provider = %(provider)s and environment = %(environment)s and type <> 'refund'
        and status in ('succeeded', 'refunded', 'partially_refunded')
        and (provider_customer_id is not null or customer_email_snapshot is not null)
),
unique_emails as (
    select lower(email) as email, min(provider_customer_id) as customer_id
    from payments.customers
    where provider = %(provider)s and environment = %(environment)s and email is not null
    group by lower(email) having count(*) = 1
),
attributed as (
    select customer_id, 'id' as via, net, currency, at from paid where customer_id is not null
    union all
    select unique_emails.customer_id, 'email', net, currency, at
    from paid join unique_emails on unique_emails.email = paid.email
),
by_source as (
    select customer_id, count(*) as n, max(at) as last_at,
        case when count(distinct currency) = 1 then sum(net) end as total,
        case when count(distinct currency) = 1 then min(currency) end as currency
    from attributed group by customer_id, via
),
totals as (
    select customer_id, sum(n)::int as payments_count, max(last_at) as last_payment_at,
        case when count(currency) = count(*) and count(distinct currency) = 1 then sum(total) end as total,
        case when count(currency) = count(*) and count(distinct currency) = 1 then min(currency) end
            as total_currency
    from by_source group by customer_id
)
select customers.*, coalesce(totals.payments_count, 0) as payments_count, totals.last_payment_at,
    totals.total, totals.total_currency
from payments.customers as customers
left join totals on totals.customer_id = customers.provider_customer_id
where customers.provider = %(provider)s and customers.environment = %(environment)s
order by customers.deleted, coalesce(customers.email, customers.name, customers.provider_customer_id),
    customers.provider_customer_id
limit %(limit)s
"""


class Customers:
    def __init__(self, database: Database) -> None:
        self._database = database

    async def list(
        self, actor: Actor, provider: Provider, environment: Environment, limit: int
    ) -> dict[str, Any]:
        """Current customers first, then by email (or name, or id): InsForge's order."""
        require_admin_actor(actor)
        async with self._database.as_owner() as cur:
            await cur.execute(_LIST, {"provider": provider, "environment": environment, "limit": limit})
            rows = await cur.fetchall()
        return {"customers": [customer(row) for row in rows]}


def customer(row: Mapping[str, Any]) -> dict[str, Any]:
    """One customer in InsForge's `PaymentCustomerListItem` shape."""
    raw = row["raw"] if isinstance(row["raw"], Mapping) else {}
    brand, last4 = _card(raw)
    return {
        "environment": row["environment"],
        "provider": row["provider"],
        "providerCustomerId": row["provider_customer_id"],
        "email": row["email"],
        "name": row["name"],
        "phone": row["phone"],
        "deleted": row["deleted"],
        "metadata": row["metadata"] or {},
        "providerCreatedAt": iso(row["provider_created_at"]),
        "syncedAt": iso(row["synced_at"]),
        "paymentsCount": row["payments_count"],
        "lastPaymentAt": iso(row["last_payment_at"]),
        "totalSpend": None if row["total"] is None else int(row["total"]),
        "totalSpendCurrency": row["total_currency"],
        "paymentMethodBrand": brand,
        "paymentMethodLast4": last4,
        "countryCode": _country(raw),
    }


def _record(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _string(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _card(raw: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The default card: the default payment method's (Stripe expands it when the sync lists customers),
    else the legacy default source's. Without either (an id only, or a Razorpay customer), nulls."""
    method = _record(_record(raw.get("invoice_settings")).get("default_payment_method")).get("card")
    card = _record(method) or _record(raw.get("default_source"))
    brand = _string(card.get("brand"))
    return (brand.lower() if brand else None), _string(card.get("last4"))


def _country(raw: Mapping[str, Any]) -> str | None:
    """The billing address's country, else the shipping address's: a two-letter code, or null."""
    country = _string(_record(raw.get("address")).get("country")) or _string(
        _record(_record(raw.get("shipping")).get("address")).get("country")
    )
    return country.upper() if country and len(country) == 2 else None
