"""The default path on the real default model: QLoRA SFT on SmolLM2-135M-Instruct (an adapter trained on a
4-bit NF4 base) lowers the held-out loss and leaves the base weights alone, and vLLM serves the
full-precision base + that adapter with greedy answers equal to transformers + peft."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lexalign.runs import hash_path, read_metrics

pytest_plugins = ["test_smollm2_support", "test_serve_support"]

REPO = Path(__file__).resolve().parent.parent

MESSAGES = [
    {"role": "system", "content": "You are a contract-review assistant for lawyers. Answer only from the text you "
                                  "are given."},
    {"role": "user", "content": "Does this contract excerpt contain a Governing Law clause? Answer Yes or No.\n\n"
                                "Excerpt:\nThis Agreement shall be governed by the laws of the State of Delaware."},
]


@pytest.mark.slow
def test_short_qlora_sft_lowers_the_validation_loss_and_keeps_the_base(smollm2_base: Path,
                                                                        smollm2_qlora_run: Path) -> None:
    from safetensors.torch import load_file

    manifest = json.loads((smollm2_qlora_run / "manifest.json").read_text())
    results = manifest["results"]
    assert results["mode"] == "qlora" and results["global_step"] == 4
    assert results["eval_loss"] < results["initial_eval_loss"] - 0.05, results
    losses = [r["loss"] for r in read_metrics(smollm2_qlora_run) if "loss" in r]
    assert len(losses) >= 2 and losses[-1] < losses[0]
    # the adapter learned something: LoRA B matrices start at zero
    adapter = load_file(str(smollm2_qlora_run / "adapter" / "adapter_model.safetensors"))
    assert any(float(t.abs().max()) > 0 for name, t in adapter.items() if "lora_B" in name)
    # the base folder is untouched (the hash recorded at import time still holds)
    base_manifest = json.loads((smollm2_base / "manifest.json").read_text())
    assert manifest["inputs"]["base_model"]["sha256"] == hash_path(smollm2_base / "model")
    assert base_manifest["status"] == "complete"
    # the saved template is the model's own ChatML template
    template = (smollm2_qlora_run / "adapter" / "chat_template.jinja").read_text()
    assert template == (smollm2_base / "model" / "chat_template.jinja").read_text()


@pytest.mark.slow
def test_vllm_serves_the_base_and_the_qlora_adapter_like_transformers(smollm2_base: Path, smollm2_qlora_run: Path,
                                                                      engine, tmp_path: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lexalign.config import load_config
    from lexalign.serve.launch import ServeConfig, start_server

    config = load_config(ServeConfig, REPO / "configs" / "serve.yaml", [
        f"run={smollm2_qlora_run}", "port=0", f"work_dir={tmp_path}", "max_model_len=1024", "max_num_seqs=4",
        "cpu_kvcache_gib=1", "shutdown_timeout_s=10"])
    base_dir = smollm2_base / "model"
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_qlora_run / "adapter"))
    inputs = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    expected = {}
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32).eval()
        out = base.generate(**inputs, max_new_tokens=12, do_sample=False)
        expected["smollm2-base"] = out[0, inputs["input_ids"].shape[1]:].tolist()
        tuned = PeftModel.from_pretrained(base, str(smollm2_qlora_run / "adapter")).eval()
        out = tuned.generate(**inputs, max_new_tokens=12, do_sample=False)
        expected["smollm2-sft"] = out[0, inputs["input_ids"].shape[1]:].tolist()
        del base, tuned
    with start_server(config, ephemeral_key=True, engine=engine) as handle:
        client = handle.client()
        served = {m.id for m in client.models.list().data}
        assert {"smollm2-base", "smollm2-sft"} <= served
        for name, want in expected.items():
            response = client.chat.completions.create(model=name, messages=MESSAGES, max_tokens=12, temperature=0,
                                                      extra_body={"return_token_ids": True})
            assert response.prompt_token_ids == inputs["input_ids"][0].tolist()
            assert list(response.choices[0].token_ids) == want, (name, response.choices[0].message.content)
