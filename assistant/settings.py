"""Typed, frozen settings for the daemon, read from config.yaml once and then passed around as dataclasses.

Every field carries its default and its unit here; config.yaml documents the same keys for users. Validation
is driven by the type hints plus a few bounds in field metadata, so a new setting is one line, not a parser
branch.
Errors name the file and the dotted key (`asr.endpoint.rule2_min_trailing_silence: expected a number > 0, got
'abc'`) and raise ConfigError, which the CLI turns into exit code CONFIG before any model is loaded.

What the loader refuses besides wrong types and bounds, because each once passed and then broke the daemon:
non-finite numbers (`.nan` passes every `>`/`<` check, `.inf` overflowed later), a file over MAX_CONFIG_BYTES,
duplicate keys (YAML's last-wins hid the first value), and YAML aliases (`*name`). Aliases are refused rather
than bounded: a config file is small and flat, and a few nested aliases expand to gigabytes (an "alias bomb"
under llm.system_prompt gave a 351 MB error line); write the value out instead. Error messages quote at most
QUOTE_CHARS characters of a value or key.
Why ~700 lines: every settings dataclass lives here by design (components import from it, never the
reverse), so its length is the sum of the sections; the loader itself is small.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from assistant.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path("config.yaml")  # read from the working directory when --config is not given
DEMO_MODEL = "minimind-demo"  # the project's own small model, used when the configured LLM is not installed
# The demo model as the recipe made it (python -m training.recipes.demo), shipped in the package so a fresh
# install answers at once; a copy in <models_dir>/minimind-demo (a newer run of the recipe) comes first.
BUNDLED_DEMO = Path(__file__).resolve().parent / "data" / DEMO_MODEL
MAX_CONFIG_BYTES = 1 << 20  # config.yaml is a few KiB; a bigger file is a mistake (or an attack)
QUOTE_CHARS = 200  # the most of a value or key an error message quotes
MAX_CONFIG_DEPTH = 32  # nesting levels in config.yaml (it uses 3); deeper is refused before PyYAML recurses
MODEL_RATE = 16000  # Hz: the only rate the models run at (audio.sample_rate); inputs are converted to it


def find_config(explicit: Path | None) -> Path | None:
    """The settings file every command reads: --config, else ./config.yaml if it exists, else none (defaults)."""
    if explicit is not None:
        return explicit
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


SENSE_VOICE_LANGUAGES = ("auto", "zh", "en", "ja", "ko", "yue")  # sherpa-onnx falls back to auto on others


def _bound(default: Any, **limits: float) -> Any:
    """A field with numeric limits: gt, ge, lt, le (checked by the loader)."""
    return field(default=default, metadata=limits)


@dataclass(frozen=True)
class PathsSettings:
    # Both keys follow one order, for `run`, `ask` and `models` alike: the command-line flag (--model-dir /
    # --models-dir, --mirror), else this key, else the environment variable, else the default.
    #
    # Where `assistant models fetch NAME` installs <models_dir>/<NAME>/ and where every command looks. Not
    # written (or null): $ASSISTANT_MODELS_DIR (relative: to the working directory), else models/ beside the
    # config file (or in the working directory when there is no config file).
    models_dir: Path = field(default=Path("models"), metadata={"env": "ASSISTANT_MODELS_DIR"})
    # `models fetch` source: a folder (relative: to the config file's folder) or an http(s):// URL laid out like
    # the upstream. Not written (or null): $ASSISTANT_MIRROR, else None = the official URLs. A str, not a Path,
    # so a URL is not resolved as a file name: Settings.mirror() resolves a folder.
    mirror: str | None = field(default=None, metadata={"env": "ASSISTANT_MIRROR", "folder_or_url": True})
    # Where timers and alarms are saved (timers.json) so they survive a restart. Not written (or null):
    # $STATE_DIRECTORY (set by systemd's StateDirectory=; the first of several), else STATE_DIR_DEFAULT.
    state_dir: Path | None = field(default=None, metadata={"env": "STATE_DIRECTORY"})


STATE_DIR_DEFAULT = Path("~/.local/state/edge-assistant")  # XDG_STATE_HOME's usual place


@dataclass(frozen=True)
class AudioSettings:
    input: Literal["mic", "-"] | Path = "mic"  # "mic", "-" (16-bit mono PCM on stdin) or an audio file
    device: int | str | None = None  # microphone: index or (part of a) name; None = system default
    sample_rate: int = MODEL_RATE  # Hz the models run at, only 16000; other rates are converted at the source
    block_ms: int = _bound(50, gt=0, le=1000)  # ms of audio per chunk handed to the pipeline (50: faster barge-in)
    realtime: bool = False  # files/stdin: pace chunks like a live microphone instead of as fast as possible
    ring_s: float = _bound(10.0, gt=0, le=600)  # seconds of audio kept, so ASR can start at the wake word's end


# Components take these as they are: the gate and VAD settings live here too, so imports point one way
# (components -> settings, never the reverse).


@dataclass(frozen=True)
class VadSettings:
    model: Path  # silero_vad.onnx (`assistant models fetch vad-silero` installs <models_dir>/vad-silero/)
    threshold: float = 0.5  # speech probability above which a 32 ms window counts as speech, 0..1
    min_silence_s: float = 0.5  # seconds of non-speech that end a segment (the trailing silence)
    min_speech_s: float = 0.25  # seconds of speech before a segment starts
    max_speech_s: float = 20.0  # seconds: a longer segment is cut here
    num_threads: int = 1  # onnxruntime threads


@dataclass(frozen=True)
class GateSettings:
    enabled: bool = True  # false: the spotter sees every chunk (plain WakeWord)
    kind: Literal["energy", "silero"] = "energy"
    # Bounds: what still makes a working gate (a 10 s pre-roll is 640 KB held; a gate that needs a minute of
    # quiet to close, or 60 dB over the floor to open, is off in practice). close_db < open_db is in _check.
    pre_roll_s: float = _bound(0.8, ge=0, le=10)  # seconds of audio before the gate opened the spotter still gets
    open_db: float = _bound(10.0, gt=0, le=60)  # energy: dB above the noise floor that count as "maybe speech"
    close_db: float = _bound(5.0, ge=0, le=60)  # energy: dB above the floor below which a block is quiet (< open_db)
    open_blocks: int = _bound(2, ge=1, le=100)  # energy: consecutive loud 100 ms blocks that open the gate
    hang_s: float = _bound(1.0, gt=0, le=60)  # seconds of quiet before the gate closes (the spotter needs ~0.5 s)
    floor_rise_db_per_s: float = _bound(2.0, gt=0, le=100)  # energy: how fast the floor follows a louder room
    min_floor_dbfs: float = _bound(-75.0, ge=-200, le=0)  # energy: floor never goes below this (dither / silence)
    silero_threshold: float = _bound(0.5, gt=0, lt=1)  # silero: speech probability, 0..1
    # silero: path of silero_vad.onnx. Required here; the daemon fills in <models_dir>/vad-silero/silero_vad.onnx
    # when the config leaves it null (Settings.gate_settings()).
    silero_model: Path | None = None


@dataclass(frozen=True)
class WakeSettings:
    keywords_file: Path | None = None  # phrases or token lines, optional :boost #threshold @label
    model: str = "kws-en"  # model name under paths.models_dir (also the name `models fetch` takes)
    model_dir: Path | None = None  # explicit model folder; overrides `model`
    keywords_score: float = _bound(1.0, gt=0)  # boost for keyword tokens in the search
    keywords_threshold: float = _bound(0.25, gt=0, le=1)  # trigger probability threshold, 0..1
    num_threads: int = _bound(1, ge=1)  # onnxruntime threads for the spotter
    gate: GateSettings = GateSettings()  # silence gate in front of the spotter (see assistant/gate.py)
    # Phrases that stop a reply (live input), as keywords-file lines (plain text, optional :boost #threshold
    # @label); None = the defaults for the wake model's language (wake/keywords.py, DEFAULT_STOP_PHRASES).
    stop_phrases: tuple[str, ...] | None = None
    # While a reply is live (barge-in): the spotter on this many streams staggered over its 0.32 s encoder chunk
    # (0 = the wake word's own stream), each reporting after this many trailing blank frames (40 ms each;
    # the wake word uses 1). Lower stop-to-silence, k decodes per chunk while thinking/speaking (BENCHMARKS.md).
    barge_in_streams: int = _bound(4, ge=0, le=8)
    barge_in_trailing_blanks: int = _bound(0, ge=0, le=10)
    # While a reply is live and NO echo canceller runs (speexdsp missing, or tts.echo_cancel false): the stop
    # phrases' trigger threshold, raised so that our own voice does not stop us (a line's own higher #threshold
    # stays). None = the measured default (wake/spotter.py SPEAKING_THRESHOLD); with a canceller it is not used.
    speaking_threshold: float | None = _bound(None, gt=0, lt=1)


@dataclass(frozen=True)
class EndpointSettings:
    rule1_min_trailing_silence: float = _bound(2.4, gt=0)  # s of silence ending an utterance with no speech
    rule2_min_trailing_silence: float = _bound(1.2, gt=0)  # s of silence ending an utterance after speech
    rule3_min_utterance_length: float = _bound(20.0, gt=0)  # seconds: an utterance this long is ended anyway


@dataclass(frozen=True)
class OfflineAsrSettings:
    """engine vad-offline: the non-streaming recognizer that transcribes each VAD segment."""

    kind: Literal["sense_voice", "paraformer", "whisper"] = "sense_voice"  # sherpa-onnx OfflineRecognizer type
    model: str = "sensevoice"  # model name under paths.models_dir (`assistant models fetch sensevoice`)
    model_dir: Path | None = None  # explicit model folder; overrides `model`
    language: str = "auto"  # sense_voice: auto, zh, en, ja, ko, yue; whisper: a code such as en (auto = detect)
    use_itn: bool = True  # sense_voice: inverse text normalisation (digits and punctuation in the text)
    num_threads: int = _bound(1, ge=1)  # onnxruntime threads for the recognizer
    # Seconds of speech after which the open segment is decoded for partial text (again at 2x, 4x, ...); 0 =
    # text only at the end. Partials also keep the no-speech timeout from ending a long sentence.
    first_partial_s: float = _bound(1.0, ge=0)


@dataclass(frozen=True)
class AsrVadSettings:
    """engine vad-offline: silero VAD that cuts the speech after the wake word into segments."""

    model: Path | None = None  # silero_vad.onnx; None = <models_dir>/vad-silero/silero_vad.onnx
    threshold: float = _bound(0.5, gt=0, le=1)  # speech probability of a 32 ms window, 0..1
    min_silence_s: float = _bound(0.5, gt=0)  # seconds of trailing silence that end an utterance
    min_speech_s: float = _bound(0.25, gt=0)  # seconds of speech before a segment counts (shorter: a click)


@dataclass(frozen=True)
class AsrSettings:
    # "streaming": sherpa-onnx OnlineRecognizer fed chunk by chunk (model, decoding_method, endpoint below).
    # "vad-offline": silero VAD segments + a non-streaming recognizer (`offline` and `vad` below).
    # Both answer the daemon's start/accept/finish (daemon_cli.build_asr picks one).
    engine: Literal["streaming", "vad-offline"] = "streaming"
    model: str = "asr-en"  # model name under paths.models_dir
    # Explicit model folder. None: <models_dir>/<model> when installed, else the wake word model (the KWS
    # transducers also decode as a weak streaming ASR), so a fresh install with only kws-en still answers.
    model_dir: Path | None = None
    decoding_method: Literal["greedy_search", "modified_beam_search"] = "greedy_search"
    num_threads: int = _bound(1, ge=1)  # onnxruntime threads for the recognizer
    endpoint: EndpointSettings = EndpointSettings()
    # Seconds before the spotter's estimate of the keyword's end where the ASR starts: the estimate can be
    # late by a few hundred ms; hearing the keyword's tail is harmless, losing the next word is not.
    pre_roll_s: float = _bound(0.3, ge=0)
    no_speech_timeout_s: float = _bound(5.0, gt=0)  # seconds after the wake with no text -> back to idle
    max_utterance_s: float = _bound(30.0, gt=0)  # seconds: hard cap on one utterance, whatever the endpoint
    offline: OfflineAsrSettings = OfflineAsrSettings()
    vad: AsrVadSettings = AsrVadSettings()


@dataclass(frozen=True)
class LlmSettings:
    model: str = "minimind"  # exported model folder under models_dir (`models fetch minimind2-small`)
    model_dir: Path | None = None  # explicit exported model folder (model.onnx + model.json + tokenizer)
    threads: int = _bound(2, ge=1)  # onnxruntime intra-op threads
    verify_sha256: bool = True  # check model.json's sha256 of each file at load (false: experts editing files)
    # int8 weight form of a two-form export: auto (per CPU: assistant/llm/weights.py), blocks, dynamic or hybrid
    weights: Literal["auto", "blocks", "dynamic", "hybrid"] = "auto"
    system_prompt: str | None = None  # None: the chat module's default prompt
    temperature: float = _bound(0.7, ge=0)  # 0 with greedy=false still samples from the argmax only
    top_p: float = _bound(0.85, gt=0, le=1)  # nucleus mass kept, 0..1
    top_k: int = _bound(0, ge=0)  # keep the k most likely tokens; 0 = off
    repetition_penalty: float = _bound(1.0, gt=0)  # >1 discourages tokens already generated
    max_new_tokens: int = _bound(128, ge=1)  # tokens per reply
    seed: int | None = _bound(None, ge=0, lt=2**32)  # sampling seed; None = random per reply (numpy: >= 0)
    greedy: bool = False  # argmax decoding (reproducible replies)
    max_context_tokens: int = _bound(512, ge=16)  # prompt + history budget; oldest turns are dropped first
    open_thinking: bool = False  # minimind-3: let the model reason in <think> first (never spoken or sent)
    follow_up_window_s: float = _bound(8.0, ge=0)  # s after a reply in which a new wake keeps the history
    reply_timeout_s: float = _bound(60.0, gt=0)  # s a reply may take in all; then it is cancelled (error)


@dataclass(frozen=True)
class TtsSettings:
    engine: Literal["none", "sherpa", "espeak", "piper"] = "none"  # none: replies are only printed/logged
    output: Literal["speaker"] | Path = "speaker"  # "speaker" or a .wav file receiving all speech
    # sherpa-onnx OfflineTts model (engine: sherpa); which fields are needed depends on model_type.
    model_type: Literal["vits", "matcha", "kokoro"] = "vits"
    model: Path | None = None  # vits/kokoro model.onnx, or matcha acoustic model
    vocoder: Path | None = None  # matcha only: vocoder .onnx
    voices: Path | None = None  # kokoro only: voices.bin
    tokens: Path | None = None  # tokens.txt of the voice
    lexicon: Path | None = None  # lexicon.txt where the voice has one
    data_dir: Path | None = None  # espeak-ng-data folder for piper/kokoro style voices
    dict_dir: Path | None = None  # jieba dict folder for Chinese voices that need it
    speaker_id: int = _bound(0, ge=0)  # speaker index in multi-speaker voices
    voice: str = "en"  # espeak-ng voice name (engine: espeak), e.g. en, en-us, cmn
    # engine piper: a voice .onnx (its .onnx.json beside it; relative: to the config file's folder) or the name
    # of a voice installed as a package (en_US-joe-medium, the `piper` extra). None = en_US-joe-medium.
    piper_voice: str | None = field(default=None, metadata={"path_or_name": True})
    speed: float = _bound(1.0, gt=0)  # speaking rate multiplier
    num_threads: int = _bound(1, ge=1)  # onnxruntime threads for sherpa and piper TTS
    mute_tail_s: float = _bound(0.5, ge=0)  # seconds after playback ends before the wake word listens again
    # live input: cancel our own voice out of the microphone (Speex AEC, needs `speexdsp`; docs/echo-cancellation.md).
    # auto: on when speexdsp is installed, else the fallback (mute_tail_s and the text check)
    echo_cancel: bool | Literal["auto"] = "auto"


@dataclass(frozen=True)
class IntentsSettings:
    enabled: bool = True  # false: every question goes to the language model
    languages: tuple[Literal["en", "zh"], ...] = ("en", "zh")  # template sets loaded (and pinyin with zh)
    custom_dir: Path | None = None  # the user's sentence and response files (hassil format), added to ours


@dataclass(frozen=True)
class LoggingSettings:
    level: Literal["debug", "info", "warning", "error"] = "info"  # human logs on stderr
    json: bool = False  # events as JSON lines on stdout (same as --json)


@dataclass(frozen=True)
class ServiceSettings:
    watchdog: bool = True  # answer systemd's WatchdogSec from the event loop when NOTIFY_SOCKET is set


@dataclass(frozen=True)
class ServerLimits:
    """What one network client may ask of the shared models (assistant/servers/work.py)."""

    max_body_bytes: int = _bound(1_000_000, ge=1024)  # a JSON request body; larger: 413
    max_upload_bytes: int = _bound(20_000_000, ge=1024)  # an audio upload or a Wyoming audio stream; larger: 413
    max_audio_s: float = _bound(120.0, gt=0)  # seconds of audio one request may carry
    max_text_chars: int = _bound(4000, ge=1)  # text to speak or to answer, per request
    max_tokens: int = _bound(512, ge=1)  # the largest max_tokens a chat request may ask for
    workers: int = _bound(1, ge=1)  # model calls for network clients run at once (their own pool)
    queue: int = _bound(4, ge=0)  # more requests wait behind those; beyond: refused at once (503)
    per_client: int = _bound(2, ge=1)  # requests of one client address at once; beyond: refused (429)
    max_connections: int = _bound(200, ge=1)  # open connections per server; beyond: closed at once
    idle_timeout_s: float = _bound(300.0, gt=0)  # a Wyoming connection silent this long is closed
    voice_hold_s: float = _bound(30.0, ge=0)  # longest a network job pauses while the voice loop is busy


@dataclass(frozen=True)
class HttpServerSettings:
    """The OpenAI-compatible API and the status page (aiohttp)."""

    enabled: bool = False  # also --http HOST:PORT
    host: str = "127.0.0.1"  # any other address needs servers.token or allow_unauthenticated_lan
    port: int = _bound(8998, ge=0, le=65535)  # MiniMind's own OpenAI server port; 0: any free port (logged)


@dataclass(frozen=True)
class WyomingServerSettings:
    """Home Assistant's Wyoming protocol: wake, asr, tts and handle on one port (all listed in `info`)."""

    enabled: bool = False  # also --wyoming HOST:PORT
    host: str = "127.0.0.1"  # any other address needs allow_unauthenticated_lan (Wyoming has no auth)
    port: int = _bound(10300, ge=0, le=65535)  # Home Assistant's speech-to-text default
    zeroconf: bool = False  # advertise _wyoming._tcp on the LAN (needs the zeroconf package)


