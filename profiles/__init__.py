"""Profiles, tags and rules enforced with iptables and ipsets. Built by the profiles issue; empty so far."""
