"""A trainer hook that kills a run after a given step, as a crash would (for resume tests)."""


class Crash(Exception):
    """The run was stopped by `crash_after`."""


def crash_after(step: int):
    def hook(at: int, state):   # the trainer calls hooks after each step, checkpoint included
        del state
        if at == step:
            raise Crash
    return hook
