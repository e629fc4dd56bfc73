"""A preprocessed image cache: every image decoded and resized once, then memory-mapped.

Decoding and resizing JPEGs dominates the cost of a small-image training epoch. The cache
decodes each image once, in parallel, into a ``uint8 [N, S, S]`` ``.npy`` file, and later runs
open it with ``np.load(mmap_mode="r")``, so reading an item is a memory copy.

A cache is identified by a key (see [`cache_key`][chexviz.data.cache.cache_key]) that covers
everything that changes its pixels: the kept CSV rows, the image folder, the image size, the
decoder version, and the crop when it is not the whole image. Images are stored as one grey
channel; 3-channel datasets replicate it at read time, so one cache serves ``in_channels=1``
and ``in_channels=3``.

Files are written atomically: the pixels go to a temporary file that is renamed into place
when complete, and the JSON metadata, renamed last, marks the cache as trusted. An interrupted
build removes its temporary file; a process killed outright can leave a hidden
``.chexviz-*.tmp`` file behind, which is never opened and may be deleted.

Processes that need the same missing cache at the same time (the ranks of a ``torchrun`` job,
two runs sharing a cache folder) build it once: the first takes an exclusive lock on a hidden
``.<cache>.lock`` file next to it, the others wait for the lock and then open the finished
cache. The lock is a POSIX ``flock``, which the kernel releases when its holder dies, so a
killed build never blocks the next one; on platforms without ``flock`` (Windows) builds are not
serialised, but the atomic renames still keep every file whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from tqdm.auto import tqdm

from chexviz._internal.atomic import atomic_path, write_bytes_atomic
from chexviz._internal.checks import Crop, check_crop
from chexviz._internal.system import usable_cpus
from chexviz.data.images import ImageDecodeError

__all__ = [
    "CACHE_FORMAT_VERSION",
    "LOAD_ERRORS",
    "ImageCache",
    "cache_key",
    "default_cache_dir",
    "default_workers",
    "open_or_build_cache",
]

logger = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1
"""Bumped whenever decoding or the file layout changes, which invalidates older caches."""

LOAD_ERRORS: tuple[type[Exception], ...] = (FileNotFoundError, ImageDecodeError)
"""Errors that mean "this image cannot be read" (skipped with ``on_error="skip"``)."""

_CHUNK = 32
_FLUSH_EVERY = 2048


@dataclass(frozen=True)
class ImageCache:
    """A complete, trusted cache on disk.

    Attributes:
        path: The ``.npy`` file holding ``uint8 [count, image_size, image_size]`` pixels.
        key: The key it was built for.
        count: Number of image slots (one per kept CSV row, failed ones included).
        image_size: Side of the stored images.
        failures: Slot -> error message for images that could not be read during the build
            (only builds with ``on_error="skip"`` record any; their slots hold zeros). A cache
            opened later returns the failures recorded when it was built.
    """

    path: Path
    key: str
    count: int
    image_size: int
    failures: dict[int, str] = field(default_factory=dict)

    def open(self) -> np.memmap[Any, np.dtype[np.uint8]]:
        """Memory-maps the pixels read-only.

        Returns:
            Read-only memmap ``[count, image_size, image_size]`` of uint8.
        """
        images = np.load(self.path, mmap_mode="r")
        if not isinstance(images, np.memmap):
            raise TypeError(f"{self.path} did not open as a memory map")
        return images


def cache_key(
    rows: pd.DataFrame,
    *,
    image_size: int,
    image_root: str | os.PathLike[str],
    csv_path: str | os.PathLike[str] | None = None,
    crop: Crop = "whole",
) -> str:
    """Computes the key of the cache for some CSV rows.

    Args:
        rows: The kept CSV rows, in item order; their CSV text is hashed, so any change to a
            row, to the filter that kept it, or to the order invalidates the cache.
        image_size: Side of the stored images.
        image_root: The folder the rows' paths are resolved against; caches of two copies of a
            data set (for example, original and pre-processed images) never mix.
        csv_path: The CSV the rows come from; its size and modification time are part of the
            key, so a data set rewritten in place (a regenerated synthetic set, a new export
            with the same rows) gets a new cache even when its rows read the same.
        crop: How the images were made square (see
            [`load_image`][chexviz.data.images.load_image]). Only ``"center"`` enters the
            key, so caches of whole images built before the option existed stay valid.

    Returns:
        A 64-character hexadecimal SHA-256 digest.
    """
    digest = hashlib.sha256()
    header: dict[str, object] = {
        "format": CACHE_FORMAT_VERSION,
        "image_size": image_size,
        "image_root": str(Path(image_root).resolve()),
    }
    if csv_path is not None:
        stat = Path(csv_path).stat()
        header["csv"] = f"{stat.st_size}:{stat.st_mtime_ns}"
    if check_crop(crop) != "whole":
        header["crop"] = crop
    digest.update(json.dumps(header, sort_keys=True).encode())
    digest.update(rows.to_csv(index=False, lineterminator="\n").encode())
    return digest.hexdigest()


def default_cache_dir() -> Path:
    """The image cache folder used when a GPU run asks for a cache without naming a folder.

    Returns:
        ``$CHEXVIZ_CACHE`` if set, else ``$XDG_CACHE_HOME/chexviz/images``
        (``~/.cache/chexviz/images``).
    """
    if os.environ.get("CHEXVIZ_CACHE"):
        return Path(os.environ["CHEXVIZ_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "chexviz" / "images"


def default_workers() -> int:
    """Returns the number of decoding threads used when none is given.

    Returns:
        The number of CPUs this process may run on, at most 8.
    """
    return min(8, usable_cpus())


def open_or_build_cache(
    cache_dir: str | os.PathLike[str],
    key: str,
    count: int,
    image_size: int,
    loader: Callable[[int], npt.NDArray[np.uint8]],
    *,
    on_error: Literal["raise", "skip"] = "raise",
    workers: int | None = None,
    progress: bool = True,
    description: str = "",
) -> ImageCache:
    """Opens the cache for ``key``, building it first if it is missing or damaged.

    The build decodes every slot once with ``loader`` on a thread pool (PIL releases the GIL
    while decoding and resizing) and writes each image straight into a memory-mapped
    temporary file, so memory use does not grow with the data set.

    Args:
        cache_dir: Folder holding caches (created if missing).
        key: From [`cache_key`][chexviz.data.cache.cache_key].
        count: Number of images.
        image_size: Side of the images ``loader`` returns.
        loader: Returns image ``slot`` as uint8 ``[image_size, image_size]``; raises
            ``FileNotFoundError`` or [`ImageDecodeError`][chexviz.data.images.ImageDecodeError]
            for an unreadable image.
        on_error: ``"raise"`` stops the build at the first unreadable image and re-raises its
            error; ``"skip"`` records it in [`ImageCache.failures`][chexviz.data.cache.ImageCache].
        workers: Decoding threads; ``None`` uses
            [`default_workers`][chexviz.data.cache.default_workers].
        progress: Show a progress bar (only when stderr is a terminal).
        description: Names the data in log messages.

    Returns:
        The complete cache.

    Raises:
        FileNotFoundError: An image is missing (with ``on_error="raise"``).
        ImageDecodeError: An image cannot be decoded (with ``on_error="raise"``).
        ValueError: Invalid arguments.
    """
    if count < 1:
        raise ValueError(f"count must be positive, got {count}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    folder = Path(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"chexviz-{image_size}px-{key[:24]}"
    data_path, meta_path = folder / f"{stem}.npy", folder / f"{stem}.json"
    # The first look takes no lock (a finished cache may sit on read-only storage); a damaged
    # cache is reported by the second one.
    cache = _open_existing(data_path, meta_path, key, count, image_size, report=False)
    if cache is None:
        with _exclusive(folder / f".{stem}.lock", data_path):
            # Another process may have built it while this one waited for the lock.
            cache = _open_existing(data_path, meta_path, key, count, image_size)
            if cache is None:
                return _build(
                    data_path,
                    meta_path,
                    key,
                    count,
                    image_size,
                    loader,
                    on_error,
                    workers,
                    progress,
                    description,
                )
    logger.info("using image cache %s (%d images)", data_path, count)
    return cache


@contextlib.contextmanager
def _exclusive(lock_path: Path, data_path: Path) -> Iterator[None]:
    """Holds an exclusive lock on ``lock_path`` (see the module notes); removes it on exit."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; the atomic renames keep the files whole
        yield
        return
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    while True:
        descriptor = os.open(lock_path, flags, 0o666)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for another process to build the image cache %s", data_path)
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        # The holder before us removed the file it locked; a lock on a removed file protects
        # nothing, so lock whatever file now has the name instead.
        try:
            current = os.stat(lock_path, follow_symlinks=False).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(descriptor).st_ino:
            break
        os.close(descriptor)
    try:
        yield
    finally:
        # Removed while still locked, so no one can lock this file and think it holds the lock.
        lock_path.unlink(missing_ok=True)
        os.close(descriptor)


