"""The dependency rule between the packages, checked on the source (ast), not on a running process."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = {"pipeline", "stages", "model", "sim", "cluster"}

# package -> (project packages it may import, modules of `model` it may import when `model` is limited)
ALLOWED: dict[str, tuple[set[str], set[str] | None]] = {
    "model": (set(), None),
    "cluster": (set(), None),
    # the cache encodes with the model's VAE, in its pixel convention
    "stages": ({"model"}, {"model.config", "model.vae", "model.pixels"}),
    # simulation reaches the model only through the policy
    "sim": ({"model"}, {"model.policy"}),
    "pipeline": (PROJECT, None),
}


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import in a file, at any depth (lazy imports count too)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
    return out


def violations() -> list[str]:
    found = []
    for package, (packages, model_modules) in ALLOWED.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            for line, module in imports(path):
                top = module.split(".")[0]
                if top not in PROJECT or top == package:
                    continue
                if top not in packages:
                    found.append(f"{path.relative_to(ROOT)}:{line}: {package} imports {module}")
                elif top == "model" and model_modules is not None and module not in model_modules:
                    found.append(f"{path.relative_to(ROOT)}:{line}: {package} may import only "
                                 f"{sorted(model_modules)} of model, imports {module}")
    return found


def test_each_layer_imports_only_what_it_may():
    problems = violations()
    assert not problems, "dependency rule broken:\n" + "\n".join(problems)
