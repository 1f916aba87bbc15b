"""The twin protocol (`zoo.protocol`) for detectors: the plain twin and the Chen et al. 2017 student of each
seed, trained one after another by `zoo.detection.train.train_detector` on the same scenes, batches and steps."""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from zoo.protocol import TWIN, ProtocolSpec, RunnerProtocol
from zoo.recipes import Recipe, override

from .data import SCENES
from .recipes import chen_recipe
from .train import DEFAULTS, train_detector

METHOD = "chen2017"


class DetectionProtocol(RunnerProtocol):
    """`zoo.protocol.ProtocolTask` for detection: box mAP on the scenes' test split; the one method is
    ``chen2017`` (hint + RPN + RoI-head distillation, `zoo.detection.distill`)."""

    def __init__(self, adapter: Any) -> None:
        super().__init__(adapter, SCENES)

    def recipe(self, name: str) -> Recipe:
        if name != METHOD:
            raise ValueError(f"detection distils with {METHOD!r} only (Chen et al. 2017), not {name!r}")
        return chen_recipe()

    def check_data_and_student(self, spec: ProtocolSpec) -> None:
        from .models import check_architecture

        if spec.dataset != SCENES:
            raise ValueError(f"the detection protocol trains on {SCENES!r}, not {spec.dataset!r}")
        check_architecture(spec.student)

    def train_arm(self, spec: ProtocolSpec, arm: str, seed: int, run_dir: Path, deadline: float | None,
                  device: str | None) -> bool:
        from zoo.trainer import STATE_FILE

        _, cfg = override(self.recipe(METHOD), DEFAULTS, self._settings(spec, seed, arm))
        argv = ["python", "-m", "zoo.detection.train", "--arch", spec.student, "--out", str(run_dir)]
        argv += ["--teacher", spec.teacher] if arm != TWIN else []
        argv += ["--train-count", str(spec.train_subset)] if spec.train_subset else []
        argv += [a for k, v in self._settings(spec, seed, arm).items() if k != "progress" for a in ("--set", f"{k}={v}")]
        card = train_detector(spec.student, run_dir, teacher=None if arm == TWIN else spec.teacher, cfg=cfg,
                              train_count=spec.train_subset, resume=(run_dir / STATE_FILE).exists(),
                              device=device or "cpu", command=shlex.join(argv), deadline=deadline)
        return card is not None
