"""The shape of `status --json` (CLI.md's fields, and README's additions), importable by
the tray without the daemon, the engine or asyncio."""

from __future__ import annotations

from typing import Any


def idle_status() -> dict[str, Any]:
    """`status --json` with no connection."""
    return {
        "state": "disconnected", "profile": None, "uuid": None, "gateway": None,
        "local_address": None, "nat_detected": False, "mobike": False, "virtual_ips": [],
        "dns": [], "routes": [], "ike_proposal": None, "esp_proposal": None,
        "established_at": None, "bytes_in": 0, "bytes_out": 0, "packets_in": 0,
        "packets_out": 0, "rekeys": 0, "roams": 0, "last_error": None,
        "local_id": None, "remote_id": None, "owner": None, "owner_uid": None,
    }
