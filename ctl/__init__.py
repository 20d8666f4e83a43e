"""warrenctl, the command line of Warren."""
