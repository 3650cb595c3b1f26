"""Streaming through a real server: an endless event stream reaches the client event by event, and a client
that leaves ends the function's side of it."""

from __future__ import annotations

import time

import httpx

from tests.support.servers import ServerProcess

ENDLESS = """
export default () => {
  let timer: ReturnType<typeof setInterval> | undefined;
  const body = new ReadableStream({
    start(controller) {
      let n = 0;
      timer = setInterval(() => controller.enqueue(new TextEncoder().encode(`data: ${n++}\\n\\n`)), 20);
    },
    cancel() {
      clearInterval(timer);
      console.log("stream cancelled by the client");
    },
  });
  return new Response(body, { headers: { "content-type": "text/event-stream" } });
};
"""


def test_endless_stream_arrives_incrementally_and_stops_when_client_leaves(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    admin = {"Authorization": f"Bearer {live_keys['apiKey']}"}
    url = live_keys["url"]
    created = httpx.post(
        url + "/api/functions", json={"name": "ticker", "code": ENDLESS}, headers=admin, timeout=60
    )
    assert created.status_code == 201, created.text

    events: list[str] = []
    with httpx.stream("GET", url + "/functions/ticker", timeout=30) as response:
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["x-kilnbase-request-id"]
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(line)
            if len(events) == 3:
                break  # the stream never ends by itself: reading three events proves it is not buffered
    assert events == ["data: 0", "data: 1", "data: 2"]

    query = {
        # (The cancel callback runs outside the request's context, so its line has no request id.)
        "query": "select message from functions.logs where slug = 'ticker' and level = 'info' "
        "and status is null",
        "params": [],
    }
    deadline = time.monotonic() + 15
    while True:
        rows = httpx.post(url + "/api/database/advance/rawsql/unrestricted", json=query, headers=admin).json()
        if [row["message"] for row in rows["rows"]] == ["stream cancelled by the client"]:
            break
        assert time.monotonic() < deadline, rows
        time.sleep(0.1)
