"""The twin protocol: a distilled student is only worth publishing if it beats its plain twin.

For one teacher, one student architecture and a list of recipes, the protocol trains, for every seed:

- the **plain twin**: the student architecture on the same data, augmentation, schedule, number of
  optimizer steps and seed, with the task loss only (the ``plain`` recipe);
- each **distilled student** (one per recipe), on exactly that budget and data stream.

and writes one table: the teacher, the twin (mean ± sample std over seeds), each method (mean ± std),
its gain over the twin, and the fraction of the teacher-twin gap it closes. A method *beats its
twin* when its mean gain exceeds the twin's seed spread (max - min of the twin's seeds): a gain
inside the spread of the twin itself is not told apart from seed noise.

The protocol is task-agnostic: a task adapter supplies a `ProtocolTask` (``adapter.protocol``)
that trains one seed's arms (resumably, stopping at a deadline) and publishes a chosen run. This
module does the bookkeeping, the statistics and the table, and resumes a run folder where it
stopped (finished seeds are never trained again; a run folder refuses other settings, but not other seeds,
and where the task trains each arm apart it may gain recipes: the finished arms, the twin's included, are
kept and only the new arms train).
"""
from __future__ import annotations

import json
import math
import os
import re
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from . import runs
from .io import atomic_write_text

TWIN = "twin"  # the name of the plain arm in tables and run folders
SPREAD = "max - min of the twin's seeds"
RESTORED_FILE = "restored.json"  # marks a seed whose result was read back from a results file, not trained here


@dataclass
class ProtocolSpec:
    """What one protocol run compares. ``settings`` is the budget every arm shares (training settings:
    ``epochs``, ``batch_size``, ``lr``, ...); ``recipes`` are the distillation recipes (the twin is added)."""

    task: str
    teacher: str
    student: str
    recipes: list[str]
    seeds: list[int]
    dataset: str
    settings: dict[str, Any] = field(default_factory=dict)
    train_subset: int | None = None

    def __post_init__(self) -> None:
        problems = []
        if not self.recipes:
            problems.append("give at least one recipe to compare with the twin")
        if "plain" in self.recipes or TWIN in self.recipes:
            problems.append("the plain twin is always trained; do not list 'plain' among the recipes")
        if len(set(self.recipes)) != len(self.recipes):
            problems.append(f"recipes repeat: {self.recipes}")
        if len(self.seeds) < 2:
            problems.append(f"the protocol needs at least 2 seeds (3 where a run costs under ~40 CPU minutes), got {self.seeds}")
        if len(set(self.seeds)) != len(self.seeds):
            problems.append(f"seeds repeat: {self.seeds}")
        if any(s < 0 for s in self.seeds):
            problems.append(f"seeds are numbers >= 0, got {self.seeds}")
        if "seed" in self.settings:
            problems.append("each arm's seed is the protocol's (--seeds); drop the setting seed")
        try:
            runs.check_train_subset(self.train_subset)
        except ValueError as e:
            problems.append(str(e))
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def arms(self) -> list[str]:
        """The twin first, then the recipes."""
        return [TWIN, *self.recipes]

    def slug(self) -> str:
        """File stem of the results: ``twins-<dataset>-<teacher>-to-<student>-<recipes>`` (and the train
        subset), so that protocol runs of other recipes or data never overwrite each other's tables."""
        def clean(s: str) -> str:
            return re.sub(r"[^A-Za-z0-9]+", "-", s).strip("-")

        subset = f"-first{self.train_subset}" if self.train_subset else ""
        return (f"twins-{clean(self.dataset)}{subset}-{clean(self.teacher)}-to-{clean(self.student)}-"
                + "-".join(clean(r) for r in self.recipes))


@dataclass
class SeedResult:
    """One seed's finished arms: the headline metric of each (NaN: the arm's loss diverged), the number
    of optimizer steps every arm took, wall time and hardware."""

    seed: int
    metrics: dict[str, float]
    steps: int
    wall_seconds: float
    hardware: str
    history: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # arm -> per-epoch metrics


