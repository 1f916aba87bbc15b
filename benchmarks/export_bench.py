"""ONNX export per task: fp32, fp16 and dynamic int8 against PyTorch eager, CPU latency and metric change side by side.

    OMP_NUM_THREADS=1 python benchmarks/export_bench.py [--include-text] [--rounds 10] [--per-round 3]
        [--budget 40] [--entry TASK=NAME_OR_DIR ...] [--tasks classification detection ...] [--out benchmarks/results]

For one zoo entry per task (`DEFAULT_ENTRIES`, ``--entry TASK=NAME_OR_DIR`` for another; text is slow and runs
only with ``--include-text``), each variant goes
through `zoo.export.export_onnx` itself (so its onnxruntime parity check on the sample inputs runs too):
``fp32``, ``fp16`` (onnxruntime's float16 converter) and ``int8`` (onnxruntime's ``quantize_dynamic``). Then,
all in this one run:

- **CPU latency**: one input of batch 1 (the first item of the evaluation slice), PyTorch eager (fp32,
  ``torch.set_num_threads(1)``, no grad) and each ONNX file in onnxruntime (CPU provider, 1 intra- and 1
  inter-op thread). The variants take turns: ``--rounds`` rounds of ``--per-round`` timed calls each, after
  3 untimed warm-up calls; a task stops early once ``--budget`` seconds have gone and every variant has 5
  timed calls. Reported: the median and minimum per call, and the median's ratio to PyTorch's.
- **Metric change** on a small fixed slice of the task's test data, measured by the task's own evaluation
  code with the ONNX session standing in for the model, beside PyTorch eager on the same slice:
  classification top-1 on the first 1000 Fashion-MNIST test images (and top-1 agreement with PyTorch);
  segmentation mIoU on the first 100 test scenes (and pixel agreement of the argmax); detection box mAP on
  the first 100 test scenes (and the PyTorch detections matched: same label, IoU >= 0.5, see
  `zoo.detection.export.compare_detections`); gan: the held-out photos' 128-pixel centre crops, SSIM and max |difference|
  of the images against PyTorch's (the bundled gan is the teacher itself: there is no other reference);
  text: accuracy on the first 500 test texts (and prediction agreement).

Writes ``export-cpu.md`` and ``export-cpu.json`` in ``--out``. Timings on a shared machine are noisy: the
ratios pair measurements taken in turns, seconds apart.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

import zoo
from zoo.detection.export import DetectorGraph, compare_detections
from zoo.export import _session, export_onnx, run_session
from zoo.io import atomic_write_text
from zoo.metrics import cpu_description

DEFAULT_ENTRIES = {
    "classification": "resnet8-kd.fmnist",
    "segmentation": "lraspp-resnet8-cwd+pixel.fmnist-scenes",
    "detection": "frcnn-resnet20.fmnist-scenes",
    "gan": "cyclegan-vintagify",
    "face": "face-resnet8-proxyless-kd.cjk-fonts",
    "nlp": "tinybert-kd",
}
TASKS = ("classification", "segmentation", "detection", "gan", "face", "nlp")
VARIANTS = ("pytorch", "fp32", "fp16", "int8")
SLICES = {"classification": 1000, "segmentation": 100, "detection": 100, "gan": 9, "face": 200, "nlp": 500}
GAN_SIDE = 128
WARMUP = 3
MIN_CALLS = 5


class Recorder(nn.Module):
    """``model`` as the task's evaluation sees it, keeping a CPU copy of every output it gives (in order)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.outputs: list[Any] = []

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with torch.no_grad():
            out = self.model(*args, **kwargs)
        self.outputs.append(out)
        return out


class OrtModule(nn.Module):
    """An onnxruntime session in place of the PyTorch model: tensors in, tensors out, as the model's forward.

    A detector's session (input ``image``) takes a list of (3, H, W) images and returns torchvision's list of
    ``{boxes, scores, labels}``; a graph exported with a fixed batch of 1 is run once per item."""

    def __init__(self, session: Any) -> None:
        super().__init__()
        self.session = session
        self.inputs = [i.name for i in session.get_inputs()]
        self.fixed_batch = session.get_inputs()[0].shape[0] if session.get_inputs()[0].shape else None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.inputs == ["image"]:  # a detector, one image per run
            found = [run_session(self.session, {"image": image}) for image in args[0]]
            return [{"boxes": torch.from_numpy(b.astype(np.float32)), "scores": torch.from_numpy(s.astype(np.float32)),
                     "labels": torch.from_numpy(lab)} for b, s, lab in found]
        feeds = kwargs if kwargs else {self.inputs[0]: args[0]}
        n = len(next(iter(feeds.values())))
        if self.fixed_batch == 1 and n > 1:
            parts = [run_session(self.session, {k: v[i:i + 1] for k, v in feeds.items()})[0] for i in range(n)]
            return torch.from_numpy(np.concatenate(parts).astype(np.float32))
        return torch.from_numpy(run_session(self.session, feeds)[0].astype(np.float32))


