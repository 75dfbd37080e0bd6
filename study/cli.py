"""The `study` command: list, run, figures, report, all, bench.

Bad input is one line on stderr and exit status 2, before anything is
written; every output file is written atomically.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
import time
from pathlib import Path

import jax
import matplotlib

from study import bench, devices, figures, registry, report, results, runner, train


DIST = "dl-details-study"


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


log = runner.log


def cmd_list(args) -> None:
    for name, module in registry.experiments().items():
        print(f"{name}\t{module.QUESTION}")


MAX_RUN_EPOCHS = 50_000_000  # rows of a main results file (runs x epochs): about 2 GB of parquet


def plans(args) -> list[tuple]:
    """Every selected experiment's grid, checked before anything trains: an
    option its grid cannot take, a grid over MAX_RUN_EPOCHS, or an `--out`
    that cannot be written is a UsageError."""
    out = []
    for module in registry.select(args.name):
        try:
            per_seed = sum(len(p.runs) * p.setup.epochs for p in module.plan(seeds=1, epochs=args.epochs,
                                                                               quick=args.quick))
            seeds = args.seeds or (module.QUICK_SEEDS if args.quick else module.SEEDS)
            if per_seed * seeds > MAX_RUN_EPOCHS:
                raise ValueError(f"{module.NAME} with {seeds} seeds would train {per_seed * seeds:,} run-epochs; "
                                 f"the limit is {MAX_RUN_EPOCHS:,}")
            out.append((module, module.plan(seeds=args.seeds, epochs=args.epochs, quick=args.quick)))
        except ValueError as err:  # options the experiment's grid cannot take
            raise UsageError(err) from None
    try:
        results.check_writable(results.path_for(args.out, "x").parent)
    except OSError as err:
        raise UsageError(f"cannot write results under {args.out}: {err.strerror or err}") from None
    return out


def cmd_run(args) -> None:
    checked = plans(args)
    devices.configure(distributed=args.distributed)
    for module, programs in checked:
        start = time.perf_counter()
        config = {"seeds": int(programs[0].runs["seed"].nunique()), "epochs": args.epochs, "quick": args.quick}
        res = runner.run(module.NAME, programs, config, progress=log, batch_runs=args.batch_runs)
        path = results.path_for(args.out, module.NAME)
        if jax.process_index() == 0:  # every host holds the gathered results; one writes
            try:
                results.write(path, res)
            except OSError as err:  # e.g. a full disk: the previous files stay whole
                raise results.ResultsError(f"cannot write {path}: {err.strerror or err}; the previous files "
                                           "are unchanged") from None
        files = [(path, res.frame)] + [(results.table_path(path, k), f) for k, f in res.tables.items()]
        written = ", ".join(f"{p.name} ({len(f):,} rows)" for p, f in files)
        log(f"[{module.NAME}] wrote {written} to {path.parent} in {time.perf_counter() - start:.1f} s")
    hits, misses = devices.cache_counts()
    if devices.cache_dir():
        log(f"compilation cache {devices.cache_dir()}: {hits} programs loaded, {misses} compiled")


def load(module, out: Path) -> results.Results:
    return results.read(results.path_for(out, module.NAME))


def cmd_figures(args) -> None:
    modules = registry.select(args.name)
    loaded = [(m, load(m, args.out)) for m in modules]  # every file checked before any is drawn
    for module, res in loaded:
        drawn = module.figures(res)
        paths = [p for f in drawn for p in figures.save(f, module.NAME, args.out)]
        paths.append(figures.save_captions(drawn, module.NAME, args.out))
        log(f"[{module.NAME}] wrote {len(paths)} figure files to {Path(args.out) / 'figures'}")


def cmd_report(args) -> None:
    """A section per experiment with results; the others are named as missing."""
    modules = list(registry.experiments().values())
    present = [m for m in modules if results.path_for(args.out, m.NAME).exists()] or modules[:1]
    loaded = [(m, load(m, args.out), figures.read_captions(m.NAME, args.out)) for m in present]
    sections = [(modules.index(m) + 1, m.section(res), res.metadata, captions) for m, res, captions in loaded]
    missing = [m.NAME for m in modules if m not in present]
    md = report.render(sections, missing)
    paths = report.write(md, report.claims_frame([(n, s) for n, s, _, _ in sections]), args.out)
    log(f"wrote {', '.join(map(str, paths))}")


def cmd_verify(args) -> int:
    """Rerun one experiment at its committed config and compare: 1 when a
    claim's verdict changed."""
    module = registry.get(args.name)
    committed = load(module, args.out)
    config = committed.metadata["config"]
    devices.configure()
    programs = module.plan(seeds=config["seeds"], epochs=config["epochs"], quick=config["quick"])
    rerun = runner.run(module.NAME, programs, config, progress=log)
    for table, column, diff in results.differences(committed, rerun):
        print(f"{module.NAME}{'-' + table if table else ''}.{column}: largest absolute difference {diff:.3g}")
    changed, cells = 0, []
    claims = list(zip(module.section(committed).claims, module.section(rerun).claims))
    for i, (before, after) in enumerate(claims, 1):
        if before.result.verdict != after.result.verdict:
            changed += 1
            print(f"claim {i} ({before.text}): {before.result.verdict} -> {after.result.verdict}")
        cells += [f"claim {i}, {a.label}: {a.verdict} -> {b.verdict}"
                  for a, b in zip(before.result.cells, after.result.cells) if a.verdict != b.verdict]
    print("\n".join(cells) or "no cell verdict changed")
    print(f"{len(claims) - changed} of {len(claims)} verdicts unchanged")
    return 1 if changed else 0


