"""Scale benchmark for smallsel_nb.select: every selector on generated scored rows (default 1M), timed one by one.

    python bench/select_scale.py                      # 1M rows, 384-d embeddings, 2 threads
    python bench/select_scale.py --n 100000 --dim 64  # a quick run

Rows are generated cheaply and vectorized: fake words from a Zipf-like vocabulary, ~12-word instructions, ~5-word
inputs (half empty), ~45-word responses, 5% exact duplicates (case and punctuation changed) and 3% near duplicates
(a word appended), random scores with 0.1% NaN, clustered random embeddings (float32). Embeddings are given as an
array, as the issue asks. Each selector runs alone on the whole table (its own `Columns`, nothing shared), so the
times add up to what running every selector costs. Not a test: the machine is shared, so times vary run to run.
"""
import argparse, os, sys, time

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--n", type=int, default=1_000_000, help="rows")
p.add_argument("--dim", type=int, default=384, help="embedding dimension")
p.add_argument("--threads", type=int, default=2, help="BLAS / OpenMP threads")
p.add_argument("--kcenter-n", type=int, default=200, help="k-center budget (its cost grows with N x budget x dim)")
p.add_argument("--keep", type=float, default=0.3, help="budget of the other budget selectors, as a fraction")
p.add_argument("--seed", type=int, default=0)
args = p.parse_args()
for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"): os.environ[v] = str(args.threads)
os.environ.setdefault("SMALLSEL_PROGRESS", "0")

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from smallsel_nb.select import Band, IFDRule, Percentile, Random, Threshold, Top, Bottom
from smallsel_nb.dedup import ExactDedup, NearDedup
from smallsel_nb.heuristics import Echo, Empty, Length, NonAlpha, Refusal, Repetition
from smallsel_nb.diversity import ClusterBalanced, KCenter, Stratified
from smallsel_nb.recipes import RECIPES


def fake_words(rng, n_words, vocab):
    "`n_words` words drawn from `vocab` (an Arrow string array), skewed towards the first ones."
    ids = (len(vocab) * rng.random(n_words) ** 3).astype(np.int64)
    return vocab.take(pa.array(ids))


def fake_texts(rng, n, mean_words, vocab, empty=0.0):
    "n texts of about `mean_words` words, a share `empty` of them empty; vectorized with Arrow."
    nw = np.maximum(1, rng.poisson(mean_words, n)) * (rng.random(n) >= empty)
    off = np.concatenate([[0], np.cumsum(nw)]).astype(np.int32)
    words = fake_words(rng, int(off[-1]), vocab)
    return pc.binary_join(pa.ListArray.from_arrays(pa.array(off), words), " ")


def make_vocab(rng, size=30_000):
    lens = rng.integers(2, 10, size)
    chars = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", np.uint8)[rng.integers(0, 26, lens.sum())]
    off = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    return pa.StringArray.from_buffers(size, pa.py_buffer(off.tobytes()), pa.py_buffer(chars.tobytes()))


