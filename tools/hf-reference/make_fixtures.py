#!/usr/bin/env python3
"""Writes tiny Hugging Face checkpoints and PEFT adapters under test/fixtures/hf/, then computes the
greedy tokens their math gives with an independent plain-PyTorch forward pass (expected.json).

The forward pass follows the semantics of transformers' LlamaForCausalLM / Qwen2ForCausalLM and of
PEFT's LoRA layers; it reads the model and adapters back from the files written, so the expected
outputs describe those files and nothing else. See README.md next to this file.
"""
import json
import math
import re
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "test" / "fixtures" / "hf"
NEW_TOKENS = 16
# Smallest accepted gap between the top two logits at every greedy step, so a correct fp32
# implementation (errors ~1e-5) cannot pick a different token through rounding alone.
MIN_MARGIN = 5e-3
# A random model that repeats one token says little; demand variety in the 16 tokens.
MIN_DISTINCT = 8
BOS, EOS, VOCAB = 256, 257, 258
TRANSFORMERS_VERSION = "4.46.0"
# 6-9 bytes each, so prompts are 6-10 tokens with or without <s>.
PROMPTS = ["Hello!", "Once upon", "The cat!", "abc xyz", "Hi there", "Why not?", "LoRA, hi", "Tiny lm"]

SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}
TORCH_DTYPES = {v: k for k, v in SAFETENSORS_DTYPES.items()}
STORAGE_INT = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}


# ---------------------------------------------------------------- safetensors (by hand)

