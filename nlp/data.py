"""Offline text data: labelled tasks from Debian's WordNet and fortunes, a GCIDE corpus, GLUE when online.

Tasks (`load_task`):

- ``wordnet-topic``: every WordNet 3.0 synset's gloss (definition and examples), labelled by its
  lexicographer file: 45 topics such as ``noun.animal`` or ``verb.motion`` (117,659 synsets, from
  Debian ``wordnet-base``). Splits are drawn per synset from a hash of its part of speech and offset,
  80/10/10 train/validation/test, so they are deterministic and disjoint by synset. Within a split the
  examples come in a fixed hash order (not sorted by part of speech), so ``subset(n)`` is a fair sample.
- ``fortunes``: the short texts of Debian ``fortunes``/``fortunes-min``, labelled by file (category);
  each distinct text once, split 80/10/10 by a hash of the text.
- ``glue/<name>`` (online): GLUE through `datasets` (sst2, cola, mrpc, qnli, rte, ...); sentence pairs are
  joined with the tokenizer's separator.
- your own: a Hugging Face `datasets.DatasetDict` (``text`` and ``label`` columns by default), in memory
  or as a folder written by ``save_to_disk`` (`hf_task`).

`load_corpus("gcide")` gives plain English text for general distillation: the definitions and
quotations of the GNU Collaborative International Dictionary of English (Debian ``dict-gcide``).
"""
from __future__ import annotations

import gzip
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

WORDNET_DIRS = ("/usr/share/wordnet",)
FORTUNES_DIRS = ("/usr/share/games/fortunes",)
GCIDE_FILES = ("/usr/share/dictd/gcide.dict.dz",)
SPLITS = ("train", "validation", "test")

# WordNet's 45 lexicographer files, by number (lexnames(5WN)).
LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact", "noun.attribute",
    "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling", "noun.food", "noun.group",
    "noun.location", "noun.motive", "noun.object", "noun.person", "noun.phenomenon", "noun.plant",
    "noun.possession", "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state",
    "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition", "verb.communication",
    "verb.competition", "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather", "adj.ppl",
)
TASKS = ("wordnet-topic", "fortunes")


class TextDataNotFoundError(FileNotFoundError):
    """The text data is not on this machine; the message says how to get it."""


@dataclass
class TextTask:
    """A labelled text split: ``texts[i]`` has label ``labels[i]`` (an index into ``classes``)."""

    name: str
    split: str
    texts: list[str]
    labels: list[int]
    classes: tuple[str, ...]
    source: str = ""
    ids: list[str] = field(default_factory=list)  # stable example ids (e.g. "n:00592535")

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")
        bad = [y for y in self.labels if not 0 <= y < len(self.classes)]
        if bad:
            raise ValueError(f"labels out of range 0..{len(self.classes) - 1}: {sorted(set(bad))[:5]}")

    def __len__(self) -> int:
        return len(self.texts)

    @classmethod
    def from_labels(cls, name: str, split: str, texts: Sequence[str], label_names: Sequence[str],
                    classes: Sequence[str]) -> "TextTask":
        """A task from label *names*; a name outside ``classes`` is an error naming it."""
        index = {c: i for i, c in enumerate(classes)}
        unknown = sorted({n for n in label_names if n not in index})
        if unknown:
            raise ValueError(f"unknown label(s) {unknown[:5]}; the classes are: {', '.join(classes)}")
        return cls(name, split, list(texts), [index[n] for n in label_names], tuple(classes))

    def subset(self, n: int) -> "TextTask":
        if not 1 <= n <= len(self.texts):
            raise ValueError(f"a subset of {self.name}/{self.split} needs 1..{len(self.texts)} examples, got {n}")
        return TextTask(self.name, self.split, self.texts[:n], self.labels[:n], self.classes, self.source, self.ids[:n])

    def to_hf(self) -> Any:
        """This split as a `datasets.Dataset` with columns ``text``, ``label`` (ClassLabel) and ``id``."""
        import datasets

        features = datasets.Features({"text": datasets.Value("string"),
                                      "label": datasets.ClassLabel(names=list(self.classes)),
                                      "id": datasets.Value("string")})
        ids = self.ids or [str(i) for i in range(len(self))]
        return datasets.Dataset.from_dict({"text": self.texts, "label": self.labels, "id": ids}, features=features)


def _find(env: str, candidates: Sequence[str], what: str, how: str) -> Path:
    for d in ([os.environ[env]] if os.environ.get(env) else []) + list(candidates):
        if Path(d).expanduser().exists():
            return Path(d).expanduser()
    raise TextDataNotFoundError(f"{what} not found (looked in ${env} and {', '.join(candidates)}). {how}")


