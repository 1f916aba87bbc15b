"""The KD core: taps, the Distiller, every named recipe end to end, exact resume of distillation."""
import pytest
import torch
from torch import nn

from zoo.classification.data import ImageDataset
from zoo.classification.distill import distill_classifier
from zoo.classification.models import build_model
from zoo.distiller import Distiller
from zoo.recipes import RECIPES, Recipe, Term, get_recipe, list_recipes, override
from zoo.taps import Taps
from zoo.trainer import TrainConfig


def synthetic(n: int = 64, size: int = 16, seed: int = 0) -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    images = torch.randint(0, 60, (n, 1, size, size), generator=g, dtype=torch.uint8)
    images[torch.arange(n), 0, labels, :] = 255  # a learnable cue: the row of the class is bright
    return ImageDataset("synthetic", "train", images, labels, tuple(str(i) for i in range(10)), (0.3,), (0.3,), 2)


@pytest.fixture(scope="module")
def data():
    return synthetic(64), synthetic(20, seed=1)


def teacher(seed: int, depth: int = 14) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(f"resnet{depth}", in_channels=1).eval()


FAST = {"batch_size": 16, "epochs": 1, "max_steps": 2, "progress": False, "log_every": 1}


def test_taps_record_every_call_and_see_through_ddp_wrappers():
    shared = nn.Linear(3, 3)
    model = nn.Sequential(shared, nn.ReLU(), shared)  # the same module runs twice
    x = torch.randn(2, 3)
    with Taps(model, ["0"]) as taps:
        out = model(x)
        calls = taps.all("0")
        assert len(calls) == 2 and torch.equal(taps["0"], out)
    assert not shared._forward_hooks  # hooks removed on exit

    wrapped = nn.DataParallel(model)
    with Taps(wrapped, ["module.2"]) as taps:
        model(x)
        assert taps["module.2"].shape == (2, 3)
    with pytest.raises(ValueError, match="no submodule 'layer9'; did you mean layer3, layer2, layer1"):
        Taps(build_model("resnet8"), ["layer9"])


def test_distiller_freezes_teachers_and_returns_every_part(data):
    train, _ = data
    t = teacher(0)
    s = build_model("resnet8", in_channels=1)
    recipe = Recipe("mix", [Term("kd", params={"T": 4.0}, weight=0.5),
                            Term("fitnet", student="layer2", teacher="layer2", weight=2.0)], task_weight=0.1)
    d = Distiller(s, t, recipe, train.batch(torch.arange(8)), num_examples=len(train))
    d.train()
    assert not t.training and all(not p.requires_grad for p in t.parameters())
    assert not any(k.startswith("_teachers") for k in d.state_dict())  # teachers are not checkpointed
    out = d(train.batch(torch.arange(16)))
    assert set(out) == {"loss", "task", "kd", "fitnet"}
    expected = 0.1 * out["task"] + 0.5 * out["kd"] + 2.0 * out["fitnet"]
    assert torch.allclose(out["loss"], expected, rtol=1e-5)
    out["loss"].backward()
    assert all(p.grad is None for p in t.parameters())
    assert d.terms["fitnet"].connector.conv.weight.grad is not None
    assert s.conv1.weight.grad is not None


def test_a_tap_the_model_lacks_names_the_term_side_and_how_to_choose_another(data):
    train, _ = data
    example = train.batch(torch.arange(8))
    recipe = Recipe("probe", [Term("kd", weight=1.0), Term("fitnet", student="layer2", teacher="layer9", name="hint")])
    with pytest.raises(ValueError, match=r"no submodule 'layer9'.*\(teacher 0 of recipe 'probe', tapped by hint; "
                                         r"choose another path with --set hint.teacher=PATH"):
        Distiller(build_model("resnet8", in_channels=1), teacher(0), recipe, example)
    bad_index = Recipe("probe", [Term("fitnet", student="layer2", teacher="layer2@z", name="hint")])
    with pytest.raises(ValueError, match="after '@' comes a model index"):
        Distiller(build_model("resnet8", in_channels=1), teacher(0), bad_index, example)


