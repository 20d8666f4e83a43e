"""IP-in-IP in a guest kernel: the QEMU runner (guest.py) and the in-guest checks."""
