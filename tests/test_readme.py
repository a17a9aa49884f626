"""The README's configuration reference lists every configuration key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from matomo_tracking import TrackingConfig
from matomo_tracking.config import TrackingOptions

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_config_key_is_documented() -> None:
    missing = [
        f.name for f in dataclasses.fields(TrackingConfig) if f"| `{f.name}` |" not in README
    ]
    assert not missing, f"README configuration reference lacks: {missing}"


def test_keyword_options_match_the_config() -> None:
    assert set(TrackingOptions.__annotations__) == {
        f.name for f in dataclasses.fields(TrackingConfig)
    }
