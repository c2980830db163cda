"""What every package of the project uses: user errors and their one-line exit, atomic file
writes, device and thread choice, figures and markdown tables, the agent's environment variables.

The bottom of the import graph: it imports nothing of ours (roms_setup, evaluation, agent and
meta_train all import it), and only the standard library at module level, except
`sonic_common.devices` (torch) and `sonic_common.plots` (matplotlib, imported when a figure is
made).
"""
