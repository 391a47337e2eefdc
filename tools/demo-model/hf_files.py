"""Writes the demo model as a Hugging Face checkpoint and its adapters as PEFT adapters, by hand.

The safetensors writer/reader, the byte alphabet and the PEFT adapter_config come from tools/hf-reference, which
writes the test fixtures the same way.
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hf-reference"))
import make_fixtures as hf  # noqa: E402

BOS, EOS = 256, 257
# Ids after the 256 bytes, as src/synth/byte-tokenizer.ts numbers them.
SPECIAL_TOKENS = ["<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"]
VOCAB = 256 + len(SPECIAL_TOKENS)
IM_END = 256 + SPECIAL_TOKENS.index("<|im_end|>")
MODEL_NAME = "loraserve-demo"
# ChatML, as src/synth/byte-tokenizer.ts writes it.
CHAT_TEMPLATE = ("{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + "
                 "'<|im_end|>\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
                 "{%- endif %}")


def encode(text):
    """What the shipped tokenizer gives for a document: `<s>` then one token per UTF-8 byte."""
    return [BOS, *text]


def tokenizer_json():
    """Byte-level BPE without merges (token b is byte b); the post-processor prepends `<s>`."""
    symbols = hf.bytes_to_unicode()
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [hf.added_token(256 + i, t) for i, t in enumerate(SPECIAL_TOKENS)],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [BOS], "tokens": ["<s>"]}},
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {symbols[b]: b for b in range(256)}, "merges": []},
    }


def tokenizer_config():
    return {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": {str(256 + i): {k: v for k, v in hf.added_token(256 + i, t).items() if k != "id"}
                                 for i, t in enumerate(SPECIAL_TOKENS)},
        "additional_special_tokens": SPECIAL_TOKENS[3:],
        "bos_token": "<s>",
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "</s>",
        "model_max_length": 512,
        "pad_token": "<pad>",
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": None,
    }


def config_json(cfg):
    return {
        "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": BOS, "eos_token_id": EOS, "head_dim": cfg.head_dim, "hidden_act": "silu",
        "hidden_size": cfg.hidden, "initializer_range": 0.02, "intermediate_size": cfg.intermediate,
        "max_position_embeddings": cfg.max_positions, "mlp_bias": False, "model_type": "llama",
        "num_attention_heads": cfg.heads, "num_hidden_layers": cfg.layers, "num_key_value_heads": cfg.kv_heads,
        "pretraining_tp": 1, "rms_norm_eps": cfg.eps, "rope_scaling": None, "rope_theta": cfg.rope_theta,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": hf.TRANSFORMERS_VERSION,
        "use_cache": True, "vocab_size": cfg.vocab,
    }


def base_tensors(model):
    return {k: v for k, v in model.state_dict().items() if ".lora_" not in k}


def write_model(model, out):
    out.mkdir(parents=True, exist_ok=True)
    hf.write_json(out / "config.json", config_json(model.cfg))
    hf.write_json(out / "generation_config.json", {"bos_token_id": BOS, "eos_token_id": [EOS, IM_END],
                                                   "transformers_version": hf.TRANSFORMERS_VERSION})
    hf.write_json(out / "tokenizer.json", tokenizer_json())
    hf.write_json(out / "tokenizer_config.json", tokenizer_config())
    hf.write_safetensors(out / "model.safetensors", base_tensors(model), torch.bfloat16)


def read_model_tensors(model_dir):
    """The stored weights as fp32 (bf16 upcasts exactly)."""
    return {k: v.float() for k, v in hf.read_safetensors(model_dir / "model.safetensors").items()}


def write_adapter(model, rank, alpha, out):
    spec = hf.AdapterSpec(out.name, r=rank, alpha=alpha, target_modules=hf.ALL_PROJECTIONS, dtype=torch.float16)
    tensors = {}
    for i, p, module in model.projections():
        block = "self_attn" if p in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
        name = f"base_model.model.model.layers.{i}.{block}.{p}"
        tensors[f"{name}.lora_A.weight"] = module.lora_A
        tensors[f"{name}.lora_B.weight"] = module.lora_B
    out.mkdir(parents=True, exist_ok=True)
    hf.write_json(out / "adapter_config.json", hf.adapter_config_json(spec, MODEL_NAME))
    hf.write_safetensors(out / "adapter_model.safetensors", tensors, spec.dtype)
