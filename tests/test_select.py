"Tests for smallsel_nb.select: each selector, each bad input, determinism, the report, k-center memory, the CLI."
import json, tracemalloc

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from datasets import Dataset

from smallsel_nb.core import SmallselError
from smallsel_nb.select import Band, Bottom, Columns, IFDRule, Percentile, Pipeline, Random, Threshold, Top
from smallsel_nb.evaluate import noise_removal, removal_table
from smallsel_nb.dedup import ExactDedup, NearDedup, minhash_signatures, near_duplicate_of, row_hashes
from smallsel_nb.heuristics import Echo, Empty, Length, NonAlpha, Refusal, Repetition
from smallsel_nb.diversity import ClusterBalanced, KCenter, Stratified, even_split, k_center_greedy, proportional_split
from smallsel_nb.recipes import RECIPES, SELECTORS, cli_select, default_recipe


def scored(n=400, seed=0):
    "A scored table: texts with exact and near duplicates, tasks, noise labels, random scores, a few NaN."
    rng = np.random.default_rng(seed)
    words = np.array("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma".split())
    instr = [" ".join(rng.choice(words, 12)) for _ in range(n)]
    out = [" ".join(rng.choice(words, 40)) for _ in range(n)]
    kind = np.array(["clean"] * n, dtype=object)
    for i in range(10, 30):                      # exact duplicates (case, punctuation, spacing changed)
        instr[i], out[i], kind[i] = instr[i - 10].upper() + "!", "  " + out[i - 10], "duplicate"
    for i in range(40, 50):                      # near duplicates: one word of 52 changed
        w = instr[i - 10].split(); w[5] = "changed"
        instr[i], out[i], kind[i] = " ".join(w), out[i - 10], "near_duplicate"
    cond = rng.normal(1.5, 0.5, n); unc = cond + rng.normal(0.3, 0.3, n)
    df = pd.DataFrame({"id": [f"row{i}" for i in range(n)], "instruction": instr, "input": "", "output": out,
                       "task": rng.choice(["code", "math", "chat", "facts"], n, p=[0.1, 0.3, 0.3, 0.3]),
                       "noise_kind": kind, "cond_loss": cond, "uncond_loss": unc, "ifd": np.exp(cond - unc)})
    df.loc[[100, 200], ["cond_loss", "ifd"]] = np.nan
    return df


@pytest.fixture(scope="module")
def df(): return scored()


# --- score rules ---------------------------------------------------------------------------------------------------

def test_top_bottom(df):
    s = Top("ifd", keep_n=10)(df)
    x = df.ifd.to_numpy()
    assert len(s) == 10 and np.nanmin(x[s.kept]) >= np.nanmax(np.delete(x, np.r_[s.kept, 100, 200]))
    b = Bottom("cond_loss", keep=0.1)(df)
    assert len(b) == 40 and b.reason(int(np.nanargmax(df.cond_loss))) == "bottom[cond_loss]: not in the bottom 40 by cond_loss"


def test_top_ties_keep_row_order():
    t = pd.DataFrame({"s": [1.0, 2.0, 2.0, 2.0, 0.5]})
    assert Top("s", keep_n=2)(t).kept.tolist() == [1, 2]


def test_threshold_and_ifd_rule(df):
    s = Threshold("cond_loss", min=1.0, max=2.0)(df)
    kept = df.cond_loss.to_numpy()[s.kept]
    assert (kept >= 1.0).all() and (kept <= 2.0).all()
    r = IFDRule()(df)
    assert (df.ifd[r.kept] <= 1).all()
    i = int(np.flatnonzero(df.ifd.to_numpy() > 1)[0])
    assert "the instruction makes the response less likely" in r.reason(i)


def test_percentile(df):
    s = Percentile("cond_loss", 10, 90)(df)
    assert abs(len(s) - 0.8 * 398) <= 2