@dataclasses.dataclass
class TaskBench:
    """What a task needs: the export's sample inputs (None: the entry's own), one batch-1 latency input,
    and ``measure(model) -> (metrics, outputs)`` on the evaluation slice; ``agreement(ref, outputs)``
    compares a variant's outputs with PyTorch's; ``metric`` names the headline metric."""

    export_inputs: Any
    latency_args: tuple
    latency_kwargs: dict
    measure: Callable[[nn.Module], tuple[dict[str, float], list[Any]]]
    agreement: Callable[[list[Any], list[Any]], dict[str, float]]
    metric: str
    slice: str


def _head(data: Any, n: int, *fields: str) -> Any:
    """The first ``n`` items of a split dataclass: its tensor ``fields`` cut to ``n`` (absent ones left)."""
    cut = {f: getattr(data, f)[:n] for f in fields if getattr(data, f, None) is not None}
    return dataclasses.replace(data, **cut)


def classification_bench(model: nn.Module, n: int) -> TaskBench:
    from zoo.classification.data import load_dataset
    from zoo.classification.evaluate import evaluate

    card = model.card
    data = _head(load_dataset(card.dataset, "test"), n, "images", "labels")
    first = next(data.loader(1))["inputs"]

    def measure(m: nn.Module) -> tuple[dict[str, float], list[Any]]:
        rec = Recorder(m)
        top1 = evaluate(rec, data)["top1"]
        return {"top1": top1}, rec.outputs

    def agreement(ref: list[Any], out: list[Any]) -> dict[str, float]:
        a, b = torch.cat([r.argmax(1) for r in ref]), torch.cat([o.argmax(1) for o in out])
        return {"top1_agreement": float((a == b).float().mean())}

    return TaskBench(None, (first,), {}, measure, agreement, "top1",
                     f"first {len(data)} {card.dataset} test images")


def segmentation_bench(model: nn.Module, n: int) -> TaskBench:
    from zoo.segmentation.data import load_scenes
    from zoo.segmentation.evaluate import evaluate

    card = model.card
    size = int(card.preprocessing.get("input_size", [3, 96, 96])[-1])
    data = _head(load_scenes("test", 1000, 0, size), n, "images", "masks")
    first = next(data.loader(1))["inputs"]

    def measure(m: nn.Module) -> tuple[dict[str, float], list[Any]]:
        rec = Recorder(m)
        r = evaluate(rec, data)
        return {"mIoU": r["mIoU"], "pixel_acc": r["pixel_acc"]}, rec.outputs

    def agreement(ref: list[Any], out: list[Any]) -> dict[str, float]:
        a, b = torch.cat([r.argmax(1) for r in ref]), torch.cat([o.argmax(1) for o in out])
        return {"pixel_agreement": float((a == b).float().mean())}

    return TaskBench(None, (first,), {}, measure, agreement, "mIoU", f"first {len(data)} {card.dataset} test scenes")


def detection_bench(model: nn.Module, n: int) -> TaskBench:
    from zoo.detection.data import load_scenes
    from zoo.detection.evaluate import evaluate

    card = model.card
    size = int(card.config.get("image_size", 96))
    data = _head(load_scenes("test", 1000, 0, size), n, "images", "boxes", "labels", "masks")
    first = next(data.loader(1))["inputs"][0]

    def measure(m: nn.Module) -> tuple[dict[str, float], list[Any]]:
        rec = Recorder(m)
        r = evaluate(rec, data)
        return {"bbox_mAP": r["bbox_mAP"], "bbox_mAP_50": r["bbox_mAP_50"]}, [d for batch in rec.outputs for d in batch]

    def agreement(ref: list[Any], out: list[Any]) -> dict[str, float]:
        stats = compare_detections([(r["boxes"], r["scores"], r["labels"]) for r in ref],
                                   [[o["boxes"].numpy(), o["scores"].numpy(), o["labels"].numpy()] for o in out])
        return {"detections_matched": stats["matched"] / max(1, stats["pytorch"]), "detections_pytorch": stats["pytorch"],
                "detections_onnx": stats["onnx"], "images_differing": stats["images_differing"]}

    # the latency input goes to DetectorGraph (one image), as the ONNX graph takes it
    return TaskBench(None, (first,), {}, measure, agreement, "bbox_mAP", f"first {len(data)} {card.dataset} test scenes")