class ProtocolTask(Protocol):
    """What a task supplies to the protocol (``get_adapter(task).protocol``). Optional: ``arms_apart``
    (True when each arm of a seed trains and is stored on its own, so a finished run may gain recipes),
    ``validate``, ``arms_note``."""

    metric: str  # the headline metric (a card metric name, e.g. top1)
    higher_is_better: bool

    def teacher_metric(self, spec: ProtocolSpec) -> float:
        """The teacher's headline metric on the split the arms are evaluated on (a card value)."""

    def run_seed(self, spec: ProtocolSpec, seed: int, out_dir: Path, deadline: float | None,
                 device: str | None) -> SeedResult | None:
        """Train (or resume) every arm of ``spec`` for ``seed`` in ``out_dir``; None when stopped at
        ``deadline`` (``time.monotonic()``). Arms must share data stream, schedule and step count."""

    def validate(self, spec: ProtocolSpec) -> None:
        """Raise ValueError for a spec this task cannot run (unknown recipe or teacher, bad settings)."""

    def publish(self, spec: ProtocolSpec, seed: int, arm: str, out_dir: Path, name: str, *,
                baseline: dict[str, Any] | None, teacher: str | None, command: str, notes: str,
                description: str, dest: Path | None) -> Any:
        """Publish ``arm`` of ``seed`` (trained in ``out_dir``) as zoo entry ``name``; returns its card."""


@dataclass
class ArmSummary:
    """Mean ± sample std of an arm's metric over its finished seeds (``diverged``: NaN seeds)."""

    arm: str
    values: dict[int, float]
    mean: float
    std: float
    n: int
    diverged: int
    gain: float | None = None  # mean - the twin's mean (sign flipped when lower is better)
    gap_closed: float | None = None  # gain / (teacher - twin mean)
    beats_twin: bool | None = None  # gain > the twin's seed spread


def summarize(results: list[SeedResult], arms: list[str], teacher_value: float,
              higher_is_better: bool = True) -> dict[str, ArmSummary]:
    """Per-arm statistics over seeds, with gains against the twin. Raises ValueError without the twin."""
    out: dict[str, ArmSummary] = {}
    for arm in arms:
        values = {r.seed: r.metrics[arm] for r in results if arm in r.metrics}
        ok = [v for v in values.values() if math.isfinite(v)]
        out[arm] = ArmSummary(arm, values, statistics.mean(ok) if ok else math.nan,
                              statistics.stdev(ok) if len(ok) > 1 else 0.0, len(ok), len(values) - len(ok))
    if TWIN not in out or not out[TWIN].n:
        raise ValueError("no finished twin run: the protocol compares every method with its twin")
    twin = out[TWIN]
    spread = twin_spread(twin)
    sign = 1.0 if higher_is_better else -1.0
    gap = sign * (teacher_value - twin.mean)
    for arm, s in out.items():
        if arm == TWIN or not s.n:
            continue
        s.gain = sign * (s.mean - twin.mean)
        s.gap_closed = s.gain / gap if gap > 0 else None
        s.beats_twin = s.gain > spread and twin.n > 1
    return out


def twin_spread(twin: ArmSummary) -> float:
    """The twin's seed spread: max - min of its finished seeds (0 for one seed)."""
    ok = [v for v in twin.values.values() if math.isfinite(v)]
    return max(ok) - min(ok) if ok else math.nan


