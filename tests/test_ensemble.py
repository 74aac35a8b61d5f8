"Tests for smallsel_nb.ensemble: each combination, the NaN policy, agreement, merging files, the CLI, each bad input."
import contextlib, io

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy import stats

from smallsel_nb.core import SmallselError
from smallsel_nb.ensemble import (AGGREGATES, aggregate, aggregates, cli_ensemble, ensemble_scores, merge_scored,
                                  pct_ranks, rank_agreement, rank_spread, score_matrix, with_columns, zscores)
from smallsel_nb.select import Bottom, Top
from smallsel_nb.io import read_scored, write_rows


def scores(n=300, k=4, seed=0, nan=0.0):
    "K noisy views of one latent score; a share `nan` of the entries unscored."
    rng = np.random.default_rng(seed)
    q = rng.normal(size=n)
    S = q[:, None] + rng.normal(0, 1, (n, k)) * np.linspace(0.3, 1.5, k)
    if nan: S[rng.random((n, k)) < nan] = np.nan
    return q, S


def frame(S, prefix="ifd@m"):
    return pd.DataFrame({f"{prefix}{j}": S[:, j] for j in range(S.shape[1])} | {"id": [f"r{i}" for i in range(len(S))]})


def test_every_combination_keeps_orientation():
    q, S = scores()
    for h in AGGREGATES:
        assert stats.spearmanr(aggregate(S, h), q).statistic > 0.5, h


def test_borda_and_rankmean_same_order_on_complete_data():
    _, S = scores()
    np.testing.assert_allclose(aggregate(S, "borda"), aggregate(S, "rankmean") * S.shape[1] * (len(S) - 1))


def test_trimmed_without_trim_is_zmean_and_median_with_three():
    _, S = scores(k=3)
    np.testing.assert_allclose(aggregate(S, "trimmed", trim=0), aggregate(S, "zmean"))
    np.testing.assert_allclose(aggregate(S, "trimmed", trim=0.34), np.median(zscores(S), 1))


def test_veto_bounds():
    _, S = scores(nan=0.1)
    lo, mid, hi = aggregate(S, "min"), aggregate(S, "rankmean"), aggregate(S, "max")
    assert np.all(lo <= mid + 1e-12) and np.all(mid <= hi + 1e-12)
    two = (~np.isnan(S)).sum(1) >= 2
    np.testing.assert_allclose(rank_spread(S)[two], (hi - lo)[two])
    assert np.isnan(rank_spread(S)[~two]).all()


def test_unscored_rows_are_omitted_not_zero():
    _, S = scores(n=50, k=3)
    S[7, 1] = np.nan
    z = zscores(S)
    assert aggregate(S, "zmean")[7] == pytest.approx(np.mean(z[7, [0, 2]]))
    assert np.isnan(aggregate(S, "zmean", min_models=3)[7])
    assert not np.isnan(aggregate(S, "zmean", min_models=3)[[0, 6, 8]]).any()
    ranks = pct_ranks(S)
    assert np.isnan(ranks[7, 1]) and ranks[:, 1][~np.isnan(ranks[:, 1])].max() == 1.0


def test_nan_raise_names_row_and_model():
    _, S = scores(n=20, k=3)
    S[4, 2] = np.nan
    with pytest.raises(SmallselError, match=r"pool: m2 did not score the row .* \(row 4\)"):
        aggregate(S, nan="raise", names=["m0", "m1", "m2"], source="pool")


def test_selector_drops_rows_with_too_few_models():
    _, S = scores(n=40, k=3)
    S[[3, 5], 0] = np.nan
    d = with_columns(frame(S), ensemble_scores(frame(S), [f"ifd@m{j}" for j in range(3)], min_models=3))
    sel = Bottom("ens_rankmean", keep_n=10)(d)
    assert sel.reason(3) == "unscored: ens_rankmean is NaN" and 3 not in sel.kept


def test_ensemble_scores_columns_and_types():
    _, S = scores(n=30, k=3)
    e = ensemble_scores(frame(S), [f"ifd@m{j}" for j in range(3)], how="zmean,borda")
    assert list(e.columns) == ["ens_zmean", "ens_borda", "ens_spread", "ens_n_models"]
    t = with_columns(pa.Table.from_pandas(frame(S)), e)
    assert t.num_rows == 30 and "ens_borda" in t.column_names


