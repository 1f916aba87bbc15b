"""Other projects' published students as zoo entries, with the metrics their publishers *report*.

The cards live in ``zoo/cards/reported.json`` (shipped in the package, no weights). Each is an ordinary
`ModelCard` with ``metrics_source = "reported"``; its ``extra["reported"]`` says where the numbers come from
and how to get and convert the checkpoint:

- ``project``, ``report_url`` (the README, metafile or model card, pinned to a commit where known) and
  ``report`` (the same as ``repo@commit:path``);
- ``download_url`` and ``download``: ``direct`` (a file), ``archive`` (a zip holding ``archive_member``),
  ``page`` (a release page: a person downloads the asset) or ``hf`` (``file`` of the card's ``hf://`` repo);
- ``sha256_prefix``: the publisher's hash prefix where it gives one (OpenMMLab file names end in
  ``sha256[:8]``), checked after every download; a full sha256 in ``card.files`` is checked instead when present;
- ``format`` (``mmrazor``, ``torchdistill``, ``mdistiller``, ``hf``) and ``key_map`` (``mmcls-resnet``): how
  `convert` turns the file into the student's state dict;
- ``params_source`` and ``notes``: how params were counted and what is unverified.

``zoo.load(name)`` on such an entry (see `load`): kdzoo builds the architecture when it can (e.g. a
torchvision ResNet-18), fetches the file once into ``$KDZOO_HOME/reported/NAME/`` (or reads ``file=``),
checks its hash, converts it and returns the model with its card. When kdzoo cannot build the
architecture (an mmdet single-stage detector, an mmdet or mmseg model without the OpenMMLab bridge,
mdistiller's CIFAR nets, a transformers model), ``zoo.load`` refuses
before downloading anything, with `ArchitectureNotBuildable`, and `state_dict` returns the converted
weights instead: a model of the wrong class is worse than a clear refusal, and the weights still reach
the publisher's own code. Offline, the error names the URL, the hash and the path to put the file at.
"""
from __future__ import annotations

import argparse
import json
import os
import zipfile
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from .download import OfflineError, download, hf_download
from .io import sha256_file
from .registry import ModelCard

if TYPE_CHECKING:  # torch is imported where weights are read: listing the reported cards stays cheap
    import torch
    from torch import nn

CARDS_FILE = Path(__file__).parent / "cards" / "reported.json"
DOWNLOAD_KINDS = ("direct", "archive", "page", "hf")
FORMATS = ("mmrazor", "torchdistill", "mdistiller", "hf", "state_dict")
IMAGENET_LABELS = "torchvision:imagenet-1k"


class ArchitectureNotBuildable(NotImplementedError):
    """kdzoo has no builder for a reported entry's architecture; `state_dict` gives its converted weights."""


@lru_cache(maxsize=1)
def _raw_cards() -> tuple[dict[str, Any], ...]:
    data = json.loads(CARDS_FILE.read_text(encoding="utf-8"))
    if data.get("schema_version") != 1 or not isinstance(data.get("cards"), list):
        raise ValueError(f"{CARDS_FILE}: expected {{'schema_version': 1, 'cards': [...]}}")
    return tuple(data["cards"])


def cards() -> list[ModelCard]:
    """The reported entries' cards (validated: a card without its report URL, download or format is an error).

    Raises:
        ValueError: a card of the data file is invalid; the message names it and the problem.
    """
    out = []
    for raw in _raw_cards():
        card = ModelCard.from_dict(json.loads(json.dumps(raw)))  # a fresh copy each time
        problems = validate(card)
        if problems:
            raise ValueError(f"{CARDS_FILE.name}: reported card {card.name!r}: " + "; ".join(problems))
        out.append(card)
    return out


def validate(card: ModelCard) -> list[str]:
    """Problems of a reported card beyond the ModelCard schema (empty when it is valid)."""
    problems = []
    if card.metrics_source != "reported":
        problems.append("metrics_source must be 'reported'")
    info = card.extra.get("reported")
    if not isinstance(info, dict):
        return problems + ["extra.reported must describe the report and the download"]
    for key in ("project", "report_url", "download_url", "download", "format"):
        if not info.get(key):
            problems.append(f"extra.reported.{key} is missing")
    for key in ("report_url", "download_url"):
        parsed = urlparse(str(info.get(key) or ""))
        if info.get(key) and (parsed.scheme not in ("https", "http") or not parsed.netloc):
            problems.append(f"extra.reported.{key} {info.get(key)!r} is not an http(s) URL")
    if info.get("download") not in DOWNLOAD_KINDS:
        problems.append(f"extra.reported.download must be one of {DOWNLOAD_KINDS}, got {info.get('download')!r}")
    if info.get("download") == "archive" and not info.get("archive_member"):
        problems.append("an archive download needs extra.reported.archive_member")
    if info.get("format") not in FORMATS:
        problems.append(f"extra.reported.format must be one of {FORMATS}, got {info.get('format')!r}")
    prefix = info.get("sha256_prefix")
    if prefix is not None and (not isinstance(prefix, str) or not prefix or len(prefix) > 64
                               or any(c not in "0123456789abcdef" for c in prefix)):
        problems.append(f"extra.reported.sha256_prefix must be lowercase hex digits, got {prefix!r}")
    return problems


