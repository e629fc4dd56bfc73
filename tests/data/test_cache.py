from __future__ import annotations

import json
import os
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest

from chexviz.data.cache import (
    ImageCache,
    cache_key,
    default_cache_dir,
    default_workers,
    open_or_build_cache,
)
from chexviz.data.images import ImageDecodeError

SIZE = 8


class Loader:
    """Returns a distinct constant image per slot and counts calls; some slots fail."""

    def __init__(self, failing: dict[int, Exception] | None = None) -> None:
        self.failing = failing or {}
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, slot: int) -> npt.NDArray[np.uint8]:
        with self._lock:
            self.calls += 1
        if slot in self.failing:
            raise self.failing[slot]
        return np.full((SIZE, SIZE), slot % 251, dtype=np.uint8)


def _files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_key_depends_on_rows_size_and_root(tmp_path: Path) -> None:
    rows = pd.DataFrame({"Path": ["a.jpg", "b.jpg"], "Edema": ["1.0", ""]})
    key = cache_key(rows, image_size=64, image_root=tmp_path)
    assert key == cache_key(rows.copy(), image_size=64, image_root=tmp_path)
    assert len(key) == 64
    assert key != cache_key(rows, image_size=128, image_root=tmp_path)
    assert key != cache_key(rows, image_size=64, image_root=tmp_path / "other")
    assert key != cache_key(rows.iloc[::-1], image_size=64, image_root=tmp_path)
    assert key != cache_key(rows.iloc[:1], image_size=64, image_root=tmp_path)


def test_build_then_reuse(tmp_path: Path) -> None:
    loader = Loader()
    cache = open_or_build_cache(tmp_path, "k" * 64, 70, SIZE, loader, workers=3, progress=False)
    assert isinstance(cache, ImageCache)
    assert loader.calls == 70
    images = cache.open()
    assert images.shape == (70, SIZE, SIZE)
    assert images.dtype == np.uint8
    assert not images.flags.writeable
    np.testing.assert_array_equal(images[:, 0, 0], np.arange(70))
    assert cache.failures == {}
    assert _files(tmp_path) == sorted([cache.path.name, cache.path.with_suffix(".json").name])

    again = Loader()
    reopened = open_or_build_cache(tmp_path, "k" * 64, 70, SIZE, again, progress=False)
    assert again.calls == 0
    assert reopened == cache


def test_workers_do_not_change_pixels(tmp_path: Path) -> None:
    one = open_or_build_cache(tmp_path / "1", "a" * 64, 50, SIZE, Loader(), workers=1)
    four = open_or_build_cache(tmp_path / "4", "a" * 64, 50, SIZE, Loader(), workers=4)
    np.testing.assert_array_equal(one.open(), four.open())
    assert default_workers() >= 1


def test_first_failure_aborts_and_leaves_nothing(tmp_path: Path) -> None:
    error = ImageDecodeError(Path("bad.jpg"), "corrupt (train.csv line 7)")
    loader = Loader({40: error})
    with pytest.raises(ImageDecodeError, match=r"bad\.jpg.*line 7"):
        open_or_build_cache(tmp_path, "b" * 64, 500, SIZE, loader, workers=2, progress=False)
    assert _files(tmp_path) == []
    assert loader.calls < 500  # stopped early


def test_skip_records_failures(tmp_path: Path) -> None:
    failing: dict[int, Exception] = {
        3: FileNotFoundError(2, "image file not found", "gone.jpg"),
        5: ImageDecodeError(Path("bad.jpg"), "truncated"),
    }
    cache = open_or_build_cache(
        tmp_path, "c" * 64, 10, SIZE, Loader(failing), on_error="skip", progress=False
    )
    assert set(cache.failures) == {3, 5}
    assert "gone.jpg" in cache.failures[3]
    assert "truncated" in cache.failures[5]
    images = cache.open()
    assert images[3].max() == 0
    assert images[4, 0, 0] == 4
    reopened = open_or_build_cache(tmp_path, "c" * 64, 10, SIZE, Loader(), progress=False)
    assert reopened.failures == cache.failures


def test_other_errors_propagate(tmp_path: Path) -> None:
    loader = Loader({2: RuntimeError("bug")})
    with pytest.raises(RuntimeError, match="bug"):
        open_or_build_cache(tmp_path, "d" * 64, 10, SIZE, loader, on_error="skip", progress=False)
    assert _files(tmp_path) == []


def test_interrupted_build_is_never_trusted(tmp_path: Path) -> None:
    loader = Loader({60: KeyboardInterrupt()})  # type: ignore[dict-item]
    with pytest.raises(KeyboardInterrupt):
        open_or_build_cache(tmp_path, "e" * 64, 100, SIZE, loader, workers=1, progress=False)
    assert _files(tmp_path) == []
    fresh = Loader()
    cache = open_or_build_cache(tmp_path, "e" * 64, 100, SIZE, fresh, progress=False)
    assert fresh.calls == 100
    assert cache.open()[60, 0, 0] == 60


def test_pixels_without_metadata_are_rebuilt(tmp_path: Path) -> None:
    cache = open_or_build_cache(tmp_path, "f" * 64, 5, SIZE, Loader(), progress=False)
    cache.path.with_suffix(".json").unlink()  # as if interrupted between the two renames
    loader = Loader()
    open_or_build_cache(tmp_path, "f" * 64, 5, SIZE, loader, progress=False)
    assert loader.calls == 5


