"""The twin protocol from the command line: teacher, plain twin and distilled students on one budget.

    python benchmarks/twins.py --task classification --teacher resnet56.fmnist --student resnet8 \\
        --recipes kd fitnet at spkd --seeds 0 1 2 --set epochs=10 --set warmup_epochs=1 \\
        --out runs/twins-fmnist --results benchmarks/results --time-budget 600
    # the same command again resumes where it stopped; with --publish, once every seed has finished,
    # the twin and every method that beats it are published to the zoo (the median seed of each)

Writes ``<results>/twins-<dataset>-<teacher>-to-<student>-<recipes>.{md,json}`` (`ProtocolSpec.slug`, see `zoo.protocol`).
"""
from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path

from zoo import protocol
from zoo.cli import add_time_budget, deadline_in, parse_overrides, torch_device
from zoo.io import check_output_folder
from zoo.tasks import get_adapter

SHORT_NAMES = {"fashion-mnist": "fmnist"}


def settings_line(spec: protocol.ProtocolSpec, results: list[protocol.SeedResult], arms_note: str = "") -> str:
    s = spec.settings
    steps = {r.steps for r in results}
    hardware = sorted({r.hardware for r in results})
    mixed = len(hardware) > 1  # seeds trained on different machines: say which ran where
    walls = ", ".join(f"seed {r.seed}: {r.wall_seconds / 60:.0f} min" + (f" on {r.hardware}" if mixed else "")
                      for r in results)
    return (f"{spec.dataset}" + (f" (first {spec.train_subset} training examples)" if spec.train_subset else "")
            + f"; every arm: {', '.join(f'{k}={v}' for k, v in sorted(s.items()))}"
            + (f", {steps.pop()} optimizer steps" if len(steps) == 1 else "")
            + f"; seeds {spec.seeds}" + (f"; {arms_note}" if arms_note else "")
            + (f"; wall time per seed ({walls})" + ("" if mixed else f" on {hardware[0]}") if results else "") + ".")


def _repo_path(path: Path) -> str:
    """``path`` relative to the repository root when it lies inside it (as a bundled card cites its table)."""
    try:
        return path.resolve().relative_to(Path(__file__).resolve().parents[1]).as_posix()
    except ValueError:
        return str(path)


