"""The stages and their config classes, by name: one table for the CLI, the pipeline and the tests.

A config file ``configs/<stage>.yaml`` or ``configs/<stage>-<variant>.yaml`` belongs to ``<stage>``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

STAGE_CONFIGS: dict[str, str] = {
    "pipeline": "lexalign.pipeline:PipelineConfig",
    "data": "lexalign.data.build:DataBuildConfig",
    "base": "lexalign.basemodel:BaseModelConfig",
    "import": "lexalign.base_import:ImportConfig",
    "sft": "lexalign.sft.train:SFTStageConfig",
    "reward": "lexalign.reward.train:RewardStageConfig",
    "dpo": "lexalign.rlhf.dpo:DPOStageConfig",
    "ppo": "lexalign.rlhf.online:OnlineStageConfig",
    "annotate": "lexalign.reward.annotate:AnnotateConfig",
    "serve": "lexalign.serve.launch:ServeConfig",
    "candidates": "lexalign.serve.candidates:CandidatesConfig",
    "chat": "lexalign.serve.chat:ChatConfig",
    "eval": "lexalign.evaluation.run:EvalConfig",
}


def config_class(stage: str) -> Any:
    module_name, _, class_name = STAGE_CONFIGS[stage].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def stage_of_config_file(path: Path) -> str | None:
    """``configs/sft-7b.yaml`` -> "sft", ``configs/pipeline/tiny.yaml`` -> "pipeline"; None for other files
    (e.g. accelerate's own configs in configs/accelerate/)."""
    if Path(path).parent.name == "pipeline":
        return "pipeline"
    stem = Path(path).stem.split("-")[0]
    return stem if stem in STAGE_CONFIGS else None
