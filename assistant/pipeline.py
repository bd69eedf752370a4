"""The one factory that turns settings into loaded components: used by `run`, `serve`-style callers, `ask`,
the tests and the benchmarks alike, so there is one way to build a wake word, a recognizer, a chat and a voice.

Each builder reads only its own settings section; a new engine is a new branch in its builder, behind the same
interface (wake.spotter.Spotter, the recognizers' start/accept/finish, llm.chat.Conversation, reply.speech).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assistant.audio.ring import AudioRing
from assistant.daemon import Daemon, Reloaded
from assistant.errors import ConfigError
from assistant.events import Event
from assistant.reply.sinks import Speech
from assistant.settings import DEMO_MODEL, Settings
from assistant.wake.spotter import KEYWORD_END_ERROR_S

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pipeline:
    """The loaded models, named as the daemon's constructor arguments.

    Built once at start (build_pipeline); a SIGHUP swaps only the wake word and the recognizer (build_reload).
    """

    wake: Any
    asr: Any
    chat: Any
    speech: Speech | None
    intents: Any = None  # intents.engine.IntentEngine, or None when intents.enabled is false
    timers: Any = None  # intents.timers.TimerBook saved in the state directory


def load_keyword_list(settings: Settings) -> list[Any]:
    """Parse the keywords file against the wake model's tokens (reads tokens.txt only, no model load)."""
    from assistant.models.files import find_transducer
    from assistant.wake.keywords import load_keywords, load_tokens

    if settings.wake.keywords_file is None:
        raise ConfigError("no keywords file: pass --keywords FILE or set wake.keywords_file in the config")
    files = find_transducer(settings.wake_model_dir(), settings.wake.model)
    return load_keywords(settings.wake.keywords_file, load_tokens(files.tokens, files.bpe_model))


def needs_echo_fallback(settings: Settings) -> bool:
    """Whether the daemon will speak with no echo canceller (live input): it speaks (tts.engine) and
    tts.echo_cancel is off or speexdsp is missing. The same test as Daemon._make_aec's, for the speech
    build_speech makes; the daemon checks what it really runs with (Daemon._fit_barge_in)."""
    from assistant.audio import aec

    return settings.tts.engine != "none" and not (settings.tts.echo_cancel and aec.available())


def build_wake(settings: Settings, keywords: list[Any], *, echo_fallback: bool | None = None) -> Any:
    """The wake word and, while a reply is live, its barge-in spotter. `echo_fallback` (None:
    needs_echo_fallback(settings)): no echo canceller will run, so the barge-in spotter's stop phrases get the
    raised wake.speaking_threshold (docs/echo-cancellation.md, the fallback)."""
    from assistant.models.files import find_transducer
    from assistant.wake.gate import gated
    from assistant.wake.keywords import load_tokens, stop_phrase_keywords
    from assistant.wake.spotter import WakeWord, barge_in_spotter, fallback_threshold

    files = find_transducer(settings.wake_model_dir(), settings.wake.model)
    stops = stop_phrase_keywords(settings.wake.stop_phrases, load_tokens(files.tokens, files.bpe_model))
    wake = WakeWord(
        files,
        keywords,
        keywords_score=settings.wake.keywords_score,
        keywords_threshold=settings.wake.keywords_threshold,
        num_threads=settings.wake.num_threads,
        stop_keywords=stops,
    )
    if echo_fallback is None:
        echo_fallback = needs_echo_fallback(settings)
    raised = fallback_threshold(settings.wake.speaking_threshold) if echo_fallback else None
    streams = settings.wake.barge_in_streams
    if streams or raised is not None:
        # barge_in_streams 0 is the wake word's own stream; with the raised thresholds it is one stream of a
        # spotter that has them (they are part of the loaded model's keyword graph).
        blanks = settings.wake.barge_in_trailing_blanks if streams else None
        wake.barge_in = barge_in_spotter(wake, streams or 1, blanks, raised)
    return gated(wake, settings.gate_settings())


