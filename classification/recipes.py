"""The classification task's named recipes (registered when `zoo.tasks` loads the task's recipes).

Loss weights follow the papers and the reference code's defaults for CIFAR ResNets (see the README's
"Losses checked against reference implementations"); taps are the stage outputs of the CIFAR ResNets
(``layer1``..``layer3``, ``avgpool``) and fit any torchvision-style ResNet.
"""
from __future__ import annotations

from typing import Any

from zoo.recipes import Recipe, Term, register_recipe

TASK = "classification"


def _kd(weight: float = 0.9, **kw: Any) -> Term:
    return Term("kd", weight=weight, **kw)


_STAGES = ["layer1", "layer2", "layer3"]
HINTON = "Hinton, Vinyals & Dean 2015, Distilling the Knowledge in a Neural Network"

for _recipe in [
    Recipe("plain", [], task_weight=1.0, teachers=0,
           description="cross-entropy on the labels only: the no-KD baseline (what `zoo train` runs)"),
    Recipe("kd", [_kd()], task_weight=0.1, paper=HINTON,
           description="soft targets at temperature T: 0.1*CE + 0.9*T^2*KL (survey eq. 1)"),
    # As mdistiller runs it (megvii-research/mdistiller, mdistiller/distillers/DKD.py and configs/cifar100/dkd/):
    # CE weight 1, alpha 1, T 4, the DKD weight ramped over the first 20 of 240 epochs (warmup 1/12), and
    # beta 2, its tuned value for the zoo's pair ResNet-56 -> ResNet-20 (res56_res20.yaml; beta 8 is the
    # paper's value for its other CIFAR-100 pairs: --set dkd.beta=8).
    Recipe("dkd", [Term("dkd", params={"beta": 2.0}, warmup=20 / 240)],
           paper="Zhao et al. 2022, Decoupled Knowledge Distillation",
           description="target-class and non-target-class KD weighted separately, ramped in over 1/12 of training"),
    Recipe("gated-kd", [Term("gated_kd", weight=0.9)], task_weight=0.1,
           paper="Meng et al. 2019 (survey section 2.1)",
           description="KD only where the teacher is right; the true label where it is wrong"),
    Recipe("adaptive-kd", [Term("adaptive_kd", weight=0.9)],
           task_weight=0.1, paper="Wen et al. 2021, Preparing lessons (dynamic temperature distillation)",
           description="KD with a per-sample temperature set from the teacher's confidence"),
    Recipe("fitnet", [Term("fitnet", student="layer2", teacher="layer2", weight=100.0)],
           paper="Romero et al. 2015, FitNets: Hints for Thin Deep Nets",
           description="CE + hint loss between the middle stages through a 1x1-conv regressor (survey eq. 2)"),
    Recipe("fitnet-2stage",
           [Term("fitnet", student="layer2", teacher="layer2", weight=100.0, stop=0.2),
            Term("ce", teacher=None, weight=0.1, start=0.2), _kd(start=0.2)],
           task_weight=0.0, paper="Romero et al. 2015, FitNets: Hints for Thin Deep Nets",
           description="stage 1 (first 20%): hint loss only; stage 2: KD (0.1*CE + 0.9*KD)"),
    Recipe("at", [Term("at", student=_STAGES, teacher=_STAGES, weight=1000.0, params={"p": 2, "squared": True})],
           paper="Zagoruyko & Komodakis 2017, Paying More Attention to Attention",
           description="CE + attention-map transfer at the end of every stage"),
    # Weight 1 on the entry-mean FSP loss: at the beta = 50 that the CRD benchmark uses for its FSP
    # initialisation stage, CE + FSP from a trained ResNet-56 left ResNet-20 at chance (10% top-1 after
    # 60 steps, its features collapsed), weight 5 at 46%, weight 1 at 72% (Fashion-MNIST, 2560 images).
    # FSP matching alone (the paper's first stage) stalled at the same loss within 20 steps at weights 1
    # and 50, so no two-stage recipe is offered until that is understood.
    Recipe("fsp", [Term("fsp", student=_STAGES, teacher=_STAGES, weight=1.0, params={"entry_mean": True})],
           paper="Yim et al. 2017, A Gift from Knowledge Distillation",
           description="CE + FSP (Gram) matrices between consecutive stages"),
    Recipe("afd", [Term("afd", student="layer3", teacher="layer3", weight=100.0)],
           paper="Wang et al. 2020a, as the survey describes it (section 2.2.2, eq. 3)",
           description="CE + learned selection of student channels matched to teacher channel groups"),
    Recipe("eskd", [_kd(stop=0.5), Term("ce", teacher=None, weight=0.9, start=0.5)], task_weight=0.1,
           paper="Cho & Hariharan 2019, On the Efficacy of Knowledge Distillation",
           description="KD for the first half of training (kd.stop), then the true labels only"),
    Recipe("takd", [_kd()], task_weight=0.1, assistant="resnet32",
           paper="Mirzadeh et al. 2020, Improved Knowledge Distillation via Teacher Assistant (arXiv 2019)",
           description="KD teacher -> assistant (default resnet32), then assistant -> student"),
]:
    _recipe.task = TASK
    register_recipe(_recipe)

