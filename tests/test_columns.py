"Column mapping on the command line: `smallsel score --columns` keeps the user's names out of the way; an unknown column is refused."
import json
import pandas as pd
import pytest
from smallsel_nb.cli import main

def _qa(path):
    rows = [{"question": "Add 2 and 3.", "answer": "5", "topic": "math"}, {"question": "Capital of Italy?", "answer": "Rome.", "topic": "geo"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))

def test_score_with_a_column_mapping(tmp_path):
    _qa(tmp_path/"qa.jsonl")
    main(["score", str(tmp_path/"qa.jsonl"), "--model", "tiny", "--out", str(tmp_path/"s.parquet"), "--cache-dir", str(tmp_path/"c"),
          "--columns", "instruction=question,output=answer"])
    s = pd.read_parquet(tmp_path/"s.parquet")
    assert list(s.instruction) == ["Add 2 and 3.", "Capital of Italy?"] and list(s.topic) == ["math", "geo"] and s.cond_loss.notna().all()

@pytest.mark.parametrize("spec, msg", [("instruction=query,output=answer", "'query' is not a column"), ("instruction:question", "canonical=yours")])
def test_score_with_a_bad_column_mapping(tmp_path, capsys, spec, msg):
    _qa(tmp_path/"qa.jsonl")
    with pytest.raises(SystemExit) as e:
        main(["score", str(tmp_path/"qa.jsonl"), "--model", "tiny", "--out", str(tmp_path/"s.parquet"), "--columns", spec])
    assert e.value.code == 2 and msg in capsys.readouterr().err and not (tmp_path/"s.parquet").exists()
