"""KD losses, grouped by the survey's families (Si & Qi 2023, sections 2.1-2.3).

Contract shared by every module here:
- A loss is a pure function ``f(student..., teacher..., [labels], *, hparams) -> Tensor`` returning a
  scalar (averaged over the batch). It detaches its teacher inputs itself, so no gradient can reach a
  teacher whatever the caller does.
- Pieces with learnable parameters or state (connectors, CRD's memory bank, gates, attention,
  discriminators) are small ``nn.Module`` classes next to the function that uses them.
- Each docstring cites the paper and gives the equation (and the survey's equation number where
  there is one).

Families: ``logits`` (eq. 1), ``features`` (feature fitting, eq. 2, and features extracted from maps,
eq. 3), ``relations`` (structural knowledge, eq. 4), ``online`` (eq. 5), ``self_distill`` (eq. 6),
``multi_teacher`` (eq. 7), ``adversarial`` (eqs. 9-10). Progressive distillation (eq. 8) needs no loss
of its own: the ``rco`` recipe schedules plain KD against the teacher's snapshots (`zoo.recipes.Term` start/stop).
"""
