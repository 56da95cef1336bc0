"""Serving throughput on this machine's limits: vLLM's OpenAI server vs the best batched ``transformers.generate``.

    python bench/serve_throughput.py [--model smollm2|random-100m] [--workloads fixed realistic]
                                     [--serve key=value ...] [--out bench/out/serve_throughput.json]

The model: by default SmolLM2-135M-Instruct, the project's default base, as ``lexalign base import`` saves it
(float32; imported into ``bench/out/runs`` when ``--model-dir`` does not hold it); ``random-100m`` is the
Llama of ``configs/base-100m.yaml`` with random weights and the tiny tokenizer (the earlier benchmark's model).
Both sides run the same weights in float32, greedy, and generate exactly the requested number of tokens per
request (``min_new_tokens`` / ``ignore_eos`` + ``min_tokens``), so they do the same work.

Two workloads:
- ``fixed``: 32 chat prompts of the shipped validation records (user turn cut to 400 characters), all at
  once, 128 new tokens each: the best case for a static batch.
- ``realistic``: 48 validation records with their whole prompts (mixed tasks, 100-450 tokens), each asking for
  as many tokens as its reference answer has (clipped to 4-256: mixed lengths), arriving as a seeded Poisson
  process (``--rate`` requests/s, default 4: faster than either side serves them, so throughput is capacity).
  This is where continuous batching should pay off.

Baselines (all run before the server starts, so nothing competes for the cores): batched ``model.generate``
with the KV cache, for each intra-op thread count of ``--hf-threads``; on the realistic workload a batch
is whatever has arrived when the previous batch ends, up to each size of ``--hf-batches`` (left padding to the
batch's longest prompt, the batch runs to its longest answer). Arrivals are replayed on a virtual clock: a
batch starts at max(previous end, first waiting arrival) and lasts as long as its ``generate`` measured, so
no idle waiting is spent. The best configuration of each workload is its baseline.
Server: ``lexalign.serve.launch.start_server`` (the ``lexalign serve`` code path), requests through
``openai.AsyncOpenAI``, streaming, sent at their arrival times. Time to first token is per request, from
its arrival; throughput = output tokens / time from the first arrival to the last answer.

The roofline (``bench/roofline.py``): the run measures the fp32 matmul peak and memory bandwidth with the
server's thread count, and each result is also given as ideal time / measured time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, ROOT, load_average, smollm2_model  # noqa: E402
from roofline import ModelShape, Request, ideal_serving_seconds, measure_peaks  # noqa: E402

SERVER_THREADS = 2  # vLLM's CPU engine computes on every core (cpu_reserved_cores: 0)


def build_random_model(folder: Path) -> Path:
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


@dataclass
class Job:
    """One request of a workload."""

    messages: list[dict[str, str]]
    output_tokens: int
    arrival_s: float = 0.0
    prompt_tokens: int = 0
    cached_tokens: int = 0  # tokens at the prompt's start shared with an earlier request (computed once with caching)


def validation_records() -> list[dict]:
    from lexalign.data.paths import shipped_dir

    return [json.loads(line) for line in (shipped_dir() / "sft_valid.jsonl").read_text(encoding="utf-8").splitlines()]


def fixed_workload(n: int, tokens: int, max_chars: int = 400) -> list[Job]:
    jobs = []
    for record in validation_records()[:n]:
        messages = [dict(m) for m in record["messages"][:-1]]
        messages[-1]["content"] = messages[-1]["content"][:max_chars]
        jobs.append(Job(messages, tokens))
    return jobs


def realistic_workload(n: int, rate: float, seed: int, tokenizer, min_tokens: int = 4, max_tokens: int = 256) -> list[Job]:
    records = validation_records()
    rng = random.Random(seed)
    rng.shuffle(records)
    jobs, clock = [], 0.0
    for record in records[:n]:
        answer = record["messages"][-1]["content"]
        length = len(tokenizer(answer, add_special_tokens=False)["input_ids"]) + 1  # + the end-of-turn token
        jobs.append(Job(record["messages"][:-1], min(max_tokens, max(min_tokens, length)), clock))
        clock += rng.expovariate(rate)
    return jobs


def count_prompt_tokens(jobs: list[Job], tokenizer) -> None:
    """Each job's prompt length, and how much of its start an earlier job (by arrival) shares."""
    seen: list[list[int]] = []
    for job in sorted(jobs, key=lambda j: j.arrival_s):
        ids = list(tokenizer.apply_chat_template(job.messages, add_generation_prompt=True, tokenize=True,
                                                 return_dict=True)["input_ids"])
        job.prompt_tokens = len(ids)
        job.cached_tokens = max((shared_prefix(ids, other) for other in seen), default=0)
        seen.append(ids)


