"""Failures users of other KD projects have reported, each kind checked on kdzoo (issue: correctness
against references and the failures found when kdzoo was tried as a new user would).

1. images of any mode and bit depth decode to what a viewer shows, or are refused clearly;
2. prediction neither depends on nor changes the model's train/eval mode and state;
3. wrapped models (DataParallel, DDP, torch.compile) save and load;
4. a resumed run continues with the checkpoint's configuration;
5. a diverged run keeps a finite last checkpoint, resumes with a lower lr, and never gets a card;
6. a micro-batch too small for the recipe is refused up front.
"""
from __future__ import annotations

import copy
import io
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from zoo import hub
from test_kd_core import synthetic, teacher
from zoo.classification.distill import distill_classifier
from zoo.classification.models import build_model
from zoo.images import to_uint8_array
from zoo.runs import ResumeMismatchError
from zoo.trainer import STATE_FILE, DivergedError, NonFiniteLossError

SMALL = {"batch_size": 16, "epochs": 2, "progress": False, "log_every": 1}


# ------------------------------------------------------------------ 1. image decoding
@pytest.fixture(scope="module")
def sample() -> np.ndarray:
    """A bundled Fashion-MNIST sample as uint8 (28, 28)."""
    from zoo.classification.adapter import SAMPLES_DIR

    path = sorted((SAMPLES_DIR / "fashion-mnist").glob("*.png"))[0]
    return np.asarray(Image.open(path).convert("L"))


def _png(image: Image.Image, **kw) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, format="PNG", **kw)
    buf.seek(0)
    return Image.open(buf)


def test_every_bit_depth_and_path_gives_the_same_pixels(sample, tmp_path):
    wide = sample.astype(np.uint16) * 257
    Image.fromarray(wide).save(tmp_path / "g16.png")  # a 16-bit grey PNG (PIL mode I;16)
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    floats = sample.astype(np.float32) / 255
    same = [tmp_path / "g16.png", Image.open(tmp_path / "g16.png"), wide, Image.fromarray(floats), floats,
            floats.astype(np.float64), torch.from_numpy(floats.copy())[None], sample.astype(np.int64),
            Image.fromarray(sample.astype(np.int32)), torch.from_numpy(sample.copy())[None]]
    for item in same:
        got = to_uint8_array(item)
        assert got.shape == (28, 28, 1) and got.dtype == np.uint8, type(item)
        assert np.array_equal(got[..., 0], sample), type(item)
    # Pillow's own conversion clips 16-bit values at 255: what kdzoo must not do
    assert np.asarray(Image.open(tmp_path / "g16.png").convert("L")).mean() > sample.mean() + 30


def test_predictions_agree_across_input_paths(sample, tmp_path):
    model = zoo.load("resnet20.fmnist")
    Image.fromarray(sample).save(tmp_path / "g8.png")
    Image.fromarray(sample.astype(np.uint16) * 257).save(tmp_path / "g16.png")
    inputs = [tmp_path / "g8.png", tmp_path / "g16.png", Image.fromarray(sample.astype(np.float32) / 255),
              sample.astype(np.uint16) * 257]
    results = zoo.predict(model, inputs)
    assert len({(r["label"], round(r["score"], 5)) for r in results}) == 1


def test_transparency_exif_and_palettes_decode_as_a_viewer_shows_them():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255  # top half opaque red, bottom half fully transparent
    got = to_uint8_array(Image.fromarray(rgba))
    assert got.shape == (4, 4, 3)
    assert (got[:2] == [200, 0, 0]).all() and (got[2:] == 255).all()  # composited over white
    pal = _png(Image.fromarray(rgba[..., :3]).convert("P"), transparency=0)
    assert to_uint8_array(pal).shape == (4, 4, 3)
    # EXIF orientation 6 (rotate 90 degrees clockwise to display): a 2x3 stored image shows as 3x2
    stored = Image.fromarray(np.arange(6, dtype=np.uint8).reshape(2, 3) * 40)
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    stored.save(buf, format="PNG", exif=exif.tobytes())
    shown = to_uint8_array(Image.open(io.BytesIO(buf.getvalue())))
    assert shown.shape == (3, 2, 1)
    assert np.array_equal(shown[..., 0], np.rot90(np.asarray(stored), k=-1))
    assert to_uint8_array(np.ones((2, 2), bool)).max() == 255


