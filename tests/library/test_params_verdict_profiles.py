"""Notebook conventions in code: the parameter check, the verdict helper, profile validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from workbook import params, verdict
from workbook.params import ParameterError
from workbook.runner import profiles
from workbook.runner.profiles import ProfileError
from workbook.verdict import VerdictError


def injected(**values: object) -> dict[str, object]:
    """A notebook namespace as the runner leaves it: defaults overridden, bookkeeping injected."""
    declared = {"mode": "str", "writes": "int", "interval": "float", "strict": "bool", "label": "any"}
    return {"mode": "fixed", "writes": 10, "interval": 0.5, "strict": True, "label": None, **values,
            "workbook_declared": declared, "workbook_injected": sorted(values)}


def test_declared_parameters_reads_literal_defaults() -> None:
    src = ('mode = "fixed"\nwrites: int = 100\nseed = 7  # comment\nnodes = ["kv1", "kv2"]\n'
           "start = time.time()")
    assert params.declared_parameters(src) == {"mode": "fixed", "writes": 100, "seed": 7,
                                               "nodes": ["kv1", "kv2"], "start": ...}
    with pytest.raises(ParameterError, match="line 1"):
        params.declared_parameters("mode = = 1")


def test_check_accepts_well_typed_values() -> None:
    p = params.check(injected(mode="incident", writes=5, interval=2, label="x"))
    assert p.incident and not p.fixed
    assert p.writes == 5 and p["interval"] == 2
    assert params.current() is p


@pytest.mark.parametrize(("values", "message"), [
    ({"wrties": 5},
     "unknown parameter 'wrties' (this notebook declares: interval, label, mode, strict, writes)"),
    ({"writes": "5"}, "parameter 'writes' must be int, got '5' (str)"),
    ({"writes": True}, "parameter 'writes' must be int, got True (bool)"),
    ({"strict": 1}, "parameter 'strict' must be bool, got 1 (int)"),
    ({"mode": "broken"}, "parameter 'mode' must be 'fixed' or 'incident', got 'broken'"),
])
def test_check_stops_with_one_clear_line(values: dict[str, object], message: str) -> None:
    with pytest.raises(ParameterError) as err:
        params.check(injected(**values))
    assert str(err.value) == message


def test_check_without_runner_checks_only_mode() -> None:
    p = params.check({"mode": "fixed", "seed": 3, "anything": object()})
    assert dict(p) == {"mode": "fixed", "seed": 3}


def test_verdict_incident_mode_passes_when_the_symptom_appears(tmp_path: Path) -> None:
    sidecar = tmp_path / "v.json"
    p = params.check({**injected(mode="incident"), "workbook_sidecar": str(sidecar),
                      "workbook_notebook_id": "kv-01"})
    doc = verdict.conclude(symptom=True, symptom_text="acknowledged writes lost", figures={"lost": 3})
    on_disk = json.loads(sidecar.read_text())
    assert on_disk == doc
    assert doc["notebook"] == "kv-01" and doc["passed"] and doc["reproduced"]
    assert doc["parameters"]["mode"] == "incident" and doc["figures"] == {"lost": 3}
    assert p.sidecar_path == str(sidecar)


def test_verdict_incident_that_did_not_reproduce_fails_and_still_writes(tmp_path: Path) -> None:
    sidecar = tmp_path / "v.json"
    params.check({**injected(mode="incident"), "workbook_sidecar": str(sidecar)})
    with pytest.raises(VerdictError, match=r"^the incident did not reproduce: expected acknowledged writes"):
        verdict.conclude(symptom=False, symptom_text="acknowledged writes lost", figures={"lost": 0})
    doc = json.loads(sidecar.read_text())
    assert doc["passed"] is False and doc["reproduced"] is False


def test_verdict_fixed_mode_asserts_the_invariant(tmp_path: Path) -> None:
    sidecar = tmp_path / "v.json"
    params.check({**injected(), "workbook_sidecar": str(sidecar)})
    assert verdict.conclude(symptom=False, symptom_text="stale reads")["passed"]
    with pytest.raises(VerdictError, match=r"^the invariant does not hold: observed stale reads"):
        verdict.conclude(symptom=True, symptom_text="stale reads")
    with pytest.raises(VerdictError, match="converged within 5 s; seconds=9"):
        verdict.conclude(symptom=False, symptom_text="divergence", invariant=False,
                         invariant_text="converged within 5 s", figures={"seconds": 9})
    assert json.loads(sidecar.read_text())["invariant_holds"] is False


def test_verdict_figures_become_json(tmp_path: Path) -> None:
    numpy = pytest.importorskip("numpy")
    params.check({**injected(), "workbook_sidecar": str(tmp_path / "v.json")})
    doc = verdict.conclude(symptom=False, symptom_text="x",
                           figures={"p99": numpy.float64(0.25), "n": numpy.int64(3), "nan": float("nan")})
    assert doc["figures"] == {"p99": 0.25, "n": 3, "nan": "nan"}


def test_shipped_profiles_load_with_the_incident_values() -> None:
    ci = profiles.load("ci")
    prod = profiles.load("production")
    assert set(ci.values) == set(prod.values)
    assert prod.values["health_interval"] == 1
    assert prod.values["unhealthy_after"] == 3
    assert prod.values["request_rate"] == 1000
    assert prod.values["ws_sessions"] == 100
    assert prod.values["soak"] == 600
    assert ci.values["soak"] < prod.values["soak"]


@pytest.mark.parametrize(("text", "message"), [
    ("health_intreval: 1\n", "unknown key 'health_intreval'"),
    ("ws_sessions: many\n", "ws_sessions (concurrent WebSocket sessions) must be int, got 'many'"),
    ("unhealthy_after: true\n", "unhealthy_after (consecutive failed checks before an upstream is unhealthy) "
                                "must be int, got True"),
    ("soak: -1\n", "soak must not be negative"),
    ("- 1\n- 2\n", "a profile is a mapping"),
    ("notebooks:\n  kv-01: [1, 2]\n", "notebooks.kv-01 must be a mapping"),
    ("notebooks:\n  kv-01: {timeout: soon}\n", "notebooks.kv-01.timeout must be int or float"),
    ("timeout: [\n", "cannot read profile"),
    ("repeat: 0\n", "repeat must be at least 1"),
    ("notebooks:\n  kv-01: {repeat: 0}\n", "notebooks.kv-01.repeat must be at least 1"),
])
def test_bad_profiles_are_refused_in_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ProfileError) as err:
        profiles.load(path)
    assert message in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_profile_merges_globals_the_notebook_declares_then_its_section(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("timeout: 60\nsoak: 10\nseed: 1\nnotebooks:\n  rpc-04: {soak: 3, timeout: 30}\n")
    prof = profiles.load(path)
    assert prof.parameters_for("rpc-04", {"mode": "fixed", "soak": 1}) == {"soak": 3}
    assert prof.parameters_for("kv-01", {"mode": "fixed", "seed": 0}) == {"seed": 1}
    assert prof.timeout("rpc-04") == 30 and prof.timeout("kv-01") == 60


def test_nightly_is_production_plus_chaos_examples_and_repeats() -> None:
    prod, nightly, ci = profiles.load("production"), profiles.load("nightly"), profiles.load("ci")
    for key in ("health_interval", "unhealthy_after", "request_rate", "ws_sessions", "soak"):
        assert nightly.values[key] == prod.values[key], key
    assert nightly.values["chaos"] == 30 * 60
    assert nightly.values["examples"] >= 1000 and nightly.values["examples"] > prod.values["examples"]
    assert nightly.repeat("kv-01") >= 10 and ci.repeat("kv-01") == 1 and prod.repeat("kv-01") == 1
    assert nightly.timeout("kv-01") > nightly.values["chaos"] + nightly.values["soak"]
    assert "repeat" not in nightly.parameters_for("kv-01", {"mode": "fixed", "repeat": 1, "chaos": 1.0})
    assert nightly.parameters_for("kv-01", {"mode": "fixed", "chaos": 1.0})["chaos"] == 1800


def test_repeat_comes_from_the_profile_and_the_flag_wins(tmp_path: Path) -> None:
    from workbook import runner
    from workbook.runner import catalog

    fixtures = Path(__file__).resolve().parents[1] / "fixtures" / "notebooks"
    infos = catalog.discover(fixtures)
    path = tmp_path / "p.yaml"
    path.write_text("repeat: 3\nnotebooks:\n  fx-nodefect: {repeat: 2}\n")
    prof = profiles.load(path)
    jobs, _ = runner.plan(infos, ["fx-pass", "fx-nodefect"], "both", prof, None, None)
    stems = sorted(j.stem for j in jobs)
    assert stems == ["fx-nodefect.fixed.r1", "fx-nodefect.fixed.r2"] + [
        f"fx-pass.{m}.r{r}" for m in ("fixed", "incident") for r in (1, 2, 3)]
    jobs, _ = runner.plan(infos, ["fx-pass"], "fixed", prof, 1, None)
    assert [j.stem for j in jobs] == ["fx-pass.fixed"]
