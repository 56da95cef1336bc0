"""The tiny embedded base model: a byte-level BPE tokenizer and a small Llama pretrained on contract text.

No model hub is reachable here, so the project builds its own base model. The code path is the one a real
checkpoint takes later (a ``LlamaForCausalLM`` folder with its tokenizer and ChatML chat template, loadable by
``AutoModelForCausalLM`` / ``AutoTokenizer``), only smaller.

Reads top to bottom: config -> tokenizer -> data -> model -> pretrain -> save -> card.

Special tokens (ids are fixed by their order and the same in every model built here)::

    0  <|endoftext|>  pad token and document separator (not added automatically; no BOS token is used,
                      as in Qwen: the tokenizer's ``bos_token`` is None, the model config's
                      ``bos_token_id`` is 0 only so that generation from an empty prompt has a start)
    1  <|im_start|>   opens a ChatML turn
    2  <|im_end|>     closes a turn = EOS: generation stops at the end of an assistant turn

The chat template is ChatML (``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message, and
``<|im_start|>assistant\\n`` for ``add_generation_prompt``). The assistant content *and its closing
<|im_end|>* sit inside ``{% generation %}...{% endgeneration %}`` so that TRL's ``assistant_only_loss`` (and
``return_assistant_tokens_mask``) trains the end-of-turn token but not the prompt or the turn header.

Entry points:
    build_base_model(config_path, overrides) -> run dir   (``lexalign base build``)
    make_tiny_model(out_dir, corpus_text, ...) -> model dir   (tests and demos: seconds)
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lexalign.config import Problem, load_config, problem_if

if TYPE_CHECKING:  # heavy imports stay inside functions so that importing this module is cheap
    import torch
    from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

STAGE = "base"

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
EOS_TOKEN = IM_END
SPECIAL_TOKENS = (PAD_TOKEN, IM_START, IM_END)  # ids 0, 1, 2 in this order

# ChatML; the assistant's content and its <|im_end|> are the trained ("generation") part.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}{{- message['content'] + '<|im_end|>' }}{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Head sizes that vLLM's CPU attention backend supports (GPU backends accept these too).
VLLM_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 256)
MIN_VOCAB = 300  # 256 byte symbols + 3 special tokens + a few merges
ATTRIBUTION = (
    "Pretraining text derived from CUAD (The Atticus Project; Hendrycks et al., NeurIPS 2021) and "
    "CLAUDETTE (Galassi, Lagioia, Jablonowska, Lippi, AI and Law 2024), both CC BY 4.0."
)


# =========================================================================== config


@dataclass
class TokenizerConfig:
    vocab_size: int = 4096  # including the 256 byte symbols and the 3 special tokens
    min_frequency: int = 2  # a pair must occur this often to become a merge

    def problems(self) -> list[Problem]:
        return (
            problem_if(self.vocab_size < MIN_VOCAB, "vocab_size", self.vocab_size,
                       f"must be at least {MIN_VOCAB} (256 byte symbols + 3 special tokens + merges)")
            + problem_if(self.min_frequency < 1, "min_frequency", self.min_frequency, "must be at least 1")
        )


@dataclass
class ModelConfig:
    """A ``transformers.LlamaConfig`` subset; head_dim = hidden_size / num_attention_heads."""

    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4  # head_dim 64: a size vLLM's CPU attention supports
    num_key_value_heads: int = 4  # < num_attention_heads gives grouped-query attention
    intermediate_size: int = 704
    max_position_embeddings: int = 1024
    tie_word_embeddings: bool = True
    rms_norm_eps: float = 1e-5
    initializer_range: float = 0.02

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads if self.num_attention_heads > 0 else 0

    def problems(self) -> list[Problem]:
        found: list[Problem] = []
        for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                    "intermediate_size", "max_position_embeddings"):
            value = getattr(self, key)
            found += problem_if(value < 1, key, value, "must be a positive integer")
        if found:
            return found
        if self.hidden_size % self.num_attention_heads:
            found.append(Problem("hidden_size", f"must be divisible by num_attention_heads "
                                 f"({self.num_attention_heads}); e.g. {self.num_attention_heads * 64}",
                                 self.hidden_size))
        elif self.head_dim not in VLLM_HEAD_SIZES:
            found.append(Problem("num_attention_heads", f"gives head_dim = hidden_size / num_attention_heads = "
                                 f"{self.head_dim}, which vLLM cannot serve; choose heads so that head_dim is one "
                                 f"of {', '.join(map(str, VLLM_HEAD_SIZES))} (e.g. "
                                 f"{max(1, self.hidden_size // 64)} heads for head_dim 64)",
                                 self.num_attention_heads))
        found += problem_if(self.num_attention_heads % self.num_key_value_heads != 0, "num_key_value_heads",
                            self.num_key_value_heads,
                            f"must divide num_attention_heads ({self.num_attention_heads})")
        found += problem_if(not 0 < self.rms_norm_eps < 1, "rms_norm_eps", self.rms_norm_eps, "must be in (0, 1)")
        found += problem_if(self.initializer_range <= 0, "initializer_range", self.initializer_range,
                            "must be positive")
        return found


@dataclass
class PretrainConfig:
    max_steps: int = 220  # 0 = no pretraining (random weights, still a valid model)
    seq_len: int = 512  # tokens per packed training block
    batch_size: int = 4
    learning_rate: float = 3e-3
    weight_decay: float = 0.1
    warmup_steps: int = 10  # linear warmup, then cosine decay to 10% of learning_rate
    max_grad_norm: float = 1.0
    threads: int = 0  # torch intra-op threads; 0 = one per CPU core
    device: str = "auto"  # auto (cuda when available, else cpu) | cpu | cuda | cuda:N
    eval_fraction: float = 0.02  # share of the packed blocks held out for the eval loss
    eval_max_blocks: int = 32  # cap on held-out blocks evaluated (keeps eval a few seconds)
    eval_every: int = 0  # also evaluate every N steps (0 = only before and after training)
    log_every: int = 10  # write the training loss to metrics.jsonl every N steps

    def problems(self) -> list[Problem]:
        found: list[Problem] = []
        found += problem_if(self.max_steps < 0, "max_steps", self.max_steps, "must be >= 0 (0 = no pretraining)")
        found += problem_if(self.seq_len < 8, "seq_len", self.seq_len, "must be at least 8")
        found += problem_if(self.batch_size < 1, "batch_size", self.batch_size, "must be at least 1")
        found += problem_if(not 0 < self.learning_rate < 1, "learning_rate", self.learning_rate,
                            "must be in (0, 1); e.g. 3e-3 for a tiny model")
        found += problem_if(self.weight_decay < 0, "weight_decay", self.weight_decay, "must be >= 0")
        found += problem_if(self.warmup_steps < 0, "warmup_steps", self.warmup_steps, "must be >= 0")
        found += problem_if(self.max_grad_norm <= 0, "max_grad_norm", self.max_grad_norm, "must be positive")
        found += problem_if(self.threads < 0, "threads", self.threads, "must be >= 0 (0 = one per CPU core)")
        found += problem_if(not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")),
                            "device", self.device, "expected auto, cpu, cuda or cuda:N")
        found += problem_if(not 0 < self.eval_fraction < 0.5, "eval_fraction", self.eval_fraction,
                            "must be in (0, 0.5); e.g. 0.02")
        found += problem_if(self.eval_max_blocks < 1, "eval_max_blocks", self.eval_max_blocks, "must be at least 1")
        found += problem_if(self.eval_every < 0, "eval_every", self.eval_every, "must be >= 0 (0 = start and end)")
        found += problem_if(self.log_every < 1, "log_every", self.log_every, "must be at least 1")
        return found


@dataclass
class BaseModelConfig:
    name: str = "tiny"  # run name: the run directory is <output_dir>/<name>/base
    output_dir: Path = Path("runs")
    corpus: str = "shipped"  # a UTF-8 text file; "shipped" (or "") = data/shipped/pretrain_corpus.txt
    seed: int = 0
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretraining: PretrainConfig = field(default_factory=PretrainConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name / STAGE

    @property
    def corpus_path(self) -> Path:
        return resolve_corpus(self.corpus)

    def problems(self) -> list[Problem]:
        found: list[Problem] = []
        found += problem_if(not self.name or "/" in self.name or self.name in (".", ".."), "name", self.name,
                            "must be a plain folder name (no '/'), e.g. tiny")
        corpus = self.corpus_path
        if not corpus.is_file():
            hint = ("the shipped corpus is missing from the package; reinstall lexalign or pass corpus=<file>"
                    if self.corpus in ("", "shipped") else "pass an existing UTF-8 text file")
            found.append(Problem("corpus", f"{corpus} not found; {hint}", self.corpus))
        found += problem_if(self.pretraining.seq_len > self.model.max_position_embeddings, "pretraining.seq_len",
                            self.pretraining.seq_len,
                            f"must be <= model.max_position_embeddings ({self.model.max_position_embeddings})")
        return found


def resolve_corpus(value: str | Path) -> Path:
    """``"shipped"``/``""`` -> the corpus shipped inside the ``lexalign.data`` package; else the path itself."""
    if str(value) in ("", "shipped"):
        import lexalign.data

        return Path(lexalign.data.__file__).parent / "shipped" / "pretrain_corpus.txt"
    return Path(value).expanduser()


def load_base_config(config_path: str | Path | None = None, overrides: list[str] | None = None) -> BaseModelConfig:
    """Defaults < YAML < overrides, every problem reported at once (``ConfigError``)."""
    return load_config(BaseModelConfig, config_path, overrides)


# =========================================================================== seeding and threads


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds CUDA


def set_threads(threads: int) -> int:
    """Set torch's intra-op threads (0 = one per core) and say so in the log; returns the number used."""
    import torch

    cores = os.cpu_count() or 1
    chosen = threads or cores
    torch.set_num_threads(chosen)
    reason = "pretraining.threads=0: one per CPU core" if not threads else "pretraining.threads"
    logger.info("torch intra-op threads: %d of %d cores (%s; use threads=1 when other jobs share the CPU)",
                chosen, cores, reason)
    return chosen