def _build(
    data_path: Path,
    meta_path: Path,
    key: str,
    count: int,
    image_size: int,
    loader: Callable[[int], npt.NDArray[np.uint8]],
    on_error: Literal["raise", "skip"],
    workers: int | None,
    progress: bool,
    description: str,
) -> ImageCache:
    logger.info(
        "building image cache %s: %d images of %dx%d%s",
        data_path,
        count,
        image_size,
        image_size,
        f" from {description}" if description else "",
    )
    started = time.perf_counter()
    with atomic_path(data_path) as temporary:
        failures = _write_images(
            temporary, count, image_size, loader, on_error, workers or default_workers(), progress
        )
    seconds = time.perf_counter() - started
    logger.info(
        "cached %d images in %.1f s (%.0f images/s)", count, seconds, count / max(seconds, 1e-9)
    )
    meta = {
        "format": CACHE_FORMAT_VERSION,
        "key": key,
        "count": count,
        "image_size": image_size,
        "failures": {str(slot): message for slot, message in sorted(failures.items())},
        "description": description,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_bytes_atomic(meta_path, json.dumps(meta, indent=1).encode())
    if failures:
        logger.warning("%d of %d images could not be read while caching", len(failures), count)
    return ImageCache(data_path, key, count, image_size, failures)


def _open_existing(
    data_path: Path, meta_path: Path, key: str, count: int, image_size: int, report: bool = True
) -> ImageCache | None:
    warn = logger.warning if report else logger.debug
    if not (data_path.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if (
            meta.get("format") != CACHE_FORMAT_VERSION
            or meta.get("key") != key
            or meta.get("count") != count
            or meta.get("image_size") != image_size
        ):
            warn("image cache %s does not match its metadata; rebuilding", data_path)
            return None
        failures = {int(slot): str(message) for slot, message in meta["failures"].items()}
        cache = ImageCache(data_path, key, count, image_size, failures)
        images = cache.open()
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        warn("image cache %s is unreadable (%s); rebuilding", data_path, error)
        return None
    if images.shape != (count, image_size, image_size) or images.dtype != np.uint8:
        warn("image cache %s has the wrong shape; rebuilding", data_path)
        return None
    return cache


def _write_images(
    path: Path,
    count: int,
    image_size: int,
    loader: Callable[[int], npt.NDArray[np.uint8]],
    on_error: str,
    workers: int,
    progress: bool,
) -> dict[int, str]:
    failures: dict[int, str] = {}
    stop = threading.Event()
    images = np.lib.format.open_memmap(
        path, mode="w+", dtype=np.uint8, shape=(count, image_size, image_size)
    )

    def fill(start: int) -> tuple[int, dict[int, Exception]]:
        errors: dict[int, Exception] = {}
        stop_at = min(start + _CHUNK, count)
        for slot in range(start, stop_at):
            if stop.is_set():
                break
            try:
                images[slot] = loader(slot)
            except LOAD_ERRORS as error:
                errors[slot] = error
                if on_error == "raise":
                    break
        return stop_at - start, errors

    bar = tqdm(total=count, unit="img", desc="caching", disable=None if progress else True)
    starts = iter(range(0, count, _CHUNK))
    pending: set[Future[tuple[int, dict[int, Exception]]]] = set()
    unflushed = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        try:
            while True:
                # A short queue of chunks lets a failure or an interrupt stop the build quickly.
                while len(pending) < 4 * workers and (start := next(starts, None)) is not None:
                    pending.add(pool.submit(fill, start))
                if not pending:
                    break
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    done, errors = future.result()
                    if errors and on_error == "raise":
                        raise errors[min(errors)]
                    failures.update({slot: str(error) for slot, error in errors.items()})
                    bar.update(done)
                    unflushed += done
                if unflushed >= _FLUSH_EVERY:
                    # Writing dirty pages back keeps the build's resident memory small.
                    images.flush()
                    unflushed = 0
        finally:
            stop.set()
            for future in pending:
                future.cancel()
            bar.close()
    images.flush()
    return failures
