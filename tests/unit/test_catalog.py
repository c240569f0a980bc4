"""The bundled catalogue: what it holds, the price estimates, and the broker's view of a pool."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from spotrun.domain import catalog as catalog_module
from spotrun.domain.broker import Pool, rank_pools
from spotrun.domain.catalog import CATALOG_PATH, Catalog, load_catalog, pool_state, region_of
from spotrun.domain.spec import Resources

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def test_given_the_bundled_file_when_measured_then_it_is_small_enough_to_ship():
    assert CATALOG_PATH.stat().st_size < 300 * 1024


@pytest.mark.parametrize("region", ["us-east-1", "us-east-2", "us-west-2"])
def test_given_a_main_region_when_loading_then_it_has_advice_for_common_types(catalog, region):
    for name in ("c6i.large", "m6i.xlarge", "r6i.2xlarge", "p3.2xlarge", "g4dn.xlarge"):
        advice = catalog.spot_advice(region, name)
        assert advice is not None, name
        assert 0 <= advice.band <= 4 and 0 <= advice.savings_percent <= 100


@pytest.mark.parametrize(
    "name, vcpus, memory_gib, gpus, architecture",
    [
        ("p3.2xlarge", 8, 61.0, 1, "x86_64"),
        ("p3.16xlarge", 64, 488.0, 8, "x86_64"),
        ("g4dn.12xlarge", 48, 192.0, 4, "x86_64"),
        ("c6g.large", 2, 4.0, 0, "arm64"),
        ("t4g.micro", 2, 1.0, 0, "arm64"),
        ("c6i.large", 2, 4.0, 0, "x86_64"),
        ("c7i-flex.large", 2, 4.0, 0, "x86_64"),
    ],
)
def test_given_a_type_when_looking_it_up_then_sizes_match_aws_specs(catalog, name, vcpus, memory_gib, gpus, architecture):
    spec = catalog.instance(name)

    assert spec is not None
    assert (spec.vcpus, spec.memory_gib, spec.gpus, spec.architecture) == (vcpus, memory_gib, gpus, architecture)


@pytest.mark.parametrize(
    "zone, region",
    [("us-east-1a", "us-east-1"), ("eu-central-1b", "eu-central-1"), ("us-west-2", "us-west-2"), ("ap-southeast-4c", "ap-southeast-4")],
)
def test_given_a_zone_when_asking_its_region_then_the_letter_is_dropped(zone, region):
    assert region_of(zone) == region


@pytest.mark.parametrize(
    "name, price",
    [("p3.2xlarge", 3.06), ("c6i.large", 0.085), ("c6i.4xlarge", 0.68), ("m6i.xlarge", 0.192), ("nope.large", None)],
)
def test_given_a_type_when_pricing_on_demand_then_list_prices_are_known(catalog, name, price):
    assert catalog.on_demand_price(name) == (pytest.approx(price) if price is not None else None)


def test_given_advisor_savings_when_estimating_spot_then_it_is_on_demand_less_savings(catalog):
    advice = catalog.spot_advice("us-east-1", "p3.2xlarge")

    estimate = catalog.estimated_spot_price("us-east-1a", "p3.2xlarge")

    assert estimate == pytest.approx(3.06 * (1 - advice.savings_percent / 100))


def test_given_stats_and_a_price_when_building_a_pool_state_then_every_field_is_filled(catalog):
    class Stats:
        executions, failures, interruptions, exec_seconds, running = 10, 1, 2, 36_000.0, 3
        cooldown_until = datetime(2026, 1, 1, tzinfo=UTC)
        upload_bytes, upload_seconds = 3 * 2**30, 24.0  # checkpoint uploads measured by agents here

    state = pool_state(Pool("p3.2xlarge", "us-west-2b"), "us-east-1", Stats(), 0.95, cap=20, catalog=catalog)

    advice = catalog.spot_advice("us-west-2", "p3.2xlarge")
    assert (state.vcpus, state.memory_gib, state.gpus, state.architecture) == (8, 61.0, 1, "x86_64")
    assert (state.spot_price, state.on_demand_price, state.cap) == (0.95, 3.06, 20)
    assert (state.advisor_band, state.advisor_savings) == (advice.band, advice.savings_percent)
    assert (state.executions, state.failures, state.interruptions, state.running) == (10, 1, 2, 3)
    assert state.upload_bytes_per_second == 128 * 2**20


def test_given_an_unknown_type_when_ranking_then_the_broker_rejects_it(catalog):
    state = pool_state(Pool("zz9.large", "us-east-1a"), "us-east-1", catalog=catalog)

    decision = rank_pools(Resources(), [state], datetime(2026, 1, 1, tzinfo=UTC))

    assert decision.rejected[0][1].startswith("unknown type")


def test_given_requirements_when_matching_then_smallest_fitting_types_come_first(catalog):
    found = list(catalog.matching(vcpus=8, memory_gib=32, gpus=1, architecture="x86_64"))

    assert found and all(t.gpus >= 1 and t.vcpus >= 8 and t.memory_gib >= 32 for t in found)
    assert [t.vcpus for t in found] == sorted(t.vcpus for t in found)


def test_given_the_extractor_when_run_on_the_source_then_it_reproduces_the_bundled_file(tmp_path):
    source = ROOT.parent / "shared" / "data" / "spot-advisor" / "spot-advisor-data.json"
    if not source.exists():
        pytest.skip("the Spot Advisor snapshot is not beside the repository")
    sys.path.insert(0, str(ROOT))
    from bench.tools import make_catalog

    out = tmp_path / "catalog.json"
    assert make_catalog.main(["--advisor", str(source), "--out", str(out)]) == 0

    assert out.read_text() == CATALOG_PATH.read_text()
    assert json.loads(out.read_text())["os"] == "Linux"


def test_given_a_document_when_parsing_then_no_file_is_read():
    document = {"types": {"x1.large": [2, 4.0, 0, "x86_64"]}, "regions": {"us-east-1": {"x1.large": [70, 1]}},
                "bands": [{"index": 0, "label": "<5%"}]}

    parsed = catalog_module.Catalog.from_document(document)

    assert parsed.instance("x1.large").vcpus == 2
    assert parsed.spot_advice("us-east-1c", "x1.large").savings_percent == 70
