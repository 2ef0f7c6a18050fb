"""Run the fuzz targets for as long as asked; failing inputs go to tests/fuzz/corpus/.

    python -m tests.fuzz --target ike --inputs 1000000 --seed 7
    python -m tests.fuzz --target all --seconds 900
    python -m tests.fuzz --replay          # the saved regression cases only
"""

from __future__ import annotations

import argparse
import sys

from tests.fuzz.engine import fuzz, replay
from tests.fuzz.targets import MODULES, target


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="all", choices=["all", *MODULES])
    ap.add_argument("--inputs", type=int, help="inputs per target")
    ap.add_argument("--seconds", type=float, help="wall time in all (split between targets)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-save", action="store_true", help="do not keep failing inputs")
    ap.add_argument("--replay", action="store_true", help="only replay the saved corpus")
    args = ap.parse_args(argv)
    names = list(MODULES) if args.target == "all" else [args.target]
    failed = False
    for name in names:
        t = target(name)
        if args.replay:
            for f in replay(t):
                failed = True
                print(f"{name}: {f.saved}: {f.signature}\n{f.detail}")
            continue
        seconds = args.seconds / len(names) if args.seconds else None
        if seconds is None and args.inputs is None:
            seconds = 10.0
        report = fuzz(t, args.seed, inputs=args.inputs, seconds=seconds,
                      keep=not args.no_save, progress=True)
        print(report.line(), flush=True)
        for sig, f in report.failures.items():
            failed = True
            print(f"  {report.counts[sig]}x {sig} [{f.kind}] -> {f.saved or 'not saved'}")
            print("    " + f.detail.strip().splitlines()[-1])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