def build_asr(settings: Settings) -> Any:
    """The recognizer for asr.engine (new engines are added here, behind the same start/accept/finish)."""
    asr = settings.asr
    if asr.engine == "vad-offline":
        from assistant.asr.vad_offline import VadOfflineASR, find_offline_model

        offline = asr.offline
        files = find_offline_model(settings.offline_model_dir(), kind=offline.kind, name=offline.model)
        return VadOfflineASR(
            files,
            settings.vad_settings(),
            language=offline.language,
            use_itn=offline.use_itn,
            num_threads=offline.num_threads,
            # The daemon starts listening pre_roll_s before the keyword's estimated end, which can be a few
            # hundred ms early: speech that ran from there and stopped within this is the keyword itself.
            keyword_tail_s=asr.pre_roll_s + KEYWORD_END_ERROR_S,
            first_partial_s=offline.first_partial_s,
        )
    from assistant.asr.streaming import StreamingASR
    from assistant.models.files import find_transducer

    files = find_transducer(settings.asr_model_dir(), settings.asr_model_name())
    return StreamingASR(
        files,
        rule1_min_trailing_silence=asr.endpoint.rule1_min_trailing_silence,
        rule2_min_trailing_silence=asr.endpoint.rule2_min_trailing_silence,
        rule3_min_utterance_length=asr.endpoint.rule3_min_utterance_length,
        decoding_method=asr.decoding_method,
        num_threads=asr.num_threads,
    )


def build_chat(settings: Settings) -> Any:
    from assistant.llm.chat import Conversation
    from assistant.llm.runtime import MiniMindOnnx
    from assistant.llm.tokenizer import DEFAULT_SYSTEM_PROMPT, Tokenizer

    llm = settings.llm
    model_dir = settings.llm_model_dir()
    if model_dir.name == DEMO_MODEL:
        log.warning(
            "answering with the demo model in %s (1.6M parameters, trained in minutes by "
            "`python -m training.recipes.demo`): for real answers install MiniMind2-Small "
            "(`assistant models fetch minimind2-small`, then `assistant-export ... --out %s`)",
            model_dir, settings.paths.models_dir / settings.llm.model,
        )
    model = MiniMindOnnx(
        model_dir,
        threads=llm.threads,
        max_context_tokens=llm.max_context_tokens,
        verify_sha256=llm.verify_sha256,
        weights=llm.weights,
    )
    tokenizer = Tokenizer.from_dir(model_dir)
    return Conversation(
        model,
        tokenizer,
        system_prompt=llm.system_prompt or DEFAULT_SYSTEM_PROMPT,
        max_context_tokens=llm.max_context_tokens,
        open_thinking=llm.open_thinking,
    )


def build_intents(settings: Settings, only_for: str | None = None) -> Any:
    """The intent layer tried before the language model (None when intents.enabled is false).

    `only_for`: one text (assistant ask): load only the templates its language and style need (a second
    instead of several on a Pi); None when that language is not enabled.
    Raises IntentFileError (a ConfigError: exit 3) naming file:line for a bad sentence or response file.
    """
    if not settings.intents.enabled:
        return None
    from assistant.intents.engine import IntentEngine

    languages, pinyin = settings.intents.languages, True
    if only_for is not None:
        from assistant.intents.normalize import detect_style

        style = detect_style(only_for)
        languages = tuple(lang for lang in languages if lang == ("en" if style == "en" else "zh"))
        pinyin = style == "pinyin"
        if not languages:
            return None
    return IntentEngine(languages, settings.intents.custom_dir, pinyin=pinyin)


def build_timers(settings: Settings) -> Any:
    """Timers and alarms, saved as <state dir>/timers.json (read at the daemon's start, written on change)."""
    from assistant.intents.timers import STATE_FILE, TimerBook

    return TimerBook(settings.state_dir() / STATE_FILE)