def is_reported(card: ModelCard) -> bool:
    """Whether ``card`` is a published checkpoint of another project that `load` fetches and converts."""
    return card.metrics_source == "reported" and isinstance(card.extra.get("reported"), dict)


def info(card: ModelCard) -> dict[str, Any]:
    """The card's ``extra["reported"]``.

    Raises:
        ValueError: the card is not a reported entry.
    """
    if not is_reported(card):
        raise ValueError(f"{card.name!r} is not a reported entry (metrics_source {card.metrics_source!r})")
    return card.extra["reported"]


# ---------------------------------------------------------------- where the file comes from
def file_name(card: ModelCard) -> str:
    """The checkpoint's file name: ``file`` for hub entries, the archive member's or the URL's last part."""
    rep = info(card)
    if rep.get("file"):
        return str(rep["file"])
    if rep["download"] == "archive":
        return Path(rep["archive_member"]).name
    return Path(urlparse(rep["download_url"]).path).name or "checkpoint.pth"


def cache_path(card: ModelCard) -> Path:
    """Where the checkpoint of ``card`` is kept: ``$KDZOO_HOME/reported/NAME/FILE``. A file put there by hand
    is used as if downloaded (its hash is checked)."""
    from .hub import cache_dir

    return cache_dir() / "reported" / card.name / file_name(card)


def expected_hash(card: ModelCard) -> tuple[str | None, str]:
    """The hash a file of ``card`` must have: the full sha256 a ``card.files`` entry of its name lists, else the
    publisher's prefix, else None; and a phrase naming it for messages."""
    name = file_name(card)
    ref = next((f for f in card.files if f.name == name), None)
    if ref is not None:
        return ref.sha256, f"sha256 {ref.sha256}"
    prefix = info(card).get("sha256_prefix")
    if prefix:
        return prefix, f"sha256 starting with {prefix} ({info(card).get('hash_source') or 'the publisher'})"
    return None, "no hash (the publisher gives none)"


def check_hash(path: Path, card: ModelCard, *, delete: bool = False) -> str:
    """Compare ``path``'s sha256 with the card's full hash or the publisher's prefix; returns the sha256.

    Raises:
        ChecksumError: they differ (the file is deleted first when ``delete``: kdzoo downloaded it).
    """
    from .hub import ChecksumError

    actual = sha256_file(path)
    want, what = expected_hash(card)
    if want is not None and not actual.startswith(want):
        if delete:
            path.unlink(missing_ok=True)
        raise ChecksumError(
            f"{path} is not the checkpoint of {card.name!r}: it should have {what}, it has sha256 {actual}. "
            + ("The download was deleted; nothing was loaded." if delete else "Nothing was loaded; "
               f"download {info(card)['download_url']} again.")
        )
    return actual


def _how_to_get(card: ModelCard, target: Path) -> str:
    rep = info(card)
    what = (f"the release asset of this model from {rep['download_url']}" if rep["download"] == "page"
            else f"{rep['download_url']} and take {rep['archive_member']} out of it" if rep["download"] == "archive"
            else f"{file_name(card)} of {card.source}" if rep["download"] == "hf"
            else rep["download_url"])
    return (f"Download {what} ({expected_hash(card)[1]}); put it at {target}, or pass its path: "
            f"zoo.load({card.name!r}, file=PATH).")


