"""GAN-based KD: logit discriminator and its two losses (zoo.losses.adversarial)."""
from __future__ import annotations

import math

import pytest
import torch

from zoo.losses.adversarial import LogitDiscriminator, discriminator_loss, generator_loss


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def _linear_disc(conditional: bool) -> LogitDiscriminator:
    """hidden=(): D(x) = x_0 (real/fake logit) and, when conditional, class logits = x."""
    disc = LogitDiscriminator(2, hidden=(), conditional=conditional).double()
    with torch.no_grad():
        disc.adv_head.weight.copy_(torch.tensor([[1.0, 0.0]]))
        disc.adv_head.bias.zero_()
        if conditional:
            disc.class_head.weight.copy_(torch.eye(2))
            disc.class_head.bias.zero_()
    return disc


def test_discriminator_shapes():
    torch.manual_seed(0)
    x = torch.randn(4, 10)
    adv, cls = LogitDiscriminator(10)(x)
    assert adv.shape == (4,) and cls is None
    disc = LogitDiscriminator(10, hidden=(32, 16, 8), conditional=True)
    adv, cls = disc(x)
    assert adv.shape == (4,) and cls.shape == (4, 10)
    assert sum(isinstance(m, torch.nn.LeakyReLU) for m in disc.body) == 3
    assert disc.conditional and not LogitDiscriminator(10).conditional


def test_discriminator_loss_hand_value():
    s = torch.tensor([[-1.0, 0.0]], dtype=torch.float64)
    t = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([0])
    # BCE(2, 1) = softplus(-2); BCE(-1, 0) = softplus(-1)
    plain = _softplus(-2.0) + _softplus(-1.0)
    assert discriminator_loss(_linear_disc(False), s, t).item() == pytest.approx(plain, abs=1e-12)
    # class head = identity: CE([2, 0], 0) = softplus(-2); CE([-1, 0], 0) = softplus(1)
    cond = plain + _softplus(-2.0) + _softplus(1.0)
    assert discriminator_loss(_linear_disc(True), s, t, y).item() == pytest.approx(cond, abs=1e-12)


def test_generator_loss_hand_value():
    s = torch.tensor([[-1.0, 0.0]], dtype=torch.float64)
    # non-saturating: BCE(D(s) = -1, 1) = softplus(1); conditional adds CE([-1, 0], 0) = softplus(1)
    assert generator_loss(_linear_disc(False), s).item() == pytest.approx(_softplus(1.0), abs=1e-12)
    assert generator_loss(_linear_disc(True), s, torch.tensor([0])).item() == pytest.approx(2 * _softplus(1.0), abs=1e-12)


def test_discriminator_loss_reaches_only_the_discriminator():
    torch.manual_seed(0)
    disc = LogitDiscriminator(5, hidden=(8,), conditional=True)
    s, t = torch.randn(3, 5, requires_grad=True), torch.randn(3, 5, requires_grad=True)
    discriminator_loss(disc, s, t, torch.tensor([0, 1, 4])).backward()
    assert s.grad is None and t.grad is None
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in disc.parameters())


def test_generator_loss_reaches_only_the_student():
    torch.manual_seed(0)
    disc = LogitDiscriminator(5, hidden=(8,), conditional=True)
    s = torch.randn(3, 5, requires_grad=True)
    generator_loss(disc, s, torch.tensor([0, 1, 4])).backward()
    assert all(p.grad is None for p in disc.parameters())
    assert s.grad is not None and s.grad.abs().sum() > 0


def test_summed_losses_give_each_side_its_own_gradient():
    torch.manual_seed(0)
    disc = LogitDiscriminator(4, hidden=(6,))
    s, t = torch.randn(2, 4, requires_grad=True), torch.randn(2, 4)
    discriminator_loss(disc, s, t).backward()
    d_only = [p.grad.clone() for p in disc.parameters()]
    disc.zero_grad()
    s_only = torch.autograd.grad(generator_loss(disc, s), s)[0]
    (discriminator_loss(disc, s, t) + generator_loss(disc, s)).backward()
    assert all(torch.equal(p.grad, g) for p, g in zip(disc.parameters(), d_only))
    assert torch.allclose(s.grad, s_only)


def test_conditional_losses_require_labels():
    disc = LogitDiscriminator(3, conditional=True)
    with pytest.raises(ValueError):
        discriminator_loss(disc, torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError):
        generator_loss(disc, torch.zeros(2, 3))
