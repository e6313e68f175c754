"""What a sweep is, as data: settings x seeds, the metrics of a finished run, and claims.

A sweep runs one config under several named **settings** (lists of dotted overrides, written out or
the product of a `--grid`) for several **seeds**. Every finished run is reduced to a flat dict of
named metrics (`trial_metrics`), and a **claim** is one comparison of two such metrics, e.g.
`student.final > student.round0` within a setting, or `macpo:student.final > 1_teacher:student.final`
across settings paired by seed. The sweep evaluates every claim per seed and reports "holds in k of
n": claims are written once, never judged by hand. No Ray here: this module is pure bookkeeping.
"""
from __future__ import annotations

import itertools
import math
import operator
import re
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from orchestrator.config import ConfigError, load_config
from orchestrator.redaction import redact_override, redact_text

STUDENT = "student"
OPERATORS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
DEFAULT_COLUMNS = ["student.round0", "student.final", "teachers_mean.round0", "teachers_mean.final"]


@dataclass
class Claim:
    """`left op right`, each side `[setting:]metric`; a side without a setting uses `setting`."""

    name: str
    left: str
    op: str
    right: str
    setting: str | None = None  # default setting of both sides (None: the sweep's first setting)

    def sides(self, default_setting: str) -> tuple[tuple[str, str], tuple[str, str]]:
        def split(side: str) -> tuple[str, str]:
            setting, _, metric = side.rpartition(":")
            return (setting or self.setting or default_setting), metric

        return split(self.left), split(self.right)

    def text(self) -> str:
        return f"{self.left} {self.op} {self.right}" + (f" (in {self.setting})" if self.setting else "")

    @property
    def unscoped(self) -> bool:
        """Neither side nor the claim names a setting: it is a claim about every setting."""
        return self.setting is None and ":" not in self.left and ":" not in self.right

    def in_setting(self, setting: str) -> "Claim":
        return Claim(name=f"{self.name} [{setting}]", left=self.left, op=self.op, right=self.right, setting=setting)


@dataclass
class SweepSpec:
    """One sweep: a run config, named settings of overrides, seeds, table columns and claims."""

    name: str
    config: str | None = None  # YAML run config (None: configs/default.yaml)
    overrides: list[str] = field(default_factory=list)  # applied to every trial
    settings: dict[str, list[str]] = field(default_factory=lambda: {"base": []})
    seeds: list[int] = field(default_factory=lambda: [0])
    columns: list[str] = field(default_factory=lambda: list(DEFAULT_COLUMNS))
    claims: list[Claim] = field(default_factory=list)
    # a confirmation sweep names the exploration spec whose settings, columns and claims it reruns on
    # its own seeds (disjoint from every exploration spec's beside it: no choice was made on them)
    confirms: str | None = None
    exploration_seeds: list[int] = field(default_factory=list)  # the seeds of the spec it confirms

    def trials(self) -> list[dict[str, Any]]:
        """Every (setting, seed) pair, in a stable order; the trial id names its run directory."""
        return [{"setting": name, "seed": seed, "trial_id": f"{slug(name)}-seed{seed}"}
                for name in self.settings for seed in self.seeds]

    def run_overrides(self, setting: str, seed: int) -> list[str]:
        return [*self.overrides, *self.settings[setting], f"seed={seed}"]

    def shown(self) -> dict[str, Any]:
        """The spec as written to spec.json and results.json: credentials in overrides redacted."""
        data = asdict(self)
        data["overrides"] = [redact_override(o) for o in self.overrides]
        data["settings"] = {name: [redact_override(o) for o in overrides] for name, overrides in self.settings.items()}
        return data

    def validate(self) -> None:
        """Every setting must load as a config (unknown key, bad value: one line naming it) and
        every claim must name known settings and an operator; nothing has started yet."""
        if not self.settings:
            raise ConfigError("sweep: no settings (an empty --grid?)")
        if not self.seeds:
            raise ConfigError("sweep: no seeds")
        for name, overrides in self.settings.items():
            try:
                load_config(self.config, [*self.overrides, *overrides])
            except ConfigError as exc:
                raise ConfigError(f"sweep setting {name!r}: {exc}") from None
        for name in self.settings:
            if redact_text(name) != name or any(redact_override(token) != token for token in name.split()):
                raise ConfigError(f"sweep setting {redact_text(name)!r}: a setting's name holds a credential; give "
                                  "credentials as overrides of every trial, in the environment or a profile")
        ids: dict[str, list[str]] = {}
        for trial in self.trials():
            ids.setdefault(trial["trial_id"], []).append(trial["setting"])
        clashes = {tid: sorted(set(names)) for tid, names in ids.items() if len(set(names)) > 1}
        if clashes:
            tid, names = next(iter(clashes.items()))
            raise ConfigError(f"sweep settings {names} share the trial id {tid!r} (their names differ only in "
                              "characters a directory name cannot hold); rename them")
        default = next(iter(self.settings))
        for claim in self.claims:
            if claim.op not in OPERATORS:
                raise ConfigError(f"claim {claim.name!r}: operator {claim.op!r}; choose one of {list(OPERATORS)}")
            for setting, _ in claim.sides(default):
                if setting not in self.settings:
                    raise ConfigError(f"claim {claim.name!r}: unknown setting {setting!r}; settings are {list(self.settings)}")


