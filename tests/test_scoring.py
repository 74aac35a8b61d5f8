"Scoring engine: crash/resume, cache keys, bad input through the public API."
import json, os, signal, subprocess, sys, time, textwrap
import torch
from pathlib import Path
import numpy as np, pytest
from smallsel_nb.core import SmallselError
from smallsel_nb.synth import make_noisy_instructions
from smallsel_nb.models import make_lm
from smallsel_nb.scoring import score, score_per_row
from smallsel_nb.distributed import cli_score
from smallsel_nb.data import tokenize_for_scoring

SCRIPT = textwrap.dedent("""
    import sys, time, torch; torch.set_num_threads(1)
    from smallsel_nb.synth import make_noisy_instructions
    from smallsel_nb.models import make_lm
    from smallsel_nb.scoring import score, ShardStore
    real, n = ShardStore.save, [0]
    def save(self, *a, **k):  # hold after the third shard: the SIGKILL lands mid-run however fast this machine is
        real(self, *a, **k); n[0] += 1
        if n[0] >= 3: time.sleep(600)
    ShardStore.save = save
    rows = make_noisy_instructions(600, seed=3)
    score(rows, make_lm("tiny", seed=0), cache_dir=sys.argv[1], shard_rows=25, batch_tokens=2048)
""")

def _shards(cache):
    return sorted(p for p in Path(cache).rglob("shard-*.parquet"))

@pytest.mark.slow
def test_sigkill_resume(tmp_path):
    "Kill scoring mid-run with SIGKILL; the rerun equals an uninterrupted run and keeps the finished shards."
    cache = tmp_path/"cache"
    p = subprocess.Popen([sys.executable, "-c", SCRIPT, str(cache)], env={**os.environ, "SMALLSEL_PROGRESS": "0"})
    deadline = time.time() + 240
    while len(_shards(cache)) < 3 and time.time() < deadline and p.poll() is None: time.sleep(0.02)
    p.send_signal(signal.SIGKILL); p.wait()
    done = {q.name: q.stat().st_mtime_ns for q in _shards(cache)}
    assert len(done) == 3, f"expected the 3 shards written before the hold, found {len(done)} of 24"
    rows = make_noisy_instructions(600, seed=3)
    model = make_lm("tiny", seed=0)
    resumed = score(rows, model, cache_dir=cache, shard_rows=25, batch_tokens=2048)
    after = {q.name: q.stat().st_mtime_ns for q in _shards(cache)}
    assert len(after) == 24
    assert all(after[k] == v for k, v in done.items()), "finished shards were recomputed"
    fresh = score(rows, model, cache_dir=False, shard_rows=25, batch_tokens=2048)
    for c in ("cond_loss", "uncond_loss", "ifd"):
        np.testing.assert_allclose(np.array(resumed[c], float), np.array(fresh[c], float), rtol=1e-6)

@pytest.mark.slow
def test_engine_matches_reference_on_benchmark():
    "On the noisy benchmark (many lengths and kinds), the engine equals the per-row loop within 1e-4 (fp32)."
    rows = make_noisy_instructions(80, seed=1)
    m, tk = make_lm("tiny-llama", seed=2)
    got = score(rows, (m, tk), cache_dir=False, batch_tokens=1024)
    ref = score_per_row(tokenize_for_scoring(rows, tk, verbose=False), m)
    np.testing.assert_allclose(np.array(got["cond_loss"], float), ref["cond_loss"], atol=1e-4)
    np.testing.assert_allclose(np.array(got["uncond_loss"], float), ref["uncond_loss"], atol=1e-4)

def test_cache_key_changes_with_weights(tmp_path):
    "Different weights (another seed) must not read the first model's cache."
    rows = make_noisy_instructions(20, seed=0)
    a = score(rows, make_lm("tiny", seed=0), cache_dir=tmp_path)
    b = score(rows, make_lm("tiny", seed=1), cache_dir=tmp_path)
    assert len(list(tmp_path.iterdir())) == 2
    assert not np.allclose(np.array(a["cond_loss"]), np.array(b["cond_loss"]))

