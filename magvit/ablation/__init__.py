"""Ablation studies (``magvit ablate``): the paper's Tables 4-7 as study files, run over seeds with paired
statistics. :mod:`~magvit.ablation.study` reads a study file, :mod:`~magvit.ablation.runner` trains, tokenises
and evaluates its arms, :mod:`~magvit.ablation.stats` compares them, :mod:`~magvit.ablation.report` and
:mod:`~magvit.ablation.plots` write what a reader sees."""

from magvit.ablation.runner import run_study
from magvit.ablation.stats import PairedDifference, mean_std, paired_difference
from magvit.ablation.study import Comparison, Study, load_study

__all__ = ["Comparison", "PairedDifference", "Study", "load_study", "mean_std", "paired_difference", "run_study"]
