"""Explanation methods side by side on the same X-rays, with paired bootstrap intervals.

[`compare_methods`][chexviz.evaluate.compare.compare_methods] makes each method's maps
(Grad-CAM, Grad-CAM++, LayerCAM, Eigen-CAM, Integrated Gradients, or any map maker: see
[`map_maker`][chexviz.explain.methods.map_maker]) and scores them by one protocol on the same
CXRs: CheXlocalize (mIoU and hit rate against radiologists' segmentations, thresholds tuned
per method on the validation set only) and boxes (pointing game, IoU and energy).

[`compare_localization`][chexviz.evaluate.compare.compare_localization] is the lower level:
it takes per-method per-image score tables, so maps made elsewhere (the paper's published
ones, say) are compared the same way. Its bootstrap is **paired**: each replicate draws one
resample of the CXRs and every method is scored on it, so the interval of a difference
between two methods reflects only how they differ on the same X-rays.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from chexviz._internal.cases import (
    DEFAULT_MIN_POSITIVES,
    TOO_FEW,
    check_minimum,
    complete_replicates,
    enough_cases,
)
from chexviz.evaluate._bootstrap import percentile_interval
from chexviz.evaluate.chexlocalize.pipeline import chexlocalize_maps
from chexviz.evaluate.chexlocalize.scoring import CheXlocalizeScores, score_chexlocalize
from chexviz.evaluate.chexlocalize.tuning import tune_chexlocalize
from chexviz.evaluate.localization import score_localization
from chexviz.explain.methods import MapMakerFactory, map_maker

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from torch import nn

    from chexviz.data.chexlocalize import CheXlocalizeGroundTruth
    from chexviz.data.dataset import CheXpertDataset

__all__ = [
    "DEFAULT_METHODS",
    "MethodComparison",
    "MethodResults",
    "compare_localization",
    "compare_methods",
]

logger = logging.getLogger(__name__)

DEFAULT_METHODS = ("gradcam", "gradcam++", "layercam", "eigencam", "ig")
"""The methods [`compare_methods`][chexviz.evaluate.compare.compare_methods] compares."""

PRIOR = "prior"
"""A method of this name in ``compare_localization`` is the anatomical prior."""

HUMAN_BENCHMARK = "human benchmark"
"""The name ``compare_methods`` gives the human benchmark's scores."""

_METRICS = {"iou": "miou", "hit": "hit_rate", "energy": "energy"}
_UNITS = ("cxr_id", "Path")

MethodSpec = str | MapMakerFactory


