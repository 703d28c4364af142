"""Write a seeded, labelled org history in event format v1 (and its labels).

    .venv/bin/python benchmarks/simulate_org.py --seed 7 --users 300 --weeks 4 \\
        --out var/org-7.jsonl            # also writes var/org-7.labels.json

The simulator itself is ``meshclaw.events.simulate`` (importable by tests); this script
is its command line. Labels map each user id to a behaviour kind: honest kinds
(``normal``, on-call incident, long-context research, new hire, release week, manager
triage, automation) and one gaming kind per pattern in DESIGN.md's Integrity list.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from meshclaw.events import write_events
from meshclaw.events.simulate import SimConfig, SimulatedOrg, labels_document, simulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--weeks", type=int, default=4)
    parser.add_argument("--gaming-share", type=float, default=0.12)
    parser.add_argument("--heavy-share", type=float, default=0.15)
    parser.add_argument("--release-teams", type=int, default=1)
    parser.add_argument("--intensity", type=float, nargs=2, default=(2.0, 3.0))
    parser.add_argument("--activity", type=float, default=1.0, help="scales runs per day")
    parser.add_argument("--no-texts", action="store_true", help="leave task/prompt texts out")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--labels", type=Path, help="default: OUT with .labels.json")
    args = parser.parse_args()
    config = SimConfig(
        seed=args.seed,
        users=args.users,
        weeks=args.weeks,
        gaming_share=args.gaming_share,
        heavy_share=args.heavy_share,
        release_teams=args.release_teams,
        intensity=(args.intensity[0], args.intensity[1]),
        activity=args.activity,
        texts=not args.no_texts,
    )
    org = SimulatedOrg()
    started = time.perf_counter()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    count = write_events(args.out, simulate(config, org))
    labels = args.labels or args.out.with_suffix(".labels.json")
    labels.write_text(json.dumps(labels_document(config, org), indent=1) + "\n")
    took = time.perf_counter() - started
    print(f"{count} events for {len(org.labels)} people -> {args.out} ({took:.1f} s); {labels}")


if __name__ == "__main__":
    main()
