"""Independent oracles the test suite checks the broker's own code against (issue #3: the policy in Cedar)."""
