"""Audio sources: microphone, WAV/FLAC file, raw PCM on stdin, all as async iterators of 16 kHz mono chunks.

Every source yields `AudioChunk`s of a fixed block size (the daemon passes `audio.block_ms`, 50 ms by default;
100 ms when a caller gives none; only a file's or stdin's last chunk may be shorter) with `t` = seconds of
input audio before the chunk, so wake/ASR time stamps are positions in the input, whatever the source.
`open_source(spec)` picks the source:

    "mic"       default input device (or `device=` name/index); sounddevice, imported only here
    "-"         raw signed 16-bit little-endian mono PCM on stdin at `pcm_rate` Hz (default 16000)
    PATH        WAV/FLAC (anything libsndfile reads), any rate, mono or multi-channel (downmixed)

Usage:

    source = open_source("mic")          # AudioError now if the device is missing
    async for chunk in source:           # opens the stream; retries with backoff if it dies later
        ...
    source.close()
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from assistant.audio.chunk import SAMPLE_RATE, AudioChunk, AudioSource, Blocker
from assistant.audio.handoff import Handoff, HoldsQuietChunks
from assistant.audio.mic import MicSource
from assistant.audio.resample import MAX_RATE, MIN_RATE, Resampler, check_rate, to_mono
from assistant.audio.stdin import READ_BYTES, StdinPump
from assistant.errors import AudioError

log = logging.getLogger(__name__)

READ_BLOCKS = 10  # blocks a FileSource reads from the file at once
MAX_CHANNELS = 32  # more in a file header is corruption (or an attack), not a microphone array
MAX_READ_SAMPLES = 1 << 20  # samples (frames x channels) one read may hold: 4 MiB of float32
STDIN_MAX_S = 60.0  # seconds of audio read from stdin ahead of the consumer before the reader waits
STDIN_HOLD_READ_S = 0.5  # seconds between stdin reads while the consumer holds quiet chunks (the pipe holds 2 s)


# --------------------------------------------------------------------------------------------- file / stdin


def _cut(blocker: Blocker, resampler: Resampler, samples: np.ndarray, final: bool) -> list[AudioChunk]:
    """Resample and cut into blocks; the final call also returns the short last block."""
    chunks = blocker.push(resampler.process(samples, final=final))
    if final:
        chunks += blocker.flush()
    return chunks


async def _pace(chunk: AudioChunk, start: float, loop: asyncio.AbstractEventLoop, realtime: bool, *,
                breathe: bool) -> None:
    """In real time, wait until the chunk's end time; else (`breathe`) let the loop run between blocks."""
    if realtime:
        await asyncio.sleep(max(0.0, start + chunk.t_end - loop.time()))
    elif breathe:
        await asyncio.sleep(0)


