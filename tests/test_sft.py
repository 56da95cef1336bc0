"""SFT stage on the tiny model: learning, weights, stopping, packing, resume, export, bad configs."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lexalign.config import ConfigError, load_config
from lexalign.runs import is_complete, read_manifest, read_metrics
from lexalign.sft.train import SFTStageConfig, train_sft

SYSTEM = "You are a contract-review assistant. Quote clause text exactly; say 'Not present.' when absent."
STATES = ["New York", "Delaware", "California", "Texas", "Ohio", "Nevada", "Florida"]


def chat_records(n: int, seed: int) -> list[dict]:
    """Training-style prompts with short answers that end the turn (the model must learn to stop)."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        state = rng.choice(STATES)
        present = rng.random() < 0.5
        clause = f"This Agreement shall be governed by the laws of the State of {state}."
        excerpt = clause if present else f"Payment is due within {rng.randint(10, 90)} days of invoice."
        answer = f'"{clause}"' if present else "Not present."
        records.append({"messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Find the Governing Law clause in this excerpt.\n\nExcerpt: {excerpt}"},
            {"role": "assistant", "content": answer},
        ]})
    return records


@pytest.fixture(scope="module")
def chat_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("chat")
    train, valid = folder / "train.jsonl", folder / "valid.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in chat_records(256, seed=0)))
    valid.write_text("".join(json.dumps(r) + "\n" for r in chat_records(32, seed=1)))
    return train, valid


SFT_YAML = Path(__file__).resolve().parent.parent / "configs" / "sft.yaml"


def sft_overrides(model_dir: Path, data: tuple[Path, Path], out: Path, *extra: str) -> list[str]:
    return [
        f"model.path={model_dir}", f"data.train={data[0]}", f"data.valid={data[1]}", f"output_dir={out}",
        "model.threads=1", "training.max_steps=40", "training.learning_rate=5e-3", "training.warmup_steps=0",
        "training.eval_steps=20", "training.save_steps=20", "training.logging_steps=5",
        "training.per_device_train_batch_size=8", "training.max_length=256", "data.max_valid_records=0",
        *extra,
    ]


def sft_config(model_dir: Path, data: tuple[Path, Path], out: Path, *extra: str) -> SFTStageConfig:
    return load_config(SFTStageConfig, SFT_YAML, sft_overrides(model_dir, data, out, *extra))


def lora_tensors(adapter_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(adapter_dir / "adapter_model.safetensors"))


def base_logits(model_dir: Path, text: str) -> torch.Tensor:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits


# The LoRA run of the tests below; the kill -9 test runs the same config and compares its resumed run with it.
LORA_RUN = ("model.quantization.bits=null", "training.max_steps=80")


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir: Path, chat_data: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    return train_sft(sft_config(tiny_model_dir, chat_data, out, *LORA_RUN))


def test_lora_sft_learns_and_writes_a_complete_run(lora_run: Path, tiny_model_dir: Path) -> None:
    metrics = read_metrics(lora_run)
    losses = [m["loss"] for m in metrics if "loss" in m]
    evals = [m["eval_loss"] for m in metrics if "eval_loss" in m]
    assert losses[-1] < losses[0] * 0.9, losses
    manifest = read_manifest(lora_run)
    assert evals[-1] < manifest["results"]["initial_eval_loss"]
    assert manifest["results"]["global_step"] == 80
    assert manifest["outputs"]["lora_rank"] == 16
    for name in ("config.yaml", "manifest.json", "metrics.jsonl", "training.png", "COMPLETE",
                 "adapter/adapter_model.safetensors", "adapter/tokenizer.json", "adapter/chat_template.jinja",
                 "adapter/README.md"):
        assert (lora_run / name).exists(), name
    assert is_complete(lora_run)


