"Comparison harness: arms, compute accounting, statistics, verdict, YAML config, demo plumbing (tiny preset, few steps)."
import json
import numpy as np
import pandas as pd
import pytest
from smallsel_nb.core import SmallselError, matmul_params
from smallsel_nb.models import make_lm
from smallsel_nb.select import Pipeline, Bottom, Threshold
from smallsel_nb.synth import noisy_benchmark
from smallsel_nb.compare import (compare, make_arms, mean_ci, Cost, CompareResult, run_demo, cli_compare, cli_demo,
                                 scoring_tokens, scoring_cost)

@pytest.fixture(scope="module")
def bench():
    pool, ev = noisy_benchmark(200, 24, seed=0)
    return pool.add_column("cond_loss", np.random.default_rng(0).random(len(pool))), ev

KW = dict(template="none", max_steps=2, batch_size=16, eval_every=0, eval_start=False, log=False)

@pytest.mark.slow
def test_grid_and_accounting(bench):
    pool, ev = bench
    sel = {"low": lambda b: Pipeline([], budget=Bottom("cond_loss", keep=b))}
    r = compare(pool, ev, sel, budgets=[0.25], seeds=[0, 1], model="tiny", cost=Cost(5e8, 2.0), **KW)
    assert list(r.runs.label.unique()) == ["full", "random@0.25", "low@0.25"]
    assert (r.runs.groupby("label").size() == 2).all()
    low = r.runs[r.runs.label == "low@0.25"]
    assert (low.selection_flops == 5e8).all() and (low.total_flops == low.train_flops + 5e8).all()
    assert (r.runs[r.runs.label != "low@0.25"].selection_flops == 0).all()
    m = make_lm("tiny")[0]
    assert np.allclose(r.runs.train_flops, 6 * matmul_params(m) * r.runs.tokens)
    assert r.runs.exact_match.notna().all() and r.runs.eval_loss.notna().all()
    t = r.table()
    assert list(t.columns) == ["arm", "rows", "seeds", "eval loss", "exact match", "defect rate", "FLOPs (train + select)", "compute vs full", "wall s (train + select)"]
    assert " ± " in t["eval loss"].iloc[0] and t["compute vs full"].iloc[0] == "100%"

def test_empty_selection_is_refused(bench):
    pool, ev = bench
    with pytest.raises(SmallselError, match="selection 'none' kept no rows of the 200"):
        compare(pool, ev, {"none": Pipeline([Threshold("cond_loss", max=-1)])}, seeds=1, model="tiny", full=False, random=False, **KW)
    with pytest.raises(SmallselError, match="kept no rows"):
        compare(pool, ev, {"none": np.array([], int)}, seeds=1, model="tiny", full=False, random=False, **KW)

def test_eval_without_answers_notes_it(bench):
    pool, ev = bench
    r = compare(pool, ev.remove_columns("answer"), seeds=1, model="tiny", random=False, **KW)
    assert r.runs.exact_match.isna().all() and "no `answer` column" in r.summary()
    assert r.table()["exact match"].iloc[0] == "—"

def test_bad_settings(bench):
    pool, ev = bench
    with pytest.raises(SmallselError, match="unknown recipe"): make_arms({"x": "nope"})
    with pytest.raises(SmallselError, match="must be a fraction"): make_arms(budgets=[0])
    with pytest.raises(SmallselError, match="seeds must be"): compare(pool, ev, seeds=[], model="tiny", **KW)
    with pytest.raises(SmallselError, match="pool is empty"): compare(pool.select([]), ev, model="tiny", **KW)

def test_mean_ci():
    m, h = mean_ci([1.0, 2.0, 3.0, 4.0])
    assert m == 2.5 and h == pytest.approx(3.182446 * np.std([1, 2, 3, 4], ddof=1) / 2, rel=1e-5)
    assert np.isnan(mean_ci([1.0])[1]) and np.isnan(mean_ci([])[0])

def _result(sel_loss, sel_em, sel_flops):
    "A CompareResult from hand-written runs (the verdict must follow the numbers)."
    base = dict(seed=0, rows=100, tokens=1, seconds=1.0, selection_seconds=0.0)
    runs = pd.DataFrame([
        dict(label="full", arm="full", budget=1.0, charged=False, train_flops=100.0, selection_flops=0.0, total_flops=100.0, eval_loss=1.0, exact_match=0.5, **base),
        dict(label="random@0.3", arm="random", budget=0.3, charged=False, train_flops=30.0, selection_flops=0.0, total_flops=30.0, eval_loss=1.2, exact_match=0.4, **base),
        dict(label="sel@0.3", arm="sel", budget=0.3, charged=True, train_flops=30.0, selection_flops=sel_flops, total_flops=30.0 + sel_flops, eval_loss=sel_loss, exact_match=sel_em, **base)])
    return CompareResult(runs, {}, Cost(sel_flops))

def test_verdict_follows_the_numbers():
    assert _result(0.9, 0.6, 5.0).verdict()[0].startswith("sel@0.3: TARGET MET")
    assert "compute 35% of the full run" in _result(0.9, 0.6, 5.0).verdict()[0]
    assert "target not met" in _result(1.1, 0.6, 5.0).verdict()[0]    # loses to full on loss
    assert "target not met" in _result(0.9, 0.45, 5.0).verdict()[0]   # loses to full on exact match
    assert "target not met" in _result(0.9, 0.6, 15.0).verdict()[0]   # 45% of the full compute


