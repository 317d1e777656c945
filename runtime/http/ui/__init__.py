"""The dashboard at ``/ui`` (:mod:`~driftline.runtime.http.ui.routes`): pages rendered from
the same registry, drift windows, heartbeats and dead letters the JSON API reads, charts
drawn by plotly.js served from the installed plotly package."""

from driftline.runtime.http.ui.routes import plotly_js, router

__all__ = ["plotly_js", "router"]
