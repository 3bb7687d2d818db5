"""Errors of the ML data API: core ``InvalidRequest``/``NotFound`` naming the field.

``neurostream.api`` turns them into 422 / 404 with ``detail`` "<field>: <message>".
"""

from __future__ import annotations

from neurostream import errors


class Invalid(errors.InvalidRequest):
    """A value the ML data API cannot use (422); ``field`` names it."""


class NotFound(errors.NotFound):
    """A session, window or dataset that does not exist (404); ``field`` names the ref."""
