"""The `study` command: list, run, figures, report, all, verify, bench.

Bad input is one line on stderr and exit status 2, before anything is
written; every output file is written atomically.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import jax
import matplotlib

from study import bench, calibration, claims, devices, figures, grid, registry, report, results, runner


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
    for name, question in registry.experiments().items():
        print(f"{name}\t{question.question}")


MAX_RUN_EPOCHS = 50_000_000  # rows of a main results file (runs x epochs): about 2 GB of parquet


def plans(args) -> list[tuple]:
    """Every selected experiment's grid, checked before anything trains: an
    option its grid cannot take, a grid over MAX_RUN_EPOCHS, or an `--out`
    that cannot be written is a UsageError."""
    out = []
    for question in registry.select(args.name):
        try:
            # At most: every seed trains the whole grid (evaluation seeds train only its choices).
            tuning, seeds = question.tuning_for(args.quick), question.seeds_for(args.seeds, args.quick)
            one = question.plan(1, args.epochs, args.quick)
            per_seed = sum(len(p.runs) * p.setup.epochs for p in one) // (tuning + 1)
            if per_seed * (tuning + seeds) > MAX_RUN_EPOCHS:
                raise ValueError(f"{question.name} with {seeds} evaluation seeds would train up to "
                                 f"{per_seed * (tuning + seeds):,} run-epochs; "
                                 f"the limit is {MAX_RUN_EPOCHS:,}")
            out.append((question, question.plan(args.seeds, args.epochs, args.quick)))
        except ValueError as err:  # options the experiment's grid cannot take
            raise UsageError(err) from None
    try:
        results.check_writable(results.path_for(args.out, "x").parent)
    except OSError as err:
        raise UsageError(f"cannot write results under {args.out}: {err.strerror or err}") from None
    check_cache()
    return out


def check_cache() -> None:
    """A compilation cache that cannot be written is a UsageError before any
    work (JAX would only warn, and compile every program again)."""
    if devices.cache_dir() is not None:
        try:
            results.check_writable(devices.cache_dir())
        except OSError as err:
            raise UsageError(f"cannot use the compilation cache {devices.cache_dir()} ({devices.CACHE_ENV}): "
                             f"{err.strerror or err}") from None


def cmd_run(args) -> None:
    checked = plans(args)
    devices.configure(distributed=args.distributed)
    for question, programs in checked:
        start = time.perf_counter()
        config = question.config(args.seeds, args.epochs, args.quick)
        res = runner.run(question.name, programs, config, progress=log, batch_runs=args.batch_runs)
        path = results.path_for(args.out, question.name)
        if jax.process_index() != 0:  # every host holds the gathered results; process 0 writes them
            continue
        save(path, res)
        files = [(path.name, res.frame)] + [(f"{question.name}-{k}", f) for k, f in res.tables.items()]
        written = ", ".join(f"{name} ({len(f):,} rows)" for name, f in files)
        log(f"[{question.name}] wrote {written} to {path.parent} in {time.perf_counter() - start:.1f} s")
    hits, misses = devices.cache_counts()
    if devices.cache_dir():
        log(f"compilation cache {devices.cache_dir()}: {hits} programs loaded, {misses} compiled")


def save(path: Path, res: results.Results) -> None:
    """`results.write`, its failure (e.g. a full disk) one line that says
    what the reader of `path` now finds."""
    existed = path.exists()
    try:
        results.write(path, res)
    except OSError as err:
        kept = f"{path.name} still holds the previous results, unchanged" if existed else "no results were kept"
        raise results.ResultsError(f"cannot write {path}: {err.strerror or err}; {kept}") from None


def load(question, out: Path) -> results.Results:
    return results.read(results.path_for(out, question.name))


EVALUATED: dict[tuple[str, str], list] = {}  # by question and write id


def evaluated(question, res: results.Results) -> list:
    """The question's claims on `res`, evaluated once per write in a process
    (figures and the report read the same claims)."""
    key = (question.name, res.metadata["write_id"])
    if key not in EVALUATED:
        EVALUATED[key] = question.claims(res)
    return EVALUATED[key]


@contextlib.contextmanager
def writing(what: str, folder: Path):
    """Check that `folder` can take files, and turn an OSError while writing
    (a full disk, a file where the folder should be) into one line."""
    try:
        results.check_writable(folder)
        yield
    except OSError as err:
        raise UsageError(f"cannot write {what} under {folder}: {err.strerror or err}") from None


def cmd_figures(args) -> None:
    questions = registry.select(args.name)
    loaded = [(q, load(q, args.out)) for q in questions]  # every file checked before any is drawn
    folder = Path(args.out) / "figures"
    for question, res in loaded:
        with writing("figures", folder):
            drawn = question.figures(res, evaluated(question, res))
            paths = [p for f in drawn for p in figures.save(f, question.name, args.out)]
            paths.append(figures.save_captions(drawn, question.name, args.out, res.metadata["write_id"]))
        log(f"[{question.name}] wrote {len(paths)} figure files to {folder}")


def captions_of(question, res: results.Results, out: Path) -> list[tuple[str, str]]:
    """The captions of figures drawn from exactly these results."""
    write_id, captions = figures.load_captions(question.name, out)
    if write_id != res.metadata["write_id"]:
        raise results.ResultsError(f"{figures.captions_path(question.name, out)} belongs to figures drawn from "
                                   f"another run of {question.name}; run `study figures {question.name} --out {out}`")
    return captions


def chapter(number: int, question, res: results.Results, captions: list[tuple[str, str]]) -> report.Chapter:
    """A question's part of the report, from its results and the captions of figures drawn from them."""
    claimed = evaluated(question, res)
    return report.Chapter(number, question, claimed, question.section(res, claimed), res.metadata, captions)


