"""zoo.nlp on tiny random transformers: TinyBERT's losses by hand, the layer mapping, both distillation
stages and the other recipes through the core trainer, exact resume, save/load, data building, bad input."""
import json
import math
import re
import random
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from zoo.losses.logits import soft_cross_entropy  # noqa: E402
from zoo.nlp import data as nlp_data  # noqa: E402
from zoo.nlp import terms as _terms  # noqa: E402,F401
from zoo.nlp.augment import Synonyms, augment, augment_text  # noqa: E402
from zoo.nlp.data import TextBatches, TextTask, encode  # noqa: E402
from zoo.nlp.losses import attention_score_mse, cosine_hidden_loss, hidden_mse, layer_map, patient_loss  # noqa: E402
from zoo.nlp.models import TextClassifier, student_encoder  # noqa: E402
from zoo.nlp.recipes import NLP_RECIPES, recipe  # noqa: E402
from zoo.nlp.train import load_classifier, save_classifier, train_text  # noqa: E402
from zoo.taps import Taps  # noqa: E402
from zoo.trainer import TrainConfig  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
WORDS = ("a the of and to in is dog cat run fast food made from flour small animal pet move quickly "
         "feline mammal soft fur happy glad big round flat plate").split()


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    vocab = tmp_path_factory.mktemp("tok") / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *"abcdefghijklmnopqrstuvwxyz",
                                *[f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]]) + "\n")
    return transformers.BertTokenizerFast(str(vocab))


def tiny_encoder(tokenizer, layers=4, hidden=32, model_type="bert", seed=0):
    torch.manual_seed(seed)
    cfg = transformers.AutoConfig.for_model(model_type, vocab_size=len(tokenizer), hidden_size=hidden,
                                            num_hidden_layers=layers, num_attention_heads=4,
                                            intermediate_size=2 * hidden, max_position_embeddings=64,
                                            pad_token_id=tokenizer.pad_token_id)
    return transformers.AutoModel.from_config(cfg, attn_implementation="eager", add_pooling_layer=False)


def texts(n, seed=0):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 12))) for _ in range(n)]


@pytest.fixture(scope="module")
def batches(tokenizer):
    t = texts(16)
    return TextBatches(encode(tokenizer, t), [i % 3 for i in range(16)], tokenizer.pad_token_id)


# ---------------------------------------------------------------- losses by hand
def test_attention_score_mse_by_hand_ignores_padding():
    s = torch.zeros(1, 2, 2, 2)
    t = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 2.0]]]])
    full = torch.ones(1, 2)
    assert attention_score_mse(s, t, full).item() == pytest.approx((1 + 4 + 9 + 16 + 4) / 8)
    only_first = torch.tensor([[1, 0]])  # one real token: the (0, 0) pair of each head counts
    assert attention_score_mse(s, t, only_first).item() == pytest.approx((1 + 0) / 2)
    s.requires_grad_(True)
    t.requires_grad_(True)
    attention_score_mse(s, t, full).backward()
    assert s.grad.abs().sum() > 0 and t.grad is None


def test_hidden_mse_and_cosine_by_hand():
    s = torch.tensor([[[1.0, 0.0], [5.0, 5.0]]])
    t = torch.tensor([[[0.0, 1.0], [9.0, 9.0]]])
    mask = torch.tensor([[1, 0]])
    assert hidden_mse(s, t, mask).item() == pytest.approx((1 + 1) / 2)
    assert cosine_hidden_loss(s, t, mask).item() == pytest.approx(1.0)  # orthogonal
    assert cosine_hidden_loss(t, t, torch.ones(1, 2)).item() == pytest.approx(0.0, abs=1e-6)


def test_patient_loss_and_soft_cross_entropy_by_hand():
    s = [torch.tensor([[3.0, 4.0]])]
    t = [torch.tensor([[0.0, 2.0]])]
    # normalised: (0.6, 0.8) vs (0, 1): (0.36 + 0.04) / 2 hidden units (the authors' mean form)
    assert patient_loss(s, t).item() == pytest.approx(0.20)
    assert patient_loss([x * 2 for x in s], t).item() == pytest.approx(0.20)  # scale-free
    zs, zt = torch.tensor([[0.0, math.log(3.0)]]), torch.tensor([[0.0, 0.0]])
    # teacher uniform: -(0.5 log 0.25 + 0.5 log 0.75)
    assert soft_cross_entropy(zs, zt).item() == pytest.approx(-(0.5 * math.log(0.25) + 0.5 * math.log(0.75)))
    assert soft_cross_entropy(zs * 2, zt, T=2.0).item() == pytest.approx(soft_cross_entropy(zs, zt).item())


