"""``streamscore run`` that dies like ``kill -9`` right after its Nth Kafka commit.

That is the one moment the exactly-once sink has to fence: the epoch's output
is committed in Kafka, but bytewax has not yet recorded the epoch in its
recovery store, so the next run replays it. Run as
``python -m tests.integration.eos_crash_child <streamscore args>`` with
``EOS_EXIT_AFTER_COMMITS=N``.
"""

from __future__ import annotations

import os
import sys

from operators.exactly_once import TransactionalWriter


def main() -> int:
    """Patch the writer to exit after the Nth commit, then run the ``streamscore`` CLI."""
    from flows.cli import main as cli_main

    exit_after = int(os.environ["EOS_EXIT_AFTER_COMMITS"])
    commit_epoch = TransactionalWriter.commit_epoch
    commits = [0]

    def commit_then_die(self: TransactionalWriter) -> None:
        commit_epoch(self)
        commits[0] += 1
        if commits[0] >= exit_after:
            os._exit(137)

    TransactionalWriter.commit_epoch = commit_then_die  # type: ignore[method-assign]
    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
