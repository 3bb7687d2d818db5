"""A session replayed from a recording with a loose electrode: the producer's summary and
log say how much the artifact gate would reject and which channel to drop, and dropping it
by name brings the epochs back. ``neurostream train`` leaves gated epochs out, counts them
per file and channel, and records the gate with the version."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from neurostream import registry
from neurostream.gate import Gate
from neurostream.settings import CoreSettings
from producer.session import run_session
from producer.settings import ProducerSettings
from tests.factories import unique
from tests.recording_files import loose_electrode, write_muse_csv

pytestmark = pytest.mark.integration
P300 = "target=2,nontarget=1"
NEUROSTREAM = [sys.executable, "-m", "launcher"]


def cli(core: CoreSettings, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEUROSTREAM_")}
    env |= {"NEUROSTREAM_DATABASE_URL": core.database_url, "NEUROSTREAM_AMQP_URL": core.amqp_url}
    return subprocess.run(
        [*NEUROSTREAM, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240
    )


@pytest.fixture
def loose(tmp_path: Path) -> Path:
    data, events = loose_electrode(60.0, blinks=(3, 10))
    return write_muse_csv(tmp_path / "loose.csv", data, events)


async def test_the_summary_names_the_loose_electrode_and_dropping_it_brings_the_epochs_back(
    core: CoreSettings, loose: Path, caplog: pytest.LogCaptureFixture
) -> None:
    service = unique("gate")
    settings = ProducerSettings(
        file=str(loose), speed=0, events=P300, service=service, record_only=True
    )
    with caplog.at_level("WARNING", logger="producer.session"):
        result = await run_session(core, settings)
    assert result.epochs == result.windows_confirmed == 59
    report = result.gate
    assert report is not None and (report.epochs, report.rejected) == (59, 59)
    assert [b.name for b in report.bad] == ["AF7"] and report.bad[0].alone == 57
    lines = result.summary()
    (line,) = [line for line in lines if "gate (" in line]
    assert line.startswith(
        "  WARNING: gate (peak-to-peak > 100 µV, std < 0.5 µV): 59 of 59 epochs would be "
        "rejected (100%); AF7 in 100% of them"
    )
    assert line.endswith("drop it with --drop-channels AF7 (57 epochs come back)")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("would reject 20 of the first 20 epochs" in m for m in warnings)
    assert any("drop it with --drop-channels AF7" in m for m in warnings)

    dropped = ProducerSettings(
        file=str(loose),
        speed=0,
        events=P300,
        service=service,
        record_only=True,
        drop_channels=["AF7"],
    )
    again = await run_session(core, dropped)
    assert again.channels == ("TP9", "AF8", "TP10") and again.epochs == 59
    assert again.gate is not None and (again.gate.rejected, again.gate.bad) == (2, ())
    (line,) = [line for line in again.summary() if "gate (" in line]
    assert line == (
        "  gate (peak-to-peak > 100 µV, std < 0.5 µV): 2 of 59 epochs would be rejected (3%); "
        "per channel: AF8 2"
    )


def test_produce_prints_the_gate_line_and_no_gate_leaves_it_out(
    core: CoreSettings, loose: Path, tmp_path: Path
) -> None:
    base = ["produce", "--file", str(loose), "--speed", "0", "--events", P300, "--record-only"]
    out = cli(core, *base, "--service", unique("gate"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "59 of 59 epochs would be rejected (100%); AF7 in 100% of them" in out.stdout
    assert "drop it with --drop-channels AF7" in out.stdout
    off = cli(core, *base, "--no-gate", "--service", unique("gate"), cwd=tmp_path)
    assert off.returncode == 0, off.stderr
    assert "gate (" not in off.stdout and "59/59 windows confirmed" in off.stdout


async def test_train_leaves_gated_epochs_out_counts_them_and_records_the_gate(
    core: CoreSettings, pool: Any, tmp_path: Path
) -> None:
    # Two runs: AF8 blinks in three epochs of the first, none in the second; AF7 sound.
    first = write_muse_csv(
        tmp_path / "run1.csv", *loose_electrode(60.0, bad=None, blinks=(3, 10, 20))
    )
    second = write_muse_csv(tmp_path / "run2.csv", *loose_electrode(60.0, bad=None, seed=1))
    name = unique("gated")
    train = ["train", "--events", P300, "--service", "", "--model-name", name]
    out = cli(core, *train, "--file", str(first), "--file", str(second), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "run1.csv: nontarget 44  target 15; gated 3 (AF8 3)" in out.stdout
    assert "run2.csv: nontarget 44  target 15\n" in out.stdout
    assert (
        "gate (peak-to-peak > 100 µV, std < 0.5 µV): 3 of 118 epochs left out of training (3%)"
        in out.stdout
    )
    async with pool.connection() as conn:
        version = await registry.get_version(conn, name, 1)
    assert version is not None
    assert version["input_spec"]["gate"] == Gate().to_spec()
    metrics = version["metrics"]
    assert metrics["fitted_on"] == 115 == metrics["cv"]["pooled"]["n"]
    files = metrics["lineage"]["files"]
    assert files[0]["epochs"] == 59 and files[0]["gated"] == {
        "epochs": 59,
        "rejected": 3,
        "per_channel": {"TP9": 0, "AF7": 0, "AF8": 3, "TP10": 0},
        "bad_channels": [],
    }
    assert files[1]["gated"]["rejected"] == 0
    assert metrics["lineage"]["gate"] == Gate().to_spec()

    off = cli(core, *train, "--no-gate", "--file", str(first), "--file", str(second), cwd=tmp_path)
    assert off.returncode == 0, off.stderr
    assert "gate off (--no-gate)" in off.stdout
    async with pool.connection() as conn:
        plain = await registry.get_version(conn, name, 2)
    assert plain is not None and "gate" not in plain["input_spec"]
    assert plain["metrics"]["fitted_on"] == 118


async def test_train_on_a_loose_electrode_says_which_channel_to_drop(
    core: CoreSettings, pool: Any, tmp_path: Path
) -> None:
    runs = [
        write_muse_csv(tmp_path / f"loose{i}.csv", *loose_electrode(60.0, seed=i)) for i in (1, 2)
    ]
    files = [a for run in runs for a in ("--file", str(run))]
    name = unique("loose")
    train = ["train", "--events", P300, "--service", "", "--model-name", name, *files]
    refused = cli(core, *train, cwd=tmp_path)
    assert refused.returncode != 0
    assert "the artifact gate leaves too few epochs to train on (nontarget 0, target 0)" in (
        refused.stderr
    )
    assert "drop the bad channel with --drop-channels AF7" in refused.stderr
    assert "Traceback" not in refused.stderr

    out = cli(core, *train, "--drop-channels", "AF7", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "loose1.csv: nontarget 44  target 15\n" in out.stdout
    assert "0 of 118 epochs left out of training (0%)" in out.stdout
    async with pool.connection() as conn:
        version = await registry.get_version(conn, name, 1)
    assert version is not None
    assert version["input_spec"]["channels"] == ["TP9", "AF8", "TP10"]
    assert version["metrics"]["fitted_on"] == 118