def test_layer_map_is_uniform():
    assert layer_map(4, 12) == [3, 6, 9, 12]
    assert layer_map(3, 6) == [2, 4, 6]
    assert layer_map(6, 6) == [1, 2, 3, 4, 5, 6]
    with pytest.raises(ValueError):
        layer_map(8, 4)
    r = recipe("tinybert-intermediate", 4, 12)
    assert r.term("attention").teacher == ["scores.3", "scores.6", "scores.9", "scores.12"]
    assert r.term("hidden").student == ["hidden.1", "hidden.2", "hidden.3", "hidden.4"]


# ---------------------------------------------------------------- the model's probes
@pytest.mark.parametrize("model_type", ["bert", "mpnet"])
def test_score_probes_are_the_pre_softmax_attention(tokenizer, batches, model_type):
    model = TextClassifier(tiny_encoder(tokenizer, model_type=model_type), 3).eval()
    inputs = batches.batch(torch.arange(4))["inputs"]
    with Taps(model, ["scores.2", "hidden.0", "hidden.4"]) as taps:
        out = model.encoder(**inputs, output_attentions=True)
        mask = inputs["attention_mask"][:, None, None, :].float()
        probs = torch.softmax(taps["scores.2"] + (1 - mask) * torch.finfo(torch.float32).min, -1)
        assert torch.allclose(probs, out.attentions[1], atol=1e-6)
        assert torch.equal(taps["hidden.4"], out.last_hidden_state)
    # probes cost nothing when nothing taps them
    with torch.no_grad():
        model(**inputs)


def test_student_has_tinybert_shape_and_the_teacher_vocabulary(tokenizer):
    teacher = tiny_encoder(tokenizer, layers=4, hidden=32)
    student = student_encoder(teacher.config, layers=2, hidden=16, ffn=40, heads=4)
    assert (student.config.num_hidden_layers, student.config.hidden_size, student.config.intermediate_size) == (2, 16, 40)
    assert student.config.vocab_size == teacher.config.vocab_size
    with pytest.raises(ValueError, match="multiple"):
        student_encoder(teacher.config, hidden=30, heads=4)


# ---------------------------------------------------------------- distillation through the core trainer
def pair(tokenizer):
    teacher = TextClassifier(tiny_encoder(tokenizer, layers=4, hidden=32), 3).eval()
    student = TextClassifier(student_encoder(teacher.encoder.config, layers=2, hidden=16, ffn=32, heads=4), 3)
    return teacher, student


CFG = TrainConfig(epochs=1, batch_size=8, optimizer="adamw", lr=1e-3, progress=False, log_every=1, amp="off")


@pytest.mark.parametrize("name", NLP_RECIPES)
def test_every_nlp_recipe_trains_two_steps(tokenizer, batches, name, tmp_path):
    teacher, student = pair(tokenizer)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    rec = recipe(name, 2, 4)
    result = train_text(rec, [student], [teacher] if rec.teachers else [], batches, CFG, tmp_path)
    assert result.finished and result.step == 2
    log = (tmp_path / "log.csv").read_text().splitlines()
    assert len(log) == 3 and "nan" not in log[-1] and "inf" not in log[-1]
    changed = [k for k, v in student.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("encoder.") for k in changed)


def test_general_distillation_on_an_unlabelled_corpus(tokenizer, tmp_path):
    teacher, student = pair(tokenizer)
    corpus = TextBatches(encode(tokenizer, texts(16, seed=3)), None, tokenizer.pad_token_id)
    result = train_text(recipe("tinybert-general", 2, 4), [student], [teacher], corpus, CFG, tmp_path)
    assert result.finished
    header, *rows = (tmp_path / "log.csv").read_text().splitlines()
    assert header.split(",")[3:] == ["loss", "embedding", "hidden", "attention"]


def test_task_distillation_resumes_exactly(tokenizer, batches, tmp_path):
    cfg = TrainConfig(**{**CFG.__dict__, "epochs": 2})
    rec = recipe("tinybert-intermediate", 2, 4)
    teacher, student = pair(tokenizer)
    train_text(rec, [student], [teacher], batches, cfg, tmp_path / "a")
    teacher, student_b = pair(tokenizer)
    train_text(rec, [student_b], [teacher], batches, TrainConfig(**{**cfg.__dict__, "max_steps": 1}), tmp_path / "b")
    teacher, student_b = pair(tokenizer)
    train_text(rec, [student_b], [teacher], batches, cfg, tmp_path / "b", resume=True)
    assert all(torch.equal(v, student_b.state_dict()[k]) for k, v in student.state_dict().items())


