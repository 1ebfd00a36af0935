"""A reverse proxy in front of a real Prefect API that fails chosen requests: what a user sees
when part of the API is down (a gateway answering 503 for one route) while the rest works.

HTTP only: a websocket (Prefect's event stream) is closed at once, so events sent through the
proxy are lost, as behind a gateway that does not pass websockets.

Examples:
    >>> with faulty_api_proxy(api_url, refuse=lambda method, path: "/artifacts" in path) as url:
    ...     ...  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["faulty_api_proxy"]

# Headers of one hop, not forwarded (the proxy reads and sends whole bodies).
_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "content-encoding",
    "host",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _app(upstream: str, refuse: Callable[[str, str], bool], refused: list[str]) -> Any:
    import httpx

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()  # lifespan.startup
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            await send({"type": "lifespan.shutdown.complete"})
            return
        query = scope.get("query_string", b"").decode()
        target = scope["path"] + (f"?{query}" if query else "")
        if scope["type"] == "websocket":  # not proxied: the events client gives up, warning
            await receive()
            await send({"type": "websocket.close", "code": 1013})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if refuse(scope["method"], scope["path"]):
            refused.append(f"{scope['method']} {scope['path']}")
            await send({"type": "http.response.start", "status": 503, "headers": []})
            await send({"type": "http.response.body", "body": b"refused by the test proxy"})
            return
        headers = [
            (k.decode(), v.decode()) for k, v in scope["headers"] if k.decode().lower() not in _HOP
        ]
        async with httpx.AsyncClient(timeout=60) as client:
            response = await client.request(
                scope["method"], upstream + target, headers=headers, content=body
            )
        out = [
            (k.encode(), v.encode()) for k, v in response.headers.items() if k.lower() not in _HOP
        ]
        await send({"type": "http.response.start", "status": response.status_code, "headers": out})
        await send({"type": "http.response.body", "body": response.content})

    return app


@contextlib.contextmanager
def faulty_api_proxy(
    api_url: str, refuse: Callable[[str, str], bool], startup_timeout: float = 30.0
) -> Iterator[tuple[str, list[str]]]:
    """A proxy on 127.0.0.1 to the Prefect API at ``api_url`` (HTTP only) that answers
    503 to every request for which ``refuse(method, path)`` is true.

    Yields:
        The proxy's API URL (``http://127.0.0.1:<port>/api``) and the list of the requests it
        refused so far (``"POST /api/artifacts/"``), filled as they come.
    """
    import uvicorn

    root = api_url.rstrip("/")
    root = root[: -len("/api")] if root.endswith("/api") else root
    refused: list[str] = []
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            _app(root, refuse, refused), host="127.0.0.1", port=port, log_level="error", ws="auto"
        )
    )
    thread = threading.Thread(target=server.run, name="faulty-api-proxy", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the API proxy on port {port} did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/api", refused
    finally:
        server.should_exit = True
        thread.join(10)
