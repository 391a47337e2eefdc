#!/usr/bin/env python3
"""Trains loraserve's demo model and its three LoRA adapters from Debian package text (see README.md).

    /usr/bin/python3 tools/demo-model/train.py [--stage all|heldout|base|adapters|check] [--quick] [--out DIR]

Stages, in order for `all`: `heldout` writes models/demo/heldout/*.txt; `base` trains the base model and writes
models/demo/; `adapters` trains one LoRA per domain on the bf16 weights just written and writes adapters/<name>/;
`check` reads the written files back with tools/hf-reference's independent float64 forward pass and compares its
loss with this model's, then prints the held-out loss table. One thread, fixed seeds: a rerun with the same torch
version and the same Debian package versions writes the same files.
"""
import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.dont_write_bytecode = True  # no __pycache__ in the repo, here or in tools/hf-reference
from corpus import load_corpus  # noqa: E402
from hf_files import VOCAB, encode, hf, read_model_tensors, write_adapter, write_model  # noqa: E402
from llama import LlamaConfig, LlamaForCausalLM, loss_fn  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CONFIG = LlamaConfig(vocab=VOCAB, hidden=256, layers=4, heads=4, kv_heads=2, intermediate=688, max_positions=512)
CONTEXT = 512
SEED = 20240601

# The base sees English prose (about Python, with its examples) and quotations, not the adapters' domains: what it
# knows of code and licences it learned from the docs, so an adapter adds a domain rather than sharpens one.
BASE_MIX = {"docs": 0.8, "quotes": 0.2}
BASE = dict(steps=800, rows=16, lr=2e-3, warmup=50, weight_decay=0.1)
ADAPTERS = {"python-code": "code", "legal": "legal", "verse": "verse"}
ADAPTER = dict(steps=300, rows=8, lr=2e-3, warmup=20, weight_decay=0.0)
LORA_RANK, LORA_ALPHA = 8, 16


class Stream:
    """A domain's documents as one token stream (`<s>` text `</s>` each), sampled in random windows."""

    def __init__(self, docs):
        parts = [torch.tensor(encode(d.text) + [hf.EOS], dtype=torch.int16) for d in docs]
        self.tokens = torch.cat(parts)

    def sample(self, rows, length, generator):
        starts = torch.randint(0, len(self.tokens) - length, (rows,), generator=generator)
        return torch.stack([self.tokens[s:s + length] for s in starts.tolist()]).long()


def mixed_batch(streams, mix, rows, generator):
    names = list(mix)
    picks = torch.multinomial(torch.tensor([mix[n] for n in names]), rows, replacement=True, generator=generator)
    return torch.cat([streams[names[i]].sample(1, CONTEXT + 1, generator) for i in picks.tolist()])


def lr_at(step, hp):
    """Linear warm-up, then cosine decay to a tenth."""
    if step < hp["warmup"]:
        return hp["lr"] * (step + 1) / hp["warmup"]
    progress = (step - hp["warmup"]) / max(1, hp["steps"] - hp["warmup"])
    return hp["lr"] * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(model, params, next_batch, hp, label):
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": hp["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}], lr=hp["lr"], betas=(0.9, 0.95))
    start, window = time.time(), []
    for step in range(hp["steps"]):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, hp)
        loss = loss_fn(model, next_batch())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        window.append(loss.item())
        if (step + 1) % 50 == 0 or step + 1 == hp["steps"]:
            elapsed = time.time() - start
            tokens = (step + 1) * hp["rows"] * CONTEXT
            print(f"{label} step {step + 1}/{hp['steps']} loss {sum(window) / len(window):.4f} "
                  f"{tokens / elapsed:.0f} tok/s {elapsed / 60:.1f} min", flush=True)
            window = []


def load_base(model_dir):
    model = LlamaForCausalLM(CONFIG)
    model.load_state_dict(read_model_tensors(model_dir), strict=True)
    return model


def stage_heldout(corpus, out):
    d = out / "models" / "demo" / "heldout"
    d.mkdir(parents=True, exist_ok=True)
    for domain, text in corpus.held_out.items():
        (d / f"{domain}.txt").write_bytes(text)


