"""Experiments of the paper, one function (and one command) each.

- :func:`reinforcens.experiments.compare.compare`: every method on the same seeds, Table 2 with paired
  t-tests (``reinforcens compare``);
- :func:`reinforcens.experiments.tune.tune`: equal-budget grid search on validation AUC
  (``reinforcens tune``);
- :func:`reinforcens.experiments.ablation.ablation`: Table 3 (``reinforcens ablation``);
- :func:`reinforcens.experiments.sweep.sweep`: Figure 2, any numeric option (``reinforcens sweep``);
- :func:`reinforcens.experiments.analysis.analyze`: Figure 3, generated vs exposed negatives
  (``reinforcens analyze``);
- :func:`reinforcens.experiments.diagnose.diagnose`: the exposure data as a source of negatives
  (``reinforcens diagnose``).

Runs are cached per (method, settings, seed) under the experiment directory and executed by
:mod:`reinforcens.experiments.runner`.
"""