def write_safetensors(path, tensors, dtype):
    """Header: 8-byte LE length, JSON (space-padded to 8 bytes), then raw LE data in header order."""
    header = {"__metadata__": {"format": "pt"}}
    blobs, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().to(dtype).contiguous()
        # Reinterpret as same-width ints so numpy (which lacks bfloat16) can give the bytes.
        raw = t.view(STORAGE_INT[dtype]).numpy().tobytes()
        header[name] = {"dtype": SAFETENSORS_DTYPES[dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    js = json.dumps(header, separators=(",", ":")).encode()
    js += b" " * (-len(js) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(js)))
        f.write(js)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    """Returns {name: float64 tensor}; checks every offset against the file size."""
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = TORCH_DTYPES[info["dtype"]]
        start, end = info["data_offsets"]
        if not 0 <= start <= end <= len(body):
            raise ValueError(f"{path}: tensor {name} offsets {start}..{end} outside {len(body)} data bytes")
        ints = torch.frombuffer(bytearray(body[start:end]), dtype=STORAGE_INT[dtype])
        out[name] = ints.view(dtype).reshape(info["shape"]).to(torch.float64)
    return out


# ---------------------------------------------------------------- tokenizer (byte-level BPE, no merges)

def bytes_to_unicode():
    """GPT-2's byte -> printable character table, the symbols of the ByteLevel pre-tokenizer."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def added_token(token_id, content):
    return {"id": token_id, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": True}


def tokenizer_json(add_bos):
    if add_bos:  # Llama 3 style: the post-processor prepends <s>.
        post = {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {"<s>": {"id": "<s>", "ids": [BOS], "tokens": ["<s>"]}}}
    else:  # Qwen2 style: no special token added.
        post = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    symbols = bytes_to_unicode()
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [added_token(BOS, "<s>"), added_token(EOS, "</s>")],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {symbols[b]: b for b in range(256)}, "merges": []},
    }


CHAT_TEMPLATE = ("{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + '</s>\\n' }}"
                 "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}")


def tokenizer_config(add_bos):
    return {
        "add_bos_token": add_bos,
        "add_eos_token": False,
        "added_tokens_decoder": {str(t["id"]): {k: v for k, v in t.items() if k != "id"}
                                 for t in (added_token(BOS, "<s>"), added_token(EOS, "</s>"))},
        "bos_token": "<s>" if add_bos else None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "</s>",
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 256,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }


def encode(text, add_bos):
    """What the tokenizer above gives: with no merges every UTF-8 byte is its own token, id = byte value."""
    return ([BOS] if add_bos else []) + list(text.encode("utf-8"))


# ---------------------------------------------------------------- checkpoints

@dataclass
class ModelSpec:
    name: str
    architecture: str
    intermediate: int
    eps: float
    rope_theta: float
    rope_scaling: dict
    tied: bool
    qkv_bias: bool
    dtype: torch.dtype
    add_bos: bool
    # Tied models need small embeddings: with std 1 each position's own embedding dominates its logits
    # (|e|^2 = hidden), so greedy decoding repeats the last token forever.
    embed_std: float = 1.0
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2

    @property
    def head_dim(self):
        return self.hidden // self.heads


LLAMA = ModelSpec("tiny-llama", "llama", intermediate=160, eps=1e-5, rope_theta=10000.0,
                  rope_scaling={"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                "original_max_position_embeddings": 64, "rope_type": "llama3"},
                  tied=False, qkv_bias=False, dtype=torch.bfloat16, add_bos=True)
QWEN2 = ModelSpec("tiny-qwen2", "qwen2", intermediate=128, eps=1e-6, rope_theta=1000000.0, rope_scaling=None,
                  tied=True, qkv_bias=True, dtype=torch.float32, add_bos=False, embed_std=0.1)


def config_json(spec):
    common = {
        "attention_dropout": 0.0, "bos_token_id": BOS, "eos_token_id": EOS, "hidden_act": "silu",
        "hidden_size": spec.hidden, "initializer_range": 0.02, "intermediate_size": spec.intermediate,
        "max_position_embeddings": 256, "num_attention_heads": spec.heads, "num_hidden_layers": spec.layers,
        "num_key_value_heads": spec.kv_heads, "rms_norm_eps": spec.eps, "rope_scaling": spec.rope_scaling,
        "rope_theta": spec.rope_theta, "tie_word_embeddings": spec.tied,
        "torch_dtype": {torch.bfloat16: "bfloat16", torch.float32: "float32"}[spec.dtype],
        "transformers_version": TRANSFORMERS_VERSION, "use_cache": True, "vocab_size": VOCAB,
    }
    if spec.architecture == "llama":
        extra = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "attention_bias": False,
                 "head_dim": spec.head_dim, "mlp_bias": False, "pretraining_tp": 1}
    else:
        extra = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "max_window_layers": spec.layers,
                 "sliding_window": 256, "use_sliding_window": False}
    return dict(sorted({**common, **extra}.items()))


def generation_config_json(spec):
    # Qwen2 checkpoints list their stop ids; Llama ones often give one.
    eos = [EOS] if spec.architecture == "qwen2" else EOS
    return {"bos_token_id": BOS, "do_sample": False, "eos_token_id": eos, "transformers_version": TRANSFORMERS_VERSION}


def random_weights(spec, seed):
    """Projections with std ~1/sqrt(fan_in), norms 1 + noise, biases std 0.5: logits of order 1."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, std=1.0):
        return torch.randn(*shape, generator=g) * std

    h, hd = spec.hidden, spec.head_dim
    q_out, kv_out = spec.heads * hd, spec.kv_heads * hd
    w = {"model.embed_tokens.weight": randn(VOCAB, h, std=spec.embed_std)}
    for i in range(spec.layers):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = 1 + randn(h, std=0.1)
        w[p + "post_attention_layernorm.weight"] = 1 + randn(h, std=0.1)
        for proj, (fan_in, fan_out) in {"q_proj": (h, q_out), "k_proj": (h, kv_out), "v_proj": (h, kv_out),
                                        "o_proj": (q_out, h)}.items():
            # Sharper attention (q, k doubled) makes the next token depend on more than the last one,
            # which keeps greedy decoding of a random model out of short loops.
            gain = 2.0 if proj in ("q_proj", "k_proj") else 1.0
            w[p + f"self_attn.{proj}.weight"] = randn(fan_out, fan_in, std=gain * fan_in ** -0.5)
            if spec.qkv_bias and proj != "o_proj":
                w[p + f"self_attn.{proj}.bias"] = randn(fan_out, std=0.5)
        w[p + "mlp.gate_proj.weight"] = randn(spec.intermediate, h, std=h ** -0.5)
        w[p + "mlp.up_proj.weight"] = randn(spec.intermediate, h, std=h ** -0.5)
        w[p + "mlp.down_proj.weight"] = randn(h, spec.intermediate, std=spec.intermediate ** -0.5)
    w["model.norm.weight"] = 1 + randn(h, std=0.1)
    if not spec.tied:  # save_pretrained drops the shared lm_head tensor of a tied model
        w["lm_head.weight"] = randn(VOCAB, h, std=h ** -0.5)
    return w


def write_json(path, obj):
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_checkpoint(spec, seed):
    d = OUT / spec.name
    d.mkdir(parents=True, exist_ok=True)
    write_json(d / "config.json", config_json(spec))
    write_json(d / "generation_config.json", generation_config_json(spec))
    write_json(d / "tokenizer.json", tokenizer_json(spec.add_bos))
    write_json(d / "tokenizer_config.json", tokenizer_config(spec.add_bos))
    write_safetensors(d / "model.safetensors", random_weights(spec, seed), spec.dtype)
    return d


# ---------------------------------------------------------------- PEFT adapters

ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class AdapterSpec:
    name: str
    r: int
    alpha: float
    target_modules: object  # list of names (suffix match) or one regex (full match), as in PEFT
    dtype: torch.dtype = torch.float32
    use_rslora: bool = False
    rank_pattern: dict = field(default_factory=dict)
    alpha_pattern: dict = field(default_factory=dict)
    layers_to_transform: list = None


ADAPTERS = [
    AdapterSpec("adapter-a", r=8, alpha=16, target_modules=ALL_PROJECTIONS),
    AdapterSpec("adapter-b", r=4, alpha=8, target_modules=["q_proj", "v_proj"], use_rslora=True),
    AdapterSpec("adapter-c", r=8, alpha=8, target_modules=r".*\.1\.mlp\.(gate_proj|up_proj|down_proj)",
                rank_pattern={"mlp.down_proj": 2}, alpha_pattern={"mlp.gate_proj": 32}),
    AdapterSpec("adapter-d", r=4, alpha=8, target_modules=["k_proj", "o_proj", "up_proj"], dtype=torch.float16,
                layers_to_transform=[0]),
]


def adapter_config_json(spec, base):
    return {
        "alpha_pattern": spec.alpha_pattern, "auto_mapping": None, "base_model_name_or_path": base,
        "bias": "none", "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
        "layer_replication": None, "layers_pattern": None, "layers_to_transform": spec.layers_to_transform,
        "loftq_config": {}, "lora_alpha": spec.alpha, "lora_dropout": 0.0, "megatron_config": None,
        "megatron_core": "megatron.core", "modules_to_save": None, "peft_type": "LORA", "r": spec.r,
        "rank_pattern": spec.rank_pattern, "revision": None, "target_modules": spec.target_modules,
        "task_type": "CAUSAL_LM", "use_dora": False, "use_rslora": spec.use_rslora,
    }


def module_names(cfg):
    """Linear-layer names as PEFT sees them: named_modules() of the *ForCausalLM model."""
    for i in range(cfg.layers):
        for proj in ALL_PROJECTIONS:
            block = "self_attn" if proj in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
            yield i, proj, f"model.layers.{i}.{block}.{proj}"


def is_targeted(conf, name):
    """peft.tuners.tuners_utils.check_target_module_exists for a LoRA config without layers_pattern."""
    targets = conf["target_modules"]
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    if name in targets:
        return True
    found = any(name.endswith("." + t) for t in targets)
    layers = conf.get("layers_to_transform")
    if found and layers is not None and layers != []:
        if conf.get("layers_pattern"):
            raise ValueError("layers_pattern is not used by these fixtures")
        m = re.match(r".*\.[^.]*\.(\d+)\.", name)
        if m is None:
            return False
        index = int(m.group(1))
        return index == layers if isinstance(layers, int) else index in layers
    return found


def pattern_value(pattern, name, default):
    """PEFT's get_pattern_key: the first key K with re.match(r"(.*\\.)?K$", name) picks the value."""
    for key, value in pattern.items():
        if re.match(rf"(.*\.)?{key}$", name):
            return value
    return default


def lora_scale(conf, name, mistake=None):
    """PEFT LoraLayer.update_layer: alpha/r, or alpha/sqrt(r) with use_rslora. `mistake` names a wrong reading."""
    r = pattern_value({} if mistake == "rank_pattern ignored in scale" else conf["rank_pattern"], name, conf["r"])
    alpha = pattern_value({} if mistake == "alpha_pattern ignored" else conf["alpha_pattern"], name, conf["lora_alpha"])
    rslora = conf["use_rslora"] and mistake != "use_rslora ignored"
    return alpha / math.sqrt(r) if rslora else alpha / r


def write_adapter(spec, cfg, base, seed):
    """B is drawn so that scale * B @ A moves a projection's output by about half its own size."""
    g = torch.Generator().manual_seed(seed)
    conf = adapter_config_json(spec, base)
    tensors = {}
    for i, proj, name in module_names(cfg):
        if not is_targeted(conf, name):
            continue
        fan_in, fan_out = cfg.projection_shape(proj)
        r = pattern_value(conf["rank_pattern"], name, spec.r)
        scale = lora_scale(conf, name)
        tensors[f"base_model.model.{name}.lora_A.weight"] = torch.randn(r, fan_in, generator=g) * fan_in ** -0.5
        b_std = 0.5 / (scale * r ** 0.5)
        tensors[f"base_model.model.{name}.lora_B.weight"] = torch.randn(fan_out, r, generator=g) * b_std
    d = OUT / "adapters" / spec.name
    d.mkdir(parents=True, exist_ok=True)
    write_json(d / "adapter_config.json", conf)
    write_safetensors(d / "adapter_model.safetensors", tensors, spec.dtype)
    return d


# ---------------------------------------------------------------- reading back

@dataclass
class Config:
    architecture: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    eps: float
    rope_theta: float
    rope_scaling: dict
    tied: bool

    def projection_shape(self, proj):
        h, q, kv = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, self.intermediate), "up_proj": (h, self.intermediate),
                "down_proj": (self.intermediate, h)}[proj]


