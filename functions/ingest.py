"""ingest: an uploaded CSV/Parquet file becomes a validated dataset version.

Rows that fail validation go to a quarantine object with the reason; a file that cannot be
used at all (unreadable, a required column missing) is refused whole with an error naming
what was wrong, and the runner dead-letters the event. Nothing accepted before is touched.
A ``feedback`` upload (labeled production rows) is kept with the scoring feedback, where the
gate and the probation look for the most recent labeled data.
"""

from __future__ import annotations

import hashlib

from driftline.events import DatasetIngested, DatasetUploaded
from driftline.functions.ml.layout import load_spec, put_table, read_upload
from driftline.functions.ml.spec import TIME, validate_frame
from driftline.runtime.context import Context
from driftline.runtime.function import function


@function(subscribes="dataset.uploaded", emits="dataset.ingested")
def ingest(event: DatasetUploaded, ctx: Context) -> DatasetIngested:
    spec = load_spec(ctx.store, event.model)
    data = ctx.store.get(event.key)
    version = hashlib.sha256(data).hexdigest()[:16]
    good, bad = validate_frame(
        spec, read_upload(data, event.key), source=f"dataset {ctx.store.uri(event.key)}"
    )
    folder = "feedback" if event.kind == "feedback" else "datasets"
    key = f"{folder}/{event.model}/{version}.parquet"
    put_table(ctx.store, key, good.reset_index(drop=True))
    quarantine_key = None
    if len(bad):
        quarantine_key = f"quarantine/{event.model}/{version}.csv"
        ctx.store.put(quarantine_key, bad.to_csv(index=False).encode(), "text/csv")
        ctx.log.warning(
            "dataset %s: %d row(s) quarantined at %s", event.key, len(bad), quarantine_key
        )
    has_production = ctx.registry is not None and ctx.registry.production(event.model) is not None
    return DatasetIngested(
        model=event.model,
        dataset_version=version,
        key=key,
        source_key=event.key,
        rows=len(good),
        quarantined_rows=len(bad),
        quarantine_key=quarantine_key,
        time_min=good[TIME].min() if len(good) else None,
        time_max=good[TIME].max() if len(good) else None,
        initial=not has_production,
    )
