"""Overhead of the distributed scoring path vs the plain path, on a GPU machine (needs CUDA; not run in CI).

    python bench/distributed_overhead.py --rows 20000 --model smollm2-135m
    python bench/distributed_overhead.py --rows 20000 --model smollm2-135m --gpus 2     # also torchrun on 2 GPUs

Measures, in one run on one machine (compare only numbers from the same run):
  plain       `score(data)` + write: what `smallsel score` does in one process
  dist-1      `score_distributed(data)` in one process (the code path of every rank, world size 1)
  merge       rank 0's extra work in a multi-rank run: `job.run()` with every shard cached + `attach_scores`
  torchrun-N  `torchrun --nproc_per_node N -m smallsel_nb.cli score ...` wall time (process start, model load and
              tokenization on every rank included), when --gpus N >= 2
and prints tokens/s per GPU and the overhead relative to `plain` (the issue's target: < 5 % on one GPU).
"""
import argparse, os, shutil, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np, torch

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=20_000); p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--template", default="alpaca"); p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--gpus", type=int, default=1, help="also time torchrun on this many GPUs (>= 2)")
    p.add_argument("--cpu", action="store_true", help="run on the CPU anyway (to try the script; timings meaningless)")
    a = p.parse_args()
    if not torch.cuda.is_available() and not a.cpu: sys.exit("no CUDA GPU visible: this benchmark measures GPU overhead (--cpu to try it anyway)")
    os.environ.setdefault("SMALLSEL_PROGRESS", "0")
    from smallsel_nb.synth import make_noisy_instructions
    from smallsel_nb.lm import as_lm
    from smallsel_nb.scoring import prepare_scoring, attach_scores, score
    from smallsel_nb.distributed import score_distributed
    from smallsel_nb.data import save_rows
    dev = "cpu" if a.cpu else "cuda"
    tmp = Path(tempfile.mkdtemp()); data = tmp/"pool.parquet"
    make_noisy_instructions(a.rows, seed=0).to_parquet(data)
    kw = dict(template=a.template, max_length=a.max_length, device=dev)
    pair = as_lm(a.model, "auto", dev)[:2]
    job = prepare_scoring(str(data), pair, cache_dir=False, verbose=False, **kw)
    ntok = int(sum(len(c) + len(u) for c, u in zip(job.tok["cond_ids"], job.tok["uncond_ids"])))
    score(make_noisy_instructions(512, seed=1), pair, cache_dir=False, **kw)  # warm-up (CUDA init, kernels)
    def timed(f):
        if dev == "cuda": torch.cuda.synchronize()
        t = time.perf_counter(); f()
        if dev == "cuda": torch.cuda.synchronize()
        return time.perf_counter() - t
    res = {}
    res["plain"] = timed(lambda: save_rows(score(str(data), pair, cache_dir=tmp/"c_plain", **kw), tmp/"plain.parquet"))
    res["dist-1"] = timed(lambda: score_distributed(str(data), pair, out=tmp/"dist.parquet", cache_dir=tmp/"c_dist", verbose=False, **kw))
    j = prepare_scoring(str(data), pair, cache_dir=tmp/"c_dist", verbose=False, **kw)
    res["merge"] = timed(lambda: attach_scores(j, j.run(desc=None)))
    if a.gpus >= 2:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(a.gpus), "-m", "smallsel_nb.cli",
               "score", str(data), "--model", a.model, "--template", a.template, "--max-length", str(a.max_length),
               "--cache-dir", str(tmp/f"c_tr{a.gpus}"), "--out", str(tmp/"tr.parquet")]
        t = time.perf_counter(); subprocess.run(cmd, check=True, capture_output=True); res[f"torchrun-{a.gpus}"] = time.perf_counter() - t
    same = np.array_equal(np.asarray(score(str(data), pair, cache_dir=tmp/"c_dist", **kw)["ifd"], float),
                          np.asarray(score(str(data), pair, cache_dir=tmp/"c_plain", **kw)["ifd"], float), equal_nan=True)
    name = torch.cuda.get_device_name() if dev == "cuda" else "CPU"
    print(f"{a.model} on {name}: {a.rows:,} rows, {ntok:,} scored tokens (cond + uncond); dist == plain scores: {same}")
    for k, v in res.items():
        g = int(k.split("-")[1]) if k.startswith("torchrun") else 1
        extra = f"{100 * (v / res['plain'] - 1):+6.1f} % vs plain" if k != "merge" else f"{100 * v / res['plain']:6.1f} % of plain"
        print(f"  {k:12s} {v:8.2f} s  {ntok / v / g:>12,.0f} tok/s per GPU  {extra}")
    shutil.rmtree(tmp, ignore_errors=True)

if __name__ == "__main__": main()
