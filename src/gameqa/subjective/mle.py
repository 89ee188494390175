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

Safeguards keep the iteration bounded without changing sureal's path where its Newton
steps are sound (on the NFLX data the results are identical). Above sqrt(3) times its
residual spread the log-likelihood is convex in v_i (likewise in a_c), and a Newton step
there goes up while the likelihood falls: it runs away to infinity (overflow, absurd
intervals), which small integer-vote studies with ``min_inconsistency`` hit. Such a step is
replaced by the weighted moment solution of the stationarity equation, whose move always
has the gradient's sign; with ``min_inconsistency`` > 0 every non-concave step is replaced
so, and the fit only goes uphill. Targets are capped at the largest residual (no stationary
point lies above it); v_i never goes below ``min_inconsistency``; as in sureal, a v_i or a_c
that reaches exactly 0 stays there. A vote's variance v_i^2 + a_c^2 is used no smaller than
1e-12, so a collapsing observer/content pair cannot divide by zero.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from gameqa.errors import ConfigError
from gameqa.subjective.analysis import MosResult, mos
from gameqa.subjective.votes import VoteTable

__all__ = ["SubjectModelResult", "mle_subject_model"]

_Z95 = stats.norm.ppf(0.975)
# a vote's variance v^2 + a^2 is used no smaller than this: a collapsing observer/content
# pair then gets a huge but finite weight instead of dividing by zero
_TINY_VARIANCE = 1e-12
# a vote whose fitted spread sqrt(v^2 + a^2) is below this counts as collapsed
_COLLAPSED_SPREAD = 1e-3


