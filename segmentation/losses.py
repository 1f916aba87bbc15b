"""Dense-prediction distillation losses for semantic segmentation (survey section 5.2).

Structured knowledge distillation (SKD; Liu, Chen, Liu, Qu, Luo & Wang, "Structured Knowledge
Distillation for Semantic Segmentation", CVPR 2019):

- pixel-wise (their eq. 1):   l_pi = 1/(W'H') sum_i KL(q_i^t || q_i^s), per image, averaged over images;
- pair-wise (eqs. 2-3):       l_pa = 1/(W'H')^2 sum_ij (a_ij^s - a_ij^t)^2,  a_ij = f_i.f_j / (|f_i| |f_j|),
  the nodes i, j being the cells of a beta x beta max-pooling of the feature map;
- holistic (eq. 4):           a Wasserstein critic D on (image, class-probability map) pairs, with a
  gradient penalty (Gulrajani et al. 2017); the student minimises -E[D(I, Q^s)].

Channel-wise distillation (CWD; Shu, Liu, Gao, Yan & Shen, "Channel-wise Knowledge Distillation for
Dense Prediction", ICCV 2021), their eqs. 3-4:

    phi(y_c)_i = exp(y_{c,i} / T) / sum_i exp(y_{c,i} / T)       (a distribution over the H*W positions)
    l_cwd = T^2 / C * sum_c sum_i phi(y^T_c)_i log(phi(y^T_c)_i / phi(y^S_c)_i),  averaged over images.

Every value is checked against the reference code on fixed inputs in
``tests/test_segmentation_losses.py`` (the official SKD code, MMRazor, TorchDistiller).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _float(x: Tensor) -> Tensor:
    """Half-precision inputs are computed in float32 (softmax and sums over many positions); float32
    and float64 stay as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"the temperature must be > 0, got {temperature}")


def _check_maps(student: Tensor, teacher: Tensor, what: str, same_channels: bool = True) -> None:
    if student.dim() != 4 or teacher.dim() != 4:
        raise ValueError(f"{what} needs spatial maps (N, C, H, W) from both networks, got student "
                         f"{tuple(student.shape)} and teacher {tuple(teacher.shape)} (a model with no spatial output?)")
    if student.shape[0] != teacher.shape[0] or student.shape[2:] != teacher.shape[2:] or (
            same_channels and student.shape[1] != teacher.shape[1]):
        channels = same_channels and student.shape[1] != teacher.shape[1]
        raise ValueError(f"{what}: student {tuple(student.shape)} and teacher {tuple(teacher.shape)} must have the same "
                         f"batch size, {'channels and ' if same_channels else ''}spatial size "
                         f"(tap layers of the same stride, or resize"
                         + ("; features of other channel counts go through a 1x1-conv connector where the recipe "
                            "has one, e.g. cwd.connector=true)" if channels else ")"))


def pixel_wise_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """SKD's pixel-wise distillation (Liu et al. 2019, eq. 1): the KL divergence of the teacher's class
    distribution from the student's at every pixel, averaged over the pixels and images::

        l_pi = 1/(N W H) sum_{n,i} KL(q^t_{n,i} || q^s_{n,i}),   q = softmax(logits / T) over the C classes

    ``student_logits``, ``teacher_logits``: (N, C, H, W) at the same size. Returns a scalar (nats).
    The official code (irfanICMLL/structure_knowledge_distillation, utils/criterion.py,
    CriterionPixelWise) computes the soft cross-entropy -sum q^t log q^s, summed over the N images and
    divided by W*H only: N times this value plus the teacher's entropy term, which has no gradient.
    The paper uses no temperature (T = 1); a T != 1 scales the result by T^2, as Hinton et al. do.
    Raises ValueError for maps of other ranks or sizes."""
    _check_maps(student_logits, teacher_logits, "pixel-wise distillation")
    _check_temperature(temperature)
    t = temperature
    log_q_s = F.log_softmax(_float(student_logits) / t, dim=1)
    log_q_t = F.log_softmax(_float(teacher_logits) / t, dim=1)
    kl = (log_q_t.exp() * (log_q_t - log_q_s)).sum(1)  # (N, H, W)
    return kl.mean() * t * t


def pool_nodes(features: Tensor, scale: float) -> Tensor:
    """The nodes of SKD's pair-wise graph: max-pooling with a kernel (and stride) of int(scale * size)
    per side, ceil mode (so a 65 x 65 map at scale 0.5 gives 2 x 2 nodes, 8 x 8 gives 2 x 2). Returns
    (N, C, H', W'). Raises ValueError for a scale outside (0, 1]."""
    if not 0.0 < scale <= 1.0:
        raise ValueError(f"the pooling scale must be in (0, 1], got {scale}")
    kh, kw = max(1, int(features.shape[2] * scale)), max(1, int(features.shape[3] * scale))
    return F.max_pool2d(features, kernel_size=(kh, kw), stride=(kh, kw), padding=0, ceil_mode=True)


