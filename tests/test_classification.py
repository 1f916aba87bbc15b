import gzip
import struct

import numpy as np
import pytest
import torch

from zoo.classification.adapter import ADAPTER, ClassificationPreprocessor
from zoo.classification.data import DataNotFoundError, ImageDataset, load_dataset, random_crop_flip
from zoo.classification.evaluate import evaluate, metrics_from_confusion
from zoo.classification.models import CifarResNet, build_model
from zoo.metrics import count_flops, count_params


@pytest.mark.parametrize("depth,params_m", [(20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85), (110, 1.7)])
def test_resnet_params_match_he_et_al_table6(depth, params_m):
    assert round(count_params(build_model(f"resnet{depth}")) / 1e6, 2 if depth < 110 else 1) == params_m


def test_resnet_shapes_and_depth():
    m = build_model("resnet20", in_channels=1, num_classes=7)
    assert m(torch.randn(2, 1, 28, 28)).shape == (2, 7)
    convs = [x for x in m.modules() if isinstance(x, torch.nn.Conv2d)]
    assert len(convs) + 1 == 20  # 6n+2 weighted layers: 19 convs + fc (option A adds no conv)
    assert len([x for x in build_model("resnet20", shortcut="B").modules() if isinstance(x, torch.nn.Conv2d)]) == 21


def test_resnet_rejects_bad_depth_and_arch():
    with pytest.raises(ValueError, match="6n\\+2"):
        CifarResNet(depth=21)
    with pytest.raises(ValueError, match="known: resnet8"):
        build_model("resnet18")


def test_flops_of_resnet20_on_cifar():
    # ResNet-20 is ~41M multiply-adds on a 32x32 image (He et al. 2016); FlopCounterMode counts 2 per MAC.
    flops = count_flops(build_model("resnet20"), torch.randn(1, 3, 32, 32))
    assert 80e6 < flops < 84e6


def _write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def fake_fmnist(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 64), ("t10k", 20)):
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return tmp_path


def test_fashion_mnist_reads_idx_files_from_a_root(fake_fmnist):
    d = load_dataset("fashion-mnist", "test", root=fake_fmnist)
    assert d.images.shape == (20, 1, 28, 28) and d.images.dtype == torch.uint8
    assert d.labels.tolist() == [i % 10 for i in range(20)]
    assert len(d.subset(5)) == 5 and len(d.subset(20)) == 20
    for n in (0, 21):  # a subset larger than the split is refused, not silently the whole split
        with pytest.raises(ValueError, match=f"a subset of fashion-mnist/test needs 1..20 examples, got {n}"):
            d.subset(n)


def test_truncated_idx_file_is_reported(fake_fmnist):
    p = fake_fmnist / "t10k-images-idx3-ubyte.gz"
    data = gzip.decompress(p.read_bytes())[:-100]
    p.write_bytes(gzip.compress(data))
    with pytest.raises(ValueError, match="truncated"):
        load_dataset("fashion-mnist", "test", root=fake_fmnist)


def test_kdzoo_data_holding_the_idx_files_is_read_and_tilde_is_expanded(fake_fmnist, monkeypatch):
    import zoo.classification.data as data

    monkeypatch.setattr(data, "FASHION_MNIST_DIRS", ())  # no Debian copy to fall back to
    monkeypatch.setenv("KDZOO_DATA", str(fake_fmnist))  # the IDX files directly in $KDZOO_DATA
    assert len(load_dataset("fashion-mnist", "test")) == 20
    monkeypatch.setenv("HOME", str(fake_fmnist.parent))
    assert len(load_dataset("fashion-mnist", "train", root=f"~/{fake_fmnist.name}")) == 64
    from zoo.io import data_dir

    monkeypatch.setenv("KDZOO_DATA", "~/elsewhere")
    assert data_dir() == fake_fmnist.parent / "elsewhere" and data_dir("~/x") == fake_fmnist.parent / "x"


def test_a_root_with_only_the_test_split_names_the_missing_train_files(fake_fmnist):
    (fake_fmnist / "train-images-idx3-ubyte.gz").unlink()
    assert len(load_dataset("fashion-mnist", "test", root=fake_fmnist)) == 20
    with pytest.raises(DataNotFoundError, match="lacks its train split: no train-images-idx3-ubyte.gz"):
        load_dataset("fashion-mnist", "train", root=fake_fmnist)


