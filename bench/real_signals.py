"""Which scoring signals transfer between small models, and what the default recipe drops, on real pairs (issue #16, items 4 and 5).

    python bench/real_signals.py                       # 2 x 300 short ShareGPT pairs, SmolLM2-135M and Gemma-3-270M
    python bench/real_signals.py --rows 100 --models smollm2-135m,tiny   # a quick look

Real short first-turn ShareGPT pairs, 40 % of them corrupted with labels (`synth.corrupt_rows`: mismatched, repetitive,
nonsense, truncated, duplicate, near-duplicate responses), split in two halves: `dev` (recipe choices are made on it)
and `report` (the figures to quote; nothing was chosen on it). Each model scores both halves in both views of the
response alone (`bos`, `no-bos`) with T-SHIRT's selective IFD, under the alpaca template (one prompt format for a base
and an instruct model).

Item 4, transfer: the Spearman correlation of every signal between the two models, over the clean rows (the ranking
that selection among good rows relies on) and over all rows (corruptions included), with a 95 % bootstrap interval.
Item 5, the default recipe on real data: precision and recall of the dropped rows at keep 70 % and 30 %, per kind,
against single scores and random, on the first model's scores.

Writes one JSON file (default nbs/tutorials/results/real_signals.json) that 03_scoring and 04d_recipes read.
Timings on shared machines are noisy; the script prints the scoring time of each model for orientation only.
"""
import argparse, json, os, time
import numpy as np, pandas as pd
from scipy import stats
from smallsel_nb.core import atomic_write
from smallsel_nb.data import load_sharegpt
from smallsel_nb.synth import corrupt_rows
from smallsel_nb.scoring import score
from smallsel_nb.select import Bottom, Top
from smallsel_nb.recipes import default_recipe, heuristics_recipe, random_recipe
from smallsel_nb.evaluate import removal_table

VIEWS = ("bos", "no-bos")

def short_pairs(n, max_chars=(300, 500)):
    "The first `n` distinct short first-turn ShareGPT pairs (instruction and response under `max_chars` characters)."
    rows = load_sharegpt(turns="first", limit=20 * n, verbose=False).to_pandas()
    rows = rows[(rows.instruction.str.len() < max_chars[0]) & (rows.output.str.len() < max_chars[1])].drop_duplicates("instruction")
    if len(rows) < n: raise SystemExit(f"only {len(rows)} short pairs in the file's first {20 * n} rows; ask for fewer --rows")
    return rows.iloc[:n].reset_index(drop=True)

def signals(model, rows, max_length, selective):
    "Every signal of `model` on `rows`: both views' uncond_loss and IFD, selective IFD (no-bos view), loss sums."
    from datasets import Dataset
    ds, out, t0 = Dataset.from_pandas(rows, preserve_index=False), {}, time.perf_counter()
    for v in VIEWS:
        s = score(ds, model, template="alpaca", max_length=max_length, uncond_view=v, selective=selective, dtype="float32").to_pandas()
        out |= {f"uncond_loss[{v}]": s.uncond_loss, f"ifd[{v}]": s.ifd, f"selective_ifd[{v}]": s.selective_ifd}
        out |= {"cond_loss": s.cond_loss, "n_response_tokens": s.n_response_tokens}
    out["cond_sum"] = out["cond_loss"] * out["n_response_tokens"]  # the loss not divided by the response length
    print(f"  {model}: scored {len(rows)} rows in both views in {time.perf_counter() - t0:.0f} s")
    return pd.DataFrame(out).drop(columns="n_response_tokens")

def spearman_ci(x, y, reps=1000, seed=0):
    "Spearman over the rows both scored, with a 95 % percentile bootstrap interval over rows."
    m = np.isfinite(x) & np.isfinite(y); x, y = x[m], y[m]
    g = np.random.default_rng(seed)
    boots = [stats.spearmanr(x[i], y[i]).statistic for i in (g.integers(0, len(x), len(x)) for _ in range(reps))]
    return dict(spearman=float(stats.spearmanr(x, y).statistic), lo=float(np.percentile(boots, 2.5)),
                hi=float(np.percentile(boots, 97.5)), rows=int(m.sum()))

