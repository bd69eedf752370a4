"""A synthetic bilingual (English + Mandarin) instruction corpus with checkable answers.

Kinds: arithmetic, unit conversions, weekdays, a small facts table, questions about the assistant itself.
Every question has exactly one right answer string, so held-out accuracy is an exact match. The held-out split
is decided by a stable hash of the question's *content* (numbers, units, days) for the computed kinds, so the
model never saw those operands; facts and identity questions hold out *phrasings* (a template per language
is kept aside), because a fact cannot be answered without having seen it.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass

ASSISTANT_NAME_EN = "Edge Assistant"
ASSISTANT_NAME_ZH = "边缘助手"

WEEKDAYS_EN = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
WEEKDAYS_ZH = ("星期一", "星期二", "星期三", "星期四", "星期五", "星期六", "星期日")

# (English unit, Chinese unit, target English, target Chinese, factor)
UNITS = (
    ("kilometers", "千米", "meters", "米", 1000),
    ("meters", "米", "centimeters", "厘米", 100),
    ("kilograms", "千克", "grams", "克", 1000),
    ("hours", "小时", "minutes", "分钟", 60),
    ("minutes", "分钟", "seconds", "秒", 60),
    ("days", "天", "hours", "小时", 24),
    ("weeks", "周", "days", "天", 7),
)

# (subject en, subject zh, attribute en, attribute zh, answer en, answer zh)
FACTS = (
    ("France", "法国", "capital", "首都", "Paris", "巴黎"),
    ("China", "中国", "capital", "首都", "Beijing", "北京"),
    ("Japan", "日本", "capital", "首都", "Tokyo", "东京"),
    ("Germany", "德国", "capital", "首都", "Berlin", "柏林"),
    ("Italy", "意大利", "capital", "首都", "Rome", "罗马"),
    ("Spain", "西班牙", "capital", "首都", "Madrid", "马德里"),
    ("Russia", "俄罗斯", "capital", "首都", "Moscow", "莫斯科"),
    ("Egypt", "埃及", "capital", "首都", "Cairo", "开罗"),
    ("Canada", "加拿大", "capital", "首都", "Ottawa", "渥太华"),
    ("Australia", "澳大利亚", "capital", "首都", "Canberra", "堪培拉"),
    ("India", "印度", "capital", "首都", "New Delhi", "新德里"),
    ("Brazil", "巴西", "capital", "首都", "Brasilia", "巴西利亚"),
    ("Korea", "韩国", "capital", "首都", "Seoul", "首尔"),
    ("the United Kingdom", "英国", "capital", "首都", "London", "伦敦"),
    ("the United States", "美国", "capital", "首都", "Washington", "华盛顿"),
    ("water", "水", "boiling point", "沸点", "100 degrees Celsius", "100摄氏度"),
    ("water", "水", "freezing point", "冰点", "0 degrees Celsius", "0摄氏度"),
    ("a week", "一周", "number of days", "天数", "7", "7天"),
    ("a year", "一年", "number of months", "月数", "12", "12个月"),
    ("the Earth", "地球", "nearest star", "最近的恒星", "the Sun", "太阳"),
)

IDENTITY = (
    ("What is your name?", "你叫什么名字？"),
    ("Who are you?", "你是谁？"),
    ("Please introduce yourself.", "请介绍一下你自己。"),
    ("What should I call you?", "我该怎么称呼你？"),
)
IDENTITY_ANSWER = (
    f"I am {ASSISTANT_NAME_EN}, an offline voice assistant running on this device.",
    f"我是{ASSISTANT_NAME_ZH}，一个在本机离线运行的语音助手。",
)
IDENTITY_HELD_OUT = (("Tell me who you are.", "告诉我你是谁。"),)


@dataclass(frozen=True)
class QA:
    kind: str  # arithmetic | units | weekdays | facts | identity
    lang: str  # en | zh
    question: str
    answer: str
    held_out: bool

    def record(self) -> dict:
        return {
            "conversations": [
                {"role": "user", "content": self.question},
                {"role": "assistant", "content": self.answer},
            ]
        }


def _held_out(key: str, fraction: float) -> bool:
    """Stable across runs and Python versions (no hash randomisation)."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < fraction


def arithmetic(fraction: float) -> Iterator[QA]:
    for a in range(0, 50):
        for b in range(0, 50):
            held = _held_out(f"add {a} {b}", fraction)
            yield QA("arithmetic", "en", f"What is {a} + {b}?", f"{a} + {b} = {a + b}.", held)
            yield QA("arithmetic", "zh", f"{a}加{b}等于多少？", f"{a}加{b}等于{a + b}。", held)
            if a >= b:
                held = _held_out(f"sub {a} {b}", fraction)
                yield QA("arithmetic", "en", f"What is {a} - {b}?", f"{a} - {b} = {a - b}.", held)
                yield QA("arithmetic", "zh", f"{a}减{b}等于多少？", f"{a}减{b}等于{a - b}。", held)
    for a in range(1, 10):
        for b in range(1, 10):
            held = _held_out(f"mul {a} {b}", fraction)
            yield QA("arithmetic", "en", f"What is {a} times {b}?", f"{a} times {b} is {a * b}.", held)
            yield QA("arithmetic", "zh", f"{a}乘以{b}等于多少？", f"{a}乘以{b}等于{a * b}。", held)


