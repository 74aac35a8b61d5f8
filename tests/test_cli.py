"The `smallsel` command end to end, as a user runs it (subprocesses, the tiny preset)."
import json, os, subprocess, sys
import pandas as pd, pytest

ENV = {**os.environ, "SMALLSEL_PROGRESS": "0", "OMP_NUM_THREADS": "1"}

def smallsel(*args, cwd):
    r = subprocess.run([sys.executable, "-m", "smallsel_nb.cli", *args], cwd=cwd, env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout

def test_help_lists_every_command(tmp_path):
    out = smallsel("--help", cwd=tmp_path)
    for cmd in ("synth", "convert", "models", "score", "select"): assert cmd in out

@pytest.mark.slow
def test_synth_score_select_pipeline(tmp_path):
    smallsel("synth", "pool.jsonl", "--n", "120", cwd=tmp_path)
    smallsel("score", "pool.jsonl", "--model", "tiny", "--out", "scores.parquet", "--cache-dir", "cache", "--max-length", "256", cwd=tmp_path)
    scores = pd.read_parquet(tmp_path/"scores.parquet")
    assert len(scores) == 120 and {"id", "cond_loss", "uncond_loss", "ifd", "score_error", "noise_kind"} <= set(scores.columns)
    smallsel("select", "scores.parquet", "--keep", "0.3", "--out", "kept.jsonl", "--report", "report.json", cwd=tmp_path)
    kept = pd.read_json(tmp_path/"kept.jsonl", lines=True)
    assert len(kept) == 36 and set(kept["id"]) <= set(scores["id"])
    report = json.loads((tmp_path/"report.json").read_text())
    assert report and "steps" in json.dumps(report)

@pytest.mark.slow
def test_bad_input_exits_with_message(tmp_path):
    (tmp_path/"bad.jsonl").write_text('{"instruction": "hi", "output": ""}\n')
    r = subprocess.run([sys.executable, "-m", "smallsel_nb.cli", "score", "bad.jsonl", "--model", "tiny", "--out", "s.parquet"],
                       cwd=tmp_path, env=ENV, capture_output=True, text=True)
    assert r.returncode == 2 and "bad.jsonl" in r.stderr and "row 0" in r.stderr

def test_select_short_budget_exits_3_unless_allowed(tmp_path, capsys):
    "Filters that leave fewer rows than --keep asks for: last line says so; exit 3, or 0 with --allow-short."
    import pytest
    from smallsel_nb.cli import main
    rows = pd.DataFrame({"id": [f"r{i}" for i in range(10)], "instruction": [f"Question {i}?" for i in range(10)],
                         "output": [f"Answer number {i}." for i in range(10)], "ifd": [0.5, 0.6, 0.7, 1.4, 1.5, 1.6, 1.7, 0.8, 0.9, 0.4]})
    rows.to_json(tmp_path/"s.jsonl", orient="records", lines=True)
    argv = ["select", str(tmp_path/"s.jsonl"), "--recipe", "cherry", "--keep", "0.7", "--out", str(tmp_path/"k.jsonl")]
    with pytest.raises(SystemExit) as e: main(argv)
    out, err = capsys.readouterr()
    assert e.value.code == 3
    assert out.strip().splitlines()[-1].startswith("budget short: kept 6 of 10 rows (60.0%) but top[ifd] was asked for 7 (70.0%)")
    assert err.strip().splitlines()[-1].startswith("smallsel select: error: budget short:") and "--allow-short" in err
    assert len(pd.read_json(tmp_path/"k.jsonl", lines=True)) == 6  # written, so the user can look at what was kept
    assert main(argv + ["--allow-short"]) == 0
    out, err = capsys.readouterr()
    assert out.strip().splitlines()[-1].endswith("accepted (--allow-short)") and err == ""
    assert main(argv[:5] + ["0.5"]) == 0  # a budget the filters leave room for: no shortfall
    assert "budget short" not in capsys.readouterr().out

def test_select_targeted_strategies(tmp_path, capsys):
    "--strategy dsir / rds+ / less-lite with --target on rows without scores: exit 0; each misuse: exit 2 and one line naming the option."
    from smallsel_nb.cli import main
    from smallsel_nb.synth import make_noisy_instructions
    pool = make_noisy_instructions(40, seed=0).to_pandas()
    pool.to_json(tmp_path/"pool.jsonl", orient="records", lines=True)
    other = make_noisy_instructions(300, seed=1).to_pandas()
    other.query("task == 'arithmetic' and noise_kind == 'clean'").head(12).to_json(tmp_path/"target.jsonl", orient="records", lines=True)
    (tmp_path/"empty.jsonl").write_text("")
    P, T = str(tmp_path/"pool.jsonl"), str(tmp_path/"target.jsonl")
    assert main(["select", P, "--strategy", "dsir", "--target", T, "--keep", "0.25", "--out", str(tmp_path/"dsir.jsonl")]) == 0
    kept = pd.read_json(tmp_path/"dsir.jsonl", lines=True)
    assert len(kept) == 10 and set(kept["id"]) <= set(pool["id"]) and (kept.task == "arithmetic").mean() > (pool.task == "arithmetic").mean()
    assert capsys.readouterr().out.splitlines()[0].startswith("Selection `dsir`: kept 10 of 40 rows")
    for s in ("rds+", "less-lite"):
        assert main(["select", P, "--strategy", s, "--target", T, "--model", "tiny", "--keep-n", "6", "--out", str(tmp_path/f"{s}.parquet")]) == 0
        assert len(pd.read_parquet(tmp_path/f"{s}.parquet")) == 6
    capsys.readouterr()
    for args, msg in [(["--strategy", "rds+"], "--strategy rds+ needs --target"),
                      (["--strategy", "random", "--target", T], "--target is read only by --strategy dsir, rds+, less-lite; --strategy random does not use it"),
                      (["--strategy", "dsir", "--target", str(tmp_path/"nope.jsonl")], "--target: no such file or folder"),
                      (["--strategy", "dsir", "--target", str(tmp_path/"empty.jsonl")], f"--target: {tmp_path/'empty.jsonl'}: no rows"),
                      (["--strategy", "dsir", "--target", T, "--model", "tiny"], "--model is read only by --strategy rds+, less-lite; --strategy dsir takes no model"),
                      (["--by", "ifd", "--model", "tiny"], "--model is read only by --strategy rds+, less-lite; --strategy top takes no model")]:
        with pytest.raises(SystemExit) as e: main(["select", P, "--keep", "0.25", *args])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1 and err.startswith(f"smallsel select: error: {msg}"), (args, err)
