"""The bad-input matrix: every CLI command against a shared set of bad inputs.

For each (command, case) pair that applies, the command must fail cleanly: exit code 2, one `smallsel CMD: error: ...`
line naming the row or the argument, no Python traceback, and no output file. Pairs that do not apply are skipped
with the reason. Commands run in-process (`cli.main`) to keep the matrix fast; a few run as real processes (slow).
"""
import json, os, subprocess, sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("SMALLSEL_PROGRESS", "0")
from smallsel_nb.cli import main

def _rows(n=12):
    return [dict(id=f"r{i}", instruction=f"Add {i} and 1.", input="", output=str(i + 1)) for i in range(n)]

def _jsonl(path, rows, raw_lines=None):
    lines = [json.dumps(r) for r in rows]
    for i, l in (raw_lines or {}).items(): lines[i] = l
    path.write_text("\n".join(lines) + "\n")
    return path

@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    "The shared bad inputs (and a few good ones the commands need beside them)."
    d = tmp_path_factory.mktemp("bad")
    import pyarrow as pa, pyarrow.parquet as pq
    good = _rows()
    _jsonl(d/"good.jsonl", good)
    scored = pa.Table.from_pylist([{**r, "ifd": 0.5 + 0.01 * i, "cond_loss": 1.0 + 0.1 * i, "score_error": None} for i, r in enumerate(good)])
    pq.write_table(scored, d/"scored.parquet")
    pq.write_table(scored, d/"scored2.parquet")
    (d/"empty.jsonl").write_text("")
    _jsonl(d/"malformed.jsonl", good, {5: '{"id": "r5", "instruction": "Add 5'})
    b = (d/"scored.parquet").read_bytes(); (d/"truncated.parquet").write_bytes(b[:len(b) // 2])
    _jsonl(d/"missing_field.jsonl", [r if i != 4 else {k: v for k, v in r.items() if k != "output"} for i, r in enumerate(good)])
    _jsonl(d/"nonstring.jsonl", [r if i != 3 else {**r, "instruction": 42} for i, r in enumerate(good)])
    _jsonl(d/"empty_string.jsonl", [r if i != 6 else {**r, "output": ""} for i, r in enumerate(good)])
    _jsonl(d/"dup_ids.jsonl", [r if i != 7 else {**r, "id": "r2"} for i, r in enumerate(good)])
    pq.write_table(scored.drop_columns(["ifd"]), d/"no_score.parquet")                       # a scored file without its score
    pq.write_table(scored.set_column(0, "id", pa.array(["r0"] * len(good))), d/"dup_scored.parquet")
    inf = scored.column("ifd").to_numpy().copy(); inf[9] = np.inf
    pq.write_table(scored.set_column(scored.schema.get_field_index("ifd"), "ifd", pa.array(inf)), d/"inf_scored.parquet")
    (d/"afile.txt").write_text("a file where a folder should be")
    (d/"empty.yaml").write_text("")
    (d/"malformed.yaml").write_text("pool: [a, b\neval: : x\n")
    (d/"unwritable.yaml").write_text("pool: {synth: {n: 20}}\neval: {synth: {n: 5}}\nout: afile.txt/results\n")
    return d

# The inputs each case gives: data rows (convert, score, finetune, score-stream) and scored rows (select, ensemble).
DATA = {"empty": ("empty.jsonl", "no rows"), "malformed": ("malformed.jsonl", "line 6"),
        "truncated_parquet": ("truncated.parquet", "truncated.parquet"), "missing_field": ("missing_field.jsonl", "row 4"),
        "non_string": ("nonstring.jsonl", "row 3"), "empty_string": ("empty_string.jsonl", "row 6"),
        "duplicate_ids": ("dup_ids.jsonl", "row"), "missing_path": ("nope.jsonl", "no such file")}
SCORED = {"empty": ("empty.jsonl", "no rows"), "malformed": ("malformed.jsonl", "line 6"),
          "truncated_parquet": ("truncated.parquet", "truncated.parquet"), "missing_field": ("no_score.parquet", "'ifd'"),
          "duplicate_ids": ("dup_scored.parquet", "occurs more than once"), "missing_path": ("nope.parquet", "no such file"),
          "out_of_range_inf": ("inf_scored.parquet", "row 9")}

def _cmd(command, d, case):
    "argv, the text the message must contain, and the output that must not exist; None when the case does not apply."
    out = d/f"out-{command}-{case}.parquet"
    model = ["--model", "tiny"]
    if case == "unwritable_output": out = d/"afile.txt"/"out.parquet"
    if command in ("convert", "score", "finetune", "score-stream"):
        if case in DATA: src, msg = DATA[case]
        elif case in ("unwritable_output", "path_like_model", "hub_model_local_only", "out_of_range"): src, msg = "good.jsonl", None
        else: return None
        if command == "score-stream" and case == "malformed": msg = "row 5"  # streamed by pyarrow: the 0-based row
        if command == "finetune": out = out.with_suffix("")
        argv = {"convert": ["convert", str(d/src), "--out", str(out), "--errors", "raise"],
                "score": ["score", str(d/src), *model, "--out", str(out)],
                "finetune": ["finetune", str(d/src), *model, "--out", str(out), "--max-steps", "1", "--template", "none"],
                "score-stream": ["score-stream", str(d/src), *model, "--out", str(out)]}[command]
        if case == "unwritable_output": msg = "afile.txt is a file, not a folder"
        if case == "path_like_model":
            if command == "convert": return None
            argv[argv.index("tiny")], msg = "./no/such/model", "no such file or folder: ./no/such/model"
        if case == "hub_model_local_only":  # a hub id that is not cached, with --local-only: refused at once, no network
            if command == "convert": return None
            argv[argv.index("tiny")], msg = "smallsel-test/not-a-model", "--local-only (local_only=True) forbids a hub lookup"
            argv.append("--local-only")
        if case == "out_of_range":
            extra, msg = {"convert": (["--turns", "some"], "turns"), "score": (["--batch-tokens", "0"], "--batch-tokens 0"),
                          "finetune": (["--lr", "0"], "--lr 0"), "score-stream": (["--batch-tokens", "0"], "--batch-tokens 0")}[command]
            argv += extra
        return argv, msg, out
    if command in ("select", "ensemble"):
        out = out.with_suffix(".jsonl") if case != "unwritable_output" else out
        if case in SCORED: src, msg = SCORED[case]
        elif case in ("unwritable_output", "out_of_range"): src, msg = "scored.parquet", "afile.txt is a file, not a folder"
        else: return None
        if command == "select":
            argv = ["select", str(d/src), "--by", "ifd", "--keep", "0.5", "--out", str(out)]
            if case == "duplicate_ids": return None  # selection ranks rows; ids are carried, not joined on
            if case == "out_of_range": argv, msg = ["select", str(d/src), "--by", "ifd", "--strategy", "threshold", "--min-score", "2",
                                                    "--max-score", "1", "--out", str(out)], "--min-score 2.0 is above --max-score 1.0"
        else:
            argv = ["ensemble", str(d/src), str(d/"scored2.parquet"), "--out", str(out)]
            if case == "out_of_range": argv, msg = argv + ["--trim", "0.9"], "trim"
        return argv, msg, out
    if command == "synth":
        if case == "unwritable_output": return ["synth", str(out.with_suffix(".jsonl")), "--n", "20"], "afile.txt is a file, not a folder", out.with_suffix(".jsonl")
        if case == "out_of_range": return ["synth", str(out.with_suffix(".jsonl")), "--noise", "2"], "noise", out.with_suffix(".jsonl")
        return None
    if command == "models":
        if case == "path_like_model": return ["models", "./no/such/model"], "no such file or folder: ./no/such/model", None
        return None
    if command == "compare":
        cfg = {"missing_path": ("nope.yaml", "no such file"), "empty": ("empty.yaml", "`pool` is required"),
               "malformed": ("malformed.yaml", "not valid YAML"), "unwritable_output": ("unwritable.yaml", "afile.txt is a file, not a folder")}
        if case in cfg: return ["compare", str(d/cfg[case][0])], cfg[case][1], d/"afile.txt"/"results"
        return None
    if command == "demo":
        if case == "unwritable_output": return ["demo", "--out", str(d/"afile.txt"/"demo")], "afile.txt is a file, not a folder", d/"afile.txt"/"demo"
        return None
    return None

COMMANDS = ["convert", "score", "select", "ensemble", "finetune", "score-stream", "synth", "models", "compare", "demo"]
CASES = ["empty", "malformed", "truncated_parquet", "missing_field", "non_string", "empty_string", "duplicate_ids",
         "missing_path", "path_like_model", "hub_model_local_only", "unwritable_output", "out_of_range", "out_of_range_inf"]

@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("command", COMMANDS)
def test_bad_input_fails_cleanly(command, case, fx, capsys, monkeypatch, tmp_path):
    spec = _cmd(command, fx, case)
    if spec is None: pytest.skip(f"{case} does not apply to {command}")
    argv, msg, out = spec
    monkeypatch.setenv("SMALLSEL_CACHE", str(tmp_path/"cache"))
    with pytest.raises(SystemExit) as e: main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert "Traceback" not in err and err.startswith(f"smallsel {command}: error: "), err
    assert len(err.strip().splitlines()) == 1, err
    if msg: assert msg in err, err
    if out is not None: assert not Path(out).exists()

SLOW = [("score", "malformed"), ("select", "truncated_parquet"), ("finetune", "out_of_range"), ("models", "path_like_model")]

@pytest.mark.slow
@pytest.mark.parametrize("command, case", SLOW)
def test_bad_input_fails_cleanly_as_a_process(command, case, fx, tmp_path):
    "The same, through the installed entry point in a fresh process (no test harness between the user and the error)."
    argv, msg, out = _cmd(command, fx, case)
    env = {**os.environ, "SMALLSEL_CACHE": str(tmp_path/"cache"), "SMALLSEL_PROGRESS": "0", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "smallsel_nb.cli", *argv], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr and msg in r.stderr, r.stderr
    if out is not None: assert not Path(out).exists()

@pytest.mark.slow
def test_hard_but_valid_rows_are_accepted(tmp_path, capsys, monkeypatch):
    "A 1 MB row, RTL and bidi marks, a NUL, emoji: not errors. They are scored (the long row truncated, flagged) and round-trip through CSV."
    import pandas as pd
    from smallsel_nb.data import load_rows
    monkeypatch.setenv("SMALLSEL_CACHE", str(tmp_path/"cache"))
    rows = _rows(6)
    rows[1]["input"] = "x" * 1_000_000
    rows[2]["output"] = "مرحبا بالعالم \u202e RTL \u200f"
    rows[3]["instruction"] = "nul\u0000inside"
    rows[4]["output"] = "日本語 🙂👍🏽"
    (tmp_path/"weird.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert main(["score", str(tmp_path/"weird.jsonl"), "--model", "tiny", "--out", str(tmp_path/"s.parquet")]) == 0
    s = pd.read_parquet(tmp_path/"s.parquet")
    assert np.isfinite(s["ifd"]).all() and s["score_error"].isna().all() and s["truncated"].tolist() == [False, True, False, False, False, False]
    assert main(["convert", str(tmp_path/"weird.jsonl"), "--out", str(tmp_path/"w.csv")]) == 0
    a, b = load_rows(tmp_path/"weird.jsonl"), load_rows(tmp_path/"w.csv")
    for c in ("id", "instruction", "input", "output"): assert a[c] == b[c], c
