"""Which int8 weight form of an export to load on this CPU: the 8-bit blocks or per-tensor dynamic int8.

An export made with `--quant int8` carries both forms (model.json "forms"): the `MatMulNBits` 8-bit blocks,
fast where onnxruntime has an int8 dot-product kernel for them (x86 AVX-512 VNNI or AVX-VNNI, ARM dotprod),
and per-tensor `DynamicQuantizeMatMul`, faster elsewhere (an AVX2-only Zen 3 decoded 1.1-1.3x faster and
prefilled 2x faster with it; the Raspberry Pi 4's Cortex-A72 has no dotprod). Only the chosen file is opened.

The choice, in order: `llm.weights` when it names a usable form; a speed measurement that export recorded in
model.json ("speed") for this CPU (model name + the features that matter); else the feature rule. A form whose
export parity failed is never chosen.

CPU features come from /proc/cpuinfo, parsed here in a few lines: py-cpuinfo would add a dependency that
shells out (and is slow to import) for the same two fields. Other systems get the platform's name and no
features, so the rule falls back to the blocks (the accurate default of older exports), except on Apple
silicon, where every model has dotprod.

`llm.weights: hybrid` (opt-in, never chosen by auto) opens BOTH int8 forms: prompts of more than one token run
through the dynamic form (2x faster prefill where it was measured) and one-token decode steps through the blocks,
over one KV cache (assistant/llm/runtime.py). It costs a second copy of the weights in RSS (BENCHMARKS.md).
"""

from __future__ import annotations

import platform
import re
from dataclasses import dataclass, field
from pathlib import Path

from assistant.errors import ModelError

BLOCKS = "blocks"
DYNAMIC = "dynamic"
INT8_FORMS = (BLOCKS, DYNAMIC)  # order of preference when nothing else decides: blocks are the more accurate
HYBRID = "hybrid"  # both forms: dynamic for prompts, blocks for decode steps (opt-in: two models' RSS)
WEIGHTS_SETTINGS = ("auto", BLOCKS, DYNAMIC, HYBRID)  # llm.weights
FORM_QUANT = {BLOCKS: "int8-blocks", DYNAMIC: "int8-dynamic"}  # the export --quant that writes one form alone
# Features that decide the form (and key a measurement): the int8 dot products and the vector widths.
X86_FEATURES = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")
ARM_FEATURES = ("asimd", "asimddp", "i8mm", "sve", "neon")
X86_DOT = ("avx512_vnni", "avx_vnni")
ARM_DOT = ("asimddp",)
# "CPU part" of the ARM cores the Raspberry Pis use, for a readable name when cpuinfo has no "Model" line.
# A measured speed decides only when one form is at least this much faster: closer than that, a busy machine's
# noise could flip the choice from one export to the next, and the feature rule is as good a guess. Where the
# forms really differ they differ by more: on an AVX2-only Zen 3 the dynamic form's reply round was ~1.4x
# faster; on an AVX-512 VNNI EPYC the two were within 2-8% of each other (blocks decode faster, dynamic
# prefills faster), and a 5% margin let one busy export flip it to a 1.33x "win" for dynamic.
MEASURED_MARGIN = 1.15
ARM_PARTS = {"0xd03": "Cortex-A53", "0xd08": "Cortex-A72", "0xd0b": "Cortex-A76"}


@dataclass(frozen=True)
class CpuInfo:
    model: str  # "AMD EPYC 9654 96-Core Processor", "Raspberry Pi 4 Model B Rev 1.4", ...
    features: frozenset[str] = field(default_factory=frozenset)  # every flag cpuinfo lists

    @property
    def relevant(self) -> list[str]:
        return sorted(f for f in self.features if f in X86_FEATURES or f in ARM_FEATURES)

    @property
    def key(self) -> str:
        """What a measurement is recorded under: the same model name can come with different features (VMs)."""
        return f"{self.model} [{' '.join(self.relevant)}]"

    def dot_product(self) -> str | None:
        """The int8 dot-product feature the block kernel wants, if this CPU has one."""
        return next((f for f in (*X86_DOT, *ARM_DOT) if f in self.features), None)


def parse_cpuinfo(text: str) -> CpuInfo:
    """CpuInfo from the text of /proc/cpuinfo (x86: "model name", "flags"; ARM: "Model" or "CPU part", "Features").

    The first processor's entry is read: the cores of the machines this runs on are alike.
    """
    values: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        name = name.strip().lower()
        if sep and name and name not in values:
            values[name] = value.strip()
    features = frozenset((values.get("flags") or values.get("features") or "").split())
    model = values.get("model name") or values.get("model") or ""
    if not model or model.isdigit():  # x86 has a numeric "model" field as well
        part = values.get("cpu part", "")
        model = ARM_PARTS.get(part, f"CPU part {part}" if part else "") or values.get("hardware", "") or "unknown CPU"
    return CpuInfo(model=re.sub(r"\s+", " ", model), features=features)