def test_lora_weights_change_and_base_weights_do_not(lora_run: Path, tiny_model_dir: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tensors = lora_tensors(lora_run / "adapter")
    lora_b = [t for name, t in tensors.items() if "lora_B" in name]
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b)  # lora_B starts at zero: non-zero means trained
    # the base folder is untouched (same hash as when training started) ...
    from lexalign.runs import hash_path

    assert read_manifest(lora_run)["inputs"]["base_model"]["sha256"] == hash_path(tiny_model_dir)
    # ... and with the adapter disabled the tuned model is exactly the base model
    text = "Find the Governing Law clause."
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)), str(lora_run / "adapter"))
    model.eval()
    with torch.no_grad():
        tuned = model(**tokenizer(text, return_tensors="pt")).logits
        with model.disable_adapter():
            disabled = model(**tokenizer(text, return_tensors="pt")).logits
    assert torch.allclose(disabled, base_logits(tiny_model_dir, text), atol=1e-5)
    assert not torch.allclose(tuned, disabled, atol=1e-3)


def stop_rate(model, tokenizer, records: list[dict], max_new_tokens: int = 48) -> float:
    stops = 0
    for record in records:
        ids = tokenizer.apply_chat_template(record["messages"][:-1], add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        stops += int(tokenizer.eos_token_id in out[0, ids["input_ids"].shape[1]:].tolist())
    return stops / len(records)


def test_tuned_model_learns_to_stop(lora_run: Path, tiny_model_dir: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    prompts = chat_records(16, seed=7)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    base_rate = stop_rate(base, tokenizer, prompts)
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)),
                                      str(lora_run / "adapter")).eval()
    tuned_rate = stop_rate(tuned, tokenizer, prompts)
    assert tuned_rate >= 0.8 and tuned_rate >= base_rate + 0.5, (base_rate, tuned_rate)


