"""The layout the paper's reader relies on: one step module per rule file, one function
per rule, every rule's script importing exactly its own step module."""

import ast
import importlib
import inspect
import re
import subprocess
import sys

import pytest

from conftest import REPO

# common.smk holds helpers; shards.smk derives each per-image rule's per-shard form
# (<step>_shard) from the rule itself, so it has no step module of its own.
RULE_FILES = sorted(p for p in (REPO / "rules").glob("*.smk")
                    if p.stem not in ("common", "shards"))


def _rules(smk):
    """``(rule name, script path or None)`` of every rule of a rule file."""
    out = []
    for block in re.split(r"\n(?=rule )", "\n" + smk.read_text()):
        name = re.match(r"\s*rule (\w+):", block)
        if name:
            script = re.search(r'script:\s*"\.\./(workflow_scripts/\w+\.py)"', block)
            out.append((name.group(1), REPO / script.group(1) if script else None))
    return out


def _step_imports(script):
    """The ``lumbar_core.steps`` modules a script imports; for a per-image rule's script,
    which hands its job to ``lumbar_core.workflow.per_image``, those its call there
    imports, with the functions of them that it calls."""
    tree = ast.parse(script.read_text())
    if any(isinstance(node, ast.ImportFrom) and node.module == "lumbar_core.workflow.per_image"
           and "run_image" in {a.name for a in node.names} for node in ast.walk(tree)):
        return _per_image_imports(script.stem)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "lumbar_core.steps":
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "lumbar_core.steps."):
            found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[2] for a in node.names
                      if a.name.startswith("lumbar_core.steps.")}
    return found


def _per_image_imports(rule):
    """The step modules the call of a per-image rule imports (``from ..steps import m``),
    checking that it calls the function of its rule there."""
    from lumbar_core.workflow import per_image

    tree = ast.parse(inspect.getsource(per_image.STEPS[rule]))
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "steps" and node.level == 2:
            aliases |= {a.asname or a.name: a.name for a in node.names}
    called = {(aliases[n.func.value.id], n.func.attr) for n in ast.walk(tree)
              if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
              and isinstance(n.func.value, ast.Name) and n.func.value.id in aliases}
    assert {name for _, name in called} == {rule}, (rule, called)
    return set(aliases.values())


@pytest.mark.parametrize("smk", RULE_FILES, ids=lambda p: p.stem)
def test_every_rule_script_imports_only_the_step_module_of_its_rule_file(smk):
    module = importlib.import_module(f"lumbar_core.steps.{smk.stem}")
    scripted = [(rule, script) for rule, script in _rules(smk) if script]
    assert scripted, f"{smk.name} has no rule with a script"
    for rule, script in scripted:
        assert _step_imports(script) == {smk.stem}, f"{rule}: {script.name}"
        # One public function per rule, named as the rule, listed in __all__.
        assert rule in module.__all__, f"lumbar_core.steps.{smk.stem} has no {rule}"
        function = getattr(module, rule)
        assert callable(function) and function.__doc__ and f"``{rule}``" in function.__doc__
        params = inspect.signature(function).parameters.values()
        assert all(p.kind is p.KEYWORD_ONLY for p in params), f"{rule} takes positional paths"


@pytest.mark.parametrize("smk", RULE_FILES, ids=lambda p: p.stem)
def test_all_lists_every_public_function_of_a_step_module(smk):
    module = importlib.import_module(f"lumbar_core.steps.{smk.stem}")
    public = {name for name, obj in vars(module).items()
              if inspect.isfunction(obj) and obj.__module__ == module.__name__
              and not name.startswith("_")}
    assert public <= set(module.__all__)
    assert {rule for rule, script in _rules(smk) if script} <= public


def test_no_module_imports_a_private_name_of_another():
    offenders = []
    paths = sorted((REPO / "lumbar_core").rglob("*.py"))
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                offenders += [f"{path.name}: {a.name}" for a in node.names
                              if a.name.startswith("_") and a.name != "__version__"]
    assert offenders == []


def test_per_image_steps_do_not_import_keras():
    code = ("import sys\n"
            "from lumbar_core.steps import demo, evaluate, levelset, morphometry, pose, "
            "preprocess, report, segment, train\n"
            "print(sorted(m for m in ('keras', 'tensorflow', 'jax') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=300, check=True)
    assert proc.stdout.strip() == "[]"
