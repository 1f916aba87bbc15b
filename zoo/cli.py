"""The `zoo` command line: list, card, predict, eval, train, distill, recipes, publish.

The ``--json`` outputs are a stable, versioned schema (``schema_version``), documented in README.md.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence


def _finite_non_negative(text: str, what: str) -> float:
    value = float(text)  # a ValueError: argparse says "invalid <type name> value"
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{what}must be a finite number >= 0, got {text}")
    return value


def minutes(text: str) -> float:
    """The argparse type of ``--time-budget``: a finite number of minutes >= 0 (argparse reports anything else)."""
    return _finite_non_negative(text, "minutes ")


def fraction(text: str) -> float:
    """The argparse type of a tolerance: a finite number >= 0 (argparse reports anything else)."""
    return _finite_non_negative(text, "")


def positive_int(text: str) -> int:
    """The argparse type of a count such as ``--top-k``: an integer >= 1 (argparse names the option otherwise)."""
    value = int(text)  # a ValueError: argparse says "invalid positive_int value"
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def folder(text: str) -> str:
    """The argparse type of an output folder such as ``--save``: a non-empty path (``--save ""`` saved nothing)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must name a folder, got an empty string")
    return text


def torch_device(text: str) -> str:
    """The argparse type of ``--device``: a torch device this machine has (``cpu``, ``cuda``, ``cuda:1``, ``mps``);
    an unknown name or an absent accelerator is an argparse error, not a traceback from deep in a run."""
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device (cpu, cuda, cuda:0, mps, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: no CUDA device on this machine (torch.cuda.is_available() is "
                                         "False); use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: no MPS device on this machine; use --device cpu")
    if device.type not in ("cpu", "cuda", "mps"):  # meta holds no data; xpu, hpu, ...: where this torch has them
        backend = getattr(torch, device.type, None)
        if device.type == "meta" or not getattr(backend, "is_available", lambda: False)():
            raise argparse.ArgumentTypeError(f"{text!r}: no {device.type} device this torch can run a model on; use "
                                             "--device cpu (or cuda, mps where there is one)")
    return text


def run_folder(text: str) -> str:
    """The argparse type of ``--out``: a folder path, a leading ``~`` expanded; an empty one (which trained into the
    working directory) is an argparse error."""
    if not text.strip():
        raise argparse.ArgumentTypeError("the run folder is empty; name a folder, e.g. --out runs/mine")
    return os.path.expanduser(text)  # (--out=~/run is not expanded by the shell)


def require_run_identity(parser: argparse.ArgumentParser, args: argparse.Namespace, flags: dict[str, str]) -> None:
    """The options that say what a run is (``flags``: argparse attribute -> the run record's identity key, e.g.
    ``{"arch": "student"}``). With ``--resume`` each one not given is read from the record in ``args.out``
    (`zoo.runs`), so that ``--resume`` alone continues a run; one still missing is an argparse error."""
    from .runs import read_record

    try:
        record = read_record(args.out) if args.resume else None
    except ValueError as e:  # not a run record
        parser.error(str(e))
    started = record["identity"] if record is not None else {}
    missing = []
    for attr, key in flags.items():
        if not getattr(args, attr, None):
            value = started.get(key)
            setattr(args, attr, value if isinstance(value, str) and value else None)  # (a run record edited by hand)
        if not getattr(args, attr):
            missing.append("--" + attr.replace("_", "-"))
    if missing:
        why = ""
        if args.resume:
            why = (f" (--resume: there is no run in {args.out}, no such folder)" if not Path(args.out).exists()
                   else f" (no run record in {args.out} to take them from)" if record is None
                   else f" (the run record in {args.out} does not name them)")
        parser.error(f"the following arguments are required: {', '.join(missing)}{why}")


def add_time_budget(parser: argparse.ArgumentParser) -> None:
    """The ``--time-budget MINUTES`` option every long command shares (read it with `deadline_in`)."""
    parser.add_argument("--time-budget", type=minutes, metavar="MINUTES",
                        help="stop resumably once this many minutes are spent; the same command continues the run")


def deadline_in(minutes_: float | None) -> float | None:
    """The `time.monotonic` deadline ``minutes_`` from now, or None (no limit) for None."""
    return None if minutes_ is None else time.monotonic() + 60.0 * minutes_


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["lr=0.05", "nesterov=false"]`` -> ``{"lr": 0.05, "nesterov": False}`` (values parsed as JSON when they can be).

    An item without ``=`` or with an empty key is a usage error: the message on stderr and exit status 2, as
    argparse gives for other malformed options."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item or not item.split("=", 1)[0].strip():
            print(f"--set expects key=value, got {item!r}", file=sys.stderr)
            raise SystemExit(2)
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            low = value.strip().lower()
            out[key.strip()] = {"true": True, "false": False, "none": None, "null": None}.get(low, value)
    return out

JSON_SCHEMA_VERSION = 1
LIST_FIELDS = ("name", "aliases", "task", "architecture", "method", "dataset", "split", "metrics", "params",
               "flops", "latency_ms", "teacher", "source", "metrics_source", "baseline")


def _print_json(obj: Any) -> None:
    """``obj`` as indented JSON; tensors and arrays in it (e.g. a predicted mask) as nested lists, one row
    per line rather than one number per line."""
    arrays: list[Any] = []

    def placeholder(value: Any) -> str:
        if not hasattr(value, "tolist"):
            raise TypeError(f"{type(value).__name__} is not JSON serialisable")
        arrays.append(value.tolist())
        return f"\x00array{len(arrays) - 1}\x00"

    text = json.dumps(obj, indent=2, default=placeholder)
    for k, value in enumerate(arrays):
        rows = (",\n".join(json.dumps(row, separators=(",", ":")) for row in value)
                if value and isinstance(value[0], list) else json.dumps(value, separators=(",", ":")))
        text = text.replace(json.dumps(f"\x00array{k}\x00"), f"[\n{rows}\n]" if value and isinstance(value[0], list) else rows)
    print(text)


def _fmt_num(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


ADD_HELP = ("checkpoints of your own (a checkpoint folder, or a folder of them such as a zoo publish --dest) listed "
            "with the zoo's entries (repeatable)")


def _add_folders(folders: list[str]) -> dict[str, str]:
    """``--add FOLDER``: the checkpoints of one's own (a checkpoint folder, or a folder of them) join the
    zoo for this command; returns their folders by entry name. A checkpoint whose card name is taken by another
    entry (a run of one's own is named as the shipped entry it reproduces) joins as ``NAME+FOLDER``, its folder's
    name (then ``NAME+PARENT-FOLDER``, ... until the name is free). Raises ``ValueError`` for a folder with no
    checkpoint."""
    from dataclasses import replace

    from .api import REGISTRY
    from .hub import checkpoint_folders, read_card

    added = {}
    for folder in folders:
        found = checkpoint_folders(folder)
        if not found:
            raise ValueError(f"--add {folder}: no checkpoint folder (one with a README.md card) in it")
        for path in found:
            card = read_card(path)
            name = _free_name(card, Path(path).resolve().parts, REGISTRY)
            card = replace(card, name=name)
            if name not in REGISTRY:  # (the same card again: in already)
                REGISTRY.register(card)
            added[name] = str(path)
    return added


def _free_name(card: Any, parts: tuple[str, ...], registry: Any) -> str:
    """``card``'s name if it is free (or names this very card), else ``NAME+FOLDER``, ``NAME+PARENT-FOLDER``, ...
    (a folder's characters other than letters, digits, ``_`` and ``-`` become ``-``), else ``NAME+FOLDER-2``, ..."""
    import re
    from dataclasses import replace

    def free(name: str) -> bool:
        return name not in registry or registry.get(name) == replace(card, name=name)

    if free(card.name):
        return card.name
    tried = []
    for depth in range(1, len(parts) + 1):
        slug = re.sub(r"[^A-Za-z0-9_-]+", "-", "-".join(parts[-depth:])).strip("-") or "run"
        tried.append(f"{card.name}+{slug}")
        if free(tried[-1]):
            return tried[-1]
    k = 2
    while not free(f"{tried[0]}-{k}"):
        k += 1
    return f"{tried[0]}-{k}"


def _cmd_list(args: argparse.Namespace) -> int:
    import zoo

    from .tasks import known_tasks

    added = _add_folders(args.add)

    if args.task is not None and args.task not in known_tasks():
        return _fail(args, ValueError(f"unknown task {args.task!r}; the tasks are: {', '.join(sorted(known_tasks()))}"), 2)
    from .comparison import select

    select(dataset=args.dataset, method=args.method)  # a method or data set that no entry has: an error, as in compare
    cards = zoo.list_models(task=args.task, method=args.method, dataset=args.dataset)
    if args.json:
        _print_json({"schema_version": JSON_SCHEMA_VERSION,
                     "models": [{k: c.to_dict()[k] for k in LIST_FIELDS} for c in cards]})
        return 0
    if not cards:
        print("no zoo entries match")
        return 0
    from .comparison import source_label, twin_gain

    rows = [("name", "task", "method", "dataset", "metrics", "vs plain twin", "params", "FLOPs", "source")]
    for c in cards:
        metrics = " ".join(f"{k}={v:.4f}" for k, v in c.metrics.items())
        rows.append((c.name, c.task, c.method, c.dataset, metrics, twin_gain(c), _fmt_num(c.params), _fmt_num(c.flops),
                     source_label(c) if c.metrics_source == "reported" else added.get(c.name, c.source)))  # reported: not kdzoo's numbers
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from .comparison import comparison_rows, format_rows, plot, select

    _add_folders(args.add)
    cards = select(args.task, args.dataset, args.method)
    if args.html:  # first: a bad card or plot is named there, and the rest of the board is still written
        from .board import build_board

        board = build_board(cards, args.html, args.x)
        for problem in board.problems:
            print(f"zoo compare: warning: {problem}", file=sys.stderr)
        print(f"board: {board.path} ({board.entries} entries)", file=sys.stderr if args.json else sys.stdout)
    rows = comparison_rows(cards)
    if args.plot:
        print(f"plot: {plot(rows, args.plot, args.x)}", file=sys.stderr if args.json else sys.stdout)
    if args.json:
        _print_json({"schema_version": JSON_SCHEMA_VERSION, "rows": rows})
    elif rows:
        print(format_rows(rows))
    else:
        print("no zoo entries match")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export_onnx

    result = export_onnx(args.name, args.onnx, dtype=args.dtype, int8=args.int8, tolerance=args.tolerance,
                         inputs=args.input)
    if args.json:
        _print_json({"schema_version": JSON_SCHEMA_VERSION, **result})
    else:
        bound = f" (bound {result['tolerance']:.3g})" if result["tolerance"] is not None else " (int8: not bounded)"
        print(f"{result['path']}: {result['bytes'] / 1e6:.2f} MB, {result['dtype']}{' int8' if result['int8'] else ''}, "
              f"max |onnxruntime - PyTorch| {result['max_abs_diff']:.3g}{bound} on inputs {result['inputs']}")
        if "detections" in result:  # a detector: one image per run, its detections matched
            d = result["detections"]
            print(f"  detections on {d['images']} sample images: PyTorch {d['pytorch']}, onnxruntime {d['onnx']}, "
                  f"{d['matched']} matched (same label, IoU >= {d['match_iou']}); boxes within {d['max_box_diff']:.3g} px, "
                  f"scores within {d['max_score_diff']:.3g}; dynamic: {result['dynamic']}")
    return 0


def _cmd_card(args: argparse.Namespace) -> int:
    import zoo
    from .hub import render_card

    c = zoo.card(args.name)
    if args.json:
        _print_json({"schema_version": JSON_SCHEMA_VERSION, "card": c.to_dict()})
    else:
        print(render_card(c).split("---", 2)[2].strip())
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    import zoo

    if args.save:
        from .io import check_output_folder

        check_output_folder("--save", args.save)
    model = zoo.load(args.name)
    from .tasks import get_adapter

    adapter = get_adapter(model.card.task)
    inputs = args.inputs or adapter.sample_inputs(model.card)
    results = zoo.predict(model, list(inputs), top_k=args.top_k)
    if args.save:  # the task renders each prediction into files (masks, overlays, ...)
        for i, r in zip(inputs, results):
            r["saved"] = [str(p) for p in adapter.save_prediction(r, i, Path(args.save))]
    if args.json:
        _print_json({"schema_version": JSON_SCHEMA_VERSION, "name": model.card.name,
                     "predictions": [{"input": str(i), **r} for i, r in zip(inputs, results)]})
    else:
        for i, r in zip(inputs, results):
            print(f"{i}: {adapter.describe(r)}" + (f" -> {', '.join(r['saved'])}" if r.get("saved") else ""))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    import zoo

    report = zoo.evaluate(args.name, data_root=args.data_root, device=args.device)
    delta = {k: report["measured"][k] - v for k, v in report["card"].items() if k in report["measured"]}
    ok = all(abs(d) <= args.tolerance for d in delta.values())
    out = {"schema_version": JSON_SCHEMA_VERSION, **{k: report[k] for k in ("name", "task", "dataset", "split")},
           "card": report["card"], "measured": report["measured"], "delta": delta,
           "tolerance": args.tolerance, "within_tolerance": ok}
    if args.json:
        _print_json(out)
    else:
        for k, v in report["card"].items():
            m = report["measured"].get(k)
            print(f"{report['name']} {report['dataset']}/{report['split']} {k}: card {v:.4f}, measured "
                  + (f"{m:.4f} (delta {m - v:+.4f})" if m is not None else "n/a"))
        print("OK: within tolerance" if ok else f"DRIFT: beyond tolerance {args.tolerance}")
    return 0 if ok else 1


def _cmd_publish(args: argparse.Namespace) -> int:
    from .hub import CARD_FILE, read_card
    from .publish import check_destination
    from .tasks import get_adapter, known_tasks
    from .trainer import STATE_FILE

    if not Path(args.run_dir).is_dir():
        raise ValueError(f"run folder {args.run_dir} does not exist" if not Path(args.run_dir).exists()
                         else f"{args.run_dir} is a file, not a run folder")
    check_destination(args.name, args.alias, args.dest, overwrite=args.overwrite)
    if not (Path(args.run_dir) / CARD_FILE).exists():  # a task's own kind of run folder (e.g. a pipeline's)
        for task in known_tasks():
            card = get_adapter(task).publish_run(args.run_dir, args.name, dest_root=args.dest, aliases=args.alias,
                                                 notes=args.notes or "")
            if card is not None:
                print(f"published {card.name}: " + ", ".join(f"{k}={v:.4f}" for k, v in card.metrics.items()))
                return 0
    if not (Path(args.run_dir) / CARD_FILE).exists() and (Path(args.run_dir) / STATE_FILE).exists():
        raise ValueError(f"{args.run_dir} is an unfinished run (a checkpoint, no card yet): finish it with the "
                         "command that started it and --resume, then publish it")
    read_card(args.run_dir)  # a clear error for a directory that is not a kdzoo run
    from .publish import publish

    card = publish(args.run_dir, args.name, dest_root=args.dest, aliases=args.alias, notes=args.notes or "",
                   description=args.description or "", data_root=args.data_root)
    print(f"published {card.name}: " + ", ".join(f"{k}={v:.4f}" for k, v in card.metrics.items()))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    """``zoo train|distill TASK ...``: the task's own command line (`zoo.tasks.TaskAdapter.cli`)."""
    from .tasks import get_adapter

    if args.task is None:
        args.parser.print_help()
        return 0 if args.help else 2
    return get_adapter(args.task).cli(args.command, ["--help"] if args.help else list(args.args))


def _cmd_recipes(args: argparse.Namespace) -> int:
    from .recipes import RECIPES, recipe_dict

    if args.json:
        _print_json({"schema_version": JSON_SCHEMA_VERSION, "recipes": [recipe_dict(RECIPES[n]) for n in sorted(RECIPES)]})
        return 0
    width = max(len(n) for n in RECIPES)
    for name in sorted(RECIPES, key=lambda n: (RECIPES[n].task, n)):
        r = RECIPES[name]
        terms = " + ".join(f"{t.weight:g}*{t.name}" for t in r.terms)
        print(f"{r.task:15s} {name:{width}s} {r.task_weight:g}*task" + (f" + {terms}" if terms else "")
              + (f"   ({r.paper})" if r.paper else ""))
    return 0


def _command(sub: Any, name: str, what: str) -> argparse.ArgumentParser:
    """A subcommand whose one-line ``what`` is both its line in `zoo --help` and its own --help's description.

    The subcommand's parser is its ``parser`` default, so `main` reports an unknown option with its usage."""
    parser = sub.add_parser(name, help=what, description=what)
    parser.set_defaults(parser=parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="zoo", description="kdzoo: knowledge-distillation model zoo")
    sub = p.add_subparsers(dest="command", required=True)

    ls = _command(sub, "list", "list zoo entries: task, method, data set, metrics, gain over the plain twin, size, "
                  "source")
    ls.add_argument("--task", help="only entries of this task (the task column of zoo list)")
    ls.add_argument("--method", help="only this method (e.g. kd, plain)")
    ls.add_argument("--dataset", help="only this data set (e.g. fashion-mnist)")
    ls.add_argument("--add", action="append", default=[], metavar="FOLDER", help=ADD_HELP)
    ls.add_argument("--json", action="store_true", help="machine-readable output (stable schema)")
    ls.set_defaults(func=_cmd_list)

    cp = _command(sub, "compare", "compare published students: metric, size, compute, latency, gain over the twin")
    cp.add_argument("--task", help="only this task")
    cp.add_argument("--dataset", help="only this data set")
    cp.add_argument("--method", help="only this method")
    cp.add_argument("--add", action="append", default=[], metavar="FOLDER", help=ADD_HELP)
    cp.add_argument("--json", action="store_true", help="machine-readable output (stable schema)")
    cp.add_argument("--plot", metavar="FILE", help="write the quality-vs-cost plot (one task; a panel per data set)")
    cp.add_argument("--x", default="params", choices=["params", "flops", "latency"], help="the plot's cost axis")
    cp.add_argument("--html", metavar="DIR", help="write the board: DIR/index.html, one static page (a tab per task, "
                    "sortable and filterable table, plots, cards)")
    cp.set_defaults(func=_cmd_compare)

    ex = _command(sub, "export", "write an entry as ONNX, checked against onnxruntime on its sample inputs")
    ex.add_argument("name", help="zoo name, alias or checkpoint directory")
    ex.add_argument("--onnx", required=True, metavar="FILE", help="the .onnx file to write")
    ex.add_argument("--dtype", default="fp32", choices=["fp32", "fp16"], help="weights and activations (default fp32)")
    ex.add_argument("--int8", action="store_true", help="onnxruntime's dynamic int8 quantisation of the weights")
    ex.add_argument("--input", nargs="+", metavar="FILE", help="sample inputs to export and check with, as `zoo predict` "
                    "takes them (default: the task's bundled samples; needed where an entry's data set has none)")
    ex.add_argument("--tolerance", type=float, help="max |onnxruntime - PyTorch| relative to max(1, |output|) "
                    "(detectors: boxes relative to the largest coordinate, scores absolute)")
    ex.add_argument("--json", action="store_true", help="machine-readable output (stable schema)")
    ex.set_defaults(func=_cmd_export)

    cd = _command(sub, "card", "show a model card: metrics, teacher, twin, training command, files with sha256")
    cd.add_argument("name", help="zoo name, alias or checkpoint directory")
    cd.add_argument("--json", action="store_true", help="machine-readable output (stable schema)")
    cd.set_defaults(func=_cmd_card)

    pr = _command(sub, "predict", "run a zoo model on inputs (default: its bundled sample inputs)")
    pr.add_argument("name", help="zoo name, alias or checkpoint directory")
    pr.add_argument("inputs", nargs="*", help="inputs as the task takes them (image files, texts, ...)")
    pr.add_argument("--top-k", type=positive_int, default=1, help="how many results per input: a classifier's K best classes (default 1); "
                    "for models that find several objects per input (boxes), all of them unless K > 1 is given")
    pr.add_argument("--json", action="store_true", help="machine-readable output (stable schema)")
    pr.add_argument("--save", metavar="DIR", type=folder, help="write each prediction as files into DIR (e.g. a mask and a colour "
                                                  "overlay PNG), where the task renders predictions")
    pr.set_defaults(func=_cmd_predict)

    ev = _command(sub, "eval", "re-measure a card's metrics with kdzoo's eval on its dataset split; exit status 1 "
                  "when a metric drifts beyond --tolerance")
    ev.add_argument("name", help="zoo name, alias or checkpoint directory")
    ev.add_argument("--data-root", default=None, help="where the data sets are (default: $KDZOO_DATA, else "
                    "~/.cache/kdzoo/data)")
    ev.add_argument("--device", default="cpu", type=torch_device, help="torch device (default cpu)")
    ev.add_argument("--tolerance", type=fraction, default=0.003,
                    help="allowed |measured - card|, as a fraction (default 0.003 = 0.3 points)")
    ev.add_argument("--json", action="store_true", help="machine-readable output (stable schema)")
    ev.set_defaults(func=_cmd_eval)

    pb = _command(sub, "publish", "re-save a finished run as an fp16 zoo entry with a re-measured card")
    pb.add_argument("run_dir", help="a finished run folder (from zoo train / zoo distill)")
    pb.add_argument("--name", required=True, help="the zoo name, e.g. resnet8-kd.fmnist")
    pb.add_argument("--alias", action="append", default=[], help="another name for the entry (repeatable)")
    pb.add_argument("--dest", default=None, help="destination root (default: the bundled weights/ folder)")
    pb.add_argument("--overwrite", action="store_true", help="replace DEST/NAME if it exists (default: refuse)")
    pb.add_argument("--data-root", default=None,
                    help="where the run's evaluation data is (default: where the run read it; an image folder "
                         "that has moved, or the test images of a run on Python datasets)")
    pb.add_argument("--notes", default=None, help="text for the card's training notes")
    pb.add_argument("--description", default=None, help="the card's one-paragraph description")
    pb.set_defaults(func=_cmd_publish)

    from .tasks import known_tasks

    for command, what in (("train", "train a model of TASK from scratch, task loss only"),
                          ("distill", "distil a student of TASK from teacher(s) with a recipe")):
        r = sub.add_parser(command, help=what, add_help=False,  # --help after TASK is the task's
                           description=f"{what}; `zoo {command} TASK --help` shows the task's options")
        r.add_argument("-h", "--help", action="store_true", help="show this help")
        r.add_argument("task", nargs="?", choices=known_tasks(), help="the task (its adapter parses the rest)")
        r.add_argument("args", nargs=argparse.REMAINDER, help="the task's own options")
        r.set_defaults(func=_cmd_run, parser=r)

    rc = _command(sub, "recipes", "list the KD recipes: task, terms with their weights, paper")
    rc.add_argument("--json", action="store_true", help="machine-readable output (stable schema)")
    rc.set_defaults(func=_cmd_recipes)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:  # argparse would name them under the top-level usage; the subcommand's usage lists its options
        args.parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return args.func(args)
    except BrokenPipeError:  # `zoo list | head`: the reader has gone; not an error of ours (before OSError)
        sys.stderr.close()
        return 0
    except (ValueError, OSError, KeyError, TypeError, ImportError, NotImplementedError) as e:  # OSError: files, folders, network
        return _fail(args, e, 2)
    except RuntimeError as e:
        # a diverged run (the message says how to resume it); zoo.trainer is loaded only by commands that train,
        # so that reading cards never pays torch's import
        trainer = sys.modules.get(f"{__package__}.trainer")
        if trainer is None or not isinstance(e, trainer.NonFiniteLossError):
            raise
        return _fail(args, e, 1)


def _fail(args: argparse.Namespace, error: BaseException, code: int) -> int:
    """Report a failed command and return its exit status: the message on stderr and, under ``--json``, also
    ``{"schema_version", "error": {"command", "type", "message"}}`` on stdout, so that a script reading stdout
    gets JSON whatever happened."""
    message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    print(f"zoo {args.command}: error: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        _print_json({"schema_version": JSON_SCHEMA_VERSION,
                     "error": {"command": args.command, "type": type(error).__name__, "message": message}})
    return code


if __name__ == "__main__":
    sys.exit(main())
