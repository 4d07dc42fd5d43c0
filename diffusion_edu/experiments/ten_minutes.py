"""Ten minutes of CPU: the rules that turn the recipe study's measurements into a recipe and a verdict.

The measurements are written by two benchmark scripts (``benchmarks/bench_recipe.py``: a one-factor
screen around a base recipe, the per-step cost of each variant and a sampler sweep;
``benchmarks/bench_ten_minutes.py``: a recipe trained for ten wall-clock minutes and measured against
the book's targets). This module holds what the chapter and the scripts both need, so that the chapter
shows the same decision the scripts made:

- :func:`factor_verdicts`: each variant against its parent (the variant it changes one thing of; the
  base for most), on FID and conditional accuracy, from the intervals alone ("better" only when an
  interval separates in the variant's favour and none against it);
- :func:`seed_verdicts`: the same verdict on every training seed that a variant and its parent were both
  trained from, and "better" or "worse" across seeds only when every seed agrees;
- :func:`recipe_sets`: the base plus every variant judged better than a kept parent (on every training
  seed it was trained from), one value per field (where two variants set the same field, the one with the
  lower interval's upper end); :func:`recipe_label`: the screened variant that is that recipe, and
  :func:`sweep_of`: the sampler sweep's entries for one variant's network;
- :func:`recommend_sampler`: among the sampler settings whose ``n`` samples took at most the time
  target (less a margin, :data:`TIME_MARGIN`) and, where asked, whose conditional accuracy meets
  :data:`ACCURACY_TARGET` on its interval's lower end, the one with the lowest FID, and which others its
  interval does not separate from;
- :func:`cpu_tier_settings`: what each chapter's cpu tier trains with, against the recipe (``quick_mnist``);
- :func:`unshipped_sets`: what the screen's recipe sets that the ``quick_mnist`` preset does not (yet) ship.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..intervals import compare, interval_from
from ..results import read_results, results_dir

__all__ = [
    "RECIPE_FILE",
    "TEN_MINUTES_FILE",
    "load_benchmark",
    "parent_of",
    "factor_verdicts",
    "seed_key",
    "seed_verdicts",
    "recipe_sets",
    "recipe_label",
    "sweep_of",
    "chunk_times",
    "TIME_MARGIN",
    "recommend_sampler",
    "screen_rows",
    "RECIPE_FIELDS",
    "cpu_tier_settings",
    "unshipped_sets",
]

RECIPE_FILE = "recipe_cpu"
TEN_MINUTES_FILE = "ten_minutes_cpu"


def load_benchmark(stem: str) -> dict[str, Any] | None:
    """The results file ``results/benchmarks/<stem>.json`` (the book's copy where the chapter runs alone),
    or None when it has not been written yet."""
    path = Path(results_dir()) / "benchmarks" / f"{stem}.json"
    return read_results(path) if path.is_file() else None


def _fid(entry: Mapping[str, Any]):
    iv = interval_from(entry.get("metrics", {}).get("fid_interval"))
    if iv is None:
        raise ValueError(f"entry {entry.get('what', '?')!r} has no fid_interval: measure it with intervals")
    return iv


def parent_of(screen: Mapping[str, Mapping[str, Any]], label: str, base: str = "base") -> str:
    """The variant that ``label`` changes one thing of: the screened variant whose ``--set`` overrides are
    the largest strict subset of ``label``'s (``base`` when none is; e.g. "L2 with Min-SNR" is judged
    against "L2", and "L2" against the base)."""
    mine = set(screen[label].get("sets", []))
    best, size = base, len(set(screen[base].get("sets", [])))
    for other, entry in screen.items():
        theirs = set(entry.get("sets", []))
        if other != label and not other.startswith("_") and theirs < mine and len(theirs) > size:
            best, size = other, len(theirs)
    return best


def factor_verdicts(screen: Mapping[str, Mapping[str, Any]], base: str = "base") -> dict[str, dict[str, Any]]:
    """Each screened variant against its parent (:func:`parent_of`) on the two measures the ten-minute
    targets judge: FID (lower is better) and, where both have one, the conditional accuracy (higher is
    better), from the intervals only. "better": some interval separates in the variant's favour and none
    against it; "worse": the reverse; "mixed": one of each; else "inconclusive".

    Returns {label: {"verdict", "parent", "fid", "parent_fid", "accuracy", "parent_accuracy" (Intervals or
    None), "sets": [...]}} for every label but the base."""
    if base not in screen:
        raise ValueError(f"the screen has no base entry {base!r}; entries: {sorted(screen)}")
    out: dict[str, dict[str, Any]] = {}
    for label, entry in screen.items():
        if label == base or label.startswith("_"):
            continue
        parent = parent_of(screen, label, base)
        out[label] = {**_pair_verdict(entry, screen[parent]), "parent": parent, "sets": list(entry.get("sets", []))}
    return out


def _pair_verdict(entry: Mapping[str, Any], ref_entry: Mapping[str, Any]) -> dict[str, Any]:
    """One entry against another (:func:`factor_verdicts`' rule): its verdict and the four intervals."""
    iv, ref = _fid(entry), _fid(ref_entry)
    acc, acc_ref = _accuracy(entry), _accuracy(ref_entry)
    votes = [{"lower": 1, "higher": -1, "overlap": 0}[compare(iv, ref)]]  # lower FID is better
    if acc is not None and acc_ref is not None:
        votes.append({"higher": 1, "lower": -1, "overlap": 0}[compare(acc, acc_ref)])  # higher accuracy is
    verdict = (
        "mixed"
        if 1 in votes and -1 in votes
        else "better"
        if 1 in votes
        else "worse"
        if -1 in votes
        else "inconclusive"
    )
    return {"verdict": verdict, "fid": iv, "parent_fid": ref, "accuracy": acc, "parent_accuracy": acc_ref}


def seed_key(label: str, seed: int) -> str:
    """The key of ``label`` trained from training seed ``seed`` >= 1 in the results file's ``screen_seeds``
    section (``bench_recipe.py screen LABEL --train-seed SEED``); seed 0 is the ``screen`` entry itself."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 1:
        raise ValueError(f"seed must be an int >= 1 (seed 0 is the screen's own entry), got {seed!r}")
    return f"{label}/seed{seed}"


def seed_verdicts(
    screen: Mapping[str, Mapping[str, Any]],
    screen_seeds: Mapping[str, Mapping[str, Any]],
    base: str = "base",
) -> dict[str, dict[str, Any]]:
    """Each screened variant against its parent on every training seed both were trained from (seed 0: the
    ``screen`` entries; seed s: their :func:`seed_key` entries in ``screen_seeds``), one
    :func:`factor_verdicts` verdict per seed. Across the seeds: "better" or "worse" when every seed gives
    that verdict and there are at least two seeds; "one seed" with one; else "inconclusive": a difference
    that one seed shows and another does not is within the seed-to-seed spread, not a property of the change.

    Returns {label: {"verdict", "parent", "seeds": [...], "per_seed": {seed: verdict}}} for every label but
    the base."""
    one = factor_verdicts(screen, base)
    out: dict[str, dict[str, Any]] = {}
    for label, v in one.items():
        parent = v["parent"]
        per_seed = {0: v["verdict"]}
        for key in screen_seeds:
            name, _, tail = key.rpartition("/seed")
            if name != label or not tail.isdigit():
                continue
            s = int(tail)
            ref = screen_seeds.get(seed_key(parent, s))
            if ref is not None:
                per_seed[s] = _pair_verdict(screen_seeds[key], ref)["verdict"]
        kinds = set(per_seed.values())
        if len(per_seed) < 2:
            verdict = "one seed"
        elif len(kinds) == 1 and kinds <= {"better", "worse"}:
            verdict = kinds.pop()
        else:
            verdict = "inconclusive"
        out[label] = {"verdict": verdict, "parent": parent, "seeds": sorted(per_seed), "per_seed": per_seed}
    return out


def _accuracy(entry: Mapping[str, Any]):
    return interval_from(entry.get("metrics", {}).get("conditional_accuracy_interval"))


def _field(assignment: str) -> str:
    return assignment.partition("=")[0]


def recipe_sets(
    screen: Mapping[str, Mapping[str, Any]],
    base: str = "base",
    screen_seeds: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[str]:
    """The recipe the screen supports: ``base``'s ``--set`` overrides plus the changes of every variant
    judged "better" than its parent, where the parent is itself kept (the base always is). A variant that
    was also trained from further seeds (``screen_seeds``, :func:`seed_verdicts`) is kept only when every
    seed finds it better: one seed's verdict stands only until a second seed is measured. Where two kept
    variants set the same field differently, the one whose FID interval ends lower wins."""
    verdicts = factor_verdicts(screen, base)
    across = seed_verdicts(screen, screen_seeds, base) if screen_seeds else {}

    def better(label: str) -> bool:
        if verdicts[label]["verdict"] != "better":
            return False
        a = across.get(label)
        return a is None or len(a["seeds"]) < 2 or a["verdict"] == "better"

    kept = {base}
    for label in sorted(verdicts, key=lambda k: len(verdicts[k]["sets"])):  # parents before children
        if better(label) and verdicts[label]["parent"] in kept:
            kept.add(label)
    chosen: dict[str, tuple[float, str]] = {}  # field -> (upper end, assignment)
    base_sets = list(screen[base].get("sets", []))
    for label in kept - {base}:
        v = verdicts[label]
        for a in v["sets"]:
            if a in base_sets:
                continue
            f = _field(a)
            if f not in chosen or (chosen[f][1] != a and v["fid"].high < chosen[f][0]):
                chosen[f] = (v["fid"].high, a)
    out = [a for a in base_sets if _field(a) not in chosen]
    return out + [chosen[f][1] for f in sorted(chosen)]


def recipe_label(
    screen: Mapping[str, Mapping[str, Any]],
    base: str = "base",
    screen_seeds: Mapping[str, Mapping[str, Any]] | None = None,
) -> str | None:
    """The screened variant that is the recipe itself (its ``--set`` overrides are exactly
    :func:`recipe_sets`'), whose sampler sweep the chapter shows; None when no screened variant is."""
    want = set(recipe_sets(screen, base, screen_seeds))
    hits = [k for k, e in screen.items() if not k.startswith("_") and set(e.get("sets", [])) == want]
    return hits[0] if hits else None


def sweep_of(samplers: Mapping[str, Mapping[str, Any]], label: str) -> dict[str, Any]:
    """The entries of a sampler sweep (``bench_recipe.py samplers --label LABEL``: keys
    ``LABEL/method/wW/stepsS``) that were measured on ``label``'s network."""
    return {k: v for k, v in samplers.items() if k.split("/", 1)[0] == label}


def chunk_times(entry: Mapping[str, Any]) -> dict[float, dict[int, float]]:
    """The median seconds of one ``bench_recipe.py chunks`` entry (keys ``wW/chunkS`` under ``times``) as
    {guidance weight: {images per chunk: seconds}}, chunk sizes in increasing order."""
    out: dict[float, dict[int, float]] = {}
    for key, v in entry["times"].items():
        w, _, size = key.partition("/chunk")
        out.setdefault(float(w.removeprefix("w")), {})[int(size)] = v["seconds_median"]
    return {w: dict(sorted(sizes.items())) for w, sizes in out.items()}


#: the share of the time target that a recommended sampler may not use: one draw's time on the shared 2-core
#: machine moves by several percent between runs, so a setting that just meets the target in the sweep can
#: miss it in the ten-minute run that measures the preset
TIME_MARGIN = 0.1
#: the ten-minute recipe's accuracy target (issue 16): the share of samples a classifier reads as the class
#: asked for, judged on the lower end of its 95% interval; a recommended sampler must meet it
ACCURACY_TARGET = 0.98


def recommend_sampler(
    samplers: Mapping[str, Mapping[str, Any]],
    max_seconds: float,
    margin: float = 0.0,
    min_accuracy: float | None = None,
) -> dict[str, Any]:
    """The sampler setting to recommend: lowest FID among those whose samples took at most
    ``(1 - margin) * max_seconds`` (the book uses :data:`TIME_MARGIN`) and, with ``min_accuracy``, whose
    conditional accuracy interval starts at or above it (the book uses :data:`ACCURACY_TARGET`).

    ``samplers``: {label: {method, steps, w, sample_seconds, metrics}} (``bench_recipe.py samplers``).
    Returns {"label", "settings": {method, steps, w}, "fid": Interval, "within_time": [...],
    "not_separated": [labels within time whose FID interval overlaps the choice's], "max_seconds": the
    limit applied}; a ValueError when no setting meets it."""
    if not 0.0 <= margin < 1.0:
        raise ValueError(f"margin must be in [0, 1), got {margin!r}")
    if min_accuracy is not None and not 0.0 <= min_accuracy <= 1.0:
        raise ValueError(f"min_accuracy must be a share in [0, 1], got {min_accuracy!r}")
    limit = (1.0 - margin) * max_seconds
    within = {k: v for k, v in samplers.items() if v["sample_seconds"] <= limit}
    if not within:
        fastest = min(samplers.values(), key=lambda v: v["sample_seconds"]) if samplers else None
        raise ValueError(
            f"no sampler setting drew its samples within {limit:g} s"
            + (f" (fastest: {fastest['sample_seconds']:.1f} s)" if fastest else "")
        )
    if min_accuracy is not None:
        timely = within
        within = {k: v for k, v in timely.items() if (a := _accuracy(v)) is not None and a.low >= min_accuracy}
        if not within:
            raise ValueError(
                f"no sampler setting within {limit:g} s reached a conditional accuracy of {100 * min_accuracy:g}% on "
                f"its interval's lower end ({len(timely)} within time)"
            )
    best = min(within, key=lambda k: _fid(within[k]).estimate)
    fid = _fid(within[best])
    tied = [k for k in within if k != best and _fid(within[k]).overlaps(fid)]
    e = within[best]
    return {
        "label": best,
        "settings": {"method": e["method"], "steps": e["steps"], "w": e["w"]},
        "fid": fid,
        "within_time": sorted(within),
        "not_separated": sorted(tied),
        "max_seconds": limit,
        "min_accuracy": min_accuracy,
    }


def screen_rows(screen: Mapping[str, Mapping[str, Any]], base: str = "base") -> list[dict[str, Any]]:
    """One row per screened variant, base first: label, what it changes, steps, FID and accuracy intervals,
    precision, recall and the verdict against the base."""
    verdicts = factor_verdicts(screen, base)
    rows = []
    for label in [base, *sorted(k for k in screen if k != base and not k.startswith("_"))]:
        e, m = screen[label], screen[label]["metrics"]
        rows.append(
            {
                "label": label,
                "what": e.get("what", ""),
                "steps": e.get("steps"),
                "fid": _fid(e),
                "accuracy": interval_from(m.get("conditional_accuracy_interval")),
                "precision": m.get("precision"),
                "recall": m.get("recall"),
                "verdict": "base" if label == base else verdicts[label]["verdict"],
            }
        )
    return rows


#: the training settings of the recipe that the chapters' cpu tiers are compared on (:func:`cpu_tier_settings`)
RECIPE_FIELDS = ("lr", "warmup_steps", "lr_schedule", "ema_decay", "loss", "loss_weighting")


def cpu_tier_settings() -> list[dict[str, Any]]:
    """The training settings (:data:`RECIPE_FIELDS`) of every chapter's cpu-tier runs, one row per chapter
    and distinct setting, next to the recipe's (the ``quick_mnist`` preset, first row).

    Returns [{"chapter", "runs": [names], "settings": {field: value}, "differs": [fields that differ from
    the recipe's]}]; the chapters are those that train at the cpu tier (reports A, D and E, and own data)."""
    from ..presets import training_preset
    from . import own_data, report_a, report_d, report_e

    def pick(cfg) -> dict[str, Any]:
        return {f: getattr(cfg, f) for f in RECIPE_FIELDS}

    recipe = pick(training_preset("quick_mnist"))
    rows: list[dict[str, Any]] = [{"chapter": "recipe", "runs": ["quick_mnist"], "settings": recipe, "differs": []}]
    runs = {
        mod.CHAPTER: {run: pick(mod.config(run, "cpu")) for run in mod.runs_at("cpu")}
        for mod in (report_a, report_d, report_e)
    }
    runs[own_data.CHAPTER] = {own_data.RUN: pick(own_data.config("cpu"))}
    for chapter, by_run in runs.items():
        groups: dict[tuple, list[str]] = {}
        for run, settings in by_run.items():
            groups.setdefault(tuple(settings.items()), []).append(run)
        for key, names in groups.items():
            settings = dict(key)
            rows.append(
                {
                    "chapter": chapter,
                    "runs": names,
                    "settings": settings,
                    "differs": [f for f in RECIPE_FIELDS if settings[f] != recipe[f]],
                }
            )
    return rows


def unshipped_sets(
    screen: Mapping[str, Mapping[str, Any]],
    base: str = "base",
    screen_seeds: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[str]:
    """The ``--set`` assignments of :func:`recipe_sets` that the ``quick_mnist`` preset as it stands does not
    hold (a variant the screen has kept since the preset last changed): empty when the preset is the recipe."""
    from ..presets import apply_sets, training_preset

    preset = training_preset("quick_mnist").to_dict()
    return [a for a in recipe_sets(screen, base, screen_seeds) if apply_sets(preset, [a]) != preset]