def choose_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


# =========================================================================== tokenizer


def train_tokenizer(corpus_text: str, vocab_size: int = 4096, min_frequency: int = 2,
                    model_max_length: int = 1024) -> "PreTrainedTokenizerBase":
    """Train a byte-level BPE on ``corpus_text``; return a transformers fast tokenizer with the ChatML template.

    Byte-level BPE without normalization, so ``decode(encode(text)) == text`` for any text. If the corpus is
    too small for ``vocab_size`` the vocabulary comes out smaller (never below 259 = bytes + specials).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_line_batches(corpus_text), trainer, length=None)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=None,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=None,
        additional_special_tokens=[IM_START],
        clean_up_tokenization_spaces=False,  # keep decode exact
        model_max_length=model_max_length,
        padding_side="right",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    ids = [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    if ids != [0, 1, 2]:  # an internal invariant, not user input
        raise RuntimeError(f"special token ids came out as {ids}, expected [0, 1, 2]")
    logger.info("tokenizer: byte-level BPE, %d tokens (asked for %d)", len(tokenizer), vocab_size)
    return tokenizer


def _line_batches(text: str, chars: int = 1 << 16):
    """Yield the text in ~64 KB pieces cut at line ends (the trainer pre-tokenizes each piece)."""
    start = 0
    while start < len(text):
        end = text.find("\n", start + chars)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end


# =========================================================================== data


def read_corpus(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        from lexalign.errors import LexalignError

        raise LexalignError(f"{path}: not UTF-8 text (byte {err.start}); convert the corpus to UTF-8") from None
    if not text.strip():
        from lexalign.errors import LexalignError

        raise LexalignError(f"{path}: the corpus is empty; pass a text file with contract text")
    return text


def pack_corpus(tokenizer: "PreTrainedTokenizerBase", text: str, seq_len: int) -> "torch.Tensor":
    """Tokenize the whole corpus as one stream (ending in <|endoftext|>) and cut it into ``seq_len`` blocks.

    Documents may be separated by a literal ``<|endoftext|>`` in the file; it becomes the special token.
    The tail that does not fill a block is dropped. Returns a LongTensor [n_blocks, seq_len].
    """
    import torch

    encoded = tokenizer.backend_tokenizer.encode_batch(list(_line_batches(text)), add_special_tokens=False)
    stream = [token for piece in encoded for token in piece.ids] + [tokenizer.pad_token_id]
    n_blocks = len(stream) // seq_len
    logger.info("corpus: %d characters -> %d tokens (%.2f chars/token) -> %d blocks of %d",
                len(text), len(stream), len(text) / max(1, len(stream)), n_blocks, seq_len)
    return torch.tensor(stream[: n_blocks * seq_len], dtype=torch.long).view(n_blocks, seq_len)


def split_blocks(blocks: "torch.Tensor", eval_fraction: float, seed: int) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Shuffle the blocks with ``seed``; hold out ``eval_fraction`` (at least one) for evaluation."""
    import torch

    from lexalign.errors import LexalignError

    if len(blocks) < 2:
        raise LexalignError(f"the corpus gives {len(blocks)} block(s) of {blocks.shape[1] if blocks.ndim == 2 else '?'} "
                            "tokens; need at least 2 (train + eval): use a larger corpus or a smaller pretraining.seq_len")
    order = torch.randperm(len(blocks), generator=torch.Generator().manual_seed(seed))
    n_eval = max(1, round(len(blocks) * eval_fraction))
    return blocks[order[n_eval:]], blocks[order[:n_eval]]


