"""Loading a base model with its tokenizer, on the device at hand, with quantization and LoRA.

One code path for the tiny embedded model on CPU and a real checkpoint on a GPU: the device and the
compute dtype are chosen at run time and logged. Heavy imports stay inside functions so that configs
(which import the section dataclasses below) validate without loading torch.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lexalign.config import Problem, problem_if
from lexalign.errors import LexalignError

if TYPE_CHECKING:
    import torch
    from peft import LoraConfig
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

class ModelLoadError(LexalignError):
    """The model folder is missing or not a Hugging Face model folder."""


@dataclass
class LoraSection:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    # "all-linear" is PEFT's shortcut for every linear layer except the output head.
    target_modules: list[str] | str = "all-linear"
    modules_to_save: list[str] = field(default_factory=list)
    # Adapt only these decoder layers (PEFT's layers_to_transform), e.g. the upper ones: the backward pass
    # then stops at the lowest adapted layer, which makes a step much cheaper on a CPU. Empty = every layer.
    layers_to_transform: list[int] = field(default_factory=list)

    def problems(self) -> list[Problem]:
        return (
            problem_if(any(not isinstance(i, int) or i < 0 for i in self.layers_to_transform),
                       "layers_to_transform", self.layers_to_transform, "a list of layer indices (0 = the lowest)")
            + problem_if(bool(self.layers_to_transform) and isinstance(self.target_modules, str),
                         "target_modules", self.target_modules, "with layers_to_transform, list the modules "
                         "(PEFT refuses a shortcut), e.g. [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]")
            +
            problem_if(self.r <= 0, "r", self.r, "LoRA rank must be a positive integer (e.g. 16)")
            + problem_if(self.alpha <= 0, "alpha", self.alpha, "LoRA alpha must be positive (commonly 2 x r)")
            + problem_if(not 0 <= self.dropout < 1, "dropout", self.dropout, "dropout must be in [0, 1)")
            + problem_if(not self.target_modules, "target_modules", self.target_modules,
                         "name the modules to adapt, or 'all-linear'")
        )


@dataclass
class QuantizationSection:
    """bitsandbytes quantization of the frozen base weights (QLoRA = LoRA on a 4-bit NF4 base)."""

    bits: int | None = 4
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    # auto: bf16 on a GPU that has it, fp16 on other GPUs, fp32 on CPU. native: the same, but bf16 also on a CPU
    # with bf16 instructions (AVX-512 BF16 or AMX: 1.3-2.5x faster training there, bench/RESULTS.md); a CPU
    # without them emulates bf16 (a training step ~30x slower than fp32), so an explicit bfloat16 there gets a
    # warning.
    compute_dtype: Literal["auto", "native", "float32", "bfloat16", "float16"] = "auto"

    def problems(self) -> list[Problem]:
        return problem_if(self.bits not in (None, 4, 8), "bits", self.bits, "use 4 (QLoRA, NF4), 8, or null (no quantization)")


@dataclass
class ModelSection:
    path: str = "runs/tiny/base/model"
    # lora: train low-rank adapters on a frozen base (QLoRA when quantization.bits is 4); full: train every weight.
    tuning: Literal["lora", "full"] = "lora"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Intra-op threads on CPU. 0 = torch's default; tiny models train faster with few threads on 2 cores.
    threads: int = 0
    lora: LoraSection = field(default_factory=LoraSection)
    quantization: QuantizationSection = field(default_factory=QuantizationSection)

    @property
    def mode(self) -> str:
        """qlora, lora or full: how the run is described in logs and model cards."""
        if self.tuning == "full":
            return "full"
        return "qlora" if self.quantization.bits else "lora"

    def problems(self) -> list[Problem]:
        found = problem_if(self.threads < 0, "threads", self.threads, "use 0 (torch default) or a positive count")
        if not self.path:
            found.append(Problem("path", "set the base model folder (a Hugging Face causal-LM folder)", self.path))
        if self.tuning == "full" and self.quantization.bits:
            found.append(Problem("quantization.bits", "full fine-tuning cannot update quantized weights; "
                                 "set quantization.bits: null for full fine-tuning, or tuning: lora for QLoRA",
                                 self.quantization.bits))
        return found


# --------------------------------------------------------------------------- device and precision


def choose_device(requested: str = "auto") -> "torch.device":
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise LexalignError("model.device = 'cuda' but no CUDA GPU is visible; use device: auto or cpu")
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    local_rank = os.environ.get("LOCAL_RANK")
    if requested == "cuda" and local_rank is not None and local_rank.isdigit():
        # One GPU per process under accelerate/torchrun (DDP): a 4-bit model cannot be moved after loading,
        # so it must be loaded onto this process's GPU, not cuda:0.
        torch.cuda.set_device(int(local_rank))
        return torch.device("cuda", int(local_rank))
    return torch.device(requested)


def choose_compute_dtype(device: "torch.device", requested: str = "auto") -> "torch.dtype":
    import torch

    if requested == "native" and device.type != "cpu":
        requested = "auto"  # a GPU's own choice is already the native one
    if requested == "native":
        dtype = torch.bfloat16 if cpu_has_native_bf16() else torch.float32
        if dtype == torch.float32:
            logger.info("compute_dtype native: this CPU has no bf16 instructions (AVX-512 BF16 or AMX); fp32")
    elif requested != "auto":
        dtype = getattr(torch, requested)
        if dtype == torch.bfloat16 and device.type == "cpu" and not cpu_has_native_bf16():
            logger.warning("model.quantization.compute_dtype=bfloat16 on a CPU without bf16 instructions: it is "
                           "emulated there and far slower than fp32; set model.quantization.compute_dtype=native "
                           "(bf16 only where the CPU has it) or float32")
    elif device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = torch.float32
    logger.info("compute dtype: %s on %s", str(dtype).removeprefix("torch."), device)
    return dtype


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 matrix products natively on this CPU (AVX-512 BF16 or AMX)."""
    import torch

    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def configure_threads(threads: int) -> None:
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    logger.info("torch intra-op threads: %d (of %d cores)", torch.get_num_threads(), os.cpu_count() or 0)


