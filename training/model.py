"""MiniMind2 and minimind-3 (dense and MoE) in plain torch, computing what the official code computes.

State-dict names are the HF-Llama ones of the official checkpoints (see
../shared/reference/minimind2/*-state-dict.tsv and ../shared/reference/minimind3/*-state-dict.tsv), so official
`.pth` files load with `strict=True`.

Two generations (`MiniMindConfig.generation`): "minimind2" (the default) and "minimind3" (upstream since
2026-04, jingyaogong/minimind@d65ef2c). minimind-3 adds an RMSNorm on q and k per head before RoPE
(`self_attn.q_norm` / `k_norm`), lets head_dim differ from hidden / heads, and its MoE is top-1 with no
shared expert, always renormalises the top-k weights and uses a per-batch load-balancing loss.

Written to be traced: RoPE is real cos/sin (rotate_half layout) precomputed as non-persistent buffers, the KV
cache is explicit tensors in and out, the causal mask is built from positions (so a past of any length, zero
included, goes through the same code), and MoE routing is computed densely (every expert on every token,
weighted by a routing matrix that is zero off the top-k) instead of with data-dependent indexing.

Shapes: B batch, T new tokens, P cached tokens, H hidden, Hq query heads, Hkv key/value heads, D head dim,
V vocab, E routed experts.

One file over the usual ~350 lines on purpose: it is read side by side with the official model_minimind.py
(config, RoPE, attention, feed-forward/MoE, causal LM in that order), and the conformance tests check it as one
unit against the official outputs.

Why ~440 lines: two generations (MiniMind2, minimind-3), dense and MoE, read side by side with the official code.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# transformers' PretrainedConfig bookkeeping found in official config.json files: carries no architecture.
_BOOKKEEPING_KEYS = frozenset(
    {
        "architectures", "auto_map", "model_type", "transformers_version", "torch_dtype", "dtype",
        "output_hidden_states", "output_attentions", "return_dict", "chunk_size_feed_forward",
        "is_encoder_decoder", "id2label", "label2id", "problem_type", "hidden_act", "flash_attn",
        "tie_word_embeddings", "use_cache", "pad_token_id", "inference_rope_scaling", "rope_parameters",
        "rope_scaling", "initializer_range", "attention_bias", "attention_dropout", "mlp_bias",
        "pretraining_tp", "tokenizer_class", "_name_or_path", "name_or_path",
    }
)  # fmt: skip

# Values of bookkeeping keys that would change the math; anything else there is refused.
_REQUIRED_BOOKKEEPING = {"hidden_act": "silu", "tie_word_embeddings": True}

GENERATIONS = ("minimind2", "minimind3")
# minimind-3's official config names (model_minimind.py at d65ef2c) -> this dataclass's MiniMind2-era names.
_MINIMIND3_RENAMES = {"num_experts": "n_routed_experts", "router_aux_loss_coef": "aux_loss_alpha"}
# Keys only a minimind-3 config.json has: their presence tells the generation.
MINIMIND3_CONFIG_KEYS = frozenset({"num_experts", "moe_intermediate_size", "router_aux_loss_coef", "head_dim"})
# minimind-3's defaults where they differ from MiniMind2's (hidden 768, 8 layers, 8/4 heads, eps 1e-6, top-1, no
# shared expert); intermediate_size None there means the minimind-3 rule ceil(H * pi / 64) * 64.
MINIMIND3_DEFAULTS = {
    "hidden_size": 768,
    "num_hidden_layers": 8,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-6,
    "num_experts_per_tok": 1,
    "n_shared_experts": 0,
    "aux_loss_alpha": 5e-4,
    "seq_aux": False,
}


@dataclass(frozen=True)
class MiniMindConfig:
    """Architecture of a MiniMind2 / minimind-3 model; field names are the official MiniMind2 MiniMindConfig's.

    Defaults are MiniMind2-Small's; `minimind3_config()` gives minimind-3's.
    """

    hidden_size: int = 512  # H: width of the residual stream
    num_hidden_layers: int = 8  # transformer blocks
    num_attention_heads: int = 8  # Hq: query heads
    num_key_value_heads: int = 2  # Hkv: key/value heads (GQA: Hq / Hkv queries share one kv head)
    vocab_size: int = 6400  # V: tokenizer size; embeddings are tied to lm_head
    intermediate_size: int | None = None  # SwiGLU width; None -> official rule 64*ceil(int(H*8/3)/64)
    max_position_embeddings: int = 32768  # longest position the RoPE tables cover
    rms_norm_eps: float = 1e-5  # RMSNorm epsilon
    rope_theta: float = 1e6  # RoPE base
    dropout: float = 0.0  # dropout on embeddings, attention, attention output and FFN output (training)
    bos_token_id: int = 1  # <|im_start|>
    eos_token_id: int = 2  # <|im_end|>
    use_moe: bool = False  # replace each SwiGLU by a mixture of experts
    num_experts_per_tok: int = 2  # MoE: experts each token is routed to (top-k)
    n_routed_experts: int = 4  # E: MoE routed experts per layer
    n_shared_experts: int = 1  # MoE: experts every token goes through, added to the routed output
    scoring_func: str = "softmax"  # MoE gate scoring; the official code only implements softmax
    aux_loss_alpha: float = 0.01  # MoE load-balancing loss weight (training only)
    seq_aux: bool = True  # MoE: load-balancing loss per sequence (True) or per batch of tokens (False)
    norm_topk_prob: bool = True  # MoE: renormalise the top-k gate weights to sum to 1
    generation: str = "minimind2"  # "minimind3": q/k RMSNorm, minimind-3 MoE (see the module docstring)
    head_dim: int | None = None  # D; None -> hidden_size / num_attention_heads (minimind-3 may set it)

    def __post_init__(self) -> None:
        if self.generation not in GENERATIONS:
            raise ValueError(f"generation {self.generation!r} is unknown (known: {', '.join(GENERATIONS)})")
        if self.intermediate_size is None:
            if self.generation == "minimind3":
                ffn = math.ceil(self.hidden_size * math.pi / 64) * 64
            else:
                ffn = 64 * math.ceil(int(self.hidden_size * 8 / 3) / 64)
            object.__setattr__(self, "intermediate_size", ffn)
        if self.head_dim is None:
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_attention_heads)
        elif self.generation != "minimind3" and self.head_dim != self.hidden_size // self.num_attention_heads:
            raise ValueError(f"head_dim {self.head_dim} must be hidden_size / num_attention_heads for MiniMind2")
        if self.generation != "minimind3" and self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads "
                f"{self.num_attention_heads}"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads {self.num_attention_heads} is not a multiple of num_key_value_heads "
                f"{self.num_key_value_heads}"
            )
        if self.scoring_func != "softmax":
            raise ValueError(f"scoring_func {self.scoring_func!r} is not supported (only 'softmax')")

    @property
    def qk_norm(self) -> bool:
        """RMSNorm on q and k per head before RoPE (minimind-3)."""
        return self.generation == "minimind3"

    @property
    def label(self) -> str:
        """The generation as people write it (logs, errors)."""
        return "minimind-3" if self.generation == "minimind3" else "MiniMind2"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> MiniMindConfig:
        """Build from an official / transformers config dict.

        transformers bookkeeping keys are ignored (a few that would change the math are checked); unknown keys
        raise ValueError naming them, so a config of another model is never loaded as MiniMind2 silently.
        A minimind-3 config (any of MINIMIND3_CONFIG_KEYS, or "generation": "minimind3") gets minimind-3's
        defaults and its official key names are mapped onto this dataclass's.
        """
        d = dict(d)
        generation = d.get("generation") or (
            "minimind3" if MINIMIND3_CONFIG_KEYS & set(d) else "minimind2"
        )
        if generation == "minimind3":
            d = {**MINIMIND3_DEFAULTS, **d, "generation": "minimind3"}
            for official, ours in _MINIMIND3_RENAMES.items():
                if official in d:
                    d[ours] = d.pop(official)
            moe_ffn = d.pop("moe_intermediate_size", None)
            if d.get("use_moe") and moe_ffn is not None:
                d["intermediate_size"] = moe_ffn  # a MoE layer has experts only, so one FFN width
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in d if k not in fields and k not in _BOOKKEEPING_KEYS)
        if unknown:
            raise ValueError(f"unknown MiniMind config keys: {', '.join(unknown)}")
        for key, wanted in _REQUIRED_BOOKKEEPING.items():
            if key in d and d[key] is not None and d[key] != wanted:
                raise ValueError(f"config {key}={d[key]!r} is not supported (MiniMind uses {wanted!r})")
        scaling = d.get("rope_scaling") or d.get("rope_parameters")
        if d.get("inference_rope_scaling") or (isinstance(scaling, dict) and scaling.get("type") == "yarn"):
            raise ValueError("YaRN rope scaling (inference_rope_scaling) is not supported")
        return cls(**{k: v for k, v in d.items() if k in fields})


def minimind3_config(**overrides) -> MiniMindConfig:
    """A minimind-3 config: the official defaults (64M dense; use_moe=True gives the 198M-A64M MoE)."""
    return MiniMindConfig(**{**MINIMIND3_DEFAULTS, **overrides, "generation": "minimind3"})


@dataclass(frozen=True)
class ModelOutput:
    logits: torch.Tensor  # [B, T or logits_to_keep, V]
    aux_loss: torch.Tensor  # scalar: MoE load-balancing loss in training mode, else 0
    past_key_values: list[tuple[torch.Tensor, torch.Tensor]] | None  # per layer (k, v) [B, Hkv, P+T, D]


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 whatever the compute dtype, as the official code does.
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.type_as(x)


def rope_tables(head_dim: int, end: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [end, D] for positions 0..end-1, halves repeated (rotate_half layout)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim))  # [D/2]
    angles = torch.outer(torch.arange(end).float(), inv_freq)  # [end, D/2]
    cos = torch.cat([angles.cos(), angles.cos()], dim=-1)
    sin = torch.cat([angles.sin(), angles.sin()], dim=-1)
    return cos, sin


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, heads, T, D]; cos, sin [T, D]."""
    return x * cos + rotate_half(x) * sin


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """[B, Hkv, S, D] -> [B, Hkv*n_rep, S, D], each kv head repeated for its group of query heads."""
    if n_rep == 1:
        return x
    b, h, s, d = x.shape
    return x[:, :, None, :, :].expand(b, h, n_rep, s, d).reshape(b, h * n_rep, s, d)


