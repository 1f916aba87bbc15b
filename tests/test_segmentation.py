"""The segmentation task: losses against the reference code, data checks, models, evaluation, runs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zoo.segmentation import losses
from zoo.segmentation.data import IGNORE_INDEX, SegmentationDataset, load_mask_folder
from zoo.segmentation.evaluate import evaluate


def _inputs():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 5, 8, 8, generator=g)
    t = torch.randn(2, 5, 8, 8, generator=g)
    sf = torch.randn(2, 6, 8, 8, generator=g)
    tf = torch.randn(2, 10, 8, 8, generator=g)
    return s.double(), t.double(), sf.double(), tf.double()


# ---------------------------------------------------------------- golden values (float64 on the inputs above)
def test_pixel_wise_matches_the_official_skd_code():
    """irfanICMLL/structure_knowledge_distillation, utils/criterion.py (commit 3914ec7b), CriterionPixelWise:
    -sum softmax(T) log_softmax(S) over all N*H*W pixels / (W*H) = 4.00894967370283. Ours is the paper's
    mean per-pixel KL: official = N * (ours + mean teacher entropy)."""
    s, t, _, _ = _inputs()
    ours = losses.pixel_wise_loss(s, t)
    entropy = -(t.softmax(1) * t.log_softmax(1)).sum(1).mean()
    assert float(2 * (ours + entropy)) == pytest.approx(4.00894967370283, rel=1e-10)
    assert float(losses.pixel_wise_loss(t, t)) == pytest.approx(0.0, abs=1e-12)


def test_pair_wise_matches_the_official_skd_code():
    """Same repo, CriterionPairWiseforWholeFeatAfterPool(scale=0.5) (utils/utils.py sim_dis_compute)."""
    _, _, sf, tf = _inputs()
    assert float(losses.pair_wise_loss(sf, tf, scale=0.5)) == pytest.approx(0.00189471219618578, rel=1e-9)
    assert float(losses.pair_wise_loss(sf, tf[:, :6], scale=0.5)) == pytest.approx(0.00316666350455573, rel=1e-9)
    # beta x beta nodes by adaptive pooling: the same nodes as kernel 4 on an 8 x 8 map
    assert float(losses.pair_wise_loss(sf, tf, nodes=2)) == pytest.approx(0.00189471219618578, rel=1e-9)


def test_cwd_matches_mmrazor_and_torchdistiller():
    """open-mmlab/mmrazor mmrazor/models/losses/cwd.py (4b5ddaf6) ChannelWiseDivergence(tau=4, loss_weight=1)
    = 1.03242511577463, and irfanICMLL/TorchDistiller SemSeg-distill/utils/criterion.py CriterionCWD
    ('channel', 'kl', 4.0) gives the same; tau=1: 1.09230612854231 (MMRazor's seg config: x5 = 5.46153064271154)."""
    s, t, _, _ = _inputs()
    assert float(losses.cwd_loss(s, t, 4.0)) == pytest.approx(1.03242511577463, rel=1e-10)
    assert float(5 * losses.cwd_loss(s, t, 1.0)) == pytest.approx(5.46153064271154, rel=1e-10)
    with pytest.raises(ValueError, match=r"\(2, 8, 6, 6\).*\(2, 16, 6, 6\).*cwd.connector=true"):  # channels: the connector
        losses.cwd_loss(torch.randn(2, 8, 6, 6), torch.randn(2, 16, 6, 6))
    with pytest.raises(ValueError, match=r"spatial size \(tap layers of the same stride, or resize\)$"):
        losses.cwd_loss(torch.randn(2, 8, 6, 6), torch.randn(2, 8, 3, 3))
    # half precision is computed in float32
    assert float(losses.cwd_loss(s.half(), t.half(), 4.0)) == pytest.approx(1.0324, rel=1e-2)


def test_losses_refuse_maps_that_are_not_spatial_or_differ():
    s, t, _, _ = _inputs()
    with pytest.raises(ValueError, match="spatial maps"):
        losses.pixel_wise_loss(s.flatten(2), t.flatten(2))
    with pytest.raises(ValueError, match=r"\(2, 5, 8, 8\).*\(2, 5, 4, 4\)"):
        losses.cwd_loss(s, t[:, :, :4, :4])
    with pytest.raises(ValueError, match="pool to"):
        losses.pair_wise_loss(s, t[:, :, :3, :3], scale=0.5)
    with pytest.raises(ValueError, match="scale"):
        losses.pool_nodes(s, 0.0)


class _LinearCritic(nn.Module):
    """D(I, x) = <w, x>: its gradient norm is |w| everywhere."""

    def __init__(self, norm: float) -> None:
        super().__init__()
        w = torch.randn(5 * 8 * 8)
        self.w = nn.Parameter(w / w.norm() * norm)

    def forward(self, image, x):
        return x.flatten(1) @ self.w


@pytest.mark.parametrize("norm, penalty", [(1.0, 0.0), (3.0, 4.0)])
def test_gradient_penalty_is_wgan_gp(norm, penalty):
    """Gulrajani et al. 2017, eq. 3: E[(|grad D| - 1)^2]."""
    s, t, _, _ = _inputs()
    gp = losses.gradient_penalty(_LinearCritic(norm).double(), None, t, s)
    assert float(gp.detach()) == pytest.approx(penalty, abs=1e-5)


def test_holistic_terms_train_their_own_side_only():
    s, t, _, _ = _inputs()
    s, t = s.float().requires_grad_(), t.float()
    critic = losses.HolisticDiscriminator(5, map_size=8)
    image = torch.rand(2, 3, 32, 32)
    losses.holistic_loss(critic, image, s).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert all(p.grad is None for p in critic.parameters())
    s.grad = None
    losses.critic_loss(critic, image, s, t).backward()
    assert s.grad is None and all(p.grad is not None for p in critic.parameters() if p.requires_grad)


# ---------------------------------------------------------------- data
def _dataset(**kw):
    images = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    masks = torch.zeros(2, 8, 8, dtype=torch.uint8)
    args = dict(name="toy", split="test", images=images, masks=masks, classes=("bg", "a", "b"))
    args.update(kw)
    return SegmentationDataset(**args)


def test_dataset_refuses_bad_masks_sizes_and_empty_splits():
    bad = torch.zeros(2, 8, 8, dtype=torch.uint8)
    bad[0, 0, 0] = 7
    with pytest.raises(ValueError, match=r"toy/test.*values \[7\] exceed the 3 classes"):
        _dataset(masks=bad)
    with pytest.raises(ValueError, match=r"\(2, 3, 8, 8\) and masks \(2, 8, 6\)"):
        _dataset(masks=torch.zeros(2, 8, 6, dtype=torch.uint8))
    with pytest.raises(ValueError, match="empty"):
        _dataset(images=torch.zeros(0, 3, 8, 8, dtype=torch.uint8), masks=torch.zeros(0, 8, 8, dtype=torch.uint8))
    ignore = torch.full((2, 8, 8), IGNORE_INDEX, dtype=torch.uint8)
    with pytest.raises(ValueError, match="every pixel of every mask is 255"):
        _dataset(masks=ignore)
    ignore[0, 0, 0] = 1
    assert len(_dataset(masks=ignore)) == 2  # 255 is "ignore", not a class
    with pytest.raises(ValueError, match="distinct names"):
        _dataset(classes=("bg", "a", "a"))


def test_scene_masks_come_from_the_detection_generator():
    from zoo.detection.data import make_scenes
    from zoo.segmentation.data import SCENE_CLASSES

    scenes = make_scenes("test", 12, progress=False)
    assert scenes.masks.shape == (12, 96, 96)
    for mask, labels in zip(scenes.masks, scenes.labels):
        present = set(mask.unique().tolist()) - {0}
        assert present and present <= set(labels.tolist())  # every pasted item's class, nothing else
    data = SegmentationDataset("s", "test", scenes.images, scenes.masks, SCENE_CLASSES)
    batch = data.batch(torch.arange(4), torch.Generator().manual_seed(1), augment=True)
    flipped = ~torch.equal(batch["inputs"], data.batch(torch.arange(4))["inputs"])
    assert batch["labels"].dtype == torch.long and flipped
    # a flipped image keeps its mask aligned: flipping both back gives the stored pair
    for k in range(4):
        image = (batch["inputs"][k] * 255).round().to(torch.uint8)
        if not torch.equal(image, data.images[k]):
            assert torch.equal(image.flip(-1), data.images[k]) and torch.equal(batch["labels"][k].flip(-1), data.masks[k].long())


def test_mask_folders_name_the_bad_file(tmp_path):
    from PIL import Image

    for split in ("images", "masks"):
        (tmp_path / split).mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    Image.fromarray(np.ones((8, 8), np.uint8)).save(tmp_path / "masks" / "a.png")
    Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(tmp_path / "images" / "b.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "masks" / "b.png")
    with pytest.raises(ValueError, match=r"b.png is 10x8 .* its mask .*b.png is 8x8"):
        load_mask_folder(tmp_path / "images", tmp_path / "masks", ["bg", "a"])
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / "b.png")
    Image.fromarray(np.full((8, 8), 9, np.uint8)).save(tmp_path / "masks" / "b.png")
    with pytest.raises(ValueError, match=r"masks/b.png: values \[9\] exceed the 2 classes"):
        load_mask_folder(tmp_path / "images", tmp_path / "masks", ["bg", "a"])
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(tmp_path / "masks" / "b.png")
    data = load_mask_folder(tmp_path / "images", tmp_path / "masks", ["bg", "a"], size=4)
    assert data.images.shape == (2, 3, 4, 4) and set(data.masks.unique().tolist()) == {1, 255}
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "masks" / "b.png")
    with pytest.raises(ValueError, match="index image"):
        load_mask_folder(tmp_path / "images", tmp_path / "masks", ["bg", "a"])


