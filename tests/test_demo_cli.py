"""The demo finds the API where `make run` serves it."""

import demo


def test_the_demo_follows_port_like_make_run() -> None:
    assert demo.parse_args([], {"PORT": "3001"}).url == "http://localhost:3001"
    assert demo.parse_args([], {}).url == "http://localhost:3000"
    assert demo.parse_args([], {"PORT": ""}).url == "http://localhost:3000"


def test_an_explicit_url_wins_over_port() -> None:
    options = demo.parse_args(["--url", "http://engine.example:8080/"], {"PORT": "3001"})
    assert options.url == "http://engine.example:8080"
