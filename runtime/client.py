"""A small Python client of a running gateway (``driftline up``): the model lifecycle and the
registry, over HTTP.

    from driftline.runtime import Client

    with Client("http://127.0.0.1:8080", token="...") as dl:
        dl.create_model("bike.toml")
        dl.upload("jan.csv", model="bike")
        version = dl.wait_for_production("bike")
        run = dl.register("bike", "model.onnx", metrics={"mae": 30.1}, promote=True)
        print(dl.wait_for_run("bike", run["run_id"]))

Every answer that is not a success raises :class:`ClientError` with the status and the
gateway's problem body (``error`` says what was wrong, ``reason`` is a stable word).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Literal

import httpx

from driftline.runtime.errors import DriftlineError


class ClientError(DriftlineError):
    """The gateway answered an error status: ``status``, and its problem body in ``problem``."""

    def __init__(self, status: int, problem: Any):
        self.status, self.problem = status, problem
        detail = problem.get("error") if isinstance(problem, dict) else problem
        super().__init__(f"{status}: {detail}")


class Client:
    """The gateway at ``url`` (default ``DRIFTLINE_URL``); ``token`` (default
    ``DRIFTLINE_API_TOKEN``) goes on writes as ``Authorization: Bearer``."""

    def __init__(
        self, url: str | None = None, token: str | None = None, *, timeout_s: float = 60.0
    ):
        url = url or os.environ.get("DRIFTLINE_URL")
        if not url:
            raise ValueError("Client needs the gateway's URL (or DRIFTLINE_URL)")
        token = token if token is not None else os.environ.get("DRIFTLINE_API_TOKEN")
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout_s)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        answer = self._http.request(method, path, **kw)
        if answer.is_error:
            try:
                problem = answer.json()
            except ValueError:
                problem = answer.text
            raise ClientError(answer.status_code, problem)
        return answer.json() if answer.content else None

    # the registry
    def models(self) -> list[dict[str, Any]]:
        """Every model with its aliases and versions."""
        return list(self._call("GET", "/v1/models"))

    def model(self, name: str) -> dict[str, Any]:
        """A model's versions with lineage, aliases, deployments and rejections."""
        return dict(self._call("GET", f"/v1/models/{name}"))

    def promote(self, name: str, version: int) -> dict[str, Any]:
        return dict(self._call("POST", f"/v1/models/{name}/versions/{version}/promote"))

    def rollback(self, name: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/v1/models/{name}/rollback"))

    # the lifecycle
    def create_model(self, spec: str | Path) -> dict[str, Any]:
        """Save a spec (a ``.toml`` path or the TOML text); a changed one is a new version."""
        text = Path(spec).read_text() if isinstance(spec, Path) or "\n" not in spec else spec
        headers = {"content-type": "text/plain"}
        return dict(self._call("POST", "/v1/models", content=text.encode(), headers=headers))

    def upload(
        self, path: str | Path, model: str, kind: Literal["training", "feedback"] = "training"
    ) -> dict[str, Any]:
        """A CSV or Parquet file into the store's uploads/: ingest (and a first training) follow."""
        path = Path(path)
        params = {"filename": path.name, "kind": kind}
        headers = {"content-type": "application/octet-stream"}
        return dict(
            self._call(
                "POST",
                f"/v1/models/{model}/uploads",
                params=params,
                content=path.read_bytes(),
                headers=headers,
            )
        )

    def retrain(self, model: str, reason: str = "") -> dict[str, Any]:
        """Ask for a manual retrain (``trigger="manual"``)."""
        return dict(self._call("POST", f"/v1/models/{model}/retrain", json={"reason": reason}))

    def register(
        self,
        model: str,
        onnx: str | Path | bytes,
        *,
        metrics: dict[str, float] | None = None,
        promote: bool = False,
        force: bool = False,
    ) -> dict[str, Any]:
        """Register an ONNX model trained elsewhere; the answer's ``run_id`` names the gate's
        outcome (:meth:`wait_for_run`)."""
        data = onnx if isinstance(onnx, bytes) else Path(onnx).read_bytes()
        params: dict[str, Any] = {"promote": promote, "force": force}
        if metrics:
            params["metrics"] = json.dumps(metrics)
        headers = {"content-type": "application/octet-stream"}
        return dict(
            self._call(
                "POST", f"/v1/models/{model}/versions", params=params, content=data, headers=headers
            )
        )

    # waiting for the functions
    def run_outcome(self, model: str, run_id: str) -> dict[str, Any] | None:
        """The registered version (``{"version": ...}``) or the rejection (``{"reason": ...}``)
        of a training run, or None while the register function has not decided."""
        try:
            found = self.model(model)
        except ClientError as exc:
            if exc.status == 404:
                return None
            raise
        for entry in (*found["versions"], *found["rejections"]):
            if entry["run_id"] == run_id:
                return dict(entry)
        return None

    def wait_for_run(self, model: str, run_id: str, timeout_s: float = 120.0) -> dict[str, Any]:
        return self._wait(lambda: self.run_outcome(model, run_id), timeout_s, f"run {run_id}")

    def wait_for_production(
        self, model: str, *, newer_than: int | None = None, timeout_s: float = 120.0
    ) -> int:
        """The production version, once there is one (newer than ``newer_than``, if given)."""

        def production() -> int | None:
            try:
                version = self.model(model)["aliases"]["production"]
            except ClientError as exc:
                if exc.status == 404:
                    return None
                raise
            newer = version is not None and (newer_than is None or version > newer_than)
            return int(version) if newer else None

        return int(self._wait(production, timeout_s, f"{model}'s production version"))

    @staticmethod
    def _wait(probe: Any, timeout_s: float, what: str) -> Any:
        deadline = time.monotonic() + timeout_s
        while (found := probe()) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: nothing after {timeout_s:g} s")
            time.sleep(0.5)
        return found