@pytest.mark.parametrize("damage", ["metadata", "pixels", "count"])
def test_damaged_cache_is_rebuilt(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    cache = open_or_build_cache(tmp_path, "g" * 64, 5, SIZE, Loader(), progress=False)
    meta_path = cache.path.with_suffix(".json")
    if damage == "metadata":
        meta_path.write_text("{not json")
    elif damage == "pixels":
        cache.path.write_bytes(cache.path.read_bytes()[:100])
    else:
        meta = json.loads(meta_path.read_text())
        meta["count"] = 6
        meta_path.write_text(json.dumps(meta))
    loader = Loader()
    rebuilt = open_or_build_cache(tmp_path, "g" * 64, 5, SIZE, loader, progress=False)
    assert loader.calls == 5
    assert "rebuilding" in caplog.text
    np.testing.assert_array_equal(rebuilt.open()[:, 0, 0], np.arange(5))


def test_build_memory_does_not_grow_with_the_data(tmp_path: Path) -> None:
    size, count = 32, 3000  # 3 MB of pixels

    def loader(slot: int) -> npt.NDArray[np.uint8]:
        return np.full((size, size), slot % 251, dtype=np.uint8)

    tracemalloc.start()
    try:
        cache = open_or_build_cache(tmp_path, "m" * 64, count, size, loader, workers=2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < count * size * size / 4
    assert cache.open()[count - 1, 0, 0] == (count - 1) % 251


def test_invalid_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="count"):
        open_or_build_cache(tmp_path, "h" * 64, 0, SIZE, Loader())
    with pytest.raises(ValueError, match="on_error"):
        open_or_build_cache(tmp_path, "h" * 64, 3, SIZE, Loader(), on_error="ignore")  # type: ignore[arg-type]


def test_key_changes_when_the_csv_is_rewritten_in_place(tmp_path: Path) -> None:
    csv = tmp_path / "train.csv"
    csv.write_text("Path\na.jpg\n")
    rows = pd.DataFrame({"Path": ["a.jpg"]})
    key = cache_key(rows, image_size=64, image_root=tmp_path, csv_path=csv)
    assert key == cache_key(rows, image_size=64, image_root=tmp_path, csv_path=csv)
    os.utime(csv, ns=(csv.stat().st_atime_ns, csv.stat().st_mtime_ns + 1_000_000))
    assert key != cache_key(rows, image_size=64, image_root=tmp_path, csv_path=csv)


def test_concurrent_builders_decode_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Two builders of one missing cache (two ranks of a torchrun job): the second waits for the
    # first's lock and opens its cache instead of decoding every image again.
    started = threading.Event()
    release = threading.Event()

    class Slow(Loader):
        def __call__(self, slot: int) -> npt.NDArray[np.uint8]:
            started.set()
            release.wait(timeout=30)
            return super().__call__(slot)

    first, second = Slow(), Loader()
    results: dict[str, ImageCache] = {}

    def build(name: str, loader: Loader) -> None:
        results[name] = open_or_build_cache(
            tmp_path, "l" * 64, 40, SIZE, loader, workers=2, progress=False
        )

    caplog.set_level("INFO", logger="chexviz.data.cache")
    one = threading.Thread(target=build, args=("first", first))
    one.start()
    assert started.wait(timeout=30)
    two = threading.Thread(target=build, args=("second", second))
    two.start()
    deadline = 300
    while "waiting for another process" not in caplog.text and deadline:
        time.sleep(0.01)
        deadline -= 1
    release.set()
    one.join(timeout=60)
    two.join(timeout=60)
    assert "waiting for another process to build the image cache" in caplog.text
    assert (first.calls, second.calls) == (40, 0)
    assert results["first"] == results["second"]
    np.testing.assert_array_equal(results["second"].open()[:, 0, 0], np.arange(40))
    # The lock file is gone with the build; only the cache's two files remain.
    assert _files(tmp_path) == sorted(
        [results["first"].path.name, results["first"].path.with_suffix(".json").name]
    )


def test_a_lock_left_by_a_killed_builder_does_not_block(tmp_path: Path) -> None:
    stem = f"chexviz-{SIZE}px-{'n' * 24}"
    (tmp_path / f".{stem}.lock").write_bytes(b"")  # its holder died; the kernel dropped the lock
    loader = Loader()
    open_or_build_cache(tmp_path, "n" * 64, 5, SIZE, loader, progress=False)
    assert loader.calls == 5
    assert not (tmp_path / f".{stem}.lock").exists()


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CHEXVIZ_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "chexviz" / "images"
    monkeypatch.setenv("CHEXVIZ_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"


def test_a_link_planted_as_the_lock_is_not_followed(tmp_path: Path) -> None:
    stem = f"chexviz-{SIZE}px-{'p' * 24}"
    target = tmp_path / "elsewhere"
    target.write_bytes(b"keep me")
    (tmp_path / f".{stem}.lock").symlink_to(target)
    with pytest.raises(OSError, match="lock"):
        open_or_build_cache(tmp_path, "p" * 64, 5, SIZE, Loader(), progress=False)
    assert target.read_bytes() == b"keep me"


def test_key_covers_a_center_crop_and_keeps_whole_image_keys() -> None:
    rows = pd.DataFrame({"Path": ["a/patient1/study1/view1_frontal.jpg"], "Cardiomegaly": [1.0]})
    key = cache_key(rows, image_size=64, image_root="/chexviz-fixed-root")
    # Computed once with the code before crop existed: whole-image caches stay valid.
    assert key == "8ef2e93e69bffa7ca921212735662d2b075ead3bb032d16d7a6e13d18a9b9242"
    assert key == cache_key(rows, image_size=64, image_root="/chexviz-fixed-root", crop="whole")
    assert key != cache_key(rows, image_size=64, image_root="/chexviz-fixed-root", crop="center")
    with pytest.raises(ValueError, match="crop must be"):
        cache_key(rows, image_size=64, image_root="/r", crop="square")  # type: ignore[arg-type]
