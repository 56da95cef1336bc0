"""Where a pipeline run's time went: per step, split into vLLM server starts, generation, training, the stage's
own evaluations and the rest (loading, saving, merging, scoring).

    python bench/pipeline_time.py [runs/smollm2] [--load-log FILE] [--markdown]

Reads what the run left behind, nothing is re-run: ``pipeline.json`` (each step's wall seconds and command), the
steps' logs (``logs/<step>.log``: "vLLM ready in X s", "N tokens in X s", "weights reloaded in X s", and the timestamps of the
lines that open and close a stage's phases, chosen by the step's stage: its ``lexalign`` subcommand, so a GRPO
step run by ``lexalign ppo`` is read as PPO) and the run directories' ``metrics.jsonl`` (the trainers'
``train_runtime`` and ``eval_runtime``). ``--load-log`` takes lines of ``HH:MM:SS load1 load5 load15`` sampled
during the run and reports their range, so an idle run can be told from a loaded one.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from lexalign.runs import read_metrics

CATEGORIES = ("server start", "generation", "training", "stage evaluation", "other")
STAMP = re.compile(r"^(\d\d:\d\d:\d\d) ")
SERVER_READY = re.compile(r"vLLM ready in ([\d.]+) s")
GENERATED = re.compile(r"(\d+) tokens in ([\d.]+) s")
RELOADED = re.compile(r"weights reloaded in ([\d.]+) s")
# Per stage (the step's lexalign subcommand): a phase runs from a line matching its opening pattern to the next
# line matching its closing pattern; the stage's log says when each phase starts and ends.
PHASES: dict[str, list[tuple[str, re.Pattern[str], re.Pattern[str]]]] = {
    "reward": [("stage evaluation", re.compile(r"scoring \d+ held-out pairs before"),
                re.compile(r"held-out pairs scored before training")),
               ("stage evaluation", re.compile(r"scoring \d+ held-out pairs with the saved"),
                re.compile(r"pairwise accuracy"))],
    # the reward model's win rate of the trained policy against the SFT policy: greedy answers, then scores
    "dpo": [("stage evaluation", re.compile(r"win rate: \d+ held-out prompts"), re.compile(r"stage dpo complete"))],
    # TRL's PPO trainer logs no train_runtime: its training runs from the policy's set-up to the win rate (or the
    # end); a GRPO run (same subcommand) has a train_runtime, which wins
    "ppo": [("training", re.compile(r"rlhf.policy: policy: "), re.compile(r"win rate: |stage \w+ complete")),
            ("stage evaluation", re.compile(r"win rate: \d+ held-out prompts"), re.compile(r"stage \w+ complete"))],
    # one server for every model: generation from "ready" to "stopping" (weight swaps in between are counted as
    # server time), then the reward model scores the test pairs
    "eval": [("generation", re.compile(r"vLLM ready in"), re.compile(r"stopping the vLLM server")),
             ("stage evaluation", re.compile(r"reward model: "), re.compile(r"stage eval complete"))],
}


@dataclass
class StepTime:
    step: str
    seconds: float
    parts: dict[str, float] = field(default_factory=dict)

    def add(self, category: str, seconds: float) -> None:
        self.parts[category] = self.parts.get(category, 0.0) + seconds

    def finish(self) -> None:
        known = sum(v for k, v in self.parts.items() if k != "other")
        self.parts["other"] = max(0.0, self.seconds - known)


def stamped_lines(log: Path) -> list[tuple[datetime, str]]:
    """The log's timestamped lines (progress bars use carriage returns: each becomes its own line)."""
    if not log.is_file():
        return []
    lines, day = [], datetime(2000, 1, 1)
    previous: datetime | None = None
    for raw in log.read_text(encoding="utf-8", errors="replace").replace("\r", "\n").splitlines():
        match = STAMP.match(raw)
        if not match:
            continue
        stamp = datetime.combine(day.date(), datetime.strptime(match.group(1), "%H:%M:%S").time())
        if previous is not None and stamp < previous:  # past midnight
            day += timedelta(days=1)
            stamp += timedelta(days=1)
        previous = stamp
        lines.append((stamp, raw))
    return lines