# =========================================================================== model


def make_model(tokenizer: "PreTrainedTokenizerBase", model_config: ModelConfig, seed: int) -> "LlamaForCausalLM":
    """A freshly initialised float32 ``LlamaForCausalLM`` sized to the tokenizer, with its special token ids."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    pad_id = tokenizer.pad_token_id
    eos_id = tokenizer.eos_token_id
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=model_config.hidden_size,
        intermediate_size=model_config.intermediate_size,
        num_hidden_layers=model_config.num_hidden_layers,
        num_attention_heads=model_config.num_attention_heads,
        num_key_value_heads=model_config.num_key_value_heads,
        max_position_embeddings=model_config.max_position_embeddings,
        rms_norm_eps=model_config.rms_norm_eps,
        initializer_range=model_config.initializer_range,
        tie_word_embeddings=model_config.tie_word_embeddings,
        bos_token_id=pad_id,  # no BOS is added to inputs (see module docstring)
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        dtype=torch.float32,
    )
    seed_everything(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=pad_id,
        eos_token_id=[eos_id, pad_id],  # stop at the end of a turn, or at the end of a plain-text document
        pad_token_id=pad_id,
    )
    logger.info("model: Llama %d layers, hidden %d, %d heads (head_dim %d), %d kv heads, vocab %d: %s parameters",
                config.num_hidden_layers, config.hidden_size, config.num_attention_heads, model_config.head_dim,
                config.num_key_value_heads, config.vocab_size, f"{count_parameters(model):,}")
    return model


def count_parameters(model: "torch.nn.Module") -> int:
    """Unique parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())


