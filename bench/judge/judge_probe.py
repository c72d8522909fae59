"""The judge's gradient probe from the command line (steps/judge/probe.py says what it measures).

    python bench/judge/judge_probe.py --judge outputs/tiny/judge --pairs data/tiny/preferences --train data/tiny/train
    python bench/judge/judge_probe.py --judge foundations/tiny/judge --agreement   # the foundation, before fine-tuning

Start images: the first candidate of each held-out condition of the preference data (the same held-out split
as the agreement table). Prints the per-cell table for RMS budgets 0.03 and 0.12 and the machine it ran on;
``--agreement`` prints the held-out agreement table first (steps.judge.agreement, paper Table 1 thresholds);
``--out`` saves the whole result as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from steps.paths import TINY  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    from bench.benchlib import machine, machine_line
    from steps.judge.agreement import load_preference_data
    from steps.judge.probe import heldout_items, probe_markdown, run_probe
    from steps.models.judge import Judge
    from steps.runtime import setup

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--judge", default=str(TINY.judge))
    ap.add_argument("--pairs", default=str(TINY.preferences))
    ap.add_argument("--train", default=str(TINY.train))
    ap.add_argument("--heldout-fraction", type=float, default=0.35)
    ap.add_argument("--per-cell", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--agreement", action="store_true", help="also the held-out agreement table")
    ap.add_argument("--both-orders", action="store_true",
                    help="climb the both-orders preference (what RL with both_orders climbs), not P(Yes) as first")
    ap.add_argument("--eot", type=int, default=0, help="climb the mean over this many random shifts/blurs")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    setup(threads=args.threads)
    t0 = time.perf_counter()
    data = load_preference_data(args.pairs, args.train, args.heldout_fraction)
    judge = Judge.load(args.judge).eval()
    table = None
    if args.agreement:
        from steps.judge.agreement import PAPER_THRESHOLDS, agreement_table, table_markdown

        table = agreement_table(judge, data, PAPER_THRESHOLDS)
    result = run_probe(judge, heldout_items(data), per_cell=args.per_cell, both_orders=args.both_orders,
                       eot=args.eot)
    result["agreement"] = table
    result["machine"] = machine()
    result["seconds"] = time.perf_counter() - t0
    print(f"{args.judge}: {machine_line(result['machine'])}; {result['seconds']:.0f} s")
    if table is not None:
        print(table_markdown(table, simulated=True))
        print(f"mean {sum(r['accuracy'] for r in table.values()) / len(table):.3f}, "
              f"{sum(r['passed'] for r in table.values())}/{len(table)} cells at or above Table 1\n")
    print(probe_markdown(result))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


if __name__ == "__main__":
    main()
