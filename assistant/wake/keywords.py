"""Keywords files: plain phrases or pre-tokenized sherpa-onnx lines, converted to a KWS model's tokens.

Line syntax (the sherpa-onnx keywords-file syntax, plus plain phrases):

    小爱同学                       plain phrase; label defaults to the phrase
    HEY COMPUTER :1.5 #0.3 @HEY    plain phrase with boost, threshold and label
    x iǎo ài t óng x ué @小爱同学   already tokenized (tokens from the model's tokens.txt)
    # a comment                    '#' followed by a space (or alone) starts a comment; '#0.3' is a threshold

Plain Chinese becomes pinyin initials + tonal finals (pypinyin, strict=False as the upstream models were
trained), with third-tone-sandhi variants added as extra lines of the same label, because speakers say
水饺 as *shuí jiǎo* and the model only fires on what was said. Plain English becomes BPE pieces: with
sentencepiece and the model's `bpe.model` when both exist, else split from tokens.txt (see _encode_latin).

Bounds (a hostile or careless file must not stall the start or a SIGHUP reload): a line may hold at most
MAX_LINE_CHARS characters and encode to at most MAX_KEYWORD_TOKENS tokens, a file at most MAX_KEYWORD_LINES
keyword lines and MAX_FILE_BYTES, and a plain phrase yields at most MAX_SANDHI_VARIANTS variants, generated
lazily (the product of every segment's alternatives is never built: `'小米A' * 23` used to take 34 s and then
run out of memory). The worst line now costs ~10-25 ms, the worst file a few seconds (bench/inputs.py).
The suffixes are range-checked: a threshold in (0, 1), a boost in (0, MAX_BOOST]; sherpa-onnx takes any
number there, and a phrase with `#5` or `:-5` then never fires.

Why ~430 lines: plain text to tokens for two scripts (pinyin with tone sandhi, BPE) plus the file format and
its bounds; each part is short, and they are read together when a keyword line fails.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from assistant.errors import ConfigError
from assistant.settings import read_text_file

log = logging.getLogger(__name__)

WORD_START = "\u2581"  # sentencepiece's '▁', marks the first piece of a word
MAX_SANDHI_VARIANTS = 16  # variants kept per line (sandhi readings x BPE splits), the written one first
MAX_LINE_CHARS = 200  # a wake phrase is a few words; this bounds pypinyin and the O(n^2) BPE splits per line
MAX_KEYWORD_TOKENS = 128  # tokens in one encoded line (the longest upstream keyword has ~20)
MAX_KEYWORD_LINES = 100  # phrases per file: a spotter listening for more has more false wakes than wakes
MAX_FILE_BYTES = 1 << 20  # 1 MiB of keywords is thousands of phrases; more is a mistake (or an attack)
MAX_BOOST = 20.0  # boosting scores are ~0.5-5 in practice; above this every partial path looks like a keyword

_THIRD_TO_SECOND = str.maketrans("ǎěǐǒǔǚ", "áéíóúǘ")
_THIRD_TONE = set("ǎěǐǒǔǚ")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


@dataclass(frozen=True)
class Keyword:
    """One keyword line as sherpa-onnx sees it (a plain phrase may yield several: its sandhi variants)."""

    tokens: list[str]
    label: str
    boost: float | None
    """Per-keyword boosting score (`:2.0`); None = the spotter's keywords_score."""
    threshold: float | None
    """Per-keyword trigger threshold (`#0.6`); None = the spotter's keywords_threshold."""
    line_no: int
    source_line: str
    phrase: str = ""
    """The keyword as written, without its :boost/#threshold/@label suffixes."""


@dataclass(frozen=True)
class TokenTable:
    """The symbols of a model's tokens.txt, with what kind of units they are."""

    symbols: dict[str, int]
    path: Path
    bpe_model: Path | None = None
    _sp: object | None = field(default=None, compare=False, repr=False)

    @property
    def is_bpe(self) -> bool:
        return any(s.startswith(WORD_START) for s in self.symbols)

    @property
    def is_pinyin(self) -> bool:
        # Tonal finals (ǎo, ián ...) only occur in the initials+finals pinyin models.
        return any(any(ch in "āáǎàēéěèīíǐìōóǒòūúǔùǖǘǚǜ" for ch in s) for s in self.symbols)