# =========================================================================== pretrain


@dataclass
class PretrainResult:
    steps: int = 0
    tokens: int = 0
    seconds: float = 0.0
    initial_eval_loss: float | None = None
    eval_loss: float | None = None
    train_losses: list[tuple[int, float]] = field(default_factory=list)  # (step, loss) at every log point
    eval_losses: list[tuple[int, float]] = field(default_factory=list)  # (step, loss)

    @property
    def perplexity(self) -> float | None:
        return None if self.eval_loss is None else math.exp(min(self.eval_loss, 50.0))


def evaluate(model: "LlamaForCausalLM", blocks: "torch.Tensor", batch_size: int, device: str) -> float:
    """Mean next-token loss over ``blocks`` (every block has the same length, so a mean of means is exact)."""
    import torch

    model.eval()
    losses = []
    with torch.no_grad():
        for start in range(0, len(blocks), batch_size):
            batch = blocks[start:start + batch_size].to(device)
            losses.append(model(input_ids=batch, labels=batch).loss.float().item() * len(batch))
    model.train()
    return sum(losses) / len(blocks)


def pretrain(model: "LlamaForCausalLM", train_blocks: "torch.Tensor", eval_blocks: "torch.Tensor",
             cfg: PretrainConfig, seed: int, log: Any = None) -> PretrainResult:
    """Causal-LM training with AdamW, linear warmup and cosine decay; ``log(record)`` receives the metrics."""
    import torch
    from tqdm.auto import tqdm

    log = log or (lambda record: None)
    device = choose_device(cfg.device)
    model.to(device).train()
    eval_blocks = eval_blocks[: cfg.eval_max_blocks]
    result = PretrainResult()

    def run_eval(step: int) -> float:
        loss = evaluate(model, eval_blocks, cfg.batch_size, device)
        result.eval_losses.append((step, loss))
        log({"step": step, "eval_loss": round(loss, 5), "eval_perplexity": round(math.exp(min(loss, 50.0)), 3)})
        logger.info("step %d: eval loss %.4f (perplexity %.1f) on %d held-out blocks",
                    step, loss, math.exp(min(loss, 50.0)), len(eval_blocks))
        return loss

    result.initial_eval_loss = run_eval(0)
    if cfg.max_steps == 0:
        result.eval_loss = result.initial_eval_loss
        model.to("cpu")
        return result

    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim < 2 or "norm" in name else decay).append(param)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=cfg.learning_rate, betas=(0.9, 0.95))

    def lr_factor(step: int) -> float:  # step counts from 0
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train_blocks), generator=generator)
    cursor = 0
    started = time.time()
    window: list[float] = []
    bar = tqdm(range(cfg.max_steps), desc="pretraining", unit="step", dynamic_ncols=True)
    for step in bar:
        if cursor + cfg.batch_size > len(order):  # next epoch
            order = torch.randperm(len(train_blocks), generator=generator)
            cursor = 0
        index = order[cursor:cursor + cfg.batch_size]
        cursor += cfg.batch_size
        batch = train_blocks[index].to(device)
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        result.tokens += batch.numel()
        window.append(loss.item())
        done = step + 1
        bar.set_postfix(loss=f"{window[-1]:.3f}")
        if done % cfg.log_every == 0 or done == cfg.max_steps:
            mean = sum(window) / len(window)
            window.clear()
            elapsed = time.time() - started
            result.train_losses.append((done, mean))
            log({"step": done, "loss": round(mean, 5), "learning_rate": scheduler.get_last_lr()[0],
                 "tokens": result.tokens, "tokens_per_second": round(result.tokens / elapsed, 1),
                 "elapsed_s": round(elapsed, 2)})
        if cfg.eval_every and done % cfg.eval_every == 0 and done != cfg.max_steps:
            run_eval(done)
    bar.close()
    result.steps = cfg.max_steps
    result.seconds = time.time() - started
    result.eval_loss = run_eval(cfg.max_steps)
    logger.info("pretrained %d steps (%d tokens) in %.1f s (%.0f tokens/s): eval loss %.4f -> %.4f",
                result.steps, result.tokens, result.seconds, result.tokens / max(result.seconds, 1e-9),
                result.initial_eval_loss, result.eval_loss)
    model.to("cpu")
    return result