def fetch(card: ModelCard, *, file: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """The local checkpoint file of reported entry ``card``, hash-checked: ``file`` when given, else the cache
    (`cache_path`), else downloaded there (``direct``, ``archive`` and ``hf`` entries).

    Raises:
        FileNotFoundError: ``file`` does not exist.
        OfflineError: the file could not be downloaded, or is a release-page asset that a person must
            download; the message says what to download, from where, and where to put it.
        ChecksumError: the file's hash is not the card's.
    """
    if file is not None:
        path = Path(file).expanduser()
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a folder; give the checkpoint file itself for {card.name!r}")
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist (the checkpoint file given for {card.name!r})")
        if path.suffix == ".zip" and info(card)["download"] == "archive":
            return _extract_member(path, card, cache_path(card), downloaded=False)
        check_hash(path, card)
        return path
    target = cache_path(card)
    if target.is_file():
        check_hash(target, card)
        return target
    rep = info(card)
    if rep["download"] == "page":
        raise OfflineError(f"{card.name!r} ({rep['project']}) is published as a release-page asset, which kdzoo does "
                           f"not download by itself. {_how_to_get(card, target)}")
    try:
        if rep["download"] == "hf":
            repo, _, rev = card.source[len("hf://"):].partition("@")
            hf_download(repo, file_name(card), target.parent, revision=rev or None)
        elif rep["download"] == "archive":
            archive = target.parent / Path(urlparse(rep["download_url"]).path).name
            if not archive.is_file():
                download(rep["download_url"], archive, progress=progress)
            return _extract_member(archive, card, target)
        else:
            download(rep["download_url"], target, progress=progress)
    except OfflineError as e:
        raise OfflineError(f"zoo entry {card.name!r} is a published checkpoint of {rep['project']} (metrics reported, "
                           f"weights not bundled) and could not be downloaded ({e}). {_how_to_get(card, target)}") from None
    check_hash(target, card, delete=True)
    return target


def _extract_member(archive: Path, card: ModelCard, target: Path, downloaded: bool = True) -> Path:
    """``archive_member`` of the zip ``archive`` copied to ``target``, hash-checked; ``downloaded``: the archive
    is kdzoo's download (a bad one is to be fetched again), not a file the user gave."""
    member = info(card)["archive_member"]
    try:
        with zipfile.ZipFile(archive) as z:
            names = z.namelist()
            if member not in names:
                near = [n for n in names if n.endswith(Path(member).name)]
                raise FileNotFoundError(f"{archive} has no {member}" + (f"; files of that name: {', '.join(near[:10])}"
                                        if near else f" (it holds {len(names)} files)") + f". Take the student's "
                                        f"checkpoint out by hand and pass it: zoo.load({card.name!r}, file=PATH).")
            target.parent.mkdir(parents=True, exist_ok=True)
            part = target.with_name(target.name + ".part")
            with z.open(member) as src, open(part, "wb") as dst:
                while block := src.read(1 << 20):
                    dst.write(block)
            os.replace(part, target)
    except zipfile.BadZipFile:
        advice = "delete it and download it again" if downloaded else f"give the archive from {info(card)['download_url']}"
        raise ValueError(f"{archive} is not a zip archive; {advice}") from None
    check_hash(target, card, delete=True)
    return target


# ---------------------------------------------------------------- reading and converting
def read_checkpoint(path: str | os.PathLike) -> Any:
    """The object stored in ``path``: a safetensors file's tensors, or a PyTorch pickle read with
    ``weights_only=True`` (tensors, containers, numbers, strings; ``argparse.Namespace``, which torchdistill
    stores as ``args``, is the one class allowed besides).

    Raises:
        ValueError: the file holds other objects (the message names the class) or is not a checkpoint.
    """
    import torch

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # the unpickler raises UnpicklingError, RuntimeError, EOFError, ...
        first = (str(e).splitlines() or [""])[0]
        if path.stat().st_size == 0 or not _looks_like_torch_file(path):
            raise ValueError(f"{path} is not a PyTorch checkpoint (neither a zip-format torch.save file nor a pickle; "
                             f"{path.stat().st_size} bytes): check that the file was downloaded whole") from None
        raise ValueError(f"{path} cannot be read safely as a checkpoint ({type(e).__name__}: {first}). "
                         "kdzoo unpickles tensors only: load it with the publisher's code, save "
                         "checkpoint['state_dict'] (or ['model']) with torch.save, and pass that file.") from None


def _looks_like_torch_file(path: Path) -> bool:
    """A torch.save file: a zip archive (torch >= 1.6) or a pickle (protocol 2+ starts with 0x80)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head.startswith(b"PK") or head[:1] == b"\x80"


def _tensors(obj: Any, where: str) -> dict[str, torch.Tensor]:
    import torch

    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{where} is not a state dict of tensors")
    return dict(obj)


def _strip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def convert(checkpoint: Any, fmt: str, key_map: str | None = None) -> dict[str, torch.Tensor]:
    """The student's state dict from a published checkpoint of format ``fmt``:

    - ``mmrazor``: ``checkpoint["state_dict"]`` (or the dict itself); only keys under ``architecture.``
      are kept (the teacher's ``teacher.`` and the distiller's ``distiller.`` keys are dropped) and the
      prefix is stripped, with MMRazor 0.x's ``architecture.model.`` as well;
    - ``torchdistill`` and ``mdistiller``: ``checkpoint["model"]``; when it holds an auxiliary wrapper
      (``student_model.`` keys beside others), the student's keys only;
    - ``hf`` and ``state_dict``: the checkpoint is the state dict.

    ``key_map="mmcls-resnet"`` then renames mmcls ResNet keys to torchvision's (``backbone.`` dropped,
    ``head.fc.`` -> ``fc.``).

    Raises:
        ValueError: the checkpoint does not have the format's layout (the message says what was found).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown checkpoint format {fmt!r}; known: {', '.join(FORMATS)}")
    if fmt == "mmrazor":
        state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else checkpoint
        state = _tensors(state, "the checkpoint's 'state_dict'")
        student = _strip(state, "architecture.")
        if not student:
            top = sorted({k.split(".", 1)[0] for k in state})
            raise ValueError(f"no 'architecture.' keys in this MMRazor checkpoint (its top-level prefixes: {', '.join(top)}); "
                             "it may be a plain mmcls/mmdet/mmseg checkpoint: use format 'state_dict'")
        if all(k.startswith("model.") for k in student):  # MMRazor 0.x: architecture.model.<key>
            student = _strip(student, "model.")
        state = student
    elif fmt in ("torchdistill", "mdistiller"):
        if not isinstance(checkpoint, dict) or "model" not in checkpoint:
            found = sorted(checkpoint)[:10] if isinstance(checkpoint, dict) else type(checkpoint).__name__
            raise ValueError(f"a {fmt} checkpoint is {{'model': state_dict, ...}}; this one has {found}")
        state = _tensors(checkpoint["model"], "the checkpoint's 'model'")
        wrapped = _strip(state, "student_model.")
        if wrapped and len(wrapped) < len(state):
            state = wrapped
    else:
        state = _tensors(checkpoint, "the checkpoint")
    if key_map == "mmcls-resnet":
        state = {("fc." + k[len("head.fc."):] if k.startswith("head.fc.") else
                  k[len("backbone."):] if k.startswith("backbone.") else k): v for k, v in state.items()}
    elif key_map is not None:
        raise ValueError(f"unknown key map {key_map!r}; known: mmcls-resnet")
    return state