def load_tokens(tokens_txt: Path, bpe_model: Path | None = None) -> TokenTable:
    """Read a sherpa-onnx tokens.txt (`symbol id` per line)."""
    tokens_txt = Path(tokens_txt)
    symbols: dict[str, int] = {}
    try:
        lines = tokens_txt.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read tokens file {tokens_txt}: {exc.strerror or exc}") from exc
    for raw in lines:
        parts = raw.rsplit(maxsplit=1)
        if len(parts) == 2 and parts[1].isdigit():
            symbols[parts[0]] = int(parts[1])
    if not symbols:
        raise ConfigError(f"tokens file {tokens_txt} has no `symbol id` lines")
    sp = None
    if bpe_model is not None and Path(bpe_model).is_file():
        try:
            import sentencepiece  # optional: exact BPE when the model ships bpe.model
        except ImportError:
            log.info("sentencepiece not installed: splitting English keywords from %s", tokens_txt)
        else:
            sp = sentencepiece.SentencePieceProcessor(model_file=str(bpe_model))
    return TokenTable(symbols=symbols, path=tokens_txt, bpe_model=bpe_model, _sp=sp)


class _LineError(Exception):
    """An encoding problem in one line; turned into a ConfigError naming file and line."""


def _is_cjk(ch: str) -> bool:
    return "CJK" in unicodedata.name(ch, "") or "\u3400" <= ch <= "\u9fff"


def _suffix_number(word: str) -> float:
    """The number of a `:boost` or `#threshold` suffix, range-checked (sherpa-onnx would take any float)."""
    kind = "boost" if word[0] == ":" else "threshold"
    if not _NUMBER.match(word[1:]):
        raise _LineError(f"{kind} suffix {word!r} is not a number")
    value = float(word[1:])  # finite unless it overflows (:1e400)
    if kind == "boost" and not (math.isfinite(value) and 0.0 < value <= MAX_BOOST):
        raise _LineError(f"boost suffix {word!r} out of range: expected a number in (0, {MAX_BOOST:g}]")
    if kind == "threshold" and not 0.0 < value < 1.0:
        raise _LineError(f"threshold suffix {word!r} out of range: expected a probability in (0, 1)")
    return value


def _split_suffixes(line: str) -> tuple[str, float | None, float | None, str | None]:
    """Peel `:boost`, `#threshold`, `@label` off the end of a line (in any order, as sherpa-onnx does).

    As in sherpa-onnx, every word starting with ':' or '#' (and more than that character) is a suffix, so
    `:abc` is a bad boost, not a phrase word; a lone ':' or '#' stays part of the phrase.
    """
    words = line.split()
    boost = threshold = None
    label = None
    body: list[str] = []
    for word in words:
        if word.startswith("@") and len(word) > 1:
            if label is not None:
                raise _LineError(f"two labels ({label!r} and {word[1:]!r})")
            label = word[1:]
        elif word.startswith(":") and len(word) > 1:
            boost = _suffix_number(word)
        elif word.startswith("#") and len(word) > 1:
            threshold = _suffix_number(word)
        else:
            if label is not None or boost is not None or threshold is not None:
                raise _LineError(f"{word!r} after the :boost/#threshold/@label suffixes")
            body.append(word)
    return " ".join(body), boost, threshold, label


def _greedy_split(word: str, table: TokenTable) -> list[str]:
    """Longest-match split of one upper-cased word over tokens.txt, '▁'-prefixed piece first."""
    pieces: list[str] = []
    rest = WORD_START + word
    while rest:
        for end in range(len(rest), 0, -1):
            if rest[:end] in table.symbols:
                pieces.append(rest[:end])
                rest = rest[end:]
                break
        else:
            if rest[0] == WORD_START:
                if WORD_START in table.symbols:
                    pieces.append(WORD_START)
                rest = rest[1:]
                continue
            raise _LineError(f"character {rest[0]!r} has no token in {table.path}")
    return pieces