# --------------------------------------------------------------------------- loading


def check_model_dir(path: str | Path, what: str = "model.path") -> Path:
    path = Path(path)
    if not (path / "config.json").is_file():
        hint = " (build the tiny default with `lexalign base build`)" if "runs/" in str(path) else ""
        raise ModelLoadError(f"{what} = {str(path)!r}: not a Hugging Face model folder (no config.json){hint}")
    return path


def load_tokenizer(path: str | Path) -> "PreTrainedTokenizerBase":
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token is None:
        # Real checkpoints often ship without a pad token; padding with eos is masked out by attention.
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        raise ModelLoadError(f"{path}: the tokenizer has no chat template; lexalign trains and serves chat models")
    return tokenizer


def bnb_config(section: QuantizationSection, compute_dtype: "torch.dtype") -> Any:
    from transformers import BitsAndBytesConfig

    if section.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=section.quant_type,
        bnb_4bit_use_double_quant=section.double_quant,
        bnb_4bit_compute_dtype=compute_dtype,
        bnb_4bit_quant_storage=compute_dtype,
    )


def load_model(
    section: ModelSection,
    model_class: Any = None,
    **kwargs: Any,
) -> tuple["PreTrainedModel", "torch.device", "torch.dtype"]:
    """Load ``section.path`` for its tuning mode; 4-bit NF4 weights for QLoRA, full precision otherwise.

    ``model_class`` defaults to AutoModelForCausalLM (reward models pass AutoModelForSequenceClassification).
    """
    from transformers import AutoModelForCausalLM

    path = check_model_dir(section.path)
    device = choose_device(section.device)
    dtype = choose_compute_dtype(device, section.quantization.compute_dtype)
    configure_threads(section.threads)
    model_class = model_class or AutoModelForCausalLM
    load_kwargs: dict[str, Any] = {"dtype": dtype, **kwargs}
    if section.quantization.bits:
        if device.type == "cpu" and section.quantization.bits == 4:
            check_cpu_4bit_shapes(path)
        load_kwargs["quantization_config"] = bnb_config(section.quantization, dtype)
        load_kwargs["device_map"] = {"": device.index or 0} if device.type == "cuda" else {"": "cpu"}
    model = model_class.from_pretrained(str(path), **load_kwargs)
    if not section.quantization.bits:
        model.to(device)
    elif device.type == "cpu":
        release_weight_file(model)
    logger.info("loaded %s (%s, %.1fM parameters) for %s", path, type(model).__name__,
                sum(p.numel() for p in model.parameters()) / 1e6, section.mode)
    return model, device, dtype


