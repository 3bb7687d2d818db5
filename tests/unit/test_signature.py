"""A model version's signature: parsing ``input_spec`` and mapping windows onto it by name."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from neurostream.errors import ArtifactError, ConfigError
from neurostream.geometry import EpochGeometry
from neurostream.models.signature import Signature, map_channels, select_channels

MUSE = ("TP9", "AF7", "AF8", "TP10")
SPEC: dict[str, Any] = {
    "fs": 256.0,
    "n_channels": 4,
    "n_samples": 205,
    "kind": "epoch",
    "channels": list(MUSE),
    "tmin": -0.1,
    "tmax": 0.7,
    "units": "uV",
}


def test_same_order_maps_to_no_copy() -> None:
    m = map_channels(MUSE, MUSE)
    assert m.ok and m.index is None and m.ignored == () and m.missing == ()


def test_reordered_and_extra_channels_map_by_name() -> None:
    m = map_channels(MUSE, ("Right AUX", "TP10", "AF8", "AF7", "TP9"))
    assert m.ok and m.index == (4, 3, 2, 1) and m.ignored == ("Right AUX",)
    window = np.arange(5)[:, None] * np.ones((5, 3))  # row i holds i
    np.testing.assert_array_equal(window[list(m.index)][:, 0], [4, 3, 2, 1])


def test_missing_and_repeated_channels_are_named() -> None:
    m = map_channels(MUSE, ("TP9", "AF8", "Fz"))
    assert not m.ok and m.missing == ("AF7", "TP10") and m.ignored == ("Fz",)
    m = map_channels(MUSE, ("TP9", "AF7", "AF8", "TP10", "AF7"))
    assert not m.ok and m.repeated == ("AF7",) and m.missing == ()
    # A repeated channel the model does not read is harmless.
    assert map_channels(MUSE, (*MUSE, "AUX", "AUX")).ok


def test_spec_round_trips_and_old_specs_parse() -> None:
    sig = Signature.from_spec(SPEC)
    assert sig.channels == MUSE and sig.tmin == -0.1 and sig.tmax == 0.7
    assert sig.to_spec() == SPEC
    old = Signature.from_spec({"fs": 250, "n_channels": 8, "n_samples": 200})
    assert old.channels is None and old.fs == 250.0 and old.units == "uV" and old.kind is None


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"channels": ["TP9", "AF7", "AF7", "TP10"]}, "input_spec.channels", "AF7 more than once"),
        ({"channels": ["TP9", "", "AF8", "TP10"]}, "input_spec.channels", "empty names"),
        ({"channels": ["TP9", "AF7", "AF8"]}, "input_spec.channels", "3 channels but n_channels"),
        ({"channels": "TP9"}, "input_spec.channels", "list of channel names"),
        ({"channels": [1, 2, 3, 4]}, "input_spec.channels", "list of channel names"),
        ({"fs": None}, "input_spec.fs", "lacks 'fs'"),
        ({"fs": -1}, "input_spec.fs", "positive"),
        ({"n_samples": 2.5}, "input_spec.n_samples", "positive integer"),
        ({"n_channels": True}, "input_spec.n_channels", "finite number"),
        ({"kind": "stream"}, "input_spec.kind", "one of"),
        ({"tmin": 0.7, "tmax": -0.1}, "input_spec.tmin", "before tmax"),
        ({"units": "kV"}, "input_spec.units", "one of"),
        ({"baseline": [0.0, -0.1]}, "input_spec.baseline", "[start, end]"),
        ({"baseline": "auto"}, "input_spec.baseline", "[start, end]"),
        ({"filtered": 4}, "input_spec.filtered", "filter label"),
    ],
)
def test_bad_specs_name_the_key(change: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ArtifactError, match=words) as info:
        Signature.from_spec({**SPEC, **change})
    assert info.value.field == field


def test_admit_says_expected_and_got() -> None:
    sig = Signature.from_spec(SPEC)
    ok = sig.admit(("AUX", *reversed(MUSE)), 205, 256.0, model="model m:1")
    assert ok.reason is None and ok.index is not None and ok.index.tolist() == [4, 3, 2, 1]
    assert sig.admit(MUSE, 205, 256.0).index is None
    missing = sig.admit(("TP9", "AF7", "AF8"), 205, 256.0, model="model m:1").reason
    assert missing == "window lacks channel TP10 that model m:1 needs (window has TP9, AF7, AF8)"
    assert sig.admit(MUSE, 100, 256.0, model="m").reason == (
        "window has 100 samples, expected 205 (m)"
    )
    assert sig.admit(MUSE, 205, 250.0, model="m").reason == (
        "window fs 250.0 Hz, expected 256.0 Hz (m)"
    )
    # An array without names (a retraining snapshot) is taken to be in the model's order.
    assert sig.admit(4, 205, 256.0).reason is None
    assert sig.admit(5, 205, 256.0, model="m").reason == "window has 5 channels, expected 4 (m)"


def test_a_signature_without_names_checks_the_count() -> None:
    sig = Signature.from_spec({**SPEC, "channels": None})
    assert sig.admit(("a", "b", "c", "d"), 205, 256.0).reason is None
    assert sig.admit((*MUSE, "AUX"), 205, 256.0, model="m").reason == (
        "window has 5 channels, expected 4 (m)"
    )


def test_select_channels_picks_in_order_and_drops_by_name() -> None:
    x = np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3)
    names = (*MUSE, "Right AUX")
    kept, out = select_channels(x, names, drop=["Right AUX"])
    assert out == MUSE and np.shares_memory(kept, x) is False
    np.testing.assert_array_equal(kept, x[:, :4])
    kept, out = select_channels(x, names, pick=["AF8", "TP9"])
    assert out == ("AF8", "TP9")
    np.testing.assert_array_equal(kept, x[:, [2, 0]])
    same, out = select_channels(x, names)
    assert same is x and out == names


@pytest.mark.parametrize(
    ("kw", "field", "words"),
    [
        ({"drop": ["Fz"]}, "drop_channels", "no channel Fz"),
        ({"pick": ["TP9", "Cz"]}, "pick_channels", "no channel Cz"),
        ({"pick": ["TP9"], "drop": ["TP9"]}, "drop_channels", "every channel was dropped"),
        ({"channels": MUSE}, "channels", "4 channel names for windows of shape"),
        ({"channels": ("a", "a", "b", "c", "d")}, "channels", "a more than once"),
    ],
)
def test_select_channels_refuses_what_it_cannot_do(
    kw: dict[str, Any], field: str, words: str
) -> None:
    x = np.zeros((2, 5, 3), np.float32)
    names = kw.pop("channels", (*MUSE, "Right AUX"))
    with pytest.raises(ConfigError, match=words) as info:
        select_channels(x, names, **kw)
    assert info.value.field == field


def test_the_epoch_geometry_is_recorded_only_when_known() -> None:
    spec = {**SPEC, "baseline": [-0.1, 0.0], "filtered": "1-30@4"}
    sig = Signature.from_spec(spec)
    assert sig.to_spec() == spec
    assert sig.geometry == EpochGeometry(-0.1, 0.7, (-0.1, 0.0), "1-30@4")
    assert Signature.from_spec(SPEC).geometry == EpochGeometry(-0.1, 0.7, None, None)
    assert "baseline" not in Signature.from_spec(SPEC).to_spec()