def gan_bench(model: nn.Module, n: int) -> TaskBench:
    from torchmetrics.image import StructuralSimilarityIndexMeasure

    from zoo.gan.data import held_out
    from zoo.gan.evaluate import translate

    names, photos = held_out(GAN_SIDE)
    photos = photos[:n]

    def measure(m: nn.Module) -> tuple[dict[str, float], list[Any]]:
        return {}, [translate(m, photos)]

    def agreement(ref: list[Any], out: list[Any]) -> dict[str, float]:
        ssim = StructuralSimilarityIndexMeasure(data_range=1.0)(out[0], ref[0])
        return {"ssim_vs_pytorch": float(ssim), "max_abs_diff": float((out[0] - ref[0]).abs().max())}

    export_inputs = [p.permute(1, 2, 0).numpy() for p in photos[:2]]  # two crops: a dynamic batch, their size
    return TaskBench(export_inputs, (photos[:1].float() / 127.5 - 1,), {}, measure, agreement, "ssim_vs_pytorch",
                     f"{len(photos)} held-out photos, {GAN_SIDE}-pixel centre crops")


def face_bench(model: nn.Module, n: int) -> TaskBench:
    from zoo.face.data import load_cjk

    data = load_cjk("test", progress=False)
    images = model.preprocess([im[0].numpy() for im in data.images[:n]])  # the model's channels and size
    threshold = float(model.card.metrics.get("threshold", 0.0))

    def measure(m: nn.Module) -> tuple[dict[str, float], list[Any]]:
        rec = Recorder(m)
        rec(images)
        return {}, rec.outputs

    def agreement(ref: list[Any], out: list[Any]) -> dict[str, float]:
        a, b = torch.nn.functional.normalize(ref[0], dim=1), torch.nn.functional.normalize(out[0], dim=1)
        sim_a, sim_b = a @ a.T, b @ b.T
        pairs = torch.triu(torch.ones_like(sim_a, dtype=torch.bool), 1)
        return {"decision_agreement": float(((sim_a > threshold) == (sim_b > threshold))[pairs].float().mean()),
                "min_cosine_vs_pytorch": float((a * b).sum(1).min()),
                "max_similarity_diff": float((sim_a - sim_b).abs().max())}

    return TaskBench(None, (images[:1],), {}, measure, agreement, "decision_agreement",
                     f"first {len(images)} cjk-fonts test images, all pairs at the card's threshold {threshold:.3f}")


def nlp_bench(model: nn.Module, n: int) -> TaskBench:
    from zoo.nlp.data import TextBatches, encode, load_task
    from zoo.nlp.train import accuracy

    card = model.card
    task = load_task(card.dataset, "test")
    tokenizer = model.preprocess.tokenizer
    data = TextBatches(encode(tokenizer, task.texts[:n], model.preprocess.max_length), task.labels[:n],
                       tokenizer.pad_token_id)
    first = model.preprocess(task.texts[:1])

    def measure(m: nn.Module) -> tuple[dict[str, float], list[Any]]:
        rec = Recorder(m)
        return {"accuracy": accuracy(rec, data)}, rec.outputs

    def agreement(ref: list[Any], out: list[Any]) -> dict[str, float]:
        a, b = torch.cat([r.argmax(-1) for r in ref]), torch.cat([o.argmax(-1) for o in out])
        return {"prediction_agreement": float((a == b).float().mean())}

    return TaskBench(None, (), dict(first), measure, agreement, "accuracy", f"first {len(data)} {card.dataset} test texts")


BENCHES = {"classification": classification_bench, "segmentation": segmentation_bench, "detection": detection_bench,
           "gan": gan_bench, "face": face_bench, "nlp": nlp_bench}


def time_variants(calls: dict[str, Callable[[], Any]], rounds: int, per_round: int, budget: float) -> dict[str, list[float]]:
    """Seconds per call of each variant, the variants taking turns (``per_round`` calls each per round)."""
    for call in calls.values():
        for _ in range(WARMUP):
            call()
    times: dict[str, list[float]] = {k: [] for k in calls}
    start = time.perf_counter()
    for _ in range(rounds):
        for key, call in calls.items():
            for _ in range(per_round):
                t = time.perf_counter()
                call()
                times[key].append(time.perf_counter() - t)
        if time.perf_counter() - start > budget and all(len(t) >= MIN_CALLS for t in times.values()):
            break
    return times


