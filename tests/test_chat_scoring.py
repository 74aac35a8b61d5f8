"Scoring chat data keeps the conversation column and can score the first, last or every assistant turn."
import numpy as np, pytest
from smallsel_nb.cli import main
from smallsel_nb.core import SmallselError
from smallsel_nb.data import load_rows, save_rows
from smallsel_nb.models import load_lm
from smallsel_nb.scoring import score

def conv(*texts, system=None):
    "A conversation alternating user/assistant messages."
    msgs = [{"role": "system", "content": system}] if system else []
    return msgs + [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(texts)]

ROWS = [{"id": "a", "messages": conv("Add 2 and 3.", "5", "And 4 and 4?", "8"), "lang": "en"},
        {"id": "b", "messages": conv("Say hi.", "hi", system="Be brief."), "lang": "en"},
        {"id": "c", "messages": conv("Name a colour.", "red", "Another.", "blue", "One more.", "green"), "lang": "fr"}]

@pytest.fixture(scope="module")
def lm(): return load_lm("tiny")  # one model for every call: scores comparable across calls

def test_first_keeps_conversation(lm):
    out = score(ROWS, lm, cache_dir=False)
    assert out["id"] == ["a", "b", "c"] and out["lang"] == ["en", "en", "fr"]
    assert out["messages"] == [r["messages"] for r in ROWS]
    assert out["output"] == ["5", "hi", "red"] and "turn" not in out.column_names
    assert np.isfinite(out["cond_loss"]).all()

def test_sharegpt_keeps_conversations(lm):
    rows = [{"conversations": [{"from": "human", "value": "Say hi."}, {"from": "gpt", "value": "hi"}]}]
    out = score(rows, lm, cache_dir=False)
    assert out["conversations"] == [rows[0]["conversations"]] and out["output"] == ["hi"]

def test_turns_all_and_last(lm):
    every = score(ROWS, lm, cache_dir=False, turns="all")
    assert every["turn"] == [0, 1, 0, 0, 1, 2] and every["output"] == ["5", "8", "hi", "red", "blue", "green"]
    assert every["id"] == ["a-t0", "a-t1", "b-t0", "c-t0", "c-t1", "c-t2"]
    assert every["messages"] == [ROWS[i]["messages"] for i in (0, 0, 1, 2, 2, 2)]
    last = score(ROWS, lm, cache_dir=False, turns="last")
    assert last["turn"] == [1, 0, 2] and last["output"] == ["8", "hi", "green"] and last["id"] == ["a-t1", "b-t0", "c-t2"]
    assert last["messages"] == [r["messages"] for r in ROWS]
    np.testing.assert_allclose(last["cond_loss"], np.asarray(every["cond_loss"])[[1, 2, 5]], rtol=1e-5)  # same text, same score

def test_turns_bad_value(lm):
    with pytest.raises(SmallselError, match="turns='some'"): score(ROWS, lm, cache_dir=False, turns="some")

def test_load_rows_last_and_keep():
    ds = load_rows(ROWS, turns="last")
    assert ds["turn"] == [1, 0, 2] and "messages" not in ds.column_names  # load_rows keeps the conversation only when asked
    assert load_rows(ROWS, keep_conversation=True)["messages"] == [r["messages"] for r in ROWS]

def test_cli_turns(tmp_path, capsys):
    save_rows(load_rows(ROWS, keep_conversation=True).select_columns(["id", "messages", "lang"]), tmp_path/"chat.jsonl")
    assert main(["score", str(tmp_path/"chat.jsonl"), "--model", "tiny", "--out", str(tmp_path/"s.parquet"),
                 "--turns", "last", "--cache-dir", str(tmp_path/"cache")]) == 0
    out = load_rows(tmp_path/"s.parquet", schema="alpaca")
    assert out["turn"] == [1, 0, 2] and out["messages"] == [r["messages"] for r in ROWS] and out["lang"] == ["en", "en", "fr"]
    with pytest.raises(SystemExit) as e: main(["score", str(tmp_path/"chat.jsonl"), "--model", "tiny", "--out", str(tmp_path/"t.parquet"), "--turns", "some"])
    assert e.value.code == 2 and not (tmp_path/"t.parquet").exists()
