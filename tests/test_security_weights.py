"""Weight files from strangers: loading never runs code and only accepts what fits the model.

tests/test_weights.py covers the format itself (round trips, header fields, a protocol-2 pickle,
truncation); these tests cover the attacks and the edge cases around them.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from chexviz.models.classifier import MultiLabelClassifier
from chexviz.models.serialization import WeightFileError, read_extra, read_header, read_weights
from chexviz.training.checkpoint import load_training_state, read_history

SRC = Path(__file__).parents[1] / "src" / "chexviz"


def _model() -> MultiLabelClassifier:
    torch.manual_seed(0)
    return MultiLabelClassifier("simple_cnn", image_size=16, labels=("a", "b", "c"))


class _Payload:
    """Unpickling this touches ``marker``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch '{self.marker}'",))


def _readers() -> dict[str, Callable[[Path], object]]:
    return {
        "MultiLabelClassifier.load": MultiLabelClassifier.load,
        "read_header": read_header,
        "read_weights": read_weights,
        "read_extra": read_extra,
        "load_training_state": lambda path: load_training_state(path, _model()),
        "read_history": read_history,
    }


def _pickle_files(folder: Path, marker: Path) -> dict[str, Path]:
    files = {}
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        files[f"pickle protocol {protocol}"] = folder / f"p{protocol}.safetensors"
        files[f"pickle protocol {protocol}"].write_bytes(
            pickle.dumps(_Payload(marker), protocol=protocol)
        )
    files["torch.save zip"] = folder / "zip.pt"
    torch.save({"weights": _Payload(marker)}, files["torch.save zip"])
    files["torch.save legacy"] = folder / "legacy.pth"
    torch.save(
        {"weights": _Payload(marker)},
        files["torch.save legacy"],
        _use_new_zipfile_serialization=False,
    )
    return files


def test_pickled_payloads_are_refused_before_any_code_runs(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    files = _pickle_files(tmp_path, marker)
    # The payloads are live: unpickling one really runs the command.
    pickle.loads(files["pickle protocol 2"].read_bytes())
    assert marker.exists()
    marker.unlink()
    for kind, path in files.items():
        for name, reader in _readers().items():
            with pytest.raises(WeightFileError) as info:
                reader(path)
            message = str(info.value)
            assert str(path) in message, (kind, name)
            # Protocols 0 and 1 start with text, which reads as an absurd header length.
            text_pickle = kind in {"pickle protocol 0", "pickle protocol 1"}
            expected = "header claims" if text_pickle else "pickle / torch.save file"
            assert expected in message, (kind, name, message)
            assert not marker.exists(), f"{name} ran code from a {kind}"


def _header_length(path: Path) -> int:
    length: int = struct.unpack("<Q", path.read_bytes()[:8])[0]
    return length


@pytest.mark.parametrize(
    ("modulus", "residue"),
    [(256, 0x80), (65536, 0x4B50)],  # first bytes 0x80 (pickle opcode) and "PK" (zip)
)
def test_genuine_file_whose_length_looks_like_a_pickle_loads(
    tmp_path: Path, modulus: int, residue: int
) -> None:
    model = _model().eval()
    path = tmp_path / "m.safetensors"
    gap = (residue - _header_length(model.save(path))) % modulus or modulus
    # The padding entry costs a few bytes of JSON and headers are padded to 8 bytes: one of a
    # few lengths near the gap hits the residue exactly.
    for size in range(max(gap - 32, 0), gap + 8):
        model.save(path, extra_metadata={"pad": "x" * size})
        if _header_length(path) % modulus == residue:
            break
    assert _header_length(path) % modulus == residue
    signature = residue.to_bytes(8, "little")[: 1 if modulus == 256 else 2]
    assert path.read_bytes().startswith(signature)  # b"\x80" or b"PK"
    loaded = MultiLabelClassifier.load(path)
    x = torch.rand(2, 1, 16, 16)
    assert torch.equal(loaded(x), model(x))


def _rewrite_tensors(path: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> None:
    header, state = read_weights(path)
    tensors = dict(state)
    edit(tensors)
    save_file(tensors, path, metadata={"chexviz": json.dumps(header)})


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.int32, torch.bool])
def test_parameter_dtype_must_match_the_model(tmp_path: Path, dtype: torch.dtype) -> None:
    path = _model().save(tmp_path / "m.safetensors")
    key = "head.fc.weight"

    def cast(tensors: dict[str, torch.Tensor]) -> None:
        tensors[key] = tensors[key].to(dtype)

    _rewrite_tensors(path, cast)
    with pytest.raises(
        WeightFileError,
        match=rf"m\.safetensors: .*dtype mismatches: {key}: file {dtype} vs model torch\.float32",
    ):
        MultiLabelClassifier.load(path)


