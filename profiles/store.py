"""Profiles in etcd: one key per profile, ``/warren/v1/profiles/<name>``.

Creation is create-if-absent (a duplicate is refused); every change is a
read-modify-write that compares the key's mod_revision, retried when
another writer got there first, so concurrent ``tag add`` / ``rule add``
calls never lose each other's changes. A change clears ``auto``: a profile
the policy agent made for a network becomes the user's once they change it.
"""
from __future__ import annotations

import random
import time
from dataclasses import replace
from typing import Callable

from datastore import Datastore, codec, keys

from .model import Profile, ProfileError, Rule, check_name

MAX_RETRIES = 20


class ProfileNotFound(ProfileError):
    pass


class ProfileExists(ProfileError):
    pass


class ProfileContention(ProfileError):
    """Too many concurrent writers on one profile."""


class ProfileStore:
    def __init__(self, store: Datastore):
        self.store = store

    def add(self, profile: Profile) -> None:
        """Create ``profile``; raises ProfileExists if the name is taken."""
        if not self.store.create(keys.profile(profile.name), codec.dumps(profile)):
            raise ProfileExists(f"profile {profile.name} already exists")

    def find(self, name: str) -> Profile | None:
        """The profile, None if absent; an invalid record is refused with codec's one-line error."""
        kv = self.store.get(keys.profile(check_name(name)))
        return codec.loads(Profile, kv.value, kv.key) if kv else None

    def get(self, name: str) -> Profile:
        profile = self.find(name)
        if profile is None:
            raise ProfileNotFound(f"profile {name} does not exist")
        return profile

    def names(self) -> list[str]:
        return sorted(keys.last_segment(kv.key)
                      for kv in self.store.get_prefix(keys.PROFILES, keys_only=True))

    def list(self) -> list[Profile]:
        """Every valid profile (invalid records are skipped and counted)."""
        return sorted(codec.load_all(Profile, self.store.get_prefix(keys.PROFILES)), key=lambda p: p.name)

    def remove(self, name: str) -> None:
        if not self.store.delete(keys.profile(check_name(name))):
            raise ProfileNotFound(f"profile {name} does not exist")

    def update(self, name: str, change: Callable[[Profile], Profile | None]) -> Profile:
        """Apply ``change`` (which may raise, or return None for "nothing to do") with CAS.

        Returns the profile as stored afterwards.
        """
        key = keys.profile(check_name(name))
        for attempt in range(MAX_RETRIES):
            kv = self.store.get(key)
            if kv is None:
                raise ProfileNotFound(f"profile {name} does not exist")
            current = codec.loads(Profile, kv.value, key)
            changed = change(current)
            if changed is None:
                return current
            if changed.name != name:
                raise ProfileError("a profile cannot be renamed")
            changed = replace(changed, auto=False)  # changed by the user: theirs, never removed by the agent
            if self.store.cas(key, codec.dumps(changed), kv.mod_revision):
                return changed
            time.sleep(random.uniform(0, 0.01 * (attempt + 1)))
        raise ProfileContention(f"profile {name} is changing too fast; try again")

    # -- the CLI's operations ----------------------------------------------------

    def add_tag(self, name: str, tag: str) -> bool:
        """True if added, False if the profile already had it."""
        check_name(tag, "tag")
        added = []

        def change(p: Profile) -> Profile | None:
            added[:] = [tag not in p.tags]
            return Profile(p.name, p.tags + [tag], p.inbound_rules, p.outbound_rules) if added[0] else None
        self.update(name, change)
        return added[0]

    def remove_tag(self, name: str, tag: str) -> None:
        def change(p: Profile) -> Profile:
            if tag not in p.tags:
                raise ProfileError(f"tag {tag} is not on profile {name}")
            return Profile(p.name, [t for t in p.tags if t != tag], p.inbound_rules, p.outbound_rules)
        self.update(name, change)

    def add_rule(self, name: str, direction: str, rule: Rule, position: int | None = None) -> int | None:
        """Insert ``rule`` at 1-based ``position`` (default: append).

        Returns its position, or None if the same rule was already there
        (nothing is changed, as calicoctl did).
        """
        where: list[int | None] = [None]

        def change(p: Profile) -> Profile | None:
            rules = list(p.rules(direction))
            if rule in rules:
                where[0] = None
                return None
            at = len(rules) + 1 if position is None else position
            if not 1 <= at <= len(rules) + 1:
                raise ProfileError(f"position {at} is out of range: {direction} rules of {name} "
                                   f"take 1-{len(rules) + 1}")
            rules.insert(at - 1, rule)
            where[0] = at
            return p.with_rules(direction, rules)
        self.update(name, change)
        return where[0]

    def remove_rule(self, name: str, direction: str, position: int | None = None,
                    rule: Rule | None = None) -> tuple[int, Rule]:
        """Remove the rule at 1-based ``position``, or the first equal to ``rule``."""
        if (position is None) == (rule is None):
            raise ProfileError("give either a position or a rule to remove")
        removed: list[tuple[int, Rule]] = []

        def change(p: Profile) -> Profile:
            rules = list(p.rules(direction))
            if position is not None:
                if not 1 <= position <= len(rules):
                    span = f"1-{len(rules)}" if rules else "none: there are no rules"
                    raise ProfileError(f"position {position} is out of range: {direction} rules "
                                       f"of {name} are {span}")
                at = position
            elif rule in rules:
                at = rules.index(rule) + 1
            else:
                raise ProfileError(f"profile {name} has no such {direction} rule")
            removed[:] = [(at, rules.pop(at - 1))]
            return p.with_rules(direction, rules)
        self.update(name, change)
        return removed[0]

    def set_rules(self, name: str, inbound: list[Rule], outbound: list[Rule]) -> Profile:
        return self.update(name, lambda p: Profile(p.name, p.tags, inbound, outbound))