def test_prediction_stage_runs_the_teacher_in_the_first_epoch_only_and_resumes_exactly(tokenizer, batches, tmp_path,
                                                                                        monkeypatch):
    cfg = TrainConfig(**{**CFG.__dict__, "epochs": 3, "teacher_cache": True})
    rec = recipe("tinybert-prediction", 2, 4)

    def run(out, settings=cfg, resume=False):
        teacher, student = pair(tokenizer)
        calls = []
        teacher.register_forward_hook(lambda *a: calls.append(1))
        train_text(rec, [student], [teacher], batches, settings, tmp_path / out, resume=resume)
        return student.state_dict(), len(calls) - 1  # minus the Distiller's shape probe

    cached, calls = run("a")
    assert calls == 2  # 16 examples, batches of 8: epoch 1 only
    live, calls = run("live", TrainConfig(**{**cfg.__dict__, "teacher_cache": False}))
    assert calls == 6
    # the same outputs, up to float rounding (a stored row was computed beside other padding)
    assert all(torch.allclose(v, live[k], atol=1e-5) for k, v in cached.items())
    # interrupted in epoch 2 in a fresh cache: the checkpoint writes the cache, the resumed run reads it
    monkeypatch.setenv("KDZOO_HOME", str(tmp_path / "fresh-home"))
    run("b", TrainConfig(**{**cfg.__dict__, "max_steps": 3}))
    resumed, calls = run("b", resume=True)
    assert calls == 0
    assert all(torch.equal(v, resumed[k]) for k, v in cached.items())
    stored = next((tmp_path / "fresh-home").rglob("*.safetensors"))
    stored.write_bytes(stored.read_bytes()[:-8])
    with pytest.raises(ValueError, match="does not match the sha256"):
        run("c")


def test_attention_term_needs_equal_head_counts(tokenizer, batches, tmp_path):
    teacher = TextClassifier(tiny_encoder(tokenizer, layers=4, hidden=32), 3).eval()
    student = TextClassifier(student_encoder(teacher.encoder.config, layers=2, hidden=16, ffn=32, heads=2), 3)
    with pytest.raises(ValueError, match="attention heads"):
        train_text(recipe("tinybert-intermediate", 2, 4), [student], [teacher], batches, CFG, tmp_path)


def test_save_load_round_trip(tokenizer, batches, tmp_path):
    _, student = pair(tokenizer)
    student.eval()
    path = save_classifier(student, tmp_path / "s.safetensors")
    loaded = load_classifier(path)
    inputs = batches.batch(torch.arange(5))["inputs"]
    assert torch.equal(student(**inputs), loaded(**inputs))


# ---------------------------------------------------------------- data
def test_wordnet_fixture_builds_a_deterministic_disjoint_topic_task():
    splits = {s: nlp_data.wordnet_topic(s, FIXTURES / "wordnet") for s in nlp_data.SPLITS}
    ids = [set(t.ids) for t in splits.values()]
    assert sum(len(i) for i in ids) == 10 and not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    every = {i: (t.texts[k], t.labels[k]) for t in splits.values() for k, i in enumerate(t.ids)}
    text, label = every["n:02084071"]
    assert text.startswith("a member of the genus Canis") and nlp_data.LEXNAMES[label] == "noun.animal"
    assert nlp_data.LEXNAMES[every["v:01926311"][1]] == "verb.motion"
    assert len(nlp_data.LEXNAMES) == 45
    again = nlp_data.wordnet_topic("train", FIXTURES / "wordnet")
    assert again.ids == splits["train"].ids
    ds = splits["train"].to_hf() if len(splits["train"]) else None
    if ds is not None:
        assert ds.features["label"].names[5] == "noun.animal" and len(ds) == len(splits["train"])


def test_fortunes_and_gcide_parsers(tmp_path):
    (tmp_path / "food").write_text("Eat well.\n%\nA second\n  fortune.\n%\n")
    (tmp_path / "food.dat").write_bytes(b"\x00")
    (tmp_path / "work").write_text("Work hard.\n%\nEat well.\n%\n")
    tasks = [nlp_data.fortunes(s, tmp_path) for s in nlp_data.SPLITS]
    every = sorted(t for task in tasks for t in task.texts)
    assert every == ["A second fortune.", "Eat well.", "Work hard."]  # the duplicate is kept once
    assert tasks[0].classes == ("food", "work")
    gcide = tmp_path / "gcide.txt"
    gcide.write_text('Abdicator \\Ab"di*ca`tor\\, n.\n   One who abdicates a throne, an office or a trust.\n'
                     "   [1913 Webster]\n\n00-database-info\n   no entry\n")
    assert nlp_data.gcide_corpus(gcide) == ["One who abdicates a throne, an office or a trust."]


