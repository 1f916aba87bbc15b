"""The detection adapter: scenes, Chen et al. 2017's losses, the DetectionDistiller, mAP, training and the zoo."""
import copy

import pytest
import torch
import torch.nn.functional as F

from zoo.detection.data import DetectionDataset, make_scenes, targets_from_batch
from zoo.detection.distill import DetectionDistiller
from zoo.detection.evaluate import evaluate
from zoo.detection.losses import bounded_regression_loss, class_weights, objectness_soft_loss
from zoo.detection.models import build_detector
from zoo.losses.logits import soft_cross_entropy


@pytest.fixture(scope="module")
def scenes():
    return make_scenes("test", 24, seed=3, progress=False)


def test_scenes_are_deterministic_with_exact_boxes_inside_the_image(scenes):
    again = make_scenes("test", 24, seed=3, progress=False)
    assert torch.equal(scenes.images, again.images) and torch.equal(scenes.boxes, again.boxes)
    assert not torch.equal(make_scenes("test", 24, seed=4, progress=False).images, scenes.images)
    real = scenes.labels > 0
    assert real.any(1).all() and int(scenes.labels.max()) <= 10
    boxes = scenes.boxes[real]
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert boxes.min() >= 0 and boxes.max() <= scenes.image_size[0]
    assert (scenes.boxes[~real] == 0).all()


def test_the_scenes_cache_is_keyed_by_the_fashion_mnist_it_was_made_from(tmp_path, monkeypatch):
    """Scenes made from another copy of Fashion-MNIST (``--data-root``) are cached under their own name: they
    never stand in for the real scenes afterwards (a fake root used to poison every later eval), and a data root
    lacking Fashion-MNIST is an error, not a silent fall back to the system copy."""
    import gzip

    import numpy as np

    from zoo.classification.data import DataNotFoundError
    from zoo.detection.data import load_scenes, scenes_cache_path

    monkeypatch.setenv("KDZOO_HOME", str(tmp_path / "home"))
    fake = tmp_path / "fake"
    fake.mkdir()
    for name, arr in (("t10k-images-idx3-ubyte.gz", np.zeros((20, 28, 28), np.uint8)),
                      ("t10k-labels-idx1-ubyte.gz", np.arange(20, dtype=np.uint8) % 10)):
        header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
        (fake / name).write_bytes(gzip.compress(header + arr.tobytes()))
    assert scenes_cache_path("test", 4, 0, 96, fake) != scenes_cache_path("test", 4, 0, 96)
    black = load_scenes("test", 4, root=fake)  # all-black items: nothing but the photographs
    real = load_scenes("test", 4)
    assert not torch.equal(black.images, real.images)
    assert torch.equal(real.images, make_scenes("test", 4, progress=False).images)
    assert torch.equal(load_scenes("test", 4, root=fake).images, black.images)  # each from its own cache
    with pytest.raises(DataNotFoundError, match="only place looked in"):
        load_scenes("test", 4, root=tmp_path / "home")  # exists, holds no Fashion-MNIST


def test_flip_moves_boxes_with_the_image(scenes):
    g = torch.Generator().manual_seed(0)
    idx = torch.arange(len(scenes))
    plain, flipped = scenes.batch(idx), scenes.batch(idx, g, augment=True)
    moved = ~torch.isclose(plain["inputs"], flipped["inputs"]).flatten(1).all(1)
    assert 0 < moved.sum() < len(idx)  # about half flipped
    w = scenes.image_size[1]
    for i in torch.where(moved)[0]:
        assert torch.equal(flipped["inputs"][i], plain["inputs"][i].flip(-1))
        for b0, b1, lab in zip(plain["boxes"][i], flipped["boxes"][i], plain["labels"][i]):
            if lab > 0:
                assert torch.equal(b1, torch.stack([w - b0[2], b0[1], w - b0[0], b0[3]]))


def test_targets_drop_the_padding_rows(scenes):
    targets = targets_from_batch(scenes.boxes[:5], scenes.labels[:5])
    assert [len(t["labels"]) for t in targets] == (scenes.labels[:5] > 0).sum(1).tolist()
    assert all((t["labels"] > 0).all() for t in targets)


