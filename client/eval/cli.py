"""`vigor-eval GROUPS.jsonl`: score labelled groups on a running server and report, per signal,
how often the better-labelled completion of a pair scores higher (within-group AUROC)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..client import VigorClient
from ..errors import VigorError
from .cache import CacheError
from .data import InputError, load_groups
from .report import DEFAULT_BOOTSTRAP, format_table
from .runner import default_scores_path, evaluate
from .scoring import ScoringError
from .variants import CANDIDATES, check_served, format_served, format_variants

EPILOG = """\
input: one JSON object a line, e.g.
  {"messages": [{"role": "user", "content": "2+3?"}],
   "completions": [{"text": "5", "correct": true}, {"text": "6", "correct": false}]}
prompt: "prompt" (text), "messages" or "prompt_ids"; completion: "text" or "ids";
label: "correct" (true/false) or "score" (a number, higher is better; adds Spearman).

exit status: 0 done, 1 server or scores-file error, 2 bad input or arguments, 3 --spec asked but
no variant beats the best single signal (nothing written), 130 interrupted
(everything scored so far is in the scores file: rerun with --resume).
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vigor-eval",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # a later flag must not change what an abbreviation meant
    )
    p.add_argument("data", help="labelled groups, JSONL")
    p.add_argument(
        "--url",
        default=os.environ.get("VIGOR_URL", "http://127.0.0.1:8000"),
        help="the server (default: $VIGOR_URL or http://127.0.0.1:8000)",
    )
    p.add_argument(
        "--api-token",
        default=os.environ.get("VIGOR_API_TOKEN"),
        help="bearer token if the server has --api-token (default: $VIGOR_API_TOKEN)",
    )
    p.add_argument(
        "--scores",
        type=Path,
        default=None,
        help="scores file, appended as groups are scored (default: ./<data>.scores.jsonl)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an existing scores file, skipping the groups it holds",
    )
    p.add_argument(
        "--json",
        metavar="PATH",
        default=None,
        help="write the report as JSON to PATH ('-': to stdout, instead of the table)",
    )
    p.add_argument(
        "--plot",
        metavar="PNG",
        type=Path,
        default=None,
        help="draw AUROC per signal and per group (needs matplotlib)",
    )
    p.add_argument(
        "--groups-per-request",
        type=int,
        default=8,
        metavar="N",
        help="groups sent in one scoring request (default: 8)",
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help="for the entropy/self-certainty/log-prob signals only (default: 1.0)",
    )
    p.add_argument(
        "--bootstrap",
        type=int,
        default=DEFAULT_BOOTSTRAP,
        metavar="N",
        help=f"bootstrap resamples over groups (default: {DEFAULT_BOOTSTRAP})",
    )
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    p.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds to wait for one scoring request (default: 600)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    v = p.add_argument_group("reward variants (docs/variants.md)")
    v.add_argument(
        "--variants",
        action="store_true",
        help="also compare the reference's focal variants and a fitted combination of the "
        "signals on held-out folds, and say which spec (if any) beats the best single signal",
    )
    v.add_argument("--folds", type=int, default=5, help="grouped folds (default: 5)")
    v.add_argument(
        "--spec",
        type=Path,
        default=None,
        metavar="JSON",
        help="write the recommended variant's reward spec here (nothing is written when none "
        "is recommended); serve it with vigor-serve --reward-spec JSON",
    )
    v.add_argument(
        "--check-served",
        metavar="CANDIDATE",
        choices=CANDIDATES,
        default=None,
        help="serve each fold's fitted spec of CANDIDATE back on the server, score that fold's "
        "held-out groups by it, and compare the pairs with the report's claim",
    )
    v.add_argument(
        "--check-folds",
        default=None,
        metavar="F,F",
        help="with --check-served: only these folds (default: all)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for flag, value, low in (
        ("--groups-per-request", args.groups_per_request, 1),
        ("--bootstrap", args.bootstrap, 1),
        ("--folds", args.folds, 2),
    ):
        if value < low:
            parser.error(f"{flag} must be at least {low}, got {value}")
    if not args.temperature > 0:
        parser.error(f"--temperature must be positive, got {args.temperature}")
    if (args.spec or args.check_served) and not args.variants:
        parser.error("--spec and --check-served need --variants")
    try:
        check_folds = (
            None if args.check_folds is None else [int(f) for f in args.check_folds.split(",")]
        )
    except ValueError:
        parser.error(f"--check-folds must be fold numbers like 0,2; got {args.check_folds!r}")
    if check_folds and any(not 0 <= f < args.folds for f in check_folds):
        parser.error(f"--check-folds: folds are 0 to {args.folds - 1}; got {args.check_folds}")
    scores = args.scores or default_scores_path(args.data)
    try:
        data = load_groups(args.data)
        with VigorClient(args.url, api_token=args.api_token, timeout=args.timeout) as client:
            report = evaluate(
                data,
                client,
                scores_path=scores,
                resume=args.resume,
                groups_per_request=args.groups_per_request,
                temperature=args.temperature,
                bootstrap=args.bootstrap,
                seed=args.seed,
                progress=not args.no_progress,
                folds=args.folds if args.variants else None,
            )
            if args.check_served and "candidates" in report.get("variants", {}):
                report["served_check"] = check_served(
                    client, data, report["variants"], args.check_served,
                    check_folds if check_folds is not None else range(args.folds),
                )  # fmt: skip
    except InputError as exc:
        print(f"vigor-eval: {exc}", file=sys.stderr)
        return 2
    except (CacheError, ScoringError, VigorError) as exc:
        print(f"vigor-eval: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"\nvigor-eval: interrupted; the groups scored so far are in {scores}: rerun with "
            "--resume to continue",
            file=sys.stderr,
        )
        return 130
    for line in report.get("dropped_records", []) + report.get("skipped", []):
        print(f"vigor-eval: {line}", file=sys.stderr)
    if args.json == "-":
        print(json.dumps(report, indent=1))
    else:
        print(format_table(report))
        if "variants" in report:
            print("\n" + format_variants(report["variants"]))
        if "served_check" in report:
            print("\n" + format_served(report["served_check"]))
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    if args.spec:
        spec = report.get("variants", {}).get("recommended_spec")
        if spec is None:
            print(
                f"vigor-eval: no spec written to {args.spec}: nothing beats the best single "
                "signal on held-out folds",
                file=sys.stderr,
            )
            return 3
        args.spec.write_text(json.dumps(spec, indent=1) + "\n")
        print(f"wrote {args.spec}: serve it with vigor-serve --reward-spec {args.spec}")
    if args.plot:
        try:
            from .plot import plot_report

            plot_report(report, args.plot)
        except RuntimeError as exc:
            print(f"vigor-eval: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