def _key_hash(key: str) -> int:
    return int(hashlib.sha256(key.encode()).hexdigest()[:12], 16)


def split_of(key: str) -> str:
    """train / validation / test for an example key: 80/10/10 by a stable hash (disjoint, deterministic)."""
    bucket = _key_hash(key) % 10
    return "train" if bucket < 8 else "validation" if bucket == 8 else "test"


def _shuffled(rows: list, key) -> list:
    """``rows`` in the order of their keys' hash: a fixed pseudo-random order, so that the first n of a
    split (``subset``) are a random sample rather than, say, the nouns of a file sorted by part of speech."""
    return sorted(rows, key=lambda r: _key_hash("order:" + key(r)))


def parse_wordnet_data(lines: Sequence[str], pos: str) -> list[tuple[str, int, str, list[str]]]:
    """(synset id, lexicographer file number, gloss, lemmas) of each synset line of a ``data.<pos>`` file."""
    out = []
    for line in lines:
        if not line or line.startswith("  "):  # the licence header lines start with two spaces
            continue
        head, sep, gloss = line.partition(" | ")
        fields = head.split()
        if len(fields) < 4 or not sep:
            continue
        offset, lexfile, n_words = fields[0], int(fields[1]), int(fields[3], 16)
        lemmas = [fields[4 + 2 * i].replace("_", " ") for i in range(n_words)]
        out.append((f"{pos}:{offset}", lexfile, gloss.strip(), lemmas))
    return out


def wordnet_synsets(root: str | os.PathLike | None = None) -> list[tuple[str, int, str, list[str]]]:
    """Every synset of the WordNet database in ``root`` (default: Debian's /usr/share/wordnet)."""
    base = Path(root).expanduser() if root else _find("KDZOO_WORDNET", WORDNET_DIRS, "WordNet",
                                        "Install it: apt-get install wordnet-base (or set KDZOO_WORDNET to a WordNet dict/ folder).")
    out = []
    for pos, short in (("noun", "n"), ("verb", "v"), ("adj", "a"), ("adv", "r")):
        path = base / f"data.{pos}"
        if not path.exists():
            raise TextDataNotFoundError(f"{path} is missing: {base} is not a WordNet database folder (for a text "
                                        f"entry, --data-root / data_root is that folder, the one holding data.noun, "
                                        f"e.g. {WORDNET_DIRS[0]})")
        out += parse_wordnet_data(path.read_text(encoding="latin-1").splitlines(), short)
    return out


def wordnet_topic(split: str, root: str | os.PathLike | None = None) -> TextTask:
    rows = _shuffled([r for r in wordnet_synsets(root) if split_of(r[0]) == split and r[2]], key=lambda r: r[0])
    return TextTask("wordnet-topic", split, [r[2] for r in rows], [r[1] for r in rows], LEXNAMES,
                    source=str(root or "wordnet-base"), ids=[r[0] for r in rows])


def parse_fortunes(text: str) -> list[str]:
    """The entries of a fortune file (separated by lines holding a single ``%``), whitespace-normalised."""
    entries = re.split(r"^%\s*$", text, flags=re.M)
    return [" ".join(e.split()) for e in entries if e.strip()]


def fortunes(split: str, root: str | os.PathLike | None = None) -> TextTask:
    base = Path(root).expanduser() if root else _find("KDZOO_FORTUNES", FORTUNES_DIRS, "fortunes",
                                        "Install them: apt-get install fortunes fortunes-min (or set KDZOO_FORTUNES).")
    files = sorted(p for p in base.iterdir() if p.is_file() and not p.suffix and not p.is_symlink())
    if not files:
        raise TextDataNotFoundError(f"no fortune files in {base}")
    classes = tuple(p.name for p in files)
    seen: set[str] = set()
    texts, labels, ids = [], [], []
    for label, path in enumerate(files):
        for entry in parse_fortunes(path.read_text(encoding="utf-8", errors="replace")):
            if entry in seen:  # the same text under two categories would leak across splits
                continue
            seen.add(entry)
            key = hashlib.sha256(entry.encode()).hexdigest()[:16]
            if split_of(key) == split:
                texts.append(entry)
                labels.append(label)
                ids.append(key)
    order = _shuffled(list(range(len(ids))), key=lambda i: ids[i])
    return TextTask("fortunes", split, [texts[i] for i in order], [labels[i] for i in order], classes,
                    source=str(base), ids=[ids[i] for i in order])


