"Training loop: resume after SIGKILL, and every bad-input / fault path (tiny preset, a few dozen steps)."
import json, os, signal, subprocess, sys, time
from pathlib import Path
import numpy as np
import pytest
import torch
from smallsel_nb.core import SmallselError
from conftest import launch_ranks, check_ranks
from smallsel_nb.models import make_lm
from smallsel_nb.synth import make_noisy_instructions, make_eval_split
from smallsel_nb.train import train_lm, schedule
from smallsel_nb.lm import token_rows
from smallsel_nb.evaluate import evaluate
from smallsel_nb.train_trl import cli_finetune

KW = dict(max_steps=40, batch_size=8, template="none", eval_every=10, eval_start=False, checkpoint_every=2)

SCRIPT = """
import sys, time, torch
torch.set_num_threads(1)
from smallsel_nb.models import make_lm
from smallsel_nb.synth import make_noisy_instructions, make_eval_split
import smallsel_nb.train as T
real = T.save_checkpoint
def save_then_wait(path, model, opt, step, *a, **k):  # stop at a fixed point: after the step-6 checkpoint, wait for the kill
    real(path, model, opt, step, *a, **k)
    if step >= 6 and len(sys.argv) > 2: time.sleep(600)
T.save_checkpoint = save_then_wait
m, t = make_lm("tiny", seed=0)
T.train_lm(m, t, make_noisy_instructions(300, seed=2), make_eval_split(20, seed=2), checkpoint_dir=sys.argv[1], **%r)
""" % KW

def _step(ck):
    try: return json.loads((ck/"state.json").read_text())["step"]
    except (OSError, ValueError): return 0

@pytest.mark.slow
def test_sigkill_resume(tmp_path):
    "Kill training with SIGKILL mid-run; the rerun resumes from the last checkpoint and ends as an uninterrupted run."
    ck = tmp_path/"ck"
    p = subprocess.Popen([sys.executable, "-c", SCRIPT, str(ck), "pause"], env={**os.environ, "SMALLSEL_PROGRESS": "0"})
    deadline = time.time() + 120
    while _step(ck) < 6 and time.time() < deadline and p.poll() is None: time.sleep(0.02)
    p.send_signal(signal.SIGKILL); p.wait()
    killed_at = _step(ck)
    assert killed_at == 6, f"expected the run killed after its step-6 checkpoint, the checkpoint is at step {killed_at}"
    rows, ev = make_noisy_instructions(300, seed=2), make_eval_split(20, seed=2)
    m, t = make_lm("tiny", seed=0)
    resumed = train_lm(m, t, rows, ev, checkpoint_dir=ck, **KW)
    assert resumed.resumed_from == killed_at and resumed.steps == 40
    m2, t2 = make_lm("tiny", seed=0)
    fresh = train_lm(m2, t2, rows, ev, **KW)
    for a, b in zip(m.parameters(), m2.parameters()): torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert resumed.final["eval_loss"] == pytest.approx(fresh.final["eval_loss"], rel=1e-5)
    assert [h["step"] for h in resumed.history] == [10, 20, 30, 40]
    assert _step(ck) == 40 and json.loads((ck/"state.json").read_text())["done"]

def test_checkpoint_of_another_run_is_refused(tmp_path):
    rows = make_noisy_instructions(60, seed=0)
    train_lm(*make_lm("tiny"), rows, max_steps=2, batch_size=8, template="none", checkpoint_dir=tmp_path)
    with pytest.raises(SmallselError, match="checkpoint of another run"):
        train_lm(*make_lm("tiny"), rows, max_steps=3, batch_size=8, template="none", checkpoint_dir=tmp_path)
    r = train_lm(*make_lm("tiny"), rows, max_steps=3, batch_size=8, template="none", checkpoint_dir=tmp_path, resume=False)
    assert r.resumed_from == 0 and r.steps == 3

def _hooked(on_third):
    "A tiny model whose third body forward calls `on_third(output)`."
    m, t = make_lm("tiny", seed=0)
    calls = {"n": 0}
    def hook(mod, args, out):
        calls["n"] += 1
        if calls["n"] == 3: on_third(out)
    m.transformer.register_forward_hook(hook)
    return m, t