def release_weight_file(model: Any) -> None:
    """Copy the tensors a quantized CPU model keeps in full precision (embeddings, norms, head) out of the
    memory-mapped checkpoint, so the mapping closes. Otherwise those few tensors keep the whole
    full-precision file mapped, and every page that quantization read stays resident: about the fp32 model's
    size of RSS (0.4 GB for 100M parameters, 28 GB for 7B) for a model whose 4-bit weights are a fraction of it."""
    import gc

    import torch

    quantized = ("Params4bit", "Int8Params")
    with torch.no_grad():
        for module in model.modules():
            for name, param in list(module.named_parameters(recurse=False)):
                if type(param).__name__ not in quantized:
                    param.data = param.data.clone()
            for name, buffer in list(module.named_buffers(recurse=False)):
                if buffer is not None:
                    module._buffers[name] = buffer.clone()
    gc.collect()


CPU_4BIT_BLOCK = 32


def check_cpu_4bit_shapes(path: Path) -> None:
    """bitsandbytes' CPU 4-bit kernel packs weights in blocks of 32 output rows; other sizes fail deep inside
    it at the first forward pass, so say it before loading."""
    config = json.loads((path / "config.json").read_text())
    sizes = {key: config[key] for key in ("hidden_size", "intermediate_size") if isinstance(config.get(key), int)}
    bad = {key: value for key, value in sizes.items() if value % CPU_4BIT_BLOCK}
    if bad:
        listed = ", ".join(f"{key} = {value}" for key, value in bad.items())
        raise ModelLoadError(f"{path}: {listed}: 4-bit (QLoRA) on CPU needs layer sizes divisible by "
                             f"{CPU_4BIT_BLOCK} (bitsandbytes packs CPU weights in blocks of {CPU_4BIT_BLOCK}); "
                             "use model.quantization.bits: null (LoRA) or a GPU")


def lora_config(section: LoraSection, task_type: str = "CAUSAL_LM") -> "LoraConfig":
    from peft import LoraConfig

    return LoraConfig(
        r=section.r,
        lora_alpha=section.alpha,
        lora_dropout=section.dropout,
        target_modules=section.target_modules,
        modules_to_save=section.modules_to_save or None,
        layers_to_transform=section.layers_to_transform or None,
        task_type=task_type,
        bias="none",
    )


# --------------------------------------------------------------------------- models from run directories


@dataclass
class RunModelSection(ModelSection):
    """``model:`` of a stage that starts from a trained run: ``path: ""`` = that run's base model (manifest)."""

    path: str = ""

    def problems(self) -> list[Problem]:
        return [p for p in super().problems() if p.key != "path"]


@dataclass
class TrainedPolicy:
    """What a completed sft/dpo/ppo run trained: a LoRA adapter on ``base``, or a full model (``base`` itself)."""

    run: Path
    base: Path
    adapter: Path | None

    @property
    def tokenizer_dir(self) -> Path:
        return self.adapter or self.base


def trained_policy(run_dir: str | Path, what: str, base_override: str = "") -> TrainedPolicy:
    """Resolve a completed run's adapter/model from its manifest; clear errors, no model loaded."""
    from lexalign.runs import read_manifest, require_complete

    run = require_complete(run_dir, what)
    manifest = read_manifest(run)
    if manifest.get("stage") == "reward":
        raise ModelLoadError(f"{what} = {str(run)!r}: a reward run (a scorer, not a policy); give the run directory "
                             "of an sft, dpo or ppo stage")
    outputs = manifest.get("outputs", {})
    if outputs.get("adapter"):
        adapter = run / outputs["adapter"]
        if not (adapter / "adapter_config.json").is_file():
            raise ModelLoadError(f"{what} = {str(run)!r}: {adapter} has no adapter_config.json; run the stage again")
        base = Path(base_override or outputs.get("base_model") or "")
        return TrainedPolicy(run, check_model_dir(base, f"{what}: base model of {adapter}"), adapter)
    if outputs.get("model"):
        return TrainedPolicy(run, check_model_dir(run / outputs["model"], what), None)
    raise ModelLoadError(f"{what} = {str(run)!r}: the run wrote neither an adapter nor a model; "
                         "give the run directory of an sft, dpo or ppo stage")


def tokenizer_fingerprint(folder: str | Path) -> dict[str, str]:
    """Hashes of what must agree between a policy and its reward model: vocabulary, special tokens, chat template."""
    import hashlib
    import json

    tokenizer = load_tokenizer(folder)

    def digest(value: Any) -> str:
        return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]

    return {"vocabulary": digest(sorted(tokenizer.get_vocab().items())),
            "special tokens": digest([tokenizer.eos_token, tokenizer.pad_token]),
            "chat template": digest(tokenizer.chat_template)}


