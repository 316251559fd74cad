from __future__ import annotations

import re
from pathlib import Path

import pytest

from provision.core.config import load_env
from provision.core.errors import ConfigError, InvalidName
from tests.conftest import write_env

MINIMAL = """
owner: repo-0001
images:
  db: postgres:16-alpine
  api: postgrest/postgrest:v12.2.3
projects:
  - name: shop
  - name: blog
    variables:
      db_name: blog
"""


def test_minimal_env_loads_with_defaults(project_root: Path) -> None:
    write_env(project_root, "dev", MINIMAL)
    config = load_env("dev", project_root, environ={})
    assert config.backend == "local" and config.backend_auto
    assert [p.name for p in config.projects] == ["shop", "blog"]
    assert config.local.bind_address == "127.0.0.1"
    assert config.project("blog").variables["db_name"] == "blog"
    assert config.project("shop").variables["db_name"] == "app"
    assert config.health.timeout == 180


def test_undeclared_project_gets_env_variables(project_root: Path) -> None:
    write_env(project_root, "dev", MINIMAL)
    spec = load_env("dev", project_root, environ={}).project("new-one")
    assert not spec.declared and spec.variables["db_user"] == "app"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (MINIMAL + "colour: blue\n", "envs/dev.yml: colour: unknown key"),
        (MINIMAL.replace("  - name: blog", "  - name: Blog"), "envs/dev.yml: projects[1].name: project name 'Blog' is invalid"),
        (MINIMAL + "  - name: x;rm -rf /\n", "envs/dev.yml: projects[2].name: project name 'x;rm -rf /' is invalid"),
        (MINIMAL + "health:\n  timeout: soon\n", "envs/dev.yml: health.timeout:"),
        (MINIMAL + "health:\n  timeout: -1\n", "envs/dev.yml: health.timeout:"),
        (MINIMAL.replace("  api: postgrest/postgrest:v12.2.3\n", ""), "envs/dev.yml: images.api: required key is missing"),
        (MINIMAL + "local:\n  bind_address: localhost\n", "envs/dev.yml: local.bind_address: 'localhost' is not an IP address"),
        (MINIMAL + "backend: kubernetes\n", "envs/dev.yml: backend:"),
        (MINIMAL + "resources:\n  db: {memory_reservation: -1}\n",
         "envs/dev.yml: resources.db.memory_reservation: -1 is not a size"),
        (MINIMAL + "  - name: shop\n", "projects[2].name: 'shop' collides with 'shop'"),
        (MINIMAL + "variables:\n  DB-USER: x\n", "envs/dev.yml: variables: variable name 'DB-USER'"),
        (MINIMAL + "variables:\n  db_user: \"bad user\"\n", "db_user 'bad user' must be a lowercase PostgreSQL identifier"),
        (MINIMAL + "local:\n  network_pool: 10.0.0.0/30\n", "network_pool: 10.0.0.0/30 is smaller than one /26"),
        (MINIMAL + "  - name: x1\n    images: {dbb: postgres:17}\n", "envs/dev.yml: projects[2].images.dbb: unknown key"),
        (MINIMAL + "  - name: x1\n    images: {db: 'postgres 17'}\n",
         "envs/dev.yml: projects[2].images.db: 'postgres 17' is not an image reference"),
        (MINIMAL + "  - name: x1\n    images: postgres:17\n",
         "envs/dev.yml: projects[2].images: must be a mapping of keys such as {db: 'postgres:17'}, not a string"),
        ("images: [1, 2\n", "envs/dev.yml: line 2: invalid YAML"),
        ("- just\n- a list\n", "envs/dev.yml: the top level must be a mapping"),
    ],
)
def test_invalid_config_names_file_key_and_problem(project_root: Path, text: str, expected: str) -> None:
    write_env(project_root, "dev", text)
    with pytest.raises(ConfigError) as info:
        load_env("dev", project_root, environ={})
    assert expected in str(info.value)


def test_missing_env_file_lists_the_envs_that_exist(project_root: Path) -> None:
    write_env(project_root, "dev", MINIMAL)
    write_env(project_root, "prod", MINIMAL)
    with pytest.raises(ConfigError, match=r"envs/qa.yml not found: .* \(dev, prod\)"):
        load_env("qa", project_root, environ={})


def test_missing_template_is_reported(project_root: Path) -> None:
    write_env(project_root, "dev", MINIMAL + "template: templates/nope.j2\n")
    with pytest.raises(ConfigError, match="envs/dev.yml: template: templates/nope.j2 not found"):
        load_env("dev", project_root, environ={})


def test_invalid_env_name_is_refused(project_root: Path) -> None:
    with pytest.raises(InvalidName):
        load_env("../etc", project_root, environ={})


