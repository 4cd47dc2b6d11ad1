"""MD4 and the NT hash against published test vectors (RFC 1320 appendix A.5; MS-NLMP examples)."""

from cairn.shares.ntlm import md4, nt_hash


def test_md4_rfc1320_vectors():
    vectors = {
        b"": "31d6cfe0d16ae931b73c59d7e0c089c0",
        b"a": "bde52cb31de33e46245e05fbdbd6fb24",
        b"abc": "a448017aaf21d8525fc10ae87aa6729d",
        b"message digest": "d9130a8164549fe818874806e1c7014b",
        b"abcdefghijklmnopqrstuvwxyz": "d79e1c308aa5bbcdeea8ed63df412da9",
        b"12345678901234567890123456789012345678901234567890123456789012345678901234567890":
            "e33b4ddc9c38f2199c3e7b164fcc0536",
    }
    assert {data: md4(data).hex() for data in vectors} == vectors


def test_nt_hash_of_known_passwords():
    assert nt_hash("password") == "8846F7EAEE8FB117AD06BDD830B7586C"
    assert nt_hash("Password") == "A4F49C406510BDCAB6824EE7C30FD852"   # MS-NLMP 4.2.2.1.2