def glue(name: str, split: str) -> TextTask:
    """A GLUE task through `datasets` (needs the network or the HF cache). Pairs are joined with ' [SEP] '
    and re-split by the tokenizer's pair handling in `encode`."""
    try:
        import datasets
    except ImportError:
        raise ImportError("GLUE tasks need `datasets`: pip install 'kdzoo[nlp]'") from None
    hf_split = {"test": "validation", "validation": "validation", "train": "train"}[split]  # GLUE test labels are hidden
    try:
        ds = datasets.load_dataset("glue", name, split=hf_split)
    except Exception as err:  # offline: ConnectionError, or a datasets-specific error
        raise TextDataNotFoundError(f"GLUE {name!r} could not be loaded through `datasets` ({type(err).__name__}: {err}). "
                                    "It needs the network or a populated HF cache.") from err
    columns = ["question", "sentence"] if name == "qnli" else None
    return task_from_hf(ds, f"glue/{name}", split, text_columns=columns, source="glue (datasets)")


FIRST_TEXT_COLUMNS = ("text", "sentence", "question", "sentence1", "question1", "premise", "content", "document")
SECOND_TEXT_COLUMNS = ("sentence2", "question2", "hypothesis")


def task_from_hf(dataset: Any, name: str, split: str, *, text_columns: Sequence[str] | None = None,
                 label_column: str = "label", source: str = "", rows: Sequence[int] | None = None) -> TextTask:
    """One split of a Hugging Face `datasets.Dataset` as a `TextTask`.

    The text is ``text_columns`` (one column, or two joined with ' [SEP] ', which `encode` re-splits into
    a tokenizer pair); by default the first of ``text``, ``sentence``, ``question``, ``sentence1``, ... and
    the second of ``sentence2``, ``question2``, ``hypothesis`` found. ``label_column`` holds integer class
    ids: its `datasets.ClassLabel` names are the classes; without a ClassLabel the classes are the ids as
    strings, 0..max. ``rows`` (the dataset rows these are, when they are a selection) are what errors name.

    Raises:
        ValueError: a named column is missing (the dataset's columns are listed), there is no text column,
            a text is not a string, a label is not an integer class id (a float, a string, None: the
            message says how to encode them) or is negative (e.g. GLUE's hidden test labels, -1).
    """
    columns = list(dataset.column_names)
    if text_columns is None:
        text_columns = [c for c in FIRST_TEXT_COLUMNS if c in columns][:1]
        text_columns += [c for c in SECOND_TEXT_COLUMNS if c in columns][:1] if text_columns else []
        if not text_columns:
            raise ValueError(f"{name}/{split}: no text column found among {columns}; name it with text_columns")
    missing = [c for c in [*text_columns, label_column] if c not in columns]
    if missing:
        raise ValueError(f"{name}/{split}: no column(s) {missing}; the dataset has {columns}")
    if not 1 <= len(text_columns) <= 2:
        raise ValueError(f"text_columns must name one column or a pair, got {list(text_columns)}")

    def row(i: int) -> int:
        return int(rows[i]) if rows is not None else i

    parts = [dataset[c] for c in text_columns]
    for column, values in zip(text_columns, parts):
        bad = next((i for i, v in enumerate(values) if not isinstance(v, str)), None)
        if bad is not None:
            raise ValueError(f"{name}/{split}: column {column!r} row {row(bad)} is a {type(values[bad]).__name__}, "
                             "not a string")
    texts = [" [SEP] ".join(r) for r in zip(*parts)]
    raw = list(dataset[label_column])
    bad = next((i for i, y in enumerate(raw) if isinstance(y, bool) or not hasattr(y, "__index__")), None)  # ints only
    if bad is not None:
        raise ValueError(f"{name}/{split}: label column {label_column!r} row {row(bad)} is {raw[bad]!r} "
                         f"({type(raw[bad]).__name__}); text tasks are classification and need integer class ids: "
                         f"encode the column first, e.g. dataset = dataset.class_encode_column({label_column!r})")
    labels = [int(y) for y in raw]
    if any(y < 0 for y in labels):
        raise ValueError(f"{name}/{split}: {sum(y < 0 for y in labels)} example(s) have a negative label "
                         "(hidden labels, as in GLUE's test splits); use a labelled split")
    feature = dataset.features.get(label_column)
    names = getattr(feature, "names", None)
    classes = tuple(names) if names else tuple(str(i) for i in range(max(labels, default=-1) + 1))
    return TextTask(name, split, texts, labels, classes, source=source or f"datasets ({name})")


