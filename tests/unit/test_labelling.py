"""Event codes to classes: the P300 convention, k classes in the order given, no guessing."""

from __future__ import annotations

import pytest

from neurostream.errors import ConfigError
from neurostream.labelling import EventMapping


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


@pytest.mark.parametrize("text", ["", "target", "target=x", "a=1,b=1", "a=0", "a=1,a=2"])
def test_a_bad_mapping_is_a_config_error_on_events(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        EventMapping.parse(text)
    assert caught.value.field == "events"
