import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import zoo
from zoo import hub
from zoo.classification.models import build_model
from zoo.registry import ModelCard, UnknownModelError

from conftest import make_card


def test_save_load_round_trip(tmp_path, tiny_model):
    card = zoo.save(tiny_model, tmp_path / "ckpt", make_card(tiny_model))
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} == {"model.safetensors", "config.json", "README.md"}
    loaded = zoo.load(tmp_path / "ckpt")
    assert not loaded.training
    assert loaded.card == card
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(loaded(x), tiny_model(x))
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["architecture"] == "resnet8" and config["config"]["in_channels"] == 1


def test_fp16_save_halves_the_file_and_loads_as_fp32(tmp_path, tiny_model):
    full = zoo.save(tiny_model, tmp_path / "fp32", make_card(tiny_model))
    half = zoo.save(tiny_model, tmp_path / "fp16", make_card(tiny_model), dtype=torch.float16)
    assert half.file("model.safetensors").size < 0.6 * full.file("model.safetensors").size
    loaded = zoo.load(tmp_path / "fp16")
    assert loaded.conv1.weight.dtype == torch.float32
    assert torch.equal(loaded.conv1.weight, tiny_model.conv1.weight.half().float())


def test_readme_card_has_model_index_and_round_trips(tmp_path, tiny_model):
    import yaml

    card = zoo.save(tiny_model, tmp_path / "c", make_card(tiny_model, metrics={"top1": 0.9123}))
    text = (tmp_path / "c" / "README.md").read_text()
    front = yaml.safe_load(text.split("---")[1])
    result = front["model-index"][0]["results"][0]
    assert result["metrics"][0] == {"type": "accuracy", "value": 0.9123, "name": "top1"}
    assert result["dataset"]["split"] == "test"
    assert hub.parse_card(text) == card


@pytest.mark.parametrize("damage", ["truncate", "flip_byte"])
def test_damaged_weights_fail_with_sha256_error(tmp_path, tiny_model, damage):
    card = zoo.save(tiny_model, tmp_path / "c", make_card(tiny_model))
    path = tmp_path / "c" / "model.safetensors"
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[-10] ^= 0xFF  # inside the tensor data: still a parseable safetensors file
    path.write_bytes(bytes(data))
    with pytest.raises(zoo.ChecksumError, match="sha256 mismatch") as err:
        zoo.load(tmp_path / "c")
    assert card.file("model.safetensors").sha256 in str(err.value)


@pytest.mark.parametrize("content", [b"", b"\x10" * 100, "half"])
def test_a_file_that_matches_its_card_but_is_no_safetensors_file_is_a_value_error(tmp_path, tiny_model, content):
    import hashlib

    card = zoo.save(tiny_model, tmp_path / "c", make_card(tiny_model))
    path, readme = tmp_path / "c" / "model.safetensors", tmp_path / "c" / "README.md"
    blob = path.read_bytes()[:1000] if content == "half" else content
    path.write_bytes(blob)  # and the card rewritten to match it: the sha256 check passes
    ref = card.file("model.safetensors")
    readme.write_text(readme.read_text().replace(ref.sha256, hashlib.sha256(blob).hexdigest())
                      .replace(f"size: {ref.size}", f"size: {len(blob)}"))
    with pytest.raises(ValueError, match="is not a valid safetensors file") as err:
        zoo.load(tmp_path / "c")
    assert not isinstance(err.value, zoo.ChecksumError) and str(path) in str(err.value)


def test_nothing_is_loaded_from_a_tampered_file(tmp_path, tiny_model, monkeypatch):
    zoo.save(tiny_model, tmp_path / "c", make_card(tiny_model))
    path = tmp_path / "c" / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    calls = []
    import safetensors.torch  # hub reads the weights through it, imported where they are read

    monkeypatch.setattr(safetensors.torch, "load", lambda blob: calls.append(1))
    with pytest.raises(zoo.ChecksumError):
        zoo.load(tmp_path / "c")
    assert calls == []


def test_discovery_never_lets_an_alias_shadow_another_entrys_name(tiny_model):
    from zoo.registry import Registry

    first, second = make_card(tiny_model, name="a.fmnist"), make_card(tiny_model, name="b.fmnist")
    hijack = make_card(tiny_model, name="z.fmnist", aliases=["a.fmnist", "zz"])  # discovered before a.fmnist
    registry = Registry(discover=lambda: [hijack, first, second, make_card(tiny_model, name="b.fmnist")])
    with pytest.warns(UserWarning) as caught:
        assert registry.get("a.fmnist") is first  # the alias was found first, the name still wins
    assert registry.get("zz") is hijack and registry.get("b.fmnist") is second
    messages = sorted(str(w.message) for w in caught)
    assert messages == ["alias 'a.fmnist' of zoo entry 'z.fmnist' is already a name of 'a.fmnist'; the alias is ignored",
                        "two zoo entries are named 'b.fmnist'; the first one found is kept"]


