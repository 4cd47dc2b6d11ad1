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


def test_dump_quotes_and_escapes_every_text_so_tomllib_reads_back_the_same_config(tmp_path):
    cfg = config.parse({"node_name": 'cairn-"lab"\\1-ünï', "state_dir": str(tmp_path),
                        "shares": {"samba_include": '/srv/site "a"\\b.conf', "workgroup": "HOME.LAN"},
                        "compute": {"image_dirs": ["/srv/isos", "/srv/my images"], "libvirt_uri": "qemu+ssh://x/system"},
                        "storage": {"smart_interval": 900}}, "x")
    path = tmp_path / "cairn.toml"
    path.write_text(config.dump(cfg))
    assert config.load(str(path)) == cfg
    assert cfg.node_name == 'cairn-"lab"\\1-ünï' and cfg.compute.image_dirs == ("/srv/isos", "/srv/my images")
    assert cfg.storage.smart_interval == 900.0


def test_a_setting_of_the_wrong_type_is_refused_naming_it():
    for value in ("two", True, 2.5, 0):
        with pytest.raises(ValidationError) as caught:
            config.parse({"web": {"workers": value}}, "n")
        assert set(caught.value.fields) == {"web.workers"}, value
        assert caught.value.fields["web.workers"] == "must be a whole number from 1 to 64"


def test_every_problem_of_every_table_is_reported_at_once():
    with pytest.raises(ValidationError) as caught:
        config.parse({"node_name": "node-1\n", "etcd_endpoints": ["http://a:2379", 7], "state_dir": "var/lib",
                      "web": {"workers": "two", "connections": True, "bind": "everywhere", "colour": "blue"},
                      "storage": {"include_loop": "yes", "smart_interval": 5, "pools_root": "pools"},
                      "shares": {"nfs": 1, "workgroup": "WORK GROUP", "service_manager": "runit"},
                      "compute": {"image_dirs": ["/srv/isos", "relative"], "accel": "fast", "log_dir": 3},
                      "extra": {}}, "n")
    assert set(caught.value.fields) == {
        "node_name", "etcd_endpoints", "state_dir", "web.workers", "web.connections", "web.bind", "web.colour",
        "storage.include_loop", "storage.smart_interval", "storage.pools_root", "shares.nfs", "shares.workgroup",
        "shares.service_manager", "compute.image_dirs", "compute.accel", "compute.log_dir", "extra"}
    assert caught.value.fields["compute.image_dirs"] == "[1] must be an absolute path"
    assert caught.value.fields["storage.include_loop"] == "must be true or false"
    assert caught.value.message.startswith("bad configuration: compute.accel: must be one of auto, kvm, tcg; ")


def test_image_dirs_are_empty_by_default_and_never_the_root_or_a_system_directory():
    assert config.parse({}, "n").compute.image_dirs == ()
    for directory, problem in (("/", "must be a normalised absolute directory other than /"),
                               ("/etc", "must not be in /etc"), ("/dev/disk", "must not be in /dev"),
                               ("/srv/../etc", "must be a normalised absolute directory other than /")):
        with pytest.raises(ValidationError) as caught:
            config.parse({"compute": {"image_dirs": [directory]}}, "n")
        assert problem in caught.value.fields["compute.image_dirs"], directory


def test_a_file_that_is_not_toml_is_refused_saying_where(tmp_path):
    path = tmp_path / "cairn.toml"
    path.write_text('node_name = "a"b"\n')
    with pytest.raises(ValidationError) as caught:
        config.load(str(path))
    assert set(caught.value.fields) == {"file"} and str(path) in caught.value.fields["file"]


def test_history_settings_are_read_and_checked():
    cfg = config.parse({"history": {"job_keep_days": 7, "event_keep_count": 100}}, "n1")
    assert (cfg.history.job_keep_days, cfg.history.job_keep_count, cfg.history.event_keep_count) == (7.0, 2000, 100)
    with pytest.raises(ValidationError) as caught:
        config.parse({"history": {"job_keep_count": "lots", "job_keep_days": 0, "keep": 1}}, "n1")
    assert set(caught.value.fields) == {"history.job_keep_count", "history.job_keep_days", "history.keep"}


def test_cluster_tls_files_come_all_three_or_none_and_https_endpoints_need_them():
    files = {"ca": "/var/lib/cairn/cluster/ca.pem", "cert": "/var/lib/cairn/cluster/node.pem",
             "key": "/var/lib/cairn/cluster/node.key"}
    cfg = config.parse({"etcd_endpoints": ["https://10.77.1.11:2379"], "cluster": files}, "n")
    assert cfg.cluster == config.ClusterConfig(**files) and cfg.cluster.tls
    assert config.parse({}, "n").cluster.tls is False
    with pytest.raises(ValidationError) as half:
        config.parse({"etcd_endpoints": ["https://10.77.1.11:2379"], "cluster": {"ca": files["ca"]}}, "n")
    assert set(half.value.fields) == {"cluster.cert", "cluster.key"}
    with pytest.raises(ValidationError) as bare:
        config.parse({"etcd_endpoints": ["https://10.77.1.11:2379"]}, "n")
    assert "need [cluster] ca, cert and key" in bare.value.fields["cluster.ca"]
    with pytest.raises(ValidationError) as plain:
        config.parse({"etcd_endpoints": ["http://127.0.0.1:2379"], "cluster": files}, "n")
    assert "must be https://" in plain.value.fields["etcd_endpoints"]