def test_missing_data_and_unknown_labels_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(nlp_data, "WORDNET_DIRS", (str(tmp_path / "nowhere"),))
    monkeypatch.delenv("KDZOO_WORDNET", raising=False)
    with pytest.raises(nlp_data.TextDataNotFoundError, match="apt-get install wordnet-base"):
        nlp_data.wordnet_topic("train")
    with pytest.raises(ValueError, match="unknown label"):
        TextTask.from_labels("t", "train", ["a", "b"], ["x", "nope"], ["x", "y"])
    with pytest.raises(ValueError, match="out of range"):
        TextTask("t", "train", ["a"], [5], ("x", "y"))
    with pytest.raises(ValueError, match="split"):
        nlp_data.load_task("wordnet-topic", "dev")


def test_synonym_augmentation_is_deterministic_and_keeps_labels():
    syn = Synonyms([["happy", "glad"], ["big", "large"], ["dog", "pooch", "doggie"]])
    assert set(syn("Dog")) == {"pooch", "doggie"}
    new, labels = augment(["a happy dog", "no synonyms here"], [0, 1], syn, n=5, p=1.0, seed=0)
    assert new[:2] == ["a happy dog", "no synonyms here"] and set(labels[2:]) == {0}
    assert all(t.startswith("a glad ") for t in new[2:])
    assert augment(["a happy dog"], [0], syn, n=5, seed=1) == augment(["a happy dog"], [0], syn, n=5, seed=1)
    assert augment_text("Happy", syn, random.Random(0), p=1.0) == "Glad"


def test_tfidf_baseline_learns_a_separable_task():
    pytest.importorskip("sklearn")
    from zoo.nlp.baseline import tfidf_logreg

    train = TextTask("t", "train", ["red apple", "green apple", "fast car", "red car"] * 5, [0, 0, 1, 1] * 5, ("fruit", "car"))
    test = TextTask("t", "test", ["apple pie", "car race"], [0, 1], ("fruit", "car"))
    result = tfidf_logreg(train, test)
    assert result["tfidf_logreg_test_accuracy"] == 1.0 and result["majority_test_accuracy"] == 0.5


# ---------------------------------------------------------------- zoo.load / predict on a published tiny student
def test_published_text_model_loads_and_predicts_with_clear_input_errors(tokenizer, tmp_path):
    import zoo
    from zoo import hub
    from zoo.nlp.adapter import TextPreprocessor
    from zoo.registry import ModelCard

    _, student = pair(tokenizer)
    folder = tmp_path / "tiny-nlp"
    tokenizer.save_pretrained(str(folder))
    refs = [hub.FileRef(p.name, hub.sha256_file(p), p.stat().st_size) for p in sorted(folder.iterdir())]
    card = ModelCard(name="tiny-nlp", task="nlp", architecture="text-classifier", config=student.config,
                     dataset="wordnet-topic", split="test", metrics={"accuracy": 0.5},
                     params=sum(p.numel() for p in student.parameters()), labels=["x", "y", "z"],
                     preprocessing={"max_length": 8}, files=refs)
    hub.save(student, folder, card, dtype=torch.float16)
    model = zoo.load(folder)
    assert isinstance(model.preprocess, TextPreprocessor) and model.tokenizer is not None
    out = zoo.predict(model, ["a small dog", "run fast"], top_k=2)
    assert [o["label"] in ("x", "y", "z") for o in out] == [True, True] and len(out[0]["top_k"]) == 2
    assert abs(sum(t["score"] for t in zoo.predict(model, ["a dog"], top_k=3)[0]["top_k"]) - 1.0) < 1e-4
    for blank in ("  ", "\u200b", "\x01 \ufeff"):  # spaces, or characters the tokenizer drops: nothing to classify
        with pytest.raises(ValueError, match="text 1 is empty .no visible character."):
            zoo.predict(model, ["a dog", blank])
    with pytest.raises(TypeError, match="texts are a string or a list of strings, got int 5"):
        zoo.predict(model, 5)
    with pytest.raises(TypeError, match="not a string"):
        zoo.predict(model, ["a dog", 3])
    with pytest.warns(UserWarning, match="truncated"):
        zoo.predict(model, [" ".join(["dog"] * 30)])
    (folder / "tokenizer.json").write_text((folder / "tokenizer.json").read_text() + " ")
    with pytest.raises(hub.ChecksumError, match="tokenizer.json"):
        zoo.load(folder)


