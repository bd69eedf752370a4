"""MiniMind on onnxruntime (CPU) with a KV cache: the torch-free reply generator.

The exported graph (see export/ and model.json) takes `input_ids` [1, S] plus, per layer, `past_key.{i}` /
`past_value.{i}` [1, n_kv_heads, P, head_dim] and returns `logits` [1, vocab] for the last position and
`present_key.{i}` / `present_value.{i}` [1, n_kv_heads, P+S, head_dim]. One graph serves prefill (P = 0) and
decode (S = 1); positions start at P.

Decode is one to two milliseconds per token, so per-step overhead matters. Each sequence runs through one IO
binding, the logits are written into one preallocated numpy buffer and the one-token input is a preallocated
array updated in place. How the KV cache moves depends on the graph (model.json "kv_buffer"):

- absent (traced graphs): the present KV tensors stay OrtValues owned by onnxruntime and are bound straight
  back as the next step's past (no numpy round trip); the graph concatenates, so every step allocates and
  copies the whole cache.
- "shared" (the fused graph): the graph also takes `total_sequence_length` (int32, P + S). Each past/present
  pair is bound to one preallocated [1, n_kv_heads, L, head_dim] buffer; the attention kernel appends the
  new positions in place, so a step copies nothing and nothing is rebound. L grows (doubling, copied once)
  when a sequence outgrows it.

Under `llm.weights: hybrid` (assistant/llm/weights.py) both int8 forms are loaded: a second session, whose IO
binding shares the KV buffers, the total_sequence_length scalar and the logits buffer with the first, runs every
feed of more than one token (the dynamic form: faster prefill); one-token steps run through the blocks.

A model.json with an "io" key declares a graph I/O this runtime does not know: it is refused.

Why ~690 lines: the manifest contract and the two KV-cache strategies share the sessions and IO bindings;
split, the per-step hot path would cross modules for no reader's benefit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import _pybind_state as ort_c

from assistant.errors import ModelError
from assistant.llm.sampling import Sampler, Sampling
from assistant.llm.weights import BLOCKS, Choice, CpuInfo, choose, forms_of, measured, other_form_files, this_cpu

log = logging.getLogger(__name__)

MANIFEST = "model.json"
MANIFEST_FORMAT = "minimind-onnx"
MANIFEST_VERSION = 1
REQUIRED_FILES = ("model.onnx", MANIFEST, "tokenizer.json")
DEMO_DIR_NAME = "minimind-demo"
KV_SHARED = "shared"  # model.json "kv_buffer": past and present may be one buffer
TOTAL_INPUT = "total_sequence_length"  # the input that makes that possible (P + S, int32)
KV_INITIAL_CAPACITY = 256  # positions of a shared KV buffer when the caller gives no hint
# Upper bound of the first allocation whatever the hint: the attention kernel sizes a scratch buffer by the
# buffer length (heads x new tokens x L floats), so a 32768-position hint would cost ~70 MB at prefill.
KV_MAX_INITIAL_CAPACITY = 1024


@dataclass(frozen=True)
class Architecture:
    """The shape facts the runtime needs from model.json's "architecture"."""

    num_hidden_layers: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    max_position_embeddings: int


@dataclass(frozen=True)
class FileEntry:
    sha256: str  # lowercase hex
    bytes: int


@dataclass(frozen=True)
class ModelManifest:
    path: Path  # model.json
    architecture: Architecture
    quantization: str
    bos_token_id: int
    eos_token_id: int
    tokenizer: str  # file name beside model.onnx
    kv_buffer: str | None  # None (the graph concatenates) or KV_SHARED
    files: dict[str, FileEntry]  # "files": what export wrote, checked at load unless verification is off
    raw: dict
    generation: str = "minimind2"  # "minimind3": its tokenizer and chat template (model.json "generation")


def how_to_get(model_dir: Path) -> str:
    """The command that creates `model_dir`, for error messages."""
    if model_dir.name == DEMO_DIR_NAME:
        return "train the demo model with `python -m training.recipes.demo`"
    return (
        "fetch the weights with `assistant models fetch minimind2-small`, then export them with "
        f"`assistant-export <checkpoint> --out {model_dir} --quant int8`"
    )


