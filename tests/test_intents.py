"""The intent layer on transcripts in each recognizer's output style: English UPPERCASE without punctuation
(the sherpa KWS model as ASR), Chinese characters (a real Chinese model), toned pinyin (the Chinese KWS model as
a stand-in recognizer, with and without spaces). Real hassil, real home-assistant-intents data, no mocks."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from assistant.errors import CONFIG
from assistant.intents.engine import IntentEngine
from assistant.intents.handlers import Context
from assistant.intents.loader import IntentFileError
from assistant.intents.timers import TimerBook
from assistant.settings import load_settings
from tests.conftest import REPO

NOW = dt.datetime(2027, 1, 15, 14, 5, 0).timestamp()  # a Friday, 2:05 PM local time


@pytest.fixture(scope="module")
def engine() -> IntentEngine:
    return IntentEngine(("en", "zh"))


def ask(engine: IntentEngine, text: str, book: TimerBook | None = None, now: float = NOW):
    return engine.answer(text, Context(now, book if book is not None else TimerBook(), "en"))


# (transcript, intent, text the reply must contain): one-shot intents, every style.
ONE_SHOT = [
    ("WHAT TIME IS IT", "HassGetCurrentTime", "2:05 PM"),
    ("what's the time", "HassGetCurrentTime", "2:05 PM"),
    ("现在几点", "HassGetCurrentTime", "下午2点05分"),
    ("现在几点了？", "HassGetCurrentTime", "下午2点05分"),
    ("xiàn zài jǐ diǎn", "HassGetCurrentTime", "下午2点05分"),
    ("xiànzàijǐdiǎn", "HassGetCurrentTime", "下午2点05分"),
    ("WHAT IS THE DATE TODAY", "HassGetCurrentDate", "Friday, January 15, 2027"),
    ("今天几号", "HassGetCurrentDate", "2027年1月15日，星期五"),
    ("jīn tiān jǐ hào", "HassGetCurrentDate", "2027年1月15日"),
    ("WHAT IS TWENTY FIVE PLUS SEVENTEEN", "EdgeArithmetic", "25 plus 17 is 42"),
    ("WHAT IS ONE HUNDRED DIVIDED BY FOUR", "EdgeArithmetic", "is 25"),
    ("what is 12 times 12", "EdgeArithmetic", "is 144"),
    ("WHAT IS SEVEN MINUS TEN", "EdgeArithmetic", "is -3"),
    ("二十五加十七等于多少", "EdgeArithmetic", "25加17等于42"),
    ("一百除以四", "EdgeArithmetic", "等于25"),
    ("25乘以4等于几", "EdgeArithmetic", "等于100"),
    ("èr shí wǔ jiā shí qī děng yú duō shǎo", "EdgeArithmetic", "等于42"),
    ("bāchéngyǐjiǔ", "EdgeArithmetic", "等于72"),
    ("CONVERT FIVE KILOMETERS TO MILES", "EdgeConvertUnit", "3.1069 miles"),
    ("HOW MANY FEET ARE IN TEN METERS", "EdgeConvertUnit", "32.8084 feet"),
    ("what is 100 degrees fahrenheit in celsius", "EdgeConvertUnit", "37.7778 degrees Celsius"),
    ("五公里等于多少英里", "EdgeConvertUnit", "3.1069英里"),
    ("三点五公斤是多少斤", "EdgeConvertUnit", "3.5公斤等于7斤"),
    ("wǔ gōng lǐ děng yú duō shǎo yīng lǐ", "EdgeConvertUnit", "3.1069英里"),
    ("WHAT DAY OF THE WEEK IS MARCH THIRD TWO THOUSAND TWENTY SEVEN", "EdgeWeekday", "Wednesday"),
    ("WHAT DAY IS IT", "EdgeWeekday", "Today is Friday"),
    ("WHAT DAY IS TOMORROW", "EdgeWeekday", "Tomorrow is Saturday"),
    ("二零二七年三月三号是星期几", "EdgeWeekday", "星期三"),
    ("明天星期几", "EdgeWeekday", "明天是星期六"),
    ("míng tiān xīng qī jǐ", "EdgeWeekday", "星期六"),
]


@pytest.mark.parametrize(("text", "intent", "expected"), ONE_SHOT)
def test_one_shot_intents_in_every_style(engine: IntentEngine, text: str, intent: str, expected: str) -> None:
    reply = ask(engine, text)
    assert reply is not None, f"no intent for {text!r}"
    assert reply.intent == intent
    assert expected in reply.text, reply.text


@pytest.mark.parametrize("text", [
    "ASK NOT WHAT YOUR COUNTRY CAN DO FOR YOU",  # the JFK clip: a question for the model
    "MISTER QUILTER IS THE APOSTLE OF THE MIDDLE CLASSES",
    "广州市房地产中介协会分析",
    "guǎngzhōushìfǎdìchǎnzhōngjiè",
    "中国最高的山是哪座？",
    "",
])
def test_everything_else_goes_to_the_model(engine: IntentEngine, text: str) -> None:
    assert ask(engine, text) is None


# The timer family, one conversation per style: start, status, pause, resume, add, remove, cancel, cancel all.
TIMER_FLOWS = {
    "en": [
        ("SET A TIMER FOR FIVE MINUTES", "HassStartTimer", "5 minutes"),
        ("HOW MUCH TIME IS LEFT ON MY TIMER", "HassTimerStatus", "4 minutes and 50 seconds left"),
        ("PAUSE THE TIMER", "HassPauseTimer", "4 minutes and 40 seconds left"),
        ("RESUME THE TIMER", "HassUnpauseTimer", "4 minutes and 40 seconds left"),
        ("ADD TWO MINUTES TO THE TIMER", "HassIncreaseTimer", "6 minutes and 30 seconds left"),
        ("REMOVE ONE MINUTE FROM THE TIMER", "HassDecreaseTimer", "5 minutes and 20 seconds left"),
        ("CANCEL THE TIMER", "HassCancelTimer", "cancelled"),
        ("CANCEL THE TIMER", "HassCancelTimer", "no timer"),
        ("SET A TIMER FOR TEN SECONDS", "HassStartTimer", "10 seconds"),
        ("CANCEL ALL TIMERS", "HassCancelAllTimers", "1 timer cancelled"),
    ],
    "zh": [
        ("设置五分钟的计时器", "HassStartTimer", "5分钟"),
        ("计时器还剩多少时间", "HassTimerStatus", "还剩4分钟50秒"),
        ("暂停计时器", "HassPauseTimer", "还剩4分钟40秒"),
        ("继续计时器", "HassUnpauseTimer", "还剩4分钟40秒"),
        ("计时器加两分钟", "HassIncreaseTimer", "还剩6分钟30秒"),
        ("计时器减一分钟", "HassDecreaseTimer", "还剩5分钟20秒"),
        ("取消计时器", "HassCancelTimer", "已取消"),
        ("取消计时器", "HassCancelTimer", "没有计时器"),
        ("设置十秒的计时器", "HassStartTimer", "10秒"),
        ("取消所有计时器", "HassCancelAllTimers", "已取消1个"),
    ],
    "pinyin": [
        ("shè zhì wǔ fēn zhōng de jì shí qì", "HassStartTimer", "5分钟"),
        ("jìshíqìháishèngduōshǎoshíjiān", "HassTimerStatus", "还剩4分钟50秒"),
        ("zàn tíng jì shí qì", "HassPauseTimer", "还剩4分钟40秒"),
        ("jì xù jì shí qì", "HassUnpauseTimer", "还剩4分钟40秒"),
        ("jì shí qì jiā liǎng fēn zhōng", "HassIncreaseTimer", "还剩6分钟30秒"),
        ("jì shí qì jiǎn yī fēn zhōng", "HassDecreaseTimer", "还剩5分钟20秒"),
        ("qǔ xiāo jì shí qì", "HassCancelTimer", "已取消"),
        ("qǔ xiāo jì shí qì", "HassCancelTimer", "没有计时器"),
        ("shè zhì shí miǎo de jì shí qì", "HassStartTimer", "10秒"),
        ("qǔ xiāo suǒ yǒu jì shí qì", "HassCancelAllTimers", "已取消1个"),
    ],
}


@pytest.mark.parametrize("style", sorted(TIMER_FLOWS))
def test_timer_family_in_every_style(engine: IntentEngine, style: str) -> None:
    book = TimerBook()
    now = NOW
    for text, intent, expected in TIMER_FLOWS[style]:
        reply = ask(engine, text, book, now)
        assert reply is not None and reply.intent == intent, (text, reply)
        assert expected in reply.text, (text, reply.text)
        now += 10  # ten seconds between commands
    assert book.all() == []


# Alarms at a clock time (own intent names: no Home Assistant intent sets an alarm).
ALARMS = [
    ("SET AN ALARM FOR SEVEN THIRTY AM", (7, 30), "7:30 AM tomorrow"),
    ("WAKE ME UP AT SIX FORTY FIVE PM", (18, 45), "6:45 PM"),
    ("set an alarm for half past three", (15, 30), "3:30 PM"),  # 2:05 PM now: the next 3:30 is today
    ("设置明天早上七点半的闹钟", (7, 30), "明天早上7点30分"),
    ("晚上八点叫醒我", (20, 0), "晚上8点"),
    ("shè zhì zǎo shàng liù diǎn de nào zhōng", (6, 0), "早上6点"),
]


@pytest.mark.parametrize(("text", "clock", "expected"), ALARMS)
def test_alarm_at_a_clock_time(engine: IntentEngine, text: str, clock: tuple[int, int], expected: str) -> None:
    book = TimerBook()
    reply = ask(engine, text, book)
    assert reply is not None and reply.intent == "EdgeSetAlarm", reply
    assert expected in reply.text, reply.text
    (alarm,) = book.all("alarm")
    due = dt.datetime.fromtimestamp(alarm.due)
    assert (due.hour, due.minute) == clock
    assert 0 < alarm.due - NOW <= 24 * 3600
    cancel = ask(engine, "取消闹钟" if any("\u4e00" <= c <= "\u9fff" or c in "āáǎàēéěèīíǐìōóǒòūúǔù" for c in text)
                 else "CANCEL MY ALARM", book)
    assert cancel is not None and cancel.intent == "EdgeCancelAlarm" and book.all() == []


def test_ask_without_the_daemon_does_not_keep_timers(engine: IntentEngine) -> None:
    book = TimerBook()
    reply = engine.answer("set a timer for 5 minutes", Context(NOW, book, "en", timers_live=False))
    assert reply is not None and reply.intent == "HassStartTimer" and "voice assistant" in reply.text
    assert book.all() == []


# -- the user's folder ----------------------------------------------------------------------------------------

GOOD_SENTENCES = """\
language: en
intents:
  WhoAreYou:
    data:
      - sentences:
          - "who are you"
          - "what is your name"
  HassStartTimer:
    data:
      - sentences:
          - "egg timer {timer_minutes:minutes} minute[s]"