def transfer(a, b, clean):
    "Spearman of each signal between two models' score tables, over the clean rows and over all rows."
    out = []
    for col in a.columns:
        for name, m in (("clean rows", clean), ("all rows", np.ones_like(clean))):
            out.append(dict(signal=col, rows_kind=name, **spearman_ci(a[col].to_numpy()[m], b[col].to_numpy()[m])))
    return pd.DataFrame(out)

RULES = {  # name: keep -> pipeline or step; each single score at the end it would be used from
    "default (by ifd[bos])": lambda k: default_recipe(keep=k),
    "default by cond_loss": lambda k: default_recipe(keep=k, by="cond_loss"),
    "heuristics + random": lambda k: heuristics_recipe(keep=k),
    "lowest ifd[bos]": lambda k: Bottom("ifd", keep=k),
    "highest ifd[bos] (Cherry)": lambda k: Top("ifd", keep=k),
    "lowest cond_loss": lambda k: Bottom("cond_loss", keep=k),
    "highest cond_loss": lambda k: Top("cond_loss", keep=k),
    "lowest selective_ifd": lambda k: Bottom("selective_ifd", keep=k),
    "random": lambda k: random_recipe(keep=k),
}

def removal(pool, sig, keeps):
    "The default recipe and single scores on the first model's scores: precision / recall of the dropped rows per kind."
    from datasets import Dataset
    d = pool.assign(ifd=sig["ifd[bos]"], cond_loss=sig["cond_loss"], uncond_loss=sig["uncond_loss[bos]"],
                    selective_ifd=sig["selective_ifd[no-bos]"], uncond_view="bos")
    return removal_table(RULES, Dataset.from_pandas(d, preserve_index=False), keeps=keeps, by=None)

def main(a):
    models = a.models.split(",")
    rows = short_pairs(2 * a.rows, (a.max_instruction, a.max_response))
    halves = {"dev": rows.iloc[:a.rows], "report": rows.iloc[a.rows:]}
    from datasets import Dataset
    res = dict(settings=dict(rows_per_half=a.rows, models=models, noise=a.noise, max_length=a.max_length, template="alpaca",
                             selective=a.selective, keeps=a.keeps, data=f"ShareGPT first turns, instruction < {a.max_instruction} and response < {a.max_response} characters"))
    for half, part in halves.items():
        pool = corrupt_rows(Dataset.from_pandas(part.reset_index(drop=True), preserve_index=False), noise=a.noise, seed=0).to_pandas()
        print(f"{half}: {len(pool)} rows, {pool.is_noisy.sum()} corrupted ({', '.join(f'{k} {v}' for k, v in pool.noise_kind.value_counts().items())})")
        sig = [signals(m, pool.drop(columns=["is_noisy", "noise_kind"]), a.max_length, a.selective) for m in models]
        clean = (pool.noise_kind == "clean").to_numpy()
        t = transfer(sig[0], sig[1], clean)
        print(t.pivot(index="signal", columns="rows_kind", values="spearman").round(3).to_string())
        r = removal(pool, sig[0], a.keeps)
        print(r[["kept", "precision", "recall", "clean kept"]].round(3).to_string())
        res[half] = dict(transfer=t.to_dict("records"), removal=r.reset_index().to_dict("records"),
                         kinds=pool.noise_kind.value_counts().to_dict())
    with atomic_write(a.out) as tmp: tmp.write_text(json.dumps(res, indent=1, default=float))
    print(f"wrote {a.out}")

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=300, help="rows per half (dev, report)")
    p.add_argument("--max-instruction", type=int, default=300, help="characters"); p.add_argument("--max-response", type=int, default=500, help="characters")
    p.add_argument("--models", default="smollm2-135m,gemma3-270m", help="two models: the scorer first, the larger one second")
    p.add_argument("--noise", type=float, default=0.4); p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--selective", type=float, default=0.5); p.add_argument("--keeps", type=float, nargs="+", default=[0.7, 0.3])
    p.add_argument("--out", default="nbs/tutorials/results/real_signals.json")
    a = p.parse_args()
    os.environ.setdefault("SMALLSEL_PROGRESS", "0")
    main(a)
