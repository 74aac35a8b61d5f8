"The scoring benchmark's floor counts the work the engine really does (bench/scoring.py is a script: loaded from its path)."
import importlib.util
from pathlib import Path
from smallsel_nb.data import tokenize_for_scoring
from smallsel_nb.models import load_lm
from smallsel_nb.scoring import score_tokenized
from smallsel_nb.synth import make_noisy_instructions

def bench_module():
    spec = importlib.util.spec_from_file_location("bench_scoring", Path(__file__).parents[1]/"bench"/"scoring.py")
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    return m

def test_floor_counts_the_flops_the_engine_ran():
    b = bench_module()
    model, tok = load_lm("tiny", dtype="float32", device="cpu")
    t = tokenize_for_scoring(make_noisy_instructions(40, seed=0), tok, max_length=256, verbose=False)
    res = score_tokenized(t, model, tok.pad_token_id, 4096, prefix_cache=True, desc=None)
    engine, per_row = b.counted_flops(model, t)
    assert engine == b.useful_flops(model, res)  # the floor's count is the count of a finished run
    every = sum(len(c) + len(u) for c, u in zip(t["cond_ids"], t["uncond_ids"]))
    assert res["tokens_computed"] < every  # the template header was cached, so the engine ran fewer tokens ...
    assert per_row > engine  # ... and a per-row script, head at every position, does more