def make_table(n, dim, seed):
    rng = np.random.default_rng(seed)
    vocab = make_vocab(rng)
    instr, inp, out = fake_texts(rng, n, 12, vocab), fake_texts(rng, n, 5, vocab, empty=0.5), fake_texts(rng, n, 45, vocab)
    # 5% exact duplicates (upper-cased, a "!" added: same normalized text), 3% near duplicates (a word appended)
    src = np.arange(n)
    dup = rng.choice(n, int(0.08 * n), replace=False)
    orig = np.setdiff1d(src, dup)
    src[dup] = orig[rng.integers(0, len(orig), len(dup))]  # copies of rows that are not copies themselves
    instr, inp, out = (a.take(pa.array(src)) for a in (instr, inp, out))
    exact, near = dup[: int(0.05 * n)], dup[int(0.05 * n):]
    m_exact, m_near = np.zeros(n, bool), np.zeros(n, bool)
    m_exact[exact] = True; m_near[near] = True
    instr = pc.if_else(pa.array(m_exact), pc.binary_join_element_wise(pc.utf8_upper(instr), "!", ""), instr)
    out = pc.if_else(pa.array(m_near), pc.binary_join_element_wise(out, " indeed", ""), out)
    cond = rng.normal(1.5, 0.5, n); unc = cond + rng.normal(0.3, 0.3, n)
    cond[rng.choice(n, n // 1000, replace=False)] = np.nan
    tbl = pa.table({"id": pc.binary_join_element_wise("r", pa.array(np.arange(n)).cast(pa.string()), ""),
                    "instruction": instr, "input": inp, "output": out,
                    "task": pa.array(np.array(["code", "math", "chat", "facts", "writing"])[rng.integers(0, 5, n)]),
                    "cond_loss": cond, "uncond_loss": unc, "ifd": np.exp(cond - unc)})
    centers = rng.normal(0, 1, (64, dim)).astype(np.float32)
    emb = centers[rng.integers(0, 64, n)]
    emb += rng.normal(0, 0.5, (n, dim)).astype(np.float32)
    traj = np.stack([cond + 0.2 * k * rng.standard_normal(n) for k in range(4)], 1).astype(np.float32)  # S2L: loss per checkpoint
    return tbl, emb, np.nan_to_num(traj)


def main():
    t = time.perf_counter()
    tbl, emb, traj = make_table(args.n, args.dim, args.seed)
    print(f"generated {args.n:,} rows ({tbl.nbytes / 1e6:,.0f} MB of columns) + embeddings {emb.shape} float32 "
          f"({emb.nbytes / 1e6:,.0f} MB) in {time.perf_counter() - t:.1f}s; threads={args.threads}, cpus={os.cpu_count()}")
    k = dict(keep=args.keep)
    selectors = [
        ("top (ifd)", Top("ifd", **k)), ("bottom (cond_loss)", Bottom("cond_loss", **k)),
        ("threshold (cond_loss in [0.5, 3])", Threshold("cond_loss", 0.5, 3.0)), ("ifd > 1 rule", IFDRule()),
        ("percentile (cond_loss 10-90)", Percentile("cond_loss", 10, 90)), ("band (cond_loss, middle)", Band("cond_loss", "middle", **k)),
        ("random", Random(**k)), ("stratified (task) / top ifd", Stratified(Top("ifd"), col="task", **k)),
        ("cluster-balanced (emb, k=32, by ifd)", ClusterBalanced(emb, k=32, by="ifd", **k)),
        ("cluster-balanced (S2L trajectories, k=32)", ClusterBalanced(traj, k=32, **k)),
        (f"k-center greedy (emb, keep_n={args.kcenter_n})", KCenter(emb, keep_n=args.kcenter_n)),
        ("exact dedup", ExactDedup()), ("near dedup (MinHash/LSH)", NearDedup()),
        ("empty", Empty()), ("length (output chars)", Length("output", 1, 20_000)), ("refusal patterns", Refusal()),
        ("repetition (output 3-grams)", Repetition()), ("non-alphabetic ratio", NonAlpha()), ("echo", Echo()),
    ]
    total, total_cpu = 0.0, 0.0
    print(f"load average at start: {os.getloadavg()[0]:.2f} (other work on the machine slows the wall times)")
    print(f"\n{'selector':<46}{'wall s':>9}{'cpu s':>9}{'kept':>12}")
    for name, step in selectors:
        t, c = time.perf_counter(), time.process_time()
        sel = step(tbl, seed=args.seed)
        dt, dc = time.perf_counter() - t, time.process_time() - c
        total += dt; total_cpu += dc
        print(f"{name:<46}{dt:>9.2f}{dc:>9.2f}{len(sel):>12,}", flush=True)
    print(f"{'TOTAL (every selector)':<46}{total:>9.2f}{total_cpu:>9.2f}")
    print("(cpu s: CPU time of this process, all its threads; wall s above cpu s is time spent waiting for a shared core)")
    t, c = time.perf_counter(), time.process_time()
    sel = RECIPES["default"](keep=args.keep)(tbl, seed=args.seed)
    print(f"\n{'default recipe (whole pipeline)':<46}{time.perf_counter() - t:>9.2f}{time.process_time() - c:>9.2f}{len(sel):>12,}")
    print(sel.summary())


if __name__ == "__main__":
    sys.exit(main())