def test_score_error_rows_are_nan_not_zero(tmp_path):
    "A bad row kept by errors='report' gets NaN scores and its reason, keeps its place, and is never scored 0."
    import json
    from smallsel_nb.data import load_rows
    f = tmp_path/"pairs.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in [{"instruction": "Say hi.", "output": "hi there"},
                                                     {"instruction": "Say nothing.", "output": ""},
                                                     {"instruction": "Count to 3.", "output": "1 2 3"}]))
    rows = load_rows(str(f), errors="report")
    res = score(rows, make_lm("tiny", seed=0), cache_dir=False)
    cond, unc = np.array(res["cond_loss"], float), np.array(res["uncond_loss"], float)
    assert np.isfinite(cond[[0, 2]]).all() and np.isfinite(unc[[0, 2]]).all()
    assert np.isnan(cond[1]) and np.isnan(unc[1]) and np.isnan(res["ifd"][1])
    assert res["score_error"][0] is None and "output" in res["score_error"][1]
    assert list(res["id"]) == list(rows["id"])

def test_cli_score_rejects_bad_out(tmp_path):
    with pytest.raises(SmallselError, match=".parquet or .jsonl"):
        cli_score("x.jsonl", model="tiny", out=str(tmp_path/"s.txt"))

def test_unknown_model_name():
    rows = make_noisy_instructions(5, seed=0)
    with pytest.raises(SmallselError):
        score(rows, "no-such-model-alias", cache_dir=False)

def test_oom_halves_the_batch_and_warns_once(monkeypatch):
    "An out-of-memory error on a batch splits it and retries; scores are unchanged and one warning is given."
    import warnings
    import smallsel_nb.scoring as S
    rows = make_noisy_instructions(40, seed=5)
    model = make_lm("tiny", seed=0)
    want = score(rows, model, cache_dir=False, batch_tokens=4096)
    real = S.forward_nll
    def flaky(model, seqs, *a, **k):
        if len(seqs) > 3: raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(model, seqs, *a, **k)
    monkeypatch.setattr(S, "forward_nll", flaky)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        got = score(rows, model, cache_dir=False, batch_tokens=4096)
    oom = [x for x in w if "out of memory" in str(x.message)]
    assert len(oom) == 1
    np.testing.assert_allclose(np.array(got["cond_loss"], float), np.array(want["cond_loss"], float), rtol=1e-5)

def test_oom_retry_runs_after_the_failed_batch_is_freed(monkeypatch):
    "The retry after an out-of-memory error starts only once the failed forward's tensors are gone (no traceback holds them)."
    import gc, weakref, torch
    import smallsel_nb.scoring as S
    rows = make_noisy_instructions(30, seed=2)
    model = make_lm("tiny", seed=0)
    want = score(rows, model, cache_dir=False, batch_tokens=4096)
    real, held, alive = S.forward_nll, [], []
    def oom_once(model, seqs, *a, **k):
        if not held:
            big = torch.ones(1 << 16)  # stands for the activations of the failed forward
            held.append(weakref.ref(big)); raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        alive.append(held[0]() is not None)
        return real(model, seqs, *a, **k)
    monkeypatch.setattr(S, "forward_nll", oom_once)
    gc.disable()  # freed by reference counting when the `except` block ends, not by a lucky collection
    try:
        with pytest.warns(UserWarning, match="out of memory"):
            got = score(rows, model, cache_dir=False, batch_tokens=4096)
    finally: gc.enable()
    assert alive and not any(alive), "the failed batch was still alive while the retry ran"
    np.testing.assert_allclose(np.array(got["cond_loss"], float), np.array(want["cond_loss"], float), rtol=1e-6)

def test_oom_lowers_the_budget_for_the_rest_of_the_run(monkeypatch):
    "After one OOM, later batches (rest of the prefix group, later groups and shards) are planned small enough: no second OOM."
    import torch
    import smallsel_nb.scoring as S
    rows = make_noisy_instructions(80, seed=4)
    model = make_lm("tiny", seed=0)
    want = score(rows, model, cache_dir=False, batch_tokens=4096, shard_rows=40)
    real, ooms, calls = S.forward_nll, [], []
    def small_memory(model, seqs, starts, prefix_len=0, *a, **k):
        padded = len(seqs) * max(len(s) - prefix_len for s in seqs)
        calls.append(padded)
        if padded > 2048: ooms.append(padded); raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real(model, seqs, starts, prefix_len, *a, **k)
    monkeypatch.setattr(S, "forward_nll", small_memory)
    with pytest.warns(UserWarning, match="out of memory"):
        got = score(rows, model, cache_dir=False, batch_tokens=4096, shard_rows=40)
    assert len(ooms) == 1, f"{len(ooms)} out-of-memory errors for {len(calls)} batches"
    assert max(calls[calls.index(ooms[0]) + 1:]) <= 2048  # every batch after the OOM fits
    for c in ("cond_loss", "uncond_loss"):
        np.testing.assert_allclose(np.array(got[c], float), np.array(want[c], float), rtol=1e-6)

