"""The plugin's user-facing error: its message is sent to Docker as {"Err": ...}."""


class PluginError(Exception):
    pass
