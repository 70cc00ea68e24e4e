"""Who the per-visitor caps count (ui.room.identity_of): a signed-in Hugging Face user, else the address the
Space's proxy appended to X-Forwarded-For (the last entry: the ones before it are the client's own words), else,
off a Space, the connection's address."""

from __future__ import annotations

import types

import pytest

import ui.room
import ui.settings
from alexnet_core.caps import SharingLimits


def request(forwarded: str | None = None, peer: str = "10.0.0.9", session: dict | None = None):
    headers = {"x-forwarded-for": forwarded} if forwarded is not None else {}
    fake = types.SimpleNamespace(headers=headers, client=types.SimpleNamespace(host=peer))
    if session is not None:
        fake.session = session
    return fake


@pytest.mark.parametrize("on_space, forwarded, expected", [
    (True, "203.0.113.7", "address:203.0.113.7"),
    (True, "1.2.3.4, 203.0.113.7", "address:203.0.113.7"),      # a forged first entry changes nothing
    (True, "5.6.7.8,203.0.113.7", "address:203.0.113.7"),
    (True, None, "address:10.0.0.9"),
    (False, "1.2.3.4, 203.0.113.7", "address:10.0.0.9"),        # off a Space the header is not trusted at all
])
def test_the_address_is_the_one_the_proxy_appended(monkeypatch, on_space, forwarded, expected):
    monkeypatch.setattr(ui.settings, "ON_SPACE", on_space)
    assert ui.room.identity_of(request(forwarded)) == expected


def test_a_signed_in_user_is_counted_by_their_name_and_gets_more_room(monkeypatch):
    monkeypatch.setattr(ui.settings, "ON_SPACE", True)
    monkeypatch.setattr(ui.settings, "SHARING", SharingLimits(runs_per_visitor=5, signed_in_factor=4))
    signed_in = request("1.2.3.4", session={"oauth_info": {"userinfo": {"preferred_username": "ada"}}})
    identity = ui.room.identity_of(signed_in)
    assert identity == "user:ada"
    assert ui.room.per_identity(5, identity) == 20
    assert ui.room.per_identity(5, ui.room.identity_of(request("1.2.3.4"))) == 5
    assert ui.room.identity_of(None) == "local"


def test_the_sharing_limits_read_the_new_bounds_from_the_environment():
    limits = SharingLimits.from_env({"SPACE_ID": "x/y", "ALEXNET_STUDIO_MAX_DISK_MB_PER_SERVER": "40",
                                     "ALEXNET_STUDIO_AWAY_MINUTES": "0.5", "ALEXNET_STUDIO_SIGNED_IN_FACTOR": "2"})
    assert (limits.disk_mb_per_server, limits.away_minutes, limits.signed_in_factor) == (40, 0.5, 2)
    assert limits.run_mb == 1200 and limits.runs_per_minute == 6 and limits.uploads_per_minute == 120
    assert "40 MB of disk on the server" in limits.describe() and "signed-in" in limits.describe()
    with pytest.raises(ValueError, match="ALEXNET_STUDIO_MAX_RUN_MB"):
        SharingLimits.from_env({"ALEXNET_STUDIO_MAX_RUN_MB": "lots"})
