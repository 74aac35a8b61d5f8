"Multi-process scoring on CPU (torchrun, gloo): equal to one process, resume after a killed rank, bad settings, streaming."
import re, textwrap
from pathlib import Path
import numpy as np, pyarrow as pa, pyarrow.parquet as pq, pytest
from conftest import launch_ranks, check_ranks
from smallsel_nb.core import SmallselError
from smallsel_nb.synth import make_noisy_instructions
from smallsel_nb.distributed import cli_score
from smallsel_nb.scoring import score
from smallsel_nb.distributed import (chunk_source, key_mismatch, rank_shards, score_distributed, score_stream,
                                     init_ranks, Ranks, check_shared_folder)

SCORE_KW = dict(template="none", max_length=48, device="cpu")
FP32 = dict(SCORE_KW, dtype="float32")  # chunked vs whole-pool scores agree to fp32 rounding (bf16 CPUs: bf16 rounding)

# run by torchrun: score_distributed / score_stream with small shards; rank 1 can kill itself after N shards
SCRIPT = textwrap.dedent("""
    import os, signal, sys, time, torch; torch.set_num_threads(1)
    from smallsel_nb.distributed import score_distributed, score_stream
    from smallsel_nb.scoring import ShardStore
    mode, data, out, cache = sys.argv[1:5]
    rank = int(os.environ["RANK"])
    kill_after = int(os.environ.get("KILL_RANK1_AFTER", "0"))
    if kill_after:  # rank 1 dies after N shards; rank 0 holds after N (torchrun stops it), so the run is partial at any speed
        real, n = ShardStore.save, [0]
        def save(self, *a, **k):
            real(self, *a, **k); n[0] += 1
            if n[0] >= kill_after: os.kill(os.getpid(), signal.SIGKILL) if rank == 1 else time.sleep(600)
        ShardStore.save = save
    max_length = 48 + (16 * rank if os.environ.get("MISMATCH") else 0)
    kw = dict(template="none", max_length=max_length, device="cpu", cache_dir=cache, shard_rows=25)
    count = os.environ.get("COUNT_TOKENIZED")
    if count:  # count the rows this rank tokenizes (no prefix cache: its 2,000-row sample would be the whole small pool)
        from smallsel_nb.scoring import LazyTokens
        real_take, seen = LazyTokens.take, [0]
        def take(self, rows): seen[0] += len(rows); return real_take(self, rows)
        LazyTokens.take = take; kw["prefix_cache"] = False
    if mode == "score": score_distributed(data, "tiny", out=out, **kw)
    else: score_stream(data, "tiny", out, chunk_rows=120, **kw)
    if count: print(f"rank {rank} tokenized {seen[0]} rows", flush=True)
""")

def torchrun(tmp, n, *args, env=None, check=True):
    script = tmp/"run_rank.py"; script.write_text(SCRIPT)
    p = launch_ranks(n, script, *args, env=env, timeout=240, retry=check)  # one thread per rank, no progress bars, unbuffered
    return check_ranks(p) if check else p

def shards(cache): return {q.name: q.stat().st_mtime_ns for q in Path(cache).rglob("shard-*.parquet")}

@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    d = tmp_path_factory.mktemp("pool")
    make_noisy_instructions(600, seed=3).to_parquet(d/"pool.parquet")
    return d/"pool.parquet"