@dataclass(frozen=True, eq=False)
class MethodComparison:
    """Methods compared on the same CXRs, as ``compare_localization`` returns them.

    Attributes:
        table: One row per (method, pathology), the pathologies in their order and a last
            ``"mean"`` (over the pathologies reported, the same in every replicate). Columns
            ``method``, ``pathology``, ``status`` (``"scored"`` or ``"too few cases"``),
            ``positives`` (CXRs, or boxed findings, with the finding), then per metric ``m``
            (``miou``, ``hit_rate``, and ``energy`` for boxes): ``m``, ``m_lower``,
            ``m_upper`` (95% bootstrap interval), ``m_n`` (defined values), ``m_best`` (the
            best method's name), ``m_diff_from_best`` (this method minus the best, with
            ``_lower``/``_upper``), ``m_diff_from_prior`` (minus the anatomical prior, with
            its interval; NaN without a prior) and, with a reference,
            ``m_pct_decrease`` (``(reference - method) / reference * 100``, with its
            interval).
        bootstrap: Method -> metric name -> replicates ``[n_bootstrap, pathologies + 1]``
            (the last column is the mean), every method on the same resamples.
        pathologies: The pathologies, in the table's order.
        reference: The method the percentage decrease is from, or None.
        n_bootstrap: Resamples.
        seed: Their seed.
    """

    table: pd.DataFrame
    bootstrap: dict[str, dict[str, np.ndarray]] = field(repr=False)
    pathologies: tuple[str, ...]
    reference: str | None
    n_bootstrap: int
    seed: int

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods, in the order given."""
        return tuple(dict.fromkeys(self.table["method"]))

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metric names compared (``miou``, ``hit_rate``, maybe ``energy``)."""
        return tuple(m for m in _METRICS.values() if m in self.table.columns)

    def best(self, metric: str = "miou", pathology: str = "mean") -> pd.Series:
        """The best method's row for a metric and pathology (``table`` columns).

        Raises:
            KeyError: An unknown metric or pathology.
        """
        if metric not in self.metrics:
            raise KeyError(f"unknown metric {metric!r}; compared: {list(self.metrics)}")
        rows = self.table[self.table["pathology"] == pathology]
        if rows.empty:
            raise KeyError(f"unknown pathology {pathology!r}; compared: {list(self.pathologies)}")
        name = rows[f"{metric}_best"].iloc[0]
        found: pd.Series = rows[rows["method"] == name].iloc[0]
        return found

    def summary_lines(self) -> list[str]:
        """One line per method (mean mIoU and hit rate, with intervals), then the best one.

        The best method is the one with the highest mean mIoU (the reference and the prior
        aside), with its interval; each other method's line gives its difference from it.
        """
        means = self.table[self.table["pathology"] == "mean"]
        lines = []
        for row in means.itertuples():
            line = f"{row.method}: mIoU {_shown(row.miou, row.miou_lower, row.miou_upper)}"
            if "hit_rate" in self.metrics:
                shown = _shown(row.hit_rate, row.hit_rate_lower, row.hit_rate_upper)
                line += f", hit rate {shown}"
            if row.method != row.miou_best and not math.isnan(row.miou_diff_from_best):
                difference = _shown(
                    row.miou_diff_from_best,
                    row.miou_diff_from_best_lower,
                    row.miou_diff_from_best_upper,
                )
                line += f"; mIoU minus the best's {difference}"
            lines.append(line)
        best = self.best("miou")
        if math.isnan(best["miou"]):
            lines.append("best method: undefined (too few cases)")
        else:
            shown = _shown(best["miou"], best["miou_lower"], best["miou_upper"])
            lines.append(f"best method by mean mIoU: {best['method']} {shown}")
        return lines

    def to_csv(self, folder: str | os.PathLike[str], name: str = "comparison") -> list[Path]:
        """Writes ``<name>.csv`` (the table) into ``folder`` (created if missing).

        Returns:
            The files written.
        """
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{name}.csv"
        self.table.to_csv(path, index=False, float_format="%.6g")
        return [path]

    def plot(self, path: str | os.PathLike[str] | None = None) -> Figure:
        """Per-pathology scores with intervals, the methods side by side; one panel a metric.

        Args:
            path: Where to save the figure (PNG), or None.

        Returns:
            The figure.
        """
        from matplotlib import pyplot as plt

        metrics = self.metrics
        methods = self.methods
        columns = [*self.pathologies, "mean"]
        figure, axes = plt.subplots(
            len(metrics),
            1,
            figsize=(max(8.0, 1.1 * len(columns) * max(1, len(methods)) / 3), 3.2 * len(metrics)),
            squeeze=False,
        )
        width = 0.8 / max(1, len(methods))
        x = np.arange(len(columns))
        for axis, metric in zip(axes[:, 0], metrics, strict=True):
            for index, method in enumerate(methods):
                rows = self.table[self.table["method"] == method].set_index("pathology")
                rows = rows.reindex(columns)
                value = rows[metric].to_numpy(dtype=np.float64)
                lower = rows[f"{metric}_lower"].to_numpy(dtype=np.float64)
                upper = rows[f"{metric}_upper"].to_numpy(dtype=np.float64)
                errors = np.vstack([value - lower, upper - value])
                axis.bar(
                    x + (index - (len(methods) - 1) / 2) * width,
                    np.nan_to_num(value),
                    width,
                    yerr=np.nan_to_num(errors),
                    capsize=2,
                    label=method,
                )
            axis.set_ylabel(metric)
            axis.set_xticks(x, columns, rotation=30, ha="right", fontsize=8)
            axis.set_ylim(0, 1)
        axes[0, 0].legend(fontsize=8, ncol=min(len(methods), 6))
        axes[0, 0].set_title("methods side by side (95% paired bootstrap intervals)")
        figure.tight_layout()
        if path is not None:
            figure.savefig(path, dpi=120)
        return figure


def _shown(value: float, lower: float, upper: float) -> str:
    return f"{value:.3f} [{lower:.3f}, {upper:.3f}]"