def read_config(model_dir):
    c = json.loads((model_dir / "config.json").read_text())
    return Config(architecture=c["model_type"], hidden=c["hidden_size"], intermediate=c["intermediate_size"],
                  layers=c["num_hidden_layers"], heads=c["num_attention_heads"], kv_heads=c["num_key_value_heads"],
                  head_dim=c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"], eps=c["rms_norm_eps"],
                  rope_theta=c["rope_theta"], rope_scaling=c.get("rope_scaling"), tied=c["tie_word_embeddings"])


def read_adapter(adapter_dir, cfg, mistake=None):
    """{(layer, projection): (A [r,in], B [out,r], scale)} for the modules the config targets."""
    conf = json.loads((adapter_dir / "adapter_config.json").read_text())
    if conf["peft_type"] != "LORA" or conf["fan_in_fan_out"] or conf["bias"] != "none" or conf.get("use_dora"):
        raise ValueError(f"{adapter_dir}: only plain LoRA is modelled here")
    tensors = read_safetensors(adapter_dir / "adapter_model.safetensors")
    lora = {}
    for i, proj, name in module_names(cfg):
        if not is_targeted(conf, name):
            continue
        a = tensors.pop(f"base_model.model.{name}.lora_A.weight")
        b = tensors.pop(f"base_model.model.{name}.lora_B.weight")
        fan_in, fan_out = cfg.projection_shape(proj)
        r = pattern_value(conf["rank_pattern"], name, conf["r"])
        if tuple(a.shape) != (r, fan_in) or tuple(b.shape) != (fan_out, r):
            raise ValueError(f"{adapter_dir}: {name} has A {list(a.shape)}, B {list(b.shape)}; rank {r} expected")
        lora[(i, proj)] = (a, b, lora_scale(conf, name, mistake))
    if tensors:
        raise ValueError(f"{adapter_dir}: tensors for untargeted modules: {sorted(tensors)}")
    return lora


