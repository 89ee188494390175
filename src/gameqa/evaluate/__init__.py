"""How well predicted scores agree with subjective labels: SROCC/KROCC/PLCC/RMSE, the VQEG logistic
mapping, bootstrap confidence intervals, score-file joining, and MOS-scale conversion."""
from gameqa.evaluate.files import FileEvaluation, evaluate_files, join_scores, read_records
from gameqa.evaluate.logistic import LogisticFit, fit_logistic, logistic4
from gameqa.evaluate.metrics import close_pair_accuracy, krocc, plcc, rmse, srocc
from gameqa.evaluate.mos import SCALES, rescale, scale_range, to_mos5
from gameqa.evaluate.table import PERF_METRICS, PerfMetric, bootstrap_ci, correlation_table, print_table

__all__ = [
    "srocc", "krocc", "plcc", "rmse", "close_pair_accuracy",
    "logistic4", "fit_logistic", "LogisticFit",
    "PerfMetric", "PERF_METRICS", "bootstrap_ci", "correlation_table", "print_table",
    "evaluate_files", "FileEvaluation", "read_records", "join_scores",
    "SCALES", "scale_range", "rescale", "to_mos5",
]