def test_rank_agreement_matches_scipy():
    _, S = scores(nan=0.05)
    ag = rank_agreement(frame(S), [f"ifd@m{j}" for j in range(4)], "kendall")
    m = ~np.isnan(S[:, 0]) & ~np.isnan(S[:, 3])
    assert ag.iloc[0, 3] == pytest.approx(stats.kendalltau(S[m, 0], S[m, 3]).statistic)
    assert np.allclose(np.diag(ag), 1) and np.allclose(ag, ag.T)


def test_linear_scale():
    _, S = scores(n=200_000, k=5, nan=0.01)
    e = ensemble_scores(pd.DataFrame(S, columns=list("abcde")), list("abcde"))
    assert len(e) == 200_000 and e.ens_n_models.min() >= 1


@pytest.mark.parametrize("bad, match", [
    (lambda S, d: score_matrix(d, ["ifd@m0"]), "at least 2 models"),
    (lambda S, d: score_matrix(d, ["ifd@m0", "ifd@m0"]), "listed twice"),
    (lambda S, d: score_matrix(d, ["ifd@m0", "nope"]), "score column 'nope' not found"),
    (lambda S, d: score_matrix(d.assign(**{"ifd@m1": np.nan}), ["ifd@m0", "ifd@m1"]), "ifd@m1 scored no row"),
    (lambda S, d: score_matrix(d.assign(**{"ifd@m1": np.r_[np.inf, S[1:, 1]]}), ["ifd@m0", "ifd@m1"]), r"infinite score .*\(row 0\)"),
    (lambda S, d: aggregate(np.c_[S[:, :1], np.ones(len(S))]), "the same score for every row"),
    (lambda S, d: aggregate(S, "median"), "how='median'"),
    (lambda S, d: aggregate(S, nan="zero"), "nan='zero'"),
    (lambda S, d: aggregate(S, min_models=9), "min_models=9"),
    (lambda S, d: aggregate(S, "trimmed", trim=0.6), "trim=0.6"),
    (lambda S, d: aggregate(S[:, 0]), r"\(N, K\) matrix"),
    (lambda S, d: ensemble_scores(d, ["ifd@m0", "ifd@m1"], how="vote"), "how='vote'"),
    (lambda S, d: rank_agreement(S, method="pearson"), "method='pearson'"),
    (lambda S, d: with_columns(d, {"x": np.ones(3)}), "3 values per new column"),
])
def test_bad_input(bad, match):
    _, S = scores(n=20, k=3)
    with pytest.raises(SmallselError, match=match): bad(S, frame(S))


def test_merge_by_id_and_bad_files():
    a = pa.table({"id": ["a", "b", "c"], "ifd": [0.1, 0.5, 0.9]})
    b = pa.table({"id": ["c", "a"], "ifd": [0.8, 0.2]})
    m, names, miss = merge_scored([a, b], ["x", "y"])
    assert names == ["ifd@x", "ifd@y"] and miss == {"x": 0, "y": 1}
    assert m.column("ifd@y").to_pylist()[0] == 0.2 and np.isnan(m.column("ifd@y").to_pylist()[1])
    with pytest.raises(SmallselError, match="id 'b' is not in"): merge_scored([b, a], ["y", "x"])
    with pytest.raises(SmallselError, match="occurs more than once"):
        merge_scored([a, pa.table({"id": ["a", "a"], "ifd": [1.0, 2.0]})], ["x", "y"])
    with pytest.raises(SmallselError, match="id column 'id' not found"): merge_scored([a, b.drop_columns(["id"])], ["x", "y"])


def write_models(d, k=3, drop=0):
    rng = np.random.default_rng(1)
    q = rng.normal(size=120)
    base = pd.DataFrame({"id": [f"r{i}" for i in range(120)], "instruction": "q", "input": "", "output": "a"})
    files = []
    for j in range(k):
        f = base.assign(ifd=q + rng.normal(0, 0.5, 120), cond_loss=1.0).sample(frac=1, random_state=j)
        if j == k - 1 and drop: f = f.iloc[drop:]
        files.append(str(d / f"m{j}.parquet")); write_rows(pa.Table.from_pandas(f, preserve_index=False), files[-1])
    write_rows(pa.Table.from_pandas(base.assign(ifd=q), preserve_index=False), str(d / "large.parquet"))
    return files


