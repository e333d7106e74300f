"""van_edu.stats: the t distribution against its printed tables, Welch's test, McNemar's test, the paired
bootstrap, Holm's correction and the detectable difference against hand counts (and SciPy where installed)."""
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
    assert r.se == pytest.approx(se)
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


def test_mcnemar_on_a_test_set_of_thousands():
    from van_edu.stats import mcnemar

    # 1,050 against 950 discordant images: beyond a float's 2 ** 1023, so counted in whole numbers;
    # the normal approximation with continuity correction, z = (100 - 1) / sqrt(2000), gives p = 0.0268
    r = mcnemar([1] * 1050 + [0] * 950 + [1] * 8000, [0] * 1050 + [1] * 950 + [1] * 8000)
    assert (r.only_a, r.only_b) == (1050, 950) and r.p == pytest.approx(0.0268, abs=0.001)
    assert mcnemar([1] * 1000 + [0] * 1000, [0] * 1000 + [1] * 1000).p == 1.0


def test_holm_steps_down_and_stops_at_the_first_failure():
    from van_edu.stats import holm

    # the three p-values notebook 09 reported, among six tests: the smallest needs 0.05/6 = 0.0083
    assert holm([0.015, 0.018, 0.029, 0.3, 0.5, 0.9]) == [False] * 6
    # 0.001 <= 0.05/4; 0.01 <= 0.05/3; 0.03 > 0.05/2 stops, so 0.04 is kept although 0.04 <= 0.05
    assert holm([0.04, 0.001, 0.03, 0.01]) == [False, True, False, True]
    assert holm([]) == []


def test_holm_adjusted_by_hand_and_consistent_with_holm():
    from van_edu.stats import holm, holm_adjusted

    # sorted: 0.001 x 4 = 0.004; 0.01 x 3 = 0.03; 0.03 x 2 = 0.06; 0.04 x 1 = 0.04, raised to 0.06 (monotone)
    assert holm_adjusted([0.01, 0.04, 0.03, 0.001]) == pytest.approx([0.03, 0.06, 0.06, 0.004])
    assert holm_adjusted([0.5, 0.6]) == [1.0, 1.0]            # capped at 1
    for ps in ([0.04, 0.001, 0.03, 0.01], [0.015, 0.018, 0.029, 0.3, 0.5, 0.9], [0.001, 0.002, 0.2]):
        assert [q <= 0.05 for q in holm_adjusted(ps)] == holm(ps)


def test_paired_bootstrap_by_hand():
    from van_edu.stats import paired_bootstrap

    # every item differs by the same amount: no resample can move the mean difference
    r = paired_bootstrap([1, 1, 1, 1], [0, 0, 0, 0], samples=500)
    assert (r.difference, r.low, r.high, r.se) == (1.0, 1.0, 1.0, 0.0) and r.p == pytest.approx(1 / 500)
    same = paired_bootstrap([1, 0, 1], [1, 0, 1], samples=200)
    assert (same.difference, same.low, same.high, same.p) == (0.0, 0.0, 0.0, 1.0)
    # two items with differences 0 and 1: a resample's mean is 0, 0.5 or 1 with chances 1/4, 1/2, 1/4,
    # so its standard deviation is 0.5 / sqrt(2), and P(mean <= 0) = 1/4 gives p = 1/2
    r = paired_bootstrap([1, 1], [1, 0], samples=40_000, seed=1)
    assert r.difference == 0.5 and (r.low, r.high) == (0.0, 1.0)
    assert r.se == pytest.approx(0.5 / math.sqrt(2), rel=0.02) and r.p == pytest.approx(0.5, abs=0.02)
    assert paired_bootstrap([1, 1], [1, 0], samples=100, seed=3) == paired_bootstrap([1, 1], [1, 0], samples=100, seed=3)
    with pytest.raises(ValueError, match="same items"):
        paired_bootstrap([1, 0], [1])


