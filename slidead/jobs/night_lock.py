"""One scoring run per night and family at a time, across processes and hosts.

:func:`night_lock` holds a lease in the object store (``locks/score/<night>/<family>.json``)
that separate processes and hosts see; a second run waits up to ``wait_s`` and then stops with
:class:`~slidead.errors.NightBusyError` naming the holder. A crashed holder's lease is free once
its process is gone (same host) or its heartbeat is older than ``LOCK_TTL_S``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from slidead.errors import NightBusyError
from slidead.layout import check_night
from slidead.store.objects import Lease, LeaseBusy, hold
from slidead.store.services import Services

LOCK_TTL_S = 120.0


def lock_key(night: str, family: str) -> str:
    return f"locks/score/{check_night(night)}/{family}.json"


@contextlib.contextmanager
def night_lock(
    svc: Services, night: str, family: str, run_id: str, wait_s: float = 0.0, ttl_s: float = LOCK_TTL_S
) -> Iterator[Lease]:
    """Hold the night's lease for ``run_id`` (nested holds by the same run share it)."""
    try:
        with hold(svc.store, lock_key(night, family), run_id, ttl_s=ttl_s, wait_s=wait_s) as lease:
            yield lease
    except LeaseBusy as e:
        h = e.holder
        beat = h.get("heartbeat")
        age = f", last heartbeat {time.time() - float(beat):.0f} s ago" if beat else ""
        raise NightBusyError(
            f"night {night} ({family}) is being scored by run {h.get('run_id', '?')} on host {h.get('host', '?')} "
            f"(pid {h.get('pid', '?')}) since {h.get('started_at', '?')}{age}; waited {wait_s:.0f} s. "
            f"This run wrote nothing: re-run when that one has finished. A crashed run's lock is freed "
            f"when its process is gone, or {h.get('ttl_s', ttl_s):.0f} s after its last heartbeat."
        ) from None