def test_cli_files(tmp_path):
    files = write_models(tmp_path, drop=4)
    with contextlib.redirect_stdout(io.StringIO()) as buf:
        cli_ensemble(files, out=str(tmp_path / "e.jsonl"), how="zmean,max", min_models=3, reference=str(tmp_path / "large.parquet"),
                     heatmap=str(tmp_path / "h.png"))
    out = read_scored(tmp_path / "e.jsonl").to_pandas()
    assert int(out.ens_zmean.isna().sum()) == 4 and "ens_max" in out and "ens_rankmean" not in out
    assert "ifd" not in out and "cond_loss" not in out  # the first model's own columns are not passed on as if shared
    assert "rank agreement with the reference" in buf.getvalue() and (tmp_path / "h.png").stat().st_size > 0


def test_cli_heatmap_without_matplotlib_fails_before_writing(tmp_path):
    "--heatmap without matplotlib: one error naming the extra, before the output file is written."
    from unittest.mock import patch
    files = write_models(tmp_path)
    with patch.dict("sys.modules", {"matplotlib.figure": None}), pytest.raises(SmallselError, match=r'smallsel_nb\[notebooks\]'):
        cli_ensemble(files, out=str(tmp_path / "e.jsonl"), heatmap=str(tmp_path / "h.png"))
    assert not (tmp_path / "e.jsonl").exists() and not (tmp_path / "h.png").exists()


@pytest.mark.parametrize("kw, match", [
    (dict(n=1), "at least 2 scored files"),
    (dict(out="e.csv"), "--out must end in .parquet or .jsonl"),
    (dict(names="a,b"), "--names gives 2 names for 3 models"),
    (dict(reference="missing.parquet"), "--reference missing.parquet: no such file"),
    (dict(model=["tiny"], n=1), "at least 2 models: repeat --model"),
    (dict(model=["tiny", "small"]), "with --model give one data file to score, not 3"),
    (dict(by="uncond_loss"), "score column 'uncond_loss' not found"),
])
def test_cli_bad_input(tmp_path, kw, match):
    files = write_models(tmp_path)
    n = kw.pop("n", 3)
    out = str(tmp_path / kw.pop("out", "e.parquet"))
    with pytest.raises(SmallselError, match=match): cli_ensemble(files[:n], out=out, **kw)


def test_cli_parser_repeated_model():
    from smallsel_nb.cli import command_parser
    p = command_parser(cli_ensemble, "smallsel ensemble")
    a = p.parse_args(["pool.jsonl", "--model", "tiny", "--model", "small-llama", "--out", "e.parquet", "--how", "zmean"])
    assert a.inputs == ["pool.jsonl"] and a.model == ["tiny", "small-llama"] and a.how == "zmean"
    a = p.parse_args(["a.parquet", "b.parquet", "--out", "e.parquet"])
    assert a.inputs == ["a.parquet", "b.parquet"] and a.model is None and a.nan == "omit"
    assert "--min-models" in p.format_help() and "repeat --model" in p.format_help()


def test_cli_scores_with_models(tmp_path, monkeypatch):
    "Two untrained tiny models score a small data file (seconds): the --model path end to end."
    monkeypatch.setenv("SMALLSEL_CACHE", str(tmp_path / "cache"))
    from smallsel_nb.synth import make_noisy_instructions
    from smallsel_nb.data import save_rows
    save_rows(make_noisy_instructions(24, seed=0), str(tmp_path / "pool.jsonl"))
    with contextlib.redirect_stdout(io.StringIO()):
        t = cli_ensemble([str(tmp_path / "pool.jsonl")], out=str(tmp_path / "e.parquet"), model=["tiny", "tiny-llama"],
                         by="cond_loss", template="none", dtype="float32", device="cpu")
    assert t.num_rows == 24 and {"cond_loss@tiny", "cond_loss@tiny-llama", "ens_zmean"} <= set(t.column_names)
