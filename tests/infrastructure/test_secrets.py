"""Nothing secret in what the stack deploys: the workers' user data, the launch template, the functions'
environment, the template's parameters and outputs, and the code bundles.

The synth runs with credentials planted in its environment (conftest.PLANTED_CREDENTIALS), so a
construct that copied the deploying machine's credentials anywhere would be caught here. (The user data's
exact content is checked in test_resources.py; tests/integration/test_no_secrets.py looks at logs and the
timeline of a running job.)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from template_query import StackTemplate, Synthesized, render

# What a credential or key looks like in text: AWS access key ids, the names of secret settings next to
# a value, private keys, bearer/session tokens, passwords in URLs.
SECRET_SHAPES = {
    "an AWS access key id": re.compile(r"\b(AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b"),
    "a secret access key setting": re.compile(r"secret_?access_?key|SecretAccessKey|aws_secret", re.IGNORECASE),
    "a session token setting": re.compile(r"session_?token|security_?token", re.IGNORECASE),
    "a private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "a bearer token": re.compile(r"\bBearer\s+[A-Za-z0-9._~+/-]{16,}", re.IGNORECASE),
    "a password": re.compile(r"passw(or)?d\s*[=:]|://[^/\s:@]+:[^/\s@]+@", re.IGNORECASE),
    "a GitHub or Slack token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}|\bxox[abpr]-[A-Za-z0-9-]{10,}"),
}
SECRET_NAMES = re.compile(r"secret|token|passw|credential|private|api_?key", re.IGNORECASE)


def test_the_shapes_find_what_they_are_for() -> None:
    for text in ("AKIAIOSFODNN7EXAMPLE", "aws_secret_access_key=x", "-----BEGIN RSA PRIVATE KEY-----",
                 "Authorization: Bearer abcdefghijklmnopqrstuvwxyz", "https://user:pw@example.com/",
                 "ghp_" + "a" * 36, "export AWS_SESSION_TOKEN=abc"):
        assert secret_shapes(text), text
    for text in ("SPOTRUN_TABLE=${Table}", "https://sqs.us-east-1.amazonaws.com/123456789012/q", "#!/bin/bash"):
        assert secret_shapes(text) == [], text


def secret_shapes(text: str) -> list[str]:
    return [f"{name}: {found.group(0)!r}" for name, pattern in SECRET_SHAPES.items() if (found := pattern.search(text))]


def planted_in(text: str, planted: dict[str, str]) -> list[str]:
    return [name for name, value in planted.items() if value in text]


def _launch_templates(query: StackTemplate) -> dict[str, dict[str, Any]]:
    return {lid: r["Properties"]["LaunchTemplateData"] for lid, r in query.of_type("AWS::EC2::LaunchTemplate").items()}


def test_the_workers_user_data_holds_no_credentials(query: StackTemplate, planted_credentials: dict[str, str]) -> None:
    templates = _launch_templates(query)
    assert templates, "no worker launch template"
    for logical_id, data in templates.items():
        user_data = render(data["UserData"])
        assert user_data.startswith("#!/bin/bash"), logical_id
        assert secret_shapes(user_data) == [], logical_id
        assert planted_in(user_data, planted_credentials) == [], logical_id
        assert not re.search(r"^\s*(export\s+)?AWS_(ACCESS_KEY_ID|SECRET_ACCESS_KEY|SESSION_TOKEN)\s*=", user_data,
                             re.MULTILINE), "credentials come from the instance role, never from user data"
        rest = render({k: v for k, v in data.items() if k != "UserData"})
        assert secret_shapes(rest) == [] and planted_in(rest, planted_credentials) == [], logical_id


def test_function_environments_hold_only_wiring(query: StackTemplate, planted_credentials: dict[str, str]) -> None:
    functions = query.of_type("AWS::Lambda::Function")
    assert functions
    for logical_id, resource in functions.items():
        variables = resource["Properties"].get("Environment", {}).get("Variables", {})
        assert [name for name in variables if SECRET_NAMES.search(name)] == [], logical_id
        rendered = {name: render(value) for name, value in variables.items()}
        assert [f"{n}: {problem}" for n, v in rendered.items() for problem in secret_shapes(v)] == [], logical_id
        assert planted_in(" ".join(rendered.values()), planted_credentials) == [], logical_id


def test_parameters_and_outputs_carry_no_secret_defaults(query: StackTemplate) -> None:
    for section in ("Parameters", "Outputs"):
        for name, entry in query.template.get(section, {}).items():
            text = render(entry.get("Default", entry.get("Value", "")))
            assert secret_shapes(text) == [], (section, name)
            if SECRET_NAMES.search(name) and section == "Parameters":
                assert entry.get("NoEcho") is True, f"parameter {name} looks secret but is echoed"


def test_nothing_the_synth_wrote_holds_the_deploying_machines_credentials(
        synthesized: Synthesized, planted_credentials: dict[str, str]) -> None:
    """The template, the manifests and every bundled file (what is uploaded and what workers download)."""
    files = [path for path in Path(synthesized.assembly_dir).rglob("*") if path.is_file()]
    assert synthesized.template_file in files and len(files) > 3
    found = {}
    for path in files:
        text = path.read_bytes().decode("utf-8", "replace")
        if hits := planted_in(text, planted_credentials):
            found[str(path.relative_to(synthesized.assembly_dir))] = hits
    assert found == {}


def test_the_code_bundles_hold_only_code_and_data(synthesized: Synthesized) -> None:
    """A stray .env, key or credentials file next to the code would ship to every function and worker."""
    bundles = [path for path in Path(synthesized.assembly_dir).iterdir() if path.is_dir() and path.name.startswith("asset.")]
    assert bundles, "no code bundle in the assembly"
    shipped = [path for bundle in bundles for path in bundle.rglob("*") if path.is_file()]
    assert shipped
    # Shell scripts ship only as the worker image's build scripts (that asset is worker/image itself), and
    # so does DMTCP's gang patch (dmtcp-gang.patch: the source changes the LGPL asks us to ship).
    image_scripts = {bundle for bundle in bundles if (bundle / "build-worker-image.sh").is_file()}
    assert len(image_scripts) == 1
    unexpected = sorted(str(p.relative_to(synthesized.assembly_dir)) for p in shipped
                        if p.suffix not in (".py", ".json", ".txt", ".md", ".typed", ".pin")
                        and not (p.suffix in (".sh", ".patch") and p.parent in image_scripts))
    assert unexpected == [], "files that are not code or data are bundled"
    leaks = {}
    for path in shipped:
        problems = secret_shapes(path.read_text("utf-8", "replace"))
        # the code names these settings (e.g. when it builds a client), only a value would be a leak
        problems = [p for p in problems if not p.startswith(("a secret access key setting", "a session token setting"))]
        if problems:
            leaks[path.name] = problems
    assert leaks == {}
