"""The ten-minute recipe's decision rules (diffusion_edu.experiments.ten_minutes) on known cases."""

import pytest
from _records import interval as _iv

from diffusion_edu.experiments import ten_minutes as tm
from diffusion_edu.experiments.ten_minutes import (
    factor_verdicts,
    parent_of,
    recipe_sets,
    recommend_sampler,
    screen_rows,
)

BASE = ["warmup_steps=200", "lr_schedule=cosine"]


def _entry(sets, fid, lo, hi, **extra):
    return {"sets": sets, "what": "", "steps": 100, "metrics": {"fid": fid, "fid_interval": _iv(fid, lo, hi)}, **extra}


SCREEN = {
    "base": _entry(BASE, 30, 27, 33),
    "l2": _entry([*BASE, "loss=l2"], 20, 18, 22),  # separated below: better
    "lr_2e-3": _entry([*BASE, "lr=0.002"], 25, 23, 27.5),  # touches base's interval: inconclusive
    "lr_5e-4": _entry([*BASE, "lr=0.0005"], 40, 36, 44),  # separated above: worse
    "ema_0.999": _entry([*BASE, "ema_decay=0.999"], 24, 22, 26),  # better
    "ema_0.98": _entry([*BASE, "ema_decay=0.98"], 22, 20, 24.5),  # better, same field, lower upper end
}


def test_verdicts_come_from_the_intervals_only():
    v = factor_verdicts(SCREEN)
    assert {k: x["verdict"] for k, x in v.items()} == {
        "l2": "better",
        "lr_2e-3": "inconclusive",
        "lr_5e-4": "worse",
        "ema_0.999": "better",
        "ema_0.98": "better",
    }


def test_recipe_keeps_the_better_variants_one_per_field():
    sets = recipe_sets(SCREEN)
    assert sets[:2] == BASE and "loss=l2" in sets and "ema_decay=0.98" in sets
    assert "ema_decay=0.999" not in sets and not any(s.startswith("lr=") for s in sets)


def test_a_chained_variant_is_judged_against_its_parent():
    """l2 + Min-SNR changes one thing of l2: it is kept only if better than l2, and only if l2 is kept."""
    screen = dict(SCREEN)
    screen["l2_min_snr"] = _entry([*BASE, "loss=l2", "loss_weighting=min_snr"], 19, 17, 21)  # overlaps l2
    assert parent_of(screen, "l2_min_snr") == "l2" and parent_of(screen, "l2") == "base"
    v = factor_verdicts(screen)["l2_min_snr"]
    assert v["parent"] == "l2" and v["verdict"] == "inconclusive"  # better than base, not than l2
    assert "loss_weighting=min_snr" not in recipe_sets(screen)
    screen["l2_min_snr"] = _entry([*BASE, "loss=l2", "loss_weighting=min_snr"], 12, 10, 14)  # below l2
    assert "loss_weighting=min_snr" in recipe_sets(screen) and "loss=l2" in recipe_sets(screen)
    screen["l2"] = _entry([*BASE, "loss=l2"], 30, 27, 33)  # the parent no longer kept: neither is
    assert not any(s.startswith("loss") for s in recipe_sets(screen))


def _with_acc(entry, est, lo, hi):
    e = {**entry, "metrics": {**entry["metrics"], "conditional_accuracy_interval": _iv(est, lo, hi)}}
    return e


def test_accuracy_separating_in_favour_makes_a_variant_better_and_against_makes_it_mixed():
    screen = {"base": _with_acc(SCREEN["base"], 0.80, 0.78, 0.82)}
    screen["a"] = _with_acc(_entry([*BASE, "loss=l2"], 29, 26, 32), 0.90, 0.88, 0.92)  # FID overlaps, acc up
    screen["b"] = _with_acc(_entry([*BASE, "lr=0.002"], 20, 18, 22), 0.70, 0.68, 0.72)  # FID better, acc worse
    screen["c"] = _with_acc(_entry([*BASE, "ema_decay=0.9"], 31, 28, 34), 0.79, 0.77, 0.81)  # both overlap
    v = {k: x["verdict"] for k, x in factor_verdicts(screen).items()}
    assert v == {"a": "better", "b": "mixed", "c": "inconclusive"}
    assert recipe_sets(screen) == [*BASE, "loss=l2"]


