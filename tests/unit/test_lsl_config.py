"""liblsl's log level is added to the user's lsl_api.cfg, never in place of it."""

from __future__ import annotations

from launcher.lsl_config import QUIET_LEVEL, VERBOSE_LEVEL, log_config


def test_a_log_section_is_added_and_the_users_settings_kept() -> None:
    user = "[multicast]\nResolveScope = site\n[lab]\nKnownPeers = {10.0.0.2}\n"
    quiet = log_config(user, verbose=False)
    assert quiet is not None and quiet.startswith(user.rstrip())
    assert quiet.endswith(f"[log]\nlevel = {QUIET_LEVEL}\n")
    assert log_config("", verbose=True) == f"[log]\nlevel = {VERBOSE_LEVEL}\n"


def test_a_config_with_its_own_log_section_is_left_alone() -> None:
    assert log_config("[ports]\nBasePort = 17000\n [LOG] \nlevel = 2\n", verbose=False) is None
