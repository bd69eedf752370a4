"""The int8 weight form per CPU: /proc/cpuinfo parsing, the choice rule, model.json "forms" and "speed", and
that the runtime opens only the chosen form (assistant/llm/weights.py, export/forms.py)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import onnxruntime as ort
import pytest

from assistant.errors import ConfigError, ModelError
from assistant.llm import runtime
from assistant.llm.runtime import MiniMindOnnx
from assistant.llm.sampling import Sampling
from assistant.llm.weights import Form, choose, forms_of, parse_cpuinfo, this_cpu
from assistant.settings import load_settings

# First processor entries of real /proc/cpuinfo files (trimmed to one core; flags lists as the kernel prints them).
ZEN4_VNNI = """processor	: 0
vendor_id	: AuthenticAMD
cpu family	: 25
model		: 17
model name	: AMD EPYC 9R14 96-Core Processor
stepping	: 1
flags		: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht \
syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl nonstop_tsc cpuid extd_apicid aperfmperf \
tsc_known_freq pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand \
hypervisor lahf_lm cmp_legacy cr8_legacy abm sse4a misalignsse 3dnowprefetch topoext perfctr_core invpcid_single \
ssbd ibrs ibpb stibp vmmcall fsgsbase bmi1 avx2 smep bmi2 erms invpcid avx512f avx512dq rdseed adx smap \
avx512ifma clflushopt clwb avx512cd sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves avx512_bf16 clzero \
xsaveerptr rdpru wbnoinvd arat avx512vbmi pku ospke avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg \
avx512_vpopcntdq rdpid flush_l1d
bogomips	: 5200.00
"""
ZEN3_NO_VNNI = """processor	: 0
vendor_id	: AuthenticAMD
cpu family	: 25
model		: 1
model name	: AMD EPYC 7B13
stepping	: 0
flags		: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht \
syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl nonstop_tsc cpuid extd_apicid tsc_known_freq \
pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand hypervisor lahf_lm \
cmp_legacy cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw topoext invpcid_single ssbd ibrs ibpb stibp vmmcall \
fsgsbase bmi1 avx2 smep bmi2 erms invpcid rdseed adx smap clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 xsaves \
clzero xsaveerptr rdpru arat npt nrip_save umip vaes vpclmulqdq rdpid fsrm
bogomips	: 4899.99
"""
ALDER_LAKE_AVX_VNNI = """processor	: 0
vendor_id	: GenuineIntel
cpu family	: 6
model		: 154
model name	: 12th Gen Intel(R) Core(TM) i7-1260P
flags		: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush dts acpi mmx fxsr sse \
sse2 ss ht tm pbe syscall nx pdpe1gb rdtscp lm constant_tsc art arch_perfmon pebs bts rep_good nopl xtopology \
nonstop_tsc cpuid aperfmperf tsc_known_freq pni pclmulqdq dtes64 monitor ds_cpl vmx est tm2 ssse3 sdbg fma cx16 \
xtpr pdcm sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand lahf_lm abm \
3dnowprefetch fsgsbase tsc_adjust bmi1 avx2 smep bmi2 erms invpcid rdseed adx smap clflushopt clwb intel_pt \
sha_ni xsaveopt xsavec xgetbv1 xsaves avx_vnni dtherm ida arat pln pts hwp gfni vaes vpclmulqdq rdpid movdiri \
movdir64b fsrm md_clear serialize arch_lbr flush_l1d arch_capabilities
"""
PI4_AARCH64 = """processor	: 0
BogoMIPS	: 108.00
Features	: fp asimd evtstrm crc32 cpuid
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x0
CPU part	: 0xd08
CPU revision	: 3

processor	: 1
BogoMIPS	: 108.00
Features	: fp asimd evtstrm crc32 cpuid
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x0
CPU part	: 0xd08
CPU revision	: 3

Revision	: c03114
Serial		: 100000002a5b3c4d
Model		: Raspberry Pi 4 Model B Rev 1.4
"""
PI5_AARCH64 = """processor	: 0
BogoMIPS	: 108.00
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x4
CPU part	: 0xd0b
CPU revision	: 1

