"""User-facing errors: one line that names the config key (or the file) and the fix. ``python -m vae_lab``
prints such an error as ``error: <message>`` on stderr and exits with its ``exit_code``, leaving no
half-written run folder behind."""


class UserError(Exception):
    """A failure the user can act on, told in one line; ``exit_code`` is the process's."""

    exit_code = 2


class ConfigError(UserError, ValueError):
    """A config value is wrong, or what it points at is missing; the message says what to do."""


class RunFolderError(UserError):
    """The run folder is taken (another run writes it, or holds its checkpoints) or cannot be written."""


class WriteError(UserError):
    """A checkpoint or a metrics file could not be written (a full disk, a read-only folder); the previous
    file is intact."""


class Interrupted(UserError):
    """Training stopped on Ctrl-C (exit 130) or SIGTERM (exit 143) after saving ``last.ckpt``."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code
