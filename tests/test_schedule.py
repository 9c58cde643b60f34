import statistics

import pytest

from kling3_tools.workflows.schedule import SchedulePolicy

POLICY = SchedulePolicy(prior_window=(120, 600), dense_interval=8, max_interval=60, jitter=0)


def test_prior_until_there_is_history():
    assert POLICY.window([]) == (120, 600)
    assert POLICY.window([30, 40, 50, 60]) == (120, 600)


def test_history_moves_the_window_but_never_ends_it_before_the_expectation():
    fast = [float(s) for s in range(100, 201)]
    assert POLICY.window(fast) == (pytest.approx(105), 600)  # starts where history says, ends no earlier
    slow = [float(s) for s in range(500, 901)]
    assert POLICY.window(slow) == (pytest.approx(520), pytest.approx(880))  # a slower model: both move


def test_learning_can_be_switched_off():
    assert SchedulePolicy(prior_window=(120, 600), learn=False).window([50.0] * 100) == (120, 600)


def test_sparse_early_dense_in_the_window_then_backing_off():
    window = (120.0, 600.0)
    assert POLICY.delay(0, window) == 60  # one early look halfway to the window
    assert POLICY.delay(60, window) == 60  # then straight to the window's start
    assert POLICY.delay(125, window) == 8  # dense inside the window
    assert POLICY.delay(599, window) == 8
    assert POLICY.delay(640, window) == 20  # backing off after it
    assert POLICY.delay(5000, window) == 60  # up to the cap


def test_half_the_checks_of_a_fixed_five_second_beat_on_average():
    window = (120.0, 600.0)
    ours = naive = 0.0
    for finish in range(125, 600, 5):
        elapsed, checks = 0.0, 0
        while elapsed < finish:
            elapsed += POLICY.delay(elapsed, window)
            checks += 1
        assert elapsed - finish <= 8  # found within one dense interval
        ours += checks
        naive += finish // 5 + 1
    assert ours <= 0.5 * naive


def test_jitter_spreads_checks():
    policy = SchedulePolicy(jitter=0.1)
    delays = [policy.delay(200, (120, 600)) for _ in range(200)]
    assert min(delays) >= 7.2
    assert max(delays) <= 8.8
    assert statistics.pstdev(delays) > 0.1


def test_scaled():
    scaled = SchedulePolicy().scaled(0.01)
    assert scaled.prior_window == (1.2, 6.0)
    assert scaled.dense_interval == pytest.approx(0.08)


def test_expected_is_the_median_of_history_or_the_middle_of_the_window():
    assert POLICY.expected([]) == 360
    assert POLICY.expected([float(s) for s in (100, 110, 130, 170, 400)]) == 130


def test_with_callbacks_a_task_is_checked_once_as_its_window_closes_then_every_max_interval():
    from dataclasses import replace

    policy = replace(SchedulePolicy(prior_window=(120.0, 600.0), jitter=0.0), called_back=True)
    assert policy.delay(0.0, (120.0, 600.0)) == 600.0  # no early or dense checks: the callback says when
    assert policy.delay(590.0, (120.0, 600.0)) == 10.0
    assert policy.delay(600.0, (120.0, 600.0)) == policy.max_interval  # a lost callback costs a minute at most
