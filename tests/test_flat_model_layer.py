"""llava/modeling/ is a flat folder that runs on its own: an exported checkpoint is to carry these modules
verbatim as Hugging Face custom code, loaded where llava is not installed.

Checked on the real files: every import is a one-dot import of a sibling module (the only relative form
transformers' custom-code loader follows), the standard library, or one of the packages such a folder may
rely on, DeepSpeed only inside a function (where ZeRO-3 is active). Then the folder is copied under another
package name and run in a process that cannot import llava: its GPT-2 family gives the installed package's
logits on a clip, registers nothing with transformers, and imports no DeepSpeed.
"""

import ast
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from llava.constants import IMAGE_TOKEN_INDEX
from llava.model import LlavaGPT2Config, LlavaGPT2ForCausalLM
from llava.modeling.families import BY_LLAVA_TYPE
from llava.testing import IMAGE_SIZE, SPECIAL_IDS, VOCAB, tiny_vision_args

ROOT = Path(__file__).resolve().parent.parent
MODELING = ROOT / "llava" / "modeling"
MODULES = sorted(MODELING.glob("*.py"))
SIBLINGS = {path.stem for path in MODULES}
# What an exported folder may ask of the environment it is loaded in, besides the standard library (PIL:
# the processor's pictures, which transformers' image processors read with it too).
ALLOWED_PACKAGES = {"torch", "transformers", "safetensors", "numpy", "PIL"}
# Imported only inside functions, and only where a run actually uses ZeRO-3.
LAZY_ONLY_PACKAGES = {"deepspeed"}


def imports_of(path: Path) -> list[tuple[ast.stmt, bool]]:
    """Every import statement of a module, with whether it runs only inside a function."""
    found = []

    def visit(node, in_function: bool):
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append((node, in_function))
        in_function = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in ast.iter_child_nodes(node):
            visit(child, in_function)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return found


def refusals(path: Path) -> list[str]:
    """The imports of a module that an exported folder could not satisfy, each with its line."""
    refused = []
    for node, in_function in imports_of(path):
        where = f"{path.name}:{node.lineno}"
        if isinstance(node, ast.ImportFrom) and node.level:
            if node.level != 1 or node.module not in SIBLINGS:
                dots = "." * node.level
                refused.append(f"{where} from {dots}{node.module or ''} (only `from .sibling import ...` is followed)")
            continue
        names = [node.module] if isinstance(node, ast.ImportFrom) else [alias.name for alias in node.names]
        for name in names:
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or top in ALLOWED_PACKAGES:
                continue
            if top in LAZY_ONLY_PACKAGES and in_function:
                continue
            refused.append(f"{where} {name}")
    return refused


def test_the_model_folder_is_flat():
    folders = [p.name for p in MODELING.iterdir() if p.is_dir() and p.name != "__pycache__"]
    assert folders == []


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_module_imports_only_its_siblings_and_the_allowed_packages(path):
    assert refusals(path) == []


def test_the_checker_refuses_what_an_exported_folder_cannot_load(tmp_path):
    # The check above is only as good as its parser: a module with every kind of import it must refuse.
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import deepspeed\nfrom ..errors import InputError\nfrom . import token_packer\n"
        "from .absent import x\nfrom llava.video import sample_indices\nimport yaml\n"
        "def f():\n    import deepspeed\n    from .zero3 import zero3_init\n"
    )
    refused = [line.split(" ", 1)[1] for line in refusals(bad)]
    assert refused == [
        "deepspeed",
        "from ..errors (only `from .sibling import ...` is followed)",
        "from . (only `from .sibling import ...` is followed)",
        "from .absent (only `from .sibling import ...` is followed)",
        "llava.video",
        "yaml",
    ]


def test_the_package_init_imports_nothing():
    # `llava.constants` imports llava/modeling/constants.py, which loads the package's __init__ first.
    body = ast.parse((MODELING / "__init__.py").read_text(encoding="utf-8")).body
    assert [type(node) for node in body] == [ast.Expr] and isinstance(body[0].value, ast.Constant)


