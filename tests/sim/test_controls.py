"""Controls: deliberate bugs that the simulator must catch within the seeds it runs
(docs/testing.md §2, "Proving it can fail"), so that its passing seeds mean something.

- `promote_catching_up` (`Leases(unsafe_promote_catching_up=True)`): the view manager may
  promote a member that is catching up, without every committed entry. Caught as a committed
  seq that disagrees with the canonical log (an acknowledged write lost).
- `skip_lease_wait` (`lease_margin_ms = -lease_ms + 1`) and `half_lease_wait`
  (`-lease_ms // 2`): the view manager drops a replica whose lease still runs. Caught as a
  lease overlap: a view leaves out a replica that still serves.
- `no_intent` (`SimStore(unsafe_no_intent=True)`): the primary commits without an fsync and
  without its intent log. Caught when an OS crash loses an acknowledged commit and the
  primary, given the next epoch, writes another entry at that seq.
- `reply_before_persist` (`driver.Controls`): the production driver sends, replies and answers
  its batch before persisting the step. Caught as a primary acting in an epoch its store has
  not recorded (its Appends leave before the `SaveEpoch`).
- `read_without_check` (`driver.Controls`): the production driver serves reads without the
  core's check (role, lease, promotion). Caught as a replica serving a read after a view
  that left it out was installed.
- `stale_fill` (`Cache.unsafe_fill_stale`): the front end's cache takes a fill older than an
  invalidation it has seen (the late-fill race). Caught as a stale read from the cache: the
  history is not linearizable.
"""

from __future__ import annotations

import pytest

from bazar.testing.sim import CONTROLS, failure_text, run_seed

CONTROL_SEEDS = range(200)
CAUGHT_AS = {
    "promote_catching_up": "but seq",  # "... committed (e, s) but seq s was committed as ..."
    "skip_lease_wait": "lease overlap",
    "half_lease_wait": "lease overlap",
    "no_intent": "but seq",
    "reply_before_persist": "SaveEpoch before acting",
    "read_without_check": "serves a read in epoch",
    "stale_fill": "not linearizable",
}


@pytest.mark.parametrize("control", CONTROLS)
def test_simulator_catches_the_control(control: str) -> None:
    """Seeds in order until one fails by the check that should catch the control (a failure
    by another check is a catch too, but does not prove that check)."""
    messages = {}
    for seed in CONTROL_SEEDS:
        report = run_seed(seed, control)
        if report.ok:
            continue
        messages[seed] = report.message
        if CAUGHT_AS[control] in report.message:
            replay = f"--seed {seed} --trace --control {control}"
            assert replay in failure_text(report)
            return
    assert messages, f"the {control} control passed every seed in {CONTROL_SEEDS}"
    raise AssertionError(f"{control} caught only by other checks: {messages}")