def build_speech(settings: Settings) -> Speech | None:
    from assistant.reply.tts import make_output, make_synthesizer

    synthesizer = make_synthesizer(settings.tts)
    if synthesizer is None:
        return None
    return Speech(synthesizer, make_output(settings.tts, realtime=settings.audio.realtime))


def build_pipeline(settings: Settings, keywords: list[Any], intents: Any = None) -> Pipeline:
    """`intents`: an engine built earlier (run builds it before the audio opens, so a bad file is exit 3)."""
    started = time.perf_counter()
    pipeline = Pipeline(
        wake=build_wake(settings, keywords),
        asr=build_asr(settings),
        chat=build_chat(settings),
        speech=build_speech(settings),
        intents=intents if intents is not None else build_intents(settings),
        timers=build_timers(settings),
    )
    if settings.asr.engine == "vad-offline":
        asr = f"{settings.offline_model_dir()} + VAD {settings.vad_settings().model}"
    else:
        asr = str(settings.asr_model_dir())
    log.info(
        "models loaded in %.0f ms (wake %s, asr %s %s, llm %s, tts %s)",
        (time.perf_counter() - started) * 1000,
        settings.wake_model_dir(),
        settings.asr.engine,
        asr,
        settings.llm_model_dir(),
        settings.tts.engine,
    )
    return pipeline


def build_daemon(settings: Settings, components: Pipeline, *, emit: Callable[[Event], None], executor: Executor,
                 notifier: Any = None, live: bool = False) -> Daemon:
    """The daemon over built components, with a ring of audio.ring_s seconds (`run`, the tests and bench/)."""
    return Daemon(
        settings,
        wake=components.wake,
        asr=components.asr,
        chat=components.chat,
        ring=AudioRing(settings.audio.ring_s),
        speech=components.speech,
        emit=emit,
        executor=executor,
        notifier=notifier,
        live=live,
        intents=getattr(components, "intents", None),
        timers=getattr(components, "timers", None),
    )


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if not dataclasses.is_dataclass(value):
        return {prefix: value}
    flat: dict[str, Any] = {}
    for f in dataclasses.fields(value):
        flat.update(_flatten(getattr(value, f.name), f"{prefix}.{f.name}" if prefix else f.name))
    return flat


# Settings a SIGHUP applies: the wake word and ASR are rebuilt, the reply reads these per utterance.
# Everything else (audio stream, LLM session, TTS voice, logging, watchdog) is set up once at start.
RELOADABLE = (
    "wake.",
    "asr.",
    "paths.models_dir",
    "llm.temperature",
    "llm.top_p",
    "llm.top_k",
    "llm.repetition_penalty",
    "llm.max_new_tokens",
    "llm.seed",
    "llm.greedy",
    "llm.follow_up_window_s",
    "tts.mute_tail_s",
    "intents.",
)


def describe_reload(old: Settings, new: Settings, keywords: list[Any]) -> str:
    """One line for the log: the keyword labels now active and every setting whose value changed.

    Changes a reload cannot apply are named too (and logged as a warning), so an edit never looks applied
    when it needs `systemctl restart`.
    """
    labels = list(dict.fromkeys(str(getattr(k, "label", k)) for k in keywords))
    before, after = _flatten(old), _flatten(new)
    changed = [key for key, value in after.items() if before.get(key) != value]
    live = [f"{key} {before.get(key)} -> {after[key]}" for key in changed if key.startswith(RELOADABLE)]
    later = [key for key in changed if not key.startswith(RELOADABLE)]
    if later:
        log.warning("reload: %s take effect only after a restart", ", ".join(later))
    text = f"keywords {new.wake.keywords_file} ({', '.join(labels)}); "
    text += f"changed: {', '.join(live)}" if live else "no setting changed"
    if later:
        text += f"; needs a restart: {', '.join(later)}"
    return text