@pytest.mark.parametrize("item, message", [
    (np.full((4, 4), -0.5, np.float32), r"in \[0, 1\]"),
    (np.full((4, 4), 3.0), r"in \[0, 1\]"),
    (np.full((4, 4), np.nan, np.float32), r"in \[0, 1\]"),
    (np.full((4, 4), 70000, np.int64), "8-bit .* or 16-bit"),
    (np.zeros((4, 4, 7), np.uint8), "not an image"),
    (torch.zeros(5, 4, 4), r"\(C, H, W\) with C in 1..4"),
    (np.zeros((4, 4), np.complex64), "dtype complex64"),
    ("no/such/file.png", "no image file"),
    (".", r"\. is a folder: give its image files"),
])
def test_inputs_that_are_not_images_are_refused_clearly(item, message):
    with pytest.raises((ValueError, FileNotFoundError, IsADirectoryError), match=message):
        to_uint8_array(item)


def test_unsupported_colour_spaces_are_refused_with_a_fix():
    with pytest.raises(ValueError, match="convert it to RGB"):
        to_uint8_array(Image.new("HSV", (4, 4)))


# ------------------------------------------------------------------ 2. prediction vs model mode
def test_predict_ignores_and_keeps_the_model_mode_and_state():
    model = zoo.load("resnet20.fmnist")
    expected = zoo.predict(model)
    model.train()
    before = copy.deepcopy(model.state_dict())
    assert zoo.predict(model) == expected
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics untouched
    model.eval()
    model.layer1.train()  # a mixed state comes back as it was
    zoo.predict(model)
    assert model.layer1.training and not model.training


def test_predict_on_a_detector_in_train_mode():
    det = zoo.load("frcnn-resnet20.fmnist-scenes")
    expected = zoo.predict(det)
    det.train()
    assert zoo.predict(det) == expected and det.training


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_predict_on_a_model_cast_to_half_precision(dtype):
    """``model.to(torch.bfloat16)`` used to fail in the first convolution (float32 input, bf16 weights):
    prediction now autocasts to the model's dtype and gives the float32 model's labels on the samples."""
    expected = zoo.predict("resnet20.fmnist")
    model = zoo.load("resnet20.fmnist").to(dtype)
    got = zoo.predict(model)
    assert [r["label"] for r in got] == [r["label"] for r in expected]
    assert all(isinstance(r["score"], float) for r in got)
    assert next(model.parameters()).dtype == dtype  # the model is left as it was
    det = zoo.load("frcnn-resnet20.fmnist-scenes").to(dtype)
    assert zoo.predict(det)[0]["detections"] is not None


def test_predict_refuses_a_model_of_mixed_dtypes_in_one_line():
    """Half a model cast to bfloat16 was a bare dtype mismatch from deep in the first layer that met the other
    half (the mmdet guard read the first parameter only)."""
    model = zoo.load("resnet20.fmnist")
    model.fc.to(torch.bfloat16)
    with pytest.raises(ValueError, match="the model's parameters and buffers mix bfloat16 and float32; cast the whole"):
        zoo.predict(model)
    model = zoo.load("resnet20.fmnist")
    model.bn1.running_mean = model.bn1.running_mean.half()  # float32 weights, a float16 BatchNorm buffer
    with pytest.raises(ValueError, match="mix float16 and float32"):
        zoo.predict(model)
    with pytest.raises(ValueError, match="the model is float64: .*cast it with model.float"):
        zoo.predict(zoo.load("resnet20.fmnist").double())


@pytest.mark.parametrize("name, output", [("lraspp-resnet8-cwd.fmnist-scenes", (1, 11, 12, 12)),
                                          ("face-resnet8.cjk-fonts", (2, 8))])
def test_predict_runs_a_model_without_parameters(name, output):
    """The segmentation and face adapters found the device from the first parameter: StopIteration for a
    parameter-free model (a fixed-function baseline wrapped with a card)."""
    loaded = zoo.load(name)

    class Fixed(torch.nn.Module):
        def forward(self, x):
            return torch.ones(x.shape[0], *output[1:])

    fixed = Fixed()
    fixed.card, fixed.preprocess = loaded.card, loaded.preprocess
    from zoo.tasks import get_adapter

    inputs = get_adapter(loaded.card.task).sample_inputs(loaded.card)[:2]
    assert len(zoo.predict(fixed, inputs)) == 2