def test_undeclared_name_that_collides_with_a_declared_one_is_refused(project_root: Path) -> None:
    write_env(project_root, "dev", MINIMAL.replace("- name: blog", "- name: my-blog"))
    config = load_env("dev", project_root, environ={})
    with pytest.raises(InvalidName):
        config.project("my_blog")


def test_backend_auto_picks_coolify_only_with_url_and_token(project_root: Path) -> None:
    write_env(project_root, "staging", MINIMAL)
    assert load_env("staging", project_root, environ={"COOLIFY_API_URL": "https://c.example"}).backend == "local"
    config = load_env(
        "staging", project_root, environ={"COOLIFY_API_URL": "https://c.example", "COOLIFY_API_TOKEN": "1|abc"}
    )
    assert config.backend == "coolify"
    assert config.coolify_credentials is not None
    assert config.coolify_credentials.api_url == "https://c.example/api/v1"
    assert "1|abc" not in repr(config)


def test_secret_precedence_process_then_env_file_then_dotenv(project_root: Path) -> None:
    write_env(project_root, "staging", MINIMAL)
    (project_root / ".env").write_text("COOLIFY_API_URL=https://from-dotenv\nCOOLIFY_API_TOKEN=dotenv-token\n")
    (project_root / "envs" / "staging.env").write_text("COOLIFY_API_URL=https://from-env-file\n")
    config = load_env("staging", project_root, environ={})
    assert config.coolify_credentials is not None
    assert config.coolify_credentials.api_url == "https://from-env-file/api/v1"
    assert config.coolify_credentials.token.reveal() == "dotenv-token"
    config = load_env("staging", project_root, environ={"COOLIFY_API_URL": "https://from-process"})
    assert config.coolify_credentials is not None
    assert config.coolify_credentials.api_url == "https://from-process/api/v1"


def test_explicit_coolify_backend_without_credentials_says_where_to_put_them(project_root: Path) -> None:
    write_env(project_root, "prod", MINIMAL + "backend: coolify\n")
    with pytest.raises(ConfigError, match=r"COOLIFY_API_URL and COOLIFY_API_TOKEN .* envs/prod.env"):
        load_env("prod", project_root, environ={})


def test_overrides_apply_dotted_keys_and_are_validated(project_root: Path) -> None:
    write_env(project_root, "dev", MINIMAL)
    config = load_env("dev", project_root, environ={}, overrides={"images.api": "registry.example.com/api:1.4.2"})
    assert config.images.api == "registry.example.com/api:1.4.2"
    with pytest.raises(ConfigError, match="health.timeout"):
        load_env("dev", project_root, environ={}, overrides={"health.timeout": "never"})
    with pytest.raises(ConfigError, match="unknown key"):
        load_env("dev", project_root, environ={}, overrides={"imagez.api": "x"})
    # values take the type the schema expects: text stays text, numbers and lists where the key wants them
    typed = load_env("dev", project_root, environ={}, overrides={
        "variables.db_public_port": "05432", "variables.api_schemas": "no", "health.timeout": "45",
        "local.port_range": "[30000, 30099]"})
    assert typed.variables["db_public_port"] == "05432" and typed.variables["api_schemas"] == "no"
    assert typed.health.timeout == 45 and typed.local.port_range == (30000, 30099)


def test_variables_the_template_does_not_use_are_refused(project_root: Path) -> None:
    from provision.core.templating import template_variables

    write_env(project_root, "dev", MINIMAL + "variables:\n  db_usr: bob\n")
    with pytest.raises(ConfigError, match=r"variables.db_usr: .*did you mean 'db_user'"):
        load_env("dev", project_root, environ={})
    write_env(project_root, "dev", MINIMAL.replace("      db_name: blog", "      db_nam: blog"))
    with pytest.raises(ConfigError, match=r"projects\[1\].variables.db_nam: .*did you mean 'db_name'"):
        load_env("dev", project_root, environ={})
    looping = project_root / "templates" / "loop.yml.j2"
    looping.write_text("services:\n{% for k, v in vars.items() %}  # {{ k }}\n{% endfor %}")
    assert template_variables(looping) is None  # it reads them all: nothing is refused
    write_env(project_root, "dev", MINIMAL + "template: templates/loop.yml.j2\nvariables:\n  anything: 1\n")
    assert load_env("dev", project_root, environ={}).variables["anything"] == "1"


