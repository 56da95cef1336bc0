"""The machine's limits and the ideal time of a workload on them: what the benchmarks divide by.

Peaks are measured in the benchmark's own run (same threads, same moment, same load):
- matmul FLOP/s in float32 and bfloat16: the best of several ``torch.mm`` of 2048 x 2048 matrices (the
  shape a CPU BLAS runs closest to its limit; the model's own, skinnier matmuls reach less — that gap is
  what a fraction of the roofline shows);
- memory read bandwidth: the best of several sums over a 512 MiB float32 tensor (far larger than the caches).

A decoder-only transformer of N weights in its matmuls (lm_head included, the embedding lookup not) costs
per token 2N FLOPs in its linear layers plus 4 * layers * heads * head_dim * context for attention (QK^T and
AV). The ideal time of a workload is a lower bound built from those counts:
- prefill of a p-token prompt: 2Np + 2 * layers * heads * head_dim * p^2 (causal: the average context is p/2),
  at the matmul peak; a prompt's start that an earlier request shares (the system prompt) is computed once;
- each decode step: max(weight bytes / bandwidth, FLOPs of the step's tokens / peak) — every step reads
  every weight once, whatever the batch;
- requests arriving over time: never before the last arrival plus that request's own ideal service.
Training: a full fine-tune costs 6N FLOPs per token (forward 2N, backward 4N); LoRA skips the frozen
weights' gradients, so 4N (forward 2N + input gradients 2N), less when the adapters sit only on the upper
layers (the backward pass stops below them); attention is counted the same way.
Gradient checkpointing recomputes the forward (+2N) on the hardware but is not counted: MFU is the model's
FLOPs over the peak, by convention.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Peaks:
    threads: int
    fp32_flops: float          # FLOP/s
    bf16_flops: float
    read_bytes_per_s: float

    def describe(self) -> str:
        return (f"{self.threads} thread(s): fp32 matmul {self.fp32_flops / 1e9:.0f} GFLOP/s, bf16 matmul "
                f"{self.bf16_flops / 1e9:.0f} GFLOP/s, memory read {self.read_bytes_per_s / 1e9:.1f} GB/s")

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def measure_peaks(threads: int, repeats: int = 5, size: int = 2048) -> Peaks:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        def best_matmul(dtype: torch.dtype) -> float:
            a = torch.randn(size, size).to(dtype)
            b = torch.randn(size, size).to(dtype)
            torch.mm(a, b)  # warm-up: first call allocates and picks the kernel
            best = float("inf")
            for _ in range(repeats):
                started = time.perf_counter()
                torch.mm(a, b)
                best = min(best, time.perf_counter() - started)
            return 2 * size ** 3 / best

        x = torch.ones(128 * 1024 * 1024, dtype=torch.float32)  # 512 MiB
        x.sum()
        best_read = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            x.sum()
            best_read = min(best_read, time.perf_counter() - started)
        return Peaks(threads, best_matmul(torch.float32), best_matmul(torch.bfloat16), x.numel() * 4 / best_read)
    finally:
        torch.set_num_threads(previous)


@dataclass(frozen=True)
class ModelShape:
    """What the FLOP and byte counts need, read from a Llama-style ``config.json``."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool

    @classmethod
    def from_folder(cls, folder: str | Path) -> ModelShape:
        config = json.loads((Path(folder) / "config.json").read_text())
        heads = config["num_attention_heads"]
        return cls(config["num_hidden_layers"], config["hidden_size"], heads,
                   config.get("num_key_value_heads") or heads, config.get("head_dim") or config["hidden_size"] // heads,
                   config["intermediate_size"], config["vocab_size"], bool(config.get("tie_word_embeddings")))

    @property
    def matmul_weights(self) -> int:
        """Weights every token multiplies by: attention and MLP projections of every layer, and lm_head."""
        attention = self.hidden * self.head_dim * (2 * self.heads + 2 * self.kv_heads)
        mlp = 3 * self.hidden * self.intermediate
        return self.layers * (attention + mlp) + self.vocab * self.hidden

    @property
    def parameters(self) -> int:
        norms = (2 * self.layers + 1) * self.hidden
        embedding = 0 if self.tied else self.vocab * self.hidden  # tied: lm_head is the embedding
        return self.matmul_weights + embedding + norms

    def weight_bytes(self, bytes_per_weight: int = 4) -> int:
        return self.parameters * bytes_per_weight

    def attention_flops(self, context: float) -> float:
        return 4 * self.layers * self.heads * self.head_dim * context

    def token_flops(self, context: float) -> float:
        """Forward FLOPs of one token that attends to ``context`` tokens."""
        return 2 * self.matmul_weights + self.attention_flops(context)

    def prefill_flops(self, prompt_tokens: int) -> float:
        return 2 * self.matmul_weights * prompt_tokens + self.attention_flops(prompt_tokens / 2) * prompt_tokens

    def train_flops_per_token(self, context: float, lora: bool, backward_layers: int | None = None,
                              lm_head: bool = True) -> float:
        """Model FLOPs per trained token of sequences of ``context`` tokens: 6N for a full fine-tune; for LoRA the
        forward (2N) and the input gradients (2N) of the layers the backward pass goes through: with adapters
        only on the upper ``backward_layers`` layers, it stops below them. ``lm_head=False``: a reward model,
        whose head is one score instead of the vocabulary."""
        head = 2 * self.vocab * self.hidden if lm_head else 0
        forward = self.token_flops(context / 2) - 2 * self.vocab * self.hidden + head
        if not lora:
            return 3 * forward
        layers = self.layers if backward_layers is None else backward_layers
        per_layer = (forward - head) / self.layers
        return forward + layers * per_layer + head


@dataclass(frozen=True)
class Request:
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    cached_tokens: int = 0   # the prompt's start that an earlier request already computed (a shared system prompt)


def ideal_serving_seconds(shape: ModelShape, peaks: Peaks, requests: list[Request], bytes_per_weight: int = 4,
                          flops_per_s: float | None = None) -> dict[str, float]:
    """The lower bound on the wall time of serving ``requests`` (see the module's docstring)."""
    peak = flops_per_s or peaks.fp32_flops
    weight_s = shape.weight_bytes(bytes_per_weight) / peaks.read_bytes_per_s

    def decode_seconds(batch: list[Request]) -> float:
        seconds = 0.0
        for step in range(max((r.output_tokens for r in batch), default=0)):
            active = [r for r in batch if r.output_tokens > step]
            flops = sum(shape.token_flops(r.prompt_tokens + step) for r in active)
            seconds += max(weight_s, flops / peak)
        return seconds

    def prefill_flops(r: Request) -> float:
        return shape.prefill_flops(r.prompt_tokens) - shape.prefill_flops(r.cached_tokens)

    prefill_s = sum(prefill_flops(r) for r in requests) / peak
    work_s = prefill_s + decode_seconds(requests)
    last = max(requests, key=lambda r: r.arrival_s)
    arrival_bound_s = last.arrival_s + prefill_flops(last) / peak + decode_seconds([last])
    return {"ideal_s": max(work_s, arrival_bound_s), "prefill_s": prefill_s, "decode_s": work_s - prefill_s,
            "arrival_bound_s": arrival_bound_s, "weight_read_s": weight_s}