def test_verdict_without_exact_match():
    "Eval rows without answers: the verdict judges on eval loss alone and does not print NaN exact match."
    r = _result(0.9, None, 5.0); r.runs["exact_match"] = None
    v = r.verdict()[0]
    assert v.startswith("sel@0.3: TARGET MET") and "exact match" not in v and "nan" not in v
    r.runs.loc[2, "eval_loss"] = 1.1
    assert r.verdict()[0].startswith("sel@0.3: target not met")

def test_scoring_cost(bench):
    pool, _ = bench
    m, tok = make_lm("tiny")
    n = scoring_tokens(pool, tok, template="none")
    assert scoring_cost(m, n).flops == 2 * matmul_params(m) * n

@pytest.mark.slow
def test_cli_compare_yaml(tmp_path, capsys):
    cfg = tmp_path/"grid.yaml"
    cfg.write_text(f"""
pool: {{synth: {{n: 200, noise: 0.4, seed: 1}}}}
eval: {{synth: {{n: 24}}}}
reference: {{model: tiny, fraction: 0.5, train: {{max_steps: 2}}}}
selections:
  cherry: cherry
  low-loss: {{strategy: bottom, by: cond_loss}}
budgets: [0.3]
seeds: 1
model: tiny
train: {{max_steps: 2, batch_size: 16, eval_every: 0}}
template: none
out: {tmp_path/'out'}
""")
    r = cli_compare(str(cfg))
    assert list(r.runs.label) == ["full", "random@0.3", "cherry@0.3", "low-loss@0.3"]
    assert (tmp_path/"out"/"results.json").exists() and (tmp_path/"out"/"curves.png").exists()
    assert "cherry@0.3" in capsys.readouterr().out
    assert json.loads((tmp_path/"out"/"results.json").read_text())["cost"]["flops"] > 0

def test_cli_compare_bad_config(tmp_path):
    cfg = tmp_path/"bad.yaml"
    cfg.write_text("pool: {synth: {n: 50}}\nselections: {x: {strategy: best, by: ifd}}\n")
    with pytest.raises(SmallselError, match="eval"): cli_compare(str(cfg))
    with pytest.raises(SmallselError, match="no such file"): cli_compare(str(tmp_path/"missing.yaml"))

@pytest.mark.slow
def test_demo_plumbing(tmp_path):
    r = run_demo(out=tmp_path, log=False, n=200, n_eval=24, large="tiny", ref_train=dict(max_steps=2), train=dict(max_steps=2, eval_every=0))
    assert list(r.stats().arm) == ["full", "random@0.3", "selected@0.3"]
    assert {p.name for p in tmp_path.iterdir()} == {"curves.png", "results.json", "table.md"}
    assert len(r.verdict()) == 1

@pytest.mark.slow
def test_yaml_grid_on_benchmark_v2_with_generation_metrics(tmp_path):
    "A YAML grid on a v2 pool, the demo's v2 selection rule, and the defect rates of greedy and sampled generations."
    cfg = tmp_path/"grid.yaml"
    cfg.write_text("""
pool: {synth: {benchmark: v2, n: 200, noise: 0.6, seed: 1}}
eval: {synth: {benchmark: v2, n: 20, seed: 1}}
reference: {model: tiny, fraction: 1.0, train: {max_steps: 2, batch_size: 32}}
selections: {selected: {demo: v2}}
budgets: [0.3]
seeds: 1
model: tiny
train: {max_steps: 2, batch_size: 16, eval_every: 0}
template: none
max_length: 128
frame: "Answer:"
temperature: 1.0
""")
    r = cli_compare(str(cfg))
    s = r.stats().set_index("arm")
    assert list(s.index) == ["full", "random@0.3", "selected@0.3"]
    for k in ("defect_rate", "wrong_rate", "defect_off_format", "sampled_defect_rate", "sampled_exact_match"): assert s[k].notna().all(), k
    assert np.allclose(s.exact_match + s.wrong_rate + s.defect_rate, 1.0)
    assert "defect rate" in r.table().columns and "defect rate" in r.verdict()[0]

@pytest.mark.slow
def test_workers_train_the_same_models(bench):
    "Runs trained side by side in spawned processes give the same numbers, in the same table order, as one after another."
    pool, ev = bench
    sel = {"low": lambda b: Pipeline([], budget=Bottom("cond_loss", keep=b))}
    one, two = (compare(pool, ev, sel, budgets=[0.25], seeds=[0, 1], model="tiny", workers=w, **KW) for w in (1, 2))
    cols = ["label", "seed", "rows", "tokens", "train_flops", "eval_loss", "exact_match"]
    pd.testing.assert_frame_equal(one.runs[cols], two.runs[cols])
    assert list(one.histories) == list(two.histories)

def test_workers_refuse_bad_values(bench):
    pool, ev = bench
    with pytest.raises(SmallselError, match="workers=0"): compare(pool, ev, seeds=1, model="tiny", workers=0, **KW)
    with pytest.raises(SmallselError, match="needs a model name"):
        compare(pool, ev, seeds=1, model=lambda seed: make_lm("tiny", seed=seed), workers=2, **KW)

@pytest.mark.slow
def test_unguarded_script_with_workers_says_what_to_do(tmp_path):
    "Spawned workers import a script again; without a `__main__` guard the pool breaks, and the error says how to fix it."
    import subprocess, sys
    f = tmp_path/"unguarded.py"
    f.write_text("from smallsel_nb.compare import compare\nfrom smallsel_nb.synth import noisy_benchmark\n"
                 "pool, ev = noisy_benchmark(60, 8, seed=0)\n"
                 "compare(pool, ev, seeds=1, model='tiny', workers=2, template='none', max_steps=1, batch_size=8, eval_every=0, eval_start=False, log=False)\n")
    r = subprocess.run([sys.executable, str(f)], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "if __name__ == '__main__':" in r.stderr and "workers=1" in r.stderr