def read_manifest_json(path: Path, *, hint: str = "") -> dict:
    """model.json as a dict, checked for its format and version (shared with export/, which writes it).

    `hint` (how to get a good one) is added to a read error."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ModelError(f"cannot read {path}: {_short(exc)}" + (f"; {hint}" if hint else "")) from exc
    if not isinstance(raw, dict) or raw.get("format") != MANIFEST_FORMAT:
        raise ModelError(f"{path} is not a MiniMind ONNX manifest (format must be {MANIFEST_FORMAT!r})")
    if raw.get("version") != MANIFEST_VERSION or isinstance(raw.get("version"), bool):
        raise ModelError(
            f"{path}: manifest version {_show(raw.get('version'))} is not supported (expected {MANIFEST_VERSION})"
        )
    return raw


def load_manifest(model_dir: Path) -> ModelManifest:
    """Read and check `model_dir/model.json`; every problem is a ModelError naming the file, the key and the fix.

    Every field read here is checked for its type and range: a model.json is user-editable input, and a wrong
    value (a vocab_size of 10, an eos_token_id of "2") would otherwise surface later as an IndexError or a
    silent never-ending reply.
    """
    model_dir = Path(model_dir)
    missing = [name for name in REQUIRED_FILES if not (model_dir / name).is_file()]
    if missing:
        files = ", ".join(str(model_dir / name) for name in missing)
        raise ModelError(f"model file missing: {files}; {how_to_get(model_dir)}")
    path = model_dir / MANIFEST
    raw = read_manifest_json(path, hint=how_to_get(model_dir))
    if "io" in raw:
        # A graph I/O beyond the base contract needs its own code path.
        raise ModelError(
            f"{path}: graph I/O variant {_show(raw['io'])} is not supported by this runtime; "
            "update the assistant or re-export the model with this version"
        )
    kv_buffer = raw.get("kv_buffer")
    if kv_buffer not in (None, KV_SHARED):
        raise ModelError(f"{path}: kv_buffer {_show(kv_buffer)} is not supported (known: {KV_SHARED!r}); re-export")
    generation = raw.get("generation", "minimind2")
    if generation not in ("minimind2", "minimind3"):
        raise ModelError(f"{path}: generation {_show(generation)} is not supported (known: minimind2, minimind3)")
    fields = _Fields(path)
    arch = raw.get("architecture")
    if not isinstance(arch, dict):
        raise ModelError(f"{path}: key 'architecture' missing or not an object (got {_show(arch)}); re-export")
    if arch.get("head_dim") is not None:
        head_dim = fields.integer(arch, "head_dim", "architecture.", low=1)
    else:
        hidden = fields.integer(arch, "hidden_size", "architecture.", low=1)
        heads = fields.integer(arch, "num_attention_heads", "architecture.", low=1)
        if hidden % heads:
            raise ModelError(
                f"{path}: architecture.hidden_size {hidden} is not a multiple of num_attention_heads {heads}"
            )
        head_dim = hidden // heads
    architecture = Architecture(
        num_hidden_layers=fields.integer(arch, "num_hidden_layers", "architecture.", low=1, high=1024),
        num_key_value_heads=fields.integer(arch, "num_key_value_heads", "architecture.", low=1),
        head_dim=head_dim,
        # Three specials (<|endoftext|>, <|im_start|>, <|im_end|>) plus at least one ordinary token.
        vocab_size=fields.integer(arch, "vocab_size", "architecture.", low=MIN_VOCAB, high=MAX_VOCAB),
        max_position_embeddings=fields.integer(arch, "max_position_embeddings", "architecture.", low=2),
    )
    vocab = architecture.vocab_size
    return ModelManifest(
        path=path,
        architecture=architecture,
        quantization=fields.text(raw, "quantization", default="unknown"),
        bos_token_id=fields.integer(raw, "bos_token_id", default=1, low=0, high=vocab - 1),
        eos_token_id=fields.integer(raw, "eos_token_id", default=2, low=0, high=vocab - 1),
        tokenizer=fields.file_name(raw, "tokenizer", default="tokenizer.json"),
        kv_buffer=kv_buffer,
        files=fields.file_table(raw),
        raw=raw,
        generation=generation,
    )


MIN_VOCAB = 4
MAX_VOCAB = 1 << 22  # a logits row of 16 MB: far beyond any model this runtime serves
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _show(value: object, limit: int = 60) -> str:
    """repr() of a value from the file, cut short: an error line never quotes a whole hostile document."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short(exc: BaseException) -> str:
    return _show(str(exc), 200).strip("'\"")


