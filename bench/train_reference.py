"""PyTorch reference for `commonweight bench train`: the identical Llama model, batches and AdamW.

Reads from --dir (written by `commonweight bench train`): config.json (HF LlamaConfig fields),
train.json (commonweight TrainConfig), init.safetensors (initial params, commonweight layout)
and tokens.bin (little-endian u32, warmup + steps batches of batch*(seq_len+1) tokens).
Runs 1 untimed warmup step, then --steps timed steps, and prints one JSON line:
{"tokens_per_s", "step_seconds", "losses", "peak_rss_bytes"}.
The ops mirror crates/model/src/llama.rs and trainer.rs one for one, so the comparison
measures the Rust/tch glue against plain PyTorch, not two different models.
"""
import argparse
import json
import math
import resource
import struct
import time

import torch
import torch.nn.functional as F


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        assert entry["dtype"] == "F32", name
        begin, end = entry["data_offsets"]
        t = torch.frombuffer(bytearray(data[begin:end]), dtype=torch.float32)
        out[name] = t.reshape(entry["shape"])
    return out


def layout(cfg):
    h, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hd = h // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    names = [("model.embed_tokens.weight", (v, h))]
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}"
        names += [
            (f"{p}.input_layernorm.weight", (h,)),
            (f"{p}.self_attn.q_proj.weight", (q, h)),
            (f"{p}.self_attn.k_proj.weight", (kv, h)),
            (f"{p}.self_attn.v_proj.weight", (kv, h)),
            (f"{p}.self_attn.o_proj.weight", (h, q)),
            (f"{p}.post_attention_layernorm.weight", (h,)),
            (f"{p}.mlp.gate_proj.weight", (i, h)),
            (f"{p}.mlp.up_proj.weight", (i, h)),
            (f"{p}.mlp.down_proj.weight", (h, i)),
        ]
    names.append(("model.norm.weight", (h,)))
    if not cfg["tie_word_embeddings"]:
        names.append(("lm_head.weight", (v, h)))
    return names


