"""Scale benchmark: submitting 100,000 tasks, scheduler throughput, AWS requests per task lifecycle,
and the control plane's cost next to the compute it manages.

    PYTHONPATH=lambdas:worker:local:cli:. .venv/bin/python -m bench.scale     -> bench/results/scale.json

What is measured (request counts, wall and CPU times on fakes and on moto) and what is modeled
(request units from item sizes, AWS latencies and EC2 API limits, prices) is said in each part's
docstring (submit, schedule, lifecycle, cost) and repeated in the JSON.
"""
