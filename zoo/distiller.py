"""The Distiller: frozen eval-mode teacher(s) + student cohort + loss terms, as one trainable module.

``Distiller(students, teachers, recipe, example_batch, task_loss=...)`` opens taps on every module the recipe names,
probes the shapes of the tapped features with one forward, and builds each term (with connectors,
memory banks, discriminators... sized from those shapes). Its ``forward(batch)`` returns
``{"loss": total, "task": ..., <term name>: ...}``; the trainer optimises every parameter that
requires grad (students + term modules), never the teachers'.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .recipes import Recipe, Term, student_init, term_params
from .taps import Taps, unwrap
from .trainer import TrainModule
from .teacher_cache import ExampleOutputCache, TeacherOutputCache


@dataclass
class TermContext:
    """What a term builder may use: the probed student/teacher inputs and the data's size."""

    term: Term
    student: list[torch.Tensor]  # probe outputs for the term's student specs
    teacher: list[torch.Tensor]  # probe outputs for the term's teacher specs
    num_examples: int
    num_classes: int
    example_labels: torch.Tensor | None = None  # the class of every training example (CRD's negatives)
    params: dict[str, Any] = field(default_factory=dict)  # the term's hyperparameters, defaults resolved
    batch: dict[str, Any] | None = None  # the example batch (a term that reads batch fields sizes itself on it)


class TermModule(nn.Module):
    """A built loss term. Subclasses define ``forward(student_inputs, teacher_inputs, batch) -> scalar``,
    the inputs being lists of the tapped outputs named by the term's student and teacher specs.

    ``min_batch`` is the fewest samples per micro-batch (per process) for which the loss carries any
    signal: a relation between samples needs pairs or triplets (RKD's normalised distances and angles
    are constant below 3 samples, SPKD's normalised similarity below 2), and the trainer refuses a
    smaller micro-batch up front instead of training on a silently zero term."""

    min_batch: int = 1

    # A term with an adversary (a critic or discriminator trained against the student) names the optimizer
    # stage that trains it: the Distiller then steps that stage after the students' ("main"), with its
    # own optimizer over `adversary_parameters`, on the same batch, and its loss from `adversary_loss`
    # on the inputs the term saw in the main stage (detached). ``stage_lr_scale`` sets that optimizer's
    # learning rate as a multiple of the schedule's. The term's own ``forward`` (the student's side) must
    # not train the adversary (run it on detached parameters, e.g. with ``torch.func.functional_call``).
    stage: str | None = None
    stage_lr_scale: float = 1.0

    def adversary_parameters(self) -> list[nn.Parameter]:
        """The parameters the term's own stage trains (default: all of the term's)."""
        return [p for p in self.parameters() if p.requires_grad]

    def adversary_loss(self, student: list[Any], teacher: list[Any], batch: dict[str, Any]) -> torch.Tensor:
        """The adversary's loss on the term's (detached) inputs of the main stage."""
        raise NotImplementedError(f"{type(self).__name__} names stage {self.stage!r} but defines no adversary_loss")


class FunctionTerm(TermModule):
    """A pure loss function applied to the tapped inputs, optionally with labels."""

    def __init__(self, fn: Callable[..., torch.Tensor], params: dict[str, Any], *, labels: bool = False,
                 lists: bool = False, min_batch: int = 1) -> None:
        super().__init__()
        self.fn, self.params, self.labels, self.lists = fn, dict(params), labels, lists
        self.min_batch = min_batch

    def forward(self, student: list[Any], teacher: list[Any], batch: dict[str, Any]) -> torch.Tensor:
        args = [student, teacher] if self.lists else [*student, *teacher]
        if self.labels:
            args.append(batch["labels"])
        return self.fn(*args, **self.params)


