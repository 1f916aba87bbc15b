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
RESUME_MUTABLE = frozenset({"lr", "max_steps", "progress", "log_every", "checkpoint_every", "tensorboard", "divergence_ratio",
                            "finite_check_every", "compile", "compile_backend", "teacher_cache"})
PER_CALL = frozenset({"max_steps", "progress"})


class ResumeMismatchError(ValueError):
    """``--resume`` was asked to continue a run with another identity or a setting that cannot change."""


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def read_record(out_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The run record of ``out_dir`` (None for a folder without one)."""
    path = Path(out_dir) / RUN_FILE
    return json.loads(path.read_text()) if path.exists() else None


def resolve(out_dir: str | os.PathLike, identity: dict[str, Any], settings: dict[str, Any], resume: bool
            ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run's identity and settings for this call (nothing is written: see `commit`).

    ``identity``: what the run is (``None`` values mean "as the stored run"); ``settings``: the
    settings given on this call. A resume merges them with the record: the stored settings apply
    unless given again; a given one that differs from the stored value is allowed only for
    `RESUME_MUTABLE` settings (the trainer reports it), and any other difference, in a setting or in
    the identity, raises `ResumeMismatchError` naming each and both values. A run folder from before
    run records existed resumes with the settings given (the trainer still refuses a checkpoint whose
    training settings differ).
    """
    identity, settings = _plain(identity), _plain(settings)
    saved = read_record(out_dir) if resume else None
    if saved is None:
        return identity, settings
    problems = []
    resolved = dict(saved["identity"])
    for key, value in identity.items():
        if value is None:
            continue
        if key in resolved and resolved[key] != value:
            problems.append(f"{key} was {resolved[key]!r}, now {value!r}")
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
           effective: dict[str, Any]) -> None:
    """Write the run record once a (fresh or resumed) run's settings have passed every check:
    its identity, the settings given (`PER_CALL` ones left out, so the next resume continues with what
    this call applied) and the effective method configuration (`check_effective`)."""
    record = {"identity": {k: v for k, v in _plain(identity).items() if v is not None},
              "settings": {k: v for k, v in _plain(settings).items() if k not in PER_CALL},
              "effective": _plain(effective)}
    atomic_write_text(Path(out_dir) / RUN_FILE, json.dumps(record, indent=2) + "\n")


def check_checkpoint_config(checkpoint: str | os.PathLike, cfg: Any) -> None:
    """Before a resume writes anything: the trainer's own check of ``cfg`` against the checkpoint's
    training settings (`zoo.trainer.check_resume_config`). Nothing happens without a checkpoint."""
    import torch

    from .trainer import check_resume_config

    path = Path(checkpoint)
    if path.exists():
        check_resume_config(torch.load(path, map_location="cpu", weights_only=True)["config"], cfg, path, report=False)


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