def hf_task(data: Any, split: str, *, name: str | None = None, text_columns: Sequence[str] | None = None,
            label_column: str = "label") -> TextTask:
    """A split of a Hugging Face dataset: a `datasets.DatasetDict`, a `datasets.Dataset`, or a folder written
    by ``save_to_disk`` (read offline with `datasets.load_from_disk`).

    Splits: a split the dataset has is read as it is. Missing ones are formed from fixed hash buckets of the
    row index (10 buckets): without ``validation``, bucket 9 of ``train`` is held out as validation; a
    dataset with only a training split (a single `Dataset`) is split 80/10/10 (buckets 0-7 / 8 / 9); a
    dataset with ``validation`` but no ``test`` uses ``validation`` as its test split (as GLUE's hidden test
    labels force). Every split is read in the training split's label space: ClassLabel names are matched
    by name, integer ids must be among the training split's.

    Raises:
        ImportError: `datasets` is not installed.
        ValueError: no training split, an empty split, a label outside the training split's classes, or
            a label column that `task_from_hf` refuses.
    """
    try:
        import datasets
    except ImportError:
        raise ImportError("Hugging Face datasets need `datasets`: pip install 'kdzoo[nlp]'") from None
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if isinstance(data, (str, os.PathLike)):
        name = name or Path(data).name
        data = datasets.load_from_disk(str(data))
    if isinstance(data, datasets.Dataset):
        data = datasets.DatasetDict({"train": data})
    if not isinstance(data, datasets.DatasetDict):
        raise TypeError(f"expected a datasets.DatasetDict, Dataset or a save_to_disk folder, got {type(data).__name__}")
    name = name or "hf-dataset"
    have = list(data)
    if "train" not in data:
        raise ValueError(f"{name}: the dataset has no 'train' split (it has {have})")
    only_train = "validation" not in data and "test" not in data
    buckets = {"train": range(8) if only_train else range(9), "validation": (8,) if only_train else (9,), "test": (9,)}
    rows: list[int] | None = None
    if split in data:
        split_data = data[split]
    elif split == "test" and "validation" in data:
        split_data = data["validation"]
    else:  # formed from the training split's hash buckets
        rows = [i for i in range(len(data["train"])) if _key_hash(f"row:{i}") % 10 in buckets[split]]
        split_data = data["train"].select(rows)
    if split == "train" and "validation" not in data:
        rows = [i for i in range(len(data["train"])) if _key_hash(f"row:{i}") % 10 in buckets["train"]]
        split_data = data["train"].select(rows)
    if len(split_data) == 0:
        raise ValueError(f"{name}: the {split!r} split is empty (the dataset's splits: "
                         + ", ".join(f"{k} {len(v)}" for k, v in data.items()) + ")")
    task = task_from_hf(split_data, name, split, text_columns=text_columns, label_column=label_column, rows=rows)
    if split == "train":
        return task
    train_names = getattr(data["train"].features.get(label_column), "names", None)
    own_names = getattr(split_data.features.get(label_column), "names", None)
    if train_names:
        labels = task.labels
        if own_names and list(own_names) != list(train_names):  # the same classes in another order: by name
            unknown = sorted(set(own_names) - set(train_names))
            if unknown:
                raise ValueError(f"{name}/{split}: label names {unknown} are not among the training split's "
                                 f"{list(train_names)}")
            index = {c: i for i, c in enumerate(train_names)}
            labels = [index[own_names[y]] for y in task.labels]
        classes = tuple(train_names)
    else:
        top = max((int(y) for y in data["train"][label_column]), default=-1)
        classes = tuple(str(i) for i in range(top + 1))
        labels = task.labels
    outside = sorted({y for y in labels if y >= len(classes)})
    if outside:
        raise ValueError(f"{name}/{split}: label(s) {outside[:5]} are not among the training split's {len(classes)} "
                         f"classes (0..{len(classes) - 1})")
    return TextTask(task.name, split, task.texts, labels, classes, task.source)


