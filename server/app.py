"""Silo's ServerApp: wiring only. The round loop lives in server/federation.py."""

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from common.config import load_federation_config
from common.errors import ConfigError
from server.federation import run_federation
from server.live_view import LiveGrid, LiveStatus

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    config_path = str(context.run_config.get("silo-config", ""))
    run_dir = str(context.run_config.get("run-dir", ""))
    if not config_path or not run_dir:
        raise ConfigError(
            "run config needs `silo-config` (federation TOML) and `run-dir`; "
            "pass them with `flwr run . --run-config \"silo-config='fed.toml' run-dir='RUN'\"`"
        )
    live = LiveStatus(run_dir)  # <run-dir>/live.json: what `silo federation run` shows as replies arrive
    run_federation(LiveGrid(grid, live), load_federation_config(config_path), run_dir, on_reply=live.on_reply)
