"""Longer end-to-end runs on real data (`python -m pytest -m slow`, a few minutes on a laptop CPU)."""
import pytest

import zoo


@pytest.mark.slow
def test_kd_from_the_bundled_student_teaches_a_small_net_on_real_fashion_mnist(tmp_path):
    """One epoch of KD on 10k real images: the student must learn far beyond chance."""
    run = zoo.distill("resnet20.fmnist", "resnet8", "kd", out=tmp_path / "kd", epochs=1, train_subset=10000,
                      settings={"progress": False})
    assert run.finished and run.card.teacher.name == "resnet20.fmnist"
    assert run.card.metrics["top1"] > 0.5  # chance is 0.1; 1 epoch on 10k images reached 0.68 here
    report = zoo.evaluate(tmp_path / "kd")
    assert abs(report["measured"]["top1"] - run.card.metrics["top1"]) < 1e-9


@pytest.mark.slow
def test_nlp_pipeline_end_to_end_on_a_real_pretrained_teacher(tmp_path):
    """Every stage of zoo.nlp.pipeline on all-MiniLM-L6-v2 and the real WordNet task, a few steps each."""
    pytest.importorskip("transformers")
    from zoo.nlp.models import pretrained_path
    from zoo.nlp.pipeline import main
    from zoo.nlp.publish import publish

    try:
        pretrained_path("all-MiniLM-L6-v2")
    except FileNotFoundError as err:
        pytest.skip(str(err))
    args = ["all", "--out", str(tmp_path / "run"), "--teacher", "all-MiniLM-L6-v2", "--train-subset", "256",
            "--teacher-epochs", "1", "--batch-size", "32", "--general-examples", "256", "--quiet"]
    assert main(args) == 0
    for stage in ("teacher", "general", "task", "plain", "baseline"):
        assert (tmp_path / "run" / f"{stage}.json").exists()
    card = publish(tmp_path / "run", "tiny-check", dest_root=tmp_path / "pub")
    import zoo

    model = zoo.load(tmp_path / "pub" / "tiny-check")
    assert zoo.predict(model, ["a small dog"])[0]["label"]
    assert card.extra["ratios"]["params_ratio"] > 1.0


@pytest.mark.slow
def test_gan_compression_benchmark_end_to_end_on_the_real_teacher(tmp_path):
    """benchmarks/gan_compression.py on 8 crops, 2 seeds, 2 steps: pairs from the real vintagify teacher, the
    twin protocol over gan-compression and omgd, the quality table and the figure (about 3 minutes)."""
    import importlib.util
    from pathlib import Path

    try:
        from zoo.gan.pretrained import pretrained_file

        pretrained_file("vintagify")
    except FileNotFoundError as err:
        pytest.skip(str(err))
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gan_compression.py"
    spec = importlib.util.spec_from_file_location("gan_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = tmp_path / "results"
    assert bench.main(["--out", str(tmp_path / "run"), "--results", str(results), "--seeds", "0", "1",
                       "--train-subset", "8", "--set", "epochs=1", "--set", "batch_size=4"]) == 0
    stem = "quality-photos-first8-cyclegan-vintagify-to-cyclegan-resnet9-ngf16-gan-compression-omgd"
    table = (results / f"{stem}.md").read_text()
    assert "| cyclegan-resnet9-ngf16 | omgd |" in table and "GAN Compression: full pipeline (paper)" in table
    assert "| the photo unchanged (no network, a reference) | - | " in table
    assert (results / f"{stem}.png").stat().st_size > 10_000


@pytest.mark.slow
def test_face_benchmark_end_to_end_on_the_cjk_fonts(tmp_path):
    """benchmarks/face_kd.py on 240 training images, 1 epoch, 2 seeds: the teacher, the twin protocol over
    proxyless-kd, embedding-kd and ddl, and the ROC figure (about 3 minutes, once the fonts are rendered)."""
    import importlib.util
    from pathlib import Path

    from zoo.face.data import FaceDataNotFoundError, find_faces

    try:
        find_faces()
    except FaceDataNotFoundError as err:
        pytest.skip(str(err))
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "face_kd.py"
    spec = importlib.util.spec_from_file_location("face_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = tmp_path / "results"
    assert bench.main(["--out", str(tmp_path / "run"), "--results", str(results), "--seeds", "0", "1",
                       "--train-subset", "240", "--teacher-arch", "face-resnet14", "--teacher-set", "epochs=1",
                       "--teacher-set", "batch_size=32", "--set", "epochs=1", "--set", "batch_size=32"]) == 0
    assert (results / "face-cjk-fonts-roc.png").stat().st_size > 10_000
    assert any(p.name.startswith("twins-cjk-fonts") and p.suffix == ".md" for p in results.iterdir())
