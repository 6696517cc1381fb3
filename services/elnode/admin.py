"""Client of elnode's admin fault API (nodes started with ``--enable-fault-injection``).

Async methods use aiohttp (for notebooks' top-level ``await`` and tests); the ``*_sync`` twins use
urllib, for code without an event loop. Every call returns the node's JSON answer.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import aiohttp


class AdminError(RuntimeError):
    """The node refused an admin call (bad knob, or fault injection not enabled: HTTP 404)."""


class AdminClient:
    """``AdminClient("http://127.0.0.1:PORT/")``: set, reset and read a node's fault knobs."""

    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"AdminClient({self.base_url!r})"

    # -- async --------------------------------------------------------------------------------------------

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.request(
                method, self.base_url + path, json=body) as response:
            text = await response.text()
            if response.status != 200:
                raise AdminError(f"{method} {self.base_url}{path}: HTTP {response.status}: {text.strip()}")
            return json.loads(text)

    async def get(self) -> dict[str, Any]:
        """The current knobs."""
        return await self._call("GET", "/admin/faults")

    async def set(self, **knobs: Any) -> dict[str, Any]:
        """Merge *knobs* (stall, lag_blocks, delay, fail, slow_handshake, heartbeat_interval); returns all."""
        return await self._call("POST", "/admin/faults", knobs)

    async def reset(self) -> dict[str, Any]:
        """Turn every knob off."""
        return await self._call("POST", "/admin/faults/reset")

    async def drop_websockets(self, mode: str = "close") -> int:
        """Close every WebSocket connection now (``"close"``: close frame 1001; ``"abort"``: TCP reset).

        Returns how many were dropped."""
        return (await self._call("POST", "/admin/drop-websockets", {"mode": mode}))["dropped"]

    # -- sync ---------------------------------------------------------------------------------------------

    def _call_sync(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace").strip()
            raise AdminError(f"{method} {self.base_url}{path}: HTTP {exc.code}: {detail}") from None

    def get_sync(self) -> dict[str, Any]:
        return self._call_sync("GET", "/admin/faults")

    def set_sync(self, **knobs: Any) -> dict[str, Any]:
        return self._call_sync("POST", "/admin/faults", knobs)

    def reset_sync(self) -> dict[str, Any]:
        return self._call_sync("POST", "/admin/faults/reset", {})

    def drop_websockets_sync(self, mode: str = "close") -> int:
        return self._call_sync("POST", "/admin/drop-websockets", {"mode": mode})["dropped"]
