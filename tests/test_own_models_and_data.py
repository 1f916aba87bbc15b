"""Your own student and your own data: a torchvision MobileNetV3 (random init) distilled from a zoo
teacher on an image folder written here, published, loaded, used (issue: one seam for tasks, item 2)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import zoo
from zoo.classification.data import FASHION_MNIST_CLASSES, load_dataset

FAST = {"epochs": 1, "batch_size": 8, "progress": False, "lr": 0.02}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """60 real Fashion-MNIST test images as 32 px RGB PNGs in ImageFolder layout (class folders named
    without the '/' of 'T-shirt/top'; sorted by name, so in another order than the teacher's classes)."""
    root = tmp_path_factory.mktemp("images") / "my-clothes"
    test = load_dataset("fashion-mnist", "test")
    counts = {}
    for image, label in zip(test.images[:200], test.labels[:200].tolist()):
        if counts.get(label, 0) == 6:
            continue
        counts[label] = counts.get(label, 0) + 1
        cls = root / FASHION_MNIST_CLASSES[label].replace("/", "-")
        cls.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0].numpy()).convert("RGB").resize((32, 32)).save(cls / f"{counts[label]:02d}.png")
    assert len(counts) == 10
    return root


def test_a_torchvision_student_learns_from_a_zoo_teacher_on_an_image_folder(folder, tmp_path):
    torch.manual_seed(0)
    student = torchvision.models.mobilenet_v3_small(num_classes=10)  # the model a user deploys
    teacher = zoo.load("resnet56.fmnist")
    run = zoo.distill(teacher, student, "kd", data=str(folder), out=tmp_path / "run", settings=FAST)
    assert run.finished
    assert not teacher._forward_hooks  # the run reordered its classes with a hook, and took it off again
    card = run.card
    assert card.architecture == "torchvision:mobilenet_v3_small" and card.config == {"num_classes": 10}
    assert card.dataset == str(folder) and card.teacher.name == "resnet56.fmnist"
    assert card.teacher.sha256 == teacher.card.files[0].sha256 and len(card.teacher.sha256) == 64  # the very teacher
    assert card.preprocessing["input_size"] == [3, 32, 32] and len(card.labels) == 10
    assert card.training.command.startswith("zoo distill classification --recipe kd --student torchvision:mobilenet_v3_small")
    assert "--teacher resnet56.fmnist" in card.training.command

    from zoo.publish import publish

    shipped = publish(tmp_path / "run", "mobilenet-kd.my-clothes", dest_root=tmp_path / "zoo", latency_batch_sizes=(1,))
    model = zoo.load(tmp_path / "zoo" / "mobilenet-kd.my-clothes")
    assert isinstance(model, torchvision.models.MobileNetV3)
    image = next((folder / "Sneaker").glob("*.png"))
    [prediction] = zoo.predict(model, [image])
    assert prediction["label"] in card.labels
    measured = zoo.evaluate(tmp_path / "zoo" / "mobilenet-kd.my-clothes")["measured"]["top1"]
    assert measured == pytest.approx(shipped.metrics["top1"], abs=1e-6)  # zoo eval reproduces the card

    # the data moved: the card's folder is gone, data_root (--data-root) names where it is now
    from dataclasses import replace

    from zoo.classification.adapter import ADAPTER

    moved = replace(model.card, dataset=str(tmp_path / "gone" / "my-clothes"))
    with pytest.raises(FileNotFoundError, match=r"image folder .*gone/my-clothes, which is not there \(moved\?\): "
                                                r"give it with --data-root FOLDER"):
        ADAPTER.evaluate(model, moved)
    assert ADAPTER.evaluate(model, moved, data_root=str(folder))["top1"] == pytest.approx(measured, abs=1e-6)
    with pytest.raises(ValueError, match=r"has the classes \['cat', 'dog'\], which the card .* does not name"):
        ADAPTER.evaluate(model, moved, data_root=str(_animals(tmp_path)))
    assert "--dest " + str(tmp_path / "zoo") in shipped.training.command  # its reproduce line publishes there too