def is_saved_dataset(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder written by `datasets` ``save_to_disk`` (a DatasetDict or a Dataset)."""
    return Path(path).is_dir() and any((Path(path) / f).exists() for f in ("dataset_dict.json", "state.json"))


def load_task(name: Any, split: str, root: str | os.PathLike | None = None) -> TextTask:
    """Split ``train``, ``validation`` or ``test`` of a text task: ``wordnet-topic``, ``fortunes``,
    ``glue/<name>``, a Hugging Face `datasets.DatasetDict`, or a folder written by its ``save_to_disk``
    (`hf_task`: columns ``text`` and ``label`` by default)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not isinstance(name, str) or is_saved_dataset(name):
        return hf_task(name, split)
    if name == "wordnet-topic":
        return wordnet_topic(split, root)
    if name == "fortunes":
        return fortunes(split, root)
    if name.startswith("glue/"):
        return glue(name.split("/", 1)[1], split)
    raise ValueError(f"unknown text task {name!r}; known: {', '.join(TASKS)}, glue/<name>, or a folder saved by "
                     "datasets.DatasetDict.save_to_disk")


def gcide_corpus(path: str | os.PathLike | None = None, min_words: int = 6) -> list[str]:
    """Paragraphs of the GCIDE dictionary (definitions, quotations) with headwords and sources removed."""
    file = Path(path) if path else _find("KDZOO_GCIDE", GCIDE_FILES, "GCIDE",
                                        "Install it: apt-get install dict-gcide (or set KDZOO_GCIDE to gcide.dict.dz).")
    opener = gzip.open if file.suffix in (".dz", ".gz") else open
    with opener(file, "rt", encoding="utf-8", errors="replace") as f:
        text = f.read()
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        lines = [ln.strip() for ln in block.splitlines()]
        if len(lines) < 2 or "\\" not in lines[0]:  # an entry starts with `Word \Pro*nun"ci*a`tion\, pos.`
            continue
        body = " ".join(ln for ln in lines[1:] if not ln.startswith("[") and not ln.startswith("Syn."))
        body = re.sub(r"\[[^\]]*\]|--[A-Z][\w. ]*|\(\w+\.\)", " ", body)  # [1913 Webster], --Bailey, (Anat.)
        body = " ".join(body.split())
        if len(body.split()) >= min_words:
            paragraphs.append(body)
    return paragraphs


def load_corpus(name: str = "gcide", path: str | os.PathLike | None = None) -> list[str]:
    if name != "gcide":
        raise ValueError(f"unknown corpus {name!r}; known: gcide (or pass your own list of texts)")
    return gcide_corpus(path)


# --------------------------------------------------------------------------- tokenized batches
class TextBatches:
    """Tokenized examples for `zoo.trainer.fit`: ``batch(indices)`` pads to the longest in the batch.

    Returns ``{"inputs": {"input_ids", "attention_mask"}, "labels", "index"}``; ``labels`` is -1 for an
    unlabelled corpus. ``augment`` is accepted for the trainer's interface; text augmentation is done
    ahead of time (`zoo.nlp.augment`), so it changes nothing here.
    """

    def __init__(self, input_ids: list[list[int]], labels: Sequence[int] | None, pad_id: int) -> None:
        self.input_ids = input_ids
        self.labels = torch.tensor(list(labels) if labels is not None else [-1] * len(input_ids), dtype=torch.long)
        self.pad_id = pad_id

    def __len__(self) -> int:
        return len(self.input_ids)

    def batch(self, indices: torch.Tensor, generator: torch.Generator | None = None, augment: bool = False,
              device: torch.device | str | None = None) -> dict[str, Any]:
        idx = indices.tolist()
        seqs = [self.input_ids[i] for i in idx]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, s in enumerate(seqs):
            ids[row, :len(s)] = torch.tensor(s, dtype=torch.long)
            mask[row, :len(s)] = 1
        out = {"inputs": {"input_ids": ids, "attention_mask": mask}, "labels": self.labels[indices.cpu()],
               "index": indices.cpu()}
        if device is not None:
            out = {"inputs": {k: v.to(device) for k, v in out["inputs"].items()},
                   "labels": out["labels"].to(device), "index": out["index"].to(device)}
        return out

    def loader(self, batch_size: int, device: torch.device | str | None = None):
        order = sorted(range(len(self)), key=lambda i: len(self.input_ids[i]))  # little padding when evaluating
        for start in range(0, len(order), batch_size):
            yield self.batch(torch.tensor(order[start:start + batch_size]), device=device)


def encode(tokenizer: Any, texts: Sequence[str], max_length: int = 128) -> list[list[int]]:
    """Token ids of each text (truncated to ``max_length``); a ``[SEP]`` in a text marks a sentence pair."""
    if any(not isinstance(t, str) for t in texts):
        raise TypeError("texts must be strings")
    firsts, seconds = [], []
    for t in texts:
        a, sep, b = t.partition(" [SEP] ")
        firsts.append(a)
        seconds.append(b if sep else None)
    if any(s is not None for s in seconds):
        return [tokenizer(a, b, truncation=True, max_length=max_length)["input_ids"] for a, b in zip(firsts, seconds)]
    return tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