def test_unknown_name_lists_close_matches(tmp_path, tiny_model, monkeypatch):
    from zoo.api import REGISTRY

    monkeypatch.setattr(REGISTRY, "_cards", {})
    monkeypatch.setattr(REGISTRY, "_discovered", True)
    zoo.register(make_card(tiny_model, name="resnet20.fmnist"))
    zoo.register(make_card(tiny_model, name="resnet56.fmnist"))
    with pytest.raises(UnknownModelError) as err:
        zoo.load("resnet2O.fmnist")
    msg = str(err.value)
    assert "resnet2O.fmnist" in msg and "resnet20.fmnist" in msg and "Did you mean" in msg
    zoo.register(make_card(tiny_model, name="resnet32.fmnist", aliases=["resnet32.fashion-mnist"]))
    with pytest.raises(UnknownModelError) as err:
        zoo.load("resnet3.fmnist")
    hint = str(err.value).split("Did you mean: ")[1].split("?")[0].split(", ")
    assert "resnet32.fmnist" in hint and "resnet32.fashion-mnist" not in hint  # one name per entry


def test_wrong_architecture_names_missing_and_unexpected_keys(tmp_path, tiny_model):
    card = zoo.save(tiny_model, tmp_path / "c", make_card(tiny_model))
    # Claim the weights belong to a deeper network with projection shortcuts.
    wrong = ModelCard(**{**card.to_dict(), "architecture": "resnet14", "config": {**card.config, "shortcut": "B"}})
    with pytest.raises(zoo.StateDictMismatchError) as err:
        hub.load_dir(tmp_path / "c", wrong)
    msg = str(err.value)
    assert "missing keys: layer1.1." in msg and "more)" in msg
    assert "unexpected keys: none" in msg


def test_unexpected_keys_are_named(tmp_path, tiny_model):
    deeper = build_model("resnet14", in_channels=1)
    card = zoo.save(deeper, tmp_path / "c", make_card(deeper))
    wrong = ModelCard(**{**card.to_dict(), "architecture": "resnet8"})
    with pytest.raises(zoo.StateDictMismatchError, match=r"unexpected keys: .*layer1\.1\."):
        hub.load_dir(tmp_path / "c", wrong)


def test_a_killed_save_leaves_the_old_file_intact(tmp_path, tiny_model):
    """SIGKILL a process in the middle of writing the weights: the old checkpoint still loads."""
    zoo.save(tiny_model, tmp_path / "c", make_card(tiny_model))
    before = (tmp_path / "c" / "model.safetensors").read_bytes()
    script = textwrap.dedent(f"""
        import os, sys, time
        import zoo.io
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from conftest import make_card
        from zoo.classification.models import build_model
        import zoo
        real = zoo.io.os.fsync
        def slow_fsync(fd):
            print("writing", flush=True)
            time.sleep(60)
        zoo.io.os.fsync = slow_fsync
        m = build_model("resnet8", in_channels=1)
        zoo.save(m, {str(tmp_path / "c")!r}, make_card(m))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"  # the new bytes are in a temp file, not yet renamed
    proc.kill()
    proc.wait()
    assert (tmp_path / "c" / "model.safetensors").read_bytes() == before
    zoo.load(tmp_path / "c")  # and its sha256 still matches the card


def test_a_failed_save_leaves_no_temp_file(tmp_path, tiny_model, monkeypatch):
    from zoo import io as zio

    zoo.save(tiny_model, tmp_path / "c", make_card(tiny_model))
    before = (tmp_path / "c" / "model.safetensors").read_bytes()

    def boom(*_):
        raise OSError("disk full")

    monkeypatch.setattr(zio.os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        zoo.save(tiny_model, tmp_path / "c", make_card(tiny_model, name="other"))
    assert (tmp_path / "c" / "model.safetensors").read_bytes() == before
    assert not list((tmp_path / "c").glob("*.tmp"))


def test_card_validation_rejects_bad_fields(tiny_model):
    with pytest.raises(ValueError, match="task must be one of"):
        make_card(tiny_model, task="classify")
    with pytest.raises(ValueError, match=r"top1=93.1 is outside its range \[0.0, 1.0\] \(a fraction\)"):
        make_card(tiny_model, metrics={"top1": 93.1})
    with pytest.raises(ValueError, match="standard classification names"):
        make_card(tiny_model, metrics={"acc": 0.9})
    with pytest.raises(ValueError, match="unknown field"):
        ModelCard.from_dict({**make_card(tiny_model).to_dict(), "colour": "red"})
    for name in ("../escape", "a/b", "has space", "x=y", "", ".hidden"):  # a name is one folder name
        with pytest.raises(ValueError, match="a zoo name is letters, digits"):
            ModelCard(**{**make_card(tiny_model).to_dict(), "name": name})
    with pytest.raises(ValueError, match="got 'bad/alias'"):
        ModelCard(**{**make_card(tiny_model).to_dict(), "aliases": ["bad/alias"]})
    assert ModelCard(**{**make_card(tiny_model).to_dict(), "name": "lraspp-resnet8-cwd+pixel.fmnist-scenes"})


def test_load_refuses_a_card_without_sha256(tmp_path, tiny_model):
    card = zoo.save(tiny_model, tmp_path / "c", make_card(tiny_model))
    with pytest.raises(zoo.ChecksumError, match="no sha256"):
        hub.load_dir(tmp_path / "c", ModelCard(**{**card.to_dict(), "files": []}))


def test_cache_dir_follows_kdzoo_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KDZOO_HOME", str(tmp_path / "h"))
    assert hub.cache_dir() == tmp_path / "h"
    monkeypatch.delenv("KDZOO_HOME")
    assert hub.cache_dir() == Path.home() / ".cache" / "kdzoo"
