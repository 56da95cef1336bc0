"""The config system: precedence, unknown keys, every problem at once, TRL sections, every shipped config."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from lexalign.config import ConfigError, Problem, load_config, problem_if, trl_section

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@dataclass
class Inner:
    size: int = 4
    rate: float = 0.5

    def problems(self) -> list[Problem]:
        return problem_if(self.size <= 0, "size", self.size, "must be positive")


@dataclass
class Listed:
    paths: list[str] = field(default_factory=list)

    def problems(self) -> list[Problem]:
        return [Problem(f"paths[{i}]", "must end in .jsonl", p) for i, p in enumerate(self.paths)
                if not p.endswith(".jsonl")]


@dataclass
class Demo:
    name: str = "demo"
    mode: Literal["a", "b"] = "a"
    inner: Inner = field(default_factory=Inner)
    tags: list[str] = field(default_factory=list)
    training: dict[str, Any] = trl_section("trl.SFTConfig")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "demo.yaml"
    path.write_text(text)
    return path


def test_precedence_defaults_yaml_command_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: from-yaml\ninner:\n  size: 8\n")
    config = load_config(Demo, path, ["inner.size=16", "tags=[x, y]"])
    assert config.name == "from-yaml"          # YAML beats default
    assert config.inner.size == 16             # command line beats YAML
    assert config.inner.rate == 0.5            # default kept
    assert config.tags == ["x", "y"]


def test_bad_config_lists_every_problem_with_key_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: ok\nmode: c\ninner:\n  size: -1\n  colour: red\ntraining:\n  max_stepz: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(Demo, path, ["inner.rate=fast"])
    problems = {p.key: p for p in info.value.problems}
    assert set(problems) == {"mode", "inner.size", "inner.colour", "inner.rate", "training.max_stepz"}
    assert problems["mode"].where == f"{path}:2"
    assert problems["inner.colour"].where == f"{path}:5"
    assert problems["inner.rate"].where == "command line"
    assert "max_steps" in problems["training.max_stepz"].message  # a suggestion from TRL's own fields
    assert "expected one of 'a', 'b'" in str(info.value)


def test_cross_field_rules_run_after_types_are_right(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(Demo, write(tmp_path, "inner:\n  size: 0\n"))
    assert [p.key for p in info.value.problems] == ["inner.size"]
    assert "must be positive" in str(info.value)


def test_a_value_of_the_wrong_type_is_one_problem_not_one_per_item(tmp_path: Path) -> None:
    # a bare string where a list belongs would otherwise also fail the item rule once per letter
    with pytest.raises(ConfigError) as info:
        load_config(Listed, None, ["paths=a.txt"])
    assert [p.key for p in info.value.problems] == ["paths"]
    assert "list" in str(info.value)
    with pytest.raises(ConfigError) as info:  # the item rule itself still runs on a list
        load_config(Listed, None, ["paths=[a.jsonl, b.txt]"])
    assert [p.key for p in info.value.problems] == ["paths[1]"]


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"demo.yaml:2: yaml: not valid YAML"):
        load_config(Demo, write(tmp_path, "name: a\nmode: b: c\n"))


def test_missing_file_and_bad_override_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(Demo, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="key=value"):
        load_config(Demo, None, ["inner.size"])


def test_defaults_validate_without_a_file() -> None:
    assert load_config(Demo).inner.size == 4


def stage_config_files() -> list[Path]:
    from lexalign.stages import stage_of_config_file

    return [f for f in sorted(CONFIGS.rglob("*.yaml")) if stage_of_config_file(f) is not None]


def test_every_top_level_config_belongs_to_a_stage() -> None:
    from lexalign.stages import stage_of_config_file

    unknown = [f.name for f in sorted(CONFIGS.glob("*.yaml")) if stage_of_config_file(f) is None]
    assert not unknown, f"add these to lexalign.stages.STAGE_CONFIGS: {unknown}"


@pytest.mark.parametrize("path", stage_config_files(), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_shipped_config_validates(path: Path) -> None:
    from lexalign.stages import config_class, stage_of_config_file

    load_config(config_class(stage_of_config_file(path)), path)
