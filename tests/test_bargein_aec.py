"""The daemon's echo canceller, live: the assistant's own voice through a loud simulated room (50 ms, -6 dB,
reverberant tail), the Speex canceller fed the reference from the paced speech output (audio/aec.py).

One run of the daemon on a real-time source: the assistant answers (the tiny MiniMind, ~80 tokens of espeak-ng
speech); the canceller's input and output are recorded as the daemon processes them. Checked:
- the echo is taken out: >= 20 dB less echo energy in the canceller's output than in its input, measured on the
  speech after the first ADAPT_S seconds (the canceller starts from nothing in each test; in a service it
  keeps its filter from reply to reply), against the simulated room's echo, with no user speech in it;
- the stop phrase SORROW said as loud as that echo (0 dB speech-to-echo) is heard through it and stops the reply
  (without the canceller the spotter misses it: bench/bargein.py);
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from assistant.audio.aec import available as aec_available
from assistant.daemon import Daemon
from assistant.events import Event, Interrupted, StateChange
from speechdata.echo_room import LiveSource, Room
from tests.support.bargein import check_stopped, make_parts, run_live, ser_gain

pytestmark = pytest.mark.skipif(not aec_available(), reason="needs speexdsp (pip install edge-assistant[aec])")

AEC_ROOM = Room(delay_s=0.05, gain_db=-6.0)  # a loud loudspeaker: the echo as loud as the user
ADAPT_S = 8.0  # seconds of our speech the canceller adapts on before the phrase is said
RATE = 16000


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory, tiny_llm) -> dict[str, Any]:
    return make_parts(tmp_path_factory.mktemp("kw"), tiny_llm)


def test_live_canceller_removes_the_echo_and_hears_a_stop_at_0_db(parts, tmp_path):
    long_parts = dict(parts)
    settings = parts["settings"]
    long_parts["settings"] = dataclasses.replace(settings, llm=dataclasses.replace(settings.llm, max_new_tokens=80))
    planted: list[float] = []
    speaking: list[float] = []
    recorded: list[tuple[float, np.ndarray, np.ndarray]] = []  # (t, canceller input, output)

    def on_event(event: Event, source: LiveSource, daemon: Daemon) -> None:
        if daemon.aec is not None and not hasattr(daemon.aec, "_recording"):
            process = daemon.aec.process

            def recording(chunk: Any) -> Any:
                out = process(chunk)
                recorded.append((chunk.t, chunk.samples.copy(), out.samples.copy()))
                return out

            daemon.aec.process = recording
            daemon.aec._recording = True
        if isinstance(event, StateChange) and event.state == "speaking" and not speaking:
            speaking.append(source.t)
            clip = parts["sorrow"]
            planted.append(source.plant(clip, source.t + ADAPT_S + 2.0, ser_gain(parts, clip, 0.0, AEC_ROOM))[0])
        if isinstance(event, Interrupted):
            source.end = source.t + 2.0

    events, daemon, source, output = run_live(long_parts, tmp_path, on_event, room=AEC_ROOM, aec=True)
    assert daemon.aec is not None and speaking, [e.name for e in events]
    check_stopped(events, daemon, output, planted)

    # Echo removed: input and output of the canceller against the room's echo, on our speech alone.
    n = int(source.t * RATE)
    mic, out = np.zeros(n, np.float32), np.zeros(n, np.float32)
    done = np.zeros(n, bool)
    for t, x, y in recorded:
        i = int(round(t * RATE))
        mic[i : i + len(x)] = x[: n - i]
        j = i + len(x) - len(y)  # the output may start with frames held back from the previous chunk
        out[j : j + len(y)] = y[: n - j]
        done[i : i + len(x)] = True
    echo = source.loop.echo[:n]
    window = slice(int((speaking[0] + ADAPT_S) * RATE), int((planted[0] - 0.1) * RATE))
    assert done[window].all() and not source.user[window].any()  # every chunk seen, no user speech in it
    # The simulated room adds each slice's echo when the slice is played; on a busy machine the paced output
    # can fall behind the input, and an echo added after its chunk was handed out never reached the
    # canceller. Judge the canceller on the 100 ms blocks whose echo arrived whole (a real room is never late).
    block = RATE // 10
    starts = range(window.start, window.stop - block + 1, block)
    whole = [i for i in starts if np.allclose(mic[i : i + block], echo[i : i + block], atol=1e-4)]
    assert len(whole) >= len(starts) // 2, f"the simulated echo came late in {len(starts) - len(whole)} blocks"
    kept = np.concatenate([np.arange(i, i + block) for i in whole])
    erle = 10 * np.log10(np.sum(np.square(echo[kept], dtype=np.float64)) /
                         np.sum(np.square(out[kept], dtype=np.float64)))
    print(f"echo removed live: {erle:.1f} dB over {len(kept) / RATE:.1f} s of {len(starts) / 10:.1f} s "
          f"({daemon.aec.late_samples} reference samples came late)")
    assert erle >= 20.0