# ---------------------------------------------------------------- the math

def rope_inv_freq(cfg, mistake):
    """transformers' _compute_default_rope_parameters and _compute_llama3_parameters, in fp32 as there."""
    dim = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    rs = cfg.rope_scaling
    if rs is None or mistake == "llama3 rope scaling ignored":
        return inv_freq
    if rs.get("rope_type", rs.get("type")) != "llama3":
        raise ValueError(f"rope_scaling {rs} is not modelled here")
    factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old_context_len = rs["original_max_position_embeddings"]
    low_freq_wavelen = old_context_len / low
    high_freq_wavelen = old_context_len / high
    wavelen = 2 * math.pi / inv_freq
    inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth_factor = (old_context_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, inv_freq_llama)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rotate_interleaved(x):
    return torch.stack((-x[..., 1::2], x[..., 0::2]), dim=-1).flatten(-2)


def rms_norm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


@dataclass
class Model:
    cfg: Config
    weights: dict  # float64, as read


def forward(model, ids, dtype, lora=None, mistake=None):
    """Logits [len(ids), vocab] of LlamaForCausalLM / Qwen2ForCausalLM (+ PEFT LoRA) computed in `dtype`."""
    cfg = model.cfg
    w = {k: v.to(dtype) for k, v in model.weights.items()}
    lora = {key: (a.to(dtype), b.to(dtype), s) for key, (a, b, s) in (lora or {}).items()}
    n, hd = len(ids), cfg.head_dim

    def linear(x, i, block, proj):
        p = f"model.layers.{i}.{block}.{proj}."
        y = x @ w[p + "weight"].T
        if p + "bias" in w and mistake != "q/k/v biases ignored":
            y = y + w[p + "bias"]
        if (i, proj) in lora:
            a, b, scale = lora[(i, proj)]
            y = y + (x @ a.T @ b.T) * scale
        return y

    freqs = torch.arange(n, dtype=dtype)[:, None] * rope_inv_freq(cfg, mistake).to(dtype)[None, :]
    if mistake == "interleaved rope":
        emb, rotate = freqs.repeat_interleave(2, dim=-1), rotate_interleaved
    else:
        emb, rotate = torch.cat((freqs, freqs), dim=-1), rotate_half
    cos, sin = emb.cos(), emb.sin()
    group = cfg.heads // cfg.kv_heads
    # HF repeat_kv: query head h reads kv head h // group.
    heads = torch.arange(cfg.heads)
    kv_of_head = heads % cfg.kv_heads if mistake == "gqa heads interleaved" else heads // group
    causal = torch.full((n, n), float("-inf"), dtype=dtype).triu(1)

    x = w["model.embed_tokens.weight"][torch.tensor(ids)]
    for i in range(cfg.layers):
        h = rms_norm(x, w[f"model.layers.{i}.input_layernorm.weight"], cfg.eps)
        q = linear(h, i, "self_attn", "q_proj").view(n, cfg.heads, hd).transpose(0, 1)
        k = linear(h, i, "self_attn", "k_proj").view(n, cfg.kv_heads, hd).transpose(0, 1)
        v = linear(h, i, "self_attn", "v_proj").view(n, cfg.kv_heads, hd).transpose(0, 1)
        q = q * cos + rotate(q) * sin
        k = k * cos + rotate(k) * sin
        k, v = k[kv_of_head], v[kv_of_head]
        scores = q @ k.transpose(-1, -2) / math.sqrt(hd) + causal
        attn = (torch.softmax(scores, dim=-1) @ v).transpose(0, 1).reshape(n, cfg.heads * hd)
        x = x + linear(attn, i, "self_attn", "o_proj")
        h = rms_norm(x, w[f"model.layers.{i}.post_attention_layernorm.weight"], cfg.eps)
        act = torch.nn.functional.silu(linear(h, i, "mlp", "gate_proj")) * linear(h, i, "mlp", "up_proj")
        x = x + linear(act, i, "mlp", "down_proj")
    x = rms_norm(x, w["model.norm.weight"], cfg.eps)
    head = w["model.embed_tokens.weight"] if cfg.tied else w["lm_head.weight"]
    return x @ head.T


