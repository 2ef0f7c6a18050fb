"""The fuzz targets by name; each module is imported only when its target runs."""

from __future__ import annotations

import importlib

from tests.fuzz.engine import Target

MODULES = {
    "ike": "tests.fuzz.targets.ike",
    "esp": "tests.fuzz.targets.esp",
    "replay": "tests.fuzz.targets.replay",
    "udpencap": "tests.fuzz.targets.udpencap",
    "profile": "tests.fuzz.targets.profile",
    "control": "tests.fuzz.targets.control",
}
_made: dict[str, Target] = {}


def target(name: str) -> Target:
    """The target called `name`, built once per process (the IKE one records a session)."""
    if name not in _made:
        _made[name] = importlib.import_module(MODULES[name]).TARGET_CLASS()
    return _made[name]