def test_the_teacher_sees_its_own_inputs():
    from zoo.classification.distill import TeacherInput, teacher_input
    from zoo.classification.folders import load_image_folder

    teacher = zoo.load("resnet56.fmnist")
    x = torch.rand(2, 3, 32, 32)
    adapt = TeacherInput((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 1, 28, (0.286,), (0.353,))
    out = adapt((x - 0.5) / 0.25)
    grey = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    expected = (torch.nn.functional.interpolate(grey, size=(28, 28), mode="bilinear", align_corners=False) - 0.286) / 0.353
    assert out.shape == (2, 1, 28, 28) and torch.allclose(out, expected, atol=1e-5)
    same = load_dataset("fashion-mnist", "test").subset(8)
    assert teacher_input(same, teacher) is None  # its own data needs no conversion


def test_torch_datasets_are_data_too(tmp_path):
    class Pairs(torch.utils.data.Dataset):
        classes = list(FASHION_MNIST_CLASSES)

        def __init__(self, start):
            self.data = load_dataset("fashion-mnist", "test")
            self.start = start

        def __len__(self):
            return 24

        def __getitem__(self, i):  # PIL images of any mode, int labels
            return Image.fromarray(self.data.images[self.start + i, 0].numpy()), int(self.data.labels[self.start + i])

    run = zoo.distill("resnet56.fmnist", "resnet8", "kd", data=(Pairs(0), Pairs(24)), out=tmp_path / "run",
                      settings={**FAST, "batch_size": 8})
    assert run.finished and run.card.metrics["top1"] >= 0
    # kdzoo cannot load Python datasets again by name: eval (and publish) read their test images from a folder
    with pytest.raises(FileNotFoundError, match="names the data set 'Pairs', which kdzoo cannot load by name"):
        zoo.evaluate(tmp_path / "run")
    images = tmp_path / "pairs-images"
    for i in range(24):  # the test pairs as class folders; sorted by name, so in another order than Pairs.classes
        image, label = Pairs(24)[i]
        cls = images / FASHION_MNIST_CLASSES[label].replace("/", "-")
        cls.mkdir(parents=True, exist_ok=True)
        image.save(cls / f"{i:02d}.png")
    (images / "test").mkdir()
    for cls in [d for d in images.iterdir() if d.name != "test"]:
        cls.rename(images / "test" / cls.name)
    (images / "train").symlink_to(images / "test")
    report = zoo.evaluate(tmp_path / "run", data_root=str(images))
    assert report["measured"]["top1"] == pytest.approx(run.card.metrics["top1"], abs=1e-6)


def _animals(tmp_path):
    """An image folder of two classes, cat and dog, three 8 px images each."""
    other = tmp_path / "animals"
    for cls in ("cat", "dog"):
        (other / cls).mkdir(parents=True)
        for k in range(3):
            Image.new("RGB", (8, 8), (k * 40, 0, 0)).save(other / cls / f"{k}.png")
    return other


def test_bad_folders_and_mismatched_teachers_are_refused(folder, tmp_path):
    from zoo.classification.folders import load_image_folder

    (tmp_path / "one" / "cats").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "one" / "cats" / "a.png")
    with pytest.raises(ValueError, match="has 1 image"):
        load_image_folder(tmp_path / "one")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class folders"):
        load_image_folder(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no image folder"):
        load_image_folder(tmp_path / "missing")
    other = _animals(tmp_path)
    with pytest.raises(ValueError, match="distillation needs the same classes"):
        zoo.distill("resnet56.fmnist", "resnet8", "kd", data=str(other), out=tmp_path / "x", settings=FAST)
    with pytest.raises(ValueError, match="cannot describe a Sequential"):
        zoo.distill("resnet56.fmnist", torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3072, 10)), "kd",
                    data=str(folder), out=tmp_path / "y", settings=FAST)


def test_folder_layouts_and_their_mistakes(tmp_path):
    from zoo.classification.folders import load_image_folder

    def make(root, classes, n):
        for c in classes:
            (root / c).mkdir(parents=True, exist_ok=True)
            for k in range(n):
                Image.new("L", (6, 6), k * 20).save(root / c / f"{k}.png")
        return root

    flat = make(tmp_path / "flat", ["a", "b", "c"], 6)
    (flat / "a" / "._0.png").write_bytes(b"macOS metadata")  # skipped, as hidden files are
    train = load_image_folder(flat)
    assert train.labels[:3].tolist() == [0, 1, 2]  # classes interleaved: a subset holds every class
    assert len(train) == 3 * 4 and len(load_image_folder(flat, "test")) == 3 * 2  # images 0 and 5 of each class
    with pytest.raises(ValueError, match="needs at least 2 classes"):
        load_image_folder(make(tmp_path / "one", ["a"], 4))
    make(tmp_path / "split" / "train", ["a", "b"], 2)
    with pytest.raises(ValueError, match="train/ folder but no test/ or val/"):
        load_image_folder(tmp_path / "split")
    make(tmp_path / "split" / "val", ["a", "b"], 1)
    (tmp_path / "split" / "train" / "zzz").mkdir()
    with pytest.raises(ValueError, match="zzz hold no images"):
        load_image_folder(tmp_path / "split")


def test_students_and_labels_that_do_not_fit_the_data_are_refused(folder, tmp_path):
    with pytest.raises(ValueError, match=r"output is \(2, 1000\); the data has 10 classes: build it with num_classes=10"):
        zoo.distill(None, torchvision.models.mobilenet_v3_small(num_classes=1000), "plain", data=str(folder),
                    out=tmp_path / "a", settings=FAST)
    from zoo.classification.models import build_model

    with pytest.raises(ValueError, match=r"cannot take the data's images \(2, 3, 32, 32\)"):
        zoo.distill("resnet56.fmnist", build_model("resnet8", in_channels=1), "kd", data=str(folder),
                    out=tmp_path / "b", settings=FAST)

    class Bad(torch.utils.data.Dataset):
        def __init__(self, labels):
            self.labels = labels

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            return np.zeros((8, 8), np.uint8), self.labels[i]

    for labels, message in (([0, 1, -1, 2], "not class indices"), ([0, 1, 2.5, 1], "not class indices")):
        with pytest.raises(ValueError, match=message):
            zoo.distill(None, "resnet8", "dml", data=(Bad(labels), Bad([0, 1])), out=tmp_path / "c", settings=FAST)
    with pytest.raises(ValueError, match=r"data must be a \(train, test\) pair"):
        zoo.distill(None, "resnet8", "dml", data=Bad([0, 1]), out=tmp_path / "d", settings=FAST)
