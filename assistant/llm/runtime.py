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

A model.json with an "io" key declares a graph I/O this runtime does not know: it is refused.
"""

from __future__ import annotations

import json
import logging
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

log = logging.getLogger(__name__)

MANIFEST = "model.json"
MANIFEST_FORMAT = "minimind-onnx"
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
class ModelManifest:
    path: Path  # model.json
    architecture: Architecture
    quantization: str
    bos_token_id: int
    eos_token_id: int
    tokenizer: str  # file name beside model.onnx
    kv_buffer: str | None  # None (the graph concatenates) or KV_SHARED
    raw: dict


def how_to_get(model_dir: Path) -> str:
    """The command that creates `model_dir`, for error messages."""
    if model_dir.name == DEMO_DIR_NAME:
        return "train the demo model with `python -m training.recipes.demo`"
    return (
        "fetch the weights with `assistant models fetch minimind2-small`, then export them with "
        f"`assistant-export <checkpoint> --out {model_dir} --quant int8`"
    )


def load_manifest(model_dir: Path) -> ModelManifest:
    """Read and check `model_dir/model.json`; every problem is a ModelError naming the file and the fix."""
    model_dir = Path(model_dir)
    missing = [name for name in REQUIRED_FILES if not (model_dir / name).is_file()]
    if missing:
        files = ", ".join(str(model_dir / name) for name in missing)
        raise ModelError(f"model file missing: {files}; {how_to_get(model_dir)}")
    path = model_dir / MANIFEST
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read {path}: {exc}; {how_to_get(model_dir)}") from exc
    if not isinstance(raw, dict) or raw.get("format") != MANIFEST_FORMAT:
        raise ModelError(f"{path} is not a MiniMind ONNX manifest (format must be {MANIFEST_FORMAT!r})")
    if raw.get("version") != 1:
        raise ModelError(f"{path}: manifest version {raw.get('version')!r} is not supported (expected 1)")
    if "io" in raw:
        # A graph I/O beyond the base contract needs its own code path.
        raise ModelError(
            f"{path}: graph I/O variant {raw['io']!r} is not supported by this runtime; "
            "update the assistant or re-export the model with this version"
        )
    kv_buffer = raw.get("kv_buffer")
    if kv_buffer not in (None, KV_SHARED):
        raise ModelError(f"{path}: kv_buffer {kv_buffer!r} is not supported (known: {KV_SHARED!r}); re-export")
    arch = raw.get("architecture")
    try:
        head_dim = arch.get("head_dim") or arch["hidden_size"] // arch["num_attention_heads"]
        architecture = Architecture(
            num_hidden_layers=int(arch["num_hidden_layers"]),
            num_key_value_heads=int(arch["num_key_value_heads"]),
            head_dim=int(head_dim),
            vocab_size=int(arch["vocab_size"]),
            max_position_embeddings=int(arch["max_position_embeddings"]),
        )
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{path}: architecture entry missing or invalid ({exc!r})") from exc
    return ModelManifest(
        path=path,
        architecture=architecture,
        quantization=str(raw.get("quantization", "unknown")),
        bos_token_id=int(raw.get("bos_token_id", 1)),
        eos_token_id=int(raw.get("eos_token_id", 2)),
        tokenizer=str(raw.get("tokenizer", "tokenizer.json")),
        kv_buffer=kv_buffer,
        raw=raw,
    )


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
            self._binding.bind_ortvalue_input("input_ids", _share(self._ids))
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
    """

    def __init__(self, model: MiniMindOnnx, capacity: int | None = None) -> None:
        self._capacity_hint = capacity
        super().__init__(model)

    def _bind_cache(self) -> None:
        model = self._model
        # int32 scalar: P + S of the running call, written before each run.
        self._total = np.zeros((), dtype=np.int32)
        self._binding.bind_ortvalue_input(TOTAL_INPUT, _share(self._total))
        self._binding.bind_ortvalue_output("logits", self._logits_value)
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
            self._binding.bind_ortvalue_input(past, value)
            self._binding.bind_ortvalue_output(present, value)
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
        self._run(self._binding, None)


def _share(array: np.ndarray):
    """The pybind OrtValue that reads and writes `array`'s memory (the caller keeps `array` alive)."""
    return ort.OrtValue.ortvalue_from_numpy(array)._ortvalue


class MiniMindOnnx:
    """A loaded MiniMind ONNX model directory. Thread-safe for one generation at a time per instance."""

    def __init__(self, model_dir: Path, *, threads: int = 2, max_context_tokens: int | None = None) -> None:
        self.model_dir = Path(model_dir)
        self.manifest = load_manifest(self.model_dir)
        self.architecture = self.manifest.architecture
        limit = self.architecture.max_position_embeddings
        self.max_context_tokens = min(limit, max_context_tokens) if max_context_tokens else limit
        self.eos_token_id = self.manifest.eos_token_id
        self.threads = threads
        layers = range(self.architecture.num_hidden_layers)
        self.past_names = [f"past_{kind}.{i}" for i in layers for kind in ("key", "value")]
        self.present_names = [f"present_{kind}.{i}" for i in layers for kind in ("key", "value")]
        started = time.perf_counter()
        self.session = self._open_session(self.model_dir / "model.onnx", threads)
        self._check_io()
        log.info(
            "loaded %s (%s, %d layers, context %d) with %d threads in %.0f ms",
            self.model_dir,
            self.manifest.quantization,
            self.architecture.num_hidden_layers,
            self.max_context_tokens,
            threads,
            (time.perf_counter() - started) * 1000,
        )

    @staticmethod
    def _open_session(path: Path, threads: int) -> ort.InferenceSession:
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
            return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises several unrelated types for bad files
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(
                f"cannot load {path}: {first_line}; the file is corrupt or incomplete, "
                f"re-create it ({how_to_get(path.parent)})"
            ) from exc

    def _check_io(self) -> None:
        inputs = {i.name for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        want_in = {"input_ids", *self.past_names}
        if self.manifest.kv_buffer == KV_SHARED:
            # An input with a default value is listed among the overridable initializers, not the inputs.
            optional = {i.name for i in self.session.get_overridable_initializers()}
            if TOTAL_INPUT not in optional | inputs:
                raise ModelError(
                    f"{self.model_dir / 'model.onnx'} has no {TOTAL_INPUT} input but {self.manifest.path} "
                    'says "kv_buffer": "shared"; re-export the model'
                )
            inputs.discard(TOTAL_INPUT)
        want_out = {"logits", *self.present_names}
        if inputs != want_in or not want_out <= outputs:
            missing = sorted((want_in - inputs) | (want_out - outputs))
            extra = sorted(inputs - want_in)
            raise ModelError(
                f"{self.model_dir / 'model.onnx'} does not match {self.manifest.path}: "
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