def test_dataset_rejects_bad_shapes():
    with pytest.raises(ValueError, match="uint8"):
        DetectionDataset("x", "test", torch.zeros(2, 3, 8, 8), torch.zeros(2, 1, 4), torch.zeros(2, 1, dtype=torch.long), ("a",))
    with pytest.raises(ValueError, match="labels"):
        DetectionDataset("x", "test", torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.zeros(2, 1, 4),
                         torch.zeros(2, 2, dtype=torch.long), ("a",))


# ---------------------------------------------------------------- losses (Chen et al. 2017)
def test_bounded_regression_costs_only_where_the_student_is_worse_than_the_teacher():
    target = torch.zeros(3, 4)
    teacher = torch.full((3, 4), 0.5)  # error 1.0 per box
    student = torch.tensor([[0.1] * 4, [1.0] * 4, [0.5] * 4])  # errors 0.04, 4.0, 1.0
    assert torch.isclose(bounded_regression_loss(student, teacher, target), torch.tensor(4.0))
    # a margin makes boxes within m of the teacher cost too: 0.04 + 0.5 > 1 is false, 1.0 + 0.5 > 1 is true
    assert torch.isclose(bounded_regression_loss(student, teacher, target, margin=0.5), torch.tensor(5.0))
    student.requires_grad_(True)
    bounded_regression_loss(student, teacher, target).backward()
    assert (student.grad[0] == 0).all() and (student.grad[1] != 0).all()
    with pytest.raises(ValueError):
        bounded_regression_loss(torch.zeros(3, 4), torch.zeros(2, 4), torch.zeros(3, 4))


def test_weighted_soft_cross_entropy_weighs_the_background_class():
    s, t = torch.randn(6, 4), torch.randn(6, 4)
    w = class_weights(4)
    assert w.tolist() == [1.5, 1.0, 1.0, 1.0]
    manual = -(F.softmax(t, -1) * F.log_softmax(s, -1) * w).sum(-1).mean()
    assert torch.isclose(soft_cross_entropy(s, t, class_weights=w), manual)
    assert torch.isclose(soft_cross_entropy(s, t, class_weights=torch.ones(4)), soft_cross_entropy(s, t))
    with pytest.raises(ValueError, match="one weight per class"):
        soft_cross_entropy(s, t, class_weights=torch.ones(3))


def test_objectness_soft_loss_is_weighted_binary_cross_entropy():
    zs, zt = torch.randn(50), torch.randn(50)
    ps, pt = torch.sigmoid(zs), torch.sigmoid(zt)
    manual = -(pt * torch.log(ps) + 1.5 * (1 - pt) * torch.log(1 - ps)).mean()
    assert torch.isclose(objectness_soft_loss(zs, zt), manual, atol=1e-6)


# ---------------------------------------------------------------- the distiller
def test_plain_losses_equal_torchvisions_own_training_losses(scenes):
    model = build_detector("frcnn-resnet20").train()
    batch = scenes.batch(torch.arange(6))
    torch.manual_seed(5)
    ours = DetectionDistiller(model).train()(batch)
    torch.manual_seed(5)
    theirs = model(list(batch["inputs"]), targets_from_batch(batch["boxes"], batch["labels"]))
    pairs = {"rpn_cls": "loss_objectness", "rpn_reg": "loss_rpn_box_reg", "rcn_cls": "loss_classifier", "rcn_reg": "loss_box_reg"}
    for mine, tv in pairs.items():
        assert torch.allclose(ours[mine], theirs[tv].detach(), rtol=1e-5, atol=1e-6), mine
    assert torch.isclose(ours["loss"].detach(), sum(theirs.values()).detach(), rtol=1e-5)


