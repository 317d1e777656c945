"""``GET /v1/schemas``: the user event types' schemas registered on the bus
(:mod:`driftline.runtime.schemas`), so ``driftline events schemas`` works while
``driftline up`` holds the embedded bus."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from driftline.runtime.http.problems import responses
from driftline.runtime.schemas import SchemaRegistry, listing


class SchemaVersion(BaseModel):
    """One registered version of a user event type."""

    type: str = Field(description="The event type, and the topic it travels on.")
    version: int = Field(description="1 for the first version registered, then 2, 3...")
    fingerprint: str = Field(
        description="CRC-64-AVRO of the schema, in hex: bytes 3 to 10 of every event "
        "written with it."
    )
    fields: list[str] = Field(description="The schema's field names, in order.")


def router(bus: Any) -> APIRouter:
    api = APIRouter(tags=["schemas"])

    @api.get("/v1/schemas", responses=responses(503))
    def schemas() -> list[SchemaVersion]:
        """Every version of every user event type registered on the bus, oldest first."""
        versions = SchemaRegistry(bus).versions(probe=False)
        return [SchemaVersion(**row) for row in listing(versions)]

    return api
