"Headless tests of the workflow diagram and the selection explorer (matplotlib Agg, no browser)."
import matplotlib
matplotlib.use("Agg")
import numpy as np, pandas as pd, pyarrow as pa, pytest
from datasets import Dataset

from smallsel_nb.core import SmallselError
from smallsel_nb.explore import SelectionExplorer, cut_points, kept_counts, plot_workflow, METHODS
from smallsel_nb.select import Top
from smallsel_nb.recipes import RECIPES, strategy_pipeline
from smallsel_nb.synth import make_noisy_instructions


def _texts(fig): return [t.get_text() for ax in fig.axes for t in ax.texts]


@pytest.fixture(scope="module")
def scored():
    "400 labelled pairs with synthetic score columns (no model: fast), plus a large-model loss."
    df = make_noisy_instructions(400, noise=0.4, seed=0).to_pandas()
    rng = np.random.default_rng(0)
    df["cond_loss"] = rng.lognormal(1, 0.5, len(df)) + 3 * (df.noise_kind == "nonsense")
    df["uncond_loss"] = df.cond_loss / rng.uniform(0.05, 1.3, len(df))
    df["ifd"] = df.cond_loss / df.uncond_loss
    df["large_loss"] = 0.8 * df.cond_loss + rng.normal(0, 0.3, len(df))
    return df


def test_workflow_boxes():
    full, main = plot_workflow(), plot_workflow(variants=False)
    for t in ["Raw pool", "Small model scores", "Selection", "Curated subset", "Large model fine-tuning",
              "forward", "loss", "backward", "update", "Evaluation"]:
        assert t in _texts(main), t
    extra = set(_texts(full)) - set(_texts(main))
    assert {"Small model 1", "Small model 2", "Small model 3", "Aggregate", "Seed set", "Large model scores",
            "Small predictor", "Predicted loss"} <= extra
    assert len(main.axes[0].patches) < len(full.axes[0].patches)
    assert len(_texts(full)) == len(set(_texts(full)))  # no label drawn twice


def test_workflow_on_given_axes():
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    assert plot_workflow(False, ax=ax) is fig
    plt.close(fig)


def test_cut_points_and_counts():
    x = np.array([0.1, 0.5, 0.9, 0.3, np.nan, 0.7])
    assert cut_points(x, x >= 0.5) == [0.5]
    assert cut_points(x, (x >= 0.3) & (x <= 0.7)) == [0.3, 0.7]
    assert cut_points(x, np.array([1, 0, 1, 0, 0, 1], bool)) == []
    c = kept_counts(np.array([0, 1, 1, -1]), ["a", "b"], np.array([1, 0, 1, 1], bool))
    assert c.kept.tolist() == [1, 1] and c.dropped.tolist() == [0, 1]


def test_keep_slider_changes_selection_cut_and_bars(scored):
    ex = SelectionExplorer(scored, method="top", keep=0.5)
    assert len(ex.selection) == 200 and ex.keep.continuous_update is False
    x0 = ex.axes["hist"].lines[0].get_xdata()[0]
    assert x0 == pytest.approx(scored.ifd[ex.selection.mask].min())
    ex.keep.value = 0.25
    assert len(ex.selection) == 100
    x1 = ex.axes["hist"].lines[0].get_xdata()[0]
    assert x1 > x0 and x1 == pytest.approx(scored.ifd.nlargest(100).min())
    counts = ex.counts()
    assert counts.kept.sum() == 100 and counts.dropped.sum() == 300
    n = len(counts)
    bars = ex.axes["group"].patches
    assert [p.get_width() for p in bars[:n]] == counts.kept.tolist()
    assert [p.get_width() for p in bars[n:2 * n]] == counts.dropped.tolist()
    kinds = ex.counts("noise_kind")
    assert kinds.kept.sum() == 100 and set(kinds.index) == set(scored.noise_kind)


def test_strategies_and_column(scored):
    ex = SelectionExplorer(scored, keep=0.3)
    ex.method.value = "bottom"
    assert ex.cuts == [pytest.approx(scored.ifd.nsmallest(120).max())]
    ex.method.value = "band"
    assert len(ex.cuts) == 2 and not ex.band.disabled
    lo_mid = ex.cuts[0]
    ex.band.value = "low"
    assert ex.cuts[0] < lo_mid
    ex.method.value = "top"; ex.column.value = "cond_loss"
    assert ex.selection.mask.tolist() == Top("cond_loss", keep=0.3)(scored).mask.tolist()
    assert ex.axes["hist"].get_xlabel().startswith("cond_loss") and ex.band.disabled


@pytest.mark.parametrize("recipe", [r for r in RECIPES if r in METHODS])
def test_recipe_is_the_package_pipeline(scored, recipe):
    ex = SelectionExplorer(scored, method=recipe, keep=0.4)
    assert ex.selection.mask.tolist() == RECIPES[recipe](keep=0.4, by="ifd")(scored).mask.tolist()


