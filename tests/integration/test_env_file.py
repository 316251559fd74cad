"""secrets.env as `docker compose --env-file` reads it: every value the state writes comes back unchanged
(python-dotenv's reading is checked in tests/unit/test_state_safety.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from provision.core.secrets import Secret
from provision.state.records import StateStore
from tests.unit.test_state_safety import ROUND_TRIP


def test_compose_reads_every_written_secret_back_unchanged(docker_engine: None, tmp_path: Path) -> None:
    keys = {f"V{n}": value for n, value in enumerate(ROUND_TRIP)}
    store = StateStore(tmp_path / "state")
    env_file = store.write_secrets("dev", "shop", {k: Secret(v) for k, v in keys.items()})
    compose = tmp_path / "compose.yml"
    compose.write_text("services:\n  x:\n    image: scratch\n    environment:\n"
                       + "".join(f"      {k}: ${{{k}}}\n" for k in keys))
    result = subprocess.run(["docker", "compose", "--project-name", "envfile", "--file", str(compose),
                             "--env-file", str(env_file), "config", "--format", "json"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "variable is not set" not in result.stderr  # nothing of a value was read as interpolation
    environment = json.loads(result.stdout)["services"]["x"]["environment"]
    # `config` writes a literal `$` as `$$` (its own escape in a compose file)
    assert {k: v.replace("$$", "$") for k, v in environment.items()} == keys