def test_term_schedule_switches_terms(data):
    train, _ = data
    recipe = get_recipe("eskd")
    d = Distiller(build_model("resnet8", in_channels=1), teacher(0), recipe, train.batch(torch.arange(8)))
    batch = train.batch(torch.arange(16))
    d.set_progress(10, 100)
    assert {"kd"} <= set(d(batch)) and "ce" not in d(batch)
    d.set_progress(60, 100)
    parts = d(batch)
    assert "kd" not in parts and "ce" in parts


@pytest.mark.parametrize("name", list_recipes(task="classification"))
def test_every_recipe_trains_two_steps(name, data, tmp_path):
    recipe = RECIPES[name]
    teachers = [teacher(i, 14 if i == 0 else 8) for i in range(recipe.teachers)] or None
    if teachers and len(teachers) == 1:
        teachers = teachers[0]
    student, info = distill_classifier(name, teachers, "resnet8", out_dir=tmp_path, settings=FAST, data=data,
                                       device="cpu", eval_batch_size=20)
    assert info["step"] == 2 and not info["finished"]
    assert isinstance(student, nn.Module)
    stage_dir = tmp_path / "assistant" if recipe.assistant else tmp_path  # TAKD distils its assistant first
    assert torch.load(stage_dir / "train_state.pt", weights_only=True)["step"] == 2


def test_recipe_overrides_and_errors():
    r, cfg = override(get_recipe("kd"), TrainConfig(), {"T": 2, "kd.weight": 0.7, "task_weight": 0.3, "lr": 0.01})
    assert r.terms[0].params["T"] == 2.0 and r.terms[0].weight == 0.7 and r.task_weight == 0.3 and cfg.lr == 0.01
    with pytest.raises(ValueError, match="unknown recipe 'kdd'. Did you mean kd"):
        get_recipe("kdd")
    with pytest.raises(ValueError, match="unknown recipe 'nosuch'. Recipes of segmentation: cwd") as e:
        get_recipe("nosuch", "segmentation")  # (a task's command listed every task's recipes)
    assert "dkd" not in str(e.value)
    with pytest.raises(ValueError, match="recipe 'kd' is for task 'classification', not 'segmentation'; recipes of"):
        get_recipe("kd", "segmentation")
    with pytest.raises(ValueError, match="no recipes for task 'nosuch'; the tasks with recipes: classification"):
        get_recipe("kd", "nosuch")
    # CRD's temperature is its own parameter, not T: the error names it (the README's example used T=3)
    with pytest.raises(ValueError, match=r"'crd' has no term with a temperature T; its terms name theirs: --set crd.temperature"):
        override(get_recipe("crd"), TrainConfig(), {"T": 3})
    assert override(get_recipe("crd"), TrainConfig(), {"crd.temperature": 0.1})[0].terms[0].params["temperature"] == 0.1
    with pytest.raises(ValueError, match="term 'kd' has no setting 'temp'; valid: T, start"):
        override(get_recipe("kd"), TrainConfig(), {"kd.temp": 1})
    with pytest.raises(ValueError, match="must be a number"):
        override(get_recipe("kd"), TrainConfig(), {"kd.weight": "heavy"})
    with pytest.raises(ValueError, match="lr must be a finite number, got 1000"):  # (a bare OverflowError)
        override(get_recipe("kd"), TrainConfig(), {"lr": 10 ** 400})
    with pytest.raises(ValueError, match="unknown setting 'colour'; valid: .*task_weight"):
        override(get_recipe("kd"), TrainConfig(), {"colour": 1})
    with pytest.raises(ValueError, match="need 0 <= start < stop <= 1"):
        override(get_recipe("eskd"), TrainConfig(), {"kd.stop": 0.0})
    # a negative weight would maximise its loss; a non-finite one fails at the first step
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="term kd: weight must be a finite number >= 0"):
            override(get_recipe("kd"), TrainConfig(), {"kd.weight": bad})
        with pytest.raises(ValueError, match="task_weight must be a finite number >= 0"):
            override(get_recipe("kd"), TrainConfig(), {"task_weight": bad})
    assert override(get_recipe("kd"), TrainConfig(), {"task_weight": 0})[0].task_weight == 0  # KD alone
    assert override(get_recipe("kd"), TrainConfig(), {"kd.weight": 0})[0].terms[0].weight == 0  # the labels alone
    with pytest.raises(ValueError, match="recipe 'kd' has no loss: task_weight is 0 and no term has a positive weight"):
        override(get_recipe("kd"), TrainConfig(), {"kd.weight": 0, "task_weight": 0})  # (was a traceback at step 1)
    with pytest.raises(ValueError, match="recipe 'plain' has no loss: task_weight is 0 and it has no terms"):
        override(get_recipe("plain"), TrainConfig(), {"task_weight": 0})


