"""Synthesize the stack once per test session; every infrastructure test reads that one assembly."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
for path in (REPO_ROOT, HERE):  # `stacks` and this directory's helper module
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

from aws_cdk.assertions import Template  # noqa: E402
from template_query import REPORT_ONLY, StackTemplate, Synthesized  # noqa: E402

from stacks.spotrun_stack import build_app  # noqa: E402

# Credentials of the machine that synthesizes, planted in the environment while the stack is built so that a
# test can look for them in everything the synth wrote (tests/infrastructure/test_secrets.py): a construct
# reading os.environ would copy them. Shaped like AWS's, valid nowhere.
PLANTED_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIAPLANTED7XQ2ZK9WD",
    "AWS_SECRET_ACCESS_KEY": "pLaNtEd/SeCrEt+k3y/0f/tHe/SyNtH/mAcHiNe00",
    "AWS_SESSION_TOKEN": "IQoJb3JpZ2luX2VjEPLANTEDsessionTOKENforTHEsynthONLY",
}


@pytest.fixture(scope="session")
def planted_credentials() -> dict[str, str]:
    return dict(PLANTED_CREDENTIALS)


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory: pytest.TempPathFactory, planted_credentials: dict[str, str]) -> Synthesized:
    outdir = tmp_path_factory.mktemp("cdk.out")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in planted_credentials.items():
            patch.setenv(name, value)
        app, stack = build_app(outdir=str(outdir), context=REPORT_ONLY)
        assembly = app.synth()
    template = Template.from_stack(stack)  # reuses the assembly above: no second synth
    return Synthesized(
        stack=stack,
        template=template,
        query=StackTemplate(template.to_json()),
        assembly_dir=Path(assembly.directory),
        template_file=Path(assembly.directory) / stack.template_file,
    )


@pytest.fixture(scope="session")
def query(synthesized: Synthesized) -> StackTemplate:
    return synthesized.query
