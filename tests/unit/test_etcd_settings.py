"""The appliance's etcd runs with the same store-keeping settings as the dev and test stacks."""

import re
from pathlib import Path

from cairn.cluster import etcd_settings

DROP_IN = Path(__file__).resolve().parents[2] / "rootfs/usr/lib/systemd/system/etcd.service.d/cairn.conf"


def test_the_image_sets_every_store_setting_with_the_same_value():
    found = dict(re.findall(r"^Environment=(ETCD_[A-Z_]+)=(\S+)$", DROP_IN.read_text(), re.M))
    wanted = etcd_settings.environment()
    assert {k: found.get(k) for k in wanted} == wanted


def test_flags_and_environment_say_the_same():
    flags = [flag.split("=", 1) for flag in etcd_settings.flags()]
    as_env = {"ETCD_" + name[2:].upper().replace("-", "_"): value for name, value in flags}
    assert as_env == etcd_settings.environment()
    assert as_env["ETCD_AUTO_COMPACTION_MODE"] == "periodic"


def test_defragment_only_a_file_that_is_mostly_free_pages():
    mib = 1024 ** 2
    assert etcd_settings.needs_defragment(200 * mib, 50 * mib)
    assert not etcd_settings.needs_defragment(200 * mib, 150 * mib)      # mostly in use
    assert not etcd_settings.needs_defragment(40 * mib, 1 * mib)         # too little to bother