def test_chen2017_terms_train_the_student_and_connector_never_the_teacher(scenes):
    student, teacher = build_detector("frcnn-resnet20"), build_detector("frcnn-resnet56")
    module = DetectionDistiller(student, teacher, example_batch=scenes.batch(torch.arange(2))).train()
    out = module(scenes.batch(torch.arange(6)))
    assert set(module.part_names) | {"loss"} == set(out)
    assert all(torch.isfinite(v) for v in out.values())
    out["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert module.connector.conv.weight.grad is not None and student.backbone.conv1.weight.grad is not None
    assert not any(k.startswith("_teacher") for k in module.state_dict())
    assert not teacher.training


def test_a_pretrained_mobilenet_teacher_lines_up_with_the_resnet_students(scenes):
    """frcnn-mobilenetv2: torchvision's ImageNet MobileNetV2 blocks 0-13 at stride 8, so Chen et al.'s hint
    compares it with a ResNet-20 student position by position through a 64 -> 96 connector."""
    from torchvision.models import mobilenet_v2

    from zoo.classification.pretrained import load_mobilenet_v2_imagenet

    reference = mobilenet_v2()
    load_mobilenet_v2_imagenet(reference)
    teacher = build_detector("frcnn-mobilenetv2", pretrained_backbone=True).eval()
    assert torch.equal(teacher.backbone.body[13].conv[2].weight, reference.features[13].conv[2].weight)
    assert not torch.equal(build_detector("frcnn-mobilenetv2").backbone.body[0][0].weight, reference.features[0][0].weight)
    student = build_detector("frcnn-resnet20")
    module = DetectionDistiller(student, teacher, example_batch=scenes.batch(torch.arange(2))).train()
    assert module.connector.conv.weight.shape[:2] == (96, 64)
    out = module(scenes.batch(torch.arange(4)))
    out["loss"].backward()
    assert torch.isfinite(out["backbone_hint"]) and all(p.grad is None for p in teacher.parameters())


def test_a_teacher_identical_to_the_student_bounds_nothing(scenes):
    student = build_detector("frcnn-resnet20")
    module = DetectionDistiller(student, copy.deepcopy(student), example_batch=scenes.batch(torch.arange(2))).train()
    student.backbone.eval()  # BN on running statistics, as in the eval-mode teacher: identical outputs
    out = module(scenes.batch(torch.arange(4)))
    assert out["rpn_bounded"] == 0 and out["rcn_bounded"] == 0  # never worse than itself
    assert out["rpn_soft"] > 0 and out["rcn_soft"] > 0  # the teacher's entropy


def test_teacher_with_other_anchors_is_rejected(scenes):
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    teacher = build_detector("frcnn-resnet56", rpn_anchor_generator=AnchorGenerator(((16, 32),), ((1.0,),)))
    with pytest.raises(ValueError, match="anchors"):
        DetectionDistiller(build_detector("frcnn-resnet20"), teacher, example_batch=scenes.batch(torch.arange(2)))


def test_evaluate_scores_a_perfect_detector_one_and_an_untrained_one_about_zero(scenes):
    class Oracle(torch.nn.Module):
        seen = 0

        def forward(self, images):
            i, Oracle.seen = Oracle.seen, Oracle.seen + len(images)
            return [{**t, "scores": torch.ones(len(t["labels"]))}
                    for t in targets_from_batch(scenes.boxes[i:i + len(images)], scenes.labels[i:i + len(images)])]

    assert evaluate(Oracle(), scenes, batch_size=10)["bbox_mAP"] == 1.0
    assert evaluate(build_detector("frcnn-resnet20"), scenes, batch_size=12)["bbox_mAP"] < 0.05


# ---------------------------------------------------------------- training, resume, the zoo
TINY = ["--train-count", "16", "--test-count", "8", "--set", "batch_size=8", "--set", "progress=false"]


def test_training_resumes_exactly_and_the_run_loads_and_predicts_through_the_zoo(tmp_path, capsys):
    import zoo
    from safetensors.torch import load_file

    from zoo.detection.adapter import ADAPTER
    from zoo.detection.train import main

    main(["--arch", "frcnn-resnet20", "--out", str(tmp_path / "whole"), *TINY, "--set", "epochs=2"])
    with pytest.raises(SystemExit, match="--resume"):  # cut after 3 of 4 steps, then resumed
        main(["--arch", "frcnn-resnet20", "--out", str(tmp_path / "cut"), *TINY, "--set", "epochs=2", "--set", "max_steps=3"])
    with pytest.raises(SystemExit):  # another schedule is refused, naming both values
        main(["--arch", "frcnn-resnet20", "--out", str(tmp_path / "cut"), "--set", "epochs=3", "--resume"])
    assert "epochs was 2, now 3" in capsys.readouterr().err
    main(["--arch", "frcnn-resnet20", "--out", str(tmp_path / "cut"), "--resume"])  # the run's own settings
    whole, cut = load_file(str(tmp_path / "whole" / "model.safetensors")), load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert whole.keys() == cut.keys() and all(torch.equal(whole[k], cut[k]) for k in whole)
    # --time-budget 0: stops resumably after its first step, says how to go on; the resumed run is the same
    main(["--arch", "frcnn-resnet20", "--out", str(tmp_path / "budget"), *TINY, "--set", "epochs=2", "--time-budget", "0"])
    assert "--resume" in capsys.readouterr().out and not (tmp_path / "budget" / "model.safetensors").exists()
    main(["--arch", "frcnn-resnet20", "--out", str(tmp_path / "budget"), "--resume"])
    budget = load_file(str(tmp_path / "budget" / "model.safetensors"))
    assert all(torch.equal(whole[k], budget[k]) for k in whole)
    with pytest.raises(SystemExit):
        main(["--arch", "frcnn-resnet20", "--out", str(tmp_path / "neg"), *TINY, "--time-budget", "-1"])
    assert "minutes" in capsys.readouterr().err and not (tmp_path / "neg").exists()

    model = zoo.load(str(tmp_path / "whole"))
    card = model.card
    assert card.task == "detection" and card.architecture == "frcnn-resnet20" and card.method == "plain"
    assert set(card.metrics) == {"bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAR_100"}
    assert len(card.extra["history"]) == 2 and card.training.epochs == 2
    assert ADAPTER.evaluate(model, card) == card.metrics  # the card's numbers are what eval measures
    samples = ADAPTER.sample_inputs(card)
    results = zoo.predict(model, [str(p) for p in samples])
    assert len(results) == len(samples) and all(isinstance(r["detections"], list) for r in results)

    from zoo.publish import publish

    shipped = publish(tmp_path / "whole", "frcnn-resnet20.unit", dest_root=tmp_path / "zoo", latency_batch_sizes=(1,))
    assert shipped.metrics.keys() == card.metrics.keys() and shipped.extra["bbox_mAP_fp32"] == card.metrics["bbox_mAP"]
    assert shipped.flops > 0 and shipped.latency_ms["cpu_bs1"] > 0 and shipped.params == card.params
    assert zoo.load(str(tmp_path / "zoo" / "frcnn-resnet20.unit")).card.metrics == shipped.metrics

    main(["--arch", "frcnn-resnet20", "--out", str(tmp_path / "kd"), "--teacher", str(tmp_path / "whole"), *TINY,
          "--set", "epochs=1"])
    kd = zoo.card(str(tmp_path / "kd"))
    assert kd.method == "chen2017" and kd.extra["chen2017"]["mu"] == 0.5
    with pytest.raises(SystemExit):  # an unknown weight is refused before any training
        main(["--arch", "frcnn-resnet20", "--out", str(tmp_path / "bad"), "--teacher", str(tmp_path / "whole"),
              "--chen", "tau=2", *TINY])
    assert "hint" in (tmp_path / "kd" / "log.csv").read_text().splitlines()[0]
    from zoo.detection.train import run

    with pytest.raises(ValueError, match="train_subset must be a number of examples >= 1"):  # 0 is not "all"
        run("frcnn-resnet20", tmp_path / "zero", train_count=0)
    assert not (tmp_path / "zero").exists()
    with pytest.raises(ValueError, match="teacher 'resnet56.fmnist' is a classification model, not a detection one"):
        run("frcnn-resnet20", tmp_path / "clf", teacher="resnet56.fmnist")  # (was an AttributeError on .rpn)
    assert not (tmp_path / "clf").exists()


def test_detection_predictions_carry_boxes_inside_the_image(tmp_path):
    from zoo.detection.adapter import ADAPTER, DetectionPreprocessor

    model = build_detector("frcnn-resnet20").eval()
    with torch.no_grad():  # make every anchor an object and every RoI class 1, so something is found
        model.rpn.head.cls_logits.bias.fill_(10.0)
        model.roi_heads.box_predictor.cls_score.bias.copy_(torch.tensor([-10.0, 10.0] + [-10.0] * 9))
    model.card = type("Card", (), {"labels": [f"c{i}" for i in range(10)]})()
    model.preprocess = DetectionPreprocessor()
    image = torch.randint(0, 256, (3, 120, 80), dtype=torch.uint8)
    result = ADAPTER.predict(model, [image], top_k=5)[0]
    assert 1 <= len(result["detections"]) <= 5
    for d in result["detections"]:
        x1, y1, x2, y2 = d["box"]
        assert d["label"] == "c0" and d["score"] >= 0.5 and 0 <= x1 < x2 <= 80 and 0 <= y1 < y2 <= 120
    with pytest.raises(ValueError, match="no inputs"):
        DetectionPreprocessor()([])
    # an image whose shorter side the 96-px resize would take under one pixel: the detector itself fails
    # with a RuntimeError deep in its resize; the preprocessor refuses it first, naming its size
    wide = torch.zeros(3, 3, 3000, dtype=torch.uint8)
    with pytest.raises(RuntimeError):
        model([wide.float() / 255])
    with pytest.raises(ValueError, match="input 1 is 3000x3 pixels.*under one pixel"):
        ADAPTER.predict(model, [image, wide])
    assert len(ADAPTER.predict(model, [torch.zeros(3, 3, 96, dtype=torch.uint8)])) == 1  # 1 px: runs


# ---------------------------------------------------------------- standard formats
def _write_scenes_as_files(scenes, folder, count=4):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(scenes.images[i].permute(1, 2, 0).numpy()).save(folder / f"img{i}.png")
    return [(f"img{i}.png", [(b.tolist(), int(lab)) for b, lab in zip(scenes.boxes[i], scenes.labels[i]) if lab > 0])
            for i in range(count)]


def test_coco_json_round_trip_keeps_images_boxes_and_classes(scenes, tmp_path):
    import json

    from zoo.detection.data import load_coco

    files = _write_scenes_as_files(scenes, tmp_path / "images")
    images, annotations = [], []
    for i, (name, objects) in enumerate(files):
        images.append({"id": i + 1, "file_name": name, "width": 96, "height": 96})
        for (x1, y1, x2, y2), lab in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": 100 + lab, "iscrowd": 0,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)})
    categories = [{"id": 100 + c, "name": n} for c, n in enumerate(scenes.classes, 1)]
    (tmp_path / "ann.json").write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    data = load_coco(tmp_path / "ann.json", tmp_path / "images", size=96)
    assert data.classes == scenes.classes and torch.equal(data.images, scenes.images[:4])
    for i in range(4):
        real = scenes.labels[i] > 0
        assert torch.equal(data.labels[i][data.labels[i] > 0], scenes.labels[i][real])
        assert torch.allclose(data.boxes[i][data.labels[i] > 0], scenes.boxes[i][real])
    half = load_coco(tmp_path / "ann.json", tmp_path / "images", size=48)  # resized with its boxes
    assert torch.allclose(half.boxes, data.boxes / 2)


def test_voc_xml_folder_loads_with_a_fixed_class_order(scenes, tmp_path):
    from zoo.detection.data import load_voc

    files = _write_scenes_as_files(scenes, tmp_path)
    for name, objects in files:
        objs = "".join(f"<object><name>{scenes.classes[lab - 1]}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
                       f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for b, lab in objects)
        (tmp_path / name.replace(".png", ".xml")).write_text(f"<annotation><filename>{name}</filename>{objs}</annotation>")
    data = load_voc(tmp_path, size=96, classes=scenes.classes)
    assert torch.equal(data.images, scenes.images[:4])
    assert torch.equal(data.labels[:, :scenes.labels.shape[1]], scenes.labels[:4, :data.labels.shape[1]])
    with pytest.raises(FileNotFoundError, match="no Pascal-VOC"):
        load_voc(tmp_path / "empty-nothing-here")


def test_detection_training_runs_under_torchrun(tmp_path):
    import os
    import subprocess
    import sys

    import zoo

    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "zoo.detection.train", "--arch", "frcnn-resnet20", "--out", str(tmp_path / "ddp"),
                          *TINY, "--set", "epochs=1"], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("frcnn-resnet20.fmnist-scenes:") == 1  # rank 0 alone exports and reports
    assert zoo.card(str(tmp_path / "ddp")).training.epochs == 1


