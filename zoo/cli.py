"""The `zoo` command line: list, card, predict, eval, train, distill, recipes, publish.

The ``--json`` outputs are a stable, versioned schema (``schema_version``), documented in README.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["lr=0.05", "nesterov=false"]`` -> ``{"lr": 0.05, "nesterov": False}`` (values parsed as JSON when they can be)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--set expects key=value, got {item!r}")
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
    print(json.dumps(obj, indent=2))


def _fmt_num(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def _cmd_list(args: argparse.Namespace) -> int:
    import zoo

    cards = zoo.list_models(task=args.task, method=args.method, dataset=args.dataset)
    if args.json:
        _print_json({"schema_version": JSON_SCHEMA_VERSION,
                     "models": [{k: c.to_dict()[k] for k in LIST_FIELDS} for c in cards]})
        return 0
    if not cards:
        print("no zoo entries match")
        return 0
    from .compare import twin_gain

    rows = [("name", "task", "method", "dataset", "metrics", "vs plain twin", "params", "FLOPs", "source")]
    for c in cards:
        metrics = " ".join(f"{k}={v:.4f}" for k, v in c.metrics.items())
        rows.append((c.name, c.task, c.method, c.dataset, metrics, twin_gain(c), _fmt_num(c.params), _fmt_num(c.flops),
                     c.source))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
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

    model = zoo.load(args.name)
    from .tasks import get_adapter

    inputs = args.inputs or get_adapter(model.card.task).sample_inputs(model.card)
    results = zoo.predict(model, [str(i) for i in inputs], top_k=args.top_k)
    if args.json:
        _print_json({"schema_version": JSON_SCHEMA_VERSION, "name": model.card.name,
                     "predictions": [{"input": str(i), **r} for i, r in zip(inputs, results)]})
    else:
        for i, r in zip(inputs, results):
            if "detections" in r:  # detection: every box found
                found = [f"{d['label']} ({d['score']:.3f}) at {d['box']}" for d in r["detections"]]
                print(f"{i}: " + ("; ".join(found) or "nothing found"))
                continue
            ranked = r.get("top_k") or [{"label": r["label"], "score": r["score"]}]
            print(f"{i}: " + ", ".join(f"{t['label']} ({t['score']:.3f})" for t in ranked))
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
    from .hub import read_card

    if (Path(args.run_dir) / "task.json").exists() and (Path(args.run_dir) / "student.safetensors").exists():
        from .nlp.publish import publish as publish_nlp  # a `python -m zoo.nlp.pipeline` run

        card = publish_nlp(args.run_dir, args.name, dest_root=args.dest, aliases=args.alias, notes=args.notes or "")
        print(f"published {card.name}: accuracy {card.metrics['accuracy']:.4f}; {card.extra['ratios']}")
        return 0
    read_card(args.run_dir)  # a clear error for a directory that is not a kdzoo run
    from .publish import publish

    card = publish(args.run_dir, args.name, dest_root=args.dest, aliases=args.alias, notes=args.notes or "",
                   description=args.description or "")
    print(f"published {card.name}: " + ", ".join(f"{k}={v:.4f}" for k, v in card.metrics.items()))
    return 0


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """--set pairs plus the dedicated flags (--epochs, --seed, ...), the flags winning."""
    settings = parse_overrides(args.set)
    for key in ("epochs", "seed", "max_steps", "batch_size", "lr"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    return settings


def _finish_run(model: Any, info: dict[str, Any], args: argparse.Namespace) -> int:
    from .distributed import is_main_process

    if not is_main_process():
        return 0
    if not info["finished"]:
        print(f"stopped at step {info['step']}/{info['total_steps']}; continue with the same command plus --resume")
        return 0
    from .classification.publish import export_run

    path = export_run(model, info, args.out, command=info["command"])
    print(f"saved {path}")
    return 0


def _device(args: argparse.Namespace) -> str | None:
    """--device, or this process's device under torchrun."""
    from .distributed import init_from_env

    _, world, device = init_from_env()
    if world > 1 and args.device is not None:
        raise ValueError("under torchrun each process picks its own device; drop --device")
    return str(device) if device is not None else args.device


def _cmd_train(args: argparse.Namespace) -> int:
    from .classification.distill import train_classifier

    model, info = train_classifier(args.arch, args.dataset, args.out, settings=_settings(args), data_root=args.data_root,
                                   download=args.download, train_subset=args.train_subset, resume=args.resume,
                                   device=_device(args))
    return _finish_run(model, info, args)