def test_llava_constants_loads_neither_torch_nor_transformers():
    code = "import sys, llava.constants as c; print(c.IMAGE_TOKEN_INDEX, 'torch' in sys.modules, 'transformers' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == [str(IMAGE_TOKEN_INDEX), "False", "False"]


# Runs in a fresh interpreter in which llava cannot be imported (the venv's editable install would find it:
# a finder ahead of every other refuses it). It reports what it saw; the test judges.
WITHOUT_LLAVA = textwrap.dedent("""
    import json, sys

    class RefuseLlava:
        def find_spec(self, name, path=None, target=None):
            if name == "llava" or name.startswith("llava."):
                raise ImportError(f"the copied model code imports {name}")
            return None

    sys.meta_path.insert(0, RefuseLlava())
    code_root, package, checkpoint, tensors = sys.argv[1:5]
    sys.path.insert(0, code_root)

    import importlib
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    report = {}
    family = importlib.import_module(f"{package}.llava_gpt2")
    report["deepspeed_after_import"] = "deepspeed" in sys.modules
    try:
        AutoConfig.for_model("llava_gpt2")
        report["registered"] = True
    except ValueError:
        report["registered"] = False
    # transformers' own custom-code loader, given the folder: it gathers the files that the family's
    # relative imports reach and imports them as a package of its own.
    loaded_class = get_class_from_dynamic_module("llava_gpt2.LlavaGPT2ForCausalLM", f"{code_root}/{package}")
    report["loader_module"] = loaded_class.__module__
    data = load_file(tensors)
    report["max_difference"] = {}
    for name, cls in (("import", family.LlavaGPT2ForCausalLM), ("loader", loaded_class)):
        model = cls.from_pretrained(checkpoint).eval()
        with torch.no_grad():
            logits = model(input_ids=data["ids"], images=[data["clip"]]).logits
        report["max_difference"][name] = float((logits - data["logits"]).abs().max())
    report["deepspeed_after_forward"] = "deepspeed" in sys.modules
    report["llava_modules"] = sorted(m for m in sys.modules if m == "llava" or m.startswith("llava."))
    print(json.dumps(report))
""")


@pytest.mark.slow  # a second interpreter that imports torch
def test_a_copy_of_the_folder_runs_the_gpt2_family_without_llava(tmp_path, tower_dir):
    package = tmp_path / "code" / "exported_llava"
    package.mkdir(parents=True)
    for path in MODULES:
        shutil.copy(path, package / path.name)

    row = BY_LLAVA_TYPE["llava_gpt2"]
    model = LlavaGPT2ForCausalLM(LlavaGPT2Config(**row.tiny_config, vocab_size=VOCAB, **SPECIAL_IDS))
    model.get_model().initialize_vision_modules(tiny_vision_args(tower_dir))
    with torch.no_grad():  # zero-initialized tables would leave the comparison blind to them
        for p in model.get_model().mm_pos_embed.parameters():
            p.normal_()
    model.eval().save_pretrained(tmp_path / "checkpoint")
    ids, clip = torch.tensor([[5, IMAGE_TOKEN_INDEX, 7, 8]]), torch.randn(8, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        logits = model(input_ids=ids, images=[clip]).logits
    save_file({"ids": ids, "clip": clip, "logits": logits}, tmp_path / "expected.safetensors")

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_MODULES_CACHE"] = str(tmp_path / "hf_modules")  # the loader's copies stay in this test's folder
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_LLAVA, str(package.parent), package.name, str(tmp_path / "checkpoint")]
        + [str(tmp_path / "expected.safetensors")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["llava_modules"] == []
    assert not report["registered"], "a family module registered itself with transformers' Auto classes"
    assert report["loader_module"].endswith(".llava_gpt2")
    assert report["max_difference"] == {"import": 0.0, "loader": 0.0}
    assert not report["deepspeed_after_import"] and not report["deepspeed_after_forward"]