def test_glue_through_datasets_and_a_clear_offline_error(monkeypatch):
    datasets = pytest.importorskip("datasets")
    fake = datasets.Dataset.from_dict(
        {"sentence1": ["a cat sat", "dogs run"], "sentence2": ["a cat is sitting", "cats sleep"], "label": [1, 0]},
        features=datasets.Features({"sentence1": datasets.Value("string"), "sentence2": datasets.Value("string"),
                                    "label": datasets.ClassLabel(names=["not_equivalent", "equivalent"])}))
    calls = []

    def load_dataset(path, name, split):
        calls.append((path, name, split))
        return fake

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    task = nlp_data.load_task("glue/mrpc", "test")
    assert calls == [("glue", "mrpc", "validation")]  # GLUE's test labels are hidden: test = validation
    assert task.texts[0] == "a cat sat [SEP] a cat is sitting" and task.classes == ("not_equivalent", "equivalent")

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(nlp_data.TextDataNotFoundError, match="network"):
        nlp_data.load_task("glue/sst2", "train")


def test_sentence_pairs_are_encoded_as_pairs(tokenizer):
    [ids] = encode(tokenizer, ["a dog [SEP] a cat"])
    assert ids.count(tokenizer.sep_token_id) == 2


def test_a_split_subset_is_a_sample_of_every_part_of_speech():
    train = nlp_data.wordnet_topic("train", FIXTURES / "wordnet")
    pos = [i.split(":")[0] for i in train.ids]
    assert pos != sorted(pos, key="nvar".index)  # not grouped by the files' order (nouns first)


def test_the_real_wordnet_train_split_is_not_sorted_by_part_of_speech():
    try:
        train = nlp_data.wordnet_topic("train")
    except nlp_data.TextDataNotFoundError as err:
        pytest.skip(str(err))
    assert len(train) > 90_000 and len(train.classes) == 45
    head = {i.split(":")[0] for i in train.ids[:1000]}
    assert head == {"n", "v", "a", "r"}  # the first 1000 hold every part of speech


# ---------------------------------------------------------------- Hugging Face datasets as the task


def _hf_dict(n_train=40, n_test=9, class_label=True):
    datasets = pytest.importorskip("datasets")
    names = ["animal", "food", "motion"]
    label = datasets.ClassLabel(names=names) if class_label else datasets.Value("int64")
    features = datasets.Features({"text": datasets.Value("string"), "label": label})

    def rows(n, seed):
        t = texts(n, seed)
        return {"text": t, "label": [len(x.split()) % 3 for x in t]}

    return datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows(n_train, 1), features=features),
                                 "test": datasets.Dataset.from_dict(rows(n_test, 2), features=features)})


def test_a_datasetdict_without_validation_is_split_by_a_fixed_hash(tmp_path):
    dd = _hf_dict()
    train, val, test = (nlp_data.hf_task(dd, s, name="mine") for s in ("train", "validation", "test"))
    assert len(train) + len(val) == 40 and 0 < len(val) < len(train)
    assert sorted(train.texts + val.texts) == sorted(dd["train"]["text"])  # a partition of the training split
    assert test.texts == dd["test"]["text"] and test.labels == dd["test"]["label"]
    assert train.classes == val.classes == test.classes == ("animal", "food", "motion")
    # the same split from a folder written by save_to_disk, through load_task
    dd.save_to_disk(str(tmp_path / "saved"))
    again = nlp_data.load_task(str(tmp_path / "saved"), "validation")
    assert again.texts == val.texts and again.name == "saved"
    # without a ClassLabel the classes are the label values 0..max, the same in every split
    plain = _hf_dict(class_label=False)
    assert nlp_data.hf_task(plain, "test").classes == ("0", "1", "2")


def test_hf_columns_pairs_and_bad_datasets_are_clear(tokenizer):
    datasets = pytest.importorskip("datasets")
    pairs = datasets.Dataset.from_dict({"premise": ["a cat", "a dog"], "hypothesis": ["a pet", "food"], "label": [0, 1]})
    task = nlp_data.task_from_hf(pairs, "nli", "train")
    assert task.texts == ["a cat [SEP] a pet", "a dog [SEP] food"] and task.classes == ("0", "1")
    with pytest.raises(ValueError, match=r"no column\(s\) \['stars'\].*\['premise', 'hypothesis', 'label'\]"):
        nlp_data.task_from_hf(pairs, "nli", "train", label_column="stars")
    hidden = datasets.Dataset.from_dict({"sentence": ["a", "b"], "label": [-1, -1]})
    with pytest.raises(ValueError, match="negative label"):
        nlp_data.task_from_hf(hidden, "glue", "test")
    numbers = datasets.Dataset.from_dict({"idx": [1, 2], "label": [0, 1]})
    with pytest.raises(ValueError, match="no text column"):
        nlp_data.task_from_hf(numbers, "x", "train")
    with pytest.raises(ValueError, match=r"has no 'train' split \(it has \['test'\]\)"):
        nlp_data.hf_task(datasets.DatasetDict({"test": pairs}), "test")