def _cmd_distill(args: argparse.Namespace) -> int:
    from .classification.distill import distill_classifier

    model, info = distill_classifier(args.recipe, args.teacher or None, args.student, args.dataset, args.out,
                                     _settings(args), data_root=args.data_root, download=args.download,
                                     train_subset=args.train_subset, resume=args.resume, device=_device(args))
    return _finish_run(model, info, args)


def _cmd_recipes(args: argparse.Namespace) -> int:
    from .recipes import RECIPES, recipe_dict

    if args.json:
        _print_json({"schema_version": JSON_SCHEMA_VERSION, "recipes": [recipe_dict(RECIPES[n]) for n in sorted(RECIPES)]})
        return 0
    for name in sorted(RECIPES):
        r = RECIPES[name]
        terms = " + ".join(f"{t.weight:g}*{t.name}" for t in r.terms)
        print(f"{name:14s} {r.task_weight:g}*task" + (f" + {terms}" if terms else "") + (f"   ({r.paper})" if r.paper else ""))
    return 0


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", choices=["classification"])
    p.add_argument("--dataset", default=None,
                   help="fashion-mnist (default) | cifar10 | cifar100; with --resume, the run's")
    p.add_argument("--data-root", default=None, help="dataset directory (default: standard locations)")
    p.add_argument("--download", action="store_true", help="let torchvision download CIFAR (needs network)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--max-steps", type=int, default=None, help="stop after N optimizer steps (resumable)")
    p.add_argument("--train-subset", type=int, default=None, help="train on the first N training images")
    p.add_argument("--device", default=None)
    p.add_argument("--out", required=True, help="output directory (checkpoint, card, logs)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a training setting, a recipe field, T, or TERM.FIELD (e.g. kd.weight=0.9)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="zoo", description="kdzoo: knowledge-distillation model zoo")
    sub = p.add_subparsers(dest="command", required=True)

    ls = sub.add_parser("list", help="list zoo entries")
    ls.add_argument("--task")
    ls.add_argument("--method")
    ls.add_argument("--dataset")
    ls.add_argument("--json", action="store_true", help="machine-readable output (stable schema)")
    ls.set_defaults(func=_cmd_list)

    cd = sub.add_parser("card", help="show a model card")
    cd.add_argument("name", help="zoo name, alias or checkpoint directory")
    cd.add_argument("--json", action="store_true")
    cd.set_defaults(func=_cmd_card)

    pr = sub.add_parser("predict", help="run a zoo model on inputs (default: its bundled sample inputs)")
    pr.add_argument("name")
    pr.add_argument("inputs", nargs="*", help="input files (images for classification) or texts (nlp)")
    pr.add_argument("--top-k", type=int, default=1)
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=_cmd_predict)

    ev = sub.add_parser("eval", help="re-measure a card's metrics with kdzoo's eval on its dataset split")
    ev.add_argument("name")
    ev.add_argument("--data-root", default=None)
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--tolerance", type=float, default=0.003, help="allowed |measured - card| (default 0.003)")
    ev.add_argument("--json", action="store_true")
    ev.set_defaults(func=_cmd_eval)

    pb = sub.add_parser("publish", help="re-save a finished run as an fp16 zoo entry with a re-measured card")
    pb.add_argument("run_dir")
    pb.add_argument("--name", required=True)
    pb.add_argument("--alias", action="append", default=[])
    pb.add_argument("--dest", default=None, help="destination root (default: the bundled weights/ folder)")
    pb.add_argument("--notes", default=None)
    pb.add_argument("--description", default=None)
    pb.set_defaults(func=_cmd_publish)

    t = sub.add_parser("train", help="train a model from scratch with the plain (no-KD) recipe")
    _add_run_args(t)
    t.add_argument("--arch", required=True, help="architecture, e.g. resnet56")
    t.set_defaults(func=_cmd_train)

    d = sub.add_parser("distill", help="distil a student from zoo teacher(s) with a recipe")
    _add_run_args(d)
    d.add_argument("--recipe", required=True, help="recipe name (`zoo recipes` lists them)")
    d.add_argument("--teacher", action="append", default=[], help="teacher: zoo name or checkpoint folder (repeat for several)")
    d.add_argument("--student", required=True, help="student architecture, e.g. resnet20")
    d.set_defaults(func=_cmd_distill)

    rc = sub.add_parser("recipes", help="list the KD recipes")
    rc.add_argument("--json", action="store_true")
    rc.set_defaults(func=_cmd_recipes)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    from .train import NonFiniteLossError

    try:
        return args.func(args)
    except NonFiniteLossError as e:  # a diverged run: the message says how to resume it
        print(f"zoo {args.command}: error: {e}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, KeyError, ConnectionError, TypeError) as e:
        print(f"zoo {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
