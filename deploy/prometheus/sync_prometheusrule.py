"""Write deploy/k8s/base/prometheusrule.yaml from deploy/prometheus/vbw-alerts.yaml.

    python deploy/prometheus/sync_prometheusrule.py          # rewrite the PrometheusRule
    python deploy/prometheus/sync_prometheusrule.py --check  # exit 1 if it is out of date

vbw-alerts.yaml is the one source: promtool checks and unit-tests it, and Prometheus servers
without the operator load it directly. The PrometheusRule is the same groups for the operator.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
RULES = HERE / "vbw-alerts.yaml"
TARGET = HERE.parent / "k8s" / "base" / "prometheusrule.yaml"
HEADER = (
    "# GENERATED from deploy/prometheus/vbw-alerts.yaml by deploy/prometheus/sync_prometheusrule.py.\n"
    "# Edit the rules there, then run the script; tests/deploy fails when the two differ.\n"
)


def render(rules_text: str) -> str:
    groups = yaml.safe_load(rules_text)["groups"]
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "vbw", "labels": {"app.kubernetes.io/name": "vbw"}},
        "spec": {"groups": groups},
    }
    return HEADER + yaml.safe_dump(doc, sort_keys=False, width=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only report whether the file is current")
    args = ap.parse_args(argv)
    want = render(RULES.read_text())
    have = TARGET.read_text() if TARGET.exists() else ""
    if args.check:
        if have != want:
            print(f"{TARGET} is out of date: run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(want)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
