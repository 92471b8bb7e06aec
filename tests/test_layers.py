"""Imports point one way, layer over layer: the model (llava/model/) imports nothing else of llava but its
constants, errors and frame sampling; the data layer (llava/data/) stands below serving, evaluation and
training; serving below evaluation; evaluation below training; the demo and the benchmarks above all of
them. LLaVA's conversations (llava/conversation.py) need nothing of the templates that tokenize through
them. Read from the source, so that a lazy import inside a function counts too."""

import ast

import pytest

from train_helpers import ROOT

PACKAGE = ROOT / "llava"
# module (file or package folder, relative to llava/) -> the packages it must not import
ABOVE_THE_MODEL = ("llava.data", "llava.serve", "llava.eval", "llava.train", "llava.demo", "llava.bench")
RULES = {
    "model": ABOVE_THE_MODEL,
    "data": ABOVE_THE_MODEL[1:],
    "serve": ABOVE_THE_MODEL[2:],
    "eval": ABOVE_THE_MODEL[3:],
    "train": ABOVE_THE_MODEL[4:],
    "demo": ABOVE_THE_MODEL[5:],
    "conversation.py": ("llava.data",),
}


def imported_modules(path):
    """Every module a file imports, relative imports resolved against its package."""
    package = ".".join(path.relative_to(ROOT).parts[:-1])  # a module's package; an __init__.py's own
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module) if part)
            yield module
            yield from (f"{module}.{alias.name}" for alias in node.names)  # `from .. import demo`


@pytest.mark.parametrize("where", sorted(RULES))
def test_imports_point_one_way(where):
    target = PACKAGE / where
    files = sorted(target.rglob("*.py")) if target.is_dir() else [target]
    assert files
    wrong = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in files
        for module in imported_modules(path)
        if any(module == banned or module.startswith(banned + ".") for banned in RULES[where])
    ]
    assert not wrong


def test_no_module_is_over_500_lines():
    """A module does one job; past 500 lines it is doing two (split it where a reader would look)."""
    long = {
        str(path.relative_to(ROOT)): n
        for path in sorted(PACKAGE.rglob("*.py"))
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > 500
    }
    assert not long
