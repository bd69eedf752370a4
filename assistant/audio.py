"""Audio sources: microphone, WAV/FLAC file, raw PCM on stdin, all as async iterators of 16 kHz mono chunks.

Every source yields `AudioChunk`s of a fixed block size (100 ms by default; only a file's or stdin's last
chunk may be shorter) with `t` = seconds of input audio before the chunk, so wake/ASR time stamps are
positions in the input, whatever the source. `open_source(spec)` picks the source:

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
import collections
import logging
import math
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np

from assistant.exitcodes import AudioError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
READ_BLOCKS = 10  # blocks a FileSource reads from the file at once


@dataclass(frozen=True)
class AudioChunk:
    samples: np.ndarray
    """float32 mono samples at 16 kHz, in [-1, 1]."""
    t: float
    """Seconds of input audio before this chunk's first sample."""

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    @property
    def t_end(self) -> float:
        return self.t + self.duration


class AudioSource(Protocol):
    """What every source offers: `async for chunk in source`, `close()`, and a count of dropped blocks."""

    sample_rate: int
    dropped_blocks: int

    def __aiter__(self) -> AsyncIterator[AudioChunk]: ...

    def close(self) -> None: ...


# ---------------------------------------------------------------------------------------------- resampling


class Resampler:
    """Streaming windowed-sinc (polyphase) resampler between two integer rates.

    Written here rather than imported: scipy is not a runtime dependency on a Pi, and linear interpolation
    aliases everything above 8 kHz of a 44.1/48 kHz input into the speech band the models listen to. For a
    rational ratio up/down the filter has only `up` phases, so the weights are precomputed once; a 100 ms
    block costs ~1600 x 2*half_width multiply-adds.
    """

    def __init__(self, in_rate: int, out_rate: int, *, half_width: int = 16):
        g = math.gcd(int(in_rate), int(out_rate))
        self.in_rate, self.out_rate = int(in_rate), int(out_rate)
        self.up, self.down = self.out_rate // g, self.in_rate // g
        # cutoff relative to the input Nyquist; 0.95 leaves room for the window's transition band
        cutoff = min(1.0, self.up / self.down) * 0.95
        self._taps = int(math.ceil(half_width / cutoff))  # input samples each side of an output
        offsets = np.arange(-self._taps + 1, self._taps + 1)  # tap k = base + offset
        phases = np.arange(self.up)[:, None] / self.up  # fractional position of the output past its base
        x = phases - offsets[None, :]
        window = np.where(np.abs(x) < self._taps, 0.5 + 0.5 * np.cos(np.pi * x / self._taps), 0.0)
        weights = cutoff * np.sinc(cutoff * x) * window
        self._weights = (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)  # unit DC gain
        self._offsets = offsets
        self._buf = np.zeros(self._taps, dtype=np.float32)  # zeros before the first input sample
        self._buf_start = -self._taps  # absolute input index of _buf[0]
        self._n = 0  # next output index
        self._n_in = 0

    @property
    def passthrough(self) -> bool:
        return self.up == self.down

    def process(self, x: np.ndarray, *, final: bool = False) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if self.passthrough:
            return x
        self._n_in += len(x)
        buf = np.concatenate([self._buf, x])
        if final:
            buf = np.concatenate([buf, np.zeros(self._taps, dtype=np.float32)])
        buf_end = self._buf_start + len(buf)  # one past the last absolute input index held
        last_base = buf_end - 1 - self._taps  # an output needs input up to base + taps
        n_stop = -((-(last_base + 1) * self.up) // self.down)  # first n whose base exceeds last_base
        if final:
            n_stop = min(n_stop, -((-self._n_in * self.up) // self.down))
        out = np.zeros(0, dtype=np.float32)
        if n_stop > self._n:
            n = np.arange(self._n, n_stop, dtype=np.int64)
            base = (n * self.down) // self.up
            phase = (n * self.down) % self.up
            out = np.empty(len(n), dtype=np.float32)
            # in slices, so a long input does not build one huge index matrix
            for i in range(0, len(n), 4096):
                idx = base[i : i + 4096, None] + self._offsets[None, :] - self._buf_start
                out[i : i + 4096] = np.einsum("ij,ij->i", buf[idx], self._weights[phase[i : i + 4096]])
            self._n = n_stop
        keep_from = (self._n * self.down) // self.up - self._taps + 1 - self._buf_start
        keep_from = max(0, min(keep_from, len(buf)))
        self._buf = buf[keep_from:]
        self._buf_start += keep_from
        return out


def resample(x: np.ndarray, in_rate: int, out_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Resample a whole signal (convenience for tests and one-shot use)."""
    return Resampler(in_rate, out_rate).process(x, final=True)


def to_mono(x: np.ndarray) -> np.ndarray:
    """Frames x channels (or 1-D) -> float32 mono by averaging channels."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        return x
    return x[:, 0] if x.shape[1] == 1 else x.mean(axis=1, dtype=np.float32)


class _Blocker:
    """Re-cuts arbitrary-length pieces into fixed blocks and stamps each with its input time."""

    def __init__(self, block: int):
        self.block = block
        self._pending: list[np.ndarray] = []
        self._pending_len = 0
        self.emitted = 0  # samples handed out so far

    def push(self, x: np.ndarray) -> list[AudioChunk]:
        if len(x):
            self._pending.append(x)
            self._pending_len += len(x)
        out = []
        if self._pending_len >= self.block:
            # One piece (a file read, a microphone block: the common case) is cut into views, not copied.
            data = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending)
            cut = (len(data) // self.block) * self.block
            for i in range(0, cut, self.block):
                out.append(self._chunk(data[i : i + self.block]))
            self._pending = [data[cut:]] if cut < len(data) else []
            self._pending_len = len(data) - cut
        return out

    def skip(self, n: int) -> None:
        """Advance time over `n` samples that were lost (dropped blocks), keeping `t` true to the input."""
        self.emitted += n

    def flush(self) -> list[AudioChunk]:
        if not self._pending_len:
            return []
        data = np.concatenate(self._pending)
        self._pending, self._pending_len = [], 0
        return [self._chunk(data)]

    def _chunk(self, samples: np.ndarray) -> AudioChunk:
        samples = np.ascontiguousarray(samples, dtype=np.float32)
        chunk = AudioChunk(samples=samples, t=self.emitted / SAMPLE_RATE)
        self.emitted += len(samples)
        return chunk


# --------------------------------------------------------------------------------------------- file / stdin


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
        log.info("audio file %s: %d Hz, %d channel(s), %.2f s%s", self.path, self.in_rate,
                 self._file.channels, self._file.frames / self.in_rate, ", real time" if realtime else "")

    def close(self) -> None:
        self._file.close()

    async def __aiter__(self) -> AsyncIterator[AudioChunk]:
        resampler = Resampler(self.in_rate, SAMPLE_RATE)
        blocker = _Blocker(self.block)
        # A second of audio per read: soundfile's per-call overhead per 100 ms block was the largest cost left
        # of a real-time idle daemon (py-spy); the blocks are still cut and paced one by one.
        read_frames = max(1, self.in_rate * self.block // SAMPLE_RATE) * READ_BLOCKS
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
                chunks = blocker.push(resampler.process(samples, final=final))
                if final:
                    chunks += blocker.flush()
                for chunk in chunks:
                    if self.realtime:
                        await asyncio.sleep(max(0.0, start + chunk.t_end - loop.time()))
                    else:
                        await asyncio.sleep(0)  # let the loop breathe between blocks
                    yield chunk
                if final:
                    return
        finally:
            self.close()


class PcmStreamSource:
    """Raw signed 16-bit little-endian mono PCM from a binary stream (stdin by default)."""

    def __init__(self, stream: BinaryIO | None = None, *, pcm_rate: int = SAMPLE_RATE, block_ms: int = 100,
                 realtime: bool = False):
        self.stream = stream if stream is not None else sys.stdin.buffer
        self.sample_rate = SAMPLE_RATE
        self.pcm_rate = int(pcm_rate)
        self.dropped_blocks = 0
        self.realtime = realtime
        self.block = SAMPLE_RATE * block_ms // 1000

    def close(self) -> None:
        pass  # stdin belongs to the process

    async def __aiter__(self) -> AsyncIterator[AudioChunk]:
        resampler = Resampler(self.pcm_rate, SAMPLE_RATE)
        blocker = _Blocker(self.block)
        nbytes = 2 * max(1, self.pcm_rate * self.block // SAMPLE_RATE)
        loop = asyncio.get_running_loop()
        start = loop.time()
        carry = b""
        while True:
            # a thread, because a blocking read on the loop would stall everything else until data comes
            try:
                data = await asyncio.to_thread(self.stream.read, nbytes)
            except OSError as exc:
                raise AudioError(f"cannot read PCM from stdin: {exc}") from exc
            final = not data
            data = carry + (data or b"")
            usable = len(data) - len(data) % 2
            carry = data[usable:]
            pcm = np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / 32768.0
            chunks = blocker.push(resampler.process(pcm, final=final))
            if final:
                chunks += blocker.flush()
            for chunk in chunks:
                if self.realtime:
                    await asyncio.sleep(max(0.0, start + chunk.t_end - loop.time()))
                yield chunk
            if final:
                return


# ----------------------------------------------------------------------------------------------- microphone


def _import_sounddevice():
    try:
        import sounddevice
    except OSError as exc:  # the wheel is pure Python; PortAudio is a system library
        raise AudioError(
            f"microphone needs the PortAudio library ({exc}); install it with"
            " `sudo apt install libportaudio2` (Debian/Raspberry Pi OS), or use --input FILE or --input -"
        ) from None
    except ImportError:
        raise AudioError("microphone needs the sounddevice package: pip install sounddevice") from None
    return sounddevice


class MicSource:
    """The microphone through a sounddevice callback into a bounded queue.

    The PortAudio callback runs on its own thread and must never block: it hands the block to the event loop
    with call_soon_threadsafe; when the consumer falls behind, the oldest block is dropped and counted. A
    stream that dies while running (device unplugged, no data for `stall_s`) is reopened with backoff
    1, 2, 4 .. 30 s; the iterator keeps going, so the daemon survives a flaky device.
    """

    BACKOFF_MAX_S = 30.0

    def __init__(self, device: str | int | None = None, *, block_ms: int = 100, queue_blocks: int = 50,
                 stall_s: float = 3.0):
        self.sd = _import_sounddevice()
        self.sample_rate = SAMPLE_RATE
        self.block = SAMPLE_RATE * block_ms // 1000
        self.block_ms = block_ms
        self.queue_blocks = queue_blocks
        self.stall_s = stall_s
        self.dropped_blocks = 0
        self.device = device
        self.device_index, self.in_rate = self._resolve()
        self._stream = None
        self._queue: asyncio.Queue[np.ndarray] | None = None
        self._failed: str | None = None
        self._last_drop_log = 0.0
        self._closed = False

    def _resolve(self) -> tuple[int | None, int]:
        sd = self.sd
        device = self.device
        if isinstance(device, str) and device.strip().isdigit():
            device = int(device)
        try:
            info = sd.query_devices(device, kind="input")
        except (ValueError, sd.PortAudioError) as exc:
            inputs = [f"{i}: {d['name']}" for i, d in enumerate(sd.query_devices())
                      if d.get("max_input_channels", 0) > 0]
            listing = "; ".join(inputs) or "none"
            message = f"input device {self.device!r} not found ({exc}); input devices: {listing}"
            raise AudioError(message) from None
        index = info.get("index", device if isinstance(device, int) else None)
        try:
            sd.check_input_settings(device=index, channels=1, dtype="float32", samplerate=SAMPLE_RATE)
            rate = SAMPLE_RATE
        except Exception:  # noqa: BLE001 - PortAudio reports an unsupported rate in several ways
            rate = int(info["default_samplerate"])
            log.info("input device %r cannot do %d Hz: opening at %d Hz and resampling",
                     info["name"], SAMPLE_RATE, rate)
        log.info("microphone: %r (index %s) at %d Hz", info["name"], index, rate)
        return index, rate

    def close(self) -> None:
        self._closed = True
        self._close_stream()

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.close(ignore_errors=True)
            except Exception:  # noqa: BLE001 - closing a dead device must not take the daemon down
                log.debug("closing the input stream failed", exc_info=True)

    def _open_stream(self, loop: asyncio.AbstractEventLoop) -> None:
        queue = self._queue
        assert queue is not None

        def push(block: np.ndarray) -> None:  # on the loop thread
            if queue.full():
                queue.get_nowait()
                self.dropped_blocks += 1
                now = time.monotonic()
                if now - self._last_drop_log > 5.0:
                    self._last_drop_log = now
                    log.warning("audio queue full: %d blocks of %d ms dropped so far", self.dropped_blocks,
                                self.block_ms)
            queue.put_nowait(block)

        def callback(indata, frames, time_info, status) -> None:  # on PortAudio's thread: never block
            loop.call_soon_threadsafe(push, indata[:, 0].copy())

        def finished() -> None:
            if not self._closed:
                self._failed = "input stream stopped"

        self._failed = None
        stream = self.sd.InputStream(
            device=self.device_index, channels=1, dtype="float32", samplerate=self.in_rate,
            blocksize=self.in_rate * self.block_ms // 1000, callback=callback, finished_callback=finished,
        )
        stream.start()
        self._stream = stream

    async def _reopen_with_backoff(self, loop: asyncio.AbstractEventLoop, reason: str) -> None:
        delay = 1.0
        log.warning("microphone failed (%s): reopening", reason)
        while not self._closed:
            self._close_stream()
            await asyncio.sleep(delay)
            try:
                self.device_index, rate = self._resolve()
                if rate != self.in_rate:
                    raise AudioError(f"device rate changed from {self.in_rate} to {rate} Hz")
                self._open_stream(loop)
                log.info("microphone reopened after %.0f s backoff", delay)
                return
            except Exception as exc:  # noqa: BLE001 - any device error: keep trying, the daemon keeps running
                log.warning("microphone still unavailable (%s); next try in %.0f s", exc,
                            min(delay * 2, self.BACKOFF_MAX_S))
                delay = min(delay * 2, self.BACKOFF_MAX_S)

    async def __aiter__(self) -> AsyncIterator[AudioChunk]:
        loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue(maxsize=self.queue_blocks)
        try:
            self._open_stream(loop)
        except Exception as exc:  # noqa: BLE001 - a busy/missing device at start is the user's to fix
            raise AudioError(f"cannot open input device {self.device!r}: {exc}") from None
        resampler = Resampler(self.in_rate, SAMPLE_RATE)
        blocker = _Blocker(self.block)
        dropped_seen = 0
        try:
            while not self._closed:
                try:
                    block = await asyncio.wait_for(self._queue.get(), timeout=self.stall_s)
                except TimeoutError:
                    await self._reopen_with_backoff(loop, f"no audio for {self.stall_s:.0f} s")
                    continue
                if self._failed:
                    await self._reopen_with_backoff(loop, self._failed)
                if self.dropped_blocks != dropped_seen:
                    # keep t equal to input time across the gap
                    blocker.skip((self.dropped_blocks - dropped_seen) * self.block)
                    dropped_seen = self.dropped_blocks
                for chunk in blocker.push(resampler.process(block)):
                    yield chunk
        finally:
            self.close()


# --------------------------------------------------------------------------------------------------- factory


def open_source(spec: str, *, sample_rate: int = SAMPLE_RATE, block_ms: int = 100, realtime: bool = False,
                device: str | int | None = None, queue_blocks: int = 50,
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


# ------------------------------------------------------------------------------------------------------ ring


class AudioRing:
    """The last `seconds` of audio with absolute time stamps, so the ASR can start from a past moment
    (the end of the wake word) that the spotter only reports a little later."""

    def __init__(self, seconds: float = 10.0):
        self.seconds = seconds
        self._chunks: collections.deque[AudioChunk] = collections.deque()
        self._samples = 0

    def push(self, chunk: AudioChunk) -> None:
        self._chunks.append(chunk)
        self._samples += len(chunk.samples)
        limit = int(self.seconds * SAMPLE_RATE)
        while self._chunks and self._samples - len(self._chunks[0].samples) >= limit:
            self._samples -= len(self._chunks.popleft().samples)

    @property
    def start_t(self) -> float:
        return self._chunks[0].t if self._chunks else 0.0

    @property
    def end_t(self) -> float:
        return self._chunks[-1].t_end if self._chunks else 0.0

    def clear(self) -> None:
        self._chunks.clear()
        self._samples = 0

    def since(self, t: float) -> np.ndarray:
        """Samples from input time `t` to the newest (from the oldest held if `t` is older than that)."""
        if self._chunks and t < self.start_t - 1e-6:
            log.debug("ring holds audio from %.2f s only; %.2f s requested", self.start_t, t)
        parts = []
        for chunk in self._chunks:
            if chunk.t_end <= t:
                continue
            skip = max(0, int(round((t - chunk.t) * SAMPLE_RATE)))
            parts.append(chunk.samples[skip:])
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
