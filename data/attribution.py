"""ATTRIBUTION.md for the built datasets: who made each corpus, its license, and what was derived and how.

CC BY 4.0 requires credit, a link to the license and an indication of changes; this file is that notice.
It is generated from the build config so that the numbers it states are the ones used.
"""

from __future__ import annotations

from typing import Any

CC_BY = "Creative Commons Attribution 4.0 International (CC BY 4.0), https://creativecommons.org/licenses/by/4.0/"


def _count(stats: dict[str, Any], section: str, key: str = "records") -> str:
    values = stats.get(section, {})
    return ", ".join(f"{split} {v.get(key, 0)}" for split, v in values.items()) or "none"


def attribution_markdown(config: Any, stats: dict[str, Any]) -> str:
    c, t, a, s = config.cuad, config.claudette, config.acord, config.splits
    sft_by_task = {split: v["by_source_task"] for split, v in stats.get("sft", {}).items()}
    lines = [
        "# Attribution and licenses of the shipped datasets",
        "",
        "The files in this folder are derived from three openly licensed legal corpora by `lexalign data build`",
        "(code: `data/build.py` and the per-corpus modules in `data/`). Each corpus is licensed under",
        f"{CC_BY}.",
        "The derived files are shared under the same terms: credit the original authors below.",
        "The corpora's own license texts are in `LICENSES/`. Nothing here is legal advice.",
        "",
        "Changes made (all corpora): records were reformatted into chat, ranking and preference formats, sampled,",
        "capped and split by document; prompts and the assistant's phrasing were written by the lexalign project.",
        "Whitespace was normalized everywhere (a run of spaces becomes one space, a run holding a line break one",
        "newline); ACORD's CSV-escaped doubled quotes were undone. Quoted CUAD spans are otherwise verbatim.",
        "",
        "## CUAD — Contract Understanding Atticus Dataset (v1)",
        "",
        "- Authors: The Atticus Project; Dan Hendrycks, Collin Burns, Anya Chen, Spencer Ball.",
        "- Paper: \"CUAD: An Expert-Annotated NLP Dataset for Legal Contract Review\", NeurIPS 2021 Datasets and",
        "  Benchmarks, arXiv:2103.06268.",
        "- URL: https://www.atticusprojectai.org/cuad , https://github.com/TheAtticusProject/cuad",
        "- License: CC BY 4.0 (see `LICENSES/cuad-CUAD_v1_README.txt`, section LICENSE).",
        "- Used: the training part of a contract-level split (398 EDGAR contracts, 41 clause categories, labels by",
        "  lawyers and law students), `category_descriptions.csv`.",
        f"- Derived (`sft_*.jsonl`, `meta.source = \"cuad\"`): contracts cut into windows of at most {c.window_chars}",
        f"  characters (overlap {c.window_overlap}); per window and category, clause extraction (verbatim spans or",
        "  'Not present.'), Yes/No presence questions and, for names/dates/law/periods, CUAD's normalized answers.",
        f"  Negatives sampled at {c.negative_ratio:g} per positive. Contract text of train-split contracts also forms",
        "  part of `pretrain_corpus.txt` (whitespace-normalized).",
        "",
        "## CLAUDETTE — unfair clauses in online Terms of Service (English)",
        "",
        "- Authors: Andrea Galassi, Francesca Lagioia, Agnieszka Jabłonowska, Marco Lippi (and the CLAUDETTE team:",
        "  Lippi, Pałka, Contissa, Lagioia, Micklitz, Sartor, Torroni, \"CLAUDETTE: an automated detector of",
        "  potentially unfair clauses in online terms of service\", Artificial Intelligence and Law, 2019).",
        "- Paper: \"Unfair clause detection in terms of service across multiple languages\", Artificial Intelligence",
        "  and Law, 2024.",
        "- URL: https://github.com/nlp-unibo/Multilingual-Unfair-Clause-Detection",
        "- License: CC BY 4.0 (see `LICENSES/claudette-LICENSE.txt`).",
        "- Used: the English Terms of Service of 40 online services, one sentence per line, with category/level tags.",
        "- Derived (`sft_*.jsonl`, `meta.source = \"claudette\"`): each sentence asks whether the clause is",
        f"  potentially unfair; tag levels {t.unfair_levels} count as potentially unfair; the one-sentence reasons per",
        "  category were written by the lexalign project. Fair sentences sampled at "
        f"{t.fair_ratio:g} per unfair one. Train-split",
        "  Terms of Service also form part of `pretrain_corpus.txt`.",
        "",
        "## ACORD — Atticus Clause Retrieval Dataset",
        "",
        "- Authors: The Atticus Project; Steven H. Wang, Maksim Zubkov, Kexin Fan, Sarah Harrell, Yuyang Sun, Wei Chen,",
        "  Andreas Plesner, Roger Wattenhofer.",
        "- Paper: \"ACORD: An Expert-Annotated Retrieval Dataset for Legal Contract Drafting\", ACL 2025,",
        "  arXiv:2501.06582.",
        "- URL: https://github.com/TheAtticusProject/acord",
        "- License: the dataset is CC BY 4.0 (per the corpus notes shipped with it); the repository's own `LICENSE`",
        "  file, an MIT license for its code, is copied as `LICENSES/acord-LICENSE.txt`.",
        "- Used: attorney-written drafting queries, the clause corpus and the lawyers' 1-5 star relevance ratings",
        "  (qrels train and valid).",
        f"- Derived (`acord_rankings_*.jsonl`): per query, {a.groups_per_query} groups of {a.group_size} rated",
        f"  clauses (at most {a.max_response_chars} characters each, {a.zero_star_per_group} one-star clause per",
        "  group) ranked by stars (ties kept); `acord_pairs_*.jsonl`: every better/worse pair of a group, margin =",
        f"  star gap. ACORD's valid queries stay valid; {s.acord_test_fraction:g} of its train queries became test.",
        "",
        "## Contents of this build",
        "",
        f"- SFT chat records: {_count(stats, 'sft')}",
        f"- by task: " + "; ".join(f"{split}: " + ", ".join(f"{k} {v}" for k, v in tasks.items())
                                   for split, tasks in sft_by_task.items()),
        f"- ACORD ranking groups: {_count(stats, 'acord_rankings')}",
        f"- ACORD preference pairs: {_count(stats, 'acord_pairs', 'pairs')}",
        f"- pretraining text: {stats.get('pretrain', {}).get('bytes', 0):,} bytes",
        "",
    ]
    return "\n".join(lines)
