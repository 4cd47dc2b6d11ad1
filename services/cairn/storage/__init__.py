"""Cairn storage: disks, SMART, RAID, btrfs pools."""
