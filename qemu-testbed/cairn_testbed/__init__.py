"""Cairn's QEMU testbed: boots appliances from the built image (stdlib only).

    machine.py   MachineSpec (pure description) -> qemu_argv(); Machine runs one QEMU
    accel.py     KVM only where a short probe boot works, else TCG
    qmp.py       minimal QMP client (power button, quit, later fault injection)
    run.py       `make run`: one appliance, resumable, Ctrl-C shuts it down cleanly
"""