def _rank_merge(word: str, table: TokenTable) -> list[str]:
    """Split one word by replaying BPE merges: merge the adjacent pair whose union has the lowest id.

    sentencepiece lists BPE pieces roughly in merge order, so this follows the real encoder where tokens.txt
    still holds the intermediate pieces (GOSPEL -> ▁GO S P EL, as the model emits it, where the greedy split
    gives ▁GO S PE L); where the vocabulary was trimmed it stops early (WORLD -> ▁W OR L D, not ▁WORLD).
    """
    pieces = [WORD_START + word[0], *word[1:]]
    if pieces[0] not in table.symbols:
        pieces = [WORD_START, *word] if WORD_START in table.symbols else list(word)
    while len(pieces) > 1:
        best_rank, best_i = None, -1
        for i in range(len(pieces) - 1):
            rank = table.symbols.get(pieces[i] + pieces[i + 1])
            if rank is not None and (best_rank is None or rank < best_rank):
                best_rank, best_i = rank, i
        if best_rank is None:
            break
        pieces[best_i : best_i + 2] = [pieces[best_i] + pieces[best_i + 1]]
    return pieces


def _encode_latin(words: list[str], table: TokenTable) -> list[list[str]]:
    """Alternative token sequences for Latin-script words (more than one only without bpe.model)."""
    text = " ".join(words).upper()
    if table._sp is not None:
        return [list(table._sp.encode(text, out_type=str))]  # type: ignore[attr-defined]
    if table.is_bpe:
        # Without bpe.model neither split is always the model's own: the greedy one matches the upstream
        # keyword lists best (HELLO WORLD, FELLOW AMERICANS), the merge replay catches the rest (GOSPEL,
        # SIRI). Both go in as variants of the same label, like the sandhi variants.
        greedy = [p for w in text.split() for p in _greedy_split(w, table)]
        merged = [p for w in text.split() for p in _rank_merge(w, table)]
        return [greedy] if merged == greedy else [greedy, merged]
    # char/word-level vocabularies: whole word if present, else letters
    out: list[str] = []
    for w in text.split():
        out.extend([w] if w in table.symbols else list(w))
    return [out]


def _pinyin_syllables(text: str) -> list[tuple[str, str]]:
    from pypinyin import Style, lazy_pinyin

    initials = lazy_pinyin(text, style=Style.INITIALS, strict=False)
    finals = lazy_pinyin(text, style=Style.FINALS_TONE, strict=False)
    if len(initials) != len(finals) or len(finals) != len(text):
        raise _LineError(f"pypinyin could not split {text!r} into one syllable per character")
    return list(zip(initials, finals, strict=True))


def _sandhi_variants(finals: list[str]) -> list[list[str]]:
    """All readings of a syllable sequence under third-tone sandhi, the written one first.

    In a run of consecutive third tones every syllable but the last may be said as second tone; which ones
    depends on phrasing (小米小米 may be xiáo mǐ xiáo mǐ or xiáo mí xiáo mǐ), so each choice is a variant.
    """
    third = [any(ch in _THIRD_TONE for ch in f) for f in finals]
    flexible: list[int] = []
    for i in range(len(finals) - 1):
        if third[i] and third[i + 1]:
            flexible.append(i)
    variants: list[list[str]] = []
    for choice in itertools.product((False, True), repeat=len(flexible)):
        variant = list(finals)
        for i, change in zip(flexible, choice, strict=True):
            if change:
                variant[i] = variant[i].translate(_THIRD_TO_SECOND)
        variants.append(variant)
        if len(variants) >= MAX_SANDHI_VARIANTS:
            break
    return variants