def test_wrong_number_of_teachers_is_a_clear_error(data, tmp_path):
    with pytest.raises(ValueError, match="needs 3 teacher"):
        distill_classifier("avg-kd", teacher(0), "resnet8", out_dir=tmp_path, settings=FAST, data=data)
    with pytest.raises(ValueError, match="online distillation and takes no teacher"):
        distill_classifier("dml", teacher(0), "resnet8", out_dir=tmp_path, settings=FAST, data=data)


@pytest.mark.parametrize("name", ["crd", "fitnet-2stage"])
def test_distillation_resumes_bit_exactly(name, data, tmp_path):
    """--max-steps 6 then --resume to 12 equals an uninterrupted 12 steps (CRD: memory bank included)."""
    settings = {**FAST, "epochs": 4, "max_steps": 12}
    distill_classifier(name, teacher(0), "resnet8", out_dir=tmp_path / "a", settings=settings, data=data)
    distill_classifier(name, teacher(0), "resnet8", out_dir=tmp_path / "b", settings={**settings, "max_steps": 6},
                       data=data)
    log_b = tmp_path / "b" / "log.csv"  # a run killed after step 6's checkpoint had logged step 9 already
    rows = log_b.read_text().splitlines()
    log_b.write_text("\n".join(rows + ["9" + rows[-1][rows[-1].index(","):]]) + "\n")
    distill_classifier(name, teacher(0), "resnet8", out_dir=tmp_path / "b", settings=settings, data=data, resume=True)
    steps = [[r.split(",")[0] for r in (tmp_path / d / "log.csv").read_text().splitlines()] for d in "ab"]
    assert steps[0] == steps[1]  # each step logged once, the resumed steps logged again
    a = torch.load(tmp_path / "a" / "train_state.pt", weights_only=True)["module"]
    b = torch.load(tmp_path / "b" / "train_state.pt", weights_only=True)["module"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    if name == "crd":
        assert any("memory" in k for k in a)


def test_multibranch_single_branch_is_the_plain_network():
    from zoo.classification.multibranch import MultiBranchResNet

    torch.manual_seed(0)
    mb = MultiBranchResNet("resnet8", branches=3, gate=True, in_channels=1).eval()
    x = torch.randn(4, 1, 16, 16)
    for i in range(3):
        single = mb.single(i).eval()
        assert torch.allclose(single(x), mb.branches[i](mb.trunk(x)), atol=1e-6)
    assert torch.allclose(mb(x), torch.stack([b(mb.trunk(x)) for b in mb.branches]).mean(0), atol=1e-6)


def test_takd_distils_the_assistant_then_the_student(data, tmp_path):
    student, info = distill_classifier("takd", teacher(0), "resnet8", out_dir=tmp_path, data=data, device="cpu",
                                       settings={"batch_size": 16, "epochs": 1, "progress": False,
                                                 "assistant": "resnet14"}, eval_batch_size=20)
    assert info["finished"]
    assert (tmp_path / "assistant" / "train_state.pt").exists() and (tmp_path / "train_state.pt").exists()
    chain = info["assistant_chain"]
    assistant = torch.load(tmp_path / "assistant" / "train_state.pt", weights_only=True)
    import json

    assert chain[0]["name"] == "resnet14 (assistant)"
    assert chain[0]["metrics"]["top1"] == json.loads(assistant["history"])[-1]["top1"]  # the assistant's own eval
    assert student.config["depth"] == 8


def test_online_recipes_deliver_plain_students(data, tmp_path):
    for name in ("one", "okddip"):
        student, info = distill_classifier(name, None, "resnet8", out_dir=tmp_path / name, data=data, device="cpu",
                                           settings={"batch_size": 16, "epochs": 1, "progress": False},
                                           eval_batch_size=20)
        assert type(student).__name__ == "CifarResNet" and info["finished"]
        assert len(info["cohort"]) == 3


def test_zoo_distill_api_returns_a_run_with_a_card(tmp_path):
    import zoo

    t = tmp_path / "teacher"
    from conftest import make_card

    m = teacher(0)
    zoo.save(m, t, make_card(m, name="resnet14.unit"))
    run = zoo.distill(str(t), "resnet8", "kd", out=tmp_path / "run", epochs=1, train_subset=64,
                      settings={"batch_size": 32, "progress": False})
    assert run.finished and run.card.method == "kd" and run.card.teacher.name == "resnet14.unit"
    assert "--recipe kd" in run.card.training.command and run.card.extra["recipe"]["name"] == "kd"
    assert zoo.load(tmp_path / "run").card == run.card
    assert "kd" in zoo.list_recipes() and len(zoo.list_recipes()) >= 20


def test_teacher_output_cache_reuses_outputs_and_gives_identical_weights(data, tmp_path):
    t = teacher(0)
    calls = []
    t.register_forward_hook(lambda *a: calls.append(1))
    settings = {**FAST, "max_steps": 4, "epochs": 2}

    def weights(out):
        return torch.load(out / "train_state.pt", weights_only=True)["module"]

    distill_classifier("crd", t, "resnet8", out_dir=tmp_path / "plain", settings=settings, data=data)
    distill_classifier("crd", t, "resnet8", out_dir=tmp_path / "fill", settings={**settings, "teacher_cache": True},
                       data=data)
    before = len(calls)
    distill_classifier("crd", t, "resnet8", out_dir=tmp_path / "reuse", settings={**settings, "teacher_cache": True},
                       data=data)
    assert len(calls) - before == 1  # only the Distiller's shape probe ran the teacher
    a, b, c = weights(tmp_path / "plain"), weights(tmp_path / "fill"), weights(tmp_path / "reuse")
    assert all(torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]) for k in a)
    # a tampered chunk is refused
    from zoo.hub import cache_dir

    chunk = next((cache_dir() / "teacher-outputs").rglob("chunk*.safetensors"))
    chunk.write_bytes(chunk.read_bytes()[:-8])
    with pytest.raises(ValueError, match="does not match the sha256"):
        distill_classifier("crd", t, "resnet8", out_dir=tmp_path / "bad", settings={**settings, "teacher_cache": True},
                           data=data)