def greedy(model, prompt_ids, dtype, lora=None, mistake=None):
    """16 argmax steps with no stop; returns (ids, last-position logits of every step)."""
    ids, steps = list(prompt_ids), []
    for _ in range(NEW_TOKENS):
        logits = forward(model, ids, dtype, lora, mistake)[-1]
        steps.append(logits)
        ids.append(int(torch.argmax(logits)))
    return ids[len(prompt_ids):], steps


def min_margin(steps):
    tops = [logits.topk(2).values for logits in steps]
    return min(float(t[0] - t[1]) for t in tops)


# ---------------------------------------------------------------- choosing seeds and prompt

BASE_MISTAKES = {"llama": ["llama3 rope scaling ignored", "interleaved rope", "gqa heads interleaved"],
                 "qwen2": ["q/k/v biases ignored", "interleaved rope", "gqa heads interleaved"]}
ADAPTER_MISTAKES = {"adapter-b": ["use_rslora ignored"],
                    "adapter-c": ["rank_pattern ignored in scale", "alpha_pattern ignored"]}


def run_case(model, prompt_ids, lora):
    ids, steps = greedy(model, prompt_ids, torch.float64, lora)
    return {"ids": ids, "steps": steps, "margin": min_margin(steps)}


def try_prompt(model, adapters, add_bos, prompt, adapter_dirs):
    """The cases for one prompt, or the reason the prompt is rejected."""
    prompt_ids = encode(prompt, add_bos)
    base = run_case(model, prompt_ids, None)
    cases = {None: base}
    for name, lora in adapters.items():
        cases[name] = run_case(model, prompt_ids, lora)
    for name, c in cases.items():
        if c["margin"] <= MIN_MARGIN:
            return f"{name or 'base'}: margin {c['margin']:.2e}"
        if len(set(c["ids"])) < MIN_DISTINCT:
            return f"{name or 'base'}: only {len(set(c['ids']))} distinct tokens"
        if name is not None and c["ids"] == base["ids"]:
            return f"{name}: same tokens as the base"
    for mistake in BASE_MISTAKES[model.cfg.architecture]:
        if greedy(model, prompt_ids, torch.float64, None, mistake)[0] == base["ids"]:
            return f"base: '{mistake}' gives the same tokens"
    for name in adapters:
        for mistake in ADAPTER_MISTAKES.get(name, []):
            wrong = read_adapter(adapter_dirs[name], model.cfg, mistake)
            if greedy(model, prompt_ids, torch.float64, wrong)[0] == cases[name]["ids"]:
                return f"{name}: '{mistake}' gives the same tokens"
    return prompt_ids, cases


