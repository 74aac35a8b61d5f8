"""Scoring benchmark: the engine vs a per-row loop shaped like the public IFD scripts, in the same run.

CPU (default):  python bench/scoring.py --rows 300 --model smollm2-135m        (real model, real ShareGPT pairs)
                python bench/scoring.py --rows 300 --model tiny --data synth   (tiny from-scratch model)
End to end:     python bench/scoring.py --end-to-end --rows 300 (two processes timed from start to exit, model load included:
                `smallsel score` against bench/per_row_script.py, a per-row script shaped like the public IFD scripts;
                then the floor: the most this machine allows, from the engine's matmul FLOPs at the bare-matmul peak
                measured at the model's shapes, plus process start and model load)
GPU:            python bench/scoring.py --gpu                                  (GPT-2-124M and a ~1B Llama, random init, built on the GPU in bf16)

Prints rows/s, tokens/s, the speed ratio, and the Spearman correlation of `ifd` between the two implementations;
on a GPU also the useful FLOP/s (body on the tokens it ran, head at scored tokens only) against the measured
matmul peak and the data-sheet peak, and the peak memory.
Timings on shared machines are noisy: only ratios measured in one run are meaningful.
"""
import argparse, os, subprocess, sys, tempfile, time
import numpy as np, torch
from scipy.stats import spearmanr
from datasets import Dataset
from smallsel_nb.core import SmallselError, matmul_params, cpu_has_bf16
from smallsel_nb.data import load_sharegpt, tokenize_for_scoring
from smallsel_nb.lm import scoring_dtype
from smallsel_nb.models import load_lm
from smallsel_nb.scoring import score_per_row, score_tokenized
from smallsel_nb.synth import make_noisy_instructions

def real_pairs(n, max_chars=(400, 800)):
    "The first `n` short first-turn ShareGPT pairs (the 'short real Q/A pairs' of the issue)."
    rows = load_sharegpt(turns="first", limit=20 * n, verbose=False)
    keep = [i for i, (q, a) in enumerate(zip(rows["instruction"], rows["output"])) if len(q) < max_chars[0] and len(a) < max_chars[1]]
    return rows.select(keep[:n])

def ifd(res):
    with np.errstate(invalid="ignore", divide="ignore"):
        c = res["cond_sum"] / res["n_cond"] if "cond_sum" in res else res["cond_loss"]
        u = res["uncond_sum"] / res["n_uncond"] if "uncond_sum" in res else res["uncond_loss"]
    return np.exp(c - u)

def timed(f):
    t = time.perf_counter(); r = f(); return r, time.perf_counter() - t

def cpu_bench(a):
    torch.set_num_threads(a.threads)
    rows = real_pairs(a.rows) if a.data == "sharegpt" else make_noisy_instructions(a.rows, seed=0)
    model, tok = load_lm(a.model, dtype="float32", device="cpu")
    t = tokenize_for_scoring(rows, tok, max_length=a.max_length, verbose=False)
    ntok = int(sum(len(c) + len(u) for c, u in zip(t["cond_ids"], t["uncond_ids"])))
    print(f"{a.model} on {len(rows)} {a.data} rows, {ntok / len(rows):.0f} tokens/row (cond+uncond), {a.threads} threads, "
          f"CPU bf16 support: {cpu_has_bf16()}")
    ref, t_ref = timed(lambda: score_per_row(t, model))
    print(f"  per-row loop fp32          {len(t) / t_ref:7.2f} rows/s {ntok / t_ref:9.0f} tok/s  (1.00x)")
    pad = tok.pad_token_id or 0
    for dt in a.dtypes.split(","):
        m = model.to(getattr(torch, dt))
        for pc in (False, True):
            res, t_e = timed(lambda: score_tokenized(t, m, pad, a.batch_tokens, prefix_cache=pc, desc=None))
            rho = spearmanr(ifd(res), ifd(ref), nan_policy="omit")[0]
            print(f"  engine {dt:9s} prefix={'on ' if pc else 'off'} {len(t) / t_e:7.2f} rows/s {ntok / t_e:9.0f} tok/s  "
                  f"({t_ref / t_e:.2f}x)  Spearman(ifd) {rho:.4f}")

def run_timed(cmd):
    "Wall seconds of a command run to completion (its output shown only when it fails)."
    t = time.perf_counter(); r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode: raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stdout}{r.stderr}")
    return time.perf_counter() - t

