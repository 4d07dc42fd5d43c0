"""The torchvision import fix (pytorch/vision#9085) and the package's import-time behaviour."""

import subprocess
import sys

import diffusion_edu
from diffusion_edu import _compat


def _fresh(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_fresh_interpreter_can_import_torchvision_and_torchmetrics_after_the_package():
    r = _fresh(
        "import diffusion_edu, torchvision, torchmetrics\n"
        "from torchvision.utils import make_grid\n"
        "import torch\n"
        "print(make_grid(torch.zeros(4, 1, 28, 28), nrow=2).shape)\n"
    )
    assert r.returncode == 0, r.stderr
    assert "torch.Size([3, 62, 62])" in r.stdout


def test_the_fix_is_needed_exactly_when_it_was_applied():
    """Where the fix defined the schemas, a plain `import torchvision` (without the package) fails with
    the upstream error; where the extension loads, it imports. Either way the fix reported what it did."""
    assert _compat.TORCHVISION_FIX in ("schemas-defined", "extension-loaded", "already-imported", "not-installed")
    if _compat.TORCHVISION_FIX == "schemas-defined":
        r = _fresh("import torchvision")
        assert r.returncode != 0 and "torchvision::nms does not exist" in r.stderr


def test_fix_is_a_noop_when_the_extension_loads(monkeypatch):
    """Simulate a working C extension (CUDA build, Colab): no schema is defined."""
    monkeypatch.delitem(sys.modules, "torchvision", raising=False)
    monkeypatch.setattr(_compat, "_TORCHVISION_SCHEMA_LIB", None)
    monkeypatch.setattr(_compat, "_op_exists", lambda name: True)
    assert _compat.fix_torchvision_import() == "extension-loaded"
    assert _compat._TORCHVISION_SCHEMA_LIB is None


def test_import_has_no_side_effects_on_global_rng():
    """Importing the package must not seed or consume torch's global RNG."""
    r = _fresh(
        "import torch\n"
        "torch.manual_seed(123); a = torch.rand(3)\n"
        "torch.manual_seed(123); import diffusion_edu; b = torch.rand(3)\n"
        "print(bool(torch.equal(a, b)))\n"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "True"


def test_public_api_names_resolve():
    for name in diffusion_edu.__all__:
        assert hasattr(diffusion_edu, name), name