@pytest.mark.parametrize("band,where", [("low", 0), ("middle", 1), ("high", 2)])
def test_band(df, band, where):
    s = Band("cond_loss", band, keep_n=100)(df)
    x = np.sort(df.cond_loss.dropna().to_numpy())
    lo = {0: 0, 1: (398 - 100) // 2, 2: 298}[where]
    assert np.allclose(np.sort(df.cond_loss.to_numpy()[s.kept]), x[lo:lo + 100])


def test_random_budget(df):
    assert len(Random(keep=0.25)(df)) == 100
    assert Random(keep_n=50)(df, seed=1).kept.tolist() != Random(keep_n=50)(df, seed=2).kept.tolist()


def test_splits():
    assert proportional_split([60, 30, 10], 10).tolist() == [6, 3, 1]
    assert even_split([100, 3, 50], 30).tolist() == [14, 3, 13]


def test_stratified_keeps_every_domain(df):
    # code rows get the lowest IFD: a plain top-k keeps none, stratified keeps code at its share
    d = df.assign(ifd=np.where(df.task == "code", 0.01, df.ifd))
    plain, strat = Top("ifd", keep=0.2)(d), Stratified(Top("ifd"), col="task", keep=0.2)(d)
    assert plain.mix["task"]["after"].get("code", 0) == 0
    share = (d.task == "code").mean()
    assert abs(strat.mix["task"]["after"]["code"] / len(strat) - share) < 0.05


# --- clusters and diversity ----------------------------------------------------------------------------------------

def test_cluster_balanced_even_and_best_first():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(c * 10, 0.1, (m, 4)) for c, m in enumerate([300, 60, 6])]).astype(np.float32)
    t = pd.DataFrame({"score": rng.random(len(X)), "blob": np.repeat([0, 1, 2], [300, 60, 6])})
    s = ClusterBalanced(X, k=3, by="score", keep_n=30)(t)
    assert np.bincount(t.blob[s.kept]).tolist() == [12, 12, 6]
    top = t[t.blob == 1].score.nlargest(12).index
    assert sorted(s.kept[t.blob.to_numpy()[s.kept] == 1]) == sorted(top)


def test_cluster_on_vector_column_and_trajectories():
    X = np.r_[np.zeros((20, 3)), np.ones((20, 3)) * 5] + np.random.default_rng(0).normal(0, 0.01, (40, 3))
    ds = Dataset.from_dict({"emb": X.tolist(), "l0": X[:, 0], "l1": X[:, 1]})
    for feats in ("emb", ["l0", "l1"]):
        s = ClusterBalanced(feats, k=2, keep_n=10)(ds)
        assert ((s.kept < 20).sum(), (s.kept >= 20).sum()) == (5, 5)


def test_minibatch_kmeans_path():
    X = np.random.default_rng(0).normal(size=(25_000, 8)).astype(np.float32)
    s = ClusterBalanced(X, k=8, keep_n=800, fit_sample=5000)(pd.DataFrame({"x": np.zeros(len(X))}))
    assert len(s) == 800


def test_k_center_no_n_by_n():
    N = 20_000
    X = np.random.default_rng(0).normal(size=(N, 16)).astype(np.float32)
    t = pd.DataFrame({"id": np.arange(N)})
    tracemalloc.start()
    s = KCenter(X, keep_n=64)(t)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(s) == 64 and peak < 0.01 * N * N * 4  # an N x N float32 matrix would be 1.6 GB