def end_to_end(a):
    "`smallsel score` against the per-row script, each a fresh process on the same rows and weights, timed from start to exit."
    import pandas as pd
    from smallsel_nb.models import convert_gguf, resolve_model
    folder = convert_gguf(a.model) if resolve_model(a.model)["kind"] == "alias" else a.model  # both load the same plain folder
    rows = real_pairs(a.rows) if a.data == "sharegpt" else make_noisy_instructions(a.rows, seed=0)
    with tempfile.TemporaryDirectory() as d:
        src = f"{d}/rows.jsonl"; rows.select_columns(["instruction", "input", "output"]).to_json(src)
        per_row = [sys.executable, os.path.join(os.path.dirname(__file__), "per_row_script.py"), src, str(folder), f"{d}/ref.jsonl",
                   a.view, str(a.max_length)]
        t_ref = run_timed(per_row)
        eng = [sys.executable, "-m", "smallsel_nb.cli", "score", src, "--model", a.model, "--out", f"{d}/eng.parquet",
               "--dtype", a.engine_dtype, "--uncond-view", a.view, "--cache-dir", f"{d}/cache", "--max-length", str(a.max_length)]
        t_eng = run_timed(eng)
        ref, res = pd.read_json(f"{d}/ref.jsonl", lines=True), pd.read_parquet(f"{d}/eng.parquet")
        load = [sys.executable, "-c", f"from smallsel_nb.models import load_lm; load_lm({a.model!r}, dtype={a.engine_dtype!r}, device='cpu')"]
        t_load = min(run_timed(load) for _ in range(2))  # process start, imports and model load: the part no kernel speeds up
    rho = {c: spearmanr(ref[c], res[c], nan_policy="omit")[0] for c in ("cond_loss", "uncond_loss", "ifd")}
    print(f"{a.model} on {len(rows)} {a.data} rows, {a.view} view, {torch.get_num_threads()} threads, engine dtype {a.engine_dtype} "
          f"(CPU bf16 support: {cpu_has_bf16()}), per-row fp32; process start and model load included:")
    print(f"  per-row script  {t_ref:7.1f} s  {len(rows) / t_ref:6.2f} rows/s  (1.00x)")
    print(f"  smallsel score  {t_eng:7.1f} s  {len(rows) / t_eng:6.2f} rows/s  ({t_ref / t_eng:.2f}x)  "
          + "  ".join(f"Spearman({c}) {v:.4f}" for c, v in rho.items()))
    floor(a, rows, t_ref, t_eng, t_load)

def linear_shapes(model):
    "(in, out) of every distinct weight matrix the forward multiplies by, output head included."
    return sorted({tuple(m.weight.shape[::-1]) for m in model.modules() if isinstance(m, torch.nn.Linear)})

def cpu_matmul_peak(model, dtype, m=4096, reps=5, tries=3):
    "Best FLOP/s of a bare `F.linear` at the model's own weight shapes, `m` rows at once (best of `tries`: shared machines are noisy)."
    best = 0.0
    for k, n in linear_shapes(model):
        x, w = torch.randn(m, k, dtype=dtype), torch.randn(n, k, dtype=dtype)
        for _ in range(2): torch.nn.functional.linear(x, w)
        for _ in range(tries):
            t = time.perf_counter()
            for _ in range(reps): torch.nn.functional.linear(x, w)
            best = max(best, 2 * m * k * n * reps / (time.perf_counter() - t))
    return best

def counted_flops(model, t):
    """Matmul FLOPs of scoring the tokenized rows `t`: (the engine's: the body on every token but the cached prefixes, the
    head at scored tokens only, as `useful_flops` counts a finished run; a per-row script's: batch 1, the whole model,
    head included, on every token of both views)."""
    from smallsel_nb.scoring import assign_prefix, find_prefixes
    cond, rs, unc = [np.asarray(c) for c in t["cond_ids"]], np.array(t["resp_start"]), [np.asarray(u) for u in t["uncond_ids"]]
    pre = find_prefixes(cond, rs); k = assign_prefix(cond, rs, pre)
    body = sum(map(len, cond)) - sum(len(pre[j]) for j in k if j >= 0) + sum(map(len, unc))
    scored = int(sum(max(len(c) - s, 0) for c, s in zip(cond, rs)) + sum(max(len(u) - s, 0) for u, s in zip(unc, t["uncond_start"])))
    engine = useful_flops(model, dict(tokens_computed=body, n_cond=np.array([scored]), n_uncond=np.array([0])))
    return engine, 2 * matmul_params(model) * (sum(map(len, cond)) + sum(map(len, unc)))

