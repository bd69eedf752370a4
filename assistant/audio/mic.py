"""The microphone as an audio source (sounddevice, imported only when a microphone is used)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from assistant.audio.chunk import SAMPLE_RATE, AudioChunk, Blocker
from assistant.audio.handoff import Handoff, HoldsQuietChunks
from assistant.audio.resample import Resampler
from assistant.errors import AudioError

log = logging.getLogger(__name__)


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


class MicSource(HoldsQuietChunks):
    """The microphone through a sounddevice callback.

    The PortAudio callback runs on its own thread and must never block: it resamples and cuts the block into
    chunks right there and hands them to the loop through a Handoff (audio/handoff.py), which wakes the loop
    only when it waits for audio and, while the consumer sets `hold_quiet_db`, holds quiet chunks back a
    second at a time. When the consumer falls behind by `queue_blocks` chunks (None: QUEUE_S of audio, whatever
    the block size), the oldest are dropped and counted (each chunk keeps its input time). A stream that dies
    while running (device unplugged, no data for `stall_s`) is reopened with backoff 1, 2, 4 .. 30 s; the
    iterator keeps going, so the daemon survives a flaky device.
    """

    BACKOFF_MAX_S = 30.0
    QUEUE_S = 5.0

    def __init__(self, device: str | int | None = None, *, block_ms: int = 100, queue_blocks: int | None = None,
                 stall_s: float = 3.0):
        self.sd = _import_sounddevice()
        self.sample_rate = SAMPLE_RATE
        self.block = SAMPLE_RATE * block_ms // 1000
        self.block_ms = block_ms
        self.queue_blocks = queue_blocks if queue_blocks is not None else max(1, int(self.QUEUE_S * 1000) // block_ms)
        self.stall_s = stall_s
        self.dropped_blocks = 0
        self.device = device
        self.device_index, self.in_rate = self._resolve()
        self._stream = None
        self._resampler = Resampler(self.in_rate, SAMPLE_RATE)
        self._blocker = Blocker(self.block)  # input time goes on across a reopen: t counts the samples cut
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
        if self._handoff is not None:
            self._handoff.close()

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.close(ignore_errors=True)
            except Exception:  # noqa: BLE001 - closing a dead device must not take the daemon down
                log.debug("closing the input stream failed", exc_info=True)

    def _open_stream(self) -> None:
        handoff = self._handoff
        assert handoff is not None
        resampler, blocker = self._resampler, self._blocker

        def callback(indata, frames, time_info, status) -> None:  # on PortAudio's thread: never block
            handoff.put(blocker.push(resampler.process(indata[:, 0].copy())))

        def finished() -> None:
            if not self._closed:
                self._failed = "input stream stopped"
                handoff.flush()  # the reader hears of it now, not when held chunks would have gone

        self._failed = None
        stream = self.sd.InputStream(
            device=self.device_index, channels=1, dtype="float32", samplerate=self.in_rate,
            blocksize=self.in_rate * self.block_ms // 1000, callback=callback, finished_callback=finished,
        )
        stream.start()
        self._stream = stream

    async def _reopen_with_backoff(self, reason: str) -> None:
        delay = 1.0
        log.warning("microphone failed (%s): reopening", reason)
        while not self._closed:
            self._close_stream()
            await asyncio.sleep(delay)
            try:
                self.device_index, rate = self._resolve()
                if rate != self.in_rate:
                    raise AudioError(f"device rate changed from {self.in_rate} to {rate} Hz")
                self._open_stream()
                log.info("microphone reopened after %.0f s backoff", delay)
                return
            except Exception as exc:  # noqa: BLE001 - any device error: keep trying, the daemon keeps running
                log.warning("microphone still unavailable (%s); next try in %.0f s", exc,
                            min(delay * 2, self.BACKOFF_MAX_S))
                delay = min(delay * 2, self.BACKOFF_MAX_S)

    async def __aiter__(self) -> AsyncIterator[AudioChunk]:
        self._handoff = Handoff(asyncio.get_running_loop(), max_chunks=self.queue_blocks, drop=True)
        self._handoff.hold_quiet_db = self.hold_quiet_db
        try:
            self._open_stream()
        except Exception as exc:  # noqa: BLE001 - a busy/missing device at start is the user's to fix
            raise AudioError(f"cannot open input device {self.device!r}: {exc}") from None
        try:
            while not self._closed:
                try:
                    chunks = await asyncio.wait_for(self._handoff.get(), timeout=self.stall_s)
                except TimeoutError:
                    await self._reopen_with_backoff(f"no audio for {self.stall_s:.0f} s")
                    continue
                if chunks is None:
                    return
                if self._failed:
                    await self._reopen_with_backoff(self._failed)
                self._count_drops()
                for chunk in chunks:
                    yield chunk
        finally:
            self.close()
            log.info("microphone: %s", self._handoff.summary())

    def _count_drops(self) -> None:
        assert self._handoff is not None
        if self._handoff.dropped == self.dropped_blocks:
            return
        self.dropped_blocks = self._handoff.dropped
        now = time.monotonic()
        if now - self._last_drop_log > 5.0:
            self._last_drop_log = now
            log.warning("audio queue full: %d blocks of %d ms dropped so far", self.dropped_blocks, self.block_ms)
