"""vLLM's CPU engine with the model in a worker process of its own (vLLM's default) and in the engine-core process
(``configs/serve.yaml: cpu_in_process_worker``): time to ready, generation speed, stop, and whether answers differ.

    python bench/vllm_start.py runs/smollm2/merged/sft --prompts shipped:sft_valid.jsonl --rounds 2

Each round starts the server once per variant (the order alternates between rounds, so neither always starts on a
warmer page cache), sends the same chat prompts at concurrency 8 (as ``lexalign candidates`` does): a timed pass of
``--tokens`` tokens per prompt (``ignore_eos``), then a greedy answer and two seeded samples (temperature 0.9,
top-p 0.95) per prompt, and stops it. Prints per start the seconds to ready, tokens/s and seconds to stop; then
the ratio of the mean times to ready, and how many prompts got the same greedy answer and the same seeded samples
as in the first start of the default variant. Validation prompts only.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from common import ROOT, load_average
from lexalign.config import load_config
from lexalign.data.jsonl import DataError
from lexalign.serve.candidates import load_prompts
from lexalign.serve.launch import ServeConfig, start_server

VARIANTS = {"worker process (vLLM default)": "false", "in engine core": "true"}


def one_start(model: str, in_process: str, prompts: list[list[dict[str, str]]], tokens: int,
              work_dir: str) -> dict:
    from openai import OpenAI

    config = load_config(ServeConfig, ROOT / "configs" / "serve.yaml", [
        f"run={model}", "port=0", f"work_dir={work_dir}", "enforce_eager=true", "shutdown_timeout_s=10",
        f"cpu_in_process_worker={in_process}"])
    started = time.monotonic()
    handle = start_server(config, ephemeral_key=True, quiet=True)
    ready = time.monotonic() - started
    try:
        client = OpenAI(base_url=handle.base_url, api_key=handle.api_key)
        name = handle.model_names[-1]

        def timed(messages: list[dict[str, str]]) -> int:
            reply = client.chat.completions.create(model=name, messages=messages, max_tokens=tokens, temperature=0,
                                                   extra_body={"ignore_eos": True})
            return reply.usage.completion_tokens

        def answers(numbered: tuple[int, list[dict[str, str]]]) -> list[str | None]:
            number, messages = numbered
            greedy = client.chat.completions.create(model=name, messages=messages, max_tokens=96, temperature=0)
            sampled = client.chat.completions.create(model=name, messages=messages, max_tokens=96, n=2,
                                                     temperature=0.9, top_p=0.95, seed=number)
            return [greedy.choices[0].message.content] + [c.message.content for c in sampled.choices]

        with ThreadPoolExecutor(8) as pool:
            begin = time.monotonic()
            generated = sum(pool.map(timed, prompts))
            seconds = time.monotonic() - begin
            texts = list(pool.map(answers, enumerate(prompts)))
    finally:
        begin = time.monotonic()
        handle.stop()
        stop = time.monotonic() - begin
    return {"ready_s": ready, "tokens_per_s": generated / seconds, "stop_s": stop, "texts": texts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a merged model folder, model folder or run directory that lexalign serves")
    parser.add_argument("--prompts", default="shipped:sft_valid.jsonl", help="chat records (validation)")
    parser.add_argument("--count", type=int, default=24, help="prompts per start")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per prompt in the timed pass")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    try:  # the chat records without their reference answers, checked line by line
        prompts = [prompt.messages for prompt in load_prompts(args.prompts, args.count)]
    except DataError as err:
        raise SystemExit(f"error: {err}") from None
    print(f"{args.model}: {len(prompts)} prompts from {args.prompts}, {args.rounds} rounds; "
          f"1-min load before: {load_average()}")
    results: dict[str, list[dict]] = {variant: [] for variant in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="vllm-start-") as work_dir:
        for round_number in range(args.rounds):
            order = list(VARIANTS) if round_number % 2 == 0 else list(reversed(VARIANTS))
            for variant in order:
                result = one_start(args.model, VARIANTS[variant], prompts, args.tokens, work_dir)
                results[variant].append(result)
                print(f"round {round_number + 1}, {variant}: ready {result['ready_s']:5.1f} s, "
                      f"{result['tokens_per_s']:5.0f} tokens/s, stop {result['stop_s']:4.1f} s; "
                      f"1-min load {load_average()}", flush=True)
    baseline, tried = (results[variant] for variant in VARIANTS)
    reference = baseline[0]["texts"]
    ready = [statistics.mean(r["ready_s"] for r in rows) for rows in (baseline, tried)]
    print(f"mean ready: {ready[0]:.1f} s (worker process) vs {ready[1]:.1f} s (in engine core): "
          f"{ready[0] / ready[1]:.2f}x faster to start")
    for variant, rows in results.items():
        for number, row in enumerate(rows):
            greedy = sum(a[0] == b[0] for a, b in zip(reference, row["texts"], strict=True))
            sampled = sum(a[1:] == b[1:] for a, b in zip(reference, row["texts"], strict=True))
            print(f"{variant}, start {number + 1}: greedy answers {greedy} of {len(reference)} and seeded samples "
                  f"{sampled} of {len(reference)} as in the first start of the default")


if __name__ == "__main__":
    main()