def test_shipped_envs_are_valid(tmp_path: Path) -> None:
    """Each env file the repository ships loads with the backend and projects it declares, and every one of those
    projects renders with the shipped template into a compose file with the db and api services. (The files are
    read from a copy: a checkout's own envs/<env>.env or .env, which may hold Coolify credentials, stay out.)"""
    import shutil

    import yaml

    from provision.core.model import Ports
    from provision.core.render import build_context, render_stack
    from provision.core.secrets import GENERATED_SECRETS, Secret
    from tests.conftest import REPO

    coolify = {"COOLIFY_API_URL": "https://c.example", "COOLIFY_API_TOKEN": "t"}
    expected = {  # env: (environment, backend, projects)
        "dev": ({}, "local", ["shop", "blog"]), "demo": ({}, "local", ["demo"]),
        "staging": ({}, "local", ["shop", "blog"]), "prod": (coolify, "coolify", ["shop", "blog"]),
    }
    secrets = {name: Secret(f"{name.lower()}-0123456789") for name in GENERATED_SECRETS}
    (tmp_path / "envs").mkdir()
    for shipped in (REPO / "envs").glob("*.yml"):
        shutil.copy(shipped, tmp_path / "envs" / shipped.name)
    shutil.copytree(REPO / "templates", tmp_path / "templates")
    assert sorted(p.stem for p in (tmp_path / "envs").iterdir()) == sorted(expected)  # a new one is added here
    for env, (environ, backend, projects) in expected.items():
        config = load_env(env, tmp_path, environ=environ)
        assert (config.name, config.backend, [p.name for p in config.projects]) == (env, backend, projects)
        for spec in config.projects:
            ports = Ports(api=1, db=2) if backend == "local" else None
            stack = render_stack(config.template_path, build_context(config, spec, backend=backend, ports=ports),
                                 secrets)
            assert set(yaml.safe_load(stack.text)["services"]) == {"db", "api"}, f"{env}: {spec.name}"
    staging = load_env("staging", tmp_path, environ=coolify)  # staging goes to Coolify once it is configured
    assert staging.backend == "coolify" and staging.backend_auto


def test_coolify_names_are_long_enough_for_coolify(project_root: Path) -> None:
    write_env(project_root, "dev", MINIMAL + "backend: coolify\n")
    environ = {"COOLIFY_API_URL": "http://127.0.0.1:9/api/v1", "COOLIFY_API_TOKEN": "t"}
    config = load_env("dev", project_root, environ=environ)
    assert config.min_project_name == 3
    with pytest.raises(InvalidName, match="too short"):
        config.project("rt")
    assert config.project("abc").name == "abc"
    write_env(project_root, "dev", MINIMAL + "backend: coolify\ncoolify: {project_prefix: app-}\n")
    assert load_env("dev", project_root, environ=environ).project("rt").name == "rt"


@pytest.mark.parametrize(("env", "text", "expected"), [
    ("qa", "", "env name 'qa' has fewer than 3 characters"),
    ("envs", "", "env name 'envs' is shadowed by a Coolify API route"),
    ("dev", "  - name: ab\n", r"projects\[2\]\.name: 'ab' is too short for Coolify"),
])
def test_names_coolify_refuses_are_refused_when_the_env_file_is_loaded(project_root: Path, env: str, text: str,
                                                                       expected: str) -> None:
    write_env(project_root, env, MINIMAL + text + "backend: coolify\n")
    environ = {"COOLIFY_API_URL": "http://127.0.0.1:9/api/v1", "COOLIFY_API_TOKEN": "t"}
    with pytest.raises(ConfigError, match=expected):
        load_env(env, project_root, environ=environ)


def test_a_coolify_env_without_an_owner_gets_a_line_to_paste(project_root: Path) -> None:
    write_env(project_root, "dev", MINIMAL.replace("owner: repo-0001\n", "") + "backend: coolify\n")
    environ = {"COOLIFY_API_URL": "http://127.0.0.1:9/api/v1", "COOLIFY_API_TOKEN": "t"}
    with pytest.raises(ConfigError) as info:
        load_env("dev", project_root, environ=environ)
    line = str(info.value).splitlines()[-1]
    assert "envs/dev.yml: owner: missing" in str(info.value) and re.fullmatch(r"owner: [a-z][0-9a-f]{10}", line)
    write_env(project_root, "dev", MINIMAL + "backend: coolify\n" + line.replace("owner", "owner_typo"))
    with pytest.raises(ConfigError, match="owner_typo: unknown key"):
        load_env("dev", project_root, environ=environ)
    write_env(project_root, "dev", MINIMAL.replace("owner: repo-0001", "owner: A B") + "backend: coolify\n")
    with pytest.raises(ConfigError, match="owner"):
        load_env("dev", project_root, environ=environ)


def test_a_project_may_name_its_own_images_over_the_envs(project_root: Path) -> None:
    write_env(project_root, "dev", MINIMAL.replace("  - name: blog\n", "  - name: blog\n    images: {db: 'postgres:17'}\n"))
    config = load_env("dev", project_root, environ={})
    blog, shop = config.project("blog"), config.project("shop")
    assert blog.images is not None and (blog.images.db, blog.images.api) == ("postgres:17", config.images.api)
    assert shop.images is None and config.project("undeclared").images is None
    assert blog.key("images.db") == "projects[1].images.db" and blog.key("images.api") == "images.api"
    assert shop.key("images.db") == "images.db"
