"""What ``lexalign serve --run PATH`` serves: a run directory (adapter or full model), a merged export, a bare PEFT
adapter or a Hugging Face model folder, resolved to the folder vLLM loads, the adapter on top of it, the chat
template saved with the run and the API names (``resolve_target``); and whether several targets can share one
engine (``check_shared_engine``: adapters on one base) or one network with weights swapped in place
(``check_weight_swap``: merged exports of one base).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lexalign.errors import LexalignError

# vLLM accepts only these --max-lora-rank values; an adapter's rank is rounded up to the next one.
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


class ServeError(LexalignError):
    """The server cannot be started or stopped as asked; the message says why and what to do."""


@dataclass(frozen=True)
class ServeTarget:
    """A resolved ``--run``: the model folder vLLM loads, the adapter (if any) and the names to serve."""

    source: Path                  # what the user passed
    base_model: Path              # folder given to --model
    adapter: Path | None          # LoRA adapter served on top of base_model
    lora_rank: int | None         # the adapter's largest rank
    chat_template: Path | None    # the template saved with the run
    model_name: str               # the tuned model's API name (the adapter's, or the only model's)
    base_name: str | None         # the base model's API name when an adapter is served

    @property
    def names(self) -> list[str]:
        return [n for n in (self.base_name, self.model_name) if n]


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ServeError(f"{path}: cannot read it as JSON ({err})") from None


def _output_path(run_dir: Path, value: str) -> Path:
    """A manifest output (relative to the run dir, or a path as written) that exists."""
    for candidate in (run_dir / value, Path(value), run_dir / Path(value).name):
        if candidate.exists():
            return candidate
    return run_dir / value


def adapter_rank(adapter: Path) -> int:
    """The largest LoRA rank in a PEFT adapter (``r`` and any per-module ``rank_pattern``)."""
    config = read_json(adapter / "adapter_config.json")
    ranks = [int(config.get("r") or 0)] + [int(v) for v in (config.get("rank_pattern") or {}).values()]
    return max(ranks)


def vllm_lora_rank(rank: int) -> int:
    for allowed in LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise ServeError(f"the adapter's LoRA rank {rank} is above the largest rank vLLM serves ({LORA_RANKS[-1]}); "
                     "merge it into the base with `lexalign export RUN` and serve RUN/merged")


def _template_of(folder: Path) -> Path | None:
    path = folder / "chat_template.jinja"
    return path if path.is_file() else None


def _check_model_folder(path: Path, what: str) -> Path:
    if not (path / "config.json").is_file():
        raise ServeError(f"{what} {path}: not a Hugging Face model folder (no config.json); it may have been moved "
                         "or deleted since the run")
    return path


def resolve_target(path: str | Path, model_name: str | None = None, base_name: str | None = None) -> ServeTarget:
    """What ``--run PATH`` means: see the module docstring. Errors name the path and what was expected."""
    from lexalign.runs import read_manifest, require_complete

    source = Path(path)
    if not source.exists():
        raise ServeError(f"--run {source}: does not exist; pass a run directory (e.g. runs/tiny/sft), a merged "
                         "export (RUN/merged) or a Hugging Face model folder")
    adapter: Path | None = None
    model: Path
    if (source / "manifest.json").is_file():
        require_complete(source, "serve")
        manifest = read_manifest(source)
        outputs = manifest.get("outputs") or {}
        run_name, stage = source.parent.name, manifest.get("stage") or source.name
        default_name = f"{run_name}-{stage}"
        if outputs.get("adapter"):
            adapter = _output_path(source, str(outputs["adapter"]))
            if not (adapter / "adapter_config.json").is_file():
                raise ServeError(f"{source}: the manifest names the adapter {adapter}, which has no adapter_config.json")
            base = outputs.get("base_model") or read_json(adapter / "adapter_config.json").get("base_model_name_or_path")
            if not base:
                raise ServeError(f"{source}: the manifest and the adapter config name no base model")
            model = _check_model_folder(Path(base), f"{source}: the adapter's base model")
            default_base = f"{run_name}-base"
        elif outputs.get("model"):
            model = _check_model_folder(_output_path(source, str(outputs["model"])), f"{source}: the run's model")
            default_base = None
        else:
            raise ServeError(f"{source}: the run wrote neither an adapter nor a model (manifest outputs: "
                             f"{sorted(outputs)}); serve a run of sft, dpo or ppo, or a model folder")
    elif (source / "adapter_config.json").is_file():
        adapter = source
        base = read_json(source / "adapter_config.json").get("base_model_name_or_path")
        if not base:
            raise ServeError(f"{source}/adapter_config.json names no base model (base_model_name_or_path)")
        model = _check_model_folder(Path(base), f"{source}: the adapter's base model")
        run_dir = source.parent if (source.parent / "manifest.json").is_file() else None
        default_name = f"{run_dir.parent.name}-{run_dir.name}" if run_dir else source.name
        default_base = f"{run_dir.parent.name}-base" if run_dir else f"{source.name}-base"
    elif (source / "config.json").is_file():
        model = source
        export = source / "lexalign_export.json"
        if export.is_file():  # `lexalign export RUN`: named after the run it came from
            origin = Path(str(read_json(export).get("source_run") or source))
            default_name = f"{origin.parent.name}-{origin.name}-merged"
        elif (source.parent / "manifest.json").is_file():  # RUN/model of a full fine-tuning run
            default_name = f"{source.parent.parent.name}-{source.parent.name}"
        else:
            default_name = source.name
        default_base = None
    else:
        raise ServeError(f"--run {source}: neither a run directory (manifest.json), an adapter (adapter_config.json) "
                         "nor a model folder (config.json)")
    rank = adapter_rank(adapter) if adapter is not None else None
    template = (_template_of(adapter) if adapter is not None else None) or _template_of(model)
    name = model_name or _clean_name(default_name)
    base_api_name = (base_name or _clean_name(default_base or "base")) if adapter is not None else None
    if base_api_name == name:
        base_api_name = f"{name}-base"
    return ServeTarget(source, model, adapter, rank, template, name, base_api_name)


def _clean_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._:/-]+", "-", name).strip("-.") or "model"
    return cleaned[:128]


def check_shared_engine(targets: list[ServeTarget]) -> None:
    """Several targets go on one engine only with one base model and one chat template (vLLM loads one model and
    applies one template to every adapter); ServeError naming both otherwise."""
    first = targets[0]
    for other in targets[1:]:
        if other.base_model.resolve() != first.base_model.resolve():
            raise ServeError(f"{first.source} and {other.source} are on different base models ({first.base_model} and "
                             f"{other.base_model}); one server serves one base: give them in separate calls")
        texts = [t.chat_template.read_text(encoding="utf-8").strip() if t.chat_template else None
                 for t in (first, other)]
        if texts[0] != texts[1]:
            raise ServeError(f"{first.source} and {other.source} were saved with different chat templates; one server "
                             "applies one template to every adapter: give them in separate calls")
    names = [t.model_name for t in targets if t.adapter is not None]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ServeError(f"several adapters would be served as {', '.join(repeated)}; give each run once")


# What vLLM builds its network from: two model folders that agree on these serve one after the other on one engine
# (weights reloaded in place, ``check_weight_swap``).
NETWORK_KEYS = ("architectures", "model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings",
                "tie_word_embeddings", "rope_theta", "rope_scaling", "rms_norm_eps", "hidden_act")
# What decides how text becomes tokens and back (a re-saved tokenizer_config.json differs in bookkeeping fields)
TOKENIZER_KEYS = ("bos_token", "eos_token", "pad_token", "unk_token", "add_bos_token", "add_eos_token",
                  "added_tokens_decoder", "clean_up_tokenization_spaces")


def check_weight_swap(targets: list[ServeTarget]) -> None:
    """Several full models (merged exports, the base) go on one engine, one after the other, only when vLLM would
    build the same network, tokenizer and chat template for each (their weights are then reloaded in place);
    ServeError naming both models and what differs otherwise."""
    def network(target: ServeTarget) -> dict[str, Any]:
        config = read_json(target.base_model / "config.json")
        return {key: config.get(key) for key in NETWORK_KEYS}

    def text(path: Path | None) -> str | None:
        return path.read_text(encoding="utf-8").strip() if path is not None and path.is_file() else None

    def tokenizer_setting(target: ServeTarget, key: str) -> Any:
        path = target.base_model / "tokenizer_config.json"
        return read_json(path).get(key) if path.is_file() else None

    first = targets[0]
    for other in targets[1:]:
        if other.adapter is not None or first.adapter is not None:
            raise ServeError(f"{first.source} and {other.source}: an adapter and a model on another base; one server "
                             "serves one base: give them in separate calls")
        differs = [key for key in NETWORK_KEYS if network(first)[key] != network(other)[key]]
        if text(first.base_model / "tokenizer.json") != text(other.base_model / "tokenizer.json"):
            differs.append("tokenizer.json")
        differs += [f"tokenizer_config.json {key}" for key in TOKENIZER_KEYS
                    if tokenizer_setting(first, key) != tokenizer_setting(other, key)]
        if text(first.chat_template) != text(other.chat_template):
            differs.append("chat template")
        if differs:
            raise ServeError(f"{first.source} and {other.source} are different models ({first.base_model} and "
                             f"{other.base_model} differ in {', '.join(differs)}); one server serves one network: "
                             "give them in separate calls")
