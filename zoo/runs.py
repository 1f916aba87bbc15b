"""What a run folder records about the run, so that ``--resume`` continues *that* run.

A resumed run uses the checkpoint's full configuration by default: the settings given when the run
started (``--set``, ``--epochs``, ...) are stored in ``OUT/run.json`` with what identifies the run
(task, recipe, student, teachers, data), and a resume re-applies them. A setting the user passes again:

- with the stored value: nothing to say;
- with another value, for a setting in `RESUME_MUTABLE` (e.g. ``lr``, to continue a diverged run
  with a lower learning rate, as the trainer's NaN message advises): applied, and reported by the
  trainer (`zoo.trainer.check_resume_config`);
- with another value, for any other setting or for the run's identity (another ``--student``,
  ``--set optimizer=adamw``, ``--set T=2``): refused, naming the setting and both values.

`PER_CALL` settings (``max_steps``, ``progress``) belong to one invocation and are never inherited.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .io import atomic_write_text

RUN_FILE = "run.json"
RESUME_MUTABLE = frozenset({"lr", "max_steps", "progress", "log_every", "checkpoint_every", "eval_every", "tensorboard", "divergence_ratio",
                            "finite_check_every", "compile", "compile_backend", "teacher_cache"})
PER_CALL = frozenset({"max_steps", "progress"})


class ResumeMismatchError(ValueError):
    """``--resume`` was asked to continue a run with another identity or a setting that cannot change."""


class RunExistsError(ValueError):
    """A new run was asked to start in a folder that already holds one: nothing is overwritten."""


RUN_FILES = ("train_state.pt", "model.safetensors")  # a folder with one of these holds a run (a record alone
# is what a run that failed before its first checkpoint leaves: starting again over it is allowed)


def check_train_subset(train_subset: Any) -> None:
    """Refuse a ``train_subset`` that is not a number of examples >= 1 (None means all of them).

    Raises:
        ValueError: 0, a negative number, a bool or a non-integer (0 would otherwise read as "all").
    """
    if train_subset is not None and (isinstance(train_subset, bool) or not isinstance(train_subset, int)
                                     or train_subset < 1):
        raise ValueError(f"train_subset must be a number of examples >= 1 (or none: all), got {train_subset!r}")


def refuse_existing(out_dir: str | os.PathLike) -> None:
    """Raise `RunExistsError` when ``out_dir`` holds a run (a checkpoint or an exported model). Checked by
    the main process only (``RANK`` 0 under torchrun), before any process writes."""
    if os.environ.get("RANK", "0") != "0":
        return
    found = [f for f in RUN_FILES if (Path(out_dir) / f).exists()]
    if found:
        raise RunExistsError(f"{out_dir} already holds a run ({', '.join(found)}); pass --resume (resume=True) to "
                             "continue it, or give another output folder. Nothing was overwritten.")


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def read_record(out_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The run record of ``out_dir`` (None for a folder without one); ValueError naming the file when it
    is not a run record."""
    path = Path(out_dir) / RUN_FILE
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not a readable run record ({e}); restore it or start a new run") from None
    if not isinstance(record, dict) or not {"identity", "settings"} <= set(record) \
            or not all(isinstance(record[k], dict) for k in ("identity", "settings")):
        raise ValueError(f"{path} is not a run record (it needs 'identity' and 'settings', each an object); restore "
                         "it or start a new run")
    return record