def build_family(spec, adapter_specs, seed_base, attempts=20):
    for attempt in range(attempts):
        seed = seed_base + 100 * attempt
        model_dir = write_checkpoint(spec, seed)
        cfg = read_config(model_dir)
        model = Model(cfg, read_safetensors(model_dir / "model.safetensors"))
        adapter_dirs = {a.name: write_adapter(a, cfg, spec.name, seed + 1 + j) for j, a in enumerate(adapter_specs)}
        adapters = {name: read_adapter(d, cfg) for name, d in adapter_dirs.items()}
        for prompt in PROMPTS:
            result = try_prompt(model, adapters, spec.add_bos, prompt, adapter_dirs)
            if isinstance(result, str):
                print(f"  {spec.name} seed {seed} prompt {prompt!r}: rejected ({result})", file=sys.stderr)
                continue
            print(f"  {spec.name} seed {seed} prompt {prompt!r}: accepted", file=sys.stderr)
            return model, adapters, prompt, result
    sys.exit(f"{spec.name}: no seed/prompt met the criteria in {attempts} attempts")


def expected_case(model, adapters, spec, adapter, prompt, prompt_ids, case):
    # An fp32 run of the same math must pick the same tokens; its largest logit error sizes test tolerances.
    ids32, steps32 = greedy(model, prompt_ids, torch.float32, adapters.get(adapter))
    if ids32 != case["ids"]:
        sys.exit(f"{spec.name}/{adapter}: fp32 greedy {ids32} differs from fp64 {case['ids']}")
    err = max(float((a.double() - b).abs().max()) for a, b in zip(steps32, case["steps"]))
    top = case["steps"][0].topk(5)
    return {
        "model": spec.name,
        "adapter": adapter,
        "prompt": prompt,
        "prompt_ids": prompt_ids,
        "greedy_ids": case["ids"],
        "first_logits_top5": [[int(i), round(float(v), 6)] for v, i in zip(top.values, top.indices)],
        "min_margin": round(case["margin"], 6),
        "fp32_max_abs_logit_error": float(f"{err:.3g}"),
    }


def main():
    if sys.byteorder != "little":
        sys.exit("safetensors data is little-endian; run this on a little-endian machine")
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    cases = []
    for spec, adapter_specs, seed_base in ((LLAMA, ADAPTERS, 1000), (QWEN2, [], 2000)):
        model, adapters, prompt, (prompt_ids, results) = build_family(spec, adapter_specs, seed_base)
        for adapter, case in results.items():
            cases.append(expected_case(model, adapters, spec, adapter, prompt, prompt_ids, case))
    text = json.dumps({
        "generator": "tools/hf-reference/make_fixtures.py",
        "math": "float64 forward over the stored weights (BF16/F16 upcast exactly); logits rounded to 6 decimals",
        "new_tokens": NEW_TOKENS,
        "cases": cases,
    }, indent=2)
    # One line per list of numbers keeps the file readable.
    text = re.sub(r"\[[^\[\]{}\"]*\]", lambda m: json.dumps(json.loads(m.group(0))), text)
    (OUT / "expected.json").write_text(text + "\n")
    for c in cases:
        print(f"{c['model']:<11} {str(c['adapter']):<10} margin {c['min_margin']:.6f} "
              f"fp32 err {c['fp32_max_abs_logit_error']:.2e} ids {c['greedy_ids']}")


if __name__ == "__main__":
    main()
