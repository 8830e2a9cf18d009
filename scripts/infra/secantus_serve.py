"""Starts SecantusDB (``python -m secantus``, same arguments) with its TTL sweep every
``KILN_MONGO_TTL_SWEEP_SECONDS`` (default 3600) instead of every 60 s.

Why: SecantusDB expires documents by reading every document of a collection with a TTL index
(Kiln's event store) under the lock every command takes. Every 60 s, as mongod does, that
stalled all commands for ~2 s per 100 000 stored events, once a minute, and a benchmark's p99
went from ~0.5 s to 2 s as the store grew. Kiln's retention is days, so expiry up to an hour late
changes nothing. The pinned release reads ``[storage] ttl_sweep_seconds`` from its config file
but does not pass it on to the server, hence this launcher. A real mongod (docker-compose)
expires through the index and needs none of this.
"""

import inspect
import os
import sys

from secantus.cli import main
from secantus.server import SecantusDBServer


def sweep_every(seconds: float) -> None:
    init = SecantusDBServer.__init__
    if "ttl_sweep_seconds" not in inspect.signature(init).parameters:
        print("secantus_serve: this SecantusDB has no ttl_sweep_seconds; default sweep kept", file=sys.stderr)
        return

    def patched(self, *args, **kwargs):
        kwargs.setdefault("ttl_sweep_seconds", seconds)
        init(self, *args, **kwargs)

    SecantusDBServer.__init__ = patched


if __name__ == "__main__":
    sweep_every(float(os.environ.get("KILN_MONGO_TTL_SWEEP_SECONDS", "3600")))
    raise SystemExit(main())
