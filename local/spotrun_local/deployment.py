"""A local deployment to use from outside: the runtime over a calm window of the spot traces, its API
gateway (SigV4, the local credentials) with the console page, and what a CLI needs to reach it.

The end-to-end tests of the console and of live logs share one (tests/local/test_console_end_to_end.py),
and the log-latency benchmark starts one (bench/logs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spotrun_local.demo import Client
from spotrun_local.gateway import Gateway, LocalCredentials, new_local_credentials, start_gateway
from spotrun_local.market import MarketReplay, load_traces
from spotrun_local.runtime import REPO, LocalRuntime, RuntimeOptions


def steady_window(traces: Any, zones: tuple[str, ...], ticks: int) -> int:
    """A start tick from which every zone keeps its capacity for `ticks` ticks: no market interruptions."""
    length = min(len(traces[z].available) for z in zones)
    for start in range(length - ticks):
        if all(all(traces[z].available[start:start + ticks]) for z in zones):
            return start
    raise ValueError(f"no window of {ticks} ticks where every zone of {zones} keeps its capacity")


@dataclass
class LocalDeployment:
    runtime: LocalRuntime
    gateway: Gateway
    credentials: LocalCredentials

    @property
    def client(self) -> Client:
        return Client(self.gateway.url, self.credentials.access_key_id, self.credentials.secret_access_key)

    def cli_env(self) -> dict[str, str]:
        """The environment `spotrun` needs to reach this deployment (as `make run` prints it)."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AWS_", "SPOTRUN_")) and k not in ("PYTHONPATH",)}
        return {**env, "SPOTRUN_API": self.gateway.url, **self.credentials.env(), "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                "PYTHONPATH": os.pathsep.join(str(REPO / p) for p in ("lambdas", "cli"))}

    def stop(self) -> None:
        self.gateway.stop()
        self.runtime.stop()


def start_steady(root: Path, zones: tuple[str, ...] = ("us-east-1c", "us-east-1f"), ticks: int = 200,
                 **options: Any) -> LocalDeployment:
    """The runtime over a window of the traces where no zone loses capacity, behind its gateway."""
    settings = RuntimeOptions(root=root, zones=zones, **options)
    traces = load_traces(zones=settings.zones)
    market = MarketReplay(traces, steady_window(traces, settings.zones, ticks), settings.tick_seconds)
    runtime = LocalRuntime(market, settings).start()
    credentials = new_local_credentials()
    try:
        gateway = start_gateway(runtime.api_handler, credentials, console=runtime.console_handler)
    except BaseException:
        runtime.stop()
        raise
    return LocalDeployment(runtime, gateway, credentials)