def _unit_column(name: str, frame: pd.DataFrame) -> str:
    for unit in _UNITS:
        if unit in frame.columns:
            return unit
    raise ValueError(
        f"the scores of method {name!r} have no 'cxr_id' (CheXlocalize per-image table) or "
        f"'Path' (box localisation table) column; got {list(frame.columns)}"
    )


def _check_same_cxrs(frames: Mapping[str, pd.DataFrame], unit: str) -> None:
    """Refuses methods scored on different CXRs (or pathologies), naming them."""
    names = list(frames)
    first = names[0]
    expected = set(frames[first][unit].astype(str))
    pairs = set(zip(frames[first][unit].astype(str), frames[first]["label"], strict=True))
    for name in names[1:]:
        frame = frames[name]
        cxrs = set(frame[unit].astype(str))
        if cxrs != expected:
            only_here = sorted(cxrs - expected)[:5]
            only_there = sorted(expected - cxrs)[:5]
            raise ValueError(
                f"methods {first!r} and {name!r} were scored on different CXRs: only in "
                f"{name!r}: {only_here}, only in {first!r}: {only_there} (at most 5 shown); "
                "compare methods on the same X-rays"
            )
        mine = set(zip(frame[unit].astype(str), frame["label"], strict=True))
        if mine != pairs:
            differ = sorted(mine ^ pairs)[:5]
            raise ValueError(
                f"methods {first!r} and {name!r} scored different pathologies of the same CXRs, "
                f"e.g. (CXR, pathology) {differ}"
            )


def _wide(
    frame: pd.DataFrame, unit: str, column: str, units: list[str], labels: list[str]
) -> np.ndarray:
    # Box tables hold nullable booleans and integers; the means need floats.
    numbers = pd.to_numeric(frame[column].astype("Float64"), errors="coerce").astype("float64")
    wide = frame.assign(_unit=frame[unit].astype(str), _value=numbers).pivot_table(
        index="_unit", columns="label", values="_value", aggfunc="mean", dropna=False
    )
    values: np.ndarray = wide.reindex(index=units, columns=labels).to_numpy(dtype=np.float64)
    return values


