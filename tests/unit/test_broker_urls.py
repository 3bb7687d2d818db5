"""Broker address lists (``neurostream.broker.addresses``) and the setting that holds them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from neurostream import broker
from neurostream.errors import ConfigError
from neurostream.settings import CoreSettings


def test_several_hosts_in_one_url_keep_credentials_vhost_and_query() -> None:
    url = "amqp://u:p@rabbit-0:5672,rabbit-1:5673, rabbit-2/lab%2Fa?heartbeat=10"
    assert broker.addresses(url) == (
        "amqp://u:p@rabbit-0:5672/lab%2Fa?heartbeat=10",
        "amqp://u:p@rabbit-1:5673/lab%2Fa?heartbeat=10",
        "amqp://u:p@rabbit-2/lab%2Fa?heartbeat=10",
    )


def test_several_full_urls_and_a_single_one() -> None:
    assert broker.addresses("amqp://a:b@h1:1/v, amqps://c:d@h2:2/w") == (
        "amqp://a:b@h1:1/v",
        "amqps://c:d@h2:2/w",
    )
    assert broker.addresses("amqp://guest:guest@127.0.0.1:5672/") == (
        "amqp://guest:guest@127.0.0.1:5672/",
    )
    assert broker.addresses("amqp://h1,h2") == ("amqp://h1", "amqp://h2")


def test_a_password_with_commas_and_at_signs_stays_whole() -> None:
    (only,) = broker.addresses("amqp://u:p,a@ss@h1:5672/")
    assert only == "amqp://u:p,a@ss@h1:5672/"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("", "empty"),
        ("http://h1/", "must start with amqp://"),
        ("amqp://u:secret@h1,,h2/", "empty host"),
        ("amqp://u:secret@h1,/", "empty host"),
    ],
)
def test_bad_lists_say_what_is_wrong_without_the_password(url: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        broker.addresses(url)
    assert says in err.value.message and "secret" not in err.value.message
    assert err.value.field == "amqp_url"


def test_the_setting_refuses_a_broken_list_at_start_up() -> None:
    assert CoreSettings(amqp_url="amqp://g:g@a:1,b:2/").amqp_url == "amqp://g:g@a:1,b:2/"
    with pytest.raises(ValidationError, match="empty host"):
        CoreSettings(amqp_url="amqp://g:g@a:1,,b:2/")