def test_predictions_for_files_say_which_file_they_are_for():
    """Only the bundled samples' predictions had ``input``; one's own files' did not (a fresh-user pass)."""
    from zoo.tasks import get_adapter

    model = zoo.load("resnet8.fmnist")
    paths = [str(p) for p in get_adapter("classification").sample_inputs(model.card)[:2]]
    assert [r["input"] for r in zoo.predict(model, paths)] == paths
    assert zoo.predict(model, paths[0])[0]["input"] == paths[0]  # one path, not in a list
    assert "input" not in zoo.predict(model, [np.zeros((28, 28), np.uint8)])[0]  # an array has no name


def test_predict_needs_a_zoo_model():
    with pytest.raises(ValueError, match="kdzoo model"):
        zoo.predict(torch.nn.Linear(2, 2), [np.zeros((2, 2), np.uint8)])


def test_wrong_argument_types_are_type_errors_that_say_what_is_taken(tiny_model, tmp_path):
    for bad in (None, 3, b"resnet8.fmnist"):
        with pytest.raises(TypeError, match="zoo.load takes a zoo name, a checkpoint folder or a URL"):
            zoo.load(bad)
        with pytest.raises(TypeError, match="zoo.card takes a zoo name or a checkpoint folder"):
            zoo.card(bad)
    for bad in ("3", 2.5, True):
        with pytest.raises(TypeError, match="top_k must be an int"):
            zoo.predict("resnet8.fmnist", top_k=bad)
    assert len(zoo.predict("resnet8.fmnist", top_k=np.int64(2))[0]["top_k"]) == 2
    weights = hub.bundled_dir() / "resnet8.fmnist" / "model.safetensors"
    with pytest.raises(zoo.UnknownModelError, match="model.safetensors is a file: give the checkpoint folder"):
        zoo.load(weights)


def test_a_card_without_a_required_field_names_it(tiny_model, tmp_path):
    from conftest import make_card

    zoo.save(tiny_model, tmp_path / "c", make_card(tiny_model))
    readme = tmp_path / "c" / "README.md"
    readme.write_text(readme.read_text().replace("  task: classification\n", "", 1))
    with pytest.raises(ValueError, match="model card 'resnet8.unit' lacks the required field.s. task"):
        zoo.load(tmp_path / "c")


# ------------------------------------------------------------------ 3. wrapped models
@pytest.mark.parametrize("wrap", [torch.nn.DataParallel, lambda m: torch.compile(m, backend="eager"),
                                  lambda m: torch.nn.DataParallel(torch.compile(m, backend="eager"))])
def test_saving_a_wrapped_model_saves_the_model(tiny_model, tmp_path, wrap):
    from conftest import make_card

    tiny_model.card = make_card(tiny_model)
    zoo.save(wrap(tiny_model), tmp_path / "c")  # the card is found through the wrapper too
    loaded = zoo.load(tmp_path / "c")
    assert set(loaded.state_dict()) == set(tiny_model.state_dict())
    x = torch.randn(2, 1, 28, 28)
    assert torch.allclose(loaded(x), tiny_model(x))


def test_a_prefixed_state_dict_is_named_as_such():
    from zoo.hub import StateDictMismatchError, load_state_checked

    model = build_model("resnet8", in_channels=1)
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    with pytest.raises(StateDictMismatchError, match="differ only by the prefix 'module.'.*DataParallel"):
        load_state_checked(build_model("resnet8", in_channels=1), state)


def test_ddp_wrappers_are_unwrapped(tiny_model, tmp_path):
    import torch.distributed as dist

    from zoo.hub import unwrap

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert unwrap(torch.nn.parallel.DistributedDataParallel(tiny_model)) is tiny_model
    finally:
        dist.destroy_process_group()


# ------------------------------------------------------------------ 4. resume uses the checkpoint's config
@pytest.fixture(scope="module")
def data():
    return synthetic(64), synthetic(20, seed=1)


