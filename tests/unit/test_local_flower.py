"""LocalFlower's command and environment: always authenticated, secrets off argv."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from producer.local import LocalFlower
from workers.settings import Settings


def test_password_is_generated_when_unset_and_kept_off_the_command_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWER_UNAUTHENTICATED_API", "true")
    settings = Settings(broker_url=SecretStr("redis://:s3cret@127.0.0.1:1/0"))
    a, b = LocalFlower(settings, tmp_path, port=5555), LocalFlower(settings, tmp_path, port=5555)
    assert a.generated and a.password != b.password and len(a.password) >= 16
    env = a.env()
    assert env["FLOWER_BASIC_AUTH"] == f"admin:{a.password}"
    assert "FLOWER_UNAUTHENTICATED_API" not in env  # an inherited switch cannot turn auth off
    assert "--port=5555" in a.command() and "--address=127.0.0.1" in a.command()
    assert not any(a.password in arg or "s3cret" in arg for arg in a.command())


def test_configured_credentials_are_used(tmp_path: Path) -> None:
    settings = Settings(flower_user="ops", flower_password=SecretStr("correct-horse"))
    flower = LocalFlower(settings, tmp_path)
    assert not flower.generated
    assert flower.env()["FLOWER_BASIC_AUTH"] == "ops:correct-horse"


def test_credentials_flower_cannot_parse_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="','"):
        LocalFlower(Settings(), tmp_path, password="a,b")
    with pytest.raises(ValueError, match="':'"):
        LocalFlower(Settings(), tmp_path, user="a:b")