def test_paired_bootstrap_matches_the_normal_approximation_and_beats_the_unpaired_error():
    from van_edu.stats import paired_bootstrap

    # 10,000 items: both right on 8,800, only a on 300, only b on 200, both wrong on 700
    a = [1] * 8800 + [1] * 300 + [0] * 200 + [0] * 700
    b = [1] * 8800 + [0] * 300 + [1] * 200 + [0] * 700
    r = paired_bootstrap(a, b, samples=4000, seed=0)
    d = [x - y for x, y in zip(a, b)]
    sd = math.sqrt(sum((v - 0.01) ** 2 for v in d) / len(d))     # population sd of the differences
    assert r.difference == pytest.approx(0.01)
    assert r.se == pytest.approx(sd / 100, rel=0.05)             # sd / sqrt(n)
    assert r.low == pytest.approx(0.01 - 1.96 * sd / 100, abs=0.0006)
    assert r.high == pytest.approx(0.01 + 1.96 * sd / 100, abs=0.0006)
    unpaired = math.sqrt(binomial_se(0.91, 10_000) ** 2 + binomial_se(0.90, 10_000) ** 2)
    assert r.se < 0.6 * unpaired          # the shared right and wrong answers add no noise when paired


def test_detectable_difference_by_hand():
    from van_edu.stats import detectable_difference

    # the normal quantiles 1.95996 (two-sided 5%) and 0.84162 (80% power): "2.8 standard errors"
    assert detectable_difference(1.0) == pytest.approx(1.959964 + 0.841621, abs=1e-5)
    assert detectable_difference(0.5, alpha=0.01, power=0.5) == pytest.approx(0.5 * 2.575829, abs=1e-5)
    # Student's t with 4 degrees of freedom, from the printed tables: 2.776 and 0.941
    assert detectable_difference(1.0, dof=4) == pytest.approx(2.776 + 0.941, abs=2e-3)


def test_against_scipy_where_installed():
    scipy_stats = pytest.importorskip("scipy.stats")
    from van_edu.stats import mcnemar, paired_bootstrap

    for only_a, only_b in ((8, 2), (30, 17), (0, 5), (12, 12)):
        a = [1] * only_a + [0] * only_b + [1] * 40
        b = [0] * only_a + [1] * only_b + [1] * 40
        expected = scipy_stats.binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue
        assert mcnemar(a, b).p == pytest.approx(expected)
    a = [1] * 500 + [0] * 40 + [1] * 25 + [0] * 35
    b = [1] * 500 + [1] * 40 + [0] * 25 + [0] * 35
    ours = paired_bootstrap(a, b, samples=5000, seed=0)
    theirs = scipy_stats.bootstrap((a, b), lambda x, y: sum(x) / len(x) - sum(y) / len(y), paired=True,
                                   vectorized=False, n_resamples=5000, method="percentile", random_state=0)
    assert ours.low == pytest.approx(theirs.confidence_interval.low, abs=0.004)
    assert ours.high == pytest.approx(theirs.confidence_interval.high, abs=0.004)
    assert ours.se == pytest.approx(theirs.standard_error, rel=0.05)


def test_a_p_value_at_the_bootstraps_floor_prints_as_a_bound():
    from van_edu.stats import format_p, paired_bootstrap

    far_apart = paired_bootstrap([1.0] * 50, [0.0] * 50, samples=2000)     # no resample crosses zero
    assert far_apart.p == 1 / 2000
    assert format_p(far_apart.p, 1 / 2000) == "p < 0.0005"
    assert format_p(6 * far_apart.p, 6 / 2000) == "p < 0.003"              # Holm over six: a bound too
    close = paired_bootstrap([1, 0, 1, 0, 1, 1], [1, 1, 0, 0, 1, 0], samples=2000)
    assert close.p > 1 / 2000 and format_p(close.p, 1 / 2000) == f"p = {close.p:.3g}"
    assert format_p(0.04213) == "p = 0.0421"