Revision	: d04170
Serial		: 3e8f1a2b4c5d6e7f
Model		: Raspberry Pi 5 Model B Rev 1.0
"""
PI4_AARCH64_NO_MODEL_LINE = PI4_AARCH64.split("Revision")[0]  # a container's view: no board lines

TWO_FORMS = {"blocks": Form("blocks", "model.onnx", True), "dynamic": Form("dynamic", "model.int8-dynamic.onnx", True)}
GREEDY = Sampling(greedy=True, max_new_tokens=6)


@pytest.mark.parametrize(
    ("text", "model", "dot", "form"),
    [
        (ZEN4_VNNI, "AMD EPYC 9R14 96-Core Processor", "avx512_vnni", "blocks"),
        (ZEN3_NO_VNNI, "AMD EPYC 7B13", None, "dynamic"),
        (ALDER_LAKE_AVX_VNNI, "12th Gen Intel(R) Core(TM) i7-1260P", "avx_vnni", "blocks"),
        (PI4_AARCH64, "Raspberry Pi 4 Model B Rev 1.4", None, "dynamic"),
        (PI5_AARCH64, "Raspberry Pi 5 Model B Rev 1.0", "asimddp", "blocks"),
        (PI4_AARCH64_NO_MODEL_LINE, "Cortex-A72", None, "dynamic"),
    ],
)
def test_feature_rule_from_cpuinfo(text: str, model: str, dot: str | None, form: str) -> None:
    cpu = parse_cpuinfo(text)
    assert cpu.model == model
    assert cpu.dot_product() == dot
    assert model in cpu.key
    choice = choose("auto", TWO_FORMS, cpu)
    assert choice.form.name == form
    if dot:
        assert choice.reason == f"auto: {dot} present -> blocks"
    else:
        assert "no int8 dot product" in choice.reason


def test_x86_key_lists_only_the_features_that_matter() -> None:
    assert parse_cpuinfo(ZEN3_NO_VNNI).key == "AMD EPYC 7B13 [avx2 fma]"
    assert parse_cpuinfo(PI4_AARCH64).key == "Raspberry Pi 4 Model B Rev 1.4 [asimd]"


def test_this_machine_is_read() -> None:
    cpu = this_cpu()
    assert cpu.model
    if Path("/proc/cpuinfo").is_file():
        assert cpu.features  # Linux lists flags (x86) or Features (ARM)


def test_override_and_measurement_rules() -> None:
    zen4 = parse_cpuinfo(ZEN4_VNNI)
    assert choose("dynamic", TWO_FORMS, zen4).form.name == "dynamic"
    assert choose("blocks", TWO_FORMS, parse_cpuinfo(PI4_AARCH64)).reason == "llm.weights: blocks"
    measured = choose("auto", TWO_FORMS, zen4, {"blocks": 600.0, "dynamic": 800.0})
    assert measured.form.name == "dynamic"
    assert measured.reason == f"measured at export on {zen4.key}: dynamic 1.33x faster"
    # Within the margin a measurement is noise: the feature rule decides.
    close = choose("auto", TWO_FORMS, zen4, {"blocks": 800.0, "dynamic": 810.0})
    assert close.form.name == "blocks" and "within 15%" in close.reason


def test_parity_failed_form_never_chosen() -> None:
    forms = {"blocks": Form("blocks", "model.onnx", True), "dynamic": Form("dynamic", None, False)}
    zen3 = parse_cpuinfo(ZEN3_NO_VNNI)  # the rule alone would pick dynamic here
    for setting in ("auto", "dynamic", "blocks"):
        choice = choose(setting, forms, zen3, {"dynamic": 1000.0, "blocks": 10.0})
        assert choice.form.name == "blocks"
        assert "dynamic failed parity" in choice.reason
    with pytest.raises(ModelError, match="llm.weights"):
        choose("fastest", forms, zen3)


def test_forms_of_rejects_bad_entries(tmp_path: Path) -> None:
    path = tmp_path / "model.json"
    with pytest.raises(ModelError, match=r"forms\.int3"):
        forms_of({"forms": {"int3": {"file": "x.onnx", "passed": True}}}, path)
    with pytest.raises(ModelError, match=r"forms\.blocks\.file"):
        forms_of({"forms": {"blocks": {"file": "../x.onnx", "passed": True}}}, path)
    with pytest.raises(ModelError, match="no weight form"):
        forms_of({"forms": {"blocks": {"file": None, "passed": False}}}, path)
    # An export from before "forms": its model.onnx, named after its weight format.
    assert forms_of({"quantization": "int8", "weights": {"operator": "MatMulNBits"}}, path) == {
        "blocks": Form("blocks", "model.onnx", True)
    }
    assert list(forms_of({"quantization": "int4"}, path)) == ["int4"]


# --- real exports (tests/conftest.py's tiny_dirs: dense-tiny weights, `requantize --quant int8`) ---


def test_export_writes_both_forms(tiny_dirs: dict[str, Path]) -> None:
    from assistant.models.fetch import sha256_file

    directory = tiny_dirs["int8"]
    manifest = json.loads((directory / "model.json").read_text())
    forms = manifest["forms"]
    assert {name: entry["file"] for name, entry in forms.items()} == {
        "blocks": "model.onnx",
        "dynamic": "model.int8-dynamic.onnx",
    }
    for entry in forms.values():
        assert entry["passed"] is True
        assert entry["sha256"] == sha256_file(directory / entry["file"]) == manifest["files"][entry["file"]]["sha256"]
        figures = manifest["parity"][entry["parity"]]
        assert figures["top1_agreement_confident"] >= figures["min_top1"]
    assert forms["blocks"]["weights"]["operator"] == "MatMulNBits"
    assert forms["dynamic"]["weights"]["operator"] == "DynamicQuantizeMatMul"
    assert manifest["weights"] == forms["blocks"]["weights"]  # "weights" describes model.onnx, as before
    (key, record), *_ = manifest["speed"].items()
    assert key == this_cpu().key
    assert set(record["tokens_per_s"]) == {"blocks", "dynamic"} and record["faster"] in ("blocks", "dynamic")


def two_form_copy(tiny_dirs: dict[str, Path], tmp_path: Path) -> Path:
    directory = tmp_path / "int8"
    shutil.copytree(tiny_dirs["int8"], directory)
    return directory


def edit_manifest(directory: Path, **changes) -> None:
    manifest = json.loads((directory / "model.json").read_text())
    manifest.update(changes)
    (directory / "model.json").write_text(json.dumps(manifest))


def test_only_the_chosen_form_is_opened(tiny_dirs, tmp_path, monkeypatch, caplog) -> None:
    directory = two_form_copy(tiny_dirs, tmp_path)
    opened = []

    class CountingSession(ort.InferenceSession):  # a real session; only counted
        def __init__(self, *args, **kwargs) -> None:
            opened.append(args[0] if isinstance(args[0], str) else f"{len(args[0])} bytes")
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(runtime.ort, "InferenceSession", CountingSession)
    zen3 = parse_cpuinfo(ZEN3_NO_VNNI)
    # A damaged blocks file would fail its sha256 check or the load if it were read at all.
    (directory / "model.onnx").write_bytes(b"not a model")
    with caplog.at_level(logging.INFO, logger="assistant.llm.runtime"):
        model = MiniMindOnnx(directory, threads=1, cpu=zen3)
    assert len(opened) == 1
    assert model.model_file.name == "model.int8-dynamic.onnx"
    assert "weights: dynamic (auto: no int8 dot product (avx512_vnni/avx_vnni/asimddp) -> dynamic)" in caplog.text
    assert list(model.generate([1, 300, 400, 500], GREEDY))  # it answers
    # And the other way round: the dynamic file gone, blocks chosen on a VNNI CPU (on this CPU's record
    # nothing depends: the parsed Zen 4 has none).
    shutil.copyfile(tiny_dirs["int8"] / "model.onnx", directory / "model.onnx")
    (directory / "model.int8-dynamic.onnx").unlink()
    opened.clear()
    model = MiniMindOnnx(directory, threads=1, cpu=parse_cpuinfo(ZEN4_VNNI))
    assert len(opened) == 1 and model.model_file.name == "model.onnx"


def test_recorded_measurement_for_this_cpu_wins(tiny_dirs, tmp_path) -> None:
    directory = two_form_copy(tiny_dirs, tmp_path)
    zen4 = parse_cpuinfo(ZEN4_VNNI)
    zen3 = parse_cpuinfo(ZEN3_NO_VNNI)
    speed = {
        zen4.key: {"tokens_per_s": {"blocks": 300.0, "dynamic": 900.0}},
        zen3.key: {"tokens_per_s": {"blocks": 900.0, "dynamic": 300.0}},
    }
    edit_manifest(directory, speed=speed)
    on_zen4 = MiniMindOnnx(directory, threads=1, cpu=zen4)
    assert on_zen4.weights.form.name == "dynamic"
    assert on_zen4.weights.reason == f"measured at export on {zen4.key}: dynamic 3.00x faster"
    assert MiniMindOnnx(directory, threads=1, cpu=zen3).weights.form.name == "blocks"
    # Another CPU (a Pi 5): no record, the feature rule.
    pi5 = MiniMindOnnx(directory, threads=1, cpu=parse_cpuinfo(PI5_AARCH64))
    assert pi5.weights.reason == "auto: asimddp present -> blocks"
    # The override beats the record.
    assert MiniMindOnnx(directory, threads=1, cpu=zen4, weights="blocks").weights.form.name == "blocks"


def test_failed_form_in_model_json_is_never_loaded(tiny_dirs, tmp_path) -> None:
    """What export writes when a form fails parity: the figures, "passed": false, no file."""
    directory = two_form_copy(tiny_dirs, tmp_path)
    manifest = json.loads((directory / "model.json").read_text())
    manifest["forms"]["dynamic"].update(passed=False, file=None, error="int8-dynamic top-1 agreement ...")
    del manifest["files"]["model.int8-dynamic.onnx"]
    (directory / "model.int8-dynamic.onnx").unlink()
    zen3 = parse_cpuinfo(ZEN3_NO_VNNI)
    manifest["speed"] = {zen3.key: {"tokens_per_s": {"blocks": 1.0, "dynamic": 1000.0}}}
    (directory / "model.json").write_text(json.dumps(manifest))
    for setting in ("auto", "dynamic"):
        model = MiniMindOnnx(directory, threads=1, cpu=zen3, weights=setting)
        assert model.weights.form.name == "blocks"
        assert "dynamic failed parity" in model.weights.reason


def test_measure_subcommand_records_this_cpu(tiny_dirs, tmp_path) -> None:
    from export.cli import main as export_main

    directory = two_form_copy(tiny_dirs, tmp_path)
    edit_manifest(directory, speed={"Some Other CPU [avx2]": {"tokens_per_s": {"blocks": 1.0, "dynamic": 2.0}}})
    assert export_main(["measure", str(directory), "--threads", "1"]) == 0
    speed = json.loads((directory / "model.json").read_text())["speed"]
    assert set(speed) == {"Some Other CPU [avx2]", this_cpu().key}
    assert speed[this_cpu().key]["threads"] == 1
    assert not list(directory.glob(".*"))  # model.json was replaced whole: no staging folder left
    assert export_main(["verify", str(directory)]) == 0  # both forms run; model.json edits touch no file


def test_single_form_exports_still_load(tiny_dirs, tmp_path, caplog) -> None:
    from export.cli import main as export_main

    out = tmp_path / "blocks-only"
    assert export_main(["requantize", str(tiny_dirs["fp32"]), "--out", str(out), "--quant", "int8-blocks"]) == 0
    manifest = json.loads((out / "model.json").read_text())
    assert "forms" not in manifest and "speed" not in manifest  # the format older runtimes read
    assert sorted(manifest["files"]) == ["model.onnx", "tokenizer.json", "tokenizer_config.json"]
    with caplog.at_level(logging.INFO, logger="assistant.llm.runtime"):
        model = MiniMindOnnx(out, threads=1, weights="dynamic", cpu=parse_cpuinfo(ZEN3_NO_VNNI))
    assert model.weights.form.name == "blocks"
    assert "llm.weights is dynamic but this export has only blocks" in caplog.text
    assert list(model.generate([1, 300, 400, 500], GREEDY))
    fp32 = MiniMindOnnx(tiny_dirs["fp32"], threads=1)
    assert fp32.weights.form.name == "fp32" and fp32.model_file.name == "model.onnx"


def test_bad_weights_setting_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("llm:\n  weights: fastest\n")
    with pytest.raises(ConfigError, match=r"llm\.weights.*auto, blocks, dynamic"):
        load_settings(path)
    path.write_text("llm:\n  weights: dynamic\n")
    assert load_settings(path).llm.weights == "dynamic"


def test_reply_time_decides_over_decode_rate(tiny_dirs, tmp_path) -> None:
    # Blocks decode faster but prefill slower: the round a first sentence waits for decides.
    directory = two_form_copy(tiny_dirs, tmp_path)
    zen4 = parse_cpuinfo(ZEN4_VNNI)
    record = {"tokens_per_s": {"blocks": 800.0, "dynamic": 600.0}, "reply_ms": {"blocks": 60.0, "dynamic": 40.0}}
    edit_manifest(directory, speed={zen4.key: record})
    model = MiniMindOnnx(directory, threads=1, cpu=zen4)
    assert model.weights.form.name == "dynamic"
    assert model.weights.reason == f"measured at export on {zen4.key}: dynamic 1.50x faster"
