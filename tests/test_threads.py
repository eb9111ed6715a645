"""Training threads that follow the free cores: the rule, the measurement and what the trainers record."""

from __future__ import annotations

import pytest

from training.runtime.threads import CoreShare, machine_busy_seconds, threads_for


class FakeMachine:
    """A clock, the machine's busy CPU seconds and this process's own, advanced by hand."""

    def __init__(self) -> None:
        self.now, self.busy, self.own = 0.0, 0.0, 0.0
        self.set_to: list[int] = []

    def run(self, seconds: float, ours: float, others: float) -> None:
        """``seconds`` pass with this process using ``ours`` cores and other processes ``others``."""
        self.now += seconds
        self.own += ours * seconds
        self.busy += (ours + others) * seconds

    def share(self, **kwargs) -> CoreShare:
        return CoreShare(
            cores=2,
            most=2,
            interval_s=2.0,
            adaptive=True,
            clock=lambda: self.now,
            own_seconds=lambda: self.own,
            busy_seconds=lambda: self.busy,
            set_threads=self.set_to.append,
            **kwargs,
        )


@pytest.mark.parametrize(
    ("others", "threads"), [(0.0, 2), (0.3, 2), (0.5, 2), (0.7, 1), (1.0, 1), (1.4, 1), (2.0, 1), (3.5, 1)]
)
def test_the_threads_are_the_cores_others_leave_free_at_least_one(others, threads):
    assert threads_for(2, others, 2) == threads


def test_threads_never_exceed_what_the_process_started_with():
    assert threads_for(8, 0.0, 2) == 2
    assert threads_for(8, 5.0, 8) == 3


def test_an_idle_machine_keeps_every_thread():
    machine = FakeMachine()
    share = machine.share()
    for _ in range(10):
        machine.run(1.0, ours=2.0, others=0.05)
        assert share.after_step() is None
    assert machine.set_to == [] and share.record()["changes"] == []


def test_a_competing_job_drops_to_one_thread_and_its_end_gives_the_cores_back():
    machine, said = FakeMachine(), []
    share = machine.share(stage="sae_sweep", report=said.append)
    machine.run(1.0, ours=0.9, others=1.1)
    assert share.after_step() is None  # measured only once the interval has passed
    machine.run(1.5, ours=0.9, others=1.1)
    change = share.after_step()
    assert change is not None and change.threads == 1 and change.others == pytest.approx(1.1)
    assert machine.set_to == [1]
    assert said == ["sae_sweep: machine busy (others use 1.1 of 2 cores): 1 thread"]
    machine.run(2.5, ours=1.0, others=0.0)
    assert share.after_step().threads == 2
    assert machine.set_to == [1, 2] and said[-1] == "sae_sweep: machine free again: 2 threads"
    record = share.close()
    assert record["fewest_threads"] == 1 and [c["threads"] for c in record["changes"]] == [1, 2]


def test_closing_gives_back_the_starting_threads_and_adaptive_off_changes_nothing():
    machine = FakeMachine()
    share = machine.share()
    machine.run(3.0, ours=1.0, others=1.5)
    share.after_step()
    assert share.close()["fewest_threads"] == 1
    assert machine.set_to == [1, 2]

    still = FakeMachine()
    fixed = still.share()
    fixed.adaptive = False
    still.run(3.0, ours=1.0, others=2.0)
    assert fixed.after_step() is None and still.set_to == []


def test_the_machine_busy_seconds_are_read_from_the_kernel():
    first = machine_busy_seconds()
    sum(i * i for i in range(200_000))
    assert first is not None and machine_busy_seconds() >= first
