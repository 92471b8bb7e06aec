"""The README and docs/ say what the code is: the generated settings pages are current, every link and
every `python -m` command leads somewhere, the code map names the folders that exist, no example uses a
variable the launcher no longer reads, and the README stays a page one reads in minutes."""

import importlib.util
import re

import pytest

from llava.train import settings_docs

from train_helpers import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_settings_pages_are_what_the_code_generates():
    for relative, document in settings_docs.DOCUMENTS.items():
        assert (ROOT / relative).read_text(encoding="utf-8") == document(), (
            f"{relative} is not current: python -m llava.train.settings_docs"
        )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_leads_to_a_file(page):
    text = page.read_text(encoding="utf-8")
    targets = [t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in t]
    missing = [t for t in targets if t and not (page.parent / t).exists()]
    assert not missing, f"{page.name} links to {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_python_module_a_page_names_exists(page):
    modules = set(re.findall(r"python -m (llava(?:\.\w+)+)", page.read_text(encoding="utf-8")))
    assert not [m for m in modules if importlib.util.find_spec(m) is None]


def _code_map() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## The code in one page\n", 1)[1]
    return section.split("```", 2)[1]


def test_the_code_map_names_every_package_and_nothing_that_is_not_there():
    code_map = _code_map()
    packages = {p.name for p in (ROOT / "llava").iterdir() if (p / "__init__.py").is_file()}
    named = set(re.findall(r"^  (\w+)/", code_map, re.M))
    assert named == packages
    for top in re.findall(r"^(\S+)", code_map, re.M):
        assert (ROOT / top).exists(), top
    files = re.findall(r"\b(\w+\.py)\b", code_map)
    assert files and all(list((ROOT / "llava").rglob(name)) for name in files), files


def test_no_page_uses_a_variable_the_launcher_no_longer_reads():
    script = (ROOT / "train_italian_video.sh").read_text(encoding="utf-8")
    table = script.split("declare -A RETIRED=(", 1)[1].split("\n)\n", 1)[0]
    retired = re.findall(r"\[([A-Z0-9_]+)\]=", table)
    assert "LM_PATH" in retired and "SAVE_EVERY_MINUTES" in retired
    for page in PAGES:
        used = set(re.findall(rf"\b({'|'.join(retired)})=\S", page.read_text(encoding="utf-8")))
        assert not used, f"{page.name} sets {sorted(used)}, which train_italian_video.sh refuses"


def test_the_readme_is_a_short_read():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 160, f"README.md has {len(lines)} lines: move detail to docs/"