"""
GOOD_RESPONSES = """\
language: en
responses:
  intents:
    WhoAreYou:
      default: "I am the edge assistant."
"""


def _custom(tmp_path: Path, files: dict[str, str]) -> Path:
    folder = tmp_path / "custom"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_custom_folder_adds_intents_and_phrasings(tmp_path: Path) -> None:
    folder = _custom(tmp_path, {"mine.yaml": GOOD_SENTENCES, "mine-responses.yaml": GOOD_RESPONSES})
    engine = IntentEngine(("en",), folder)
    reply = ask(engine, "WHO ARE YOU")
    assert reply is not None and (reply.intent, reply.text) == ("WhoAreYou", "I am the edge assistant.")
    book = TimerBook()
    reply = ask(engine, "EGG TIMER THREE MINUTES", book)
    assert reply is not None and reply.intent == "HassStartTimer" and book.all()[0].seconds == 180


BAD_FILES = [
    # (file name, text, expected start of the error: file:line)
    ("bad-template.yaml", GOOD_SENTENCES.replace('"what is your name"', '"what is (your name"'),
     "bad-template.yaml:7:"),
    ("unknown-list.yaml", GOOD_SENTENCES.replace('"who are you"', '"who are {people}"'), "unknown-list.yaml:6:"),
    ("bad-yaml.yaml", "language: en\nintents:\n  X: [unclosed\n", "bad-yaml.yaml:4:"),
    ("no-language.yaml", "intents: {}\n", "no-language.yaml:1:"),
]


@pytest.mark.parametrize(("name", "text", "where"), BAD_FILES)
def test_bad_sentence_files_name_file_and_line(tmp_path: Path, name: str, text: str, where: str) -> None:
    folder = _custom(tmp_path, {name: text, "r.yaml": GOOD_RESPONSES})
    with pytest.raises(IntentFileError) as error:
        IntentEngine(("en",), folder)
    assert str(error.value).startswith(str(folder / where)), str(error.value)


def test_bad_response_template_names_file_and_line(tmp_path: Path) -> None:
    bad = GOOD_RESPONSES.replace('"I am the edge assistant."', '"I am {{ slots.name "')
    folder = _custom(tmp_path, {"s.yaml": GOOD_SENTENCES, "r.yaml": bad})
    with pytest.raises(IntentFileError, match=r"r\.yaml:5: response WhoAreYou\.default"):
        IntentEngine(("en",), folder)


def test_intent_without_a_response_names_file_and_line(tmp_path: Path) -> None:
    folder = _custom(tmp_path, {"s.yaml": GOOD_SENTENCES})
    with pytest.raises(IntentFileError, match=r"s\.yaml:3: intent WhoAreYou has no handler and no response"):
        IntentEngine(("en",), folder)


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "assistant", *args], capture_output=True, text=True,
                          encoding="utf-8", timeout=120, cwd=cwd, env=env)


def test_bad_custom_file_stops_the_start_with_exit_3(tmp_path: Path) -> None:
    from speechdata.assets import KWS_EN
    from tests.conftest import require

    folder = _custom(tmp_path, {"s.yaml": GOOD_SENTENCES.replace('"who are you"', '"who are [you"'),
                                "r.yaml": GOOD_RESPONSES})
    (tmp_path / "kw.txt").write_text("FELLOW AMERICANS\n", encoding="utf-8")
    config = tmp_path / "config.yaml"
    config.write_text(f"wake:\n  keywords_file: kw.txt\n  model_dir: {require(KWS_EN)}\n"
                      f"intents:\n  custom_dir: {folder}\n", encoding="utf-8")
    result = _run("run", "--config", str(config), "--input", str(tmp_path / "none.wav"), cwd=tmp_path)
    assert result.returncode == CONFIG, result.stderr
    assert f"{folder / 's.yaml'}:6:" in result.stderr and "Traceback" not in result.stderr


def test_ask_json_answers_the_time_by_intent(tmp_path: Path) -> None:
    # No model folder exists here: the intent layer answers without loading the language model.
    result = _run("ask", "what time is it", "--json", "--model-dir", str(tmp_path / "no-model"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (reply,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert reply["event"] == "reply" and reply["intent"] == "HassGetCurrentTime"
    assert reply["text"].startswith("It's ")


def test_intents_settings(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("intents:\n  languages: [zh]\n  custom_dir: mine\npaths:\n  state_dir: state\n",
                      encoding="utf-8")
    settings = load_settings(config)
    assert settings.intents.languages == ("zh",)
    assert settings.intents.custom_dir == tmp_path / "mine"
    assert settings.state_dir() == tmp_path / "state"
    config.write_text("intents:\n  languages: [en, fr]\n", encoding="utf-8")
    with pytest.raises(Exception, match=r"intents\.languages\[1\]: expected one of en, zh"):
        load_settings(config)


def test_state_dir_from_systemd_then_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    assert load_settings(None).state_dir() == tmp_path / "a"
    monkeypatch.delenv("STATE_DIRECTORY")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert load_settings(None).state_dir() == tmp_path / ".local" / "state" / "edge-assistant"


def test_a_bad_file_fails_the_reload_so_the_old_intents_stay(tmp_path: Path) -> None:
    from assistant import pipeline
    from speechdata.assets import KWS_EN
    from tests.conftest import require

    (tmp_path / "kw.txt").write_text("FELLOW AMERICANS\n", encoding="utf-8")
    keys = {"wake.keywords_file": tmp_path / "kw.txt", "wake.model_dir": require(KWS_EN), "intents.languages": ["en"]}
    running = load_settings(None, keys)
    good = pipeline.build_reload(running, load_settings(None, {
        **keys, "intents.custom_dir": _custom(tmp_path, {"s.yaml": GOOD_SENTENCES, "r.yaml": GOOD_RESPONSES})}))
    assert good.intents is not None and ask(good.intents, "WHO ARE YOU").intent == "WhoAreYou"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "s.yaml").write_text(GOOD_SENTENCES.replace('"who are you"', '"who are [you"'), encoding="utf-8")
    with pytest.raises(IntentFileError, match=r"s\.yaml:6:"):
        pipeline.build_reload(running, load_settings(None, {**keys, "intents.custom_dir": bad}))