def shared_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return min(n, len(a) - 1)  # the last prompt token is always computed: it gives the first output token


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summarize(per_request: list[dict], span_s: float) -> dict:
    ttfts = [r["ttft_s"] for r in per_request]
    tokens = sum(r["output_tokens"] for r in per_request)
    return {"output_tokens": tokens, "seconds": span_s, "tokens_per_s": tokens / span_s,
            "ttft_p50_s": statistics.median(ttfts), "ttft_p95_s": percentile(ttfts, 95),
            "latency_p50_s": statistics.median(r["latency_s"] for r in per_request),
            "latency_p95_s": percentile([r["latency_s"] for r in per_request], 95)}


# =========================================================================== the baseline


class StepClock:
    """A stopping criterion that only records when each generated token (step) exists."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        self.times.append(time.perf_counter())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool)


def bench_transformers(model_dir: Path, jobs: list[Job], threads: int, max_batch: int) -> dict:
    """Batched ``generate`` on the workload, arrivals replayed on a virtual clock (see the module's docstring)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, StoppingCriteriaList

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), padding_side="left")
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    texts = [tokenizer.apply_chat_template(j.messages, add_generation_prompt=True, tokenize=False) for j in jobs]
    order = sorted(range(len(jobs)), key=lambda i: jobs[i].arrival_s)
    per_request: list[dict] = [{} for _ in jobs]
    now, waiting, batches = 0.0, list(order), 0
    with torch.inference_mode():
        model.generate(**tokenizer(texts[:2], return_tensors="pt", padding=True, add_special_tokens=False),
                       max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)  # warm-up
        while waiting:
            now = max(now, jobs[waiting[0]].arrival_s)
            batch = [i for i in waiting if jobs[i].arrival_s <= now][:max_batch]
            waiting = [i for i in waiting if i not in batch]
            longest = max(jobs[i].output_tokens for i in batch)
            inputs = tokenizer([texts[i] for i in batch], return_tensors="pt", padding=True, add_special_tokens=False)
            clock = StepClock()
            started = time.perf_counter()
            model.generate(**inputs, max_new_tokens=longest, min_new_tokens=longest, do_sample=False,
                           pad_token_id=tokenizer.pad_token_id, stopping_criteria=StoppingCriteriaList([clock]))
            ended = time.perf_counter()
            for i in batch:
                done = now + clock.times[jobs[i].output_tokens - 1] - started
                per_request[i] = {"ttft_s": now + clock.times[0] - started - jobs[i].arrival_s,
                                  "latency_s": done - jobs[i].arrival_s, "done_s": done,
                                  "output_tokens": jobs[i].output_tokens}
            now += ended - started
            batches += 1
    first_arrival = min(j.arrival_s for j in jobs)
    result = summarize(per_request, max(r["done_s"] for r in per_request) - first_arrival)
    result.update({"threads": threads, "max_batch": max_batch, "batches": batches})
    return result


# =========================================================================== the server


async def replay(client, model: str, jobs: list[Job]) -> list[dict]:
    """Send every job at its arrival time (streaming) and time it."""
    t0 = time.perf_counter()

    async def one(job: Job) -> dict:
        await asyncio.sleep(max(0.0, job.arrival_s - (time.perf_counter() - t0)))
        sent = time.perf_counter()
        first, usage, chunks = None, None, 0
        stream = await client.chat.completions.create(
            model=model, messages=job.messages, max_tokens=job.output_tokens, temperature=0, stream=True,
            stream_options={"include_usage": True}, extra_body={"ignore_eos": True, "min_tokens": job.output_tokens})
        async for event in stream:
            if event.usage is not None:
                usage = event.usage
            if event.choices and event.choices[0].delta and event.choices[0].delta.content:
                chunks += 1
                if first is None:
                    first = time.perf_counter()
        done = time.perf_counter()
        return {"ttft_s": (first or done) - sent, "latency_s": done - sent, "done_s": done - t0,
                "sent_s": sent - t0, "output_tokens": usage.completion_tokens if usage else chunks}

    return list(await asyncio.gather(*[one(j) for j in jobs]))


