"""van_edu.stats: the t distribution against its printed tables, Welch's test against a hand count."""
import math

import pytest

from van_edu.stats import binomial_se, mean_std, t_cdf, t_quantile, welch_test


@pytest.mark.parametrize("t, dof, q", [(12.706, 1, 0.975), (2.776, 4, 0.975), (2.228, 10, 0.975),
                                       (1.960, 1e7, 0.975), (3.747, 4, 0.99), (0.0, 3, 0.5)])
def test_t_cdf_matches_the_printed_tables(t, dof, q):
    assert t_cdf(t, dof) == pytest.approx(q, abs=2e-4)
    assert t_cdf(-t, dof) == pytest.approx(1 - q, abs=2e-4)
    assert t_quantile(q, dof) == pytest.approx(t, abs=2e-3)


def test_welch_by_hand():
    a, b = [90.1, 90.3, 90.2], [89.7, 89.8, 89.6]
    r = welch_test(a, b)
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    se = math.sqrt(sa ** 2 / 3 + sb ** 2 / 3)
    assert r.difference == pytest.approx(ma - mb) and r.t == pytest.approx((ma - mb) / se)
    assert r.dof == pytest.approx(4.0)                 # equal variances and sizes: n1 + n2 - 2
    assert r.p == pytest.approx(2 * (1 - t_cdf(r.t, 4.0)))
    assert r.low == pytest.approx(r.difference - t_quantile(0.975, 4.0) * se)
    assert r.low > 0 and r.p < 0.05
    same = welch_test([1.0, 2.0, 3.0], [1.5, 2.0, 2.5])
    assert same.p > 0.5 and same.low < 0 < same.high
    with pytest.raises(ValueError):
        welch_test([1.0], [2.0, 3.0])


def test_binomial_standard_error():
    assert binomial_se(0.9, 10_000) == pytest.approx(0.003)
    assert binomial_se(1.0, 100) == 0.0


def test_mcnemar_counts_only_the_disagreements_and_is_exact():
    from van_edu.stats import mcnemar

    a = [1] * 90 + [1] * 8 + [0] * 2            # 90 both right, 8 only a, 2 only b
    b = [1] * 90 + [0] * 8 + [1] * 2
    r = mcnemar(a, b)
    assert (r.only_a, r.only_b) == (8, 2)
    # P(X <= 2) for X ~ Binomial(10, 1/2) = (1 + 10 + 45) / 1024; two-sided doubles it
    assert r.p == pytest.approx(2 * 56 / 1024)
    assert mcnemar([1, 0], [1, 0]).p == 1.0     # no disagreement: no evidence
    assert mcnemar([1] * 5, [0] * 5).p == pytest.approx(2 / 32)
    with pytest.raises(ValueError, match="same items"):
        mcnemar([1, 0], [1])


def test_holm_steps_down_and_stops_at_the_first_failure():
    from van_edu.stats import holm

    # the three p-values notebook 09 reported, among six tests: the smallest needs 0.05/6 = 0.0083
    assert holm([0.015, 0.018, 0.029, 0.3, 0.5, 0.9]) == [False] * 6
    # 0.001 <= 0.05/4; 0.01 <= 0.05/3; 0.03 > 0.05/2 stops, so 0.04 is kept although 0.04 <= 0.05
    assert holm([0.04, 0.001, 0.03, 0.01]) == [False, True, False, True]
    assert holm([]) == []