# =========================================================================== save


def save_model(model: "LlamaForCausalLM", tokenizer: "PreTrainedTokenizerBase", model_dir: Path) -> None:
    """Model (safetensors), generation_config, tokenizer and chat template into one folder."""
    model_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)


def plot_losses(result: PretrainResult, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    if result.train_losses:
        steps, losses = zip(*result.train_losses)
        ax.plot(steps, losses, label="train loss", marker=".")
    if result.eval_losses:
        steps, losses = zip(*result.eval_losses)
        ax.plot(steps, losses, label="eval loss (held out)", marker="o", linestyle="--")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_model_card(model_dir: Path, config: BaseModelConfig, model: "LlamaForCausalLM",
                     tokenizer: "PreTrainedTokenizerBase", result: PretrainResult, corpus: Path, n_tokens: int) -> None:
    m = config.model
    p = config.pretraining
    if result.steps:
        training = (f"{result.steps} steps x {p.batch_size} blocks x {p.seq_len} tokens = {result.tokens:,} tokens "
                    f"({result.seconds:.0f} s), AdamW lr {p.learning_rate} (warmup {p.warmup_steps}, cosine), "
                    f"seed {config.seed}.")
    else:
        training = "none (random initialisation)."
    packed = f"{n_tokens:,} tokens packed into {p.seq_len}-token blocks"
    if corpus.resolve() == resolve_corpus("shipped").resolve():
        corpus_note = f"the shipped `pretrain_corpus.txt` ({packed}). {ATTRIBUTION}"
    else:
        corpus_note = f"`{corpus}` ({packed}), supplied by the user: add its source and license here."
    ppl = "n/a" if result.perplexity is None else f"{result.perplexity:.2f}"
    eval_loss = "n/a" if result.eval_loss is None else f"{result.eval_loss:.4f}"
    start_loss = "n/a" if result.initial_eval_loss is None else f"{result.initial_eval_loss:.4f}"
    card = f"""---
license: cc-by-4.0
library_name: transformers
pipeline_tag: text-generation
tags: [lexalign, tiny, llama, legal, test-model]
---

# lexalign tiny base model `{config.name}`

A tiny Llama-architecture causal language model with its own byte-level BPE tokenizer, built from scratch by
`lexalign base build` on contract text. It exists so that every lexalign stage (SFT, reward model, DPO/PPO,
vLLM serving, evaluation) can run end to end on a CPU without a model hub.

**Intended use: tests and demos only.** It knows some contract vocabulary and nothing else; it gives no
legal advice and must not be used to review real contracts. Point lexalign at a real instruct model for that.

## Architecture
- `LlamaForCausalLM`, float32: {m.num_hidden_layers} layers, hidden size {m.hidden_size}, \
{m.num_attention_heads} attention heads (head_dim {m.head_dim}), {m.num_key_value_heads} key/value heads, \
MLP {m.intermediate_size}, max positions {m.max_position_embeddings}, tied embeddings: {m.tie_word_embeddings}.
- Parameters: {count_parameters(model):,}.
- Tokenizer: byte-level BPE ({len(tokenizer)} tokens) trained with `tokenizers` on the same corpus; lossless \
(decode(encode(text)) == text). Special tokens: `<|endoftext|>` = {tokenizer.pad_token_id} (pad, document \
separator; no BOS is used), `<|im_start|>` = {tokenizer.convert_tokens_to_ids(IM_START)}, \
`<|im_end|>` = {tokenizer.eos_token_id} (EOS, end of turn).
- Chat template: ChatML; the assistant content and its `<|im_end|>` are marked as `{{% generation %}}` so \
that assistant-only losses train the end-of-turn token.

## Training
- Corpus: {corpus_note}
- Pretraining: {training}
- Held-out eval loss: {start_loss} before, {eval_loss} after (perplexity {ppl}).

## Use
```python
from transformers import AutoModelForCausalLM, AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")
model = AutoModelForCausalLM.from_pretrained("path/to/this/folder")
```
"""
    (model_dir / "README.md").write_text(card, encoding="utf-8")


# =========================================================================== entry points


def build_base_model(config_path: str | Path | None = None, overrides: list[str] | None = None, *,
                     config: BaseModelConfig | None = None) -> Path:
    """``lexalign base build``: tokenizer + tiny Llama + short pretraining; returns the run directory.

    Writes ``<output_dir>/<name>/base/`` with config.yaml, manifest.json, metrics.jsonl, loss.png,
    model/ (weights, tokenizer, chat template, generation config, README.md model card) and COMPLETE.
    """
    from lexalign.runs import RunDir

    config = config or load_base_config(config_path, overrides)
    corpus = config.corpus_path
    run = RunDir(config.run_dir, STAGE, config, inputs={"corpus": corpus}).start()
    set_threads(config.pretraining.threads)
    seed_everything(config.seed)

    text = read_corpus(corpus)
    tokenizer = train_tokenizer(text, config.tokenizer.vocab_size, config.tokenizer.min_frequency,
                                config.model.max_position_embeddings)
    blocks = pack_corpus(tokenizer, text, config.pretraining.seq_len)
    train_blocks, eval_blocks = split_blocks(blocks, config.pretraining.eval_fraction, config.seed)
    model = make_model(tokenizer, config.model, config.seed)
    result = pretrain(model, train_blocks, eval_blocks, config.pretraining, config.seed, log=run.log_metrics)

    model_dir = run.path / "model"
    save_model(model, tokenizer, model_dir)
    plot_losses(result, run.path / "loss.png", f"lexalign base model '{config.name}'")
    write_model_card(model_dir, config, model, tokenizer, result, corpus, blocks.numel())
    run.complete(
        outputs={"model": str(model_dir), "loss_plot": str(run.path / "loss.png")},
        results={
            "eval_loss": result.eval_loss,
            "initial_eval_loss": result.initial_eval_loss,
            "perplexity": result.perplexity,
            "parameters": count_parameters(model),
            "vocab_size": len(tokenizer),
            "steps": result.steps,
            "train_tokens": result.tokens,
            "pretrain_seconds": round(result.seconds, 2),
        },
    )
    return run.path


def make_tiny_model(out_dir: str | Path, corpus_text: str, *, vocab_size: int = 512, hidden_size: int = 128,
                    layers: int = 2, heads: int = 2, kv_heads: int | None = None, intermediate_size: int = 256,
                    max_position_embeddings: int = 512, tie_word_embeddings: bool = True,
                    pretrain_steps: int = 0, seq_len: int = 128, batch_size: int = 8,
                    learning_rate: float = 3e-3, seed: int = 0) -> Path:
    """Build a miniature model folder in seconds, through the same tokenizer/template/model code path.

    Defaults give head_dim 64 (hidden 128 / 2 heads) so vLLM can serve it. Writes the model files directly in
    ``out_dir`` (no run directory) and returns ``out_dir``. ``pretrain_steps > 0`` trains briefly on
    ``corpus_text`` (needs at least two blocks of ``seq_len`` tokens). Does not change torch's thread count.
    """
    out_dir = Path(out_dir)
    model_cfg = ModelConfig(hidden_size=hidden_size, num_hidden_layers=layers, num_attention_heads=heads,
                            num_key_value_heads=kv_heads or heads, intermediate_size=intermediate_size,
                            max_position_embeddings=max_position_embeddings,
                            tie_word_embeddings=tie_word_embeddings)
    pre_cfg = PretrainConfig(max_steps=pretrain_steps, seq_len=min(seq_len, max_position_embeddings),
                             batch_size=batch_size, learning_rate=learning_rate,
                             warmup_steps=min(10, pretrain_steps // 5), log_every=max(1, pretrain_steps // 5 or 1))
    tok_cfg = TokenizerConfig(vocab_size=vocab_size)
    problems = tok_cfg.problems() + model_cfg.problems() + pre_cfg.problems()
    if problems:
        from lexalign.config import ConfigError

        raise ConfigError(problems, source="make_tiny_model")
    seed_everything(seed)
    tokenizer = train_tokenizer(corpus_text, vocab_size, tok_cfg.min_frequency, max_position_embeddings)
    model = make_model(tokenizer, model_cfg, seed)
    if pretrain_steps:
        blocks = pack_corpus(tokenizer, corpus_text, pre_cfg.seq_len)
        train_blocks, eval_blocks = split_blocks(blocks, 0.1, seed)
        pretrain(model, train_blocks, eval_blocks, pre_cfg, seed)
    save_model(model, tokenizer, out_dir)
    return out_dir