def test_integer_buffer_dtype_must_match(tmp_path: Path) -> None:
    path = _model().save(tmp_path / "m.safetensors")

    def cast(tensors: dict[str, torch.Tensor]) -> None:
        for key in tensors:
            if key.endswith("num_batches_tracked"):
                tensors[key] = tensors[key].float()

    _rewrite_tensors(path, cast)
    with pytest.raises(WeightFileError, match=r"num_batches_tracked: file torch\.float32 vs model"):
        MultiLabelClassifier.load(path)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused(tmp_path: Path, value: float) -> None:
    path = _model().save(tmp_path / "m.safetensors")

    def poison(tensors: dict[str, torch.Tensor]) -> None:
        tensors["head.fc.bias"][1] = value

    _rewrite_tensors(path, poison)
    with pytest.raises(WeightFileError, match=r"NaN or infinite values .* in head\.fc\.bias"):
        MultiLabelClassifier.load(path)


def _raw_file(path: Path, header: bytes, data: bytes = b"") -> Path:
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    return path


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "not valid JSON"),
        (b'{"a": ' + b"7" * 5000 + b"}", "not valid JSON"),
        (b'{"a": "\xff\xfe"}', "not valid JSON"),
    ],
    ids=["deeply-nested", "huge-integer", "bad-utf8"],
)
def test_hostile_json_headers_fail_cleanly(tmp_path: Path, header: bytes, message: str) -> None:
    path = _raw_file(tmp_path / "bad.safetensors", header)
    for reader in _readers().values():
        with pytest.raises(WeightFileError, match=message) as info:
            reader(path)
        assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "chexviz_header",
    ['{"format": "chexviz", "x": ' + "[" * 100_000 + "]" * 100_000 + "}", "1" * 5000],
    ids=["deeply-nested", "huge-integer"],
)
def test_hostile_chexviz_metadata_fails_cleanly(tmp_path: Path, chexviz_header: str) -> None:
    header = json.dumps({"__metadata__": {"chexviz": chexviz_header}}).encode()
    path = _raw_file(tmp_path / "bad.safetensors", header)
    with pytest.raises(WeightFileError, match="chexviz header is not valid JSON"):
        MultiLabelClassifier.load(path)


def _with_tensor_entry(tmp_path: Path, entry: dict[str, object], data: bytes) -> Path:
    header = read_header(_model().save(tmp_path / "m.safetensors"))
    raw = json.dumps({"__metadata__": {"chexviz": json.dumps(header)}, "w": entry}).encode()
    return _raw_file(tmp_path / "crafted.safetensors", raw, data)


@pytest.mark.parametrize(
    ("entry", "data"),
    [
        # 40 GB claimed by a 16-byte file: refused, nothing allocated.
        ({"dtype": "F32", "shape": [100_000, 100_000], "data_offsets": [0, 40_000_000_000]}, 16),
        # Offsets that disagree with shape x dtype.
        ({"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 4]}, 4),
        ({"dtype": "F32", "shape": [-1, 2], "data_offsets": [0, 8]}, 8),
        ({"dtype": "NOPE", "shape": [2], "data_offsets": [0, 8]}, 8),
    ],
    ids=["huge-shape", "offsets-disagree", "negative-dim", "unknown-dtype"],
)
def test_inconsistent_tensor_entries_are_refused(
    tmp_path: Path, entry: dict[str, object], data: int
) -> None:
    path = _with_tensor_entry(tmp_path, entry, b"\0" * data)
    with pytest.raises(WeightFileError, match=r"crafted\.safetensors: corrupt safetensors data"):
        MultiLabelClassifier.load(path)


def test_oversized_file_with_trailing_bytes_is_refused(tmp_path: Path) -> None:
    path = _model().save(tmp_path / "m.safetensors")
    path.write_bytes(path.read_bytes() + b"\0" * 4096)
    with pytest.raises(WeightFileError, match=r"corrupt safetensors data.*not fully covered"):
        MultiLabelClassifier.load(path)


@pytest.mark.parametrize("cut", [8, 9, 100, -1])
def test_truncated_anywhere_is_refused(tmp_path: Path, cut: int) -> None:
    path = _model().save(tmp_path / "m.safetensors")
    data = path.read_bytes()
    inside_header = 0 <= cut < 8 + _header_length(path)
    path.write_bytes(data[:cut])
    for name, reader in _readers().items():
        if name == "read_header" and not inside_header:
            continue  # reads the header only, by design; the tensor readers catch the rest
        with pytest.raises(WeightFileError) as info:
            reader(path)
        assert str(path) in str(info.value)


def _calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                found.append((f"{func.value.id}.{func.attr}", node))
            elif isinstance(func, ast.Name):
                found.append((func.id, node))
    return found


def _keyword(call: ast.Call, name: str) -> object:
    for keyword in call.keywords:
        if keyword.arg == name and isinstance(keyword.value, ast.Constant):
            return keyword.value.value
    return None


def test_no_unpickling_call_anywhere_in_the_package() -> None:
    offences = []
    for file in sorted(SRC.rglob("*.py")):
        tree = ast.parse(file.read_text(encoding="utf-8"))
        for name, call in _calls(tree):
            where = f"{file.name}:{call.lineno} {name}"
            if name == "torch.load" and _keyword(call, "weights_only") is not True:
                offences.append(f"{where} without weights_only=True")
            if name in {"pickle.load", "pickle.loads", "marshal.load", "marshal.loads"}:
                offences.append(where)
            if name == "np.load" and _keyword(call, "allow_pickle") is True:
                offences.append(f"{where} with allow_pickle=True")
            if name in {"eval", "exec"}:
                offences.append(where)
    assert offences == []
