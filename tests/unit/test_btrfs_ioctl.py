"""The btrfs ioctl argument structs (linux/btrfs.h), packed byte for byte; the calls themselves run
on a real filesystem in tests/host/test_btrfs_loop.py."""

from __future__ import annotations

import struct

import pytest

from cairn.errors import ValidationError
from cairn.storage import btrfs_ioctl as ioc


def _iow(type_: int, number: int, size: int) -> int:
    return (1 << 30) | (size << 16) | (type_ << 8) | number


def test_request_numbers_are_the_kernels():
    assert ioc.IOC_SUBVOL_CREATE == _iow(0x94, 14, 4096)
    assert ioc.IOC_SNAP_CREATE_V2 == _iow(0x94, 23, 4096)


def test_vol_args_is_fd_then_the_name_nul_padded():
    packed = ioc.vol_args(7, "vm")
    assert len(packed) == ioc.ARGS_SIZE
    assert struct.unpack_from("=q", packed) == (7,)
    assert packed[8:11] == b"vm\0" and set(packed[10:]) == {0}


def test_vol_args_v2_has_fd_flags_and_the_name_at_offset_56():
    packed = ioc.vol_args_v2(9, "web@daily", ioc.SUBVOL_RDONLY)
    assert len(packed) == ioc.ARGS_SIZE
    fd, transid, flags = struct.unpack_from("=qQQ", packed)
    assert (fd, transid, flags) == (9, 0, 2)
    assert set(packed[24:56]) == {0}                       # no qgroup inheritance asked
    assert packed[56:66] == b"web@daily\0"
    assert ioc.vol_args_v2(9, "x")[16:24] == bytes(8)     # writable: no flags


@pytest.mark.parametrize("name", ["", "a/b", ".", "..", "nul\0", "x" * 4040])
def test_names_the_kernel_would_refuse_are_refused_first(name):
    with pytest.raises(ValidationError):
        ioc.vol_args_v2(3, name)


def test_the_longest_names_fit():
    assert len(ioc.vol_args_v2(3, "x" * ioc.SUBVOL_NAME_MAX)) == ioc.ARGS_SIZE
    assert len(ioc.vol_args(3, "x" * ioc.PATH_NAME_MAX)) == ioc.ARGS_SIZE
