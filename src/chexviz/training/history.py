"""Per-epoch training history: losses, validation metrics, time and throughput."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chexviz._internal.atomic import write_bytes_atomic
from chexviz.training.metrics import Metrics

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["EpochRecord", "History"]

_COLUMNS = (
    "epoch",
    "train_loss",
    "val_loss",
    "val_auroc",
    "val_accuracy",
    "val_f1",
    "val_all_negative_accuracy",
    "seconds",
    "images_per_second",
    "lr",
)


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else value


def _from_json_float(value: float | None) -> float:
    return math.nan if value is None else float(value)


@dataclass(frozen=True)
class EpochRecord:
    """What happened in one epoch.

    Attributes:
        epoch: Epoch number, starting at 1.
        train_loss: Mean training loss over the epoch's steps.
        seconds: Wall-clock time of the training part of the epoch (validation excluded).
        images_per_second: Training images processed per second (over all processes).
        lr: Learning rate of the first parameter group during the epoch.
        val_metrics: Validation metrics, when a validation set was given.
    """

    epoch: int
    train_loss: float
    seconds: float
    images_per_second: float
    lr: float
    val_metrics: Metrics | None = None

    @property
    def val_loss(self) -> float:
        """Validation loss (``nan`` without validation)."""
        return self.val_metrics.loss if self.val_metrics is not None else math.nan

    @property
    def val_auroc(self) -> float:
        """Validation macro-AUROC (``nan`` without validation or when undefined)."""
        return self.val_metrics.macro_auroc if self.val_metrics is not None else math.nan

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (``nan`` becomes ``None``).

        Returns:
            The record's fields, the validation metrics nested under ``"val_metrics"``.
        """
        return {
            "epoch": self.epoch,
            "train_loss": _json_float(self.train_loss),
            "seconds": self.seconds,
            "images_per_second": self.images_per_second,
            "lr": self.lr,
            "val_metrics": None if self.val_metrics is None else self.val_metrics.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EpochRecord:
        """Rebuild a record from [`to_dict`][chexviz.training.history.EpochRecord.to_dict] output.

        Args:
            data: The dict.

        Returns:
            The record.
        """
        metrics = data.get("val_metrics")
        return cls(
            epoch=int(data["epoch"]),
            train_loss=_from_json_float(data["train_loss"]),
            seconds=float(data["seconds"]),
            images_per_second=float(data["images_per_second"]),
            lr=float(data["lr"]),
            val_metrics=None if metrics is None else Metrics.from_dict(metrics),
        )


@dataclass
class History:
    """The records of a training run, one per completed epoch.

    Attributes:
        records: Epoch records in order.
    """

    records: list[EpochRecord] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[EpochRecord]:
        return iter(self.records)

    def __getitem__(self, index: int) -> EpochRecord:
        return self.records[index]

    def append(self, record: EpochRecord) -> None:
        """Add the record of the epoch just finished.

        Args:
            record: The record.
        """
        self.records.append(record)

    @property
    def best_epoch(self) -> int | None:
        """Epoch with the highest validation macro-AUROC (first one on ties), if any is defined."""
        scored = [r for r in self.records if not math.isnan(r.val_auroc)]
        return max(scored, key=lambda r: r.val_auroc).epoch if scored else None

    def to_frame(self) -> pd.DataFrame:
        """Return one row per epoch with losses, macro metrics, time, throughput and lr.

        Returns:
            A pandas DataFrame indexed by epoch.
        """
        import pandas as pd

        rows = []
        for r in self.records:
            m = r.val_metrics
            macro = {
                f"val_{name}": math.nan if m is None else getattr(m, f"macro_{name}")
                for name in ("accuracy", "f1", "all_negative_accuracy")
            }
            rows.append(
                {
                    "epoch": r.epoch,
                    "train_loss": r.train_loss,
                    "val_loss": r.val_loss,
                    "val_auroc": r.val_auroc,
                    **macro,
                    "seconds": r.seconds,
                    "images_per_second": r.images_per_second,
                    "lr": r.lr,
                }
            )
        frame: pd.DataFrame = pd.DataFrame(rows, columns=list(_COLUMNS)).set_index("epoch")
        return frame

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict, the inverse of `from_dict`.

        Returns:
            ``{"records": [...]}``.
        """
        return {"records": [r.to_dict() for r in self.records]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> History:
        """Rebuild a history from [`to_dict`][chexviz.training.history.History.to_dict] output.

        Args:
            data: The dict.

        Returns:
            The history.
        """
        return cls([EpochRecord.from_dict(r) for r in data["records"]])

    def to_csv(self, path: str | Path) -> None:
        """Write `to_frame` (macro metrics per epoch) as CSV.

        Args:
            path: Destination file.
        """
        write_bytes_atomic(path, self.to_frame().to_csv().encode())

    def to_json(self, path: str | Path) -> None:
        """Write the full history, per-label metrics included, as strict JSON.

        Args:
            path: Destination file.
        """
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"
        write_bytes_atomic(path, text.encode())

    @classmethod
    def from_json(cls, path: str | Path) -> History:
        """Read a history written by [`to_json`][chexviz.training.history.History.to_json].

        Args:
            path: The JSON file.

        Returns:
            The history.
        """
        return cls.from_dict(json.loads(Path(path).read_text()))

    def plot(self, path: str | Path) -> None:
        """Draw loss curves and the validation macro-AUROC per epoch into an image file.

        Args:
            path: Destination image (format from the suffix, e.g. ``.png``).

        Raises:
            ValueError: If the history is empty.
        """
        if not self.records:
            raise ValueError("cannot plot an empty history")
        # The figure is drawn on an Agg canvas directly so that pyplot's global backend and
        # figure registry are left alone.
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        frame = self.to_frame()
        figure = Figure(figsize=(10, 4), layout="constrained")
        FigureCanvasAgg(figure)
        loss_axes, auroc_axes = figure.subplots(1, 2)
        loss_axes.plot(frame.index, frame["train_loss"], marker="o", label="train")
        loss_axes.plot(frame.index, frame["val_loss"], marker="o", label="validation")
        loss_axes.set(title="Loss", xlabel="epoch", ylabel="masked BCE")
        loss_axes.legend()
        auroc_axes.plot(frame.index, frame["val_auroc"], marker="o", color="tab:green")
        auroc_axes.set(title="Validation macro-AUROC", xlabel="epoch", ylabel="AUROC")
        best = self.best_epoch
        if best is not None:
            auroc_axes.axvline(best, color="grey", linestyle="--", label=f"best (epoch {best})")
            auroc_axes.legend()
        figure.savefig(path)
