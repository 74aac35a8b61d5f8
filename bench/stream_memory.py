"""Peak memory vs pool size: whole-pool scoring (`score` + write, what `smallsel score` does) vs `score_stream`.

    python bench/stream_memory.py --rows 20000 80000 320000 --modes prep plain stream

Each measurement runs in a fresh process (peak RSS = `ru_maxrss` of that process). `base` is the RSS after the imports
and the model are loaded, before any data is read. Modes:
  prep    load_rows + tokenize + shard plan of the whole pool (no model forward): the part of `score` that holds the pool
  plain   `score(file)` + `save_rows(out)`: the whole single-process path
  stream  `score_stream(file, out, chunk_rows)`: chunk by chunk
Rows come from `make_noisy_instructions` written to parquet; model: the `tiny` preset, fp32, template `none`,
max_length 48, one thread (a small, fast configuration: the memory that grows with the pool is the data's, not the
model's).
"""
import argparse, json, os, resource, shutil, subprocess, sys, tempfile, time
from pathlib import Path

def rss_mb()->float:
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

def child(mode, data, chunk_rows):
    import torch; torch.set_num_threads(1)
    os.environ["SMALLSEL_PROGRESS"] = "0"
    from smallsel_nb.lm import as_lm
    from smallsel_nb.scoring import prepare_scoring, score
    from smallsel_nb.distributed import score_stream, shard_plan
    from smallsel_nb.data import save_rows
    m, tok, _ = as_lm("tiny", "float32", "cpu")
    kw = dict(template="none", max_length=48, dtype="float32", device="cpu")
    base, t0, tmp = rss_mb(), time.time(), Path(tempfile.mkdtemp())
    try:
        if mode == "prep": shard_plan(prepare_scoring(data, (m, tok), cache_dir=False, verbose=False, **kw))
        elif mode == "plain": save_rows(score(data, (m, tok), cache_dir=tmp/"cache", **kw), tmp/"out.parquet")
        else: score_stream(data, (m, tok), tmp/"out.parquet", chunk_rows=chunk_rows, cache_dir=tmp/"cache", **kw)
    finally: shutil.rmtree(tmp, ignore_errors=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(dict(mode=mode, base_mb=round(base), peak_mb=round(peak), seconds=round(time.time() - t0, 1))))

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, nargs="+", default=[20_000, 80_000, 320_000])
    p.add_argument("--modes", nargs="+", default=["prep", "plain", "stream"], choices=["prep", "plain", "stream"])
    p.add_argument("--chunk-rows", type=int, default=10_000)
    p.add_argument("--dir", default=None, help="where the synthetic pools are written (default: a temp folder)")
    p.add_argument("--child", nargs=2, metavar=("MODE", "FILE"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child: return child(a.child[0], a.child[1], a.chunk_rows)
    d = Path(a.dir or tempfile.mkdtemp()); d.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SMALLSEL_PROGRESS": "0"}
    print(f"{'rows':>9} {'mode':>6} {'base MB':>8} {'peak MB':>8} {'peak-base':>9} {'seconds':>8}", flush=True)
    for n in a.rows:
        f = d/f"pool-{n}.parquet"
        if not f.exists():
            subprocess.run([sys.executable, "-c", f"from smallsel_nb.synth import make_noisy_instructions as m; "
                            f"m({n}, seed=0).to_parquet({str(f)!r})"], env=env, check=True, capture_output=True)
        for mode in a.modes:
            r = subprocess.run([sys.executable, __file__, "--child", mode, str(f), "--chunk-rows", str(a.chunk_rows)],
                               env=env, capture_output=True, text=True)
            if r.returncode: print(r.stderr[-2000:]); continue
            j = json.loads(r.stdout.strip().splitlines()[-1])
            print(f"{n:>9,} {mode:>6} {j['base_mb']:>8} {j['peak_mb']:>8} {j['peak_mb'] - j['base_mb']:>9} {j['seconds']:>8}", flush=True)

if __name__ == "__main__": main()
