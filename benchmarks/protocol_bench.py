"""What the task benchmarks that drive the twin protocol share: `benchmarks/twins.py` loaded as a module,
and a teacher trained (or resumed) on the generic run path.

The benchmark scripts (segmentation_kd.py, face_kd.py, gan_compression.py) put this folder on ``sys.path``
and import it, so they also work when a test loads them with importlib rather than running them."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def load_script(name: str) -> Any:
    """``benchmarks/<name>.py`` as a module (the benchmarks folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"kdzoo_bench_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train_teacher(task: str, arch: str, data: Any, out: Path, settings: dict[str, Any], *,
                  train_subset: int | None = None, device: str | None = None, deadline: float | None = None) -> Path | None:
    """Train ``arch`` of ``task`` on ``data`` with the task loss in ``out`` (resumed when a checkpoint is there);
    its folder once finished (an existing card: already finished), else None (stopped at ``deadline``)."""
    from zoo.hub import CARD_FILE
    from zoo.runner import distill
    from zoo.tasks import get_adapter
    from zoo.trainer import STATE_FILE

    if (out / CARD_FILE).exists():
        return out
    run = distill(get_adapter(task), None, arch, None, data=data, out=out, settings=settings, train_subset=train_subset,
                  resume=(out / STATE_FILE).exists(), device=device, deadline=deadline)
    if not run.finished:
        print("teacher: stopped (time budget); run the same command again to resume", flush=True)
        return None
    print("teacher: " + ", ".join(f"{k}={v:.4f}" for k, v in run.card.metrics.items()), flush=True)
    return out


def twin_args(task: str, teacher: str, student: str, recipes: list[str], seeds: list[int], dataset: str, out: Path,
              results: str, settings: dict[str, Any], *, train_subset: int | None = None,
              time_budget: float | None = None, device: str | None = None, publish: bool = False,
              publish_dest: str | None = None, overwrite: bool = False) -> list[str]:
    """The `benchmarks/twins.py` command line of a task benchmark: the protocol in ``out/twins``, each setting
    as ``--set key=<JSON value>``, the optional flags only when given (``time_budget`` in minutes)."""
    import json

    args = ["--task", task, "--teacher", teacher, "--student", student, "--recipes", *recipes,
            "--seeds", *map(str, seeds), "--dataset", dataset, "--out", str(Path(out) / "twins"), "--results", results,
            *[a for k, v in settings.items() for a in ("--set", f"{k}={json.dumps(v)}")]]
    args += ["--train-subset", str(train_subset)] if train_subset else []
    args += ["--time-budget", f"{time_budget:.3f}"] if time_budget is not None else []
    args += ["--device", device] if device else []
    args += ["--publish", *(["--publish-dest", publish_dest] if publish_dest else []),
             *(["--overwrite"] if overwrite else [])] if publish else []
    return args


def publish_teacher(run_dir: Path, name: str, dest: str | None, overwrite: bool, description: str) -> None:
    """Publish a benchmark's teacher run as the zoo entry ``name`` (into ``dest``, default the bundled
    ``weights/``); an entry already there is refused unless ``overwrite`` (`zoo.publish.check_destination`)."""
    from zoo.publish import check_destination, publish

    check_destination(name, [], dest, overwrite=overwrite, zoo_names=False)
    card = publish(run_dir, name, dest_root=dest, description=description)
    print(f"published {card.name}: " + ", ".join(f"{k}={v:.4f}" for k, v in card.metrics.items()))


def add_publish_flags(parser: Any, what: str) -> None:
    """``--publish``, ``--publish-dest`` and ``--overwrite`` of a task benchmark (``what``: what it publishes)."""
    parser.add_argument("--publish", action="store_true", help=f"once finished: {what} into the zoo")
    parser.add_argument("--publish-dest", help="folder to publish into (default: the bundled weights/)")
    parser.add_argument("--overwrite", action="store_true",
                        help="with --publish: replace entries of the same names (without it they are refused)")


def save_figure(fig: Any, path: Path, dpi: int = 110) -> Path:
    """Lay out ``fig``, write it to ``path`` (its folder made) and close it; the path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
