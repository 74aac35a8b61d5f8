"""A per-row IFD script shaped like the public Superfiltering / Cherry LLM scripts: the baseline `bench/scoring.py --end-to-end` times.

    python bench/per_row_script.py rows.jsonl MODEL_FOLDER out.jsonl [bos|no-bos] [MAX_LENGTH]

Only torch and transformers: load the model, then for every row two forwards at batch size 1 with `labels=` masking
(the alpaca prompt + response tokenized at once, the prompt's tokens masked; the response alone, with the tokenizer's BOS in front (`bos`) or
bare with its first token unscored (`no-bos`)). Writes cond_loss, uncond_loss and ifd per row.
"""
import json, math, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPT = ("Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
          "### Instruction:\n{instruction}\n\n### Response:")
PROMPT_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further context. "
                "Write a response that appropriately completes the request.\n\n"
                "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:")

def loss(model, ids, start):
    "Mean NLL of ids[start:] given what precedes them (NaN when nothing is scored)."
    if start >= len(ids) or start < 1: return float("nan")
    x = torch.tensor([ids]); labels = x.clone(); labels[:, :start] = -100
    with torch.no_grad(): return model(input_ids=x, labels=labels).loss.item()

def main(rows_path, model_dir, out_path, view="bos", max_length=1024):
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    bos = [tok.bos_token_id] if view == "bos" and tok.bos_token_id is not None else []
    with open(rows_path) as f, open(out_path, "w") as out:
        for line in f:
            r = json.loads(line)
            prompt = (PROMPT_INPUT if r.get("input") else PROMPT).format(instruction=r["instruction"], input=r.get("input", ""))
            start = len(tok(prompt)["input_ids"])  # as the public scripts do: the prompt's length, whole text tokenized at once
            c = loss(model, tok(prompt + r["output"])["input_ids"][:max_length], start)
            resp = tok(r["output"], add_special_tokens=not bos)["input_ids"]
            u = loss(model, (bos + resp)[:max_length], 1)  # bos: every response token scored; no-bos: the first one is not
            out.write(json.dumps(dict(cond_loss=c, uncond_loss=u, ifd=math.exp(c - u) if c == c and u == u else float("nan"))) + "\n")

if __name__ == "__main__":
    main(*sys.argv[1:4], *(sys.argv[4:5] or ["bos"]), *map(int, sys.argv[5:6]))