def state_dict(name_or_card: str | ModelCard, *, file: str | os.PathLike | None = None,
               progress: bool = True) -> dict[str, torch.Tensor]:
    """The converted student state dict of a reported entry (fetched as `fetch` does), for any architecture,
    including those kdzoo cannot build: load it into the publisher's model class yourself."""
    card = _card(name_or_card)
    rep = info(card)
    return convert(read_checkpoint(fetch(card, file=file, progress=progress)), rep["format"], rep.get("key_map"))


def _card(name_or_card: str | ModelCard) -> ModelCard:
    if isinstance(name_or_card, ModelCard):
        return name_or_card
    from .api import REGISTRY

    return REGISTRY.get(name_or_card)


def buildable(card: ModelCard) -> tuple[bool, str]:
    """Whether kdzoo's task adapter builds ``card``'s architecture, and the builder's reason when it does not."""
    from .tasks import get_adapter

    try:
        get_adapter(card.task).build_model(card.architecture, card.config)
    except (ValueError, KeyError, TypeError, ImportError, NotImplementedError, FileNotFoundError) as e:
        return False, str(e)
    return True, ""


def load(card: ModelCard, *, file: str | os.PathLike | None = None, progress: bool = True) -> nn.Module:
    """The reported entry ``card`` as a ready model (eval mode, fp32, ``.card``, ``.preprocess``).

    Raises:
        ArchitectureNotBuildable: kdzoo cannot build the architecture (checked before any download); the
            message points at `state_dict`.
        OfflineError, FileNotFoundError, ChecksumError: as `fetch`.
        StateDictMismatchError: the converted weights do not fit the architecture (missing and unexpected keys named).
    """
    from .hub import load_state_checked
    from .tasks import get_adapter

    ok, why = buildable(card)
    rep = info(card)
    if not ok:
        raise ArchitectureNotBuildable(
            f"{card.name!r} is {card.architecture} from {rep['project']}, which kdzoo cannot build ({why}). Its weights "
            f"are still available: zoo.reported.state_dict({card.name!r}) downloads and converts them (the student's "
            f"keys only) for the publisher's own model code; the report is {rep['report_url']}.")
    state = state_dict(card, file=file, progress=progress)
    adapter = get_adapter(card.task)
    model = adapter.build_model(card.architecture, card.config)
    # a model that wraps the publisher's (an mmseg segmentor under .mm) names the prefix its keys take
    prefix = getattr(model, "checkpoint_prefix", "")
    if prefix and not all(k.startswith(prefix) for k in state):
        state = {prefix + k: v for k, v in state.items()}
    load_state_checked(model, {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()},
                       f"converted {rep['project']} checkpoint of {card.name!r}")
    if not card.labels and rep.get("labels") == IMAGENET_LABELS:
        from torchvision.models import ResNet18_Weights

        card = replace(card, labels=list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"]))
    model.eval()
    model.card = card
    model.preprocess = adapter.preprocessor(card, None)
    return model