def test_head_nll_chunks_are_checkpointed_under_autograd():
    "Small chunks under autograd (checkpointed) give the same losses and gradients as one chunk."
    import torch
    from smallsel_nb.lm import head_nll, head_chunk_bytes
    assert head_chunk_bytes(torch.device("cuda")) == 2**30 and head_chunk_bytes(torch.device("cpu")) == 2**27
    model, _ = make_lm("tiny", seed=0); model.train()
    V = model.get_output_embeddings().weight.shape[0]
    h0, t = torch.randn(50, model.config.hidden_size), torch.randint(0, V, (50,))
    out = []
    for chunk in (4 * V * 7, None):  # 8 chunks of 7 rows, then one chunk
        model.zero_grad(); h = h0.clone().requires_grad_()
        nll = head_nll(model, h, t, chunk_bytes=chunk); nll.sum().backward()
        out.append((nll.detach(), h.grad, model.get_output_embeddings().weight.grad.clone()))
    for a, b in zip(*out): torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)

def test_forward_nll_passes_position_ids_only_after_a_prefix(monkeypatch):
    "Without a prefix no position ids (transformers then skips a packed-sequence check that syncs with the GPU); with one, they continue it."
    import functools, torch
    from smallsel_nb.lm import forward_nll, prefix_kv, lm_body, device_ints
    m, _ = make_lm("tiny-llama", seed=0)
    body, seen = lm_body(m), []
    real = body.forward
    monkeypatch.setattr(body, "forward", functools.wraps(real)(lambda *a, **k: seen.append(k) or real(*a, **k)))
    seqs, starts = [[1, 2, 3, 4, 5, 6, 7], [1, 2, 3, 9]], np.array([5, 3])
    plain, _ = forward_nll(m, seqs, starts)
    cached, _ = forward_nll(m, seqs, starts, prefix_len=2, kv=prefix_kv(m, np.array([1, 2])))
    calls = [k for k in seen if k.get("input_ids") is not None and k["input_ids"].shape[0] == 2]
    assert "position_ids" not in calls[0] and calls[1]["position_ids"][0].tolist() == list(range(2, 7))
    torch.testing.assert_close(plain, cached, rtol=1e-5, atol=1e-5)
    a, b = device_ints([np.arange(6).reshape(2, 3), np.array([7])], torch.device("cpu"))
    assert a.shape == (2, 3) and a.dtype == torch.int64 and b.tolist() == [7]

