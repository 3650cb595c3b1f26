"""The HTTP edge every payment provider's routes share: who the caller is, which environment the path names,
and the handler most routes are (read the caller, the environment, a path id and the JSON body, in that
order, call the service, answer its JSON), so that a provider's `routes()` is a table of its paths and
service calls rather than a handler written out per path."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any, Literal, Protocol

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from kilnbase.http.admin_gate import admin_actor
from kilnbase.http.json_body import read_object
from kilnbase.http.request_context import actor_of, require_credential
from kilnbase.http.responses import json_response
from kilnbase.identity.actor import Actor
from kilnbase.payments import definitions
from kilnbase.payments.customers import Customers, Provider
from kilnbase.payments.definitions import Environment

Handler = Callable[[Request], Awaitable[Response]]
#: Who may call a route: `caller` (any valid credential) or `admin_actor`.
Who = Callable[[Request], Actor]


def caller(request: Request) -> Actor:
    """Any valid credential (401 without one); the service decides the rest, and audits its refusals."""
    return actor_of(request, require_credential(request))


def environment(request: Request, provider: str) -> Environment:
    """The path's `:environment` (400 naming the provider's paths for anything but test or live)."""
    return definitions.environment_of(request.path_params["environment"], provider)


def endpoint(
    call: Callable[..., Awaitable[Any]],
    who: Who,
    provider: str,
    *,
    body: Literal["required", "optional"] | None = None,
    path_id: str | None = None,
    query: Callable[[dict[str, str]], Any] | None = None,
    under: str | None = None,
    status: int = 200,
) -> Handler:
    """A handler that answers `call(actor, environment[, path id][, body][, query])` as JSON with `status`:
    `query` reads the query string into the call's last argument; `under` names the one field the answer
    is given under (InsForge's `{transactions: [...]}`), where the call answers the list alone."""

    async def handle(request: Request) -> Response:
        arguments: list[Any] = [who(request), environment(request, provider)]
        if path_id is not None:
            arguments.append(request.path_params[path_id])
        if body is not None:
            arguments.append(await read_object(request, optional=body == "optional"))
        if query is not None:
            arguments.append(query(dict(request.query_params)))
        answer = await call(*arguments)
        return json_response(answer if under is None else {under: answer}, status)

    return handle


class AccountWide(Protocol):
    """What every provider's service answers for all its environments at once."""

    async def status(self, actor: Actor) -> dict[str, Any]: ...

    async def config(self, actor: Actor) -> dict[str, Any]: ...

    async def sync(self, actor: Actor, environment: Environment | None) -> dict[str, Any]: ...


class EnvironmentAdmin(Protocol):
    """What every provider's service does to one environment's keys and mirror."""

    async def set_config(
        self, actor: Actor, environment: Environment, body: Mapping[str, Any]
    ) -> dict[str, Any]: ...

    async def remove_config(self, actor: Actor, environment: Environment) -> dict[str, Any]: ...

    async def sync(self, actor: Actor, environment: Environment | None) -> dict[str, Any]: ...


def environment_routes(prefix: str, provider: str, service: EnvironmentAdmin) -> list[BaseRoute]:
    """`<prefix>/:environment/config` (PUT sets the keys, DELETE removes them: any caller's, as `/config`)
    and `<prefix>/:environment/sync` (the admin's)."""
    at = prefix + "/{environment}"
    return [
        Route(
            at + "/config", endpoint(service.set_config, caller, provider, body="required"), methods=["PUT"]
        ),
        Route(at + "/config", endpoint(service.remove_config, caller, provider), methods=["DELETE"]),
        Route(at + "/sync", endpoint(service.sync, admin_actor, provider), methods=["POST"]),
    ]


def account_routes(prefix: str, service: AccountWide) -> list[BaseRoute]:
    """`<prefix>/status` and `/sync` (every environment), the admin's, and `/config`, any caller's (the
    service refuses agent keys and whoever else may not read the keys, and audits it)."""

    async def status(request: Request) -> Response:
        return json_response(await service.status(admin_actor(request)))

    async def config(request: Request) -> Response:
        return json_response(await service.config(caller(request)))

    async def sync(request: Request) -> Response:
        return json_response(await service.sync(admin_actor(request), None))

    return [
        Route(prefix + "/status", status, methods=["GET"]),
        Route(prefix + "/config", config, methods=["GET"]),
        Route(prefix + "/sync", sync, methods=["POST"]),
    ]


def history_routes(
    prefix: str, provider: Provider, transactions: Callable[..., Awaitable[Any]], customers: Customers
) -> list[BaseRoute]:
    """`<prefix>/:environment/transactions` and `/customers`, the admin's: the payment history and the
    customers, whose tables every provider shares (`transactions(actor, environment, query, provider)`)."""
    at = prefix + "/{environment}"
    listed = partial(transactions, provider=provider)
    return [
        Route(
            at + "/transactions",
            endpoint(listed, admin_actor, provider, query=definitions.list_query, under="transactions"),
            methods=["GET"],
        ),
        Route(
            at + "/customers",
            endpoint(
                customers_of(customers, provider),
                admin_actor,
                provider,
                query=definitions.customer_list_query,
            ),
            methods=["GET"],
        ),
    ]


def customers_of(customers: Customers, provider: Provider) -> Callable[..., Awaitable[dict[str, Any]]]:
    """The provider's customers list as an `endpoint` calls it: `(actor, environment, limit)`."""

    async def listed(actor: Actor, environment: Environment, limit: int) -> dict[str, Any]:
        return await customers.list(actor, provider, environment, limit)

    return listed
