"Tests for smallsel_nb.synth: the noisy instruction benchmark."
import json, re
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from smallsel_nb.core import SmallselError, table_fingerprint
from smallsel_nb.synth import FAMILIES, FRAMES, KINDS, REAL_KINDS, cli_synth, corrupt_rows, make_eval_split, make_noisy_instructions, noisy_benchmark
from smallsel_nb.evaluate import exact_match, extract_answer


@pytest.fixture(scope="module")
def pool():
    return make_noisy_instructions(7000, noise=0.5, seed=11).to_pandas()


def _pairs(df): return set(zip(df["instruction"], df["input"]))


def test_columns_and_ids(pool):
    assert list(pool.columns) == ["id", "instruction", "input", "output", "task", "answer", "is_noisy", "noise_kind"]
    assert pool.id.tolist()[:3] == ["syn-11-0", "syn-11-1", "syn-11-2"] and pool.id.is_unique
    assert set(pool.task) == set(FAMILIES)
    assert (pool.input[pool.task != "list"] == "").all() and (pool.input[pool.task == "list"] != "").all()


def test_deterministic_per_seed():
    a, b = make_noisy_instructions(3000, seed=5), make_noisy_instructions(3000, seed=5)
    assert table_fingerprint(a) == table_fingerprint(b)
    assert a.to_pandas().to_json() == b.to_pandas().to_json()
    assert table_fingerprint(a) != table_fingerprint(make_noisy_instructions(3000, seed=6))
    assert table_fingerprint(make_eval_split(400, seed=5)) == table_fingerprint(make_eval_split(400, seed=5))


def test_counts_per_kind(pool):
    counts = Counter(pool.noise_kind)
    assert counts["clean"] == 3500 and pool.is_noisy.sum() == 3500
    assert [counts[k] for k in KINDS] == [500] * 7
    p = make_noisy_instructions(1001, noise=0.3, kinds=["nonsense", "wrong", "truncated"], seed=0)
    # round(300.3) = 300 noisy rows, 100 per kind
    assert Counter(p["noise_kind"]) == {"clean": 701, "nonsense": 100, "wrong": 100, "truncated": 100}
    q = make_noisy_instructions(100, noise=0.17, kinds="wrong,duplicate,nonsense", seed=0)
    assert Counter(q["noise_kind"]) == {"clean": 83, "wrong": 6, "duplicate": 6, "nonsense": 5}  # remainder to first kinds
    assert sum(make_noisy_instructions(50, noise=0.0)["is_noisy"]) == 0
    assert Counter(make_noisy_instructions(21, noise=1.0)["noise_kind"]) == {k: 3 for k in KINDS}


def test_clean_rows_are_correct(pool):
    clean = pool[pool.noise_kind == "clean"]
    assert (clean.output == clean.task.map(FRAMES) + clean.answer + ".").all()
    assert exact_match(clean.output, clean.answer).all()


def test_wrong_rows(pool):
    g = pool[pool.noise_kind == "wrong"]
    got = g.output.str.extract(r"^The (?:answer|result) is (.*)\.$")[0]
    assert got.notna().all()                      # same frame
    assert (got != g.answer).all()                # but another answer
    num = g.answer.str.fullmatch(r"\d+") & got.str.fullmatch(r"\d+") & (g.task == "arithmetic")
    assert (abs(got[num].astype(int) - g.answer[num].astype(int)) <= 3).all()   # plausible: off by 1-3


def test_mismatched_rows(pool):
    g = pool[pool.noise_kind == "mismatched"]
    assert g.output.isin(set(pool.output)).all()  # a response that exists in the pool
    assert not exact_match(g.output, g.answer).any()
    tasks_of = pool[~pool.is_noisy].groupby("output").task.agg(set)
    other = [t not in tasks_of.get(o, {t}) for o, t in zip(g.output, g.task)]
    assert np.mean(other) > 0.8   # donors are of another family; loose because "The answer is 30." fits several


def test_repetitive_rows(pool):
    g = pool[pool.noise_kind == "repetitive"]
    for out in g.output:
        words = out.split()
        bigrams = Counter(zip(words, words[1:]))
        assert Counter(words).most_common(1)[0][1] >= 6 and bigrams.most_common(1)[0][1] >= 5   # a loop
    assert not exact_match(g.output, g.answer).any()


def test_nonsense_rows(pool):
    g = pool[pool.noise_kind == "nonsense"]
    assert g.output.str.fullmatch(r"[a-z0-9][a-z0-9 ]*[a-z0-9]").all()
    clean_len = (g.task.map(FRAMES) + g.answer + ".").str.len()
    assert (g.output.str.len() == np.maximum(clean_len, 8)).all()   # similar length
    assert not exact_match(g.output, g.answer).any()