def test_the_pipeline_trains_on_a_datasetdict_and_refuses_another_one_on_resume(tokenizer, tmp_path):
    from zoo.nlp.pipeline import run

    teacher_dir = tmp_path / "teacher"
    tiny_encoder(tokenizer, layers=2).save_pretrained(teacher_dir)
    tokenizer.save_pretrained(teacher_dir)
    dd = _hf_dict()
    options = dict(teacher=str(teacher_dir), batch_size=8, teacher_epochs=1, task_epochs=1, pred_epochs=0,
                   student_layers=1, student_hidden=16, student_ffn=32, student_heads=4, max_length=16, quiet=True)
    records = run(["teacher", "plain"], tmp_path / "run", data=dd, **options)
    assert set(records) == {"teacher", "plain"}
    assert records["plain"]["task"] == str(tmp_path / "run" / "hf-dataset")  # the dataset travels with the run
    assert records["teacher"]["train_examples"] == len(nlp_data.hf_task(dd, "train"))
    assert 0.0 <= records["plain"]["test_accuracy"] <= 1.0
    # the same call again finds every stage done; another dataset for the same run folder is refused
    assert run(["plain"], tmp_path / "run", data=_hf_dict(), **options)["plain"] == records["plain"]
    with pytest.raises(ValueError, match="holds another dataset"):
        run(["plain"], tmp_path / "run", data=_hf_dict(n_train=30), **options)
    with pytest.raises(ValueError, match="unknown pipeline option"):
        run(["plain"], tmp_path / "run", data=dd, epochs=3)


def test_amp_reaches_the_training_steps_and_a_stage_started_before_the_option_resumes(tokenizer, tmp_path, capsys):
    """--amp sets every stage's TrainConfig.amp; a stage whose recorded settings predate the option counts as
    started with its default (auto) and is refused under another value."""
    from zoo.nlp.pipeline import build_parser, check_stage_settings, run

    teacher_dir = tmp_path / "teacher"
    tiny_encoder(tokenizer, layers=2).save_pretrained(teacher_dir)
    tokenizer.save_pretrained(teacher_dir)
    options = dict(teacher=str(teacher_dir), batch_size=8, task_epochs=1, pred_epochs=0, student_layers=1,
                   student_hidden=16, student_ffn=32, student_heads=4, max_length=16, quiet=True)
    records = run(["plain"], tmp_path / "run", data=_hf_dict(), amp="bf16", **options)
    assert records["plain"]["config"]["amp"] == "bf16"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["plain", "--out", str(tmp_path / "x"), "--amp", "fast"])
    assert "argument --amp: invalid choice: 'fast'" in capsys.readouterr().err
    out = tmp_path / "old"
    out.mkdir()
    args = build_parser().parse_args(["plain", "--out", str(out)])
    check_stage_settings(out, "plain", args)
    recorded = json.loads((out / "plain.args.json").read_text())
    del recorded["amp"]  # as written before --amp existed
    (out / "plain.args.json").write_text(json.dumps(recorded))
    check_stage_settings(out, "plain", args)  # the default: resumes
    with pytest.raises(SystemExit, match="--amp 'auto' then, 'bf16' now"):
        check_stage_settings(out, "plain", build_parser().parse_args(["plain", "--out", str(out), "--amp", "bf16"]))


def test_every_stage_on_a_datasetdict_then_publish_load_and_predict(tokenizer, tmp_path):
    """The whole pipeline on a tiny teacher folder and a DatasetDict, published through RunRecord -> make_card."""
    import zoo
    from zoo.nlp.pipeline import run
    from zoo.nlp.publish import publish

    teacher_dir = tmp_path / "teacher"
    tiny_encoder(tokenizer, layers=2).save_pretrained(teacher_dir)
    tokenizer.save_pretrained(teacher_dir)
    options = dict(teacher=str(teacher_dir), batch_size=8, teacher_epochs=1, task_epochs=1, pred_epochs=1,
                   general_examples=24, student_layers=1, student_hidden=16, student_ffn=32, student_heads=4,
                   max_length=16, quiet=True)
    records = run("all", tmp_path / "run", data=_hf_dict(n_train=40, n_test=40), **options)
    assert set(records) == {"teacher", "general", "task", "plain", "baseline"}
    card = publish(tmp_path / "run", "tiny-hf", dest_root=tmp_path / "pub")
    assert card.method == "tinybert" and card.dataset == str(tmp_path / "run" / "hf-dataset") and card.split == "test"
    assert card.labels == ["animal", "food", "motion"] and card.teacher.params > card.params
    assert card.training.command.startswith("python -m zoo.nlp.pipeline") and card.training.epochs == 2
    assert {f.name for f in card.files} >= {"tokenizer.json", "tokenizer_config.json", "model.safetensors"}
    assert card.extra["benchmark"][2]["accuracy"] == records["plain"]["test_accuracy"]  # the twin's row
    model = zoo.load(tmp_path / "pub" / "tiny-hf")
    [pred] = zoo.predict(model, ["a small cat run fast"])
    assert pred["label"] in card.labels
    report = zoo.evaluate(tmp_path / "pub" / "tiny-hf")  # re-reads the saved dataset's test split
    assert abs(report["measured"]["accuracy"] - card.metrics["accuracy"]) < 1e-6


