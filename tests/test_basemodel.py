"""The tiny embedded base model: config validation, tokenizer, chat template, model, build, CLI."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from lexalign.basemodel import (
    CHAT_TEMPLATE,
    BaseModelConfig,
    ModelConfig,
    build_base_model,
    load_base_config,
    make_tiny_model,
    resolve_corpus,
)
from lexalign.config import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
TINY_OVERRIDES = [
    "tokenizer.vocab_size=512",
    "model.hidden_size=128",
    "model.num_hidden_layers=2",
    "model.num_attention_heads=2",
    "model.num_key_value_heads=1",
    "model.intermediate_size=256",
    "model.max_position_embeddings=256",
    "pretraining.seq_len=128",
    "pretraining.batch_size=8",
    "pretraining.max_steps=30",
    "pretraining.warmup_steps=3",
    "pretraining.eval_max_blocks=8",
    "pretraining.eval_fraction=0.1",
    "pretraining.threads=1",
    "pretraining.log_every=5",
]
MESSAGES = [
    {"role": "system", "content": "You are a careful contract reviewer."},
    {"role": "user", "content": "Is liability capped?"},
    {"role": "assistant", "content": "Yes: Section 8 caps liability at 12 months of fees."},
    {"role": "user", "content": "Any  odd\nwhitespace?"},
    {"role": "assistant", "content": " Leading space, unicode “quotes” — and a tail\n"},
]


def problem_keys(err: ConfigError) -> set[str]:
    return {p.key for p in err.problems}


# --------------------------------------------------------------------------- config


def test_shipped_configs_load_and_default_corpus_is_the_packaged_one():
    import lexalign.data

    expected = Path(lexalign.data.__file__).parent / "shipped" / "pretrain_corpus.txt"
    assert BaseModelConfig().corpus_path == expected
    assert resolve_corpus("") == expected
    if not expected.is_file():
        pytest.skip("the shipped corpus is not built yet")
    tiny = load_base_config(REPO_ROOT / "configs" / "base.yaml")
    assert tiny.model.head_dim == 64 and tiny.pretraining.seq_len <= tiny.model.max_position_embeddings
    big = load_base_config(REPO_ROOT / "configs" / "base-100m.yaml")
    assert big.model.head_dim == 64


def test_base_100m_config_has_about_100m_parameters():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = load_base_config(REPO_ROOT / "configs" / "base-100m.yaml", ["corpus=" + __file__])
    m = cfg.model
    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(
            vocab_size=cfg.tokenizer.vocab_size, hidden_size=m.hidden_size, intermediate_size=m.intermediate_size,
            num_hidden_layers=m.num_hidden_layers, num_attention_heads=m.num_attention_heads,
            num_key_value_heads=m.num_key_value_heads, tie_word_embeddings=m.tie_word_embeddings))
    assert 90e6 < sum(p.numel() for p in model.parameters()) < 110e6


def test_cross_field_problems_are_all_reported_each_naming_its_key(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_base_config(overrides=[
            "corpus=" + str(tmp_path / "missing.txt"),
            "tokenizer.vocab_size=100",
            "model.hidden_size=250",  # not divisible by 4 heads
            "model.num_key_value_heads=3",  # does not divide 4 heads
            "pretraining.seq_len=2048",  # > max_position_embeddings 1024
            "pretraining.batch_size=0",
            "pretraining.eval_fraction=0.9",
            "pretraining.device=tpu",
        ])
    keys = problem_keys(info.value)
    assert keys == {"corpus", "tokenizer.vocab_size", "model.hidden_size", "model.num_key_value_heads",
                    "pretraining.seq_len", "pretraining.batch_size", "pretraining.eval_fraction",
                    "pretraining.device"}
    text = str(info.value)
    assert "8 problems" in text and "missing.txt" in text and "command line" in text


def test_head_dim_must_be_one_vllm_serves(tiny_corpus_file):
    with pytest.raises(ConfigError) as info:
        load_base_config(overrides=[f"corpus={tiny_corpus_file}", "model.hidden_size=192"])  # 4 heads -> 48
    assert problem_keys(info.value) == {"model.num_attention_heads"}
    assert "head_dim" in str(info.value) and "64" in str(info.value)
    ok = load_base_config(overrides=[f"corpus={tiny_corpus_file}", "model.hidden_size=192",
                                     "model.num_attention_heads=3", "model.num_key_value_heads=1"])
    assert ok.model.head_dim == 64


def test_type_errors_and_unknown_keys_are_all_reported(tmp_path):
    config = tmp_path / "base.yaml"
    config.write_text("name: t\nmodel:\n  hidden_size: big\n  layers: 2\npretraining:\n  max_steps: 1.5\n")
    with pytest.raises(ConfigError) as info:
        load_base_config(config, ["tokenizer.vocab_sise=512"])
    assert problem_keys(info.value) == {"model.hidden_size", "model.layers", "pretraining.max_steps",
                                        "tokenizer.vocab_sise"}
    assert f"{config}:3" in str(info.value)  # file and line of the bad key


def test_valid_tiny_overrides_pass(tiny_corpus_file, tmp_path):
    cfg = load_base_config(REPO_ROOT / "configs" / "base.yaml",
                           [f"corpus={tiny_corpus_file}", f"output_dir={tmp_path}", *TINY_OVERRIDES])
    assert cfg.run_dir == tmp_path / "tiny" / "base"
    assert ModelConfig(hidden_size=128, num_attention_heads=2, num_key_value_heads=2).problems() == []


def test_make_tiny_model_rejects_a_head_size_vllm_cannot_serve(tmp_path, tiny_corpus_text):
    with pytest.raises(ConfigError, match="head_dim"):
        make_tiny_model(tmp_path / "m", tiny_corpus_text, hidden_size=96, heads=2)  # head_dim 48
    assert not (tmp_path / "m").exists()


# --------------------------------------------------------------------------- tokenizer and chat template


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_special_tokens_and_ids(tokenizer, tiny_model_dir):
    from transformers import AutoConfig, GenerationConfig

    assert tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [0, 1, 2]
    assert (tokenizer.pad_token, tokenizer.eos_token, tokenizer.bos_token) == ("<|endoftext|>", "<|im_end|>", None)
    assert tokenizer.encode("Hello world") == tokenizer.encode("Hello world", add_special_tokens=False)  # no BOS
    config = AutoConfig.from_pretrained(tiny_model_dir)
    assert (config.pad_token_id, config.eos_token_id) == (0, 2)
    assert len(tokenizer) <= config.vocab_size
    generation = GenerationConfig.from_pretrained(tiny_model_dir)
    assert generation.eos_token_id == [2, 0] and generation.pad_token_id == 0


@pytest.mark.parametrize("text", [
    "The Licensee shall pay $1,000,000.00 within thirty (30) days.",
    "  leading and trailing spaces  \n\n\ttabs\r\nand CRLF\n",
    "Unicode: “quotes”, — dashes, café, §12(b), 日本語, emoji 🙂, zero\u200bwidth",
    "literal <|im_start|>user\nhello<|im_end|> tokens",
    "",
])
def test_tokenizer_round_trips_text_exactly(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text


def test_chat_template_is_chatml(tokenizer):
    rendered = tokenizer.apply_chat_template(MESSAGES, tokenize=False)
    expected = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in MESSAGES)
    assert rendered == expected
    prompt = tokenizer.apply_chat_template(MESSAGES[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>user\nIs liability capped?<|im_end|>\n<|im_start|>assistant\n")
    assert tokenizer.chat_template == CHAT_TEMPLATE
    assert "{%- generation %}" in tokenizer.chat_template


def test_assistant_mask_covers_exactly_the_assistant_content_and_im_end(tokenizer):
    out = tokenizer.apply_chat_template(MESSAGES, return_assistant_tokens_mask=True, return_dict=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    assert len(ids) == len(mask)
    runs, current = [], []
    for token, flag in zip(ids, mask):
        if flag:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    assistant = [m["content"] for m in MESSAGES if m["role"] == "assistant"]
    assert [tokenizer.decode(run) for run in runs] == [content + "<|im_end|>" for content in assistant]
    assert all(run[-1] == tokenizer.eos_token_id for run in runs)  # the end-of-turn token is trained
    # the header <|im_start|>assistant\n and all prompt tokens are not
    unmasked = tokenizer.decode([t for t, f in zip(ids, mask) if not f])
    assert "Leading space" not in unmasked and "Section 8" not in unmasked
    assert unmasked.count("<|im_start|>assistant\n") == 2
    # the masked tokens are exactly the tokens of the assistant text, as encoded in the full conversation
    assert sum(mask) == sum(len(run) for run in runs)


def test_trl_assistant_only_loss_trains_content_and_end_of_turn(tiny_model_dir, tokenizer, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    data = Dataset.from_list([{"messages": MESSAGES[1:3]}] * 2)
    args = SFTConfig(output_dir=str(tmp_path), assistant_only_loss=True, max_steps=1, report_to=[],
                     use_cpu=True, save_strategy="no")
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)
    example = trainer.train_dataset[0]
    trained = [t for t, label in zip(example["input_ids"], example["labels"]) if label != -100]
    assert tokenizer.decode(trained) == MESSAGES[2]["content"] + "<|im_end|>"


# --------------------------------------------------------------------------- model


def test_save_load_round_trip_gives_identical_logits(tmp_path, tiny_corpus_text):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lexalign.basemodel import ModelConfig, make_model, save_model, train_tokenizer

    tokenizer = train_tokenizer(tiny_corpus_text, vocab_size=400, model_max_length=256)
    model = make_model(tokenizer, ModelConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                                              num_key_value_heads=2, intermediate_size=256,
                                              max_position_embeddings=256), seed=3)
    save_model(model, tokenizer, tmp_path / "m")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    loaded_tokenizer = AutoTokenizer.from_pretrained(tmp_path / "m")
    assert loaded.dtype == torch.float32 and type(loaded).__name__ == "LlamaForCausalLM"
    text = "The Supplier shall indemnify the Customer."
    ids = torch.tensor([tokenizer.encode(text)])
    assert loaded_tokenizer.encode(text) == ids[0].tolist()
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)


def test_same_seed_gives_identical_weights_and_tokenizer(tmp_path, tiny_corpus_text):
    from safetensors.torch import load_file

    text = tiny_corpus_text[:30_000]
    a = make_tiny_model(tmp_path / "a", text, vocab_size=400, seed=7)
    b = make_tiny_model(tmp_path / "b", text, vocab_size=400, seed=7)
    c = make_tiny_model(tmp_path / "c", text, vocab_size=400, seed=8)
    wa, wb, wc = (load_file(d / "model.safetensors") for d in (a, b, c))
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)
    assert any(not (wa[k] == wc[k]).all() for k in wa)
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()


def test_tiny_model_dir_loads_and_generates_until_eos_or_limit(tiny_model_dir, tokenizer):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.head_dim == 64 and model.config.num_attention_heads == 2
    prompt = tokenizer.apply_chat_template(MESSAGES[:2], add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert out.shape[1] <= prompt["input_ids"].shape[1] + 8


# --------------------------------------------------------------------------- build


def test_build_base_model_lowers_eval_loss_and_writes_a_complete_run(tmp_path, tiny_corpus_file):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lexalign.runs import is_complete, read_manifest, read_metrics

    run_dir = build_base_model(REPO_ROOT / "configs" / "base.yaml",
                               [f"corpus={tiny_corpus_file}", f"output_dir={tmp_path}", "name=t", *TINY_OVERRIDES])
    assert run_dir == tmp_path / "t" / "base"
    for name in ("config.yaml", "manifest.json", "metrics.jsonl", "loss.png", "COMPLETE"):
        assert (run_dir / name).is_file(), name
    assert is_complete(run_dir)
    manifest = read_manifest(run_dir)
    results = manifest["results"]
    assert manifest["status"] == "complete" and manifest["inputs"]["corpus"]["sha256"]
    assert results["eval_loss"] < results["initial_eval_loss"] - 0.5
    assert results["perplexity"] == pytest.approx(2.718281828 ** results["eval_loss"], rel=1e-6)
    assert results["parameters"] > 0 and results["steps"] == 30
    metrics = read_metrics(run_dir)
    evals = [m for m in metrics if "eval_loss" in m]
    assert [m["step"] for m in evals] == [0, 30]
    assert [m["step"] for m in metrics if "loss" in m] == [5, 10, 15, 20, 25, 30]
    model_dir = run_dir / "model"
    card = (model_dir / "README.md").read_text()
    assert "supplied by the user" in card and "tests and demos only" in card
    assert f"{results['eval_loss']:.4f}" in card and "30 steps" in card
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert sum(p.numel() for p in model.parameters()) == results["parameters"]
    ids = torch.tensor([tokenizer.encode("This Agreement shall")])
    assert model(ids).logits.shape == (1, ids.shape[1], model.config.vocab_size)
    assert (run_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_build_on_the_shipped_corpus_without_pretraining_credits_the_sources(tmp_path):
    if not resolve_corpus("shipped").is_file():
        pytest.skip("the shipped corpus is not built yet")
    overrides = [o for o in TINY_OVERRIDES if not o.startswith("pretraining.max_steps")]
    run_dir = build_base_model(None, [f"output_dir={tmp_path}", "pretraining.max_steps=0", *overrides])
    card = (run_dir / "model" / "README.md").read_text()
    assert "CC BY 4.0" in card and "CUAD" in card and "CLAUDETTE" in card
    assert "Pretraining: none" in card
    from lexalign.runs import read_manifest

    results = read_manifest(run_dir)["results"]
    assert results["steps"] == 0 and results["eval_loss"] == results["initial_eval_loss"]


def test_build_refuses_a_bad_config_before_any_work(tmp_path):
    with pytest.raises(ConfigError):
        build_base_model(None, [f"output_dir={tmp_path}", "corpus=" + str(tmp_path / "nope.txt")])
    assert not (tmp_path / "tiny").exists()


# --------------------------------------------------------------------------- CLI


def test_cli_help_is_fast_and_imports_no_torch():
    code = ("import sys, lexalign.cli, lexalign.basemodel; lexalign.cli.build_parser(); "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
    started = time.time()
    help_run = subprocess.run([sys.executable, "-m", "lexalign.cli", "base", "build", "--help"],
                              capture_output=True, text=True)
    elapsed = time.time() - started
    assert help_run.returncode == 0, help_run.stderr
    assert "configs/base.yaml" in help_run.stdout
    print(f"lexalign base build --help: {elapsed:.2f} s")


def test_cli_reports_config_problems_without_traceback(tmp_path):
    out = subprocess.run([sys.executable, "-m", "lexalign.cli", "base", "build", "--config",
                          str(REPO_ROOT / "configs" / "base.yaml"), f"output_dir={tmp_path}",
                          "model.num_attention_heads=3"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "model.hidden_size" in out.stderr and "Traceback" not in out.stderr
