"""The one table of exit codes of `arq-supervise` (documented in the README and in `--help`)."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    #: every child drained and stopped cleanly (or, with --burst, the queue ran dry)
    OK = 0
    #: an unexpected error in the supervisor, or --burst --fail-on-job-failure and a job failed
    UNEXPECTED = 1
    #: bad command-line usage (click's own code for usage errors)
    USAGE = 2
    #: children failed to boot repeatedly (startup hook raised, Redis unreachable, ...): do not restart blindly
    BOOT_ERROR = 3
    #: the settings class could not be imported or is invalid; no child was started
    CONFIG_ERROR = 4


EXIT_CODE_HELP = '\b\nExit codes:\n' + '\n'.join(
    f'  {code.value}  {text}'
    for code, text in (
        (ExitCode.OK, 'stopped cleanly'),
        (ExitCode.UNEXPECTED, 'unexpected error (or a job failed with --burst --fail-on-job-failure)'),
        (ExitCode.USAGE, 'usage error'),
        (ExitCode.BOOT_ERROR, 'children failed to boot repeatedly'),
        (ExitCode.CONFIG_ERROR, 'settings could not be imported or are invalid'),
    )
)