def median_seed(summary: ArmSummary) -> int:
    """The seed whose value is the median of the arm's finished seeds (the lower middle for an even
    count): the run that represents a method without picking its best seed."""
    ok = sorted((v, s) for s, v in summary.values.items() if math.isfinite(v))
    if not ok:
        raise ValueError(f"{summary.arm}: no finished seed")
    return ok[(len(ok) - 1) // 2][1]


def teacher_label(task: Any, spec: ProtocolSpec) -> str:
    """The teacher's name in the tables and cards: the task's ``teacher_name(spec)`` where it has one (a teacher
    that is no zoo card, e.g. the nlp pipeline's run folder), else its card's name (a checkpoint folder's own
    name, not where it lies on this machine), else ``spec.teacher`` as given."""
    if hasattr(task, "teacher_name"):
        return task.teacher_name(spec)
    import zoo

    try:
        return zoo.card(spec.teacher).name
    except (KeyError, OSError, ValueError):
        return spec.teacher


def markdown(spec: ProtocolSpec, summary: dict[str, ArmSummary], teacher_value: float, metric: str,
             scale: float = 100.0, unit: str = "%", settings_line: str = "", higher_is_better: bool = True,
             teacher: str | None = None) -> str:
    """The protocol's table: teacher (named ``teacher``, default ``spec.teacher``), twin, each method with its
    gain (positive: better, whatever the metric's direction) and the gap it closes."""
    def fmt(v: float) -> str:
        return f"{v * scale:.2f}"

    twin = summary[TWIN]
    sign = 1.0 if higher_is_better else -1.0
    heading = f"{metric} {unit}".strip() + ("" if higher_is_better else ", lower is better")
    lines = [f"| model | method | {heading} (mean ± std, n seeds) | gain over twin | teacher-twin gap closed | beats twin |",
             "|---|---|---|---|---|---|",
             f"| teacher `{teacher or spec.teacher}` | - | {fmt(teacher_value)} | {sign * (teacher_value - twin.mean) * scale:.2f} | - | - |",
             f"| {spec.student} | twin (plain) | {fmt(twin.mean)} ± {fmt(twin.std)} ({twin.n}) | - | - | "
             f"spread {fmt(twin_spread(twin))} |"]
    for arm in spec.recipes:
        s = summary.get(arm)
        if s is not None and not s.n and s.diverged:
            lines.append(f"| {spec.student} | {arm} | **diverged in all {s.diverged} seed(s)** | - | - | no |")
            continue
        if s is None or not s.n:
            lines.append(f"| {spec.student} | {arm} | (not run yet) | | | |")
            continue
        closed = f"{s.gap_closed * 100:.0f}%".replace("-0%", "0%") if s.gap_closed is not None else "-"
        div = f"; **diverged in {s.diverged} seed(s)**" if s.diverged else ""
        lines.append(f"| {spec.student} | {arm} | {fmt(s.mean)} ± {fmt(s.std)} ({s.n}){div} | {s.gain * scale:+.2f} "
                     f"| {closed} | {'yes' if s.beats_twin else 'no'} |")
    note = (f"\nA method beats its twin when its mean gain exceeds the twin's seed spread ({SPREAD}). "
            f"Every arm trains on the same data stream, schedule and number of optimizer steps per seed.")
    return "\n".join(lines) + "\n" + note + (f"\n\n{settings_line}" if settings_line else "") + "\n"


def epoch_table(results: list[SeedResult], arms: list[str], metric: str, scale: float = 100.0,
                unit: str = "%") -> str:
    """The headline ``metric`` after each evaluated epoch (columns), mean over the seeds that evaluated it
    (the seeds' ``history``, from each arm's card): how each arm got where it ended. Empty when no arm was
    evaluated more than once. A cell of fewer seeds than the arm's others shows its count, ``91.2 (2)``."""
    curves: dict[str, dict[int, list[float]]] = {}
    for r in results:
        for arm in arms:
            for h in r.history.get(arm, []):
                if "epoch" in h and metric in h and math.isfinite(h[metric]):
                    curves.setdefault(arm, {}).setdefault(int(h["epoch"]), []).append(float(h[metric]))
    epochs = sorted({e for c in curves.values() for e in c})
    if len(epochs) < 2:
        return ""
    lines = [f"{metric} {unit}".strip() + " after each evaluated epoch (columns), mean over seeds:", "",
             "| arm | " + " | ".join(str(e) for e in epochs) + " |", "|---|" + "---|" * len(epochs)]
    for arm in arms:
        if arm not in curves:
            continue
        n = max(len(v) for v in curves[arm].values())
        cells = []
        for e in epochs:
            v = curves[arm].get(e, [])
            cells.append("" if not v else f"{statistics.mean(v) * scale:.1f}" + (f" ({len(v)})" if len(v) < n else ""))
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def baseline_record(spec: ProtocolSpec, summary: dict[str, ArmSummary], metric: str, steps: int,
                    twin_name: str | None, table: str) -> dict[str, Any]:
    """The ``baseline`` field of a distilled card: its twin (zoo name if published), the twin's metric
    (mean ± std over the seeds), the seeds and the shared budget."""
    twin = summary[TWIN]
    return {"name": twin_name, "method": "plain",
            "metrics": {metric: {"mean": round(twin.mean, 6), "std": round(twin.std, 6), "n": twin.n,
                                 "spread": round(twin_spread(twin), 6)}},
            "seeds": sorted(twin.values), "budget": {**spec.settings, "steps": steps,
                                                     **({"train_subset": spec.train_subset} if spec.train_subset else {})},
            "table": table}


def entry_stem(student: str) -> str:
    """The zoo-name stem of a student architecture: the name itself (``resnet8``), or for a config-file
    architecture of the OpenMMLab bridge its package and file stem (``mmseg:kdzoo::fcn_r18_c16.py`` ->
    ``mmseg-fcn-r18-c16``), since zoo names carry no colons or paths."""
    if ":" not in student:
        return student
    package = student.split(":", 1)[0]
    stem = Path(student.rsplit(":", 1)[-1]).stem
    return re.sub(r"[^A-Za-z0-9]+", "-", f"{package}-{stem}").strip("-").lower()


def _spec_record(spec: ProtocolSpec) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(spec)))


