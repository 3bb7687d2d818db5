"""Choosing and starting a session's source with live LSL streams: a channel pick that can
only be checked once the stream is found, a stop heard while the stream is searched for,
and a record file that only exists once there is something to record."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from neurostream.errors import ConfigError, SourceError
from neurostream.settings import CoreSettings
from producer.board import ChannelPick
from producer.session import run_session
from producer.settings import ProducerSettings
from producer.sources import lsl_of, open_source
from tests.factories import unique
from tests.lsl_support import Pusher, drain

pytestmark = pytest.mark.integration
LABELS = ("TP9", "AF7", "AF8", "TP10")


def test_a_channel_pick_on_an_lsl_stream_is_checked_once_the_stream_is_found() -> None:
    name = unique("pick")
    pusher = Pusher(name, 4, labels=LABELS, types=["EEG"] * 4)
    # 1000*sample + channel: which channel went where is in the values themselves
    pusher.values = lambda a, b: (
        1000 * np.arange(a, b, dtype=np.float32)[:, None] + np.arange(4, dtype=np.float32)
    )
    src = open_source(ProducerSettings(lsl_name=name, channels=["AF8", "TP9"]))
    assert isinstance(src, ChannelPick) and lsl_of(src) is not None
    try:
        src.start()
        assert src.channels == ("AF8", "TP9") and src.fs == 256.0
        chunks, _ = drain(src, lambda c: sum(x.n for x in c) >= 64, tick=pusher.push)
        data = np.concatenate([c.data for c in chunks if c.n], axis=1)
        assert data.shape[0] == 2
        assert np.array_equal(data[0] % 1000, np.full(data.shape[1], 2.0))  # AF8
        assert np.array_equal(data[1] % 1000, np.zeros(data.shape[1]))  # TP9
    finally:
        src.stop()
        pusher.close()
    wrong = open_source(ProducerSettings(lsl_name=name, channels=["Cz"]))
    pusher = Pusher(name, 4, labels=LABELS, types=["EEG"] * 4)
    try:
        with pytest.raises(ConfigError, match=r"has no channel Cz \(it has TP9, AF7, AF8, TP10\)"):
            wrong.start()
    finally:
        wrong.stop()
        pusher.close()


async def test_a_stop_while_the_stream_is_searched_for_ends_the_session(
    core: CoreSettings, tmp_path: Path
) -> None:
    """SIGTERM during a 60 s search is heard at once, and no empty record file is left."""
    record = tmp_path / "never.xdf"
    settings = ProducerSettings(lsl_name=unique("absent"), resolve_timeout_s=60, record=str(record))
    stop = asyncio.Event()
    began = time.monotonic()
    task = asyncio.create_task(run_session(core, settings, stop=stop))
    await asyncio.sleep(0.5)
    assert not task.done()
    stop.set()
    result = await asyncio.wait_for(task, 20)  # far sooner than the 60 s search
    assert time.monotonic() - began < 30
    assert (result.samples, result.windows_published) == (0, 0)
    assert not record.exists()


async def test_a_stream_that_never_appears_is_a_source_error_and_leaves_no_file(
    core: CoreSettings, tmp_path: Path
) -> None:
    record = tmp_path / "never.xdf"
    name = unique("absent")
    settings = ProducerSettings(lsl_name=name, resolve_timeout_s=0.5, record=str(record))
    with pytest.raises(SourceError, match=name):
        await run_session(core, settings)
    assert not record.exists()
    with pytest.raises(ConfigError, match="already exists"):
        (tmp_path / "taken.xdf").write_bytes(b"XDF:")
        open_source(ProducerSettings(lsl_name=name, record=str(tmp_path / "taken.xdf")))
