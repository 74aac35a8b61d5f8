"Tests for smallsel_nb.predictor: seed subsets, features, the predictor and its bad inputs, acquisition, the report, compute."
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from smallsel_nb.core import SmallselError, forward_flops, train_flops
from smallsel_nb.predictor import (LossPredictor, acquire, break_even, compute_plan, course_strategy, feature_frame,
                                   hidden_state_features, length_features, predict_large_loss, predictor_report,
                                   reducible_loss, score_bins, seed_rows)


@pytest.fixture(scope="module")
def sim():
    rng = np.random.default_rng(0)
    n = 1500
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "junk": rng.normal(size=n)})
    y = (1 + X.a + 0.7 * np.abs(X.b) + rng.normal(0, 0.3, n)).to_numpy()
    return X, y


def test_seed_rows_stratified_and_deterministic():
    strata = np.repeat(list("abc"), [500, 300, 200])
    s = seed_rows(1000, 0.1, strata, seed=3)
    assert len(s) == 100 and np.all(np.diff(s) > 0)
    assert pd.Series(strata[s]).value_counts().to_dict() == {"a": 50, "b": 30, "c": 20}
    assert np.array_equal(s, seed_rows(1000, 0.1, strata, seed=3))
    assert len(seed_rows(1000, 0.05)) == 50


def test_score_bins_cover_nan():
    b = score_bins(np.r_[np.linspace(0, 1, 100), np.nan], 4)
    assert np.bincount(b).tolist() == [25, 25, 25, 25, 1]


def test_length_features_words_and_empty():
    d = pd.DataFrame({"instruction": ["a b  c", ""], "input": ["", "x"], "output": ["one", ""]})
    f = length_features(d)
    assert f.instruction_words.tolist() == [3, 0] and f.output_chars.tolist() == [3, 0] and f.input_words.tolist() == [0, 1]


@pytest.mark.slow
def test_predictor_learns_and_reports(sim):
    X, y = sim
    s = seed_rows(len(y), 0.08)
    p = LossPredictor("hgb", n_boot=3).fit(X.iloc[s], y[s], rows=s)
    rest = np.setdiff1d(np.arange(len(y)), s)
    assert p.cv_spearman > 0.6 and stats.spearmanr(p.predict(X.iloc[rest]), y[rest]).statistic > 0.7
    assert p.uncertainty(X).shape == (len(y),) and (p.uncertainty(X) >= 0).all()
    r = LossPredictor("ridge", n_boot=0).fit(X.iloc[s], y[s])
    assert r.cv_spearman > 0.5


def test_predict_large_loss_counts_large_rows(sim):
    X, y = sim
    asked = []
    run = predict_large_loss(X, lambda i: (asked.append(len(i)), y[i])[1], frac=0.04, rounds=1, add_frac=0.02, n_boot=3)
    assert asked == [60, 30] and run.large_rows == 90
    assert np.array_equal(run.loss[run.labelled], y[run.labelled])
    rep = predictor_report(run.loss, y, ~run.labelled, ks=[0.1])
    assert rep["rows"] == len(y) - 90 and rep["spearman"] > 0.6 and 0 <= rep["precision@0.1"] <= 1


def test_acquire_picks_uncertain_unlabelled(sim):
    X, y = sim
    s = seed_rows(len(y), 0.05)
    p = LossPredictor("ridge", n_boot=4).fit(X.iloc[s], y[s])
    lab = np.zeros(len(y), bool); lab[s] = True
    new = acquire(p, X, lab, 20)
    u = p.uncertainty(X)
    assert len(new) == 20 and not lab[new].any()
    assert u[new].min() >= np.sort(u[~lab])[-20] - 1e-12


def test_quality_warning_has_the_spearman(sim):
    X, y = sim
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        p = LossPredictor("ridge", n_boot=0, warn_below=0.3).fit(X[["junk"]].iloc[:100], y[:100])
    msg = [str(x.message) for x in w if "cross-validated Spearman" in str(x.message)]
    assert msg and f"is {p.cv_spearman:.3f}, below 0.3" in msg[0]


def test_impute_adds_indicator(sim):
    X, y = sim
    g = X.iloc[:80].copy(); g.loc[[0, 5], "b"] = np.nan
    p = LossPredictor(nan="impute", n_boot=0).fit(g, y[:80])
    assert p._matrix(g).shape == (80, 4) and np.isfinite(p.predict(g)).all()


