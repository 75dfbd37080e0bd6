"""The `study` command: list, run, figures, report, all, bench.

Bad input is one line on stderr and exit status 2, before anything is
written; every output file is written atomically.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax

import experiments
from study import bench, devices, figures, report, results, runner


class UsageError(Exception):
    """Bad input: printed as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cmd_list(args) -> None:
    for name, module in experiments.REGISTRY.items():
        print(f"{name}\t{module.QUESTION}")


def cmd_run(args) -> None:
    modules = experiments.select(args.name)
    devices.configure(distributed=args.distributed)
    for module in modules:
        start = time.perf_counter()
        config = {"seeds": args.seeds or None, "epochs": args.epochs, "quick": args.quick}
        try:
            programs = module.plan(seeds=args.seeds, epochs=args.epochs, quick=args.quick)
        except ValueError as err:  # options the experiment's grid cannot take
            raise UsageError(err) from None
        config["seeds"] = int(programs[0].runs["seed"].nunique())
        res = runner.run(module.NAME, programs, config, progress=log, batch_runs=args.batch_runs)
        path = results.path_for(args.out, module.NAME)
        if jax.process_index() == 0:  # every host holds the gathered results; one writes
            results.write(path, res)
        files = [(path, res.frame)] + [(results.table_path(path, k), f) for k, f in res.tables.items()]
        written = ", ".join(f"{p.name} ({len(f):,} rows)" for p, f in files)
        log(f"[{module.NAME}] wrote {written} to {path.parent} in {time.perf_counter() - start:.1f} s")


def load(module, out: Path) -> results.Results:
    return results.read(results.path_for(out, module.NAME))


def cmd_figures(args) -> None:
    modules = experiments.select(args.name)
    loaded = [(m, load(m, args.out)) for m in modules]  # every file checked before any is drawn
    for module, res in loaded:
        paths = [p for f in module.figures(res) for p in figures.save(f, module.NAME, args.out)]
        log(f"[{module.NAME}] wrote {len(paths)} figure files to {Path(args.out) / 'figures'}")


def cmd_report(args) -> None:
    loaded = [load(m, args.out) for m in experiments.REGISTRY.values()]
    sections = [(m.section(res), res.metadata) for m, res in zip(experiments.REGISTRY.values(), loaded)]
    paths = report.write(report.render(sections), args.out)
    log(f"wrote {', '.join(map(str, paths))}")


def cmd_all(args) -> None:
    args.name = "all"
    cmd_run(args)
    cmd_figures(args)
    cmd_report(args)


def cmd_bench(args) -> None:
    devices.configure()
    bench.main(seeds=args.seeds, epochs=args.epochs, naive_runs=args.naive_runs)
    bench.tracking_overhead(seeds=args.seeds, epochs=args.epochs)
    bench.freeze_depth()


def build_parser() -> Parser:
    parser = Parser(prog="study", description="Re-run the deep-learning-details study.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    sub.add_parser("list", help="each experiment and its question").set_defaults(func=cmd_list)

    def add(name, func, help, *, experiment=True, training=False):
        p = sub.add_parser(name, help=help)
        if experiment:
            p.add_argument("name", nargs="?" if name == "figures" else None, default="all",
                           help=f"one of: {', '.join(experiments.REGISTRY)}, all")
        if training:
            p.add_argument("--seeds", type=positive, help="seeds per condition (default: the experiment's)")
            p.add_argument("--epochs", type=positive, help="epochs per run (default: the experiment's)")
            p.add_argument("--quick", action="store_true", help="few seeds and epochs, every condition")
            p.add_argument("--batch-runs", type=positive, default=1,
                           help="runs vmapped together on each device (default 1: one after another; "
                                "raise it on GPUs)")
            p.add_argument("--distributed", action="store_true",
                           help="join a multi-host job with jax.distributed.initialize()")
        p.add_argument("--out", type=Path, default=Path("."), help="output root (default: .)")
        p.set_defaults(func=func)

    add("run", cmd_run, "train experiments and write results/NAME.parquet", training=True)
    add("figures", cmd_figures, "draw figures/NAME-*.png|svg|csv from the results")
    add("report", cmd_report, "write paper/report.md and paper/report.html", experiment=False)
    add("all", cmd_all, "run, figures and report", experiment=False, training=True)
    bench = sub.add_parser("bench", help="time the default initialization grid, the cost of weight tracking and "
                                                "Q4's step per freeze depth")
    bench.add_argument("--seeds", type=positive, help="seeds per condition (default: the experiment's)")
    bench.add_argument("--epochs", type=positive, help="epochs per run (default: the experiment's)")
    bench.add_argument("--naive-runs", type=positive, default=8,
                       help="runs timed with a per-step Python loop (then scaled to the grid)")
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "name", None) not in (None, "all"):
            experiments.get(args.name)
        args.func(args)
    except UsageError as err:
        print(f"study: error: {err}", file=sys.stderr)
        return 2
    except (experiments.UnknownExperiment, results.ResultsError) as err:
        print(f"study: error: {err.args[0]}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("study: interrupted; files already written are complete, the rest were not written",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