def slug(text: str) -> str:
    """A directory name for a setting: letters, digits and `_.=-` only, never `.` or `..` (a trial
    directory stays inside the sweep's runs/ folder)."""
    name = re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")
    return name.lstrip(".") or "base"


def parse_seeds(text: str) -> list[int]:
    """`0-4` -> [0..4]; `0,2,5` -> [0, 2, 5]; both may mix: `0-2,7`."""
    seeds: list[int] = []
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            lo, _, hi = part.partition("-")
            seeds.extend(range(int(lo), int(hi) + 1) if hi else [int(lo)])
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: give e.g. 0-4 or 0,1,2") from None
    if not seeds:
        raise ConfigError(f"--seeds {text!r}: no seeds")
    return seeds


def grid_settings(grid: list[str]) -> dict[str, list[str]]:
    """`["a=1,2", "b=x,y"]` -> the 4 settings of their product, named `a=1 b=x` etc.
    Values are split on commas outside brackets, so `k=[1,2],[3]` gives two list values."""
    axes: list[tuple[str, list[str]]] = []
    for item in grid:
        key, sep, values = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--grid {item!r}: give key=v1,v2,...")
        parts = [v.strip() for v in _split_top_level(values) if v.strip()]
        if not parts:
            raise ConfigError(f"--grid {item!r}: no values for {key.strip()!r}")
        axes.append((key.strip(), parts))
    if not axes:
        return {"base": []}
    settings = {}
    for combo in itertools.product(*(values for _, values in axes)):
        overrides = [f"{key}={value}" for (key, _), value in zip(axes, combo)]
        settings[" ".join(overrides)] = overrides
    return settings


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return parts + [current]


def parse_claim(text: str, name: str | None = None) -> Claim:
    """`"student.final > student.round0"` or `"a:student.final >= b:student.final"`."""
    match = re.fullmatch(r"\s*(\S+)\s*(>=|<=|>|<)\s*(\S+)\s*", text)
    if not match:
        raise ConfigError(f"claim {text!r}: write `metric > metric` (operators {list(OPERATORS)})")
    left, op, right = match.groups()
    return Claim(name=name or f"{left} {op} {right}", left=left, op=op, right=right)


