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

import dataclasses
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from neurostream.errors import ConfigError
from neurostream.recordings import Recording, parse_event_mapping

__all__ = ["EventMapping"]

_P300 = ("nontarget", "target")


def _canonical(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "").replace(" ", "")


@dataclass(frozen=True, slots=True)
class EventMapping:
    """Names to event codes (in the order given) and the class id of each name.

    A name may map to a marker's text instead of a number (``target=Target``): the text
    gets a code of its own (``texts``), the smallest positive integer no numeric code of
    the mapping uses, so the rest of the path (marker rows, windows' ``marker``) stays
    numeric. A live source looks texts up in ``texts``; a file's text markers are renumbered
    to match by ``bind``.
    """

    names: tuple[str, ...]  # as given
    codes: tuple[int, ...]  # codes[i] is the code of names[i]
    classes: tuple[str, ...]  # class id -> name
    texts: tuple[tuple[str, int], ...] = ()  # (marker text, its code), in the order given

    @classmethod
    def parse(cls, text: str) -> EventMapping:
        """From ``"target=2,nontarget=1"`` or ``"target=Target,nontarget=NonTarget"``."""
        return cls.of(parse_event_mapping(text))

    @classmethod
    def of(cls, mapping: Mapping[str, int | str]) -> EventMapping:
        """From ``{"target": 2, "nontarget": 1}`` (names in the order given)."""
        if not mapping:
            raise ConfigError("the event mapping names no event", field="events")
        names = tuple(mapping)
        numeric = [v for v in mapping.values() if not isinstance(v, str)]
        if 0 in numeric:
            raise ConfigError("event code 0 means 'no event'; use a non-zero code", field="events")
        texts: list[tuple[str, int]] = []
        free = (c for c in itertools.count(1) if c not in numeric)
        for name in names:
            value = mapping[name]
            if isinstance(value, str):
                texts.append((value, next(free)))
        by_text = dict(texts)
        codes = tuple(
            by_text[v] if isinstance(v, str) else int(v) for v in (mapping[n] for n in names)
        )
        if len(set(codes)) != len(codes) or len(by_text) != len(texts):
            raise ConfigError(
                f"one event code is given to two names in {dict(mapping)}", field="events"
            )
        by_canonical = {_canonical(n): n for n in names}
        if len(names) == 2 and set(by_canonical) == set(_P300):
            classes = tuple(by_canonical[c] for c in _P300)
        else:
            classes = names
        return cls(names, codes, classes, tuple(texts))

    @property
    def text_codes(self) -> dict[str, int]:
        """Marker text -> code, for a source whose markers are strings."""
        return dict(self.texts)

    def bind(self, recording: Recording) -> Recording:
        """``recording`` with its text markers renumbered to this mapping's codes.

        A reader numbers a file's texts itself (``Recording.event_names``); a text this
        mapping names takes the mapping's code, any other text a code above every code in
        use, so it stays unmapped instead of colliding with a class.
        """
        if not self.texts or not recording.event_names:
            return recording
        mine = self.text_codes
        taken = {*self.codes, *(int(c) for c in recording.events[:, 1])}
        spare = (c for c in itertools.count(max(taken, default=0) + 1))
        names = {t: mine[t] if t in mine else next(spare) for t in recording.event_names}
        old_to_new = {old: names[t] for t, old in recording.event_names.items()}
        events = recording.events.copy()
        for old, new in old_to_new.items():
            events[recording.events[:, 1] == old, 1] = new
        order = np.lexsort((events[:, 1], events[:, 0]))
        return dataclasses.replace(recording, events=events[order], event_names=names)

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
        return ",".join(f"{n}={v}" for n, v in self._given().items())

    def _given(self) -> dict[str, int | str]:
        """Each name's code as given: the marker's text where it was one."""
        text_of = {code: text for text, code in self.texts}
        return {n: text_of.get(c, c) for n, c in zip(self.names, self.codes, strict=True)}

    def describe(self) -> dict[str, Any]:
        """JSON for a session row or a model's lineage: the mapping and the class ids."""
        described: dict[str, Any] = {
            "events": dict(zip(self.names, self.codes, strict=True)),
            "classes": list(self.classes),
        }
        if self.texts:
            described["markers"] = self._given()
        return described