def test_recipe_of_an_all_inconclusive_screen_is_the_base():
    screen = {"base": SCREEN["base"], "lr_2e-3": SCREEN["lr_2e-3"]}
    assert recipe_sets(screen) == BASE


def test_a_screen_without_base_or_intervals_is_refused():
    with pytest.raises(ValueError, match="no base entry"):
        factor_verdicts({"l2": SCREEN["l2"]})
    with pytest.raises(ValueError, match="no fid_interval"):
        factor_verdicts({"base": SCREEN["base"], "x": {"sets": [], "metrics": {"fid": 3.0}}})


def _s(method, steps, w, seconds, fid, lo, hi):
    return {
        "method": method,
        "steps": steps,
        "w": w,
        "sample_seconds": seconds,
        "metrics": {"fid": fid, "fid_interval": _iv(fid, lo, hi)},
    }


def test_sampler_choice_is_the_lowest_fid_within_the_time_target():
    sweep = {
        "a": _s("ddpm", 20, 0.0, 19.0, 10, 9, 11),  # best FID but too slow
        "b": _s("dpm_solver_2m", 10, 0.0, 9.0, 14, 12, 16),
        "c": _s("ddim", 10, 0.0, 9.5, 15, 13.5, 17),  # overlaps b
        "d": _s("ddpm", 5, 0.0, 4.0, 30, 27, 33),
    }
    r = recommend_sampler(sweep, max_seconds=10.0)
    assert r["label"] == "b" and r["settings"] == {"method": "dpm_solver_2m", "steps": 10, "w": 0.0}
    assert r["not_separated"] == ["c"] and r["within_time"] == ["b", "c", "d"]
    with pytest.raises(ValueError, match="within 1 s .*fastest: 4.0 s"):
        recommend_sampler(sweep, max_seconds=1.0)
    sweep["b"] = _s("dpm_solver_2m", 10, 0.0, 9.5, 14, 12, 16)  # within 10 s, not within 10 s less a tenth
    assert recommend_sampler(sweep, max_seconds=10.0)["label"] == "b"
    r = recommend_sampler(sweep, max_seconds=10.0, margin=0.1)
    assert r["label"] == "d" and r["max_seconds"] == pytest.approx(9.0)
    with pytest.raises(ValueError, match="margin"):
        recommend_sampler(sweep, max_seconds=10.0, margin=1.0)


def test_chunk_times_reads_a_chunks_entry_by_weight_and_size():
    entry = {
        "times": {
            "w1/chunk500": {"seconds_median": 9.9},
            "w0/chunk100": {"seconds_median": 2.5},
            "w1/chunk100": {"seconds_median": 4.9},
            "w0.5/chunk25": {"seconds_median": 3.0},
        }
    }
    got = tm.chunk_times(entry)
    assert got == {1.0: {100: 4.9, 500: 9.9}, 0.0: {100: 2.5}, 0.5: {25: 3.0}}
    assert list(got[1.0]) == [100, 500]


