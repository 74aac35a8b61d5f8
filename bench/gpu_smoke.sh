#!/usr/bin/env bash
# GPU smoke check of smallsel_nb, for one CUDA GPU and ~6 minutes, run from the project root after `pip install -e .`.
# Prepared by reading the code (issue 17); it has not run on a GPU yet. Each numbered line prints what it expects.
# SMOKE_CPU=1 runs the same Python checks on the CPU with tiny sizes (a dry run of the script itself, no GPU claims);
# SMOKE_COMPILE=1 adds the torch.compile benchmark (several minutes more).
set -euo pipefail; export SMALLSEL_PROGRESS=0 HF_HUB_OFFLINE=1 SMALLSEL_CACHE=$(mktemp -d); T=$(mktemp -d)
CPU=${SMOKE_CPU:-0}
python -c "import torch as t,transformers as h;c=t.cuda.is_available();print(t.__version__,h.__version__,t.cuda.get_device_name() if c else 'no GPU','native bf16:',c and t.cuda.is_bf16_supported(False))"
smallsel synth $T/pool.parquet --n $([ "$CPU" = 1 ] && echo 300 || echo 5000) >/dev/null
python - $T $CPU <<'PY'
import sys, time, logging, warnings, numpy as np, torch
import smallsel_nb.scoring as S
from smallsel_nb.core import get_dtype, cuda_has_bf16
from smallsel_nb.models import load_lm
from smallsel_nb.data import load_rows, tokenize_for_scoring
from smallsel_nb.train import train_lm
T, cpu = sys.argv[1], sys.argv[2] == "1"
lg = logging.getLogger("smallsel_nb"); lg.addHandler(logging.StreamHandler(sys.stdout)); lg.setLevel(logging.INFO)
cuda = torch.cuda.is_available() and not cpu; dev = "cuda" if cuda else "cpu"; GiB = 2**30
alloc = torch.cuda.memory_allocated if cuda else (lambda: 0)
loss = lambda r, c="cond_loss": np.array(r[c], float)
def maxdiff(a, b): return max(np.nanmax(np.abs(loss(a, c) - loss(b, c))) for c in ("cond_loss", "uncond_loss"))

print("1. dtype auto:", get_dtype("auto", dev), "| native bf16:", cuda_has_bf16(), "(want bfloat16 on A100/H100/H200; float32 and a warning on T4/V100)")
m, tok = load_lm("small-llama", device=dev); dt0 = m.dtype; print("   loaded", m.device, dt0)
rows = load_rows(f"{T}/pool.parquet").select(range(40 if cpu else 500)); t = tokenize_for_scoring(rows, tok, max_length=512, verbose=False)
got = S.score(rows, (m, tok), cache_dir=False); ref = S.score_per_row(t, m.float()); m.to(dt0)
print(f"2. {dt0} engine vs fp32 per-row max|d loss|: {np.nanmax(np.abs(loss(got) - ref['cond_loss'])):.2e} (bf16: ~1e-2; fp32: ~1e-5)")
again = S.score(rows, (m, tok), cache_dir=False)
print("3. same input twice, bit-identical scores:", all(np.array_equal(loss(got, c), loss(again, c), equal_nan=True) for c in ("cond_loss", "uncond_loss")), "(want True)")

real, held = S.forward_nll, []
big = int(min(40 * GiB, 0.4 * torch.cuda.mem_get_info()[0])) if cuda else 1 << 20
def oom_first(*a, **k):  # the first call holds `big` bytes and fails: the retry must not keep them alive
    held.append(alloc())
    if len(held) == 1: x = torch.empty(big, dtype=torch.uint8, device=dev); raise torch.OutOfMemoryError("injected")
    return real(*a, **k)
ooms, calls = [], []
lim = 1 << (11 if cpu else 14)
def small_memory(model, seqs, starts, prefix_len=0, *a, **k):  # "memory" for `lim` padded tokens per batch
    padded = len(seqs) * max(len(s) - prefix_len for s in seqs); calls.append(padded)
    if padded > lim: ooms.append(padded); raise torch.OutOfMemoryError("injected")
    return real(model, seqs, starts, prefix_len, *a, **k)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    S.forward_nll = oom_first
    try: S.score(rows, (m, tok), cache_dir=False, batch_tokens=1 << 16)
    finally: S.forward_nll = real
