"""The maximum-likelihood subject model of ITU-T P.913 / Li & Bampis (2017).

A vote of observer i on stimulus j is modelled as

    X_ji = q_j + b_i + e_ji,   e_ji ~ N(0, v_i^2 + a_c(j)^2)

with q_j the stimulus's quality, b_i the observer's bias, v_i the observer's
inconsistency and a_c the ambiguity of content c (shared by the stimuli made from one
source). The estimates come from the same damped alternating Newton updates as Netflix's
sureal ``MaximumLikelihoodEstimationModel`` (initialised at the MOS and the residual
spreads, step 0.1, stop when the quality vector moves by less than ``tolerance``), and
the biases are then shifted to mean zero. Standard errors come from the likelihood's
diagonal second derivatives (Fisher information).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from gameqa.errors import ConfigError
from gameqa.subjective.analysis import MosResult, mos
from gameqa.subjective.votes import VoteTable

__all__ = ["SubjectModelResult", "mle_subject_model"]

_Z95 = stats.norm.ppf(0.975)


@dataclass(frozen=True)
class SubjectModelResult:
    """Estimates of the subject model, each with a standard error and 95% bounds.

    ``stimulus_ambiguity`` is each stimulus's content ambiguity (None when the model was
    run content-oblivious). ``mos`` is the plain MOS of the same votes, for the manifest.
    ``collapsed`` is True when some observer/content pair was fitted with (near) zero noise:
    the likelihood is then unbounded and those votes alone set the qualities, with
    meaningless near-zero standard errors (small studies; see ``min_inconsistency``).
    """

    stimulus_ids: tuple[str, ...]
    observer_ids: tuple[str, ...]
    content_ids: tuple[str, ...]
    quality: np.ndarray
    quality_std: np.ndarray
    quality_ci_low: np.ndarray
    quality_ci_high: np.ndarray
    observer_bias: np.ndarray
    observer_bias_std: np.ndarray
    observer_bias_ci_low: np.ndarray
    observer_bias_ci_high: np.ndarray
    observer_inconsistency: np.ndarray
    observer_inconsistency_std: np.ndarray
    observer_inconsistency_ci_low: np.ndarray
    observer_inconsistency_ci_high: np.ndarray
    content_ambiguity: np.ndarray | None
    content_ambiguity_std: np.ndarray | None
    stimulus_ambiguity: np.ndarray | None
    iterations: int
    converged: bool
    collapsed: bool
    loglikelihood: float
    mos: MosResult


def _masked_sum(values: np.ndarray, present: np.ndarray, axis: int) -> np.ndarray:
    return np.where(present, values, 0.0).sum(axis=axis)


def mle_subject_model(table: VoteTable, *, content_oblivious: bool = False,
                      tolerance: float = 1e-8, max_iterations: int = 10000,
                      step: float = 0.1, min_inconsistency: float = 0.0) -> SubjectModelResult:
    """Fit the P.913 maximum-likelihood subject model to ``table`` (missing votes allowed).

    ``content_oblivious`` fixes every content ambiguity at zero (sureal's
    ``MaximumLikelihoodEstimationModelContentOblivious``). Contents come from
    ``table.content_ids``; a table without contents has one content per stimulus.
    ``min_inconsistency`` > 0 keeps every v_i at or above it, which bounds the likelihood
    in small studies where the unconstrained fit collapses (see
    ``SubjectModelResult.collapsed``); 0 is sureal's estimator.
    """
    scores = table.scores
    present = ~np.isnan(scores)
    votes = np.where(present, scores, 0.0)
    if not present.any(axis=1).all():
        empty = table.stimulus_ids[int(np.flatnonzero(~present.any(axis=1))[0])]
        raise ConfigError(table.name or None, f"stimulus {empty!r} has no votes")
    if not present.any(axis=0).all():
        empty = table.observer_ids[int(np.flatnonzero(~present.any(axis=0))[0])]
        raise ConfigError(table.name or None, f"observer {empty!r} has no votes")
    content_names = tuple(dict.fromkeys(table.content_ids))
    content_of = np.array([content_names.index(c) for c in table.content_ids])
    num_contents = len(content_names)
    counts_per_observer = present.sum(axis=0)

    # initial values: the MOS, zero biases, residual spreads per observer and per content
    quality = _masked_sum(votes, present, 1) / present.sum(axis=1)
    residual = np.where(present, scores - quality[:, None], 0.0)
    mean_residual = residual.sum(axis=0) / counts_per_observer
    inconsistency = np.sqrt(np.maximum(
        (residual ** 2).sum(axis=0) / counts_per_observer - mean_residual ** 2, 0.0))
    inconsistency = np.maximum(inconsistency, min_inconsistency)
    if content_oblivious:
        ambiguity = np.zeros(num_contents)
    else:
        squares_c = np.bincount(content_of, (residual ** 2).sum(axis=1), num_contents)
        sums_c = np.bincount(content_of, residual.sum(axis=1), num_contents)
        counts_c = np.bincount(content_of, present.sum(axis=1), num_contents)
        ambiguity = np.sqrt(np.maximum(squares_c / counts_c - (sums_c / counts_c) ** 2, 0.0))
    bias = np.zeros(table.num_observers)
    ambiguity_std = np.zeros(num_contents)

    def variance_of(v, a):
        return v[None, :] ** 2 + a[content_of][:, None] ** 2

    iterations, converged = 0, False
    with np.errstate(divide="ignore", invalid="ignore"):
        while iterations < max_iterations:
            previous_quality = quality

            # observer bias: weighted mean residual (exact maximiser), damped
            weight = np.where(present, 1.0 / variance_of(inconsistency, ambiguity), 0.0)
            bias_new = (weight * (votes - quality[:, None])).sum(axis=0) / weight.sum(axis=0)
            bias = (1.0 - step) * bias + step * bias_new
            bias_information = weight.sum(axis=0)

            # observer inconsistency: one damped Newton step on v_i
            v2 = inconsistency[None, :] ** 2
            a2 = ambiguity[content_of][:, None] ** 2
            total = v2 + a2
            res2 = (votes - quality[:, None] - bias[None, :]) ** 2
            gradient = _masked_sum(-inconsistency / total + inconsistency * res2 / total ** 2,
                                   present, 0)
            curvature = _masked_sum((v2 - a2) / total ** 2
                                    + res2 * (a2 ** 2 - 3 * v2 ** 2 - 2 * v2 * a2) / total ** 4,
                                    present, 0)
            newton = inconsistency - gradient / curvature
            inconsistency = np.maximum((1.0 - step) * inconsistency + step * newton,
                                       min_inconsistency)
            inconsistency_curvature = curvature

            # content ambiguity: one damped Newton step on a_c
            if not content_oblivious:
                v2 = inconsistency[None, :] ** 2
                a_e = ambiguity[content_of][:, None]
                a2 = a_e ** 2
                total = v2 + a2
                gradient_e = _masked_sum(-a_e / total + a_e * res2 / total ** 2, present, 1)
                curvature_e = _masked_sum(-(v2 - a2) / total ** 2
                                          + res2 * (v2 ** 2 - 3 * a2 ** 2 - 2 * v2 * a2)
                                          / total ** 4, present, 1)
                gradient_c = np.bincount(content_of, gradient_e, num_contents)
                curvature_c = np.bincount(content_of, curvature_e, num_contents)
                newton = ambiguity - gradient_c / curvature_c
                newton = np.where(np.isfinite(newton), newton, ambiguity)
                ambiguity = np.maximum((1.0 - step) * ambiguity + step * newton, 0.0)
                ambiguity_std = 1.0 / np.sqrt(np.maximum(0.0, -curvature_c))

            # stimulus quality: weighted mean of bias-free votes (exact maximiser), damped
            weight = np.where(present, 1.0 / variance_of(inconsistency, ambiguity), 0.0)
            quality_new = (weight * (votes - bias[None, :])).sum(axis=1) / weight.sum(axis=1)
            quality = (1.0 - step) * quality + step * quality_new
            quality_information = weight.sum(axis=1)

            iterations += 1
            if not np.all(np.isfinite(quality)):
                raise ConfigError(table.name or None, "the subject model diverged (a vote "
                                  "pattern with zero spread?)")
            if np.linalg.norm(quality - previous_quality) < tolerance:
                converged = True
                break

        quality_std = 1.0 / np.sqrt(quality_information)
        bias_std = 1.0 / np.sqrt(bias_information)
        inconsistency_std = 1.0 / np.sqrt(np.maximum(0.0, -inconsistency_curvature))

    # the model fixes q + b only: put the biases' mean at zero
    mean_bias = bias.mean()
    bias = bias - mean_bias
    quality = quality + mean_bias

    total = variance_of(inconsistency, ambiguity)
    collapsed = bool(np.any(np.sqrt(total[present]) < 1e-3))
    res2 = (votes - quality[:, None] - bias[None, :]) ** 2
    loglikelihood = float(_masked_sum(-0.5 * np.log(2 * np.pi * total) - 0.5 * res2 / total,
                                      present, 0).sum())

    # inconsistency bounds from the chi-square law of a variance estimate (as sureal)
    dof = counts_per_observer
    inconsistency_low = inconsistency * np.sqrt(dof / stats.chi2.ppf(0.975, dof))
    inconsistency_high = inconsistency * np.sqrt(dof / stats.chi2.ppf(0.025, dof))
    if content_oblivious:
        content_ambiguity = content_ambiguity_std = stimulus_ambiguity = None
    else:
        content_ambiguity, content_ambiguity_std = ambiguity, ambiguity_std
        stimulus_ambiguity = ambiguity[content_of]
    return SubjectModelResult(
        table.stimulus_ids, table.observer_ids, content_names,
        quality, quality_std, quality - _Z95 * quality_std, quality + _Z95 * quality_std,
        bias, bias_std, bias - _Z95 * bias_std, bias + _Z95 * bias_std,
        inconsistency, inconsistency_std, inconsistency_low, inconsistency_high,
        content_ambiguity, content_ambiguity_std, stimulus_ambiguity,
        iterations, converged, collapsed, loglikelihood, mos(table))
