"""Other projects' published students (`zoo.reported`): the shipped cards, and loading through the real code
path from a loopback HTTPS server with a self-signed certificate made here. Nothing touches the network."""
import argparse
import hashlib
import json
import zipfile
from collections import Counter
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch

import zoo
from zoo import reported
from zoo.cli import main
from zoo.download import OfflineError
from zoo.hub import ChecksumError

from conftest import Handler, make_card


# ---------------------------------------------------------------- the shipped cards
def test_at_least_12_reported_entries_from_4_projects_each_with_its_sources():
    cards = reported.cards()
    projects = Counter(c.extra["reported"]["project"] for c in cards)
    assert len(cards) >= 12 and len(projects) >= 4, projects
    assert {"MMRazor", "torchdistill", "mdistiller", "Hugging Face Hub"} <= set(projects)
    for c in cards:
        rep = c.extra["reported"]
        assert c.metrics_source == "reported" and not reported.validate(c)
        assert urlparse(rep["report_url"]).scheme == "https" and urlparse(rep["download_url"]).scheme == "https"
        assert c.license and c.params > 0 and rep["params_source"] and c.teacher is not None
        if rep["project"] == "MMRazor":  # OpenMMLab names files with the sha256's first 8 hex digits
            assert rep["sha256_prefix"] and Path(urlparse(rep["download_url"]).path).stem.endswith("-" + rep["sha256_prefix"])
            assert "/blob/" in rep["report_url"] and len(rep["report_url"].split("/blob/")[1].split("/")[0]) == 40
        if c.baseline:
            assert c.gain_over_baseline() is not None


def test_reported_entries_are_in_the_zoo_beside_ours_and_marked(capsys):
    names = {c.name for c in zoo.list_models()}
    assert {"resnet18-dkd.imagenet.mmrazor", "resnet8-kd.fmnist"} <= names
    rows = {r["name"]: r for r in zoo.compare(task="classification")}
    dkd = rows["resnet18-dkd.imagenet.mmrazor"]
    assert dkd["metrics_source"] == "reported" and dkd["project"] == "MMRazor" and dkd["report_url"].startswith("https://")
    assert dkd["value"] == pytest.approx(0.71368) and dkd["teacher_value"] == pytest.approx(0.7362)
    assert rows["resnet8-kd.fmnist"]["metrics_source"] == "measured" and rows["resnet8-kd.fmnist"]["project"] is None
    assert main(["list", "--dataset", "imagenet-1k"]) == 0
    out = capsys.readouterr().out
    assert "reported by MMRazor" in out and "reported by torchdistill" in out and "(twin 69.90, reported)" in out
    assert main(["compare", "--dataset", "cifar-100"]) == 0
    assert "reported (mdistiller)" in capsys.readouterr().out
    from zoo.comparison import markdown_table

    table = markdown_table(zoo.list_models(task="classification"))
    assert "([reported by MMRazor](https://github.com/open-mmlab/mmrazor/blob/" in table
    lines = table.splitlines()
    assert max(i for i, l in enumerate(lines) if "fmnist" in l) < min(i for i, l in enumerate(lines) if "reported by" in l)


