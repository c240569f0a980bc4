"""The layers of the control plane, and what each may import (docs/architecture.md, "Layers").

Read from the source (every import, at any depth in a module), so a dependency cannot hide in a
function body. The pure core (`domain/`) imports only itself, the standard library and pydantic; the
use cases see the world only through the ports; the adapters never reach up into the use cases.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "lambdas" / "spotrun"

DOMAIN = "domain"
FOUNDATION = "foundation"  # the ports and the shapes of the wiring: what the use cases are given
USE_CASE = "use case"
ADAPTER = "adapter"
ENTRY = "entry"  # handlers, the composition root, and tooling that builds resources
PRESENTATION = "presentation"  # the console's view models and renderer: pure, like the domain

LAYER_OF = {
    "spotrun.ports": FOUNDATION, "spotrun.control": FOUNDATION, "spotrun.resources": FOUNDATION,
    "spotrun.access": FOUNDATION,
    "spotrun.bookkeeping": USE_CASE, "spotrun.jobs": USE_CASE, "spotrun.scheduling": USE_CASE,
    "spotrun.attempts": USE_CASE, "spotrun.assignments": USE_CASE, "spotrun.images": USE_CASE,
    "spotrun.reaping": USE_CASE, "spotrun.overview": USE_CASE, "spotrun.sweeps": USE_CASE,
    "spotrun.aws": ENTRY, "spotrun.provision": ENTRY,
}
THIRD_PARTY = {"pydantic", "pydantic_core", "boto3", "botocore", "aws_lambda_powertools"}

# What each layer may import: layers of spotrun, and third-party packages (the standard library always).
ALLOWED: dict[str, tuple[set[str], set[str]]] = {
    DOMAIN: ({DOMAIN}, {"pydantic", "pydantic_core"}),
    PRESENTATION: ({DOMAIN, PRESENTATION}, set()),
    FOUNDATION: ({DOMAIN, FOUNDATION}, set()),
    USE_CASE: ({DOMAIN, FOUNDATION, USE_CASE}, set()),
    ADAPTER: ({DOMAIN, FOUNDATION, ADAPTER}, {"boto3", "botocore"}),
    ENTRY: ({DOMAIN, FOUNDATION, USE_CASE, ADAPTER, ENTRY, PRESENTATION}, THIRD_PARTY),
}


def layer(module: str) -> str:
    if module.startswith("spotrun.domain"):
        return DOMAIN
    if module.startswith("spotrun.adapters"):
        return ADAPTER
    if module.startswith("spotrun.handlers"):
        return ENTRY
    if module.startswith("spotrun.console"):
        return PRESENTATION
    if module not in LAYER_OF:
        raise AssertionError(f"{module} has no layer: add it to LAYER_OF here and to docs/architecture.md")
    return LAYER_OF[module]


def imported(source: str) -> set[str]:
    """Every module an import statement names, anywhere in the source."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            if node.module == "spotrun":  # from spotrun import jobs
                found |= {f"spotrun.{alias.name}" for alias in node.names}
    return found


def violations(module: str, source: str) -> list[str]:
    own = layer(module)
    layers, packages = ALLOWED[own]
    wrong = []
    for name in sorted(imported(source)):
        top = name.split(".")[0]
        if top == "__future__" or top in sys.stdlib_module_names or name == "spotrun":
            continue
        if top == "spotrun":
            if layer(name) not in layers:
                wrong.append(f"{module} ({own}) imports {name} ({layer(name)})")
        elif top not in packages:
            wrong.append(f"{module} ({own}) imports {name}")
    return wrong


def modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name != "spotrun":
            found.append((name, path))
    return found


@pytest.mark.parametrize(("module", "path"), modules(), ids=[m for m, _ in modules()])
def test_each_module_imports_only_what_its_layer_may(module: str, path: Path) -> None:
    assert violations(module, path.read_text()) == []


@pytest.mark.parametrize(("module", "source"), [
    ("spotrun.domain.lifecycle", "import boto3"),
    ("spotrun.domain.lifecycle", "from spotrun.control import ControlPlane"),
    ("spotrun.domain.lifecycle", "def f():\n    from spotrun.jobs import submit_job\n"),
    ("spotrun.domain.lifecycle", "import aws_lambda_powertools"),
    ("spotrun.jobs", "from spotrun.adapters.dynamo import DynamoStore"),
    ("spotrun.attempts", "from spotrun.adapters import ec2"),
    ("spotrun.scheduling", "def f():\n    import botocore\n"),
    ("spotrun.reaping", "from spotrun import aws"),
    ("spotrun.ports", "from spotrun.jobs import NotFound"),
    ("spotrun.adapters.sns", "from spotrun.attempts import complete"),
    ("spotrun.console.html", "from spotrun.jobs import get_job"),
    ("spotrun.console.views", "import boto3"),
    ("spotrun.overview", "from spotrun.console import html"),
])
def test_the_check_catches_a_forbidden_import(module: str, source: str) -> None:
    assert violations(module, source), f"{module} importing this should be caught:\n{source}"


def test_every_module_of_the_control_plane_is_checked() -> None:
    names = {m for m, _ in modules()}
    assert {"spotrun.domain.lifecycle", "spotrun.jobs", "spotrun.adapters.dynamo.moves", "spotrun.handlers.api"} <= names
    assert all(layer(m) for m in names)
