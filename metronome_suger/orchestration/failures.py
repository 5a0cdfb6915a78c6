"""What a failed step says, in its own words: shared by the demo's and backfill's failure lines and the alerts."""

import dagster as dg


def failure_description(event: dg.DagsterEvent) -> str | None:
    """The ``dg.Failure`` description a step failed with, if any."""
    data = event.step_failure_data
    user = data.user_failure_data if data is not None else None
    return user.description if user is not None and user.description else None


def innermost_error(event: dg.DagsterEvent) -> str | None:
    """The message of a step failure's innermost exception (the user's own error: our API and configuration
    errors are phrased for the user and never carry a secret), stripped; None without one."""
    data = event.step_failure_data
    error = data.error if data is not None else None
    while error is not None and error.cause is not None:
        error = error.cause
    return None if error is None else error.message.strip()


def step_failure_text(event: dg.DagsterEvent) -> str | None:
    """The description, else the innermost exception's message."""
    return failure_description(event) or innermost_error(event)