class Llama:
    def __init__(self, cfg, tensors, seq_len):
        self.cfg = cfg
        specs = layout(cfg)
        self.specs = specs
        self.flat = torch.cat([tensors[name].reshape(-1) for name, _ in specs])
        self.params, offset = [], 0
        for name, shape in specs:
            numel = math.prod(shape)
            self.params.append(self.flat[offset : offset + numel].view(shape).detach().requires_grad_(True))
            offset += numel
        self.offsets = []
        offset = 0
        for name, shape in specs:
            self.offsets.append((offset, math.prod(shape), len(shape) == 1))
            offset += math.prod(shape)
        hd = cfg["hidden_size"] // cfg["num_attention_heads"]
        inv_freq = torch.tensor(
            [1.0 / (cfg["rope_theta"] ** ((2 * i) / hd)) for i in range(hd // 2)], dtype=torch.float32
        )
        freqs = torch.arange(cfg["max_position_embeddings"], dtype=torch.float32).unsqueeze(1) * inv_freq.unsqueeze(0)
        emb = torch.cat([freqs, freqs], -1)
        self.cos, self.sin = emb.cos(), emb.sin()

    def forward(self, ids):
        cfg, p = self.cfg, self.params
        b, t = ids.shape
        heads, kvh = cfg["num_attention_heads"], cfg["num_key_value_heads"]
        hd = cfg["hidden_size"] // heads
        eps = cfg["rms_norm_eps"]
        cos, sin = self.cos[:t], self.sin[:t]

        def rope(x):
            half = x.shape[3] // 2
            rot = torch.cat([-x[..., half:], x[..., :half]], 3)
            return x * cos + rot * sin

        x = F.embedding(ids, p[0])
        i = 1
        for _ in range(cfg["num_hidden_layers"]):
            w_in, wq, wk, wv, wo, w_post, wg, wu, wd = p[i : i + 9]
            i += 9
            n = F.rms_norm(x, (x.shape[-1],), w_in, eps)
            q = F.linear(n, wq).view(b, t, heads, hd).transpose(1, 2)
            k = F.linear(n, wk).view(b, t, kvh, hd).transpose(1, 2)
            v = F.linear(n, wv).view(b, t, kvh, hd).transpose(1, 2)
            q, k = rope(q), rope(k)
            if kvh != heads:
                k = k.repeat_interleave(heads // kvh, 1)
                v = v.repeat_interleave(heads // kvh, 1)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + F.linear(a.transpose(1, 2).reshape(b, t, heads * hd), wo)
            n = F.rms_norm(x, (x.shape[-1],), w_post, eps)
            x = x + F.linear(F.silu(F.linear(n, wg)) * F.linear(n, wu), wd)
        x = F.rms_norm(x, (x.shape[-1],), p[i], eps)
        head = p[0] if cfg["tie_word_embeddings"] else p[i + 1]
        return F.linear(x, head)


class AdamW:
    """The same decoupled AdamW as crates/model/src/trainer.rs, on flat vectors."""

    def __init__(self, model, train):
        self.m, self.train = model, train
        self.exp_avg = torch.zeros_like(model.flat)
        self.exp_avg_sq = torch.zeros_like(model.flat)
        self.step = 0

    def lr_at(self, step):
        tr = self.train
        if step <= tr["warmup_steps"]:
            return tr["lr"] * step / max(tr["warmup_steps"], 1)
        decay = max(tr["total_steps"] - tr["warmup_steps"], 1)
        progress = min((step - tr["warmup_steps"]) / decay, 1.0)
        return tr["lr"] * (tr["min_lr_ratio"] + (1 - tr["min_lr_ratio"]) * 0.5 * (1 + math.cos(math.pi * progress)))

    @torch.no_grad()
    def update(self):
        tr = self.train
        grad = torch.cat([p.grad.view(-1) for p in self.m.params])
        for p in self.m.params:
            p.grad.zero_()
        norm = grad.norm().item()
        if tr["grad_clip"] > 0:
            coef = tr["grad_clip"] / (norm + 1e-6)
            if coef < 1.0:
                grad.mul_(coef)
        step = self.step + 1
        lr = self.lr_at(step)
        b1, b2 = tr["betas"]
        if tr["weight_decay"] > 0:
            keep = 1.0 - lr * tr["weight_decay"]
            for offset, numel, is_norm in self.m.offsets:
                if not is_norm:
                    self.m.flat[offset : offset + numel].mul_(keep)
        self.exp_avg.lerp_(grad, 1 - b1)
        self.exp_avg_sq.mul_(b2)
        self.exp_avg_sq.add_(grad.square() * (1 - b2))
        bias1, bias2 = 1 - b1**step, 1 - b2**step
        denom = self.exp_avg_sq.sqrt() / math.sqrt(bias2) + tr["eps"]
        self.m.flat.sub_(self.exp_avg / denom * (lr / bias1))
        self.step = step


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--threads", type=int, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = json.load(open(f"{args.dir}/config.json"))
    train = json.load(open(f"{args.dir}/train.json"))
    model = Llama(cfg, read_safetensors(f"{args.dir}/init.safetensors"), train["seq_len"])
    opt = AdamW(model, train)
    rows = train["batch_size"] * train["grad_accum"]
    row = train["seq_len"] + 1
    raw = open(f"{args.dir}/tokens.bin", "rb").read()
    tokens = torch.frombuffer(bytearray(raw), dtype=torch.int32).to(torch.int64).view(-1, rows, row)
    assert tokens.shape[0] >= args.steps + 1, "tokens.bin holds too few batches"
    losses, seconds = [], []
    for s in range(args.steps + 1):
        start = time.perf_counter()
        batch = tokens[s]
        total = 0.0
        for micro in batch.chunk(train["grad_accum"]):
            inputs, targets = micro[:, :-1].contiguous(), micro[:, 1:].contiguous()
            logits = model.forward(inputs)
            loss = F.cross_entropy(logits.view(-1, cfg["vocab_size"]), targets.view(-1))
            total += loss.item()
            (loss / train["grad_accum"]).backward()
        opt.update()
        if s > 0:  # step 0 is the untimed warmup
            seconds.append(time.perf_counter() - start)
        losses.append(total / train["grad_accum"])
    tokens_per_step = rows * train["seq_len"]
    print(
        json.dumps(
            {
                "tokens_per_s": tokens_per_step * len(seconds) / sum(seconds),
                "step_seconds": seconds,
                "losses": losses,
                "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            }
        )
    )


if __name__ == "__main__":
    main()