def similarity_map(features: Tensor, eps: float = 1e-8) -> Tensor:
    """Cosine similarities between all spatial positions: (N, C, H, W) -> (N, HW, HW), each position's
    C-vector divided by its L2 norm (+ ``eps``)."""
    f = _float(features).flatten(2)  # (N, C, P)
    f = f / (f.norm(dim=1, keepdim=True) + eps)
    return f.transpose(1, 2) @ f


def pair_wise_loss(student_features: Tensor, teacher_features: Tensor, scale: float = 0.5,
                   nodes: int | None = None) -> Tensor:
    """SKD's pair-wise distillation (Liu et al. 2019, eqs. 2-3): the squared difference of the two
    networks' cosine-similarity maps between the nodes of a max-pooled feature map::

        l_pa = 1/N sum_n 1/P^2 sum_{i,j} (a^s_{n,ij} - a^t_{n,ij})^2,   P = H' W' nodes

    ``student_features`` (N, Cs, H, W) and ``teacher_features`` (N, Ct, H', W'): channel counts may
    differ (only the P x P maps are compared); each is pooled by `pool_nodes` at ``scale`` (0.5: the
    official code's ``--pool-scale``), so both must give the same number of nodes; or, with ``nodes``
    = beta, by adaptive max-pooling to beta x beta nodes (the paper's granularity beta, for maps of
    different sizes). Returns a scalar.
    Matches CriterionPairWiseforWholeFeatAfterPool of the official code, which also detaches the
    norms; here the norms keep their gradient, as the paper's a_ij does."""
    if student_features.dim() != 4 or teacher_features.dim() != 4:
        raise ValueError(f"pair-wise distillation needs spatial maps (N, C, H, W), got student "
                         f"{tuple(student_features.shape)} and teacher {tuple(teacher_features.shape)}")
    if student_features.shape[0] != teacher_features.shape[0]:
        raise ValueError(f"pair-wise distillation: the student's {tuple(student_features.shape)} and the teacher's "
                         f"{tuple(teacher_features.shape)} features differ in batch size")
    if nodes is not None:
        smallest = min(*student_features.shape[2:], *teacher_features.shape[2:])
        if isinstance(nodes, bool) or not isinstance(nodes, int) or not 1 <= nodes <= smallest:
            raise ValueError(f"nodes (beta) must be a whole number in [1, {smallest}] (the smallest side of the "
                             f"student's {tuple(student_features.shape)} and teacher's {tuple(teacher_features.shape)} "
                             f"maps), got {nodes!r}")
        s, t = F.adaptive_max_pool2d(student_features, nodes), F.adaptive_max_pool2d(teacher_features, nodes)
    else:
        s, t = pool_nodes(student_features, scale), pool_nodes(teacher_features, scale)
    if s.shape[0] != t.shape[0] or s.shape[2:] != t.shape[2:]:
        raise ValueError(f"pair-wise distillation: the student's {tuple(student_features.shape)} and the teacher's "
                         f"{tuple(teacher_features.shape)} features pool to {tuple(s.shape[2:])} and "
                         f"{tuple(t.shape[2:])} nodes at scale {scale}; tap maps of proportional sizes")
    p = s.shape[2] * s.shape[3]
    return ((similarity_map(s) - similarity_map(t)) ** 2).sum((1, 2)).mean() / (p * p)


def cwd_loss(student_maps: Tensor, teacher_maps: Tensor, temperature: float = 4.0) -> Tensor:
    """Channel-wise distillation (Shu et al. 2021, eqs. 3-4): each channel's map is turned into a
    distribution over its H*W positions by a softmax at ``temperature``, and the teacher's is distilled
    into the student's by KL, summed over positions and channels, times T^2 / C, averaged over images.

    ``student_maps``, ``teacher_maps``: (N, C, H, W), the same shape (logits; or features after a
    connector). T = 4 is the paper's (Cityscapes, logits). Returns a scalar. Equal to MMRazor's
    ChannelWiseDivergence (mmrazor/models/losses/cwd.py) at loss_weight 1, and to TorchDistiller's
    CriterionCWD(norm_type='channel', divergence='kl'). Raises ValueError for other shapes."""
    _check_maps(student_maps, teacher_maps, "channel-wise distillation")
    _check_temperature(temperature)
    n, c = student_maps.shape[:2]
    t = temperature
    log_p_s = F.log_softmax(_float(student_maps).flatten(2) / t, dim=2)
    log_p_t = F.log_softmax(_float(teacher_maps).flatten(2) / t, dim=2)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum() * (t * t) / (n * c)


