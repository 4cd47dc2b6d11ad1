"""Cairn shares: file-access users and groups, SMB, NFS and iSCSI."""