def _settings_differ(saved: dict[str, Any], spec: ProtocolSpec, grow: bool = False) -> list[str]:
    """What of a recorded spec differs from ``spec``, apart from the seeds (seeds are independent, so a run
    may add seeds or stop at fewer of them) and, with ``grow`` (a task whose arms train apart, `arms_apart`),
    from recipes added to the recorded ones or reordered (a run may gain a method; one that drops a
    recorded recipe would lose its arms from the table): ``"recipes (['kd'] then, ['at'] now)"``, one
    entry per field, and per key for the settings (``"settings.epochs (10 then, 12 now)"``)."""
    now = _spec_record(spec)
    out = []
    for k in sorted(set(saved) | set(now)):
        a, b = saved.get(k), now.get(k)
        if k == "seeds" or a == b:
            continue
        if k == "recipes" and grow and isinstance(a, list) and isinstance(b, list) and set(a) <= set(b):
            continue
        if k == "settings" and isinstance(a, dict) and isinstance(b, dict):
            out += [f"settings.{key} ({a.get(key)!r} then, {b.get(key)!r} now)" for key in sorted(set(a) | set(b))
                    if a.get(key) != b.get(key)]
        else:
            out.append(f"{k} ({a!r} then, {b!r} now)")
    return out


def is_term_setting(key: str) -> bool:
    """Whether a ``--set`` key sets a loss term (``TERM.FIELD``, or ``T`` for every term with a temperature)
    rather than training or the recipe."""
    return "." in key or key == "T"


def settings_for(settings: dict[str, Any], recipe: Any | None) -> dict[str, Any]:
    """The shared ``--set`` settings that apply to one arm (``recipe`` a `zoo.recipes.Recipe`, None for the
    twin): training settings to every arm, a term's (``TERM.FIELD``, and ``T``) only to an arm whose recipe has
    that term (e.g. ``cwd.student=logits`` leaves the twin and the other recipes alone)."""
    from .recipes import term_params

    terms = [] if recipe is None else recipe.terms
    names = {t.name for t in terms}
    has_t = any("T" in term_params(t) for t in terms)
    return {k: v for k, v in settings.items()
            if not is_term_setting(k) or (k == "T" and has_t) or k.split(".", 1)[0] in names}


def check_term_settings(settings: dict[str, Any], recipes: dict[str, Any]) -> None:
    """ValueError when a term setting (``TERM.FIELD`` or ``T``) in ``settings`` applies to none of ``recipes``
    ({arm name: `zoo.recipes.Recipe`}): it would change nothing, silently."""
    term_keys = {k for k in settings if is_term_setting(k)}
    used = {k for recipe in recipes.values() for k in settings_for(settings, recipe)}
    if term_keys - used:
        terms = sorted({t.name for recipe in recipes.values() for t in recipe.terms})
        raise ValueError(f"settings {sorted(term_keys - used)} name no term of the recipes {list(recipes)} "
                         f"(their terms: {', '.join(terms) or 'none'})")


def _has_training(out: Path) -> bool:
    """Whether a protocol run folder holds anything trained: a checkpoint, a finished arm's card or a seed's
    result (restored ones too). A folder without any may take other settings: nothing would be lost."""
    from .trainer import STATE_FILE

    trained = {STATE_FILE, "README.md", "result.json"}
    return any(path.name in trained for path in out.rglob("*"))  # one walk of the folder


def _claim_run_folder(spec: ProtocolSpec, out: Path, grow: bool = False) -> None:
    """Record ``spec`` in ``out/protocol.json``, or check that the run already there has these settings
    (ValueError naming the settings that differ: a run folder holds one protocol run). Other seeds are
    allowed (the record is updated, the finished seeds kept): a run may add a seed, or stop at fewer. With
    ``grow`` (the task trains each arm apart) so are added recipes: the finished arms are kept and the new
    ones train on the same seeds and budget. A task that trains a seed's arms together (one state for all)
    cannot add an arm to a finished seed, so there the recipes must stay as recorded."""
    out.mkdir(parents=True, exist_ok=True)
    spec_path = out / "protocol.json"
    if spec_path.exists():
        saved = json.loads(spec_path.read_text())
        changed = _settings_differ(saved, spec, grow)
        if changed and not _has_training(out):  # e.g. a setting refused when the first arm was built
            print(f"{out}: no arm has trained yet, so this command's settings replace the recorded ones "
                  f"({'; '.join(changed)})", flush=True)
            atomic_write_text(spec_path, json.dumps(_spec_record(spec), indent=2) + "\n")
            return
        if changed:
            dropped = [r for r in saved.get("recipes", []) if r not in spec.recipes]
            if grow and dropped and all(c.startswith("recipes ") for c in changed):
                raise ValueError(f"{out} holds a protocol run of the recipes {' '.join(saved['recipes'])}; this "
                                 f"command drops {' '.join(dropped)}, whose arms would leave the table. A run may "
                                 f"gain recipes but not lose them: give --recipes {' '.join(saved['recipes'])} "
                                 "(and any new ones), or use a new output folder")
            why = ("" if grow or saved.get("recipes") == spec.recipes else
                   " (this task trains a seed's arms together, so its run folders cannot gain or reorder recipes)")
            raise ValueError(f"{out} holds a protocol run with other settings ({'; '.join(changed)}; "
                             f"see {spec_path}){why}; use a new output folder")
        added = [r for r in spec.recipes if r not in saved.get("recipes", [])]
        if saved.get("seeds") == spec.seeds and not added:
            return
        if saved.get("seeds") != spec.seeds:
            print(f"{out}: seeds {' '.join(map(str, saved.get('seeds', [])))} -> {' '.join(map(str, spec.seeds))} "
                  "(the finished seeds are kept)", flush=True)
        if added:
            before = replace(spec, recipes=list(saved.get("recipes", []))).slug()
            print(f"{out}: recipes {' '.join(added)} added (the finished arms are kept; the new arms train on "
                  f"every seed). The earlier recipes' table, {before}.md/.json in the results folder, stays "
                  "beside this run's: delete it once this one is written", flush=True)
    atomic_write_text(spec_path, json.dumps(_spec_record(spec), indent=2) + "\n")