# ---------------------------------------------------------------- evaluation
class _Oracle(nn.Module):
    """Predicts the stored masks of a dataset (by image content) with one wrong class on ignored pixels."""

    def __init__(self, data: SegmentationDataset) -> None:
        super().__init__()
        self.data, self.dummy = data, nn.Parameter(torch.zeros(()))

    def forward(self, x):
        masks = self.data.masks.long()[: len(x)].clone()
        masks[masks == IGNORE_INDEX] = 1
        return torch.nn.functional.one_hot(masks, self.data.num_classes).permute(0, 3, 1, 2).float()


def test_miou_ignores_255_and_leaves_absent_classes_out():
    masks = torch.zeros(2, 8, 8, dtype=torch.uint8)
    masks[:, :4] = 2
    masks[:, 0, 0] = IGNORE_INDEX  # predicted as class 1: ignored, so class 1 stays absent
    data = _dataset(masks=masks, classes=("bg", "a", "b", "c"))
    metrics = evaluate(_Oracle(data), data)
    assert metrics["mIoU"] == 1.0 and metrics["pixel_acc"] == 1.0
    assert metrics["iou"]["a"] is None and metrics["iou"]["c"] is None


# ---------------------------------------------------------------- models, runs, prediction
def test_teacher_backbone_is_torchvisions_imagenet_mobilenet_v2():
    from torchvision.models import mobilenet_v2

    from zoo.segmentation.models import MOBILENET_V2_SHA256, build_segmenter, load_mobilenet_v2_imagenet

    plain = mobilenet_v2()
    assert load_mobilenet_v2_imagenet(plain) == MOBILENET_V2_SHA256
    teacher = build_segmenter("lraspp-mobilenetv2", 11, pretrained_backbone=True)
    assert torch.equal(teacher.net.backbone["0"][0].weight, plain.features[0][0].weight)
    outputs = {}
    teacher.net.classifier.register_forward_hook(lambda m, i, o: outputs.setdefault("logits", o))
    assert teacher(torch.rand(1, 3, 96, 96)).shape == (1, 11, 96, 96)
    assert outputs["logits"].shape == (1, 11, 24, 24)  # stride 4, as the students'
    with pytest.raises(ValueError, match="unknown segmentation architecture"):
        build_segmenter("deeplab-x")


