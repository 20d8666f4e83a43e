"""Profiles, tags and rules, enforced with iptables and ipsets (Calico v0.x model).

* :mod:`profiles.model`     - Profile and Rule, validation, JSON, the defaults of a new profile
* :mod:`profiles.grammar`   - calicoctl's rule grammar (argv words <-> Rule)
* :mod:`profiles.store`     - profiles in etcd (create-if-absent, CAS updates)
* :mod:`profiles.names`     - short, stable chain and ipset names
* :mod:`profiles.generator` - pure functions: endpoints + profiles + tag members ->
  iptables-restore and ipset restore text (the chain layout is documented there)
"""
from .model import Profile, ProfileError, Rule, RuleError
from .store import ProfileContention, ProfileExists, ProfileNotFound, ProfileStore

__all__ = ["Profile", "ProfileError", "Rule", "RuleError", "ProfileStore", "ProfileExists",
           "ProfileNotFound", "ProfileContention"]