def test_k_center_selection_covers_blobs():
    X = np.repeat(np.eye(5, dtype=np.float32) * 100, 50, axis=0) + np.random.default_rng(0).normal(0, 1, (250, 5)).astype(np.float32)
    s = KCenter(X, keep_n=5, metric="cosine")(pd.DataFrame({"x": np.zeros(250)}))
    assert sorted(s.kept // 50) == [0, 1, 2, 3, 4]


# --- dedup -----------------------------------------------------------------------------------------------------------

def test_exact_dedup_normalizes_and_names_kept_id(df):
    s = ExactDedup()(df)
    assert set(range(10, 30)) <= set(np.flatnonzero(~s.mask))
    assert s.reason(12) == "exact-dedup: duplicate of id row2"
    assert s.steps[-1]["dropped"] == 20
    h = row_hashes(pa.array(["Hello,   World!", "hello world", "world hello"]))
    assert h[0] == h[1] != h[2]


def test_near_dedup(df):
    s = NearDedup()(df)
    dropped = set(np.flatnonzero(~s.mask))
    assert set(range(40, 50)) <= dropped and set(range(10, 30)) <= dropped
    assert len(dropped - set(range(10, 30)) - set(range(40, 50))) == 0   # no false positives on random rows
    assert s.reason(45) == "near-dedup: near-duplicate of id row35"


def test_near_dedup_groups_chain_to_first():
    sig = np.array([[1, 1, 1, 9], [2, 2, 2, 9], [3, 3, 7, 9], [4, 4, 4, 9]], dtype=np.uint32)
    assert near_duplicate_of(sig, threshold=0.7, bands=2).tolist() == [0, 0, 0, 3]
    assert minhash_signatures(pa.array(["", "a b c"])).shape == (32, 2)


# --- heuristics ------------------------------------------------------------------------------------------------------

def test_heuristics_each_drop_their_rows():
    t = pd.DataFrame({"instruction": ["Write a poem.", "Hi", "Tell a joke.", "Explain rain.", "Say cheese.", "List primes.", ""],
                      "output": ["Roses are red, violets are blue.", "", "As an AI language model, I can't tell jokes.",
                                 "Water falls falls falls falls falls falls falls falls falls falls",
                                 "say cheese", "@#$%^&*()!~", "An answer"]})
    assert Empty()(t).kept.tolist() == [0, 2, 3, 4, 5]
    assert Refusal()(t).kept.tolist() == [0, 1, 3, 4, 5, 6]
    assert Repetition()(t).kept.tolist() == [0, 1, 2, 4, 5, 6]
    assert NonAlpha()(t).kept.tolist() == [0, 1, 2, 3, 4, 6]
    assert Echo()(t).kept.tolist() == [0, 1, 2, 3, 5, 6]
    assert Length("output", min=5, max=40)(t).kept.tolist() == [0, 4, 5, 6]


# --- pipeline, report, determinism -----------------------------------------------------------------------------------

def test_pipeline_report_counts(df):
    sel = Pipeline([ExactDedup(), NearDedup(), IFDRule()], budget=Top("cond_loss", keep=0.5))(df)
    steps = {s["step"]: s for s in sel.steps}
    assert [s["step"] for s in sel.steps] == ["unscored", "exact-dedup", "near-dedup", "ifd>1", "top[cond_loss]"]
    assert steps["unscored"]["dropped"] == 2 and steps["exact-dedup"]["dropped"] == 20 and steps["near-dedup"]["dropped"] == 10
    for a, b in zip(sel.steps, sel.steps[1:]): assert a["out"] == b["in"]
    assert sum(s["dropped"] for s in sel.steps) + len(sel) == len(df)
    d = json.loads(sel.to_json())
    assert d["n_in"] == 400 and d["n_kept"] == len(sel) and d["mix"]["noise_kind"]["before"]["duplicate"] == 20
    assert d["mix"]["noise_kind"]["after"].get("duplicate", 0) == 0
    reasons = sel.drop_reason
    assert reasons[100] == "unscored: ifd is NaN" and all(reasons[i] is None for i in sel.kept)
    assert "<table>" in sel._repr_html_() and "| step |" in sel._repr_markdown_()


def test_budget_counts_original_size_and_reports_shortfall(df):
    sel = Pipeline([IFDRule()], budget=Top("cond_loss", keep=0.9))(df)
    left = int((df.ifd <= 1).sum())
    assert len(sel) == left < 360
    assert sel.to_dict()["budget"] == {"step": "top[cond_loss]", "target": 360, "kept": left, "short_by": 360 - left}
    assert sel.notes and "budget short" in sel.notes[0]


def test_same_seed_same_selection_byte_for_byte(df):
    def run(seed): return RECIPES["default"](keep=0.3)(df, seed=seed), ClusterBalanced(np.asarray(df[["cond_loss", "uncond_loss"]].fillna(0)), k=5, keep_n=50)(df, seed=seed)
    (a1, c1), (a2, c2) = run(7), run(7)
    assert a1.kept.tobytes() == a2.kept.tobytes() and a1.to_json(rows=True) == a2.to_json(rows=True)
    assert c1.kept.tobytes() == c2.kept.tobytes()
    assert Random(keep_n=50)(df, seed=7).kept.tobytes() != Random(keep_n=50)(df, seed=8).kept.tobytes()


def test_dataset_dataframe_table_agree(df):
    pipe = RECIPES["default"](keep=0.3)
    ds = Dataset.from_pandas(df)
    a, b, c = pipe(df), pipe(ds), pipe(pa.Table.from_pandas(df))
    assert a.kept.tolist() == b.kept.tolist() == c.kept.tolist()
    shuffled = ds.shuffle(seed=0)              # a Dataset with an indices mapping
    assert pipe(shuffled).kept.tolist() == pipe(shuffled.to_pandas()).kept.tolist()


def test_default_recipe_is_filters_then_lowest_ifd_per_task(df):
    pipe = RECIPES["default"](keep=0.3)
    assert [s.name for s in pipe.steps][-2:] == ["ifd>1", "stratified[task]:bottom[ifd]"]
    sel = pipe(df)
    before, after = sel.mix["task"]["before"], sel.mix["task"]["after"]
    assert len(sel) == 120 and set(after) == set(before)       # every task keeps rows
    flat = default_recipe(keep=0.3, stratify=None)(df)
    assert flat.steps[-1]["step"] == "bottom[ifd]" and len(flat) == 120


def test_default_recipe_without_task_column(df):
    sel = RECIPES["default"](keep=0.3)(df.drop(columns="task"))
    assert len(sel) == 120 and "no 'task' column, so the budget is not split" in sel.notes[-1]
    assert sel.kept.tolist() == default_recipe(keep=0.3, stratify=None)(df.drop(columns="task")).kept.tolist()


def test_stratify_option_replaces_default_column(df, tmp_path):
    src = tmp_path/"scores.parquet"; df.assign(domain=df.task).drop(columns="task").to_parquet(src)
    sel = cli_select(str(src), keep=0.3, stratify="domain")
    assert sel.steps[-1]["step"] == "stratified[domain]:bottom[ifd]" and not sel.notes


# --- noise removal -------------------------------------------------------------------------------------------------

def test_noise_removal_counts(df):
    sel = Top("ifd", keep_n=300)(df)
    t = noise_removal(sel, df)
    assert list(t.index) == ["all noise", "duplicate", "near_duplicate", "clean"]
    drop = ~sel.mask; noisy = (df.noise_kind != "clean").to_numpy()
    assert t.loc["all noise", "dropped"] == (drop & noisy).sum() == t.dropped[1:3].sum()
    assert np.isclose(t.loc["all noise", "precision"], (drop & noisy).sum() / drop.sum())
    assert np.isclose(t.loc["duplicate", "recall"], drop[10:30].mean())
    assert np.isclose(t.precision[1:].sum(), 1)              # every dropped row is in one kind
    assert noise_removal(sel.mask, Dataset.from_pandas(df)).equals(t)


def test_noise_removal_missing_label_column(df):
    with pytest.raises(SmallselError, match="noise label column 'kind' not found; available columns: id"):
        noise_removal(np.ones(len(df), bool), df, kind="kind")


def test_noise_removal_mask_wrong_length(df):
    with pytest.raises(SmallselError, match=r"has shape \(3,\) but the data has 400 rows"): noise_removal(np.ones(3, bool), df)


def test_noise_removal_mask_not_boolean(df):
    with pytest.raises(SmallselError, match="boolean mask"): noise_removal(np.arange(len(df)), df)


def test_noise_removal_selection_of_other_data(df):
    with pytest.raises(SmallselError, match="selection is over 10 rows but the data has 400"): noise_removal(Random(keep_n=5)(df.iloc[:10]), df)


def test_noise_removal_null_label(df):
    with pytest.raises(SmallselError, match=r"no noise label in column 'noise_kind' \(row 3\)"):
        noise_removal(np.ones(len(df), bool), df.assign(noise_kind=df.noise_kind.where(df.index != 3)))


def test_removal_table(df):
    t = removal_table({"random": lambda k: Random(keep=k), "ifd>1": lambda k: IFDRule()}, df.dropna(), keeps=(0.5,))
    assert list(t.index) == [("random", 0.5), ("ifd>1", 0.5)]
    assert t.loc[("random", 0.5), "kept"] == 199 and t.loc[("ifd>1", 0.5), "kept"] == int((df.ifd <= 1).sum())
    assert {"precision", "recall", "recall[duplicate]", "clean kept", "worst task", "clean kept in worst task"} <= set(t.columns)


def test_registries():
    assert {"top", "band", "threshold", "ifd", "cluster", "kcenter", "stratified", "exact-dedup", "near-dedup",
            "length", "repetition", "nonalpha", "echo", "refusal", "empty", "random", "percentile"} <= set(SELECTORS)
    assert "default" in RECIPES and isinstance(RECIPES["default"](keep=0.5), Pipeline)


# --- bad input (one test each) ---------------------------------------------------------------------------------------

def test_missing_score_column_names_available(df):
    with pytest.raises(SmallselError, match="score column 'ppl' not found; available columns: id, instruction"):
        Top("ppl", keep=0.5)(df)


def test_nan_drop_is_counted(df):
    s = Top("ifd", keep_n=5)(df)
    assert s.steps[0]["step"] == "unscored" and s.steps[0]["dropped"] == 2 and s.reason(200) == "unscored: ifd is NaN"


def test_nan_keep(df):
    assert Threshold("ifd", max=100)(df, nan="keep").mask[[100, 200]].all()


def test_nan_raise(df):
    with pytest.raises(SmallselError, match=r"NaN in score column 'ifd'.*rows 100, 200"):
        Top("ifd", keep_n=5)(df, nan="raise")


def test_budget_larger_than_data(df):
    with pytest.raises(SmallselError, match="keep_n=1000 is larger than the data"): Top("ifd", keep_n=1000)(df)


@pytest.mark.parametrize("keep", [0, -0.1, 1.5])
def test_keep_outside_unit_interval(keep):
    with pytest.raises(SmallselError, match=r"must be in \(0, 1\]"): Top("ifd", keep=keep)


def test_budget_without_size(df):
    with pytest.raises(SmallselError, match="give keep"): Top("ifd")(df)


def test_bad_features_rows(df):
    X = np.zeros((len(df), 3), np.float32); X[5] = np.nan
    with pytest.raises(SmallselError, match=r"NaN or inf \(row 5\)"): KCenter(X, keep_n=3)(df)


def test_no_text_columns():
    with pytest.raises(SmallselError, match="none of the text columns"): ExactDedup()(pd.DataFrame({"x": [1, 2]}))


def test_not_a_table():
    with pytest.raises(SmallselError, match="can't select from a list"): Columns([1, 2])


# --- CLI -----------------------------------------------------------------------------------------------------------

def test_cli_writes_rows_and_report(df, tmp_path, capsys):
    src = tmp_path/"scores.parquet"; df.to_parquet(src)
    sel = cli_select(str(src), keep=0.25, out=str(tmp_path/"kept.jsonl"), report=str(tmp_path/"r.json"))
    kept = pd.read_json(tmp_path/"kept.jsonl", lines=True)
    assert len(kept) == len(sel) and list(kept.columns) == list(df.columns) and kept.id.tolist() == df.id[sel.kept].tolist()
    assert json.loads((tmp_path/"r.json").read_text())["name"] == "default"
    assert "kept" in capsys.readouterr().out
    j = tmp_path/"scores.jsonl"; df.to_json(j, orient="records", lines=True)
    s2 = cli_select(str(j), keep_n=40, by="cond_loss", strategy="band", band="low", stratify="task", out=str(tmp_path/"k.parquet"))
    assert len(pd.read_parquet(tmp_path/"k.parquet")) == len(s2) == 40
    s3 = cli_select(str(j), by="ifd", strategy="threshold", max_score=1.0)
    assert (df.ifd[s3.kept] <= 1).all()


def test_cli_cluster_and_kcenter_with_npy(df, tmp_path):
    src = tmp_path/"scores.parquet"; df.to_parquet(src)
    np.save(tmp_path/"emb.npy", np.random.default_rng(0).normal(size=(len(df), 8)).astype(np.float32))
    for strategy in ("cluster", "kcenter"):
        s = cli_select(str(src), keep_n=20, strategy=strategy, emb=str(tmp_path/"emb.npy"), clusters=4 if strategy == "cluster" else None)
        assert len(s) == 20


def test_cli_bad_input(df, tmp_path):
    src = tmp_path/"scores.parquet"; df.to_parquet(src)
    (tmp_path/"x.csv").write_text("a,b\n")
    with pytest.raises(SmallselError, match="unknown file type"): cli_select(str(tmp_path/"x.csv"))
    with pytest.raises(SmallselError, match="no such file"): cli_select(str(tmp_path/"missing.jsonl"))
    with pytest.raises(SmallselError, match="recipe 'best' unknown"): cli_select(str(src), keep=0.5, recipe="best")
    with pytest.raises(SmallselError, match="needs --emb"): cli_select(str(src), keep=0.5, strategy="kcenter")
    with pytest.raises(SmallselError, match="--strategy top needs --by"): cli_select(str(src), keep=0.5, strategy="top")  # named, not silently the default recipe