def test_spatial_terms_refuse_a_model_without_spatial_output():
    from zoo.classification.models import build_model
    from zoo.distiller import Distiller
    from zoo.recipes import get_recipe
    from zoo.tasks import load_all_recipes

    load_all_recipes()
    recipe = get_recipe("pixel-kd")
    recipe.terms[0].student = recipe.terms[0].teacher = "logits"
    nets = [build_model("resnet8", num_classes=3, in_channels=3) for _ in range(2)]
    batch = {"inputs": torch.rand(4, 3, 32, 32), "labels": torch.zeros(4, dtype=torch.long)}
    with pytest.raises(ValueError, match=r"needs a spatial \(N, C, H, W\) student map, got \(4, 3\)"):
        Distiller(nets[0], nets[1], recipe, batch)


def test_skd_trains_its_critic_in_its_own_stage_and_resumes(tmp_path):
    """skd end to end on 16 scenes: the critic has its own optimizer (lr x 0.04) and a resumed run
    continues exactly as an uninterrupted one."""
    import zoo
    from zoo.segmentation.adapter import ADAPTER
    from zoo.segmentation.data import load_scenes
    from zoo.segmentation.models import build_segmenter

    train = load_scenes("test", 16)
    test = train.subset(8)
    torch.manual_seed(0)
    teacher = build_segmenter("lraspp-resnet8", 11)
    settings = {"epochs": 2, "batch_size": 8, "progress": False, "checkpoint_every": 1, "amp": "off"}
    run = ADAPTER.distill(teacher, "lraspp-resnet8", "skd", data=(train, test), out=tmp_path / "a", settings=settings)
    assert run.finished and set(run.card.metrics) == {"mIoU", "pixel_acc"}
    state = torch.load(tmp_path / "a" / "train_state.pt", weights_only=True)
    assert set(state["optimizers"]) == {"main", "critic"}
    lr = {k: o["param_groups"][0]["lr"] for k, o in state["optimizers"].items()}
    assert lr["critic"] == pytest.approx(0.04 * lr["main"])  # SKD: critic 4e-4 beside the student's 1e-2
    log = (tmp_path / "a" / "log.csv").read_text().splitlines()
    assert "critic/holistic" in log[0] and "main/pixel_kd" in log[0]
    # stop after 2 of 4 steps, resume: the same weights as the run that never stopped
    part = ADAPTER.distill(teacher, "lraspp-resnet8", "skd", data=(train, test), out=tmp_path / "b",
                           settings={**settings, "max_steps": 2})
    assert not part.finished
    resumed = ADAPTER.distill(teacher, "lraspp-resnet8", "skd", data=(train, test), out=tmp_path / "b",
                              settings={k: v for k, v in settings.items()}, resume=True)
    assert resumed.finished
    for (k, a), b in zip(run.student.state_dict().items(), resumed.student.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), k