def test_nan_loss_stops_naming_the_step():
    rows = make_noisy_instructions(100, seed=0)
    m, t = _hooked(lambda out: out.last_hidden_state.data.fill_(float("nan")))
    with pytest.raises(SmallselError, match=r"training stopped at step 3 of 5: the loss is nan"):
        train_lm(m, t, rows, max_steps=5, batch_size=8, template="none")
    def stop(out): raise KeyboardInterrupt
    m2, t2 = _hooked(stop)  # the same run, interrupted in step 3: two updates applied
    with pytest.raises(KeyboardInterrupt): train_lm(m2, t2, rows, max_steps=5, batch_size=8, template="none")
    for a, b in zip(m.parameters(), m2.parameters()): torch.testing.assert_close(a, b)  # the NaN step was not applied

def test_eval_without_answers_skips_exact_match_with_a_note():
    ev = make_eval_split(12, seed=0).remove_columns("answer")
    r = train_lm(*make_lm("tiny"), make_noisy_instructions(40, seed=0), ev, max_steps=2, batch_size=8, template="none")
    assert "exact_match" not in r.final and np.isfinite(r.final["eval_loss"])
    assert r.notes == ["exact match skipped: the eval rows have no `answer` column"]
    assert "exact match skipped" in r.summary()

def test_tokenizer_without_pad_token():
    rows, ev = make_noisy_instructions(40, seed=0), make_eval_split(12, seed=0)
    m1, t1 = make_lm("tiny", seed=0); m2, t2 = make_lm("tiny", seed=0)
    t2.pad_token = None
    a = train_lm(m1, t1, rows, ev, max_steps=3, batch_size=8, template="none").final
    b = train_lm(m2, t2, rows, ev, max_steps=3, batch_size=8, template="none").final
    assert t2.pad_token_id is None
    assert a["eval_loss"] == pytest.approx(b["eval_loss"], rel=1e-6) and a["exact_match"] == b["exact_match"]

def test_tokenizer_without_eos_is_refused():
    m, t = make_lm("tiny")
    t.eos_token = None
    with pytest.raises(SmallselError, match="no EOS token"):
        train_lm(m, t, make_noisy_instructions(10), template="none")

def test_grad_accumulation_matches_one_big_batch():
    rows = make_noisy_instructions(64, seed=0)
    def one_step(bs, acc):
        m, t = make_lm("tiny", seed=0)
        train_lm(m, t, rows, max_steps=2, batch_size=bs, grad_accum=acc, template="none", warmup=0)
        return torch.cat([p.detach().flatten() for p in m.parameters()])
    torch.testing.assert_close(one_step(16, 1), one_step(4, 4), rtol=1e-4, atol=1e-5)

def test_micro_tokens_keeps_the_gradients():
    "Cutting each step's rows into length-sorted token-budget micro-batches trains the same model (less padding)."
    rows = make_noisy_instructions(64, seed=0)
    def run(**kw):
        m, t = make_lm("tiny", seed=0)
        r = train_lm(m, t, rows, max_steps=3, batch_size=16, template="none", warmup=0, eval_every=0, eval_start=False, **kw)
        return torch.cat([p.detach().flatten() for p in m.parameters()]), r
    (a, ra), (b, rb) = run(), run(micro_tokens=256)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert ra.tokens == rb.tokens and ra.flops == rb.flops   # the same rows and the same accounting
    with pytest.raises(SmallselError, match="micro_tokens"): run(micro_tokens=0)

def test_schedule_covers_every_row_once_per_epoch():
    L = np.random.default_rng(0).integers(5, 300, 1000)
    s = schedule(1000, 16, 2, epochs=2, seed=3, lengths=L, group=8)
    flat = np.concatenate([b for st in s for b in st])
    assert len(flat) == 2000 and (np.bincount(flat, minlength=1000) == 2).all()

def test_cli_finetune(tmp_path, capsys):
    from smallsel_nb.data import save_rows
    save_rows(make_noisy_instructions(60, seed=0), tmp_path/"train.jsonl"); save_rows(make_eval_split(12, seed=0), tmp_path/"eval.jsonl")
    r = cli_finetune(str(tmp_path/"train.jsonl"), out=str(tmp_path/"m"), model="tiny", eval=str(tmp_path/"eval.jsonl"),
                     template="none", max_steps=3, batch_size=8)
    assert (tmp_path/"m"/"config.json").exists() and json.loads((tmp_path/"m"/"history.json").read_text())["steps"] == 3
    assert "exact match" in capsys.readouterr().out and r.final["exact_match"] is not None