def test_hf_labels_and_splits_that_would_be_silently_wrong_are_refused_or_mapped(tmp_path):
    datasets = pytest.importorskip("datasets")
    from zoo.nlp.pipeline import run

    t = texts(30, 3)
    # a single Dataset is split 80/10/10 by fixed buckets: disjoint, complete
    single = datasets.Dataset.from_dict({"text": t, "label": [i % 3 for i in range(30)]})
    parts = [nlp_data.hf_task(single, s) for s in ("train", "validation", "test")]
    assert sorted(sum((p.texts for p in parts), [])) == sorted(t) and all(len(p) for p in parts)
    # floats, strings and None are not class ids: a clear error naming the row and how to encode
    for bad, shown in (([0.2, 0.9] + [1.0] * 28, "0.2"), (["neg", "pos"] * 15, "'neg'"), ([0, None] + [1] * 28, "None")):
        ds = datasets.Dataset.from_dict({"text": t, "label": bad})
        with pytest.raises(ValueError, match=f"is {shown}.*class_encode_column"):
            nlp_data.task_from_hf(ds, "x", "train")
    # a test ClassLabel in another order is read by name; an id beyond train's classes is refused
    names = ["animal", "food", "motion"]
    train = datasets.Dataset.from_dict({"text": t[:20], "label": [i % 3 for i in range(20)]},
                                       features=datasets.Features({"text": datasets.Value("string"),
                                                                   "label": datasets.ClassLabel(names=names)}))
    shuffled = datasets.Dataset.from_dict({"text": t[20:], "label": [0] * 10},  # index 0 is "motion" here
                                          features=datasets.Features({"text": datasets.Value("string"),
                                                                      "label": datasets.ClassLabel(names=names[::-1])}))
    test = nlp_data.hf_task(datasets.DatasetDict({"train": train, "test": shuffled}), "test")
    assert test.classes == tuple(names) and set(test.labels) == {2}
    plain = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": t[:20], "label": [i % 3 for i in range(20)]}),
                                  "test": datasets.Dataset.from_dict({"text": t[20:24], "label": [0, 1, 5, 7]})})
    with pytest.raises(ValueError, match=r"label\(s\) \[5, 7\] are not among the training split's 3 classes"):
        nlp_data.hf_task(plain, "test")
    # the pipeline checks before it saves, and never deletes a folder that is not its own
    with pytest.raises(ValueError, match=r"label\(s\) \[5, 7\]"):
        run(["plain"], tmp_path / "a", data=plain)
    assert not (tmp_path / "a" / "hf-dataset").exists()
    (tmp_path / "b" / "hf-dataset").mkdir(parents=True)
    (tmp_path / "b" / "hf-dataset" / "mine.csv").write_text("keep me")
    with pytest.raises(ValueError, match="was not written by kdzoo"):
        run(["plain"], tmp_path / "b", data=_hf_dict())
    assert (tmp_path / "b" / "hf-dataset" / "mine.csv").read_text() == "keep me"


