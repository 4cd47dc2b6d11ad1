"""NFS exports and nfs.conf generation: golden files compared byte for byte, exports(5) quoting
and escaping of paths, client options, stable fsids.

Golden files live in tests/fixtures/shares/golden/. To change one, run the tests with
CAIRN_UPDATE_GOLDEN=1: the test rewrites the file and still fails once, so the new output is
reviewed (git diff) before anyone runs the suite green again."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from support import assert_golden as golden
from cairn.shares import exports, model

GOLDEN = Path(__file__).resolve().parent.parent / "fixtures" / "shares" / "golden"


def assert_golden(name: str, actual: str) -> None:
    golden(GOLDEN / name, actual)


def share(**data) -> model.Share:
    """A share through the same validation the API uses."""
    return model.check_share(data, {"alice"}, set())


def basic_shares() -> list[model.Share]:
    return [
        share(name="Büro Ablage", pool="tank", volume="office", path="/pools/tank/office/Büro Ablage",
              smb={}, nfs={"clients": [{"match": "192.168.1.0/24"},
                                       {"match": "*.office.example.com", "access": "ro"}]}),
        share(name="Media", pool="tank", volume="media",
              nfs={"clients": [{"match": "10.0.0.5", "root_squash": False},
                               {"match": "FD00::/64"},
                               {"match": "*", "access": "ro"}]}),
        share(name="Projekte #1", pool="tank", volume="projects", path="/pools/tank/projects/#1",
              nfs={"clients": [{"match": "build-01.lan", "access": "rw"}]}),
        share(name="vmstore", pool="tank", volume="vmstore",
              nfs={"clients": [{"match": "10.99.0.0/24", "root_squash": False}]}),
        share(name="smb only", pool="tank", volume="media", path="/pools/tank/media/smb", smb={}),
    ]


def test_golden_exports():
    assert_golden("basic.exports", exports.render_exports(basic_shares()))


def test_golden_exports_without_shares_is_the_header():
    assert_golden("no-shares.exports", exports.render_exports([]))


def test_golden_nfs_conf_keeps_v3_and_turns_on_v4_2():
    assert_golden("nfs.conf", exports.render_nfs_conf())


def test_each_client_gets_its_own_options_and_the_export_one_fsid():
    line = next(line for line in exports.render_exports(basic_shares()).splitlines()
                if line.startswith("/pools/tank/media "))
    fsid = exports.default_fsid("Media")
    assert line == ("/pools/tank/media "
                    f"10.0.0.5(rw,sync,no_subtree_check,no_root_squash,sec=sys,fsid={fsid}) "
                    f"fd00::/64(rw,sync,no_subtree_check,root_squash,sec=sys,fsid={fsid}) "
                    f"*(ro,sync,no_subtree_check,root_squash,sec=sys,fsid={fsid})")


@pytest.mark.parametrize("path, written", [
    ("/pools/tank/media", "/pools/tank/media"),
    ("/pools/tank/media/Büro Ablage", '"/pools/tank/media/Büro Ablage"'),
    ("/pools/tank/media/#1", "/pools/tank/media/\\0431"),
    ("/pools/tank/media/a b#c", '"/pools/tank/media/a b\\043c"'),
    ('/pools/tank/media/say "hi"', '"/pools/tank/media/say \\042hi\\042"'),
    ("/pools/tank/media/back\\slash", "/pools/tank/media/back\\134slash"),
    ("/pools/tank/media/tab\there", "/pools/tank/media/tab\\011here"),
    ("/pools/tank/media/a\\123", "/pools/tank/media/a\\134\\061\\062\\063"),
    ("/pools/tank/media/x\\9a7", "/pools/tank/media/x\\1349a\\067"),
    ("/pools/tank/media/100%(x)", "/pools/tank/media/100%(x)"),
])
def test_paths_are_quoted_and_escaped_as_exports5_reads_them(path, written):
    assert exports.export_path(path) == written


def read_token_like_nfs_utils(text: str) -> str:
    """The path token as nfs-utils' xgettok() reads it: double quotes toggle quoting (and are
    dropped), white space ends an unquoted token, and once a backslash and three octal digits
    have been collected they are replaced by that byte (checked after every character)."""
    token: list[int] = []
    quoted = False
    for byte in text.encode():
        if byte == ord('"'):
            quoted = not quoted
            continue
        if not quoted and chr(byte).isspace():
            break
        token.append(byte)
        last = token[-4:]
        if (len(last) == 4 and last[0] == ord("\\") and all(ord("0") <= b <= ord("7") for b in last[1:])
                and int(bytes(last[1:]), 8) < 256):
            token[-4:] = [int(bytes(last[1:]), 8)]
    return bytes(token).decode()


@pytest.mark.parametrize("path", [
    "/pools/tank/media", "/pools/tank/media/Büro Ablage", "/pools/tank/media/#1 a#b", '/p/say "hi"',
    "/p/a\\123", "/p/a\\\\0777", "/p/\\\\\\", "/p/x\\9a7", "/p/tab\there", "/p/\\1 2\\34",
    "/p/日本語 ドキュメント",
])
def test_every_path_reads_back_unchanged(path):
    assert read_token_like_nfs_utils(exports.export_path(path) + " client(rw)") == path


def test_fsids_are_stable_per_name_and_can_be_given():
    assert exports.default_fsid("Media") == exports.default_fsid("Media") != exports.default_fsid("media")
    assert uuid.UUID(exports.default_fsid("Media")).version == 5
    given = "0A1B2C3D4E5F40718293A4B5C6D7E8F9"
    text = exports.render_exports(basic_shares(), fsid_of={"Media": given})
    assert "fsid=0a1b2c3d-4e5f-4071-8293-a4b5c6d7e8f9" in text
    assert f"fsid={exports.default_fsid('vmstore')}" in text
    with pytest.raises(ValueError, match="share 'Media': fsid 'disk-1' is not a UUID"):
        exports.render_exports(basic_shares(), fsid_of={"Media": "disk-1"})


def test_output_does_not_depend_on_input_order():
    assert exports.render_exports(list(reversed(basic_shares()))) == exports.render_exports(basic_shares())


def test_only_shares_with_nfs_are_exported():
    text = exports.render_exports(basic_shares())
    assert "/pools/tank/media/smb" not in text
    assert len(text.splitlines()) == 1 + 4


def test_two_shares_on_one_path_are_refused():
    twins = [share(name=name, pool="tank", volume="media", nfs={"clients": [{"match": "*"}]})
             for name in ("a", "b")]
    with pytest.raises(ValueError, match="shares 'a' and 'b' both export /pools/tank/media"):
        exports.render_exports(twins)


def test_clients_that_skipped_validation_are_refused():
    raw = model.Share("x", "tank", "media", "/pools/tank/media",
                      nfs=model.NfsOptions((model.NfsClient("10.0.0.1/8"),)))
    with pytest.raises(ValueError, match="10.0.0.1/8 has host bits set"):
        exports.render_exports([raw])