class FileSource:
    """A WAV/FLAC file, read block by block, as fast as possible or paced in real time."""

    def __init__(self, path: Path, *, block_ms: int = 100, realtime: bool = False):
        import soundfile

        self.path = Path(path)
        self.sample_rate = SAMPLE_RATE
        self.dropped_blocks = 0
        self.realtime = realtime
        self.block = SAMPLE_RATE * block_ms // 1000
        try:
            self._file = soundfile.SoundFile(str(self.path))
        except (soundfile.LibsndfileError, RuntimeError, OSError) as exc:
            raise AudioError(f"cannot read audio file {self.path}: {exc}") from None
        self.in_rate = self._file.samplerate
        self.channels = self._file.channels
        # The header is checked before anything is sized from it: a rate of 1 Hz made a short file "last"
        # 176,000 s (hours of resampling), 0x7fffffff Hz asked the resampler for 539 GiB of filter weights,
        # and a read's buffer grows with the channel count.
        problem = None
        if not MIN_RATE <= self.in_rate <= MAX_RATE:
            problem = f"sample rate {self.in_rate} Hz in the header is out of range ({MIN_RATE}-{MAX_RATE} Hz)"
        elif not 1 <= self.channels <= MAX_CHANNELS:
            problem = f"channel count {self.channels} in the header is out of range (1-{MAX_CHANNELS})"
        if problem is not None:
            self._file.close()
            raise AudioError(f"audio file {self.path}: {problem}")
        log.info("audio file %s: %d Hz, %d channel(s), %.2f s%s", self.path, self.in_rate,
                 self._file.channels, self._file.frames / self.in_rate, ", real time" if realtime else "")

    def close(self) -> None:
        self._file.close()

    async def __aiter__(self) -> AsyncIterator[AudioChunk]:
        resampler = Resampler(self.in_rate, SAMPLE_RATE)
        blocker = Blocker(self.block)
        # A second of audio per read: soundfile's per-call overhead per 100 ms block was the largest cost left
        # of a real-time idle daemon (py-spy); the blocks are still cut and paced one by one.
        block_frames = max(1, self.in_rate * self.block // SAMPLE_RATE)
        read_frames = block_frames * max(1, min(READ_BLOCKS, MAX_READ_SAMPLES // (block_frames * self.channels)))
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            while True:
                try:
                    data = self._file.read(read_frames, dtype="float32", always_2d=True)
                except Exception as exc:  # noqa: BLE001 - libsndfile raises several types for corrupt data
                    raise AudioError(f"cannot read audio file {self.path}: {exc}") from None
                final = len(data) < read_frames
                # Float files can carry NaN/Inf (a corrupt header or a broken recorder); one NaN would poison
                # the models' streaming state for the rest of the run.
                samples = to_mono(data)
                if not np.isfinite(samples).all():  # checked first: nan_to_num costs ~10x more per block
                    samples = np.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0)
                for chunk in _cut(blocker, resampler, samples, final):
                    await _pace(chunk, start, loop, self.realtime, breathe=True)
                    yield chunk
                if final:
                    return
        finally:
            self.close()


class PcmStreamSource(HoldsQuietChunks):
    """Raw signed 16-bit little-endian mono PCM from a binary stream (stdin by default).

    The stream is read by a StdinPump thread that this source owns; that thread also converts, resamples and
    cuts the chunks, and hands them to the loop through a Handoff (audio/handoff.py): no thread hop per read,
    and while the consumer sets `hold_quiet_db`, quiet chunks reach it a second at a time. close() ends the
    iteration at once, so a quiet pipe (`arecord | assistant --input -`) never holds up SIGTERM.
    """

    def __init__(self, stream: BinaryIO | None = None, *, pcm_rate: int = SAMPLE_RATE, block_ms: int = 100,
                 realtime: bool = False):
        self.pcm_rate = check_rate(pcm_rate, "PCM rate")
        self.stream = StdinPump(stream if stream is not None else sys.stdin.buffer)
        self.sample_rate = SAMPLE_RATE
        self.dropped_blocks = 0
        self.realtime = realtime
        self.block = SAMPLE_RATE * block_ms // 1000

    def close(self) -> None:
        self.stream.close()
        if self._handoff is not None:
            self._handoff.close()

    async def __aiter__(self) -> AsyncIterator[AudioChunk]:
        loop = asyncio.get_running_loop()
        handoff = self._handoff = Handoff(loop, max_chunks=int(STDIN_MAX_S * SAMPLE_RATE) // self.block, drop=False)
        handoff.hold_quiet_db = self.hold_quiet_db
        resampler = Resampler(self.pcm_rate, SAMPLE_RATE)
        blocker = Blocker(self.block)
        carry = b""

        def on_data(read: bytes) -> None:  # on the stdin thread
            nonlocal carry
            data = carry + read
            usable = len(data) - len(data) % 2
            carry = data[usable:]
            pcm = np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / 32768.0
            loud = handoff.put(_cut(blocker, resampler, pcm, final=False))
            if not loud and len(read) < READ_BYTES:
                # Caught up with a live writer (a full read means more is waiting) in a quiet room. While nobody
                # needs quiet audio at once, the pipe keeps it and the next read takes it in one go: a sound
                # onset then reaches the loop up to STDIN_HOLD_READ_S late. Otherwise this returns at once.
                handoff.pause(STDIN_HOLD_READ_S)

        def on_end(error: Exception | None) -> None:  # on the stdin thread
            if error is not None:
                handoff.end(AudioError(f"cannot read PCM from stdin: {error}"))
                return
            # The resampler's tail and the short last block (a stray odd byte in `carry` is dropped).
            handoff.put(_cut(blocker, resampler, np.zeros(0, dtype=np.float32), final=True))
            handoff.end()

        self.stream.start(on_data, on_end)
        start = loop.time()
        try:
            while (chunks := await handoff.get()) is not None:
                for chunk in chunks:
                    if self.realtime:
                        await _pace(chunk, start, loop, True, breathe=False)
                    yield chunk
        finally:
            self.close()
            log.info("stdin: %s", handoff.summary())


# --------------------------------------------------------------------------------------------------- factory


def open_source(spec: str, *, sample_rate: int = SAMPLE_RATE, block_ms: int = 100, realtime: bool = False,
                device: str | int | None = None, queue_blocks: int | None = None,
                pcm_rate: int = SAMPLE_RATE, stdin: BinaryIO | None = None) -> AudioSource:
    """Open "mic", "-" (raw s16le PCM on stdin at `pcm_rate`) or an audio file path.

    `sample_rate` is what the models need and must stay 16000; it is an argument so a mismatch is explicit.
    Raises AudioError for a missing/unreadable file or a missing microphone/PortAudio.
    """
    if sample_rate != SAMPLE_RATE:
        raise AudioError(f"sample_rate {sample_rate} not supported: the models take {SAMPLE_RATE} Hz")
    if spec == "mic":
        return MicSource(device, block_ms=block_ms, queue_blocks=queue_blocks)
    if spec == "-":
        return PcmStreamSource(stdin, pcm_rate=pcm_rate, block_ms=block_ms, realtime=realtime)
    path = Path(spec)
    if not path.is_file():
        raise AudioError(f"audio file {path} not found (use --input mic, --input - or a WAV/FLAC path)")
    return FileSource(path, block_ms=block_ms, realtime=realtime)