def test_teacher_cache_refuses_feature_maps(data, tmp_path):
    with pytest.raises(ValueError, match="holds at most"):
        distill_classifier("fitnet", teacher(0), "resnet8", out_dir=tmp_path, data=data,
                           settings={**FAST, "teacher_cache": True})


@pytest.mark.parametrize("name", ["kd", "fitnet"])
def test_compiled_networks_train_like_eager_ones(name, data, tmp_path):
    """compile= torch.compiles the student and teacher in place: the taps still see the features, checkpoint
    names are unchanged and the weights match eager training (aot_eager: traced, no generated code)."""
    settings = {**FAST, "max_steps": 3}
    distill_classifier(name, teacher(0), "resnet8", out_dir=tmp_path / "eager", settings=settings, data=data)
    distill_classifier(name, teacher(0), "resnet8", out_dir=tmp_path / "compiled", data=data,
                       settings={**settings, "compile": "default", "compile_backend": "aot_eager"})
    a = torch.load(tmp_path / "eager" / "train_state.pt", weights_only=True)["module"]
    b = torch.load(tmp_path / "compiled" / "train_state.pt", weights_only=True)["module"]
    assert a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=1e-4) for k in a)
    assert len((tmp_path / "compiled" / "log.csv").read_text().splitlines()) == 1 + 3


def test_compile_networks_compiles_a_shared_teacher_once_and_rejects_unknown_modes():
    from zoo.pack import DistillerPack
    from zoo.trainer import compile_networks

    t = teacher(0)
    example = synthetic(8).batch(torch.arange(8))
    members = {r: Distiller([build_model("resnet8", in_channels=1)], [t], get_recipe(r), example) for r in ("kd", "at")}
    compiled = compile_networks(DistillerPack(members), "default", backend="aot_eager")
    assert len(compiled) == 3 and sum(net is t for net in compiled) == 1
    with pytest.raises(ValueError, match="compile mode"):
        compile_networks(t, "fastest")
    with pytest.raises(ValueError, match="compile must be one of"):
        TrainConfig(compile="yes")
