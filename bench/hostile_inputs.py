"""Hostile inputs against a shared deployment: how many are refused with the right 4xx and a reason, by category.

The battery is tests/security/hostile_cases.py (auth, tenancy, URIs, checkpoints, limits); the app runs in process
on throwaway Postgres and Redis databases. Needs PostgreSQL and Redis on 127.0.0.1:
    .venv/bin/python bench/hostile_inputs.py
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
from collections import Counter
from pathlib import Path

from shrinkray.migrate import upgrade_database
from tests.conftest import temporary_postgres_database, temporary_redis_database
from tests.security.hostile_cases import deployment_under_attack, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    with temporary_postgres_database() as database_url, temporary_redis_database() as broker_url, \
            tempfile.TemporaryDirectory() as root:
        upgrade_database(database_url)
        with deployment_under_attack(database_url, broker_url, Path(root)) as deployment:
            outcomes = run(deployment.cases, deployment.clients)
    total, refused = Counter(), Counter()
    for outcome in outcomes:
        total[outcome.case.category] += 1
        refused[outcome.case.category] += outcome.refused
    print(f"{'category':<12} {'inputs':>7} {'refused':>8} {'share':>7}")
    for category in total:
        print(f"{category:<12} {total[category]:>7} {refused[category]:>8} "
              f"{100 * refused[category] / total[category]:>6.1f}%")
    print(f"{'all':<12} {sum(total.values()):>7} {sum(refused.values()):>8} "
          f"{100 * sum(refused.values()) / len(outcomes):>6.1f}%   target 100%")
    for outcome in outcomes:
        if not outcome.refused:
            print(f"NOT refused: {outcome.case.category}/{outcome.case.name}: {outcome.status} {outcome.message[:200]}")
    result = {"benchmark": "hostile_inputs", "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores", "target_refused_pct": 100.0,
              "refused_pct": 100 * sum(refused.values()) / len(outcomes),
              "by_category": {c: {"inputs": total[c], "refused": refused[c]} for c in total},
              "cases": [{"category": o.case.category, "name": o.case.name, "status": o.status,
                         "refused": o.refused, "message": o.message[:300]} for o in outcomes]}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"hostile_inputs-{result['date'][:10]}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