def test_stratify_splits_the_budget_per_group(scored):
    ex = SelectionExplorer(scored, method="top", keep=0.25)
    ex.stratify.value = True
    share = ex.counts()["kept share"]
    assert share.between(0.2, 0.3).all()
    assert ex.selection.steps[-1]["step"].startswith("stratified")


def test_examples_and_cards(scored):
    df = scored.copy()
    df.loc[0, "instruction"] = "<script>alert(1)</script>"
    df.loc[0, "ifd"] = 99.0  # the top row: kept, nearest no cut but shown when it is the marginal one
    ex = SelectionExplorer(df, method="cherry", keep=0.3, n_examples=2)
    e = ex.examples()
    assert e.side.tolist() == ["kept", "kept", "dropped", "dropped"]
    assert e.reason[e.side == "kept"].isna().all() and e.reason[e.side == "dropped"].notna().all()
    assert any(r.startswith("ifd>1:") for r in e.reason[e.side == "dropped"])  # every dropping step is shown
    ex.method.value = "top"
    kept_ifd = df.ifd[ex.selection.mask]
    e = ex.examples()
    assert set(e.ifd[e.side == "kept"]) == set(kept_ifd.nsmallest(2))  # marginal kept rows: nearest the cut
    html = ex.cards_html()
    assert "<script>" not in html and "not in the top" in html
    ex.keep.value = 1.0  # everything kept: no cut, no dropped cards
    assert ex.cuts == [] and "none" in ex.cards_html()


def test_rank_scatter_only_with_large(scored):
    assert "scatter" not in SelectionExplorer(scored).axes
    ex = SelectionExplorer(scored, large="large_loss", max_points=150)
    ax = ex.axes["scatter"]
    assert sum(len(c.get_offsets()) for c in ax.collections) == 150
    assert "Spearman" in ax.get_title() and "large_loss" in ex.column.options


@pytest.mark.slow
def test_cache_and_redundant_updates(scored):
    ex = SelectionExplorer(scored, method="top", keep=0.5)
    ex.keep.value = 0.3; ex.keep.value = 0.5
    assert ex.timing["cached"] is True
    t = ex.timing
    ex.update(); ex.band.value = "high"  # same settings; band is unused by top
    assert ex.timing is t
    ex2 = SelectionExplorer(scored, cache_size=2)
    for k in (0.2, 0.3, 0.4): ex2.keep.value = k
    assert len(ex2._cache) == 2


def test_widget_renders_png(scored):
    ex = SelectionExplorer(scored)
    w = ex.widget
    assert ex.image.value[:4] == b"\x89PNG" and ex.image in w.children
    ex.keep.value = 0.2
    assert ex.timing["render"] > 0 and "kept 80 of 400" in ex.status.value


def test_inputs_of_every_kind(scored):
    masks = [SelectionExplorer(d, keep=0.3).selection.mask.tolist()
             for d in (scored, pa.Table.from_pandas(scored, preserve_index=False), Dataset.from_pandas(scored))]
    assert masks[0] == masks[1] == masks[2]


def test_bad_method(scored):
    with pytest.raises(SmallselError, match="method='best': choose one of"): SelectionExplorer(scored, method="best")

def test_bad_keep(scored):
    with pytest.raises(SmallselError, match="keep=1.5 is a fraction"): SelectionExplorer(scored, keep=1.5)

def test_missing_large_column(scored):
    with pytest.raises(SmallselError, match="large-model loss column 'big' not found"): SelectionExplorer(scored, large="big")

def test_missing_score_column(scored):
    with pytest.raises(SmallselError, match="score column 'ppl' not found"): SelectionExplorer(scored, scores=["ppl"])

def test_no_score_columns(scored):
    with pytest.raises(SmallselError, match="no score columns"): SelectionExplorer(scored[["id", "instruction", "output"]])

def test_bad_by(scored):
    with pytest.raises(SmallselError, match="by='answer' is not one of the score columns"): SelectionExplorer(scored, by="answer")

def test_missing_group_column(scored):
    with pytest.raises(SmallselError, match="group column 'domain' not found"): SelectionExplorer(scored, group="domain")

def test_not_a_table():
    with pytest.raises(SmallselError, match="can't select from a dict"): SelectionExplorer({"ifd": [1.0]})

def test_counts_of_unknown_column(scored):
    with pytest.raises(SmallselError, match="no counts for 'answer'"): SelectionExplorer(scored).counts("answer")

def test_tutorials_read_the_full_size_map():
    "The map the tutorials and the lecture quote (first saved table of 07_compare with the gain columns) is the full-size one, not the toy run."
    from pathlib import Path
    from smallsel_nb.explore import table_with
    nbs = Path(__file__).parent.parent/"nbs"
    m = table_with(nbs/"07_compare.ipynb", "mix", "n", "noise", "sel_gain", "oracle_gain", "compute_share")
    assert set(m["n"]) == {600, 2000} and set(m["noise"]) == {0.3, 0.6}, m