def test_the_twin_protocol_trains_the_plain_and_task_stages_per_seed_and_publishes_both(tokenizer, tmp_path, monkeypatch):
    """zoo.nlp.protocol: per seed the pipeline's plain stage (twin) and task stage (TinyBERT) from a teacher run's
    teacher and general stages, on one step count; the table; both arms published with the twin as baseline."""
    import zoo
    from zoo import protocol
    from zoo.nlp.pipeline import run
    from zoo.nlp.protocol import NlpProtocol
    from zoo.tasks import get_adapter

    teacher_dir = tmp_path / "teacher"
    tiny_encoder(tokenizer, layers=2).save_pretrained(teacher_dir)
    tokenizer.save_pretrained(teacher_dir)
    options = dict(teacher=str(teacher_dir), batch_size=8, teacher_epochs=1, general_examples=24, student_layers=1,
                   student_hidden=16, student_ffn=32, student_heads=4, max_length=16, quiet=True)
    records = run(["teacher", "general"], tmp_path / "run", data=_hf_dict(n_train=40, n_test=30), **options)
    data = str(tmp_path / "run" / "hf-dataset")
    task = get_adapter("nlp").protocol
    assert isinstance(task, NlpProtocol)

    def spec(**change):
        fields = dict(task="nlp", teacher=str(tmp_path / "run"), student="tinybert-1l-16", recipes=["tinybert"],
                      seeds=[0, 1], dataset=data, settings={"task_epochs": 1, "pred_epochs": 1, "max_length": 16,
                                                            "batch_size": 8})
        return protocol.ProtocolSpec(**{**fields, **change})

    for bad, message in [(spec(student="tinybert-4l-312"), "give --student tinybert-1l-16"),
                         (spec(recipes=["pkd"]), "nlp recipes under the protocol: tinybert"),
                         (spec(settings={"augment": 20}), "augmentation changes the distilled arm's step count"),
                         (spec(settings={"task_lr": "fast"}), "task_lr must be a finite number"),
                         (spec(settings={"batch_size": 8.0}), "batch_size must be an integer, got 8.0"),
                         (spec(settings={"pred_epochs": 0}), "pred_epochs must be >= 1"),
                         (spec(settings={"amp": "fast"}), "amp must be one of auto, bf16, fp16, off, got 'fast'"),
                         (spec(train_subset=4), "train_subset must be at least one batch (8 examples)"),
                         (spec(train_subset=32), "needs 1..31 examples, got 32"),
                         (spec(dataset="wordnet-topic"), f"give --dataset {data}")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            protocol.run(bad, task, tmp_path / "refused")
    with pytest.raises(FileNotFoundError, match="finished the teacher and general stages"):
        protocol.run(spec(teacher=str(tmp_path / "nope")), task, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()  # nothing written before the spec is valid

    results = protocol.run(spec(), task, tmp_path / "twins")
    assert [r.seed for r in results] == [0, 1]
    train_examples = records["teacher"]["train_examples"]
    for r in results:
        seed_dir = tmp_path / "twins" / f"seed-{r.seed}"
        plain = json.loads((seed_dir / "plain.json").read_text())
        distilled = json.loads((seed_dir / "task.json").read_text())
        assert r.metrics == {"twin": plain["test_accuracy"], "tinybert": distilled["test_accuracy"]}
        assert r.steps == 2 * (train_examples // 8)  # two epochs of full batches of 8, both arms
        assert plain["config"]["seed"] == r.seed and distilled["stages"]["tinybert-prediction"]["config"]["seed"] == r.seed
    # a second call finds every seed finished; the table has the teacher's row
    assert protocol.run(spec(), task, tmp_path / "twins") == results
    # a seed fixes both arms, connectors included: seed 1 alone, in another process order, from a relative path
    monkeypatch.chdir(tmp_path)
    again = protocol.run(spec(dataset="run/hf-dataset"), task, Path("again"), only_seeds=[1])
    assert again[0].metrics == results[1].metrics
    from safetensors.torch import load_file

    for weights in ("student.safetensors", "plain.safetensors"):
        a, b = (load_file(str(tmp_path / run / "seed-1" / weights)) for run in ("again", "twins"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), weights
    table, summary = protocol.write_results(spec(), task, results, tmp_path / "results")
    assert f"{records['teacher']['test_accuracy'] * 100:.2f}" in table.read_text()
    baseline = protocol.baseline_record(spec(), summary, "accuracy", results[0].steps, "tiny-twin", "t.md")
    kd = task.publish(spec(), 0, "tinybert", tmp_path / "twins" / "seed-0", "tiny-kd", baseline=baseline,
                      teacher=str(tmp_path / "run"), command="python benchmarks/twins.py ...", notes="n",
                      description="d", dest=tmp_path / "pub")
    twin = task.publish(spec(), 0, "twin", tmp_path / "twins" / "seed-0", "tiny-twin", baseline=None, teacher=None,
                        command="python benchmarks/twins.py ...", notes="n", description="d", dest=tmp_path / "pub")
    assert kd.method == "tinybert" and kd.baseline == baseline and kd.teacher.name == "teacher fine-tuned on hf-dataset"
    # publishing ran the seed's TF-IDF baseline stage: its rows are on the card, beside the twin's
    assert (tmp_path / "twins" / "seed-0" / "baseline.json").exists()
    rows = [r["model"] for r in kd.extra["benchmark"]]
    assert any("TF-IDF" in r for r in rows) and any("no distillation" in r for r in rows)
    assert twin.method == "plain" and twin.teacher is None and twin.baseline is None
    assert kd.training.command == twin.training.command == "python benchmarks/twins.py ..."
    for name, card in (("tiny-kd", kd), ("tiny-twin", twin)):
        report = zoo.evaluate(tmp_path / "pub" / name)
        assert abs(report["measured"]["accuracy"] - card.metrics["accuracy"]) < 1e-6