def _rows_with_bad(tmp_path):
    "A converted file (`convert --errors report`) with two bad rows among good ones."
    from smallsel_nb.data import cli_convert
    import json
    rows = make_noisy_instructions(12, seed=1).to_list()
    rows[2]["output"] = ""; rows[7]["instruction"] = 5
    (tmp_path/"raw.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cli_convert(str(tmp_path/"raw.jsonl"), out=str(tmp_path/"conv.jsonl"))
    return tmp_path/"conv.jsonl"

def test_errors_fail_names_the_rows(tmp_path):
    with pytest.raises(SmallselError, match=r"conv.jsonl: .*--errors skip.*\(rows 2, 7\)"):
        score(str(_rows_with_bad(tmp_path)), make_lm("tiny"), cache_dir=False)

def test_errors_skip_and_report_never_score_a_bad_row(tmp_path):
    "skip leaves the bad rows out; report keeps them with NaN scores and the reason; no bad row is ever scored 0."
    f = _rows_with_bad(tmp_path)
    skipped = score(str(f), make_lm("tiny"), cache_dir=False, errors="skip")
    assert len(skipped) == 10 and all(e is None for e in skipped["score_error"]) and np.isfinite(skipped["cond_loss"]).all()
    rep = score(str(f), make_lm("tiny"), cache_dir=False, errors="report")
    assert len(rep) == 12
    err = rep["score_error"]
    assert [i for i, e in enumerate(err) if e is not None] == [2, 7] and "not a string" in err[7]
    assert np.isnan(np.array(rep["cond_loss"], float)[[2, 7]]).all() and np.isnan(np.array(rep["ifd"], float)[[2, 7]]).all()
    np.testing.assert_allclose(np.delete(np.array(rep["ifd"], float), [2, 7]), skipped["ifd"], rtol=1e-6)
    with pytest.raises(SmallselError, match="--errors 'nope'"): score(str(f), make_lm("tiny"), cache_dir=False, errors="nope")

TWO = textwrap.dedent("""
    import json, sys, time, torch; torch.set_num_threads(1)
    from pathlib import Path
    from smallsel_nb.synth import make_noisy_instructions
    from smallsel_nb.models import make_lm
    from smallsel_nb.scoring import prepare_scoring, attach_scores
    job = prepare_scoring(make_noisy_instructions(400, seed=3), make_lm("tiny", seed=0), cache_dir=sys.argv[1], shard_rows=20,
                          batch_tokens=2048, verbose=False)
    ready = Path(sys.argv[2] + ".ready"); ready.touch()
    while len(list(ready.parent.glob("*.ready"))) < 2: time.sleep(0.01)  # start scoring together
    res = job.run(desc=None)
    attach_scores(job, res).to_parquet(sys.argv[2])
    print(json.dumps({"computed": res["shards_computed"], "cached": res["shards_cached"]}))
""")

@pytest.mark.slow
def test_two_processes_share_one_cache_without_duplicating_work(tmp_path):
    "Two processes scoring the same rows into one cache split the shards between them (claims) and get the same scores."
    import json, pyarrow.parquet as pq
    env = {**os.environ, "SMALLSEL_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    ps = [subprocess.Popen([sys.executable, "-c", TWO, str(tmp_path/"cache"), str(tmp_path/f"out{i}.parquet")], env=env,
                           stdout=subprocess.PIPE, text=True) for i in range(2)]
    outs = [json.loads(p.communicate(timeout=600)[0].strip().splitlines()[-1]) for p in ps]
    assert all(p.returncode == 0 for p in ps)
    assert sum(o["computed"] for o in outs) == 20 and all(o["computed"] + o["cached"] == 20 for o in outs)
    assert min(o["computed"] for o in outs) > 0  # both worked
    a, b = (pq.read_table(tmp_path/f"out{i}.parquet").to_pandas() for i in range(2))
    np.testing.assert_array_equal(a["ifd"].to_numpy(), b["ifd"].to_numpy())
    assert not list((tmp_path/"cache").rglob("*.claim"))

def test_tampered_shard_is_recomputed_with_a_warning(tmp_path):
    import pyarrow as pa, pyarrow.parquet as pq
    rows, m = make_noisy_instructions(60, seed=1), make_lm("tiny", seed=0)
    first = score(rows, m, cache_dir=tmp_path, shard_rows=20)
    shard = sorted(tmp_path.rglob("shard-*.parquet"))[1]
    t = pq.read_table(shard)
    pq.write_table(t.set_column(1, "cond_sum", pa.array(t["cond_sum"].to_numpy() * 0)), shard)  # zeros, old checksum kept
    with pytest.warns(UserWarning, match="checksum"): again = score(rows, m, cache_dir=tmp_path, shard_rows=20)
    np.testing.assert_array_equal(np.array(again["ifd"]), np.array(first["ifd"]))

# --- IFD conventions: the unconditional view (#16) ---
from datasets import Dataset
from smallsel_nb.data import get_template
from smallsel_nb.scoring import NO_UNCOND, score_tokenized, selective_ifd, ShardStore

VIEW_ROWS = Dataset.from_dict({
    "id": [f"r{i}" for i in range(6)],
    "instruction": ["Add 2 and 3.", "Name the capital of France.", "Reverse the word 'cat'.", "", "Say nothing.", "Sum 7 and 6."],
    "input": ["", "", "", "", "", "numbers: 7, 6"],
    "output": ["5", "Paris is the capital of France.", "tac", "Plain text rows have no prompt at all.", "", "The answer is 13."]})