def test_sampler_choice_meets_the_accuracy_target_on_its_interval():
    """With min_accuracy, a setting with a lower FID whose accuracy interval starts below the target is
    passed over; a setting without an accuracy interval cannot show that it meets it."""

    def acc(entry, est, lo, hi):
        entry["metrics"]["conditional_accuracy_interval"] = _iv(est, lo, hi)
        return entry

    sweep = {
        "weak_guidance": acc(_s("dpm_solver_2m", 7, 0.5, 8.0, 6.0, 5.0, 7.5), 0.980, 0.971, 0.988),
        "guided": acc(_s("dpm_solver_2m", 7, 1.0, 8.0, 7.0, 6.0, 8.5), 0.995, 0.990, 0.999),
        "unscored": _s("ddpm", 10, 0.0, 5.0, 5.0, 4.0, 6.0),
    }
    assert recommend_sampler(sweep, 10.0)["label"] == "unscored"
    r = recommend_sampler(sweep, 10.0, min_accuracy=tm.ACCURACY_TARGET)
    assert r["label"] == "guided" and r["min_accuracy"] == 0.98 and r["not_separated"] == []
    with pytest.raises(ValueError, match="no sampler setting within 10 s reached a conditional accuracy of 99.5%"):
        recommend_sampler(sweep, 10.0, min_accuracy=0.995)
    with pytest.raises(ValueError, match="min_accuracy must be a share"):
        recommend_sampler(sweep, 10.0, min_accuracy=98)


def test_the_preset_ships_the_sampler_the_committed_sweep_recommends():
    """quick_mnist's sample_defaults are the recommendation for the recipe's network in the committed
    results (the sweep of the screened variant that is the recipe), with the book's time margin and
    accuracy target."""
    from diffusion_edu.presets import training_preset

    rec = tm.load_benchmark(tm.RECIPE_FILE)
    assert rec is not None, "results/benchmarks/recipe_cpu.json is part of the book"
    screen, seeds = rec["data"]["screen"], rec["data"].get("screen_seeds", {})
    label = tm.recipe_label(screen, screen_seeds=seeds)
    assert label is not None and not tm.unshipped_sets(screen, screen_seeds=seeds)
    choice = recommend_sampler(
        tm.sweep_of(rec["data"]["samplers"], label), 10.0, margin=tm.TIME_MARGIN, min_accuracy=tm.ACCURACY_TARGET
    )
    shipped = training_preset("quick_mnist").sample_defaults
    assert {k: shipped.get(k) for k in ("method", "steps", "w")} == choice["settings"]


def test_screen_rows_put_the_base_first_with_verdicts():
    rows = screen_rows(SCREEN)
    assert rows[0]["label"] == "base" and rows[0]["verdict"] == "base"
    assert {r["label"]: r["verdict"] for r in rows}["lr_5e-4"] == "worse"