def cmd_all(args) -> None:
    args.name = "all"
    cmd_run(args)
    cmd_figures(args)
    cmd_report(args)


def cmd_bench(args) -> None:
    devices.configure(cache=False)  # compile times included, as a new user meets them
    sizes = {"seeds": args.seeds, "epochs": args.epochs}
    if args.workload == "peer":
        bench.peer(registry.workloads()["peer"].plan(**sizes), torch=args.torch)
    elif args.workload == "grid":
        bench.grid(registry.get("initialization").plan(**sizes), naive_runs=args.naive_runs)
    elif args.workload == "tracking":
        plans = {name: module.plan(**sizes) for name, module in registry.experiments().items()}
        bench.tracking_overhead({name: p for name, p in plans.items() if any(x.setup.tracking for x in p)})
    elif args.workload == "scaling":
        peer, smallest = registry.workloads()["peer"], args.seeds or bench.SCALING_SEEDS
        bench.scaling({k * smallest: peer.plan(seeds=k * smallest, epochs=args.epochs or bench.SCALING_EPOCHS)
                       for k in bench.SCALING_FACTORS})
    else:
        programs = registry.get("transfer").plan(quick=True)
        bench.freeze_depth(next(p.setup for p in programs if p.label == "finetune_all"))


BENCHMARKS = ("peer", "grid", "tracking", "freeze-depth", "scaling")


def default_sizes(option: str) -> str:
    """Each experiment's default seeds, or epochs per program, for --help
    (from a one-seed plan: the epochs do not depend on the seeds)."""
    parts = []
    for name, module in registry.experiments().items():
        values = [module.SEEDS] if option == "seeds" else [p.setup.epochs for p in module.plan(seeds=1)]
        parts.append(f"{name} {'/'.join(map(str, dict.fromkeys(values)))}")
    return ", ".join(parts)


def build_parser() -> Parser:
    parser = Parser(prog="study", description="Re-run the deep-learning-details study.",
                    epilog=f"Compiled programs are cached in {devices.cache_dir() or '(no cache)'}; "
                           f"set {devices.CACHE_ENV} to another directory, or empty to compile every time.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {importlib.metadata.version(DIST)}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    sub.add_parser("list", help="each experiment and its question").set_defaults(func=cmd_list)

    def add(name, func, help, *, experiment=True, training=False):
        p = sub.add_parser(name, help=help)
        if experiment:
            p.add_argument("name", nargs="?" if name == "figures" else None, default="all",
                           help=f"one of: {', '.join(registry.experiments())}, all")
        if training:
            p.add_argument("--seeds", type=positive, help=f"seeds per condition (default: {default_sizes('seeds')})")
            p.add_argument("--epochs", type=positive, help=f"epochs per run (default: {default_sizes('epochs')})")
            p.add_argument("--quick", action="store_true", help="few seeds and epochs, every condition")
            p.add_argument("--batch-runs", type=positive,
                           help="runs vmapped together on each device (default: all of its runs on a GPU, "
                                f"{train.CPU_BATCH_RUNS} on a CPU)")
            p.add_argument("--distributed", action="store_true",
                           help="join a multi-host job with jax.distributed.initialize()")
        p.add_argument("--out", type=Path, default=Path("."), help="output root (default: .)")
        p.set_defaults(func=func)

    add("run", cmd_run, "train experiments and write results/NAME.parquet", training=True)
    add("figures", cmd_figures, "draw figures/NAME-*.png|svg|csv from the results")
    add("report", cmd_report, "write paper/report.md and paper/report.html", experiment=False)
    add("all", cmd_all, "run, figures and report", experiment=False, training=True)
    add("verify", cmd_verify, "rerun an experiment at its committed config and compare data and verdicts "
        "(exit 1 when a verdict changed)")
    bench = sub.add_parser("bench", help="time a workload, compilation included (no compilation cache)")
    bench.add_argument("workload", choices=BENCHMARKS, help="peer: the peer workload (16 seeds x 11 schemes, "
                       "1000 full-batch epochs); grid: the initialization grid against the matmul floor and a "
                       "Python loop; tracking: the cost of weight tracking; freeze-depth: a transfer step per "
                       "freeze depth; scaling: run-epochs/s of the peer workload at 16, 64 and 256 seeds "
                       "(--seeds: the smallest of the three; 200 epochs unless --epochs)")
    bench.add_argument("--torch", action="store_true", help="peer: also train it in PyTorch (the bench extra)")
    bench.add_argument("--seeds", type=positive, help="seeds per condition (default: the workload's)")
    bench.add_argument("--epochs", type=positive, help="epochs per run (default: the workload's)")
    bench.add_argument("--naive-runs", type=positive, default=8,
                       help="grid: runs timed with a per-step Python loop, then scaled to the grid (default 8)")
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    matplotlib.use("Agg")  # figures go to files; the library leaves a notebook's backend alone
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "name", None) not in (None, "all"):
            registry.get(args.name)
        status = args.func(args) or 0
    except UsageError as err:
        print(f"study: error: {err}", file=sys.stderr)
        return 2
    except (registry.UnknownExperiment, results.ResultsError) as err:
        print(f"study: error: {err.args[0]}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("study: interrupted; files already written are complete, the rest were not written",
              file=sys.stderr, flush=True)
        # XLA may still be compiling on its own threads, and tearing the
        # interpreter down under them crashes: leave at once (every results
        # file is written whole or not at all, see `results.atomic_write`).
        os._exit(130)
    return status


if __name__ == "__main__":
    sys.exit(main())