print(f"4. injected OOM holding {big / GiB:.1f} GiB: {(held[1] - held[0]) / GiB:.2f} GiB still held at the retry (want 0.00), {len(held)} calls")
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always"); S.forward_nll = small_memory
    try: r5 = S.score(rows, (m, tok), cache_dir=False, batch_tokens=1 << 16)
    finally: S.forward_nll = real
print(f"5. OOM above {lim:,} padded tokens from a 65,536 budget: {len(ooms)} OOMs in {len(calls)} batches (want 1 to "
      f"{int(np.log2((1 << 16) / lim))}: each halves the budget below the failed batch, for the rest of the run), max|d loss| "
      f"vs no OOM {maxdiff(r5, got):.2e}; {len(w)} warning(s): {[str(x.message) for x in w]}")

if cuda:  # a real OOM: cap this process's memory at what it holds + 512 MiB and ask for 2**20-token batches
    torch.cuda.empty_cache(); total = torch.cuda.mem_get_info()[1]
    torch.cuda.set_per_process_memory_fraction(min(1.0, (torch.cuda.memory_reserved() + (512 << 20)) / total))
    try:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always"); t0 = time.time(); r6 = S.score(rows, (m, tok), cache_dir=False, batch_tokens=1 << 20)
        print(f"6. real OOMs under a +512 MiB cap: scored in {time.time() - t0:.1f}s, max|d loss| vs uncapped {maxdiff(r6, got):.2e} "
              f"(bf16 noise only), warnings: {[str(x.message) for x in w]}")
    finally: torch.cuda.set_per_process_memory_fraction(1.0); torch.cuda.empty_cache()

bt = S.default_batch_tokens(m)
if cuda: torch.cuda.reset_peak_memory_stats()
t0 = time.time(); S.score(rows, (m, tok), cache_dir=False)
print(f"7. default batch_tokens {bt:,} (CPU: 4096; big GPU: up to 262,144): {time.time() - t0:.1f}s, peak "
      f"{torch.cuda.max_memory_allocated() / GiB if cuda else 0:.2f} GiB")
with torch.no_grad(): m.get_output_embeddings().weight.mul_(300)
print("8. check_fast_head with large logits (want True):", S.check_fast_head(m))
del m; torch.cuda.empty_cache() if cuda else None

mt, tt = load_lm("tiny-llama", device=dev); print("   tiny-llama loaded as", mt.dtype, "(bf16 on a bf16 GPU)")
w0 = mt.model.norm.weight.detach().float().clone()
train_lm(mt, tt, rows, max_steps=1, batch_size=16, lr=1e-6, warmup=0, weight_decay=0.0, eval_start=False, device=dev)
print("9. trained in", {str(p.dtype) for p in mt.parameters()}, "(want float32); a 1e-6 step moved the norm weight by",
      f"{(mt.model.norm.weight.detach() - w0).abs().max().item():.1e} (want ~1e-6, not 0)")
PY
if [ "$CPU" = 1 ]; then echo "CPU dry run: GPU-only steps skipped"; exit 0; fi
if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then
  torchrun --standalone --nproc_per_node 2 -m smallsel_nb.cli score $T/pool.parquet --model small-llama --out $T/tr.parquet --cache-dir $T/c
  smallsel score $T/pool.parquet --model small-llama --out $T/one.parquet --cache-dir $T/c1
  python -c "import pyarrow.parquet as pq,numpy as np;a,b=(pq.read_table('$T/'+f+'.parquet')['ifd'].to_numpy() for f in ('tr','one'));print('2 ranks vs 1 max|d ifd| (bf16: small, not 0):',np.nanmax(abs(a-b)))"
else echo "one GPU: the 2-rank check is skipped"; fi
smallsel finetune $T/pool.parquet --model tiny-llama --out $T/ft --max-steps 30 --batch-size 32
python bench/scoring.py --gpu --gpu-rows 2048
python bench/scoring.py --gpu --gpu-rows 1024 --batch-tokens-gpu 0  # the default budget (from free memory)
if [ "${SMOKE_COMPILE:-0}" = 1 ]; then python bench/scoring.py --gpu --gpu-rows 1024 --compile; fi  # torch.compile: minutes to compile
