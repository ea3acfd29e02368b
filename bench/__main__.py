import signal
import sys


def _early_stop(signum, frame):
    # SIGUSR2/SIGTERM before the run installs its own handlers (bench.commands.run): stop like Ctrl-C, never die
    # silently by the signal's default action (which would leave no manifest)
    raise KeyboardInterrupt(signal.Signals(signum).name)


for _sig in (signal.SIGTERM, signal.SIGUSR2):
    signal.signal(_sig, _early_stop)

from bench.commands import main  # noqa: E402

sys.exit(main())