def test_an_entry_kdzoo_cannot_build_is_refused_before_any_download(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("no download may start")

    monkeypatch.setattr(reported, "download", no_network)
    monkeypatch.setattr(reported, "hf_download", no_network)
    for name in ("resnet8x4-dkd.cifar100.mdistiller", "distilbert-base-uncased.hf"):
        with pytest.raises(reported.ArchitectureNotBuildable, match=r"zoo.reported.state_dict"):
            zoo.load(name)
    assert main(["predict", "gfl-r50-cwd.coco.mmrazor"]) == 2  # the CLI reports it as an error, not a traceback


def test_a_release_page_entry_says_what_to_download_and_where(monkeypatch):
    monkeypatch.setattr(reported, "download", lambda *a, **k: pytest.fail("no download may start"))
    with pytest.raises(OfflineError) as err:
        zoo.load("resnet18-dkd.imagenet.mdistiller")
    msg = str(err.value)
    card = zoo.card("resnet18-dkd.imagenet.mdistiller")
    assert "releases/tag/checkpoints" in msg and str(reported.cache_path(card)) in msg and "file=PATH" in msg


def test_mmcls_resnet_keys_become_torchvision_keys():
    import torchvision

    tv = torchvision.models.resnet18(num_classes=10).state_dict()
    mm = {("head." + k if k.startswith("fc.") else "backbone." + k): v for k, v in tv.items()}
    ckpt = {"meta": {"epoch": 100}, "state_dict": {**{"architecture." + k: v for k, v in mm.items()},
                                                   "teacher.backbone.conv1.weight": torch.zeros(1)}}
    state = reported.convert(ckpt, "mmrazor", "mmcls-resnet")
    assert set(state) == set(tv) and torch.equal(state["fc.weight"], tv["fc.weight"])
    old = {"state_dict": {"architecture.model." + k: v for k, v in mm.items()}, "meta": {}}  # MMRazor 0.x
    assert set(reported.convert(old, "mmrazor", "mmcls-resnet")) == set(tv)
    with pytest.raises(ValueError, match="no 'architecture.' keys"):
        reported.convert({"state_dict": mm}, "mmrazor")


# ---------------------------------------------------------------- the real load path, served over HTTPS
def _reported_card(model, name, url, fmt="mmrazor", prefix=None, **rep):
    info = {"project": "UnitProject", "report_url": "https://example.org/metafile.yml", "download_url": url,
            "download": "direct", "sha256_prefix": prefix, "format": fmt, "key_map": None, "params_source": "counted",
            **rep}
    return make_card(model, name=name, source=url, metrics_source="reported", extra={"reported": info},
                     teacher={"name": "unit-teacher", "metrics": {"top1": 0.8}, "params": 1_000_000})


def _mmrazor_checkpoint(model, folder: Path) -> tuple[Path, str]:
    """An MMRazor 1.x-style file: the student under 'architecture.', a teacher and a distiller beside it; named
    like OpenMMLab's files, with its sha256's first 8 hex digits."""
    state = {"architecture." + k: v for k, v in model.state_dict().items()}
    state["teacher.conv1.weight"] = torch.randn(4, 1, 3, 3)
    state["distiller.connectors.loss_s4.weight"] = torch.randn(2, 2)
    tmp = folder / "ckpt.pth"
    torch.save({"meta": {"mmengine_version": "0.8.0", "epoch": 3}, "state_dict": state}, tmp)
    sha = hashlib.sha256(tmp.read_bytes()).hexdigest()
    path = folder / f"unit_student_20240101-{sha[:8]}.pth"
    tmp.rename(path)
    return path, sha


def test_load_downloads_checks_the_prefix_converts_and_caches(https_server, tiny_model):
    root, base = https_server
    path, sha = _mmrazor_checkpoint(tiny_model, root)
    zoo.register(_reported_card(tiny_model, "mmr.unit", f"{base}/{path.name}", prefix=sha[:8]))
    model = zoo.load("mmr.unit", progress=False)
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(model(x), tiny_model(x)) and not model.training
    assert model.card.metrics_source == "reported" and model.card.name == "mmr.unit"
    cached = reported.cache_path(model.card)
    assert cached.read_bytes() == path.read_bytes() and Handler.requests == [f"/{path.name}"]
    zoo.load("mmr.unit", progress=False)
    assert Handler.requests == [f"/{path.name}"]  # the verified cache serves the second load
    assert set(reported.state_dict("mmr.unit")) == set(tiny_model.state_dict())  # teacher and distiller dropped


def test_a_wrong_hash_is_refused_and_the_download_deleted(https_server, tiny_model):
    root, base = https_server
    path, sha = _mmrazor_checkpoint(tiny_model, root)
    wrong = "0" * 8 if not sha.startswith("0" * 8) else "f" * 8
    zoo.register(_reported_card(tiny_model, "mmr.bad", f"{base}/{path.name}", prefix=wrong))
    with pytest.raises(ChecksumError, match=f"sha256 starting with {wrong}") as err:
        zoo.load("mmr.bad", progress=False)
    assert "deleted" in str(err.value) and not reported.cache_path(zoo.card("mmr.bad")).exists()
    # a full sha256 in the card's files outranks the prefix
    card = replace(_reported_card(tiny_model, "mmr.full", f"{base}/{path.name}", prefix=sha[:8]),
                   files=[zoo.registry.FileRef(path.name, "a" * 64, path.stat().st_size)])
    zoo.register(card)
    with pytest.raises(ChecksumError, match="a" * 64):
        zoo.load("mmr.full", progress=False)


def test_offline_the_error_says_what_to_download_from_where_and_where_to_put_it(tiny_model, tmp_path):
    url = "https://127.0.0.1:9/mmrazor/unit_student-1234abcd.pth"  # nothing listens on port 9
    card = zoo.register(_reported_card(tiny_model, "mmr.offline", url, prefix="1234abcd"))
    with pytest.raises(OfflineError) as err:
        zoo.load("mmr.offline", progress=False)
    msg = str(err.value)
    assert url in msg and "1234abcd" in msg and str(reported.cache_path(card)) in msg and "file=PATH" in msg
    assert "UnitProject" in msg and "could not be downloaded" in msg


def test_a_local_file_loads_offline_and_a_wrong_one_is_refused(tiny_model, tmp_path):
    path, sha = _mmrazor_checkpoint(tiny_model, tmp_path)
    zoo.register(_reported_card(tiny_model, "mmr.local", "https://127.0.0.1:9/x-" + sha[:8] + ".pth", prefix=sha[:8]))
    model = zoo.load("mmr.local", file=path)
    assert torch.equal(model.conv1.weight, tiny_model.conv1.weight)
    other = tmp_path / "other.pth"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(ChecksumError, match="is not the checkpoint of 'mmr.local'"):
        zoo.load("mmr.local", file=other)
    assert other.exists()  # the user's own file is never deleted
    with pytest.raises(FileNotFoundError):
        zoo.load("mmr.local", file=tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="file= is the local checkpoint of a reported"):
        zoo.load("resnet20.fmnist", file=path)


def test_torchdistill_and_archive_members(tiny_model, tmp_path):
    ckpt = tmp_path / "ilsvrc2012-resnet8_from_resnet56.pt"
    torch.save({"model": tiny_model.state_dict(), "optimizer": {"state": {}}, "best_value": 71.37,
                "args": argparse.Namespace(lr=0.1, world_size=3), "config": {"train": {"epochs": 100}}}, ckpt)
    zoo.register(_reported_card(tiny_model, "td.unit", "https://127.0.0.1:9/td.pt", fmt="torchdistill"))
    assert torch.equal(zoo.load("td.unit", file=ckpt).fc.weight, tiny_model.fc.weight)
    archive = tmp_path / "imagenet.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(ckpt, "imagenet/kd/" + ckpt.name)
    card = zoo.register(_reported_card(tiny_model, "td.zip", "https://127.0.0.1:9/imagenet.zip", fmt="torchdistill",
                                       download="archive", archive_member="imagenet/kd/" + ckpt.name))
    assert torch.equal(zoo.load("td.zip", file=archive).fc.weight, tiny_model.fc.weight)
    assert reported.cache_path(card).is_file()
    zoo.register(replace(card, name="td.zip2", extra={"reported": {**card.extra["reported"], "archive_member": "imagenet/x.pt"}}))
    with pytest.raises(FileNotFoundError, match=r"has no imagenet/x.pt"):
        zoo.load("td.zip2", file=archive)


class NotAllowed:
    pass


def test_a_checkpoint_with_arbitrary_objects_is_not_unpickled(tiny_model, tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": tiny_model.state_dict(), "hook": NotAllowed()}, path)
    zoo.register(_reported_card(tiny_model, "td.evil", "https://127.0.0.1:9/evil.pth", fmt="torchdistill"))
    with pytest.raises(ValueError, match="cannot be read safely"):
        zoo.load("td.evil", file=path)
    # a folder, an empty file, random bytes and a broken zip of the user's each say what they are
    with pytest.raises(IsADirectoryError, match="is a folder"):
        zoo.load("td.evil", file=tmp_path)
    for name, data in (("empty.pth", b""), ("noise.pth", bytes(range(7, 200)))):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match="is not a PyTorch checkpoint"):
            zoo.load("td.evil", file=tmp_path / name)
    card = zoo.register(_reported_card(tiny_model, "td.zip3", "https://127.0.0.1:9/imagenet.zip", fmt="torchdistill",
                                       download="archive", archive_member="imagenet/kd/x.pt"))
    (tmp_path / "broken.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"not a zip archive; give the archive from https://127.0.0.1:9/imagenet.zip"):
        zoo.load(card.name, file=tmp_path / "broken.zip")


def test_hub_entries_fetch_through_huggingface_hub(tiny_model, monkeypatch):
    from safetensors.torch import save_file

    calls = []

    def fake_hf_download(repo, filename, dest_dir, revision=None):
        calls.append((repo, filename, revision))
        Path(dest_dir).mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in tiny_model.state_dict().items()}, str(Path(dest_dir) / filename))
        return Path(dest_dir) / filename

    monkeypatch.setattr(reported, "hf_download", fake_hf_download)
    card = _reported_card(tiny_model, "hf.unit", "https://huggingface.co/org/unit", fmt="hf", download="hf",
                          file="model.safetensors")
    zoo.register(replace(card, source="hf://org/unit@abc123"))
    model = zoo.load("hf.unit")
    assert calls == [("org/unit", "model.safetensors", "abc123")]
    assert torch.equal(model.conv1.weight, tiny_model.conv1.weight)


def test_the_cards_file_travels_in_the_wheel():
    """pyproject ships '*/*.json' of every package: zoo/cards/reported.json matches it."""
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '"*" = [' in text and '"*/*.json"' in text.split('"*" = [', 1)[1].split("]", 1)[0]
    assert reported.CARDS_FILE.relative_to(Path(zoo.__file__).parent).as_posix() == "cards/reported.json"
    assert json.loads(reported.CARDS_FILE.read_text())["schema_version"] == 1


def test_the_plot_of_a_task_draws_one_panel_per_data_set_with_the_reported_entries(tmp_path, capsys):
    assert main(["compare", "--task", "classification", "--plot", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").stat().st_size > 20_000 and "plot:" in capsys.readouterr().out
