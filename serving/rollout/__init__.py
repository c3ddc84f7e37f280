"""Progressive rollouts: the plan and its gates, the statistical judge, the controller, its metrics."""