@torch.inference_mode()
def labels_reference(model, tk, rows, view):
    "Per row, as the public IFD scripts do it: one forward per view, `labels=` -100 on every position not scored."
    def loss(ids, labels): return model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss.item() if len(ids) > 1 else np.nan
    cond, unc = np.full(len(rows), np.nan), np.full(len(rows), np.nan)
    for i, r in enumerate(rows):
        resp = tk(r["output"], add_special_tokens=False)["input_ids"]
        if not resp: continue
        if r["instruction"] or r["input"]:
            prompt = tk(get_template("alpaca")(r["instruction"], r["input"]))["input_ids"]
            cond[i] = loss(prompt + resp, [-100] * len(prompt) + resp)
        alone = [tk.bos_token_id] + resp if view == "bos" else resp  # no-bos: the first token has no context, its label is never predicted
        unc[i] = loss(alone, [-100] * (len(alone) - len(resp)) + resp)
    return cond, unc

@pytest.mark.parametrize("preset,tokenizer", [("tiny", "gpt2"), ("tiny-llama", "byte")])
@pytest.mark.parametrize("view", ["bos", "no-bos"])
def test_uncond_view_matches_labels_reference(preset, tokenizer, view):
    "Each view equals a per-row `labels=`-masked reference of its convention (fp32, 1e-4), NaN exactly where it has nothing to score."
    import warnings
    m, tk = make_lm(preset, tokenizer=tokenizer, seed=0)
    with warnings.catch_warnings(): warnings.simplefilter("ignore"); got = score(VIEW_ROWS, (m, tk), uncond_view=view, cache_dir=False, max_length=256)
    cond, unc = labels_reference(m, tk, VIEW_ROWS, view)
    for c, ref in (("cond_loss", cond), ("uncond_loss", unc), ("ifd", np.exp(cond - unc))):
        a = np.array(got[c], float)
        assert (np.isnan(a) == np.isnan(ref)).all(), (c, a, ref)
        np.testing.assert_allclose(a[~np.isnan(a)], ref[~np.isnan(ref)], atol=1e-4, rtol=1e-4)
    err = got["score_error"]
    assert [e is not None for e in err] == np.isnan(np.array(got["uncond_loss"], float)).tolist()  # a reason exactly where uncond is NaN
    one_token = len(tk("5", add_special_tokens=False)["input_ids"]) == 1
    assert err[0] == (NO_UNCOND if view == "no-bos" and one_token else None)  # no-bos: a 1-token response has no uncond position
    assert np.isfinite(got["cond_loss"][0])                                    # ... but its conditional loss is scored
    assert err[4] == "empty response after tokenization"
    assert set(got["uncond_view"]) == {view}

def test_uncond_view_is_in_the_cache_key(tmp_path):
    rows = make_noisy_instructions(12, seed=0)
    m = make_lm("tiny", seed=0)
    a = score(rows, m, cache_dir=tmp_path)
    b = score(rows, m, cache_dir=tmp_path, uncond_view="no-bos")
    keys = sorted(json.loads((d/"meta.json").read_text())["uncond_view"] for d in tmp_path.iterdir())
    assert keys == ["bos", "no-bos"]
    assert np.allclose(np.array(a["cond_loss"]), np.array(b["cond_loss"])) and not np.allclose(np.array(a["uncond_loss"]), np.array(b["uncond_loss"]))
    with pytest.raises(SmallselError, match="choose one of bos, no-bos"): score(rows, m, cache_dir=False, uncond_view="none")

@pytest.mark.parametrize("view", ["bos", "no-bos"])
def test_uncond_token_losses_same_pass_and_cached(tmp_path, view):
    "Per-token unconditional losses: they sum to uncond_sum, equal the per-token reference, and come back from the cache."
    m, tk = make_lm("tiny", tokenizer="gpt2", seed=0)
    tok = tokenize_for_scoring(VIEW_ROWS, tk, uncond_view=view, verbose=False)
    store = ShardStore(tmp_path, {"t": 1})
    res = score_tokenized(tok, m, per_token=True, uncond_tokens=True, store=store, shard_rows=4)
    for i, r in enumerate(tok):
        u = res["uncond_token_losses"][i]
        if r["tok_error"] or len(r["uncond_ids"]) < 2: continue
        with torch.inference_mode(): logp = torch.log_softmax(m(input_ids=torch.tensor([r["uncond_ids"]])).logits[0, :-1].float(), -1)
        ref = -logp[torch.arange(len(r["uncond_ids"]) - 1), torch.tensor(r["uncond_ids"][1:])].numpy()
        np.testing.assert_allclose(u, ref, atol=1e-4)
        np.testing.assert_allclose(u.sum(), res["uncond_sum"][i], rtol=1e-5)
        if r["cond_ids"]: assert len(res["token_losses"][i]) - len(u) == (view == "no-bos")
    again = score_tokenized(tok, m, per_token=True, uncond_tokens=True, store=store, shard_rows=4)
    assert again["shards_computed"] == 0
    for a, b in zip(res["uncond_token_losses"], again["uncond_token_losses"]): assert (a is None and b is None) or np.array_equal(a, b)
    s, _ = selective_ifd(res["token_losses"], res["uncond_token_losses"])
    assert np.isfinite(s[1]) and np.isnan(s[3])  # a scored pair; a plain-text row has no conditional losses

