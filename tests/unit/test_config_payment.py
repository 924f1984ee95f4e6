"""[payment]: the card reader's keys are checked like every other section, naming the key."""

from __future__ import annotations

import pathlib

import pytest

from edge.config import load_all, load_config
from edge.core.errors import ConfigError
from tests.support.rigs.vend import write_config


def cfg_with(tmp_path: pathlib.Path, payment: str) -> pathlib.Path:
    return write_config(tmp_path, board_port="/dev/null", extra=f"[payment]\n{payment}\n")


def test_default_is_no_card_reader(tmp_path):
    cfg = load_config(write_config(tmp_path, board_port="/dev/null"))
    assert cfg.payment.method == "none"


def test_mdb_reader_keys_are_read(tmp_path):
    cfg = load_config(cfg_with(tmp_path, 'method = "mdb"\nport = "/dev/ttyACM0"\napproval_timeout_s = 20'))
    assert (cfg.payment.method, cfg.payment.port, cfg.payment.approval_timeout_s) == (
        "mdb",
        "/dev/ttyACM0",
        20,
    )


@pytest.mark.parametrize(
    "body, key",
    [
        ('method = "mdb"', "payment.port"),
        ('method = "coins"', "payment.method"),
        ('method = "mdb"\nport = "/dev/x"\ncard_wait_s = 0', "payment.card_wait_s"),
        ('method = "mdb"\nport = "/dev/x"\nbaud = 9600', "payment.baud"),
    ],
)
def test_bad_payment_config_names_the_key(tmp_path, body, key):
    with pytest.raises(ConfigError) as exc:
        load_all(cfg_with(tmp_path, body))
    assert exc.value.key == key