def entry_names(given: list[str], recipes: list[str], stem: str, short: str, twin: str | None) -> dict[str, str]:
    """Each recipe's zoo name: ``--entry-name RECIPE=NAME`` or ``STEM-RECIPE.SHORT``.

    Raises:
        ValueError: a malformed item, a recipe not compared or named twice, a name that is no zoo name
            (`zoo.registry.name_problem`), or two entries (the twin ``twin`` included) of one name.
    """
    from zoo.registry import name_problem

    names: dict[str, str] = {}
    for item in given:
        recipe, sep, name = item.partition("=")
        if not sep or recipe not in recipes:
            raise ValueError(f"--entry-name takes RECIPE=NAME with RECIPE one of {recipes}, got {item!r}")
        if recipe in names:
            raise ValueError(f"--entry-name names {recipe!r} twice ({names[recipe]!r}, {name!r})")
        if problem := name_problem(name):
            raise ValueError(f"--entry-name {item!r}: {problem}")
        names[recipe] = name
    names = {r: names.get(r, f"{stem}-{r}.{short}") for r in recipes}
    entries = [*names.values(), *([twin] if twin else [])]
    same = sorted({n for n in entries if entries.count(n) > 1})
    if same:
        whose = " (the twin's name)" if same[0] == twin else ""
        raise ValueError(f"two entries would be called {same[0]!r}{whose}; give each recipe its own --entry-name")
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="classification")
    p.add_argument("--teacher", required=True, help="zoo name or checkpoint folder of the teacher")
    p.add_argument("--student", required=True, help="student architecture (e.g. resnet8)")
    p.add_argument("--recipes", nargs="+", required=True, help="distillation recipes compared with the twin")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--dataset", help="the task's data set (default: the task's own, e.g. fashion-mnist)")
    p.add_argument("--train-subset", type=int)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="the shared budget: training settings of every arm (epochs, lr, warmup_epochs, ...)")
    p.add_argument("--out", required=True, help="run folder (resumed when it exists)")
    p.add_argument("--results", help="where the table goes (default: --out)")
    add_time_budget(p)
    p.add_argument("--only-seeds", type=int, nargs="+",
                   help="train only these of --seeds in this process (seeds are independent: run several processes, "
                        "e.g. OMP_NUM_THREADS=1 each, on one --out; a last call without it writes the whole table)")
    p.add_argument("--device", type=torch_device, help="torch device (default: cuda when there is one, else cpu)")
    p.add_argument("--publish", action="store_true",
                   help="once every seed is done: publish the twin and each method that beats it (median seed)")
    p.add_argument("--publish-dest", help="folder to publish into (default: the bundled weights/)")
    p.add_argument("--overwrite", action="store_true",
                   help="with --publish: replace entries of the same names in the destination (the zoo's own, re-made); "
                        "without it an existing entry is refused before any training")
    p.add_argument("--keep-twin", action="store_true",
                   help="with --publish: the twin's zoo entry exists already (from another table of the same student "
                        "and budget) and is kept; the distilled cards' baseline records this table's twin")
    p.add_argument("--no-twin-entry", action="store_true",
                   help="with --publish: publish only the distilled students, not the twin (e.g. a text twin too large "
                        "to bundle: the tracked tree must stay small); their cards' baseline records this table's twin "
                        "by its metrics, with no zoo name")
    p.add_argument("--entry-name", action="append", default=[], metavar="RECIPE=NAME",
                   help="with --publish: the zoo name of a recipe's entry (default STUDENT-RECIPE.DATASET), e.g. "
                        "tinybert=tinybert-kd to replace the entry of that name")
    p.add_argument("--restore", action="store_true",
                   help="first read finished seeds that --out lacks back from the results file (a run folder lost "
                        "with its machine); their checkpoints are gone, so retrain a restored seed with --only-seeds "
                        "before publishing it")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except (ValueError, OSError, KeyError) as e:  # a bad spec or folder: one line, nothing written
        print(f"twins.py: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: the checkpoints are written atomically, so nothing finished is lost
        print("\ntwins.py: interrupted; the finished seeds and each arm's last checkpoint are kept: run the same "
              "command again to resume", file=sys.stderr)
        return 130


def _to_continue(seeds: list[int], finished: list[int], only_seeds: list[int] | None) -> str:
    """What to run next when ``finished`` is not every seed: the same command again, unless it trained just
    ``only_seeds`` and those are done (the rest are another process's, or the next command's)."""
    left = [s for s in seeds if s not in finished]
    if only_seeds and set(only_seeds) <= set(finished):
        return (f"seed(s) {' '.join(map(str, left))} are not done: train them with --only-seeds "
                f"{' '.join(map(str, left))}, or run without --only-seeds")
    return "run the same command again to continue"


def _main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    task = get_adapter(args.task).protocol
    if task is None:
        raise ValueError(f"task {args.task!r} has no twin-protocol plug-in")
    dataset = args.dataset or getattr(task, "default_dataset", "fashion-mnist")
    spec = protocol.ProtocolSpec(args.task, args.teacher, args.student, args.recipes, args.seeds, dataset,
                                 parse_overrides(args.set), args.train_subset)
    deadline = deadline_in(args.time_budget)
    out = Path(args.out)
    for flag, given in (("--keep-twin", args.keep_twin), ("--no-twin-entry", args.no_twin_entry)):
        if given and not args.publish:
            raise ValueError(f"{flag} only applies with --publish")
    for flag, given in (("--entry-name", args.entry_name), ("--overwrite", args.overwrite)):
        if given and not args.publish:
            raise ValueError(f"{flag} only applies with --publish")
    if args.keep_twin and args.no_twin_entry:
        raise ValueError("--keep-twin and --no-twin-entry exclude each other (the twin is an entry already, or none)")
    short = SHORT_NAMES.get(spec.dataset) or re.sub(r"[^A-Za-z0-9.-]+", "-", Path(spec.dataset).name)  # a folder: its name
    stem = protocol.entry_stem(spec.student)  # e.g. mmseg-fcn-r18-c16 for an OpenMMLab config
    twin_name = f"{stem}.{short}"
    names = entry_names(args.entry_name, args.recipes, stem, short, None if args.no_twin_entry else twin_name)
    results_dir = Path(args.results or out)
    for flag, folder in (("--out", out), ("--results", results_dir), ("--publish-dest", args.publish_dest)):
        if folder is not None:
            check_output_folder(flag, folder)
    if args.publish:  # the entries' folders, checked before hours of training rather than after
        from zoo.publish import check_destination

        if args.keep_twin:
            from zoo.api import REGISTRY

            where = Path(args.publish_dest) / twin_name if args.publish_dest else None
            if not (where.is_dir() if where is not None else twin_name in REGISTRY):
                raise ValueError(f"--keep-twin: the twin's entry {twin_name} is not in "
                                 f"{args.publish_dest if where is not None else 'the zoo'}; drop --keep-twin to "
                                 "publish this table's twin")
        for name in [*names.values(), *([twin_name] if not (args.keep_twin or args.no_twin_entry) else [])]:
            check_destination(name, [], args.publish_dest, overwrite=args.overwrite, zoo_names=False)
    results = protocol.run(spec, task, out, deadline=deadline, device=args.device, only_seeds=args.only_seeds,
                           results_file=results_dir / f"{spec.slug()}.json", restore=args.restore)
    line = settings_line(spec, results, getattr(task, "arms_note", ""))
    table, summary = protocol.write_results(spec, task, results, results_dir, line)
    done = len(results) == len(spec.seeds)
    print(f"{len(results)}/{len(spec.seeds)} seeds done" + (f"; table in {table}" if summary is not None else "; no table yet")
          + ("" if done else "; " + _to_continue(spec.seeds, [r.seed for r in results], args.only_seeds)), flush=True)
    if not args.publish:
        return 0
    if not done or summary is None:
        raise ValueError(f"--publish needs every seed finished ({len(results)}/{len(spec.seeds)} are); "
                         "run the same command again to continue")
    command = shlex.join(["python", "benchmarks/twins.py", *(sys.argv[1:] if argv is None else argv)])
    teacher_name = protocol.teacher_label(task, spec)
    dest = Path(args.publish_dest) if args.publish_dest else None
    twin = summary[protocol.TWIN]
    scale, unit = protocol.metric_scale(spec.task, task.metric)
    winners = [arm for arm in spec.recipes if summary[arm].beats_twin]
    extra = {m: task.summary_of(spec, out, results, m) for m in getattr(task, "also_beat", ())}
    for metric, other in extra.items():  # e.g. gan: the Fréchet distance and PSNR both
        m_scale, m_unit = protocol.metric_scale(spec.task, metric)
        for arm in [a for a in winners if not other[a].beats_twin]:
            winners.remove(arm)
            print(f"not published: {arm} (it beats the twin on {task.metric} but not on {metric}: gain "
                  f"{other[arm].gain * m_scale:+.2f}{m_unit}, twin spread {protocol.twin_spread(other[protocol.TWIN]) * m_scale:.2f}{m_unit})")
    for arm in spec.recipes:
        if arm not in winners and summary[arm].beats_twin:
            continue
        if arm not in winners:
            why = (f"gain {summary[arm].gain * scale:+.2f}{unit} does not exceed the twin's spread "
                   f"{protocol.twin_spread(twin) * scale:.2f}{unit}" if summary[arm].gain is not None
                   else f"it diverged in all {summary[arm].diverged} seeds")
            print(f"not published: {arm} ({why})")
    if not winners:
        print("no method beats the twin: nothing published")
        return 0
    table_ref = _repo_path(table)  # where the table was written (--results), as the cards cite it
    twin_seed = protocol.median_seed(twin)
    twin_entry = not (args.keep_twin or args.no_twin_entry)  # this table's twin becomes a zoo entry
    protocol.unrestored(out, [protocol.median_seed(summary[a]) for a in winners] + ([twin_seed] if twin_entry else []))
    if args.no_twin_entry:
        print("twin not published (--no-twin-entry): the distilled cards' baseline records its metrics")
    elif args.keep_twin:  # (its entry was found before training)
        print(f"kept the zoo's twin {twin_name}; the distilled cards' baseline records this table's twin")
    else:
        card = task.publish(spec, twin_seed, protocol.TWIN, out / f"seed-{twin_seed}", twin_name, baseline=None,
                            teacher=None, command=command, dest=dest,
                            description=f"{spec.student} trained on the task loss only: the plain twin of the "
                                        f"students distilled from {teacher_name} on the same budget ({table_ref}).",
                            notes=f"Twin of the protocol table {table_ref}: {twin.mean * scale:.2f} ± {twin.std * scale:.2f}{unit} "
                                  f"over seeds {sorted(twin.values)}; seed {twin_seed} (the median) shipped. {line}")
        print(f"published {card.name} (twin, seed {twin_seed})")
    # with --keep-twin or --no-twin-entry this table's twin is no zoo entry: the baseline names none
    baseline = protocol.baseline_record(spec, summary, task.metric, results[0].steps,
                                        twin_name if twin_entry else None, table_ref)
    for metric, other in extra.items():
        t = other[protocol.TWIN]
        baseline["metrics"][metric] = {"mean": round(t.mean, 6), "std": round(t.std, 6), "n": t.n,
                                       "spread": round(protocol.twin_spread(t), 6)}
    for arm in winners:
        s = summary[arm]
        seed = protocol.median_seed(s)
        name = names[arm]
        card = task.publish(spec, seed, arm, out / f"seed-{seed}", name, baseline=baseline, teacher=spec.teacher,
                            command=command, dest=dest,
                            description=f"{spec.student} distilled from {teacher_name} with the {arm} recipe, on "
                                        f"exactly its plain twin's budget ({table_ref}).",
                            notes=f"Protocol row: {s.mean * scale:.2f} ± {s.std * scale:.2f}{unit} over seeds {sorted(s.values)} "
                                  f"({s.gain * scale:+.2f}{unit} over the twin); seed {seed} (the median) shipped. "
                                  + (f"This table's twin is not in the zoo; the zoo's plain {twin_name} is the same "
                                     f"recipe and budget from another protocol run. " if args.keep_twin else "") + line)
        print(f"published {card.name}: {task.metric} {card.metrics[task.metric] * scale:.2f}{unit} (seed {seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