def _encode_plain(phrase: str, table: TokenTable) -> list[list[str]]:
    """Token sequences (variants) for a plain phrase; each segment CJK or Latin is encoded on its own."""
    segments: list[tuple[bool, str]] = []
    for ch in phrase:
        cjk = _is_cjk(ch)
        if ch.isspace():
            segments.append((False, " "))
        elif segments and segments[-1][0] == cjk:
            segments[-1] = (cjk, segments[-1][1] + ch)
        else:
            segments.append((cjk, ch))
    # per segment, a list of alternative token lists
    parts: list[list[list[str]]] = []
    latin: list[str] = []

    def flush_latin() -> None:
        if latin:
            words = " ".join(latin).split()
            if words:
                parts.append(_encode_latin(words, table))
            latin.clear()

    for cjk, text in segments:
        if not cjk:
            latin.append(text)
            continue
        flush_latin()
        if table.is_pinyin:
            syllables = _pinyin_syllables(text)
            alternatives = []
            for finals in _sandhi_variants([f for _, f in syllables]):
                tokens: list[str] = []
                for (initial, _), final in zip(syllables, finals, strict=True):
                    tokens.extend([initial, final] if initial else [final])
                alternatives.append(tokens)
            parts.append(alternatives)
        else:
            parts.append([list(text)])  # character-level Chinese models
    flush_latin()
    # Lazily: product() only walks its inputs (each at most MAX_SANDHI_VARIANTS long), so taking the first
    # combinations costs the same for 2 segments or 46; building them all first was exponential in segments.
    combos = itertools.islice(itertools.product(*parts), MAX_SANDHI_VARIANTS)
    return [list(itertools.chain.from_iterable(combo)) for combo in combos]


def _looks_tokenized(body: str, table: TokenTable) -> bool:
    """Whether a line is already tokens; then unknown words are reported as unknown tokens."""
    if table.is_bpe:
        # plain English (HELLO) never contains '▁'; a sherpa BPE line always does
        return WORD_START in body
    if any(_is_cjk(ch) for ch in body):
        return all(w in table.symbols for w in body.split())  # a char-level line: 小 爱 同 学
    return True  # pinyin/char models: a line without Chinese can only be tokens (x iǎo ài ...)


def _check_tokens(tokens: list[str], table: TokenTable) -> None:
    if len(tokens) > MAX_KEYWORD_TOKENS:
        raise _LineError(f"{len(tokens)} tokens, more than {MAX_KEYWORD_TOKENS} (a wake phrase is a few words)")
    for tok in tokens:
        if tok not in table.symbols:
            raise _LineError(f"unknown token {tok!r} (not in {table.path})")


def parse_keywords(text: str, table: TokenTable, *, source: str = "<keywords>") -> list[Keyword]:
    """Parse keywords-file text into Keyword entries encoded for `table`'s model.

    Raises ConfigError naming `source`, the line number, the line and the token or character that cannot be
    encoded; nothing is silently dropped.
    """
    keywords: list[Keyword] = []
    lines_used = 0
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip().lstrip("\ufeff")
        if not line:
            continue
        if line.startswith("#"):
            rest = line[1:]
            if not rest or rest[0].isspace() or not _NUMBER.match(rest.split()[0]):
                continue  # '# comment' or '#comment'; '#0.3 ...' falls through and fails as a bare threshold
        lines_used += 1
        if lines_used > MAX_KEYWORD_LINES:
            raise ConfigError(f"{source}:{line_no}: more than {MAX_KEYWORD_LINES} keyword lines in one file")
        try:
            if len(line) > MAX_LINE_CHARS:
                raise _LineError(f"{len(line)} characters, more than {MAX_LINE_CHARS} (a wake phrase is a few words)")
            body, boost, threshold, label = _split_suffixes(line)
            if not body:
                raise _LineError("no keyword before the :boost/#threshold/@label suffixes")
            if _looks_tokenized(body, table):
                sequences = [body.split()]
            else:
                sequences = _encode_plain(body, table)
            for tokens in sequences:
                _check_tokens(tokens, table)
        except _LineError as exc:
            raise ConfigError(f"{source}:{line_no}: cannot encode {_quote(line)}: {exc}") from None
        for tokens in sequences:
            keywords.append(
                Keyword(tokens=tokens, label=label or body, boost=boost, threshold=threshold,
                        line_no=line_no, source_line=raw, phrase=body)
            )
        if len(sequences) > 1:
            log.debug("%s:%d: %s -> %d variants", source, line_no, body, len(sequences))
    return keywords