def bench_entry(task: str, name: str, args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    """The four rows (PyTorch eager, ONNX fp32, fp16, int8) of one entry."""
    torch.set_num_threads(1)
    model = zoo.load(name).float().eval()
    bench = BENCHES[task](model, args.slice.get(task, SLICES[task]))
    detector = task == "detection"
    rows: dict[str, dict[str, Any]] = {"pytorch": {"variant": "pytorch", "bytes": None, "parity": None}}
    sessions = {}
    for variant in VARIANTS[1:]:
        path = tmp / f"{task}-{variant}.onnx"
        t = time.perf_counter()
        r = export_onnx(model, path, dtype="fp16" if variant == "fp16" else "fp32", int8=variant == "int8",
                        inputs=bench.export_inputs)
        rows[variant] = {"variant": variant, "bytes": r["bytes"], "export_s": round(time.perf_counter() - t, 2),
                         "parity": {"max_abs_diff": r["max_abs_diff"], "tolerance": r["tolerance"],
                                    "inputs": r["inputs"], "dynamic": r["dynamic"],
                                    **({"detections": r["detections"]} if detector else {})}}
        sessions[variant] = _session(str(path), threads=1)
    eager = DetectorGraph(model) if detector else model

    def torch_call() -> Any:
        with torch.no_grad():
            return eager(*bench.latency_args, **bench.latency_kwargs)

    feeds = dict(bench.latency_kwargs) if bench.latency_kwargs else {
        sessions["fp32"].get_inputs()[0].name: bench.latency_args[0]}
    calls = {"pytorch": torch_call, **{v: (lambda s=s: run_session(s, feeds)) for v, s in sessions.items()}}
    times = time_variants(calls, args.rounds, args.per_round, args.budget)
    metrics, reference = bench.measure(model)
    for variant in VARIANTS:
        if variant == "pytorch":  # the reference: its own agreement would be trivially perfect
            measured, agree = metrics, {}
        else:
            measured, outputs = bench.measure(OrtModule(sessions[variant]))
            agree = bench.agreement(reference, outputs)
        t = times[variant]
        rows[variant].update(task=task, entry=name, latency_ms=1000 * statistics.median(t), latency_min_ms=1000 * min(t),
                             calls=len(t), metrics={**measured, **agree}, slice=bench.slice, metric=bench.metric)
    base_ms = rows["pytorch"]["latency_ms"]
    base = rows["pytorch"]["metrics"].get(bench.metric)
    for row in rows.values():
        row["latency_vs_pytorch"] = row["latency_ms"] / base_ms
        value = row["metrics"].get(bench.metric)
        row["metric_change"] = None if value is None or base is None else value - base
    return list(rows.values())


def _fmt_metrics(row: dict[str, Any]) -> tuple[str, str]:
    """The metric cell (headline and the others) and the agreement cell of a row."""
    m = row["metrics"]
    percent = {"top1", "mIoU", "pixel_acc", "bbox_mAP", "bbox_mAP_50", "accuracy", "top1_agreement",
               "pixel_agreement", "detections_matched", "prediction_agreement", "decision_agreement"}
    agreement_keys = {"top1_agreement", "pixel_agreement", "detections_matched", "prediction_agreement",
                      "max_abs_diff", "min_cosine_vs_pytorch", "max_similarity_diff", "decision_agreement"}

    def show(k: str) -> str:
        v = m[k]
        if k in percent:
            return f"{k} {100 * v:.2f}%"
        if k in ("ssim_vs_pytorch", "min_cosine_vs_pytorch"):  # near 1: keep the digits that move
            return f"{k} {v:.4f}"
        return f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"

    headline = [k for k in m if k not in agreement_keys and k not in ("detections_pytorch", "detections_onnx",
                                                                       "images_differing")]
    agree = [show(k) for k in m if k in agreement_keys]
    if "detections_onnx" in m:
        agree.append(f"({m['detections_pytorch']} PyTorch / {m['detections_onnx']} ONNX boxes)")
    return ", ".join(show(k) for k in headline) or "-", ", ".join(agree) or "-"


def _signed(value: float) -> str:
    """``+0.50``, ``-1.96``; a change under 0.005 keeps its sign and size (``-4.0e-03``), zero is ``0``."""
    if value == 0:
        return "0"
    return f"{value:+.2f}" if abs(value) >= 0.005 else f"{value:+.1e}"


def to_markdown(report: dict[str, Any]) -> str:
    lines = ["| task | entry | variant | file MB | sample parity max abs diff (bound) | CPU ms median (min, calls) "
             "| vs eager | metric on the slice | change vs eager | agreement with eager |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        parity = "-"
        if row["parity"] is not None:
            p = row["parity"]
            bound = f" ({p['tolerance']:.3g})" if p["tolerance"] is not None else " (int8: unbounded)"
            parity = f"{p['max_abs_diff']:.3g}{bound}"
        change = row["metric_change"]
        metric, agree = _fmt_metrics(row)
        unit = 100 if row["metric"] in ("top1", "mIoU", "bbox_mAP", "accuracy") else 1
        change_s = "-" if row["variant"] == "pytorch" or change is None else \
            f"{_signed(change * unit)}{' pts' if unit == 100 else ''}"
        size = "-" if row["bytes"] is None else f"{row['bytes'] / 1e6:.2f}"
        lines.append(f"| {row['task']} | `{row['entry']}` | {row['variant']} | {size} | "
                     f"{parity} | {row['latency_ms']:.2f} ({row['latency_min_ms']:.2f}, {row['calls']}) | "
                     f"{row['latency_vs_pytorch']:.2f}x | {metric} | {change_s} | {agree} |")
    env = report["environment"]
    lines += ["", f"{env['cpu']}; onnxruntime {env['onnxruntime']} (CPU provider, 1 intra- and 1 inter-op thread); "
              f"batch 1; {env['date']}.", "",
              "Slices: " + "; ".join(f"{t}: {s}" for t, s in report["slices"].items()) + ".", ""]
    if report["skipped"]:
        lines += ["Not measured: " + "; ".join(f"{t}: {why}" for t, why in report["skipped"].items()) + ".", ""]
    lines.append(f"`{report['command']}`")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/export_bench.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    p.add_argument("--include-text", action="store_true", help="also the nlp entry (slow: about two minutes)")
    p.add_argument("--entry", action="append", default=[], metavar="TASK=NAME",
                   help="benchmark NAME (zoo name or run folder) for TASK instead of the default")
    p.add_argument("--slice", action="append", default=[], metavar="TASK=N", help="size of TASK's evaluation slice")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--per-round", type=int, default=3)
    p.add_argument("--budget", type=float, default=40.0, help="seconds of timing per task before stopping early")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = p.parse_args(argv)
    entries = dict(DEFAULT_ENTRIES)
    for item in args.entry:
        task, _, name = item.partition("=")
        if task not in TASKS or not name:
            p.error(f"--entry takes TASK=NAME with TASK one of {', '.join(TASKS)}, got {item!r}")
        entries[task] = name
    slices = {}
    for item in args.slice:
        task, _, n = item.partition("=")
        if task not in TASKS or not n.isdigit() or int(n) < 1:
            p.error(f"--slice takes TASK=N with TASK one of {', '.join(TASKS)} and N >= 1, got {item!r}")
        slices[task] = int(n)
    args.slice = slices
    torch.set_num_threads(1)
    import onnxruntime

    rows, skipped, sliced = [], {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks:
            if task == "nlp" and not args.include_text and not any(e.startswith("nlp=") for e in args.entry):
                skipped[task] = "skipped by default (slow); --include-text measures it"
                continue
            if task not in entries:
                skipped[task] = f"no default entry; --entry {task}=NAME_OR_DIR measures one"
                continue
            t = time.perf_counter()
            print(f"{task}: {entries[task]} ...", file=sys.stderr, flush=True)
            task_rows = bench_entry(task, entries[task], args, Path(tmp))
            sliced[task] = task_rows[0]["slice"]
            print(f"{task}: done in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
            rows += task_rows
    command = "OMP_NUM_THREADS=1 python benchmarks/export_bench.py" + "".join(f" {shlex.quote(a)}" for a in (argv if argv is not None else sys.argv[1:]))
    report = {"rows": rows, "slices": sliced, "skipped": skipped, "command": command,
              "environment": {"cpu": cpu_description(), "onnxruntime": onnxruntime.__version__,
                              "date": datetime.date.today().isoformat(), "rounds": args.rounds,
                              "per_round": args.per_round, "budget_s": args.budget, "warmup": WARMUP}}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "export-cpu.json", json.dumps(report, indent=2) + "\n")
    markdown = to_markdown(report)
    atomic_write_text(args.out / "export-cpu.md", markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
