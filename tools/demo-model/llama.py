"""A Llama decoder in PyTorch with the parameter names of transformers' LlamaForCausalLM, and PEFT-style LoRA.

The math is transformers' (RMSNorm, rotate-half RoPE, grouped-query attention with kv head h // group, SwiGLU MLP,
untied lm_head), so `state_dict()` is a checkpoint that any Llama implementation reads.
"""
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class LlamaConfig:
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    max_positions: int
    rope_theta: float = 10000.0
    eps: float = 1e-5

    @property
    def head_dim(self):
        return self.hidden // self.heads


class LoraLinear(nn.Module):
    """`y = x Wᵀ`, plus PEFT's `scale · (x Aᵀ) Bᵀ` once `add_lora` was called (A `[r, in]`, B `[out, r]`)."""

    def __init__(self, fan_in, fan_out):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(fan_out, fan_in))
        self.lora_A = None
        self.lora_B = None
        self.scale = 0.0

    def add_lora(self, rank, alpha, generator):
        fan_out, fan_in = self.weight.shape
        # PEFT's init: A kaiming-uniform (a = √5, so bound 1/√in), B zero, so training starts from the base.
        bound = 1 / math.sqrt(fan_in)
        self.lora_A = nn.Parameter(torch.rand(rank, fan_in, generator=generator) * 2 * bound - bound)
        self.lora_B = nn.Parameter(torch.zeros(fan_out, rank))
        self.scale = alpha / rank

    def forward(self, x):
        y = F.linear(x, self.weight)
        if self.lora_A is not None:
            y = y + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scale
        return y


class RMSNorm(nn.Module):
    def __init__(self, hidden, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden))
        self.eps = eps

    def forward(self, x):
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)) * self.weight


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        hd = cfg.head_dim
        self.q_proj = LoraLinear(cfg.hidden, cfg.heads * hd)
        self.k_proj = LoraLinear(cfg.hidden, cfg.kv_heads * hd)
        self.v_proj = LoraLinear(cfg.hidden, cfg.kv_heads * hd)
        self.o_proj = LoraLinear(cfg.heads * hd, cfg.hidden)

    def forward(self, x, cos, sin, mask):
        cfg, (b, t, _) = self.cfg, x.shape
        hd = cfg.head_dim
        q = self.q_proj(x).view(b, t, cfg.heads, hd).transpose(1, 2).float()
        k = self.k_proj(x).view(b, t, cfg.kv_heads, hd).transpose(1, 2).float()
        v = self.v_proj(x).view(b, t, cfg.kv_heads, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        group = cfg.heads // cfg.kv_heads
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
        scores = (q @ k.transpose(-1, -2)).float() / math.sqrt(hd) + mask
        out = torch.softmax(scores, dim=-1).to(v.dtype) @ v
        return self.o_proj(out.transpose(1, 2).reshape(b, t, cfg.heads * hd))


class Mlp(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.gate_proj = LoraLinear(cfg.hidden, cfg.intermediate)
        self.up_proj = LoraLinear(cfg.hidden, cfg.intermediate)
        self.down_proj = LoraLinear(cfg.intermediate, cfg.hidden)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden, cfg.eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden, cfg.eps)
        self.mlp = Mlp(cfg)

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Decoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab, cfg.hidden)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.layers))
        self.norm = RMSNorm(cfg.hidden, cfg.eps)


class LlamaForCausalLM(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.model = Decoder(cfg)
        self.lm_head = nn.Linear(cfg.hidden, cfg.vocab, bias=False)
        hd = cfg.head_dim
        inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
        freqs = torch.arange(cfg.max_positions).float()[:, None] * inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)

    def init_weights(self, generator):
        """GPT-2 style: std 0.02, the projections into the residual stream scaled by 1/√(2·layers)."""
        residual_std = 0.02 / math.sqrt(2 * self.cfg.layers)
        for name, p in self.named_parameters():
            if name.endswith("layernorm.weight") or name == "model.norm.weight":
                nn.init.ones_(p)
            else:
                std = residual_std if name.endswith(("o_proj.weight", "down_proj.weight")) else 0.02
                with torch.no_grad():
                    p.copy_(torch.randn(p.shape, generator=generator) * std)

    def projections(self):
        """(layer, projection name, module) for the 7 projections of every layer."""
        for i, layer in enumerate(self.model.layers):
            for p in PROJECTIONS:
                yield i, p, getattr(layer.self_attn if p in ("q_proj", "k_proj", "v_proj", "o_proj") else layer.mlp, p)

    def forward(self, ids):
        t = ids.shape[1]
        mask = torch.full((t, t), float("-inf"), device=ids.device).triu(1)
        x = self.model.embed_tokens(ids)
        cos, sin = self.cos[:t], self.sin[:t]
        for layer in self.model.layers:
            x = layer(x, cos, sin, mask)
        return self.lm_head(self.model.norm(x))


def loss_fn(model, batch):
    """Mean next-token cross-entropy over a batch `[rows, t + 1]` of token ids (bf16 matmuls, fp32 loss)."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(batch[:, :-1])
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