@dataclass(frozen=True)
class _Fields:
    """Typed reads of model.json values; each error names the file and the dotted key."""

    path: Path

    def _fail(self, key: str, want: str, value: object) -> ModelError:
        return ModelError(f"{self.path}: key {key!r} must be {want}, got {_show(value)}; re-export the model")

    def integer(
        self, table: dict, key: str, prefix: str = "", *, default: int | None = None, low: int, high: int | None = None
    ) -> int:
        if key not in table and default is not None:
            return default
        value = table.get(key)
        want = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
        # bool is an int subclass, and 2.0 from a hand edit is tolerated only when it is whole.
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
            raise self._fail(prefix + key, want, value if key in table else "nothing (missing)")
        return value

    def text(self, table: dict, key: str, *, default: str) -> str:
        value = table.get(key, default)
        if not isinstance(value, str):
            raise self._fail(key, "a string", value)
        return value

    def file_name(self, table: dict, key: str, *, default: str) -> str:
        value = self.text(table, key, default=default)
        if not _plain_name(value):
            raise self._fail(key, "a file name beside model.onnx (no folders)", value)
        return value

    def file_table(self, raw: dict) -> dict[str, FileEntry]:
        """"files": {name: {"sha256": hex, "bytes": n}}, as export/manifest.py writes it; absent = {}."""
        table = raw.get("files", {})
        if not isinstance(table, dict):
            raise self._fail("files", "an object of file name -> {sha256, bytes}", table)
        entries = {}
        for name, entry in table.items():
            key = f"files.{name}"
            if not _plain_name(name):
                raise self._fail("files", "keyed by file names beside model.onnx (no folders)", name)
            if not isinstance(entry, dict):
                raise self._fail(key, "an object {sha256, bytes}", entry)
            digest = entry.get("sha256")
            if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
                raise self._fail(key + ".sha256", "64 lowercase hex digits", digest)
            size = self.integer(entry, "bytes", key + ".", low=0)
            entries[name] = FileEntry(sha256=digest, bytes=size)
        return entries


def _plain_name(name: object) -> bool:
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "/" not in name
        and "\\" not in name
        and name.isprintable()
    )


def sha256_file(path: Path) -> tuple[str, bytes]:
    """(hex sha256, contents) of a file read once."""
    data = path.read_bytes()
    return hashlib.sha256(data).hexdigest(), data


def verify_file(manifest: ModelManifest, name: str) -> bytes:
    """The contents of `name` after checking them against model.json's sha256 and size; else ModelError.

    The bytes are returned so that what was checked is what gets loaded (no window in which the file could be
    swapped between the check and the load).
    """
    path = manifest.path.parent / name
    entry = manifest.files.get(name)
    if entry is None:
        raise ModelError(
            f"{manifest.path} lists no sha256 for {name} (key 'files.{name}'), so it cannot be verified; "
            f"re-export the model, or set llm.verify_sha256: false to load it unchecked"
        )
    try:
        digest, data = sha256_file(path)
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc
    if digest != entry.sha256 or len(data) != entry.bytes:
        raise ModelError(
            f"{path} does not match {manifest.path}: sha256 {digest} ({len(data)} bytes), expected "
            f"{entry.sha256} ({entry.bytes} bytes); the file is corrupt or was changed: re-create it "
            f"({how_to_get(path.parent)})"
        )
    return data