def test_recipe_benchmark_screens_a_variant_into_its_results_file(tmp_path, monkeypatch):
    """benchmarks/bench_recipe.py at toy size: a screened variant lands in the file with its interval,
    starts from quick_mnist as it shipped whatever the preset is now, and an unknown variant is refused."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_recipe.py"
    spec = importlib.util.spec_from_file_location("bench_recipe", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "recipe.json"
    common = ["--out", str(out), "--runs", str(tmp_path / "runs"), "--threads", "1"]
    assert bench.main([*common, "screen", "l2", "--steps", "3", "--n", "20"]) == 0
    entry = json.loads(out.read_text())["data"]["screen"]["l2"]
    assert entry["steps"] == 3 and "fid_interval" in entry["metrics"]
    cfg = entry["config"]
    assert (cfg["loss"], cfg["lr_schedule"], cfg["warmup_steps"], cfg["ema_decay"]) == ("l2", "cosine", 200, 0.995)
    with pytest.raises(ValueError, match="unknown variant 'l3'"):
        bench.main([*common, "screen", "l3"])
    with pytest.raises(ValueError, match="run the 'speed' stage first"):
        bench.main([*common, "screen", "ch_24"])
    # a width change of the recipe is priced by the base's probe of the same width: its steps scale by that ratio
    with pytest.raises(ValueError, match="'ch_12'"):
        bench.main([*common, "screen", "recipe_v_ch_12"])
    bench.merge(out, "speed", "ch_12", {"steps_ratio": 2.0}, {}, 0.0, "cpu")
    assert bench.main([*common, "screen", "recipe_v_ch_12", "--steps", "2", "--n", "20"]) == 0
    entry = json.loads(out.read_text())["data"]["screen"]["recipe_v_ch_12"]
    assert entry["steps"] == 4 and entry["steps_ratio"] == 2.0
    assert (entry["config"]["parameterization"], entry["config"]["model_kwargs"]["ch"]) == ("v", 12)
    # a speed probe of one variant keeps its base measurement in its own entry, not as the file's base
    bench.merge(out, "speed", "base", {"img_per_s_median": 1.0, "steps_ratio": 1.0}, {}, 0.0, "cpu")
    assert bench.main([*common, "speed", "time_dim_16", "--rounds", "1", "--probe-steps", "6"]) == 0
    speed = json.loads(out.read_text())["data"]["speed"]
    assert speed["base"] == {"img_per_s_median": 1.0, "steps_ratio": 1.0} and "_probe" not in speed
    probe = speed["time_dim_16"]
    assert probe["steps_ratio"] == pytest.approx(probe["img_per_s_median"] / probe["base_img_per_s_median"])
    assert probe["probe"]["rounds"] == 1


def test_seed_verdicts_keep_a_difference_only_where_every_training_seed_shows_it():
    from diffusion_edu.experiments.ten_minutes import seed_key, seed_verdicts

    seeds = {
        seed_key("base", 1): _entry(BASE, 31, 28, 34),
        seed_key("l2", 1): _entry([*BASE, "loss=l2"], 21, 19, 23),  # better again: kept across seeds
        seed_key("base", 2): _entry(BASE, 29, 26, 32),
        seed_key("l2", 2): _entry([*BASE, "loss=l2"], 19, 17, 21),
        seed_key("lr_5e-4", 1): _entry([*BASE, "lr=0.0005"], 30, 27, 33),  # worse on seed 0 only
        seed_key("ema_0.999", 2): _entry([*BASE, "ema_decay=0.999"], 23, 21, 25),  # seed 2 of the parent exists
        seed_key("ema_0.98", 3): _entry([*BASE, "ema_decay=0.98"], 20, 18, 22),  # no seed 3 of the base: unused
    }
    v = seed_verdicts(SCREEN, seeds)
    assert v["l2"]["verdict"] == "better" and v["l2"]["seeds"] == [0, 1, 2]
    assert v["lr_5e-4"]["verdict"] == "inconclusive" and v["lr_5e-4"]["per_seed"] == {0: "worse", 1: "inconclusive"}
    assert v["ema_0.999"]["verdict"] == "better" and v["ema_0.999"]["seeds"] == [0, 2]
    assert v["ema_0.98"]["verdict"] == "one seed" and v["ema_0.98"]["seeds"] == [0]
    assert v["lr_2e-3"]["verdict"] == "one seed"
    with pytest.raises(ValueError, match="seed 0 is the screen's own entry"):
        seed_key("l2", 0)


def test_the_chapters_cpu_tiers_train_with_the_recipes_schedule_except_the_cold_restorers():
    """Chapter 5b's table of the cpu tiers' settings: the recipe first, the own-data page trains the recipe
    itself, every report chapter's Gaussian runs use its warm-up and cosine decay, and only Report D's
    cold-diffusion restorers keep the report's constant rate."""
    from diffusion_edu.experiments import report_d
    from diffusion_edu.presets import training_preset

    rows = tm.cpu_tier_settings()
    recipe = training_preset("quick_mnist")
    assert rows[0]["chapter"] == "recipe" and rows[0]["settings"] == {f: getattr(recipe, f) for f in tm.RECIPE_FIELDS}
    assert [r["differs"] for r in rows if r["chapter"] == "own_data"] == [[]]
    for r in rows[1:]:
        if {"warmup_steps", "lr_schedule"} & set(r["differs"]):
            assert r["chapter"] == "report_d" and set(r["runs"]) == set(report_d.COLD_RUNS), r
    named = [run for r in rows if r["chapter"] == "report_d" for run in r["runs"]]
    assert sorted(named) == sorted(report_d.runs_at("cpu"))  # every run in exactly one row