def _weights(out) -> dict[str, torch.Tensor]:
    return torch.load(out / STATE_FILE, map_location="cpu", weights_only=True)["module"]


def test_resume_without_the_flags_continues_the_run_as_started(data, tmp_path):
    started = {**SMALL, "warmup_epochs": 1.0, "T": 2.0}
    distill_classifier("kd", teacher(0), "resnet8", out_dir=tmp_path / "whole", settings={**started, "max_steps": 4},
                       data=data)
    distill_classifier("kd", teacher(0), "resnet8", out_dir=tmp_path / "cut", settings={**started, "max_steps": 3},
                       data=data)
    distill_classifier("kd", teacher(0), "resnet8", out_dir=tmp_path / "cut", settings={**SMALL, "max_steps": 4},
                       data=data, resume=True)  # without warmup_epochs and T
    whole, cut = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    assert all(torch.equal(whole[k], cut[k]) for k in whole)


@pytest.mark.parametrize("student, settings, message", [
    ("resnet14", {}, "student was 'resnet8', now 'resnet14'"),
    ("resnet8", {"optimizer": "adamw"}, "optimizer='sgd'.*optimizer='adamw'"),
    ("resnet8", {"T": 2.0}, r"terms\[kd\].params.T from 4.0 to 2.0"),
    ("resnet8", {"batch_size": 32}, "batch_size was 16, now 32"),
])
def test_resume_refuses_a_changed_run_naming_both_values(data, tmp_path, student, settings, message):
    distill_classifier("kd", teacher(0), "resnet8", out_dir=tmp_path, settings={**SMALL, "max_steps": 2}, data=data)
    state = (tmp_path / STATE_FILE).read_bytes()
    with pytest.raises((ResumeMismatchError, ValueError), match=message):
        distill_classifier("kd", teacher(0), student, out_dir=tmp_path, settings={**SMALL, **settings}, data=data,
                           resume=True)
    assert (tmp_path / STATE_FILE).read_bytes() == state  # nothing was trained or written


def test_resume_applies_and_reports_a_changed_lr(data, tmp_path, capsys):
    distill_classifier("kd", teacher(0), "resnet8", out_dir=tmp_path, settings={**SMALL, "max_steps": 2}, data=data)
    distill_classifier("kd", teacher(0), "resnet8", out_dir=tmp_path, settings={"lr": 0.01, "max_steps": 3},
                       data=data, resume=True)
    assert "lr changed from 0.1 to 0.01 (applied)" in capsys.readouterr().err
    assert json.loads((tmp_path / "run.json").read_text())["settings"]["lr"] == 0.01  # and kept for the next resume
    assert torch.load(tmp_path / STATE_FILE, weights_only=True)["config"]["lr"] == 0.01


# ------------------------------------------------------------------ 5. diverged runs
def _all_finite(out) -> bool:
    state = torch.load(out / STATE_FILE, map_location="cpu", weights_only=True)
    tensors = list(state["module"].values()) + [t for s in state["optimizer"]["state"].values() for t in s.values()
                                               if torch.is_tensor(t)]
    return all(torch.isfinite(t).all() for t in tensors if t.is_floating_point())


def test_a_checkpoint_right_before_a_divergence_is_not_kept(data, tmp_path, capsys):
    """The update just before a checkpoint is judged by the next step's loss: with a checkpoint at every
    step, lr 1000 ruins the weights at once, and the kept checkpoint must still be the sane one."""
    distill_classifier("kd", teacher(0), "resnet8", out_dir=tmp_path, settings={**SMALL, "epochs": 6, "max_steps": 8},
                       data=data)
    good = _weights(tmp_path)
    with pytest.raises(DivergedError):
        distill_classifier("kd", teacher(0), "resnet8", out_dir=tmp_path, data=data, resume=True,
                           settings={"lr": 1000.0, "checkpoint_every": 1})
    assert torch.load(tmp_path / STATE_FILE, weights_only=True)["step"] == 8
    assert all(torch.equal(good[k], v) for k, v in _weights(tmp_path).items())
    assert not (tmp_path / (STATE_FILE + ".pending")).exists()
    _, info = distill_classifier("kd", teacher(0), "resnet8", out_dir=tmp_path, settings={"lr": 0.01}, data=data,
                                 resume=True)
    assert info["finished"] and _all_finite(tmp_path)


