from __future__ import annotations

from provision.core.results import ProjectResult
from provision.core.secrets import Secret, SecretURL, generate_missing, mask_url_password


def test_secret_hides_itself() -> None:
    secret = Secret("hunter2-very-secret")
    assert "hunter2" not in str(secret)
    assert "hunter2" not in repr(secret)
    assert "hunter2" not in f"{secret} {secret!r} {[secret]} {({'k': secret})}"
    assert secret.reveal() == "hunter2-very-secret"


def test_secret_url_masks_only_the_password() -> None:
    url = SecretURL("postgresql://app:s3cr3t@127.0.0.1:5432/app")
    assert str(url) == "postgresql://app:***@127.0.0.1:5432/app"
    assert "s3cr3t" not in repr(url)
    assert url.reveal().endswith(":s3cr3t@127.0.0.1:5432/app")
    assert mask_url_password("http://127.0.0.1:3000") == "http://127.0.0.1:3000"


def test_generate_missing_never_replaces_existing_values() -> None:
    existing = {"DB_PASSWORD": Secret("keep-me")}
    result = generate_missing(existing)
    assert result["DB_PASSWORD"].reveal() == "keep-me"
    assert len(result["JWT_SECRET"].reveal()) == 48
    again = generate_missing(result)
    assert {k: v.reveal() for k, v in again.items()} == {k: v.reveal() for k, v in result.items()}


def test_result_repr_and_json_mask_the_db_password() -> None:
    result = ProjectResult(
        project="shop", env="dev", backend="local", status="running", changed=True, action="create",
        api_url="http://127.0.0.1:1", db_url=SecretURL("postgresql://app:topsecret@127.0.0.1:2/app"),
    )
    assert "topsecret" not in repr(result)
    assert "topsecret" not in str(result.to_dict())
    assert "topsecret" in result.to_dict(show_secrets=True)["db_url"]


def test_result_json_keys_never_disappear() -> None:
    result = ProjectResult(project="shop", env="dev", backend="local", status="failed", changed=False, action="provision")
    data = result.to_dict()
    for key in ("project", "env", "backend", "status", "changed", "api_url", "db_url"):
        assert key in data
    assert data["api_url"] is None and data["db_url"] is None


def test_db_url_percent_encodes_the_password_and_masks_it_whole() -> None:
    from urllib.parse import unquote, urlsplit

    from provision.core.model import db_url

    for password in ("p@ss#word", "a/b?c:d", "100%[x] y", "s3cr3t"):
        url = db_url("app user", Secret(password), "127.0.0.1", 5432, "app")
        parts = urlsplit(url.reveal())
        assert (parts.hostname, parts.port, parts.path) == ("127.0.0.1", 5432, "/app")
        assert unquote(parts.password or "") == password and unquote(parts.username or "") == "app user"
        assert str(url) == "postgresql://app%20user:***@127.0.0.1:5432/app"


def test_masking_never_shows_part_of_a_raw_password() -> None:
    assert mask_url_password("postgresql://app:p@ss#word@db:5432/app") == "postgresql://app:***@db:5432/app"
    assert mask_url_password("postgresql://app:a/b?c@db:5432/app") == "postgresql://app:***@db:5432/app"
    assert mask_url_password("postgresql://app:p%40ss@[::1]:5432/app?sslmode=require") == (
        "postgresql://app:***@[::1]:5432/app?sslmode=require")
    assert mask_url_password("postgresql://app@db/app") == "postgresql://app@db/app"
    assert mask_url_password("postgresql://app:p[ss@db/app") == "postgresql://app:***@db/app"
