"""Serving throughput: vLLM's OpenAI server vs batched ``transformers.generate`` on the same ~100M model.

    python bench/serve_throughput.py [--concurrency 32] [--tokens 128] [--out bench/out/serve_throughput.json]

The model: the Llama of ``configs/base-100m.yaml`` (98.3M parameters, head_dim 64) with random weights and
the tiny byte-level BPE tokenizer trained on the shipped corpus (no training: throughput does not depend on
the weights' values). Both sides run it in float32, greedy, on the same 32 chat prompts, and generate exactly
``--tokens`` tokens per request (``min_new_tokens``/``ignore_eos``), so they do the same work.

Baseline: one ``model.generate`` call on the batch of 32 left-padded prompts (KV cache), with 1 and with 2
intra-op threads (``--hf-threads``); the faster is the baseline (on a shared 2-core machine one thread is
often faster: OpenMP barriers stall when a thread is descheduled; vLLM's CPU engine itself computes on
one bound core and keeps the other for its API server). Its "time to first token" is when the batch's first
token exists (a batch does not stream).
Server: ``lexalign.serve.launch.start_server`` (the same code path as ``lexalign serve``), 32 concurrent
streaming chat requests through ``openai.AsyncOpenAI``; time to first token is per request (first content
chunk), throughput = output tokens / wall time of the whole burst. The baseline runs first, before the
server starts, so the two never compete for the cores. Prints the ratios; writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"


def build_model(folder: Path) -> Path:
    """The base-100m architecture with random weights + the tiny tokenizer (cached in ``folder``)."""
    from lexalign.basemodel import count_parameters, load_base_config, make_model, read_corpus, save_model, train_tokenizer

    if (folder / "config.json").is_file():
        return folder
    config = load_base_config(ROOT / "configs" / "base-100m.yaml")
    text = read_corpus(config.corpus_path)[:1_000_000]
    tokenizer = train_tokenizer(text, config.tokenizer.vocab_size, config.tokenizer.min_frequency,
                                config.model.max_position_embeddings)
    model = make_model(tokenizer, config.model, config.seed)
    save_model(model, tokenizer, folder)
    print(f"built {folder}: {count_parameters(model) / 1e6:.1f}M parameters, random weights", flush=True)
    return folder


def chat_prompts(n: int, max_chars: int = 400) -> list[list[dict[str, str]]]:
    from lexalign.data.paths import shipped_dir

    prompts = []
    for line in (shipped_dir() / "sft_valid.jsonl").read_text(encoding="utf-8").splitlines():
        messages = json.loads(line)["messages"][:-1]
        messages[-1]["content"] = messages[-1]["content"][:max_chars]
        prompts.append(messages)
        if len(prompts) == n:
            break
    return prompts


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def bench_transformers(model_dir: Path, prompts: list[list[dict[str, str]]], tokens: int, threads: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, StoppingCriteria, StoppingCriteriaList

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), padding_side="left")
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    texts = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)

    class FirstToken(StoppingCriteria):
        def __init__(self) -> None:
            self.at: float | None = None

        def __call__(self, input_ids, scores, **kwargs):  # called after every generated token
            if self.at is None:
                self.at = time.perf_counter()
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    with torch.inference_mode():
        model.generate(**tokenizer(texts[:2], return_tensors="pt", padding=True, add_special_tokens=False),
                       max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)  # warm-up
        first = FirstToken()
        started = time.perf_counter()
        out = model.generate(**batch, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, stopping_criteria=StoppingCriteriaList([first]))
        seconds = time.perf_counter() - started
    generated = int((out.shape[1] - batch["input_ids"].shape[1]) * out.shape[0])
    return {"output_tokens": generated, "seconds": seconds, "tokens_per_s": generated / seconds,
            "ttft_s": (first.at or started) - started, "threads": torch.get_num_threads(),
            "prompt_tokens_padded": int(batch["input_ids"].shape[1])}


async def _burst(client, model: str, prompts: list[list[dict[str, str]]], tokens: int) -> tuple[float, list[dict]]:
    async def one(messages):
        started = time.perf_counter()
        first = None
        chunks = 0
        usage = None
        stream = await client.chat.completions.create(
            model=model, messages=messages, max_tokens=tokens, temperature=0, stream=True,
            stream_options={"include_usage": True}, extra_body={"ignore_eos": True, "min_tokens": tokens})
        async for event in stream:
            if event.usage is not None:
                usage = event.usage
            if event.choices and event.choices[0].delta and event.choices[0].delta.content:
                chunks += 1
                if first is None:
                    first = time.perf_counter()
        done = time.perf_counter()
        return {"ttft_s": (first or done) - started, "latency_s": done - started,
                "output_tokens": usage.completion_tokens if usage else chunks}

    started = time.perf_counter()
    results = await asyncio.gather(*[one(m) for m in prompts])
    return time.perf_counter() - started, list(results)


def bench_vllm(model_dir: Path, prompts: list[list[dict[str, str]]], tokens: int, work: Path,
               serve_overrides: list[str]) -> dict:
    from openai import AsyncOpenAI

    from lexalign.config import load_config
    from lexalign.serve.launch import ServeConfig, start_server

    config = load_config(ServeConfig, ROOT / "configs" / "serve.yaml", [
        f"run={model_dir}", "port=0", f"work_dir={work}", "dtype=float32", "max_model_len=1024",
        f"max_num_seqs={len(prompts)}", "cpu_kvcache_gib=2", "shutdown_timeout_s=5", *serve_overrides])
    wall_start = time.perf_counter()
    with start_server(config, ephemeral_key=True) as server:
        start_s = time.perf_counter() - wall_start

        async def run() -> tuple[float, list[dict]]:
            client = AsyncOpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0, timeout=900)
            await _burst(client, server.model, prompts[:2], 8)  # warm-up
            return await _burst(client, server.model, prompts, tokens)

        seconds, results = asyncio.run(run())
        engine = {"package": server.plan.engine.distribution, "version": server.plan.engine.version,
                  "dtype": server.plan.dtype, "device": server.plan.device}
    generated = sum(r["output_tokens"] for r in results)
    ttfts = [r["ttft_s"] for r in results]
    return {"output_tokens": generated, "seconds": seconds, "tokens_per_s": generated / seconds,
            "ttft_p50_s": statistics.median(ttfts), "ttft_p95_s": percentile(ttfts, 95),
            "latency_p50_s": statistics.median(r["latency_s"] for r in results), "start_s": start_s,
            "ready_s": server.started_in_s, "engine": engine}


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=32, help="requests at once = HF batch size (default 32)")
    parser.add_argument("--tokens", type=int, default=128, help="output tokens per request (default 128)")
    parser.add_argument("--hf-threads", type=lambda v: [int(x) for x in v.split(",")], default=[1, 2],
                        help="intra-op thread counts tried for the baseline; the fastest is used (default 1,2)")
    parser.add_argument("--serve", nargs="*", default=[], metavar="key=value",
                        help="serve config overrides for the server, e.g. cpu_reserved_cores=0")
    parser.add_argument("--model-dir", type=Path, default=OUT / "base-100m-random", help="where the model is built")
    parser.add_argument("--out", type=Path, default=OUT / "serve_throughput.json")
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "httpx2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    model_dir = build_model(args.model_dir)
    prompts = chat_prompts(args.concurrency)
    load_before = load_average()
    baselines = []
    for threads in args.hf_threads:
        print(f"transformers.generate: batch {len(prompts)} x {args.tokens} tokens, float32, {threads} thread(s) ...",
              flush=True)
        baselines.append(bench_transformers(model_dir, prompts, args.tokens, threads))
        print(f"  {baselines[-1]['tokens_per_s']:.1f} tokens/s", flush=True)
    hf = max(baselines, key=lambda b: b["tokens_per_s"])
    print(f"vLLM server: {len(prompts)} concurrent streaming requests x {args.tokens} tokens, float32 ...", flush=True)
    served = bench_vllm(model_dir, prompts, args.tokens, OUT / "serve-work", args.serve)
    served["serve_overrides"] = args.serve
    load_after = load_average()
    ratio = served["tokens_per_s"] / hf["tokens_per_s"]
    result = {
        "command": " ".join([Path(sys.executable).name, "bench/serve_throughput.py", *(argv or sys.argv[1:])]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_1min_before": load_before, "load_1min_after": load_after},
        "model": {"config": "configs/base-100m.yaml", "weights": "random", "dir": str(model_dir)},
        "concurrency": len(prompts), "tokens_per_request": args.tokens,
        "transformers": hf, "transformers_runs": baselines, "vllm": served, "throughput_ratio": ratio,
        "time": time.strftime("%Y-%m-%d %H:%M"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print()
    print(f"{'':34}{'tokens':>8}{'seconds':>9}{'tokens/s':>10}{'TTFT p50':>10}{'TTFT p95':>10}")
    print(f"{'transformers.generate (' + str(hf['threads']) + ' thr)':34}{hf['output_tokens']:>8}{hf['seconds']:>9.1f}{hf['tokens_per_s']:>10.1f}"
          f"{hf['ttft_s']:>10.2f}{hf['ttft_s']:>10.2f}")
    print(f"{'vLLM OpenAI server (streaming)':34}{served['output_tokens']:>8}{served['seconds']:>9.1f}"
          f"{served['tokens_per_s']:>10.1f}{served['ttft_p50_s']:>10.2f}{served['ttft_p95_s']:>10.2f}")
    print(f"throughput ratio vLLM / transformers: {ratio:.2f}x (goal >= 2.5x)")
    print(f"vLLM server start: {served['start_s']:.1f} s to ready (engine {served['engine']['package']} "
          f"{served['engine']['version']}, {served['engine']['device']}, {served['engine']['dtype']})")
    print(f"load average (1 min) before / after: {load_before} / {load_after} on {os.cpu_count()} CPUs")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