@pytest.mark.slow
def test_cli_two_ranks_equal_single_process(tmp_path):
    "`torchrun -m smallsel_nb.cli score` with 2 ranks writes the same file as the single-process command."
    data = tmp_path/"pool.parquet"
    make_noisy_instructions(2300, seed=1).to_parquet(data)  # > 2048 rows: the CLI's default shard_rows gives 2 shards
    args = ["-m", "smallsel_nb.cli", "score", data, "--model", "tiny", "--template", "none", "--max-length", "48",
            "--device", "cpu", "--cache-dir", tmp_path/"cache2", "--out", tmp_path/"two.parquet"]
    p = launch_ranks(2, *args, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    assert re.search(r"2 ranks, 2 shards: \d scored", p.stdout), p.stdout
    cli_score(str(data), model="tiny", out=str(tmp_path/"one.parquet"), cache_dir=str(tmp_path/"cache1"), **SCORE_KW)
    two, one = pq.read_table(tmp_path/"two.parquet"), pq.read_table(tmp_path/"one.parquet")
    assert two.equals(one), "the 2-rank output differs from the single-process output"

@pytest.mark.slow
def test_killed_rank_resumes_with_another_world_size(tmp_path, pool):
    "Rank 1 is SIGKILLed mid-run; a rerun on 3 ranks keeps every finished shard, recomputes a truncated one, equals a fresh run."
    cache = tmp_path/"cache"
    p = torchrun(tmp_path, 2, "score", pool, tmp_path/"out.parquet", cache, env={"KILL_RANK1_AFTER": "3"}, check=False)
    assert p.returncode != 0 and not (tmp_path/"out.parquet").exists()
    done = shards(cache)
    assert 3 <= len(done) <= 6, f"expected 3 shards of rank 1 and at most 3 of rank 0, found {len(done)} of 24"
    victim = sorted(Path(cache).rglob("shard-*.parquet"))[0]
    victim.write_bytes(victim.read_bytes()[:60])  # a shard cut short by the crash
    p = torchrun(tmp_path, 3, "score", pool, tmp_path/"out.parquet", cache)
    m = re.search(r"3 ranks, 24 shards: (\d+) scored, (\d+) already in the cache", p.stdout)
    assert m and int(m[1]) + int(m[2]) == 24, p.stdout
    if not p.retried: assert int(m[1]) == 24 - len(done) + 1 and int(m[2]) == len(done) - 1, p.stdout
    after = shards(cache)
    assert len(after) == 24
    assert all(after[k] == v for k, v in done.items() if k != victim.name), "finished shards were recomputed"
    assert after[victim.name] != done[victim.name]
    fresh = score(str(pool), "tiny", cache_dir=False, shard_rows=25, **SCORE_KW)
    got = pq.read_table(tmp_path/"out.parquet")
    assert got["id"].to_pylist() == fresh["id"]
    for c in ("cond_loss", "uncond_loss", "ifd", "n_response_tokens"):
        np.testing.assert_array_equal(got[c].to_numpy(), np.asarray(fresh[c]))

@pytest.mark.slow
def test_each_rank_tokenizes_only_its_shards(tmp_path, pool):
    "2 ranks: each tokenizes its 12 shards of 25 rows (and 1 row checking the settings), rank 0's merge none; same file as 1 process."
    p = torchrun(tmp_path, 2, "score", pool, tmp_path/"out.parquet", tmp_path/"cache", env={"COUNT_TOKENIZED": "1"})
    counts = {int(r): int(n) for r, n in re.findall(r"rank (\d) tokenized (\d+) rows", p.stdout)}
    assert counts == {0: 301, 1: 301}, p.stdout
    assert "tokenized 600 rows: 401 truncated to max_length=48, 0 cannot be scored" in p.stdout  # the summary, from the shards
    one = score(str(pool), "tiny", cache_dir=False, shard_rows=25, prefix_cache=False, **SCORE_KW)
    got = pq.read_table(tmp_path/"out.parquet")
    assert got["id"].to_pylist() == one["id"] and got["truncated"].to_pylist() == one["truncated"]
    for c in ("cond_loss", "uncond_loss", "ifd"): np.testing.assert_array_equal(got[c].to_numpy(), np.asarray(one[c]))

@pytest.mark.slow
def test_mismatched_settings_are_refused(tmp_path, pool):
    "Ranks launched with different max_length stop with a message naming the field and the ranks."
    p = torchrun(tmp_path, 2, "score", pool, tmp_path/"out.parquet", tmp_path/"cache", env={"MISMATCH": "1"}, check=False)
    assert p.returncode != 0 and not (tmp_path/"out.parquet").exists()
    assert "ranks disagree on the scoring settings" in p.stderr and "max_length: 48 on rank 0; 64 on rank 1" in p.stderr
    assert not shards(tmp_path/"cache"), "nothing may be scored when the settings differ"

def test_unshared_cache_folder_is_refused(tmp_path):
    "A rank whose peer cannot see its marker file (unshared disks) is refused, naming the rank and host."
    class BlindPeer(Ranks):
        def __init__(self): super().__init__(0, 2, 0, group="simulated"); self.calls = 0
        def gather(self, obj):
            self.calls += 1
            return [obj, {1: obj, 2: "node-b", 3: [1]}[self.calls]]  # token, host, ranks whose markers the peer sees
    with pytest.raises(SmallselError, match=r"is not shared by all ranks: rank 0 on .* cannot see the files of rank\(s\) 1; "
                                            r"rank 1 on node-b cannot see the files of rank\(s\) 0"):
        check_shared_folder(tmp_path, BlindPeer())
    assert list(tmp_path.iterdir()) == []

@pytest.mark.slow
def test_stream_two_ranks_equal_one(tmp_path, pool):
    "score_stream on 2 ranks (chunks dealt round-robin) writes the same file as on 1 process, then reuses every chunk."
    torchrun(tmp_path, 2, "stream", pool, tmp_path/"two.parquet", tmp_path/"cache")
    one = score_stream(pool, "tiny", tmp_path/"one.parquet", chunk_rows=120, cache_dir=tmp_path/"cache1", shard_rows=25, **SCORE_KW)
    assert (one["rows"], one["chunks"], one["chunks_scored"]) == (600, 5, 5)
    assert pq.read_table(tmp_path/"two.parquet").equals(pq.read_table(tmp_path/"one.parquet"))
    again = score_stream(pool, "tiny", tmp_path/"one.parquet", chunk_rows=120, cache_dir=tmp_path/"cache1", shard_rows=25, **SCORE_KW)
    assert (again["chunks_scored"], again["shards_scored"]) == (5, 0)  # parts were deleted; every shard read back

@pytest.mark.slow
def test_stream_equals_whole_pool(tmp_path, pool):
    "Streamed scores equal whole-pool scores to float rounding, same ids and order (no id column: row-<i> of the pool)."
    t = pq.read_table(pool).drop_columns(["id"]); src = tmp_path/"noid.parquet"
    pq.write_table(t.slice(0, 300), src, row_group_size=70)
    s = score_stream(src, "tiny", tmp_path/"s.jsonl", chunk_rows=100, cache_dir=tmp_path/"c", **FP32)
    whole = score(str(src), "tiny", cache_dir=False, **FP32)
    from datasets import Dataset
    got = Dataset.from_json(str(tmp_path/"s.jsonl"))
    assert got["id"] == whole["id"] and got["id"][150] == "row-150"
    np.testing.assert_allclose(np.array(got["ifd"], float), np.array(whole["ifd"], float), rtol=1e-5)
    assert s["rows"] == 300 and s["errors"] == {}

@pytest.mark.slow
def test_stream_resumes_after_a_crash(tmp_path, pool, monkeypatch):
    "A crash while writing chunk 3 leaves no output; the rerun reuses chunks 1-2 and the finished shards of chunk 3."
    import smallsel_nb.distributed as D
    real, calls = D.write_part, []
    def dying(ds, path):
        calls.append(path)
        if len(calls) == 3: raise RuntimeError("killed")
        real(ds, path)
    monkeypatch.setattr(D, "write_part", dying)
    kw = dict(chunk_rows=120, cache_dir=tmp_path/"c", shard_rows=25, **SCORE_KW)
    with pytest.raises(RuntimeError, match="killed"): score_stream(pool, "tiny", tmp_path/"s.parquet", **kw)
    assert not (tmp_path/"s.parquet").exists()
    monkeypatch.setattr(D, "write_part", real)
    s = score_stream(pool, "tiny", tmp_path/"s.parquet", **kw)
    assert (s["chunks_reused"], s["chunks_scored"], s["shards_scored"]) == (2, 3, 2 * 5)  # chunks 4-5 (5 shards each) are new
    assert pq.read_metadata(tmp_path/"s.parquet").num_rows == 600

def test_stream_bad_input(tmp_path, pool):
    rows = make_noisy_instructions(10, seed=0)
    rows.to_csv(tmp_path/"p.csv"); rows.to_json(tmp_path/"p.json", lines=False)
    with pytest.raises(SmallselError, match="cannot be streamed"): chunk_source(tmp_path/"p.csv")
    with pytest.raises(SmallselError, match="cannot be streamed"): chunk_source(tmp_path/"p.json")
    with pytest.raises(SmallselError, match="no such file"): chunk_source(tmp_path/"missing.parquet")
    with pytest.raises(SmallselError, match="chunk_rows"): chunk_source(pool, chunk_rows=0)
    with pytest.raises(SmallselError, match="cache_dir=False"): score_stream(pool, "tiny", tmp_path/"o.parquet", cache_dir=False)
    with pytest.raises(SmallselError, match=".parquet or .jsonl"): score_stream(pool, "tiny", tmp_path/"o.csv")

def test_stream_bad_row_names_the_chunk(tmp_path):
    "A bad row deep in the pool is reported with the chunk it is in."
    t = pa.Table.from_pylist([{"instruction": f"q{i}", "output": "" if i == 250 else f"a{i}"} for i in range(300)])
    pq.write_table(t, tmp_path/"p.parquet")
    with pytest.raises(SmallselError, match=r"chunk from row 200.*row 50"):
        score_stream(tmp_path/"p.parquet", "tiny", tmp_path/"o.parquet", chunk_rows=100, cache_dir=tmp_path/"c", **SCORE_KW)

def test_single_process_and_bad_args(tmp_path, pool):
    "Without a launcher score_distributed is score + write; no cache folder or a bad output name is refused."
    assert init_ranks() == Ranks()
    with pytest.raises(SmallselError, match="cache_dir=False"): score_distributed(pool, "tiny", cache_dir=False)
    with pytest.raises(SmallselError, match=".parquet or .jsonl"): score_distributed(pool, "tiny", out=tmp_path/"o.txt")

def test_rank_shards_and_key_mismatch():
    for world in (1, 2, 3, 7):
        parts = [rank_shards(20, r, world, offset=5) for r in range(world)]
        assert sorted(sum(parts, [])) == list(range(20)) and max(map(len, parts)) - min(map(len, parts)) <= 1
    k = dict(model="a", max_length=8)
    assert key_mismatch([k, k]) is None
    assert key_mismatch([k, {**k, "model": "b"}]) == "  model: 'a' on rank 0; 'b' on rank 1"
