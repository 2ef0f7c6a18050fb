"""The anti-replay window: exact semantics against a set-based model, and edge cases."""

import random

import pytest

from client.esp.replay import ReplayWindow


class Model:
    def __init__(self, size: int) -> None:
        self.size, self.top, self.seen = size, 0, set()

    def check(self, seq: int) -> bool:
        if seq <= 0:
            return False
        return seq > self.top or (self.top - seq < self.size and seq not in self.seen)

    def update(self, seq: int) -> None:
        if self.check(seq):
            self.seen.add(seq)
            self.top = max(self.top, seq)


def test_fresh_window():
    w = ReplayWindow()
    assert w.size == 1024
    assert not w.check(0)
    assert w.check(1) and w.check(2**32 - 1)


def test_duplicate_and_out_of_order():
    w = ReplayWindow(1024)
    for s in (1, 3, 2):
        assert w.check(s)
        w.update(s)
        assert not w.check(s)
    assert w.check(4)


def test_window_edges_exact():
    w = ReplayWindow(1024)
    w.update(5000)
    assert w.check(5000 - 1023)  # the oldest number inside the window
    assert not w.check(5000 - 1024)  # just outside
    w.update(5000 - 1023)
    assert not w.check(5000 - 1023)
    # Every number in the window that was never seen is still accepted.
    assert all(w.check(s) for s in range(5000 - 1022, 5000))


def test_slide_clears_old_bits_exactly():
    w = ReplayWindow(64)
    for s in range(1, 200):
        w.update(s)
    # Jump by less than the window: numbers still inside stay marked, new ones are free.
    w.update(230)
    assert all(not w.check(s) for s in range(230 - 63, 200))
    assert all(w.check(s) for s in range(200, 230))
    # Jump far beyond the ring: everything in the new window is fresh.
    w.update(10_000)
    assert all(w.check(s) for s in range(10_000 - 63, 10_000))
    assert not w.check(10_000 - 64)


def test_update_without_check_ignores_stale():
    w = ReplayWindow(64)
    w.update(1000)
    w.update(10)  # far too old: must not corrupt the ring
    assert w.check(10 + 64 * 15) is (10 + 64 * 15 > 1000 - 64)
    assert all(w.check(s) for s in range(1000 - 63, 1000))


def test_numbers_sharing_a_slot_told_apart():
    # 5, 69, 133 all live in slot 5 of a 64-slot ring.
    w = ReplayWindow(64)
    w.update(5)
    assert not w.check(5) and w.check(69)
    w.update(70)
    assert w.check(69) and not w.check(6)  # 69 never seen; 6 now too old (70 - 6 = 64)
    w.update(69)
    assert not w.check(69) and not w.check(5)
    w.update(133)
    assert not w.check(69)  # too old now, though its slot holds 133
    assert not w.check(70)  # still in the window, seen
    assert w.check(71) and w.check(132)


@pytest.mark.parametrize("size", [64, 128, 1024, 4096])
def test_random_against_model(size):
    rng = random.Random(size)
    w, m = ReplayWindow(size), Model(size)
    top = 0
    for _ in range(20_000):
        r = rng.random()
        if r < 0.5:
            seq = top + rng.randint(1, 3)
        elif r < 0.6:
            seq = top + rng.randint(1, 3 * size)
        else:
            seq = max(1, top - rng.randint(0, size + 70))
        assert w.check(seq) == m.check(seq), seq
        if w.check(seq):
            w.update(seq)
            m.update(seq)
            top = max(top, seq)
    assert w.top == m.top


@pytest.mark.parametrize("bad", [0, 63, 100, 1000])
def test_size_validation(bad):
    with pytest.raises(ValueError):
        ReplayWindow(bad)