def load_spec(path: str | Path) -> SweepSpec:
    """A sweep spec from YAML (keys as `SweepSpec`; claims as dicts or `"a > b"` strings).

    A spec with `confirms: other.yaml` is a confirmation sweep: it takes config, overrides, settings,
    columns and claims from that exploration spec and keeps only its own name and seeds, which must
    share none with any exploration spec in its folder (one line naming the seeds otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep spec {path} does not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    known = set(SweepSpec.__dataclass_fields__) - {"exploration_seeds"}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"sweep spec {path}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
    if raw.get("confirms"):
        return _confirmation_spec(path, raw)
    claims = []
    for item in raw.pop("claims", []) or []:
        if isinstance(item, str):
            claims.append(parse_claim(item))
        elif isinstance(item, dict) and {"name", "left", "op", "right"} <= set(item):
            claims.append(Claim(**item))
        else:
            raise ConfigError(f"sweep spec {path}: claim {item!r} needs name, left, op, right")
    seeds = raw.pop("seeds", [0])
    if isinstance(seeds, str):
        seeds = parse_seeds(seeds)
    settings = raw.pop("settings", None) or {"base": []}
    settings = {str(k): [str(o) for o in (v or [])] for k, v in settings.items()}
    return SweepSpec(name=str(raw.pop("name", path.stem)), settings=settings, seeds=[int(s) for s in seeds],
                     claims=claims, **raw)


def _confirmation_spec(path: Path, raw: dict) -> SweepSpec:
    """The exploration spec `raw["confirms"]` (relative to `path`) rerun on `raw["seeds"]`."""
    extra = set(raw) - {"name", "seeds", "confirms"}
    if extra:
        raise ConfigError(f"sweep spec {path}: a confirmation spec holds only name, seeds and confirms; "
                          f"{sorted(extra)} come from {raw['confirms']}")
    base_path = path.parent / str(raw["confirms"])
    base = load_spec(base_path)
    if base.confirms:
        raise ConfigError(f"sweep spec {path}: {raw['confirms']} is itself a confirmation spec")
    seeds = parse_seeds(raw["seeds"]) if isinstance(raw.get("seeds"), str) else [int(s) for s in raw.get("seeds") or []]
    if not seeds:
        raise ConfigError(f"sweep spec {path}: no confirmation seeds")
    used = {}
    for sibling in sorted(path.parent.glob("*.yaml")):
        other = yaml.safe_load(sibling.read_text()) or {}
        if sibling.resolve() != path.resolve() and not other.get("confirms"):
            other_seeds = other.get("seeds", [0])
            for seed in set(seeds) & set(parse_seeds(other_seeds) if isinstance(other_seeds, str) else other_seeds):
                used.setdefault(seed, sibling.name)
    if used:
        clash = ", ".join(f"{seed} ({name})" for seed, name in sorted(used.items())[:5])
        raise ConfigError(f"sweep spec {path}: confirmation seeds already used by exploration sweeps: {clash}")
    return SweepSpec(name=str(raw.get("name", path.stem)), config=base.config, overrides=base.overrides,
                     settings=base.settings, seeds=seeds, columns=base.columns, claims=base.claims,
                     confirms=str(raw["confirms"]), exploration_seeds=base.seeds)


# ---------------------------------------------------------------- metrics of one run
def trial_metrics(summary: dict) -> dict[str, float]:
    """Flatten a run's summary.json into named metrics.

    `<agent>.r<k>`, `<agent>.round0`, `<agent>.final`, `<agent>.gain` (final - round 0) for the
    headline reward, `<agent>.<metric>.round0|final` for the other eval metrics; the same for
    `teachers_mean` and `best_teacher`; `baseline.<name>.<metric>`; `pgr.r<k>` with the weak
    and ceiling rewards of the run's PGR; and numeric algorithm extras as `<extra>.<key>` (WSPO)."""
    rounds = summary.get("rounds", [])
    out: dict[str, float] = {}
    if not rounds:
        return out
    teachers = [a for a in summary.get("agents", []) if a != STUDENT]
    series: dict[str, list[dict[str, float]]] = {}
    for record in rounds:
        evaluation = record["eval"]
        present = [t for t in teachers if t in evaluation]
        rows = {agent: metrics for agent, metrics in evaluation.items()}
        if present:
            metric_names = set.intersection(*(set(evaluation[t]) for t in present))
            rows["teachers_mean"] = {m: statistics.mean(evaluation[t][m] for t in present) for m in metric_names
                                     if all(_is_number(evaluation[t][m]) for t in present)}
            rows["best_teacher"] = {m: max(evaluation[t][m] for t in present) for m in metric_names
                                    if all(_is_number(evaluation[t][m]) for t in present)}
        for label, metrics in rows.items():
            series.setdefault(label, []).append({m: float(v) for m, v in metrics.items() if _is_number(v)})
    for label, per_round in series.items():
        for k, metrics in enumerate(per_round):
            if "reward" in metrics:
                out[f"{label}.r{k}"] = metrics["reward"]
        first, last = per_round[0], per_round[-1]
        for metric in set(first) & set(last):
            prefix = label if metric == "reward" else f"{label}.{metric}"
            out[f"{prefix}.round0"] = first[metric]
            out[f"{prefix}.final"] = last[metric]
            out[f"{prefix}.gain"] = last[metric] - first[metric]
    for name, metrics in summary.get("baselines", {}).items():
        for metric, value in (metrics or {}).items():
            if _is_number(value):
                out[f"baseline.{name}.{metric}"] = float(value)
    pgr = summary.get("pgr") or {}
    if _is_number(pgr.get("weak")) and _is_number(pgr.get("ceiling")) and pgr["ceiling"] - pgr["weak"] > 1e-9:
        gap = pgr["ceiling"] - pgr["weak"]
        for k, record in enumerate(rounds):
            out[f"pgr.r{k}"] = (record["eval"][STUDENT]["reward"] - pgr["weak"]) / gap
        out["pgr.round0"], out["pgr.final"] = out["pgr.r0"], out[f"pgr.r{len(rounds) - 1}"]
    for key, value in summary.items():
        if isinstance(value, dict) and key not in ("baselines", "pgr"):
            for inner, number in value.items():
                if _is_number(number):
                    out[f"{key}.{inner}"] = float(number)
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ---------------------------------------------------------------- aggregation
def mean_sd(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.mean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def aggregate(spec: SweepSpec, trials: list[dict]) -> tuple[dict, list[dict]]:
    """Per setting mean/sd/n of every metric over its finished seeds; every claim per seed.

    A claim counts a seed only where both sides finished; a failed trial is listed, not guessed."""
    done = {(t["setting"], t["seed"]): t["metrics"] for t in trials if t.get("status") == "done"}
    table: dict[str, dict[str, dict]] = {}
    for setting in spec.settings:
        runs = [done[(setting, s)] for s in spec.seeds if (setting, s) in done]
        names = sorted(set().union(*runs)) if runs else []
        table[setting] = {m: mean_sd([r[m] for r in runs if m in r]) for m in names}
    default = next(iter(spec.settings))
    claims = []
    # a claim that names no setting is evaluated in each setting, not silently in the first one only
    expanded = [scoped for claim in spec.claims
                for scoped in ([claim.in_setting(s) for s in spec.settings] if claim.unscoped and len(spec.settings) > 1
                               else [claim])]
    for claim in expanded:
        (ls, lm), (rs, rm) = claim.sides(default)
        per_seed, differences = {}, []
        for seed in spec.seeds:
            left, right = done.get((ls, seed), {}).get(lm), done.get((rs, seed), {}).get(rm)
            if left is not None and right is not None:
                per_seed[str(seed)] = bool(OPERATORS[claim.op](left, right))
                # the paired difference in the claim's direction: > 0 where `left op right` is ahead
                differences.append(left - right if claim.op in (">", ">=") else right - left)
        claims.append({"name": claim.name, "claim": claim.text(), "left": f"{ls}:{lm}", "op": claim.op,
                       "right": f"{rs}:{rm}", "per_seed": per_seed, "holds": sum(per_seed.values()),
                       "n": len(per_seed), **paired_interval(differences)})
    return table, claims


BOOTSTRAP_RESAMPLES = 10_000
CI_METHOD = f"paired bootstrap over seeds, {BOOTSTRAP_RESAMPLES} resamples, percentile 95% interval"


def paired_interval(differences: list[float], seed: int = 0) -> dict[str, Any]:
    """Mean paired difference with a 95% percentile-bootstrap interval over seeds (resampled with a
    fixed generator, so a results file renders the same interval every time). A claim is *holding*
    only when the whole interval lies above zero; fewer than 2 seeds give no interval."""
    import numpy as np

    if not differences:
        return {"difference": None, "ci95": None, "holding": False, "ci_method": CI_METHOD}
    values = np.asarray(differences, dtype=np.float64)
    if len(values) < 2:
        return {"difference": float(values.mean()), "ci95": None, "holding": False, "ci_method": CI_METHOD}
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(BOOTSTRAP_RESAMPLES, len(values)))].mean(axis=1)
    low, high = (float(q) for q in np.percentile(means, [2.5, 97.5]))
    return {"difference": float(values.mean()), "ci95": [low, high], "holding": low > 0, "ci_method": CI_METHOD}


def refresh_claims(results: dict) -> dict:
    """`results` with its claims evaluated again from its trials by this code (a results file written
    before intervals existed renders with them; the per-seed verdicts cannot change)."""
    raw = dict(results["spec"])
    # the claims as evaluated (both sides scoped to their setting), not as written in the spec
    raw["claims"] = [Claim(name=c["name"], left=c["left"], op=c["op"], right=c["right"]) for c in results["claims"]]
    known = set(SweepSpec.__dataclass_fields__)
    spec = SweepSpec(**{k: v for k, v in raw.items() if k in known})
    _, claims = aggregate(spec, results["trials"])
    return {**results, "claims": claims}
