"""Extract spotrun's instance catalogue from the Spot Instance Advisor feed.

    .venv/bin/python bench/tools/make_catalog.py [--advisor PATH] [--out PATH] [--regions r1,r2,...]

Reads the spotinfo snapshot of AWS's public Spot Instance Advisor data (Apache-2.0; see
shared/data/spot-advisor/) and writes `lambdas/spotrun/data/catalog.json`: for the Linux OS of the
chosen regions, each instance type's savings over on-demand (`s`, percent) and interruption band
(`r`, 0..4), plus the sizes of every type that appears (vCPUs, memory, GPUs, architecture). The feed
has no GPU counts or architectures: GPUs come from the table below (AWS's published specs), the
architecture from the family name (Graviton families carry a 'g' after the generation, and a1).
The output is deterministic (sorted keys), so re-running it on the same snapshot changes nothing.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ADVISOR = ROOT.parent / "shared" / "data" / "spot-advisor" / "spot-advisor-data.json"
DEFAULT_OUT = ROOT / "lambdas" / "spotrun" / "data" / "catalog.json"
DEFAULT_REGIONS = ("us-east-1", "us-east-2", "us-west-2", "eu-west-1", "eu-central-1")
OS = "Linux"

# GPUs per instance of the GPU families (AWS instance type specs). Sizes not listed have one GPU.
# Accelerators that are not GPUs (Inferentia, Trainium, Gaudi, FPGAs, ...) count as 0.
GPU_FAMILIES = {
    "p2": {"xlarge": 1, "8xlarge": 8, "16xlarge": 16},
    "p3": {"2xlarge": 1, "8xlarge": 4, "16xlarge": 8},
    "p3dn": {"24xlarge": 8},
    "p4d": {"24xlarge": 8},
    "p4de": {"24xlarge": 8},
    "p5": {"4xlarge": 1, "48xlarge": 8},
    "p5en": {"48xlarge": 8},
    "p6-b200": {"48xlarge": 8},
    "g2": {"2xlarge": 1, "8xlarge": 4},
    "g3": {"4xlarge": 1, "8xlarge": 2, "16xlarge": 4},
    "g3s": {},
    "g4ad": {"8xlarge": 2, "16xlarge": 4},
    "g4dn": {"12xlarge": 4, "metal": 8},
    "g5": {"12xlarge": 4, "24xlarge": 4, "48xlarge": 8},
    "g5g": {"16xlarge": 2, "metal": 2},
    "g6": {"12xlarge": 4, "24xlarge": 4, "48xlarge": 8},
    "g6e": {"12xlarge": 4, "24xlarge": 4, "48xlarge": 8},
    "gr6": {},
}
_GRAVITON = re.compile(r"^[a-z]+\d+[a-z]*g[a-z]*(-[a-z]+)?$")


def architecture(family: str) -> str:
    if family == "a1" or _GRAVITON.match(family):
        return "arm64"
    return "x86_64"


def gpus(name: str) -> int:
    family, _, size = name.partition(".")
    if family not in GPU_FAMILIES:
        return 0
    return GPU_FAMILIES[family].get(size, 1)


def extract(advisor: dict, regions: tuple[str, ...]) -> dict:
    specs = advisor["instance_types"]
    out_regions: dict[str, dict[str, list[int]]] = {}
    used: set[str] = set()
    for region in regions:
        linux = advisor["spot_advisor"][region][OS]
        out_regions[region] = {name: [int(v["s"]), int(v["r"])] for name, v in sorted(linux.items())}
        used.update(linux)
    types = {}
    for name in sorted(used):
        spec = specs.get(name)
        if spec is None:
            continue  # advised but without sizes: unusable by the broker
        family = name.partition(".")[0]
        types[name] = [int(spec["cores"]), float(spec["ram_gb"]), gpus(name), architecture(family)]
    return {
        "source": "Spot Instance Advisor feed via spotinfo (Apache-2.0), snapshot 2025-06; see bench/tools/make_catalog.py",
        "os": OS,
        "bands": [{"index": r["index"], "label": r["label"]} for r in advisor["ranges"]],
        "types_format": ["vcpus", "memory_gib", "gpus", "architecture"],
        "advice_format": ["savings_percent", "interruption_band"],
        "types": types,
        "regions": out_regions,
    }


def dump(catalog: dict) -> str:
    """One type or one region entry per line: small, and diffs stay readable."""
    head = {k: v for k, v in catalog.items() if k not in ("types", "regions")}
    lines = ["{"]
    for key, value in head.items():
        lines.append(f"  {json.dumps(key)}: {json.dumps(value)},")
    lines.append('  "types": {')
    types = list(catalog["types"].items())
    for i, (name, row) in enumerate(types):
        lines.append(f"    {json.dumps(name)}: {json.dumps(row)}{',' if i < len(types) - 1 else ''}")
    lines.append("  },")
    lines.append('  "regions": {')
    regions = list(catalog["regions"].items())
    for i, (region, advice) in enumerate(regions):
        body = json.dumps(advice, separators=(",", ":"))
        lines.append(f"    {json.dumps(region)}: {body}{',' if i < len(regions) - 1 else ''}")
    lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--advisor", type=Path, default=DEFAULT_ADVISOR)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--regions", default=",".join(DEFAULT_REGIONS))
    args = parser.parse_args(argv)
    advisor = json.loads(args.advisor.read_text())
    catalog = extract(advisor, tuple(r.strip() for r in args.regions.split(",") if r.strip()))
    text = dump(catalog)
    json.loads(text)  # what we write must parse
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}: {len(catalog['types'])} types, {len(catalog['regions'])} regions, "
          f"{len(text.encode()) // 1024} KiB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
