"""Event codes to classes: the P300 convention, k classes in the order given, no guessing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neurostream.errors import ConfigError
from neurostream.labelling import EventMapping
from neurostream.recordings import Recording


def test_target_and_nontarget_are_classes_1_and_0_whatever_the_order() -> None:
    for text in ("target=2,nontarget=1", "nontarget=1,target=2", "Target=2,Non-Target=1"):
        mapping = EventMapping.parse(text)
        assert mapping.class_of(2) == 1 and mapping.class_of(1) == 0
        assert [c.lower().replace("-", "") for c in mapping.classes] == ["nontarget", "target"]


def test_other_names_are_numbered_in_the_order_given() -> None:
    mapping = EventMapping.parse("30hz=1,20hz=2")
    assert mapping.classes == ("30hz", "20hz")
    assert (mapping.class_of(1), mapping.class_of(2)) == (0, 1)
    three = EventMapping.parse("left=7,right=3,rest=5")
    assert [three.class_of(c) for c in (7, 3, 5)] == [0, 1, 2]
    assert three.codes == (7, 3, 5) and three.names == ("left", "right", "rest")


def test_an_unmapped_code_has_no_class() -> None:
    mapping = EventMapping.parse("target=2,nontarget=1")
    assert mapping.class_of(3) is None and mapping.name_of(3) is None
    assert mapping.name_of(2) == "target" and mapping.code_of("nontarget") == 1


def test_describe_and_text_round_trip() -> None:
    mapping = EventMapping.parse("target=2,nontarget=1")
    assert mapping.describe() == {
        "events": {"target": 2, "nontarget": 1},
        "classes": ["nontarget", "target"],
    }
    assert EventMapping.parse(str(mapping)) == mapping
    assert EventMapping.of({"a": 1, "b": 2}) == EventMapping.parse("a=1,b=2")


@pytest.mark.parametrize(
    "text", ["", "target", "target=nan", "a=1,b=1", "a=0", "a=1,a=2", "a=T,b=T"]
)
def test_a_bad_mapping_is_a_config_error_on_events(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        EventMapping.parse(text)
    assert caught.value.field == "events"


def test_marker_texts_get_codes_no_numeric_code_uses() -> None:
    """PsychoPy sends strings: ``target=Target`` maps a text, mixed with numeric codes."""
    mapping = EventMapping.parse("target=Target,nontarget=1,other=stim/other")
    assert mapping.texts == (("Target", 2), ("stim/other", 3))
    assert mapping.codes == (2, 1, 3)
    assert mapping.text_codes == {"Target": 2, "stim/other": 3}
    assert mapping.class_of(mapping.text_codes["Target"]) == mapping.classes.index("target")
    assert str(mapping) == "target=Target,nontarget=1,other=stim/other"
    assert EventMapping.parse(str(mapping)) == mapping
    assert mapping.describe()["markers"] == {
        "target": "Target",
        "nontarget": 1,
        "other": "stim/other",
    }
    assert "markers" not in EventMapping.parse("target=2,nontarget=1").describe()


def test_bind_renumbers_a_files_text_markers_to_the_mappings_codes() -> None:
    """A reader numbers texts alphabetically; the mapping's text codes win, others stay apart."""
    n = 100
    recording = Recording(
        path=Path("x.vhdr"),
        format="brainvision",
        channels=("Cz",),
        fs=100.0,
        data=np.zeros((1, n)),
        times=np.arange(n) / 100.0,
        events=np.array([[10, 1], [20, 2], [30, 3], [40, 3]], dtype=np.int64),
        event_names={"NonTarget": 1, "Other": 2, "Target": 3},
    )
    mapping = EventMapping.parse("target=Target,nontarget=NonTarget")
    bound = mapping.bind(recording)
    assert mapping.text_codes == {"Target": 1, "NonTarget": 2}
    assert bound.events.tolist() == [[10, 2], [20, 4], [30, 1], [40, 1]]
    assert bound.event_names == {"NonTarget": 2, "Other": 4, "Target": 1}
    labels = [mapping.class_of(int(c)) for c in bound.events[:, 1]]
    assert labels == [0, None, 1, 1]
    assert EventMapping.parse("target=2,nontarget=1").bind(recording) is recording
