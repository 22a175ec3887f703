"""Training from the Parquet feature store without holding the training set in memory.

:class:`StoredClips` is a set of clips whose log-mels stay in the feature store: their facts
(clip ID, machine ID, label, frame count) in memory, the log-mels read back in blocks (one
Parquet row group, at most ``ROW_GROUP_CLIPS`` clips, at a time). :class:`StreamWindows` turns
it into the context windows :func:`slidead.core.train.fit` trains on:

- each epoch visits the store's row groups in a seeded random order;
- a buffer of at most ``buffer_clips`` clips holds the frames of the clips being trained on;
  when a whole block fits in the free slots it is read in, and its windows join the pool;
- each mini-batch is drawn uniformly, without replacement, from the windows of the buffered
  clips; a clip leaves the buffer when all its windows have been drawn.

Every window of every clip is drawn exactly once per epoch (the same windows as
:class:`~slidead.core.train.FrameWindows`: frame-major, ``frames * n_mels`` wide, every
``stride``-th from frame 0, each with its clip's label when labels are given). Memory is the
buffer (``buffer_clips`` x the longest clip's frames), not the data set.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch

from slidead.core.features import FeatureConfig
from slidead.store.features import ROW_GROUP_CLIPS, FeatureRow, FeatureStore, StoredClip


class StoredClips(Sequence):
    """Clips of one feature-store partition, in clip ID order; items are :class:`StoredClip`
    (``clip_id``, ``machine_id``, ``label``, ``n_frames``; no log-mel)."""

    def __init__(self, fstore: FeatureStore, config: FeatureConfig, clips: Sequence[StoredClip]):
        self.fstore, self.config = fstore, config
        self.clips = sorted(clips, key=lambda c: c.clip_id)

    @classmethod
    def open(
        cls, fstore: FeatureStore, config: FeatureConfig, part: str, machine_type: str, clip_ids: set[str] | None = None
    ) -> "StoredClips":
        return cls(fstore, config, fstore.catalog(config, part, machine_type, clip_ids))

    def __len__(self) -> int:
        return len(self.clips)

    def __iter__(self):
        return iter(self.clips)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return StoredClips(self.fstore, self.config, self.clips[i])
        return self.clips[i]

    def subset(self, mask) -> "StoredClips":
        """The clips where boolean ``mask`` is True."""
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (len(self),):
            raise ValueError(f"mask of {mask.shape} for {len(self)} clips")
        return StoredClips(self.fstore, self.config, [c for c, m in zip(self.clips, mask) if m])

    @property
    def n_frames(self) -> int:
        return sum(c.n_frames for c in self.clips)

    @property
    def nbytes(self) -> int:
        """What the clips' frames take in memory as float32."""
        return self.n_frames * self.config.n_mels * 4

    def units(self) -> list[tuple[str, int, list[int]]]:
        """``(path, row_group, rows)`` for each row group holding some of these clips, ordered by
        their first clip ID (not by file name, which is random: a re-ingest of the same clips
        gives the same order, so the same seeded shuffle)."""
        by_unit: dict[tuple[str, int], list[StoredClip]] = {}
        for c in self.clips:  # clip ID order: each unit's list starts with its smallest ID
            by_unit.setdefault((c.path, c.row_group), []).append(c)
        units = sorted(by_unit.items(), key=lambda kv: kv[1][0].clip_id)
        return [(p, g, sorted(c.row for c in cs)) for (p, g), cs in units]

    def blocks(
        self, rng: np.random.Generator | None = None, block_clips: int = ROW_GROUP_CLIPS
    ) -> Iterator[list[FeatureRow]]:
        """The clips' rows in blocks of at most ``block_clips``: row groups in :meth:`units` order,
        or in a random order drawn from ``rng``. Raises ValueError if a clip is no longer in the store."""
        units = self.units()
        order = range(len(units)) if rng is None else rng.permutation(len(units))
        for u in order:
            path, group, rows = units[u]
            n = 0
            for block in self.fstore.read_unit(self.config, path, group, rows, block_clips):
                n += len(block)
                yield block
            if n != len(rows):
                raise ValueError(
                    f"{path} row group {group}: {n} of {len(rows)} clips read; the feature store changed while training"
                )

    def rows(self) -> list[FeatureRow]:
        """Every clip's row with its log-mel, in clip ID order (the in-memory path)."""
        got = {r.clip_id: r for block in self.blocks() for r in block}
        return [got[c.clip_id] for c in self.clips]