def floor(a, rows, t_ref, t_eng, t_load):
    """The most `smallsel score` could gain over the per-row script on this machine: its matmul FLOPs (the body on the
    tokens it runs, cached prefixes excluded; the head at scored tokens only) at the best bare-matmul speed measured at
    the model's shapes, plus process start and model load; nothing for attention, softmax or padding."""
    dt = scoring_dtype(a.engine_dtype, "cpu")  # what `smallsel score --dtype` picks
    model, tok = load_lm(a.model, dtype=dt, device="cpu")
    flops, per_row = counted_flops(model, tokenize_for_scoring(rows, tok, max_length=a.max_length, uncond_view=a.view, verbose=False))
    peak, peak32 = cpu_matmul_peak(model, dt), cpu_matmul_peak(model, torch.float32)
    best = t_load + flops / peak
    print(f"  floor on this machine: bare matmul at the model's shapes {peak / 1e9:.0f} GFLOP/s {str(dt)[6:]} ({peak32 / 1e9:.0f} fp32); "
          f"the engine's matmuls {flops / 1e12:.1f} TFLOP (the per-row script's {per_row / 1e12:.1f}); start + load {t_load:.1f} s")
    print(f"  smallsel score's scoring ran at {flops / max(t_eng - t_load, 1e-9) / peak:.0%} of that peak, the per-row script at "
          f"{per_row / max(t_ref - t_load, 1e-9) / peak32:.0%} of the fp32 one; at 100% (no attention, softmax or padding cost) "
          f"smallsel score would take {best:.1f} s: at most {t_ref / best:.2f}x here")

def gpu_rows(n, vocab, seed=0):
    "Random token rows with log-normal lengths (mean ~240, max 1024); a shared 32-token template header."
    g = np.random.default_rng(seed)
    lens = np.clip(g.lognormal(np.log(200), 0.6, n).astype(int), 16, 1024)
    head = g.integers(0, vocab, 32).tolist()
    cond, rs, unc = [], [], []
    for L in lens:
        p = max(8, int(L * 0.3)); body = g.integers(0, vocab, L).tolist()
        c = head + body[:p] + body[p:]; c = c[:1024]
        cond.append(c); rs.append(min(len(head) + p, len(c) - 1)); unc.append([1] + c[rs[-1]:])
    return Dataset.from_dict(dict(cond_ids=cond, resp_start=rs, uncond_ids=unc, uncond_start=[1] * n, tok_error=[None] * n))

def matmul_peak(dtype=torch.bfloat16, n=8192, reps=20):
    "Measured dense matmul throughput of this GPU (FLOP/s): the best the body's matmuls could do."
    a, b = torch.randn(n, n, device="cuda", dtype=dtype), torch.randn(n, n, device="cuda", dtype=dtype)
    for _ in range(3): a @ b
    torch.cuda.synchronize(); t = time.perf_counter()
    for _ in range(reps): a @ b
    torch.cuda.synchronize(); dt = time.perf_counter() - t
    del a, b; torch.cuda.empty_cache()
    return 2 * n**3 * reps / dt

# dense bf16 tensor-core peaks from the vendors' data sheets (TFLOP/s, no sparsity), matched on the device name
SPEC_TFLOPS = {"H200": 989, "H100 SXM": 989, "H100 80GB HBM3": 989, "H100 PCIe": 756, "H100 NVL": 835, "H100": 756,
               "A100": 312, "L40S": 362, "L40": 181, "L4": 121, "A10G": 70, "A10": 125, "RTX 4090": 165, "RTX 3090": 71,
               "V100": 125, "T4": 65}  # V100, T4: fp16 (no native bf16)

def spec_peak(name, override=None):
    "The data-sheet bf16 peak of the GPU called `name` (FLOP/s), or None when unknown."
    if override: return override * 1e12
    return next((v * 1e12 for k, v in SPEC_TFLOPS.items() if k.lower() in name.lower()), None)