def this_cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    try:
        return parse_cpuinfo(cpuinfo.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        pass  # not Linux (or no /proc): the platform's name, no features
    machine = platform.machine().lower()
    name = platform.processor() or machine or "unknown CPU"
    if platform.system() == "Darwin" and machine == "arm64":
        return CpuInfo(model=f"Apple {name}", features=frozenset({"asimd", "asimddp"}))
    return CpuInfo(model=name)


@dataclass(frozen=True)
class Form:
    """One weight form of an export (model.json "forms", or the single model.onnx of an older export)."""

    name: str  # "blocks", "dynamic", or the quantization of a single-form export ("int8", "int4", "fp32")
    file: str | None  # None: parity failed and the file was not kept
    passed: bool


@dataclass(frozen=True)
class Choice:
    form: Form  # the form that runs decode steps (and every step unless `prefill` is set)
    reason: str  # one clause for the load log line
    prefill: Form | None = None  # hybrid: the form that runs prompts of more than one token

    @property
    def name(self) -> str:
        return HYBRID if self.prefill is not None else self.form.name

    def loaded(self) -> tuple[Form, ...]:
        return (self.form,) if self.prefill is None else (self.form, self.prefill)


def forms_of(raw: dict, path: Path) -> dict[str, Form]:
    """The forms an export carries. model.json without "forms" (older, single-form exports): model.onnx alone,
    named after its weight format."""
    table = raw.get("forms")
    if table is None:
        quant = raw.get("quantization")
        operator = (raw.get("weights") or {}).get("operator") if isinstance(raw.get("weights"), dict) else None
        name = {"MatMulNBits": BLOCKS, "DynamicQuantizeMatMul": DYNAMIC}.get(operator) if quant == "int8" else None
        name = name or {"int8-dynamic": DYNAMIC, "int8-blocks": BLOCKS}.get(quant) or str(quant or "model")
        return {name: Form(name=name, file="model.onnx", passed=True)}
    if not isinstance(table, dict) or not table:
        raise ModelError(f"{path}: key 'forms' must be an object of form name -> {{file, passed}}; re-export")
    forms = {}
    for name, entry in table.items():
        if name not in INT8_FORMS or not isinstance(entry, dict):
            raise ModelError(f"{path}: key 'forms.{name}' is not a known weight form ({', '.join(INT8_FORMS)})")
        passed = entry.get("passed")
        file = entry.get("file")
        if not isinstance(passed, bool):
            raise ModelError(f"{path}: key 'forms.{name}.passed' must be true or false, got {passed!r}")
        if passed and not (isinstance(file, str) and file and "/" not in file and "\\" not in file):
            raise ModelError(f"{path}: key 'forms.{name}.file' must be a file name beside model.json")
        forms[name] = Form(name=name, file=file if passed else None, passed=passed)
    if not any(f.passed for f in forms.values()):
        raise ModelError(f"{path}: no weight form in 'forms' passed its parity check; re-export the model")
    return forms


def measured(raw: dict, cpu: CpuInfo) -> dict[str, float]:
    """{form: speed, higher is faster} that export measured on this CPU (model.json "speed"), or {}.

    The speed is 1 / "reply_ms" (a 64-token prefill and 32 decode steps: what a first sentence waits for), or
    the decode "tokens_per_s" of a record without it."""
    record = raw.get("speed", {}).get(cpu.key) if isinstance(raw.get("speed"), dict) else None
    if not isinstance(record, dict):
        return {}
    invert = isinstance(record.get("reply_ms"), dict)
    figures = record.get("reply_ms") if invert else record.get("tokens_per_s")
    if not isinstance(figures, dict):
        return {}
    numbers = {k: float(v) for k, v in figures.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    return {k: (1000 / v if invert else v) for k, v in numbers.items() if v > 0}


def choose(setting: str, forms: dict[str, Form], cpu: CpuInfo, rates: dict[str, float] | None = None) -> Choice:
    """The form to load under `llm.weights` = `setting`; never one that failed parity."""
    if setting not in WEIGHTS_SETTINGS:
        raise ModelError(f"llm.weights: expected one of {', '.join(WEIGHTS_SETTINGS)}, got {setting!r}")
    usable = {name: f for name, f in forms.items() if f.passed}
    failed = sorted(name for name, f in forms.items() if not f.passed)
    failed_note = f" ({', '.join(failed)} failed parity at export)" if failed else ""
    if len(usable) == 1:
        (form,) = usable.values()
        if setting != "auto" and setting != form.name:
            return Choice(form, f"llm.weights is {setting} but this export has only {form.name}{failed_note}")
        return Choice(form, f"the only form in this export{failed_note}")
    if setting == HYBRID:
        return Choice(usable[BLOCKS], f"{DYNAMIC} prefill, {BLOCKS} decode", prefill=usable[DYNAMIC])
    if setting != "auto":
        return Choice(usable[setting], f"llm.weights: {setting}")
    rates = {name: rate for name, rate in (rates or {}).items() if name in usable}
    close = ""
    if len(rates) == len(usable) >= 2:
        best, other = sorted(rates, key=rates.get, reverse=True)[:2]
        ratio = rates[best] / rates[other]
        if ratio >= MEASURED_MARGIN:
            return Choice(usable[best], f"measured at export on {cpu.key}: {best} {ratio:.2f}x faster")
        close = f"measured within {MEASURED_MARGIN - 1:.0%} of each other on this CPU; "
    dot = cpu.dot_product()
    if dot is not None:
        return Choice(usable[BLOCKS], f"auto: {close}{dot} present -> {BLOCKS}")
    if not cpu.features:
        return Choice(usable[BLOCKS], f"auto: {close}CPU features unknown on {cpu.model} -> {BLOCKS}")
    return Choice(usable[DYNAMIC], f"auto: {close}no int8 dot product (avx512_vnni/avx_vnni/asimddp) -> {DYNAMIC}")


def other_form_files(forms: dict[str, Form], choice: Choice) -> set[str]:
    """Files of the forms not loaded: neither checked nor opened (hybrid loads both, so none)."""
    loaded = {f.file for f in choice.loaded()}
    return {f.file for f in forms.values() if f.file and f.file not in loaded}