# --------------------------------------------------------------------------- reward models


def reward_input_ids(tokenizer: Any, prompt: Any, response: Any, max_length: int | None = None) -> list[int]:
    """The one format a lexalign reward model scores: the chat-formatted prompt with the generation header,
    then the response's tokens and the end-of-turn (eos) token, nothing after it. That is exactly what a
    policy generates (PPO scores these tokens), so training and online scoring see the same sequences.

    ``prompt``: a string (one user turn) or chat messages; ``response``: a string or assistant messages.
    Too long: the response is cut (its eos kept); a prompt longer than the budget keeps its end.
    """
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
    text = response if isinstance(response, str) else "\n\n".join(m["content"] for m in response)
    prompt_ids = list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                    return_dict=False))
    response_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if max_length:
        prompt_ids = prompt_ids[-max(max_length // 2, max_length - len(response_ids) - 1):]
        response_ids = response_ids[: max_length - len(prompt_ids) - 1]
    return prompt_ids + response_ids + [tokenizer.eos_token_id]


def load_reward_model(folder: str | Path, device: str = "auto", threads: int = 0,
                      trainable: bool = False) -> tuple[Any, Any]:
    """A reward model folder (``<reward run>/model``: AutoModelForSequenceClassification, one label) + tokenizer.

    A frozen scorer runs in the dtype the model was trained in (``compute_dtype`` of its ``lexalign_reward.json``)
    where the device computes it natively: the bf16-trained SmolLM2 reward model scores 2.5x faster in bf16 on a CPU
    with bf16 instructions and decides 197 of 199 held-out pairs as in fp32 (``bench/reward_dtype.py``,
    bench/RESULTS.md). ``trainable`` (PPO's value model, trained further) keeps full-precision weights on a CPU."""
    import torch
    from transformers import AutoModelForSequenceClassification

    folder = check_model_dir(folder, "reward model")
    configure_threads(threads)
    target = choose_device(device)
    tokenizer = load_tokenizer(folder)
    dtype = torch.float32 if target.type == "cpu" else choose_compute_dtype(target)
    trained_in = reward_model_info(folder).get("compute_dtype")
    if not trainable and target.type == "cpu" and trained_in == "bfloat16" and cpu_has_native_bf16():
        dtype = torch.bfloat16
    logger.info("reward model %s in %s on %s", folder, str(dtype).removeprefix("torch."), target)
    model = AutoModelForSequenceClassification.from_pretrained(str(folder), num_labels=1, dtype=dtype)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(target).eval(), tokenizer


def reward_model_info(folder: str | Path) -> dict[str, Any]:
    """What the reward stage records beside a reward model (``lexalign_reward.json``: its input format,
    ``max_length``, the ``compute_dtype`` it trained in); {} for a folder without it (an older or foreign model)."""
    info = Path(folder) / "lexalign_reward.json"
    if not info.is_file():
        return {}
    try:
        recorded = json.loads(info.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise LexalignError(f"{info}:{err.lineno}: not valid JSON ({err.msg}); restore it from the reward run, or "
                            "delete it to load the model without the recorded format") from None
    if not isinstance(recorded, dict):
        raise LexalignError(f"{info}:1: expected a JSON object (max_length, compute_dtype, ...)")
    return recorded


def reward_scores(model: Any, tokenizer: Any, prompts: list[Any], responses: list[Any],
                  max_length: int | None = None, batch_size: int = 8) -> list[float]:
    """Score (prompt, response) pairs in ``reward_input_ids`` format; right padding, batched, no gradients.
    Batches are cut from the inputs in length order, so a batch is padded to little more than its own length
    (a fifth fewer tokens on the held-out pairs of the default pipeline); the scores come back in input order."""
    import torch

    device = next(model.parameters()).device
    ids = [reward_input_ids(tokenizer, p, r, max_length) for p, r in zip(prompts, responses, strict=True)]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    scores = [0.0] * len(ids)
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            batch = [ids[i] for i in rows]
            width = max(len(x) for x in batch)
            input_ids = torch.tensor([x + [tokenizer.pad_token_id] * (width - len(x)) for x in batch], device=device)
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in batch], device=device)
            for i, score in zip(rows, model(input_ids=input_ids, attention_mask=mask).logits[:, 0].float().tolist()):
                scores[i] = score
    return scores