def test_a_diverged_run_keeps_the_last_good_checkpoint_and_resumes_with_a_lower_lr(data, tmp_path, capsys):
    distill_classifier("kd", teacher(0), "resnet8", out_dir=tmp_path, settings={**SMALL, "epochs": 6, "max_steps": 8},
                       data=data)
    good = _weights(tmp_path)
    with pytest.raises(DivergedError, match="diverged. The last good checkpoint .* resume it with a lower lr"):
        distill_classifier("kd", teacher(0), "resnet8", out_dir=tmp_path, settings={"lr": 1000.0}, data=data, resume=True)
    assert all(torch.equal(good[k], v) for k, v in _weights(tmp_path).items())  # nothing ruined was saved
    assert _all_finite(tmp_path)
    # what the message advises is accepted (it was refused: "lr was 1000.0") and finishes the run
    _, info = distill_classifier("kd", teacher(0), "resnet8", out_dir=tmp_path, settings={"lr": 0.01}, data=data,
                                 resume=True)
    assert "lr changed from 0.1 to 0.01 (applied)" in capsys.readouterr().err  # from the good checkpoint's lr
    assert info["finished"] and _all_finite(tmp_path)


@pytest.mark.parametrize("lr", [20.0, 1000.0])
def test_a_run_that_diverges_from_the_start_stops_without_a_card(data, tmp_path, lr):
    with pytest.raises(NonFiniteLossError, match="start again with a lower lr|resume it with a lower lr"):
        distill_classifier("kd", teacher(0), "resnet8", out_dir=tmp_path, settings={**SMALL, "epochs": 6, "lr": lr},
                           data=data)
    assert not (tmp_path / "README.md").exists()
    if (tmp_path / STATE_FILE).exists():
        assert _all_finite(tmp_path)


def test_a_run_with_non_finite_buffers_gets_no_card(data, tmp_path):
    from conftest import make_card

    model = build_model("resnet8", in_channels=1)
    model.bn1.running_var.fill_(float("inf"))  # what lr=20 does while the training loss stays finite
    with pytest.raises(ValueError, match="NaN or inf .*bn1.running_var"):
        zoo.save(model, tmp_path / "c", make_card(model))
    assert not (tmp_path / "c" / "README.md").exists()
    big = build_model("resnet8", in_channels=1)
    big.fc.weight.data.fill_(1e6)  # finite in fp32, inf once cast to the zoo's fp16
    with pytest.raises(ValueError, match="after the cast to torch.float16"):
        zoo.save(big, tmp_path / "d", make_card(big), dtype=torch.float16)


def test_pack_members_with_non_finite_state_stop_alone(data):
    from zoo.pack import DistillerPack
    from zoo.distiller import Distiller
    from zoo.recipes import get_recipe

    train, _ = data
    example = train.batch(torch.arange(8))
    pack = DistillerPack({r: Distiller([build_model("resnet8", in_channels=1)], [teacher(0)], get_recipe(r), example)
                          for r in ("kd", "at")})
    pack.members["at"].students[0].bn1.running_var.fill_(float("nan"))
    from zoo.trainer import nonfinite_state

    bad = nonfinite_state(pack)
    with pytest.warns(RuntimeWarning, match="'at': its state is not finite"):
        assert pack.isolate_nonfinite(bad, 7) == []
    assert pack.failed == {"at": 7}


# ------------------------------------------------------------------ 6. micro-batches too small
@pytest.mark.parametrize("recipe, teachers, settings, needs", [
    ("one", None, {"batch_size": 4, "grad_accum": 4}, "recipe 'one' needs at least 2: its BatchNorm"),
    ("rkd", 1, {"batch_size": 4, "grad_accum": 2}, "recipe 'rkd' needs at least 3: its term 'rkd'"),
    ("spkd", 1, {"batch_size": 8, "grad_accum": 8}, "recipe 'spkd' needs at least 2"),
    ("irg", 1, {"batch_size": 4, "grad_accum": 2}, "recipe 'irg' needs at least 3: its term 'irg'"),
])
def test_too_small_micro_batches_are_refused_up_front(data, tmp_path, recipe, teachers, settings, needs):
    with pytest.raises(ValueError, match=needs + ".*--set batch_size"):
        distill_classifier(recipe, teacher(0) if teachers else None, "resnet8", out_dir=tmp_path,
                           settings={**SMALL, **settings}, data=data)
    assert not (tmp_path / STATE_FILE).exists()


