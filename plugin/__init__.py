"""Docker NetworkDriver + IpamDriver (Flask under gunicorn). Built by the plugin issue; empty so far."""