DDP = """
import json, os, sys, torch
torch.set_num_threads(1)
import smallsel_nb.evaluate as T
from smallsel_nb.models import make_lm
from smallsel_nb.synth import make_noisy_instructions, make_eval_split
from smallsel_nb.train import train_lm
calls, real = [0], T.eval_loss
def counted(*a, **k): calls[0] += 1; return real(*a, **k)
T.eval_loss = counted  # counts the evaluations this process runs
m, t = make_lm("tiny", seed=0)
r = train_lm(m, t, make_noisy_instructions(64, seed=0), make_eval_split(6, seed=0), max_steps=3, batch_size=int(sys.argv[2]),
             grad_accum=2, template="none", device="cpu", eval_every=1, max_length=48)
rank = int(os.environ.get("RANK", "0"))
if rank == 0: torch.save(m.state_dict(), sys.argv[1])
open(f"{sys.argv[1]}.{rank}.json", "w").write(json.dumps(dict(evals=calls[0], eval_loss=[h["eval_loss"] for h in r.history])))
"""

@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
@pytest.mark.parametrize("bs", [8, 1])
def test_two_processes_match_one(tmp_path, bs):
    "DistributedDataParallel (2 CPU processes, gloo): each reads half of every micro-batch (bs=1: one process has no row, weight 0), gradients are summed: same weights as 1 process; only rank 0 evaluates, rank 1 gets its results."
    (tmp_path/"ddp.py").write_text(DDP)
    env = {**os.environ, "SMALLSEL_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    check_ranks(launch_ranks(2, tmp_path/"ddp.py", tmp_path/"two.pt", bs, env=env))
    subprocess.run([sys.executable, str(tmp_path/"ddp.py"), str(tmp_path/"one.pt"), str(bs)], env=env, check=True, capture_output=True, timeout=300)
    one, two = torch.load(tmp_path/"one.pt"), torch.load(tmp_path/"two.pt")
    for k in one: torch.testing.assert_close(one[k], two[k], rtol=1e-4, atol=1e-4)
    alone, main, other = (json.loads((tmp_path/f).read_text()) for f in ("one.pt.0.json", "two.pt.0.json", "two.pt.1.json"))
    assert alone["evals"] == main["evals"] == 4 and other["evals"] == 0, "only rank 0 evaluates (at steps 0-3)"
    assert other["eval_loss"] == main["eval_loss"] and len(main["eval_loss"]) == 4  # rank 1's history is rank 0's results
    np.testing.assert_allclose(main["eval_loss"], alone["eval_loss"], rtol=1e-4)

def test_bf16_model_trains_fp32_master_weights():
    "A bf16 model is trained in fp32: parameters stay fp32 and a 1e-6 update of a weight equal to 1.0 is kept."
    rows = make_noisy_instructions(32, noise=0.0, seed=0)
    kw = dict(max_steps=1, batch_size=8, template="none", lr=1e-6, warmup=0, weight_decay=0.0, eval_start=False)
    a, t = make_lm("tiny-llama", seed=0); a.to(torch.bfloat16)
    b, _ = make_lm("tiny-llama", seed=0); b.to(torch.bfloat16).float()       # the same start, upcast by hand
    norm0 = a.model.norm.weight.detach().float().clone()
    train_lm(a, t, rows, **kw)
    train_lm(b, t, rows, **kw)
    assert all(p.dtype == torch.float32 for p in a.parameters())
    moved = (a.model.norm.weight.detach() - norm0).abs()
    assert torch.equal(norm0, torch.ones_like(norm0)) and 0 < moved.max() < 1e-5   # a 1e-6 step, not rounded away
    for (n, p), q in zip(a.named_parameters(), b.parameters()): assert torch.equal(p, q), n

def test_master_fp32_says_what_it_did(caplog):
    from smallsel_nb.train import master_fp32
    m, _ = make_lm("tiny", seed=0)
    assert master_fp32(m) is None
    m.to(torch.bfloat16)
    with caplog.at_level("WARNING", logger="smallsel_nb"): assert master_fp32(m) == torch.bfloat16
    assert next(m.parameters()).dtype == torch.float32 and "fp32 master weights" in caplog.text

class _Planted:
    "What an attacker would leave in a checkpoint folder: unpickling it creates a file."
    def __init__(self, target): self.target = target
    def __reduce__(self): return (Path.touch, (Path(self.target),))

@pytest.mark.parametrize("with_state", [False, True])
def test_planted_pickle_is_never_executed(tmp_path, with_state, capsys):
    "A malicious `checkpoint.pt` (old file name) is never unpickled, whatever `state.json` says; --fresh trains over it."
    from smallsel_nb.cli import main
    from smallsel_nb.data import save_rows
    from smallsel_nb.train import LEGACY_CKPT
    ck, pwned = tmp_path/"ck", tmp_path/"pwned"
    ck.mkdir(); torch.save({"model": _Planted(pwned), "key": "x"}, ck/LEGACY_CKPT)
    if with_state: (ck/"state.json").write_text(json.dumps({"step": 1, "done": False, "key": "x"}))  # the old format's state
    save_rows(make_noisy_instructions(40, seed=0), tmp_path/"train.jsonl")
    args = ["finetune", str(tmp_path/"train.jsonl"), "--out", str(tmp_path/"m"), "--model", "tiny", "--template", "none",
            "--max-steps", "2", "--batch-size", "8", "--checkpoint-dir", str(ck)]
    with pytest.raises(SystemExit) as e: main(args)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--fresh" in err and "Traceback" not in err
    assert ("never loaded" in err) != with_state and ("another run" in err) == with_state
    assert not pwned.exists() and not (tmp_path/"m").exists()
    main(args + ["--fresh"])
    assert not pwned.exists() and (tmp_path/"m"/"config.json").exists()
    assert json.loads((ck/"state.json").read_text())["step"] == 2 and sorted(f.suffix for f in ck.glob("*-*")) == [".safetensors"] * 2

def test_checkpoint_is_json_and_safetensors_only(tmp_path):
    "Nothing in a checkpoint folder is a pickle: state.json is JSON, the tensors are safetensors (tied weights stored once)."
    from safetensors.torch import load_file
    m, t = make_lm("tiny")
    train_lm(m, t, make_noisy_instructions(40, seed=0), max_steps=2, batch_size=8, template="none", checkpoint_dir=tmp_path)
    st = json.loads((tmp_path/"state.json").read_text())
    assert st["step"] == 2 and st["done"] and st["tied"] == {"lm_head.weight": "transformer.wte.weight"}
    assert len(st["rng"]["cpu"]) > 0 and all(isinstance(x, int) for x in st["rng"]["cpu"][:10])
    w = load_file(str(tmp_path/"model-00000002.safetensors"))
    torch.testing.assert_close(w["transformer.wte.weight"], m.transformer.wte.weight.detach())

def test_tensor_files_missing_is_a_clear_error(tmp_path):
    rows = make_noisy_instructions(40, seed=0)
    train_lm(*make_lm("tiny"), rows, max_steps=2, batch_size=8, template="none", checkpoint_dir=tmp_path, checkpoint_every=1)
    (tmp_path/"state.json").write_text((tmp_path/"state.json").read_text().replace('"done": true', '"done": false'))
    for f in tmp_path.glob("optim-*"): f.unlink()
    with pytest.raises(SmallselError, match="tensor files cannot be read"):
        train_lm(*make_lm("tiny"), rows, max_steps=2, batch_size=8, template="none", checkpoint_dir=tmp_path, checkpoint_every=1)

@pytest.mark.parametrize("flags, msg", [(["--lr", "nan"], "--lr nan"), (["--lr=-1e-3"], "--lr -0.001"), (["--lr", "0"], "--lr 0"),
                                        (["--epochs", "0"], "--epochs 0"), (["--epochs=-1"], "--epochs -1"),
                                        (["--epochs", "nan"], "--epochs nan"), (["--max-steps", "0"], "--max-steps 0")])
def test_finetune_refuses_bad_numbers_before_work(tmp_path, capsys, flags, msg):
    from smallsel_nb.cli import main
    with pytest.raises(SystemExit) as e:
        main(["finetune", str(tmp_path/"missing.jsonl"), "--out", str(tmp_path/"m"), "--model", "tiny", *flags])
    err = capsys.readouterr().err
    assert e.value.code == 2 and msg in err and "Traceback" not in err and not (tmp_path/"m").exists()
