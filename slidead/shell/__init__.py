"""What people run: the command line, the demo, reports. The only part that reaches flows/."""
