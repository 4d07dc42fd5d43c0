"""Dependency fixes applied once, when ``diffusion_edu`` is imported.

torchvision 0.28.0 is the only torchvision built for torch 2.13.0, and its wheel is a CUDA build.
On a CPU-only torch its C extension (``torchvision/_C.so``) fails to load *silently*; then
``torchvision/_meta_registrations.py`` calls ``torch.library.register_fake("torchvision::nms")``
for an operator that was never defined, and ``import torchvision`` (and so ``import torchmetrics``)
dies with ``RuntimeError: operator torchvision::nms does not exist``.
Upstream: https://github.com/pytorch/vision/issues/9085

The fix mirrors what torchvision itself does at import: try to load ``_C``. If that works (CUDA
builds, Colab, any matching install) the real operators exist and nothing else happens. If it fails,
define only the two operator *schemas* that the meta registrations need (``nms`` and ``qnms``) so that
the import succeeds. Those operators then have no kernels: calling ``torchvision.ops.nms`` raises,
which a diffusion book never does. Everything the book uses (datasets, transforms, ``make_grid``)
works.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import torch

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
# Keep the Library object alive for the life of the process: dropping it removes the definitions.
_TORCHVISION_SCHEMA_LIB: torch.library.Library | None = None


def _op_exists(name: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
        return True
    except RuntimeError:
        return False


def _find_torchvision_extension() -> str | None:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        for fname in sorted(os.listdir(folder)):
            if fname.startswith("_C") and fname.endswith((".so", ".pyd", ".dylib")):
                return os.path.join(folder, fname)
    return None


def fix_torchvision_import() -> str:
    """Make ``import torchvision`` work on a CPU-only torch whose torchvision is a CUDA build.

    Returns what was done, for tests and diagnostics: ``"already-imported"``,
    ``"not-installed"``, ``"extension-loaded"`` (no-op: the real C extension works) or
    ``"schemas-defined"`` (the fallback described in the module docstring).
    """
    global _TORCHVISION_SCHEMA_LIB
    if "torchvision" in sys.modules:
        return "already-imported"
    if importlib.util.find_spec("torchvision") is None:
        return "not-installed"
    if _op_exists("nms"):
        return "extension-loaded" if _TORCHVISION_SCHEMA_LIB is None else "schemas-defined"
    path = _find_torchvision_extension()
    if path is not None:
        try:
            torch.ops.load_library(path)
        except (ImportError, OSError):
            pass
        if _op_exists("nms"):
            return "extension-loaded"
    lib = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        if not _op_exists(schema.split("(")[0]):
            lib.define(schema)
    _TORCHVISION_SCHEMA_LIB = lib
    return "schemas-defined"


TORCHVISION_FIX = fix_torchvision_import()
