"""One ExaBGP speaker per host and its API process. Built by the multi-host fabric issue; empty so far."""