def test_truncated_rows(pool):
    g = pool[pool.noise_kind == "truncated"]
    full = g.task.map(FRAMES) + g.answer + "."
    assert all(f.startswith(o) and 1 <= len(o) < len(f) - 1 for o, f in zip(g.output, full))
    assert not exact_match(g.output, g.answer).any()


def test_duplicates_exist_in_pool(pool):
    clean = pool[pool.noise_kind == "clean"]
    clean_rows = set(zip(clean.instruction, clean.input, clean.output, clean.answer, clean.task))
    g = pool[pool.noise_kind == "duplicate"]
    assert all(r in clean_rows for r in zip(g.instruction, g.input, g.output, g.answer, g.task))
    assert exact_match(g.output, g.answer).all()  # correct, only redundant


def test_near_duplicates_are_small_edits(pool):
    norm = lambda s: re.sub(r"[\s.?]+", " ", s).strip().casefold()
    clean = pool[pool.noise_kind == "clean"]
    exact = set(zip(clean.instruction, clean.input, clean.output))
    normed = {(norm(i), x, norm(o)) for i, x, o in exact}
    g = pool[pool.noise_kind == "near_duplicate"]
    for i, x, o in zip(g.instruction, g.input, g.output):
        assert (i, x, o) not in exact and (norm(i), x, norm(o)) in normed
    assert exact_match(g.output, g.answer).all()


def test_eval_split_disjoint_from_pool(pool):
    ev = make_eval_split(2000, seed=11).to_pandas()
    assert not ev.is_noisy.any() and set(ev.noise_kind) == {"clean"}
    assert _pairs(ev).isdisjoint(_pairs(pool))
    assert _pairs(make_eval_split(2000, seed=3).to_pandas()).isdisjoint(_pairs(pool))   # any seed pair
    assert exact_match(ev.output, ev.answer).all()
    assert ev.id.iloc[0] == "eval-11-0"


def test_noisy_benchmark():
    tr, ev = noisy_benchmark(1200, 300, noise=0.25, seed=2, families=["arithmetic", "list"])
    assert (len(tr), len(ev), sum(tr["is_noisy"])) == (1200, 300, 300)
    assert set(ev["task"]) == {"arithmetic", "list"}
    assert _pairs(tr.to_pandas()).isdisjoint(_pairs(ev.to_pandas()))


def test_exact_match_rules():
    preds = ["The answer is 85.", "85", " the answer is 85 ", "85.", "The answer is: 85\nmore text",
             "85 85 85", "The answ", "The answer is 86.", "The answer is 85. The answer is 85.", "85!"]
    assert exact_match(preds, ["85"] * len(preds)).tolist() == [True] * 5 + [False] * 5
    assert exact_match(["The result is PARIS."], ["Paris"]).tolist() == [True]
    assert exact_match(["5,12,88"], ["5, 12, 88"]).tolist() == [False]
    assert extract_answer("The result is 5, 12, 88.") == "5, 12, 88"
    assert extract_answer("The result is 9.", task="arithmetic") == "the result is 9"
    assert extract_answer("The result is 9.", task="list") == "9"
    assert extract_answer("") == "" and extract_answer(None) == ""
    assert exact_match([], []).dtype == bool


def test_bad_noise():
    with pytest.raises(SmallselError, match="noise must be a fraction in"): make_noisy_instructions(10, noise=-0.1)
    with pytest.raises(SmallselError, match="noise must be a fraction in"): make_noisy_instructions(10, noise=1.01)


def test_bad_kind():
    with pytest.raises(SmallselError, match="unknown kind 'typo'; choose from wrong, mismatched"):
        make_noisy_instructions(10, kinds=["wrong", "typo"])


def test_bad_family():
    with pytest.raises(SmallselError, match="unknown family 'poetry'; choose from arithmetic"):
        make_noisy_instructions(10, families="arithmetic,poetry")
    with pytest.raises(SmallselError, match="unknown family"): make_eval_split(10, families=["poetry"])


def test_bad_n():
    for n in (0, -3):
        with pytest.raises(SmallselError, match="n must be an integer >= 1"): make_noisy_instructions(n)
    with pytest.raises(SmallselError, match="n must be an integer >= 1"): make_eval_split(0)


def test_bad_seed():
    with pytest.raises(SmallselError, match="seed must be an integer >= 0"): make_noisy_instructions(10, seed=-1)