class Attention(nn.Module):
    def __init__(self, config: MiniMindConfig) -> None:
        super().__init__()
        self.n_heads = config.num_attention_heads
        self.n_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        hidden = config.hidden_size
        self.q_proj = nn.Linear(hidden, self.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, self.n_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, self.n_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, hidden, bias=False)
        if config.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
        self.qk_norm = config.qk_norm
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,  # [B, T, H]
        cos: torch.Tensor,  # [T, D] for positions P..P+T-1
        sin: torch.Tensor,
        mask: torch.Tensor | None,  # [T, P+T] bool, True = may attend; None = plain causal, no past
        past: tuple[torch.Tensor, torch.Tensor] | None,  # [B, Hkv, P, D] each
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # [B, Hq, T, D]
        k = self.k_proj(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)  # [B, Hkv, T, D]
        v = self.v_proj(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if self.qk_norm:  # minimind-3: per head, over D, before RoPE
            q, k = self.q_norm(q), self.k_norm(k)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)  # [B, Hkv, P+T, D]
            v = torch.cat([past[1], v], dim=2)
        present = (k, v)
        n_rep = self.n_heads // self.n_kv_heads
        dropout_p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(
            q,
            repeat_kv(k, n_rep),
            repeat_kv(v, n_rep),
            attn_mask=mask,
            dropout_p=dropout_p,
            is_causal=mask is None,
        )  # [B, Hq, T, D]
        out = out.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim)
        return self.resid_dropout(self.o_proj(out)), present


