#!/usr/bin/env python3
"""Synthesize the spotrun stack: `CDK_OUTDIR=cdk.out python app.py` (offline, no credentials)."""

from __future__ import annotations

import os

from stacks.spotrun_stack import build_app

app, _ = build_app(outdir=os.environ.get("CDK_OUTDIR"))
app.synth()