def test_qlora_sft_trains_4bit_base(tiny_model_dir: Path, chat_data: tuple[Path, Path], tmp_path: Path) -> None:
    run = train_sft(sft_config(tiny_model_dir, chat_data, tmp_path, "training.max_steps=20",
                               "training.eval_steps=10", "training.save_steps=10"))
    manifest = read_manifest(run)
    assert manifest["results"]["mode"] == "qlora"
    assert manifest["results"]["eval_loss"] < manifest["results"]["initial_eval_loss"]
    losses = [m["loss"] for m in read_metrics(run) if "loss" in m]
    assert losses[-1] < losses[0]
    config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    adapted = {name.rsplit(".", 1)[-1] for name in config["target_modules"]}
    assert config["r"] == 16 and adapted >= {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert all(t.abs().sum() > 0 for n, t in lora_tensors(run / "adapter").items() if "lora_B" in n)


def test_a_4bit_cpu_model_does_not_keep_its_full_precision_file_mapped(tiny_model_dir: Path) -> None:
    """The tensors kept in full precision (embeddings, norms) are copied out of the checkpoint's memory map;
    otherwise they pin the whole fp32 file, and every page quantization read stays resident."""
    from safetensors.torch import load_file

    from lexalign.modeling import ModelSection, QuantizationSection, load_model

    model, _, _ = load_model(ModelSection(path=str(tiny_model_dir), quantization=QuantizationSection(bits=4)))
    maps = Path("/proc/self/maps").read_text()
    assert str(tiny_model_dir / "model.safetensors") not in maps
    saved = load_file(str(tiny_model_dir / "model.safetensors"))
    assert torch.equal(model.model.embed_tokens.weight, saved["model.embed_tokens.weight"])
    assert torch.equal(model.model.norm.weight, saved["model.norm.weight"])
    assert type(model.model.layers[0].mlp.up_proj.weight).__name__ == "Params4bit"
    if model.config.tie_word_embeddings:
        assert model.lm_head.weight is model.model.embed_tokens.weight


def test_full_finetuning_changes_the_weights(tiny_model_dir: Path, chat_data: tuple[Path, Path], tmp_path: Path) -> None:
    from safetensors.torch import load_file

    run = train_sft(sft_config(tiny_model_dir, chat_data, tmp_path, "model.tuning=full",
                               "model.quantization.bits=null", "training.max_steps=10",
                               "training.learning_rate=1e-3", "training.eval_steps=10", "training.save_steps=10"))
    before = load_file(str(tiny_model_dir / "model.safetensors"))
    after = load_file(str(run / "model" / "model.safetensors"))
    changed = [name for name in before if name in after and not torch.equal(before[name], after[name])]
    assert len(changed) >= len(before) // 2


def test_packed_examples_do_not_attend_to_each_other(tiny_model_dir: Path) -> None:
    """TRL's padding-free packing: a sequence's logits are the same alone and packed after another one."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), attn_implementation="sdpa").eval()
    first = tokenizer("Payment is due within thirty days of the invoice date.")["input_ids"]
    second = tokenizer("This Agreement shall be governed by the laws of Delaware.")["input_ids"]
    collator = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=True)
    batch = collator([{"input_ids": first}, {"input_ids": second}])
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
    with torch.no_grad():
        # use_cache=False as in training (TRL's compute_loss): a KV cache turns packed-sequence detection off
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                       use_cache=False).logits[0, len(first):]
        alone = model(input_ids=torch.tensor([second]), use_cache=False).logits[0]
    assert torch.allclose(packed, alone, atol=1e-4)


def test_packing_config_is_accepted_and_trains(tiny_model_dir: Path, chat_data: tuple[Path, Path], tmp_path: Path) -> None:
    run = train_sft(sft_config(tiny_model_dir, chat_data, tmp_path, "model.quantization.bits=null",
                               "training.packing=true", "training.max_steps=10", "training.eval_steps=10",
                               "training.save_steps=10"))
    assert is_complete(run)


def test_length_balanced_micro_batches_take_the_same_step_as_the_whole_batch(tiny_model_dir: Path,
                                                                           tmp_path: Path) -> None:
    """configs/smollm2/sft.yaml: each random batch of 8 is cut into micro-batches of similar length
    (train_sampling_strategy: batch_rebalance) and their gradients accumulated. The loss is averaged over the answer
    tokens of the whole batch, so one optimizer step equals the step on the 8 records padded together."""
    records = chat_records(8, seed=3)
    for i, record in enumerate(records):  # prompts of ~30 to ~300 tokens; answers of 4 to 20 tokens
        record["messages"][1]["content"] += " See the recitals." * (4 * i * i)
    data = tmp_path / "eight.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    one_step = ("model.quantization.bits=null", "training.max_steps=1", "training.optim=sgd",
                "training.learning_rate=1.0", "training.max_length=512")   # SGD: the update is the gradient
    whole = train_sft(sft_config(tiny_model_dir, (data, data), tmp_path / "whole", *one_step))
    micro = train_sft(sft_config(tiny_model_dir, (data, data), tmp_path / "micro", *one_step,
                                 "training.per_device_train_batch_size=4", "training.gradient_accumulation_steps=2",
                                 "training.train_sampling_strategy=batch_rebalance"))
    whole_weights, micro_weights = lora_tensors(whole / "adapter"), lora_tensors(micro / "adapter")
    trained = [name for name in whole_weights if "lora_B" in name]
    assert trained and all(whole_weights[name].abs().sum() > 0 for name in trained)   # lora_B starts at zero
    for name, tensor in whole_weights.items():
        assert torch.allclose(micro_weights[name], tensor, rtol=1e-4, atol=1e-7), name


def test_length_balanced_batches_are_drawn_with_the_run_seed(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The batches of train_sampling_strategy: batch_rebalance follow training.data_seed (else training.seed), as
    random batches do; transformers alone seeds them with 42 whatever the run says."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from lexalign.training import seed_length_balanced_batches

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    records = [{"prompt": [{"role": "user", "content": f"Clause {i}." + " More text." * (i % 5)}],
                "completion": [{"role": "assistant", "content": f"Answer {i}."}]} for i in range(24)]

    def batches(**seeds: int) -> list[list[list[int]]]:
        args = SFTConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=2, gradient_accumulation_steps=2,
                         train_sampling_strategy="batch_rebalance", report_to=[], use_cpu=True, **seeds)
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(records),
                             processing_class=tokenizer)
        seed_length_balanced_batches(trainer)
        return [batch["input_ids"].tolist() for batch in trainer.get_train_dataloader()]

    first = batches(seed=0)
    assert len(first) == 12 and first == batches(seed=0)                  # 24 records, micro-batches of ~2
    assert first != batches(seed=1)                                       # another seed, another draw
    assert batches(seed=0, data_seed=5) == batches(seed=1, data_seed=5)   # data_seed decides when given
    assert batches(seed=0, data_seed=5) != first


@pytest.mark.parametrize("overrides, key", [
    (["model.tuning=full"], "model.quantization.bits"),              # 4-bit with full fine-tuning
    (["data.train=/no/such/file.jsonl"], "data.train"),              # missing dataset
    (["model.lora.r=0"], "model.lora.r"),                            # rank <= 0
    (["training.packing=true", "training.packing_strategy=wrapped"], "training.packing_strategy"),
    (["training.max_stepz=3"], "training.max_stepz"),
    (["training.train_sampling_strategy=by_length"], "training.train_sampling_strategy"),   # not a sampler
    (["data.max_not_present_share=1.0"], "data.max_not_present_share"),
    (["data.task_repeats.presense=2"], "data.task_repeats.presense"),   # not a task
    (["data.task_repeats.presence=0"], "data.task_repeats.presence"),   # a record is seen at least once
    (["data.task_repeats.presence=1.5"], "data.task_repeats.presence"),
    (["data.train_extra=[/no/such/extra.jsonl]"], "data.train_extra[0]"),
    (["data.train_extra=shipped:sft_train_extra.jsonl"], "data.train_extra"),   # a file, not a list of files
])
def test_bad_configs_fail_before_any_model_loads(overrides: list[str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(SFTStageConfig, SFT_YAML, overrides)
    keys = [p.key for p in info.value.problems]
    assert key in keys
    assert not [k for k in keys if k.startswith(f"{key}[")], keys   # a mistyped value is one problem


def test_not_present_cap_downsamples_only_absent_extraction_records() -> None:
    from lexalign.data.schemas import ChatRecord
    from lexalign.sft.train import cap_not_present

    def record(task: str, present: bool | None, i: int) -> ChatRecord:
        answer = "Not present." if present is False else f"answer {i}"
        return ChatRecord.model_validate({"messages": [{"role": "user", "content": f"q{i}"},
                                                       {"role": "assistant", "content": answer}],
                                          "meta": {"task": task, "present": present}})

    records = ([record("extract", True, i) for i in range(30)] + [record("extract", False, i) for i in range(70)]
               + [record("presence", False, i) for i in range(20)] + [record("unfair", None, i) for i in range(10)])
    capped = cap_not_present(records, 0.25, seed=0)
    absent = [r for r in capped if r.meta["task"] == "extract" and r.meta["present"] is False]
    assert len(absent) == 10                                    # 10 / (10 + 30) = 0.25
    assert sum(r.meta["task"] == "extract" and r.meta["present"] for r in capped) == 30
    assert sum(r.meta["task"] == "presence" for r in capped) == 20  # "No" answers of other tasks are kept
    assert [r for r in capped if r.meta["task"] != "extract"] == records[100:]
    assert cap_not_present(records, 0.25, seed=1) != capped      # a seeded draw
    assert cap_not_present(records, None, seed=0) is records


def test_task_repeats_add_copies_of_that_task_only() -> None:
    from lexalign.data.schemas import ChatRecord
    from lexalign.sft.train import repeat_tasks

    records = [ChatRecord.model_validate({"messages": [{"role": "user", "content": f"q{i}"},
                                                       {"role": "assistant", "content": "Yes"}],
                                          "meta": {"task": task}})
               for i, task in enumerate(["presence", "extract", "presence", "unfair"])]
    repeated = repeat_tasks(records, {"presence": 3, "unfair": 1})
    assert repeated[:4] == records                                   # the file's records first, in order
    assert [r.messages[0].content for r in repeated[4:]] == ["q0", "q0", "q2", "q2"]
    assert repeat_tasks(records, {}) is records


def test_train_extra_files_are_appended_to_the_training_records_and_fingerprinted(
        chat_data: tuple[Path, Path], tmp_path: Path) -> None:
    from lexalign.sft.train import run_inputs, training_records

    extra = tmp_path / "extra.jsonl"
    extra.write_text("".join(json.dumps(r) + "\n" for r in chat_records(12, seed=7)))
    overrides = [f"data.train={chat_data[0]}", f"data.valid={chat_data[1]}"]
    plain = load_config(SFTStageConfig, SFT_YAML, overrides)
    both = load_config(SFTStageConfig, SFT_YAML, [*overrides, f"data.train_extra=[{extra}]"])
    records, more = training_records(plain.data), training_records(both.data)
    assert len(more) == len(records) + 12
    assert more[:len(records)] == records                            # the train file's records first, in order
    assert [r.messages[-1].content for r in more[len(records):]] == [r["messages"][-1]["content"]
                                                                     for r in chat_records(12, seed=7)]
    # the run's manifest hashes the extra file: a changed extra file is a changed run, not a finished one
    assert extra in run_inputs(both, tmp_path).values() and extra not in run_inputs(plain, tmp_path).values()


def test_missing_model_folder_is_a_clear_cli_error(tmp_path: Path, chat_data: tuple[Path, Path]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lexalign.cli", "sft", "--config", str(SFT_YAML), f"model.path={tmp_path / 'nope'}",
         f"data.train={chat_data[0]}", f"data.valid={chat_data[1]}", f"output_dir={tmp_path}"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "not a Hugging Face model folder" in result.stderr and "Traceback" not in result.stderr


def test_export_merges_into_full_precision_and_matches_base_plus_adapter(lora_run: Path, tiny_model_dir: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lexalign.sft.export import export_merged

    merged_dir = export_merged(lora_run)
    assert json.loads((merged_dir / "lexalign_export.json").read_text())["lora_rank"] == 16
    tokenizer = AutoTokenizer.from_pretrained(str(merged_dir))
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir)).eval()
    combined = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)),
                                         str(lora_run / "adapter")).eval()
    for record in chat_records(4, seed=3):
        ids = tokenizer.apply_chat_template(record["messages"][:-1], add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)
        with torch.no_grad():
            a = merged.generate(**ids, max_new_tokens=24, do_sample=False, pad_token_id=tokenizer.pad_token_id)
            b = combined.generate(**ids, max_new_tokens=24, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        assert a.tolist() == b.tolist()


# --------------------------------------------------------------------------- kill -9 and resume
# Also used by test_reliability.py (DPO kill -9, full disk) and test_dpo.py.

KILLED = "killed"  # the mark of the metrics lines that an interrupted attempt logged


def kill_after_checkpoint(command: list[str], run_dir: Path, step: int, log: Path, timeout: float = 300,
                          **popen: object) -> None:
    """Start ``command``; kill its process group with SIGKILL once checkpoint-``step`` is whole on disk and a
    training step after it is logged (a metrics line that the resumed run must drop and log again)."""
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True, **popen)
    state = run_dir / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json"
    deadline = time.time() + timeout
    while time.time() < deadline and not (state.exists() and _logged_after(run_dir, step)):
        assert process.poll() is None, f"the run ended before it could be killed: {log.read_text()[-2000:]}"
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert state.exists() and _logged_after(run_dir, step), f"not past checkpoint-{step} before the kill"
    assert not is_complete(run_dir)


def _logged_after(run_dir: Path, step: int) -> bool:
    try:
        return any(m["step"] > step and "loss" in m for m in read_metrics(run_dir))
    except ValueError:  # a line being written
        return False


def resumable_step(run_dir: Path) -> int:
    """The step of the newest whole checkpoint (the one the same command resumes from); 0 if there is none."""
    from lexalign.training import checkpoint_is_whole, checkpoint_step

    folder = run_dir / "checkpoints"  # glob of a missing folder: nothing
    return max((checkpoint_step(str(p)) for p in folder.glob("checkpoint-*") if checkpoint_is_whole(p)), default=0)


def mark_metrics(run_dir: Path) -> list[dict]:
    """Mark every metrics line of the interrupted attempt and return them. A restart from step 0 logs the same
    seeded values again, so only a mark tells the lines a rerun kept from the lines it logged itself."""
    lines = [{**m, "attempt": KILLED} for m in read_metrics(run_dir)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    return lines


def assert_resumed(run_dir: Path, killed: list[dict], step: int, logging_steps: int, final_step: int) -> list[dict]:
    """The rerun resumed at checkpoint-``step``: the interrupted attempt's lines up to ``step`` are still there,
    first and unchanged, its later lines are gone, and the rerun logged from ``step + logging_steps`` on, each
    step once. Returns the rerun's lines."""
    metrics = read_metrics(run_dir)
    kept = [m for m in killed if m["step"] <= step]
    assert kept and metrics[:len(kept)] == kept, "the metrics logged before the checkpoint were not kept"
    rerun = metrics[len(kept):]
    assert not [m for m in rerun if m.get("attempt") == KILLED], "lines logged after the checkpoint were kept"
    steps = [m["step"] for m in rerun if "loss" in m]
    assert steps == list(range(step + logging_steps, final_step + 1, logging_steps)), (step, steps)
    assert [m["step"] for m in metrics if "loss" in m] == list(range(logging_steps, final_step + 1, logging_steps))
    return rerun


def assert_same_adapter(resumed: Path, uninterrupted: Path, atol: float = 1e-4) -> float:
    """The trained LoRA weights of the resumed run (adapter folder) equal the uninterrupted run's (same seed, same
    config). Returns the largest difference, which must stay under ``atol``: it is 0 (bitwise equal) on the CPU
    machine; a resume that loses or repeats a batch, the optimizer state or the trained weights is off by 1e-3
    or more after a few steps at these learning rates."""
    a, b = lora_tensors(resumed), lora_tensors(uninterrupted)
    assert a.keys() == b.keys() and a
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert diff <= atol, f"resumed adapter differs from the uninterrupted run's by {diff}"
    return diff


def assert_same_curve(rerun: list[dict], uninterrupted: list[dict], keys: tuple[str, ...]) -> None:
    """The rerun's logged values equal the uninterrupted run's at the same steps (same batches, same schedule)."""
    reference = {(m["step"], key): m[key] for m in uninterrupted for key in keys if key in m}
    pairs = [(m[key], reference[(m["step"], key)]) for m in rerun for key in keys if key in m]
    assert pairs and [a for a, _ in pairs] == pytest.approx([b for _, b in pairs], rel=1e-4, abs=1e-6)


@pytest.mark.slow
def test_killed_run_resumes_at_its_checkpoint_and_matches_an_uninterrupted_run(
        tiny_model_dir: Path, chat_data: tuple[Path, Path], tmp_path: Path, lora_run: Path) -> None:
    """kill -9 past checkpoint-20 (step 25 logged); the same command resumes at the checkpoint: the metrics logged up
    to it are kept, later ones dropped, the rerun logs from step 25 on with the values of the uninterrupted
    ``lora_run`` and ends with its LoRA weights."""
    config = sft_config(tiny_model_dir, chat_data, tmp_path, *LORA_RUN)
    logging_steps, max_steps = int(config.training["logging_steps"]), int(config.training["max_steps"])
    command = [sys.executable, "-m", "lexalign.cli", "sft", "--config", str(SFT_YAML),
               *sft_overrides(tiny_model_dir, chat_data, tmp_path, *LORA_RUN)]
    run_dir = tmp_path / "tiny" / "sft"
    kill_after_checkpoint(command, run_dir, 20, tmp_path / "first-run.log")
    step = resumable_step(run_dir)
    killed = mark_metrics(run_dir)
    assert [m for m in killed if m["step"] > step], "nothing logged after the checkpoint: nothing to drop"

    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert is_complete(run_dir)
    assert read_manifest(run_dir)["results"]["global_step"] == max_steps
    rerun = assert_resumed(run_dir, killed, step, logging_steps, max_steps)
    assert not [m for m in rerun if m["step"] == 0], "the rerun evaluated before training: it started over"
    assert_same_curve(rerun, read_metrics(lora_run), ("loss", "learning_rate", "grad_norm", "eval_loss"))
    diff = assert_same_adapter(run_dir / "adapter", lora_run / "adapter")
    print(f"\nSFT: killed after checkpoint-{step}, resumed at step {step + logging_steps} with the "
          f"{sum(m['step'] <= step for m in killed)} metrics lines logged up to the checkpoint, finished at "
          f"{max_steps}; max |resumed - uninterrupted| LoRA weight {diff:.1e}")


def test_qlora_on_cpu_with_unpackable_layer_sizes_is_a_clear_error(tiny_corpus_text: str, tmp_path: Path,
                                                                   chat_data: tuple[Path, Path]) -> None:
    from lexalign.basemodel import make_tiny_model
    from lexalign.modeling import ModelLoadError

    model_dir = make_tiny_model(tmp_path / "odd", tiny_corpus_text[:20000], intermediate_size=200)
    with pytest.raises(ModelLoadError, match="divisible by 32"):
        train_sft(sft_config(model_dir, chat_data, tmp_path / "runs"))


def test_native_dtype_is_bf16_only_on_a_cpu_with_bf16_instructions(monkeypatch: pytest.MonkeyPatch,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """compute_dtype: native (the SmolLM2 configs) trains in bf16 where the CPU computes it (AVX-512 BF16 or AMX) and
    in fp32 elsewhere, where emulated bf16 makes a step ~30x slower; an explicit bfloat16 there is named as slow,
    with the key and the value that fix it."""
    import yaml

    from lexalign import modeling

    cpu = torch.device("cpu")
    monkeypatch.setattr(modeling, "cpu_has_native_bf16", lambda: False)
    with caplog.at_level("WARNING", logger="lexalign.modeling"):
        assert modeling.choose_compute_dtype(cpu, "native") == torch.float32
        assert "compute_dtype" not in caplog.text
        assert modeling.choose_compute_dtype(cpu, "bfloat16") == torch.bfloat16
    assert "model.quantization.compute_dtype=native" in caplog.text
    caplog.clear()
    monkeypatch.setattr(modeling, "cpu_has_native_bf16", lambda: True)
    with caplog.at_level("WARNING", logger="lexalign.modeling"):
        assert modeling.choose_compute_dtype(cpu, "native") == torch.bfloat16
        assert modeling.choose_compute_dtype(cpu, "bfloat16") == torch.bfloat16
        assert modeling.choose_compute_dtype(cpu, "auto") == torch.float32
    assert "compute_dtype" not in caplog.text
    # Every training config of the default base follows the hardware: none forces bf16 on a CPU without it.
    configs = Path(__file__).resolve().parent.parent / "configs" / "smollm2"
    for name in ("sft", "reward", "dpo", "ppo", "grpo"):
        model = yaml.safe_load((configs / f"{name}.yaml").read_text())["model"]
        assert model["quantization"]["compute_dtype"] == "native", name