def test_load_predict_and_save_a_trained_run(tmp_path, capsys):
    """A tiny trained run loads with zoo.load and predicts masks at the input's own size."""
    from PIL import Image

    import zoo
    from zoo.segmentation.adapter import ADAPTER
    from zoo.segmentation.data import load_scenes

    train = load_scenes("test", 16)
    run = ADAPTER.distill(None, "lraspp-resnet8", None, data=(train, train), out=tmp_path / "run",
                          settings={"epochs": 1, "batch_size": 8, "progress": False})
    model = zoo.load(tmp_path / "run")
    path = tmp_path / "odd.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(path)
    (pred,) = zoo.predict(model, [str(path)], top_k=3)
    assert pred["mask"].shape == (50, 70) and pred["mask"].dtype == torch.uint8
    assert sum(pred["classes"].values()) == pytest.approx(1.0, abs=1e-5)
    assert len(pred["top_k"]) <= 3 and pred["label"] in model.card.labels
    assert model.card.dataset == "fmnist-scenes" and model.card.labels[0] == "background"

    # zoo predict --save: the mask (a palette PNG holding the indices) and an overlay; --json holds the mask
    import json

    from zoo.cli import main
    from zoo.segmentation.data import read_mask

    assert main(["predict", str(tmp_path / "run"), str(path), "--save", str(tmp_path / "out"), "--json"]) == 0
    printed = capsys.readouterr().out
    (shown,) = json.loads(printed)["predictions"]
    assert len(printed.splitlines()) < 50 + 40  # a row of the mask per line, not a number per line
    saved = read_mask(tmp_path / "out" / "odd.mask.png")
    assert np.array_equal(saved, pred["mask"].numpy()) and np.array_equal(np.array(shown["mask"]), saved)
    assert Image.open(tmp_path / "out" / "odd.overlay.png").size == (70, 50)
    assert shown["saved"] == [str(tmp_path / "out" / "odd.mask.png"), str(tmp_path / "out" / "odd.overlay.png")]


def test_a_mask_of_more_than_256_classes_is_saved_as_16_bit_indices(tmp_path):
    """300 classes failed in the palette PNG (an IndexError); the indices now go in a 16-bit grey PNG."""
    from PIL import Image

    from zoo.segmentation.adapter import ADAPTER

    path = tmp_path / "wide.png"
    Image.fromarray(np.zeros((6, 50, 3), np.uint8)).save(path)
    mask = torch.arange(300).reshape(6, 50) % 300
    mask_png, overlay = ADAPTER.save_prediction({"mask": mask}, str(path), tmp_path / "out")
    assert np.array_equal(np.array(Image.open(mask_png)), mask.numpy()) and Image.open(overlay).size == (50, 6)
    small, _ = ADAPTER.save_prediction({"mask": (mask % 21).to(torch.uint8)}, str(path), tmp_path / "out")
    assert Image.open(small).mode == "P"  # up to 256 classes: the palette PNG, as before
    few, _ = ADAPTER.save_prediction({"mask": mask % 21}, str(path), tmp_path / "out")  # a 300-class model's image
    assert Image.open(few).mode != "P"  # of few classes: the same format as its other masks (it was chosen per image)