def test_a_teacher_of_another_task_with_the_same_classes_is_refused_before_anything_is_written(data, tmp_path):
    import zoo

    detector = zoo.load("frcnn-resnet20.fmnist-scenes")  # it names the ten Fashion-MNIST classes too
    with pytest.raises(ValueError, match="teacher 'frcnn-resnet20.fmnist-scenes' is a detection model, "
                                         "not a classification one"):
        distill_classifier("kd", detector, "resnet8", out_dir=tmp_path / "run", settings=SMALL, data=data)
    assert not (tmp_path / "run").exists()


def test_fitnet_on_a_one_by_one_tap_is_refused_at_micro_batch_one(data, tmp_path):
    with pytest.raises(ValueError, match="recipe 'fitnet' needs at least 2: its BatchNorm layers"):
        distill_classifier("fitnet", teacher(0), "resnet8", out_dir=tmp_path, data=data,
                           settings={**SMALL, "batch_size": 4, "grad_accum": 4, "fitnet.student": "avgpool",
                                     "fitnet.teacher": "avgpool"})


def test_an_nlp_stage_resumes_only_with_the_settings_it_started_with(tmp_path):
    import argparse

    from zoo.nlp.pipeline import check_stage_settings

    started = argparse.Namespace(stages=["task"], out=str(tmp_path), time_budget=None, quiet=True, pred_temperature=1.0,
                                 task_lr=1e-4)
    check_stage_settings(tmp_path, "task", started)
    check_stage_settings(tmp_path, "task", argparse.Namespace(**{**vars(started), "time_budget": 5.0, "quiet": False}))
    with pytest.raises(SystemExit, match="--pred-temperature 1.0 then, 0.5 now"):
        check_stage_settings(tmp_path, "task", argparse.Namespace(**{**vars(started), "pred_temperature": 0.5}))


def test_a_new_run_never_overwrites_a_run_folder(data, tmp_path):
    from zoo.runs import RunExistsError

    distill_classifier("kd", teacher(0), "resnet8", out_dir=tmp_path, settings={**SMALL, "max_steps": 2}, data=data)
    state = (tmp_path / STATE_FILE).read_bytes()
    with pytest.raises(RunExistsError, match="already holds a run .*pass --resume"):
        distill_classifier("plain", None, "resnet14", out_dir=tmp_path, settings=SMALL, data=data)
    assert (tmp_path / STATE_FILE).read_bytes() == state


def test_resume_on_the_command_line_needs_only_the_folder(tmp_path, capsys):
    from zoo import cli

    started = ["distill", "classification", "--recipe", "kd", "--teacher", "resnet56.fmnist", "--student", "resnet8",
               "--train-subset", "64", "--set", "batch_size=32", "--set", "progress=false", "--epochs", "1",
               "--out", str(tmp_path)]
    assert cli.main(started + ["--max-steps", "1"]) == 0
    assert "continue with --resume (and a larger --max-steps, or none" in capsys.readouterr().out
    assert cli.main(["distill", "classification", "--out", str(tmp_path), "--resume"]) == 0  # the run's own settings
    assert zoo.card(str(tmp_path)).training.epochs == 1
    with pytest.raises(SystemExit, match="2"):  # nothing to resume: argparse's usage error
        cli.main(["distill", "classification", "--out", str(tmp_path / "none"), "--resume"])
    assert "--resume: there is no run in" in capsys.readouterr().err  # (no such folder)


def test_a_classification_time_budget_stops_resumably(tmp_path, capsys):
    """`zoo train classification` had no --time-budget (the other tasks' commands have one)."""
    from zoo import cli

    out = str(tmp_path / "r")
    assert cli.main(["train", "classification", "--arch", "resnet8", "--train-subset", "64", "--set", "batch_size=32",
                     "--set", "progress=false", "--epochs", "2", "--out", out, "--time-budget", "0.00001"]) == 0
    assert "stopped at step 1/4 (max_steps or the time budget); continue with --resume" in capsys.readouterr().out
    assert cli.main(["train", "classification", "--out", out, "--resume"]) == 0
    assert zoo.card(out).training.epochs == 2