def bench_vllm(model_dir: Path, workloads: dict[str, list[Job]], work: Path, serve_overrides: list[str]) -> dict:
    from openai import AsyncOpenAI

    from lexalign.config import load_config
    from lexalign.serve.launch import ServeConfig, start_server

    concurrency = max(len(jobs) for jobs in workloads.values())
    config = load_config(ServeConfig, ROOT / "configs" / "serve.yaml", [
        f"run={model_dir}", "port=0", f"work_dir={work}", "dtype=float32", "max_model_len=2048",
        f"max_num_seqs={concurrency}", "cpu_kvcache_gib=4", "shutdown_timeout_s=5", *serve_overrides])
    wall_start = time.perf_counter()
    results: dict = {}
    with start_server(config, ephemeral_key=True) as server:
        results["start_s"] = time.perf_counter() - wall_start

        async def run(jobs: list[Job]) -> list[dict]:
            async with AsyncOpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0,
                                   timeout=1800) as client:
                # Warm-up on a prompt outside the workload: the workload's own prompts must not be in the prefix
                # cache before it starts (the baseline computes every prompt).
                await replay(client, server.model, [Job([{"role": "user", "content": "Say hello."}], 8)])
                return await replay(client, server.model, jobs)

        for name, jobs in workloads.items():
            print(f"vLLM server: {name} workload, {len(jobs)} requests ...", flush=True)
            per_request = asyncio.run(run(jobs))
            results[name] = summarize(per_request, max(r["done_s"] for r in per_request) - min(j.arrival_s for j in jobs))
            print(f"  {results[name]['tokens_per_s']:.1f} tokens/s", flush=True)
        results["engine"] = {"package": server.plan.engine.distribution, "version": server.plan.engine.version,
                             "dtype": server.plan.dtype, "device": server.plan.device}
    return results