class FeedForward(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: MiniMindConfig) -> None:
        super().__init__()
        hidden, ffn = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(hidden, ffn, bias=False)
        self.down_proj = nn.Linear(ffn, hidden, bias=False)
        self.up_proj = nn.Linear(hidden, ffn, bias=False)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x)))


class MoEGate(nn.Module):
    def __init__(self, config: MiniMindConfig) -> None:
        super().__init__()
        self.config = config
        self.weight = nn.Parameter(torch.empty(config.n_routed_experts, config.hidden_size))  # [E, H]
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, H] -> routing weights [B*T, E] (zero off the top-k) and the load-balancing loss."""
        cfg = self.config
        b, t, h = x.shape
        scores = F.linear(x.reshape(b * t, h), self.weight).softmax(dim=-1)  # [B*T, E]
        topk_weight, topk_idx = torch.topk(scores, k=cfg.num_experts_per_tok, dim=-1, sorted=False)
        # MiniMind2 renormalises only for k > 1; minimind-3 always (top-1 weight then w / (w + 1e-20) = 1).
        if cfg.norm_topk_prob and (cfg.num_experts_per_tok > 1 or cfg.generation == "minimind3"):
            topk_weight = topk_weight / (topk_weight.sum(dim=-1, keepdim=True) + 1e-20)
        routing = torch.zeros_like(scores).scatter(1, topk_idx, topk_weight)  # [B*T, E]
        aux_loss = scores.new_zeros(())
        if self.training and cfg.aux_loss_alpha > 0.0:
            aux_loss = self._balance_loss(scores, topk_idx, b, t)
        return routing, aux_loss

    def _balance_loss(self, scores: torch.Tensor, topk_idx: torch.Tensor, b: int, t: int) -> torch.Tensor:
        # The official MiniMind loss: expert load (fraction of routed slots) times mean gate probability.
        cfg = self.config
        n_exp, k = cfg.n_routed_experts, cfg.num_experts_per_tok
        if cfg.generation == "minimind3":
            # minimind-3: per-slot load [k, E] times the mean gate probability, summed, times E.
            load = F.one_hot(topk_idx, num_classes=n_exp).to(scores.dtype).mean(0)  # [k, E]
            return (load * scores.mean(0)).sum() * n_exp * cfg.aux_loss_alpha
        if cfg.seq_aux:
            idx = topk_idx.view(b, t * k)
            load = torch.zeros(b, n_exp, device=scores.device, dtype=scores.dtype)
            load = load.scatter_add(1, idx, torch.ones_like(idx, dtype=scores.dtype)) / (t * k / n_exp)
            prob = scores.view(b, t, n_exp).mean(dim=1)  # [B, E]
            return (load * prob).sum(dim=1).mean() * cfg.aux_loss_alpha
        load = F.one_hot(topk_idx.reshape(-1), num_classes=n_exp).to(scores.dtype).mean(0) * n_exp
        return (scores.mean(0) * load).sum() * cfg.aux_loss_alpha


class MoEFeedForward(nn.Module):
    def __init__(self, config: MiniMindConfig) -> None:
        super().__init__()
        self.experts = nn.ModuleList(FeedForward(config) for _ in range(config.n_routed_experts))
        self.gate = MoEGate(config)
        self.shared_experts = nn.ModuleList(FeedForward(config) for _ in range(config.n_shared_experts))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, h = x.shape
        routing, aux_loss = self.gate(x)  # [B*T, E]
        # Every expert on every token (E/k times the FLOPs of sparse dispatch) keeps the graph free of
        # data-dependent shapes; the experts a token is not routed to get weight 0.
        y = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            y = y + expert(x) * routing[:, e].view(b, t, 1)
        for expert in self.shared_experts:
            y = y + expert(x)
        return y, aux_loss


class Block(nn.Module):
    def __init__(self, config: MiniMindConfig) -> None:
        super().__init__()
        self.self_attn = Attention(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MoEFeedForward(config) if config.use_moe else FeedForward(config)

    def forward(self, x, cos, sin, mask, past):
        attn, present = self.self_attn(self.input_layernorm(x), cos, sin, mask, past)
        x = x + attn
        ffn = self.mlp(self.post_attention_layernorm(x))
        aux_loss = None
        if isinstance(ffn, tuple):
            ffn, aux_loss = ffn
        return x + ffn, present, aux_loss


class MiniMindModel(nn.Module):
    def __init__(self, config: MiniMindConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        cos, sin = rope_tables(config.head_dim, config.max_position_embeddings, config.rope_theta)
        # Not persistent: derived from the config, and absent from official checkpoints.
        self.register_buffer("rope_cos", cos, persistent=False)  # [max_pos, D]
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(
        self,
        input_ids: torch.Tensor,  # [B, T]
        past_key_values: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
        t = input_ids.shape[1]
        start = 0 if past_key_values is None else past_key_values[0][0].shape[2]
        cos = self.rope_cos[start : start + t]
        sin = self.rope_sin[start : start + t]
        return self.run_layers(self.embed_tokens(input_ids), cos, sin, past_key_values)

    def run_layers(
        self,
        h: torch.Tensor,  # [B, T, H] token embeddings
        cos: torch.Tensor,  # [T, D] rotary tables for positions P..P+T-1
        sin: torch.Tensor,
        past_key_values: list[tuple[torch.Tensor, torch.Tensor]] | None,
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
        """Everything after the embedding lookup; the ONNX exporter calls this with its own RoPE tables."""
        t = h.shape[1]
        mask = None
        if past_key_values is not None:
            p = past_key_values[0][0].shape[2]
            q_pos = torch.arange(t, device=h.device) + p  # [T]
            k_pos = torch.arange(p + t, device=h.device)  # [P+T]
            mask = k_pos[None, :] <= q_pos[:, None]  # [T, P+T]
        h = self.dropout(h)
        presents = []
        aux_loss = h.new_zeros((), dtype=torch.float32)
        for i, layer in enumerate(self.layers):
            past = None if past_key_values is None else past_key_values[i]
            h, present, layer_aux = layer(h, cos, sin, mask, past)
            presents.append(present)
            if layer_aux is not None:
                aux_loss = aux_loss + layer_aux
        return self.norm(h), presents, aux_loss


class MiniMindForCausalLM(nn.Module):
    def __init__(self, config: MiniMindConfig) -> None:
        super().__init__()
        self.config = config
        self.model = MiniMindModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        # Tied as in the official code: the embedding takes lm_head's parameter (and its init).
        self.model.embed_tokens.weight = self.lm_head.weight

    def forward(
        self,
        input_ids: torch.Tensor,  # [B, T]
        past_key_values: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
        use_cache: bool = False,
        logits_to_keep: int = 0,
    ) -> ModelOutput:
        h, presents, aux_loss = self.model(input_ids, past_key_values)  # h [B, T, H]
        if logits_to_keep > 0:
            h = h[:, -logits_to_keep:, :]
        logits = self.lm_head(h)  # [B, T or logits_to_keep, V]
        return ModelOutput(logits=logits, aux_loss=aux_loss, past_key_values=presents if use_cache else None)
