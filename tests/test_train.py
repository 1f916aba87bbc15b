
import dataclasses
import pytest
import torch

from zoo import cli
from zoo.trainer import NonFiniteLossError, TrainConfig, TrainModule, config_from_overrides, fit, lr_at

TINY = ["train", "classification", "--arch", "resnet8", "--train-subset", "256", "--batch-size", "32",
        "--epochs", "2", "--set", "progress=false"]


def _weights(path):
    return torch.load(path / "train_state.pt", map_location="cpu", weights_only=True)["module"]


def test_killed_and_resumed_run_is_bit_identical(tmp_path):
    assert cli.main(TINY + ["--out", str(tmp_path / "a"), "--max-steps", "12"]) == 0
    assert cli.main(TINY + ["--out", str(tmp_path / "b"), "--max-steps", "6"]) == 0
    assert torch.load(tmp_path / "b" / "train_state.pt", weights_only=True)["step"] == 6
    assert cli.main(TINY + ["--out", str(tmp_path / "b"), "--max-steps", "12", "--resume"]) == 0
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # and training moved the weights at all
    c = tmp_path / "c"
    assert cli.main(TINY + ["--out", str(c), "--max-steps", "1"]) == 0
    assert not all(torch.equal(a[k], _weights(c)[k]) for k in a)


def test_finished_run_exports_a_loadable_checkpoint_with_card(tmp_path):
    import zoo

    assert cli.main(TINY + ["--out", str(tmp_path / "r")]) == 0
    model = zoo.load(tmp_path / "r")
    card = model.card
    assert card.architecture == "resnet8" and card.training.epochs == 2 and card.training.seeds == [0]
    assert card.training.command.startswith("zoo train classification --arch resnet8")
    assert [h["epoch"] for h in card.extra["history"]] == [1, 2]
    # the card's number is what kdzoo's evaluation of the saved weights measures (zoo eval)
    assert zoo.evaluate(tmp_path / "r")["measured"]["top1"] == card.metrics["top1"]
    log = (tmp_path / "r" / "log.csv").read_text().splitlines()
    assert log[0] == "step,epoch,lr,loss,task" and len(log) > 1


def test_resume_without_checkpoint_or_with_changed_schedule_fails(tmp_path):
    assert cli.main(TINY + ["--out", str(tmp_path / "x"), "--resume"]) == 2
    assert cli.main(TINY + ["--out", str(tmp_path / "y"), "--max-steps", "2"]) == 0
    with pytest.raises(ValueError, match="epochs was 2, now 3"):
        from zoo.classification.distill import train_classifier

        train_classifier("resnet8", out_dir=tmp_path / "y", cfg=TrainConfig(epochs=3, batch_size=32, progress=False),
                         train_subset=256, resume=True)
    changed = [a if a != "2" else "3" for a in TINY]  # --epochs 3 on the command line: refused, exit 2
    assert changed != TINY and cli.main(changed + ["--out", str(tmp_path / "y"), "--resume"]) == 2


class Exploding(torch.nn.Module):
    def __init__(self, blow_up_at: int):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(3))
        self.calls = 0
        self.blow_up_at = blow_up_at

    def forward(self, batch):
        self.calls += 1
        loss = (self.w * batch[0]).sum() ** 2 / 1000
        return {"loss": loss * (float("nan") if self.calls >= self.blow_up_at else 1.0)}


class Rows:
    def __len__(self):
        return 64

    def batch(self, indices, generator=None, augment=False, device=None):
        return (torch.randn(len(indices), 3, generator=generator).mean(0),)


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_checkpoint(tmp_path):
    cfg = TrainConfig(epochs=4, batch_size=8, checkpoint_every=2, progress=False, amp="off", channels_last=False)
    module = Exploding(blow_up_at=6)
    with pytest.raises(NonFiniteLossError, match="loss is nan at step 5") as err:
        fit(module, Rows(), cfg, tmp_path)
    assert "last good checkpoint" in str(err.value)
    state = torch.load(tmp_path / "train_state.pt", weights_only=True)
    # the step-4 checkpoint was confirmed by step 5's sane loss; step 6's forward is the NaN one
    assert state["step"] == 4 and torch.isfinite(state["module"]["w"]).all()
    assert not (tmp_path / "train_state.pt.pending").exists()


def test_deferred_nan_check_names_the_exact_step_and_saves_nothing_after_it(tmp_path):
    cfg = TrainConfig(epochs=4, batch_size=8, checkpoint_every=2, progress=False, amp="off", channels_last=False,
                      finite_check_every=3)
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 5 .*found at the check after step 6"):
        fit(Exploding(blow_up_at=6), Rows(), cfg, tmp_path)
    state = torch.load(tmp_path / "train_state.pt", weights_only=True)
    # the step-4 checkpoint was still pending (the step after it failed its check), so step 2's is kept
    assert state["step"] == 2 and torch.isfinite(state["module"]["w"]).all()
    assert not (tmp_path / "train_state.pt.pending").exists()