def test_exact_match_length_mismatch():
    with pytest.raises(SmallselError, match="2 predictions but 1 answers"): exact_match(["a", "b"], ["a"])


def test_extract_answer_unknown_task():
    with pytest.raises(SmallselError, match="unknown task 'poetry'"): extract_answer("x", task="poetry")


def test_cli_synth_writes_jsonl_and_eval(tmp_path, capsys):
    out = tmp_path / "pool.jsonl"
    cli_synth(str(out), n=500, noise=0.4, kinds="wrong,repetitive", seed=3, eval_n=60)
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert len(rows) == 500 and rows[0]["id"] == "syn-3-0"
    assert Counter(r["noise_kind"] for r in rows) == {"clean": 300, "wrong": 100, "repetitive": 100}
    ev = [json.loads(l) for l in (tmp_path / "pool_eval.jsonl").read_text().splitlines()]
    assert len(ev) == 60 and not any(r["is_noisy"] for r in ev)
    printed = capsys.readouterr().out
    assert "wrote 500 rows" in printed and "repetitive" in printed and "60 clean eval rows" in printed


def test_cli_synth_writes_parquet(tmp_path):
    out = tmp_path / "sub" / "pool.parquet"
    cli_synth(str(out), n=200, seed=1)
    df = pd.read_parquet(out)
    assert df.shape == (200, 8) and df.is_noisy.sum() == 80
    pd.testing.assert_frame_equal(df, make_noisy_instructions(200, seed=1).to_pandas())


def test_cli_synth_bad_extension(tmp_path):
    with pytest.raises(SmallselError, match="must end in .jsonl or .parquet"): cli_synth(str(tmp_path / "pool.csv"))


@pytest.fixture(scope="module")
def real_rows():
    from datasets import Dataset
    rng = np.random.default_rng(0)
    words = np.array("alpha beta gamma delta sigma omega river stone cloud ember".split())
    txt = lambda n, k: [" ".join(w) for w in words[rng.integers(0, len(words), (n, k))]]
    return Dataset.from_dict({"id": [f"r{i}" for i in range(400)], "instruction": [s.capitalize() + "?" for s in txt(400, 6)],
                              "input": [""] * 400, "output": txt(400, 12)})


def test_corrupt_rows_labels_match_changes(real_rows):
    out, orig = corrupt_rows(real_rows, noise=0.3, seed=7).to_pandas(), real_rows.to_pandas()
    assert Counter(out.noise_kind) == {"clean": 280, **{k: 20 for k in REAL_KINDS}}
    assert (out.id == orig.id).all() and (out.is_noisy == (out.noise_kind != "clean")).all()
    same = (out[["instruction", "input", "output"]] == orig[["instruction", "input", "output"]]).all(axis=1)
    assert same[out.noise_kind == "clean"].all()
    for k in ("mismatched", "repetitive", "nonsense", "truncated"):
        g = out.noise_kind == k
        assert (out.instruction[g] == orig.instruction[g]).all() and (out.output[g] != orig.output[g]).all(), k
    t = out.noise_kind == "truncated"
    assert all(b.startswith(a) and len(a) < len(b) for a, b in zip(out.output[t], orig.output[t]))
    clean = set(zip(orig.instruction[same], orig.output[same]))
    assert all(p in clean for p in zip(out.instruction[out.noise_kind == "duplicate"], out.output[out.noise_kind == "duplicate"]))


def test_corrupt_rows_deterministic(real_rows):
    a, b = corrupt_rows(real_rows, seed=1), corrupt_rows(real_rows, seed=1)
    assert table_fingerprint(a) == table_fingerprint(b) and a._fingerprint == b._fingerprint
    assert table_fingerprint(a) != table_fingerprint(corrupt_rows(real_rows, seed=2))


@pytest.mark.parametrize("noise", [1.0, -0.2, 1.5])
def test_corrupt_rows_bad_noise(real_rows, noise):
    with pytest.raises(SmallselError, match=r"noise must be a fraction in \[0, 1\)"): corrupt_rows(real_rows, noise=noise)


def test_corrupt_rows_unknown_kind(real_rows):
    with pytest.raises(SmallselError, match="unknown kind 'wrong'"): corrupt_rows(real_rows, kinds="wrong,nonsense")


def test_corrupt_rows_missing_columns(real_rows):
    with pytest.raises(SmallselError, match=r"missing column\(s\) output"): corrupt_rows(real_rows.remove_columns("output"))


def test_corrupt_rows_already_labelled(real_rows):
    with pytest.raises(SmallselError, match="already have noise labels"): corrupt_rows(corrupt_rows(real_rows))