@dataclass(frozen=True)
class SubjectModelResult:
    """Estimates of the subject model, each with a standard error and 95% bounds.

    ``stimulus_ambiguity`` is each stimulus's content ambiguity (None when the model was
    run content-oblivious). ``mos`` is the plain MOS of the same votes, for the manifest.
    ``collapsed`` is True when some observer/content pair was fitted with (near) zero noise:
    the likelihood is then unbounded and those votes alone set the qualities, with
    meaningless near-zero standard errors (small studies; see ``min_inconsistency``).

    Standard errors and bounds that cannot be estimated are NaN: the qualities of stimuli and
    the biases and inconsistency bounds of observers with a collapsed vote (their Fisher
    information is unbounded); an inconsistency's or ambiguity's std where the likelihood is
    not concave in it (zero or negative information) or where v_i sits on the
    ``min_inconsistency`` floor (a boundary, not a stationary point). On the floor the
    inconsistency's lower bound is the floor itself (values below it are excluded).
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


def _safe_target(current, newton, curvature, total, res2, other2, present, axis,
                 content_of=None, num_contents=0, sureal_steps=False) -> np.ndarray:
    """The next value of v (axis 0, per observer) or a (axis 1, per content).

    The Newton target where the log-likelihood is concave in the parameter; elsewhere the
    weighted moment solution sqrt(sum w^2 (r^2 - other^2) / sum w^2), w = 1/total, whose
    move always has the gradient's sign, or 0 for a parameter already at 0 (sureal's fixed
    point). ``sureal_steps`` also keeps Newton steps that go down in a convex region (sureal
    takes them; they are bounded by the clamp at 0) and replaces only the runaway ones that
    go up. Targets are capped at the largest residual.
    """
    # w relative to its largest value per parameter: no overflow however small total gets
    masked_total = np.where(present, total, np.inf)
    masked_res2 = np.where(present, res2, 0.0)
    if axis == 0:
        smallest = masked_total.min(axis=0)[None, :]
        largest = masked_res2.max(axis=0)
    else:
        smallest = np.full(num_contents, np.inf)
        np.minimum.at(smallest, content_of, masked_total.min(axis=1))
        smallest = smallest[content_of][:, None]
        largest = np.zeros(num_contents)
        np.maximum.at(largest, content_of, masked_res2.max(axis=1))
    relative2 = np.where(present, (smallest / total) ** 2, 0.0)
    moment = _masked_sum(relative2 * (res2 - other2), present, axis)
    norm = _masked_sum(relative2, present, axis)
    if axis == 1:
        moment = np.bincount(content_of, moment, num_contents)
        norm = np.bincount(content_of, norm, num_contents)
    fallback = np.sqrt(np.clip(moment / norm, 0.0, largest))
    uphill = (curvature < 0) & np.isfinite(newton)
    if sureal_steps:
        uphill |= np.isfinite(newton) & (newton <= current)
    return np.where(uphill, np.minimum(newton, np.sqrt(largest)),
                    np.where(current > 0, fallback, 0.0))


def _std_from_curvature(curvature: np.ndarray) -> np.ndarray:
    """1/sqrt(-curvature) where the log-likelihood is concave, NaN (not estimable) elsewhere."""
    concave = np.isfinite(curvature) & (curvature < 0)
    return np.where(concave, 1.0 / np.sqrt(np.where(concave, -curvature, 1.0)), np.nan)


def mle_subject_model(table: VoteTable, *, content_oblivious: bool = False,
                      tolerance: float = 1e-8, max_iterations: int = 10000,
                      step: float = 0.1, min_inconsistency: float = 0.0) -> SubjectModelResult:
    """Fit the P.913 maximum-likelihood subject model to ``table`` (missing votes allowed).

    ``content_oblivious`` fixes every content ambiguity at zero (sureal's
    ``MaximumLikelihoodEstimationModelContentOblivious``). Contents come from
    ``table.content_ids``; a table without contents has one content per stimulus.
    ``min_inconsistency`` > 0 keeps every v_i at or above it, which bounds the likelihood
    in small studies where the unconstrained fit collapses (see
    ``SubjectModelResult.collapsed``); 0 is sureal's estimator, step for step (including
    its Newton steps that send some v_i to exactly 0). With a floor every step on v_i and
    a_c goes uphill, so an observer on the floor is there because the likelihood falls
    towards it. Small integer-vote studies usually need the floor: use 0.1 on a 1..5 scale.
    Raises ConfigError when a stimulus or observer has no votes, or if the fit diverges.
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
    floor = float(min_inconsistency)
    if not (math.isfinite(floor) and floor >= 0.0):
        raise ConfigError(table.name or None, f"min_inconsistency {min_inconsistency!r} must be "
                          "a number >= 0 (0.1 suits a 1..5 scale)")
    sureal_steps = floor == 0.0

    # initial values: the MOS, zero biases, residual spreads per observer and per content
    quality = _masked_sum(votes, present, 1) / present.sum(axis=1)
    residual = np.where(present, scores - quality[:, None], 0.0)
    mean_residual = residual.sum(axis=0) / counts_per_observer
    inconsistency = np.sqrt(np.maximum(
        (residual ** 2).sum(axis=0) / counts_per_observer - mean_residual ** 2, 0.0))
    inconsistency = np.maximum(inconsistency, floor)
    if content_oblivious:
        ambiguity = np.zeros(num_contents)
    else:
        squares_c = np.bincount(content_of, (residual ** 2).sum(axis=1), num_contents)
        sums_c = np.bincount(content_of, residual.sum(axis=1), num_contents)
        counts_c = np.bincount(content_of, present.sum(axis=1), num_contents)
        ambiguity = np.sqrt(np.maximum(squares_c / counts_c - (sums_c / counts_c) ** 2, 0.0))
    bias = np.zeros(table.num_observers)
    ambiguity_std = np.zeros(num_contents)
    ambiguity_curvature = np.zeros(num_contents)

    def variance_of(v, a):
        return np.maximum(v[None, :] ** 2 + a[content_of][:, None] ** 2, _TINY_VARIANCE)

    iterations, converged = 0, False
    with np.errstate(divide="ignore", invalid="ignore"):
        while iterations < max_iterations:
            previous_quality = quality

            # observer bias: weighted mean residual (exact maximiser), damped
            weight = np.where(present, 1.0 / variance_of(inconsistency, ambiguity), 0.0)
            bias_new = (weight * (votes - quality[:, None])).sum(axis=0) / weight.sum(axis=0)
            bias = (1.0 - step) * bias + step * bias_new
            bias_information = weight.sum(axis=0)

            # observer inconsistency: one damped Newton step on v_i where that is uphill
            v2 = inconsistency[None, :] ** 2
            a2 = ambiguity[content_of][:, None] ** 2
            total = np.maximum(v2 + a2, _TINY_VARIANCE)
            res2 = np.where(present, (votes - quality[:, None] - bias[None, :]) ** 2, 0.0)
            gradient = _masked_sum(-inconsistency / total + inconsistency * res2 / total ** 2,
                                   present, 0)
            curvature = _masked_sum((v2 - a2) / total ** 2
                                    + res2 * (a2 ** 2 - 3 * v2 ** 2 - 2 * v2 * a2) / total ** 4,
                                    present, 0)
            newton = inconsistency - gradient / curvature
            target = _safe_target(inconsistency, newton, curvature, total, res2, a2, present, 0,
                                  sureal_steps=sureal_steps)
            inconsistency = np.maximum((1.0 - step) * inconsistency + step * target, floor)
            inconsistency_curvature = curvature

            # content ambiguity: one damped Newton step on a_c where that is uphill
            if not content_oblivious:
                v2 = inconsistency[None, :] ** 2
                a_e = ambiguity[content_of][:, None]
                a2 = a_e ** 2
                total = np.maximum(v2 + a2, _TINY_VARIANCE)
                gradient_e = _masked_sum(-a_e / total + a_e * res2 / total ** 2, present, 1)
                curvature_e = _masked_sum(-(v2 - a2) / total ** 2
                                          + res2 * (v2 ** 2 - 3 * a2 ** 2 - 2 * v2 * a2)
                                          / total ** 4, present, 1)
                gradient_c = np.bincount(content_of, gradient_e, num_contents)
                curvature_c = np.bincount(content_of, curvature_e, num_contents)
                newton = ambiguity - gradient_c / curvature_c
                target = _safe_target(ambiguity, newton, curvature_c, total, res2, v2, present,
                                      1, content_of, num_contents, sureal_steps)
                ambiguity = np.maximum((1.0 - step) * ambiguity + step * target, 0.0)
                ambiguity_curvature = curvature_c

            # stimulus quality: weighted mean of bias-free votes (exact maximiser), damped
            weight = np.where(present, 1.0 / variance_of(inconsistency, ambiguity), 0.0)
            quality_new = (weight * (votes - bias[None, :])).sum(axis=1) / weight.sum(axis=1)
            quality = (1.0 - step) * quality + step * quality_new
            quality_information = weight.sum(axis=1)

            iterations += 1
            if not (np.all(np.isfinite(quality)) and np.all(np.isfinite(bias))
                    and np.all(np.isfinite(inconsistency)) and np.all(np.isfinite(ambiguity))):
                raise ConfigError(table.name or None, "the subject model diverged; rerun it "
                                  "with min_inconsistency=0.1 (CLI: --min-inconsistency 0.1) "
                                  "or collect more votes per observer")
            if np.linalg.norm(quality - previous_quality) < tolerance:
                converged = True
                break

    quality_std = 1.0 / np.sqrt(quality_information)
    bias_std = 1.0 / np.sqrt(bias_information)
    inconsistency_std = _std_from_curvature(inconsistency_curvature)
    if not content_oblivious:
        ambiguity_std = _std_from_curvature(ambiguity_curvature)

    # the model fixes q + b only: put the biases' mean at zero
    mean_bias = bias.mean()
    bias = bias - mean_bias
    quality = quality + mean_bias

    total = variance_of(inconsistency, ambiguity)
    collapsed_votes = present & (np.sqrt(total) < _COLLAPSED_SPREAD)
    collapsed = bool(collapsed_votes.any())
    res2 = (votes - quality[:, None] - bias[None, :]) ** 2
    loglikelihood = float(_masked_sum(-0.5 * np.log(2 * np.pi * total) - 0.5 * res2 / total,
                                      present, 0).sum())

    # inconsistency bounds from the chi-square law of a variance estimate (as sureal)
    dof = counts_per_observer
    inconsistency_low = inconsistency * np.sqrt(dof / stats.chi2.ppf(0.975, dof))
    inconsistency_high = inconsistency * np.sqrt(dof / stats.chi2.ppf(0.025, dof))
    if min_inconsistency > 0:  # on the floor: a boundary, no curvature-based std
        on_floor = inconsistency <= min_inconsistency * (1.0 + 1e-9)
        inconsistency_std = np.where(on_floor, np.nan, inconsistency_std)
        inconsistency_low = np.maximum(inconsistency_low, min_inconsistency)
    # collapsed votes have unbounded information: their stimuli's and observers' errors are
    # not estimable (a near-zero std would be a false precision)
    collapsed_stimuli = collapsed_votes.any(axis=1)
    collapsed_observers = collapsed_votes.any(axis=0)
    quality_std = np.where(collapsed_stimuli, np.nan, quality_std)
    bias_std = np.where(collapsed_observers, np.nan, bias_std)
    inconsistency_std = np.where(collapsed_observers, np.nan, inconsistency_std)
    inconsistency_low = np.where(collapsed_observers, np.nan, inconsistency_low)
    inconsistency_high = np.where(collapsed_observers, np.nan, inconsistency_high)
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
