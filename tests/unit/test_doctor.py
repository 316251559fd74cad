"""`provision doctor`'s report (what counts as passed, 80 columns, JSON) and the local backend's checks."""

from __future__ import annotations

from provision.backends.local.compose import ComposeCLI
from provision.backends.local.facts import doctor_checks
from provision.core.errors import BackendUnavailable, CoolifyValidationError
from provision.infra import doctor

from .fakes import FakeRunner


def test_a_skip_passes_only_when_the_check_does_not_apply() -> None:
    assert doctor.passed("a", "fine").ok
    assert not doctor.failed("a", "broken", "mend it").ok
    assert doctor.skipped("a", "nothing to check here", applies=False).ok
    assert not doctor.skipped("a", "not run: an earlier check failed", applies=True).ok
    report = doctor.Report("dev", "coolify", (doctor.passed("a", "x"), doctor.skipped("b", "n/a", applies=False)))
    assert report.ok
    assert not doctor.Report("dev", "coolify", (*report.checks, doctor.skipped("c", "not run", applies=True))).ok


def test_text_fits_80_columns_and_shows_a_failures_fix() -> None:
    long = "word " * 60 + "/a/very/long/path/that/does/not/fit/on/one/line/at/all/because/it/goes/on/and/on/x.php:19"
    report = doctor.Report("dev", "coolify", (
        doctor.passed("version", "Coolify 4.3.11"),
        doctor.failed("lock project", long, "delete it " * 20),
        doctor.skipped("task", "not run: it needs the throwaway project", applies=True, fix="never shown? no"),
    ))
    text = report.text()
    assert all(len(line) <= doctor.WIDTH for line in text.splitlines()), text
    first = text.splitlines()[0]
    assert first.startswith("ok       version       Coolify 4.3.11")
    assert "\n                       fix: delete it" in text
    assert "failed   lock project  word word" in text
    assert text.splitlines()[-1] == "2 of 3 checks did not pass (env dev, coolify backend)"
    assert doctor.Report("dev", "local", (doctor.passed("x", "y"),)).text().endswith("all checks passed (env dev, "
                                                                                     "local backend)")


def test_json_has_every_key_of_every_check() -> None:
    data = doctor.Report("dev", "coolify", (doctor.passed("a", "x"), doctor.failed("b", "y", "z"))).to_dict()
    assert data == {"env": "dev", "backend": "coolify", "ok": False, "checks": [
        {"name": "a", "ok": True, "status": "ok", "detail": "x", "fix": ""},
        {"name": "b", "ok": False, "status": "failed", "detail": "y", "fix": "z"}]}


def test_an_api_error_becomes_coolifys_answer_and_its_hint() -> None:
    exc = CoolifyValidationError("POST", "https://c.example.com/api/v1/projects", 422, "Validation failed.",
                                 errors={"description": ["The description field format is invalid."]},
                                 hint="read the errors")
    check = doctor.from_error("lock project", exc, "Coolify refused it")
    assert check.detail == ("Coolify refused it: POST /projects -> 422: Validation failed. (description: The "
                            "description field format is invalid.)")
    assert check.fix == "read the errors" and not check.ok
    other = doctor.from_error("x", BackendUnavailable("no answer\nstart it"))
    assert (other.detail, other.fix) == ("no answer", "start it")


def test_throwaway_names_are_valid_project_names() -> None:
    from provision.core.names import validate_name

    names = {doctor.throwaway_name() for _ in range(20)}
    assert len(names) == 20
    for name in names:
        validate_name(name)
        assert name.startswith(doctor.THROWAWAY_PREFIX) and len(name) == len(doctor.THROWAWAY_PREFIX) + 6


def test_local_checks_pass_with_an_engine_and_compose_v2() -> None:
    runner = FakeRunner().on("docker", "version", stdout="27.3.1\n").on("compose", "version", stdout="2.29.7\n")
    checks = doctor_checks(ComposeCLI(runner, environ={}))
    assert [(c.name, c.status, c.detail) for c in checks] == [
        ("docker engine", "ok", "Docker Engine 27.3.1 answers"), ("compose v2", "ok", "docker compose 2.29.7")]


def test_local_checks_name_a_missing_engine_and_compose_v1() -> None:
    runner = (FakeRunner()
              .on("docker", "version", "--format", returncode=1,
                  stderr="Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?")
              .on("docker", "compose", "version", returncode=1, stderr="docker: 'compose' is not a docker command.")
              .on("docker-compose", "version", stdout="1.29.2\n"))
    engine, compose = doctor_checks(ComposeCLI(runner, environ={}))
    assert engine.status == "failed" and "not reachable" in engine.detail and "start dockerd" in engine.detail
    assert compose.status == "failed" and "Compose v1" in compose.detail


def test_local_checks_take_a_standalone_compose_v2() -> None:
    runner = (FakeRunner().on("docker", "version", "--format", stdout="27.3.1\n")
              .on("docker", "compose", "version", returncode=1, stderr="docker: 'compose' is not a docker command.")
              .on("docker-compose", "version", stdout="v2.20.0\n"))
    _, compose = doctor_checks(ComposeCLI(runner, environ={}))
    assert (compose.status, compose.detail) == ("ok", "docker-compose v2.20.0")
