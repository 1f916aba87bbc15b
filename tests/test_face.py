"""zoo.face, part 1: the CJK-font identities, ArcFace/CosFace heads by their definitions, verification metrics."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo.face import data as face_data
from zoo.face.evaluate import all_pairs, cosine_matrix, fold_accuracy, tar_at_far, verification
from zoo.face.heads import ArcFace, CosFace


def test_arcface_and_cosface_logits_follow_their_definitions():
    torch.manual_seed(0)
    head = ArcFace(4, 3)
    x = torch.randn(5, 4)
    labels = torch.tensor([0, 1, 2, 1, 0])
    logits = head(x, labels)
    cos = torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(head.weight, dim=1).T
    theta = torch.arccos(cos.clamp(-1, 1))
    for i, y in enumerate(labels.tolist()):
        for j in range(3):
            if j != y:
                assert logits[i, j].item() == pytest.approx(64 * cos[i, j].item(), abs=1e-4)
            elif theta[i, j] + 0.5 <= math.pi:  # Deng et al. eq. 3: s cos(theta + m)
                assert logits[i, j].item() == pytest.approx(64 * math.cos(theta[i, j].item() + 0.5), abs=1e-3)
    # past pi - m the target logit continues as s (cos(theta) - m sin(m)): still decreasing in theta
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    far = ArcFace(2, 2)
    far.weight.data = w
    opposite = torch.tensor([[-1.0, 0.0]])  # theta = pi to class 0
    assert far(opposite, torch.tensor([0]))[0, 0].item() == pytest.approx(64 * (-1 - math.sin(0.5) * 0.5), abs=1e-4)
    cf = CosFace(4, 3)
    cf.weight.data = head.weight.data.clone()
    assert torch.allclose(cf(x, labels).gather(1, labels[:, None]), 64 * (cos.gather(1, labels[:, None]) - 0.35), atol=1e-4)
    assert torch.allclose(head(x), 64 * cos, atol=1e-4)  # no labels: no margin
    with pytest.raises(ValueError, match="class indices in 0..2"):
        head(x, torch.tensor([0, 1, 2, 3, 0]))


def test_fold_accuracy_chooses_thresholds_on_the_other_folds():
    # fold 0 and 1 separable at 0.5; fold 2's pairs straddle it: the threshold comes from folds 0-1 (0.5)
    scores = torch.tensor([0.9, 0.8, 0.2, 0.1, 0.7, 0.6, 0.3, 0.4, 0.55, 0.45, 0.52, 0.48])
    same = torch.tensor([1, 1, 0, 0, 1, 1, 0, 0, 0, 1, 1, 0])
    folds = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
    out = fold_accuracy(scores, same, folds)

    def brute(k):  # the threshold that is best on the other folds (every cut between their scores), used on fold k
        train = folds != k
        ts, ys = scores[train].tolist(), same[train].tolist()
        cuts = sorted(set(ts))
        candidates = [cuts[0] - 1] + [(a + b) / 2 for a, b in zip(cuts, cuts[1:])] + [cuts[-1]]
        accuracy = [sum((v > t) == bool(y) for v, y in zip(ts, ys)) for t in candidates]
        best = max(accuracy)
        t = min(c for c, a in zip(candidates, accuracy) if a == best)  # ties: the lowest
        held = folds == k
        return float(((scores[held] > t).long() == same[held]).float().mean())

    assert out["acc"] == pytest.approx(sum(brute(k) for k in range(3)) / 3)
    assert out["acc"] < 1.0  # fold 2 cannot be separated by one threshold
    with pytest.raises(ValueError, match="at least 2 folds"):
        fold_accuracy(scores, same, torch.zeros(12, dtype=torch.long))


def test_tar_at_far_against_a_brute_force_count():
    g = torch.Generator().manual_seed(0)
    neg = torch.randn(20_000, generator=g)
    pos = torch.randn(500, generator=g) + 2.0
    out = tar_at_far(pos, neg, (1e-3,))
    tar, t = out[1e-3]
    assert int((neg > t).sum()) <= 20  # at most the FAR: 1e-3 of 20,000
    assert int((neg >= t).sum()) > 20  # and the smallest such threshold
    assert tar == pytest.approx((pos > t).float().mean().item())
    with pytest.raises(ValueError, match="needs at least 10,000 different-identity pairs"):
        tar_at_far(pos, neg[:5000], (1e-4,))


def test_all_pairs_and_verification_on_perfect_and_random_embeddings():
    labels = torch.arange(40).repeat_interleave(5)  # 40 identities x 5 images
    perfect = torch.nn.functional.one_hot(labels, 40).float() + 0.01 * torch.randn(200, 40)
    pairs = face_data.make_pairs(labels, folds=4, per_fold=50)
    assert pairs.shape == (4, 100, 3)
    flat = pairs.reshape(-1, 3)
    assert bool(((labels[flat[:, 0]] == labels[flat[:, 1]]).long() == flat[:, 2]).all())
    assert len({(int(a), int(b)) for a, b, _ in flat}) == len(flat)  # no pair twice
    pos, neg = all_pairs(cosine_matrix(perfect), labels)
    assert len(pos) == 40 * 10 and len(neg) == 200 * 199 // 2 - 400
    good = verification(perfect, labels, pairs)
    assert good["acc"] == 1.0 and good["tar_far_1e-3"] == 1.0
    bad = verification(torch.randn(200, 40), labels, pairs)
    assert bad["acc"] < 0.7 and bad["tar_far_1e-3"] < 0.1


def test_cjk_identities_split_disjoint_and_render():
    try:
        faces = face_data.find_faces()
    except face_data.FaceDataNotFoundError as err:
        pytest.skip(str(err))
    chars = face_data.gb2312_level1()
    assert len(chars) == 3755 and chars[0] == "啊"
    train, test = face_data.identity_split(chars, 500, 2000)
    assert len(test) == 500 and len(train) == 2000 and not set(train) & set(test)
    cov = face_data.coverage(faces, ["永", "爱"])
    assert len(cov["永"]) == len(faces) and len(cov["爱"]) < len(faces)  # the Japanese and Korean fonts lack 爱
    img = face_data.render("永", faces[0])
    assert img.shape == (32, 32) and img.dtype == np.uint8 and img.max() == 255 and img[0].max() == 0
    a = face_data.augment(torch.from_numpy(img)[None, None].repeat(4, 1, 1, 1), torch.Generator().manual_seed(1))
    b = face_data.augment(torch.from_numpy(img)[None, None].repeat(4, 1, 1, 1), torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a[0], a[1])  # seeded, and different per image
    with pytest.raises(face_data.FaceDataNotFoundError, match="apt-get install fonts-noto-cjk"):
        face_data.find_faces("/nonexistent")


def test_a_dataset_without_pairs_is_refused():
    one_each = torch.zeros(3, 1, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="single image"):
        face_data.FaceDataset("x", "train", one_each, torch.tensor([0, 1, 2]), ["a", "b", "c"])
    with pytest.raises(ValueError, match="1 identity"):
        face_data.FaceDataset("x", "train", one_each, torch.tensor([0, 0, 0]), ["a"])


def _tiny_face_data(n_train_ids=6, n_test_ids=25, per_id=6, seed=0):
    """Identities of random 32x32 blob patterns with per-image noise (no fonts needed)."""
    g = torch.Generator().manual_seed(seed)

    def split(n_ids, name):
        protos = torch.rand(n_ids, 1, 32, 32, generator=g)
        imgs = protos.repeat_interleave(per_id, 0) + 0.15 * torch.randn(n_ids * per_id, 1, 32, 32, generator=g)
        images = (imgs.clamp(0, 1) * 255).round().to(torch.uint8)
        labels = torch.arange(n_ids).repeat_interleave(per_id)
        return face_data.FaceDataset("tiny", name, images, labels, [f"id{i}" for i in range(n_ids)])

    return split(n_train_ids, "train"), split(n_test_ids, "test")


def test_a_plain_recogniser_trains_publishes_and_verifies_a_pair(tmp_path):
    import zoo

    data = _tiny_face_data()
    run = zoo.train("face", "face-resnet8", data, out=tmp_path / "plain",
                    settings={"epochs": 2, "batch_size": 12, "lr": 0.05, "progress": False})
    assert run.finished and run.card.task == "face" and run.card.method == "plain"
    m = run.card.metrics
    assert {"tar_far_1e-3", "tar_far_1e-4", "acc", "acc_std", "threshold"} <= set(m)
    model = zoo.load(tmp_path / "plain")
    test = data[1]
    a, b = zoo.predict(model, [test.images[0, 0].numpy(), test.images[1, 0].numpy()])
    assert len(a["embedding"]) == 128 and a["similarity"] == b["similarity"]
    assert a["same"] == (a["similarity"] > m["threshold"])
    [one] = zoo.predict(model, [test.images[0, 0].numpy()])
    assert "similarity" not in one and abs(sum(v * v for v in one["embedding"]) - 1) < 1e-3
    small = (data[0], face_data.FaceDataset("tiny", "test", test.images[:30], test.labels[:30], test.identities))
    with pytest.raises(ValueError, match="TAR at FAR 1e-4 needs at least 10,000"):
        zoo.train("face", "face-resnet8", small, out=tmp_path / "small")
    assert not (tmp_path / "small").exists()


def test_proxyless_kd_trains_the_embedding_under_the_teachers_frozen_classifier(tmp_path):
    import zoo
    from zoo.face.heads import ArcFace
    from zoo.face.recipes import inherited_margin_loss

    torch.manual_seed(0)
    e, w, y = torch.randn(6, 8), torch.randn(5, 8), torch.tensor([0, 1, 2, 3, 4, 0])
    head = ArcFace(8, 5)
    head.weight.data = w.clone()
    # the same value as the student's own ArcFace head would give with the teacher's weights in it
    assert inherited_margin_loss(e, w, y).item() == pytest.approx(torch.nn.functional.cross_entropy(head(e, y), y).item(), rel=1e-5)
    wg, eg = w.clone().requires_grad_(True), e.clone().requires_grad_(True)
    inherited_margin_loss(eg, wg, y).backward()
    assert wg.grad is None and eg.grad is not None  # only the student's embedding is trained
    with pytest.raises(ValueError, match="in the teacher's space"):
        inherited_margin_loss(torch.randn(6, 4), w, y)
    data = _tiny_face_data()
    teacher = zoo.train("face", "face-resnet8", data, out=tmp_path / "teacher",
                        settings={"epochs": 1, "batch_size": 12, "lr": 0.05, "progress": False})
    kd = zoo.distill(str(tmp_path / "teacher"), "face-resnet8", "proxyless-kd", data=data, out=tmp_path / "kd",
                     settings={"epochs": 1, "batch_size": 12, "lr": 0.05, "progress": False})
    assert kd.finished and kd.card.method == "proxyless-kd" and "tar_far_1e-3" in kd.card.metrics
    header = (tmp_path / "kd" / "log.csv").read_text().splitlines()[0].split(",")
    assert "inherited_margin" in header and "task" not in header
    emb = zoo.distill(str(tmp_path / "teacher"), "face-resnet8", "embedding-kd", data=data, out=tmp_path / "emb",
                      settings={"epochs": 1, "batch_size": 12, "lr": 0.05, "progress": False})
    header = (tmp_path / "emb" / "log.csv").read_text().splitlines()[0].split(",")
    assert emb.finished and "embedding_l2" in header and "task" not in header  # the L2 baseline: no margin loss
    from zoo.face.recipes import embedding_l2_loss

    rkd = zoo.distill(str(tmp_path / "teacher"), "face-resnet8", "embedding-rkd", data=data, out=tmp_path / "rkd",
                      settings={"epochs": 1, "batch_size": 12, "lr": 0.05, "progress": False})
    header = (tmp_path / "rkd" / "log.csv").read_text().splitlines()[0].split(",")
    assert rkd.finished and "rkd" in header and "task" not in header  # the relations alone, no margin loss
    both = zoo.distill(str(tmp_path / "teacher"), "face-resnet8", "embedding-rkd-arcface", data=data,
                       out=tmp_path / "rkd-arcface", settings={"epochs": 1, "batch_size": 12, "lr": 0.05, "progress": False})
    header = (tmp_path / "rkd-arcface" / "log.csv").read_text().splitlines()[0].split(",")
    assert both.finished and {"rkd", "task"} <= set(header)  # the relations beside the student's own ArcFace
    # why relations: a direction shared by all of the teacher's embeddings (its embeddings sit in a narrow cone)
    # leaves RKD unchanged (distances and angles ignore a common offset), while the normalised L2 moves with it
    from zoo.losses.relations import rkd_loss

    torch.manual_seed(0)
    s_emb, t_emb = torch.randn(16, 8), torch.randn(16, 8)
    offset = 20 * torch.randn(1, 8)
    assert rkd_loss(s_emb, t_emb + offset).item() == pytest.approx(rkd_loss(s_emb, t_emb).item(), rel=1e-4)
    from zoo.face.recipes import embedding_l2_loss as l2

    assert abs(l2(s_emb, t_emb + offset).item() - l2(s_emb, t_emb).item()) > 0.1
    a, b = torch.tensor([[3.0, 4.0]]), torch.tensor([[4.0, 3.0]])  # cos = 24/25: 2 - 2 cos = 2/25
    assert embedding_l2_loss(a, b).item() == pytest.approx(2 / 25) and embedding_l2_loss(a * 1e6, b).item() == pytest.approx(2 / 25)


def test_identity_folders_and_lfw_pairs_as_users_hold_them(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for person, count in (("Ann_A", 3), ("Bob_B", 2), ("Cy_C", 1)):
        (tmp_path / "lfw" / person).mkdir(parents=True)
        for i in range(1, count + 1):
            Image.fromarray(rng.integers(0, 255, (40, 36, 3), dtype=np.uint8)).save(tmp_path / "lfw" / person / f"{person}_{i:04d}.jpg")
    folder = face_data.load_identity_folder(tmp_path / "lfw")
    assert folder.identities == ["Ann_A", "Bob_B", "Cy_C"] and folder.images.shape == (6, 1, 32, 32)
    assert folder.labels.tolist() == [0, 0, 0, 1, 1, 2]
    (tmp_path / "pairs.txt").write_text("2 1\nAnn_A 1 2\nAnn_A 1 Cy_C 1\nBob_B 1 2\nBob_B 2 Ann_A 3\n")
    images, pairs = face_data.read_lfw_pairs(tmp_path / "pairs.txt", tmp_path / "lfw")
    assert pairs.shape == (2, 2, 3) and pairs[:, :, 2].tolist() == [[1, 0], [1, 0]]
    assert len(images) == 6 and all(images.labels[a] == images.labels[b] for a, b, s in pairs.reshape(-1, 3).tolist() if s)
    # bad input: a missing file, a malformed line, a single identity, one image per identity, mixed sizes
    (tmp_path / "bad.txt").write_text("1 1\nAnn_A 1 9\nBob_B 1 Ann_A 1\n")
    with pytest.raises(FileNotFoundError, match=r"bad.txt:2: .*Ann_A_0009.jpg does not exist"):
        face_data.read_lfw_pairs(tmp_path / "bad.txt", tmp_path / "lfw")
    (tmp_path / "bad2.txt").write_text("1 1\nAnn_A one two\nBob_B 1 Ann_A 1\n")
    with pytest.raises(ValueError, match="bad2.txt:2: fold 1 expects a same-person line 'name i j'"):
        face_data.read_lfw_pairs(tmp_path / "bad2.txt", tmp_path / "lfw")
    # checked before any image is read: a fold's order, a self pair, one person on a different-person line
    for name, text, message in (
            ("swapped.txt", "1 1\nBob_B 1 Ann_A 1\nAnn_A 1 2\n", "swapped.txt:2: fold 1 expects a same-person line"),
            ("self.txt", "1 1\nAnn_A 1 1\nBob_B 1 Ann_A 1\n", "self.txt:2: the same-person pair names image 1 of Ann_A twice"),
            ("one-person.txt", "1 1\nAnn_A 1 2\nAnn_A 1 Ann_A 3\n", "one-person.txt:3: the different-person pair names Ann_A twice"),
            ("empty-header.txt", "0 0\n", "empty-header.txt:1: the header announces 0 folds .*no pairs")):
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=message):
            face_data.read_lfw_pairs(tmp_path / name, tmp_path / "lfw")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00\x81" * 8)
    with pytest.raises(ValueError, match="binary.txt is not a text file"):
        face_data.read_lfw_pairs(tmp_path / "binary.txt", tmp_path / "lfw")
    with pytest.raises(FileNotFoundError, match="is not a file"):
        face_data.read_lfw_pairs(tmp_path / "lfw", tmp_path / "lfw")
    (tmp_path / "lfw" / "Bob_B" / "Bob_B_0002.jpg").write_bytes(b"not a jpeg")  # a corrupt image: its line and path
    with pytest.raises(ValueError, match=r"pairs.txt:4: .*Bob_B_0002.jpg cannot be read as an image"):
        face_data.read_lfw_pairs(tmp_path / "pairs.txt", tmp_path / "lfw")
    (tmp_path / "lfw" / "Bob_B" / "Bob_B_0002.jpg").unlink()
    (tmp_path / "one" / "solo").mkdir(parents=True)
    Image.new("L", (8, 8)).save(tmp_path / "one" / "solo" / "a.png")
    with pytest.raises(ValueError, match="1 identity folder"):
        face_data.load_identity_folder(tmp_path / "one")
    (tmp_path / "one" / "other").mkdir()
    Image.new("L", (9, 9)).save(tmp_path / "one" / "other" / "b.png")
    with pytest.raises(ValueError, match="single image, so there are no same-identity pairs"):
        face_data.load_identity_folder(tmp_path / "one")
    Image.new("L", (8, 8)).save(tmp_path / "one" / "other" / "c.png")
    with pytest.raises(ValueError, match=r"is \(\d, \d\) but .* is \(\d, \d\); pass size= to resize them"):
        face_data.load_identity_folder(tmp_path / "one", size=None)


def test_training_batches_are_identity_pairs_with_hard_marks():
    train, _ = _tiny_face_data(per_id=5)
    names = ["Noto Sans CJK SC", "AR PL UKai CN"]
    faces = torch.arange(len(train)) % 2  # odd images drawn in the brush-script face
    train = face_data.FaceDataset("tiny", "train", train.images, train.labels, train.identities, faces,
                                  {"typefaces": names})
    idx = torch.tensor([0, 7, 12, 29, 3, 9, 20])  # odd: the last image is unpaired
    a = train.batch(idx, torch.Generator().manual_seed(1), augment=True)
    b = train.batch(idx, torch.Generator().manual_seed(1), augment=True)
    assert a["paired"] and torch.equal(a["index"], b["index"]) and torch.equal(a["inputs"]["images"], b["inputs"]["images"])
    order = a["index"]
    assert order[0:6:2].tolist() == [0, 7, 12] and order[6].item() == 29  # anchors: the first ceil(B/2) indices
    assert torch.equal(train.labels[order[0:6:2]], train.labels[order[1:6:2]])  # same identity ...
    assert (order[0:6:2] != order[1:6:2]).all()  # ... another image of it
    assert torch.equal(a["hard"], (order % 2 == 1))
    # evaluation batches and the test split are not paired; unknown typefaces mark nothing hard
    assert not train.batch(idx)["paired"]
    plain, _ = _tiny_face_data()
    assert plain.batch(idx, augment=True)["hard"] is None
    # partners are uniform over the identity's other images
    many = train.partners(torch.zeros(3000, dtype=torch.long), torch.Generator().manual_seed(0))
    counts = torch.bincount(many, minlength=5)
    assert counts[0] == 0 and counts[1:].min() > 600


def test_ddl_matches_the_authors_code_and_its_definition():
    from zoo.face.recipes import ddl_loss, hardest_negatives, soft_histogram

    h = soft_histogram(torch.tensor([0.3, 0.3]))
    assert h.shape == (1000,) and h.sum().item() == pytest.approx(1.0) and h.argmax().item() == 300
    # golden value: Tencent/TFace torchkit/loss/ddl.py at 8f5b85a0977df43dcb0d5ff872c5062612c2e647, run once on
    # these inputs (the easy branch first); their negatives are the row maxima of triu(f f^T, 1), zeros kept
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 8, generator=g)
    easy_a, easy_b = base + 0.3 * torch.randn(6, 8, generator=g), base + 0.3 * torch.randn(6, 8, generator=g)
    hard_a, hard_b = base[:5] + torch.randn(5, 8, generator=g), base[:5] + torch.randn(5, 8, generator=g)
    easy_n, hard_n = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    cos = lambda x, y: (torch.nn.functional.normalize(x) * torch.nn.functional.normalize(y)).sum(1)
    tface_neg = lambda f: torch.triu(torch.nn.functional.normalize(f) @ torch.nn.functional.normalize(f).T, 1).max(1).values
    value = ddl_loss(cos(easy_a, easy_b), tface_neg(easy_n), cos(hard_a, hard_b), tface_neg(hard_n))
    assert value.item() == pytest.approx(-0.9446449875831604, abs=1e-5)
    # the hardest negative of each row, over later images of other identities, by brute force
    e, labels = torch.randn(7, 5, generator=g), torch.tensor([0, 1, 0, 2, 1, 3, 3])
    c = torch.nn.functional.normalize(e) @ torch.nn.functional.normalize(e).T
    expect = [max(c[i, j].item() for j in range(i + 1, 7) if labels[j] != labels[i])
              for i in range(7) if any(labels[j] != labels[i] for j in range(i + 1, 7))]
    assert hardest_negatives(e, labels).tolist() == pytest.approx(expect)
    assert hardest_negatives(e[:1], labels[:1]).numel() == 0
    # hard distributions equal to the easy ones: no KL, only the order term
    pos, neg = torch.tensor([0.8, 0.6]), torch.tensor([0.2, 0.1])
    assert ddl_loss(pos, neg, pos, neg).item() == pytest.approx(0.5 * 4 * (0.15 - 0.7))
    with pytest.raises(ValueError, match="1-D"):
        ddl_loss(pos[None], neg, pos, neg)


def test_ddl_recipe_trains_on_paired_batches(tmp_path):
    import zoo
    from zoo.face.recipes import _DDL

    train, test = _tiny_face_data()
    faces = torch.arange(len(train)) % 3 == 0
    train = face_data.FaceDataset("tiny", "train", train.images, train.labels, train.identities, faces.long(),
                                  {"typefaces": ["Noto Sans CJK SC", "AR PL UKai CN"]})
    term = _DDL()
    batch = train.batch(torch.arange(0, 36, 3), torch.Generator().manual_seed(0), augment=True)
    assert batch["hard"].any() and not batch["hard"].all()
    protos = torch.randn(6, 16)
    e = (protos[batch["labels"]] + 0.5 * torch.randn(12, 16)).requires_grad_(True)
    term([e], [], batch).backward()
    assert e.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="identity-paired"):
        term([e], [], train.batch(torch.arange(12)))
    settings = {"epochs": 1, "batch_size": 16, "lr": 0.05, "progress": False}
    run = zoo.distill(None, "face-resnet8", "ddl", data=(train, test), out=tmp_path / "ddl", settings=settings)
    header = (tmp_path / "ddl" / "log.csv").read_text().splitlines()[0].split(",")
    assert run.finished and run.card.method == "ddl" and {"task", "ddl"} <= set(header)
    # data that does not say which images are hard is refused before anything is written
    plain, _ = _tiny_face_data()
    with pytest.raises(ValueError, match="ddl needs to know which images are hard"):
        zoo.distill(None, "face-resnet8", "ddl", data=(plain, test), out=tmp_path / "nohard", settings=settings)
    assert not (tmp_path / "nohard").exists()
    for bad, message in (({"ddl.order_weight": -5}, "must be >= 0"), ({"ddl.bins": 2.5}, "integer bins")):
        with pytest.raises(ValueError, match=message):
            zoo.distill(None, "face-resnet8", "ddl", data=(train, test), out=tmp_path / "bad", settings={**settings, **bad})
        assert not (tmp_path / "bad").exists()
    with pytest.raises(ValueError, match="at least 16"):
        zoo.distill(None, "face-resnet8", "ddl", data=(train, test), out=tmp_path / "small",
                    settings={**settings, "batch_size": 8})


def test_roles_not_split_names_and_teachers_of_other_identities(tmp_path):
    """A training set whose split has another name still trains the margin head (not the embedding as
    logits); embedding-kd takes a teacher trained on other identities; proxyless-kd refuses one, by name,
    before anything is written."""
    import dataclasses

    import zoo

    train, test = _tiny_face_data(n_train_ids=8)
    settings = {"epochs": 1, "batch_size": 16, "lr": 0.05, "progress": False}
    named = dataclasses.replace(train, split="training")
    run = zoo.train("face", "face-resnet8", (named, test), out=tmp_path / "named", settings=settings)
    log = (tmp_path / "named" / "log.csv").read_text().splitlines()
    assert run.finished and float(log[1].split(",")[log[0].split(",").index("loss")]) > 10  # ArcFace (s = 64) CE
    other_train, _ = _tiny_face_data(n_train_ids=5, seed=3)
    other_train = dataclasses.replace(other_train, identities=[f"x{i}" for i in range(5)])
    teacher = zoo.train("face", "face-resnet8", (other_train, test), out=tmp_path / "teacher", settings=settings)
    emb = zoo.distill(str(tmp_path / "teacher"), "face-resnet8", "embedding-kd", data=(train, test),
                      out=tmp_path / "emb", settings=settings)
    assert teacher.finished and emb.finished
    with pytest.raises(ValueError, match="the teacher's classifier has 5 identities, the training data uses identity 7"):
        zoo.distill(str(tmp_path / "teacher"), "face-resnet8", "proxyless-kd", data=(train, test),
                    out=tmp_path / "proxy", settings=settings)
    assert not (tmp_path / "proxy").exists()


def test_every_bundled_face_entry_verifies_a_pair_and_reproduces_its_card(tmp_path):
    """Offline: each face entry of the zoo embeds and verifies two sample images at its card's threshold, and
    `zoo.evaluate` (what `zoo eval` runs) measures its card's TAR@FAR=1e-3 again on the held-out identities;
    with ``data_root`` the held-out set is read from (here: rendered into) that folder."""
    import zoo

    elsewhere = zoo.evaluate("face-resnet8-proxyless-kd.cjk-fonts", data_root=str(tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == ["cjk-fonts-v1-test-n500-k1-s0.safetensors"]
    assert all(abs(elsewhere["measured"][k] - v) < 1e-3 for k, v in elsewhere["card"].items())

    entries = [c.name for c in zoo.list_models(task="face") if c.metrics_source != "reported"]
    assert {"face-resnet20.cjk-fonts", "face-resnet8.cjk-fonts", "face-resnet8-proxyless-kd.cjk-fonts",
            "face-resnet8-embedding-rkd-arcface.cjk-fonts"} <= set(entries)
    for name in entries:
        model = zoo.load(name)
        a, b = zoo.predict(model)  # the card's bundled sample images
        assert a["similarity"] == b["similarity"] and a["same"] == (a["similarity"] > model.card.metrics["threshold"])
        if name == entries[0]:  # the verdict is printed once, on the first image's line; no classes to rank
            from zoo.tasks import get_adapter

            adapter = get_adapter("face")
            assert "with the next image" in adapter.describe(a) and "line above" in adapter.describe(b)
            with pytest.raises(ValueError, match="not classes to rank"):
                zoo.predict(model, top_k=3)
            samples = adapter.sample_inputs(model.card)
            three = zoo.predict(model, [samples[0], samples[1], samples[0]])  # only a pair is compared
            assert all("similarity" not in r for r in three)
            assert "pass exactly two images" in adapter.describe(three[0])
        result = zoo.evaluate(name)
        assert set(result["measured"]) == set(result["card"]), name
        for metric, value in result["card"].items():
            assert abs(result["measured"][metric] - value) < 1e-3, (name, metric, result["measured"][metric], value)


def test_face_benchmark_takes_an_existing_teacher_and_refuses_a_wrong_one(tmp_path, capsys):
    """`benchmarks/face_kd.py --teacher`: an unknown entry or a folder without a card stops with one line and
    writes nothing; --teacher beside the trained teacher's options is a usage error."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "face_kd.py"
    spec = importlib.util.spec_from_file_location("face_bench_args", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "run"
    assert bench.main(["--teacher", "no-such-face-teacher", "--out", str(out)]) == 2
    assert "no-such-face-teacher" in capsys.readouterr().err
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    assert bench.main(["--teacher", str(unfinished), "--out", str(out)]) == 2
    assert "card" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(SystemExit):
        bench.parse_args(["--teacher", "face-resnet20.cjk-fonts", "--teacher-arch", "face-resnet14", "--out", "x"])
    assert "do not apply" in capsys.readouterr().err
    assert bench.resolve_teacher("face-resnet20.cjk-fonts") == "face-resnet20.cjk-fonts"
    # the run's other arguments are checked before the teacher would train, not hours later
    for bad, message in ((["--teacher-arch", "no-such-arch"], "unknown face architecture 'no-such-arch'"),
                         (["--seeds", "0"], "at least 2 seeds"), (["--recipes", "nope"], "unknown recipe 'nope'")):
        assert bench.main([*bad, "--out", str(out)]) == 2
        assert message in capsys.readouterr().err
    assert not out.exists()
    assert bench.parse_args(["--out", "x"]).teacher_arch == bench.TEACHER_ARCH
