"""hermes-agent's login files, made and read the way hermes makes and reads them: a login done
through the SDK in-process, its files written as hermes's ``HermesTokenStorage`` writes them
(tools/mcp_oauth.py)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from mcp.shared.auth import OAuthClientInformationFull, OAuthMetadata, OAuthToken

from runner.hermes_config import hermes_safe_name
from runner.sandbox import Sandbox

from support.sdk_client import as_metadata, sdk_login


def write_hermes_json(path: Path, data: dict[str, Any]) -> None:
    """As hermes's ``_write_json``: parent 0700, the file 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    path.write_text(json.dumps(data, indent=2))
    os.chmod(path, 0o600)


async def hermes_login(sb: Sandbox, server_name: str, tokens_dir: Path, config_name: str) -> None:
    """A login through the SDK, stored as hermes stores it (set_tokens, set_client_info,
    save_oauth_metadata in tools/mcp_oauth.py)."""
    server = sb.server(server_name)
    login = await sdk_login(sb, server)
    tokens, client = login.storage.tokens, login.storage.client_info
    assert tokens is not None and client is not None and tokens.expires_in is not None
    metadata = OAuthMetadata.model_validate(as_metadata(server))
    stem = hermes_safe_name(config_name)
    payload = tokens.model_dump(mode="json", exclude_none=True)
    payload["expires_at"] = time.time() + int(payload["expires_in"])
    payload["hermes_issuer"] = str(metadata.issuer)
    write_hermes_json(tokens_dir / f"{stem}.json", payload)
    write_hermes_json(
        tokens_dir / f"{stem}.client.json", client.model_dump(mode="json", exclude_none=True)
    )
    write_hermes_json(
        tokens_dir / f"{stem}.meta.json", metadata.model_dump(mode="json", exclude_none=True)
    )


def hermes_reads(tokens_dir: Path, config_name: str) -> tuple[OAuthToken, str | None]:
    """What hermes's ``HermesTokenStorage`` loads from these files (its field handling)."""
    stem = hermes_safe_name(config_name)
    data = json.loads((tokens_dir / f"{stem}.json").read_text())
    issuer = data.pop("hermes_issuer", None)
    expires_at = data.pop("expires_at")
    data["expires_in"] = int(max(expires_at - time.time(), 0))
    token = OAuthToken.model_validate(data)
    OAuthClientInformationFull.model_validate_json((tokens_dir / f"{stem}.client.json").read_text())
    OAuthMetadata.model_validate_json((tokens_dir / f"{stem}.meta.json").read_text())
    return token, issuer