@dataclass(frozen=True)
class ServersSettings:
    # Bearer token the HTTP API asks of every request (Authorization: Bearer TOKEN). null: read
    # $CREDENTIALS_DIRECTORY/assistant-token when systemd provides it (LoadCredential=), else none.
    token: str | None = None
    allow_unauthenticated_lan: bool = False  # serve a non-loopback address with no token (warned at every start)
    # Client addresses the systemd unit lets in besides this machine (IPAddressAllow=, written by
    # `assistant install-service`), e.g. ["192.168.1.0/24"] for Home Assistant on the LAN; [] = loopback only.
    allow_from: tuple[str, ...] = ()
    http: HttpServerSettings = HttpServerSettings()
    wyoming: WyomingServerSettings = WyomingServerSettings()
    limits: ServerLimits = ServerLimits()


@dataclass(frozen=True)
class Settings:
    paths: PathsSettings = PathsSettings()
    audio: AudioSettings = AudioSettings()
    wake: WakeSettings = WakeSettings()
    asr: AsrSettings = AsrSettings()
    llm: LlmSettings = LlmSettings()
    tts: TtsSettings = TtsSettings()
    intents: IntentsSettings = IntentsSettings()
    logging: LoggingSettings = LoggingSettings()
    service: ServiceSettings = ServiceSettings()
    servers: ServersSettings = ServersSettings()
    config_path: Path | None = field(default=None, metadata={"internal": True})  # the file read, if any

    def state_dir(self) -> Path:
        """paths.state_dir, else $STATE_DIRECTORY (systemd may list several, colon-separated), else
        ~/.local/state/edge-assistant."""
        if self.paths.state_dir is not None:
            return Path(str(self.paths.state_dir).split(":")[0])
        return STATE_DIR_DEFAULT.expanduser()

    def wake_model_dir(self) -> Path:
        return self.wake.model_dir or self.paths.models_dir / self.wake.model

    def asr_model_dir(self) -> Path:
        if self.asr.model_dir is not None:
            return self.asr.model_dir
        installed = self.paths.models_dir / self.asr.model
        return installed if installed.is_dir() else self.wake_model_dir()

    def asr_model_name(self) -> str:
        """The `models fetch` name behind asr_model_dir(), for error messages."""
        if self.asr.model_dir is None and not (self.paths.models_dir / self.asr.model).is_dir():
            return self.wake.model
        return self.asr.model

    def llm_model_dir(self) -> Path:
        """llm.model_dir, else <models_dir>/<llm.model>; when that is not installed, the demo model
        (<models_dir>/minimind-demo, else the one shipped in the package), so a fresh install answers. The log
        names the folder used, and says how to get the real model when it is the demo."""
        if self.llm.model_dir is not None:
            return self.llm.model_dir
        configured = self.paths.models_dir / self.llm.model
        if configured.exists():
            return configured
        for demo in (self.paths.models_dir / DEMO_MODEL, BUNDLED_DEMO):
            if (demo / "model.onnx").is_file():
                return demo
        return configured

    def offline_model_dir(self) -> Path:
        return self.asr.offline.model_dir or self.paths.models_dir / self.asr.offline.model

    def default_vad_model(self) -> Path:
        """Where `assistant models fetch vad-silero` puts silero: used wherever a silero path is left null."""
        return self.paths.models_dir / "vad-silero" / "silero_vad.onnx"

    def gate_settings(self) -> GateSettings:
        """wake.gate, with the installed silero model filled in when kind silero leaves its path null."""
        gate = self.wake.gate
        if gate.kind == "silero" and gate.silero_model is None:
            return dataclasses.replace(gate, silero_model=self.default_vad_model())
        return gate

    def vad_settings(self) -> VadSettings:
        """The vad-offline engine's VAD; a segment is cut at asr.max_utterance_s, the daemon's own cap."""
        vad = self.asr.vad
        return VadSettings(
            model=vad.model or self.default_vad_model(),
            threshold=vad.threshold,
            min_silence_s=vad.min_silence_s,
            min_speech_s=vad.min_speech_s,
            max_speech_s=self.asr.max_utterance_s,
        )

    def mirror(self) -> str | None:
        """paths.mirror with a folder made absolute (URLs as written). The loader has already resolved a flag's
        or the environment's relative folder against the working directory, a written one against the config
        file's folder."""
        mirror = self.paths.mirror
        if not mirror or mirror.startswith(("http://", "https://")):
            return mirror or None
        return str(Path(mirror).expanduser().resolve())