def useful_flops(model, res):
    "Forward FLOPs of the work the engine did: the body on every token it ran (not cached prefixes), the head only at scored tokens."
    head = model.get_output_embeddings().weight.numel()
    scored = int(res["n_cond"].sum() + res["n_uncond"].sum())
    return 2 * (matmul_params(model) - head) * res["tokens_computed"] + 2 * head * scored

def build_on_gpu(name):
    "A random-init model built directly on the GPU in bf16 (no fp32 copy on the CPU first)."
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig
    cfg = {"gpt2-124m": lambda: GPT2Config(n_positions=1024),
           "llama-1b": lambda: LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=16,
                                           num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=1024)}[name]()
    with torch.device("cuda"): return AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16, attn_implementation="sdpa").eval()

def gpu_bench(a):
    import gc
    dev = torch.cuda.get_device_name()
    peak, spec = matmul_peak(), spec_peak(dev, a.spec_tflops)
    print(f"{dev}: bf16 matmul peak measured {peak / 1e12:.0f} TFLOP/s, data sheet "
          + (f"{spec / 1e12:.0f} TFLOP/s" if spec else "unknown (pass --spec-tflops)"))
    for name in ("gpt2-124m", "llama-1b"):
        model = build_on_gpu(name)
        t = gpu_rows(a.gpu_rows, model.config.vocab_size)
        ntok = int(sum(len(c) + len(u) for c, u in zip(t["cond_ids"], t["uncond_ids"])))
        score_tokenized(t.select(range(256)), model, 0, a.batch_tokens_gpu, desc=None, compile=a.compile)  # warm-up
        torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
        res, te = timed(lambda: score_tokenized(t, model, 0, a.batch_tokens_gpu, desc=None))
        mem = torch.cuda.max_memory_allocated()
        fl = useful_flops(model, res)
        sub = t.select(range(256)); ntok_sub = int(sum(len(c) + len(u) for c, u in zip(sub["cond_ids"], sub["uncond_ids"])))
        model.float(); _, tr = timed(lambda: score_per_row(sub, model)); model.to(torch.bfloat16)
        mfu = f"MFU {100 * fl / te / peak:.1f}% of measured" + (f", {100 * fl / te / spec:.1f}% of data sheet" if spec else "")
        print(f"{name}: {matmul_params(model) / 1e6:.0f}M matmul params, {len(t)} rows, {ntok / len(t):.0f} tok/row "
              f"({res['tokens_computed'] / ntok:.0%} run by the body, rest cached prefixes) | engine bf16 {ntok / te:,.0f} tok/s, "
              f"{fl / te / 1e12:.1f} TFLOP/s useful, {mfu}, peak memory {mem / 2**30:.2f} GiB "
              f"(batch_tokens {a.batch_tokens_gpu or 'default'}) | per-row fp32 (TF32 matmuls) {ntok_sub / tr:,.0f} tok/s | ratio {ntok / te / (ntok_sub / tr):.1f}x")
        del model, res; gc.collect(); torch.cuda.empty_cache()  # the next model starts from an empty GPU

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m"); p.add_argument("--rows", type=int, default=300)
    p.add_argument("--data", default="sharegpt", choices=["sharegpt", "synth"])
    p.add_argument("--threads", type=int, default=os.cpu_count()); p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--batch-tokens", type=int, default=4096); p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--end-to-end", action="store_true", help="time `smallsel score` and the per-row script as processes")
    p.add_argument("--engine-dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                   help="`smallsel score --dtype` (--end-to-end; auto: what a user gets, bf16 on bf16-capable CPUs; the per-row script is fp32)")
    p.add_argument("--view", default="bos", choices=["bos", "no-bos"], help="the unconditional view (--end-to-end)")
    p.add_argument("--gpu", action="store_true"); p.add_argument("--gpu-rows", type=int, default=4096)
    p.add_argument("--batch-tokens-gpu", type=int, default=65536, help="0: the engine's default (from free memory)")
    p.add_argument("--spec-tflops", type=float, default=None, help="data-sheet bf16 peak, when the GPU is not in SPEC_TFLOPS")
    p.add_argument("--compile", action="store_true", help="torch.compile the body (GPU part)")
    a = p.parse_args()
    os.environ.setdefault("SMALLSEL_PROGRESS", "0")
    try: gpu_bench(a) if a.gpu else end_to_end(a) if a.end_to_end else cpu_bench(a)
    except SmallselError as e: print(f"error: {e}", file=sys.stderr); sys.exit(2)  # e.g. a missing data or model package: one line