def test_predict_save_is_refused_where_a_task_renders_nothing(tmp_path, capsys):
    from zoo.cli import main

    assert main(["predict", "resnet20.fmnist", "--save", str(tmp_path)]) == 2
    assert "does not save predictions" in capsys.readouterr().err and not any(tmp_path.iterdir())


def test_real_nuclei_masks_load_with_their_license():
    from zoo.segmentation.adapter import ADAPTER
    from zoo.segmentation.data import NUCLEI_LICENSE, load_nuclei

    train, test = ADAPTER.datasets("stardist-nuclei")
    assert train.images.shape == (48, 3, 64, 64) and test.images.shape == (16, 3, 64, 64)
    assert set(train.masks.unique().tolist()) == {0, 1} and 0.1 < float(test.masks.float().mean()) < 0.4
    assert not any(torch.equal(a, b) for a in test.images[:4] for b in train.images)  # other tiles
    assert ADAPTER.card_fields(train)["extra"]["data_license"] == NUCLEI_LICENSE
    assert load_nuclei("test", tile=128).images.shape == (4, 3, 128, 128)
    with pytest.raises(ValueError, match="split"):
        load_nuclei("val")


@pytest.mark.slow
def test_the_segmentation_benchmark_end_to_end(tmp_path):
    """benchmarks/segmentation_kd.py at toy size: teacher, protocol table over two seeds, the figure (~90 s)."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "segmentation_kd.py"
    spec = importlib.util.spec_from_file_location("segmentation_kd", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = ["--out", str(tmp_path / "run"), "--results", str(tmp_path / "res"), "--train-subset", "16",
            "--teacher-set", "epochs=1", "--teacher-set", "batch_size=8", "--set", "epochs=1", "--set", "batch_size=8",
            "--seeds", "0", "1", "--recipes", "cwd", "skd"]
    assert bench.main(args) == 0
    (table,) = (tmp_path / "res").glob("twins-*.json")
    record = json.loads(table.read_text())
    assert len(record["seeds"]) == 2 and set(record["summary"]) == {"twin", "cwd", "skd"}
    assert (tmp_path / "res" / "segmentation-fmnist-scenes.png").stat().st_size > 10_000


def test_a_pack_refuses_members_with_an_adversary_stage():
    from zoo.distiller import Distiller
    from zoo.pack import DistillerPack
    from zoo.recipes import get_recipe
    from zoo.segmentation.data import load_scenes
    from zoo.segmentation.models import build_segmenter
    from zoo.tasks import load_all_recipes

    load_all_recipes()
    batch = load_scenes("test", 4).batch(torch.arange(4))
    teacher = build_segmenter("lraspp-resnet8")
    skd = Distiller(build_segmenter("lraspp-resnet8"), teacher, get_recipe("skd"), batch)
    cwd = Distiller(build_segmenter("lraspp-resnet8"), teacher, get_recipe("cwd"), batch)
    assert skd.stages() == ("main", "critic") and cwd.stages() == ("main",)
    critic = {id(p) for p in skd.terms["holistic"].critic.parameters()}
    assert critic == {id(p) for p in skd.stage_parameters("critic")}
    assert not critic & {id(p) for p in skd.stage_parameters("main")}
    assert DistillerPack({"cwd": cwd})  # no adversary: fine
    with pytest.raises(ValueError, match=r"members \['skd'\] train an adversary"):
        DistillerPack({"cwd": cwd, "skd": skd})


# ---------------------------------------------------------------- what a breaker found (one test per kind)
@pytest.mark.parametrize("recipe, setting, message", [
    ("cwd", {"temperature": 0.0}, "temperature must be > 0"),
    ("pixel-kd", {"temperature": -1.0}, "temperature must be > 0"),
    ("pair-kd", {"nodes": 0}, r"nodes \(beta\) must be a whole number in \[1, 6\]"),
    ("pair-kd", {"nodes": 50}, r"in \[1, 6\]"),
    ("pair-kd", {"nodes": 1.5}, "whole number"),
    ("skd", {"lr_scale": -1.0}, "lr_scale must be > 0"),
    ("skd", {"gp_weight": -5.0}, "gp_weight >= 0"),
])
def test_settings_that_cannot_work_fail_when_the_recipe_is_built(recipe, setting, message):
    from zoo.distiller import Distiller
    from zoo.recipes import get_recipe
    from zoo.segmentation.data import load_scenes
    from zoo.segmentation.models import build_segmenter
    from zoo.tasks import load_all_recipes

    load_all_recipes()
    r = get_recipe(recipe)
    term = r.terms[-1] if recipe == "skd" else r.terms[0]
    term.params.update(setting)
    batch = load_scenes("test", 2).batch(torch.arange(2))
    with pytest.raises(ValueError, match=message):
        Distiller(build_segmenter("lraspp-resnet8"), build_segmenter("lraspp-mobilenetv2"), r, batch)


def test_logit_terms_refuse_a_teacher_of_other_classes():
    from zoo.distiller import Distiller
    from zoo.recipes import get_recipe
    from zoo.segmentation.data import load_scenes
    from zoo.segmentation.models import build_segmenter
    from zoo.tasks import load_all_recipes

    load_all_recipes()
    batch = load_scenes("test", 2).batch(torch.arange(2))
    for recipe in ("cwd", "pixel-kd", "skd"):
        with pytest.raises(ValueError, match=r"\(2, 11, 24, 24\).*\(2, 2, 24, 24\)"):
            Distiller(build_segmenter("lraspp-resnet8"), build_segmenter("lraspp-resnet8", 2), get_recipe(recipe), batch)
    get_recipe("cwd")  # features of other widths go through a connector only when asked:
    r = get_recipe("cwd")
    r.terms[0].student = r.terms[0].teacher = "net.classifier.cbr"
    r.terms[0].params["connector"] = True
    with pytest.raises(ValueError, match="a connector maps channels, not sizes"):
        Distiller(build_segmenter("lraspp-resnet8"), build_segmenter("lraspp-mobilenetv2"), r, batch)


def test_masks_are_read_as_their_images_are(tmp_path):
    from PIL import Image

    from zoo.segmentation.data import read_classes, read_mask

    # EXIF orientation 6 (rotate 90 clockwise) turns the mask as read_image turns the image
    image = np.zeros((4, 6, 3), np.uint8)
    image[:, :3] = 255
    mask = np.zeros((4, 6), np.uint8)
    mask[:, :3] = 1
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(image).save(tmp_path / "i.png", exif=exif)
    Image.fromarray(mask).save(tmp_path / "m.png", exif=exif)
    from zoo.tasks import read_image

    turned = read_image(tmp_path / "i.png", 3)[0].numpy() > 0
    assert np.array_equal(turned, read_mask(tmp_path / "m.png") == 1) and turned.shape == (6, 4)
    Image.fromarray(np.array([[-1, 2]], np.int32)).save(tmp_path / "neg.tif")
    with pytest.raises(ValueError, match=r"neg.tif: mask values from -1 to 2"):
        read_mask(tmp_path / "neg.tif")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"bad.png: not a readable mask"):
        read_mask(tmp_path / "bad.png")
    Image.fromarray(np.array([[0, 255]], np.uint8)).convert("1").save(tmp_path / "bits.png")
    assert read_mask(tmp_path / "bits.png").tolist() == [[0, 1]]
    (tmp_path / "c.txt").write_text("\ufeffbg\nthing\n\n", encoding="utf-8")
    assert read_classes(tmp_path / "c.txt") == ["bg", "thing"]
    (tmp_path / "c.txt").write_text("bg\n\nthing\n")
    with pytest.raises(ValueError, match="line 2 is blank"):
        read_classes(tmp_path / "c.txt")
    (tmp_path / "c.txt").write_text("bg\nthing\nthing\n")
    with pytest.raises(ValueError, match=r"repeated: \['thing'\]"):
        read_classes(tmp_path / "c.txt")


def test_one_mask_per_image_stem(tmp_path):
    from PIL import Image

    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    for suffix in (".png", ".jpg"):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "images" / f"0{suffix}")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "masks" / "0.png")
    with pytest.raises(ValueError, match="two images for '0'"):
        load_mask_folder(tmp_path / "images", tmp_path / "masks", ["bg", "a"])
    with pytest.raises(TypeError, match="list of names"):
        load_mask_folder(tmp_path / "images", tmp_path / "masks", "abc")


def test_runs_refuse_what_would_be_silently_wrong(tmp_path, capsys):
    """A finished run resumed keeps its card; a teacher whose weights changed is refused on resume; a
    train subset of 0 is refused; --save into a file is an error, not a traceback."""
    import shutil

    from zoo.cli import main
    from zoo.segmentation.adapter import ADAPTER
    from zoo.segmentation.data import load_scenes

    data = (load_scenes("test", 16), load_scenes("test", 16))
    fast = {"epochs": 1, "batch_size": 8, "progress": False}
    ADAPTER.distill(None, "lraspp-resnet8", None, data=data, out=tmp_path / "t", settings=fast)
    card = (tmp_path / "t" / "README.md").read_text()
    again = ADAPTER.distill(None, "lraspp-resnet8", None, data=data, out=tmp_path / "t", settings={"lr": 0.5},
                            resume=True)
    assert again.finished and (tmp_path / "t" / "README.md").read_text() == card
    with pytest.raises(ValueError, match="train_subset must be"):
        ADAPTER.distill(None, "lraspp-resnet8", None, data=data, out=tmp_path / "z", settings=fast, train_subset=0)
    assert not (tmp_path / "z").exists()
    shutil.copytree(tmp_path / "t", tmp_path / "teacher")
    ADAPTER.distill(str(tmp_path / "teacher"), "lraspp-resnet8", "cwd", data=data, out=tmp_path / "kd",
                    settings={**fast, "max_steps": 1})
    # the same teacher folder written another way resumes (the folder, not its spelling, is the teacher)
    resumed = ADAPTER.distill(f"{tmp_path}/./teacher/", "lraspp-resnet8", "cwd", data=data, out=tmp_path / "kd",
                              settings={**fast, "max_steps": 1}, resume=True)
    assert not resumed.finished
    ADAPTER.distill(None, "lraspp-resnet8", None, data=data, out=tmp_path / "other", settings={**fast, "seed": 1})
    shutil.rmtree(tmp_path / "teacher")
    shutil.copytree(tmp_path / "other", tmp_path / "teacher")
    with pytest.raises(ValueError, match="teacher's weights changed"):
        ADAPTER.distill(str(tmp_path / "teacher"), "lraspp-resnet8", "cwd", data=data, out=tmp_path / "kd",
                        settings=fast, resume=True)
    (tmp_path / "afile").write_text("x")
    assert main(["predict", str(tmp_path / "t"), "--save", str(tmp_path / "afile")]) == 2
    assert "afile is a file, not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("recipe, term", [("pearson-kd", "pearson"), ("mgd", "mgd")])
def test_dense_feature_recipes_train_and_resume_exactly(tmp_path, recipe, term):
    """PKD and MGD on the last features of a teacher with other channels (the MobileNetV2 LR-ASPP, 128)
    than the student's (64): both train, and a run stopped and resumed (MGD's random masks included)
    ends with the weights of one that never stopped."""
    from zoo.segmentation.adapter import ADAPTER
    from zoo.segmentation.data import load_scenes
    from zoo.segmentation.models import build_segmenter

    train = load_scenes("test", 16)
    test = train.subset(8)
    torch.manual_seed(0)
    teacher = build_segmenter("lraspp-mobilenetv2", 11)
    settings = {"epochs": 2, "batch_size": 8, "progress": False, "checkpoint_every": 1, "amp": "off"}
    run = ADAPTER.distill(teacher, "lraspp-resnet8", recipe, data=(train, test), out=tmp_path / "a", settings=settings)
    assert run.finished and f"{term}" in (tmp_path / "a" / "log.csv").read_text().splitlines()[0]
    part = ADAPTER.distill(teacher, "lraspp-resnet8", recipe, data=(train, test), out=tmp_path / "b",
                           settings={**settings, "max_steps": 2})
    assert not part.finished
    resumed = ADAPTER.distill(teacher, "lraspp-resnet8", recipe, data=(train, test), out=tmp_path / "b",
                              settings=dict(settings), resume=True)
    for (k, a), b in zip(run.student.state_dict().items(), resumed.student.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), k


def test_a_run_stopped_by_max_steps_says_so_and_how_to_go_on(tmp_path, capsys):
    """A Python caller of zoo.train whose run stops early (max_steps) is told where it stopped and how to resume."""
    import zoo

    run = zoo.train("segmentation", "lraspp-resnet8", out=tmp_path / "r", train_subset=32,
                    settings={"batch_size": 16, "epochs": 1, "max_steps": 1, "progress": False})
    assert not run.finished and run.card is None
    out = capsys.readouterr().out
    assert "stopped at step 1 of 2" in out and "resume=True" in out


@pytest.mark.parametrize("size", [(96, 96), (301, 45), (20, 700), (7, 5)])
def test_the_mask_made_in_strips_equals_full_size_bilinear_logits(size):
    """`upsampled_argmax` resizes the logits a tile at a time (a 12-megapixel photo needed 2.2 GB at once, a
    very wide one as much for a strip of rows): the mask and each class's confidence equal those of F.interpolate on the whole image, up to float rounding."""
    from zoo.segmentation.adapter import upsampled_argmax

    torch.manual_seed(0)
    logits = torch.randn(11, 24, 24) * 3
    full = F.interpolate(logits[None], size=size, mode="bilinear", align_corners=False).softmax(1)[0]
    confidence, expected = full.max(0)
    want = torch.bincount(expected.flatten(), weights=confidence.flatten().double(), minlength=11)
    for budget in (1 << 21, 11 * 13):  # strips of 7 rows; tiles of 13 columns too (a very wide image's)
        mask, sums = upsampled_argmax(logits, *size, rows=7, budget=budget)
        assert mask.shape == size and mask.dtype == torch.uint8
        assert (mask.long() == expected).float().mean() > 0.999
        assert torch.allclose(sums, want, rtol=1e-3, atol=1e-2)


