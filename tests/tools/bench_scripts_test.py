#!/usr/bin/env python3
"""The decisions the study scripts (bench/*.py) publish: the ranking
agreement that fixes the fine-tuning length, the verdict against each
baseline, the run keys that let identical policies share runs, and the
choice of alpha. Run with the bench folder on PYTHONPATH (ctest does)."""

import contextlib
import csv
import io
import json
import tempfile
import unittest
from pathlib import Path

import accuracy_study
import alpha_check
import criterion_ranking
import limpq_cli


class KendallTau(unittest.TestCase):
    def test_same_order_is_one_and_reversed_is_minus_one(self):
        self.assertEqual(accuracy_study.kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]), 1.0)
        self.assertEqual(accuracy_study.kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]), -1.0)

    def test_one_swap_of_four(self):
        # 6 pairs, one discordant: (5 - 1) / 6.
        self.assertAlmostEqual(accuracy_study.kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]), 4 / 6)

    def test_ties_count_as_tau_b(self):
        # a has one tie (pair 0-1); b none: 5 pairs decided on both sides, all concordant.
        self.assertAlmostEqual(accuracy_study.kendall_tau([1, 1, 2, 3], [1, 2, 3, 4]), 5 / (5 * 6) ** 0.5)


class Verdict(unittest.TestCase):
    def verdicts(self, tests):
        return {r["baseline"]: r for r in accuracy_study.compare_to_default(tests)}

    def test_a_gap_counts_only_beyond_the_larger_spread(self):
        rows = self.verdicts({
            "limpq default": [90.0, 90.2, 90.4],   # mean 90.2, std 0.2
            "uniform": [89.0, 89.0, 89.0],         # 1.2 below, std 0: beats
            "hessian": [89.5, 90.5, 90.0],         # 0.2 below, std 0.5: within
            "paper": [91.0, 91.0, 91.0],           # 0.8 above: below
        })
        self.assertEqual(rows["uniform"]["default_is"], "beats")
        self.assertEqual(rows["hessian"]["default_is"], "within spread")
        self.assertEqual(rows["hessian"]["spread"], "0.50")
        self.assertEqual(rows["paper"]["default_is"], "below")
        self.assertEqual(rows["paper"]["gap"], "-0.80")

    def test_random_policies_are_pooled(self):
        rows = self.verdicts({
            "limpq default": [90.0, 90.0],
            "random 1": [88.0, 88.2],
            "random 2": [89.0, 89.2],
        })
        self.assertNotIn("random 1", rows)
        self.assertEqual(rows["random (mean)"]["baseline_top1"], "88.60")
        self.assertEqual(rows["random (mean)"]["default_is"], "beats")


class RunKeys(unittest.TestCase):
    def test_identical_policies_share_a_key_whatever_their_checksum(self):
        with tempfile.TemporaryDirectory() as d:
            a, b = Path(d, "a.json"), Path(d, "b.json")
            policy = {"layers": {"conv": [2, 3]}}
            a.write_text(json.dumps(policy | {"checksum": "1"}))
            b.write_text(json.dumps(policy | {"checksum": "2"}))
            flag_a, key_a = limpq_cli.policy_run_key(str(a), [1, 10000])
            _, key_b = limpq_cli.policy_run_key(str(b), [1, 10000])
            _, other_recipe = limpq_cli.policy_run_key(str(a), [2, 10000])
        self.assertEqual(flag_a, ["--policy", str(a)])
        self.assertEqual(key_a, key_b)
        self.assertNotEqual(key_a, other_recipe)

    def test_uniform_policies_are_flags(self):
        flag, key = limpq_cli.policy_run_key("W2A3", [1])
        self.assertEqual(flag, ["--uniform", "W2A3"])
        self.assertNotEqual(key, limpq_cli.policy_run_key("W3A3", [1])[1])


class AlphaChoice(unittest.TestCase):
    def table(self, d, name, runs):
        """An alpha_check.csv of (alpha, budget, seed, validation top-1) runs."""
        path = Path(d, name)
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["alpha", "budget", "seed", "val_top1_1ep"])
            w.writerows(runs)
        return str(path)

    def test_the_best_mean_over_all_tables_wins_and_uniform_is_not_a_candidate(self):
        with tempfile.TemporaryDirectory() as d:
            one = self.table(d, "one.csv", [("0.1", "W2A3", 0, 92.0), ("0.25", "W2A3", 0, 91.0),
                                            ("uniform W2A3", "W2A3", 0, 99.0)])
            two = self.table(d, "two.csv", [("0.1", "W3A3", 0, 85.0), ("0.25", "W3A3", 0, 87.0),
                                            ("uniform W3A3", "W3A3", 0, 99.0)])
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                alpha_check.choose([one, two])
        self.assertIn("best alpha: 0.25 (89.00)", out.getvalue())

    def test_tables_with_missing_runs_are_refused(self):
        with tempfile.TemporaryDirectory() as d:
            path = self.table(d, "t.csv", [("0.1", "W2A3", 0, 92.0), ("0.1", "W2A3", 1, 92.0),
                                           ("0.25", "W2A3", 0, 93.0)])
            with self.assertRaises(SystemExit) as e:
                alpha_check.choose([path])
        self.assertIn("not hold the same runs", str(e.exception))


class RankingRow(unittest.TestCase):
    def test_the_lowest_bit_width_is_the_smallest_not_the_last(self):
        def agreement(rho):
            return {k: {"spearman": rho, "kendall": rho / 2} for k in ("weights", "acts", "combined")}
        comparison = {"alpha_a": 0.25, "mean": agreement(0.5), "pooled": agreement(0.7),
                      "per_bits": [{"bits": 2, **agreement(0.9)}, {"bits": 6, **agreement(0.1)}]}
        row = criterion_ranking.row_of("fisher-error", 642, comparison)
        self.assertEqual(row["rho_combined_lowest_bits"], 0.9)
        self.assertEqual(row["rho_combined_mean"], 0.5)
        self.assertEqual(row["tau_combined_mean"], 0.25)
        self.assertEqual(row["rho_combined_pooled"], 0.7)


if __name__ == "__main__":
    unittest.main()
