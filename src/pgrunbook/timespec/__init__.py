"""Time specifications, pure and free of I/O: cron expressions (`cron`) and quiet windows (`window`).

A kernel module: config validates with it, the monitor's scheduler and the deploy procedure run with
it, and it imports nothing of pgrunbook's above the kernel.
"""