def cross_entropy_task_loss(logits: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
    """The default task loss of a student: cross-entropy of its output ``(N, C)`` logits against
    ``batch["labels"]`` ``(N,)``, in float32."""
    return F.cross_entropy(logits.float(), batch["labels"])


TermBuilder = Callable[[TermContext], TermModule]
TERM_BUILDERS: dict[str, TermBuilder] = {}


def term_builder(name: str, *defaults_from: Callable[..., Any], **extra: Any) -> Callable[[TermBuilder], TermBuilder]:
    """Register the builder of loss term ``name``. Its hyperparameters and their defaults are the keyword
    defaults of ``defaults_from`` (the loss function, the term module's classes) plus ``extra`` (defaults
    the term itself adds, e.g. the FitNet connector's ReLU): the one place each default is written
    (`zoo.recipes.TERM_DEFAULTS`). The builder reads the resolved values from ``ctx.params``."""
    from .recipes import TERM_DEFAULTS, keyword_defaults

    def register(fn: TermBuilder) -> TermBuilder:
        TERM_BUILDERS[name] = fn
        TERM_DEFAULTS[name] = {**keyword_defaults(*defaults_from), **extra}
        return fn

    return register


def _parse_spec(spec: str) -> tuple[str, str]:
    """``"layer3@1"`` -> (``"layer3"``, ``"1"``); ``"logits"`` -> (``"logits"``, ``"0"``)."""
    path, _, which = spec.partition("@")
    if which and which != "*" and not which.isdigit():
        raise ValueError(f"tap {spec!r}: after '@' comes a model index (0, 1, ...) or '*', not {which!r}")
    return path, which or "0"


def _specs(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _position(batch: dict[str, Any]) -> Any:
    """Which micro-batch of the run ``batch`` is (the trainer's ``position``), else the batch's identity."""
    return batch.get("position", id(batch))


def _detached(values: list[Any]) -> list[Any]:
    return [[v.detach() for v in x] if isinstance(x, list) else x.detach() if isinstance(x, torch.Tensor) else x
            for x in values]


def _features(output: Any) -> Any:
    """A tapped module's output, reduced to its main tensor where it returns a tuple or a dict."""
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return output


class Distiller(TrainModule):
    """Students (a cohort of one or more) learn from frozen teachers through the recipe's terms."""

    def __init__(self, students: nn.Module | Sequence[nn.Module], teachers: nn.Module | Sequence[nn.Module] | None,
                 recipe: Recipe, example_batch: dict[str, Any], *, num_examples: int = 0,
                 example_labels: torch.Tensor | None = None,
                 teacher_cache: TeacherOutputCache | ExampleOutputCache | None = None,
                 task_loss: Callable[[torch.Tensor, dict[str, Any]], torch.Tensor] | None = None,
                 teacher_inputs: Sequence[Callable[[Any], Any] | None] | None = None) -> None:
        super().__init__()
        # the task's own loss of a student's output against the batch (default: cross-entropy on the labels)
        self.task_loss = task_loss or cross_entropy_task_loss
        students = [students] if isinstance(students, nn.Module) else list(students)
        teachers = [] if teachers is None else [teachers] if isinstance(teachers, nn.Module) else list(teachers)
        if not students:
            raise ValueError("a Distiller needs at least one student")
        if recipe.teachers and len(teachers) != recipe.teachers:
            raise ValueError(f"recipe {recipe.name!r} needs {recipe.teachers} teacher(s), got {len(teachers)}")
        self.recipe = recipe
        self.students = nn.ModuleList(students)
        # Teachers are frozen and kept out of state_dict()/parameters(): they are loaded from the zoo,
        # verified by sha256, and never change, so checkpoints need not carry them.
        self._teachers = teachers
        for t in teachers:
            t.eval()
            t.requires_grad_(False)
        if recipe.init is not None:  # the students inherit the teacher's weights before anything is probed
            if not teachers:
                raise ValueError(f"recipe {recipe.name!r} initialises its students from the teacher "
                                 f"({recipe.init!r}) and needs a teacher module, got none")
            inherit = student_init(recipe.init)
            with torch.no_grad():
                for s in students:
                    try:
                        inherit(teachers[0], s)
                    except ValueError as e:
                        raise ValueError(f"{e} (recipe {recipe.name!r}, init {recipe.init!r}; --set init=null "
                                         "trains the student from its own weights)") from e
        self.progress = 0.0
        self.teacher_cache = teacher_cache
        self._student_taps = [self._open_taps(s, "student", i) for i, s in enumerate(students)]
        self._teacher_taps = [self._open_taps(t, "teacher", i) for i, t in enumerate(teachers)]
        # per teacher: the batch's inputs as that teacher takes them (None: as they are), e.g. another
        # image size or channel count than the student's data; modules among them move with the Distiller
        self.teacher_inputs = nn.ModuleList(f if isinstance(f, nn.Module) else nn.Identity()
                                            for f in (teacher_inputs or [None] * len(teachers)))
        self._teacher_input_fns = [f if f is not None else (lambda x: x) for f in (teacher_inputs or [None] * len(teachers))]
        if len(self._teacher_input_fns) != len(teachers):
            raise ValueError(f"teacher_inputs gives {len(self._teacher_input_fns)} functions for {len(teachers)} teachers")
        self._adversary_inputs: dict[tuple[str, Any], tuple[list[Any], list[Any]]] = {}
        probe = self._probe(example_batch)
        logits = probe[0][0]["logits"]  # a model's output need not be a tensor (a detector's is a list of dicts)
        num_classes = int(logits.shape[-1]) if isinstance(logits, torch.Tensor) and logits.dim() else 0
        self.terms = nn.ModuleDict()
        for term in recipe.terms:
            if term.loss not in TERM_BUILDERS:
                raise ValueError(f"term {term.name!r}: unknown loss {term.loss!r}; known: {', '.join(sorted(TERM_BUILDERS))}")
            ctx = TermContext(term, self._gather(term.student, probe[0]), self._gather(term.teacher, probe[1]),
                              num_examples, num_classes, example_labels, term_params(term), example_batch)
            self.terms[term.name] = TERM_BUILDERS[term.loss](ctx)

    # ------------------------------------------------------------------ plumbing
    @property
    def teachers(self) -> list[nn.Module]:
        return self._teachers

    def _open_taps(self, model: nn.Module, side: str, index: int) -> Taps:
        """Open the hooks of ``side``'s model ``index``. ValueError: a tap path the model lacks, with the terms
        that tap it there, how to choose another (``--set TERM.SIDE=PATH``) and the model's own ``tap_hint`` if
        it has one (e.g. an OpenMMLab model, whose module paths differ from torchvision's)."""
        from .taps import resolve

        paths = self._paths(side, index)
        for path in paths:
            try:
                resolve(model, path)
            except ValueError as e:
                terms = [t.name for t in self.recipe.terms
                         if any(_parse_spec(s)[0] == path for s in _specs(t.student if side == "student" else t.teacher))]
                hint = getattr(unwrap(model), "tap_hint", "")
                raise ValueError(f"{e} ({side} {index} of recipe {self.recipe.name!r}, tapped by "
                                 f"{', '.join(terms)}; choose another path with --set {terms[0]}.{side}=PATH, in Python "
                                 f"settings={{'{terms[0]}.{side}': PATH}}, "
                                 f"'logits' being the model's output)" + (f". {hint}" if hint else "")) from None
        return Taps(model, paths).open()

    def _paths(self, side: str, index: int) -> list[str]:
        paths = []
        for term in self.recipe.terms:
            for spec in _specs(term.student if side == "student" else term.teacher):
                path, which = _parse_spec(spec)
                if path != "logits" and (which == "*" or int(which) == index):
                    paths.append(path)
        return paths

    def _gather(self, value: str | list[str] | None, outputs: list[dict[str, Any]]) -> list[Any]:
        gathered: list[Any] = []
        for spec in _specs(value):
            path, which = _parse_spec(spec)
            if which == "*":
                gathered.append([o[path] for o in outputs])
            else:
                k = int(which)
                if k >= len(outputs):
                    raise ValueError(f"tap spec {spec!r} asks for model {k}, but there are {len(outputs)}")
                gathered.append(outputs[k][path])
        return gathered

    def _run(self, model: nn.Module, taps: Taps, inputs: Any) -> dict[str, Any]:
        taps.clear()
        logits = model(**inputs) if isinstance(inputs, dict) else model(inputs)
        out = {n: _features(v) for n, v in taps.outputs().items()}
        out["logits"] = logits
        return out

    @torch.no_grad()
    def _probe(self, batch: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        modes = [s.training for s in self.students]
        for s in self.students:
            s.eval()
        students = [self._run(s, tp, batch["inputs"]) for s, tp in zip(self.students, self._student_taps)]
        teachers = [self._run(t, tp, f(batch["inputs"]))
                    for t, tp, f in zip(self._teachers, self._teacher_taps, self._teacher_input_fns)]
        for s, m in zip(self.students, modes):
            s.train(m)
        return students, teachers

    def train(self, mode: bool = True) -> "Distiller":
        super().train(mode)
        for t in self._teachers:
            t.eval()  # teachers always run in eval mode (frozen BN statistics, no dropout)
        return self

    def _apply(self, fn: Callable, recurse: bool = True) -> "Distiller":
        super()._apply(fn, recurse)
        for t in self._teachers:
            t._apply(fn, recurse)  # .to(device) / .half() move the teachers too
        return self

    def batch_requirements(self) -> list[tuple[int, str]]:
        """(fewest samples per micro-batch, why): its BatchNorm layers' (students and term modules) and each
        term's that relates samples (`TermModule.min_batch`); read by `zoo.trainer.min_micro_batch`."""
        from .trainer import batchnorm_requirement

        who = f"recipe {self.recipe.name!r}"
        needs = batchnorm_requirement(self, who)
        needs += [(self.terms[t.name].min_batch, f"{who} needs at least {self.terms[t.name].min_batch}: its term "
                   f"{t.name!r} ({t.loss}) relates the samples of a micro-batch and is constant with fewer")
                  for t in self.recipe.terms if self.terms[t.name].min_batch > 1]
        return needs

    @property
    def may_skip_parameters(self) -> bool:
        """Whether some step leaves parameters unused (a scheduled term is off): DDP must look for them."""
        return any(t.start > 0.0 or t.stop < 1.0 for t in self.recipe.terms)

    @property
    def part_names(self) -> list[str]:
        """Names of the loss parts ``forward`` can return (the columns of the training log)."""
        names = (["task"] if self.recipe.task_weight else []) + [t.name for t in self.recipe.terms]
        if len(self.stages()) == 1:
            return names
        # with adversary stages the trainer logs each stage's parts as stage/part
        return ["main/loss", *(f"main/{n}" for n in names),
                *(f"{self.terms[t.name].stage}/{t.name}" for t in self._staged_terms())]

    def set_progress(self, step: int, total_steps: int) -> None:
        """Called by the trainer before each step: terms with start/stop read it."""
        self.progress = step / max(1, total_steps)
        self._adversary_inputs.clear()  # what the last step's adversary stages read

    # ------------------------------------------------------------------ optimizer stages (adversarial terms)
    def _staged_terms(self) -> list[Term]:
        return [t for t in self.recipe.terms if self.terms[t.name].stage is not None]

    def stages(self) -> tuple[str, ...]:
        """``main`` (the students and every other term module), then the stage of each term with an
        adversary (`TermModule.stage`), in the recipe's order."""
        names = ["main"]
        for t in self._staged_terms():
            stage = self.terms[t.name].stage
            if stage in names:
                raise ValueError(f"terms of recipe {self.recipe.name!r} share the optimizer stage {stage!r}")
            names.append(stage)
        return tuple(names)

    def stage_parameters(self, stage: str) -> list[nn.Parameter]:
        adversaries = {t.name: self.terms[t.name] for t in self._staged_terms()}
        owned = {id(p) for m in adversaries.values() for p in m.adversary_parameters()}
        if stage == "main":
            return [p for p in self.parameters() if p.requires_grad and id(p) not in owned]
        return next(m.adversary_parameters() for m in adversaries.values() if m.stage == stage)

    def stage_lr_scale(self, stage: str) -> float:
        return next((self.terms[t.name].stage_lr_scale for t in self._staged_terms()
                     if self.terms[t.name].stage == stage), 1.0)

    def _adversary_step(self, batch: dict[str, Any], stage: str) -> dict[str, torch.Tensor]:
        term = next(t for t in self._staged_terms() if self.terms[t.name].stage == stage)
        module = self.terms[term.name]
        saved = self._adversary_inputs.get((term.name, _position(batch)))
        if saved is None:  # the term is off (schedule) or its main stage did not run on this batch
            zero = sum(p.sum() for p in module.adversary_parameters()) * 0.0
            return {"loss": zero}
        value = module.adversary_loss(saved[0], saved[1], batch)
        return {"loss": value, term.name: value.detach()}

    # ------------------------------------------------------------------ the step
    def _needed_teachers(self) -> set[int]:
        needed: set[int] = set()
        for term in self.recipe.terms:
            if term.active(self.progress):
                for spec in _specs(term.teacher):
                    which = _parse_spec(spec)[1]
                    needed |= set(range(len(self._teachers))) if which == "*" else {int(which)}
        return needed

    def clear_teacher_taps(self) -> None:
        for taps in self._teacher_taps:
            taps.clear()

    def teacher_outputs(self, batch: dict[str, Any], shared: dict[int, torch.Tensor] | None = None
                        ) -> list[dict[str, Any]]:
        """Outputs of the teachers that active terms use (a snapshot route runs one teacher at a time),
        read from the teacher-output cache when it has them.

        ``shared`` (used by `zoo.pack.DistillerPack`) maps ``id(teacher)`` to the logits of a teacher
        another Distiller already ran on this batch: the taps of every Distiller on that teacher
        recorded the same call, so it is not run again.
        """
        needed = self._needed_teachers()
        cache = self.teacher_cache if self.training else None
        if cache is not None:
            cached = cache.get(batch, batch["labels"].device)
            if cached is not None and all(i < len(cached) and set(self._teacher_taps[i].names + ["logits"]) <= set(cached[i])
                                          for i in needed):
                return [cached[i] if i in needed else {} for i in range(len(self._teachers))]
        outputs: list[dict[str, Any]] = []
        with torch.no_grad():
            for i, (t, tp) in enumerate(zip(self._teachers, self._teacher_taps)):
                if i not in needed:
                    outputs.append({})
                elif shared is not None and id(t) in shared:
                    out = {n: _features(v) for n, v in tp.outputs().items()}
                    out["logits"] = shared[id(t)]
                    outputs.append(out)
                else:
                    outputs.append(self._run(t, tp, self._teacher_input_fns[i](batch["inputs"])))
                    if shared is not None:
                        shared[id(t)] = outputs[-1]["logits"]
        if cache is not None:
            cache.put(batch, outputs)
        return outputs

    def forward(self, batch: dict[str, Any], shared_teachers: dict[int, torch.Tensor] | None = None,
                stage: str = "main") -> dict[str, torch.Tensor]:
        """``{"loss": total, "task": ..., <term name>: ...}`` of the students' stage; with ``stage`` the name
        of an adversarial term's stage, that adversary's loss on the inputs the main stage saw."""
        if stage != "main":
            return self._adversary_step(batch, stage)
        teacher_out = self.teacher_outputs(batch, shared_teachers)
        student_out = [self._run(s, tp, batch["inputs"]) for s, tp in zip(self.students, self._student_taps)]
        parts: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=batch["labels"].device)
        if self.recipe.task_weight:
            task = sum(self.task_loss(o["logits"], batch) for o in student_out)
            parts["task"] = task.detach()
            total = total + self.recipe.task_weight * task
        for term in self.recipe.terms:
            if not term.active(self.progress):
                continue
            student_in, teacher_in = self._gather(term.student, student_out), self._gather(term.teacher, teacher_out)
            if self.terms[term.name].stage is not None:  # its adversary's stage reads these, detached
                self._adversary_inputs[(term.name, _position(batch))] = (_detached(student_in), _detached(teacher_in))
            value = self.terms[term.name](student_in, teacher_in, batch)
            parts[term.name] = value.detach()
            total = total + term.weight * term.ramp(self.progress) * value
        return {"loss": total, **parts}

    def compilable_networks(self) -> list[nn.Module]:
        """The students and teachers, for `zoo.trainer.compile_networks`."""
        return [*self.students, *self._teachers]

    def on_checkpoint(self) -> None:
        """Called by the trainer with each checkpoint: the teacher-output cache is written with it, so a
        resumed run reads exactly the outputs the interrupted one stored."""
        if self.teacher_cache is not None:
            self.teacher_cache.flush()

    def close(self) -> None:
        for taps in self._student_taps + self._teacher_taps:
            taps.close()
        if self.teacher_cache is not None:
            self.teacher_cache.flush()


from . import terms as _terms  # noqa: E402,F401  (registers the term builders)