class KVSequence:
    """One token sequence being decoded: its KV cache and the IO binding that feeds it back each step.

    This class serves graphs that concatenate; SharedKVSequence serves "kv_buffer": "shared" graphs.
    """

    def __init__(self, model: MiniMindOnnx) -> None:
        self._model = model
        arch = model.architecture
        # The public IOBinding wrapper builds a Python OrtDevice or OrtValue on every call: ~150 us a step
        # here, 7% of a 2 ms decode step. The pybind objects underneath take the same arguments without that.
        self._wrapper = model.session.io_binding()
        self._binding = self._wrapper._iobinding
        self._run = model.session._sess.run_with_iobinding
        # Prompts of more than one token run through this pair: the same binding, except under llm.weights: hybrid
        # (SharedKVSequence only), where a second session's binding shares every buffer with the first.
        self._prefill_binding, self._prefill_run = self._binding, self._run
        if model.prefill_session is not None:
            self._prefill_wrapper = model.prefill_session.io_binding()
            self._prefill_binding = self._prefill_wrapper._iobinding
            self._prefill_run = model.prefill_session._sess.run_with_iobinding
        self._cpu = ort_c.OrtDevice(ort_c.OrtDevice.cpu(), ort_c.OrtDevice.default_memory(), 0)
        self.length = 0  # tokens in the KV cache (P)
        # [1, vocab] float32: onnxruntime writes the logits here every step.
        self._logits = np.zeros((1, arch.vocab_size), dtype=np.float32)
        self._logits_value = _share(self._logits)
        # [1, 1] int64: the decode step's token, updated in place; the OrtValue shares its memory.
        self._one = np.zeros((1, 1), dtype=np.int64)
        self._one_value = _share(self._one)
        self._one_bound = False  # whether input_ids is bound to self._one right now
        self._bind_cache()

    def _bind_cache(self) -> None:
        # [1, Hkv, 0, D]: the empty past of a fresh sequence.
        arch = self._model.architecture
        self._empty = np.zeros((1, arch.num_key_value_heads, 0, arch.head_dim), dtype=np.float32)
        empty_value = _share(self._empty)
        for name in self._model.past_names:
            self._binding.bind_ortvalue_input(name, empty_value)

    def feed(self, token_ids: Sequence[int]) -> np.ndarray:
        """Run `token_ids` through the model after what is cached; return the last position's logits [vocab].

        The returned array is a view that the next `feed` overwrites.
        """
        count = len(token_ids)
        if count == 0:
            raise ValueError("feed() needs at least one token")
        if self.length + count > self._model.max_context_tokens:
            raise ValueError(
                f"sequence of {self.length + count} tokens exceeds the context of "
                f"{self._model.max_context_tokens}"
            )
        if count == 1:
            self._one[0, 0] = token_ids[0]
            if not self._one_bound:
                self._binding.bind_ortvalue_input("input_ids", self._one_value)
                self._one_bound = True
        else:
            # Kept on self: the bound OrtValue borrows the array's memory.
            self._ids = np.asarray(token_ids, dtype=np.int64).reshape(1, count)
            self._prefill_binding.bind_ortvalue_input("input_ids", _share(self._ids))
            if self._prefill_binding is self._binding:
                self._one_bound = False
        self._step(count)
        self.length += count
        return self._logits[0]

    def _step(self, count: int) -> None:
        binding = self._binding
        # Dynamic-shape outputs must be rebound every run (a bound value fixes the shape); a fixed order keeps
        # get_outputs() indices stable.
        binding.clear_binding_outputs()
        binding.bind_ortvalue_output("logits", self._logits_value)
        for name in self._model.present_names:
            binding.bind_output(name, self._cpu)
        self._run(binding, None)
        outputs = binding.get_outputs()
        # present_* of this step become past_* of the next without leaving onnxruntime's memory.
        for index, name in enumerate(self._model.past_names, start=1):
            binding.bind_ortvalue_input(name, outputs[index])

    def truncate(self, length: int) -> None:
        """Forget every cached position from `length` on (the keys and values before it stay valid).

        The cache is causal: the entry of position i depends only on tokens 0..i, so a prefix of it is exactly
        what a fresh run over that prefix would compute. Conversation uses this to keep what a new prompt
        shares with the previous one.
        """
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot truncate a {self.length}-token sequence to {length}")
        if length == self.length:
            return
        if length == 0:
            self._bind_cache()
        else:
            # The last run's present_* (what is bound as past_* now; a truncate before it only cut positions
            # this one cuts too): one copy of the kept positions per layer. The next step binds its outputs.
            outputs = self._binding.get_outputs()
            past = [outputs[i] for i in range(1, len(self._model.past_names) + 1)]
            self._kept = [np.ascontiguousarray(value.numpy()[:, :, :length]) for value in past]
            for array, name in zip(self._kept, self._model.past_names, strict=True):
                self._binding.bind_ortvalue_input(name, _share(array))
        self.length = length