def test_unshipped_sets_names_what_the_screen_keeps_beyond_the_preset():
    """The preset ships v-prediction with L2 and Min-SNR on the base: a screen that keeps exactly that leaves
    nothing unshipped; one that also keeps a child of it (a higher learning rate) names that change, and
    only while no second seed contradicts it."""
    kept = [*BASE, "loss=l2", "loss_weighting=min_snr"]
    screen = {
        "base": _entry(BASE, 60.0, 55.0, 65.0),
        "l2": _entry([*BASE, "loss=l2"], 20.0, 18.0, 24.0),
        "l2_min_snr": _entry(kept, 15.0, 13.5, 17.9),
        "recipe_v": _entry([*kept, "parameterization=v"], 11.0, 9.0, 13.2),
    }
    assert tm.unshipped_sets(screen) == []
    screen["recipe_v_lr"] = _entry([*kept, "parameterization=v", "lr=0.002"], 7.0, 6.0, 8.5)
    assert tm.unshipped_sets(screen) == ["lr=0.002"]
    seeds = {
        "recipe_v/seed1": _entry([*kept, "parameterization=v"], 10.0, 8.0, 12.0),
        "recipe_v_lr/seed1": _entry([*kept, "parameterization=v", "lr=0.002"], 10.5, 8.5, 12.5),  # not separated
    }
    assert tm.unshipped_sets(screen, screen_seeds=seeds) == []
    screen["recipe_v_lr"] = _entry([*kept, "parameterization=v", "lr=0.002"], 12.0, 10.0, 14.0)  # overlaps: not kept
    assert tm.unshipped_sets(screen) == []


def test_a_second_seed_that_disagrees_drops_a_change_from_the_recipe():
    """recipe_sets keeps a one-seed "better"; once the variant and its parent are trained from a second seed,
    the change stays only if that seed also finds it better."""
    screen = {"base": _entry(BASE, 30, 27, 33), "l2": _entry([*BASE, "loss=l2"], 20, 18, 22)}
    assert recipe_sets(screen) == [*BASE, "loss=l2"]
    agree = {"base/seed1": _entry(BASE, 31, 28, 34), "l2/seed1": _entry([*BASE, "loss=l2"], 21, 19, 23)}
    assert recipe_sets(screen, screen_seeds=agree) == [*BASE, "loss=l2"]
    disagree = {"base/seed1": _entry(BASE, 31, 28, 34), "l2/seed1": _entry([*BASE, "loss=l2"], 29, 26, 32)}
    assert recipe_sets(screen, screen_seeds=disagree) == BASE
    assert recipe_sets(screen, screen_seeds={"l2/seed1": disagree["l2/seed1"]}) == [*BASE, "loss=l2"]  # no parent seed


def test_recipe_label_and_its_sampler_sweep():
    screen = {
        "base": _entry(BASE, 30, 27, 33),
        "l2": _entry([*BASE, "loss=l2"], 20, 18, 22),
        "lr_5e-4": _entry([*BASE, "lr=0.0005"], 40, 36, 44),
    }
    assert tm.recipe_label(screen) == "l2"
    screen["l2"] = _entry([*BASE, "loss=l2"], 29, 26, 32)  # no longer better: the base is the recipe
    assert tm.recipe_label(screen) == "base"
    screen["l2"] = _entry([*BASE, "loss=l2"], 20, 18, 22)
    screen["ema"] = _entry([*BASE, "ema_decay=0.999"], 22, 20, 24)  # better too: no variant holds both changes
    assert tm.recipe_sets(screen) == [*BASE, "ema_decay=0.999", "loss=l2"] and tm.recipe_label(screen) is None
    sweep = {"l2/ddpm/w0/steps10": {"a": 1}, "l2_min_snr/ddpm/w0/steps10": {"a": 2}, "l2/heun/w0/steps5": {"a": 3}}
    assert tm.sweep_of(sweep, "l2") == {"l2/ddpm/w0/steps10": {"a": 1}, "l2/heun/w0/steps5": {"a": 3}}
    assert tm.sweep_of(sweep, "l2_min") == {}