def int_list(value: str) -> list[int]:
    return [int(x) for x in value.split(",")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["smollm2", "random-100m"], default="smollm2")
    parser.add_argument("--model-dir", type=Path, default=None, help="the model folder (default: found or made)")
    parser.add_argument("--workloads", nargs="+", choices=["fixed", "realistic"], default=["fixed", "realistic"])
    parser.add_argument("--concurrency", type=int, default=32, help="fixed: requests at once = HF batch size")
    parser.add_argument("--tokens", type=int, default=128, help="fixed: output tokens per request")
    parser.add_argument("--requests", type=int, default=48, help="realistic: number of requests")
    parser.add_argument("--rate", type=float, default=4.0, help="realistic: mean arrivals per second (Poisson)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hf-threads", type=int_list, default=[1, 2], help="baseline intra-op thread counts")
    parser.add_argument("--hf-batches", type=int_list, default=[8, 48], help="realistic: baseline batch limits")
    parser.add_argument("--serve", nargs="*", default=[], metavar="key=value",
                        help="serve config overrides for the server, e.g. cpu_reserved_cores=null")
    parser.add_argument("--out", type=Path, default=OUT / "serve_throughput.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "httpx2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from transformers import AutoTokenizer

    if args.model == "smollm2":
        model_dir = smollm2_model(args.model_dir)
    else:
        model_dir = build_random_model(args.model_dir or OUT / "base-100m-random")
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    shape = ModelShape.from_folder(model_dir)
    workloads: dict[str, list[Job]] = {}
    if "fixed" in args.workloads:
        workloads["fixed"] = fixed_workload(args.concurrency, args.tokens)
    if "realistic" in args.workloads:
        workloads["realistic"] = realistic_workload(args.requests, args.rate, args.seed, tokenizer)
    for jobs in workloads.values():
        count_prompt_tokens(jobs, tokenizer)
    load_before = load_average()
    print(f"measuring the machine's peaks with {SERVER_THREADS} threads ...", flush=True)
    peaks = measure_peaks(SERVER_THREADS)
    print(f"  {peaks.describe()}", flush=True)

    report: dict = {}
    for name, jobs in workloads.items():
        ideal = ideal_serving_seconds(shape, peaks, [Request(j.arrival_s, j.prompt_tokens, j.output_tokens, j.cached_tokens)
                                                     for j in jobs])
        runs = []
        batches = [len(jobs)] if name == "fixed" else args.hf_batches
        for threads in args.hf_threads:
            for max_batch in batches:
                print(f"transformers.generate: {name}, {threads} thread(s), batches of <= {max_batch} ...", flush=True)
                runs.append(bench_transformers(model_dir, jobs, threads, max_batch))
                print(f"  {runs[-1]['tokens_per_s']:.1f} tokens/s", flush=True)
        report[name] = {"requests": len(jobs), "prompt_tokens": sum(j.prompt_tokens for j in jobs),
                        "shared_prefix_tokens": sum(j.cached_tokens for j in jobs),
                        "output_tokens": sum(j.output_tokens for j in jobs),
                        "prompt_tokens_min_max": [min(j.prompt_tokens for j in jobs), max(j.prompt_tokens for j in jobs)],
                        "output_tokens_min_max": [min(j.output_tokens for j in jobs), max(j.output_tokens for j in jobs)],
                        "arrival_span_s": max(j.arrival_s for j in jobs), "ideal": ideal,
                        "transformers_runs": runs, "transformers": max(runs, key=lambda r: r["tokens_per_s"])}
    served = bench_vllm(model_dir, workloads, OUT / "serve-work", args.serve)
    load_after = load_average()
    # A server in bfloat16 (``--serve dtype=bfloat16``) is held to the bf16 limits: half the weight bytes, the bf16
    # matmul peak. The baseline stays float32 against the fp32 limits.
    bf16_server = served["engine"]["dtype"] in ("bfloat16", "torch.bfloat16")
    for name, jobs in workloads.items():
        entry = report[name]
        entry["vllm"] = served[name]
        entry["ratio"] = served[name]["tokens_per_s"] / entry["transformers"]["tokens_per_s"]
        entry["ideal_vllm"] = entry["ideal"]
        if bf16_server:
            entry["ideal_vllm"] = ideal_serving_seconds(
                shape, peaks, [Request(j.arrival_s, j.prompt_tokens, j.output_tokens, j.cached_tokens) for j in jobs],
                bytes_per_weight=2, flops_per_s=peaks.bf16_flops)
        for run in entry["transformers_runs"]:
            run["fraction_of_roofline"] = entry["ideal"]["ideal_s"] / run["seconds"]
        entry["vllm"]["fraction_of_roofline"] = entry["ideal_vllm"]["ideal_s"] / entry["vllm"]["seconds"]
    result = {
        "command": " ".join([Path(sys.executable).name, "bench/serve_throughput.py", *(argv or sys.argv[1:])]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_1min_before": load_before, "load_1min_after": load_after, "peaks": peaks.as_dict()},
        "model": {"name": args.model, "dir": str(model_dir), "parameters": shape.parameters,
                  "weight_bytes_fp32": shape.weight_bytes(4)},
        "serve_overrides": args.serve, "server_start_s": served["start_s"], "engine": served["engine"],
        "workloads": report, "time": time.strftime("%Y-%m-%d %H:%M"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print()
    print(f"model {args.model}: {shape.parameters / 1e6:.1f}M parameters, {shape.weight_bytes(4) / 1e6:.0f} MB in fp32; "
          f"{peaks.describe()}")
    header = f"{'':44}{'tokens':>7}{'s':>8}{'tok/s':>8}{'roofline':>9}{'TTFT p50':>9}{'TTFT p95':>9}"
    for name, entry in report.items():
        print(f"\n{name}: {entry['requests']} requests, prompts {entry['prompt_tokens_min_max']} tokens "
              f"({entry['shared_prefix_tokens']} of {entry['prompt_tokens']} shared with an earlier prompt), answers "
              f"{entry['output_tokens_min_max']} tokens, arrivals over {entry['arrival_span_s']:.1f} s; ideal "
              f"{entry['ideal']['ideal_s']:.1f} s (prefill {entry['ideal']['prefill_s']:.1f} s, decode "
              f"{entry['ideal']['decode_s']:.1f} s)")
        print(header)
        rows = [(f"generate {r['threads']} thr, batch <= {r['max_batch']}", r) for r in entry["transformers_runs"]]
        rows.append(("vLLM OpenAI server (streaming)", entry["vllm"]))
        for label, r in rows:
            fraction = r["fraction_of_roofline"]
            print(f"{label:44}{r['output_tokens']:>7}{r['seconds']:>8.1f}{r['tokens_per_s']:>8.1f}{fraction:>9.0%}"
                  f"{r['ttft_p50_s']:>9.2f}{r['ttft_p95_s']:>9.2f}")
        if bf16_server:
            print(f"(the bfloat16 server against the bf16 limits: ideal {entry['ideal_vllm']['ideal_s']:.1f} s)")
        print(f"ratio vLLM / best generate: {entry['ratio']:.2f}x (goal >= 3x on the realistic workload); vLLM at "
              f"{entry['vllm']['fraction_of_roofline']:.0%} of the roofline (goal >= 70%)")
    print(f"\nvLLM server start: {served['start_s']:.1f} s to ready ({served['engine']['package']} "
          f"{served['engine']['version']}, {served['engine']['device']}, {served['engine']['dtype']})")
    print(f"load average (1 min) before / after: {load_before} / {load_after} on {os.cpu_count()} CPUs")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