class SharedKVSequence(KVSequence):
    """A sequence on a "shared" KV graph: past_X.{i} and present_X.{i} bound to one buffer, updated in place.

    Everything is bound once; a step writes the token and the new total length into arrays the bound
    OrtValues share, then runs. `capacity` is the expected final length (prompt + new tokens); the buffers
    grow past it when needed.

    Under llm.weights: hybrid the prefill session's binding is bound to the same OrtValues (KV buffers,
    total_sequence_length, logits): both forms have the same graph I/O and KV layout, so a prompt prefilled by
    one is decoded by the other with nothing copied.
    """

    def __init__(self, model: MiniMindOnnx, capacity: int | None = None) -> None:
        self._capacity_hint = capacity
        super().__init__(model)

    def _bind_cache(self) -> None:
        model = self._model
        # int32 scalar: P + S of the running call, written before each run.
        self._total = np.zeros((), dtype=np.int32)
        total = _share(self._total)
        self._bindings = tuple({id(b): b for b in (self._binding, self._prefill_binding)}.values())  # 1 or 2
        for binding in self._bindings:
            binding.bind_ortvalue_input(TOTAL_INPUT, total)
            binding.bind_ortvalue_output("logits", self._logits_value)
        hint = min(self._capacity_hint or KV_INITIAL_CAPACITY, KV_MAX_INITIAL_CAPACITY)
        self._buffers: list[np.ndarray] = []
        self._allocate(min(hint, model.max_context_tokens))

    def _allocate(self, capacity: int) -> None:
        """Bind fresh buffers of `capacity` positions, carrying over the cached ones."""
        arch = self._model.architecture
        shape = (1, arch.num_key_value_heads, capacity, arch.head_dim)
        old = self._buffers
        # [1, Hkv, L, D] float32 per past/present pair, in past_names order.
        self._buffers = [np.zeros(shape, dtype=np.float32) for _ in self._model.past_names]
        for new, previous in zip(self._buffers, old, strict=False):
            new[:, :, : self.length] = previous[:, :, : self.length]
        for buffer, past, present in zip(
            self._buffers, self._model.past_names, self._model.present_names, strict=True
        ):
            value = _share(buffer)
            for binding in self._bindings:
                binding.bind_ortvalue_input(past, value)
                binding.bind_ortvalue_output(present, value)
        self.capacity = capacity
        if old:
            log.debug("KV buffers grown to %d positions (%.1f MB)", capacity, self._kv_bytes() / 1e6)

    def truncate(self, length: int) -> None:
        """Forget every cached position from `length` on: the graph reads only total_sequence_length of them."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot truncate a {self.length}-token sequence to {length}")
        self.length = length

    def _kv_bytes(self) -> int:
        return sum(b.nbytes for b in self._buffers)

    def _step(self, count: int) -> None:
        needed = self.length + count
        if needed > self.capacity:
            self._allocate(min(max(needed, 2 * self.capacity), self._model.max_context_tokens))
        self._total[()] = needed
        if count == 1:
            self._run(self._binding, None)
        else:
            self._prefill_run(self._prefill_binding, None)


def _rss_mb() -> float:
    """Resident set of this process now (Linux /proc; 0 elsewhere): the load log's cost of the loaded form(s)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError):
        return 0.0


def _share(array: np.ndarray):
    """The pybind OrtValue that reads and writes `array`'s memory (the caller keeps `array` alive)."""
    return ort.OrtValue.ortvalue_from_numpy(array)._ortvalue


