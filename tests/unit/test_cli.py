"""The ``neurostream`` command's failures, as a new user meets them: one readable error line
(and a hint), a non-zero exit, no traceback unless ``--verbose``.

Each test runs the installed console script in a subprocess, from an empty directory (no
``.env``) and with every ``NEUROSTREAM_*`` variable removed, so what is checked is what a
person sees. None needs hardware, PostgreSQL or RabbitMQ: the checks run before anything
is opened (the start-up failure points the service at a closed port on purpose).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.recording_files import EEG_NOTEBOOKS

NEUROSTREAM = Path(sys.executable).with_name("neurostream")


def neurostream(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NEUROSTREAM_")}
    return subprocess.run(
        [str(NEUROSTREAM), *args],
        cwd=cwd,
        env=clean | (env or {}),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The ``error:``/``hint:`` lines; asserts they are all there is to see of the failure."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.startswith(("error:", "hint:"))]
    assert [line.split(":", 1)[0] for line in lines][:1] == ["error"]
    return lines


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket is closed


def test_a_serial_board_without_its_port_names_the_parameter_and_the_flag(
    tmp_path: Path,
) -> None:
    result = neurostream("produce", "--board", "CYTON_BOARD", cwd=tmp_path)
    error, hint = error_lines(result)
    assert error.startswith("error: CYTON_BOARD needs a serial port")
    assert "--serial-port" in error and "NEUROSTREAM_PRODUCER_SERIAL_PORT" in error
    assert "neurostream boards" in hint
    # BrainFlow's own failure, which this replaces, never shows.
    assert "INVALID_ARGUMENTS_ERROR" not in result.stderr


def test_an_unknown_board_says_so_and_offers_close_names(tmp_path: Path) -> None:
    error, hint = error_lines(neurostream("produce", "--board", "CYTON_BORD", cwd=tmp_path))
    assert error.startswith("error: unknown board 'CYTON_BORD'; did you mean CYTON_BOARD")
    assert "neurostream boards" in hint


def test_a_missing_recording_says_the_file_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "missing.csv"
    result = neurostream("produce", "--board", "recording", "--file", str(missing), cwd=tmp_path)
    error, _hint = error_lines(result)
    assert error == f"error: recording {missing} does not exist"
    assert "unable to determine number of elements" not in result.stderr


def test_an_invalid_flag_value_names_the_setting(tmp_path: Path) -> None:
    (error, _hint) = error_lines(neurostream("produce", "--duration", "-5", cwd=tmp_path))
    assert error == "error: invalid ProducerSettings: duration_s: Input should be greater than 0"


def test_a_service_that_cannot_start_says_why(tmp_path: Path) -> None:
    port = closed_port()
    result = neurostream(
        "queue-manager",
        cwd=tmp_path,
        env={
            "NEUROSTREAM_DATABASE_URL": f"postgresql://postgres:s3cret@127.0.0.1:{port}/x",
            "NEUROSTREAM_QM_PORT": str(closed_port()),
        },
    )
    (error,) = [line for line in error_lines(result) if line.startswith("error:")]
    assert error.startswith(
        f"error: the queue manager did not start: cannot reach PostgreSQL at "
        f"postgresql://postgres:***@127.0.0.1:{port}/x"
    )
    assert "s3cret" not in result.stderr + result.stdout


def test_boards_lists_names_with_what_they_need(tmp_path: Path) -> None:
    result = neurostream("boards", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert {"synthetic", "playback", "recording", "CYTON_BOARD", "MUSE_S_BOARD"} <= set(rows)
    assert "needs --serial-port" in rows["CYTON_BOARD"]
    assert "needs --serial-port" in rows["MUSE_2_BLED_BOARD"]
    assert "needs no parameter; optional --mac-address" in rows["MUSE_S_BOARD"]


@pytest.mark.parametrize("flag", ["--verbose", "-v"])
def test_verbose_shows_the_traceback(tmp_path: Path, flag: str) -> None:
    result = neurostream(flag, "produce", "--board", "NOT_A_BOARD", cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" in result.stderr
    assert "neurostream.errors.ConfigError: unknown board 'NOT_A_BOARD'" in result.stderr


VISUAL_P300 = EEG_NOTEBOOKS / "visual" / "P300" / "subject2" / "session1"
needs_visual_p300 = pytest.mark.skipif(
    not VISUAL_P300.is_dir(), reason=f"the real recordings are not in {VISUAL_P300}"
)


@needs_visual_p300
def test_train_on_a_recording_without_events_lists_its_codes_and_what_to_pass(
    tmp_path: Path,
) -> None:
    run1 = sorted(VISUAL_P300.glob("*.csv"))[0]
    result = neurostream("train", "--file", str(run1), cwd=tmp_path)
    error, hint = error_lines(result)
    assert "codes in the file: 1 (170), 2 (24)" in error
    assert hint == "hint: pass --events target=2,nontarget=1 (NAME=CODE for each class)"
    # Nothing was simulated, trained or registered (no database is configured here).
    assert "registered" not in result.stdout


@needs_visual_p300
def test_train_with_events_the_file_lacks_lists_the_codes_it_has(tmp_path: Path) -> None:
    run1 = sorted(VISUAL_P300.glob("*.csv"))[0]
    result = neurostream("train", "--file", str(run1), "--events", "30hz=3,20hz=4", cwd=tmp_path)
    error, _ = error_lines(result)
    assert "holds none of the mapped events (30hz=3,20hz=4)" in error
    assert "1 (170), 2 (24)" in error


def test_synthetic_training_refuses_a_recording(tmp_path: Path) -> None:
    result = neurostream("train", "--synthetic", "--file", "run1.csv", cwd=tmp_path)
    error, hint = error_lines(result)
    assert "does not run on a recording" in error and "--events" in hint


def test_a_simulated_paradigm_on_a_recording_is_refused(tmp_path: Path) -> None:
    from tests.recording_files import eeg_signal, write_muse_csv

    path = write_muse_csv(tmp_path / "run.csv", eeg_signal(4, 300, 256.0), [(100, 2)])
    result = neurostream("produce", "--file", str(path), "--paradigm", "oddball", cwd=tmp_path)
    error, hint = error_lines(result)
    assert error.startswith("error: the simulated oddball paradigm adds fake stimuli")
    assert "file:csv is real EEG" in error and "--events" in hint


def test_playback_of_a_file_with_markers_points_to_the_file_source(tmp_path: Path) -> None:
    import numpy as np
    from brainflow.board_shim import BoardIds, BoardShim
    from brainflow.data_filter import DataFilter

    board = BoardIds.SYNTHETIC_BOARD.value
    data = np.zeros((BoardShim.get_num_rows(board), 300))
    data[BoardShim.get_marker_channel(board), 100] = 2.0
    path = tmp_path / "rec.csv"
    DataFilter.write_file(data, str(path), "w")
    result = neurostream("produce", "--board", "playback", "--file", str(path), cwd=tmp_path)
    error, hint = error_lines(result)
    assert "has 1 marker, which BrainFlow's playback board plays back as zeros" in error
    assert f"neurostream produce --file {path} --layout BOARD" in hint