def cmd_report(args) -> None:
    """A section per experiment with results; the others are named as missing. Every
    file is read and checked before any claim is evaluated or anything written."""
    questions = list(registry.experiments().values())
    present = [q for q in questions if results.path_for(args.out, q.name).exists()] or questions[:1]
    loaded = [(q, res, captions_of(q, res, args.out)) for q in present for res in [load(q, args.out)]]
    chapters = [chapter(questions.index(q) + 1, q, res, captions) for q, res, captions in loaded]
    missing = [q.name for q in questions if q not in present]
    table = claims.claims_frame([(c.number, c.claims) for c in chapters])
    changed = report.changes(Path(args.out) / report.BASELINE, table)
    with writing("the report", Path(args.out) / "paper"):
        paths = report.write(report.render(chapters, missing, changed), table, args.out,
                             {"findings": report.findings(chapters, "paper/report.html#"),
                              "cost": report.cost_table(chapters, args.out)})
    log(f"wrote {', '.join(map(str, paths))}")


VERIFY_TOLERANCE = 1e-6  # the largest absolute difference of any number that verify accepts (timings aside)


def cmd_verify(args) -> int:
    """Rerun one experiment at its committed config and compare: 1 when a
    claim's verdict changed or a number moved by more than VERIFY_TOLERANCE."""
    question = registry.get(args.name)
    committed = load(question, args.out)
    config = committed.metadata["config"]
    check_cache()
    devices.configure()
    programs = question.plan(config["seeds"], config["epochs"], config["quick"], config["tuning_seeds"])
    rerun = runner.run(question.name, programs, config, progress=log)
    moved = 0
    for table, column, diff in results.differences(committed, rerun):
        moved += diff > VERIFY_TOLERANCE
        print(f"{question.name}{'-' + table if table else ''}.{column}: largest absolute difference {diff:.3g}")
    print(f"columns that differ by more than {VERIFY_TOLERANCE:g}: {moved}" if moved else
          f"every number within {VERIFY_TOLERANCE:g} of the committed one")
    before = question.claims(committed)
    changed, cells = claims.changes(before, question.claims(rerun))
    print("\n".join(changed + (cells or ["no cell verdict changed"])))
    print(f"{len(before) - len(changed)} of {len(before)} verdicts unchanged")
    return 1 if changed or moved else 0


def cmd_all(args) -> None:
    args.name = "all"
    cmd_run(args)
    cmd_figures(args)
    cmd_report(args)


def cmd_calibrate(args) -> None:
    """The calibration table of the verdicts' interval, printed and written to paper/calibration.csv."""
    table = calibration.table(repetitions=args.repetitions, progress=log)
    path = Path(args.out) / "paper" / "calibration.csv"
    results.atomic_write(path, lambda tmp: table.to_csv(tmp, index=False))
    print(report.markdown_table(calibration.wide(table)))
    log(f"wrote {path}")


