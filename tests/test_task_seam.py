"""The task seam: a task defined in this file (tiny regression) trains, distils, publishes, loads, predicts
and evaluates through `zoo.*` and the CLI, with nothing under zoo/ knowing about it; and the core names
no task (issue: one seam for tasks)."""
from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import zoo
from zoo import cli
from zoo.distiller import TERM_BUILDERS, FunctionTerm, term_builder
from zoo.recipes import RECIPES, Recipe, Term, register_recipe
from zoo.tasks import MetricInfo, TaskAdapter, TaskSpec, known_tasks, register_task, unregister_task

ROOT = Path(__file__).resolve().parents[1]


class Lines:
    """y = x . w + 0.05 noise, x in R^4: a batch source of the toy task."""

    def __init__(self, n: int, seed: int, split: str) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.05 * torch.randn(n, generator=g)
        self.name, self.split = "toy-lines", split

    def __len__(self) -> int:
        return len(self.x)

    def batch(self, indices, generator=None, augment=False, device=None) -> dict[str, torch.Tensor]:
        return {"inputs": self.x[indices].to(device or "cpu"), "labels": self.y[indices].to(device or "cpu"),
                "index": indices}


class MLP(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.config = {"hidden": hidden}
        self.body = nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ToyAdapter(TaskAdapter):
    def build_model(self, architecture: str, config: dict[str, Any]) -> nn.Module:
        return MLP(**config)

    def preprocessor(self, card, directory=None):
        return lambda rows: torch.as_tensor(rows, dtype=torch.float32)

    def predict(self, model, inputs, top_k=1):
        return [{"label": None, "index": None, "score": float(v)} for v in model(model.preprocess(inputs)).flatten()]

    def describe(self, prediction):
        return f"y = {prediction['score']:.3f}"

    def evaluate(self, model, card, *, data_root=None, device="cpu"):
        return self.evaluate_model(model, self.datasets(card.dataset)[1], device=device)

    def sample_inputs(self, card):
        return [[0.1, 0.2, 0.3, 0.4], [1.0, 0.0, -1.0, 0.5]]

    # the generic run path
    task_loss = staticmethod(lambda out, batch: F.mse_loss(out.float().flatten(), batch["labels"]))

    def datasets(self, data=None, *, train_subset=None):
        if data not in (None, "toy-lines"):
            raise ValueError(f"unknown toy data {data!r}")
        return Lines(256 if not train_subset else train_subset, 0, "train"), Lines(64, 1, "test")

    def build_student(self, architecture, train):
        return MLP(int(architecture.split("-")[1]))

    @torch.no_grad()
    def evaluate_model(self, model, data, *, device="cpu"):
        model.eval()
        return {"mse": float(F.mse_loss(model(data.x).flatten(), data.y))}

    def card_fields(self, train):
        return {"preprocessing": {"input_size": [4]}, "labels": []}


@pytest.fixture
def toy_task():
    register_task(TaskSpec("toyreg", metrics=(MetricInfo("mse", higher_is_better=False, low=0.0, high=None, unit="",
                                                        percent=False),), adapter=ToyAdapter()))

    @term_builder("toy_output_mse")
    def _toy_output_mse(ctx):  # a task brings its own loss terms too
        return FunctionTerm(lambda s, t: F.mse_loss(s.float(), t.float()), {})

    register_recipe(Recipe("toyreg-kd", [Term("toy_output_mse", weight=1.0)], task_weight=1.0, task="toyreg"))
    yield
    unregister_task("toyreg")
    dict.pop(RECIPES, "toyreg-kd", None)
    TERM_BUILDERS.pop("toy_output_mse", None)


FAST = {"epochs": 30, "batch_size": 32, "lr": 0.05, "progress": False, "optimizer": "adamw", "weight_decay": 0.0}


def test_a_task_defined_outside_zoo_runs_through_the_api(toy_task, tmp_path):
    assert "toyreg" in known_tasks()
    teacher = zoo.train("toyreg", "mlp-64", out=tmp_path / "teacher", settings=FAST)
    assert teacher.finished and teacher.card.task == "toyreg" and teacher.card.method == "plain"
    assert teacher.card.metrics["mse"] < 0.5  # it learnt the line
    kd = zoo.distill(str(tmp_path / "teacher"), "mlp-4", "toyreg-kd", out=tmp_path / "kd", settings=FAST)
    assert kd.card.method == "toyreg-kd" and kd.card.teacher.name == teacher.card.name
    assert "zoo distill toyreg --recipe toyreg-kd --student mlp-4" in kd.card.training.command

    from zoo.publish import publish

    card = publish(tmp_path / "kd", "mlp4-kd.toy", dest_root=tmp_path / "zoo", latency_batch_sizes=(1,))
    model = zoo.load(tmp_path / "zoo" / "mlp4-kd.toy")
    assert model.card.metrics == card.metrics and card.params == sum(p.numel() for p in model.parameters())
    [first, second] = zoo.predict(model)
    assert isinstance(first["score"], float)
    assert zoo.evaluate(tmp_path / "zoo" / "mlp4-kd.toy")["measured"] == pytest.approx(card.metrics, abs=1e-3)
    with pytest.raises(ValueError, match="fewer than one batch of 100000"):  # refused before the folder is written
        zoo.train("toyreg", "mlp-4", out=tmp_path / "big", settings={**FAST, "batch_size": 100000})
    assert not (tmp_path / "big").exists()


def test_a_runner_task_gets_the_twin_protocol(toy_task, tmp_path, capsys):
    """`zoo.protocol.RunnerProtocol`: each arm its own run on the seed's data stream, resumable by arm,
    a lower-is-better metric compared the right way round."""
    import time

    from zoo import protocol

    zoo.train("toyreg", "mlp-64", out=tmp_path / "teacher", settings=FAST)
    from zoo.tasks import get_adapter

    plug = protocol.RunnerProtocol(get_adapter("toyreg"), "toy-lines")
    assert plug.metric == "mse" and plug.higher_is_better is False
    spec = protocol.ProtocolSpec("toyreg", str(tmp_path / "teacher"), "mlp-4", ["toyreg-kd"], [0, 1], "toy-lines",
                                 {**FAST, "epochs": 5})
    assert protocol.run(spec, plug, tmp_path / "tw", deadline=time.monotonic() - 1) == []  # stopped at once
    capsys.readouterr()
    results = protocol.run(spec, plug, tmp_path / "tw")
    assert [r.seed for r in results] == [0, 1] and all(r.steps == 40 for r in results)
    out = capsys.readouterr().out  # each arm says where its progress goes, and its result when done
    assert f"seed 1: training toyreg-kd (its progress: {tmp_path / 'tw' / 'seed-1' / 'toyreg-kd' / 'log.csv'})" in out
    assert re.search(r"seed 0: twin done, mse \d+\.\d{4} \(\d+\.\d min\)", out)
    assert (tmp_path / "tw" / "seed-0" / "twin" / "README.md").exists()
    assert results[0].metrics["twin"] != results[1].metrics["twin"]  # the seed reaches the arms
    table, summary = protocol.write_results(spec, plug, results, tmp_path / "res")
    assert summary["toyreg-kd"].gain == pytest.approx(summary["twin"].mean - summary["toyreg-kd"].mean)
    bad = protocol.ProtocolSpec("toyreg", str(tmp_path / "teacher"), "mlp-x", ["toyreg-kd"], [0, 1], "toy-lines")
    with pytest.raises(ValueError):  # the student is built once before anything is written
        protocol.run(bad, plug, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ValueError, match="not toyreg ones"):
        plug.validate(protocol.ProtocolSpec("toyreg", str(tmp_path / "teacher"), "mlp-4", ["kd"], [0, 1], "toy-lines"))
    with pytest.raises(ValueError, match="does not distil one student from one teacher .or itself. with these settings"):
        plug.validate(protocol.ProtocolSpec("toyreg", str(tmp_path / "teacher"), "mlp-4", ["toyreg-kd"], [0, 1],
                                            "toy-lines", {"cohort": 2}))  # the recipe as the settings make it


def test_the_same_task_through_the_command_line(toy_task, tmp_path, capsys):
    sets = [a for k, v in FAST.items() for a in ("--set", f"{k}={str(v).lower()}")]
    assert cli.main(["train", "toyreg", "--arch", "mlp-32", "--out", str(tmp_path / "t"), *sets]) == 0
    assert cli.main(["distill", "toyreg", "--recipe", "toyreg-kd", "--student", "mlp-4", "--teacher",
                     str(tmp_path / "t"), "--out", str(tmp_path / "s"), *sets]) == 0
    assert cli.main(["publish", str(tmp_path / "s"), "--name", "mlp4.toy", "--dest", str(tmp_path / "zoo")]) == 0
    capsys.readouterr()
    # an existing entry folder, an alias that is another entry's name, a missing run folder: refused first
    card_before = (tmp_path / "zoo" / "mlp4.toy" / "README.md").read_text()
    assert cli.main(["publish", str(tmp_path / "s"), "--name", "mlp4.toy", "--dest", str(tmp_path / "zoo")]) == 2
    assert "mlp4.toy exists already; nothing was published. Pass --overwrite" in capsys.readouterr().err
    assert cli.main(["publish", str(tmp_path / "s"), "--name", "mlp4b.toy", "--alias", "resnet8.fmnist"]) == 2
    assert "'resnet8.fmnist' is already a name of the zoo entry 'resnet8.fmnist'" in capsys.readouterr().err
    assert cli.main(["publish", str(tmp_path / "nothing"), "--name", "x.toy", "--dest", str(tmp_path / "zoo")]) == 2
    assert f"run folder {tmp_path / 'nothing'} does not exist" in capsys.readouterr().err
    assert cli.main(["publish", str(tmp_path / "s"), "--name", "resnet8.fmnist", "--dest", str(tmp_path / "zoo")]) == 2
    assert "'resnet8.fmnist' is already a name of the zoo entry" in capsys.readouterr().err  # in any folder
    assert cli.main(["train", "toyreg", "--arch", "mlp-4", "--out", str(tmp_path / "cut"), *sets, "--set", "max_steps=1"]) == 0
    capsys.readouterr()
    assert cli.main(["publish", str(tmp_path / "cut"), "--name", "cut.toy", "--dest", str(tmp_path / "zoo")]) == 2
    assert "is an unfinished run (a checkpoint, no card yet): finish it" in capsys.readouterr().err
    assert (tmp_path / "zoo" / "mlp4.toy" / "README.md").read_text() == card_before
    assert sorted(p.name for p in (tmp_path / "zoo").iterdir()) == ["mlp4.toy"]
    assert cli.main(["publish", str(tmp_path / "s"), "--name", "mlp4.toy", "--dest", str(tmp_path / "zoo"),
                     "--overwrite"]) == 0
    capsys.readouterr()
    assert cli.main(["predict", str(tmp_path / "zoo" / "mlp4.toy")]) == 0
    assert re.search(r"y = -?\d+\.\d{3}", capsys.readouterr().out)
    assert cli.main(["eval", str(tmp_path / "zoo" / "mlp4.toy")]) == 0
    # a wrong task or recipe is a clear error, not a traceback
    assert cli.main(["distill", "toyreg", "--recipe", "kd", "--student", "mlp-4", "--teacher", str(tmp_path / "t"),
                     "--out", str(tmp_path / "x"), *sets]) == 2
    assert "recipe 'kd' is for task 'classification', not 'toyreg'" in capsys.readouterr().err


def test_metric_metadata_directs_gains_and_formats(toy_task, tiny_model):
    from zoo.comparison import twin_gain
    from zoo.registry import ModelCard

    card = ModelCard(name="m.toy", task="toyreg", architecture="mlp-4", dataset="toy-lines", split="test",
                     metrics={"mse": 0.20}, params=10, method="toyreg-kd",
                     baseline={"metrics": {"mse": {"mean": 0.25, "std": 0.01, "n": 3}}})
    assert card.gain_over_baseline() == pytest.approx(0.05)  # lower is better: 0.05 better than the twin
    assert twin_gain(card).startswith("+0.05 (twin 0.25")
    with pytest.raises(ValueError, match="mse=-1.0 is outside its range"):
        ModelCard(name="m.toy", task="toyreg", architecture="mlp-4", dataset="toy-lines", split="test",
                  metrics={"mse": -1.0}, params=10)
    assert card.headline == "mse"


TASK_NAMES = ("classification", "detection", "nlp", "segmentation", "face", "gan")


def test_the_core_names_no_task():
    """No task name in zoo/'s code: identifiers, strings and help texts (docstrings and comments aside)."""
    found = []
    for path in sorted((ROOT / "zoo").rglob("*.py")):
        tokens = list(tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline))
        for i, tok in enumerate(tokens):
            if tok.type == tokenize.STRING:
                j = i - 1
                while j >= 0 and tokens[j].type in (tokenize.NL, tokenize.COMMENT):
                    j -= 1
                if j < 0 or tokens[j].type in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
                    continue  # a docstring
                hits = [n for n in TASK_NAMES if re.search(rf"\b{n}\b", tok.string.lower())]
            elif tok.type == tokenize.NAME:
                hits = [n for n in TASK_NAMES if n in tok.string.lower().split("_")]
            else:
                continue
            if hits:
                found.append(f"{path.relative_to(ROOT)}:{tok.start[0]}: {tok.string[:60]}")
    assert not found, "task names in the core:\n" + "\n".join(found)


