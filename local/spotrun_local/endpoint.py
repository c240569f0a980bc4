"""The local AWS endpoint: moto in server mode, and EC2 capacity decided by the replayed market."""

from __future__ import annotations

import threading
from typing import Any

from spotrun.adapters.ec2 import LaunchRequest, LaunchResult
from spotrun_local import moto_ec2
from spotrun_local.market import MarketReplay

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account


def moto_server(ip_address: str = "127.0.0.1", port: int = 0, guard: Any = None, journal: Any = None) -> Any:
    """moto in server mode, with its DynamoDB requests served one at a time.

    moto's TransactWriteItems snapshots the whole table first and, when any of its conditions fails,
    puts the snapshot back: every write other threads made to the table in between is undone (and
    the snapshot's deepcopy can fail while another request changes the table). spotrun relies on
    failing conditional transactions for all its concurrency control, so the local runtime, whose
    handlers and agents all call moto at once, lost writes under load (tasks stuck QUEUED without a
    trace, job counts off): found by the chaos soak. DynamoDB itself is atomic per item and per
    transaction; serializing moto's DynamoDB requests restores that. Other services (long-polled SQS
    receives among them) stay concurrent.

    With a `guard` (spotrun_local.iam_guard.IamGuard), requests signed by worker sessions are
    authorized against their role's policy first, as IAM would: moto itself evaluates none.

    With a `journal` (spotrun_local.persistence.StateJournal), every change moto answers with
    success is journaled before the answer leaves (spotrun_local.capture), inside the DynamoDB lock.
    """
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    class Server(ThreadedMotoServer):
        def _server_entry(self) -> None:
            app: Any = DomainDispatcherApplication(create_backend_app)
            if journal is not None:
                from spotrun_local.capture import Capture

                app = Capture(journal, app)
            dynamodb = threading.Lock()

            def one_dynamodb_request_at_a_time(environ: dict[str, Any], start_response: Any) -> Any:
                if not environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
                    return app(environ, start_response)
                with dynamodb:
                    body = app(environ, start_response)
                    try:
                        return [b"".join(body)]
                    finally:
                        if hasattr(body, "close"):
                            body.close()

            serve = guard.wrap(one_dynamodb_request_at_a_time) if guard is not None else one_dynamodb_request_at_a_time
            try:
                self._server = make_server(self._ip_address, self._port, serve, True,
                                           request_handler=MotoRequestHandler)
            except OSError as error:  # e.g. the port is taken: said by start(), not lost in this thread
                self.failed = error
                self._server_ready_event.set()
                return
            self._server_ready_event.set()
            self._server.serve_forever()

        def start(self) -> None:
            self.failed: OSError | None = None
            super().start()
            if self.failed is not None:
                raise OSError(self.failed.errno, f"moto's server cannot listen on {self._ip_address}:{self._port}: "
                                                 f"{self.failed.strerror}")

    return Server(ip_address=ip_address, port=port, verbose=False)


class LocalCompute(moto_ec2.IdempotentEc2):
    """EC2 through moto (idempotent on client tokens, as EC2 is), with the replayed market deciding whether
    spot capacity exists."""

    def __init__(self, client: Any, launch_template_id: str, subnets: dict[str, str], market: MarketReplay,
                 placement_groups: dict[str, str] | None = None):
        super().__init__(client, launch_template_id, subnets, REGION, ACCOUNT, placement_groups=placement_groups)
        self.market = market
        self.refused: list[str] = []

    def launch(self, request: LaunchRequest) -> LaunchResult:
        if request.spot and not self.market.available(request.zone):
            self.refused.append(f"{request.instance_type}@{request.zone}")
            return LaunchResult(error_code="InsufficientInstanceCapacity",
                                error_message=f"no spot capacity in {request.zone} (replayed trace)")
        return super().launch(request)

