"""Which HTTP services exist, and their OpenAPI specs built without a server.

A service is a top-level package with ``app.py`` (``create_app(core, settings)``) and
``settings.py`` (one pydantic-settings class with a ``port``). New services are picked up
from the repository root (``KNOWN`` only fixes the folder order); a known one whose
``app.py`` is absent yet is skipped.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings

from neurostream.settings import CoreSettings

# Folder order in the collection follows the flow: registry -> data -> monitoring -> retraining.
KNOWN = ("queue_manager", "ml_data_api", "monitoring_api", "retraining_api")
ROOT = Path(__file__).resolve().parent.parent
SPEC_TOKEN = "openapi-spec-only-token"  # never used against a server


@dataclass(frozen=True)
class Service:
    package: str
    title: str
    port: int
    spec: dict[str, Any]

    @property
    def base_url_var(self) -> str:
        return f"baseUrl_{self.package}"


def settings_class(package: str) -> type[BaseSettings]:
    module = importlib.import_module(f"{package}.settings")
    classes = [
        c
        for _, c in inspect.getmembers(module, inspect.isclass)
        if issubclass(c, BaseSettings) and c.__module__ == module.__name__
    ]
    if len(classes) != 1:
        raise RuntimeError(f"{package}.settings must define exactly one settings class")
    return classes[0]


def available() -> list[str]:
    """Known services whose ``app.py`` exists, then any other package shaped like one."""
    found = [p for p in KNOWN if importlib.util.find_spec(f"{p}.app") is not None]
    others = sorted(
        d.name
        for d in ROOT.iterdir()
        if d.name not in KNOWN
        and all((d / f).is_file() for f in ("__init__.py", "__main__.py", "app.py", "settings.py"))
    )
    return found + others


def load(package: str) -> Service:
    core = CoreSettings(api_token=SPEC_TOKEN)
    settings = settings_class(package)()
    app = importlib.import_module(f"{package}.app").create_app(core, settings)
    spec = app.openapi()
    return Service(package, spec["info"]["title"], int(settings.port), spec)  # type: ignore[attr-defined]


def load_all() -> list[Service]:
    return [load(p) for p in available()]


def operations(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """Every (METHOD, path) of a spec, in spec order."""
    methods = ("get", "post", "put", "patch", "delete")
    return [(m.upper(), path) for path, ops in spec["paths"].items() for m in ops if m in methods]