def run(spec: ProtocolSpec, task: ProtocolTask, out: Path, *, deadline: float | None = None,
        device: str | None = None, only_seeds: list[int] | None = None,
        results_file: Path | None = None, restore: bool = False) -> list[SeedResult]:
    """Train every seed of ``spec`` (resuming ``out`` where it stopped); returns the finished seeds.
    ``only_seeds`` trains just those (the others are read if finished): seeds are independent, so several
    processes can share one run folder, each training its own seeds. ``results_file`` is the
    ``<slug>.json`` the results will be written to: with ``restore``, the seeds it records and ``out``
    lacks are read back first (`restore_seeds`); without, a results file holding such seeds is refused
    (writing the table would drop them).

    Raises ValueError when ``out`` holds a run of other settings (use a new folder), when ``only_seeds``
    are not among the seeds, or when the results file would lose seeds; FileNotFoundError when
    ``restore`` has no results file to read. Nothing is written when it raises before training."""
    if only_seeds is not None and not set(only_seeds) <= set(spec.seeds):
        raise ValueError(f"--only-seeds {' '.join(map(str, only_seeds))} are not all among the run's seeds "
                         f"{' '.join(map(str, spec.seeds))}")
    if hasattr(task, "validate"):  # the task checks the spec (recipes, teacher, settings) before anything is written
        task.validate(spec)
    if restore:
        if results_file is None:
            raise ValueError("restore needs the results file to read the seeds from")
        restored = restore_seeds(spec, out, results_file)
        print(f"restored seeds {restored} from {results_file}" if restored else "no seed to restore", flush=True)
    elif results_file is not None and results_file.exists():
        record = json.loads(results_file.read_text())
        lost = sorted(e["seed"] for e in record.get("seeds", [])
                      if not (out / f"seed-{e['seed']}" / "result.json").exists())
        if lost:
            raise ValueError(f"{results_file} records seeds {' '.join(map(str, lost))} that {out} lacks; writing the "
                             "table would drop them: add --restore to read them back, or give another --results folder")
    _claim_run_folder(spec, out, grow=bool(getattr(task, "arms_apart", False)))
    results, stopped = [], False
    for seed in spec.seeds:
        done = out / f"seed-{seed}" / "result.json"
        marker = out / f"seed-{seed}" / RESTORED_FILE
        retrain = marker.exists() and only_seeds is not None and seed in only_seeds
        if done.exists() and not retrain:
            finished = SeedResult(**json.loads(done.read_text()))
            if set(spec.arms) <= set(finished.metrics):
                results.append(finished)
                continue
            if marker.exists():
                print(f"seed {seed} was restored from a results file without the arms "
                      f"{' '.join(a for a in spec.arms if a not in finished.metrics)}; its checkpoints are not "
                      f"here: --only-seeds {seed} trains the seed again, every arm", flush=True)
                continue
            # recipes were added since the seed finished: train its new arms (the finished ones are read back)
        if only_seeds is not None and seed not in only_seeds:
            continue
        if stopped or (deadline is not None and time.monotonic() >= deadline):
            stopped = True  # train nothing more, but read the later seeds that are finished
            continue
        lock = _claim_seed(out / f"seed-{seed}")
        if lock is None:
            continue
        try:
            result = task.run_seed(spec, seed, out / f"seed-{seed}", deadline, device)
        finally:
            lock.unlink(missing_ok=True)
        if result is None:  # stopped at the deadline
            stopped = True
            continue
        if retrain:  # a restored seed trained again: say whether the recorded values came back
            recorded = json.loads(done.read_text())["metrics"]
            print(f"seed {seed} retrained: " + ", ".join(
                f"{a} {result.metrics.get(a, math.nan):.4f} (recorded {v:.4f})" for a, v in recorded.items()), flush=True)
        atomic_write_text(done, json.dumps(asdict(result), indent=2) + "\n")
        marker.unlink(missing_ok=True)
        results.append(result)
    return results


