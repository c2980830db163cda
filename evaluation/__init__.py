"""The 2018 Retro Contest on one's own machine: environment, server, runners, suites, reports."""
