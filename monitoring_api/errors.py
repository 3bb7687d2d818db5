"""Errors of the monitoring API: core ``InvalidRequest``/``NotFound`` naming the field.

``neurostream.api`` turns them into 422 / 404 with ``detail`` "<field>: <message>".
"""

from __future__ import annotations

from neurostream import errors


class MonitoringError(errors.InvalidRequest):
    """Bad or unsatisfiable monitoring input (422); ``field`` names it."""


class NotFound(errors.NotFound):
    """A dataset, session or model the request names does not exist (404)."""