def test_a_copy_with_only_the_train_split_is_used_and_never_mixed_with_another(fake_fmnist, monkeypatch):
    """A train-only root was 'not found', and a train-only $KDZOO_DATA silently gave both splits from Debian's
    copy (the folder was chosen by its test files)."""
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (fake_fmnist / name).unlink()
    assert len(load_dataset("fashion-mnist", "train", root=fake_fmnist)) == 64
    monkeypatch.setenv("KDZOO_DATA", str(fake_fmnist))
    assert len(load_dataset("fashion-mnist", "train")) == 64  # not Debian's 60,000
    with pytest.raises(DataNotFoundError, match="lacks its test split"):
        load_dataset("fashion-mnist", "test")
    monkeypatch.setenv("KDZOO_DATA", "   ")  # blank: unset, not a folder named by spaces
    from zoo.io import data_dir

    assert data_dir() == data_dir(None) and data_dir("") == data_dir() and str(data_dir()).strip() == str(data_dir())


def test_missing_dataset_says_how_to_get_it(tmp_path, monkeypatch):
    import zoo.classification.data as data

    monkeypatch.setattr(data, "FASHION_MNIST_DIRS", ())
    monkeypatch.delenv("KDZOO_DATA", raising=False)
    with pytest.raises(DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", "train", root=tmp_path)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("imagenet")


def test_real_fashion_mnist_is_installed():
    train, test = load_dataset("fashion-mnist", "train"), load_dataset("fashion-mnist", "test")
    assert len(train) == 60000 and len(test) == 10000
    assert torch.bincount(test.labels).tolist() == [1000] * 10


def test_crop_flip_is_a_shifted_or_mirrored_copy():
    imgs = torch.arange(2 * 3 * 6 * 6, dtype=torch.uint8).view(2, 3, 6, 6)
    out = random_crop_flip(imgs, 2, torch.Generator().manual_seed(0))
    assert out.shape == imgs.shape and out.dtype == torch.uint8
    for i in range(2):
        padded = torch.nn.functional.pad(imgs[i], (2, 2, 2, 2))
        candidates = [padded[:, y:y + 6, x:x + 6] for y in range(5) for x in range(5)]
        assert any(torch.equal(out[i], c) or torch.equal(out[i], c.flip(-1)) for c in candidates)
    again = random_crop_flip(imgs, 2, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_metrics_from_confusion():
    conf = torch.tensor([[3, 1], [0, 4]])
    m = metrics_from_confusion(conf, ("a", "b"))
    assert m["top1"] == 7 / 8 and m["per_class"] == {"a": 0.75, "b": 1.0} and m["n"] == 8


def test_evaluate_counts_a_perfect_and_a_constant_model():
    imgs = torch.zeros(6, 1, 4, 4, dtype=torch.uint8)
    imgs[:, 0, 0, 0] = torch.tensor([0, 0, 255, 255, 255, 0], dtype=torch.uint8)
    labels = torch.tensor([0, 0, 1, 1, 1, 0])
    data = ImageDataset("toy", "test", imgs, labels, ("dark", "bright"), (0.0,), (1.0,))

    class Oracle(torch.nn.Module):
        def forward(self, x):
            bright = x[:, 0, 0, 0] > 0.5
            return torch.stack([(~bright).float(), bright.float()], 1)

    class Constant(torch.nn.Module):
        def forward(self, x):
            return torch.tensor([[1.0, 0.0]]).expand(len(x), 2)

    assert evaluate(Oracle(), data, batch_size=4)["top1"] == 1.0
    res = evaluate(Constant(), data, batch_size=4)
    assert res["top1"] == 0.5 and res["confusion"] == [[3, 0], [3, 0]]


def test_preprocessor_accepts_paths_pil_arrays_and_tensors(tmp_path):
    from PIL import Image

    pre = ClassificationPreprocessor((1, 28, 28), (0.5,), (0.25,))
    arr = np.full((28, 28), 255, dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "x.png")
    Image.fromarray(np.zeros((56, 40, 3), np.uint8)).save(tmp_path / "big.jpg")
    batch = pre([tmp_path / "x.png", Image.fromarray(arr), arr, torch.from_numpy(arr)[None], str(tmp_path / "big.jpg")])
    assert batch.shape == (5, 1, 28, 28)
    assert torch.allclose(batch[:4], torch.full((4, 1, 28, 28), 2.0))
    assert torch.allclose(batch[4], torch.full((1, 28, 28), -2.0))


def test_preprocessor_errors_are_clear(tmp_path):
    pre = ClassificationPreprocessor((1, 28, 28), (0.5,), (0.25,))
    with pytest.raises(FileNotFoundError, match="no image file"):
        pre(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="not a readable image"):
        pre(tmp_path / "bad.png")
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):  # e.g. an already normalised batch
        pre(torch.full((1, 28, 28), -0.5))
    with pytest.raises(TypeError, match="cannot read an image"):
        pre(42)
    with pytest.raises(ValueError, match="no inputs"):
        pre([])


@pytest.mark.parametrize("change, message", [
    ({"std": [0.0]}, "std must be positive"),
    ({"std": [float("nan")]}, "std must hold 1 or 1 finite numbers"),
    ({"mean": [0.1, 0.2]}, "mean must hold 1 or 1 finite numbers"),
    ({"input_size": [1, 28]}, r"input_size must be \[channels, height, width\]"),
    ({"input_size": 28}, r"input_size must be \[channels, height, width\], got 28"),
    ({"input_size": [3, 28, 28], "mean": [0.3], "std": [0.3]}, "input_size has 3 channels, its model reads 1"),
    ({"labels": ["a", "b"]}, "names 2 labels for a model of 10 classes"),
])
def test_a_card_whose_preprocessing_does_not_fit_its_model_is_refused_at_load(tiny_model, tmp_path, change, message):
    import zoo
    from conftest import make_card

    fields = {"preprocessing": {"input_size": [1, 28, 28], "mean": [0.286], "std": [0.353]}}
    labels = change.pop("labels", None)
    fields["preprocessing"].update(change)
    card = make_card(tiny_model, **fields, **({"labels": labels} if labels else {}))
    zoo.save(tiny_model, tmp_path / "c", card)
    with pytest.raises(ValueError, match=message):
        zoo.load(tmp_path / "c")


def test_eval_normalises_as_the_card_says_as_predict_does(tiny_model, fake_fmnist):
    from dataclasses import replace

    from conftest import make_card

    card = make_card(tiny_model)
    shifted = replace(card, preprocessing={**card.preprocessing, "mean": [0.9], "std": [0.1]})
    tiny_model.eval()
    first = ADAPTER.evaluate(tiny_model, card, data_root=fake_fmnist)
    assert ADAPTER.evaluate(tiny_model, card, data_root=fake_fmnist) == first  # deterministic
    data = load_dataset("fashion-mnist", "test", fake_fmnist)
    logits = tiny_model(ClassificationPreprocessor((1, 28, 28), (0.9,), (0.1,))(list(data.images)))
    expected = (logits.argmax(1) == data.labels).float().mean().item()
    assert ADAPTER.evaluate(tiny_model, shifted, data_root=fake_fmnist)["top1"] == pytest.approx(expected)
    assert expected != first["top1"]  # the two normalisations do differ on these images
    wrong = replace(card, preprocessing={**card.preprocessing, "input_size": [1, 32, 32]})
    with pytest.raises(ValueError, match="reads 1x32x32 inputs, fashion-mnist has 1x28x28 images"):
        ADAPTER.evaluate(tiny_model, wrong, data_root=fake_fmnist)


def test_predict_returns_labels_scores_and_top_k(tiny_model, tmp_path):
    import zoo
    from conftest import make_card

    zoo.save(tiny_model, tmp_path / "c", make_card(tiny_model))
    model = zoo.load(tmp_path / "c")
    samples = ADAPTER.sample_inputs(model.card)
    assert len(samples) == 10
    results = zoo.predict(model, samples, top_k=3)
    assert len(results) == 10
    for r in results:
        assert r["label"] in model.card.labels and 0 < r["score"] <= 1
        assert [t["score"] for t in r["top_k"]] == sorted((t["score"] for t in r["top_k"]), reverse=True)
        assert r["top_k"][0]["label"] == r["label"]


def test_cifar_loads_a_torchvision_root(tmp_path, monkeypatch):
    """CIFAR-10 in torchvision's on-disk format (users online get it with --download)."""
    import pickle

    import torchvision

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, n in [("data_batch_%d" % i, 4) for i in range(1, 6)] + [("test_batch", 6)]:
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": list(range(n))}
        (folder / name).write_bytes(pickle.dumps(batch))
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": classes}))
    # the fake files lack the real md5 sums torchvision checks
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    train = load_dataset("cifar10", "train", root=tmp_path)
    test = load_dataset("cifar10", "test", root=tmp_path)
    assert train.images.shape == (20, 3, 32, 32) and len(test) == 6 and train.crop_padding == 4
    assert train.classes[0] == "airplane" and test.labels.tolist() == list(range(6))
    b = train.batch(torch.arange(4), torch.Generator().manual_seed(0), augment=True)
    assert b["inputs"].shape == (4, 3, 32, 32) and b["inputs"].dtype == torch.float32
    assert b["index"].tolist() == [0, 1, 2, 3] and b["labels"].tolist() == [0, 1, 2, 3]


def test_cifar_missing_says_how_to_get_it(tmp_path):
    with pytest.raises(DataNotFoundError, match="download=True"):
        load_dataset("cifar10", "test", root=tmp_path)
