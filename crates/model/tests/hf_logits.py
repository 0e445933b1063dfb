"""Logits of HF transformers' LlamaForCausalLM on a checkpoint folder, for tests/hf_compat.rs.

Usage: python hf_logits.py CHECKPOINT_DIR TOKEN...  Prints the logits [len, vocab] as JSON.
Exits 3 (with a message) when transformers is not installed, so the test can skip.
"""
import json
import sys

try:
    import torch
    from transformers import LlamaForCausalLM
except ImportError as e:
    print(f"transformers unavailable: {e}", file=sys.stderr)
    sys.exit(3)

model = LlamaForCausalLM.from_pretrained(sys.argv[1], torch_dtype=torch.float32, attn_implementation="eager")
model.eval()
ids = torch.tensor([[int(t) for t in sys.argv[2:]]])
with torch.no_grad():
    logits = model(ids).logits[0]
print(json.dumps(logits.tolist()))