LOCK_FILE = "training.lock"  # in a seed folder while a process trains it: its pid


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _claim_seed(seed_dir: Path) -> Path | None:
    """Mark ``seed_dir`` as trained by this process (``training.lock`` holding its pid) and return the lock;
    None, with a message, when another live process on this machine holds it (two identical commands on one
    run folder would otherwise train the same arms into the same files). A lock left by a process that has
    ended is taken over."""
    seed_dir.mkdir(parents=True, exist_ok=True)
    lock = seed_dir / LOCK_FILE
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                text, age = lock.read_text().strip(), time.time() - lock.stat().st_mtime
            except OSError:  # released meanwhile: try again
                continue
            pid = int(text) if text.isdigit() else 0
            just_made = not text and age < 60  # its pid is being written
            if just_made or (pid > 0 and pid != os.getpid() and _alive(pid)):
                print(f"{seed_dir.name}: process {pid} is training it ({lock}); skipped here", flush=True)
                return None
            lock.unlink(missing_ok=True)  # a lock of an ended process
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()}\n")
        return lock
    return None


def restore_seeds(spec: ProtocolSpec, out: Path, record_path: Path) -> list[int]:
    """Read finished seeds back from a results file (``<slug>.json`` of `write_results`) into the run
    folder ``out`` where it lacks them, e.g. after the machine that held ``out`` was lost: each such seed
    gets its ``seed-<n>/result.json`` and a ``restored.json`` marker. The table can then be written and the
    remaining seeds trained; a restored seed's checkpoints are not there, so `unrestored` refuses to publish
    it until it is trained again (``run(..., only_seeds=[n])`` retrains a restored seed).

    Returns the restored seeds. Raises FileNotFoundError when ``record_path`` does not exist and
    ValueError when it records other settings than ``spec``."""
    if not record_path.exists():
        raise FileNotFoundError(f"no results file {record_path} to restore seeds from")
    record = json.loads(record_path.read_text())
    if _settings_differ(record.get("spec", {}), spec):
        raise ValueError(f"{record_path} records a protocol run with other settings than this one")
    _claim_run_folder(spec, out)
    restored = []
    for entry in record.get("seeds", []):
        seed_dir = out / f"seed-{entry['seed']}"
        if entry["seed"] not in spec.seeds or (seed_dir / "result.json").exists():
            continue
        seed_dir.mkdir(parents=True, exist_ok=True)
        result = SeedResult(**entry)  # checks the entry's fields
        atomic_write_text(seed_dir / RESTORED_FILE, json.dumps({"from": str(record_path)}) + "\n")
        atomic_write_text(seed_dir / "result.json", json.dumps(asdict(result), indent=2) + "\n")
        restored.append(result.seed)
    return restored


def unrestored(out: Path, seeds: list[int]) -> None:
    """Raise ValueError naming those of ``seeds`` that were restored from a results file (`restore_seeds`)
    and so have no checkpoints in ``out`` to publish, with the command-line fix."""
    missing = sorted(s for s in set(seeds) if (out / f"seed-{s}" / RESTORED_FILE).exists())
    if missing:
        raise ValueError(f"seeds {missing} of {out} were restored from a results file and have no checkpoints; "
                         f"train them again with --only-seeds {' '.join(map(str, missing))}, then publish")


def metric_scale(task: str, metric: str) -> tuple[float, str]:
    """How the protocol shows ``metric`` of ``task``: (100, "%") for a fraction, else (1, its unit)
    (`zoo.tasks.MetricInfo`)."""
    from .tasks import task_spec

    info = task_spec(task).metric(metric)
    if info is None or info.percent:
        return 100.0, "%"
    return 1.0, info.unit