def test_too_little_data_for_a_batch_says_what_to_change(data, tmp_path):
    with pytest.raises(ValueError, match="fewer than one batch of 128: lower batch_size"):
        distill_classifier("plain", None, "resnet8", out_dir=tmp_path / "run", settings={"epochs": 1, "progress": False},
                           data=data)
    assert not (tmp_path / "run").exists()  # refused before the run record is written
    with pytest.raises(ValueError, match="unknown architecture 'resnet9'"):
        distill_classifier("plain", None, "resnet9", out_dir=tmp_path / "arch", settings=SMALL, data=data)
    assert not (tmp_path / "arch").exists()


@pytest.mark.parametrize("subset, message", [(0, "train_subset must be a number of examples >= 1"),
                                             (10**7, "needs 1..")])
def test_a_training_subset_of_none_or_more_than_the_data_is_refused_before_anything_is_written(data, tmp_path, subset,
                                                                                                message):
    """0 is not "all" (it was, silently), and more examples than the split holds is not "the whole split"."""
    with pytest.raises(ValueError, match=re.escape(message)):
        distill_classifier("plain", None, "resnet8", out_dir=tmp_path / "run", train_subset=subset,
                           settings={"epochs": 1, "progress": False}, data=data)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("settings, message", [({"log_every": 0}, "log_every, checkpoint_every and eval_every must be >= 1"),
                                               ({"epochs": 1.5}, "epochs must be a whole number"),
                                               ({"warmup_epochs": -1}, "warmup_epochs must be >= 0"),
                                               # wrong types were bare TypeErrors from a comparison, or (NaN/inf lr)
                                               # passed and failed at the first step; a fractional max_steps never
                                               # stopped the run at a checkpoint although it said so
                                               ({"lr": None}, "lr must be a finite number .got NoneType None"),
                                               ({"lr": float("nan")}, "lr must be a finite number .got float nan"),
                                               ({"lr": float("inf")}, "lr must be a finite number"),
                                               ({"max_steps": "1"}, "max_steps must be a whole number .got str '1'"),
                                               ({"max_steps": 1.5}, "max_steps must be a whole number .got float 1.5"),
                                               ({"seed": None}, "seed must be a whole number"),
                                               ({"progress": "no"}, "progress must be true or false"),
                                               # these passed and misbehaved later (a negative gamma flips the
                                               # step schedule's sign) or failed late as bare TypeErrors
                                               ({"gamma": -0.1}, r"gamma \(the step schedule's decay factor\) must be > 0"),
                                               ({"milestones": ("half",)}, "milestones must be a list of finite numbers"),
                                               ({"milestones": (float("nan"),)}, "milestones must be a list of finite"),
                                               ({"milestones": (-0.5,)}, r"milestones must be fractions of training in \[0, 1\]"),
                                               ({"betas": None}, "betas must be two finite numbers .got None"),
                                               ({"betas": 0.5}, "betas must be two finite numbers .got 0.5"),
                                               ({"betas": "ab"}, "betas must be two finite numbers"),
                                               ({"compile_backend": 3}, "compile_backend must be a string .got int 3"),
                                               ({"momentum": -0.9}, r"momentum must be in \[0, 1\) and weight_decay >= 0"),
                                               ({"momentum": 7}, r"momentum must be in \[0, 1\)"),
                                               # a second breaker pass: bare OverflowErrors and late failures
                                               ({"lr": 10 ** 400}, "lr must be a finite number .got int 1000"),
                                               ({"milestones": [10 ** 400]}, "milestones must be a list of finite"),
                                               ({"milestones": {0.5: "a"}}, "milestones must be a list of finite"),
                                               ({"milestones": {0.9, 0.1}}, "milestones must be a list of finite"),
                                               ({"betas": bytearray(2)}, "betas must be two finite numbers"),
                                               ({"seed": 2 ** 64}, r"seed must be below 2\*\*63 in size"),
                                               ({"compile": "default", "compile_backend": "bogus"},
                                                "compile_backend must name a torch.compile backend .got 'bogus'; "
                                                "this torch has: .*inductor")])