def cmd_bench(args) -> None:
    devices.configure(cache=False)  # compile times included, as a new user meets them
    sizes = {"seeds": args.seeds, "epochs": args.epochs}
    if args.workload == "peer":
        bench.peer(registry.workloads()["peer"].plan(**sizes), torch=args.torch)
    elif args.workload == "grid":
        bench.grid(registry.get("initialization").plan(**sizes), naive_runs=args.naive_runs)
    elif args.workload == "tracking":
        plans = {name: question.plan(**sizes) for name, question in registry.experiments().items()}
        bench.tracking_overhead({name: p for name, p in plans.items() if any(x.setup.tracking for x in p)})
    elif args.workload == "scaling":
        peer, smallest = registry.workloads()["peer"], args.seeds or bench.SCALING_SEEDS
        bench.scaling({k * smallest: peer.plan(seeds=k * smallest, epochs=args.epochs or bench.SCALING_EPOCHS)
                       for k in bench.SCALING_FACTORS})
    else:
        programs = registry.get("transfer").plan(quick=True)
        bench.freeze_depth(next(p.setup for p in programs if p.label == "finetune_all"))


BENCHMARKS = ("peer", "grid", "tracking", "freeze-depth", "scaling")


class Deferred:
    """A help text computed only when --help shows it."""

    def __init__(self, text: Callable[[], str]):
        self.text = text

    def __str__(self) -> str:
        return self.text()


def default_sizes(option: str) -> str:
    """Each experiment's default seeds, or epochs per program, for --help
    (from a one-seed plan: the epochs do not depend on the seeds)."""
    parts = []
    for name, question in registry.experiments().items():
        values = [question.seeds] if option == "seeds" else [p.setup.epochs for p in question.plan(1)]
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
            p.add_argument("--seeds", type=positive, help="evaluation seeds per condition, beside the tuning "
                           f"seeds (default: {default_sizes('seeds')})")
            epochs = p.add_argument("--epochs", type=positive, help="epochs per run (default: %(sizes)s)")
            epochs.sizes = Deferred(lambda: default_sizes("epochs"))  # planning every experiment takes seconds
            p.add_argument("--quick", action="store_true", help="few seeds and epochs, every condition")
            p.add_argument("--batch-runs", type=positive,
                           help="runs vmapped together on each device (default: all of its runs on a GPU, "
                                f"{grid.CPU_BATCH_RUNS} on a CPU)")
            p.add_argument("--distributed", action="store_true",
                           help="join a multi-host job with jax.distributed.initialize()")
        p.add_argument("--out", type=Path, default=Path("."), help="output root (default: .)")
        p.set_defaults(func=func)
        return p

    add("run", cmd_run, "train experiments and write results/NAME.parquet", training=True)
    add("figures", cmd_figures, "draw figures/NAME-*.png|svg|csv from the results")
    add("report", cmd_report, "write paper/report.md and paper/report.html", experiment=False)
    add("all", cmd_all, "run, figures and report", experiment=False, training=True)
    add("verify", cmd_verify, "rerun an experiment at its committed config and compare data and verdicts "
        f"(exit 1 when a verdict changed or a number differs by more than {VERIFY_TOLERANCE:g})")
    calibrate = add("calibrate", cmd_calibrate, "measure the coverage of the interval methods on simulated seeds "
                    "and write paper/calibration.csv", experiment=False)
    calibrate.add_argument("--repetitions", type=positive, default=calibration.REPETITIONS,
                           help=f"simulated samples per cell of the table (default {calibration.REPETITIONS})")
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


def interrupt_outside_gc(signum, frame):
    """Ctrl-C as KeyboardInterrupt, except inside a garbage collector's
    callback (JAX registers one), where Python would print the exception
    as a traceback and drop it: the signal is then sent again a moment later."""
    callbacks = {getattr(callback, "__code__", None) for callback in gc.callbacks}
    while frame is not None:
        if frame.f_code in callbacks:
            threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT)).start()
            return
        frame = frame.f_back
    raise KeyboardInterrupt


@contextlib.contextmanager
def interrupts_outside_gc():
    """`interrupt_outside_gc` while the command runs, where Ctrl-C raises
    (Python's default handler, in the main thread); elsewhere, as it was."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    signal.signal(signal.SIGINT, interrupt_outside_gc)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: list[str] | None = None) -> int:
    matplotlib.use("Agg")  # figures go to files; the library leaves a notebook's backend alone
    try:
        with interrupts_outside_gc():
            return run_command(argv)
    except KeyboardInterrupt:
        print("study: interrupted; files already written are complete, the rest were not written",
              file=sys.stderr, flush=True)
        # XLA may still be compiling on its own threads, and tearing the
        # interpreter down under them crashes: leave at once (every results
        # file is written whole or not at all, see `results.atomic_write`).
        os._exit(130)


def run_command(argv: list[str] | None) -> int:
    """The command's exit status: 0, or 2 with one line for bad input."""
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
    return status


if __name__ == "__main__":
    sys.exit(main())
