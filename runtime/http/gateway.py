"""Where a running ``driftline up`` listens, so that other commands can go through it.

The embedded bus serves one process (a file lock refuses a second). While ``driftline up``
runs on a home, it writes ``<home>/gateway.json`` (its URL and pid) and removes it when it
stops; CLI commands on the same home find it there and use the gateway's HTTP API instead
of opening the bus. ``--url`` / ``DRIFTLINE_URL`` name a gateway explicitly.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ADDRESS_FILE = "gateway.json"


def write_address(home: Path, host: str, port: int) -> Path:
    """Say where this process's gateway listens (``0.0.0.0`` is reached on 127.0.0.1)."""
    reach = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    path = home / ADDRESS_FILE
    home.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"url": f"http://{reach}:{port}", "pid": os.getpid()}) + "\n")
    return path


def remove_address(home: Path) -> None:
    """Remove the address file if this process wrote it."""
    path = home / ADDRESS_FILE
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def running_gateway(home: Path) -> str | None:
    """The URL of a gateway running on ``home`` (None: none, or its process is gone)."""
    try:
        found = json.loads((home / ADDRESS_FILE).read_text())
        os.kill(int(found["pid"]), 0)  # the process still exists
        return str(found["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class GatewayError(Exception):
    """The gateway answered with an error status: ``status`` and its problem body."""

    def __init__(self, status: int, body: Any):
        self.status, self.body = status, body
        detail = body.get("error") if isinstance(body, dict) else body
        super().__init__(f"{status}: {detail}")


def call(
    url: str, method: str, path: str, body: bytes | None = None, token: str | None = None
) -> Any:
    """One request to the gateway; the decoded JSON answer, or :class:`GatewayError`."""
    headers = {"accept": "application/json"}
    if body is not None:
        headers["content-type"] = "application/json"
    if token:
        headers["authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 (our gateway)
            return json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            problem = json.loads(raw)
        except ValueError:
            problem = raw.decode(errors="replace")
        raise GatewayError(exc.code, problem) from None