def write_results(spec: ProtocolSpec, task: ProtocolTask, results: list[SeedResult], results_dir: Path,
                  settings_line: str = "") -> tuple[Path, dict[str, ArmSummary] | None]:
    """``<slug>.md`` (the table, then `epoch_table` where the arms were evaluated along the way) and
    ``<slug>.json`` (spec, every seed's values and histories, the summary) in ``results_dir``."""
    stem = results_dir / spec.slug()
    if not results:  # nothing finished: leave any earlier table of this run as it is
        return stem.with_suffix(".md"), None
    results_dir.mkdir(parents=True, exist_ok=True)
    teacher_value = task.teacher_metric(spec)
    summary = None
    if any(TWIN in r.metrics for r in results):
        summary = summarize(results, spec.arms, teacher_value, task.higher_is_better)
        scale, unit = metric_scale(spec.task, task.metric)
        table = markdown(spec, summary, teacher_value, task.metric, scale=scale, unit=unit, settings_line=settings_line,
                         higher_is_better=task.higher_is_better, teacher=teacher_label(task, spec))
        curves = epoch_table(results, spec.arms, task.metric, scale=scale, unit=unit)
        atomic_write_text(stem.with_suffix(".md"), table + (f"\n{curves}" if curves else ""))
    record = {"spec": _spec_record(spec), "metric": task.metric, "teacher_value": teacher_value,
              "seeds": [asdict(r) for r in results], "settings_line": settings_line,
              "summary": {k: asdict(v) for k, v in (summary or {}).items()}, "spread_rule": SPREAD}
    atomic_write_text(stem.with_suffix(".json"), json.dumps(record, indent=2) + "\n")
    return stem.with_suffix(".md"), summary


