"""The NT hash Samba keeps for a password: MD4 of its UTF-16LE encoding (MS-NLMP 3.3.1).

Written out here because OpenSSL 3 no longer offers MD4 to hashlib. The cluster stores the NT hash,
never the password, so every node's Samba can hold the same password (`pdbedit --set-nt-hash`);
it is password-equivalent for SMB, so the store keeps it and the API never shows it.
"""

from __future__ import annotations

import struct

MASK = 0xFFFFFFFF


def _rotate(value: int, bits: int) -> int:
    value &= MASK
    return ((value << bits) | (value >> (32 - bits))) & MASK


def md4(data: bytes) -> bytes:
    """MD4 (RFC 1320)."""
    message = data + b"\x80" + b"\x00" * ((55 - len(data)) % 64) + struct.pack("<Q", len(data) * 8)
    a, b, c, d = 0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476
    for offset in range(0, len(message), 64):
        x = struct.unpack("<16I", message[offset:offset + 64])
        aa, bb, cc, dd = a, b, c, d

        def f(x_, y, z):
            return (x_ & y) | (~x_ & z)

        def g(x_, y, z):
            return (x_ & y) | (x_ & z) | (y & z)

        def h(x_, y, z):
            return x_ ^ y ^ z

        for i in (0, 4, 8, 12):             # round 1
            a = _rotate(a + f(b, c, d) + x[i], 3)
            d = _rotate(d + f(a, b, c) + x[i + 1], 7)
            c = _rotate(c + f(d, a, b) + x[i + 2], 11)
            b = _rotate(b + f(c, d, a) + x[i + 3], 19)
        for i in (0, 1, 2, 3):              # round 2
            a = _rotate(a + g(b, c, d) + x[i] + 0x5A827999, 3)
            d = _rotate(d + g(a, b, c) + x[i + 4] + 0x5A827999, 5)
            c = _rotate(c + g(d, a, b) + x[i + 8] + 0x5A827999, 9)
            b = _rotate(b + g(c, d, a) + x[i + 12] + 0x5A827999, 13)
        for i in (0, 2, 1, 3):              # round 3
            a = _rotate(a + h(b, c, d) + x[i] + 0x6ED9EBA1, 3)
            d = _rotate(d + h(a, b, c) + x[i + 8] + 0x6ED9EBA1, 9)
            c = _rotate(c + h(d, a, b) + x[i + 4] + 0x6ED9EBA1, 11)
            b = _rotate(b + h(c, d, a) + x[i + 12] + 0x6ED9EBA1, 15)
        a, b, c, d = (a + aa) & MASK, (b + bb) & MASK, (c + cc) & MASK, (d + dd) & MASK
    return struct.pack("<4I", a, b, c, d)


def nt_hash(password: str) -> str:
    """Upper-case hex, as pdbedit and smbpasswd files write it."""
    return md4(password.encode("utf-16-le")).hex().upper()