def stage_base(corpus, hp, out):
    torch.manual_seed(SEED)
    g = torch.Generator().manual_seed(SEED)
    model = LlamaForCausalLM(CONFIG)
    model.init_weights(g)
    print(f"base: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters", flush=True)
    streams = {name: Stream(corpus.train[name]) for name in BASE_MIX}
    train(model, list(model.parameters()), lambda: mixed_batch(streams, BASE_MIX, hp["rows"], g), hp, "base")
    write_model(model, out / "models" / "demo")


def stage_adapters(corpus, hp, out):
    for k, (name, domain) in enumerate(ADAPTERS.items()):
        torch.manual_seed(SEED + 1 + k)
        g = torch.Generator().manual_seed(SEED + 1 + k)
        model = load_base(out / "models" / "demo")
        model.requires_grad_(False)
        for _, _, module in model.projections():
            module.add_lora(LORA_RANK, LORA_ALPHA, g)
        params = [p for n, p in model.named_parameters() if ".lora_" in n]
        stream = Stream(corpus.train[domain])
        train(model, params, lambda: stream.sample(hp["rows"], CONTEXT + 1, g), hp, name)
        write_adapter(model, LORA_RANK, LORA_ALPHA, out / "adapters" / name)


def windows_loss(model, tokens):
    """Mean next-token loss over non-overlapping windows of CONTEXT tokens (what `loraserve eval` computes)."""
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(tokens), CONTEXT):
            window = torch.tensor(tokens[start:start + CONTEXT])[None, :]
            if window.shape[1] < 2:
                continue
            logits = model(window[:, :-1]).float()
            total += torch.nn.functional.cross_entropy(logits[0], window[0, 1:], reduction="sum").item()
            count += window.shape[1] - 1
    return total / count


def stage_check(corpus, out):
    """The written files, read back by tools/hf-reference's float64 forward pass, give this model's loss."""
    model_dir = out / "models" / "demo"
    ref_cfg = hf.read_config(model_dir)
    ref_model = hf.Model(ref_cfg, hf.read_safetensors(model_dir / "model.safetensors"))
    variants = {"base": None, **{name: out / "adapters" / name for name in ADAPTERS}}
    table = {}
    for variant, adapter_dir in variants.items():
        model = load_base(model_dir)
        ref_lora = None
        if adapter_dir is not None:
            ref_lora = hf.read_adapter(adapter_dir, ref_cfg)
            for (i, p), (a, b, scale) in ref_lora.items():
                module = dict(((li, pi), m) for li, pi, m in model.projections())[(i, p)]
                module.lora_A, module.lora_B, module.scale = torch.nn.Parameter(a.float()), torch.nn.Parameter(b.float()), scale
        for domain, text in corpus.held_out.items():
            tokens = encode(text)
            probe = tokens[:96]
            ref_logits = hf.forward(ref_model, probe, torch.float64, ref_lora)
            ref = torch.nn.functional.cross_entropy(ref_logits[:-1], torch.tensor(probe[1:])).item()
            with torch.no_grad():
                ours = torch.nn.functional.cross_entropy(model(torch.tensor([probe]))[0, :-1], torch.tensor(probe[1:])).item()
            if abs(ours - ref) > 1e-4:
                sys.exit(f"check: {variant} on {domain}: loss {ours:.6f} here, {ref:.6f} in the reference forward pass")
            table[(variant, domain)] = windows_loss(model, tokens)
    domains = list(corpus.held_out)
    print("held-out loss (nats/token)  " + "  ".join(f"{d:>8}" for d in domains))
    for variant in variants:
        print(f"{variant:27} " + "  ".join(f"{table[(variant, d)]:8.4f}" for d in domains))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=["all", "heldout", "base", "adapters", "check"], default="all")
    parser.add_argument("--quick", action="store_true", help="5 steps per model: checks the pipeline, not a model")
    parser.add_argument("--out", type=Path, default=ROOT, help="where models/ and adapters/ go (default: the repo)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    base_hp, adapter_hp = dict(BASE), dict(ADAPTER)
    if args.quick:
        base_hp.update(steps=5, warmup=2)
        adapter_hp.update(steps=5, warmup=2)
    start = time.time()
    corpus = load_corpus()
    if args.stage in ("all", "heldout"):
        stage_heldout(corpus, args.out)
    if args.stage in ("all", "base"):
        stage_base(corpus, base_hp, args.out)
    if args.stage in ("all", "adapters"):
        stage_adapters(corpus, adapter_hp, args.out)
    if args.stage in ("all", "check"):
        stage_check(corpus, args.out)
    print(f"done in {(time.time() - start) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
