"""Tokens never show up in exceptions, reprs or logs — including after retries and auth failures."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from metronome_suger.clients.errors import AuthError, ServerError
from metronome_suger.clients.metronome import MetronomeClient
from metronome_suger.clients.suger import SugerClient

from .conftest import (
    RecordingSleep,
    make_metronome,
    make_suger,
    metronome_token,
    suger_key,
)


def _assert_absent(secret: str, *texts: str) -> None:
    for text in texts:
        assert secret not in text


def test_metronome_bad_token_is_an_auth_error_that_hides_the_token(
    sandbox: Any, sleeper: RecordingSleep, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "not-the-metronome-token-7f3a9c"
    sandbox.metronome_log.clear()
    client = make_metronome(sandbox, sleeper, token=SecretStr(secret))
    with client, pytest.raises(AuthError) as info:
        client.list_customers()
    exc = info.value
    assert exc.status == 401 and exc.attempts == 1 and sleeper.waits == []
    assert str(exc).startswith("Metronome GET /v1/customers -> 401: ") and exc.message
    assert len(sandbox.metronome_log.entries()) == 1
    _assert_absent(secret, str(exc), repr(exc), exc.body or "", repr(client), caplog.text)
    assert sandbox.metronome_log.entries()[0].headers["authorization"] == "Bearer ***"


def test_real_tokens_stay_out_of_errors_and_logs_after_retries(
    sandbox: Any, sleeper: RecordingSleep, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # includes httpx's own request logging
    sandbox.metronome_faults.inject("5xx", times=50)
    sandbox.suger_faults.inject("5xx", times=50)
    with make_metronome(sandbox, sleeper) as metronome, make_suger(sandbox, sleeper) as suger:
        with pytest.raises(ServerError) as m_info:
            metronome.list_customers()
        with pytest.raises(ServerError) as s_info:
            suger.list_buyers()
        texts = [str(m_info.value), repr(m_info.value), str(s_info.value), repr(s_info.value)]
        texts += [repr(metronome), repr(suger), caplog.text]
    assert "retrying" in caplog.text
    _assert_absent(metronome_token(sandbox), *texts)
    _assert_absent(suger_key(sandbox), *texts)


def test_a_server_echoing_the_token_is_redacted() -> None:
    """Defence in depth: if an error body quotes the credentials, they are masked before use."""
    token = "echoed-token-abcdef123456"
    client = MetronomeClient("http://127.0.0.1:9", token)
    with client:
        response = httpx.Response(401, json={"message": f"invalid token {token} (Bearer {token})"})
        exc = client._status_error("GET", "/v1/customers", response)
    assert token not in str(exc) and token not in (exc.body or "")
    assert "invalid token ***" in exc.message


def test_reprs_show_where_not_who() -> None:
    metronome = MetronomeClient("http://127.0.0.1:9/base/", SecretStr("tok-secret-value"))
    suger = SugerClient("http://127.0.0.1:9", "org-1", "key-secret-value")
    with metronome, suger:
        assert (
            repr(metronome)
            == "MetronomeClient(base_url='http://127.0.0.1:9/base', service='metronome')"
        )
        assert repr(suger) == "SugerClient(base_url='http://127.0.0.1:9', org_id='org-1')"
        assert "secret" not in repr(vars(metronome).get("_redact"))
