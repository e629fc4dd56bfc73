"""The chexviz weight file: safetensors tensors plus a JSON header that rebuilds the model.

A file holds the classifier's ``state_dict``, optional extra tensors under the reserved key
prefix ``extra/`` and, in the safetensors metadata, a ``chexviz`` entry with a JSON header::

    {"format": "chexviz", "format_version": 2, "chexviz_version": "...",
     "config": {"backbone": ..., "head": ..., "in_channels": ..., "num_labels": ...,
                "labels": [...], "image_size": ..., "dropout": ...,
                "pretrained_weights": ... or null, "input_crop": "center" (only when not
                "whole"; files without it are whole-image models)}}

plus the caller's extra metadata under ``extra/<key>``. The header describes the architecture
only: every value the model computes with (weights, and the ``mean``, ``std`` and ``thresholds``
buffers) lives once, in the tensors. Version 1 files also repeated ``thresholds``, ``mean`` and
``std`` in the header; they are read, and those header copies ignored.

Writing is atomic (temporary file in the same directory, then ``os.replace``). Reading never
unpickles: the safetensors header is checked before any tensor is touched, and pickle or
``torch.save`` files are refused.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file as _st_load_file
from safetensors.torch import save as _st_save

from chexviz._internal.atomic import write_bytes_atomic
from chexviz._version import __version__

__all__ = [
    "EXTRA_PREFIX",
    "FORMAT_VERSION",
    "WeightFileError",
    "check_state_dict",
    "read_extra",
    "read_header",
    "read_weights",
    "write_weights",
]

FORMAT_VERSION = 2
"""Version of the header layout written by this release (it reads 1 and 2)."""
EXTRA_PREFIX = "extra/"
"""Key prefix of extra tensors and metadata stored next to the model."""

_FORMAT = "chexviz"
_HEADER_KEY = "chexviz"
# Real headers are a few kB; a huge length is a corrupt or foreign file, not one to allocate.
_MAX_HEADER_BYTES = 100 * 1024 * 1024
_CONFIG_FIELDS: dict[str, type | tuple[type, ...]] = {
    "backbone": str,
    "head": str,
    "in_channels": int,
    "num_labels": int,
    "labels": list,
    "image_size": int,
    "dropout": (int, float),
}
# Fields that files written before they existed lack.
_OPTIONAL_CONFIG_FIELDS: dict[str, type | tuple[type, ...]] = {
    "pretrained_weights": (str, type(None)),
    "input_crop": str,
}


class WeightFileError(ValueError):
    """A file is not a valid chexviz weight file; the message names the file and the fault."""


def _fail(path: Path, message: str) -> WeightFileError:
    return WeightFileError(f"{path}: {message}")


def _read_raw_header(path: Path) -> dict[str, Any]:
    """Parse the safetensors JSON header, refusing foreign files before anything else."""
    if not path.is_file():
        raise FileNotFoundError(f"weight file not found: {path}")
    size = path.stat().st_size
    with path.open("rb") as fh:
        prefix = fh.read(8)
        length = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else -1
        fits = 0 <= length <= _MAX_HEADER_BYTES and 8 + length <= size
        # A safetensors header length can start with the same bytes as a pickle (e.g. 3200 is
        # 0x80 0x0c ...), so only a prefix that is not a plausible length counts as a pickle.
        if not fits and (prefix[:2] == b"PK" or prefix[:1] == b"\x80"):
            raise _fail(
                path,
                "this is a pickle / torch.save file, not a safetensors chexviz file; chexviz "
                "never unpickles weight files (re-save the model with MultiLabelClassifier.save)",
            )
        if len(prefix) < 8:
            raise _fail(path, f"not a safetensors chexviz file ({size} bytes, too short)")
        if not fits:
            raise _fail(
                path,
                f"not a safetensors chexviz file or truncated: header claims {length} bytes but "
                f"the file has {size} bytes",
            )
        raw = fh.read(length)
    if not raw.lstrip().startswith(b"{"):
        raise _fail(path, "not a safetensors chexviz file (no JSON header)")
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        # ValueError covers bad UTF-8, bad JSON and integers too long to convert;
        # RecursionError deeply nested arrays.
        raise _fail(path, f"safetensors header is not valid JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise _fail(path, "safetensors header is not a JSON object")
    return header


def _validate_config(path: Path, config: object) -> dict[str, Any]:
    if not isinstance(config, dict):
        raise _fail(path, "header field 'config' must be an object")
    for key, kind in _CONFIG_FIELDS.items():
        if key not in config:
            raise _fail(path, f"header config lacks field {key!r}")
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise _fail(path, f"header config field {key!r} has invalid value {value!r}")
    for key, kind in _OPTIONAL_CONFIG_FIELDS.items():
        if key in config and not isinstance(config[key], kind):
            raise _fail(path, f"header config field {key!r} has invalid value {config[key]!r}")
    unknown = sorted(set(config) - set(_CONFIG_FIELDS) - set(_OPTIONAL_CONFIG_FIELDS))
    if unknown:
        raise _fail(path, f"header config has unknown fields {unknown}")
    labels = config["labels"]
    if not all(isinstance(x, str) for x in labels) or len(labels) != config["num_labels"]:
        raise _fail(
            path,
            f"header config 'labels' must be {config['num_labels']} strings, got {labels!r}",
        )
    if not 0 <= config["dropout"] < 1:
        raise _fail(path, f"header config 'dropout' out of range: {config['dropout']}")
    if config["in_channels"] < 1 or config["image_size"] < 1:
        raise _fail(path, "header config 'in_channels' and 'image_size' must be positive")
    if config.get("input_crop", "whole") not in ("whole", "center"):
        raise _fail(
            path,
            f"header config 'input_crop' must be 'whole' or 'center', got {config['input_crop']!r}",
        )
    return dict(config)


def read_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a weight file's chexviz header without loading any tensor.

    Args:
        path: The weight file.

    Returns:
        The header: ``format``, ``format_version``, ``chexviz_version``, ``config`` (the
        classifier's
        [`MultiLabelClassifier.config`][chexviz.models.classifier.MultiLabelClassifier.config]).

    Raises:
        FileNotFoundError: If the file does not exist.
        WeightFileError: If it is not a chexviz safetensors file or its header is invalid.
    """
    return _chexviz_header(Path(path))[1]


