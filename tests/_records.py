"""Records the tests build by hand (importable from any test module: pytest puts tests/ on the path)."""


def interval(est: float, lo: float, hi: float, n: int = 1000) -> dict:
    """A 95% bootstrap interval record as :mod:`diffusion_edu.intervals` writes it."""
    return {
        "estimate": est,
        "low": lo,
        "high": hi,
        "level": 0.95,
        "method": "bootstrap-centred",
        "n_boot": 100,
        "n": n,
    }