def test_cli_score_uncond_view(tmp_path, capsys):
    "`smallsel score --uncond-view no-bos` writes the view with the scores; an unknown view is a one-line usage error."
    import pandas as pd
    from smallsel_nb.cli import main
    f = tmp_path/"rows.jsonl"; make_noisy_instructions(8, seed=0).to_json(str(f))
    out = tmp_path/"s.parquet"
    assert main(["score", str(f), "--model", "tiny", "--out", str(out), "--uncond-view", "no-bos", "--cache-dir", str(tmp_path/"c")]) == 0
    assert set(pd.read_parquet(out)["uncond_view"]) == {"no-bos"}
    with pytest.raises(SystemExit) as e: main(["score", str(f), "--model", "tiny", "--out", str(out), "--uncond-view", "nobos"])
    assert e.value.code == 2 and "--uncond-view" in capsys.readouterr().err

def test_selective_setting_adds_the_column(tmp_path):
    "score(selective=0.5) = add_selective_ifd over score(per_token, uncond_tokens); the CLI writes it; streaming refuses it."
    import pandas as pd
    from smallsel_nb.scoring import add_selective_ifd
    from smallsel_nb.distributed import score_stream
    rows, m = make_noisy_instructions(16, seed=0), make_lm("tiny", seed=0)
    got = score(rows, m, cache_dir=False, selective=0.5)
    ref = add_selective_ifd(score(rows, m, cache_dir=False, per_token=True, uncond_tokens=True), 0.5)
    np.testing.assert_allclose(np.array(got["selective_ifd"], float), np.array(ref["selective_ifd"], float), rtol=1e-6)
    assert {"token_losses", "uncond_token_losses"} <= set(got.column_names)
    f = tmp_path/"rows.jsonl"; rows.to_json(str(f))
    cli_score(str(f), model="tiny", out=str(tmp_path/"s.parquet"), selective=0.5, cache_dir=str(tmp_path/"c"))
    assert pd.read_parquet(tmp_path/"s.parquet")["selective_ifd"].notna().all()
    with pytest.raises(SmallselError, match="--selective 0: the share"): score(rows, m, cache_dir=False, selective=0)
    with pytest.raises(SmallselError, match="one token cut over the whole pool"): score_stream(str(f), m, tmp_path/"o.parquet", selective=0.5, cache_dir=tmp_path/"c")

def test_lazy_tokens_write_no_cache_file_per_shard(tmp_path):
    "Tokenizing shard by shard a disk-backed Dataset (from_parquet) adds no Arrow file to the datasets cache."
    from datasets import Dataset
    from smallsel_nb.scoring import LazyTokens
    make_noisy_instructions(120, seed=0).to_parquet(tmp_path/"p.parquet")
    ds = Dataset.from_parquet(str(tmp_path/"p.parquet"), cache_dir=str(tmp_path/"hf"))
    assert ds.cache_files, "the test needs a disk-backed Dataset"
    arrows = lambda: set((tmp_path/"hf").rglob("*.arrow"))
    before = arrows()
    _, tk = make_lm("tiny", seed=0)
    lz = LazyTokens(ds.select_columns(["id", "instruction", "input", "output"]), tk, "none", 64)
    parts = [lz.take(np.arange(a, a + 40)) for a in (0, 40, 80)]
    assert arrows() == before
    assert sum(p.num_rows for p in parts) == 120 and parts[1]["id"].to_pylist()[0] == ds["id"][40]
