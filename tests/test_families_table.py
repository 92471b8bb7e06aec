"""The families table (llava.modeling.families) agrees with the family files, with what is registered,
with LLaVA's module paths of the families, and with the family table of docs/coming_from_llava.md."""

import ast
import importlib
import re
from pathlib import Path

import pytest
from transformers import AutoConfig, AutoModelForCausalLM

import llava.model
from llava.modeling.families import FAMILIES
from llava.testing import TINY_LANGUAGE_CONFIGS

ROOT = Path(__file__).resolve().parent.parent


def _imports_the_causal_lm_mixin(path: Path) -> bool:
    """A family file is a module that builds a causal-LM class on the core's mixin, whatever its name."""
    return any(
        isinstance(node, ast.ImportFrom)
        and node.level == 1
        and node.module == "llava_arch"
        and any(alias.name == "LlavaMetaForCausalLM" for alias in node.names)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
    )


def test_every_family_file_has_a_row_and_every_row_a_file():
    files = {p.stem for p in (ROOT / "llava" / "modeling").glob("*.py") if _imports_the_causal_lm_mixin(p)}
    assert files == {f.llava_type for f in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.llava_type)
def test_row_names_the_classes_its_file_defines_and_registers(family):
    causal_lm, config = getattr(llava.model, family.causal_lm), getattr(llava.model, family.config)
    assert config.model_type == family.llava_type
    assert causal_lm.config_class is config and causal_lm.__module__ == f"llava.modeling.{family.llava_type}"
    assert AutoConfig.for_model(family.llava_type).__class__ is config
    assert AutoModelForCausalLM._model_mapping[config] is causal_lm
    # The llava config is the stock config plus mm_* settings: its base is the stock type's config,
    # which is also what the tiny test config is.
    stock_config = type(TINY_LANGUAGE_CONFIGS[family.llava_type]())
    assert stock_config.model_type == family.stock_type and config.__mro__[1] is stock_config
    assert llava.model.AVAILABLE_MODELS[family.llava_type] == f"{family.causal_lm}, {family.config}"
    for name in family.also_exported:
        assert getattr(llava.model, name).__module__ == causal_lm.__module__


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.llava_type)
def test_llava_module_path_of_the_family_is_its_module(family):
    """LLaVA's path (`llava.model.language_model.llava_qwen`, which lmms-eval imports) gives the family's own
    module, so its classes are the registered ones."""
    old = importlib.import_module(f"llava.model.language_model.{family.llava_type}")
    assert old is importlib.import_module(f"llava.modeling.{family.llava_type}")
    assert getattr(old, family.config) is getattr(llava.model, family.config)


def readme_family_table() -> list[tuple[str, list[str], str]]:
    """(family, classes, model_type) of each row of the table in the "Using the model" section of
    docs/coming_from_llava.md."""
    text = (ROOT / "docs" / "coming_from_llava.md").read_text(encoding="utf-8")
    assert "\n## Using the model\n" in text, "docs/coming_from_llava.md has no section 'Using the model'"
    section = text.split("\n## Using the model\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    assert lines[0].replace(" ", "") == "|family|classes|model_type|", lines[0]
    rows = []
    for line in lines[2:]:  # after the header and its separator
        name, classes, model_type = (cell.strip() for cell in line.strip("|").split("|"))
        rows.append((name, re.findall(r"`(\w+)`", classes), model_type.strip("`")))
    return rows


def test_the_docs_family_table_matches_the_families_table():
    expected = [(f.display_name, [f.causal_lm, f.config, *f.also_exported], f.llava_type) for f in FAMILIES]
    assert readme_family_table() == expected
