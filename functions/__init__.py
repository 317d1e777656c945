"""The built-in functions, named in one tuple (no import-time registration)."""

from __future__ import annotations

from driftline.functions.batch import batch
from driftline.functions.drift_check import drift_check
from driftline.functions.ingest import ingest
from driftline.functions.notify import notify
from driftline.functions.register import register
from driftline.functions.retrain import retrain
from driftline.functions.score import score

FUNCTIONS = (ingest, retrain, register, score, drift_check, batch, notify)
"""Every built-in function, in loop order."""

__all__ = [
    "FUNCTIONS",
    "batch",
    "drift_check",
    "ingest",
    "notify",
    "register",
    "retrain",
    "score",
]