def resolve(out_dir: str | os.PathLike, identity: dict[str, Any], settings: dict[str, Any], resume: bool
            ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run's identity and settings for this call (nothing is written: see `commit`).

    ``identity``: what the run is (``None`` values mean "as the stored run"); ``settings``: the
    settings given on this call. A resume merges them with the record: the stored settings apply
    unless given again; a given one that differs from the stored value is allowed only for
    `RESUME_MUTABLE` settings (the trainer reports it), and any other difference, in a setting or in
    the identity, raises `ResumeMismatchError` naming each and both values. ValueError when ``out_dir`` is a
    file, lies below one, or cannot be written. A new run in a folder that
    holds one raises `RunExistsError` (nothing is overwritten); a resume of a folder that does not exist or is empty
    raises FileNotFoundError (it made the folder and started a new run, or left a run record in the empty one). A run folder from before
    run records existed resumes with the settings given (the trainer still refuses a checkpoint whose
    training settings differ).
    """
    from .io import check_output_folder

    check_output_folder("the run folder (out)", out_dir)  # a file there, or below it: said before anything runs
    identity, settings = _plain(identity), _plain(settings)
    if resume and (not Path(out_dir).exists() or not any(Path(out_dir).iterdir())):
        what = "no such folder" if not Path(out_dir).exists() else "an empty folder"
        raise FileNotFoundError(f"--resume: there is no run in {out_dir} ({what}) to continue; drop --resume "
                                "to start one there")
    if not resume:
        refuse_existing(out_dir)
    saved = read_record(out_dir) if resume else None
    if saved is None:
        return identity, settings
    problems = []
    resolved = dict(saved["identity"])
    for key, value in identity.items():
        if value is None:  # not given: the run's own
            continue
        if resolved.get(key) != value:  # (a key the run was started without counts as None)
            problems.append(f"{key} was {resolved.get(key)!r}, now {value!r}")
        resolved[key] = value
    merged = dict(saved["settings"])
    for key, value in settings.items():
        if key in merged and merged[key] != value and key not in RESUME_MUTABLE:
            problems.append(f"{key} was {merged[key]!r}, now {value!r}")
        merged[key] = value
    if problems:
        raise ResumeMismatchError(
            f"--resume continues the run in {out_dir} as it was started, but " + "; ".join(problems)
            + f". Drop these to resume it (its settings are in {Path(out_dir) / RUN_FILE}), or start a new run in "
            f"another folder. Only {', '.join(sorted(RESUME_MUTABLE))} may change on resume.")
    return resolved, merged


def commit(out_dir: str | os.PathLike, identity: dict[str, Any], settings: dict[str, Any],
           effective: dict[str, Any], *, step: int | None = None) -> dict[str, Any]:
    """Write the run record once a (fresh or resumed) run's settings have passed every check: its
    identity, the settings in force (`PER_CALL` ones left out, so the next resume continues with what this
    call applied), the effective method configuration (`check_effective`), the settings it was started
    with (``started_with``, what reproduces it) and, for each resume that changed a setting, the step
    and the change (``changes``). ``step``: where a resume continues. Returns the record."""
    path = Path(out_dir) / RUN_FILE
    previous = read_record(out_dir) if step is not None else None
    current = {k: v for k, v in _plain(settings).items() if k not in PER_CALL}
    record = {"identity": _plain(identity), "settings": current, "effective": _plain(effective),
              "started_with": current, "changes": []}
    if previous is not None:
        before = previous["settings"]
        changed = {k: [before.get(k), v] for k, v in current.items() if before.get(k) != v}
        record["started_with"] = previous.get("started_with", before)
        record["changes"] = previous.get("changes", []) + ([{"step": step, **changed}] if changed else [])
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return record


def describe_changes(changes: list[dict[str, Any]]) -> str:
    """``resumed at step 120 with lr 0.1 -> 0.01`` for the card's notes (the reproduce command is the run
    as started)."""
    return "; ".join(f"resumed at step {c['step']} with " + ", ".join(f"{k} {v[0]!r} -> {v[1]!r}" for k, v in c.items()
                                                                      if k != "step") for c in changes)


def check_checkpoint_config(checkpoint: str | os.PathLike, cfg: Any) -> int | None:
    """Before a resume writes anything: the trainer's own check of ``cfg`` against the checkpoint's
    training settings (`zoo.trainer.check_resume_config`); returns the checkpoint's step (None without a
    checkpoint). ValueError naming the file for one that cannot be read."""
    from .trainer import check_resume_config, read_checkpoint

    path = Path(checkpoint)
    if not path.exists():
        return None
    state = read_checkpoint(path)
    check_resume_config(state["config"], cfg, path, report=False)
    return int(state["step"])


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        out = {}
        for i, v in enumerate(value):
            out.update(_flatten(v, f"{prefix}[{v.get('name', i)}]"))
        return out
    return {prefix: value}


def check_effective(out_dir: str | os.PathLike, effective: dict[str, Any], resume: bool) -> None:
    """On resume, compare the run's effective method configuration (e.g. the recipe after every ``--set``:
    its terms' temperatures and weights) with the record's: a resume whose settings would change it, even
    through a setting the run was started without, raises `ResumeMismatchError` naming each field and
    both values. (Training settings are compared with the checkpoint's, `check_checkpoint_config`.)"""
    record = read_record(out_dir) if resume else None
    if record is None or "effective" not in record:
        return
    old, new = _flatten(record["effective"]), _flatten(_plain(effective))
    differ = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if differ:
        raise ResumeMismatchError(
            f"--resume continues the run in {out_dir} as it was started, but this call changes "
            + "; ".join(f"{k} from {old.get(k)!r} to {new.get(k)!r}" for k in differ[:6])
            + (f" (and {len(differ) - 6} more)" if len(differ) > 6 else "")
            + f". Drop the settings that change it (the run's are in {Path(out_dir) / RUN_FILE}), or start a new run "
            "in another folder.")