def _chexviz_header(file: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The raw safetensors header and the validated chexviz header."""
    raw = _read_raw_header(file)
    metadata = raw.get("__metadata__")
    if not isinstance(metadata, dict) or _HEADER_KEY not in metadata:
        raise _fail(file, "safetensors file without a chexviz header (not written by chexviz)")
    try:
        header = json.loads(metadata[_HEADER_KEY])
    except (TypeError, ValueError, RecursionError) as exc:
        raise _fail(file, f"chexviz header is not valid JSON: {exc}") from exc
    if not isinstance(header, dict) or header.get("format") != _FORMAT:
        raise _fail(file, "chexviz header lacks format='chexviz'")
    version = header.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise _fail(file, f"invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise _fail(
            file,
            f"format_version {version} was written by a newer chexviz "
            f"({header.get('chexviz_version')}); this release reads up to {FORMAT_VERSION}",
        )
    header["config"] = _validate_config(file, header.get("config"))
    for stale in ("thresholds", "mean", "std"):  # version 1 copies of tensors; never read
        header.pop(stale, None)
    return raw, header


def _load_tensors(path: Path, device: str | torch.device) -> dict[str, torch.Tensor]:
    try:
        tensors = _st_load_file(path)
    except SafetensorError as exc:
        raise _fail(path, f"corrupt safetensors data: {exc}") from exc
    return {k: v.to(device) for k, v in tensors.items()}


def read_weights(
    path: str | os.PathLike[str], *, device: str | torch.device = "cpu"
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a weight file's header and model tensors (extras excluded).

    Args:
        path: The weight file.
        device: Where to put the tensors.

    Returns:
        ``(header, state_dict)``; see [`read_header`][chexviz.models.serialization.read_header].

    Raises:
        FileNotFoundError: If the file does not exist.
        WeightFileError: If it is not a valid chexviz weight file.
    """
    file = Path(path)
    header = read_header(file)
    tensors = _load_tensors(file, device)
    return header, {k: v for k, v in tensors.items() if not k.startswith(EXTRA_PREFIX)}


def read_extra(
    path: str | os.PathLike[str], *, device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read the extra tensors and metadata stored by ``save``.

    Args:
        path: The weight file.
        device: Where to put the tensors.

    Returns:
        ``(tensors, metadata)`` with the keys as given to ``save`` (prefix removed).

    Raises:
        FileNotFoundError: If the file does not exist.
        WeightFileError: If it is not a valid chexviz weight file.
    """
    file = Path(path)
    raw, _ = _chexviz_header(file)
    n = len(EXTRA_PREFIX)
    metadata = raw.get("__metadata__") or {}
    extra_meta = {k[n:]: v for k, v in metadata.items() if k.startswith(EXTRA_PREFIX)}
    tensors = _load_tensors(file, device)
    extra_tensors = {k[n:]: v for k, v in tensors.items() if k.startswith(EXTRA_PREFIX)}
    return extra_tensors, extra_meta


def _check_extra_keys(kind: str, keys: Mapping[str, object]) -> None:
    for key in keys:
        if not isinstance(key, str) or not key:
            raise ValueError(f"extra {kind} keys must be non-empty strings, got {key!r}")


def write_weights(
    path: str | os.PathLike[str],
    state_dict: Mapping[str, torch.Tensor],
    header: Mapping[str, Any],
    *,
    extra_tensors: Mapping[str, torch.Tensor] | None = None,
    extra_metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write tensors and a chexviz header atomically.

    Args:
        path: Destination; its parent directory must exist.
        state_dict: Model tensors; keys must not start with
            [`EXTRA_PREFIX`][chexviz.models.serialization.EXTRA_PREFIX].
        header: ``config`` (see [`read_header`][chexviz.models.serialization.read_header]); the
            format fields are added here.
        extra_tensors: Additional tensors, read back by
            [`read_extra`][chexviz.models.serialization.read_extra].
        extra_metadata: Additional string metadata, read back by
            [`read_extra`][chexviz.models.serialization.read_extra].

    Returns:
        The written path.

    Raises:
        ValueError: If a key collides with the reserved prefix or an extra is not a tensor or
            string.
        FileNotFoundError: If the parent directory does not exist.
    """
    file = Path(path)
    if not file.parent.is_dir():
        raise FileNotFoundError(f"directory does not exist: {file.parent}")
    tensors: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith(EXTRA_PREFIX):
            raise ValueError(f"model tensor {key!r} uses the reserved prefix {EXTRA_PREFIX!r}")
        tensors[key] = value.detach().cpu().contiguous()
    extra_tensors = extra_tensors or {}
    extra_metadata = extra_metadata or {}
    _check_extra_keys("tensor", extra_tensors)
    _check_extra_keys("metadata", extra_metadata)
    for key, value in extra_tensors.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"extra tensor {key!r} is a {type(value).__name__}, not a Tensor")
        tensors[EXTRA_PREFIX + key] = value.detach().cpu().contiguous()
    metadata = {
        _HEADER_KEY: json.dumps(
            {
                "format": _FORMAT,
                "format_version": FORMAT_VERSION,
                "chexviz_version": __version__,
                **header,
            }
        )
    }
    for key, text in extra_metadata.items():
        if not isinstance(text, str):
            raise ValueError(f"extra metadata {key!r} is a {type(text).__name__}, not a str")
        metadata[EXTRA_PREFIX + key] = text
    return write_bytes_atomic(file, _st_save(tensors, metadata=metadata))


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def check_state_dict(
    expected: Mapping[str, torch.Tensor],
    found: Mapping[str, torch.Tensor],
    *,
    source: str,
    model: str,
) -> None:
    """Check that ``found`` has exactly ``expected``'s keys, shapes and dtypes, all finite.

    ``load_state_dict`` would silently cast a float64, integer or boolean tensor into a float32
    parameter, so a file is only accepted with the very dtypes the rebuilt model has.

    Args:
        expected: The model's ``state_dict()``.
        found: The tensors read from ``source``.
        source: Where ``found`` came from (a file path), for the message.
        model: A description of the model (e.g. its backbone and head), for the message.

    Raises:
        WeightFileError: Naming missing and unexpected keys (first few), shape and dtype
            mismatches, and tensors holding NaN or infinity.
    """
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    common = sorted(set(expected) & set(found))
    mismatched = [
        f"{k}: file {_shape(found[k])} vs model {_shape(expected[k])}"
        for k in common
        if _shape(found[k]) != _shape(expected[k])
    ]
    wrong_dtypes = [
        f"{k}: file {found[k].dtype} vs model {expected[k].dtype}"
        for k in common
        if found[k].dtype != expected[k].dtype
    ]
    problems = [
        f"{title}: {_first_few(items)}"
        for title, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
            ("dtype mismatches", wrong_dtypes),
        )
        if items
    ]
    if problems:
        raise WeightFileError(
            f"{source}: tensors do not fit {model} (different architecture?); "
            + "; ".join(problems)
        )
    non_finite = [
        k for k in common if found[k].is_floating_point() and not bool(found[k].isfinite().all())
    ]
    if non_finite:
        raise WeightFileError(
            f"{source}: NaN or infinite values (a diverged or damaged model) in "
            f"{_first_few(non_finite)}"
        )


def _first_few(items: list[str]) -> str:
    return ", ".join(items[:5]) + (f", ... ({len(items)} in all)" if len(items) > 5 else "")