def build_reload(running: Settings, fresh: Settings) -> Reloaded:
    """What a SIGHUP swaps in: new settings, wake word and recognizer (the audio settings stay as they run).

    Runs off the event loop; raises on a bad config or keywords file, and then nothing is swapped.
    """
    keywords = load_keyword_list(fresh)
    summary = describe_reload(running, fresh, keywords)
    # The audio stream stays open as it is: its settings (and the clock derived from them) too.
    fresh = dataclasses.replace(fresh, audio=running.audio)
    # The intent files are re-read too: a mistake in them fails the reload (the old intents and all timers
    # stay); the timers are not part of the engine and are never rebuilt. The voice and its echo canceller stay
    # as they run (tts.* needs a restart), so the barge-in spotter is built for the running ones.
    wake = build_wake(fresh, keywords, echo_fallback=needs_echo_fallback(running))
    return Reloaded(settings=fresh, wake=wake, asr=build_asr(fresh), summary=summary, intents=build_intents(fresh))


def build_shared(settings: Settings, keywords: list[Any] | None, pipeline: Pipeline | None) -> Any:
    """What the network servers share (servers.shared.Shared): the voice loop's loaded models under `run`, or,
    under `serve` (no microphone, pipeline None), the same models loaded here without an audio output.

    The servers fork per-client streams off these (chat.fork, asr.fork, wake.fork); nothing is loaded twice.
    A recognizer without fork() (vad-offline) is not served over the network.
    """
    from assistant.llm.sampling import sampling_from
    from assistant.reply.tts import EspeakTts, make_synthesizer
    from assistant.servers.shared import Shared, languages_of

    started = time.perf_counter()
    if pipeline is not None:
        wake, asr, chat = pipeline.wake, pipeline.asr, pipeline.chat
        voice = pipeline.speech.synthesizer if pipeline.speech is not None else None
        intents = pipeline.intents
    else:
        wake = build_wake(settings, keywords) if keywords else None
        asr = build_asr(settings)
        chat = build_chat(settings)
        voice = make_synthesizer(settings.tts)
        intents = build_intents(settings)
    voice_name = settings.tts.engine
    if voice is None:
        # tts.engine none means "do not speak replies aloud"; a client asking for speech still gets espeak-ng
        # when it is installed (the robotic voice every Debian/Raspberry Pi OS has).
        try:
            voice, voice_name = EspeakTts(settings.tts), "espeak"
        except Exception:  # noqa: BLE001 - not installed: no speech served
            voice, voice_name = None, "none"
    phrases: dict[str, str] = {}
    for kw in keywords or []:
        phrases.setdefault(str(getattr(kw, "label", kw)), str(getattr(kw, "phrase", kw)))
    shared = Shared(
        chat=chat,
        sampling=sampling_from(settings.llm),
        model_id=settings.llm_model_dir().name,
        asr=asr if hasattr(asr, "fork") else None,
        asr_name=settings.asr_model_dir().name if settings.asr.engine == "streaming" else settings.asr.offline.model,
        wake=wake if wake is not None and hasattr(wake, "fork") else None,
        wake_phrases=phrases,
        intents=intents,
        voice=voice,
        voice_name=voice_name,
        asr_languages=(languages_of(settings.asr.offline.model) if settings.asr.engine == "vad-offline"
                       else languages_of(settings.asr_model_dir().name)),
        wake_languages=languages_of(settings.wake_model_dir().name),
        # espeak voice names: en, en-us, cmn (Mandarin), yue...; sherpa voices: from the model's folder name.
        voice_languages=((("zh",) if settings.tts.voice.startswith(("cmn", "zh", "yue")) else
                          (settings.tts.voice.split("-")[0],)) if voice_name == "espeak"
                         else languages_of(Path(settings.tts.model or "").parent.name)),
    )
    if pipeline is None:
        log.info("server models loaded in %.0f ms (llm %s, asr %s, wake %s, voice %s)",
                 (time.perf_counter() - started) * 1000, shared.model_id, shared.asr_name,
                 ", ".join(phrases) or "none", voice_name)
    return shared
