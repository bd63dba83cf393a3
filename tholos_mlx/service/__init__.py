"""Start the server at login: launchd.py (macOS) and systemd.py (Linux) over manager.py's flow."""
