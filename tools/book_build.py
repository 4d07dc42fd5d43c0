"""Sphinx extension run by every build of the book (``_config.yml``: ``sphinx.local_extensions``).

Before Sphinx reads any page it
1. makes sure the offline JavaScript is in ``book/_offline`` (``tools/offline_assets.py``: ``npm ci``
   and a copy, only when missing or older than ``package-lock.json``), and
2. writes the reproduction ledger, generated from the results files by :mod:`diffusion_edu.ledger`,
   to ``_build/generated/ledger.md``, which ``book/reports.md`` includes.
"""

from __future__ import annotations

from pathlib import Path

import offline_assets  # tools/ is on sys.path: _config.yml lists it with this extension
from sphinx.application import Sphinx
from sphinx.util import logging

LEDGER = Path("_build") / "generated" / "ledger.md"

logger = logging.getLogger(__name__)


def _prepare(app: Sphinx) -> None:
    root = Path(app.srcdir)
    offline_assets.ensure_assets(root)
    from diffusion_edu.ledger import write_ledger

    if write_ledger(root / LEDGER, results=root / "results"):
        logger.info(f"[book_build] wrote {LEDGER}")


def setup(app: Sphinx) -> dict:
    app.connect("builder-inited", _prepare)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