class MiniMindOnnx:
    """A loaded MiniMind ONNX model directory. Thread-safe for one generation at a time per instance."""

    def __init__(
        self,
        model_dir: Path,
        *,
        threads: int = 2,
        max_context_tokens: int | None = None,
        verify_sha256: bool = True,
        weights: str = "auto",
        cpu: CpuInfo | None = None,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.manifest = load_manifest(self.model_dir)
        # Which weight form to load (assistant/llm/weights.py): one file, so RSS is one model's worth.
        forms = forms_of(self.manifest.raw, self.manifest.path)
        cpu = cpu or this_cpu()
        self.weights = choose(weights, forms, cpu, measured(self.manifest.raw, cpu))
        if self.weights.prefill is not None and self.manifest.kv_buffer != KV_SHARED:
            # Two sessions can share a KV cache only where it is a buffer bound as past and present.
            self.weights = Choice(forms[BLOCKS], f"llm.weights is hybrid but {self.manifest.path} has no shared KV")
        log.info("weights: %s (%s)", self.weights.name, self.weights.reason)
        self.architecture = self.manifest.architecture
        limit = self.architecture.max_position_embeddings
        self.max_context_tokens = min(limit, max_context_tokens) if max_context_tokens else limit
        self.eos_token_id = self.manifest.eos_token_id
        self.threads = threads
        layers = range(self.architecture.num_hidden_layers)
        self.past_names = [f"past_{kind}.{i}" for i in layers for kind in ("key", "value")]
        self.present_names = [f"present_{kind}.{i}" for i in layers for kind in ("key", "value")]
        started = time.perf_counter()
        model = self.model_dir / (self.weights.form.file or "model.onnx")
        self.model_file = model
        # hybrid: the dynamic form's file too, opened for prompts (llm.weights: hybrid loads both forms by design)
        prefill = self.model_dir / self.weights.prefill.file if self.weights.prefill else None
        self.prefill_file = prefill
        skipped = other_form_files(forms, self.weights)
        loaded = [path for path in (model, prefill) if path is not None]
        sources: dict[str, Path | bytes] = {path.name: path for path in loaded}
        verify_ms = 0.0
        if verify_sha256:
            # Every file model.json lists (model.onnx, the tokenizer, its config): a flipped byte in the graph
            # loads fine and answers differently, so the check cannot be left to onnxruntime. ~40 ms for 30 MB
            # (bench/model_load.py); llm.verify_sha256: false skips it for experts who edit the files.
            for name in (*sources, self.manifest.tokenizer):
                if name not in self.manifest.files:
                    verify_file(self.manifest, name)  # raises: a required file without a recorded hash
            for name in self.manifest.files:
                if name in skipped:
                    continue  # another weight form: never read
                data = verify_file(self.manifest, name)
                if name in sources:
                    sources[name] = data  # the checked bytes are what onnxruntime loads
            verify_ms = (time.perf_counter() - started) * 1000
        sessions = []
        for path in loaded:
            sessions.append(self._open_session(sources[path.name], threads, path))
            # Each file's bytes are let go once its session holds the weights. (Reading both before opening
            # either is deliberate: glibc serves a large allocation made after a large free from its heap,
            # which it keeps resident, so reading them one after the other left hybrid ~28 MB bigger.)
            sources[path.name] = path
            self._check_io(sessions[-1], path)
        self.session = sessions[0]
        self.prefill_session: ort.InferenceSession | None = sessions[1] if len(sessions) > 1 else None
        log.info(
            "loaded %s (%s %s, %d layers, context %d) with %d threads in %.0f ms (sha256 %s), RSS %.0f MB",
            self.model_dir,
            self.manifest.quantization,
            " + ".join(path.name for path in loaded),
            self.architecture.num_hidden_layers,
            self.max_context_tokens,
            threads,
            (time.perf_counter() - started) * 1000,
            f"checked in {verify_ms:.0f} ms" if verify_sha256 else "not checked: llm.verify_sha256 is false",
            _rss_mb(),
        )

    @staticmethod
    def _open_session(source: Path | bytes, threads: int, path: Path) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        # Batch-1 decode is a chain of small ops: parallelism between ops only adds scheduling cost.
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # The pool threads still spin between the operators of a step, but stop when a step returns: the
        # default kept a core busy for ~50 ms after every reply (and between steps, when the audio loop and
        # TTS want it). Decode speed was the same within noise (BENCHMARKS.md, LLM section).
        options.add_session_config_entry("session.force_spinning_stop", "1")
        options.log_severity_level = 3
        try:
            model = source if isinstance(source, bytes) else str(source)
            session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises several unrelated types for bad files
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(
                f"cannot load {path}: {first_line}; the file is corrupt or incomplete, "
                f"re-create it ({how_to_get(path.parent)})"
            ) from exc
        # onnxruntime's Python wrapper keeps the model bytes it was given (the sha256-checked file, ~30 MB) for
        # a provider reset this CPU-only runtime never does; a session loaded from a path holds None there.
        # Dropped, RSS is ~29 MB lower per loaded form (BENCHMARKS.md, int8-hybrid).
        if getattr(session, "_model_bytes", None) is not None:
            session._model_bytes = None
        return session

    def _check_io(self, session: ort.InferenceSession, model_file: Path) -> None:
        inputs = {i.name for i in session.get_inputs()}
        outputs = {o.name for o in session.get_outputs()}
        want_in = {"input_ids", *self.past_names}
        if self.manifest.kv_buffer == KV_SHARED:
            # An input with a default value is listed among the overridable initializers, not the inputs.
            optional = {i.name for i in session.get_overridable_initializers()}
            if TOTAL_INPUT not in optional | inputs:
                raise ModelError(
                    f"{model_file} has no {TOTAL_INPUT} input but {self.manifest.path} "
                    'says "kv_buffer": "shared"; re-export the model'
                )
            inputs.discard(TOTAL_INPUT)
        logits = next((o for o in session.get_outputs() if o.name == "logits"), None)
        width = logits.shape[-1] if logits is not None and logits.shape else None
        if isinstance(width, int) and width != self.architecture.vocab_size:
            raise ModelError(
                f"{self.manifest.path}: key 'architecture.vocab_size' is {self.architecture.vocab_size} but "
                f"{model_file} produces {width} logits; re-export the model"
            )
        past = next((i for i in session.get_inputs() if i.name == "past_key.0"), None)
        shape = past.shape if past is not None else []
        for axis, key, value in ((1, "num_key_value_heads", self.architecture.num_key_value_heads),
                                 (3, "head_dim", self.architecture.head_dim)):
            if len(shape) == 4 and isinstance(shape[axis], int) and shape[axis] != value:
                raise ModelError(
                    f"{self.manifest.path}: key 'architecture.{key}' is {value} but "
                    f"{model_file} has {shape[axis]} (past_key.0 {shape}); re-export the model"
                )
        want_out = {"logits", *self.present_names}
        if inputs != want_in or not want_out <= outputs:
            missing = sorted((want_in - inputs) | (want_out - outputs))
            extra = sorted(inputs - want_in)
            raise ModelError(
                f"{model_file} does not match {self.manifest.path}: "
                f"missing {missing or 'nothing'}, unexpected inputs {extra or 'none'}; re-export the model"
            )

    def new_sequence(self, capacity: int | None = None) -> KVSequence:
        """A fresh sequence; `capacity` (expected final length in tokens) sizes preallocated KV buffers."""
        if self.manifest.kv_buffer == KV_SHARED:
            return SharedKVSequence(self, capacity)
        return KVSequence(self)

    def generate(
        self,
        prompt_ids: Sequence[int],
        sampling: Sampling,
        cancel: threading.Event | None = None,
        sequence: KVSequence | None = None,
    ) -> Iterator[int]:
        """Yield new token ids until eos (not yielded), max_new_tokens, the context limit or `cancel`.

        `sequence`, when given, already holds the keys and values of `prompt_ids[:sequence.length]` (the caller
        checked that prefix): only the rest of the prompt is prefilled, and the sequence keeps growing with the
        reply (its `length` then counts the tokens fed, the yielded ones included but not the last one when
        generation stopped at max_new_tokens or the consumer left). Raises ValueError if the prompt alone does
        not fit the context (callers trim history first).
        """
        if not prompt_ids:
            raise ValueError("empty prompt")
        if len(prompt_ids) >= self.max_context_tokens:
            raise ValueError(
                f"prompt of {len(prompt_ids)} tokens leaves no room in context {self.max_context_tokens}"
            )
        sampler = Sampler(sampling, self.architecture.vocab_size, prompt_ids)
        budget = min(sampling.max_new_tokens, self.max_context_tokens - len(prompt_ids))
        if sequence is None:
            sequence = self.new_sequence(capacity=len(prompt_ids) + budget)
        cached = sequence.length
        if not 0 <= cached < len(prompt_ids):
            raise ValueError(f"a sequence of {cached} cached tokens cannot start a {len(prompt_ids)}-token prompt")
        started = time.perf_counter()
        logits = sequence.feed(prompt_ids[cached:])
        first_ms = (time.perf_counter() - started) * 1000
        produced = 0
        reason = "max_new_tokens" if budget == sampling.max_new_tokens else "context"
        while True:
            if cancel is not None and cancel.is_set():
                reason = "cancelled"
                break
            token = sampler(logits)
            if token == self.eos_token_id:
                reason = "eos"
                break
            produced += 1
            yield token
            if produced >= budget:
                break
            logits = sequence.feed((token,))
        total_ms = (time.perf_counter() - started) * 1000
        decode_ms = total_ms - first_ms
        log.debug(
            "generated %d tokens after a %d-token prompt (%d cached): prefill %.1f ms, %.1f tokens/s, stop: %s",
            produced,
            len(prompt_ids),
            cached,
            first_ms,
            (produced - 1) / decode_ms * 1000 if produced > 1 and decode_ms > 0 else 0.0,
            reason,
        )