def _quote(line: str, limit: int = 80) -> str:
    """repr of a line for an error message, cut so that a megabyte line gives a readable one-line error."""
    return repr(line) if len(line) <= limit else repr(line[:limit]) + f"… ({len(line)} characters)"


def load_keywords(path: Path, table: TokenTable) -> list[Keyword]:
    """Read and encode a keywords file; an empty file (no keywords) is a ConfigError."""
    path = Path(path)
    text = read_text_file(path, MAX_FILE_BYTES, "keywords file")
    keywords = parse_keywords(text, table, source=str(path))
    if not keywords:
        raise ConfigError(f"keywords file {path} has no keywords (only blank or comment lines)")
    log.info("keywords %s: %d lines -> %d keyword sequences", path, len({k.line_no for k in keywords}),
             len(keywords))
    return keywords


def sherpa_tag(label: str) -> str:
    """The `@tag` written for a label: sherpa-onnx splits lines on whitespace, so spaces become '_'."""
    return "_".join(label.split())


def format_keywords(keywords: list[Keyword]) -> str:
    """The sherpa-onnx keywords-file text (`tok tok :boost #threshold @tag` per line) for KeywordSpotter."""
    lines = []
    for kw in keywords:
        parts = list(kw.tokens)
        if kw.boost is not None:
            parts.append(f":{kw.boost:g}")
        if kw.threshold is not None:
            parts.append(f"#{kw.threshold:g}")
        parts.append("@" + sherpa_tag(kw.label))
        lines.append(" ".join(parts))
    return "\n".join(lines) + "\n"


# Stop phrases shipped by default, per kind of wake model (wake.stop_phrases: null). Chosen by false alarms
# on speech that does not contain them (bench/stop_phrases.py, BENCHMARKS.md "Stop phrases").
# English: STOP, STOP TALKING and NEVER MIND had no false alarm in 1.0 min of real speech and 2.6 min of
# espeak-ng answers, and espeak-ng saying them alone fires them (BE QUIET, STOP IT and QUIET PLEASE did not
# fire; SHUT UP, CANCEL and THAT'S ENOUGH each fired once on the answers). Chinese: 停下, 停一下 and 别说了 had
# no false alarm in 0.9 min of real speech and 13.3 min of espeak-ng answers (安静 3, 停止 1); espeak-ng's
# Mandarin fires none of the candidates, so their recall is unmeasured here.
DEFAULT_STOP_PHRASES: dict[str, tuple[str, ...]] = {
    "latin": ("STOP", "STOP TALKING", "NEVER MIND"),
    "pinyin": ("停下", "停一下", "别说了"),
}
STOP_SOURCE = "wake.stop_phrases"


def stop_phrase_keywords(phrases: tuple[str, ...] | None, table: TokenTable) -> list[Keyword]:
    """The stop phrases encoded for `table`'s model; None = the defaults for its language.

    A configured phrase that cannot be encoded is a ConfigError naming `wake.stop_phrases` and its position
    (line N = item N); a default that the model cannot spell (a bilingual model, say) is left out and logged.
    """
    if phrases is not None:
        return parse_keywords("\n".join(phrases), table, source=STOP_SOURCE)
    keywords: list[Keyword] = []
    for kind, defaults in DEFAULT_STOP_PHRASES.items():
        if kind == "pinyin" and not table.is_pinyin:
            continue
        for phrase in defaults:
            try:
                keywords += parse_keywords(phrase, table, source=STOP_SOURCE)
            except ConfigError as exc:
                log.debug("default stop phrase left out: %s", exc)
    return keywords
