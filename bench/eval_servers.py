"""Evaluating several stages: one vLLM server per stage vs ONE server whose weights are swapped in place.

    python bench/eval_servers.py --models runs/smollm2/base/model runs/smollm2/merged/sft runs/smollm2/merged/dpo \
        [--per-task 10] [--out bench/out/eval_servers.json]

The models are full model folders of one network (the base and merged exports of the stages), evaluated on the
same seeded draw of the shipped test split with ``configs/smollm2/eval.yaml`` (greedy, the generation tasks).

Baseline (what the SmolLM2 pipeline did before): one ``lexalign eval`` per model, each starting its own private
vLLM server. Candidate: one ``lexalign eval model=[...]`` call: one server, each model's weights reloaded in place
(vLLM ``reload_weights`` + prefix-cache reset) when its turn comes. Both run here one after the other, the
baseline first, never at the same time. Prints the wall times, their ratio, the server starts and swaps, and
whether every model gave the same greedy answers both ways; writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
TASKS = "[extract,presence,normalize,unfair]"


def run_eval(models: list[str], out: Path, per_task: int, label: str | None = None) -> float:
    command = [sys.executable, "-m", "lexalign.cli", "eval", "--config", str(ROOT / "configs/smollm2/eval.yaml"),
               "model=[" + ", ".join(models) + "]", "name=bench", f"output_dir={out}",
               f"data.max_per_task={per_task}", f"tasks={TASKS}", f"server.work_dir={out / 'serve'}"]
    if label:
        command.append(f"label={label}")
    started = time.monotonic()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"lexalign eval failed:\n{result.stderr[-3000:]}")
    return time.monotonic() - started


def results_by_spec(out: Path) -> dict[str, dict]:
    found = {}
    for path in sorted((out / "bench" / "eval").glob("*/results.json")):
        results = json.loads(path.read_text())
        rows = [json.loads(line) for line in (path.parent / "predictions.jsonl").read_text().splitlines()]
        found[results["model"]["spec"]] = {"results": results,
                                           "answers": {r["id"]: r["answer"] for r in rows if "answer" in r}}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--per-task", type=int, default=10)
    parser.add_argument("--out", default=str(OUT / "eval_servers.json"))
    args = parser.parse_args()
    work = OUT / "eval_servers"
    if work.exists():
        import shutil

        shutil.rmtree(work)
    load_before = os.getloadavg()

    separate_s = {}
    for number, model in enumerate(args.models):
        separate_s[model] = run_eval([model], work / "separate", args.per_task, label=f"m{number}")
        print(f"own server: {model}: {separate_s[model]:.1f} s", flush=True)
    shared_s = run_eval(args.models, work / "shared", args.per_task)
    print(f"one server, weights swapped: {shared_s:.1f} s", flush=True)
    load_after = os.getloadavg()

    separate, shared = results_by_spec(work / "separate"), results_by_spec(work / "shared")
    same = {spec: separate[spec]["answers"] == shared[spec]["answers"] for spec in args.models}
    starts = {spec: round(r["results"]["timing_s"].get("policy_start", 0.0), 1) for spec, r in separate.items()}
    swaps = {spec: r["results"]["model"].get("shared_server", {}).get("swap_s") for spec, r in shared.items()}
    total_separate = sum(separate_s.values())
    report = {
        "models": args.models, "items_per_task": args.per_task, "tasks": TASKS,
        "answers_per_model": len(next(iter(shared.values()))["answers"]),
        "separate_wall_s": {k: round(v, 1) for k, v in separate_s.items()}, "separate_total_s": round(total_separate, 1),
        "separate_server_start_s": starts, "shared_wall_s": round(shared_s, 1),
        "shared_server_start_s": round(next(iter(shared.values()))["results"]["timing_s"].get("policy_start", 0.0), 1),
        "shared_swap_s": swaps, "speedup": round(total_separate / shared_s, 2),
        "same_greedy_answers": same,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "loadavg_before": load_before, "loadavg_after": load_after},
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    print(json.dumps(report, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
