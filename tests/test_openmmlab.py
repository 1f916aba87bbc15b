"""The OpenMMLab bridge: mmseg models built from a config, trained by kdzoo's runner with their own loss
dict, distilled by kdzoo's recipes through taps, saved with their config on the card and rebuilt by
zoo.load. Needs ``bash scripts/setup_openmmlab.sh``; skipped without it, except in CI (which installs it)."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

try:
    import mmseg  # noqa: F401
    HAVE_MM = True
except ImportError:
    HAVE_MM = False

if not HAVE_MM and os.environ.get("CI"):
    raise RuntimeError("CI must install the OpenMMLab bridge (bash scripts/setup_openmmlab.sh)")
needs_mm = pytest.mark.skipif(not HAVE_MM, reason="mmsegmentation not installed: bash scripts/setup_openmmlab.sh")

# the student config kdzoo ships (an FCN on a ResNetV1c-18 of 16 base channels, with an auxiliary head): a
# copy in the test's folder, so a test can delete it and see the card alone rebuild the model
SHIPPED = Path(__file__).resolve().parents[1] / "segmentation" / "configs" / "fcn_r18_c16.py"


@pytest.fixture
def fcn_config(tmp_path):
    path = tmp_path / "fcn.py"
    shutil.copy(SHIPPED, path)
    return path


def _scenes(n=16):
    from zoo.segmentation.data import load_scenes

    train = load_scenes("test", n)
    return train, train.subset(8)


@needs_mm
def test_an_mmseg_config_becomes_a_segmenter_with_its_own_loss(fcn_config):
    from zoo.segmentation.models import build_segmenter

    torch.manual_seed(0)
    model = build_segmenter(f"mmseg:{fcn_config}", 11)
    x, masks = torch.rand(2, 3, 64, 64), torch.randint(0, 11, (2, 64, 64))
    masks[0, :8] = 255
    model.eval()
    out = model(x)
    assert out.shape == (2, 11, 64, 64) and not hasattr(out, "mm_loss")
    norms = [type(m).__name__ for m in model.modules() if "Norm" in type(m).__name__]
    assert norms and set(norms) == {"BatchNorm2d"}  # the config's SyncBN made BN on the CPU
    model.train()
    logits = model(x)
    losses = logits.mm_loss(masks)
    assert {"decode.loss_ce", "aux.loss_ce"} <= set(losses)
    # mmseg's losses are its heads' cross-entropies (ignore 255), the auxiliary one weighted 0.4
    from zoo.segmentation.adapter import ADAPTER

    # mmseg's CrossEntropyLoss (avg_non_ignore=False, its default): the mean over all pixels, ignored ones counted
    ce = torch.nn.functional.cross_entropy(logits, masks, ignore_index=255, reduction="none").mean()
    assert losses["decode.loss_ce"].item() == pytest.approx(ce.item(), rel=1e-4)
    total = ADAPTER.task_loss(logits, {"labels": masks})
    assert total.item() == pytest.approx(losses["decode.loss_ce"].item() + losses["aux.loss_ce"].item(), rel=1e-5)


@needs_mm
def test_train_save_load_and_distil_an_mmseg_student(fcn_config, tmp_path):
    import zoo
    from zoo.segmentation.adapter import ADAPTER
    from zoo.segmentation.models import build_segmenter

    train, test = _scenes()
    arch = f"mmseg:{fcn_config}"
    settings = {"epochs": 1, "batch_size": 8, "progress": False, "amp": "off"}
    run = zoo.train("segmentation", arch, (train, test), out=tmp_path / "plain", settings=settings)
    assert run.finished and "mIoU" in run.card.metrics
    assert run.card.config["mm_model"]["type"] == "EncoderDecoder"
    fcn_config.unlink()  # the card alone rebuilds the model
    loaded = zoo.load(tmp_path / "plain")
    x = test.batch(torch.arange(2))["inputs"]
    run.student.eval()
    assert torch.allclose(loaded(x), run.student(x), atol=1e-5)
    # CWD from a torchvision teacher into the mmseg student: on both models' logits (at the input's size), and
    # pair-wise KD on a tap by path into the mm model (its decode head's features)
    shutil.copy(SHIPPED, fcn_config)
    teacher = build_segmenter("lraspp-resnet8", 11)
    kd = ADAPTER.distill(teacher, arch, "cwd", data=(train, test), out=tmp_path / "cwd",
                         settings={**settings, "cwd.student": "logits", "cwd.teacher": "logits"})
    header = (tmp_path / "cwd" / "log.csv").read_text().splitlines()[0]
    assert kd.finished and "cwd" in header
    pair = ADAPTER.distill(teacher, arch, "pair-kd", data=(train, test), out=tmp_path / "pair",
                           settings={**settings, "pair_kd.student": "mm.decode_head.convs"})
    assert pair.finished and "pair_kd" in (tmp_path / "pair" / "log.csv").read_text().splitlines()[0]
    with pytest.raises(ValueError, match="has no submodule 'mm.decode_head.nope'"):
        ADAPTER.distill(teacher, arch, "pair-kd", data=(train, test), out=tmp_path / "bad",
                        settings={**settings, "pair_kd.student": "mm.decode_head.nope"})
    assert not (tmp_path / "bad" / "model.safetensors").exists()


@needs_mm
def test_checkpoints_of_another_config_are_refused_by_key(fcn_config, tmp_path):
    from zoo.segmentation.mm import build_mm_segmenter, load_mm_checkpoint

    model = build_mm_segmenter(f"mmseg:{fcn_config}", 11)
    state = {f"architecture.{k}": v for k, v in model.mm.state_dict().items()}
    state["teacher.backbone.conv1.weight"] = torch.zeros(1)
    torch.save({"state_dict": state}, tmp_path / "razor.pth")
    assert load_mm_checkpoint(model.mm, tmp_path / "razor.pth") == []  # MMRazor's prefix stripped, teacher dropped
    other = {k: v for k, v in model.mm.state_dict().items() if not k.startswith("auxiliary_head")}
    other["backbone.extra.weight"] = torch.zeros(1)
    torch.save(other, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"keys missing \(auxiliary_head.*unexpected \(backbone.extra.weight\)"):
        load_mm_checkpoint(model.mm, tmp_path / "other.pth")
    with pytest.raises(FileNotFoundError, match="no mmseg config file"):
        build_mm_segmenter("mmseg:/nonexistent.py", 11)


def test_a_missing_install_names_the_command(monkeypatch):
    from zoo.segmentation import mm

    monkeypatch.setitem(sys.modules, "mmseg", None)
    with pytest.raises(mm.OpenMMLabMissingError, match="scripts/setup_openmmlab.sh"):
        mm.build_mm_segmenter("mmseg:x.py", 11)


@needs_mm
def test_an_mmrazor_checkpoint_url_loads_into_the_mm_model(fcn_config, https_server):
    """A reported MMRazor-style entry of an mmseg architecture: zoo.load downloads it from a loopback HTTPS
    server, checks its OpenMMLab hash prefix, strips ``architecture.`` and drops the teacher's and
    distiller's keys, and loads it into the mm model under MMSegmenter's ``mm.``."""
    import hashlib

    import zoo
    from zoo.registry import ModelCard
    from zoo.segmentation.mm import build_mm_segmenter

    root, base = https_server
    torch.manual_seed(1)
    published = build_mm_segmenter(f"mmseg:{fcn_config}", 11).eval()
    state = {f"architecture.{k}": v for k, v in published.mm.state_dict().items()}
    state["teacher.backbone.stem.0.weight"] = torch.zeros(2, 3, 3, 3)
    state["distiller.distill_losses.loss_cwd.tau"] = torch.ones(())
    tmp = root / "ckpt.pth"
    torch.save({"meta": {"mmengine_version": "0.10.7"}, "state_dict": state}, tmp)
    sha = hashlib.sha256(tmp.read_bytes()).hexdigest()
    path = tmp.rename(root / f"cwd_fcn_tiny_20240101-{sha[:8]}.pth")
    info = {"project": "UnitRazor", "report_url": "https://example.org/metafile.yml", "download_url": f"{base}/{path.name}",
            "download": "direct", "sha256_prefix": sha[:8], "format": "mmrazor", "key_map": None,
            "params_source": "counted"}
    zoo.register(ModelCard(name="fcn-tiny-cwd.unit.mmrazor", task="segmentation", architecture=f"mmseg:{fcn_config}",
                           config={"num_classes": 11}, dataset="cityscapes", split="val", metrics={"mIoU": 0.5},
                           params=sum(p.numel() for p in published.parameters()),
                           preprocessing={"input_size": [3, 64, 64]}, labels=[f"c{i}" for i in range(11)],
                           source=info["download_url"], metrics_source="reported", extra={"reported": info}))
    model = zoo.load("fcn-tiny-cwd.unit.mmrazor", progress=False)
    x = torch.rand(1, 3, 64, 64)
    assert type(model).__name__ == "MMSegmenter" and torch.equal(model(x), published(x))


@needs_mm
def test_the_shipped_mmrazor_segmentation_entry_builds_and_says_what_to_download(monkeypatch):
    """MMRazor's CWD PSPNet-R18 names mmseg's own config, so kdzoo builds it (no refusal); offline, loading it
    names the file to fetch and where it goes."""
    import zoo
    from zoo import reported
    from zoo.download import OfflineError

    card = zoo.card("pspnet-r18-cwd.cityscapes.mmrazor")
    assert reported.buildable(card) == (True, "")

    def offline(url, *args, **kwargs):
        raise OfflineError(f"cannot reach {url}")

    monkeypatch.setattr(reported, "download", offline)
    monkeypatch.setattr(reported, "cache_path", lambda c: __import__("pathlib").Path("/nonexistent/kdzoo-cache") / "x.pth")
    with pytest.raises(OfflineError, match=r"3e643f6f.*file=PATH|file=PATH.*3e643f6f"):
        zoo.load(card.name)


@needs_mm
def test_the_shipped_student_config_builds_from_its_short_name():
    from zoo.segmentation.models import build_segmenter

    model = build_segmenter("mmseg:kdzoo::fcn_r18_c16.py", 11)
    assert 0.8e6 < sum(p.numel() for p in model.parameters()) < 1.1e6  # about a third of the 2.6M teacher
    with pytest.raises(FileNotFoundError, match="it ships: fcn_r18_c16.py"):
        build_segmenter("mmseg:kdzoo::nope.py", 11)