@dataclass(frozen=True)
class _Override:
    """A value from the command line: its relative paths resolve against the working directory."""

    value: Any


class _Invalid(Exception):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{_clip(key)}: {message}")


def _clip(text: str, limit: int = QUOTE_CHARS) -> str:
    """`text` cut to `limit` characters with '…', so a huge key or value cannot make a huge error line."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = QUOTE_CHARS
_REPR.maxlevel = 3


def _describe(value: Any) -> str:
    # reprlib, not repr: it stops early, so a deep or wide value costs what it prints, not what it holds
    return _clip(_REPR.repr(value)) if not isinstance(value, dict) else "a mapping"


def _convert(tp: Any, value: Any, key: str, base: Path, limits: dict[str, float]) -> Any:
    if isinstance(value, _Override):
        return _convert(tp, value.value, key, Path.cwd(), limits)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None:
            if type(None) in options:
                return None
            raise _Invalid(key, "expected a value, got null")
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, key, base, limits)
            except _Invalid as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        names = " or ".join(_type_name(o) for o in options if o is not type(None))
        raise _Invalid(key, f"expected {names}, got {_describe(value)}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise _Invalid(key, f"expected a list, got {_describe(value)}")
        item = typing.get_args(tp)[0]
        return tuple(_convert(item, v, f"{key}[{i}]", base, limits) for i, v in enumerate(value))
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise _Invalid(key, f"expected one of {', '.join(map(str, choices))}, got {_describe(value)}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise _Invalid(key, f"expected a list, got {_describe(value)}")
        item = typing.get_args(tp)[0]
        return tuple(_convert(item, v, f"{key}[{i}]", base, limits) for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        if value is None:  # a section whose keys are all commented out
            return tp()
        if not isinstance(value, dict):
            raise _Invalid(key, f"expected a mapping of settings, got {_describe(value)}")
        return _build(tp, value, key, base)
    if tp is bool:
        if not isinstance(value, bool):
            raise _Invalid(key, f"expected true or false, got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(key, f"expected an integer{_limits_text(limits)}, got {_describe(value)}")
        _check_limits(value, key, limits, "an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Invalid(key, f"expected a number{_limits_text(limits)}, got {_describe(value)}")
        try:
            number = float(value)
        except OverflowError:  # an integer too large for a float
            number = math.inf
        # NaN passes no comparison and so every bound; inf overflowed later (int(inf) in a buffer size)
        if not math.isfinite(number):
            raise _Invalid(key, f"expected a finite number{_limits_text(limits)}, got {_describe(value)}")
        _check_limits(number, key, limits, "a number")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise _Invalid(key, f"expected a string, got {_describe(value)}")
        if limits.get("folder_or_url") and value and not value.startswith(("http://", "https://")):
            return str((base / Path(value).expanduser()).resolve())
        # A bare name (no folder, no suffix) is a packaged voice's name; anything else is a path, made absolute
        # without following links: a linked voice .onnx keeps its own .onnx.json beside the link.
        if limits.get("path_or_name") and value and ("/" in value or Path(value).suffix or value[0] in "~."):
            return os.path.abspath(base / Path(value).expanduser())
        return value
    if tp is Path:
        if not isinstance(value, str | Path) or str(value) == "":
            raise _Invalid(key, f"expected a path, got {_describe(value)}")
        path = Path(value).expanduser()
        return path if path.is_absolute() else (base / path).resolve()
    raise TypeError(f"settings type {tp!r} not handled")  # a programming error, not a user one


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", Path: "a path"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


_LIMIT_SIGNS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def _limits_text(limits: dict[str, float]) -> str:
    parts = []
    for name, sign in _LIMIT_SIGNS.items():
        if name in limits:
            bound = limits[name]
            parts.append(f"{sign} {bound}" if isinstance(bound, int) else f"{sign} {bound:g}")
    return (" " + " and ".join(parts)) if parts else ""


def _check_limits(value: float, key: str, limits: dict[str, float], what: str) -> None:
    ok = (
        ("gt" not in limits or value > limits["gt"])
        and ("ge" not in limits or value >= limits["ge"])
        and ("lt" not in limits or value < limits["lt"])
        and ("le" not in limits or value <= limits["le"])
    )
    if not ok:
        raise _Invalid(key, f"expected {what}{_limits_text(limits)}, got {_describe(value)}")


def _build(cls: type, raw: dict[str, Any], prefix: str, base: Path) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        if name not in fields:
            known = ", ".join(sorted(fields))
            raise _Invalid(key, f"unknown setting (known here: {known})")
        if dataclasses.is_dataclass(hints[name]) and isinstance(value, _Override):
            raise _Invalid(key, "a section cannot be overridden as a whole")
        if value is None and fields[name].metadata.get("env"):
            continue  # null: as if not written (the environment variable, then the default)
        kwargs[name] = _convert(hints[name], value, key, base, dict(fields[name].metadata))
    for name, spec in fields.items():
        if name in kwargs:
            continue
        env = spec.metadata.get("env")
        if env and os.environ.get(env):
            # Relative to the working directory, as for a command-line flag (and as `models fetch` reads it).
            kwargs[name] = _convert(hints[name], _Override(os.environ[env]), f"${env}", base, dict(spec.metadata))
            continue
        # Relative default paths (models/) follow the same rule as written ones, in unwritten sections too.
        if dataclasses.is_dataclass(hints[name]):
            kwargs[name] = _build(hints[name], {}, f"{prefix}.{name}" if prefix else name, base)
        elif isinstance(spec.default, Path) and not spec.default.is_absolute():
            kwargs[name] = (base / spec.default).resolve()
    return cls(**kwargs)


def _merge(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise _Invalid(dotted, f"{part} is not a section")
        node = child
    node[parts[-1]] = _Override(value)


def _check(settings: Settings) -> None:
    """Rules that involve more than one key, or more than a type and bounds."""
    if settings.audio.sample_rate != MODEL_RATE:
        # a config error (exit 3), not the audio error (exit 5, which systemd restarts) it became at the source
        raise _Invalid(
            "audio.sample_rate",
            f"only {MODEL_RATE} is supported (the models run at {MODEL_RATE} Hz; inputs of any rate are "
            f"converted), got {settings.audio.sample_rate}",
        )
    gate = settings.wake.gate
    if gate.close_db >= gate.open_db:
        raise _Invalid(
            "wake.gate.close_db",
            f"must be below wake.gate.open_db ({gate.open_db:g}) for the gate's hysteresis, got {gate.close_db:g}",
        )
    offline = settings.asr.offline
    if offline.kind == "sense_voice" and offline.language not in SENSE_VOICE_LANGUAGES:
        raise _Invalid(
            "asr.offline.language",
            f"sense_voice knows {', '.join(SENSE_VOICE_LANGUAGES)}, got {offline.language!r}",
        )


class _ConfigLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses aliases, duplicate keys and deep nesting (see the module docstring)."""

    _depth = 0

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:  # noqa: N803 - PyYAML's name
        # Checked in the scanner, before PyYAML's recursive composer: 50,000 '[' took seconds to fail there
        # (a RecursionError); a config has three levels of sections and short lists.
        if self.flow_level >= MAX_CONFIG_DEPTH:
            raise yaml.scanner.ScannerError(None, None, f"nested deeper than {MAX_CONFIG_DEPTH} levels",
                                            self.get_mark())  # fmt: skip
        super().fetch_flow_collection_start(TokenClass)

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"alias *{_clip(str(event.anchor), 40)} is not allowed in a config file (write the "
                "value out)", event.start_mark,
            )
        if self._depth >= MAX_CONFIG_DEPTH:  # block (indented) nesting
            raise yaml.composer.ComposerError(
                None, None, f"nested deeper than {MAX_CONFIG_DEPTH} levels", self.peek_event().start_mark
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<:` merges are allowed to be overridden
                key = self.construct_object(key_node, deep=True)
                try:
                    seen = first_line.get(key)
                except TypeError:
                    continue  # an unhashable key: SafeLoader's own error follows
                if seen is not None:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {_describe(key)} (first on line {seen})", key_node.start_mark
                    )
                first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)

    def construct_int(self, node: Any) -> Any:
        try:
            return self.construct_yaml_int(node)
        except ValueError as exc:  # Python refuses int() of more than 4300 digits
            raise yaml.constructor.ConstructorError(
                None, None, f"integer {_clip(str(node.value), 40)} cannot be read: {_clip(str(exc), 80)}",
                node.start_mark,
            ) from None


_ConfigLoader.add_constructor("tag:yaml.org,2002:int", _ConfigLoader.construct_int)


def read_text_file(path: Path, limit: int, what: str, missing_hint: str = "") -> str:
    """The UTF-8 text of a file the user names (config, keywords), read bounded so a FIFO or /dev/zero cannot
    hang or fill memory; a ConfigError that names the file and `what` it is otherwise."""
    try:
        with Path(path).open("rb") as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise ConfigError(f"{path}: {what} larger than {limit} bytes")
        return data.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found{missing_hint}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read {what}: {_clip(str(exc))}") from None


def _read_config(path: Path) -> Any:
    """The parsed YAML of `path` (bounded in size, strict about keys and aliases); ConfigError on any failure."""
    text = read_text_file(path, MAX_CONFIG_BYTES, "config file", " (omit --config to use the defaults)")
    try:
        return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{line} invalid YAML: {_clip(str(getattr(exc, 'problem', exc)))}") from None
    except RecursionError:  # second line behind MAX_CONFIG_DEPTH: PyYAML's composer recurses
        raise ConfigError(f"{path}: invalid YAML: nested too deeply") from None


def load_settings(path: Path | None, overrides: dict[str, Any] | None = None) -> Settings:
    """Read `path` (None or a missing default file: all defaults), apply dotted-key `overrides`, validate.

    Relative paths in the file resolve against the file's folder; overrides (command line) against the
    working directory. Raises ConfigError naming the file and the dotted key.
    """
    where = str(path) if path is not None else "command line"
    raw: Any = {}
    base = Path.cwd()
    if path is not None:
        raw = _read_config(path)
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at the top, got {_describe(raw)}")
        base = Path(path).resolve().parent
    try:
        for dotted, value in (overrides or {}).items():
            if value is not None:
                _merge(raw, dotted, value)
        settings = _build(Settings, raw, "", base)
        _check(settings)
    except _Invalid as exc:
        raise ConfigError(f"{where}: {exc}") from None
    settings = dataclasses.replace(settings, config_path=Path(path).resolve() if path is not None else None)
    log.debug("settings loaded from %s", where)
    return settings