# ---------------------------------------------------------------- holistic: a Wasserstein critic
class HolisticDiscriminator(nn.Module):
    """The critic D(I, Q) of SKD's holistic term: a score map (N, C, H, W) given as logits, turned into the
    class probabilities Q = softmax over C (scale-free, so the critic judges the segmentation, not the
    logits' offset), concatenated, when ``conditional``, with the image I resized to the map's size (the
    paper's conditional D(Q | I)), then stride-2 4x4 convolutions with spectral normalisation (Miyato et
    al. 2018) and LeakyReLU(``negative_slope``) until the map is at most 4 x 4 (at most ``max_layers``),
    and a linear score. ``forward`` returns (N,) real-valued scores. No batch normalisation: a
    Wasserstein critic with a gradient penalty scores each sample on its own (Gulrajani et al. 2017, sec. 4).

    The official code's D is a SAGAN network (four such convolutions, 64..512 channels, two
    self-attention blocks) on 65 x 65 logits normalised by a BatchNorm, without the image; this one is
    sized for the zoo's small maps (``width`` channels, doubled per layer). Raises ValueError for a map
    smaller than 2 x 2, ``width`` < 1 or ``image_channels`` < 1."""

    def __init__(self, num_classes: int, image_channels: int = 3, width: int = 32, conditional: bool = True,
                 max_layers: int = 4, map_size: int = 12, negative_slope: float = 0.1) -> None:
        super().__init__()
        from torch.nn.utils.parametrizations import spectral_norm

        if map_size < 2 or width < 1 or image_channels < 1 or max_layers < 1 or num_classes < 2:
            raise ValueError(f"the critic needs score maps of at least 2 x 2 and 2 classes, width >= 1, image_channels >= 1, "
                             f"max_layers >= 1; got map {map_size}, {num_classes} classes, width {width}, "
                             f"image_channels {image_channels}, max_layers {max_layers}")
        self.conditional = conditional
        self.num_classes, self.image_channels = num_classes, image_channels
        layers: list[nn.Module] = []
        channels, size = num_classes + (image_channels if conditional else 0), map_size
        for k in range(max_layers):
            if size <= 4 and k > 0:
                break
            out = width * 2 ** k
            layers += [spectral_norm(nn.Conv2d(channels, out, 4, stride=2, padding=1)), nn.LeakyReLU(negative_slope)]
            channels, size = out, (size + 1) // 2
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(channels, 1)

    def forward(self, image: Tensor, score_map: Tensor) -> Tensor:
        if score_map.dim() != 4 or score_map.shape[1] != self.num_classes:
            raise ValueError(f"the critic scores (N, {self.num_classes}, H, W) maps, got the score map "
                             f"{tuple(score_map.shape)}")
        x = _float(score_map).softmax(1)
        if self.conditional:
            if image is None or image.dim() != 4 or image.shape[0] != x.shape[0] or image.shape[1] != self.image_channels:
                raise ValueError(f"the conditional critic needs images (N={x.shape[0]}, {self.image_channels}, H, W) with "
                                 f"the maps, got {None if image is None else tuple(image.shape)}")
            x = torch.cat([x, F.interpolate(image.to(x.dtype), size=x.shape[2:], mode="bilinear", align_corners=False)], 1)
        return self.head(self.body(x).mean((2, 3))).squeeze(1)


def gradient_penalty(disc: HolisticDiscriminator, image: Tensor, real: Tensor, fake: Tensor) -> Tensor:
    """WGAN-GP's penalty (Gulrajani et al. 2017, eq. 3): E[(|grad_x D(x)|_2 - 1)^2] at x = a real +
    (1 - a) fake, a ~ U(0, 1) per sample, the gradient norm taken per sample over the whole map."""
    real, fake = _float(real.detach()), _float(fake.detach())
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    x = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    scores = disc(image, x)
    (grad,) = torch.autograd.grad(scores.sum(), x, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def critic_loss(disc: HolisticDiscriminator, image: Tensor, student_map: Tensor, teacher_map: Tensor,
                gp_weight: float = 10.0) -> Tensor:
    """The critic's loss (trains D only; both maps are detached)::

        L_D = E[D(I, Q^s)] - E[D(I, Q^t)] + gp_weight * GP

    so D learns to score the teacher's maps above the student's; its negative estimates the
    Wasserstein distance between them."""
    _check_maps(student_map, teacher_map, "the holistic critic")
    if gp_weight < 0:
        raise ValueError(f"gp_weight must be >= 0, got {gp_weight}")
    s, t = student_map.detach(), teacher_map.detach()
    return disc(image, s).mean() - disc(image, t).mean() + gp_weight * gradient_penalty(disc, image, t, s)


def holistic_loss(disc: HolisticDiscriminator, image: Tensor, student_map: Tensor) -> Tensor:
    """SKD's holistic term for the student (Liu et al. 2019, eq. 4; WGAN's generator loss)::

        l_ho = -E[D(I, Q^s)]

    The critic is run with detached copies of its parameters, so the gradient reaches the student's
    score map only (D is trained by `critic_loss` in its own optimizer stage)."""
    from torch.func import functional_call

    frozen = {name: p.detach() for name, p in disc.named_parameters()}
    frozen.update(dict(disc.named_buffers()))
    return -functional_call(disc, frozen, (image, student_map)).mean()