class HostReads:
    """Counts the calls that read a tensor's value back to the host (a device sync on a GPU)."""

    NAMES = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")

    def __init__(self, monkeypatch):
        self.count = 0
        for name in self.NAMES:
            real = getattr(torch.Tensor, name)

            def counted(t, *a, _real=real, **k):
                self.count += 1
                return _real(t, *a, **k)

            monkeypatch.setattr(torch.Tensor, name, counted)


def reads_per_step(monkeypatch, run) -> list[int]:
    """Host reads in each optimizer step of ``run(on_step_end)`` (the last step, with its logging, left out)."""
    reads, marks = HostReads(monkeypatch), []
    run(lambda step: marks.append(reads.count))
    return [b - a for a, b in zip(marks, marks[1:])][:-1]


@pytest.mark.parametrize("check_every, expect_reads", [(100, False), (1, True)])
def test_deferred_checks_leave_steps_without_host_reads(tmp_path, monkeypatch, check_every, expect_reads):
    cfg = TrainConfig(epochs=1, batch_size=4, checkpoint_every=1000, log_every=1000, progress=False, amp="off",
                      channels_last=False, finite_check_every=check_every)
    per_step = reads_per_step(monkeypatch, lambda hook: fit(Exploding(blow_up_at=10**9), Rows(), cfg,
                                                           tmp_path, on_step_end=hook))
    assert len(per_step) >= 10
    assert all(n > 0 for n in per_step) if expect_reads else per_step == [0] * len(per_step)


def test_on_step_end_sees_every_optimizer_step_before_its_checkpoint(tmp_path):
    cfg = TrainConfig(epochs=2, batch_size=8, checkpoint_every=2, progress=False, amp="off", channels_last=False)
    seen = []

    def on_step_end(step):
        saved = (tmp_path / "train_state.pt").exists() and torch.load(tmp_path / "train_state.pt", weights_only=True)["step"]
        seen.append((step, saved))

    result = fit(Exploding(blow_up_at=10**9), Rows(), cfg, tmp_path, on_step_end=on_step_end)
    assert [s for s, _ in seen] == list(range(1, result.total_steps + 1))
    assert all(saved is False or saved < step for step, saved in seen)


def test_bad_settings_are_listed():
    with pytest.raises(ValueError, match="unknown training setting.*'lrr'.*valid: .*lr"):
        config_from_overrides(TrainConfig(), {"lrr": 0.1})
    with pytest.raises(ValueError, match="schedule must be"):
        TrainConfig(schedule="linear")
    with pytest.raises(ValueError, match="multiple of grad_accum"):
        TrainConfig(batch_size=10, grad_accum=3)
    assert cli.main(["train", "classification", "--arch", "resnet8", "--out", "/tmp/x", "--set", "nope=1"]) == 2


def test_lr_schedules():
    cfg = TrainConfig(lr=1.0, epochs=10, warmup_epochs=1)
    assert lr_at(cfg, 0, 100, 10) == pytest.approx(0.1)
    assert lr_at(cfg, 10, 100, 10) == pytest.approx(1.0)
    assert lr_at(cfg, 55, 100, 10) == pytest.approx(0.5)
    step = TrainConfig(lr=1.0, schedule="step", milestones=(0.5, 0.75))
    assert [lr_at(step, s, 100, 10) for s in (0, 50, 80)] == pytest.approx([1.0, 0.1, 0.01])


def test_gradient_accumulation_matches_the_full_batch(tmp_path):
    """Accumulating 2 micro-batches of 16 gives the same update as one batch of 32 (no BN: linear model)."""

    class Linear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.lin = torch.nn.Linear(3, 1)

        def forward(self, batch):
            (x,) = batch
            return {"loss": (self.lin(x) ** 2).mean()}

    class Data(Rows):
        def batch(self, indices, generator=None, augment=False, device=None):
            return (torch.stack([torch.arange(3.0) + i for i in indices.tolist()]),)

    out = {}
    for accum in (1, 2):
        m = Linear()
        fit(m, Data(), TrainConfig(epochs=1, batch_size=32, grad_accum=accum, max_steps=1, progress=False,
                                   amp="off", channels_last=False, momentum=0.0), tmp_path / str(accum))
        out[accum] = m.lin.weight.detach().clone()
    assert torch.allclose(out[1], out[2], atol=1e-6)


def test_snapshots_are_loadable_checkpoints(tmp_path):
    import zoo

    assert cli.main(TINY + ["--out", str(tmp_path / "r"), "--set", "snapshot_every=1"]) == 0
    snaps = sorted((tmp_path / "r" / "snapshots").iterdir())
    assert [s.name for s in snaps] == ["epoch001"]  # the final epoch is the run itself
    snap = zoo.load(snaps[0])
    assert snap.card.training.epochs == 1 and snap.card.name == "resnet8.fashion-mnist.epoch1"