def test_detection_benchmark_trains_three_runs_resumably_and_writes_its_table(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "detection_kd.py"
    spec = importlib.util.spec_from_file_location("detection_kd", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = ["--out", str(tmp_path / "runs"), "--results", str(tmp_path / "res"), *TINY, "--set", "epochs=1"]
    bench.main(args)
    md = (tmp_path / "res" / "detection-fmnist-scenes.md").read_text()
    assert md.count("| student (ResNet-20)") == 2 and "teacher (ResNet-56)" in md and "points" in md
    results = json.loads((tmp_path / "res" / "detection-fmnist-scenes.json").read_text())
    assert results["rows"]["chen2017"]["method"] == "chen2017" and results["rows"]["teacher"]["params"] > results["rows"]["student"]["params"]
    stamp = (tmp_path / "runs" / "student" / "model.safetensors").stat().st_mtime_ns
    bench.main(args)  # finished runs are skipped, the table written again from their cards
    assert (tmp_path / "runs" / "student" / "model.safetensors").stat().st_mtime_ns == stamp
    assert (tmp_path / "res" / "detection-fmnist-scenes.md").read_text() == md


def test_the_committed_detection_results_are_in_the_readme_and_match_the_bundled_cards():
    import json
    from pathlib import Path

    import zoo

    root = Path(__file__).parents[1]
    md = (root / "benchmarks" / "results" / "detection-fmnist-scenes.md").read_text(encoding="utf-8")
    assert md.strip() in (root / "README.md").read_text(encoding="utf-8"), "stale: copy the results .md into README.md"
    results = json.loads((root / "benchmarks" / "results" / "detection-fmnist-scenes.json").read_text(encoding="utf-8"))
    # the ResNet-56 teacher of this table left the zoo (0.4 mAP above its student, the teacher of no entry): its row
    # stays a benchmark row; the plain student is still an entry
    assert "frcnn-resnet56.fmnist-scenes" not in {c.name for c in zoo.list_models()}
    names = {"student": "frcnn-resnet20.fmnist-scenes"}
    for role, name in names.items():
        card = zoo.card(name)
        row = results["rows"][role]
        assert card.method == row["method"] and card.params == row["params"]
        assert card.extra["bbox_mAP_fp32"] == row["metrics"]["bbox_mAP"]  # shipped from that very run
        assert abs(card.metrics["bbox_mAP"] - row["metrics"]["bbox_mAP"]) < 0.003  # fp16 cast, re-measured
    # the distilled student is below its plain twin: a benchmark row, not a zoo entry
    assert results["rows"]["chen2017"]["metrics"]["bbox_mAP"] < results["rows"]["student"]["metrics"]["bbox_mAP"]
    assert "frcnn-resnet20-chen2017.fmnist-scenes" not in {c.name for c in zoo.list_models()}


@pytest.mark.slow
def test_the_twin_protocol_runs_detection(tmp_path):
    """benchmarks/twins.py --task detection at toy size: twin and chen2017 per seed, one table (~4 min on a CPU)."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "twins.py"
    spec = importlib.util.spec_from_file_location("twins", path)
    twins = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(twins)
    args = ["--task", "detection", "--teacher", "frcnn-resnet20.fmnist-scenes", "--student", "frcnn-resnet20",
            "--recipes", "chen2017", "--seeds", "0", "1", "--train-subset", "16", "--set", "epochs=1",
            "--set", "batch_size=8", "--out", str(tmp_path / "run"), "--results", str(tmp_path / "res")]
    assert twins.main(args) == 0
    (table,) = (tmp_path / "res").glob("twins-fmnist-scenes-*.json")
    record = json.loads(table.read_text())
    assert [s["seed"] for s in record["seeds"]] == [0, 1] and set(record["summary"]) == {"twin", "chen2017"}
    bad = [*args[:7], "kd", *args[8:-4], "--out", str(tmp_path / "bad"), "--results", str(tmp_path / "bad")]
    assert twins.main(bad) == 2 and not (tmp_path / "bad").exists()  # detection distils with chen2017 only


def test_the_chen2017_recipe_holds_the_papers_weights_and_the_detector_applies_them(scenes):
    """Each part at its recipe weight sums to eqs. 1-2 and 4 of Chen et al. 2017; the recipe is overridden like
    any other; the core Distiller refuses the parts with the reason."""
    from zoo.detection.recipes import chen_recipe, part_weights
    from zoo.distiller import Distiller
    from zoo.recipes import Term, get_recipe, override
    from zoo.trainer import TrainConfig

    mu, nu, lam, gamma = 0.3, 0.7, 2.0, 0.25
    student, teacher = build_detector("frcnn-resnet20"), build_detector("frcnn-resnet56")
    module = DetectionDistiller(student, teacher, chen_recipe(mu=mu, nu=nu, lam=lam, gamma=gamma),
                                example_batch=scenes.batch(torch.arange(2))).train()
    torch.manual_seed(0)
    out = module(scenes.batch(torch.arange(4)))
    p = out
    rpn = mu * p["rpn_cls"] + (1 - mu) * p["rpn_soft"] + lam * (p["rpn_reg"] + nu * p["rpn_bounded"])
    rcn = mu * p["rcn_cls"] + (1 - mu) * p["rcn_soft"] + lam * (p["rcn_reg"] + nu * p["rcn_bounded"])
    assert torch.isclose(out["loss"].detach(), rpn + rcn + gamma * p["backbone_hint"], rtol=1e-5)
    recipe, _ = override(get_recipe("chen2017"), TrainConfig(), {"rcn_soft.weight": 0.8, "rcn_bounded.margin": 0.1})
    weights, params = part_weights(recipe)
    assert weights["rcn_soft"] == 0.8 and weights["rpn_soft"] == 0.5 and params["rcn_bounded"]["margin"] == 0.1
    with pytest.raises(ValueError, match=r"term 'kd' \(kd\) is not a Faster R-CNN part"):
        part_weights(type(recipe)("x", [Term("kd")], task="detection"))
    with pytest.raises(ValueError, match="distil from a teacher; none was given"):
        DetectionDistiller(student, None, chen_recipe())
    with pytest.raises(ValueError, match=r"mu .* must be in \[0, 1\]"):
        chen_recipe(mu=1.5)
    with pytest.raises(ValueError, match="only zoo.detection.distill.DetectionDistiller"):
        Distiller([student], [teacher], get_recipe("chen2017"), scenes.batch(torch.arange(2)))


@pytest.mark.slow
def test_zoo_distill_and_train_reach_detectors_through_the_recipe(tmp_path):
    """zoo.distill(..., 'chen2017') and zoo.train('detection', ...) run zoo.detection.train.run (one path with
    the CLI), with recipe parts as settings (about 2.5 minutes: each run evaluates the 1,000 test scenes)."""
    import zoo

    fast = {"epochs": 1, "batch_size": 4, "max_steps": 1, "progress": False}
    twin = zoo.train("detection", "frcnn-resnet20", out=tmp_path / "twin", train_subset=8, settings=fast)
    assert not twin.finished  # max_steps stops it resumably
    done = zoo.train("detection", "frcnn-resnet20", out=tmp_path / "twin", train_subset=8,
                     settings={**fast, "max_steps": None}, resume=True)
    assert done.finished and done.card.method == "plain" and done.student is not None
    kd = zoo.distill(str(tmp_path / "twin"), "frcnn-resnet20", "chen2017", out=tmp_path / "kd", train_subset=8,
                     settings={"epochs": 1, "batch_size": 4, "progress": False, "rcn_soft.weight": 0.8, "chen.gamma": 1.0})
    assert kd.finished and kd.card.method == "chen2017" and kd.card.extra["chen2017"]["gamma"] == 1.0
    weights = {t["name"]: t["weight"] for t in kd.card.extra["recipe"]["terms"]}
    assert weights["rcn_soft"] == 0.8 and weights["backbone_hint"] == 1.0


def test_zoo_distill_refuses_bad_detection_calls_before_writing(tmp_path):
    import zoo

    with pytest.raises(ValueError, match="chen2017 needs a teacher"):
        zoo.distill(None, "frcnn-resnet20", "chen2017", out=tmp_path / "a")
    with pytest.raises(ValueError, match="architecture name"):
        zoo.distill("frcnn-resnet20.fmnist-scenes", build_detector("frcnn-resnet20"), "chen2017", out=tmp_path / "b")
    with pytest.raises(ValueError, match="need a teacher"):
        zoo.train("detection", "frcnn-resnet20", out=tmp_path / "c", settings={"rcn_soft.weight": 0.8})
    with pytest.raises(ValueError, match="unknown detection architecture 'frcnn-resnet9'"):
        zoo.train("detection", "frcnn-resnet9", out=tmp_path / "d")
    assert not any((tmp_path / n).exists() for n in "abcd")