def _means(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Weighted means of the defined values per column: ``[R, n] x [n, L] -> [R, L]``."""
    defined = ~np.isnan(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        result: np.ndarray = (weights @ np.where(defined, values, 0.0)) / (weights @ defined)
    return result


def compare_localization(
    scores_by_method: Mapping[str, pd.DataFrame],
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    reference: str | None = None,
    min_cases: int = DEFAULT_MIN_POSITIVES,
) -> MethodComparison:
    """Compares methods' per-image localisation scores with paired bootstrap intervals.

    Each table is one method's scores of the same CXRs: the ``per_image`` table of
    [`CheXlocalizeScores`][chexviz.evaluate.chexlocalize.scoring.CheXlocalizeScores]
    (``cxr_id``, ``label``, ``iou``, ``hit``; ``gt_pixels`` counts the positives), or the
    per-finding table of [`score_localization`][chexviz.evaluate.localization.score_localization]
    (``Path``, ``label``, ``hit``, ``iou``, ``energy``; each row a boxed finding). The
    metrics compared are those every table has.

    **Paired bootstrap.** Each of the ``n_bootstrap`` replicates resamples the CXRs once
    (with replacement, as the reference ``eval.py`` draws, ``np.random.RandomState(seed)``)
    and every method's per-pathology mean is taken over that same resample, so a method's
    difference from another is computed replicate by replicate. Intervals are the
    reference's percentile intervals (2.5% and 97.5% ranks). Differences are given from the
    **best method** (the highest point estimate of each pathology and metric, among the
    methods other than the reference and the prior) and from the **anatomical prior**: a
    method named ``"prior"``, else each table's own ``prior_iou`` / ``prior_hit`` /
    ``prior_energy`` columns (the prior scored beside that method). With ``reference``, each
    method's **percentage decrease** from it, ``(reference - method) / reference * 100``, as
    the CheXlocalize ``calculate_percentage_decrease.py`` computes it from two bootstrap
    files drawn with one seed over the same CXRs (paired), per replicate; the point estimate
    here is from the full-sample means (the script's is from the replicates' means).

    The rule for too few cases (``chexviz._internal.cases``): a pathology is reported only
    with at least ``min_cases`` CXRs with the finding and, for every method and metric,
    ``min_cases`` defined values; the others are "too few cases" and left out of the mean.
    The mean is over the same pathologies in every replicate: a replicate in which one of
    them drew no defined value, for some method, is drawn again (for every method at once).

    Args:
        scores_by_method: Method name -> its per-image score table, all on the same CXRs.
        n_bootstrap: Resamples (at least 1).
        seed: Their seed.
        reference: A method (such as the human benchmark) to report the percentage
            decrease from.
        min_cases: Fewest CXRs with a finding a pathology needs.

    Returns:
        The comparison.

    Raises:
        ValueError: No methods, a table without the columns, methods scored on different
            CXRs or pathologies (the message names the methods and the CXRs that differ), an
            unknown ``reference``, or ``n_bootstrap`` below 1.
    """
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, int) or n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be a positive integer, got {n_bootstrap!r}")
    check_minimum(min_cases)
    if not scores_by_method:
        raise ValueError("scores_by_method is empty; give at least one method's scores")
    frames = dict(scores_by_method)
    if reference is not None and reference not in frames:
        raise ValueError(f"reference {reference!r} is not one of the methods {list(frames)}")
    units = {name: _unit_column(name, frame) for name, frame in frames.items()}
    unit = next(iter(units.values()))
    for name, frame in frames.items():
        if units[name] != unit or "label" not in frame.columns:
            raise ValueError(
                f"the scores of method {name!r} are not of the same kind as the others "
                f"(columns {list(frame.columns)}); give every method's {unit!r} and 'label'"
            )
    _check_same_cxrs(frames, unit)
    metrics = [m for m in _METRICS if all(m in frame.columns for frame in frames.values())]
    if not metrics:
        raise ValueError(f"no metric ({list(_METRICS)}) is in every method's scores")
    first = next(iter(frames.values()))
    cxrs = sorted(set(first[unit].astype(str)))
    labels = [str(label) for label in dict.fromkeys(first["label"])]
    if "gt_pixels" in first.columns:
        with_finding = first[first["gt_pixels"] > 0]
    elif "explained" in first.columns:
        with_finding = first[first["explained"].astype(bool)]
    else:
        with_finding = first
    positives = [int((with_finding["label"] == label).sum()) for label in labels]

    values: dict[str, dict[str, np.ndarray]] = {}
    priors: dict[str, dict[str, np.ndarray]] = {}
    for name, frame in frames.items():
        values[name] = {m: _wide(frame, unit, m, cxrs, labels) for m in metrics}
        if PRIOR in frames:
            priors[name] = {m: _wide(frames[PRIOR], unit, m, cxrs, labels) for m in metrics}
        elif all(f"prior_{m}" in frame.columns for m in metrics):
            priors[name] = {m: _wide(frame, unit, f"prior_{m}", cxrs, labels) for m in metrics}

    kept = np.ones(len(labels), dtype=bool)
    for name in frames:
        for metric in metrics:
            defined = (~np.isnan(values[name][metric])).sum(axis=0)
            kept &= enough_cases(positives, defined, min_cases, min_cases)
    kept_index = np.flatnonzero(kept)

    state = np.random.RandomState(seed)
    n = len(cxrs)
    weights = np.empty((n_bootstrap, n), dtype=np.float64)
    for replicate in range(n_bootstrap):
        weights[replicate] = np.bincount(state.choice(n, size=n, replace=True), minlength=n)
    everything = [
        v for by_metric in (*values.values(), *priors.values()) for v in by_metric.values()
    ]

    def complete(row: np.ndarray) -> bool:
        return all(not np.isnan(_means(row[None, :], v)[0, kept_index]).any() for v in everything)

    incomplete = [r for r in range(n_bootstrap) if len(kept_index) and not complete(weights[r])]
    if incomplete:
        redraw = np.random.default_rng([seed, n])

        def draw() -> np.ndarray:
            counts: np.ndarray = np.bincount(redraw.integers(0, n, size=n), minlength=n)
            return counts.astype(np.float64)

        fresh, redrawn = complete_replicates(draw, complete, len(incomplete))
        weights[incomplete] = np.asarray(fresh)
        logger.info(
            "%d replicates missed a pathology of the mean for some method and were drawn "
            "again (%d draws)",
            len(incomplete),
            len(incomplete) + redrawn,
        )

    def with_mean(per_label: np.ndarray) -> np.ndarray:
        mean = (
            per_label[:, kept_index].mean(axis=1)
            if len(kept_index)
            else np.full(len(per_label), np.nan)
        )
        return np.column_stack([per_label, mean])

    ones = np.ones((1, n))
    boot: dict[str, dict[str, np.ndarray]] = {}
    point: dict[str, dict[str, np.ndarray]] = {}
    prior_boot: dict[str, dict[str, np.ndarray]] = {}
    prior_point: dict[str, dict[str, np.ndarray]] = {}
    for name in frames:
        boot[name] = {_METRICS[m]: with_mean(_means(weights, v)) for m, v in values[name].items()}
        point[name] = {_METRICS[m]: with_mean(_means(ones, v))[0] for m, v in values[name].items()}
        if name in priors:
            prior_boot[name] = {
                _METRICS[m]: with_mean(_means(weights, v)) for m, v in priors[name].items()
            }
            prior_point[name] = {
                _METRICS[m]: with_mean(_means(ones, v))[0] for m, v in priors[name].items()
            }

    columns = [*labels, "mean"]
    reported = [*kept.tolist(), True]
    contenders = [name for name in frames if name not in (reference, PRIOR)] or list(frames)
    rows: list[dict[str, Any]] = []
    for name in frames:
        for column, pathology in enumerate(columns):
            ok = reported[column]
            row: dict[str, Any] = {
                "method": name,
                "pathology": pathology,
                "status": ("scored" if ok else TOO_FEW)
                if pathology != "mean"
                else f"mean of {len(kept_index)}",
                "positives": positives[column] if column < len(labels) else int(sum(positives)),
            }
            for metric in (_METRICS[m] for m in metrics):
                mine, mine_point = boot[name][metric][:, column], point[name][metric][column]
                best = _best(contenders, [float(point[c][metric][column]) for c in contenders])
                row |= _estimate(metric, mine_point, mine, ok)
                row[f"{metric}_n"] = (
                    int((~np.isnan(values[name][_key_of(metric)][:, column])).sum())
                    if column < len(labels)
                    else int((~np.isnan(values[name][_key_of(metric)][:, kept_index])).sum())
                )
                row[f"{metric}_best"] = best if ok else None
                row |= _estimate(
                    f"{metric}_diff_from_best",
                    mine_point - point[best][metric][column],
                    mine - boot[best][metric][:, column],
                    ok,
                )
                if name in prior_boot:
                    row |= _estimate(
                        f"{metric}_diff_from_prior",
                        mine_point - prior_point[name][metric][column],
                        mine - prior_boot[name][metric][:, column],
                        ok,
                    )
                else:
                    row |= _estimate(f"{metric}_diff_from_prior", math.nan, None, False)
                if reference is not None:
                    ref, ref_point = (
                        boot[reference][metric][:, column],
                        point[reference][metric][column],
                    )
                    with np.errstate(invalid="ignore", divide="ignore"):
                        ratio = (ref - mine) / ref * 100
                        ratio_point = (ref_point - mine_point) / ref_point * 100
                    ratio[~np.isfinite(ratio)] = np.nan
                    row |= _estimate(
                        f"{metric}_pct_decrease",
                        float(ratio_point) if math.isfinite(ratio_point) else math.nan,
                        ratio,
                        ok,
                    )
            rows.append(row)
    table = pd.DataFrame.from_records(rows)
    return MethodComparison(
        table=table,
        bootstrap=boot,
        pathologies=tuple(labels),
        reference=reference,
        n_bootstrap=n_bootstrap,
        seed=seed,
    )


def _best(names: list[str], values: list[float]) -> str:
    """The name with the highest value (the first on ties); NaN counts as lowest."""
    ranked = [-math.inf if math.isnan(value) else value for value in values]
    return names[int(np.argmax(ranked))]


def _key_of(metric: str) -> str:
    return next(key for key, name in _METRICS.items() if name == metric)


def _estimate(name: str, value: float, replicates: np.ndarray | None, ok: bool) -> dict[str, float]:
    if not ok or replicates is None:
        return {name: math.nan, f"{name}_lower": math.nan, f"{name}_upper": math.nan}
    lower, upper = percentile_interval(replicates)
    return {name: float(value), f"{name}_lower": lower, f"{name}_upper": upper}


@dataclass(frozen=True, eq=False)
class MethodResults:
    """What [`compare_methods`][chexviz.evaluate.compare.compare_methods] returns.

    Attributes:
        chexlocalize: The CheXlocalize comparison (None without ``chexlocalize=``).
        boxes: The box comparison (None without ``boxes=``).
        scores: Method -> its CheXlocalize scores (the reference's tables).
        box_scores: Method -> its per-finding box table.
        thresholds: Method -> the thresholds tuned on the validation set (empty without one).
    """

    chexlocalize: MethodComparison | None
    boxes: MethodComparison | None
    scores: dict[str, CheXlocalizeScores]
    box_scores: dict[str, pd.DataFrame]
    thresholds: dict[str, dict[str, float]]


def _named_methods(
    methods: Sequence[MethodSpec] | Mapping[str, MethodSpec],
) -> dict[str, MethodSpec]:
    if isinstance(methods, Mapping):
        named = dict(methods)
    elif isinstance(methods, str):
        raise TypeError(f"methods must be a sequence of names, got the string {methods!r}")
    else:
        named = {}
        for method in methods:
            name = method if isinstance(method, str) else getattr(method, "__name__", repr(method))
            if name in named:
                raise ValueError(f"method {name!r} is listed twice")
            named[name] = method
    if not named:
        raise ValueError("methods is empty; give at least one method")
    for name in named:
        if name in (PRIOR, HUMAN_BENCHMARK):
            raise ValueError(f"{name!r} is a reserved name; call the method something else")
    return named


def compare_methods(
    model: nn.Module,
    *,
    methods: Sequence[MethodSpec] | Mapping[str, MethodSpec] = DEFAULT_METHODS,
    chexlocalize: tuple[CheXpertDataset, CheXlocalizeGroundTruth] | None = None,
    validation: tuple[CheXpertDataset, CheXlocalizeGroundTruth] | None = None,
    boxes: tuple[Dataset[tuple[torch.Tensor, torch.Tensor]], pd.DataFrame] | None = None,
    prior: Mapping[str, torch.Tensor | np.ndarray] | None = None,
    human_benchmark: pd.DataFrame | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = False,
    min_cases: int = DEFAULT_MIN_POSITIVES,
    on_method: Callable[[str], None] | None = None,
) -> MethodResults:
    """Scores several explanation methods of one model by the same protocol on the same CXRs.

    For each method: with ``chexlocalize=(dataset, ground_truth)``, its maps of the ground
    truth's findings (the pathologies with a non-empty mask: all the true-positive slice
    reads) are scored as
    [`score_chexlocalize`][chexviz.evaluate.chexlocalize.scoring.score_chexlocalize] does
    (true-positive slice), with per-pathology thresholds tuned by
    [`tune_chexlocalize`][chexviz.evaluate.chexlocalize.tuning.tune_chexlocalize] on
    ``validation`` only (without it, Otsu's method for every method); with
    ``boxes=(dataset, boxes)``, its maps of every boxed finding are scored as
    [`score_localization`][chexviz.evaluate.localization.score_localization] does
    (``classes="true"``, with the ``prior`` maps). Then
    [`compare_localization`][chexviz.evaluate.compare.compare_localization] compares them,
    with the human benchmark (a per-image table in the ``per_image`` format, from
    ``chexviz.evaluate.chexlocalize.human.score_human_benchmark``) as the reference when
    given.

    With ``out_dir``, writes per method ``<method>/`` (the CheXlocalize tables in the
    reference's format, ``tuning_results.csv``, ``localization.csv``), ``human_benchmark/``,
    and ``comparison.csv`` / ``comparison.png`` (CheXlocalize), ``boxes_comparison.csv`` /
    ``boxes_comparison.png``.

    Args:
        model: The classifier (with ``labels``).
        methods: Names of [`MAP_METHODS`][chexviz.explain.methods.MAP_METHODS] or
            factories ``model -> map maker`` (named by their ``__name__``), or a mapping
            name -> either.
        chexlocalize: The test X-rays and their CheXlocalize ground truth.
        validation: The validation X-rays and ground truth, for tuning thresholds.
        boxes: A data set and its boxes (as ``score_localization`` takes them).
        prior: The anatomical prior of the boxes (``anatomical_prior`` of the training boxes).
        human_benchmark: The human benchmark's per-image scores of ``chexlocalize``'s CXRs.
        out_dir: Output folder, or None.
        n_bootstrap: Bootstrap resamples.
        seed: Their seed.
        batch_size: Images per pass.
        progress: Show progress bars (only on a terminal).
        min_cases: Fewest cases a pathology needs to be reported.
        on_method: Called with each method's name before its maps are made (progress).

    Returns:
        The comparisons and each method's scores.

    Raises:
        ValueError: An unknown method (the message lists the known ones), neither
            ``chexlocalize`` nor ``boxes``, a human benchmark without ``chexlocalize``, or as
            the scorers raise.
    """
    if chexlocalize is None and boxes is None:
        raise ValueError("give chexlocalize=(dataset, ground_truth) or boxes=(dataset, boxes)")
    if human_benchmark is not None and chexlocalize is None:
        raise ValueError(
            "a human benchmark is compared on the CheXlocalize CXRs: give chexlocalize="
        )
    named = _named_methods(methods)
    makers = {name: map_maker(method, model) for name, method in named.items()}
    out = Path(out_dir) if out_dir is not None else None
    scores: dict[str, CheXlocalizeScores] = {}
    box_scores: dict[str, pd.DataFrame] = {}
    thresholds: dict[str, dict[str, float]] = {}
    for name, maker in makers.items():
        if on_method is not None:
            on_method(name)
        folder = out / _folder(name) if out is not None else None
        # The maps of the findings only: all that tuning and true-positive scoring read.
        maps_of = functools.partial(
            chexlocalize_maps,
            maker,
            findings_only=True,
            batch_size=batch_size,
            progress=progress,
            name=name,
        )
        if chexlocalize is not None:
            tuned: dict[str, float] = {}
            if validation is not None:
                maps = maps_of(*validation)
                tuning = tune_chexlocalize(maps.heatmaps, validation[1], progress=progress)
                tuned = tuning.thresholds
                if folder is not None:
                    tuning.to_csv(folder)
            thresholds[name] = tuned
            maps = maps_of(*chexlocalize)
            scores[name] = score_chexlocalize(
                maps.heatmaps,
                chexlocalize[1],
                thresholds=tuned,
                probabilities=maps.probabilities,
                n_bootstrap=n_bootstrap,
                seed=seed,
                progress=progress,
                min_cases=min_cases,
            )
            if folder is not None:
                scores[name].to_csv(folder)
        if boxes is not None:
            box_scores[name] = score_localization(
                maker,
                boxes[0],
                boxes[1],
                classes="true",
                batch_size=batch_size,
                progress=progress,
                prior=prior,
            )
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
                box_scores[name].to_csv(folder / "localization.csv", index=False)
    located = None
    if chexlocalize is not None:
        tables = {name: score.per_image for name, score in scores.items()}
        if human_benchmark is not None:
            tables[HUMAN_BENCHMARK] = human_benchmark
            if out is not None:
                (out / _folder(HUMAN_BENCHMARK)).mkdir(parents=True, exist_ok=True)
                human_benchmark.to_csv(
                    out / _folder(HUMAN_BENCHMARK) / "per_image.csv", index=False
                )
        located = compare_localization(
            tables,
            n_bootstrap=n_bootstrap,
            seed=seed,
            reference=HUMAN_BENCHMARK if human_benchmark is not None else None,
            min_cases=min_cases,
        )
    boxed = None
    if boxes is not None:
        boxed = compare_localization(
            {name: table[table["explained"].astype(bool)] for name, table in box_scores.items()},
            n_bootstrap=n_bootstrap,
            seed=seed,
            min_cases=min_cases,
        )
    if out is not None:
        from matplotlib import pyplot as plt

        for comparison, stem in ((located, "comparison"), (boxed, "boxes_comparison")):
            if comparison is not None:
                comparison.to_csv(out, stem)
                plt.close(comparison.plot(out / f"{stem}.png"))
    return MethodResults(located, boxed, scores, box_scores, thresholds)


def _folder(name: str) -> str:
    """A method's output folder: its name with characters safe in a path."""
    return "".join(c if c.isalnum() or c in "+-." else "_" for c in name)
