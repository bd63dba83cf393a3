"""How a llama GGUF maps onto mlx-lm's llama model: tensor names, config.json, rope scaling."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

from tholos_mlx.errors import UsageError
from tholos_mlx.gguf.format import GGUFHeader

GROUP_SIZE = 32  # every supported ggml quant type packs blocks of 32 numbers
ROPE_FREQS = "rope_freqs.weight"  # Llama 3 rope scaling, folded into config.json instead

_TOP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_BLOCK = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_NAME = re.compile(r"^(?:blk\.(\d+)\.)?([a-z_]+)\.(weight|bias)$")


def mlx_base(name: str) -> str | None:
    """The MLX module path of a GGUF tensor name (without .weight/.bias), or None if unknown."""
    m = _NAME.match(name)
    if not m:
        return None
    block, part, _ = m.groups()
    if block is None:
        return _TOP.get(part)
    sub = _BLOCK.get(part)
    return f"model.layers.{block}.{sub}" if sub else None


def _meta(h: GGUFHeader, arch: str, key: str, default: Any = None) -> Any:
    return h.get(f"{arch}.{key}", default)


def _required(h: GGUFHeader, arch: str, key: str) -> Any:
    value = _meta(h, arch, key)
    if value is None:
        raise UsageError(f"the GGUF file lacks {arch}.{key}")
    return value


def _number(x: float) -> float | int:
    """A fitted constant, shown as a whole number when it is one."""
    return round(x) if abs(x - round(x)) < 1e-3 * max(1.0, abs(x)) else x


def _llama3_factors(dims: int, base: float, c: dict[str, Any]) -> list[float]:
    """The per-frequency factors that mlx-lm's Llama3RoPE applies for a scaling config."""
    factor, low, high, orig = (
        c["factor"],
        c["low_freq_factor"],
        c["high_freq_factor"],
        c["original_max_position_embeddings"],
    )
    out = []
    for i in range(0, dims, 2):
        wavelen = 2 * math.pi * base ** (i / dims)
        if wavelen > orig / low:
            out.append(factor)
        elif wavelen > orig / high:
            smooth = (orig / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
        else:
            out.append(1.0)
    return out


def _fit_llama3(freqs: list[float], dims: int, base: float) -> dict[str, Any]:
    """Recover Llama 3 rope scaling constants from llama.cpp's rope_freqs tensor."""
    factor = max(freqs)
    waves = [2 * math.pi * base ** (i / dims) for i in range(0, dims, 2)]
    ones = [w for w, f in zip(waves, freqs) if f <= 1 + 1e-4]
    full = [w for w, f in zip(waves, freqs) if f >= factor * (1 - 1e-4)]
    mid = [
        (w, (1 / f - 1 / factor) / (1 - 1 / factor))
        for w, f in zip(waves, freqs)
        if 1 + 1e-4 < f < factor * (1 - 1e-4)
    ]
    if not ones and not mid:
        return {"rope_type": "linear", "factor": _number(factor)}  # every frequency scaled alike
    # Only ratios are fixed by the factors, so low_freq_factor is pinned to 1.
    tries: list[tuple[float, float]] = []  # (original context, high_freq_factor)
    if len(mid) >= 2:
        # smooth = orig/(high-low)/wavelen - low/(high-low): a line in 1/wavelen; fit it.
        xs, ys = [1 / w for w, _ in mid], [s for _, s in mid]
        mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
        slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sum(
            (x - mean_x) ** 2 for x in xs
        )
        b = slope * mean_x - mean_y
        if b > 0:
            tries.append((slope / b, (1 + b) / b))
    elif mid:
        w, smooth = mid[0]
        top = min(full, default=w * 4)
        for t in (0.5, 0.25, 0.75, 0.1, 0.9):
            orig = w * (top / w) ** t
            tries.append((orig, 1 + (orig / w - 1) / smooth))
    else:
        orig = min(full, default=max(ones) * 4)
        tries.append((orig, orig / max(ones)))  # no smoothed band: any boundary between will do
    for orig, high in tries:
        for rounded in (True, False):
            num: Callable[[float], float] = _number if rounded else float
            config: dict[str, Any] = {
                "rope_type": "llama3",
                "factor": num(factor),
                "low_freq_factor": 1,
                "high_freq_factor": num(high),
                "original_max_position_embeddings": num(orig),
            }
            got = _llama3_factors(dims, base, config)
            if all(abs(g - f) <= 1e-3 * max(1.0, f) for g, f in zip(got, freqs)):
                return config
    raise UsageError("rope_freqs.weight does not follow Llama 3 rope scaling; not supported")


def _rope_scaling(
    h: GGUFHeader, arch: str, dims: int, base: float, rope_freqs: list[float] | None
) -> dict[str, Any] | None:
    if rope_freqs is not None and max(rope_freqs) > 1 + 1e-4:
        return _fit_llama3(rope_freqs, dims, base)
    kind = _meta(h, arch, "rope.scaling.type")
    factor = _meta(h, arch, "rope.scaling.factor") or _meta(h, arch, "rope.scale_linear")
    if kind is None and factor and float(factor) != 1.0:
        kind = "linear"  # older files carry only rope.scale_linear
    if kind in (None, "none") or (kind == "linear" and not factor):
        return None
    if kind == "linear":
        return {"rope_type": "linear", "factor": float(factor)}
    if kind == "yarn":
        out: dict[str, Any] = {"rope_type": "yarn", "factor": float(factor or 1.0)}
        orig = _meta(h, arch, "rope.scaling.original_context_length")
        if orig:
            out["original_max_position_embeddings"] = int(orig)
        for key in ("beta_fast", "beta_slow"):
            value = _meta(h, arch, f"rope.scaling.yarn_{key}")
            if value is not None:
                out[key] = float(value)
        return out
    raise UsageError(
        f"rope scaling type {kind!r} is not supported (supported: linear, yarn, llama3)"
    )


def config(h: GGUFHeader, bits: dict[str, int], rope_freqs: list[float] | None) -> dict[str, Any]:
    """config.json for mlx-lm's llama model."""
    arch = str(h.get("general.architecture"))
    names = {t.name for t in h.tensors}
    embd = next(t for t in h.tensors if t.name == "token_embd.weight")
    hidden = int(_required(h, arch, "embedding_length"))
    heads = int(_required(h, arch, "attention.head_count"))
    if heads <= 0 or hidden <= 0:
        raise UsageError(f"the GGUF file has {heads} attention heads and width {hidden}")
    head_dim = int(_meta(h, arch, "attention.key_length", hidden // heads))
    if int(_meta(h, arch, "attention.value_length", head_dim)) != head_dim:
        raise UsageError("attention.value_length differs from key_length; not supported")
    rope_dims = int(_meta(h, arch, "rope.dimension_count", head_dim))
    if rope_dims != head_dim:
        raise UsageError(
            f"partial rotary embedding ({rope_dims} of {head_dim} dims) is not supported"
        )
    base = float(_meta(h, arch, "rope.freq_base", 10000.0))
    cfg: dict[str, Any] = {
        "model_type": "llama",
        "hidden_size": hidden,
        "num_hidden_layers": int(_required(h, arch, "block_count")),
        "intermediate_size": int(_required(h, arch, "feed_forward_length")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(_meta(h, arch, "attention.head_count_kv", heads)),
        "head_dim": head_dim,
        "rms_norm_eps": float(_meta(h, arch, "attention.layer_norm_rms_epsilon", 1e-5)),
        "vocab_size": int(embd.shape[1])
        if len(embd.shape) == 2
        else len(h.get("tokenizer.ggml.tokens", [])),
        "max_position_embeddings": int(_meta(h, arch, "context_length", 4096)),
        "rope_theta": base,
        # llama.cpp stores Q and K rows interleaved, the order traditional rope rotates.
        "rope_traditional": True,
        "rope_scaling": _rope_scaling(h, arch, head_dim, base, rope_freqs),
        "tie_word_embeddings": "output.weight" not in names,
        "attention_bias": any(re.search(r"\.attn_[a-z]+\.bias$", n) for n in names),
        "mlp_bias": any(re.search(r"\.ffn_[a-z]+\.bias$", n) for n in names),
    }
    tokens = h.get("tokenizer.ggml.tokens", [])
    bos = h.get("tokenizer.ggml.bos_token_id")
    if isinstance(bos, int):
        cfg["bos_token_id"] = bos
    # End-of-turn tokens also end a generation (Llama 3's <|eot_id|> beside <|end_of_text|>).
    eos = [h.get(f"tokenizer.ggml.{k}_token_id") for k in ("eos", "eot", "eom")]
    eos_ids = list(
        dict.fromkeys(i for i in eos if isinstance(i, int) and 0 <= i < max(len(tokens), 1))
    )
    if eos_ids:
        cfg["eos_token_id"] = eos_ids[0] if len(eos_ids) == 1 else eos_ids
    if bits:
        default = Counter(bits.values()).most_common(1)[0][0]
        quant: dict[str, Any] = {"group_size": GROUP_SIZE, "bits": default}
        # Per-layer entries where a layer differs (SmolLM2's embedding is Q8_0, the rest Q4_1).
        quant.update(
            {p: {"group_size": GROUP_SIZE, "bits": b} for p, b in bits.items() if b != default}
        )
        cfg["quantization"] = quant
        cfg["quantization_config"] = quant
    return cfg
