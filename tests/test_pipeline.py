"""The pipeline runner: runs steps in order, skips unchanged ones, re-runs changed ones, stops on failure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lexalign.config import ConfigError, load_config
from lexalign.errors import LexalignError
from lexalign.pipeline import PipelineConfig, PipelineError, expand, run_pipeline
from lexalign.report import build_report
from lexalign.runs import is_complete

ROOT = Path(__file__).resolve().parent.parent
TINY_BASE = ["tokenizer.vocab_size=300", "model.hidden_size=64", "model.num_attention_heads=1",
             "model.num_key_value_heads=1", "model.intermediate_size=128", "model.num_hidden_layers=1",
             "model.max_position_embeddings=256", "pretraining.max_steps=2", "pretraining.seq_len=64",
             "pretraining.batch_size=2", "pretraining.warmup_steps=0", "pretraining.threads=1",
             "pretraining.log_every=1", "pretraining.eval_max_blocks=2"]


def write_pipeline(folder: Path, corpus: Path, chat: Path, sft_steps: int = 2, extra_sft: list[str] | None = None) -> Path:
    config = {
        "name": "mini",
        "output_dir": str(folder / "runs"),
        "steps": [
            {"id": "base", "command": ["base", "build"], "config": str(ROOT / "configs" / "base.yaml"),
             "overrides": ["name={name}", "output_dir={output_dir}", f"corpus={corpus}", *TINY_BASE],
             "inputs": [str(corpus)], "output": "{run}/base"},
            {"id": "sft", "command": ["sft"], "config": str(ROOT / "configs" / "sft.yaml"),
             "overrides": ["name={name}", "output_dir={output_dir}", "model.path={run}/base/model",
                           f"data.train={chat}", f"data.valid={chat}", "model.quantization.bits=null",
                           f"training.max_steps={sft_steps}", "training.eval_steps=1", "training.save_steps=100",
                           "training.per_device_train_batch_size=2", "training.max_length=128", "model.threads=1",
                           *(extra_sft or [])],
             "inputs": ["{run}/base", str(chat)], "output": "{run}/sft"},
        ],
    }
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture()
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("This Agreement shall be governed by the laws of the State of New York. " * 400)
    chat = tmp_path / "chat.jsonl"
    record = {"messages": [{"role": "user", "content": "Find the Governing Law clause."},
                           {"role": "assistant", "content": "Not present."}]}
    chat.write_text((json.dumps(record) + "\n") * 8)
    return corpus, chat


def state(folder: Path) -> dict:
    return json.loads((folder / "runs" / "mini" / "pipeline.json").read_text())["steps"]


@pytest.mark.slow
def test_pipeline_skips_unchanged_and_reruns_changed_steps(tmp_path: Path, inputs: tuple[Path, Path]) -> None:
    corpus, chat = inputs
    config = write_pipeline(tmp_path, corpus, chat)
    root = run_pipeline(config, [])
    assert is_complete(root / "base") and is_complete(root / "sft")
    first = state(tmp_path)
    assert not first["base"]["skipped"] and not first["sft"]["skipped"]
    sft_finished = first["sft"]["finished_at"]

    run_pipeline(config, [])                        # nothing changed: both skipped
    second = state(tmp_path)
    assert second["base"]["skipped"] and second["sft"]["skipped"]
    assert second["sft"]["finished_at"] == sft_finished

    config = write_pipeline(tmp_path, corpus, chat, sft_steps=3)   # the SFT step changed: only it runs
    run_pipeline(config, [])
    third = state(tmp_path)
    assert third["base"]["skipped"] and not third["sft"]["skipped"]

    run_pipeline(config, [], start_from="base")     # --from re-runs the step and everything after it
    fourth = state(tmp_path)
    assert not fourth["base"]["skipped"] and not fourth["sft"]["skipped"]

    report = build_report(root)
    text = (report / "report.md").read_text()
    assert "Pipeline steps and wall time" in text and "| sft | complete |" in text
    assert (report / "report.html").is_file() and (report / "sft-training.png").is_file()

    data = yaml.safe_load(config.read_text())       # a step added in front: it runs, the others stay skipped
    data["steps"].insert(0, {"id": "data", "command": ["data", "stats", "--out", "{run}/data"],
                             "output": "{run}/data/stats.json"})
    config.write_text(yaml.safe_dump(data))
    run_pipeline(config, [])
    fifth = state(tmp_path)
    assert list(fifth) == ["data", "base", "sft"]  # listed (and reported) in the config's order
    assert not fifth["data"]["skipped"] and fifth["base"]["skipped"] and fifth["sft"]["skipped"]


def test_failed_step_stops_the_chain_and_names_it(tmp_path: Path, inputs: tuple[Path, Path]) -> None:
    corpus, chat = inputs
    config = write_pipeline(tmp_path, corpus, chat)
    data = yaml.safe_load(config.read_text())
    data["steps"][0]["overrides"].append("model.hidden_size=-1")   # the base step fails validation
    config.write_text(yaml.safe_dump(data))
    with pytest.raises(PipelineError) as info:
        run_pipeline(config, [])
    message = str(info.value)
    assert "step 'base' failed" in message and "exit code 2" in message and "hidden_size" in message
    assert "sft" not in state(tmp_path)              # the chain stopped
    assert not (tmp_path / "runs" / "mini" / "sft").exists()


def test_pipeline_config_problems_are_listed(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"steps": [{"id": "a", "command": ["sft"]}, {"id": "a", "output": "x"}]}))
    with pytest.raises(ConfigError) as info:
        load_config(PipelineConfig, path)
    keys = {p.key for p in info.value.problems}
    assert {"steps", "steps[0].output", "steps[1].command"} <= keys
    with pytest.raises(LexalignError, match="no such step"):
        run_pipeline(write_pipeline(tmp_path, tmp_path, tmp_path), [], start_from="nope")


def test_a_step_with_several_outputs_is_done_only_when_all_are(tmp_path: Path) -> None:
    """One eval step writes one folder per stage (one server for all of them): all must be complete."""
    from lexalign.pipeline import StepSection, output_done
    from lexalign.runs import COMPLETE_MARKER

    config = PipelineConfig(name="mini", output_dir=str(tmp_path / "runs"))
    step = StepSection(id="eval", command=["eval"], output="{run}/eval/base", outputs=["{run}/eval/sft"])
    for label in ("base", "sft"):
        (tmp_path / "runs" / "mini" / "eval" / label).mkdir(parents=True)
    (tmp_path / "runs" / "mini" / "eval" / "base" / COMPLETE_MARKER).write_text("")
    assert not output_done(step, config)
    (tmp_path / "runs" / "mini" / "eval" / "sft" / COMPLETE_MARKER).write_text("")
    assert output_done(step, config)
    assert StepSection(id="x", command=["eval"], outputs=["a"]).problems() == []
    assert [p.key for p in StepSection(id="x", command=["eval"]).problems()] == ["output"]


def test_tiny_pipeline_evaluates_every_stage_in_one_step() -> None:
    from lexalign.evaluation.run import EvalConfig
    from lexalign.pipeline import step_argv

    config = load_config(PipelineConfig, ROOT / "configs" / "pipeline" / "tiny.yaml")
    evals = [step for step in config.steps if step.command[0] == "eval"]
    assert len(evals) == 1
    argv = step_argv(evals[0], config)
    eval_config = load_config(EvalConfig, ROOT / "configs" / "eval.yaml", [a for a in argv if "=" in a])
    assert eval_config.models() == [f"runs/tiny/{stage}" for stage in ("base/model", "sft", "dpo", "ppo")]
    assert [expand(o, config) for o in evals[0].all_outputs()] == [f"runs/tiny/eval/{s}" for s in ("base", "sft", "dpo",
                                                                                                  "ppo")]


def test_the_demo_judges_every_stage_against_sft_with_the_reward_model_in_its_eval_step() -> None:
    """configs/pipeline/smollm2.yaml: DPO and PPO leave their reward-model win rate to the eval step, which
    computes it for every stage from the answers its one vLLM server gave (the SFT answers once)."""
    from lexalign.evaluation.run import EvalConfig
    from lexalign.pipeline import step_argv
    from lexalign.rlhf.dpo import DPOStageConfig
    from lexalign.rlhf.online import OnlineStageConfig

    config = load_config(PipelineConfig, ROOT / "configs" / "pipeline" / "smollm2.yaml")
    steps = {step.id: step for step in config.steps}
    for stage, schema in (("dpo", DPOStageConfig), ("ppo", OnlineStageConfig)):
        argv = step_argv(steps[stage], config)
        overrides = [a for a in argv if a.startswith("eval.")]  # (the other inputs exist only in a run)
        stage_config = load_config(schema, ROOT / steps[stage].config, overrides)
        assert stage_config.eval.num_prompts == 0, stage
    argv = step_argv(steps["eval"], config)
    eval_config = load_config(EvalConfig, ROOT / steps["eval"].config, [a for a in argv if "=" in a])
    assert "winrate" in eval_config.tasks and argv[argv.index("--reward") + 1] == "runs/smollm2/reward"
    assert eval_config.winrate.against == "runs/smollm2/merged/sft" and "runs/smollm2/merged/sft" in eval_config.models()


@pytest.mark.slow
def test_steps_and_set_run_a_short_form_that_is_never_taken_for_the_full_run(tmp_path: Path,
                                                                           inputs: tuple[Path, Path]) -> None:
    """--steps / --set, and an incomplete output (no COMPLETE marker) is never taken as done."""
    from lexalign.runs import read_manifest

    corpus, chat = inputs
    config = write_pipeline(tmp_path, corpus, chat)
    root = run_pipeline(config, [], only=["base"])           # --steps base: the SFT step is not run
    assert is_complete(root / "base") and not (root / "sft").exists()
    assert list(state(tmp_path)) == ["base"]

    run_pipeline(config, [], step_overrides=["sft:training.max_steps=1"])   # --set wins over the step's own
    after = state(tmp_path)
    assert after["base"]["skipped"] and not after["sft"]["skipped"]
    assert after["sft"]["command"].endswith("training.max_steps=1")
    assert read_manifest(root / "sft")["results"]["global_step"] == 1

    run_pipeline(config, [], step_overrides=["sft:training.max_steps=1"])   # the same short form: skipped
    assert state(tmp_path)["sft"]["skipped"]
    run_pipeline(config, [])                                  # the full form is not the short one: it runs
    after = state(tmp_path)
    assert not after["sft"]["skipped"] and "training.max_steps=1" not in after["sft"]["command"]
    assert read_manifest(root / "sft")["results"]["global_step"] == 2

    # A step whose run directory exists without COMPLETE (killed mid-run) runs again, even if recorded as done
    (root / "sft" / "COMPLETE").unlink()
    run_pipeline(config, [])
    after = state(tmp_path)
    assert after["base"]["skipped"] and not after["sft"]["skipped"] and is_complete(root / "sft")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"only": ["sft", "nope"]}, "--steps: no step nope; the steps are: base, sft"),
    ({"step_overrides": ["nope:training.max_steps=3"]}, "no step 'nope'; the steps are: base, sft"),
    ({"step_overrides": ["training.max_steps=3"]}, "expected STEP:key=value"),
    ({"step_overrides": ["sft:training.max_steps"]}, "expected STEP:key=value"),
    ({"only": ["sft"], "start_from": "base"}, "--from base: not among --steps sft"),
])
def test_bad_steps_and_set_are_clear_errors(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(LexalignError) as info:
        run_pipeline(write_pipeline(tmp_path, tmp_path, tmp_path), [], **kwargs)
    assert message in str(info.value)
    assert not (tmp_path / "runs" / "mini" / "base").exists()   # nothing ran