@pytest.mark.parametrize("bad, match", [
    (lambda X, y: LossPredictor().fit(X.iloc[:10], y[:10]), "the seed set has 10 rows; the hgb predictor needs at least 30"),
    (lambda X, y: LossPredictor().fit(X.iloc[:40], np.full(40, 2.0)), r"the large-model loss is the same \(2\) on all 40 seed rows"),
    (lambda X, y: LossPredictor().fit(X.iloc[:40], np.r_[np.nan, y[1:40]]), r"no large-model loss .* \(row 0\)"),
    (lambda X, y: LossPredictor().fit(X.iloc[:40], y[:39]), "40 feature rows but 39 losses"),
    (lambda X, y: LossPredictor().fit(X.iloc[:40].assign(a=np.r_[np.nan, X.a[1:40]]), y[:40]), r"missing feature value \(a is NaN"),
    (lambda X, y: LossPredictor().fit(X.iloc[:40].assign(a=np.r_[np.inf, X.a[1:40]]), y[:40]), r"infinite feature value \(a\)"),
    (lambda X, y: LossPredictor(n_boot=0).fit(X.iloc[:40], y[:40]).predict(X[["a", "b"]]), "the features differ"),
    (lambda X, y: LossPredictor(n_boot=0).fit(X.iloc[:40], y[:40]).uncertainty(X), "needs n_boot >= 2"),
    (lambda X, y: LossPredictor().predict(X), "not fitted"),
    (lambda X, y: LossPredictor(kind="svm"), "kind='svm'"),
    (lambda X, y: LossPredictor(nan="zero"), "nan='zero'"),
    (lambda X, y: seed_rows(100, 1.5), "frac=1.5"),
    (lambda X, y: seed_rows(100, 0.1, ["a"] * 99), "strata has 99 values"),
    (lambda X, y: score_bins([1.0, 2.0], 0), "bins=0"),
    (lambda X, y: predict_large_loss(X, lambda i: y[i][:1], frac=0.05), "loss_fn returned"),
    (lambda X, y: predict_large_loss(X, lambda i: y[i], frac=0.01), "needs at least 30"),
    (lambda X, y: predict_large_loss(X, lambda i: y[i], frac=0.05, rounds=1, n_boot=0), "active acquisition needs n_boot >= 2"),
    (lambda X, y: feature_frame(pd.DataFrame({"instruction": ["a"], "input": [""], "output": ["b"]}), ["ifd@tiny"]), "feature column 'ifd@tiny' not found"),
    (lambda X, y: feature_frame(pd.DataFrame({"output": ["b"]}), lengths=True), "text column 'instruction'"),
    (lambda X, y: feature_frame(pd.DataFrame({"x": [1.0]}), lengths=False), "no features"),
    (lambda X, y: feature_frame(pd.DataFrame({"x": [1.0]}), ["x"], lengths=False, extra=np.ones(3)), r"\(N, d\) matrix"),
    (lambda X, y: predictor_report(y[:5], y[:6]), "pred has shape"),
    (lambda X, y: reducible_loss(y[:2], y[:3]), "large loss has shape"),
    (lambda X, y: course_strategy(X, y, keep=1.5), "keep=1.5"),
])
def test_bad_input(sim, bad, match):
    X, y = sim
    with pytest.raises(SmallselError, match=match): bad(X, y)


def test_compute_plan_and_break_even():
    fixed = train_flops(1e6, 1e8)
    ne = break_even(1e9, [1e6, 2e6], 100, 200, 0.05, fixed)
    plan = compute_plan([ne], 1e9, [1e6, 2e6], 100, 200, 0.05, fixed)
    assert plan.seed_route_vs_oracle[0] == pytest.approx(1.0)
    assert plan.oracle_flops[0] == pytest.approx(forward_flops(1e9, 100) * ne)
    big = compute_plan([10 * ne], 1e9, [1e6, 2e6], 100, 200, 0.05, fixed)
    assert big.seed_route_vs_oracle[0] < 1
    assert break_even(1e6, [1e6], 100, 200, 0.05) == float("inf")


def test_course_strategy_reads_every_row(sim):
    X, y = sim
    cr = course_strategy(X, y, keep=0.2, kind="ridge", n_boot=0)
    assert cr.large_rows == len(y) and len(cr.kept) == 300
    assert np.array_equal(cr.kept, np.sort(np.argsort(-cr.predicted)[:300]))


def test_reducible_loss_keeps_nan():
    r = reducible_loss([2.0, np.nan, 1.0], [1.5, 1.0, np.nan])
    assert r[0] == 0.5 and np.isnan(r[1:]).all()


def test_hidden_state_features_shape():
    from smallsel_nb.models import make_lm
    from smallsel_nb.synth import make_noisy_instructions
    m, t = make_lm("tiny", seed=0)
    H = hidden_state_features(m, t, make_noisy_instructions(10, seed=0), template="none", batch_tokens=256)
    assert H.shape == (10, 128) and np.isfinite(H).all()