def units(fraction: float) -> Iterator[QA]:
    for src_en, src_zh, dst_en, dst_zh, factor in UNITS:
        for n in range(1, 21):
            held = _held_out(f"unit {src_en} {n}", fraction)
            yield QA(
                "units",
                "en",
                f"How many {dst_en} are in {n} {src_en}?",
                f"{n} {src_en} is {n * factor} {dst_en}.",
                held,
            )
            yield QA(
                "units",
                "zh",
                f"{n}{src_zh}等于多少{dst_zh}？",
                f"{n}{src_zh}等于{n * factor}{dst_zh}。",
                held,
            )


def weekdays(fraction: float) -> Iterator[QA]:
    for d in range(7):
        yield QA(
            "weekdays",
            "en",
            f"What day comes after {WEEKDAYS_EN[d]}?",
            f"{WEEKDAYS_EN[(d + 1) % 7]} comes after {WEEKDAYS_EN[d]}.",
            False,
        )
        yield QA(
            "weekdays",
            "zh",
            f"{WEEKDAYS_ZH[d]}的下一天是星期几？",
            f"{WEEKDAYS_ZH[d]}的下一天是{WEEKDAYS_ZH[(d + 1) % 7]}。",
            False,
        )
        for n in range(1, 15):
            held = _held_out(f"day {d} {n}", fraction)
            target_en, target_zh = WEEKDAYS_EN[(d + n) % 7], WEEKDAYS_ZH[(d + n) % 7]
            yield QA(
                "weekdays",
                "en",
                f"If today is {WEEKDAYS_EN[d]}, what day is it in {n} days?",
                f"In {n} days it will be {target_en}.",
                held,
            )
            yield QA(
                "weekdays",
                "zh",
                f"如果今天是{WEEKDAYS_ZH[d]}，{n}天后是星期几？",
                f"{n}天后是{target_zh}。",
                held,
            )


def facts() -> Iterator[QA]:
    for subj_en, subj_zh, attr_en, attr_zh, ans_en, ans_zh in FACTS:
        answer_en = f"The {attr_en} of {subj_en} is {ans_en}."
        answer_zh = f"{subj_zh}的{attr_zh}是{ans_zh}。"
        for template in ("What is the {a} of {s}?", "Tell me the {a} of {s}.", "Do you know the {a} of {s}?"):
            yield QA("facts", "en", template.format(a=attr_en, s=subj_en), answer_en, False)
        for template in ("{s}的{a}是什么？", "告诉我{s}的{a}。", "你知道{s}的{a}吗？"):
            yield QA("facts", "zh", template.format(a=attr_zh, s=subj_zh), answer_zh, False)
        yield QA("facts", "en", f"Which is the {attr_en} of {subj_en}?", answer_en, True)
        yield QA("facts", "zh", f"请问{subj_zh}的{attr_zh}是哪个？", answer_zh, True)


def identity() -> Iterator[QA]:
    for questions, held in ((IDENTITY, False), (IDENTITY_HELD_OUT, True)):
        for en, zh in questions:
            yield QA("identity", "en", en, IDENTITY_ANSWER[0], held)
            yield QA("identity", "zh", zh, IDENTITY_ANSWER[1], held)


def build(held_out_fraction: float = 0.1) -> list[QA]:
    return [
        *arithmetic(held_out_fraction),
        *units(held_out_fraction),
        *weekdays(held_out_fraction),
        *facts(),
        *identity(),
    ]


def split(items: list[QA], *, seed: int = 0) -> tuple[list[QA], list[QA]]:
    """(train, held_out); the training list is shuffled, facts and identity repeated so they are not drowned."""
    train = [q for q in items if not q.held_out]
    rare = [q for q in train if q.kind in ("facts", "identity", "weekdays")]
    train = train + rare * 2
    random.Random(seed).shuffle(train)
    return train, [q for q in items if q.held_out]


def pretrain_texts(items: list[QA], *, per_doc: int = 6, seed: int = 0) -> list[dict]:
    """Plain-text documents of several Q/A lines each, for the pretraining stage."""
    rng = random.Random(seed)
    lines = [f"{q.question} {q.answer}" for q in items]
    rng.shuffle(lines)
    return [{"text": "\n".join(lines[i : i + per_doc])} for i in range(0, len(lines), per_doc)]
