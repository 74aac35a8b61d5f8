"""Which published IFD script does each `uncond_view` reproduce? Both views of the engine against two per-row scripts.

    python bench/ifd_views.py --rows 600 --model smollm2-135m

The scripts are re-implemented here from what the public code computes (one row at a time, `labels=` masking):
- `superfiltering`: Superfiltering's `code_ifd/data_analysis.py` (GPT-2 in the paper): prompt "instruction\\n", the
  prompt + response encoded as one text, the response's labels found by encoding the text before it; unconditionally
  the response encoded alone with `labels=input_ids` (a tokenizer that adds no BOS leaves its first token unscored).
- `cherry`: Cherry LLM's `cherry_seletion/data_analysis.py --prompt alpaca --mod cherry`: the alpaca prompt;
  unconditionally "### Response:" + response with the "### Response:" tokens masked.
Prints, per script, the Spearman correlation of cond_loss, uncond_loss and ifd with each view of the engine, and
the rows where only one side is NaN.
"""
import argparse, time
import numpy as np, torch
from scipy.stats import spearmanr
from scoring import real_pairs  # bench/scoring.py: the same short ShareGPT pairs
from smallsel_nb.data import tokenize_for_scoring, get_template
from smallsel_nb.lm import pad_id_of
from smallsel_nb.models import load_lm
from smallsel_nb.scoring import score_tokenized, finalize_scores

@torch.inference_mode()
def masked_loss(model, tok, text, target, max_length):
    "Mean NLL of the tokens of `target` (the last occurrence in `text`), the tokens before it masked, as the scripts do."
    ids = tok(text, truncation=True, max_length=max_length)["input_ids"]
    start = len(tok(text[:text.rfind(target)])["input_ids"])
    labels = torch.tensor([[-100] * start + ids[start:]])
    return model(input_ids=torch.tensor([ids]), labels=labels[:, :len(ids)]).loss.item()

def script_losses(model, tok, rows, script, max_length):
    "cond_loss, uncond_loss per row as `script` computes them (NaN where it has nothing to score)."
    tpl = get_template("none" if script == "superfiltering" else "alpaca")
    cond, unc = np.full(len(rows), np.nan), np.full(len(rows), np.nan)
    for i, r in enumerate(rows):
        p, out = tpl(r["instruction"], r["input"]), r["output"]
        cond[i] = masked_loss(model, tok, p + out, out, max_length)
        alone = out if script == "superfiltering" else "### Response:" + out
        unc[i] = masked_loss(model, tok, alone, out, max_length)
    return cond, unc

def main(a):
    torch.set_num_threads(a.threads)
    rows = real_pairs(a.rows)
    model, tok = load_lm(a.model, dtype="float32", device="cpu")
    print(f"{a.model} on {len(rows)} short ShareGPT pairs; tokenizer BOS {tok.bos_token!r}, "
          f"adds it to texts: {tok('x')['input_ids'][:1] == [tok.bos_token_id]}")
    for script in ("superfiltering", "cherry"):
        t0 = time.time()
        c, u = script_losses(model, tok, rows, script, a.max_length)
        ref = dict(cond_loss=c, uncond_loss=u, ifd=np.exp(c - u))
        print(f"{script} script ({time.time() - t0:.0f}s): {np.isnan(u).sum()} rows NaN")
        template = "none" if script == "superfiltering" else "alpaca"
        for view in ("bos", "no-bos"):
            t = tokenize_for_scoring(rows, tok, template=template, max_length=a.max_length, uncond_view=view, verbose=False)
            got = finalize_scores(score_tokenized(t, model, pad_id_of(tok), desc=None), view)
            rho = {k: spearmanr(got[k], ref[k], nan_policy="omit")[0] for k in ref}
            only = int((np.isnan(got["ifd"]) != np.isnan(ref["ifd"])).sum())
            print(f"  {template:6s} uncond_view={view:6s}  Spearman cond_loss {rho['cond_loss']:.4f}  uncond_loss "
                  f"{rho['uncond_loss']:.4f}  ifd {rho['ifd']:.4f}  ifd>1 {np.mean(got['ifd'] > 1):.1%} (script "
                  f"{np.mean(ref['ifd'] > 1):.1%})  NaN on one side only: {only}")

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=600)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--threads", type=int, default=2)
    main(p.parse_args())