def test_predict_reads_images_as_model_preprocess_does():
    """The mask `zoo.predict` gives for an image of another size is the model's output on `model.preprocess`
    (the input an exported ONNX graph is documented to take), resized back; predict resized with torch's
    antialiased bilinear and disagreed on a few pixels."""
    import zoo
    from PIL import Image

    from zoo.segmentation.adapter import SAMPLES_DIR

    model = zoo.load("lraspp-resnet8-cwd.fmnist-scenes")
    sample = sorted((SAMPLES_DIR / "fmnist-scenes").glob("*.png"))[0]
    image = np.asarray(Image.open(sample).convert("RGB").resize((233, 150)))
    with torch.no_grad():
        logits = F.interpolate(model(model.preprocess([image])), size=(150, 233), mode="bilinear", align_corners=False)
    assert torch.equal(zoo.predict(model, [image])[0]["mask"], logits.argmax(1)[0].to(torch.uint8))


def test_resume_alone_continues_a_command_line_run(tmp_path, capsys):
    """`zoo train segmentation --out R --resume` asked again for --arch (found by a fresh-user pass); the run
    record in R says what the run is, as classification's command reads it."""
    from zoo.cli import main

    out = tmp_path / "r"
    assert main(["train", "segmentation", "--arch", "lraspp-resnet8", "--out", str(out), "--train-subset", "16",
                 "--epochs", "1", "--max-steps", "1", "--set", "batch_size=8", "--set", "progress=false"]) == 0
    assert "--out " + str(out) + " --resume alone" in capsys.readouterr().out
    assert main(["train", "segmentation", "--out", str(out), "--resume"]) == 0
    assert "saved " + str(out) + ": mIoU=" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["distill", "segmentation", "--out", str(tmp_path / "none"), "--resume"])
    assert "--resume: there is no run in" in capsys.readouterr().err
    # a finished run resumed as another run is refused (it said "saved" and kept the old card)
    assert main(["train", "segmentation", "--out", str(out), "--resume", "--arch", "lraspp-resnet14"]) == 2
    assert "student was 'lraspp-resnet8', now 'lraspp-resnet14'" in capsys.readouterr().err
    assert main(["train", "segmentation", "--out", str(out), "--resume"]) == 0
    assert "this run has finished" in capsys.readouterr().out
    import json

    record = json.loads((out / "run.json").read_text())
    for identity in (["a"], {**record["identity"], "student": None}, {**record["identity"], "student": 5}):
        (out / "run.json").write_text(json.dumps({**record, "identity": identity}))
        with pytest.raises(SystemExit):  # a run record edited by hand: one line, not an AttributeError
            main(["train", "segmentation", "--out", str(out), "--resume"])
        err = capsys.readouterr().err
        assert "is not a run record" in err or "the run record in" in err and "does not name them" in err