_PEERS_AND_FEATURES = ["branches.0", "branches.1", "branches.2", "branches.0.pool", "branches.1.pool"]
for _recipe in [
    Recipe("rkd", [Term("rkd", student="avgpool", teacher="avgpool", weight=1.0)],
           paper="Park et al. 2019b, Relational Knowledge Distillation",
           description="CE + distance- and angle-wise relations between the samples' embeddings"),
    Recipe("spkd", [Term("spkd", student="layer3", teacher="layer3", weight=3000.0)],
           paper="Tung & Mori 2019, Similarity-Preserving Knowledge Distillation",
           description="CE + matching the batch's sample-similarity matrices of the last stage"),
    Recipe("irg", [Term("irg", student=["layer2", "layer3", "logits"], teacher=["layer2", "layer3", "logits"],
                        weight=1.0)],
           paper="Liu et al. 2019a, Knowledge Distillation via Instance Relationship Graph",
           description="CE + instance-relationship-graph vertices, edges and transformations"),
    Recipe("crd", [Term("crd", student="avgpool", teacher="avgpool", weight=0.8)],
           paper="Tian, Krishnan & Isola 2020, Contrastive Representation Distillation",
           description="CE + contrastive (NCE) objective with a memory bank of embeddings"),
    Recipe("dml", [Term("dml", student="logits@*", teacher=None)], task_weight=0.0,
           cohort=3, teachers=0, paper="Zhang et al. 2018, Deep Mutual Learning",
           description="3 students learn together, each from the others' predictions (survey eq. 5)"),
    Recipe("one", [Term("one", student=["branches.0", "branches.1", "branches.2", "gate"], teacher=None)], task_weight=0.0, teachers=0, branches=3, gate=True,
           paper="Lan, Zhu & Gong 2018, Knowledge Distillation by On-the-Fly Native Ensemble",
           description="3 branches on a shared trunk distil from their gated ensemble; branch 0 is deployed"),
    Recipe("okddip", [Term("okddip", student=_PEERS_AND_FEATURES, teacher=None)],
           task_weight=0.0, teachers=0, branches=3,
           paper="Chen et al. 2020a, Online Knowledge Distillation with Diverse Peers",
           description="2 peers with attention-weighted targets + a group leader (branch 2, deployed)"),
    Recipe("byot", [Term("byot", student=["layer1", "layer2", "layer3", "logits"], teacher=None)], task_weight=0.0, teachers=0,
           paper="Zhang et al. 2019, Be Your Own Teacher",
           description="shallow-section classifiers learn from the deepest one (survey eq. 6)"),
    Recipe("avg-kd", [Term("avg_kd", student="logits", teacher="logits@*", weight=0.9)],
           task_weight=0.1, teachers=3, paper="You et al. 2017, Learning from Multiple Teacher Networks",
           description="KD from the average of 3 teachers' soft targets (survey eq. 7)"),
    Recipe("altkd", [Term("attention_kd", student=["logits", "avgpool"], teacher=["logits@*", "avgpool@*"],
                          weight=0.9)]
           + [Term("fitnet", student="layer2", teacher=f"layer2@{k}", weight=100.0 / 3, name=f"hint{k}")
              for k in range(3)]
           + [Term("rkd_angle", student="avgpool", teacher=f"avgpool@{k}", weight=50.0 / 3, name=f"angle{k}")
              for k in range(3)],
           task_weight=0.1, teachers=3,
           paper="Liu, Zhang & Wang 2020d, Adaptive multi-teacher multi-level knowledge distillation",
           description="KD from attention-weighted teachers + hint and angle losses to each teacher"),
    Recipe("gan-kd", [Term("logit_adversarial", weight=1.0, params={"conditional": True}), _kd()],
           task_weight=0.1, paper="Xu et al. 2018, KD with conditional adversarial networks (survey eqs. 9-10)",
           description="KD + a conditional discriminator telling teacher from student logits"),
    Recipe("rco", [Term("kd", teacher=f"logits@{k}", weight=0.9, start=k / 3,
                        stop=(k + 1) / 3, name=f"kd{k}") for k in range(3)],
           task_weight=0.1, teachers=3,
           paper="Jin et al. 2019, Knowledge Distillation via Route Constrained Optimization (survey eq. 8)",
           description="KD from 3 snapshots of the teacher's training, earliest first (--teacher in that order)"),
]:
    _recipe.task = TASK
    register_recipe(_recipe)