def test_default_run_names_are_zoo_names_for_bridged_and_plain_architectures(tmp_path):
    """A bridged config's default name has no ':' or '/' (it was 'mmseg:kdzoo::fcn_r18_c16.py-cwd....')."""
    from zoo.runner import default_name

    assert default_name("mmseg:kdzoo::fcn_r18_c16.py", "cwd", "fmnist-scenes") == "mmseg-fcn-r18-c16-cwd.fmnist-scenes"
    assert default_name("mmdet:/cfgs/frcnn_r18.py", "plain", "coco") == "mmdet-frcnn-r18.coco"
    assert default_name("timm:resnet18", "kd", "fashion-mnist") == "timm-resnet18-kd.fashion-mnist"
    assert default_name("resnet8", "plain", "fashion-mnist") == "resnet8.fashion-mnist"
    folder = tmp_path / "my-photos"
    folder.mkdir()
    assert default_name("resnet8", "kd", str(folder)) == "resnet8-kd.my-photos"


def test_the_generic_train_and_distill_commands_take_epochs_seed_and_max_steps():
    """`zoo train|distill TASK` of every runner task takes --epochs/--seed/--max-steps as classification's does
    (they were 'unrecognized arguments'), each the same as its --set; a flag and a --set that disagree are refused."""
    from zoo.cli import parse_overrides
    from zoo.runner import flag_settings, parser

    args = parser("toy", "train").parse_args(["--arch", "a", "--out", "o", "--max-steps", "3", "--epochs", "2",
                                              "--set", "lr=0.1"])
    assert flag_settings(args, parse_overrides(args.set)) == {"lr": 0.1, "max_steps": 3, "epochs": 2}
    args = parser("toy", "distill").parse_args(["--recipe", "r", "--student", "s", "--out", "o", "--seed", "4",
                                                "--set", "seed=4"])
    assert flag_settings(args, parse_overrides(args.set)) == {"seed": 4}  # the same value twice is fine
    args = parser("toy", "train").parse_args(["--arch", "a", "--out", "o", "--max-steps", "1", "--set", "max_steps=2"])
    with pytest.raises(ValueError, match="--max-steps 1 and --set max_steps=2 disagree"):
        flag_settings(args, parse_overrides(args.set))
