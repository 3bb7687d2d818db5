"""Sources that cannot work fail before anything is opened, with an error a person can act on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from brainflow.board_shim import BoardIds, BrainFlowInputParams
from brainflow.data_filter import DataFilter

from neurostream.errors import ConfigError, SourceError
from producer.board import (
    CONNECTIONS,
    BrainFlowSource,
    RecordingSource,
    check_connection,
    resolve_board,
)
from producer.settings import ProducerSettings
from producer.sources import open_source


@pytest.mark.parametrize(
    ("board", "field", "flag"),
    [
        ("CYTON_BOARD", "serial_port", "--serial-port"),
        ("CYTON_DAISY_BOARD", "serial_port", "--serial-port"),
        ("GANGLION_BOARD", "serial_port", "--serial-port"),
        ("MUSE_2_BLED_BOARD", "serial_port", "--serial-port"),
        ("CYTON_WIFI_BOARD", "ip_port", "--ip-port"),
        ("ENOPHONE_BOARD", "mac_address", "--mac-address"),
    ],
)
def test_a_missing_required_parameter_is_named_with_its_flag(
    board: str, field: str, flag: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        BrainFlowSource(board)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{board} needs ")
    assert flag in str(caught.value)


@pytest.mark.parametrize(
    "board", ["SYNTHETIC_BOARD", "MUSE_S_BOARD", "GANGLION_NATIVE_BOARD", "CROWN_BOARD"]
)
def test_boards_whose_parameters_are_optional_pass_the_check(board: str) -> None:
    board_id = BoardIds[board].value
    assert CONNECTIONS[board_id].required == ()
    check_connection(board_id, BrainFlowInputParams())  # raises nothing


def test_a_given_parameter_satisfies_the_check() -> None:
    params = BrainFlowInputParams()
    params.serial_port = "/dev/ttyUSB0"
    check_connection(BoardIds.CYTON_BOARD.value, params)


def test_settings_reach_the_board_parameters() -> None:
    source = open_source(ProducerSettings(board="CYTON_BOARD", serial_port="/dev/ttyUSB7"))
    assert isinstance(source, BrainFlowSource)
    assert source.params.serial_port == "/dev/ttyUSB7" and source.name == "CYTON_BOARD"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("synthetic", -1), ("cyton", 0), ("CYTON_BOARD", 0), ("muse_s", 39), ("38", 38)],
)
def test_board_names_resolve(text: str, expected: int) -> None:
    assert resolve_board(text) == expected


def test_an_unknown_board_lists_close_names() -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_board("MUSE_S_BORD")
    assert caught.value.field == "board"
    assert "did you mean MUSE_S_BOARD" in str(caught.value)
    with pytest.raises(ConfigError, match="unknown BrainFlow board id 12345"):
        resolve_board("12345")


def test_a_missing_or_unreadable_recording_says_which(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"missing\.csv does not exist") as caught:
        RecordingSource.from_file(tmp_path / "missing.csv")
    assert caught.value.field == "file"
    with pytest.raises(SourceError, match="is a directory"):
        open_source(ProducerSettings(board="recording", file=str(tmp_path)))
    with pytest.raises(ConfigError, match="needs a file"):
        open_source(ProducerSettings(board="recording"))
    garbage = tmp_path / "garbage.csv"
    garbage.write_text("not\ta\tbrainflow\nfile\n")
    with pytest.raises(SourceError, match="cannot read .*garbage.csv as a BrainFlow file"):
        RecordingSource.from_file(garbage)


def test_a_recording_replays(tmp_path: Path) -> None:
    data = np.zeros((32, 512))
    path = tmp_path / "rec.csv"
    DataFilter.write_file(data, str(path), "w")
    source = RecordingSource.from_file(path, speed=0)
    source.start()
    chunk = source.read()
    assert chunk is not None and chunk.data.shape[0] == len(source.channels)
