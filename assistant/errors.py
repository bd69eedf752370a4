"""Exit codes of the `assistant` command, documented in README.md.

systemd's unit uses RestartPreventExitStatus for the configuration codes: restarting cannot fix a bad file.
"""

OK = 0
FAILURE = 1  # unexpected error (a bug): systemd restarts the service
USAGE = 2  # bad command line (argparse's own code)
CONFIG = 3  # config.yaml or keywords file invalid
MODEL = 4  # a model file is missing or unreadable
AUDIO = 5  # audio device or input file cannot be opened
INTERRUPTED = 130  # Ctrl-C outside the daemon loop


class AssistantError(Exception):
    """An error a user can fix; its message is printed as is, without a traceback."""

    exit_code = FAILURE


class ConfigError(AssistantError):
    exit_code = CONFIG


class ModelError(AssistantError):
    exit_code = MODEL


class AudioError(AssistantError):
    exit_code = AUDIO
