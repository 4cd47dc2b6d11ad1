"""Node configuration: defaults, and every problem reported at once."""

import pytest

from cairn import config
from cairn.errors import ValidationError


def test_defaults_use_the_hostname():
    cfg = config.parse({}, "cairn-1a2b")
    assert (cfg.node_name, cfg.etcd_endpoints, cfg.store_root, cfg.web.bind) == (
        "cairn-1a2b", ("http://127.0.0.1:2379",), "/cairn", "0.0.0.0:443")


def test_all_problems_at_once():
    with pytest.raises(ValidationError) as caught:
        config.parse({"etcd_endpoints": "localhost", "store_root": "cairn/", "colour": 1}, "n")
    assert set(caught.value.fields) == {"etcd_endpoints", "store_root", "colour"}


def test_dump_then_load_round_trips(tmp_path):
    cfg = config.parse({"node_name": "a", "etcd_endpoints": ["http://127.0.0.2:2379"],
                        "state_dir": str(tmp_path), "web": {"bind": "127.0.0.1:9443"}}, "x")
    path = tmp_path / "cairn.toml"
    path.write_text(config.dump(cfg))
    assert config.load(str(path)) == cfg
