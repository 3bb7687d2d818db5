"""liblsl's own log, kept off a person's terminal unless ``--verbose``.

liblsl prints INFO lines at start-up and an ``ERR`` line each time a stream breaks off
(which the producer already reports in its own words). Its level is a configuration
setting, and ``pylsl.set_config_content`` replaces the whole configuration, so the user's
``lsl_api.cfg`` (found where liblsl looks: ``$LSLAPICFG``, ``./lsl_api.cfg``,
``~/lsl_api/lsl_api.cfg``, ``/etc/lsl_api/lsl_api.cfg``) is kept and only a ``[log]``
section is added, and a file that has its own ``[log]`` section is left alone.
"""

from __future__ import annotations

from pathlib import Path

QUIET_LEVEL = -3  # fatal errors only
VERBOSE_LEVEL = 0  # liblsl's INFO


def user_config(lslapicfg: str | None) -> Path | None:
    """The ``lsl_api.cfg`` liblsl would read (``lslapicfg``: ``$LSLAPICFG``), or None."""
    candidates = [Path(lslapicfg)] if lslapicfg else []
    candidates += [
        Path("lsl_api.cfg"),
        Path.home() / "lsl_api" / "lsl_api.cfg",
        Path("/etc/lsl_api/lsl_api.cfg"),
    ]
    return next((c for c in candidates if c.is_file()), None)


def log_config(existing: str, *, verbose: bool) -> str | None:
    """``existing`` with a ``[log]`` section for the level; None when it has one already."""
    if any(line.strip().lower() == "[log]" for line in existing.splitlines()):
        return None
    level = VERBOSE_LEVEL if verbose else QUIET_LEVEL
    return f"{existing.rstrip()}\n\n[log]\nlevel = {level}\n".lstrip()


def configure_liblsl(*, verbose: bool, lslapicfg: str | None) -> None:
    """Set liblsl's log level before its first use (it reads its configuration once)."""
    import pylsl

    found = user_config(lslapicfg)
    content = log_config(found.read_text() if found else "", verbose=verbose)
    if content is not None:
        pylsl.set_config_content(content)
