"""The demo finds the API where `make run` serves it, with a key when the engine wants one."""

import asyncpg
import pytest

import demo
from demo import cli
from shared import apikeys
from shared.apikeys import Scope as KeyScope
from tests.conftest import StackFactory


def test_the_demo_follows_port_like_make_run() -> None:
    assert demo.parse_args([], {"PORT": "3001"}).url == "http://localhost:3001"
    assert demo.parse_args([], {}).url == "http://localhost:3000"
    assert demo.parse_args([], {"PORT": ""}).url == "http://localhost:3000"


def test_an_explicit_url_wins_over_port() -> None:
    options = demo.parse_args(["--url", "http://engine.example:8080/"], {"PORT": "3001"})
    assert options.url == "http://engine.example:8080"


async def test_the_demo_trades_with_a_key_and_says_how_to_get_one_without(
    make_stack: StackFactory, db: asyncpg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = await make_stack(auth_mode="keys")
    key = (await apikeys.create_key(db, "demo", [KeyScope.TRADE])).key
    without_key = demo.parse_args(["--url", stack.base_url, "--orders", "2", "--plain"], {})
    assert without_key.api_key is None

    assert await cli.run(without_key) == 1
    shown = capsys.readouterr().out
    assert "401 UNAUTHORIZED" in shown and "API_KEY=oee_..." in shown
    assert await db.fetchval("SELECT count(*) FROM orders") == 0

    reader = (await apikeys.create_key(db, "demo", [KeyScope.READ])).key
    read_only = demo.parse_args(
        ["--url", stack.base_url, "--orders", "1", "--plain"], {"API_KEY": reader}
    )
    assert await cli.run(read_only) == 1
    shown = capsys.readouterr().out
    assert "403 FORBIDDEN" in shown and "needs the trade scope" in shown
    assert await db.fetchval("SELECT count(*) FROM orders") == 0

    with_key = demo.parse_args(
        ["--url", stack.base_url, "--orders", "2", "--plain"], {"API_KEY": key}
    )
    assert await cli.run(with_key) == 0
    shown = capsys.readouterr().out
    assert "API_KEY=oee_..." not in shown
    confirmed = await db.fetchval(
        "SELECT count(*) FROM orders WHERE account = 'demo' AND status = 'confirmed'"
    )
    assert confirmed == 2  # placed as the key's account, and followed to the end over sockets


@pytest.mark.parametrize("key", ["a\nb", "ключ", "two words", "nul\x00", ""])
def test_a_key_no_header_can_carry_is_refused_before_anything_is_sent(
    key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        demo.parse_args(["--api-key", key], {})
    assert exited.value.code == 2
    assert "printable ASCII" in capsys.readouterr().err
