"""IPAM errors. Each message is one clear sentence fit to show a user."""


class IpamError(Exception):
    """Base class: the request could not be done; nothing was changed."""


class InvalidPool(IpamError):
    pass


class PoolNotFound(IpamError):
    pass


class PoolInUse(IpamError):
    pass


class PoolExhausted(IpamError):
    pass


class AddressInUse(IpamError):
    pass


class AddressNotInPool(IpamError):
    pass


class InvalidRequest(IpamError):
    pass


class Contention(IpamError):
    """Too many concurrent writers on the same block; try again."""
