"""The input block size (`audio.block_ms`) changes how often chunks reach the loop, not what is heard.

50 ms blocks cut the barge-in stop-to-silence time (BENCHMARKS.md, "Stop-to-silence, live"); these checks
are the idle path's recall checks (tests/test_gate.py, tests/test_idle_path.py) run at 50 ms against 100 ms,
on real clips with real models: the same keywords on every shared clip, and the live daemon on a pipe hearing
the same wake word and transcript at 50 ms as from a file at 100 ms. Nothing here depends on timing.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from assistant.audio.chunk import AudioChunk
from assistant.audio.handoff import HOLD_S, Handoff, Onset
from assistant.audio.sources import open_source
from assistant.events import Error, Final, Wake
from assistant.settings import GateSettings
from assistant.wake.gate import EnergyGate, GatedWakeWord
from bench.idle import Spotter
from speechdata.assets import ASSETS, JFK, KEYWORD_CLIPS, clip_keywords_file
from speechdata.audio import SAMPLE_RATE, chunks, load_clip, pink_noise, silence
from tests.conftest import Models, require, run_daemon
from tests.support.pipe import feed_quiet, run_on_pipe

MS = SAMPLE_RATE // 1000  # samples per millisecond
HOLD_DB = 7.0  # what the daemon asks for behind the default gate (open_db 10 - HOLD_MARGIN_DB 3)


@pytest.mark.parametrize("block_ms", [100, 50, 20])
def test_quiet_chunks_are_held_a_second_of_audio_at_a_time_whatever_the_block(block_ms: int) -> None:
    """The loop is woken about once a second of quiet audio, not once per HOLD_CHUNKS chunks: 50 ms blocks
    must not double the idle path's wake-ups."""
    block = block_ms * MS
    noise = pink_noise(20.0, -55.0, seed=3)
    quiet = [AudioChunk(noise[i : i + block], t=i / SAMPLE_RATE) for i in range(0, len(noise), block)]

    async def main() -> tuple[list[list[AudioChunk]], list[AudioChunk]]:
        handoff = Handoff(asyncio.get_running_loop(), max_chunks=10_000, drop=False)
        handoff.hold_quiet_db = HOLD_DB
        batches = await feed_quiet(handoff, quiet)
        handoff.end()  # what is still held comes with the end of input
        return batches, await handoff.get() or []

    batches, rest = asyncio.run(main())
    onset = Onset()
    stand_out = {c.t for c in quiet if onset.above_floor(c.samples) > HOLD_DB}
    per_batch = round(HOLD_S * 1000 / block_ms)
    assert all(len(batch) == per_batch or batch[-1].t in stand_out for batch in batches)
    assert len(batches) <= len(quiet) // per_batch + len(stand_out)
    assert len(rest) < per_batch
    assert [c.t for batch in [*batches, rest] for c in batch] == [c.t for c in quiet]


@pytest.fixture(scope="module")
def spotters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Spotter]:
    require(ASSETS / "kws")
    directory = tmp_path_factory.mktemp("kw")
    return {lang: Spotter(lang, clip_keywords_file(lang, directory)) for lang in ("en", "zh")}


def _labels(wake: Any, audio: np.ndarray, block_ms: int) -> list[str]:
    """Labels fired over `audio` fed in `block_ms` chunks, then the spotter's trailing flush."""
    found = [hit[0] for chunk in chunks(audio, block_ms * MS) if (hit := wake.accept(chunk))]
    last = wake.flush()
    return found + ([last[0]] if last else [])


def test_shared_clip_keywords_are_the_same_in_50_and_100_ms_blocks(spotters: dict[str, Spotter]) -> None:
    """Every shared clip with a known keyword, 5 s of room noise before and after (test_gate.py's recall
    parity): the gated spotter fed 50 ms chunks fires what the ungated one fires fed 100 ms chunks."""
    differences = []
    for i, (lang, clip, _) in enumerate(KEYWORD_CLIPS):
        audio = np.concatenate([pink_noise(5.0, -50.0, seed=10 + i), load_clip(require(clip)),
                                pink_noise(5.0, -50.0, seed=50 + i)])
        spotter = spotters[lang]
        spotter.reset()
        reference = _labels(spotter, audio, 100)
        spotter.reset()
        ungated_50 = _labels(spotter, audio, 50)
        spotter.reset()
        wake = GatedWakeWord(spotter, EnergyGate(GateSettings()))
        gated_50 = _labels(wake, audio, 50)
        assert wake.fed_s < len(audio) / SAMPLE_RATE - 3.0  # the gate did close in the noise
        if not reference == ungated_50 == gated_50:
            differences.append((clip.name, reference, ungated_50, gated_50))
    assert differences == []


def test_live_daemon_in_50_ms_blocks_hears_what_it_hears_from_a_file_in_100(models: Models,
                                                                           tmp_path: Path) -> None:
    """30 s of a quiet room then the JFK clip, through a real pipe in 50 ms blocks (quiet chunks held while
    idle), against the same int16 samples read from a WAV file in 100 ms blocks: the same wake word and the
    same transcript."""
    jfk = load_clip(require(JFK))
    pcm = (np.clip(np.concatenate([pink_noise(30.0, -55.0, seed=11, drift_db=3.0), jfk, silence(3.0)]),
                   -1.0, 1.0) * 32767).astype("<i2")
    path = tmp_path / "quiet-then-jfk.wav"
    sf.write(str(path), pcm, SAMPLE_RATE, subtype="PCM_16")
    file_events, _ = run_daemon(models, open_source(str(path), block_ms=100))

    live_events, daemon, source = run_on_pipe(models, pcm, block_ms=50)

    def heard(events: list[Any]) -> list[tuple[Any, ...]]:
        # The wake's t_end is the end of the chunk it was found in, so it may differ by less than a block.
        return [("wake", e.label) for e in events if isinstance(e, Wake)] + [
            ("final", e.text) for e in events if isinstance(e, Final)]

    assert source.holding.is_set()
    assert not [e for e in live_events if isinstance(e, Error)] and daemon.errors == 0
    assert heard(live_events) == heard(file_events)
    assert [e.label for e in live_events if isinstance(e, Wake)] == ["FELLOW AMERICANS"]
