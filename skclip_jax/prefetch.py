"""Device prefetching: global batches are copied onto the devices while the previous step runs.

``DevicePrefetcher(local_batches, mesh, size=2)`` wraps an iterator of this process's NumPy slices of the global
batches (``input_pipeline.train_iterator``) and yields global ``jax.Array``s, keeping ``size`` of them already
placed on the devices (double buffering with the default 2). A background thread does the host side (pulling the
next slice from grain and ``jax.make_array_from_process_local_data``), so the step never waits for the host as
long as the host keeps up on average.

Order and resume: batches come out in exactly the order the wrapped iterator yields them, whatever ``size``; the
prefetcher never skips or repeats one. Resuming at step ``s`` is rebuilding the wrapped iterator from ``s``
(``train_iterator(..., start_step=s, ...)``); batches already prefetched beyond the last finished step are simply
dropped with the old iterator, because checkpoints record the number of finished steps, not the reader's
position. ``position`` counts the batches handed out, for callers that want to check that.
"""

import collections
import queue
import threading
from collections.abc import Iterator, Mapping

import jax
import numpy as np
from jax.sharding import Mesh

from skclip_jax import sharding

_END = object()


class DevicePrefetcher:
    """Iterator of global batches on the devices, ``size`` ahead of the consumer (see the module docstring).

    Args:
      local_batches: iterator of ``{name: np.ndarray}``, this process's rows of each global batch.
      mesh: the mesh the batches are split over (``sharding.batch_sharding``).
      size: how many global batches to hold on the devices ahead of the consumer (>= 1).
      start_position: the step of the first batch ``local_batches`` yields (only for ``position``).
      threaded: do the host side in a background thread; False does it in ``__next__`` (same batches).
    """

    def __init__(
        self,
        local_batches: Iterator[Mapping[str, np.ndarray]],
        mesh: Mesh,
        size: int = 2,
        start_position: int = 0,
        threaded: bool = True,
    ):
        if size < 1:
            raise ValueError(f"DevicePrefetcher: size must be >= 1, got {size}")
        self._source = iter(local_batches)
        self._mesh = mesh
        self._size = size
        self.position = start_position
        self._buffer: collections.deque = collections.deque()
        self._queue: queue.Queue | None = None
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = None
        if threaded:
            # The queue holds the batches already on the devices; put() blocks when it is full.
            self._queue = queue.Queue(maxsize=size)
            self._thread = threading.Thread(target=self._fill, daemon=True, name="device_prefetch")
            self._thread.start()

    def _to_device(self, local: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
        return sharding.make_global_batch(self._mesh, local)

    def _fill(self) -> None:
        try:
            for local in self._source:
                batch = self._to_device(local)
                while not self._stop.is_set():
                    try:
                        self._queue.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as e:  # re-raised in the consumer's thread
            self._error = e
        finally:
            while not self._stop.is_set():
                try:
                    self._queue.put(_END, timeout=0.1)
                    break
                except queue.Full:
                    continue

    def __iter__(self) -> "DevicePrefetcher":
        return self

    def __next__(self) -> dict[str, jax.Array]:
        if self._queue is not None:
            item = self._queue.get()
            if item is _END:
                self._queue.put(_END)  # later calls stop too
                if self._error is not None:
                    raise self._error
                raise StopIteration
        else:
            while len(self._buffer) < self._size:
                local = next(self._source, _END)
                if local is _END:
                    break
                self._buffer.append(self._to_device(local))
            if not self._buffer:
                raise StopIteration
            item = self._buffer.popleft()
        self.position += 1
        return item

    def close(self) -> None:
        """Stops the background thread (pending batches are dropped) and closes the wrapped iterator."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            if self._thread.is_alive():
                return  # still inside the source's next(): closing it now would race with that call.
        close = getattr(self._source, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> "DevicePrefetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
