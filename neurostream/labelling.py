"""Event codes to classes: how a recording's own markers become labels.

A recording carries stimulus codes (muse-lsl's ``1`` / ``2``, BrainVision's ``S  2``); a
model learns classes. ``EventMapping`` is the one explicit bridge, used by the producer
(label events for a streamed recording) and by training (labels of the epochs it fits), so
both number classes the same way:

- names exactly ``{target, nontarget}`` (any case, ``non-target``/``non_target`` too):
  ``nontarget`` is class 0 and ``target`` class 1, the P300 convention the models and
  scorers use (the positive class is 1);
- any other names: classes ``0..k-1`` in the order given (``30hz=1,20hz=2`` -> 30hz is 0).

A code the mapping does not name has no class (``class_of`` answers None): the caller
reports it, nothing guesses.

::

    mapping = EventMapping.parse("target=2,nontarget=1")
    mapping.classes            # ('nontarget', 'target')
    mapping.class_of(2)        # 1
    mapping.codes              # (2, 1), in the order given
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from neurostream.errors import ConfigError
from neurostream.recordings import parse_event_mapping

__all__ = ["EventMapping"]

_P300 = ("nontarget", "target")


def _canonical(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "").replace(" ", "")


@dataclass(frozen=True, slots=True)
class EventMapping:
    """Names to event codes (in the order given) and the class id of each name."""

    names: tuple[str, ...]  # as given
    codes: tuple[int, ...]  # codes[i] is the code of names[i]
    classes: tuple[str, ...]  # class id -> name

    @classmethod
    def parse(cls, text: str) -> EventMapping:
        """From ``"target=2,nontarget=1"`` (``--events``)."""
        return cls.of(parse_event_mapping(text))

    @classmethod
    def of(cls, mapping: Mapping[str, int]) -> EventMapping:
        """From ``{"target": 2, "nontarget": 1}`` (names in the order given)."""
        if not mapping:
            raise ConfigError("the event mapping names no event", field="events")
        names = tuple(mapping)
        codes = tuple(int(mapping[n]) for n in names)
        if len(set(codes)) != len(codes):
            raise ConfigError(
                f"one event code is given to two names in {dict(mapping)}", field="events"
            )
        if 0 in codes:
            raise ConfigError("event code 0 means 'no event'; use a non-zero code", field="events")
        by_canonical = {_canonical(n): n for n in names}
        if len(names) == 2 and set(by_canonical) == set(_P300):
            classes = tuple(by_canonical[c] for c in _P300)
        else:
            classes = names
        return cls(names, codes, classes)

    def class_of(self, code: int) -> int | None:
        """Class id of an event code; None for a code the mapping does not name."""
        try:
            name = self.names[self.codes.index(int(code))]
        except ValueError:
            return None
        return self.classes.index(name)

    def name_of(self, code: int) -> str | None:
        """Name of an event code; None for a code the mapping does not name."""
        try:
            return self.names[self.codes.index(int(code))]
        except ValueError:
            return None

    def code_of(self, name: str) -> int:
        return self.codes[self.names.index(name)]

    def __str__(self) -> str:
        return ",".join(f"{n}={c}" for n, c in zip(self.names, self.codes, strict=True))

    def describe(self) -> dict[str, Any]:
        """JSON for a session row or a model's lineage: the mapping and the class ids."""
        return {
            "events": dict(zip(self.names, self.codes, strict=True)),
            "classes": list(self.classes),
        }