class TwoPlayers(TrainModule):
    """A toy adversarial pair: the discriminator learns to tell data from the generator's output, then the
    generator learns to fool it; each stage has its own optimizer (`TrainModule.stages`)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.generator = torch.nn.Linear(2, 2)
        self.discriminator = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
        self.calls: list[str] = []

    def stages(self):
        return ("discriminator", "generator")

    def stage_parameters(self, stage):
        return list(getattr(self, stage).parameters())

    def forward(self, batch, stage):
        self.calls.append(stage)
        real = batch["inputs"]
        fake = self.generator(torch.randn(real.shape, generator=torch.Generator().manual_seed(len(self.calls))))
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        if stage == "discriminator":
            d_real, d_fake = self.discriminator(real), self.discriminator(fake.detach())
            loss = bce(d_real, torch.ones_like(d_real)) + bce(d_fake, torch.zeros_like(d_fake))
        else:
            d_fake = self.discriminator(fake)
            loss = bce(d_fake, torch.ones_like(d_fake))
        return {"loss": loss}


class Points:
    def __init__(self, n: int = 64) -> None:
        self.x = torch.randn(n, 2, generator=torch.Generator().manual_seed(1)) * 0.5 + 2.0

    def __len__(self) -> int:
        return len(self.x)

    def batch(self, indices, generator=None, augment=False, device=None):
        return {"inputs": self.x[indices], "labels": torch.zeros(len(indices))}


def test_stages_step_their_own_optimizers_in_order_and_resume_exactly(tmp_path):
    cfg = TrainConfig(epochs=2, batch_size=16, lr=0.05, optimizer="adamw", progress=False, log_every=1,
                      channels_last=False, amp="off")
    whole = TwoPlayers()
    before = {k: v.clone() for k, v in whole.state_dict().items()}
    fit(whole, Points(), cfg, tmp_path / "whole")
    assert whole.calls[:4] == ["discriminator", "generator", "discriminator", "generator"]
    assert all(not torch.equal(before[k], v) for k, v in whole.state_dict().items())  # both players learnt
    state = torch.load(tmp_path / "whole" / "train_state.pt", weights_only=True)
    assert set(state["optimizers"]) == {"discriminator", "generator"} and "optimizer" not in state
    header = (tmp_path / "whole" / "log.csv").read_text().splitlines()[0].split(",")
    assert {"loss", "discriminator/loss", "generator/loss"} <= set(header)

    fit(TwoPlayers(), Points(), TrainConfig(**{**cfg.__dict__, "max_steps": 3}), tmp_path / "cut")
    cut = TwoPlayers()
    cut.calls = ["x"] * 6  # the noise of step 4 on depends on the call count, as after 3 steps
    fit(cut, Points(), cfg, tmp_path / "cut", resume=True)
    assert all(torch.equal(v, cut.state_dict()[k]) for k, v in whole.state_dict().items())


def test_a_stage_without_parameters_is_refused(tmp_path):
    class Empty(TwoPlayers):
        def stage_parameters(self, stage):
            return [] if stage == "generator" else super().stage_parameters(stage)

    with pytest.raises(ValueError, match="no trainable parameters in stage 'generator'"):
        fit(Empty(), Points(), TrainConfig(epochs=1, batch_size=16, progress=False), tmp_path)


def test_eval_every_evaluates_every_nth_epoch_and_always_the_last(tmp_path):
    cfg = TrainConfig(epochs=5, batch_size=32, eval_every=2, progress=False, amp="off", channels_last=False)
    calls = []
    result = fit(Exploding(blow_up_at=10**9), Rows(), cfg, tmp_path, evaluate=lambda: calls.append(1) or {"m": 1.0})
    assert [h["epoch"] for h in result.history] == [2, 4, 5] and len(calls) == 3
    with pytest.raises(ValueError, match="eval_every must be >= 1"):
        TrainConfig(eval_every=0)


def test_a_resumed_run_counts_the_wall_time_of_every_segment(tmp_path):
    cfg = TrainConfig(epochs=2, batch_size=8, progress=False, amp="off", channels_last=False)
    module = Exploding(blow_up_at=10**9)
    first = fit(module, Rows(), dataclasses.replace(cfg, max_steps=8), tmp_path)
    saved = torch.load(tmp_path / "train_state.pt", weights_only=True)["train_seconds"]
    assert 0 < saved <= first.seconds
    state = torch.load(tmp_path / "train_state.pt", weights_only=True)
    state["train_seconds"] = 1000.0  # as if the first segment had taken 1000 s
    torch.save(state, tmp_path / "train_state.pt")
    second = fit(module, Rows(), cfg, tmp_path, resume=True)
    assert second.finished and 1000.0 < second.seconds < 1000.0 + 60  # the first segment's seconds are carried on