def test_impossible_training_settings_are_refused(settings, message):
    from zoo.trainer import TrainConfig

    with pytest.raises(ValueError, match=message):
        TrainConfig(**settings)


def test_numpy_numbers_are_settings_and_become_plain_python_numbers():
    """numpy ints were refused for epochs only (and passed elsewhere, then broke the JSON of run.json)."""
    import json
    from dataclasses import asdict

    import numpy as np

    from zoo.trainer import TrainConfig, check_resume_config

    cfg = TrainConfig(epochs=np.int64(3), batch_size=np.int32(16), lr=np.float32(0.5), milestones=[np.float64(0.5)])
    assert (type(cfg.epochs), type(cfg.batch_size), type(cfg.lr), cfg.milestones) == (int, int, float, (0.5,))
    json.dumps(asdict(cfg))
    saved = {**asdict(cfg), "weight_decay": 0, "milestones": [0.5]}  # an int and a list as an older run saved them
    check_resume_config(saved, TrainConfig(**{**asdict(cfg), "weight_decay": 0.0}), "x")  # the same settings


def test_a_run_folder_that_is_a_file_is_named_as_such(tmp_path):
    """It was ``[Errno 17] File exists`` / ``[Errno 20] Not a directory`` from deep in the run."""
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(ValueError, match=r"the run folder \(out\) .*afile is a file, not a folder"):
        zoo.distill("resnet56.fmnist", "resnet8", "kd", out=blocker, max_steps=1)
    with pytest.raises(ValueError, match=r"the run folder \(out\) .*sub: .*afile is a file, not a folder"):
        zoo.distill("resnet56.fmnist", "resnet8", "kd", out=blocker / "sub", max_steps=1)
    assert blocker.read_text() == "x"


def test_a_run_folder_behind_a_dangling_or_looping_link_is_named_before_anything_runs(tmp_path):
    """They crashed late (FileExistsError from mkdir, RuntimeError from resolve) after the set-up work."""
    from zoo.io import check_output_folder

    (tmp_path / "dangling").symlink_to(tmp_path / "missing")
    (tmp_path / "loop-a").symlink_to("loop-b")
    (tmp_path / "loop-b").symlink_to("loop-a")
    for out in ("dangling", "dangling/sub", "loop-a", "loop-b/sub"):
        with pytest.raises(ValueError, match=r"is a symbolic link to .*which does not resolve to a folder"):
            check_output_folder("--out", tmp_path / out)
    (tmp_path / "missing").mkdir()
    check_output_folder("--out", tmp_path / "dangling" / "sub")  # a link to a folder is fine
    assert not (tmp_path / "dangling" / "sub").exists()


def test_a_recipe_that_is_not_a_name_is_a_type_error():
    with pytest.raises(TypeError, match="a recipe is named by a string .* got NoneType None"):
        zoo.distill("resnet56.fmnist", "resnet8", None, out="unused")


def test_saving_is_deterministic_and_refuses_integer_casts(tiny_model, tmp_path):
    from conftest import make_card

    card = make_card(tiny_model)
    a = zoo.save(tiny_model, tmp_path / "a", card, dtype=torch.float16).files[0].sha256
    b = zoo.save(tiny_model, tmp_path / "b", card, dtype=torch.float16).files[0].sha256
    assert a == b  # equal weights, equal bytes (the safetensors header is written in a fixed order)
    with pytest.raises(ValueError, match="not torch.int8"):
        zoo.save(tiny_model, tmp_path / "c", card, dtype=torch.int8)
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        zoo.predict(zoo.load(tmp_path / "a"), top_k=0)


def test_task_help_after_the_options_and_teacher_equals(capsys):
    from zoo import cli

    with pytest.raises(SystemExit, match="0"):
        cli.main(["train", "--help", "classification"])
    assert "usage: zoo train classification" in capsys.readouterr().out
    # --teacher=... is a teacher too: the task's own parser then says what else it needs (--out)
    assert cli.main(["distill", "detection", "--teacher=frcnn-resnet20.fmnist-scenes", "--arch", "frcnn-resnet20"]) == 2
    err = capsys.readouterr().err
    assert "needs --teacher" not in err and "required: --out" in err
