"""README.md's own-data commands and Python API example, run as written on tiny data.

The code is read from README.md itself; every change made before running it is listed in `SUBS` (old -> new),
so a reader sees exactly what differs from the README: the real models become the from-scratch `tiny` preset, the
sizes and steps become tiny. Lines that install packages (network) or need a pretrained model are skipped, with the
reason in `SKIP`."""
import re, shlex
from pathlib import Path
import pytest
from smallsel_nb.cli import main
from smallsel_nb.data import load_rows, save_rows
from smallsel_nb.synth import make_noisy_instructions

README = (Path(__file__).parents[1]/"README.md").read_text()

def block(after:str, lang:str="")->str:
    "The first fenced code block (```lang) after the line containing `after`."
    m = re.search(re.escape(after) + r".*?```" + lang + r"\n(.*?)```", README, re.S)
    assert m, f"README: no ```{lang} block after {after!r}"
    return m.group(1)

SHELL = block("On your own data")
PYTHON = block("## The Python API", "python")

# Each README line that is not run, and why.
SKIP = {"pip install": "installs packages from PyPI (network); the test environment has them already",
        "--lora 16": "TRL + LoRA needs a pretrained model (SmolLM2-135M); tests/test_train_trl.py runs it on CPU"}
# Every text substitution made before running (old -> new).
SUBS_SHELL = [("--model smollm2-135m", "--model tiny"),        # the offline SmolLM2 alias -> the from-scratch preset
              ("--model gpt2", "--model tiny --max-steps 2"),  # a hub model -> the preset, 2 optimizer steps
              ("--strategy rds+", "--strategy rds+ --model tiny")]  # rds+'s default model (smollm2-135m) -> the preset
SUBS_PYTHON = [("noisy_benchmark(2000, 300, noise=0.4)", "noisy_benchmark(60, 10, noise=0.4)"),
               ('score(pool, "smollm2-135m")', 'score(pool, "tiny")'),
               ('load_lm("HuggingFaceTB/SmolLM2-360M")', 'load_lm("tiny")'),
               ("epochs=1, lora=16", "max_steps=2")]  # LoRA needs TRL and a pretrained model (see SKIP)

def substitute(text:str, subs:list)->str:
    for old, new in subs:
        assert old in text, f"README changed: {old!r} is no longer in the example; update the test's substitutions"
        text = text.replace(old, new)
    return text

def shell_lines(text:str)->list[tuple[str, str|None]]:
    "(line without its trailing comment, reason to skip or None) per command line."
    out = []
    for line in text.splitlines():
        if not line.strip(): continue
        cmd = line.split("  #")[0].strip()
        out.append((cmd, next((why for k, why in SKIP.items() if k in line), None)))
    return out

@pytest.mark.slow
def test_readme_shell(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path); monkeypatch.setenv("SMALLSEL_CACHE", str(tmp_path/"cache"))
    save_rows(make_noisy_instructions(40, seed=0), "pairs.jsonl")  # the README's pairs.jsonl, tiny
    save_rows(make_noisy_instructions(10, seed=1), "my_task.jsonl")  # and the rows of "your task"
    ran = []
    for cmd, why in shell_lines(substitute(SHELL, SUBS_SHELL)):
        if why: print(f"skipped: {cmd}\n  because {why}"); continue
        args = shlex.split(cmd)
        assert args[0] == "smallsel", cmd
        assert main(args[1:]) == 0, cmd
        ran.append(args[1])
    assert ran == ["score", "select", "select", "finetune"]
    assert Path("scores.parquet").exists() and Path("kept.jsonl").exists() and Path("report.json").exists()
    assert len(load_rows("task.jsonl")) == 4  # 10 % of the 40 pairs
    assert (Path("ft-gpt2")/"config.json").exists()

@pytest.mark.slow
def test_readme_python(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path); monkeypatch.setenv("SMALLSEL_CACHE", str(tmp_path/"cache"))
    ns = {}
    exec(substitute(PYTHON, SUBS_PYTHON), ns)
    assert len(ns["scored"]) == 60 and "ifd" in ns["scored"].column_names
    assert 0 < len(ns["selection"].subset(ns["scored"])) < 60
    assert ns["history"] is not None
