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
