"""The dashboard at ``/ui`` (:mod:`~driftline.runtime.http.ui.routes`): pages rendered from
the same registry, drift windows, heartbeats and dead letters the JSON API reads, charts
drawn by plotly.js served from the installed plotly package."""

from driftline.runtime.http.ui.charts import plotly_js
from driftline.runtime.http.ui.routes import router

__all__ = ["plotly_js", "router"]
