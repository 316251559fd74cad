"""The `serve` task: the HTTP API over one env's backend (FastAPI and uvicorn, an optional extra)."""

from __future__ import annotations

from invoke.context import Context
from invoke.exceptions import Exit

from .flags import ENV_HELP, number, task
from .session import provisioner_for, require_env, session, workspace


@task(help={"env": ENV_HELP, "host": "Address to listen on (default 127.0.0.1)", "port": "Port (default 8000)",
            "no_auth": "Run without PROVISION_API_TOKEN; allowed only on a loopback address",
            "workers": "How many creates run at once in the background (default 16)"})
def serve(c: Context, env: str | None = None, host: str = "127.0.0.1", port: str = "8000",
          no_auth: bool = False, workers: str = "16") -> None:
    """Run the HTTP API (POST /v1/projects, ...) over this env's backend; OpenAPI at /openapi.json, docs at /docs."""
    try:
        from ..http.server import serve as run_server
    except ImportError as exc:
        if exc.name not in ("fastapi", "uvicorn", "starlette", "pydantic_core"):
            raise
        raise Exit(f"error: the HTTP server needs FastAPI and uvicorn ({exc.name} is not installed): "
                   f"pip install 'provision[server]'", code=2) from None

    listen_port = int(number("port", port, minimum=1, maximum=65535))
    background = int(number("workers", workers, minimum=1, maximum=256))
    with session(live=False, hold_banners=False) as reporter:
        token = workspace().api_token(require_env(env))
        provisioner = provisioner_for(env, reporter)
        run_server(provisioner, host=host, port=listen_port, token=token, no_auth=no_auth, workers=background)
