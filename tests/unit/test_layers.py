"""The package's layers: a module imports only from its own layer or from lower ones.

The order is written here and drawn in docs/architecture.md (the test checks that both agree).
Every import counts, also one inside a function: an import deferred to dodge a cycle is a cycle.
"""

from __future__ import annotations

import ast
import re

from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "nemo_grpo"

# Lowest first. Each entry is one layer: the top-level modules of nemo_grpo in it.
LAYERS = [
    ["utils"],
    ["config"],
    ["algorithms", "rewards", "models", "logging"],
    ["data", "generation", "checkpoint", "distributed"],
    ["policy", "evals"],
    ["trainer"],
    ["cli"],
]
LEVEL = {name: level for level, names in enumerate(LAYERS) for name in names}


def top_module(dotted: str) -> str | None:
    parts = dotted.split(".")
    return parts[1] if parts[0] == "nemo_grpo" and len(parts) > 1 else None


def imports_of(path) -> list[tuple[int, str]]:
    """(line, dotted module) of every `import nemo_grpo...` and `from nemo_grpo... import` in a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            if node.module == "nemo_grpo":  # `from nemo_grpo import generation`
                found += [(node.lineno, f"nemo_grpo.{alias.name}") for alias in node.names]
    return found


def test_every_top_level_module_has_a_layer():
    modules = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
               if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").is_file())}
    assert modules == set(LEVEL), f"modules without a layer: {modules - set(LEVEL)}; layers without a module: " \
                                  f"{set(LEVEL) - modules}"


def test_no_module_imports_from_a_higher_layer():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(REPO_ROOT)
        own = top_module(".".join(rel.with_suffix("").parts))
        if own is None:
            continue
        for line, module in imports_of(path):
            other = top_module(module)
            if other is not None and other in LEVEL and LEVEL[other] > LEVEL[own]:
                upward.append(f"{rel}:{line} ({own}, layer {LEVEL[own]}) imports {module} (layer {LEVEL[other]})")
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The walk finds imports at module level and inside functions (so the test above can fail)."""
    sample = tmp_path / "m.py"
    sample.write_text("import os\nfrom nemo_grpo.config import load_config\n\ndef f():\n"
                      "    from nemo_grpo.trainer.loop import run_grpo\n    import nemo_grpo.cli\n")
    assert [m for _, m in imports_of(sample)] == ["os", "nemo_grpo.config", "nemo_grpo.trainer.loop", "nemo_grpo.cli"]


def test_docs_architecture_draws_the_same_layers():
    text = (REPO_ROOT / "docs" / "architecture.md").read_text()
    rows = re.findall(r"^\| *(\d) *\| *([^|]+?) *\|", text, re.M)
    drawn = [sorted(re.findall(r"`(\w+)`", names)) for _, names in sorted(rows, key=lambda r: int(r[0]))]
    assert drawn == [sorted(layer) for layer in LAYERS]
