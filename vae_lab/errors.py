"""User-facing errors: one line that names the config key and the fix."""


class ConfigError(ValueError):
    """A config value is wrong, or what it points at is missing; the message says what to do."""