class RunnerProtocol:
    """The `ProtocolTask` of a task on the generic run path (`zoo.runner`: ``datasets``,
    ``build_student``, ``evaluate_model``): each arm of a seed is a run of its own in
    ``seed-<n>/<arm>``, trained one after another with the seed's settings. The trainer draws the data
    order and the augmentation from the seed alone, so every arm sees the same batches for the same number
    of optimizer steps; a stopped arm resumes where it stopped."""

    arms_note = "the arms of a seed trained one after another on the same batches (same seed)"
    arms_apart = True  # each arm is a run of its own: a run folder may gain recipes (`run`)
    # metrics besides the headline on which a published student must also beat its twin (e.g. gan: psnr)
    also_beat: tuple[str, ...] = ()

    def __init__(self, adapter: Any, dataset: str) -> None:
        from .tasks import task_spec

        self.adapter = adapter
        self.default_dataset = dataset
        info = task_spec(adapter.task).headline
        self.metric, self.higher_is_better = info.name, info.higher_is_better

    def _teacher_card(self, spec: ProtocolSpec) -> Any:
        import zoo

        card = zoo.card(spec.teacher)
        if card.task != self.adapter.task:
            raise ValueError(f"teacher {card.name!r} is a {card.task} model, not a {self.adapter.task} one")
        return card

    def teacher_metric(self, spec: ProtocolSpec) -> float:
        card = self._teacher_card(spec)
        if card.dataset != spec.dataset or card.split != "test":
            raise ValueError(f"teacher {card.name!r} was measured on {card.dataset}/{card.split}, not on the "
                             f"{spec.dataset} test split the arms are evaluated on")
        return card.metrics[self.metric]

    def validate(self, spec: ProtocolSpec) -> None:
        from .recipes import override
        from .trainer import TrainConfig

        for name in spec.recipes:
            recipe = self.recipe(name)
            if recipe.task != self.adapter.task:
                raise ValueError(f"recipe {name!r} is for {recipe.task} models, not {self.adapter.task} ones")
            # unknown keys and bad values; then the recipe as the settings make it (--set cohort=2, say)
            recipe, _ = override(recipe, TrainConfig(), self.arm_settings(spec.settings, name))
            # one student, from the teacher or from itself (self-distillation: BYOT, DDL)
            if recipe.teachers not in (0, 1) or recipe.cohort != 1 or recipe.assistant or recipe.branches:
                raise ValueError(f"recipe {name!r} does not distil one student from one teacher (or itself)"
                                 + (" with these settings" if recipe != self.recipe(name) else "")
                                 + "; the protocol compares such students with their twin")
        check_term_settings(spec.settings, {name: self.recipe(name) for name in spec.recipes})
        self.teacher_metric(spec)  # a teacher of this task, measured on the split the arms are measured on
        self.check_data_and_student(spec)

    def check_data_and_student(self, spec: ProtocolSpec) -> None:
        """The data set loads and the student architecture builds for it (default: the adapter's
        ``datasets`` and ``build_student``), before the run records anything."""
        train, _ = self.adapter.datasets(spec.dataset, train_subset=spec.train_subset)
        self.adapter.build_student(spec.student, train)

    def recipe(self, name: str) -> Any:
        """The `zoo.recipes.Recipe` called ``name`` (a task whose methods are not registered recipes
        overrides this)."""
        from .recipes import get_recipe

        return get_recipe(name)

    def arm_settings(self, settings: dict[str, Any], arm: str) -> dict[str, Any]:
        """The settings that apply to ``arm`` (`settings_for`)."""
        return settings_for(settings, None if arm == TWIN else self.recipe(arm))

    def _settings(self, spec: ProtocolSpec, seed: int, arm: str = TWIN) -> dict[str, Any]:
        return {**self.arm_settings(spec.settings, arm), "seed": seed, "progress": False}

    def train_arm(self, spec: ProtocolSpec, arm: str, seed: int, run_dir: Path, deadline: float | None,
                  device: str | None) -> bool:
        """Train (or resume) one arm in ``run_dir`` until its card is written; False when stopped at the
        deadline. The default: `zoo.runner.distill` (a task that trains its own way overrides this)."""
        from .runner import distill
        from .trainer import STATE_FILE

        teacher = None if arm == TWIN or self.recipe(arm).teachers == 0 else spec.teacher
        run = distill(self.adapter, teacher, spec.student, None if arm == TWIN else arm,
                      data=spec.dataset, out=run_dir, settings=self._settings(spec, seed, arm), train_subset=spec.train_subset,
                      resume=(run_dir / STATE_FILE).exists(), device=device, deadline=deadline)
        return run.finished

    def run_seed(self, spec: ProtocolSpec, seed: int, out_dir: Path, deadline: float | None,
                 device: str | None) -> SeedResult | None:
        from .hub import CARD_FILE, read_card
        from .metrics import hardware_description
        from .trainer import STATE_FILE

        metrics, history, steps, wall = {}, {}, set(), 0.0
        for arm in spec.arms:
            run_dir = out_dir / arm
            finished = (run_dir / CARD_FILE).exists()  # the card is written last, once the run finished
            t0 = time.perf_counter()
            if not finished:  # a long arm trains quietly: say where its progress is logged, and its result
                how = "resuming" if (run_dir / STATE_FILE).exists() else "training"
                print(f"seed {seed}: {how} {arm} (its progress: {run_dir / 'log.csv'})", flush=True)
                if not self.train_arm(spec, arm, seed, run_dir, deadline, device):
                    print(f"seed {seed}: {arm} stopped (time budget); run again to resume", flush=True)
                    return None
            card = read_card(run_dir)
            metrics[arm] = card.metrics[self.metric]
            if not finished:
                print(f"seed {seed}: {arm} done, {self.metric} {metrics[arm]:.4f} "
                      f"({(time.perf_counter() - t0) / 60:.1f} min)", flush=True)
            history[arm] = [{k: h[k] for k in ("epoch", "step", self.metric) if k in h}
                            for h in card.extra.get("history", [])]
            steps |= {h["step"] for h in card.extra.get("history", [])[-1:]}
            wall += card.training.wall_time_s if card.training else time.perf_counter() - t0
        if len(steps) > 1:
            raise RuntimeError(f"seed {seed}: the arms took different numbers of steps {sorted(steps)}")
        print(f"seed {seed}: " + ", ".join(f"{a}={v:.4f}" for a, v in metrics.items()), flush=True)
        return SeedResult(seed, metrics, steps.pop() if steps else 0, round(wall, 1), hardware_description(device),
                          history)

    def summary_of(self, spec: ProtocolSpec, out: Path, results: list[SeedResult], metric: str) -> dict[str, ArmSummary]:
        """The protocol's statistics (`summarize`) of another of the cards' metrics than the headline, read
        from each finished arm's card in ``out/seed-<n>/<arm>``; no teacher value (no gap closed)."""
        from .hub import read_card
        from .tasks import task_spec

        info = task_spec(self.adapter.task).metric(metric)
        if info is None:
            raise ValueError(f"{metric!r} is not a metric of the {self.adapter.task} task")
        rows = [SeedResult(r.seed, {arm: read_card(out / f"seed-{r.seed}" / arm).metrics.get(metric, math.nan)
                                    for arm in r.metrics}, r.steps, r.wall_seconds, r.hardware) for r in results]
        return summarize(rows, spec.arms, math.nan, info.higher_is_better)

    def publish(self, spec: ProtocolSpec, seed: int, arm: str, out_dir: Path, name: str, *,
                baseline: dict[str, Any] | None, teacher: str | None, command: str, notes: str,
                description: str, dest: Path | None) -> Any:
        from .publish import publish

        return publish(out_dir / arm, name, dest_root=dest, command=command, notes=notes, description=description,
                       baseline=baseline)