class StreamWindows:
    """Context windows of ``StoredClips`` streamed through a bounded shuffle buffer (see the module
    docstring). ``labels``: optional, clip ID -> class index. ``peak_clips`` counts the most
    clips the buffer has held, ``blocks_read`` the blocks read (both over the object's life)."""

    def __init__(
        self,
        clips: StoredClips,
        frames: int = 5,
        labels: Mapping[str, int] | None = None,
        stride: int = 1,
        buffer_clips: int = 512,
    ):
        if stride < 1:
            raise ValueError(f"stride={stride!r} must be >= 1")
        if buffer_clips < 1:
            raise ValueError(f"buffer_clips={buffer_clips!r} must be >= 1")
        if labels is not None and (missing := [c.clip_id for c in clips if c.clip_id not in labels]):
            raise ValueError(f"no label for {len(missing)} clips (e.g. {missing[0]})")
        self.clips, self.frames, self.stride = clips, frames, stride
        self.labels = None if labels is None else dict(labels)
        self.buffer_clips = buffer_clips
        self.n_mels = clips.config.n_mels
        self.t_max = max((c.n_frames for c in clips), default=0)
        self._n = sum(len(range(0, c.n_frames - frames + 1, stride)) for c in clips if c.n_frames >= frames)
        self.device = torch.device("cpu")
        self.peak_clips = 0
        self.blocks_read = 0

    def __len__(self) -> int:
        return self._n

    def to(self, device) -> "StreamWindows":
        self.device = torch.device(device)
        return self

    def with_labels(self, labels: Mapping[str, int]) -> "StreamWindows":
        """The same windows with one label per clip (clip ID -> class index)."""
        return StreamWindows(self.clips, self.frames, labels, self.stride, self.buffer_clips).to(self.device)

    def _starts(self, n_frames: int) -> np.ndarray:
        return np.arange(0, max(n_frames - self.frames + 1, 0), self.stride)

    def _blocks(self, rng):
        for block in self.clips.blocks(rng, min(ROW_GROUP_CLIPS, self.buffer_clips)):
            self.blocks_read += 1
            yield block

    def _out(self, arena: np.ndarray, take: np.ndarray, slot_label: np.ndarray | None):
        span = np.arange(self.frames)
        x = arena[take[:, None] + span].reshape(len(take), self.frames * self.n_mels)
        y = None if slot_label is None else torch.from_numpy(slot_label[take // self.t_max])
        x = torch.from_numpy(x).to(self.device)
        return x, None if y is None else y.to(self.device)

    def epoch_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[tuple]:
        """One epoch of shuffled mini-batches ``(x, y_or_None)``; the order is drawn from
        ``generator`` (one draw per epoch), so a seeded generator repeats it."""
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        rng = np.random.default_rng(seed)
        cap, t_max = self.buffer_clips, self.t_max
        arena = np.empty((cap * t_max, self.n_mels), dtype=np.float32)  # slot s: rows s*t_max ...
        slot_label = None if self.labels is None else np.zeros(cap, dtype=np.int64)
        left = np.zeros(cap, dtype=np.int64)  # windows not yet drawn, per slot
        free = list(range(cap - 1, -1, -1))
        pool = np.zeros(0, dtype=np.int64)  # arena row of each window's first frame
        blocks = self._blocks(rng)
        pending = next(blocks, None)
        while True:
            added = []
            while pending is not None and len(pending) <= len(free):
                for row in pending:
                    starts = self._starts(row.logmel.shape[1])
                    if not starts.size:
                        continue
                    s = free.pop()
                    arena[s * t_max : s * t_max + row.logmel.shape[1]] = row.logmel.T
                    left[s] = starts.size
                    if slot_label is not None:
                        slot_label[s] = self.labels[row.clip_id]
                    added.append(s * t_max + starts)
                self.peak_clips = max(self.peak_clips, cap - len(free))
                pending = next(blocks, None)
            if added:
                pool = rng.permutation(np.concatenate([pool, *added]))
            if pool.size == 0:
                if pending is not None:  # a block larger than the buffer: cannot happen (blocks <= buffer)
                    raise AssertionError("shuffle buffer too small for a block")
                return
            take, pool = pool[:batch_size], pool[batch_size:]
            yield self._out(arena, take, slot_label)
            slots, counts = np.unique(take // t_max, return_counts=True)
            left[slots] -= counts
            free.extend(int(s) for s in slots[left[slots] == 0])

    def eval_batches(self, batch_size: int) -> Iterator[tuple]:
        """Every window once, in store order (clip by clip), in batches of ``batch_size``."""
        xs, ys, n = [], [], 0
        for block in self._blocks(None):
            for row in block:
                starts = self._starts(row.logmel.shape[1])
                if not starts.size:
                    continue
                frames_t = np.ascontiguousarray(row.logmel.T)
                w = frames_t[starts[:, None] + np.arange(self.frames)].reshape(starts.size, -1)
                xs.append(w)
                if self.labels is not None:
                    ys.append(np.full(starts.size, self.labels[row.clip_id], dtype=np.int64))
                n += starts.size
                while n >= batch_size:
                    yield self._cut(xs, ys, batch_size)
                    n -= batch_size
        if n:
            yield self._cut(xs, ys, n)

    def _cut(self, xs: list, ys: list, k: int):
        """The first ``k`` windows of the queued arrays ``xs`` (and labels ``ys``), removed from them."""
        x, y = np.concatenate(xs), (np.concatenate(ys) if ys else None)
        xs[:] = [x[k:]] if len(x) > k else []
        if ys:
            ys[:] = [y[k:]] if len(y) > k else []
        xt = torch.from_numpy(x[:k]).to(self.device)
        return xt, None if y is None else torch.from_numpy(y[:k]).to(self.device)

    def sequential(self, batch_size: int = 4096) -> "SequentialWindows":
        """A view with ``batch(idx)``/``targets(idx)`` for consecutive index ranges (what
        :func:`slidead.core.score.fit_normal_statistics` asks of its data), read in store order."""
        return SequentialWindows(self, batch_size)


class SequentialWindows:
    """``batch(idx)`` and ``targets(idx)`` over a :class:`StreamWindows`' windows in store order,
    for ``idx`` ranges that follow one another from 0 (each pass may start again at 0)."""

    def __init__(self, windows: StreamWindows, batch_size: int = 4096):
        self.windows, self.batch_size = windows, batch_size
        self._it, self._pos, self._last = None, 0, None
        self._x, self._y = [], []

    def __len__(self) -> int:
        return len(self.windows)

    def to(self, device) -> "SequentialWindows":
        self.windows.to(device)
        return self

    def _fetch(self, idx: torch.Tensor):
        start, stop = int(idx[0]), int(idx[-1]) + 1
        if self._last is not None and self._last[0] == (start, stop):
            return self._last[1]
        if stop - start != idx.numel() or (idx.numel() > 1 and not bool((idx[1:] - idx[:-1] == 1).all())):
            raise ValueError("streamed windows are read in order: idx must be a range of consecutive windows")
        if start == 0:
            self._it, self._pos, self._x, self._y = self.windows.eval_batches(self.batch_size), 0, [], []
        if start != self._pos:
            raise ValueError(f"streamed windows are read in order: asked for {start}, next is {self._pos}")
        have = sum(len(x) for x in self._x)
        while have < stop - start:
            x, y = next(self._it)
            self._x.append(x)
            if y is not None:
                self._y.append(y)
            have += len(x)
        x = torch.cat(self._x)
        y = torch.cat(self._y) if self._y else None
        k = stop - start
        self._x = [x[k:]] if len(x) > k else []
        self._y = [y[k:]] if y is not None and len(y) > k else []
        self._pos = stop
        self._last = ((start, stop), (x[:k], None if y is None else y[:k]))
        return self._last[1]

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        return self._fetch(idx)[0]

    def targets(self, idx: torch.Tensor) -> torch.Tensor | None:
        return self._fetch(idx)[1]


def stored_rows(clips: StoredClips, block_clips: int = 256) -> Iterator[list[FeatureRow]]:
    """The clips' rows with their log-mels, in store order, about ``block_clips`` at a time (for
    scoring a stored set in chunks)."""
    out: list[FeatureRow] = []
    for block in clips.blocks():
        out.extend(block)
        if len(out) >= block_clips:
            yield out
            out = []
    if out:
        yield out