def stage_of(entry: dict) -> str:
    """The lexalign subcommand a step ran ("lexalign ppo --config ..." -> "ppo")."""
    words = str(entry.get("command", "")).split()
    return words[1] if len(words) > 1 else ""


def step_time(run: Path, step: str, entry: dict) -> StepTime:
    result = StepTime(step, float(entry.get("seconds", 0.0)))
    stage = stage_of(entry)
    lines = stamped_lines(run / "logs" / f"{step}.log")  # where `lexalign pipeline` writes every step's log
    output = Path(entry.get("output", ""))
    metrics = [] if stage == "eval" else read_metrics(output if output.is_dir() else output.parent)
    train_runtime = sum(float(row.get("train_runtime", 0.0)) for row in metrics)
    result.add("training", train_runtime)
    result.add("stage evaluation", sum(float(row.get("eval_runtime", 0.0)) for row in metrics))
    reloads = 0.0
    for _, text in lines:
        if match := SERVER_READY.search(text):
            result.add("server start", float(match.group(1)))
        if match := RELOADED.search(text):
            result.add("server start", float(match.group(1)))
            reloads += float(match.group(1))
        if stage != "eval" and (match := GENERATED.search(text)):  # eval: its generation window below
            result.add("generation", float(match.group(2)))
    for category, opening, closing in PHASES.get(stage, []):
        if category == "training" and train_runtime:
            continue
        start = None
        for stamp, text in lines:
            if start is None and opening.search(text):
                start = stamp
            elif start is not None and closing.search(text):
                result.add(category, (stamp - start).total_seconds())
                start = None
    if stage == "eval" and reloads:
        result.add("generation", -reloads)  # the weight swaps happened inside the generation window
    result.finish()
    return result


def load_range(load_log: Path | None) -> str:
    if load_log is None or not load_log.is_file():
        return "not recorded"
    values = []
    for number, line in enumerate(load_log.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            values.append(float(fields[1]))
        except (IndexError, ValueError):
            raise SystemExit(f"{load_log}:{number}: expected 'HH:MM:SS load1 load5 load15', got {line!r}") from None
    return f"1-min load average {min(values):.2f}-{max(values):.2f} over {len(values)} samples" if values else "empty"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", type=Path, default=Path("runs/smollm2"))
    parser.add_argument("--load-log", type=Path, default=None)
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args()
    state_file = args.run / "pipeline.json"
    if not state_file.is_file():
        raise SystemExit(f"{state_file}: no pipeline state; run `lexalign pipeline` first")
    state = json.loads(state_file.read_text(encoding="utf-8"))
    rows = [step_time(args.run, step, entry) for step, entry in state["steps"].items() if not entry.get("skipped")]
    total = sum(r.seconds for r in rows)
    sums = {c: sum(r.parts.get(c, 0.0) for r in rows) for c in CATEGORIES}
    if args.markdown:
        print("| step | seconds | " + " | ".join(CATEGORIES) + " |")
        print("|---|---:|" + "---:|" * len(CATEGORIES))
        for r in rows:
            print(f"| {r.step} | {r.seconds:,.0f} | " + " | ".join(
                f"{r.parts[c]:,.0f}" if r.parts.get(c) else "" for c in CATEGORIES) + " |")
        print(f"| **all** | **{total:,.0f}** | " + " | ".join(
            f"{sums[c]:,.0f} ({sums[c] / total:.0%})" for c in CATEGORIES) + " |")
    else:
        print(f"{'step':18}{'seconds':>9}" + "".join(f"{c:>18}" for c in CATEGORIES))
        for r in rows:
            print(f"{r.step:18}{r.seconds:>9.0f}" + "".join(f"{r.parts.get(c, 0.0):>18.0f}" for c in CATEGORIES))
        print(f"{'all':18}{total:>9.0f}" + "".join(f"{sums[c]:>12.0f} ({sums[c] / total:3.0%})" for c in CATEGORIES))
    print(f"\npipeline wall time {state.get('wall_time_s', total):,.0f} s = {state.get('wall_time_s', total) / 60:.1f} "
          f"min; {load_range(args.load_log)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
