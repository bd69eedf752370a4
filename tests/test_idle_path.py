"""The idle path of a live source (audio/handoff.py): quiet chunks held back while the daemon idles behind a
closed energy gate, everything else handed over at once, and the daemon deciding exactly as before.

Real audio throughout: pink room noise at -55 dBFS (speechdata), the JFK clip from ../shared/assets, the
English KWS model as wake word and ASR, the tiny int8 MiniMind export. The daemon reads a real pipe through
PcmStreamSource, as `assistant --input -` does. Nothing asserts on timing: the counts checked are handovers
(how often chunks crossed from the reader thread to the loop), which depend on the audio, not on the clock.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from assistant.audio.chunk import AudioChunk
from assistant.audio.handoff import HOLD_S, Handoff, Onset
from assistant.events import Error, Final, Reply, Wake
from speechdata.assets import JFK
from speechdata.audio import SAMPLE_RATE, load_clip, pink_noise, rms_dbfs, silence
from tests.conftest import Models, require, run_daemon
from tests.support.pipe import feed_quiet, run_on_pipe

BLOCK = SAMPLE_RATE // 10  # samples in a 100 ms chunk
HOLD_CHUNKS = round(HOLD_S * SAMPLE_RATE / BLOCK)  # 100 ms chunks held at most
HOLD_DB = 7.0  # what the daemon asks for behind the default gate (open_db 10 - HOLD_MARGIN_DB 3)


def _chunks(samples: np.ndarray) -> list[AudioChunk]:
    return [AudioChunk(samples[i : i + BLOCK], t=i / SAMPLE_RATE) for i in range(0, len(samples), BLOCK)]


def _pcm(*parts: np.ndarray) -> np.ndarray:
    """The parts as the int16 samples a recorder writes (stdin and the WAV file then hold the same values)."""
    return (np.clip(np.concatenate(parts), -1.0, 1.0) * 32767).astype("<i2")


# ------------------------------------------------------------------------------------------ the handoff alone


def test_quiet_chunks_go_a_second_at_a_time_and_a_loud_one_at_once() -> None:
    quiet = _chunks(pink_noise(20.0, -55.0, seed=3))
    speech = load_clip(require(JFK))[: 3 * SAMPLE_RATE]

    async def main() -> tuple[list[list[AudioChunk]], int, int]:
        handoff = Handoff(asyncio.get_running_loop(), max_chunks=1000, drop=False)
        handoff.hold_quiet_db = HOLD_DB
        batches = await feed_quiet(handoff, quiet)
        held_handovers = handoff.handovers
        loudest = max(_chunks(speech), key=lambda c: rms_dbfs(c.samples))
        loud = AudioChunk(loudest.samples, t=quiet[-1].t_end)
        handoff.put(quiet[:3])  # three more quiet ones held ...
        handoff.put([loud])  # ... go with the loud one, at once
        batches.append(await handoff.get())
        return batches, held_handovers, handoff.handovers

    batches, held_handovers, handovers = asyncio.run(main())
    onset = Onset()
    stand_out = {c.t for c in quiet if onset.above_floor(c.samples) > HOLD_DB}
    assert len(stand_out) <= len(quiet) // 50  # room noise rarely stands out from its own floor
    # Ten at a time, or fewer up to a chunk that stood out; every chunk, in order.
    assert all(len(batch) == HOLD_CHUNKS or batch[-1].t in stand_out for batch in batches[:-1])
    assert held_handovers == len(batches) - 1 <= len(quiet) // HOLD_CHUNKS + len(stand_out)
    assert [c.t for batch in batches[:-1] for c in batch] == [c.t for c in quiet]
    assert len(batches[-1]) == 4 and handovers == held_handovers + 1


def test_without_hold_every_chunk_goes_at_once_and_end_of_input_comes_after_the_last() -> None:
    quiet = _chunks(pink_noise(2.0, -55.0, seed=4))

    async def main() -> tuple[int, list[Any]]:
        handoff = Handoff(asyncio.get_running_loop(), max_chunks=1000, drop=False)
        got: list[Any] = []
        for chunk in quiet:
            handoff.put([chunk])
            got.extend(await handoff.get())
        handoff.hold_quiet_db = HOLD_DB
        handoff.put(quiet[:2])  # held ...
        handoff.end()  # ... and handed over with the end
        got.extend(await handoff.get())
        got.append(await handoff.get())
        return handoff.handovers, got

    handovers, got = asyncio.run(main())
    assert handovers == len(quiet) + 1
    assert len(got) == len(quiet) + 3 and got[-1] is None


# -------------------------------------------------------------------------------------- the daemon on a pipe


def test_quiet_room_on_stdin_wakes_the_loop_about_once_a_second_and_eof_ends_the_run(models: Models) -> None:
    seconds = 60.0
    pcm = _pcm(pink_noise(seconds, -55.0, seed=7, drift_db=3.0))
    events, daemon, source = run_on_pipe(models, pcm)
    # Nothing woke, nothing failed, and EOF ended the run.
    assert not [e for e in events if isinstance(e, Wake | Error)] and daemon.errors == 0
    assert source.holding.is_set()
    handoff = source._handoff  # noqa: SLF001 - its counters are what this test is about
    chunks = int(seconds * 10)
    onset = Onset()
    stand_out = sum(onset.above_floor(c.samples) > HOLD_DB for c in _chunks(pcm / 32768.0))
    # Held ten at a time once the daemon allowed it (after the first chunk), or up to a chunk that stood out
    # from the room, plus the first chunk and the end of input; one crossing per chunk would be 600.
    assert handoff.handovers <= chunks // HOLD_CHUNKS + stand_out + 3, (handoff.handovers, stand_out)
    assert handoff.wakeups <= handoff.handovers


def test_wake_phrase_after_a_long_quiet_spell_is_heard_as_from_a_file(models: Models, tmp_path: Path) -> None:
    jfk = load_clip(require(JFK))
    pcm = _pcm(pink_noise(30.0, -55.0, seed=11, drift_db=3.0), jfk, silence(3.0))
    live_events, daemon, source = run_on_pipe(models, pcm)
    path = tmp_path / "quiet-then-jfk.wav"
    sf.write(str(path), pcm, SAMPLE_RATE, subtype="PCM_16")  # the same int16 samples, read by FileSource
    file_events, _ = run_daemon(models, path)

    def heard(events: list[Any]) -> list[tuple[Any, ...]]:
        return [(e.label, e.t, e.t_end) for e in events if isinstance(e, Wake)] + [
            ("final", e.text) for e in events if isinstance(e, Final)]

    assert source.holding.is_set()
    assert heard(live_events) == heard(file_events)
    (wake,) = [e for e in live_events if isinstance(e, Wake)]
    assert wake.label == "FELLOW AMERICANS" and wake.t > 30.0
    assert len([e for e in live_events if isinstance(e, Reply)]) == 1 and daemon.errors == 0
